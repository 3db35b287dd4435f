/* SPDX-License-Identifier: MIT */
/*
 * Leases: the sockets the broker has bound and holds, from creation to
 * free: binding, the check that a TCP listener still listens (a holder's
 * shutdown() stops it for all), the holders, what status reports of each,
 * and the table indexing them by endpoint (hash) and by id (sorted array,
 * for paging).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "endpoint.h"

#define LEASE_HOLDERS_MAX 4             /* recipients watched per lease */

struct guard;
struct holder_set;

/* A process that got a lease's socket, watched through its pidfd until it
 * exits: one per process, shared by every lease that lists it (a server
 * holding 10,000 leases costs one pidfd), freed once no lease does. */
struct lease_holder {
        pid_t pid;
        int pid_fd;                     /* -1 once it exited */
        unsigned refs;                  /* leases listing it */
        struct holder_set *set;
        struct lease_holder *next;      /* in set's hash chain, while alive */
};

/* The live holders by pid, their pidfds in one epoll set (readable when
 * one of them exits: holder_set_reap()), at most max_live of them (each
 * is an fd). */
struct holder_set {
        struct lease_holder **buckets;
        size_t n_buckets;               /* power of two */
        size_t n_live, max_live;
        int epoll_fd;                   /* -1 before holder_set_init() */
};

/* Which file a Unix lease's socket file is: device, inode and birth time
 * in nanoseconds (0 where the file system keeps none): an inode number
 * alone comes back for the next file made. */
struct unix_file {
        uint64_t dev, ino, born;        /* all 0: none */
};

/* A Unix lease's socket file, as brokerd makes it: owned by the lease's
 * owner, with the group and mode of the rule that allowed it. */
struct lease_unix {
        uint32_t uid, gid;
        uint16_t mode;
        struct unix_file file;          /* the one brokerd made; only that one is ever removed or replaced */
        bool made;                      /* monitor: this monitor made file, or holds a socket bound there
                                         * (the worker's word alone is not enough; never on the wire) */
};

struct lease {
        uint64_t id;
        struct pb_endpoint endpoint;
        uid_t owner_uid;
        int64_t since;                  /* unix seconds */
        int sock_fd;                    /* the broker's copy, -1 when not bound */
        unsigned backlog;               /* TCP listen() backlog, as the kernel keeps it (net.core.somaxconn at most) */
        uint64_t handouts;              /* gets served since the broker started */
        bool declared;                  /* monitor: the current worker's database has it */
        int watch_fd;                   /* the epoll set watching sock_fd (the worker's), -1: none */
        struct lease_holder *holders[LEASE_HOLDERS_MAX]; /* recent distinct recipients, NULL: empty */
        unsigned holders_next;          /* ring position */
        struct lease_unix *ux;          /* Unix leases' (lease_set_endpoint()), else NULL: out of line,
                                         * since most leases are not */
};

struct lease_table {
        struct lease **slots;           /* open addressing by endpoint; NULL = empty, TOMBSTONE = deleted */
        size_t cap;                     /* power of two */
        size_t used;                    /* live + tombstones */
        struct lease **by_id;           /* sorted by id */
        size_t n, by_id_cap;
        uint32_t *port_leases;          /* leases on each port, any transport or address (65,536 counts;
                                         * untouched pages cost no memory) */
};

/* Binds a socket for e past the bind guard g (NULL: none): TCP with
 * SO_REUSEADDR and listen(backlog), UDP with no reuse option; IPV6_V6ONLY
 * explicit; never SO_REUSEPORT. CLOEXEC. Returns 0 and *ret_fd, or -errno. */
int lease_bind(const struct guard *g, const struct pb_endpoint *e, unsigned backlog, int *ret_fd);

/* What lease_ensure_listening() repaired (bits). */
enum {
        LEASE_FIXED_LISTEN = 1 << 0,    /* listens again after a holder's shutdown() */
        LEASE_FIXED_BACKLOG = 1 << 1,   /* the backlog a holder's listen() changed */
        LEASE_FIXED_FILTER = 1 << 2,    /* a socket filter a holder attached, detached */
        LEASE_FIXED_CONNECT = 1 << 3,   /* a UDP socket a holder connected, disconnected */
};

/* Before a hand-out: clears SO_REUSEPORT (and SO_REUSEADDR on UDP) that a
 * holder may have set, detaches a socket filter, disconnects a UDP socket,
 * and makes a TCP socket listen with l->backlog again. Returns the
 * LEASE_FIXED_* bits of what it repaired (0: nothing was wrong), or -errno
 * when the socket cannot be repaired (a TCP socket a holder turned into a
 * connection; a filter locked with SO_LOCK_FILTER). */
int lease_ensure_listening(struct lease *l);

/* Connections waiting to be accepted on a TCP listener, or -errno (-EOPNOTSUPP for UDP, -EBADF unbound). */
int lease_queued(const struct lease *l);

/* An empty lease: no socket, no holders. */
void lease_init(struct lease *l);

/* Sets l's endpoint; a Unix one gets l->ux (zeroed). Returns 0 or -ENOMEM. */
int lease_set_endpoint(struct lease *l, const struct pb_endpoint *e);

/* A new empty lease, or NULL when out of memory. Free with lease_free(). */
struct lease *lease_new(void);

/* Stops the watches on l, forgets its holders, closes its socket, frees it. NULL is fine. */
void lease_free(struct lease *l);

/* Closes l's socket (and stops watching it); the lease itself stays. */
void lease_unbind(struct lease *l);

/* Watches l's socket in epoll set epoll_fd (no events asked for: EPOLLHUP
 * and EPOLLERR come anyway; data.ptr is l), unless it is watched already.
 * Returns 0 or -errno. */
int lease_watch(struct lease *l, int epoll_fd);

/* Stops watching l's socket (before it is closed: another process's copy
 * would keep it in the set). */
void lease_unwatch(struct lease *l);

/* Lists h among l's holders (a ring: the oldest entry gives way), unless it is listed. */
void lease_add_holder(struct lease *l, struct lease_holder *h);

/* Whether a live holder with pid is among l's. */
bool lease_held_by(const struct lease *l, pid_t pid);

/* Holders of l still alive (as far as their watches have told). */
unsigned lease_holders_live(const struct lease *l);

/* An empty set for at most max_live holders. Returns 0 or -errno. */
int holder_set_init(struct holder_set *hs, size_t max_live);

/* The live holder with pid, or NULL. */
struct lease_holder *holder_set_find(const struct holder_set *hs, pid_t pid);

/* A new live holder, watched through pid_fd (consumed): unlisted until
 * lease_add_holder(), so free it with holder_unref() if it never is.
 * Returns 0, -ENOSPC (max_live reached) or -errno. */
int holder_set_add(struct holder_set *hs, pid_t pid, int pid_fd, struct lease_holder **ret);

/* Takes note of the holders that exited (the epoll set is readable):
 * their pidfds closed, each counted dead by the leases that list it. */
void holder_set_reap(struct holder_set *hs);

/* Drops a lease's reference to h (freed with the last one). */
void holder_unref(struct lease_holder *h);

/* Closes every live holder's pidfd and the epoll set (after the leases that list them are freed). */
void holder_set_done(struct holder_set *hs);

/* Adds l to the index (not copied, not owned: l is freed with lease_free()
 * by whoever added it, after lease_table_remove(), or for all leases at
 * once through by_id before lease_table_done()). Returns 0, -EEXIST or -ENOMEM. */
int lease_table_add(struct lease_table *t, struct lease *l);

/* The lease for endpoint e, or NULL. */
struct lease *lease_table_find(const struct lease_table *t, const struct pb_endpoint *e);

/* Index of the first lease with id > after_id in t->by_id. */
size_t lease_table_after(const struct lease_table *t, uint64_t after_id);

/* Removes l from the table (does not free it). */
void lease_table_remove(struct lease_table *t, struct lease *l);

/* Whether some lease in t is on port (any transport or address). */
bool lease_table_has_port(const struct lease_table *t, uint16_t port);

/* A lease uid does not own whose endpoint overlaps e's or would split its clients with it
 * (endpoint_overlaps(), endpoint_splits_clients()), or NULL. */
struct lease *lease_table_conflicting(const struct lease_table *t, const struct pb_endpoint *e, uid_t uid);

/* A lease whose endpoint overlaps e's (endpoint_overlaps()), or NULL. */
struct lease *lease_table_overlapping(const struct lease_table *t, const struct pb_endpoint *e);

/* Number of leases owned by uid. */
size_t lease_table_count_owner(const struct lease_table *t, uid_t uid);

/* Frees the table's arrays, not the leases (see lease_free()). */
void lease_table_done(struct lease_table *t);
