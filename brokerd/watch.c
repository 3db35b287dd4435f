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
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

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

/* The cgroup v2 path of pid ("/system.slice/web.service"), from the "0::"
 * line of /proc/PID/cgroup, into buf. Returns 0 or -errno. */
static int pid_cgroup(pid_t pid, char *buf, size_t size) {
        char path[64], line[PATH_MAX + 8];
        FILE *f;
        int r = -ENODATA;

        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "0::/", 4) == 0) {
                        line[strcspn(line, "\n")] = '\0';
                        r = strlen(line + 3) < size ? 0 : -ENAMETOOLONG;
                        if (r == 0)
                                snprintf(buf, size, "%s", line + 3);
                        break;
                }
        fclose(f);
        return r;
}

/* Whether cgroup (a v2 path) still has processes: 1, 0 (empty or gone), or -errno. */
static int cgroup_populated(const char *cgroup) {
        static const char *const roots[] = { "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };
        char path[PATH_MAX + 64], line[64];
        int r = -ENOENT;

        for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]) && r == -ENOENT; i++) {
                char probe[64];
                FILE *f;

                snprintf(probe, sizeof(probe), "%s/cgroup.controllers", roots[i]);
                if (access(probe, F_OK) < 0)
                        continue;       /* not the v2 hierarchy's root */
                snprintf(path, sizeof(path), "%s%s/cgroup.events", roots[i], cgroup);
                f = fopen(path, "re");
                if (!f)
                        return errno == ENOENT ? 0 : -errno;    /* removed: empty */
                r = -EBADMSG;
                while (fgets(line, sizeof(line), f))
                        if (strncmp(line, "populated ", 10) == 0)
                                r = line[10] == '1';
                fclose(f);
        }
        return r;
}

/* Whether some process may still hold l's socket: one of its holders'
 * cgroups is populated, or what they were is not known. Forgets cgroups
 * found empty. */
static bool maybe_held(struct lease *l) {
        bool held = l->holders_unknown;

        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++) {
                int r;

                if (!l->holder_cgroups[i])
                        continue;
                r = cgroup_populated(l->holder_cgroups[i]);
                if (r == 0) {
                        free(l->holder_cgroups[i]);
                        l->holder_cgroups[i] = NULL;
                } else
                        held = true;    /* populated, or cannot tell: keep the socket */
        }
        return held;
}

static int on_orphan_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void orphan_arm_at(struct lease *l, sd_event *e, uint64_t at) {
        if (!l->orphan_source) {
                if (sd_event_add_time(e, &l->orphan_source, CLOCK_MONOTONIC, at, USEC_PER_SEC / 10,
                                      on_orphan_timer, l) < 0)
                        return;         /* no timer: the socket stays, as without a timeout */
        } else
                sd_event_source_set_time(l->orphan_source, at);
        sd_event_source_set_enabled(l->orphan_source, SD_EVENT_ONESHOT);
}

void watch_orphan_retry(struct lease *l) {
        uint64_t now, delay = l->orphan_timeout * USEC_PER_SEC;

        if (!l->orphan_source)
                return;
        sd_event_now(sd_event_source_get_event(l->orphan_source), CLOCK_MONOTONIC, &now);
        orphan_arm_at(l, sd_event_source_get_event(l->orphan_source),
                      now + (delay < 5 * USEC_PER_SEC ? 5 * USEC_PER_SEC : delay));
}

/* The orphan timeout has passed since the last known holder exited. The
 * socket is closed only when no process can still hold it: forked
 * children live on in their parent's cgroup, so while one of the holders'
 * cgroups is populated the check is made again a timeout later. */
static int on_orphan_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct lease *l = userdata;

        if (lease_holders_live(l) > 0 || l->sock_fd < 0 || l->orphan_timeout == 0)
                return 0;
        if (l->holders_unknown)
                return 0;               /* never: someone unseen may hold it */
        if (!maybe_held(l)) {
                broker_orphan_close(l->broker, l);
                return 0;
        }
        if (!l->orphan_waiting) {       /* said once per holderless spell */
                struct log_fields f = { .endpoint = l->text, .port = l->endpoint.port_lo,
                                        .uid = (long) l->owner_uid, .pid = -1 };

                log_event(LOG_INFO, "orphan-wait", &f, "lease %llu: no watched holder for %u s, but processes "
                          "remain in its holders' cgroups; its socket stays while they do",
                          (unsigned long long) l->id, l->orphan_timeout);
                l->orphan_waiting = true;
        }
        watch_orphan_retry(l);
        return 0;
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
                orphan_arm_at(l, e, l->holderless_usec + l->orphan_timeout * USEC_PER_SEC);
        return 0;
}

/* Remembers the cgroup of holder h (read by pid, trusted only while h's
 * pidfd says the process lives); when that fails, or there are more
 * distinct cgroups than we keep, the lease's holders become unknown. */
static void remember_cgroup(struct lease *l, const struct lease_holder *h) {
        struct pollfd alive = { .fd = h->pid_fd, .events = POLLIN };
        char cgroup[PATH_MAX];
        unsigned free_slot = LEASE_HOLDERS_MAX;

        if (pid_cgroup(h->pid, cgroup, sizeof(cgroup)) < 0 || poll(&alive, 1, 0) != 0) {
                l->holders_unknown = true;
                return;
        }
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++) {
                if (l->holder_cgroups[i] && strcmp(l->holder_cgroups[i], cgroup) == 0)
                        return;
                if (!l->holder_cgroups[i] && free_slot == LEASE_HOLDERS_MAX)
                        free_slot = i;
        }
        if (free_slot == LEASE_HOLDERS_MAX || !(l->holder_cgroups[free_slot] = strdup(cgroup)))
                l->holders_unknown = true;
}

void watch_holder(struct broker *b, struct lease *l, const struct peer *p) {
        struct lease_holder *h = NULL;

        if (p->pid_fd < 0) {
                l->holders_unknown = true;      /* cannot be watched */
                return;
        }
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                if (l->holders[i].pid == p->pid)
                        return;
        /* A free slot first; else the oldest is forgotten (its cgroup stays). */
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX && !h; i++)
                if (l->holders[i].pid_fd < 0)
                        h = &l->holders[i];
        if (!h) {
                h = &l->holders[l->holders_next];
                l->holders_next = (l->holders_next + 1) % LEASE_HOLDERS_MAX;
        }
        lease_holder_clear(h);
        h->pid_fd = fcntl(p->pid_fd, F_DUPFD_CLOEXEC, 3);
        if (h->pid_fd < 0) {
                l->holders_unknown = true;
                return;
        }
        h->pid = p->pid;
        h->lease = l;
        remember_cgroup(l, h);
        /* A holder again: the orphan clock stops. */
        l->holderless_since = 0;
        l->holderless_usec = 0;
        l->orphan_waiting = false;
        if (l->orphan_source)
                sd_event_source_set_enabled(l->orphan_source, SD_EVENT_OFF);
        /* A pidfd turns readable when its process exits. */
        if (sd_event_add_io(b->event, &h->exit_source, h->pid_fd, EPOLLIN, on_holder_exit, h) < 0) {
                lease_holder_clear(h);
                l->holders_unknown = true;
        }
}
