/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of brokerd/policy.c: who is an admin, which principal matches
 * which peer, rule lookup over ranges and addresses, and that a doubtful
 * peer matches nothing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "policy.h"

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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_admins),
                cmocka_unit_test(test_find),
                cmocka_unit_test(test_find_rule),
                cmocka_unit_test(test_rule_limit),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
