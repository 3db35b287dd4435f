/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of common/timespan.c: each unit, parts in a row, a bare
 * number of seconds, and what is refused (signs, spaces, a unit alone, a
 * part without its unit after others, unknown units, past a century),
 * nothing written on failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>

#include "timespan.h"

static uint64_t span(const char *s) {
        uint64_t v = 0;

        assert_int_equal(timespan_parse(s, &v), 0);
        return v;
}

static void test_units(void **state) {
        assert_int_equal(span("0"), 0);
        assert_int_equal(span("45"), 45);
        assert_int_equal(span("45s"), 45);
        assert_int_equal(span("30m"), 1800);
        assert_int_equal(span("30min"), 1800);
        assert_int_equal(span("12h"), 12 * 3600);
        assert_int_equal(span("90d"), 90 * 86400);
        assert_int_equal(span("2w"), 14 * 86400);
        assert_int_equal(span("1h30m"), 5400);
        assert_int_equal(span("1d12h30min15s"), 86400 + 12 * 3600 + 1800 + 15);
        assert_int_equal(span("0d"), 0);
        assert_int_equal(span("007m"), 420);
}

static void test_refused(void **state) {
        static const char *const bad[] = { "", "-1h", "+1h", "1 h", " 1h", "1h ", "h", "1x", "1hh", "1h30",
                                           "1.5h", "1H", "1y", "infinity", "1hm" };
        uint64_t v = 42;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (timespan_parse(bad[i], &v) != -EINVAL)
                        fail_msg("'%s' was not refused", bad[i]);
        assert_int_equal(timespan_parse("36600d", &v), 0);              /* a century */
        assert_int_equal(timespan_parse("36601d", &v), -ERANGE);
        assert_int_equal(timespan_parse("99999999999999999999999s", &v), -ERANGE);
        assert_int_equal(timespan_parse("36600d1s", &v), -ERANGE);
        v = 42;
        assert_int_equal(timespan_parse("1x", &v), -EINVAL);
        assert_int_equal(v, 42);                /* untouched on failure */
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_units),
                cmocka_unit_test(test_refused),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
