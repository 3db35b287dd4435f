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
        assert_int_equal(sql_int("PRAGMA user_version"), 4);
        assert_int_equal(store_leases_load(s, collect_lease, loaded), 0);
        assert_int_equal(loaded[0].id, 1);
        assert_true(endpoint_is_v6only_any(&loaded[0].endpoint));
        assert_int_equal(store_rules_load(s, collect_rule, rules), 0);
        assert_true(endpoint_is_v6only_any(&rules[0].pattern));
        assert_int_equal(rules[0].perm.gid, PB_SOCKET_GROUP_NONE);
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
        assert_int_equal(store_rule_remove(s, r.id, &ev), 0);
        assert_int_equal(store_rule_remove(s, 9999, &ev), -ENOENT);
        store_close(s);
        assert_int_equal(sql_int("SELECT count(*) FROM leases"), 0);
        assert_int_equal(sql_int("SELECT count(*) FROM rules"), 1);
        /* Every durable change carries its audit row. */
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='policy-add'"), 2);
        assert_int_equal(sql_int("SELECT count(*) FROM events WHERE event='release'"), 2);
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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_new_database_schema, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rules_and_leases_survive_reopen, setup, teardown),
                cmocka_unit_test_setup_teardown(test_events_batched_until_flush, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failed_flush_keeps_events, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_automatic_checkpoint, setup, teardown),
                cmocka_unit_test_setup_teardown(test_corrupt_database_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_v3_migrated_and_unix_endpoints_stored, setup, teardown),
                cmocka_unit_test_setup_teardown(test_v1_migrated_and_reserved_ports_kept, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wal_journal, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
