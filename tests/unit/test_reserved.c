/* SPDX-License-Identifier: MIT */
/* reserved.c: the text of net.ipv4.ip_local_reserved_ports, both ways. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "reserved.h"

static void test_parse_and_format(void **state) {
        static struct port_set s;
        char buf[64];

        assert_int_equal(reserved_parse("80,8000-8003,65535\n", &s), 0);
        assert_true(port_set_has(&s, 80) && port_set_has(&s, 8000) && port_set_has(&s, 8003));
        assert_true(port_set_has(&s, 65535));
        assert_false(port_set_has(&s, 79) || port_set_has(&s, 8004) || port_set_has(&s, 65536));
        assert_int_equal(reserved_format(&s, buf, sizeof(buf)), strlen("80,8000-8003,65535"));
        assert_string_equal(buf, "80,8000-8003,65535");

        port_set_put(&s, 8001, false);
        port_set_put(&s, 81, true);
        reserved_format(&s, buf, sizeof(buf));
        assert_string_equal(buf, "80-81,8000,8002-8003,65535");

        assert_int_equal(reserved_parse("", &s), 0);            /* the kernel's empty list */
        assert_int_equal(reserved_format(&s, buf, sizeof(buf)), 0);
        assert_string_equal(buf, "");
}

static void test_parse_refuses(void **state) {
        static const char *const bad[] = { "x", "80,", "-5", "9-8", "65536", "1,,2", "80 81", "1-" };
        static struct port_set s;

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_int_equal(reserved_parse(bad[i], &s), -EINVAL);
}

static void test_format_cut_reports_whole_length(void **state) {
        static struct port_set s;
        char small[8];
        size_t need;

        for (unsigned p = 1; p < 65536; p += 2)
                port_set_put(&s, p, true);                      /* no two adjacent: the longest text */
        need = reserved_format(&s, small, sizeof(small));
        assert_true(need > 100000);
        assert_int_equal(strlen(small), sizeof(small) - 1);
        {
                char *all = malloc(need + 1);
                static struct port_set back;

                assert_non_null(all);
                assert_int_equal(reserved_format(&s, all, need + 1), need);
                assert_int_equal(reserved_parse(all, &back), 0);
                assert_memory_equal(&back, &s, sizeof(s));
                free(all);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_and_format),
                cmocka_unit_test(test_parse_refuses),
                cmocka_unit_test(test_format_cut_reports_whole_length),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
