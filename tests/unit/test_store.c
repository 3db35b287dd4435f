/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of brokerd/store.c against real SQLite files in a temporary
 * directory: schema creation, rules and leases surviving a reopen, the
 * batched audit events, and refusal of corrupt or newer databases.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

static char dir[64], path[128];

static int setup(void **state) {
        snprintf(dir, sizeof(dir), "/tmp/pb-test-store-XXXXXX");
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/pb.db", dir);
        return 0;
}

static int teardown(void **state) {
        char cmd[160];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        return system(cmd) == 0 ? 0 : -1;
}

static int64_t sql_int(const char *sql) {
        sqlite3 *db;
        sqlite3_stmt *st;
        int64_t v = -1;

        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

static struct store *open_ok(void) {
        struct store *s = NULL;
        char err[256] = "";

        assert_int_equal(store_open(path, &s, err, sizeof(err)), 0);
        assert_non_null(s);
        return s;
}

static int count_rule(const struct store_rule *r, void *userdata) {
        struct store_rule *last = userdata;
        *last = *r;
        last->created++;                /* used as a counter below */
        return 0;
}

static int collect_lease(const struct store_lease *l, void *userdata) {
        struct store_lease *out = userdata;
        out[out[0].id == 0 ? 0 : 1] = *l;
        return 0;
}

static void test_new_database_schema(void **state) {
        struct store *s = open_ok();

        store_close(s);
        assert_int_equal(sql_int("PRAGMA user_version"), STORE_SCHEMA_TABLES);
        assert_int_equal(sql_int("SELECT count(*) FROM sqlite_master WHERE name IN ('rules','leases','events')"), 3);
}

static int collect_rule(const struct store_rule *r, void *userdata) {
        struct store_rule *out = userdata;
        out[out[0].id == 0 ? 0 : 1] = *r;
        return 0;
}

/* Version 4 rebuilds rules and leases: what a version 3 database held
 * (an IPv6-only wildcard's lease and rule) is kept, and so are the
 * AUTOINCREMENT counters, so that a released lease's id never comes back.
 * Then a Unix lease keeps its path and socket file, a Unix rule its
 * socket group and mode; a file recorded anew survives a reopen. */
static void test_v3_migrated_and_unix_endpoints_stored(void **state) {
        struct store *s = open_ok();
        struct store_event ev = { .event = "create", .uid = 0, .pid = 1 };
        struct store_lease l = { .owner_uid = 4242 }, loaded[2] = { { 0 } };
        struct store_rule r = { .principal = { .kind = PB_PRINCIPAL_USER, .id = 4242 } }, rules[2] = { { 0 } };
        struct lease_unix ux = { .uid = 4242, .gid = 33, .mode = 0660, .file = { 2049, 77, 1 } };
        uint64_t next;
        sqlite3 *db;

        /* A version 3 database: the old tables, a lease released (id 2). */
        store_close(s);
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db,
                "DROP TABLE rules; DROP TABLE leases;"
                "CREATE TABLE rules (id INTEGER PRIMARY KEY AUTOINCREMENT, principal_kind INTEGER NOT NULL, "
                "principal_id INTEGER NOT NULL, principal_unit TEXT NOT NULL DEFAULT '', "
                "pattern BLOB NOT NULL CHECK (length(pattern) = 24), pattern_text TEXT NOT NULL, "
                "created INTEGER NOT NULL, created_by INTEGER NOT NULL);"
                "CREATE TABLE leases (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "endpoint BLOB NOT NULL UNIQUE CHECK (length(endpoint) = 24), endpoint_text TEXT NOT NULL, "
                "owner_uid INTEGER NOT NULL, created INTEGER NOT NULL, socket_cookie INTEGER NOT NULL DEFAULT 0, "
                "boot_id TEXT NOT NULL DEFAULT '');"
                "INSERT INTO leases (endpoint, endpoint_text, owner_uid, created) VALUES "
                "(x'110600350035000000000000000000000000000000000000', 'udp6:[::]:53', 4242, 1);"
                "INSERT INTO leases (endpoint, endpoint_text, owner_uid, created) VALUES "
                "(x'060000500050000000000000000000000000000000000000', 'tcp:[::]:80', 4242, 1);"
                "DELETE FROM leases WHERE id = 2;"
                "INSERT INTO rules (principal_kind, principal_id, pattern, pattern_text, created, created_by) VALUES "
                "(1, 4242, x'060600500050000000000000000000000000000000000000', 'tcp6:[::]:80', 1, 0);"
                "PRAGMA user_version = 3;", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);

        s = open_ok();
        assert_int_equal(sql_int("PRAGMA user_version"), STORE_SCHEMA_VERSION);
        assert_int_equal(store_leases_load(s, collect_lease, loaded), 0);
        assert_int_equal(loaded[0].id, 1);
        assert_true(endpoint_is_v6only_any(&loaded[0].endpoint));
        assert_int_equal(store_rules_load(s, collect_rule, rules), 0);
        assert_true(endpoint_is_v6only_any(&rules[0].pattern));
        assert_int_equal(rules[0].perm.gid, PB_SOCKET_GROUP_NONE);
        assert_int_equal(rules[0].attrs.flags, 0);              /* version 5: no reservation, an admin's */
        assert_int_equal(rules[0].attrs.owner, 0);
        assert_string_equal(rules[0].source, "");
        assert_int_equal(store_lease_next_id(s, &next), 0);
        assert_int_equal(next, 3);                      /* not 2: it was a lease's */

        assert_int_equal(endpoint_parse("unix:/run/app/web.sock", &l.endpoint), 0);
        l.ux = ux;
        assert_int_equal(store_lease_add(s, &l, &ev), 0);
        assert_int_equal(l.id, 3);
        ev.event = "policy-add";
        assert_int_equal(endpoint_parse_pattern("unix:/run/app/", &r.pattern), 0);
        r.perm = (struct pb_socket_perm) { .gid = 33, .mode = 0660 };
        assert_int_equal(store_rule_add(s, &r, &ev), 0);
        ux.file = (struct unix_file) { .dev = 2050, .ino = 78, .born = 1796000000123456789 };
        /* An event queued before (the replacement that made the new file) is written with it. */
        ev.event = "replace";
        assert_int_equal(store_event_queue(s, &ev), 0);
        assert_int_equal(store_lease_set_file(s, l.id, &ux), 0);
        assert_int_equal(store_pending(s), 0);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='replace'"), 1);
        store_close(s);

        s = open_ok();
        memset(loaded, 0, sizeof(loaded));
        memset(rules, 0, sizeof(rules));
        assert_int_equal(store_leases_load(s, collect_lease, loaded), 0);
        assert_string_equal(loaded[1].endpoint.path, "/run/app/web.sock");
        assert_int_equal(loaded[1].ux.uid, 4242);
        assert_int_equal(loaded[1].ux.gid, 33);
        assert_int_equal(loaded[1].ux.mode, 0660);
        assert_int_equal(loaded[1].ux.file.dev, 2050);
        assert_int_equal(loaded[1].ux.file.ino, 78);
        assert_int_equal(loaded[1].ux.file.born, 1796000000123456789);
        assert_int_equal(store_rules_load(s, collect_rule, rules), 0);
        assert_string_equal(rules[1].pattern.path, "/run/app/");
        assert_int_equal(rules[1].perm.gid, 33);
        assert_int_equal(rules[1].perm.mode, 0660);
        store_close(s);

        /* A mode past 0777 in the database is corruption, not a socket's mode. */
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "UPDATE rules SET socket_mode = 4095 WHERE id = 2", NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
        s = open_ok();
        assert_int_equal(store_rules_load(s, collect_rule, rules), -EBADMSG);
        store_close(s);
}

static void test_rules_and_leases_survive_reopen(void **state) {
        struct store *s = open_ok();
        struct store_event ev = { .event = "policy-add", .uid = 0, .pid = 1 };
        struct store_rule r = { .principal = { .kind = PB_PRINCIPAL_USER, .id = 4242 } };
        struct store_rule r2 = { .principal = { .kind = PB_PRINCIPAL_UNIT } };
        struct store_lease l = { .owner_uid = 4242 }, loaded[2] = { { 0 } };
        struct store_rule last = { 0 };

        assert_int_equal(endpoint_parse_pattern("tcp:8000-8099", &r.pattern), 0);
        assert_int_equal(store_rule_add(s, &r, &ev), 0);
        assert_true(r.id >= 1);
        strcpy(r2.principal.unit, "nginx.service");
        assert_int_equal(endpoint_parse_pattern("udp:[::1]:53", &r2.pattern), 0);
        assert_int_equal(store_rule_add(s, &r2, &ev), 0);
        assert_int_equal(endpoint_parse("tcp:127.0.0.1:8080", &l.endpoint), 0);
        ev.event = "create";
        assert_int_equal(store_lease_add(s, &l, &ev), 0);
        assert_true(l.id >= 1);
        /* The same endpoint twice is a constraint violation, not a second row. */
        assert_int_equal(store_lease_add(s, &l, &ev), -EEXIST);
        store_close(s);

        s = open_ok();
        assert_int_equal(store_rules_load(s, count_rule, &last), 0);
        assert_int_equal(last.id, r2.id);
        assert_string_equal(last.principal.unit, "nginx.service");
        assert_true(endpoint_equal(&last.pattern, &r2.pattern));
        assert_int_equal(store_leases_load(s, collect_lease, loaded), 0);
        assert_int_equal(loaded[0].id, l.id);
        assert_int_equal(loaded[0].owner_uid, 4242);
        assert_true(endpoint_equal(&loaded[0].endpoint, &l.endpoint));

        ev.event = "release";
        assert_int_equal(store_lease_remove(s, l.id, &ev), 0);
        assert_int_equal(store_lease_remove(s, l.id, &ev), -ENOENT);
        assert_int_equal(store_rule_remove(s, &r, &ev), 0);
        assert_int_equal(store_rule_remove(s, &r, &ev), -ENOENT);
        store_close(s);
        assert_int_equal(sql_int("SELECT count(*) FROM leases"), 0);
        assert_int_equal(sql_int("SELECT count(*) FROM rules"), 1);
        /* Every durable change carries its audit row. */
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='policy-add'"), 2);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='policy-remove'"), 1);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='release'"), 1);
}

/* A batch of rule changes is one transaction: all of it, each change
 * with its audit event, or (a change that cannot be made) none of it.
 * Reservations, owners and sources survive a reopen; the rules of a
 * version 4 database migrate to none of them. */
static void test_rule_changes_all_or_nothing(void **state) {
        struct store *s = open_ok();
        struct store_event who = { .uid = 0, .pid = 1, .detail = "import" };
        struct store_rule a = { .principal = { .kind = PB_PRINCIPAL_GROUP, .id = 33 },
                                .attrs = { .flags = PB_RULE_RESERVE | PB_RULE_OWNER, .owner = 33 },
                                .source = "web.conf" };
        struct store_rule b = { .principal = { .kind = PB_PRINCIPAL_USER, .id = 1000 } };
        struct store_rule_change c[3];
        struct store_rule rules[2] = { { 0 } };
        sqlite3 *db;

        assert_int_equal(endpoint_parse_pattern("tcp:80", &a.pattern), 0);
        assert_int_equal(endpoint_parse_pattern("tcp:8080", &b.pattern), 0);
        c[0] = (struct store_rule_change) { .op = STORE_RULE_ADD, .rule = a };
        c[1] = (struct store_rule_change) { .op = STORE_RULE_ADD, .rule = b };
        assert_int_equal(store_rules_change(s, c, 2, &who), 0);
        assert_true(c[0].rule.id >= 1 && c[1].rule.id == c[0].rule.id + 1);
        a = c[0].rule;
        b = c[1].rule;

        /* The third change names no rule: the first two are undone too. */
        c[0] = (struct store_rule_change) { .op = STORE_RULE_REMOVE, .rule = a };
        c[1] = (struct store_rule_change) { .op = STORE_RULE_UPDATE, .rule = b };
        c[1].rule.attrs.flags = PB_RULE_RESERVE;
        c[2] = (struct store_rule_change) { .op = STORE_RULE_UPDATE, .rule = b };
        c[2].rule.id = 9999;
        assert_int_equal(store_rules_change(s, c, 3, &who), -ENOENT);
        store_close(s);
        assert_int_equal(sql_int("SELECT count(*) FROM rules"), 2);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event LIKE 'policy-%'"), 2);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='policy-add' AND peer_uid=0 AND "
                                 "endpoint='tcp:80' AND detail LIKE '%reserved for uid 33 (from web.conf); import'"), 1);

        s = open_ok();
        assert_int_equal(store_rules_change(s, c, 2, &who), 0);
        assert_int_equal(store_rules_load(s, collect_rule, rules), 0);
        assert_int_equal(rules[0].id, b.id);
        assert_int_equal(rules[0].attrs.flags, PB_RULE_RESERVE);
        store_close(s);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='policy-change'"), 1);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='policy-remove'"), 1);

        /* Reloaded as written: flags, owner and source. */
        s = open_ok();
        c[0] = (struct store_rule_change) { .op = STORE_RULE_ADD, .rule = a };
        assert_int_equal(store_rules_change(s, c, 1, &who), 0);
        memset(rules, 0, sizeof(rules));
        assert_int_equal(store_rules_load(s, collect_rule, rules), 0);
        assert_int_equal(rules[1].attrs.flags, PB_RULE_RESERVE | PB_RULE_OWNER);
        assert_int_equal(rules[1].attrs.owner, 33);
        assert_string_equal(rules[1].source, "web.conf");
        store_close(s);

        /* An owner no rule could have (no reservation) is corruption. */
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "UPDATE rules SET flags = 2 WHERE principal_kind = 2", NULL, NULL, NULL),
                         SQLITE_OK);
        sqlite3_close(db);
        s = open_ok();
        assert_int_equal(store_rules_load(s, collect_rule, rules), -EBADMSG);
        store_close(s);
}

static void test_events_batched_until_flush(void **state) {
        struct store *s = open_ok();
        struct store_event ev = { .event = "grant", .uid = 7, .pid = 8, .endpoint = "tcp:[::]:80" };

        for (int i = 0; i < 10; i++)
                assert_int_equal(store_event_queue(s, &ev), 0);
        assert_int_equal(store_pending(s), 10);
        assert_int_equal(sql_int("SELECT count(*) FROM events"), 0);
        assert_int_equal(store_flush(s), 0);
        assert_int_equal(store_pending(s), 0);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='grant' AND peer_uid=7"), 10);

        /* A full queue flushes by itself instead of growing. */
        for (int i = 0; i < STORE_PENDING_MAX + 5; i++)
                assert_int_equal(store_event_queue(s, &ev), 0);
        assert_true(store_pending(s) <= STORE_PENDING_MAX);
        store_close(s);
        assert_int_equal(sql_int("SELECT count(*) FROM events"), 10 + STORE_PENDING_MAX + 5);
}

static void exec_sql(const char *sql) {
        sqlite3 *db;

        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

/* A flush the database refuses keeps its events for the next one; only a
 * full queue that cannot be written either drops them, and says how many. */
static void test_failed_flush_keeps_events(void **state) {
        struct store *s = open_ok();
        struct store_event ev = { .event = "grant", .uid = 7, .pid = 8, .endpoint = "tcp:[::]:80" };

        exec_sql("CREATE TRIGGER no_events BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'refused'); END;");
        for (int i = 0; i < 10; i++)
                assert_int_equal(store_event_queue(s, &ev), 0);
        assert_true(store_flush(s) < 0);
        assert_int_equal(store_pending(s), 10);
        for (int i = 10; i < STORE_PENDING_MAX; i++)
                assert_int_equal(store_event_queue(s, &ev), 0);
        assert_int_equal(store_event_queue(s, &ev), STORE_PENDING_MAX);
        assert_int_equal(store_pending(s), 1);
        exec_sql("DROP TRIGGER no_events");
        assert_int_equal(store_flush(s), 0);
        store_close(s);
        assert_int_equal(sql_int("SELECT count(*) FROM events"), 1);
}

static void test_no_automatic_checkpoint(void **state) {
        struct store *s = open_ok();
        struct store_event ev = { .event = "grant", .uid = 7, .pid = 8, .endpoint = "tcp:[::]:80" };
        int pages = 0;

        /* Far past SQLite's default of 1000 pages: no checkpoint happens by itself. */
        for (int round = 0; round < 60; round++) {
                for (int i = 0; i < STORE_PENDING_MAX; i++)
                        assert_int_equal(store_event_queue(s, &ev), 0);
                assert_int_equal(store_flush(s), 0);
                assert_true(store_wal_pages(s) >= pages);
                pages = store_wal_pages(s);
        }
        assert_true(pages > 0);
        assert_int_equal(store_checkpoint(s), 0);
        assert_int_equal(store_wal_pages(s), 0);
        store_close(s);
        assert_int_equal(sql_int("SELECT count(*) FROM events"), 60 * STORE_PENDING_MAX);
}

static void test_corrupt_database_refused(void **state) {
        struct store *s = NULL;
        char err[256] = "";
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        char junk[8192];

        assert_true(fd >= 0);
        memset(junk, 'x', sizeof(junk));
        assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t) sizeof(junk));
        close(fd);
        assert_true(store_open(path, &s, err, sizeof(err)) < 0);
        assert_null(s);
        assert_true(strlen(err) > 0);
}

static void test_newer_schema_refused(void **state) {
        struct store *s = open_ok();
        char err[256] = "";
        sqlite3 *db;

        store_close(s);
        s = NULL;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        assert_int_equal(store_open(path, &s, err, sizeof(err)), -EPROTO);
        assert_non_null(strstr(err, "newer"));
}

static int collect_port(unsigned port, void *userdata) {
        unsigned *out = userdata;

        out[out[0] == 0 ? 0 : 1] = port;
        return 0;
}

/* A version 1 database (before the bind guard) gets the reserved_ports
 * table and keeps its leases; the ports recorded survive a reopen. */
static void test_v1_migrated_and_reserved_ports_kept(void **state) {
        struct store *s;
        struct store_lease loaded[2] = { { 0 } };
        unsigned ports[2] = { 0, 0 };
        sqlite3 *db;

        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db,
                "CREATE TABLE rules (id INTEGER PRIMARY KEY AUTOINCREMENT, principal_kind INTEGER NOT NULL, "
                "principal_id INTEGER NOT NULL, principal_unit TEXT NOT NULL DEFAULT '', pattern BLOB NOT NULL, "
                "pattern_text TEXT NOT NULL, created INTEGER NOT NULL, created_by INTEGER NOT NULL);"
                "CREATE TABLE leases (id INTEGER PRIMARY KEY AUTOINCREMENT, endpoint BLOB NOT NULL UNIQUE, "
                "endpoint_text TEXT NOT NULL, owner_uid INTEGER NOT NULL, created INTEGER NOT NULL, "
                "socket_cookie INTEGER NOT NULL DEFAULT 0, boot_id TEXT NOT NULL DEFAULT '');"
                "CREATE TABLE events (id INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, event TEXT NOT NULL, "
                "peer_uid INTEGER, peer_pid INTEGER, endpoint TEXT, detail TEXT);"
                "INSERT INTO leases (endpoint, endpoint_text, owner_uid, created) VALUES "
                "(x'060027102710000000000000000000000000000000000000', 'tcp:10000', 4242, 1);"
                "PRAGMA user_version = 1;", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);

        s = open_ok();
        assert_int_equal(sql_int("PRAGMA user_version"), STORE_SCHEMA_VERSION);
        assert_int_equal(store_leases_load(s, collect_lease, loaded), 0);
        assert_int_equal(loaded[0].owner_uid, 4242);
        assert_int_equal(store_reserved_set(s, 50001, true), 0);
        assert_int_equal(store_reserved_set(s, 50001, true), 0);        /* once is enough */
        assert_int_equal(store_reserved_set(s, 50000, true), 0);
        assert_int_equal(store_reserved_set(s, 40000, true), 0);
        assert_int_equal(store_reserved_set(s, 40000, false), 0);
        store_close(s);

        s = open_ok();
        assert_int_equal(store_reserved_load(s, collect_port, ports), 0);
        assert_int_equal(ports[0], 50000);
        assert_int_equal(ports[1], 50001);
        assert_int_equal(sql_int("SELECT count(*) FROM reserved_ports"), 2);
        store_close(s);
}

static void test_wal_journal(void **state) {
        struct store *s = open_ok();

        sqlite3 *db;
        sqlite3_stmt *st;

        store_close(s);
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *) sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
        sqlite3_close(db);
}

/* --- reading the audit trail back ------------------------------------------------ */

struct page {
        uint64_t ids[64];
        long uids[64];
        unsigned n;
        int full_at;                    /* >= 0: the page is full after that many */
};

static int take_event(const struct store_event_row *e, void *userdata) {
        struct page *p = userdata;

        if (p->full_at >= 0 && p->n == (unsigned) p->full_at)
                return 1;
        assert_true(p->n < 64);
        assert_non_null(e->event);
        p->uids[p->n] = e->uid;
        p->ids[p->n++] = e->id;
        return 0;
}

/* One page of f from before (0: the newest), at most limit events; returns the next cursor. */
static uint64_t page_of(struct store *s, struct store_event_filter f, uint64_t before, unsigned limit,
                        struct page *p) {
        uint64_t next = 77;

        f.before_id = before;
        *p = (struct page) { .full_at = -1 };
        assert_int_equal(store_events_page(s, &f, limit, take_event, p, &next), 0);
        assert_true(next == 0 || (before == 0 || next < before));
        if (p->n)
                assert_true(next <= p->ids[p->n - 1]);
        for (unsigned i = 1; i < p->n; i++)
                assert_true(p->ids[i] < p->ids[i - 1]);
        return next;
}

/* Every event f selects, walking pages of limit: how many, their ids in *ids (newest first). */
static unsigned walk(struct store *s, struct store_event_filter f, unsigned limit, uint64_t *ids, unsigned max,
                     unsigned *ret_pages) {
        uint64_t before = 0;
        unsigned n = 0, pages = 0;
        struct page p;

        do {
                before = page_of(s, f, before, limit, &p);
                for (unsigned i = 0; i < p.n; i++) {
                        assert_true(n < max);
                        ids[n++] = p.ids[i];
                }
                pages++;
        } while (before);
        if (ret_pages)
                *ret_pages = pages;
        return n;
}

static void queue(struct store *s, const char *event, long uid, const char *endpoint, const char *detail) {
        struct store_event ev = { .event = event, .uid = uid, .pid = uid < 0 ? -1 : 100 + uid,
                                  .endpoint = endpoint, .detail = detail };

        assert_int_equal(store_event_queue(s, &ev), 0);
}

/* Filters by uid, endpoint (either text), kind and time; pages newest
 * first, each event once; a full page leaves its event for the next one. */
static void test_events_page_filters_and_pages(void **state) {
        struct store *s = open_ok();
        struct store_event_filter all = { .uid = -1 }, f;
        uint64_t ids[64], cursor;
        unsigned pages;
        struct page p;

        assert_int_equal(page_of(s, all, 0, 10, &p), 0);       /* none yet */
        assert_int_equal(p.n, 0);
        for (int i = 0; i < 10; i++) {
                queue(s, "grant", 4242, "tcp:[::]:8080", NULL);
                queue(s, "deny", 4243, "tcp:[::]:8080", "no rule");
        }
        queue(s, "policy-add", 0, "tcp:8080", "user 4242");
        queue(s, "rebind-failed", -1, "udp:127.0.0.1:53", "Address already in use");
        assert_int_equal(store_flush(s), 0);

        assert_int_equal(walk(s, all, 32, ids, 64, &pages), 22);
        assert_int_equal(pages, 1);
        assert_int_equal(ids[0], 22);                           /* newest first */
        assert_int_equal(ids[21], 1);

        f = all;
        f.uid = 4242;
        assert_int_equal(walk(s, f, 3, ids, 64, &pages), 10);   /* NULL uids never match one */
        assert_int_equal(pages, 4);
        for (unsigned i = 0; i < 10; i++)
                assert_int_equal(ids[i], 19 - 2 * i);
        f = all;
        f.event = "deny";
        assert_int_equal(walk(s, f, 32, ids, 64, NULL), 10);
        f.event = "reexec";
        assert_int_equal(walk(s, f, 32, ids, 64, NULL), 0);
        f = all;
        f.endpoint[0] = "tcp:8080";
        assert_int_equal(walk(s, f, 32, ids, 64, NULL), 1);
        f.endpoint[1] = "tcp:[::]:8080";
        assert_int_equal(walk(s, f, 32, ids, 64, NULL), 21);
        f = all;
        f.uid = 0;
        f.endpoint[0] = "tcp:8080";
        f.event = "policy-add";
        assert_int_equal(walk(s, f, 32, ids, 64, NULL), 1);
        assert_int_equal(ids[0], 21);

        /* Time: inclusive bounds, 0 none. */
        exec_sql("UPDATE events SET time_us = id * 1000000");
        f = all;
        f.since_us = 5000000;
        f.until_us = 7000000;
        assert_int_equal(walk(s, f, 32, ids, 64, NULL), 3);
        assert_int_equal(ids[0], 7);
        assert_int_equal(ids[2], 5);
        f.until_us = 0;
        assert_int_equal(walk(s, f, 32, ids, 64, NULL), 18);
        f = all;
        f.until_us = 2000000;
        assert_int_equal(walk(s, f, 32, ids, 64, NULL), 2);

        /* Exactly limit left: no empty page after it. */
        f = all;
        f.until_us = 4000000;
        assert_int_equal(page_of(s, f, 0, 4, &p), 0);
        assert_int_equal(p.n, 4);
        assert_int_equal(page_of(s, all, 5, 4, &p), 0);
        assert_int_equal(p.n, 4);
        /* One more than limit: the next page starts below the last. */
        assert_int_equal(page_of(s, all, 6, 4, &p), 2);
        assert_int_equal(p.n, 4);
        /* A cursor past the newest is the newest. */
        assert_int_equal(page_of(s, all, 1000, 2, &p), 21);
        assert_int_equal(p.ids[0], 22);

        /* A full page (fn says so): that event starts the next one. */
        p = (struct page) { .full_at = 3 };
        assert_int_equal(store_events_page(s, &all, 10, take_event, &p, &cursor), 0);
        assert_int_equal(p.n, 3);
        assert_int_equal(cursor, 20);                           /* 22, 21, 20 taken; 19 refused */
        assert_int_equal(page_of(s, all, cursor, 1, &p), 19);
        assert_int_equal(p.ids[0], 19);
        /* An event no page could take is an error, not an endless walk. */
        p = (struct page) { .full_at = 0 };
        assert_int_equal(store_events_page(s, &all, 10, take_event, &p, &cursor), -EMSGSIZE);
        store_close(s);
}

/* A request examines at most STORE_LOG_SPAN events: a rare match far
 * down the trail is reached in a few bounded pages, each fast. */
static void test_events_page_is_bounded(void **state) {
        struct store *s = open_ok();
        struct store_event_filter f = { .uid = -1, .event = "rebind-failed" };
        uint64_t ids[64];
        unsigned pages;
        struct timespec t0, t1;
        struct page p;
        double ms;

        exec_sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) "
                 "INSERT INTO events (id, time_us, event, peer_uid, peer_pid, endpoint, detail) "
                 "SELECT i, 1700000000000000 + i, CASE WHEN i IN (3, 50000) THEN 'rebind-failed' ELSE 'grant' END, "
                 "4242 + i % 4, i, 'tcp:[::]:' || (8000 + i % 50), NULL FROM n");
        assert_int_equal(walk(s, f, 32, ids, 64, &pages), 2);
        assert_int_equal(ids[0], 50000);
        assert_int_equal(ids[1], 3);
        assert_int_equal(pages, (100000 + STORE_LOG_SPAN - 1) / STORE_LOG_SPAN);

        /* The first page: nothing in the newest STORE_LOG_SPAN, and the cursor below them. */
        assert_int_equal(page_of(s, f, 0, 32, &p), 100001 - STORE_LOG_SPAN);
        assert_int_equal(p.n, 0);

        /* Cost of one page: the worst (nothing matches in the span) and the usual (a full page). */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < 20; i++)
                page_of(s, f, 0, 32, &p);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms = ((double) (t1.tv_sec - t0.tv_sec) * 1e3 + (double) (t1.tv_nsec - t0.tv_nsec) / 1e6) / 20;
        print_message("a page examining %d of 100000 events, none matching: %.2f ms\n", STORE_LOG_SPAN, ms);
        assert_true(ms < 100);          /* a few ms here; generous for sanitizers and valgrind */
        f.event = NULL;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < 20; i++)
                page_of(s, f, 0, 32, &p);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms = ((double) (t1.tv_sec - t0.tv_sec) * 1e3 + (double) (t1.tv_nsec - t0.tv_nsec) / 1e6) / 20;
        print_message("a full page of the newest of 100000 events: %.3f ms\n", ms);
        assert_int_equal(p.n, 32);
        store_close(s);
}

/* --- retention ------------------------------------------------------------------- */

/* n events at id from + 1.. (SQL), recorded age_sec ago. */
static void old_events(int from, int n, int64_t age_sec) {
        char sql[400];
        struct timespec now;

        clock_gettime(CLOCK_REALTIME, &now);
        snprintf(sql, sizeof(sql), "WITH RECURSIVE n(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
                 "INSERT INTO events (id, time_us, event, peer_uid) SELECT i, %lld, 'grant', 7 FROM n",
                 from + 1, from + n, ((long long) now.tv_sec - (long long) age_sec) * 1000000);
        exec_sql(sql);
}

/* Past max_rows, the oldest ids go, at most budget a step, the newest kept. */
static void test_prune_rows_in_steps(void **state) {
        struct store *s = open_ok();

        old_events(0, 2500, 0);
        store_set_retention(s, 1000, 0);
        assert_int_equal(store_prune(s, 1000), 1000);
        assert_int_equal(store_prune(s, 1000), 500);
        assert_int_equal(store_prune(s, 1000), 0);
        assert_int_equal(sql_int("SELECT count(*) FROM events"), 1000);
        assert_int_equal(sql_int("SELECT min(id) FROM events"), 1501);
        store_set_retention(s, 0, 0);                   /* no limit */
        assert_int_equal(store_prune(s, 1000), 0);
        store_close(s);
        assert_int_equal(sql_int("SELECT count(*) FROM events"), 1000);
}

/* Older than max_age goes, whatever its id; younger stays, also with an older id. */
static void test_prune_age(void **state) {
        struct store *s = open_ok();

        old_events(0, 30, 7200);                        /* ids 1..30: two hours old */
        old_events(30, 10, 1800);                       /* 31..40: half an hour */
        old_events(40, 5, 7200);                        /* 41..45: two hours again (the clock went back) */
        store_set_retention(s, 100000, 3600);
        assert_int_equal(store_prune(s, 20), 20);
        assert_int_equal(store_prune(s, 20), 15);
        assert_int_equal(store_prune(s, 20), 0);
        assert_int_equal(sql_int("SELECT count(*) FROM events"), 10);
        assert_int_equal(sql_int("SELECT min(id) FROM events"), 31);
        assert_int_equal(sql_int("SELECT max(id) FROM events"), 40);
        /* The index it walks (not a schema change). */
        assert_int_equal(sql_int("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'events_time'"), 1);
        store_close(s);
        assert_int_equal(sql_int("PRAGMA user_version"), STORE_SCHEMA_VERSION);
}

/* Queued events are written before a prune, and being the newest they stay. */
static void test_prune_keeps_queued_events(void **state) {
        struct store *s = open_ok();
        struct store_event ev = { .event = "deny", .uid = 9, .pid = 1, .detail = "no rule" };

        old_events(0, 50, 365 * 86400);
        store_set_retention(s, 5, 3600);
        for (int i = 0; i < 3; i++)
                assert_int_equal(store_event_queue(s, &ev), 0);
        assert_int_equal(store_prune(s, 1000), 50);
        assert_int_equal(store_pending(s), 0);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event = 'deny'"), 3);
        assert_int_equal(sql_int("SELECT count(*) FROM events"), 3);
        store_close(s);
}

/* While events keep coming (no idle moment), every STORE_PRUNE_EVERY written prune too. */
static void test_prune_while_busy(void **state) {
        struct store *s = open_ok();
        struct store_event ev = { .event = "grant", .uid = 7, .pid = 8, .endpoint = "tcp:[::]:80" };

        store_set_retention(s, 100, 0);
        for (int round = 0; round < 25; round++) {
                for (int i = 0; i < 100; i++)
                        assert_int_equal(store_event_queue(s, &ev), 0);
                assert_int_equal(store_flush(s), 0);
                assert_true(sql_int("SELECT count(*) FROM events") < 100 + STORE_PRUNE_EVERY + 100);
        }
        assert_int_equal(sql_int("SELECT max(id) FROM events"), 2500);
        store_close(s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_new_database_schema, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rules_and_leases_survive_reopen, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rule_changes_all_or_nothing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_events_batched_until_flush, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failed_flush_keeps_events, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_automatic_checkpoint, setup, teardown),
                cmocka_unit_test_setup_teardown(test_corrupt_database_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_v3_migrated_and_unix_endpoints_stored, setup, teardown),
                cmocka_unit_test_setup_teardown(test_v1_migrated_and_reserved_ports_kept, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wal_journal, setup, teardown),
                cmocka_unit_test_setup_teardown(test_events_page_filters_and_pages, setup, teardown),
                cmocka_unit_test_setup_teardown(test_events_page_is_bounded, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prune_rows_in_steps, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prune_age, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prune_keeps_queued_events, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prune_while_busy, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
