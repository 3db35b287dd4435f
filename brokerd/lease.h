/* SPDX-License-Identifier: MIT */
/*
 * Leases: the sockets the broker has bound and holds, indexed by endpoint
 * (hash) and by id (sorted array, for paging), plus binding, the check that
 * a TCP listener still listens (a holder's shutdown() stops it for all),
 * and what status reports of each.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "endpoint.h"

#define LEASE_HOLDERS_MAX 4             /* recipients watched per lease */

struct sd_event_source;

/* A process that got the socket, watched through its pidfd until it exits. */
struct lease_holder {
        pid_t pid;                      /* 0: empty */
        int pidfd;                      /* -1: empty */
        struct sd_event_source *exit_source; /* the broker's watch on pidfd */
};

struct lease {
        uint64_t id;
        struct pb_endpoint endpoint;
        uid_t owner_uid;
        int64_t since;                  /* unix seconds */
        int sock_fd;                    /* the broker's copy, -1 when not bound */
        unsigned backlog;               /* TCP listen() backlog */
        uint64_t handouts;              /* gets served since the broker started */
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

/* Binds a socket for e: TCP with SO_REUSEADDR and listen(backlog), UDP with
 * no reuse option; IPV6_V6ONLY explicit; never SO_REUSEPORT. CLOEXEC.
 * Returns 0 and *ret_fd, or -errno. */
int lease_bind(const struct pb_endpoint *e, unsigned backlog, int *ret_fd);

/* SO_COOKIE of socket fd (unique for the boot), 0 if unknown. */
uint64_t lease_socket_cookie(int fd);

/* Takes back the socket for e that outlived an earlier broker in some other
 * process (a holder still running after a broker crash): finds sockets on
 * e's port created by sock_uid (the broker's uid) in /proc/net, a process
 * holding one, copies it with pidfd_getfd() and keeps it only if its
 * SO_COOKIE is cookie, the socket the lease had. Start-up only: it reads
 * all of /proc. Returns 0, *ret_fd and *ret_pid, or -ENOENT. */
int lease_adopt(const struct pb_endpoint *e, uid_t sock_uid, uint64_t cookie, int *ret_fd, pid_t *ret_pid);

/* Before a hand-out: clears SO_REUSEPORT (and SO_REUSEADDR on UDP) that a
 * holder may have set, and for TCP listens again if a holder's shutdown()
 * stopped it. Returns 1 when it re-listened, 0 when nothing was wrong,
 * -errno on failure. */
int lease_ensure_listening(struct lease *l);

/* Connections waiting to be accepted (TCP) or -1 when unknown. */
int lease_queued(const struct lease *l);

/* An empty lease: no socket, no holders. */
void lease_init(struct lease *l);

/* Closes the broker's socket (the hup_source is the caller's). */
void lease_close_socket(struct lease *l);

/* Adds l (not copied; the table owns it after). Returns 0, -EEXIST or -ENOMEM. */
int lease_table_add(struct lease_table *t, struct lease *l);

/* The lease for endpoint e, or NULL. */
struct lease *lease_table_find(const struct lease_table *t, const struct pb_endpoint *e);

/* Index of the first lease with id > after_id in t->by_id. */
size_t lease_table_after(const struct lease_table *t, uint64_t after_id);

/* Removes l from the table (does not free it). */
void lease_table_remove(struct lease_table *t, struct lease *l);

/* Number of leases owned by uid. */
size_t lease_table_count_owner(const struct lease_table *t, uid_t uid);

/* Frees the table's arrays, not the leases. */
void lease_table_done(struct lease_table *t);
