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
#define STORE_EVENTS_KEEP 100000        /* audit rows kept; older ones are pruned */
#define STORE_PENDING_MAX 1024          /* queued events before a forced flush */
#define STORE_RESERVED_PENDING_MAX 64   /* queued reserved_ports changes before a forced flush */
#define STORE_WAL_PAGES_MAX 4096        /* WAL size that forces a checkpoint (16 MiB of 4 KiB pages) */

struct store;

struct store_event {
        const char *event;              /* grant, deny, create, release, policy-add, ... */
        long uid, pid;                  /* peer, -1: none */
        const char *endpoint;           /* text or NULL */
        const char *detail;             /* text or NULL */
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
