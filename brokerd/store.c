/* SPDX-License-Identifier: MIT */
/*
 * The SQLite store: schema and migrations (user_version), prepared
 * statements only, WAL, BEGIN IMMEDIATE for every write, synchronous=FULL
 * for rules and leases, batched audit events. The only file that includes
 * sqlite3.h.
 */
#include "store.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <time.h>

struct pending {
        int64_t time_us;
        char event[24];
        long uid, pid;
        char endpoint[PB_ENDPOINT_STRLEN];
        char detail[160];
        bool has_endpoint, has_detail;
};

enum stmt {
        ST_BEGIN,
        ST_COMMIT,
        ST_ROLLBACK,
        ST_SYNC_FULL,
        ST_SYNC_OFF,
        ST_RULE_ADD,
        ST_RULE_REMOVE,
        ST_RULE_UPDATE,
        ST_RULES,
        ST_LEASE_ADD,
        ST_LEASE_NEXT_ID,
        ST_LEASE_REMOVE,
        ST_LEASE_SET_FILE,
        ST_LEASES,
        ST_EVENT_ADD,
        ST_EVENT_PRUNE_ROWS,
        ST_EVENT_PRUNE_AGE,
        ST_EVENT_BOUNDS,
        ST_EVENT_PAGE,
        ST_CHECKPOINT,
        ST_RESERVED_ADD,
        ST_RESERVED_REMOVE,
        ST_RESERVED,
        ST_META_SET,
        ST_META_GET,
        _ST_MAX,
};

static const char *const stmt_sql[_ST_MAX] = {
        [ST_BEGIN] = "BEGIN IMMEDIATE",
        [ST_COMMIT] = "COMMIT",
        [ST_ROLLBACK] = "ROLLBACK",
        [ST_SYNC_FULL] = "PRAGMA synchronous=FULL",
        [ST_SYNC_OFF] = "PRAGMA synchronous=OFF",
        [ST_RULE_ADD] = "INSERT INTO rules (principal_kind, principal_id, principal_unit, pattern, "
                        "pattern_text, created, created_by, socket_gid, socket_mode, flags, owner, source) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [ST_RULE_REMOVE] = "DELETE FROM rules WHERE id = ?",
        [ST_RULE_UPDATE] = "UPDATE rules SET socket_gid = ?, socket_mode = ?, flags = ?, owner = ?, source = ? "
                           "WHERE id = ?",
        [ST_RULES] = "SELECT id, principal_kind, principal_id, principal_unit, pattern, created, socket_gid, "
                     "socket_mode, flags, owner, source FROM rules ORDER BY id",
        [ST_LEASE_ADD] = "INSERT INTO leases (id, endpoint, endpoint_text, owner_uid, created, socket_cookie, "
                         "boot_id, unix_uid, unix_gid, unix_mode, unix_dev, unix_ino, unix_born) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        /* AUTOINCREMENT's next id: never one a released lease had. */
        [ST_LEASE_NEXT_ID] = "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'leases'), 0), "
                             "coalesce((SELECT max(id) FROM leases), 0)) + 1",
        [ST_LEASE_REMOVE] = "DELETE FROM leases WHERE id = ?",
        [ST_LEASE_SET_FILE] = "UPDATE leases SET unix_dev = ?, unix_ino = ?, unix_born = ? WHERE id = ?",
        [ST_LEASES] = "SELECT id, endpoint, owner_uid, created, socket_cookie, boot_id, unix_uid, unix_gid, "
                      "unix_mode, unix_dev, unix_ino, unix_born FROM leases ORDER BY id",
        [ST_EVENT_ADD] = "INSERT INTO events (time_us, event, peer_uid, peer_pid, endpoint, detail) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
        /* Ids are the rowid (max + 1): the newest ?1 are above max - ?1. */
        [ST_EVENT_PRUNE_ROWS] = "DELETE FROM events WHERE id IN (SELECT id FROM events "
                                "WHERE id <= (SELECT max(id) FROM events) - ?1 ORDER BY id LIMIT ?2)",
        /* Walks events_time from the oldest: as many rows as it deletes. */
        [ST_EVENT_PRUNE_AGE] = "DELETE FROM events WHERE id IN (SELECT id FROM events "
                               "WHERE time_us < ?1 ORDER BY time_us LIMIT ?2)",
        [ST_EVENT_BOUNDS] = "SELECT (SELECT min(id) FROM events), (SELECT max(id) FROM events)",
        /* One window of ids, walked down the rowid: bounded work whatever
         * the filters (the + keeps SQLite off the time index, which would
         * read every event in the time range and sort them). */
        [ST_EVENT_PAGE] = "SELECT id, time_us, event, peer_uid, peer_pid, endpoint, detail FROM events "
                          "WHERE id >= ?1 AND id < ?2 AND +time_us BETWEEN ?3 AND ?4 "
                          "AND (?5 IS NULL OR peer_uid = ?5) AND (?6 IS NULL OR endpoint IN (?6, ?7)) "
                          "AND (?8 IS NULL OR event = ?8) ORDER BY id DESC LIMIT ?9",
        [ST_CHECKPOINT] = "PRAGMA wal_checkpoint(PASSIVE)",
        [ST_RESERVED_ADD] = "INSERT OR IGNORE INTO reserved_ports (port) VALUES (?)",
        [ST_RESERVED_REMOVE] = "DELETE FROM reserved_ports WHERE port = ?",
        [ST_RESERVED] = "SELECT port FROM reserved_ports ORDER BY port",
        [ST_META_SET] = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [ST_META_GET] = "SELECT value FROM meta WHERE key = ?",
};

static const char schema_v1[] =
        "CREATE TABLE rules ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  principal_kind INTEGER NOT NULL CHECK (principal_kind IN (1, 2, 3)),"
        "  principal_id INTEGER NOT NULL,"
        "  principal_unit TEXT NOT NULL DEFAULT '',"
        "  pattern BLOB NOT NULL CHECK (length(pattern) = 24),"
        "  pattern_text TEXT NOT NULL,"
        "  created INTEGER NOT NULL,"
        "  created_by INTEGER NOT NULL);"
        "CREATE TABLE leases ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  endpoint BLOB NOT NULL UNIQUE CHECK (length(endpoint) = 24),"
        "  endpoint_text TEXT NOT NULL,"
        "  owner_uid INTEGER NOT NULL,"
        "  created INTEGER NOT NULL,"
        "  socket_cookie INTEGER NOT NULL DEFAULT 0,"
        "  boot_id TEXT NOT NULL DEFAULT '');"
        "CREATE TABLE events ("
        "  id INTEGER PRIMARY KEY,"
        "  time_us INTEGER NOT NULL,"
        "  event TEXT NOT NULL,"
        "  peer_uid INTEGER,"
        "  peer_pid INTEGER,"
        "  endpoint TEXT,"
        "  detail TEXT);"
        "PRAGMA user_version = 1;";

/* Version 2, the bind guard: the ports brokerd put in
 * net.ipv4.ip_local_reserved_ports, so that a release takes out only its
 * own, and brokerd's own settings to remember (the guard's directory). */
static const char schema_v2[] =
        "CREATE TABLE reserved_ports ("
        "  port INTEGER PRIMARY KEY CHECK (port BETWEEN 1 AND 65535));"
        "CREATE TABLE meta ("
        "  key TEXT PRIMARY KEY,"
        "  value TEXT NOT NULL);"
        "PRAGMA user_version = 2;";

/* Version 4, Unix-domain leases (store.h): rules and leases rebuilt,
 * since SQLite cannot change a column's CHECK in place. Their
 * AUTOINCREMENT counters are carried over, so that no id ever comes back. */
static const char schema_v4[] =
        "CREATE TABLE rules_v4 ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  principal_kind INTEGER NOT NULL CHECK (principal_kind IN (1, 2, 3)),"
        "  principal_id INTEGER NOT NULL,"
        "  principal_unit TEXT NOT NULL DEFAULT '',"
        "  pattern BLOB NOT NULL CHECK (length(pattern) >= 24),"
        "  pattern_text TEXT NOT NULL,"
        "  created INTEGER NOT NULL,"
        "  created_by INTEGER NOT NULL,"
        "  socket_gid INTEGER NOT NULL DEFAULT 4294967295,"     /* none: brokerd's group */
        "  socket_mode INTEGER NOT NULL DEFAULT 384);"          /* 0600 */
        "INSERT INTO rules_v4 (id, principal_kind, principal_id, principal_unit, pattern, pattern_text, created,"
        "  created_by) SELECT id, principal_kind, principal_id, principal_unit, pattern, pattern_text, created,"
        "  created_by FROM rules;"
        "CREATE TABLE leases_v4 ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  endpoint BLOB NOT NULL UNIQUE CHECK (length(endpoint) >= 24),"
        "  endpoint_text TEXT NOT NULL,"
        "  owner_uid INTEGER NOT NULL,"
        "  created INTEGER NOT NULL,"
        "  socket_cookie INTEGER NOT NULL DEFAULT 0,"
        "  boot_id TEXT NOT NULL DEFAULT '',"
        "  unix_uid INTEGER NOT NULL DEFAULT 0,"
        "  unix_gid INTEGER NOT NULL DEFAULT 4294967295,"
        "  unix_mode INTEGER NOT NULL DEFAULT 384,"
        "  unix_dev INTEGER NOT NULL DEFAULT 0,"
        "  unix_ino INTEGER NOT NULL DEFAULT 0,"
        "  unix_born INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO leases_v4 (id, endpoint, endpoint_text, owner_uid, created, socket_cookie, boot_id)"
        "  SELECT id, endpoint, endpoint_text, owner_uid, created, socket_cookie, boot_id FROM leases;"
        "CREATE TEMP TABLE seq_v4 AS SELECT name, seq FROM sqlite_sequence WHERE name IN ('rules', 'leases');"
        "DROP TABLE rules;"
        "DROP TABLE leases;"
        "ALTER TABLE rules_v4 RENAME TO rules;"
        "ALTER TABLE leases_v4 RENAME TO leases;"
        "DELETE FROM sqlite_sequence WHERE name IN ('rules', 'leases', 'rules_v4', 'leases_v4');"
        "INSERT INTO sqlite_sequence (name, seq) SELECT name, seq FROM temp.seq_v4;"
        "DROP TABLE temp.seq_v4;"
        "PRAGMA user_version = 4;";

/* Version 5, reservations and policy files: a rule's flags (reserve, owner
 * given: as on the wire), its reservation's owner, and the policy.d file it
 * comes from ('': an admin's, made with portctl). */
static const char schema_v5[] =
        "ALTER TABLE rules ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE rules ADD COLUMN owner INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE rules ADD COLUMN source TEXT NOT NULL DEFAULT '';"
        "PRAGMA user_version = 5;";

struct store {
        sqlite3 *db;
        sqlite3_stmt *stmt[_ST_MAX];
        struct pending pending[STORE_PENDING_MAX];
        unsigned n_pending;
        struct {                        /* reserved_ports changes for the next transaction */
                uint16_t port;
                bool ours;
        } reserved[STORE_RESERVED_PENDING_MAX];
        unsigned n_reserved;
        unsigned since_prune;           /* events written since the last prune */
        unsigned max_rows;              /* audit events kept, 0: no limit */
        uint64_t max_age_sec;           /* their age, 0: no limit */
        int wal_pages;                  /* from the WAL hook */
};

static int64_t now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int sqlite_errno(int rc) {
        switch (rc & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        default:
                return -EIO;
        }
}

/* Runs a prepared statement that returns no rows, then resets it. */
static int run(struct store *s, enum stmt k) {
        sqlite3_stmt *st = s->stmt[k];
        int rc = sqlite3_step(st);

        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sqlite_errno(rc);
}

static int insert_event(struct store *s, const struct pending *p) {
        sqlite3_stmt *st = s->stmt[ST_EVENT_ADD];

        sqlite3_bind_int64(st, 1, p->time_us);
        sqlite3_bind_text(st, 2, p->event, -1, SQLITE_STATIC);
        if (p->uid >= 0)
                sqlite3_bind_int64(st, 3, p->uid);
        if (p->pid >= 0)
                sqlite3_bind_int64(st, 4, p->pid);
        if (p->has_endpoint)
                sqlite3_bind_text(st, 5, p->endpoint, -1, SQLITE_STATIC);
        if (p->has_detail)
                sqlite3_bind_text(st, 6, p->detail, -1, SQLITE_STATIC);
        s->since_prune++;
        return run(s, ST_EVENT_ADD);
}

static void pending_fill(struct pending *p, const struct store_event *ev) {
        p->time_us = now_us();
        snprintf(p->event, sizeof(p->event), "%s", ev->event);
        p->uid = ev->uid;
        p->pid = ev->pid;
        p->has_endpoint = ev->endpoint != NULL;
        p->has_detail = ev->detail != NULL;
        snprintf(p->endpoint, sizeof(p->endpoint), "%s", ev->endpoint ? ev->endpoint : "");
        snprintf(p->detail, sizeof(p->detail), "%s", ev->detail ? ev->detail : "");
}

/* Inside a transaction: deletes at most budget events past the retention
 * limits, the oldest by id past max_rows first, then those older than
 * max_age_sec. Returns how many, or -errno. */
static int prune(struct store *s, unsigned budget) {
        int64_t deleted = 0;
        int r;

        if (s->max_rows && budget) {
                sqlite3_bind_int64(s->stmt[ST_EVENT_PRUNE_ROWS], 1, s->max_rows);
                sqlite3_bind_int64(s->stmt[ST_EVENT_PRUNE_ROWS], 2, budget);
                r = run(s, ST_EVENT_PRUNE_ROWS);
                if (r < 0)
                        return r;
                deleted = sqlite3_changes(s->db);
        }
        if (s->max_age_sec && deleted < budget) {
                sqlite3_bind_int64(s->stmt[ST_EVENT_PRUNE_AGE], 1, now_us() - (int64_t) s->max_age_sec * 1000000);
                sqlite3_bind_int64(s->stmt[ST_EVENT_PRUNE_AGE], 2, budget - deleted);
                r = run(s, ST_EVENT_PRUNE_AGE);
                if (r < 0)
                        return r;
                deleted += sqlite3_changes(s->db);
        }
        return (int) deleted;
}

/* Inside a transaction: writes the queued events and reserved_ports
 * changes, then prunes old events now and then. */
static int write_pending(struct store *s) {
        int r;

        for (unsigned i = 0; i < s->n_pending; i++) {
                r = insert_event(s, &s->pending[i]);
                if (r < 0)
                        return r;
        }
        for (unsigned i = 0; i < s->n_reserved; i++) {
                enum stmt k = s->reserved[i].ours ? ST_RESERVED_ADD : ST_RESERVED_REMOVE;

                sqlite3_bind_int64(s->stmt[k], 1, s->reserved[i].port);
                r = run(s, k);
                if (r < 0)
                        return r;
        }
        if (s->since_prune >= STORE_PRUNE_EVERY) {
                r = prune(s, 2 * STORE_PRUNE_EVERY);    /* faster than they come: caught up while busy */
                if (r < 0)
                        return r;
                s->since_prune = 0;
        }
        return 0;
}

static int tx_begin(struct store *s) {
        return run(s, ST_BEGIN);
}

/* Commits (or on r < 0 rolls back) and returns r or the commit's error.
 * Queued events are written by every transaction, so a commit empties the queue. */
static int tx_end(struct store *s, int r) {
        if (r >= 0) {
                int k = run(s, ST_COMMIT);
                if (k >= 0) {
                        s->n_pending = 0;
                        s->n_reserved = 0;
                        return r;
                }
                r = k;
        }
        run(s, ST_ROLLBACK);
        return r;
}

/* A durable change: queued events, then the change and its event, one FULL commit. */
static int durable_event(struct store *s, const struct store_event *ev) {
        struct pending p;
        int r = write_pending(s);

        if (r < 0)
                return r;
        pending_fill(&p, ev);
        return insert_event(s, &p);
}

/* A transaction of the queued events, and of at most budget events pruned.
 * Audit batches commit without any sync, so serving never waits for the
 * disk: the next durable commit or checkpoint syncs them. A power loss may
 * drop the last batch of grant/deny rows (WAL frame checksums keep the
 * database intact), never a rule or a lease. Returns how many were pruned
 * or -errno. */
static int batch(struct store *s, unsigned budget) {
        int r = run(s, ST_SYNC_OFF);

        if (r < 0)
                return r;
        r = tx_begin(s);
        if (r >= 0) {
                r = write_pending(s);
                if (r >= 0)
                        r = prune(s, budget);
                r = tx_end(s, r);
        }
        run(s, ST_SYNC_FULL);
        return r;
}

int store_flush(struct store *s) {
        int r;

        if (s->n_pending == 0 && s->n_reserved == 0)
                return 0;
        r = batch(s, 0);
        return r < 0 ? r : 0;
}

int store_prune(struct store *s, unsigned budget) {
        return batch(s, budget);
}

void store_set_retention(struct store *s, unsigned max_rows, uint64_t max_age_sec) {
        s->max_rows = max_rows;
        s->max_age_sec = max_age_sec;
}

int store_event_queue(struct store *s, const struct store_event *ev) {
        int r = 0;

        if (s->n_pending == STORE_PENDING_MAX) {
                r = store_flush(s);
                if (r < 0)
                        s->n_pending = 0;       /* drop the batch rather than grow without bound */
        }
        pending_fill(&s->pending[s->n_pending++], ev);
        return r < 0 ? STORE_PENDING_MAX : 0;
}

static int on_wal_commit(void *userdata, sqlite3 *db, const char *name, int pages) {
        struct store *s = userdata;

        s->wal_pages = pages;
        return SQLITE_OK;
}

int store_wal_pages(const struct store *s) {
        return s->wal_pages;
}

int store_checkpoint(struct store *s) {
        int r = run(s, ST_CHECKPOINT);

        if (r >= 0)
                s->wal_pages = 0;
        return r;
}

unsigned store_pending(const struct store *s) {
        return s->n_pending + s->n_reserved;
}

static int rule_insert(struct store *s, struct store_rule *rule, const struct store_event *ev) {
        sqlite3_stmt *st = s->stmt[ST_RULE_ADD];
        char text[PB_ENDPOINT_STRLEN];
        uint8_t blob[PB_ENDPOINT_WIRE_MAX];
        size_t n = endpoint_encode(&rule->pattern, blob);
        bool is_unix = endpoint_is_unix(&rule->pattern);
        int r;

        rule->created = now_us() / 1000000;
        sqlite3_bind_int(st, 1, rule->principal.kind);
        sqlite3_bind_int64(st, 2, rule->principal.id);
        sqlite3_bind_text(st, 3, rule->principal.unit, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, blob, (int) n, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, endpoint_format_pattern(&rule->pattern, text), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, rule->created);
        sqlite3_bind_int64(st, 7, ev->uid);
        sqlite3_bind_int64(st, 8, is_unix ? rule->perm.gid : PB_SOCKET_GROUP_NONE);
        sqlite3_bind_int(st, 9, is_unix ? rule->perm.mode : PB_SOCKET_MODE_DEFAULT);
        sqlite3_bind_int(st, 10, rule->attrs.flags);
        sqlite3_bind_int64(st, 11, rule->attrs.owner);
        sqlite3_bind_text(st, 12, rule->source, -1, SQLITE_STATIC);
        r = run(s, ST_RULE_ADD);
        if (r >= 0)
                rule->id = (uint64_t) sqlite3_last_insert_rowid(s->db);
        return r;
}

static int rule_update(struct store *s, const struct store_rule *rule) {
        sqlite3_stmt *st = s->stmt[ST_RULE_UPDATE];
        bool is_unix = endpoint_is_unix(&rule->pattern);
        int r;

        sqlite3_bind_int64(st, 1, is_unix ? rule->perm.gid : PB_SOCKET_GROUP_NONE);
        sqlite3_bind_int(st, 2, is_unix ? rule->perm.mode : PB_SOCKET_MODE_DEFAULT);
        sqlite3_bind_int(st, 3, rule->attrs.flags);
        sqlite3_bind_int64(st, 4, rule->attrs.owner);
        sqlite3_bind_text(st, 5, rule->source, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (sqlite3_int64) rule->id);
        r = run(s, ST_RULE_UPDATE);
        return r >= 0 && sqlite3_changes(s->db) == 0 ? -ENOENT : r;
}

static int rule_delete(struct store *s, uint64_t id) {
        int r;

        sqlite3_bind_int64(s->stmt[ST_RULE_REMOVE], 1, (sqlite3_int64) id);
        r = run(s, ST_RULE_REMOVE);
        return r >= 0 && sqlite3_changes(s->db) == 0 ? -ENOENT : r;
}

char *store_rule_describe(const struct store_rule *r, char *buf, size_t size) {
        char text[PB_ENDPOINT_STRLEN];
        int n;

        if (r->principal.kind == PB_PRINCIPAL_UNIT)
                n = snprintf(buf, size, "unit %s", r->principal.unit);
        else
                n = snprintf(buf, size, "%s %u", r->principal.kind == PB_PRINCIPAL_USER ? "user" : "group",
                             (unsigned) r->principal.id);
        if (n >= 0 && (size_t) n < size)
                n += snprintf(buf + n, size - (size_t) n, " may get %s",
                              endpoint_format_pattern(&r->pattern, text));
        if (n >= 0 && (size_t) n < size && (r->attrs.flags & PB_RULE_RESERVE))
                n += snprintf(buf + n, size - (size_t) n, ", reserved for uid %u",
                              (unsigned) (r->attrs.flags & PB_RULE_OWNER ? r->attrs.owner : r->principal.id));
        if (n >= 0 && (size_t) n < size && r->source[0])
                snprintf(buf + n, size - (size_t) n, " (from %s)", r->source);
        return buf;
}

/* The audit event of change c, by who. */
static void change_event(const struct store_rule_change *c, const struct store_event *who, struct pending *ret) {
        static const char *const names[] = { [STORE_RULE_ADD] = "policy-add", [STORE_RULE_UPDATE] = "policy-change",
                                             [STORE_RULE_REMOVE] = "policy-remove" };
        char text[PB_ENDPOINT_STRLEN], what[300], detail[sizeof(ret->detail)];

        snprintf(detail, sizeof(detail), "rule %llu: %s%s%s", (unsigned long long) c->rule.id,
                 store_rule_describe(&c->rule, what, sizeof(what)), who->detail ? "; " : "",
                 who->detail ? who->detail : "");
        pending_fill(ret, &(struct store_event) { .event = names[c->op], .uid = who->uid, .pid = who->pid,
                                                  .endpoint = endpoint_format_pattern(&c->rule.pattern, text),
                                                  .detail = detail });
}

int store_rules_change(struct store *s, struct store_rule_change *changes, size_t n, const struct store_event *who) {
        int r = tx_begin(s);

        if (r < 0)
                return r;
        r = write_pending(s);
        for (size_t i = 0; i < n && r >= 0; i++) {
                struct store_rule_change *c = &changes[i];
                struct pending p;

                r = c->op == STORE_RULE_ADD ? rule_insert(s, &c->rule, who) :
                    c->op == STORE_RULE_UPDATE ? rule_update(s, &c->rule) : rule_delete(s, c->rule.id);
                if (r >= 0) {
                        change_event(c, who, &p);
                        r = insert_event(s, &p);
                }
        }
        return tx_end(s, r);
}

int store_rule_add(struct store *s, struct store_rule *rule, const struct store_event *who) {
        struct store_rule_change c = { .op = STORE_RULE_ADD, .rule = *rule };
        int r = store_rules_change(s, &c, 1, who);

        if (r >= 0) {
                rule->id = c.rule.id;
                rule->created = c.rule.created;
        }
        return r;
}

int store_rule_remove(struct store *s, const struct store_rule *rule, const struct store_event *who) {
        struct store_rule_change c = { .op = STORE_RULE_REMOVE, .rule = *rule };

        return store_rules_change(s, &c, 1, who);
}

static int remove_by_id(struct store *s, enum stmt k, uint64_t id, const struct store_event *ev) {
        int r = tx_begin(s);

        if (r < 0)
                return r;
        sqlite3_bind_int64(s->stmt[k], 1, (sqlite3_int64) id);
        r = run(s, k);
        if (r >= 0 && sqlite3_changes(s->db) == 0)
                r = -ENOENT;
        if (r >= 0)
                r = durable_event(s, ev);
        return tx_end(s, r);
}

int store_lease_add(struct store *s, struct store_lease *l, const struct store_event *ev) {
        sqlite3_stmt *st = s->stmt[ST_LEASE_ADD];
        char text[PB_ENDPOINT_STRLEN];
        uint8_t blob[PB_ENDPOINT_WIRE_MAX];
        size_t n;
        int r;

        l->created = now_us() / 1000000;
        n = endpoint_encode(&l->endpoint, blob);
        r = tx_begin(s);
        if (r < 0)
                return r;
        if (l->id)
                sqlite3_bind_int64(st, 1, (sqlite3_int64) l->id);
        else
                sqlite3_bind_null(st, 1);
        sqlite3_bind_blob(st, 2, blob, (int) n, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, endpoint_format(&l->endpoint, text), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, l->owner_uid);
        sqlite3_bind_int64(st, 5, l->created);
        sqlite3_bind_int64(st, 6, (sqlite3_int64) l->socket_cookie);
        sqlite3_bind_text(st, 7, l->boot_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, l->ux.uid);
        sqlite3_bind_int64(st, 9, endpoint_is_unix(&l->endpoint) ? l->ux.gid : PB_SOCKET_GROUP_NONE);
        sqlite3_bind_int(st, 10, endpoint_is_unix(&l->endpoint) ? l->ux.mode : PB_SOCKET_MODE_DEFAULT);
        sqlite3_bind_int64(st, 11, (sqlite3_int64) l->ux.file.dev);
        sqlite3_bind_int64(st, 12, (sqlite3_int64) l->ux.file.ino);
        sqlite3_bind_int64(st, 13, (sqlite3_int64) l->ux.file.born);
        r = run(s, ST_LEASE_ADD);
        if (r >= 0) {
                l->id = (uint64_t) sqlite3_last_insert_rowid(s->db);
                r = durable_event(s, ev);
        }
        return tx_end(s, r);
}

int store_lease_set_file(struct store *s, uint64_t id, const struct lease_unix *ux) {
        sqlite3_stmt *st = s->stmt[ST_LEASE_SET_FILE];
        int r = tx_begin(s);

        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, (sqlite3_int64) ux->file.dev);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) ux->file.ino);
        sqlite3_bind_int64(st, 3, (sqlite3_int64) ux->file.born);
        sqlite3_bind_int64(st, 4, (sqlite3_int64) id);
        r = write_pending(s);           /* the commit empties the queue (tx_end()) */
        if (r >= 0)
                r = run(s, ST_LEASE_SET_FILE);
        return tx_end(s, r);
}

int store_lease_next_id(struct store *s, uint64_t *ret) {
        sqlite3_stmt *st = s->stmt[ST_LEASE_NEXT_ID];
        int rc = sqlite3_step(st), r = 0;

        if (rc == SQLITE_ROW)
                *ret = (uint64_t) sqlite3_column_int64(st, 0);
        else
                r = sqlite_errno(rc);
        sqlite3_reset(st);
        return r;
}

int store_lease_remove(struct store *s, uint64_t id, const struct store_event *ev) {
        return remove_by_id(s, ST_LEASE_REMOVE, id, ev);
}

/* Text column col, or NULL for SQL NULL. */
static const char *column_text(sqlite3_stmt *st, int col) {
        return (const char *) sqlite3_column_text(st, col);
}

/* An integer column that may be NULL: -1 for none. */
static long column_id(sqlite3_stmt *st, int col) {
        int64_t v = sqlite3_column_int64(st, col);

        return sqlite3_column_type(st, col) == SQLITE_NULL || v < 0 || v > LONG_MAX ? -1 : (long) v;
}

/* The smallest and largest event id; 0 and 0 without events. */
static int event_bounds(struct store *s, uint64_t *ret_min, uint64_t *ret_max) {
        sqlite3_stmt *st = s->stmt[ST_EVENT_BOUNDS];
        int rc = sqlite3_step(st), r = 0;

        if (rc == SQLITE_ROW) {
                *ret_min = (uint64_t) sqlite3_column_int64(st, 0);
                *ret_max = (uint64_t) sqlite3_column_int64(st, 1);
                if (*ret_min == 0 || *ret_max < *ret_min)
                        *ret_min = *ret_max = 0;
        } else
                r = sqlite_errno(rc);
        sqlite3_reset(st);
        return r;
}

int store_events_page(struct store *s, const struct store_event_filter *f, unsigned limit,
                      int (*fn)(const struct store_event_row *e, void *userdata), void *userdata,
                      uint64_t *ret_next) {
        sqlite3_stmt *st = s->stmt[ST_EVENT_PAGE];
        uint64_t min = 0, max = 0, hi, lo, next, last = 0;
        unsigned taken = 0;
        int rc, r;

        r = event_bounds(s, &min, &max);
        if (r < 0)
                return r;
        hi = f->before_id && f->before_id <= max ? f->before_id : max + 1;     /* exclusive */
        if (max == 0 || hi <= min) {
                *ret_next = 0;
                return 0;
        }
        lo = hi - min > STORE_LOG_SPAN ? hi - STORE_LOG_SPAN : min;
        next = lo > min ? lo : 0;

        sqlite3_bind_int64(st, 1, (sqlite3_int64) lo);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) hi);
        sqlite3_bind_int64(st, 3, f->since_us);
        sqlite3_bind_int64(st, 4, f->until_us ? f->until_us : INT64_MAX);
        if (f->uid >= 0)
                sqlite3_bind_int64(st, 5, f->uid);
        if (f->endpoint[0]) {
                sqlite3_bind_text(st, 6, f->endpoint[0], -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 7, f->endpoint[1] ? f->endpoint[1] : f->endpoint[0], -1, SQLITE_STATIC);
        }
        if (f->event)
                sqlite3_bind_text(st, 8, f->event, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 9, (sqlite3_int64) limit + 1);   /* one more: are there more? */

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *event = column_text(st, 2);
                struct store_event_row row = {
                        .id = (uint64_t) sqlite3_column_int64(st, 0),
                        .time_us = sqlite3_column_int64(st, 1),
                        .event = event ? event : "",
                        .uid = column_id(st, 3),
                        .pid = column_id(st, 4),
                        .endpoint = column_text(st, 5),
                        .detail = column_text(st, 6),
                };

                if (taken == limit) {           /* one more there: the next page starts below the last */
                        next = last;
                        break;
                }
                r = fn(&row, userdata);
                if (r > 0 && taken == 0)
                        r = -EMSGSIZE;          /* no page could ever hold it */
                if (r > 0)
                        next = row.id + 1;
                if (r != 0)
                        break;
                last = row.id;
                taken++;
        }
        if (r == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
                r = sqlite_errno(rc);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (r < 0)
                return r;
        *ret_next = next;
        return 0;
}

/* Reads an endpoint blob column; a malformed one is corruption. */
static int column_endpoint(sqlite3_stmt *st, int col, bool pattern, struct pb_endpoint *ret) {
        const void *blob = sqlite3_column_blob(st, col);
        size_t len = (size_t) sqlite3_column_bytes(st, col), used;

        if (!blob || endpoint_decode(blob, len, pattern, ret, &used) < 0 || used != len)
                return -EBADMSG;
        return 0;
}

/* Reads a socket group and mode (two columns from col); out of range is corruption. */
static int column_perm(sqlite3_stmt *st, int col, struct pb_socket_perm *ret) {
        int64_t gid = sqlite3_column_int64(st, col), mode = sqlite3_column_int64(st, col + 1);

        if (gid < 0 || gid > UINT32_MAX || mode < 0 || mode > 0777)
                return -EBADMSG;
        *ret = (struct pb_socket_perm) { .gid = (uint32_t) gid, .mode = (uint16_t) mode };
        return 0;
}

/* Reads a rule's flags, owner and source (three columns from col); what
 * no rule could say is corruption. */
static int column_attrs(sqlite3_stmt *st, int col, struct store_rule *rule) {
        int64_t flags = sqlite3_column_int64(st, col), owner = sqlite3_column_int64(st, col + 1);
        const unsigned char *source = sqlite3_column_text(st, col + 2);
        const char *why;

        if (flags < 0 || flags > UINT8_MAX || owner < 0 || owner > UINT32_MAX || !source ||
            strlen((const char *) source) > PB_RULE_SOURCE_MAX)
                return -EBADMSG;
        rule->attrs = (struct pb_rule_attrs) { .flags = (uint8_t) flags, .owner = (uint32_t) owner };
        snprintf(rule->source, sizeof(rule->source), "%s", source);
        return proto_rule_attrs_validate(&rule->principal, &rule->pattern, &rule->attrs, &why) < 0 ? -EBADMSG : 0;
}

/* Queued like audit events: written by the next transaction (a new
 * lease's own commit, or the next batch), so a lease costs no commit more. */
int store_reserved_set(struct store *s, unsigned port, bool ours) {
        int r = 0;

        if (s->n_reserved == STORE_RESERVED_PENDING_MAX)
                r = store_flush(s);
        if (r < 0)
                return r;
        s->reserved[s->n_reserved].port = (uint16_t) port;
        s->reserved[s->n_reserved++].ours = ours;
        return 0;
}

int store_meta_set(struct store *s, const char *key, const char *value) {
        sqlite3_stmt *st = s->stmt[ST_META_SET];
        int r = tx_begin(s);

        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
        r = write_pending(s);
        if (r >= 0)
                r = run(s, ST_META_SET);
        return tx_end(s, r);
}

int store_meta_get(struct store *s, const char *key, char *buf, size_t size) {
        sqlite3_stmt *st = s->stmt[ST_META_GET];
        int rc, r = 0;

        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                const unsigned char *v = sqlite3_column_text(st, 0);

                snprintf(buf, size, "%s", v ? (const char *) v : "");
        } else if (rc == SQLITE_DONE)
                buf[0] = '\0';
        else
                r = sqlite_errno(rc);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return r;
}

int store_reserved_load(struct store *s, int (*fn)(unsigned port, void *userdata), void *userdata) {
        sqlite3_stmt *st = s->stmt[ST_RESERVED];
        int rc, r = 0;

        while (r >= 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
                r = fn((unsigned) sqlite3_column_int64(st, 0), userdata);
        if (r >= 0 && rc != SQLITE_DONE)
                r = sqlite_errno(rc);
        sqlite3_reset(st);
        return r;
}

int store_rules_load(struct store *s, int (*fn)(const struct store_rule *r, void *userdata), void *userdata) {
        sqlite3_stmt *st = s->stmt[ST_RULES];
        int rc, r = 0;

        while (r >= 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct store_rule rule = { .id = (uint64_t) sqlite3_column_int64(st, 0) };
                const unsigned char *unit = sqlite3_column_text(st, 3);

                rule.principal.kind = (uint8_t) sqlite3_column_int(st, 1);
                rule.principal.id = (uint32_t) sqlite3_column_int64(st, 2);
                snprintf(rule.principal.unit, sizeof(rule.principal.unit), "%s", unit ? (const char *) unit : "");
                rule.created = sqlite3_column_int64(st, 5);
                r = column_endpoint(st, 4, true, &rule.pattern);
                if (r >= 0)
                        r = column_perm(st, 6, &rule.perm);
                if (r >= 0)
                        r = column_attrs(st, 8, &rule);
                if (r >= 0)
                        r = proto_principal_validate(&rule.principal) < 0 ? -EBADMSG : 0;
                if (r >= 0)
                        r = fn(&rule, userdata);
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = sqlite_errno(rc);
        sqlite3_reset(st);
        return r;
}

int store_leases_load(struct store *s, int (*fn)(const struct store_lease *l, void *userdata), void *userdata) {
        sqlite3_stmt *st = s->stmt[ST_LEASES];
        int rc, r = 0;

        while (r >= 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct store_lease l = {
                        .id = (uint64_t) sqlite3_column_int64(st, 0),
                        .owner_uid = (uid_t) sqlite3_column_int64(st, 2),
                        .created = sqlite3_column_int64(st, 3),
                        .socket_cookie = (uint64_t) sqlite3_column_int64(st, 4),
                };
                const unsigned char *boot_id = sqlite3_column_text(st, 5);

                int64_t unix_uid = sqlite3_column_int64(st, 6);
                struct pb_socket_perm perm;

                snprintf(l.boot_id, sizeof(l.boot_id), "%s", boot_id ? (const char *) boot_id : "");
                r = column_endpoint(st, 1, false, &l.endpoint);
                if (r >= 0)
                        r = column_perm(st, 7, &perm);
                if (r >= 0 && (unix_uid < 0 || unix_uid >= UINT32_MAX))
                        r = -EBADMSG;
                if (r >= 0) {
                        l.ux = (struct lease_unix) { .uid = (uint32_t) unix_uid, .gid = perm.gid, .mode = perm.mode,
                                                     .file = { .dev = (uint64_t) sqlite3_column_int64(st, 9),
                                                               .ino = (uint64_t) sqlite3_column_int64(st, 10),
                                                               .born = (uint64_t) sqlite3_column_int64(st, 11) } };
                        r = fn(&l, userdata);
                }
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = sqlite_errno(rc);
        sqlite3_reset(st);
        return r;
}

/* Runs one statement and returns its first integer column. */
static int query_int(sqlite3 *db, const char *sql, int64_t *ret) {
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

        if (rc != SQLITE_OK)
                return sqlite_errno(rc);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && ret)
                *ret = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sqlite_errno(rc);
}

static int check_integrity(sqlite3 *db, char *errbuf, size_t errlen) {
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
        int r = 0;

        if (rc != SQLITE_OK) {
                snprintf(errbuf, errlen, "%s", sqlite3_errmsg(db));
                return sqlite_errno(rc);
        }
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                snprintf(errbuf, errlen, "%s", sqlite3_errmsg(db));
                r = sqlite_errno(rc);
        } else if (strcmp((const char *) sqlite3_column_text(st, 0), "ok") != 0) {
                snprintf(errbuf, errlen, "integrity check failed: %s", sqlite3_column_text(st, 0));
                r = -EBADMSG;
        }
        sqlite3_finalize(st);
        return r;
}

static int migrate(sqlite3 *db, char *errbuf, size_t errlen) {
        int64_t version = 0;
        char *msg = NULL;
        int r = query_int(db, "PRAGMA user_version", &version);

        if (r < 0) {
                snprintf(errbuf, errlen, "cannot read schema version: %s", sqlite3_errmsg(db));
                return r;
        }
        if (version > STORE_SCHEMA_VERSION) {
                snprintf(errbuf, errlen, "schema version %lld is newer than this brokerd knows (%d)",
                         (long long) version, STORE_SCHEMA_VERSION);
                return -EPROTO;
        }
        if (version >= STORE_SCHEMA_TABLES)
                return 0;

        /* One step per version, from the one found (0: a new database). */
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
            (version < 1 && sqlite3_exec(db, schema_v1, NULL, NULL, &msg) != SQLITE_OK) ||
            (version < 2 && sqlite3_exec(db, schema_v2, NULL, NULL, &msg) != SQLITE_OK) ||
            (version < 4 && sqlite3_exec(db, schema_v4, NULL, NULL, &msg) != SQLITE_OK) ||
            (version < 5 && sqlite3_exec(db, schema_v5, NULL, NULL, &msg) != SQLITE_OK) ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
                snprintf(errbuf, errlen, "cannot create schema: %s", msg ? msg : sqlite3_errmsg(db));
                sqlite3_free(msg);
                sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
                return -EIO;
        }
        return 0;
}

int store_check(const char *path, char *errbuf, size_t errlen) {
        sqlite3 *db = NULL;
        int64_t version = 0;
        int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL), r;

        if (rc != SQLITE_OK) {
                snprintf(errbuf, errlen, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
                sqlite3_close(db);
                return rc == SQLITE_CANTOPEN ? 0 : sqlite_errno(rc);   /* none yet: created at start */
        }
        sqlite3_busy_timeout(db, 1000);
        r = query_int(db, "PRAGMA user_version", &version);
        if (r < 0)
                snprintf(errbuf, errlen, "cannot read schema version: %s", sqlite3_errmsg(db));
        else if (version > STORE_SCHEMA_VERSION) {
                snprintf(errbuf, errlen, "schema version %lld is newer than this brokerd knows (%d)",
                         (long long) version, STORE_SCHEMA_VERSION);
                r = -EPROTO;
        }
        sqlite3_close(db);
        return r;
}

int store_open(const char *path, struct store **ret, char *errbuf, size_t errlen) {
        struct store *s = calloc(1, sizeof(*s));
        int rc, r;

        if (!s)
                return -ENOMEM;
        rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW |
                                     SQLITE_OPEN_FULLMUTEX, NULL);
        if (rc != SQLITE_OK) {
                snprintf(errbuf, errlen, "%s", s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
                r = sqlite_errno(rc);
                goto fail;
        }
        sqlite3_extended_result_codes(s->db, 1);
        sqlite3_busy_timeout(s->db, 5000);
        /* A small page cache (256 KiB, not 2 MiB): only start-up reads the
         * whole database (the check, the leases); a get reads none of it. */
        r = query_int(s->db, "PRAGMA cache_size=-256", NULL);
        if (r < 0) {
                snprintf(errbuf, errlen, "%s", sqlite3_errmsg(s->db));
                goto fail;
        }
        r = check_integrity(s->db, errbuf, errlen);
        if (r < 0)
                goto fail;
        r = query_int(s->db, "PRAGMA journal_mode=WAL", NULL);
        if (r >= 0)
                r = query_int(s->db, "PRAGMA synchronous=FULL", NULL);
        if (r >= 0)
                r = query_int(s->db, "PRAGMA foreign_keys=ON", NULL);
        if (r >= 0)
                r = query_int(s->db, "PRAGMA wal_autocheckpoint=0", NULL);
        if (r < 0) {
                snprintf(errbuf, errlen, "%s", sqlite3_errmsg(s->db));
                goto fail;
        }
        r = migrate(s->db, errbuf, errlen);
        if (r < 0)
                goto fail;
        /* Pruning by age walks the events by time. An index, not a schema
         * change: made here for any database (an older brokerd keeps it up). */
        r = query_int(s->db, "CREATE INDEX IF NOT EXISTS events_time ON events (time_us)", NULL);
        if (r < 0) {
                snprintf(errbuf, errlen, "cannot index the audit trail: %s", sqlite3_errmsg(s->db));
                goto fail;
        }
        s->max_rows = STORE_EVENTS_KEEP;

        for (int k = 0; k < _ST_MAX; k++) {
                rc = sqlite3_prepare_v3(s->db, stmt_sql[k], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[k], NULL);
                if (rc != SQLITE_OK) {
                        snprintf(errbuf, errlen, "unexpected schema: %s", sqlite3_errmsg(s->db));
                        r = -EBADMSG;
                        goto fail;
                }
        }
        sqlite3_wal_hook(s->db, on_wal_commit, s);
        *ret = s;
        return 0;

fail:
        for (int k = 0; k < _ST_MAX; k++)
                sqlite3_finalize(s->stmt[k]);
        sqlite3_close_v2(s->db);
        free(s);
        return r;
}

void store_close(struct store *s) {
        if (!s)
                return;
        store_flush(s);
        for (int k = 0; k < _ST_MAX; k++)
                sqlite3_finalize(s->stmt[k]);
        sqlite3_close_v2(s->db);
        free(s);
}
