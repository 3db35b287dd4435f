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

struct sd_event_source;
struct guard;

/* A process that got the socket, watched through its pidfd until it exits. */
struct lease_holder {
        pid_t pid;                      /* 0: empty */
        int pid_fd;                     /* its pidfd, -1: empty */
        struct sd_event_source *exit_source; /* the broker's watch on pid_fd */
};

struct lease {
        uint64_t id;
        struct pb_endpoint endpoint;
        char text[PB_ENDPOINT_STRLEN];  /* endpoint's canonical text (lease_set_endpoint), for logs and audit */
        uid_t owner_uid;
        int64_t since;                  /* unix seconds */
        int sock_fd;                    /* the broker's copy, -1 when not bound */
        unsigned backlog;               /* TCP listen() backlog, as the kernel keeps it (net.core.somaxconn at most) */
        uint64_t handouts;              /* gets served since the broker started */
        bool declared;                  /* monitor: the current worker's database has it */
        struct lease_holder holders[LEASE_HOLDERS_MAX]; /* recent distinct live recipients */
        unsigned holders_next;          /* ring position */
        struct sd_event_source *hup_source; /* the broker's watch on the listener */
};

struct lease_table {
        struct lease **slots;           /* open addressing by endpoint; NULL = empty, TOMBSTONE = deleted */
        size_t cap;                     /* power of two */
        size_t used;                    /* live + tombstones */
        struct lease **by_id;           /* sorted by id */
        size_t n, by_id_cap;
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

/* Sets l's endpoint and its text. */
void lease_set_endpoint(struct lease *l, const struct pb_endpoint *e);

/* A new empty lease, or NULL when out of memory. Free with lease_free(). */
struct lease *lease_new(void);

/* Stops the watches on l, forgets its holders, closes its socket, frees it. NULL is fine. */
void lease_free(struct lease *l);

/* Closes l's socket (and stops watching it); the lease itself stays. */
void lease_unbind(struct lease *l);

/* Forgets holder h: stops watching it and closes its pidfd. */
void lease_holder_clear(struct lease_holder *h);

/* Holders of l still alive (as far as their watches have told). */
unsigned lease_holders_live(const struct lease *l);

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

/* Number of leases owned by uid. */
size_t lease_table_count_owner(const struct lease_table *t, uid_t uid);

/* Frees the table's arrays, not the leases (see lease_free()). */
void lease_table_done(struct lease_table *t);
