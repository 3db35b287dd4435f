/* SPDX-License-Identifier: MIT */
/*
 * Privilege separation: the messages between brokerd's two processes.
 *
 * The monitor (monitor.c) keeps what needs privilege: it binds ports, keeps
 * a copy of every lease's socket, runs the bind guard, accepts control
 * connections and identifies each peer from the kernel (its namespaces and
 * cgroup need CAP_SYS_PTRACE), and puts sockets in systemd's fd store. It
 * never reads a byte a client sent, nor the database. The worker (the rest
 * of brokerd) runs without any privilege: it reads client messages, keeps
 * the database and decides; what it needs from the monitor it asks here
 * (monitor-wrap.c). If the worker dies, the monitor keeps every socket,
 * starts another and hands them back.
 *
 * Two SOCK_SEQPACKET socketpairs join them. On the request channel the
 * worker asks and the monitor answers each request in order, with one
 * reply (PS_DONE, PS_STATE or PS_SOCKET_REPLY) or, for the kinds
 * marked "no reply", none. On the event channel the monitor passes each
 * accepted connection and what changed, and the worker tells what needs no
 * answer. Every message is at most PRIVSEP_MSG_MAX bytes: a type byte, then
 * the fields of that type, each encoded explicitly (proto/wire.h), at most
 * one fd attached where the type says so. privsep_decode() accepts exactly
 * the fields of its type and nothing else; the monitor treats any other
 * message from the worker as a worker gone wrong, kills it and starts
 * another.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "endpoint.h"
#include "lease.h"

#define PRIVSEP_MSG_MAX 1024
#define PRIVSEP_TEXT_MAX 255            /* longest text: guard state, a doubt, a unit name */
#define PRIVSEP_VERSION 1               /* both processes are one binary; a mismatch is a bug */
#define PRIVSEP_WORKER_REQ_FD 3         /* the channels' fd numbers in the worker */
#define PRIVSEP_WORKER_EV_FD 4

enum privsep_type {
        /* request channel, worker to monitor */
        PS_HELLO = 1,                   /* version; -> PS_STATE */
        PS_DECLARE_LEASE = 2,           /* a lease of the database, before PS_ARM; no reply */
        PS_NOTE_RESERVED = 3,           /* a port the database says brokerd reserved; no reply */
        PS_LAST_GUARD = 4,              /* where the database says brokerd guarded from; no reply */
        PS_ARM = 5,                     /* every lease declared: guard them all; -> PS_STATE */
        PS_SOCKET = 6,                  /* lease id and endpoint (and a Unix one's file): its socket,
                                         * bound if need be; -> PS_SOCKET_REPLY with the fd */
        PS_REPLACE = 7,                 /* lease id: a fresh socket for it; -> PS_SOCKET_REPLY with the fd */
        PS_RELEASE = 8,                 /* lease id: closed and unguarded; -> PS_DONE */
        PS_READY = 9,                   /* leases and rules served; -> PS_DONE */
        PS_REEXEC_CHECK = 10,           /* can the binary be executed again?; -> PS_DONE */
        PS_CARRY = 11,                  /* a connection to carry across the re-exec, with its fd; no reply */
        PS_REEXEC = 12,                 /* execute again now; no reply: the worker exits */

        /* replies, monitor to worker */
        PS_DONE = 0x21,                 /* error (0: done) and why */
        PS_STATE = 0x22,                /* the guard's state */
        PS_SOCKET_REPLY = 0x23,         /* lease id, error, cookie, a Unix socket's file, how;
                                         * the fd when error is 0 */

        /* event channel */
        PS_CONN = 0x41,                 /* monitor to worker: an accepted client, identified, its fd */
        PS_RESERVED = 0x42,             /* monitor to worker: a port is now (not) one brokerd reserved;
                                         * on the request channel when a request made it so, before its reply */
        PS_STATUS = 0x43,               /* worker to monitor: counts for systemd's STATUS= */
        PS_WANT_UNITS = 0x44,           /* worker to monitor: identify peers' units from now on (or not) */
};

/* How PS_SOCKET_REPLY's socket came to be. */
enum privsep_how {
        PS_HOW_HELD = 1,                /* the monitor had it */
        PS_HOW_KEPT = 2,                /* systemd's fd store or a re-exec kept it */
        PS_HOW_BOUND = 3,               /* bound now */
};

/* A peer as the monitor identified it at accept (see peer.h). */
struct privsep_peer {
        int32_t pid;
        uint32_t uid, gid, account;
        uint32_t reexec_id;             /* carried across a re-exec: the REEXEC request to answer, 0 none */
        bool unidentified;              /* its credentials could not be read */
        char doubt[PRIVSEP_TEXT_MAX + 1];       /* "" when certain */
        char unit[PRIVSEP_TEXT_MAX + 1];        /* "" when none or not asked for */
};

struct privsep_msg {
        uint8_t type;                   /* enum privsep_type */
        union {
                struct { uint32_t version; } hello;
                struct {
                        uint64_t lease_id;
                        struct pb_endpoint endpoint;
                        struct lease_unix ux;   /* a Unix endpoint's file (on the wire only for one) */
                } lease;                        /* PS_DECLARE_LEASE, PS_SOCKET */
                struct { uint64_t lease_id; } id;       /* PS_REPLACE, PS_RELEASE */
                struct { uint16_t port; bool ours; } reserved;  /* PS_NOTE_RESERVED (ours), PS_RESERVED */
                struct { char dir[PRIVSEP_TEXT_MAX + 1]; } last_guard;
                struct { uint32_t leases, rules, conns, unbound; } counts;      /* PS_READY, PS_STATUS */
                struct { bool want; } units;
                struct privsep_peer peer;       /* PS_CONN, PS_CARRY */
                struct { uint32_t request_id; } reexec;
                struct { int32_t error; char why[PRIVSEP_TEXT_MAX + 1]; } done;
                struct {
                        bool guard_on;
                        bool detach;            /* brokerd detaches once ready: log to the journal or syslog then */
                        char guard_state[PRIVSEP_TEXT_MAX + 1];
                        char guard_dir[PRIVSEP_TEXT_MAX + 1];   /* "" when unguarded */
                } state;
                struct {
                        uint64_t lease_id;
                        int32_t error;          /* 0, or why there is no socket (errno) */
                        uint64_t cookie;        /* SO_COOKIE of the socket */
                        uint8_t how;            /* enum privsep_how */
                        struct unix_file file;  /* a Unix socket's, 0: none */
                } socket;
        };
};

struct peer;

/* A peer as PS_CONN and PS_CARRY carry it (reexec_id: the REEXEC request
 * to answer on its connection, 0: none), and back, for the connection
 * conn_fd: its pidfd does not travel (-1), its doubt maps back to ours. */
void privsep_peer_to_wire(const struct peer *p, uint32_t reexec_id, struct privsep_peer *ret);
void privsep_peer_from_wire(const struct privsep_peer *w, int conn_fd, struct peer *ret);

/* Whether m comes with exactly one fd (PS_CARRY, PS_CONN, and
 * PS_SOCKET_REPLY without an error); every other message with none. */
bool privsep_carries_fd(const struct privsep_msg *m);

/* Encodes m into buf. Returns the length or -EINVAL (an unknown type, a
 * field out of range, too long). */
int privsep_encode(const struct privsep_msg *m, uint8_t buf[static PRIVSEP_MSG_MAX]);

/* Decodes exactly one message of a known type from buf (len bytes): every
 * field present and valid, nothing after them. Returns 0 or -EBADMSG. */
int privsep_decode(const uint8_t *buf, size_t len, struct privsep_msg *ret);

/* Sends m on sock_fd, with fd when m's type carries one; flags are added
 * to MSG_NOSIGNAL. Returns 0 or -errno. */
int privsep_send(int sock_fd, const struct privsep_msg *m, int fd, int flags);

/* Receives one message from sock_fd into *ret, and its fd (-1 if none)
 * into *ret_fd: an fd where the type carries none, or none where it
 * carries one, is -EBADMSG (any fd received is closed then). Returns 0,
 * -ENOTCONN on EOF, or -errno. */
int privsep_recv(int sock_fd, struct privsep_msg *ret, int *ret_fd, int flags);

/* The name of a message type, for logs ("unknown" for none). */
const char *privsep_type_name(uint8_t type);
