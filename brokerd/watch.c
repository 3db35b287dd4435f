/* SPDX-License-Identifier: MIT */
/*
 * Watches on what the broker hands out, each kind in one epoll set of its
 * own that the event loop watches as a single source (10,000 leases cost
 * 10,000 kernel entries, not 10,000 event sources). A TCP listener reports
 * EPOLLHUP once a holder's shutdown() takes it out of LISTEN (for every
 * holder: they share one socket); the broker listens again at once, or,
 * when a holder made it something that cannot listen (a connection), binds
 * a fresh one. A holder's pidfd turns readable when the holder exits,
 * which ends its entry in status; one pidfd per process, however many
 * leases it holds (lease.c's holder set), and no more than the fds the
 * worker can spare.
 */
#include "broker-int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include "fd-util.h"

#define WATCH_BATCH 64                  /* events taken per turn of the loop */
#define FD_RESERVE 64                   /* fds kept for the database, logs, a request's own */

static void on_listener_hup(struct broker *b, struct lease *l, uint32_t revents) {
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = { .endpoint = endpoint_format(&l->endpoint, text), .port = l->endpoint.port_lo, .uid = -1, .pid = -1 };
        int r = lease_ensure_listening(l);

        if (r > 0)
                log_event(LOG_WARNING, "repair", &f, "a holder shut the listener down; listening again");
        else if (r < 0)
                (void) broker_replace_socket(b, l, r, NULL);   /* watches the fresh socket */
        else if (revents & EPOLLERR) {
                /* Listening, yet in error: stop watching (no busy loop); gets still check. */
                log_event(LOG_ERR, "repair", &f, "listener reports an error and cannot be repaired: still listening");
                lease_unwatch(l);
        }
}

static int on_listeners(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct epoll_event evs[WATCH_BATCH];
        int n = epoll_wait(fd, evs, WATCH_BATCH, 0);

        /* Each entry's lease is alive: a lease leaves the set before its socket closes. */
        for (int i = 0; i < n; i++)
                on_listener_hup(userdata, evs[i].data.ptr, evs[i].events);
        return 0;
}

static int on_holders(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        holder_set_reap(userdata);
        return 0;
}

/* The worker's fd limit. */
static size_t fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
                return 1024;
        return (size_t) rl.rlim_cur;
}

void watch_limit_holders(struct broker *b) {
        /* The database may hold more leases than --max-leases (an admin lowered it). */
        size_t leases = b->leases.n > b->opt.max_leases ? b->leases.n : b->opt.max_leases;
        size_t others = leases + b->opt.max_connections + FD_RESERVE, limit = fd_limit();
        size_t room = limit > others ? limit - others : 0, all = leases * LEASE_HOLDERS_MAX;

        if (room < leases)
                log_event(LOG_WARNING, "fd-limit", &(struct log_fields) LOG_FIELDS_NONE,
                          "the fd limit (%zu) leaves room to watch %zu holders beside %zu leases and %u connections "
                          "(--max-leases, --max-connections): status counts no holder past that; raise "
                          "LimitNOFILE= (ulimit -n)", limit, room, leases, b->opt.max_connections);
        b->holders.max_live = room < all ? room : all;
}

int watch_setup(struct broker *b) {
        int r;

        b->listeners_fd = epoll_create1(EPOLL_CLOEXEC);
        if (b->listeners_fd < 0)
                return -errno;
        r = holder_set_init(&b->holders, 0);          /* none until watch_limit_holders() */
        if (r < 0)
                return r;
        r = sd_event_add_io(b->event, &b->listeners_source, b->listeners_fd, EPOLLIN, on_listeners, b);
        if (r >= 0)
                r = sd_event_add_io(b->event, &b->holders_source, b->holders.epoll_fd, EPOLLIN, on_holders,
                                    &b->holders);
        return r;
}

void watch_done(struct broker *b) {
        b->listeners_source = sd_event_source_disable_unref(b->listeners_source);
        b->holders_source = sd_event_source_disable_unref(b->holders_source);
        holder_set_done(&b->holders);
        b->listeners_fd = safe_close(b->listeners_fd);
}

int watch_listener(struct broker *b, struct lease *l) {
        if (l->sock_fd < 0 || l->endpoint.transport != PB_TCP)
                return 0;
        return lease_watch(l, b->listeners_fd);
}

void watch_holder(struct broker *b, struct lease *l, const struct peer *p) {
        struct lease_holder *h;
        int pid_fd;

        if (p->pid <= 0 || lease_held_by(l, p->pid))
                return;
        h = holder_set_find(&b->holders, p->pid);
        if (!h) {
                if (b->holders.n_live >= b->holders.max_live)
                        return;
                /* A new holder: its pidfd, from the connection (the monitor read
                 * the identity; this only watches the process that connected). */
                pid_fd = p->pid_fd >= 0 ? fcntl(p->pid_fd, F_DUPFD_CLOEXEC, 3) : peer_pidfd(p->conn_fd);
                /* New fds take the lowest number free: one this high means the
                 * table is nearly full, whatever the counts say. Not watched. */
                if (pid_fd >= 0 && (size_t) pid_fd + FD_RESERVE >= fd_limit())
                        pid_fd = safe_close(pid_fd);
                if (pid_fd < 0 || holder_set_add(&b->holders, p->pid, pid_fd, &h) < 0)
                        return;
        }
        lease_add_holder(l, h);
}
