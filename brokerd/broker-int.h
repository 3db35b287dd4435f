/* SPDX-License-Identifier: MIT */
/*
 * The worker's insides (brokerd's unprivileged process, see privsep.h),
 * shared by the files that make up its event loop and by no one else (as
 * OpenBSD ntpd has ntpd.h): the broker itself (broker.c: life cycle,
 * timers, audit), client connections (conn.c), the request table and its
 * handlers (request.c), the watches on listeners and holders (watch.c),
 * and what it asks of the monitor (monitor-wrap.c).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "broker.h"
#include "guard.h"
#include "lease.h"
#include "peer.h"
#include "policy.h"
#include "proto.h"
#include "store.h"
#include "log.h"

struct broker {
        struct broker_options opt;
        sd_event *event;
        int req_fd, ev_fd;              /* the monitor's request and event channels */
        sd_event_source *ev_source;     /* connections and news from the monitor */
        pid_t monitor_pid;              /* brokerd's pid, as clients know it */
        bool units_wanted;              /* the monitor reads peers' units (we have unit rules) */
        bool detach;                    /* brokerd detaches from its terminal once ready */
        bool reexecuting;               /* our connections went to the monitor, which executes brokerd again */
        bool serving;                   /* start-up is over (its reservations made): a change of
                                         * rules makes its own at once */
        uint64_t *busy_reservations;    /* ids of the rules whose reservation found its port busy:
                                         * the only ones retried (reservation.c) */
        size_t n_busy_reservations, cap_busy_reservations;
        struct policy_import {          /* an admin's import (POLICY_BEGIN), at most one at a time */
                const struct conn *conn; /* whose, NULL: none */
                bool replace;           /* PB_POLICY_REPLACE */
                struct store_rule *rules; /* its POLICY_ADDs so far */
                size_t n, cap;
        } import;
        bool guard_on;                  /* the monitor's bind guard works */
        char guard_state[PATH_MAX + 128]; /* where it guards, or why it does not */
        char guard_dir[PATH_MAX];       /* where it guards, "" when unguarded */
        sd_event_source *flush_source;  /* writes the queued audit events */
        sd_event_source *rebind_source; /* retries unbound leases */
        sd_event_source *checkpoint_source; /* WAL checkpoint once writes pause */
        struct conn *conns, *conns_tail; /* open control connections, the most recently active
                                         * first: the tail has been idle longest */
        int conns_fd;                   /* epoll set of the connections watched (conn.c) */
        sd_event_source *conns_source;
        unsigned n_conns;
        unsigned n_admin_conns;         /* of them, admins' */
        uint64_t refused_conns;         /* refused at a limit, since start */
        uint64_t evicted_conns;         /* closed to make room, since start */
        char boot_id[STORE_BOOT_ID_MAX]; /* this boot's id: socket cookies are unique within it */
        struct policy policy;
        struct store *store;
        struct lease_table leases;
        int listeners_fd;               /* epoll set of the TCP leases' listeners (watch.c) */
        sd_event_source *listeners_source;
        struct holder_set holders;      /* processes that got a lease's socket, until they exit */
        sd_event_source *holders_source;
        unsigned backlog;               /* --backlog as listen() keeps it: net.core.somaxconn at most */
};

/* One client on the control socket, identified once at accept. */
struct conn {
        struct broker *broker;
        int sock_fd;                    /* the accepted connection */
        bool watched;                   /* in broker->conns_fd */
        sd_event_source *idle_source;   /* closes the connection after --idle-timeout or --max-connection-age */
        struct peer peer;
        bool admin;                     /* counted against the admins' reserve, never evicted */
        bool denied;                    /* its last request was denied: not activity */
        uint64_t accepted_usec;         /* CLOCK_MONOTONIC at accept */
        uint64_t active_usec;           /* ... at its last request served */
        struct conn *prev, *next;       /* in broker->conns */
};

/* --- broker.c --- */

#define BROKER_REBIND_RETRY_USEC (250 * 1000) /* retry of leases and reservations whose port was busy */

/* Arms timer s to fire once, delay µs from now, unless it is armed already. */
void broker_arm_oneshot(struct broker *b, sd_event_source *s, uint64_t delay);

/* Queues an audit event (written in batches); p and the strings may be NULL. */
void broker_audit(struct broker *b, const char *event, const struct peer *p, const char *endpoint,
                  const char *detail);

/* Writes the queued database changes soon (a batch window from now). */
void broker_flush_soon(struct broker *b);

/* Writes the queued database changes now, if any (and checkpoints once
 * writes pause, as after every batch). Returns 0 or -errno (they stay
 * queued, and the flush timer retries). */
int broker_flush(struct broker *b);

/* Tells systemd (through the monitor) the counts of leases, rules and connections. */
void broker_notify_status(struct broker *b);

/* After l got a socket: watches its listener (a failure is logged; the
 * lease stays usable). Returns 0. */
int broker_lease_bound(struct broker *b, struct lease *l);

/* Creates the lease of e for owner: the monitor guards and binds it (a
 * Unix socket's file made as rule, which may be NULL, says), then it is
 * recorded and audited with who's event, uid, pid and detail. Returns 0
 * and *ret, or -errno with why (for the peer and the log). */
int broker_lease_create(struct broker *b, const struct pb_endpoint *e, uid_t owner, const struct store_rule *rule,
                        const struct store_event *who, struct lease **ret, char *why, size_t size);

/* Takes l's socket from the monitor (which binds it again, or at start
 * may keep it; see privsep.h), then watches it. Returns 0 or
 * -errno (the caller reports the failure). */
int broker_rebind_lease(struct broker *b, struct lease *l);

/* l's socket cannot be repaired (error, -errno: a holder turned it into a
 * connection, or locked a filter on it): holders keep that one, the lease
 * gets a fresh socket; logged and audited (as asked by p, or NULL when
 * brokerd found it). Returns 0, or -errno when the fresh bind failed
 * (logged; the lease stays unbound and is retried). */
int broker_replace_socket(struct broker *b, struct lease *l, int error, const struct peer *p);

/* Log fields naming peer p and, when given, an endpoint. */
struct log_fields broker_peer_fields(const struct peer *p, const char *endpoint, const struct pb_endpoint *e);

/* --- reservation.c --- */

/* Whose lease rule's reservation is: the owner it names, else its user. */
uid_t reservation_owner(const struct store_rule *rule);

/* Leases rule's endpoint for its owner if the rule says reserve and no
 * lease of the owner's has it; a failure is logged and audited unless
 * quiet. Returns 0 (made, or nothing to make) or -errno (-EADDRINUSE:
 * another socket holds the port; tried again with unbound leases). */
int reservation_make(struct broker *b, const struct store_rule *rule, bool quiet);

/* reservation_make() for every rule, failures logged (those whose port was busy are tried again). */
void reservations_make(struct broker *b);

/* reservation_make() again, quietly, for the rules whose reservation found
 * its port busy, and no others. Returns true when one still does. */
bool reservations_retry(struct broker *b);

/* After another uid's lease of gone ended: the reservations it kept out
 * (reservation_make() refuses a port another uid leases, with no retry)
 * are made now, before anyone else takes the port. */
void reservations_after_release(struct broker *b, const struct pb_endpoint *gone, uid_t gone_owner);

/* --- ruleset.c --- */

/* Makes the rules of scope say what want (n rules) says, as policy_plan()
 * plans it, durably and audited as changed by p (NULL: brokerd itself),
 * detail added to each event; then makes the reservations of the rules
 * added or changed. Returns 0 and the counts, or -errno with why (-EEXIST:
 * want[*ret_conflict] is given twice or conflicts; why not set) and
 * nothing changed. */
int broker_rules_set(struct broker *b, const struct store_rule *want, size_t n, enum policy_scope scope, bool replace,
                     const struct peer *p, const char *detail, struct policy_counts *ret_counts, size_t *ret_conflict,
                     char *why, size_t size);

/* At start: the rules from the policy directory (--policy-dir); a
 * directory or file with a mistake changes nothing and is logged. */
void broker_rules_from_dir(struct broker *b);

/* --- conn.c --- */

/* The epoll set of connections, watched by the loop. Returns 0 or -errno. */
int conn_setup(struct broker *b);

/* Closes every connection and the set. */
void conn_done(struct broker *b);

/* Serves fd, whose peer p the monitor identified, making room by closing
 * the longest-idle connection of a non-admin when the table is full, or
 * refuses it at its uid's limit. Consumes fd and p. */
void conn_new(struct broker *b, int fd, const struct peer *p);

/* Takes over a connection carried across a re-exec whose peer p was
 * identified at accept: watched, served from the loop. Consumes fd. */
void conn_carried(struct broker *b, int fd, const struct peer *p);

/* Closes the connection and frees it. */
void conn_free(struct conn *c);

/* Sends reply on control socket sock_fd, with fd attached when fd >= 0 (not
 * consumed), never blocking. Returns 0 or -errno. */
int conn_send_fd(int sock_fd, const struct pb_msg *reply, int fd);

/* Sends reply, with fd attached when fd >= 0 (not consumed), never blocking.
 * Returns 0 or -errno. */
int conn_send(struct conn *c, const struct pb_msg *reply, int fd);

/* Logs and audits a bad message, answers it with an error when the peer
 * reads, and closes the connection (c is freed). */
void conn_reject(struct conn *c, uint32_t id, int code, const char *why);

/* Sends an error reply on a connection we will not serve. Consumes fd. */
void conn_refuse(int fd, int code, const char *why);

/* --- request.c --- */

/* Checks a message in the order the protocol fixes: size and header,
 * version, a type in the table, exact fields for that type. Returns NULL
 * and *ret_req when it is valid, else why not, with the errno for the
 * reply in *ret_code; *ret_id is the request id when the header was read. */
const char *request_validate(const uint8_t *buf, size_t len, struct pb_msg *ret_req, int *ret_code,
                             uint32_t *ret_id);

/* Validates one message from c (size, header, version, type, fields, in
 * that order), authorizes it, runs its handler and sends the reply. Returns
 * 0, or -errno once the connection was closed (c is freed): a bad message
 * gets an error reply and closes it, and so does a reply that cannot be sent. */
int request_handle(struct conn *c, const uint8_t *buf, size_t len);

/* Forgets c's import (POLICY_BEGIN), if it has one: its connection is closing. */
void request_import_end(struct conn *c);

/* Sends the new image's REEXEC reply (brokerd's pid and version) for request id on fd. */
void request_reexec_answer(struct broker *b, int fd, uint32_t id);

/* --- monitor-wrap.c: the worker's requests to the monitor (privsep.h) --- */

/* What the monitor said of a lease's socket. */
struct mm_socket {
        uint64_t cookie;                /* SO_COOKIE */
        uint8_t how;                    /* enum privsep_how */
        struct unix_file file;          /* a Unix socket's file */
};

/* Hello: the guard's state into b. Returns 0 or -errno. */
int mm_hello(struct broker *b);

/* At start: lease l of the database, a port brokerd reserved, where it last guarded from; then
 * the guard is armed with every lease declared, and whatever the monitor
 * held that the database no longer has is closed. */
void mm_declare(struct broker *b, const struct lease *l);
void mm_note_reserved(struct broker *b, unsigned port);
void mm_last_guard(struct broker *b, const char *dir);
void mm_arm(struct broker *b);

/* The socket of lease id for e (created, guarded and bound if the monitor
 * has no such lease; a Unix one's file made as ux says, NULL for others):
 * *ret_fd, owned by the caller. Returns 0 or -errno. */
int mm_socket(struct broker *b, uint64_t id, const struct pb_endpoint *e, const struct lease_unix *ux, int *ret_fd,
              struct mm_socket *ret);

/* At start: the sockets of n leases, many requests in flight, into each
 * lease's sock_fd; done() is called for each in order, with 0 or -errno. */
typedef void (*mm_socket_done_fn)(struct broker *b, struct lease *l, int r, const struct mm_socket *got);
void mm_sockets(struct broker *b, struct lease *const *leases, size_t n, mm_socket_done_fn done);

/* A fresh socket for lease id in place of one that cannot be repaired. Returns 0 or -errno. */
int mm_replace(struct broker *b, uint64_t id, const struct pb_endpoint *e, int *ret_fd, struct mm_socket *ret);

/* Lease id is gone: the monitor closes its socket and unguards it. */
void mm_release(struct broker *b, uint64_t id);

/* Ready to serve, with unbound leases not bound yet: READY=1, and connections come. */
void mm_ready(struct broker *b, size_t unbound);

/* Tells the monitor whether to read peers' units (when b has unit rules), if that changed. */
void mm_want_units(struct broker *b);

/* The counts for systemd's STATUS=. */
void mm_status(struct broker *b);

/* Whether brokerd's binary would start with these arguments and database.
 * Returns 0, or -errno with why. */
int mm_reexec_check(struct broker *b, char *why, size_t size);

/* Hands every open connection but an importer's to the monitor (request id to be answered
 * on asker's by the new image), then has it execute brokerd again; the
 * worker then stops. */
void mm_reexec(struct broker *b, const struct conn *asker, uint32_t id);

/* Watches the event channel: connections and news from the monitor. Returns 0 or -errno. */
int mm_watch(struct broker *b);

/* --- watch.c --- */

/* The epoll sets of listeners and holders, watched by the loop. Returns 0 or -errno. */
int watch_setup(struct broker *b);

/* Sets how many holders may be watched, once the leases are loaded: the
 * fds the limit leaves beside the leases (--max-leases, or more if the
 * database has more), the connections and a reserve; said when fewer than
 * leases. */
void watch_limit_holders(struct broker *b);

/* Stops watching; closes the holders' pidfds (after every lease is freed). */
void watch_done(struct broker *b);

/* Watches l's TCP listener so a holder's shutdown() is repaired at once.
 * Returns 0 (also for UDP or an unbound lease) or -errno. */
int watch_listener(struct broker *b, struct lease *l);

/* Watches the peer as a holder of l until it exits: distinct pids, the
 * oldest forgotten past LEASE_HOLDERS_MAX. Best effort. */
void watch_holder(struct broker *b, struct lease *l, const struct peer *p);
