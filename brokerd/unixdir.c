/* SPDX-License-Identifier: MIT */
/*
 * Unix-domain leases' directories and socket files (see unixdir.h). The
 * socket is bound by its absolute path, since the path is its address (a
 * server's getsockname() must show it), and checked after through the
 * directory's handle: a bind that landed anywhere else is undone.
 */
#include "unixdir.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fd-util.h"
#include "log.h"
#include "safepath.h"
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

/* Checks dir and each directory above it (dir_trusted()), by name, with no
 * symlink among them (the handle was opened so). Returns 0 or -EPERM, logged. */
static int check_ancestors(const char *dir, const struct stat *dir_st) {
        char path[PB_UNIX_PATH_MAX + 1];
        struct stat child = *dir_st, st;
        uid_t self = geteuid();

        if ((dir_st->st_uid != 0 && dir_st->st_uid != self) || (dir_st->st_mode & 022)) {
                log_msg(LOG_ERR, "--unix-dir %s must be owned by uid %u or root and not writable by group or "
                        "others", dir, (unsigned) self);
                return -EPERM;
        }
        snprintf(path, sizeof(path), "%s", dir);
        for (char *slash = strrchr(path, '/'); slash; slash = strrchr(path, '/')) {
                if (slash == path)
                        slash[1] = '\0';        /* "/" itself, last */
                else
                        *slash = '\0';
                if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
                        log_msg(LOG_ERR, "--unix-dir %s: cannot inspect %s: %s", dir, path,
                                strerror(errno ? errno : ENOTDIR));
                        return -EPERM;
                }
                if (!dir_trusted(&st, &child, self)) {
                        log_msg(LOG_ERR, "--unix-dir %s: %s above it is writable by others, who could swap "
                                "the path under brokerd; choose a directory only root can change", dir, path);
                        return -EPERM;
                }
                if (slash == path)
                        break;
                child = st;
        }
        return 0;
}

/* Opens dir (absolute, normalized) as an O_PATH handle without following a
 * symlink anywhere on its path: openat2() with RESOLVE_NO_SYMLINKS, or where
 * that is missing (ENOSYS: valgrind 3.19, kernels before 5.6) one name at a
 * time with O_NOFOLLOW. Returns the fd or -errno (-ELOOP: a symlink). */
static int open_dir_nofollow(const char *dir) {
        struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                                .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
        char name[PB_UNIX_PATH_MAX + 1];
        int fd = (int) syscall(SYS_openat2, AT_FDCWD, dir, &how, sizeof(how));

        if (fd >= 0 || errno != ENOSYS)
                return fd >= 0 ? fd : -errno;
        _cleanup_close_ int at_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (at_fd < 0)
                return -errno;
        for (const char *c = dir + 1; *c;) {
                size_t len = strcspn(c, "/");
                struct stat st;

                if (len >= sizeof(name))
                        return -ENAMETOOLONG;
                memcpy(name, c, len);
                name[len] = '\0';
                fd = openat(at_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0)
                        return -errno;
                at_fd = safe_close(at_fd);
                at_fd = fd;
                if (fstat(at_fd, &st) < 0)
                        return -errno;
                if (!S_ISDIR(st.st_mode))
                        return S_ISLNK(st.st_mode) ? -ELOOP : -ENOTDIR;
                c += len + (c[len] == '/');
        }
        fd = at_fd;
        at_fd = -1;
        return fd;
}

int unix_dirs_open(struct unix_dirs *d, const char *const *paths, size_t n) {
        int r;

        *d = (struct unix_dirs) { 0 };
        for (size_t i = 0; i < n && i < UNIX_DIRS_MAX; i++) {
                struct stat st;
                int fd;

                r = safepath_private_dir(paths[i], 0755, geteuid());
                if (r < 0)
                        return r;
                fd = open_dir_nofollow(paths[i]);
                if (fd < 0) {
                        r = fd;
                        log_msg(LOG_ERR, "cannot open --unix-dir %s: %s%s", paths[i], strerror(-r),
                                r == -ELOOP ? " (a symlink in its path)" : "");
                        return r;
                }
                d->dirs[d->n++] = (struct unix_dir) { .path = paths[i], .fd = fd };
                if (fstat(fd, &st) < 0)
                        return -errno;
                r = check_ancestors(paths[i], &st);
                if (r < 0)
                        return r;
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

/* Whether st is the socket file ux records. */
static bool is_ours(const struct stat *st, const struct lease_unix *ux) {
        return S_ISSOCK(st->st_mode) && ux->ino != 0 && (uint64_t) st->st_dev == ux->dev &&
               (uint64_t) st->st_ino == ux->ino;
}

int unix_bind(const struct unix_dirs *d, const struct pb_endpoint *e, unsigned backlog, struct lease_unix *ux,
              int *ret_fd) {
        const char *name;
        const struct unix_dir *dir = dir_of(d, e, &name);
        struct sockaddr_storage ss;
        struct stat st, by_path;
        socklen_t len;
        mode_t mask;
        int r;

        if (!dir)
                return -EACCES;
        if (fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (!is_ours(&st, ux))
                        return -EEXIST;         /* not ours: never replaced */
                if (unlinkat(dir->fd, name, 0) < 0)
                        return -errno;
        } else if (errno != ENOENT)
                return -errno;

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
        if (fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISSOCK(st.st_mode) ||
            lstat(e->path, &by_path) < 0 || by_path.st_dev != st.st_dev || by_path.st_ino != st.st_ino)
                return -ESTALE;         /* the stray file stays: it may not be ours to remove */
        ux->dev = (uint64_t) st.st_dev;
        ux->ino = (uint64_t) st.st_ino;
        /* The mode first, while the file is still ours; then its owner. */
        if (fchmodat(dir->fd, name, ux->mode, 0) < 0 ||
            fchownat(dir->fd, name, ux->uid, ux->gid == UINT32_MAX ? (gid_t) -1 : ux->gid,
                     AT_SYMLINK_NOFOLLOW) < 0 ||
            listen(sock_fd, (int) backlog) < 0) {
                r = -errno;
                (void) unlinkat(dir->fd, name, 0);
                ux->dev = ux->ino = 0;
                return r;
        }
        *ret_fd = sock_fd;
        sock_fd = -1;
        return 0;
}

void unix_unlink(const struct unix_dirs *d, const struct pb_endpoint *e, const struct lease_unix *ux) {
        const char *name;
        const struct unix_dir *dir = dir_of(d, e, &name);
        struct stat st;

        if (dir && fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && is_ours(&st, ux))
                (void) unlinkat(dir->fd, name, 0);
}
