/* SPDX-License-Identifier: MIT */
/*
 * Persistence of rules, leases and audit events in SQLite. Rule changes and
 * lease creation/removal commit durably (synchronous=FULL) together with
 * their audit event; high-rate events (grants, denials) are queued and
 * written in batches (group commit, no sync) by store_flush().
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lease.h"
#include "proto.h"

/* Version 3 added no table: it marked a database that held an IPv6-only
 * wildcard endpoint (family 6 with ::, wire version 4), which a brokerd
 * before it cannot decode. Version 4, Unix-domain leases, rebuilds rules
 * and leases: an endpoint column holds a Unix endpoint's path after its 24
 * bytes, a rule the group and mode of the sockets it allows, a lease the
 * socket file brokerd made. Version 5 gives rules their flags (reserve),
 * a reservation's owner and the policy.d file a rule comes from. Every
 * database is migrated to the newest at start. */
#define STORE_SCHEMA_VERSION 5
#define STORE_SCHEMA_TABLES 5           /* the newest version that changed tables */
#define STORE_EVENTS_KEEP 100000        /* audit rows kept by default (--audit-max-rows) */
#define STORE_EVENTS_MAX_AGE (90 * 86400) /* seconds an audit row is kept by default (--audit-max-age) */
#define STORE_PRUNE_EVERY 1000          /* events written between prunes while busy */
#define STORE_PENDING_MAX 1024          /* queued events before a forced flush */
#define STORE_RESERVED_PENDING_MAX 64   /* queued reserved_ports changes before a forced flush */
#define STORE_WAL_PAGES_MAX 4096        /* WAL size that forces a checkpoint (16 MiB of 4 KiB pages) */
#define STORE_LOG_SPAN 32768            /* events store_events_page() examines at most (a few ms) */

struct store;

struct store_event {
        const char *event;              /* grant, deny, create, release, policy-add, ... */
        long uid, pid;                  /* peer, -1: none */
        const char *endpoint;           /* text or NULL */
        const char *detail;             /* text or NULL */
};

/* An audit event read back; its strings live until the next row. */
struct store_event_row {
        uint64_t id;
        int64_t time_us;                /* µs since the epoch */
        const char *event;              /* never NULL */
        long uid, pid;                  /* peer, -1: none */
        const char *endpoint;           /* text or NULL */
        const char *detail;             /* text or NULL */
};

/* Which audit events store_events_page() reads: those matching every field. */
struct store_event_filter {
        uint64_t before_id;             /* id < before_id; 0: from the newest */
        int64_t since_us, until_us;     /* recorded in [since_us, until_us]; 0: no bound */
        long uid;                       /* the peer's; -1: any (events without a uid too) */
        const char *endpoint[2];        /* either text; endpoint[0] NULL: any */
        const char *event;              /* its kind; NULL: any */
};

struct store_rule {
        uint64_t id;
        struct pb_principal principal;
        struct pb_endpoint pattern;
        struct pb_socket_perm perm;     /* Unix patterns: the sockets' group and mode */
        struct pb_rule_attrs attrs;     /* reserve, and for whom */
        char source[PB_RULE_SOURCE_MAX + 1]; /* the policy.d file it comes from, "" for an admin's */
        int64_t created;
};

/* One change of a batch (store_rules_change()). */
enum store_rule_op {
        STORE_RULE_ADD,                 /* rule added: id and created filled in */
        STORE_RULE_UPDATE,              /* rule.id's perm, attrs and source set to rule's */
        STORE_RULE_REMOVE,              /* rule.id removed */
};

struct store_rule_change {
        enum store_rule_op op;
        struct store_rule rule;
};

#define STORE_BOOT_ID_MAX 37

struct store_lease {
        uint64_t id;
        struct pb_endpoint endpoint;
        uid_t owner_uid;
        int64_t created;
        uint64_t socket_cookie;         /* SO_COOKIE of the socket it was created with (a record
                                         * only: brokerd never takes a socket back by it), 0: none */
        char boot_id[STORE_BOOT_ID_MAX]; /* boot the cookie belongs to */
        struct lease_unix ux;           /* a Unix lease's socket file */
};

/* Opens (creating and migrating) the database at path and checks it with
 * quick_check. Returns 0, or -errno with a reason in errbuf. */
int store_open(const char *path, struct store **ret, char *errbuf, size_t errlen);

/* Whether a brokerd of this schema version could open the database at path
 * (read only; no file yet is fine). Returns 0, or -errno with a reason in errbuf. */
int store_check(const char *path, char *errbuf, size_t errlen);

/* How long audit events are kept: at most max_rows of them (the newest),
 * none older than max_age_sec; 0 for no limit. store_open() sets
 * STORE_EVENTS_KEEP rows and no age. */
void store_set_retention(struct store *s, unsigned max_rows, uint64_t max_age_sec);

/* Deletes at most budget audit events past the retention limits, the
 * oldest first, in a transaction of its own that writes the queued events
 * first (they are the newest: never pruned). While events are written,
 * every STORE_PRUNE_EVERY of them prune up to twice as many too. Returns
 * how many were deleted (budget: maybe more left) or -errno. */
int store_prune(struct store *s, unsigned budget);

/* Flushes pending events and closes; NULL is fine. */
void store_close(struct store *s);

/* "user 1000 may get tcp:8000-8099", "group 33 may get tcp:80, reserved
 * for uid 33 (from web.conf)": what rule says, for logs and the audit
 * trail. Returns buf. */
char *store_rule_describe(const struct store_rule *r, char *buf, size_t size);

/* Durable: n rule changes in one transaction, all or none, each with its
 * audit event (policy-add, policy-change or policy-remove: the rule's id,
 * pattern and store_rule_describe(), then who's detail if any), as made by
 * who (its uid and pid; its event and endpoint are not used). Returns 0,
 * or -errno (-ENOENT: a rule to change or remove is not there) and
 * nothing changed. */
int store_rules_change(struct store *s, struct store_rule_change *changes, size_t n, const struct store_event *who);

/* store_rules_change() of one rule: adds r (id and created filled in), or removes r. */
int store_rule_add(struct store *s, struct store_rule *r, const struct store_event *who);
int store_rule_remove(struct store *s, const struct store_rule *r, const struct store_event *who);

/* Durable: records lease l with its event: under l->id (store_lease_next_id()), or the next id when 0
 * (filled in), and created filled in. */
int store_lease_add(struct store *s, struct store_lease *l, const struct store_event *ev);

/* The id the next lease gets (one no lease ever had). Returns 0 or -errno. */
int store_lease_next_id(struct store *s, uint64_t *ret);

/* Durable: records that lease id's Unix socket file is now ux's (brokerd
 * made it again). Returns 0 or -errno. */
int store_lease_set_file(struct store *s, uint64_t id, const struct lease_unix *ux);

/* Durable: removes lease id with its event. Returns 0 or -ENOENT. */
int store_lease_remove(struct store *s, uint64_t id, const struct store_event *ev);

/* Records that brokerd put port in net.ipv4.ip_local_reserved_ports (ours)
 * or took it out: queued for the next transaction, like audit events (see
 * store_flush()). Returns 0 or -errno. */
int store_reserved_set(struct store *s, unsigned port, bool ours);

/* Durable: sets brokerd's own setting key to value. Returns 0 or -errno. */
int store_meta_set(struct store *s, const char *key, const char *value);

/* Brokerd's own setting key into buf ("" when unset). Returns 0 or -errno. */
int store_meta_get(struct store *s, const char *key, char *buf, size_t size);

/* Calls fn for every port recorded by store_reserved_set(); a negative
 * return stops and is returned. */
int store_reserved_load(struct store *s, int (*fn)(unsigned port, void *userdata), void *userdata);

/* Calls fn for every rule / lease in id order; a negative return stops and is returned. */
int store_rules_load(struct store *s, int (*fn)(const struct store_rule *r, void *userdata), void *userdata);
int store_leases_load(struct store *s, int (*fn)(const struct store_lease *l, void *userdata), void *userdata);

/* Queues an event for the next batch; flushes when the queue is full.
 * Returns 0, or how many queued events were dropped because that flush
 * failed too (STORE_PENDING_MAX; ev itself is queued). A failed
 * store_flush() keeps the events for the next one. */
int store_event_queue(struct store *s, const struct store_event *ev);

/* Calls fn for the events f selects, newest first, at most limit (>= 1) of
 * them, examining at most STORE_LOG_SPAN events below f->before_id (written
 * ones only: see store_flush()). fn returns 0 to take the event and go on,
 * > 0 when the page is full without it (the next page starts with it; the
 * first event must be taken), or -errno to stop with that. *ret_next is the
 * before_id to read on from, below f->before_id and at most the last event
 * taken, or 0 when no older event is left. Returns 0 or -errno. */
int store_events_page(struct store *s, const struct store_event_filter *f, unsigned limit,
                      int (*fn)(const struct store_event_row *e, void *userdata), void *userdata,
                      uint64_t *ret_next);

/* Number of queued events. */
unsigned store_pending(const struct store *s);

/* Writes queued events in one transaction. */
int store_flush(struct store *s);

/* Pages in the WAL since the last checkpoint. SQLite's automatic checkpoint
 * (which fsyncs) is off, so none happens while serving; the caller runs
 * store_checkpoint() when idle or when this passes STORE_WAL_PAGES_MAX. */
int store_wal_pages(const struct store *s);

/* Copies the WAL into the database (PASSIVE: never waits for readers). */
int store_checkpoint(struct store *s);
