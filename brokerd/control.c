/* SPDX-License-Identifier: MIT */
/*
 * The control socket: taken from systemd socket activation, or created at
 * --control in a private directory, replacing a stale socket atomically and
 * never a live broker's. Accepts one connection per wake-up (in bursts only
 * to drain what was queued before the listener refused fds) and pauses
 * briefly when out of file descriptors; conn.c applies the connection
 * limits, once it knows who connected.
 */
#include "broker-int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "fd-util.h"

#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

#define ACCEPT_PAUSE_USEC (100 * 1000)  /* back-off when out of fds */
#define ACCEPT_BURST 64                 /* accepts per wake-up */

int control_ensure_private_dir(const char *dir, mode_t mode) {
        struct stat st;

        if (mkdir(dir, mode) == 0)
                (void) chmod(dir, mode);        /* not narrowed by our umask */
        else if (errno != EEXIST) {
                int r = -errno;
                log_msg(LOG_ERR, "cannot create directory %s: %s", dir, strerror(errno));
                return r;
        }
        if (lstat(dir, &st) < 0) {
                int r = -errno;
                log_msg(LOG_ERR, "cannot inspect %s: %s", dir, strerror(errno));
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                log_msg(LOG_ERR, "%s is not a directory (a symlink?); refusing to use it", dir);
                return -ENOTDIR;
        }
        /* Not even a sticky one (like /tmp): there anyone may create the
         * database or the socket before we do, and have us use theirs. */
        if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022)) {
                log_msg(LOG_ERR, "%s must be owned by uid %u or root and not writable by group or others%s",
                        dir, (unsigned) geteuid(), st.st_mode & S_ISVTX ? " (sticky or not)" : "");
                return -EPERM;
        }
        return 0;
}

int control_check_owned_file(const char *path) {
        struct stat st;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (st.st_uid != geteuid() || (st.st_mode & 022) || !(S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode))) {
                log_msg(LOG_ERR, "%s is %s uid %u%s; refusing to use it (brokerd runs as uid %u)", path,
                        S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode) ? "owned by" : "not a plain file, owned by",
                        (unsigned) st.st_uid, st.st_mode & 022 ? " and writable by group or others" : "",
                        (unsigned) geteuid());
                return -EPERM;
        }
        return 0;
}

int control_parent_dir(const char *path, char *buf, size_t len) {
        const char *slash = strrchr(path, '/');

        if (!slash)
                snprintf(buf, len, ".");
        else if (slash == path)
                snprintf(buf, len, "/");
        else if ((size_t) (slash - path) < len)
                snprintf(buf, len, "%.*s", (int) (slash - path), path);
        else
                return -ENAMETOOLONG;
        return 0;
}

/* Refuses to replace a live broker's socket; a stale one is replaced atomically. */
static int check_existing_socket(const char *path, const struct sockaddr_un *sa) {
        _cleanup_close_ int probe_fd = -1;
        struct stat st;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode)) {
                log_msg(LOG_ERR, "%s exists and is not a socket; refusing to replace it", path);
                return -EEXIST;
        }
        /* Another uid's socket there, live or not, was planted. */
        if (st.st_uid != geteuid()) {
                log_msg(LOG_ERR, "%s is a socket of uid %u, not brokerd's (uid %u); refusing to use or replace it",
                        path, (unsigned) st.st_uid, (unsigned) geteuid());
                return -EPERM;
        }
        probe_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (probe_fd < 0)
                return -errno;
        if (connect(probe_fd, (const struct sockaddr *) sa, sizeof(*sa)) == 0) {
                log_msg(LOG_ERR, "another brokerd is listening on %s", path);
                return -EADDRINUSE;
        }
        return 0;
}

/* Binds a temporary name, then renames it over path: clients never see a
 * moment without a socket, nor one with the wrong mode. */
static int control_create(struct broker *b) {
        const char *path = b->opt.control_path;
        struct sockaddr_un sa = { .sun_family = AF_UNIX }, tmp = { .sun_family = AF_UNIX };
        char dir[sizeof(sa.sun_path)];
        _cleanup_close_ int listen_fd = -1;
        int r, zero = 0;

        if (strlen(path) >= sizeof(sa.sun_path) - 16) {
                log_msg(LOG_ERR, "control socket path too long: %s", path);
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);
        snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%s.%d.tmp", path, (int) getpid());
        r = control_parent_dir(path, dir, sizeof(dir));
        if (r >= 0)
                r = control_ensure_private_dir(dir, 0755);
        if (r >= 0)
                r = check_existing_socket(path, &sa);
        if (r < 0)
                return r;

        listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (listen_fd < 0)
                return -errno;
        /* No fds may be sent to us at all, where the kernel can refuse them
         * (6.16+). Set before listen(): every connection inherits it. */
        (void) setsockopt(listen_fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero));
        unlink(tmp.sun_path);
        if (bind(listen_fd, (struct sockaddr *) &tmp, sizeof(tmp)) < 0 || chmod(tmp.sun_path, 0666) < 0 ||
            listen(listen_fd, SOMAXCONN) < 0 || rename(tmp.sun_path, path) < 0) {
                r = -errno;
                log_msg(LOG_ERR, "cannot create control socket %s: %s", path, strerror(errno));
                unlink(tmp.sun_path);
                return r;
        }
        b->control_fd = listen_fd;
        listen_fd = -1;
        b->control_created = true;
        return 0;
}

/* The control socket passed at start (fdstore_take() set b->control_fd),
 * made ready: 1, or 0 when none was passed; -errno, logged. */
static int control_from_systemd(struct broker *b) {
        int zero = 0;

        if (b->control_fd < 0)
                return 0;
        if (sd_is_socket_unix(b->control_fd, SOCK_SEQPACKET, 1, NULL, 0) <= 0) {
                log_msg(LOG_ERR, "the socket systemd passed is not a listening AF_UNIX SOCK_SEQPACKET socket");
                return -EINVAL;
        }
        if (fcntl(b->control_fd, F_SETFL, fcntl(b->control_fd, F_GETFL) | O_NONBLOCK) < 0)
                return -errno;
        /* Connections accepted from now on inherit it; those queued already
         * do not (accept_drain). Kernels before 6.16 lack it: fds sent to us
         * are closed and the message rejected. */
        if (setsockopt(b->control_fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero)) == 0)
                b->accept_drain = true;
        return 1;
}

static int on_accept_resume(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;

        sd_event_source_set_enabled(b->control_source, SD_EVENT_ON);
        return 0;
}

/* Accepts one connection per wake-up: the listener is level-triggered, so a
 * second one pending wakes us at once, while looping until EAGAIN costs a
 * failing accept4() on nearly every wake-up. Connections accepted once the
 * listener refuses fds inherit SO_PASSRIGHTS=0; those queued before (under
 * socket activation) are drained in bursts and get it one by one. */
static int on_control(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct broker *b = userdata;

        for (int i = 0; i < ACCEPT_BURST; i++) {
                int zero = 0;
                int conn_fd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                if (conn_fd < 0) {
                        if (errno == EAGAIN)
                                b->accept_drain = false;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                log_msg(LOG_WARNING, "cannot accept: %s; pausing new connections for 100 ms",
                                        strerror(errno));
                                sd_event_source_set_enabled(b->control_source, SD_EVENT_OFF);
                                broker_arm_oneshot(b, b->accept_pause_source, ACCEPT_PAUSE_USEC);
                        }
                        return 0;
                }
                if (b->accept_drain)
                        (void) setsockopt(conn_fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero));
                conn_new(b, conn_fd);          /* identified first, then limited */
                if (!b->accept_drain)
                        break;
        }
        return 0;
}

int control_setup(struct broker *b) {
        int r;

        r = sd_event_add_time(b->event, &b->accept_pause_source, CLOCK_MONOTONIC, 0, 10 * 1000, on_accept_resume, b);
        if (r < 0)
                return r;
        sd_event_source_set_enabled(b->accept_pause_source, SD_EVENT_OFF);
        r = control_from_systemd(b);
        if (r == 0)
                r = control_create(b);
        if (r < 0)
                return r;
        return sd_event_add_io(b->event, &b->control_source, b->control_fd, EPOLLIN, on_control, b);
}

void control_done(struct broker *b) {
        b->control_source = sd_event_source_disable_unref(b->control_source);
        b->accept_pause_source = sd_event_source_disable_unref(b->accept_pause_source);
        b->control_fd = safe_close(b->control_fd);
        if (b->control_created)
                unlink(b->opt.control_path);
        b->control_created = false;
}
