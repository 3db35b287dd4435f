/* SPDX-License-Identifier: MIT */
/*
 * Watches on what the broker hands out. A TCP listener reports EPOLLHUP
 * once a holder's shutdown() takes it out of LISTEN (for every holder: they
 * share one socket); the broker listens again at once, or, when a holder
 * made it something that cannot listen (a connection), binds a fresh one. A holder's pidfd
 * turns readable when the holder exits, which ends its entry in status.
 */
#include "broker-int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>

/* The lease whose socket is fd (a rare event: a scan is fine). */
static struct lease *lease_of_fd(const struct broker *b, int fd) {
        for (size_t i = 0; i < b->leases.n; i++)
                if (b->leases.by_id[i]->sock_fd == fd)
                        return b->leases.by_id[i];
        return NULL;
}

static int on_listener_hup(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct broker *b = userdata;
        struct lease *l = lease_of_fd(b, fd);
        struct log_fields f;
        int r;

        if (!l) {
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
                return 0;
        }
        f = (struct log_fields) { .endpoint = l->text, .port = l->endpoint.port_lo, .uid = -1, .pid = -1 };
        r = lease_ensure_listening(l);
        if (r > 0)
                log_event(LOG_WARNING, "repair", &f, "a holder shut the listener down; listening again");
        else if (r < 0)
                (void) broker_replace_socket(b, l, r, NULL);   /* frees s, watches the fresh socket */
        else if (revents & EPOLLERR) {
                /* Listening, yet in error: stop watching (no busy loop); gets still check. */
                log_event(LOG_ERR, "repair", &f, "listener reports an error and cannot be repaired: still listening");
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
        }
        return 0;
}

int watch_listener(struct broker *b, struct lease *l) {
        if (l->sock_fd < 0 || l->endpoint.transport != PB_TCP)
                return 0;
        /* No events asked for: epoll still reports EPOLLHUP, which a listener
         * shows once shutdown() took it out of LISTEN. */
        return sd_event_add_io(b->event, &l->hup_source, l->sock_fd, 0, on_listener_hup, b);
}

static int on_holder_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        lease_holder_clear(userdata);
        return 0;
}

void watch_holder(struct broker *b, struct lease *l, const struct peer *p) {
        struct lease_holder *h = &l->holders[l->holders_next];

        if (p->pid <= 0)
                return;
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                if (l->holders[i].pid == p->pid)
                        return;
        lease_holder_clear(h);
        /* A new holder: its pidfd, from the connection (the monitor read the
         * identity; this only watches the process that connected). */
        h->pid_fd = p->pid_fd >= 0 ? fcntl(p->pid_fd, F_DUPFD_CLOEXEC, 3) : peer_pidfd(p->conn_fd);
        if (h->pid_fd < 0)
                return;
        h->pid = p->pid;
        /* A pidfd turns readable when its process exits. */
        if (sd_event_add_io(b->event, &h->exit_source, h->pid_fd, EPOLLIN, on_holder_exit, h) < 0) {
                lease_holder_clear(h);
                return;
        }
        l->holders_next = (l->holders_next + 1) % LEASE_HOLDERS_MAX;
}
