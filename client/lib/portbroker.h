/* SPDX-License-Identifier: MIT */
/*
 * libportbroker: get listening sockets from brokerd and manage its policy.
 *
 * Every function returns >= 0 on success and -errno on failure; when err is
 * not NULL it then holds the broker's (or the library's) one-line message.
 * The library has no global state, never prints and never exits. A pb_conn
 * may be shared between threads (calls on it are serialized); the
 * connection-less calls open and close their own. Every fd the library
 * returns is close-on-exec and owned by the caller.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PB_DEFAULT_SOCKET "/run/portbroker/control.sock"
#define PB_SOCKET_ENV "PORTBROKER_SOCKET"

typedef struct pb_conn pb_conn;

typedef struct pb_error {
        int code;                       /* positive errno value, 0 if none */
        char message[256];              /* one line, no trailing newline */
} pb_error;

enum {
        PB_GET_NONBLOCK = 1 << 0,       /* set O_NONBLOCK (shared by every holder) */
        PB_GET_BLOCKING = 1 << 1,       /* clear O_NONBLOCK; neither flag: leave as is */
};

#define PB_ENDPOINT_TEXT_MAX 128        /* endpoint text, NUL included ("unix:" and a path fit) */
#define PB_SOCKET_GROUP_NONE UINT32_MAX /* a Unix rule naming no group: the file keeps brokerd's */

typedef struct pb_lease {
        uint64_t id;
        char endpoint[PB_ENDPOINT_TEXT_MAX]; /* canonical text, e.g. "tcp:[::]:8080", "unix:/run/app/web.sock" */
        int transport;                  /* IPPROTO_TCP, IPPROTO_UDP, or 0 for a Unix stream socket */
        uid_t owner_uid;
        int64_t since;                  /* unix seconds */
        uint64_t handouts;              /* gets served since the broker started */
        unsigned holders;               /* live processes that got the socket */
        int queued;                     /* connections waiting in the accept queue, -1 unknown */
        unsigned backlog;               /* accept queue limit, 0 for UDP */
        bool bound;                     /* the broker holds a socket for it */
        bool created;                   /* pb_get only: this call created the lease */
} pb_lease;

typedef enum pb_principal_kind {
        PB_USER = 1,
        PB_GROUP = 2,
        PB_UNIT = 3,
} pb_principal_kind;

typedef struct pb_rule {
        uint64_t id;
        pb_principal_kind kind;
        uint32_t id_value;              /* uid or gid */
        char unit[256];                 /* unit name for PB_UNIT */
        char pattern[PB_ENDPOINT_TEXT_MAX]; /* canonical endpoint pattern text */
        int64_t created;                /* unix seconds */
        uint32_t socket_gid;            /* Unix patterns: the sockets' group, or PB_SOCKET_GROUP_NONE */
        unsigned socket_mode;           /* Unix patterns: the sockets' permission bits */
        bool reserve;                   /* brokerd leases the pattern (one endpoint) at start, for
                                         * the user, or owner_uid */
        uint32_t owner_uid;             /* a group or unit rule's reservation's owner, else PB_OWNER_NONE */
        char source[65];                /* the policy directory's file it comes from, "" for an
                                         * admin's (portctl policy add or import) */
} pb_rule;

#define PB_OWNER_NONE UINT32_MAX        /* pb_rule.owner_uid: none named */

enum {
        PB_IMPORT_REPLACE = 1 << 0,     /* pb_conn_policy_begin(): remove the admin's rules not imported */
};

typedef struct pb_import_counts {
        unsigned added, changed, removed;
} pb_import_counts;

#define PB_TEST_GROUPS_MAX 64           /* most groups of a pb_test_peer */

/* The peer a policy test judges: any process it describes, not the caller. */
typedef struct pb_test_peer {
        bool has_uid;                   /* false: no user (user rules never match it, it owns no lease) */
        uid_t uid;
        unsigned n_groups;              /* 0..PB_TEST_GROUPS_MAX */
        gid_t groups[PB_TEST_GROUPS_MAX]; /* its primary and supplementary groups */
        char unit[256];                 /* its systemd unit ("web.service"), "" for none */
} pb_test_peer;

/* What a get by that peer would meet now. */
typedef struct pb_test_result {
        bool allowed;                   /* the get would be granted */
        bool admin;                     /* no rule lets the peer, but it is an admin (no rule needed) */
        bool has_rule;                  /* rule is the first rule letting it (also when refused otherwise) */
        pb_rule rule;
        uint64_t lease_id;              /* the lease the get would meet (the endpoint's, or another in its
                                         * way), 0: none */
        uid_t lease_owner;              /* that lease's owner */
        char reason[256];               /* why, one line (a refusal: the error the get would fail with) */
} pb_test_result;

typedef struct pb_info {
        pid_t pid;                      /* brokerd's */
        char version[256];              /* brokerd's version */
        bool guard;                     /* the kernel refuses others' bind() of leased endpoints */
        char guard_state[256];          /* where the guard works, or why it is off */
} pb_info;

#define PB_EVENT_KIND_TEXT_MAX 24       /* an event's kind, NUL included ("policy-remove") */

/* One event of brokerd's audit trail. */
typedef struct pb_event {
        uint64_t id;                    /* the order events were recorded in */
        int64_t time_us;                /* when, µs since the epoch */
        char event[PB_EVENT_KIND_TEXT_MAX]; /* its kind: grant, deny, create, release, replace,
                                         * rebind-failed, policy-add, policy-change, policy-remove,
                                         * policy-dir-failed, reserve, reserve-failed, reexec,
                                         * bad-message */
        uid_t uid;                      /* the peer's, (uid_t) -1: none (brokerd's own event) */
        pid_t pid;                      /* the peer's, 0: none */
        char endpoint[PB_ENDPOINT_TEXT_MAX]; /* the endpoint or pattern it is about, canonical; "" none */
        char detail[256];               /* a denial's reason, a rule's principal, an error; "" none */
} pb_event;

/* Which events pb_conn_log() reads: those matching every field set. */
typedef struct pb_log_filter {
        int64_t since_us;               /* recorded at or after, µs since the epoch; 0: no bound */
        int64_t until_us;               /* at or before; 0: no bound */
        bool has_uid;                   /* only uid's events (another uid than the caller's: admins only) */
        uid_t uid;
        const char *endpoint;           /* endpoint or pattern text (`8080`, `tcp:8000-8099`), NULL: any */
        const char *event;              /* a kind, NULL or "": any */
} pb_log_filter;

/* The control socket path: $PORTBROKER_SOCKET if set and non-empty, else PB_DEFAULT_SOCKET. */
const char *pb_socket_path(void);

/* Connects to the broker at path (NULL: pb_socket_path()). Returns 0 and *ret. */
int pb_connect(const char *path, pb_conn **ret, pb_error *err);

/* Closes the connection; NULL is fine. */
void pb_disconnect(pb_conn *c);

/* Gets the listening socket for endpoint text (`8080`, `udp:5353`, `tcp:[::1]:8443`,
 * `unix:/run/app/web.sock`),
 * creating the lease if needed. Returns a new CLOEXEC fd owned by the caller.
 * ret_lease (may be NULL) is filled with id, endpoint, created. */
int pb_conn_get(pb_conn *c, const char *endpoint, unsigned flags, pb_lease *ret_lease, pb_error *err);

/* pb_conn_get on a connection of its own to pb_socket_path(). */
int pb_get(const char *endpoint, unsigned flags, pb_error *err);

/* Whether the caller may get endpoint now (a rule or admin, no conflicting
 * lease of another uid, within the lease limits), with nothing bound or created:
 * 0, or the error a get would fail with (-EADDRINUSE when a lease of the
 * caller's own overlaps it). A brokerd older than protocol version 4 fails
 * it with -EPROTONOSUPPORT. */
int pb_conn_check(pb_conn *c, const char *endpoint, pb_error *err);

/* Ends a lease (owner or admin): the broker closes its socket. Returns 0. */
int pb_conn_release(pb_conn *c, const char *endpoint, pb_error *err);
int pb_release(const char *endpoint, pb_error *err);

/* Calls fn for each lease (all when endpoint is NULL). fn returns 0 to go on,
 * > 0 to stop early (the call returns 0), or -errno to stop with that failure
 * (the call returns it, err->message its strerror). Returns 0 or -errno. */
int pb_conn_status(pb_conn *c, const char *endpoint,
                   int (*fn)(const pb_lease *lease, void *userdata), void *userdata, pb_error *err);

/* Adds a rule letting principal (kind, id_value or unit) get endpoints
 * matching pattern text (port may be a range). Admin only. Returns the rule id (>= 1). */
int64_t pb_conn_policy_add(pb_conn *c, pb_principal_kind kind, uint32_t id_value, const char *unit,
                           const char *pattern, pb_error *err);

/* pb_conn_policy_add for a Unix pattern (`unix:/run/app/web.sock`, or
 * `unix:/run/app/` for any name directly in that directory), whose socket
 * files brokerd makes owned by the lease's owner, group socket_gid
 * (PB_SOCKET_GROUP_NONE: brokerd's) and mode socket_mode (at most 0777;
 * pb_conn_policy_add gives 0600). Needs protocol version 5. */
int64_t pb_conn_policy_add_unix(pb_conn *c, pb_principal_kind kind, uint32_t id_value, const char *unit,
                                const char *pattern, uint32_t socket_gid, unsigned socket_mode, pb_error *err);

/* Adds rule: its kind and id_value or unit, pattern, and for a Unix
 * pattern socket_gid and socket_mode; reserve (the pattern then one
 * endpoint) and, for a group or unit rule's reservation, owner_uid (else
 * PB_OWNER_NONE). id, created and source are not read. Admin only.
 * Returns the rule id (>= 1), or 0 inside an import (pb_conn_policy_begin():
 * the commit adds it). A reservation needs protocol version 6. */
int64_t pb_conn_policy_add_rule(pb_conn *c, const pb_rule *rule, pb_error *err);

/* Begins an import on c: the pb_conn_policy_add_rule() calls that follow
 * change nothing until pb_conn_policy_commit() applies them all in one
 * transaction. The commit adds the rules brokerd lacks, changes the socket
 * group and mode, reservation and owner of those it has otherwise, and
 * with PB_IMPORT_REPLACE removes the admin's rules the import does not
 * name (a policy directory's rules are never changed or removed; one
 * imported otherwise fails the commit). Only one import runs at a time
 * (-EBUSY); brokerd forgets it if the connection closes, and c then fails
 * every call with -ECONNRESET until the commit. Admin only; protocol version 6. */
int pb_conn_policy_begin(pb_conn *c, unsigned flags, pb_error *err);

/* Applies the import: returns 0 and the counts (ret may be NULL), or
 * -errno with nothing changed. Either way the import is over. */
int pb_conn_policy_commit(pb_conn *c, pb_import_counts *ret, pb_error *err);

/* Removes rule id. Admin only. Returns 0. */
int pb_conn_policy_remove(pb_conn *c, uint64_t id, pb_error *err);

/* Calls fn for each rule; fn returns 0, > 0 or -errno as for pb_conn_status. Returns 0 or -errno. */
int pb_conn_policy_list(pb_conn *c, int (*fn)(const pb_rule *rule, void *userdata), void *userdata,
                        pb_error *err);

/* Which rule would let peer get endpoint text (`8080`, `unix:/run/app/web.sock`;
 * no range), and whether a get by it would be granted now, and why, as
 * brokerd authorizes a get (rules, admins, other uids' leases, limits).
 * Nothing is bound or changed, and anyone may ask. Returns 0 with *ret
 * filled whatever the verdict; a brokerd older than protocol version 6
 * fails it with -EPROTONOSUPPORT. */
int pb_conn_policy_test(pb_conn *c, const char *endpoint, const pb_test_peer *peer, pb_test_result *ret,
                        pb_error *err);

/* Makes brokerd execute its binary again (an upgrade installed at its path
 * since it started), with every socket and connection kept. Admin only.
 * Answered by the new image once it is ready: returns brokerd's pid (the
 * same as before) and copies its version into version (size bytes; NULL
 * or 0: not wanted). On failure the old image keeps serving. */
int pb_conn_reexec(pb_conn *c, char *version, size_t size, pb_error *err);

/* brokerd's pid, version and bind guard (brokerd 0.1.0 with protocol
 * version 3 and later; an older one fails with -EPROTONOSUPPORT). Returns 0. */
int pb_conn_info(pb_conn *c, pb_info *ret, pb_error *err);

/* Calls fn for each event of brokerd's audit trail that filter (NULL: none)
 * selects, newest first, at most limit of them (0: all), paging as needed.
 * Admins read every uid's events; anyone else their own uid's, and asking
 * for another uid's fails with -EPERM. fn returns 0, > 0 or -errno as for
 * pb_conn_status. A brokerd before protocol version 6 fails it with
 * -EPROTONOSUPPORT. Returns 0 or -errno. */
int pb_conn_log(pb_conn *c, const pb_log_filter *filter, unsigned limit,
                int (*fn)(const pb_event *event, void *userdata), void *userdata, pb_error *err);

#ifdef __cplusplus
}
#endif
