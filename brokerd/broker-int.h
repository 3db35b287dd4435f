/* SPDX-License-Identifier: MIT */
/*
 * The broker's insides, shared by the files that make up its event loop
 * and by no one else (as OpenBSD ntpd has ntpd.h): the broker itself
 * (broker.c: life cycle, timers, audit), the control socket (control.c),
 * client connections (conn.c), the request table and its handlers
 * (request.c), the watches on listeners and holders (watch.c), and the
 * sockets kept outside the process: systemd's fd store (fdstore.c).
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

/* A lease's socket passed at start, until its lease claims it. */
struct fdstore_entry {
        uint64_t lease_id;
        int fd;                         /* -1 once claimed or closed */
};

/* A control connection carried across a re-exec, until it is served again. */
struct carried_conn {
        int fd;
        uint32_t reexec_id;             /* the REEXEC request to answer on it, 0: none */
        struct peer peer;               /* its identity as read at accept by the earlier image */
};

struct broker {
        struct broker_options opt;
        sd_event *event;
        int control_fd;                 /* listening control socket, -1 before set-up */
        bool control_created;           /* we created opt.control_path: unlink at exit */
        bool accept_drain;              /* connections queued before the listener refused fds: accept
                                         * until EAGAIN, refusing fds on each (SO_PASSRIGHTS) */
        sd_event_source *control_source; /* accepts on control_fd */
        sd_event_source *accept_pause_source; /* resumes accepting after running out of fds */
        sd_event_source *flush_source;  /* writes the queued audit events */
        sd_event_source *rebind_source; /* retries unbound leases */
        sd_event_source *checkpoint_source; /* WAL checkpoint once writes pause */
        struct conn *conns, *conns_tail; /* open control connections, the most recently active
                                         * first: the tail has been idle longest */
        unsigned n_conns;
        unsigned n_admin_conns;         /* of them, admins' */
        uint64_t refused_conns;         /* refused at a limit, since start */
        uint64_t evicted_conns;         /* closed to make room, since start */
        struct peer_self self;          /* our own namespaces, compared with each peer's */
        char boot_id[STORE_BOOT_ID_MAX]; /* this boot's id: socket cookies are unique within it */
        struct policy policy;
        struct store *store;
        struct lease_table leases;
        unsigned backlog;               /* --backlog as listen() keeps it: net.core.somaxconn at most */
        struct guard guard;             /* the kernel's refusal of others' bind() on our leases */
        bool fdstore;                   /* under systemd: lease sockets go to its fd store too */
        struct fdstore_entry *inherited; /* lease sockets passed at start (LISTEN_FDS) */
        size_t n_inherited;
        struct carried_conn *carried;   /* control connections carried across a re-exec */
        size_t n_carried;
        int guard_dir_fd;               /* the guard's directory carried across a re-exec, still locked; -1 */
};

/* One client on the control socket, identified once at accept. */
struct conn {
        struct broker *broker;
        int sock_fd;                    /* the accepted connection */
        sd_event_source *io_source;
        sd_event_source *idle_source;   /* closes the connection after --idle-timeout or --max-connection-age */
        struct peer peer;
        bool admin;                     /* counted against the admins' reserve, never evicted */
        bool denied;                    /* its last request was denied: not activity */
        uint64_t accepted_usec;         /* CLOCK_MONOTONIC at accept */
        uint64_t active_usec;           /* ... at its last request served */
        struct conn *prev, *next;       /* in broker->conns */
};

/* --- broker.c --- */

/* Arms timer s to fire once, delay µs from now, unless it is armed already. */
void broker_arm_oneshot(struct broker *b, sd_event_source *s, uint64_t delay);

/* Queues an audit event (written in batches); p and the strings may be NULL. */
void broker_audit(struct broker *b, const char *event, const struct peer *p, const char *endpoint,
                  const char *detail);

/* Tells systemd the counts of leases, rules and connections. */
void broker_notify_status(struct broker *b);

/* After l got a socket: puts it in systemd's fd store and watches its
 * listener (failures are logged; the lease stays usable). Returns 0. */
int broker_lease_bound(struct broker *b, struct lease *l);

/* Binds an unbound lease again, or adopts the socket a holder kept from an
 * earlier broker when adopt_cookie is that socket's; then watches it.
 * Returns 0 or -errno (the caller reports the failure). */
int broker_rebind_lease(struct broker *b, struct lease *l, uint64_t adopt_cookie);

/* l's socket cannot be repaired (error, -errno: a holder turned it into a
 * connection, or locked a filter on it): holders keep that one, the lease
 * gets a fresh socket; logged and audited (as asked by p, or NULL when
 * brokerd found it). Returns 0, or -errno when the fresh bind failed
 * (logged; the lease stays unbound and is retried). */
int broker_replace_socket(struct broker *b, struct lease *l, int error, const struct peer *p);

/* Log fields naming peer p and, when given, an endpoint. */
struct log_fields broker_peer_fields(const struct peer *p, const char *endpoint, const struct pb_endpoint *e);

/* --- control.c --- */

/* Takes the control socket from systemd or creates it safely at
 * opt.control_path, and starts accepting. Returns 0 or -errno, logged. */
int control_setup(struct broker *b);

/* Stops accepting, closes the control socket, unlinks what we created. */
void control_done(struct broker *b);

/* Creates dir (one level) or checks an existing one: a real directory, ours
 * or root's, writable by nobody else (sticky or not). Returns 0 or -errno, logged. */
int control_ensure_private_dir(const char *dir, mode_t mode);

/* A file brokerd relies on (its database and its -wal and -shm files):
 * absent, or a plain file (or socket) of brokerd's uid that nobody else may
 * write. Returns 0 or -errno, logged naming its owner. */
int control_check_owned_file(const char *path);

/* The directory part of path into buf. Returns 0 or -ENAMETOOLONG. */
int control_parent_dir(const char *path, char *buf, size_t len);

/* --- conn.c --- */

/* Identifies the peer of fd, then serves it, making room by closing the
 * longest-idle connection of a non-admin when the table is full, or
 * refuses it at its uid's limit. Consumes fd. */
void conn_new(struct broker *b, int fd);

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

/* --- fdstore.c --- */

/* Reads the sockets passed at start (LISTEN_FDS, LISTEN_FDNAMES; after a
 * re-exec, the list in $PORTBROKER_REEXEC_FDS): lease sockets ("lease-ID")
 * are kept for fdstore_claim(), control connections for
 * fdstore_serve_carried(), the first other one becomes b->control_fd
 * (control.c checks it), others are closed. Also notes whether systemd
 * may keep fds for us. Returns 0 or -errno, logged. */
int fdstore_take(struct broker *b);

/* The socket passed at start for lease_id, now owned by the caller, or -1. */
int fdstore_claim(struct broker *b, uint64_t lease_id);

/* Serves the control connections carried across a re-exec, answering the
 * REEXEC request of the one that asked. After READY=1. */
void fdstore_serve_carried(struct broker *b);

/* Closes the passed sockets no lease claimed and drops them from the store. */
void fdstore_drop_unclaimed(struct broker *b);

/* Closes our copies of passed sockets not claimed yet, leaving the store
 * as it is (brokerd failed to start: the next one gets them). */
void fdstore_done(struct broker *b);

/* Puts l's socket in systemd's fd store (a no-op without systemd; the
 * store ignores a socket it has). Returns 0 or -errno. */
int fdstore_add(struct broker *b, const struct lease *l);

/* Drops the socket of lease lease_id from systemd's fd store. */
void fdstore_remove(struct broker *b, uint64_t lease_id);

/* --- reexec.c --- */

/* Executes brokerd's binary again for the REEXEC request id on c, carrying
 * every socket. Returns only on failure: -errno, with why in reply (the old
 * image goes on serving). */
int reexec(struct broker *b, struct conn *c, uint32_t id, struct pb_msg *reply);

/* Sends the new image's REEXEC reply for request id on fd. */
void reexec_answer(int fd, uint32_t id);

/* --- watch.c --- */

/* Watches l's TCP listener so a holder's shutdown() is repaired at once.
 * Returns 0 (also for UDP or an unbound lease) or -errno. */
int watch_listener(struct broker *b, struct lease *l);

/* Watches the peer as a holder of l until it exits: distinct pids, the
 * oldest forgotten past LEASE_HOLDERS_MAX. Best effort. */
void watch_holder(struct broker *b, struct lease *l, const struct peer *p);
