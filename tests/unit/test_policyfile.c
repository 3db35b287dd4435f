/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of common/policyfile.c: every form of a rule line, comments
 * and blank lines, and that each kind of mistake is refused with a reason
 * naming it (and, from a file, its line).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "policyfile.h"

static int parse(const char *text, struct policyfile_rule *ret, char *why, size_t size) {
        char line[POLICYFILE_LINE_MAX + 1];

        snprintf(line, sizeof(line), "%s", text);
        return policyfile_parse_line(line, ret, why, size);
}

static void test_rules(void **state) {
        struct policyfile_rule r;
        char why[256];

        assert_int_equal(parse("tcp:8000-8099 user 1000", &r, why, sizeof(why)), 1);
        assert_int_equal(r.principal.kind, PB_PRINCIPAL_USER);
        assert_int_equal(r.principal.id, 1000);
        assert_int_equal(r.pattern.port_lo, 8000);
        assert_int_equal(r.pattern.port_hi, 8099);
        assert_int_equal(r.attrs.flags, 0);
        assert_int_equal(r.attrs.owner, 0);

        assert_int_equal(parse("  udp:[::]:53\tgroup root reserve owner=0   # DNS", &r, why, sizeof(why)), 1);
        assert_int_equal(r.principal.kind, PB_PRINCIPAL_GROUP);
        assert_int_equal(r.principal.id, 0);
        assert_int_equal(r.pattern.transport, PB_UDP);
        assert_int_equal(r.attrs.flags, PB_RULE_RESERVE | PB_RULE_OWNER);
        assert_int_equal(r.attrs.owner, 0);

        assert_int_equal(parse("tcp:80 user root reserve", &r, why, sizeof(why)), 1);
        assert_int_equal(r.attrs.flags, PB_RULE_RESERVE);

        assert_int_equal(parse("unix:/run/app/ unit web@1.service socket-group=0 socket-mode=0660", &r, why,
                               sizeof(why)), 1);
        assert_int_equal(r.principal.kind, PB_PRINCIPAL_UNIT);
        assert_string_equal(r.principal.unit, "web@1.service");
        assert_int_equal(r.perm.gid, 0);
        assert_int_equal(r.perm.mode, 0660);
        /* Unix defaults: brokerd's group, 0600. */
        assert_int_equal(parse("unix:/run/app/x.sock user root", &r, why, sizeof(why)), 1);
        assert_int_equal(r.perm.gid, PB_SOCKET_GROUP_NONE);
        assert_int_equal(r.perm.mode, 0600);

        assert_int_equal(parse("", &r, why, sizeof(why)), 0);
        assert_int_equal(parse("   \t ", &r, why, sizeof(why)), 0);
        assert_int_equal(parse("# tcp:80 user root", &r, why, sizeof(why)), 0);
}

/* Each mistake, and the words its reason has. */
static void test_mistakes(void **state) {
        static const struct {
                const char *line;
                int error;
                const char *reason;
        } bad[] = {
                { "tcp:80", -EINVAL, "expected PATTERN" },
                { "tcp:80 user", -EINVAL, "expected PATTERN" },
                { "tcp:99999 user root", -EINVAL, "invalid pattern" },
                { "tcp:80 people root", -EINVAL, "expected user, group or unit" },
                { "tcp:80 user no-such-user-here", -ENOENT, "no such user" },
                { "tcp:80 group no-such-group-here", -ENOENT, "no such group" },
                { "tcp:80 unit web", -EINVAL, "invalid unit" },
                { "tcp:80 user root reserve reserve", -EINVAL, "reserve given twice" },
                { "tcp:80 user root frobnicate", -EINVAL, "unknown word" },
                { "tcp:80 user root socket-mode=0660", -EINVAL, "for unix: patterns" },
                { "unix:/run/a/ user root socket-mode=0999", -EINVAL, "invalid socket-mode" },
                { "unix:/run/a/ user root socket-mode=0600 socket-mode=0600", -EINVAL, "given twice" },
                { "unix:/run/a/ user root socket-group=no-such-group-here", -ENOENT, "no such group" },
                { "tcp:8000-8001 user root reserve", -EINVAL, "one endpoint" },
                { "unix:/run/a/ user root reserve", -EINVAL, "one endpoint" },
                { "tcp:80 group root reserve", -EINVAL, "needs an owner" },
                { "tcp:80 user root reserve owner=root", -EINVAL, "its user's" },
                { "tcp:80 group root owner=root", -EINVAL, "only a reservation" },
                { "tcp:80 group root reserve owner=root owner=root", -EINVAL, "owner given twice" },
                { "tcp:80 a b c d e f g h i", -EINVAL, "too many words" },
        };
        struct policyfile_rule r;
        char why[256];

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                why[0] = '\0';
                if (parse(bad[i].line, &r, why, sizeof(why)) != bad[i].error || !strstr(why, bad[i].reason))
                        fail_msg("'%s': expected %d with '%s', got '%s'", bad[i].line, bad[i].error, bad[i].reason,
                                 why);
        }
}

static int count(const struct policyfile_rule *rule, void *userdata) {
        unsigned *lines = userdata;

        lines[++lines[0]] = rule->line;
        return 0;
}

/* A file: rules with their lines; the first mistake stops it, naming its line. */
static void test_read(void **state) {
        static const char good[] = "# web\n\ntcp:80 user root reserve\nudp:53 user root # dns\ntcp:443 user root";
        char bad[] = "tcp:80 user root\ntcp:81 user root\ntcp:82 usr root\n";
        char nul[] = "tcp:80 user root\ntcp:81 user\0root\n";
        char longline[POLICYFILE_LINE_MAX + 10];
        unsigned lines[8] = { 0 };
        char why[300];
        FILE *f;

        f = fmemopen((void *) good, strlen(good), "r");
        assert_int_equal(policyfile_read(f, count, lines, why, sizeof(why)), 0);
        fclose(f);
        assert_int_equal(lines[0], 3);
        assert_int_equal(lines[1], 3);
        assert_int_equal(lines[2], 4);
        assert_int_equal(lines[3], 5);

        f = fmemopen(bad, strlen(bad), "r");
        assert_int_equal(policyfile_read(f, count, lines, why, sizeof(why)), -EINVAL);
        fclose(f);
        assert_true(strncmp(why, "3: ", 3) == 0);

        f = fmemopen(nul, sizeof(nul) - 1, "r");
        assert_int_equal(policyfile_read(f, count, lines, why, sizeof(why)), -EINVAL);
        fclose(f);
        assert_non_null(strstr(why, "2: a NUL byte"));

        memset(longline, '#', sizeof(longline));
        f = fmemopen(longline, sizeof(longline), "r");
        assert_int_equal(policyfile_read(f, count, lines, why, sizeof(why)), -EINVAL);
        fclose(f);
        assert_non_null(strstr(why, "1: line longer than"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_rules),
                cmocka_unit_test(test_mistakes),
                cmocka_unit_test(test_read),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
