/* SPDX-License-Identifier: MIT */
/*
 * Unix-domain leases' directories and socket files (see unixdir.h). The
 * socket is bound by its absolute path, since the path is its address (a
 * server's getsockname() must show it), and checked after through the
 * directory's handle: a bind that landed anywhere else is refused.
 */
#include "unixdir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fd-util.h"
#include "log.h"
#include "sockaddr.h"

bool unix_dir_valid(const char *dir) {
        struct pb_endpoint e = { .transport = PB_UNIX };
        size_t n = strlen(dir);

        /* As a pattern `unix:DIR/`: absolute, normalized, room for a name. */
        if (n < 2 || n + 1 >= PB_UNIX_PATH_MAX || dir[n - 1] == '/')
                return false;
        memcpy(e.path, dir, n);
        e.path[n] = '/';
        return endpoint_validate(&e, true) == 0;
}

int unix_dirs_find(const char *const *dirs, size_t n, const struct pb_endpoint *e) {
        if (!endpoint_is_unix(e))
                return -1;
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(dirs[i]);

                if (strncmp(e->path, dirs[i], len) == 0 && e->path[len] == '/' && e->path[len + 1] &&
                    !strchr(e->path + len + 1, '/'))
                        return (int) i;
        }
        return -1;
}

/* Whether a directory (st) on the way to a Unix directory lets only root
 * and us change its names: not writable by others, or sticky while the
 * name we go through (child) is root's or ours. */
static bool dir_trusted(const struct stat *st, const struct stat *child, uid_t self) {
        bool owner_ok = st->st_uid == 0 || st->st_uid == self;

        if (owner_ok && !(st->st_mode & 022))
                return true;
        return (st->st_mode & S_ISVTX) && (child->st_uid == 0 || child->st_uid == self);
}

/* Opens dir name by name from "/", never following a symlink (O_NOFOLLOW
 * with O_DIRECTORY refuses one), creating its last name (0755) if it is
 * missing, and checks each directory on the way by its handle (no name can
 * change under the check): dir itself ours or root's and writable by
 * nobody else, each above it dir_trusted(). Returns the O_PATH fd or
 * -errno, logged. */
static int open_dir(const char *dir, bool create) {
        char path[PB_UNIX_PATH_MAX + 1], *name, *save = NULL;
        _cleanup_close_ int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        struct stat parent, st;
        uid_t self = geteuid();
        int r;

        snprintf(path, sizeof(path), "%s", dir);
        if (fd < 0 || fstat(fd, &parent) < 0)
                return -errno;
        for (name = strtok_r(path, "/", &save); name; name = strtok_r(NULL, "/", &save)) {
                bool last = save[0] == '\0';
                int next = openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

                /* Made, then 0755 whatever our umask: for others to reach their sockets. */
                if (next < 0 && errno == ENOENT && last && !create)
                        return -ENOENT;         /* to be made at start */
                if (next < 0 && errno == ENOENT && last && mkdirat(fd, name, 0755) == 0 &&
                    fchmodat(fd, name, 0755, 0) == 0)
                        next = openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0) {
                        r = -errno;
                        log_msg(LOG_ERR, "--unix-dir %s: cannot open %s: %s%s", dir, name, strerror(-r),
                                r == -ENOTDIR ? " (a symlink, or not a directory)" : "");
                        return r;
                }
                safe_close(fd);
                fd = next;
                if (fstat(fd, &st) < 0)
                        return -errno;
                if (!dir_trusted(&parent, &st, self)) {
                        log_msg(LOG_ERR, "--unix-dir %s: the directory holding %s is writable by others, who "
                                "could swap the path under brokerd; choose one only root can change", dir, name);
                        return -EPERM;
                }
                parent = st;
        }
        if ((parent.st_uid != 0 && parent.st_uid != self) || (parent.st_mode & 022)) {
                log_msg(LOG_ERR, "--unix-dir %s must be owned by uid %u or root and not writable by group or "
                        "others", dir, (unsigned) self);
                return -EPERM;
        }
        r = fd;
        fd = -1;                        /* the caller's now */
        return r;
}

int unix_dirs_open(struct unix_dirs *d, const char *const *paths, size_t n) {
        *d = (struct unix_dirs) { 0 };
        for (size_t i = 0; i < n && i < UNIX_DIRS_MAX; i++) {
                int fd = open_dir(paths[i], true);

                if (fd < 0)
                        return fd;
                d->dirs[d->n++] = (struct unix_dir) { .path = paths[i], .fd = fd };
        }
        return 0;
}

int unix_dirs_check(const char *const *paths, size_t n) {
        for (size_t i = 0; i < n && i < UNIX_DIRS_MAX; i++) {
                int fd = open_dir(paths[i], false);

                if (fd < 0 && fd != -ENOENT)
                        return fd;
                safe_close(fd);
        }
        return 0;
}

void unix_dirs_close(struct unix_dirs *d) {
        for (size_t i = 0; i < d->n; i++)
                d->dirs[i].fd = safe_close(d->dirs[i].fd);
        d->n = 0;
}

/* The directory holding e and e's name in it, or NULL. */
static const struct unix_dir *dir_of(const struct unix_dirs *d, const struct pb_endpoint *e, const char **ret_name) {
        const char *paths[UNIX_DIRS_MAX];
        int i;

        for (size_t k = 0; k < d->n; k++)
                paths[k] = d->dirs[k].path;
        i = unix_dirs_find(paths, d->n, e);
        if (i < 0)
                return NULL;
        *ret_name = e->path + strlen(d->dirs[i].path) + 1;
        return &d->dirs[i];
}

/* Which file name in dir is (see struct unix_file), and whether it is a
 * socket. Returns 0, or -errno (-ENOENT: none). */
static int file_of(int dir_fd, const char *name, struct unix_file *ret, bool *ret_sock) {
        struct statx stx;
        struct statx_timestamp t;

        if (statx(dir_fd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_BASIC_STATS | STATX_BTIME, &stx) < 0)
                return -errno;
        t = stx.stx_btime;
        *ret = (struct unix_file) { .dev = (uint64_t) makedev(stx.stx_dev_major, stx.stx_dev_minor),
                                    .ino = stx.stx_ino,
                                    .born = stx.stx_mask & STATX_BTIME ? (uint64_t) t.tv_sec * 1000000000u + t.tv_nsec
                                                                       : 0 };
        *ret_sock = S_ISSOCK(stx.stx_mode);
        return 0;
}

/* Whether name in dir is the socket file ux records (its birth time
 * compared where the file system keeps one). */
static bool is_ours(int dir_fd, const char *name, const struct lease_unix *ux) {
        struct unix_file f;
        bool sock;

        return file_of(dir_fd, name, &f, &sock) == 0 && sock && ux->file.ino != 0 && f.dev == ux->file.dev &&
               f.ino == ux->file.ino && (!f.born || !ux->file.born || f.born == ux->file.born);
}

/* Whether nothing listens on the socket file at path (a connect() is refused). */
static bool nobody_listens(const char *path) {
        struct sockaddr_storage ss;
        struct pb_endpoint e = { .transport = PB_UNIX };
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        socklen_t len;

        snprintf(e.path, sizeof(e.path), "%s", path);
        if (fd < 0 || sockaddr_from_endpoint(&e, &ss, &len) < 0)
                return false;
        return connect(fd, (struct sockaddr *) &ss, len) < 0 && errno == ECONNREFUSED;
}

/* Whether dir's path still leads, name by name and no symlink, to the
 * directory its handle is (nobody but root or brokerd could have changed
 * that, but a sticky directory above it lets anyone take a name root gave up). */
static bool still_there(const struct unix_dir *dir) {
        char path[PB_UNIX_PATH_MAX + 1], *name, *save = NULL;
        _cleanup_close_ int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        struct stat now, then;

        snprintf(path, sizeof(path), "%s", dir->path);
        for (name = strtok_r(path, "/", &save); fd >= 0 && name; name = strtok_r(NULL, "/", &save)) {
                int next = openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

                safe_close(fd);
                fd = next;
        }
        return fd >= 0 && fstat(fd, &now) == 0 && fstat(dir->fd, &then) == 0 && now.st_dev == then.st_dev &&
               now.st_ino == then.st_ino;
}

int unix_bind(const struct unix_dirs *d, const struct pb_endpoint *e, unsigned backlog, struct lease_unix *ux,
              int *ret_fd) {
        const char *name;
        const struct unix_dir *dir = dir_of(d, e, &name);
        struct sockaddr_storage ss;
        struct unix_file made;
        struct stat by_path;
        socklen_t len;
        mode_t mask;
        bool sock;
        int r;

        if (!dir)
                return -EACCES;
        if (!still_there(dir))
                return -ESTALE;
        r = file_of(dir->fd, name, &made, &sock);
        if (r == 0 && (!is_ours(dir->fd, name, ux) || !(ux->made || nobody_listens(e->path))))
                return -EEXIST;                 /* not ours, or maybe not: never replaced */
        if (r == 0 && unlinkat(dir->fd, name, 0) < 0)
                return -errno;
        if (r < 0 && r != -ENOENT)
                return r;

        _cleanup_close_ int sock_fd = socket_for_endpoint(e);
        if (sock_fd < 0)
                return sock_fd;
        r = sockaddr_from_endpoint(e, &ss, &len);
        if (r < 0)
                return r;
        mask = umask(0177);             /* nobody may connect before the mode is the rule's */
        r = bind(sock_fd, (struct sockaddr *) &ss, len) < 0 ? -errno : 0;
        umask(mask);
        if (r < 0)
                return r == -EADDRINUSE ? -EEXIST : r;
        /* Made where the handle is? (Only root or we could have moved a name on the way.) */
        if (file_of(dir->fd, name, &made, &sock) < 0 || !sock || lstat(e->path, &by_path) < 0 ||
            (uint64_t) by_path.st_ino != made.ino || (uint64_t) by_path.st_dev != made.dev)
                return -ESTALE;         /* the stray file stays: it may not be ours to remove */
        /* The mode first, while the file is still ours; then its owner. */
        if (fchmodat(dir->fd, name, ux->mode, 0) < 0 ||
            fchownat(dir->fd, name, ux->uid, ux->gid == UINT32_MAX ? (gid_t) -1 : ux->gid,
                     AT_SYMLINK_NOFOLLOW) < 0 ||
            listen(sock_fd, (int) backlog) < 0) {
                r = -errno;
                (void) unlinkat(dir->fd, name, 0);
                return r;
        }
        ux->file = made;
        ux->made = true;
        *ret_fd = sock_fd;
        sock_fd = -1;
        return 0;
}

void unix_unlink(const struct unix_dirs *d, const struct pb_endpoint *e, const struct lease_unix *ux) {
        const char *name;
        const struct unix_dir *dir = dir_of(d, e, &name);

        if (dir && ux->made && is_ours(dir->fd, name, ux))
                (void) unlinkat(dir->fd, name, 0);
}
