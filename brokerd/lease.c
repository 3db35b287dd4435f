/* SPDX-License-Identifier: MIT */
/*
 * Leases, their whole life: a lease object from creation to free, its
 * socket (bound with every option it relies on set explicitly), its holders,
 * and the lease table indexed by endpoint and by id. A TCP listener whose
 * holder called shutdown() drops out of LISTEN (SO_ACCEPTCONN becomes 0) but
 * keeps its port, because it was bound explicitly; listen() again brings it
 * back with the same accept queue.
 */
#include "lease.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd-util.h"
#include "guard.h"
#include "sockaddr.h"
#include "sockopt.h"

#define TOMBSTONE ((struct lease *) 1)

int lease_bind(const struct guard *g, const struct pb_endpoint *e, unsigned backlog, int *ret_fd) {
        bool tcp = e->transport == PB_TCP;
        _cleanup_close_ int sock_fd = socket_for_endpoint(e);  /* IPV6_V6ONLY explicit */
        struct sockaddr_storage ss;
        socklen_t len;
        int r;

        if (sock_fd < 0)
                return sock_fd;
        /* TCP: bind over TIME_WAIT left by earlier listeners. UDP: nothing, so
         * no other socket can share the port (SO_REUSEADDR would let it). */
        r = tcp ? sockopt_set_int(sock_fd, SOL_SOCKET, SO_REUSEADDR, 1) : 0;
        if (r >= 0)
                r = sockaddr_from_endpoint(e, &ss, &len);
        if (r >= 0)
                r = guard_bind(g, sock_fd, (struct sockaddr *) &ss, len);
        if (r >= 0 && tcp && listen(sock_fd, (int) backlog) < 0)
                r = -errno;
        if (r < 0)
                return r;
        *ret_fd = sock_fd;
        sock_fd = -1;
        return 0;
}

/* A UDP socket a holder connect()ed receives only from that peer: undo it
 * (connect to AF_UNSPEC). Returns 1 when it was connected, 0, or -errno. */
static int udp_disconnect(int fd) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        struct sockaddr unspec = { .sa_family = AF_UNSPEC };

        if (getpeername(fd, (struct sockaddr *) &peer, &len) < 0)
                return errno == ENOTCONN ? 0 : -errno;
        return connect(fd, &unspec, sizeof(unspec)) < 0 ? -errno : 1;
}

/* A socket filter (classic or eBPF) a holder attached decides what the
 * socket delivers to every holder: detach it. Returns 1 when there was one,
 * 0, or -errno (-EPERM: locked by SO_LOCK_FILTER, for good). */
static int detach_filter(int fd) {
        int zero = 0;

        if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof(zero)) == 0)
                return 1;
        return errno == ENOENT ? 0 : -errno;
}

/* A TCP listener listening with the backlog we gave it: a holder's
 * shutdown() stops it, a holder's listen(fd, N) changes the backlog for all.
 * Returns LEASE_FIXED_LISTEN, LEASE_FIXED_BACKLOG, 0, or -errno (-EINVAL:
 * no longer a listener that can listen again, such as a connection). */
static int tcp_ensure_listening(const struct lease *l) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);

        /* On a listener, tcpi_sacked is the accept queue's limit. */
        if (getsockopt(l->sock_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
                return -errno;
        if (ti.tcpi_state == TCP_LISTEN && ti.tcpi_sacked == l->backlog)
                return 0;
        if (listen(l->sock_fd, (int) l->backlog) < 0)
                return -errno;
        return ti.tcpi_state == TCP_LISTEN ? LEASE_FIXED_BACKLOG : LEASE_FIXED_LISTEN;
}

/* A Unix listener: a holder's listen(fd, N) changed the backlog for all
 * (nothing reads it back, so it is set again each time). Its shutdown()
 * cannot be undone, and harms only its owner, the one uid that holds it. */
static int unix_ensure_listening(const struct lease *l) {
        return listen(l->sock_fd, (int) l->backlog) < 0 ? -errno : 0;
}

int lease_ensure_listening(struct lease *l) {
        int fixed = 0, r;

        if (l->sock_fd < 0)
                return 0;
        if (l->ux) {
                r = detach_filter(l->sock_fd);
                fixed = r > 0 ? LEASE_FIXED_FILTER : 0;
                if (r >= 0)
                        r = unix_ensure_listening(l);
                return r < 0 ? r : fixed;
        }
        /* Undo what a holder may have set on the shared socket that would let
         * others share the port: SO_REUSEPORT ever, SO_REUSEADDR on UDP. */
        r = sockopt_set_int(l->sock_fd, SOL_SOCKET, SO_REUSEPORT, 0);
        if (r >= 0 && l->endpoint.transport == PB_UDP)
                r = sockopt_set_int(l->sock_fd, SOL_SOCKET, SO_REUSEADDR, 0);
        if (r >= 0 && (r = detach_filter(l->sock_fd)) > 0)
                fixed |= LEASE_FIXED_FILTER;
        if (r >= 0 && l->endpoint.transport == PB_UDP && (r = udp_disconnect(l->sock_fd)) > 0)
                fixed |= LEASE_FIXED_CONNECT;
        if (r >= 0 && l->endpoint.transport == PB_TCP && (r = tcp_ensure_listening(l)) > 0)
                fixed |= r;
        return r < 0 ? r : fixed;
}

int lease_queued(const struct lease *l) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);

        if (l->sock_fd < 0)
                return -EBADF;
        if (l->endpoint.transport != PB_TCP)
                return -EOPNOTSUPP;
        /* On a listener, tcpi_unacked is the accept queue's length. */
        if (getsockopt(l->sock_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
                return -errno;
        return (int) ti.tcpi_unacked;
}

void lease_init(struct lease *l) {
        *l = (struct lease) { .sock_fd = -1, .watch_fd = -1 };
}

int lease_set_endpoint(struct lease *l, const struct pb_endpoint *e) {
        l->endpoint = *e;
        if (!endpoint_is_unix(e) || l->ux)
                return 0;
        l->ux = calloc(1, sizeof(*l->ux));
        return l->ux ? 0 : -ENOMEM;
}

struct lease *lease_new(void) {
        struct lease *l = malloc(sizeof(*l));

        if (l)
                lease_init(l);
        return l;
}

int lease_watch(struct lease *l, int epoll_fd) {
        struct epoll_event ev = { .events = 0, .data.ptr = l };

        if (l->watch_fd >= 0)
                return 0;
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, l->sock_fd, &ev) < 0)
                return -errno;
        l->watch_fd = epoll_fd;
        return 0;
}

void lease_unwatch(struct lease *l) {
        if (l->watch_fd >= 0)
                (void) epoll_ctl(l->watch_fd, EPOLL_CTL_DEL, l->sock_fd, NULL);
        l->watch_fd = -1;
}

void lease_unbind(struct lease *l) {
        lease_unwatch(l);
        l->sock_fd = safe_close(l->sock_fd);
}

void lease_free(struct lease *l) {
        if (!l)
                return;
        lease_unbind(l);
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                holder_unref(l->holders[i]);
        free(l->ux);
        free(l);
}

/* --- holders ------------------------------------------------------------------ */

static bool holder_alive(const struct lease_holder *h) {
        return h && h->pid_fd >= 0;
}

bool lease_held_by(const struct lease *l, pid_t pid) {
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                if (holder_alive(l->holders[i]) && l->holders[i]->pid == pid)
                        return true;
        return false;
}

void lease_add_holder(struct lease *l, struct lease_holder *h) {
        struct lease_holder **slot = &l->holders[l->holders_next];

        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                if (l->holders[i] == h)
                        return;
        holder_unref(*slot);
        h->refs++;
        *slot = h;
        l->holders_next = (l->holders_next + 1) % LEASE_HOLDERS_MAX;
}

unsigned lease_holders_live(const struct lease *l) {
        unsigned n = 0;

        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                n += holder_alive(l->holders[i]);
        return n;
}

static struct lease_holder **holder_bucket(const struct holder_set *hs, pid_t pid) {
        return &hs->buckets[((uint32_t) pid * 2654435761u) & (hs->n_buckets - 1)];
}

int holder_set_init(struct holder_set *hs, size_t max_live) {
        *hs = (struct holder_set) { .max_live = max_live, .n_buckets = 64, .epoll_fd = -1 };
        hs->buckets = calloc(hs->n_buckets, sizeof(*hs->buckets));
        if (!hs->buckets)
                return -ENOMEM;
        hs->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (hs->epoll_fd < 0) {
                int r = -errno;

                free(hs->buckets);
                hs->buckets = NULL;
                return r;
        }
        return 0;
}

struct lease_holder *holder_set_find(const struct holder_set *hs, pid_t pid) {
        for (struct lease_holder *h = *holder_bucket(hs, pid); h; h = h->next)
                if (h->pid == pid)
                        return h;
        return NULL;
}

/* Twice the buckets once there are as many live holders as buckets. */
static void holder_set_grow(struct holder_set *hs) {
        size_t old_n = hs->n_buckets;
        struct lease_holder **old = hs->buckets, **nb = calloc(old_n * 2, sizeof(*nb));

        if (!nb)
                return;                 /* longer chains, still correct */
        hs->buckets = nb;
        hs->n_buckets = old_n * 2;
        for (size_t i = 0; i < old_n; i++)
                for (struct lease_holder *h = old[i], *next; h; h = next) {
                        struct lease_holder **b = holder_bucket(hs, h->pid);

                        next = h->next;
                        h->next = *b;
                        *b = h;
                }
        free(old);
}

int holder_set_add(struct holder_set *hs, pid_t pid, int pid_fd, struct lease_holder **ret) {
        struct epoll_event ev = { .events = EPOLLIN };
        struct lease_holder *h, **b;

        if (hs->n_live >= hs->max_live) {
                safe_close(pid_fd);
                return -ENOSPC;
        }
        h = malloc(sizeof(*h));
        if (!h) {
                safe_close(pid_fd);
                return -ENOMEM;
        }
        *h = (struct lease_holder) { .pid = pid, .pid_fd = pid_fd, .set = hs };
        ev.data.ptr = h;
        /* A pidfd turns readable when its process exits. */
        if (epoll_ctl(hs->epoll_fd, EPOLL_CTL_ADD, pid_fd, &ev) < 0) {
                int r = -errno;

                safe_close(pid_fd);
                free(h);
                return r;
        }
        if (hs->n_live >= hs->n_buckets)
                holder_set_grow(hs);
        b = holder_bucket(hs, pid);
        h->next = *b;
        *b = h;
        hs->n_live++;
        *ret = h;
        return 0;
}

/* h's process exited, or no lease lists it any more: out of the set, its pidfd closed. */
static void holder_forget(struct lease_holder *h) {
        struct holder_set *hs = h->set;

        if (h->pid_fd < 0)
                return;
        for (struct lease_holder **p = holder_bucket(hs, h->pid); *p; p = &(*p)->next)
                if (*p == h) {
                        *p = h->next;
                        break;
                }
        (void) epoll_ctl(hs->epoll_fd, EPOLL_CTL_DEL, h->pid_fd, NULL);
        h->pid_fd = safe_close(h->pid_fd);
        h->next = NULL;
        hs->n_live--;
}

void holder_unref(struct lease_holder *h) {
        if (!h || (h->refs > 0 && --h->refs > 0))
                return;
        holder_forget(h);
        free(h);
}

void holder_set_reap(struct holder_set *hs) {
        struct epoll_event evs[64];
        int n = epoll_wait(hs->epoll_fd, evs, (int) (sizeof(evs) / sizeof(evs[0])), 0);

        for (int i = 0; i < n; i++)
                holder_forget(evs[i].data.ptr);         /* leases still list it, dead */
}

void holder_set_done(struct holder_set *hs) {
        for (size_t i = 0; hs->buckets && i < hs->n_buckets; i++)
                while (hs->buckets[i]) {
                        struct lease_holder *h = hs->buckets[i];

                        holder_forget(h);
                        free(h);
                }
        free(hs->buckets);
        hs->buckets = NULL;
        hs->epoll_fd = safe_close(hs->epoll_fd);
}

/* FNV-1a over the endpoint's wire form. */
static size_t endpoint_hash(const struct pb_endpoint *e) {
        uint8_t wire[PB_ENDPOINT_WIRE_MAX];
        uint64_t h = 1469598103934665603ULL;
        size_t n = endpoint_encode(e, wire);

        for (size_t i = 0; i < n; i++)
                h = (h ^ wire[i]) * 1099511628211ULL;
        return (size_t) h;
}

static int table_grow(struct lease_table *t) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct lease **slots;

        /* Rehash when live entries pass half; tombstones alone do not grow it. */
        if (t->cap && t->n * 2 < t->cap)
                cap = t->cap;
        slots = calloc(cap, sizeof(*slots));
        if (!slots)
                return -ENOMEM;
        for (size_t i = 0; i < t->cap; i++) {
                struct lease *l = t->slots[i];
                size_t j;

                if (!l || l == TOMBSTONE)
                        continue;
                for (j = endpoint_hash(&l->endpoint) & (cap - 1); slots[j]; j = (j + 1) & (cap - 1))
                        ;
                slots[j] = l;
        }
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
        t->used = t->n;
        return 0;
}

int lease_table_add(struct lease_table *t, struct lease *l) {
        size_t j;
        int r;

        if (lease_table_find(t, &l->endpoint))
                return -EEXIST;
        if ((t->used + 1) * 4 > t->cap * 3) {
                r = table_grow(t);
                if (r < 0)
                        return r;
        }
        if (!t->port_leases) {
                t->port_leases = calloc(UINT16_MAX + 1, sizeof(*t->port_leases));
                if (!t->port_leases)
                        return -ENOMEM;
        }
        if (t->n == t->by_id_cap) {
                size_t cap = t->by_id_cap ? t->by_id_cap * 2 : 64;
                struct lease **by_id = realloc(t->by_id, cap * sizeof(*by_id));

                if (!by_id)
                        return -ENOMEM;
                t->by_id = by_id;
                t->by_id_cap = cap;
        }

        for (j = endpoint_hash(&l->endpoint) & (t->cap - 1); t->slots[j] && t->slots[j] != TOMBSTONE;
             j = (j + 1) & (t->cap - 1))
                ;
        if (!t->slots[j])
                t->used++;
        t->slots[j] = l;

        /* Ids only grow, so this is nearly always an append. */
        j = lease_table_after(t, l->id);
        memmove(&t->by_id[j + 1], &t->by_id[j], (t->n - j) * sizeof(*t->by_id));
        t->by_id[j] = l;
        t->n++;
        t->port_leases[l->endpoint.port_lo]++;
        return 0;
}

static size_t find_slot(const struct lease_table *t, const struct pb_endpoint *e, bool *ret_found) {
        size_t j = t->cap ? endpoint_hash(e) & (t->cap - 1) : 0;

        *ret_found = false;
        if (!t->cap)
                return 0;
        for (; t->slots[j]; j = (j + 1) & (t->cap - 1))
                if (t->slots[j] != TOMBSTONE && endpoint_equal(&t->slots[j]->endpoint, e)) {
                        *ret_found = true;
                        break;
                }
        return j;
}

struct lease *lease_table_find(const struct lease_table *t, const struct pb_endpoint *e) {
        bool found;
        size_t j = find_slot(t, e, &found);

        return found ? t->slots[j] : NULL;
}

size_t lease_table_after(const struct lease_table *t, uint64_t after_id) {
        size_t lo = 0, hi = t->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (t->by_id[mid]->id <= after_id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

void lease_table_remove(struct lease_table *t, struct lease *l) {
        bool found;
        size_t j = find_slot(t, &l->endpoint, &found);

        if (!found || t->slots[j] != l)
                return;
        t->slots[j] = TOMBSTONE;
        t->port_leases[l->endpoint.port_lo]--;
        j = lease_table_after(t, l->id - 1);
        if (j < t->n && t->by_id[j] == l) {
                memmove(&t->by_id[j], &t->by_id[j + 1], (t->n - j - 1) * sizeof(*t->by_id));
                t->n--;
        }
}

bool lease_table_has_port(const struct lease_table *t, uint16_t port) {
        return t->port_leases && t->port_leases[port] > 0;
}

struct lease *lease_table_conflicting(const struct lease_table *t, const struct pb_endpoint *e, uid_t uid) {
        if (!lease_table_has_port(t, e->port_lo))
                return NULL;
        for (size_t i = 0; i < t->n; i++) {
                const struct pb_endpoint *o = &t->by_id[i]->endpoint;

                if (t->by_id[i]->owner_uid != uid && (endpoint_overlaps(o, e) || endpoint_splits_clients(o, e)))
                        return t->by_id[i];
        }
        return NULL;
}

struct lease *lease_table_overlapping(const struct lease_table *t, const struct pb_endpoint *e) {
        if (!lease_table_has_port(t, e->port_lo))
                return NULL;
        for (size_t i = 0; i < t->n; i++)
                if (endpoint_overlaps(&t->by_id[i]->endpoint, e))
                        return t->by_id[i];
        return NULL;
}

size_t lease_table_count_owner(const struct lease_table *t, uid_t uid) {
        size_t n = 0;

        for (size_t i = 0; i < t->n; i++)
                if (t->by_id[i]->owner_uid == uid)
                        n++;
        return n;
}

void lease_table_done(struct lease_table *t) {
        free(t->slots);
        free(t->by_id);
        free(t->port_leases);
        *t = (struct lease_table) { 0 };
}
