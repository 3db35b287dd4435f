/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of brokerd/policy.c: who is an admin, which principal matches
 * which peer, rule lookup over ranges and addresses, that a doubtful peer
 * matches nothing, and the plans of imports and the policy directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

static struct peer make_peer(uid_t uid, gid_t gid, gid_t *groups, size_t n, const char *unit) {
        struct peer p = { .pid = 100, .uid = uid, .gid = gid, .groups = groups, .n_groups = n, .pid_fd = -1 };
        if (unit)
                strcpy(p.unit, unit);
        return p;
}

static struct store_rule rule(uint64_t id, uint8_t kind, uint32_t who, const char *unit, const char *pattern) {
        struct store_rule r = { .id = id, .principal = { .kind = kind, .id = who } };
        if (unit)
                strcpy(r.principal.unit, unit);
        assert_int_equal(endpoint_parse_pattern(pattern, &r.pattern), 0);
        return r;
}

static void test_admins(void **state) {
        struct policy_admin_group admins = { .set = true, .gid = 50, .name = "admins" };
        struct policy pol = { .self_uid = 1000, .admin_group = &admins };
        gid_t groups[] = { 20, 50 };
        struct peer root = make_peer(0, 0, NULL, 0, NULL);
        struct peer self = make_peer(1000, 1000, NULL, 0, NULL);
        struct peer member = make_peer(2000, 2000, groups, 2, NULL);
        struct peer other = make_peer(3000, 3000, groups, 1, NULL);
        struct peer doubtful = make_peer(0, 0, NULL, 0, NULL);

        doubtful.doubt = "the peer is in another user namespace";
        assert_true(policy_is_admin(&pol, &root));
        assert_true(policy_is_admin(&pol, &self));
        assert_true(policy_is_admin(&pol, &member));
        assert_false(policy_is_admin(&pol, &other));
        assert_false(policy_is_admin(&pol, &doubtful));
        admins.set = false;
        assert_false(policy_is_admin(&pol, &member));
        pol.admin_group = NULL;
        assert_false(policy_is_admin(&pol, &member));
        assert_true(policy_is_admin(&pol, &self));
}

static void test_find(void **state) {
        struct policy pol = { .self_uid = 0 };
        gid_t groups[] = { 33 };
        struct peer alice = make_peer(4242, 4242, NULL, 0, NULL);
        struct peer web = make_peer(5000, 5000, groups, 1, NULL);
        struct peer svc = make_peer(6000, 6000, NULL, 0, "nginx.service");
        struct peer stranger = make_peer(7000, 7000, NULL, 0, "nginx.service.d");
        struct pb_endpoint e;
        struct store_rule r;

        r = rule(1, PB_PRINCIPAL_USER, 4242, NULL, "tcp:8000-8099");
        assert_int_equal(policy_add(&pol, &r), 0);
        r = rule(2, PB_PRINCIPAL_GROUP, 33, NULL, "tcp:127.0.0.1:80");
        assert_int_equal(policy_add(&pol, &r), 0);
        r = rule(3, PB_PRINCIPAL_UNIT, 0, "nginx.service", "udp:53");
        assert_int_equal(policy_add(&pol, &r), 0);
        assert_int_equal(pol.n_unit_rules, 1);          /* peers' units are read only then */

        assert_int_equal(endpoint_parse("8000", &e), 0);
        assert_non_null(policy_find(&pol, &alice, &e));
        assert_int_equal(endpoint_parse("tcp:[::1]:8099", &e), 0);
        assert_int_equal(policy_find(&pol, &alice, &e)->id, 1);
        assert_int_equal(endpoint_parse("8100", &e), 0);
        assert_null(policy_find(&pol, &alice, &e));
        assert_int_equal(endpoint_parse("udp:8000", &e), 0);
        assert_null(policy_find(&pol, &alice, &e));

        /* An address in the pattern matches only that address. */
        assert_int_equal(endpoint_parse("tcp:127.0.0.1:80", &e), 0);
        assert_int_equal(policy_find(&pol, &web, &e)->id, 2);
        assert_null(policy_find(&pol, &alice, &e));
        assert_int_equal(endpoint_parse("tcp:80", &e), 0);
        assert_null(policy_find(&pol, &web, &e));

        /* Units match by exact name only. */
        assert_int_equal(endpoint_parse("udp:53", &e), 0);
        assert_int_equal(policy_find(&pol, &svc, &e)->id, 3);
        assert_null(policy_find(&pol, &stranger, &e));

        svc.doubt = "cannot read the peer's cgroup";
        assert_null(policy_find(&pol, &svc, &e));

        assert_int_equal(policy_remove(&pol, 3), 0);
        assert_int_equal(policy_remove(&pol, 3), -ENOENT);
        assert_int_equal(pol.n_unit_rules, 0);
        svc.doubt = NULL;
        assert_null(policy_find(&pol, &svc, &e));
        assert_non_null(policy_get(&pol, 2));
        assert_null(policy_get(&pol, 3));
        policy_done(&pol);
}

/* The same principal and pattern is the same rule, whatever bytes a copy
 * left in the struct's padding. */
static void test_find_rule(void **state) {
        struct policy pol = { .self_uid = 0 };
        struct store_rule a, b;

        memset(&a, 0xAA, sizeof(a));
        memset(&b, 0x55, sizeof(b));
        a.principal.kind = b.principal.kind = PB_PRINCIPAL_USER;
        a.principal.id = b.principal.id = 4242;
        a.principal.unit[0] = b.principal.unit[0] = '\0';
        assert_int_equal(endpoint_parse_pattern("tcp:8000-8099", &a.pattern), 0);
        assert_int_equal(endpoint_parse_pattern("tcp:8000-8099", &b.pattern), 0);
        a.id = 1;
        assert_int_equal(policy_add(&pol, &a), 0);
        assert_ptr_equal(policy_find_rule(&pol, &b), &pol.rules[0]);
        b.principal.id = 4343;
        assert_null(policy_find_rule(&pol, &b));
        b.principal.id = 4242;
        assert_int_equal(endpoint_parse_pattern("tcp:8000-8098", &b.pattern), 0);
        assert_null(policy_find_rule(&pol, &b));
        policy_done(&pol);
}

static void test_rule_limit(void **state) {
        struct policy pol = { 0 };
        struct store_rule r = rule(1, PB_PRINCIPAL_USER, 1, NULL, "tcp:1-65535");

        for (int i = 0; i < POLICY_RULES_MAX; i++) {
                r.id = (uint64_t) i + 1;
                assert_int_equal(policy_add(&pol, &r), 0);
        }
        assert_int_equal(policy_add(&pol, &r), -ENOSPC);
        policy_done(&pol);
}

/* --- plans ------------------------------------------------------------------ */

static struct store_rule sourced(uint64_t id, uint32_t uid, const char *pattern, const char *source) {
        struct store_rule r = rule(id, PB_PRINCIPAL_USER, uid, NULL, pattern);

        strcpy(r.source, source);
        return r;
}

static struct policy policy_of(const struct store_rule *rules, size_t n) {
        struct policy pol = { 0 };

        for (size_t i = 0; i < n; i++)
                assert_int_equal(policy_add(&pol, &rules[i]), 0);
        return pol;
}

/* The change of the plan for rule id (0: an add of pattern), or NULL. */
static const struct store_rule_change *change_of(const struct store_rule_change *c, ssize_t n, uint64_t id,
                                                 const char *pattern) {
        struct pb_endpoint p;

        assert_int_equal(endpoint_parse_pattern(pattern, &p), 0);
        for (ssize_t i = 0; i < n; i++)
                if (c[i].rule.id == id && endpoint_equal(&c[i].rule.pattern, &p))
                        return &c[i];
        return NULL;
}

/* An import adds what is missing, changes an admin's rule in place (its
 * id kept), leaves a rule it names alone, and with replace removes the
 * admin's rules it does not name, never a policy directory's. */
static void test_plan_import(void **state) {
        const struct store_rule have[] = {
                sourced(1, 1000, "tcp:8000-8099", ""),
                sourced(2, 1000, "tcp:9000", ""),
                sourced(3, 33, "tcp:80", "web.conf"),
                sourced(4, 1001, "tcp:7000", ""),
        };
        struct store_rule want[] = {
                sourced(0, 1000, "tcp:8000-8099", ""),  /* the same */
                sourced(0, 1000, "tcp:9000", ""),       /* now reserved */
                sourced(0, 33, "tcp:80", ""),           /* a file's, the same */
                sourced(0, 1002, "udp:53", ""),         /* new */
        };
        struct policy pol = policy_of(have, ELEMENTSOF(have));
        struct store_rule_change *c = NULL;
        struct policy_counts counts;
        size_t conflict = 99;
        ssize_t n;

        want[1].attrs.flags = PB_RULE_RESERVE;
        n = policy_plan(&pol, want, ELEMENTSOF(want), POLICY_SCOPE_IMPORT, false, &c, &counts, &conflict);
        assert_int_equal(n, 2);
        assert_int_equal(counts.added, 1);
        assert_int_equal(counts.changed, 1);
        assert_int_equal(counts.removed, 0);
        assert_int_equal(change_of(c, n, 2, "tcp:9000")->op, STORE_RULE_UPDATE);
        assert_int_equal(change_of(c, n, 2, "tcp:9000")->rule.attrs.flags, PB_RULE_RESERVE);
        assert_int_equal(change_of(c, n, 0, "udp:53")->op, STORE_RULE_ADD);
        free(c);

        n = policy_plan(&pol, want, ELEMENTSOF(want), POLICY_SCOPE_IMPORT, true, &c, &counts, &conflict);
        assert_int_equal(n, 3);
        assert_int_equal(counts.removed, 1);
        assert_int_equal(change_of(c, n, 4, "tcp:7000")->op, STORE_RULE_REMOVE);    /* not rule 3: a file's */
        policy_apply(&pol, c, (size_t) n);
        assert_int_equal(pol.n_rules, 4);
        assert_null(policy_get(&pol, 4));
        assert_int_equal(policy_get(&pol, 2)->attrs.flags, PB_RULE_RESERVE);
        free(c);

        /* A file's rule said otherwise: a conflict, nothing planned. */
        c = NULL;
        want[2].attrs.flags = PB_RULE_RESERVE;
        assert_int_equal(policy_plan(&pol, want, ELEMENTSOF(want), POLICY_SCOPE_IMPORT, true, &c, NULL, &conflict),
                         -EEXIST);
        assert_int_equal(conflict, 2);
        assert_null(c);
        /* So is a rule given twice. */
        want[2] = want[0];
        assert_int_equal(policy_plan(&pol, want, ELEMENTSOF(want), POLICY_SCOPE_IMPORT, false, &c, NULL, &conflict),
                         -EEXIST);
        assert_int_equal(conflict, 2);
        policy_done(&pol);
}

/* The policy directory's plan: its rules follow the files (a file takes an
 * admin's rule it names over), and a rule no file has is removed; the
 * admin's others stay. */
static void test_plan_files(void **state) {
        const struct store_rule have[] = {
                sourced(1, 1000, "tcp:8000", "a.conf"),
                sourced(2, 1000, "tcp:8001", "a.conf"),
                sourced(3, 1000, "tcp:8002", ""),
                sourced(4, 1000, "tcp:8003", ""),
        };
        const struct store_rule want[] = {
                sourced(0, 1000, "tcp:8000", "a.conf"), /* the same */
                sourced(0, 1000, "tcp:8001", "b.conf"), /* moved to another file */
                sourced(0, 1000, "tcp:8002", "a.conf"), /* an admin's, now a file's */
                sourced(0, 1000, "tcp:8004", "b.conf"), /* new */
        };
        struct policy pol = policy_of(have, ELEMENTSOF(have));
        struct store_rule_change *c;
        struct policy_counts counts;
        size_t conflict;
        ssize_t n;

        n = policy_plan(&pol, want, ELEMENTSOF(want), POLICY_SCOPE_FILES, false, &c, &counts, &conflict);
        assert_int_equal(n, 3);
        assert_int_equal(counts.added, 1);
        assert_int_equal(counts.changed, 2);
        assert_int_equal(counts.removed, 0);
        assert_string_equal(change_of(c, n, 2, "tcp:8001")->rule.source, "b.conf");
        assert_string_equal(change_of(c, n, 3, "tcp:8002")->rule.source, "a.conf");
        free(c);

        /* No files: every rule of theirs goes, the admin's stay. */
        n = policy_plan(&pol, NULL, 0, POLICY_SCOPE_FILES, false, &c, &counts, &conflict);
        assert_int_equal(n, 2);
        assert_int_equal(counts.removed, 2);
        policy_apply(&pol, c, (size_t) n);
        assert_int_equal(pol.n_rules, 2);
        assert_non_null(policy_get(&pol, 3));
        assert_non_null(policy_get(&pol, 4));
        free(c);
        policy_done(&pol);
}

/* A plan never leaves more than POLICY_RULES_MAX rules; removals make room. */
static void test_plan_limit(void **state) {
        static struct store_rule want[POLICY_RULES_MAX + 1];
        struct policy pol = { 0 };
        struct store_rule_change *c = NULL;
        struct policy_counts counts;
        size_t conflict;
        ssize_t n;

        for (unsigned i = 0; i <= POLICY_RULES_MAX; i++)
                want[i] = rule(0, PB_PRINCIPAL_USER, 1000 + i, NULL, "tcp:80");
        assert_int_equal(policy_plan(&pol, want, POLICY_RULES_MAX + 1, POLICY_SCOPE_IMPORT, false, &c, NULL,
                                     &conflict), -ENOSPC);
        n = policy_plan(&pol, want, POLICY_RULES_MAX, POLICY_SCOPE_IMPORT, false, &c, &counts, &conflict);
        assert_int_equal(n, POLICY_RULES_MAX);
        for (ssize_t i = 0; i < n; i++)
                c[i].rule.id = (uint64_t) i + 1;        /* as the store numbers them */
        assert_int_equal(policy_reserve(&pol, counts.added), 0);
        policy_apply(&pol, c, (size_t) n);
        assert_int_equal(pol.n_rules, POLICY_RULES_MAX);
        free(c);
        /* All replaced by others: as many removed as added, within the limit. */
        for (unsigned i = 0; i < POLICY_RULES_MAX; i++)
                want[i] = rule(0, PB_PRINCIPAL_USER, 50000 + i, NULL, "tcp:80");
        n = policy_plan(&pol, want, POLICY_RULES_MAX, POLICY_SCOPE_IMPORT, true, &c, &counts, &conflict);
        assert_int_equal(n, 2 * POLICY_RULES_MAX);
        free(c);
        policy_done(&pol);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_admins),
                cmocka_unit_test(test_find),
                cmocka_unit_test(test_find_rule),
                cmocka_unit_test(test_rule_limit),
                cmocka_unit_test(test_plan_import),
                cmocka_unit_test(test_plan_files),
                cmocka_unit_test(test_plan_limit),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
