/* SPDX-License-Identifier: MIT */
/*
 * Watches on what the broker hands out. A TCP listener reports EPOLLHUP
 * once a holder's shutdown() takes it out of LISTEN (for every holder: they
 * share one socket); the broker listens again at once. A holder's pidfd
 * turns readable when the holder exits, which ends its entry in status;
 * when the last known one is gone, the lease's orphan clock starts: with
 * an orphan timeout from its rule, the broker closes the socket once it
 * has gone that long without a holder (broker_orphan_close()).
 */
#include "broker-int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#define USEC_PER_SEC 1000000ULL

static int on_listener_hup(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct lease *l = userdata;
        struct log_fields f = { .endpoint = l->text, .port = l->endpoint.port_lo,
                                .uid = -1, .pid = -1 };
        int r = lease_ensure_listening(l);

        if (r > 0)
                log_event(LOG_WARNING, "repair", &f, "a holder shut the listener down; listening again");
        else if (r < 0 || (revents & EPOLLERR)) {
                /* Not something listen() fixes: stop watching (no busy loop); gets still check. */
                log_event(LOG_ERR, "repair", &f, "listener reports %s and cannot be repaired: %s",
                          revents & EPOLLERR ? "an error" : "hang-up", r < 0 ? strerror(-r) : "still listening");
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
        }
        return 0;
}

int watch_listener(struct broker *b, struct lease *l) {
        if (l->sock_fd < 0 || l->endpoint.transport != PB_TCP)
                return 0;
        /* No events asked for: epoll still reports EPOLLHUP, which a listener
         * shows once shutdown() took it out of LISTEN. */
        return sd_event_add_io(b->event, &l->hup_source, l->sock_fd, 0, on_listener_hup, l);
}

static int on_orphan(sd_event_source *s, uint64_t usec, void *userdata) {
        struct lease *l = userdata;

        if (lease_holders_live(l) == 0 && l->sock_fd >= 0)
                broker_orphan_close(l->broker, l);
        return 0;
}

/* Arms l's orphan timer to fire orphan_timeout after it lost its holders. */
static void orphan_clock_arm(struct lease *l, sd_event *e) {
        uint64_t at = l->holderless_usec + l->orphan_timeout * USEC_PER_SEC;

        if (!l->orphan_source) {
                if (sd_event_add_time(e, &l->orphan_source, CLOCK_MONOTONIC, at, USEC_PER_SEC / 10, on_orphan, l) < 0)
                        return;         /* no timer: the socket stays, as without a timeout */
        } else
                sd_event_source_set_time(l->orphan_source, at);
        sd_event_source_set_enabled(l->orphan_source, SD_EVENT_ONESHOT);
}

void watch_orphan_rearm(struct lease *l) {
        if (l->orphan_timeout > 0 && l->holderless_usec > 0 && l->sock_fd >= 0 && l->orphan_source)
                orphan_clock_arm(l, sd_event_source_get_event(l->orphan_source));
}

static int on_holder_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct lease_holder *h = userdata;
        struct lease *l = h->lease;
        sd_event *e = sd_event_source_get_event(s);

        lease_holder_clear(h);
        if (lease_holders_live(l) > 0)
                return 0;
        l->holderless_since = (int64_t) time(NULL);
        sd_event_now(e, CLOCK_MONOTONIC, &l->holderless_usec);
        if (l->orphan_timeout > 0 && l->sock_fd >= 0)
                orphan_clock_arm(l, e);
        return 0;
}

void watch_holder(struct broker *b, struct lease *l, const struct peer *p) {
        struct lease_holder *h = &l->holders[l->holders_next];

        if (p->pid_fd < 0)
                return;
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                if (l->holders[i].pid == p->pid)
                        return;
        lease_holder_clear(h);
        h->pid_fd = fcntl(p->pid_fd, F_DUPFD_CLOEXEC, 3);
        if (h->pid_fd < 0)
                return;
        h->pid = p->pid;
        h->lease = l;
        /* A holder again: the orphan clock stops. */
        l->holderless_since = 0;
        l->holderless_usec = 0;
        if (l->orphan_source)
                sd_event_source_set_enabled(l->orphan_source, SD_EVENT_OFF);
        /* A pidfd turns readable when its process exits. */
        if (sd_event_add_io(b->event, &h->exit_source, h->pid_fd, EPOLLIN, on_holder_exit, h) < 0) {
                lease_holder_clear(h);
                return;
        }
        l->holders_next = (l->holders_next + 1) % LEASE_HOLDERS_MAX;
}
