/* SPDX-License-Identifier: MIT */
/*
 * The control socket: taken from systemd socket activation, or created at
 * --control in a private directory, replacing a stale socket atomically and
 * never a live broker's. The monitor's: it accepts one connection per
 * wake-up (in bursts only to drain what was queued before the listener
 * refused fds), identifies the peer and passes both to the worker, which
 * applies the connection limits (conn.c); it pauses briefly when out of
 * file descriptors, and while no worker serves, connections wait in the
 * backlog.
 */
#include "monitor.h"

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
#include "safepath.h"

#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

#define ACCEPT_PAUSE_USEC (100 * 1000)  /* back-off when out of fds */
#define ACCEPT_BURST 64                 /* accepts per wake-up */

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
static int control_create(struct monitor *m) {
        const char *path = m->opt.control_path;
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
        r = safepath_parent_dir(path, dir, sizeof(dir));
        if (r >= 0)
                r = safepath_private_dir(dir, 0755, geteuid());
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
        m->control_fd = listen_fd;
        listen_fd = -1;
        m->control_created = true;
        return 0;
}

/* The control socket passed at start (fdstore_take() set m->control_fd),
 * made ready: 1, or 0 when none was passed; -errno, logged. */
static int control_from_systemd(struct monitor *m) {
        int zero = 0;

        if (m->control_fd < 0)
                return 0;
        if (sd_is_socket_unix(m->control_fd, SOCK_SEQPACKET, 1, NULL, 0) <= 0) {
                log_msg(LOG_ERR, "the socket systemd passed is not a listening AF_UNIX SOCK_SEQPACKET socket");
                return -EINVAL;
        }
        if (fcntl(m->control_fd, F_SETFL, fcntl(m->control_fd, F_GETFL) | O_NONBLOCK) < 0)
                return -errno;
        /* Connections accepted from now on inherit it; those queued already
         * do not (accept_drain). Kernels before 6.16 lack it: fds sent to us
         * are closed and the message rejected. */
        if (setsockopt(m->control_fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero)) == 0)
                m->accept_drain = true;
        return 1;
}

static int on_accept_resume(sd_event_source *s, uint64_t usec, void *userdata) {
        struct monitor *m = userdata;

        if (m->worker_state == WORKER_SERVING && m->n_pending == 0)
                sd_event_source_set_enabled(m->control_source, SD_EVENT_ON);
        return 0;
}

/* Identifies the peer of a new connection and passes both to the worker,
 * which applies the connection limits. Consumes fd. */
static void accept_conn(struct monitor *m, int fd) {
        struct peer p;
        int r = peer_identify(fd, &m->self, m->want_units, &p);

        if (r < 0)
                log_event(LOG_WARNING, "unidentified", &(struct log_fields) LOG_FIELDS_NONE,
                          "cannot read a new peer's credentials: %s; it will be denied everything", strerror(-r));
        monitor_pass_conn(m, fd, &p, 0);
}

/* Accepts one connection per wake-up: the listener is level-triggered, so a
 * second one pending wakes us at once, while looping until EAGAIN costs a
 * failing accept4() on nearly every wake-up. Connections accepted once the
 * listener refuses fds inherit SO_PASSRIGHTS=0; those queued before (under
 * socket activation) are drained in bursts and get it one by one. */
static int on_control(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct monitor *m = userdata;

        for (int i = 0; i < ACCEPT_BURST; i++) {
                int zero = 0;
                int conn_fd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                if (conn_fd < 0) {
                        if (errno == EAGAIN)
                                m->accept_drain = false;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                log_msg(LOG_WARNING, "cannot accept: %s; pausing new connections for 100 ms",
                                        strerror(errno));
                                sd_event_source_set_enabled(m->control_source, SD_EVENT_OFF);
                                sd_event_source_set_time_relative(m->accept_pause_source, ACCEPT_PAUSE_USEC);
                                sd_event_source_set_enabled(m->accept_pause_source, SD_EVENT_ONESHOT);
                        }
                        return 0;
                }
                if (m->accept_drain)
                        (void) setsockopt(conn_fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero));
                accept_conn(m, conn_fd);
                if (!m->accept_drain)
                        break;
        }
        return 0;
}

int control_setup(struct monitor *m) {
        int r;

        r = sd_event_add_time(m->event, &m->accept_pause_source, CLOCK_MONOTONIC, 0, 10 * 1000, on_accept_resume, m);
        if (r < 0)
                return r;
        sd_event_source_set_enabled(m->accept_pause_source, SD_EVENT_OFF);
        r = control_from_systemd(m);
        if (r == 0)
                r = control_create(m);
        if (r < 0)
                return r;
        r = sd_event_add_io(m->event, &m->control_source, m->control_fd, EPOLLIN, on_control, m);
        if (r >= 0)
                sd_event_source_set_enabled(m->control_source, SD_EVENT_OFF);
        return r;
}

void control_resume(struct monitor *m, bool on) {
        if (m->control_source)
                sd_event_source_set_enabled(m->control_source, on ? SD_EVENT_ON : SD_EVENT_OFF);
        if (!on && m->accept_pause_source)
                sd_event_source_set_enabled(m->accept_pause_source, SD_EVENT_OFF);
}

void control_done(struct monitor *m) {
        m->control_source = sd_event_source_disable_unref(m->control_source);
        m->accept_pause_source = sd_event_source_disable_unref(m->accept_pause_source);
        m->control_fd = safe_close(m->control_fd);
        if (m->control_created)
                unlink(m->opt.control_path);
        m->control_created = false;
}
