/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of client/portctl/cli.c: the one JSON string writer (valid
 * UTF-8 passes through; invalid bytes, overlongs, surrogates and truncated
 * sequences become \ufffd; quotes, backslashes, control characters and DEL
 * are escaped), null for NULL, the canonical-or-raw endpoint text, decimal
 * ids, the exit statuses of an exec that failed, the failures' JSON error
 * objects under --json, the times an admin types (local, UTC, offsets,
 * relative, days; what format_time() writes reads back) and options
 * taking a value.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* json_string(s) as text; the caller frees it. */
static char *json(const char *s) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        assert_non_null(f);
        json_string_or_null(f, s);
        assert_int_equal(fclose(f), 0);
        return buf;
}

static void check_json(const char *in, const char *want) {
        char *got = json(in);

        assert_string_equal(got, want);
        free(got);
}

static void test_json_ascii(void **state) {
        check_json("", "\"\"");
        check_json("plain text 123", "\"plain text 123\"");
        check_json("a\"b\\c", "\"a\\\"b\\\\c\"");
        check_json("line\nnext\ttab", "\"line\\nnext\\ttab\"");
        check_json("\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\"");
        check_json(NULL, "null");
}

static void test_json_valid_utf8(void **state) {
        check_json("caf\xc3\xa9", "\"caf\xc3\xa9\"");                          /* é */
        check_json("\xe2\x82\xac 5", "\"\xe2\x82\xac 5\"");                    /* € */
        check_json("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\"");                /* U+1F600 */
        check_json("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");                /* U+10FFFF */
}

static void test_json_invalid_utf8(void **state) {
        check_json("\xff", "\"\\ufffd\"");
        check_json("a\xc3", "\"a\\ufffd\"");                                   /* truncated at the end */
        check_json("\xc3(", "\"\\ufffd(\"");                                   /* bad continuation */
        check_json("\xc0\x80", "\"\\ufffd\\ufffd\"");                           /* overlong NUL */
        check_json("\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\"");                /* overlong '/' */
        check_json("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");                /* surrogate U+D800 */
        check_json("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");     /* above U+10FFFF */
        check_json("\x80x", "\"\\ufffdx\"");                                   /* lone continuation */
}

static void test_canonical_endpoint(void **state) {
        char buf[PB_ENDPOINT_STRLEN];

        assert_string_equal(canonical_endpoint("8080", false, buf), "tcp:[::]:8080");
        assert_string_equal(canonical_endpoint("udp:127.0.0.1:53", false, buf), "udp:127.0.0.1:53");
        assert_string_equal(canonical_endpoint("tcp:8000-8099", true, buf), "tcp:8000-8099");
        assert_string_equal(canonical_endpoint("8000-8099", false, buf), "8000-8099");   /* raw */
        assert_string_equal(canonical_endpoint("not an endpoint", true, buf), "not an endpoint");
}

static void test_parse_id(void **state) {
        uint32_t id = 7;

        assert_int_equal(parse_id("0", &id), 0);
        assert_int_equal(id, 0);
        assert_int_equal(parse_id("4294967294", &id), 0);
        assert_int_equal(id, 4294967294u);
        assert_int_equal(parse_id("4294967295", &id), -ERANGE);
        assert_int_equal(parse_id("", &id), -EINVAL);
        assert_int_equal(parse_id("-1", &id), -EINVAL);
        assert_int_equal(parse_id("12a", &id), -EINVAL);
        assert_int_equal(parse_id("12345678901", &id), -EINVAL);
        assert_int_equal(id, 4294967294u);                      /* untouched on failure */
}

static void test_exec_failed(void **state) {
        assert_int_equal(cli_exec_failed("nope", ENOENT), EXIT_NOT_FOUND);
        assert_int_equal(cli_exec_failed("nope", EACCES), EXIT_CANNOT_EXEC);
        assert_int_equal(cli_exec_failed("nope", ENOEXEC), EXIT_CANNOT_EXEC);
}

/* A failure printed under --json (or not): its exit status and what it put on stdout. */
struct printed {
        int status;
        char out[512];
};

/* Runs failure(arg) with stdout in a file (stderr in /dev/null) and returns what it printed. */
static struct printed capture(bool json, int (*failure)(const void *arg), const void *arg) {
        struct printed p = { 0 };
        int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
        FILE *tmp = tmpfile(), *null = fopen("/dev/null", "we");
        ssize_t n;

        assert_true(saved_out >= 0 && saved_err >= 0 && tmp && null);
        fflush(stdout);
        fflush(stderr);
        assert_true(dup2(fileno(tmp), STDOUT_FILENO) >= 0 && dup2(fileno(null), STDERR_FILENO) >= 0);
        arg_json = json;
        p.status = failure(arg);
        arg_json = false;
        fflush(stdout);
        fflush(stderr);
        assert_true(dup2(saved_out, STDOUT_FILENO) >= 0 && dup2(saved_err, STDERR_FILENO) >= 0);
        n = pread(fileno(tmp), p.out, sizeof(p.out) - 1, 0);
        assert_true(n >= 0);
        p.out[n] = '\0';
        close(saved_out);
        close(saved_err);
        fclose(tmp);
        fclose(null);
        return p;
}

static int fail_denied(const void *arg) {
        return cli_fail(EACCES, "no rule lets uid %d get %s", 4242, (const char *) arg);
}

static int fail_usage(const void *arg) {
        return cli_usage("invalid endpoint '%s'", (const char *) arg);
}

static int fail_pb(const void *arg) {
        return cli_fail_pb(arg);
}

static int fail_exec(const void *arg) {
        return cli_exec_failed(arg, ENOENT);
}

/* --aa given a second time. */
static int take_twice(const void *arg) {
        const char *a = "first";
        const struct cli_option opts[] = { { "--aa", &a } };
        char **argv = (char **) arg;
        int i = 1;

        return cli_take_option(8, argv, &i, "cmd", opts, 1);
}

static void check_printed(struct printed p, int status, const char *out) {
        assert_int_equal(p.status, status);
        assert_string_equal(p.out, out);
}

static void test_json_errors(void **state) {
        pb_error busy = { .code = EBUSY, .message = "tcp:[::]:80 is leased to uid 1000" };
        pb_error bare = { .code = EUSERS, .message = "" }, none = { 0 };

        check_printed(capture(true, fail_denied, "tcp:[::]:80"), EXIT_FAILURE,
                      "{\"error\":\"no rule lets uid 4242 get tcp:[::]:80\",\"code\":\"EACCES\"}\n");
        check_printed(capture(true, fail_usage, "a\"b\\c\n\x01"), EXIT_USAGE,
                      "{\"error\":\"invalid endpoint 'a\\\"b\\\\c\\n\\u0001'\",\"code\":\"usage\"}\n");
        check_printed(capture(true, fail_pb, &busy), EXIT_FAILURE,
                      "{\"error\":\"tcp:[::]:80 is leased to uid 1000\",\"code\":\"EBUSY\"}\n");
        check_printed(capture(true, fail_pb, &bare), EXIT_FAILURE,
                      "{\"error\":\"Too many users\",\"code\":\"EUSERS\"}\n");
        check_printed(capture(true, fail_pb, &none), EXIT_FAILURE,
                      "{\"error\":\"Input/output error\",\"code\":\"EIO\"}\n");
        check_printed(capture(true, fail_exec, "nope"), EXIT_NOT_FOUND,
                      "{\"error\":\"cannot run nope: No such file or directory\",\"code\":\"ENOENT\"}\n");
        /* Without --json, stdout stays empty. */
        check_printed(capture(false, fail_denied, "x"), EXIT_FAILURE, "");
        check_printed(capture(false, fail_usage, "x"), EXIT_USAGE, "");
}

/* --- times ------------------------------------------------------------------- */

static int64_t when(const char *s, int64_t now) {
        int64_t t = -42;

        if (parse_time(s, now, &t) != 0)
                fail_msg("'%s' was refused", s);
        return t;
}

/* Central European time, summer time from the last Sunday of March: no tzdata needed. */
static void test_parse_time(void **state) {
        static const char *const bad[] = {
                "", "2025-02-30", "2025-13-01", "2025-00-10", "2025-1-01", "25-01-01", "2025/01/31",
                "2025-01-31 24:00", "2025-01-31 14:5", "2025-01-31 14:05:60", "2025-01-31 14", "2025-01-31x",
                "2025-01-31 14:05 ", " 2025-01-31", "2025-01-31T14:05+25:00", "2025-01-31T14:05+01", "1969-12-31",
                "@", "@-1", "@12a", "@1234567890123", "-", "-1x", "--1h", "1h", "+", "yesterday ", "Today", "then",
        };
        const int64_t now = 1738328709;         /* 2025-01-31T14:05:09+01:00 */
        char text[64];
        int64_t t = 7;

        setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3", 1);
        tzset();
        assert_int_equal(when("2025-01-31", now), 1738278000);
        assert_int_equal(when("2025-01-31 14:05", now), 1738328700);
        assert_int_equal(when("2025-01-31 14:05:09", now), 1738328709);
        assert_int_equal(when("2025-01-31T14:05:09", now), 1738328709);
        assert_int_equal(when("2025-07-01 12:00", now), 1751364000);           /* summer time */
        assert_int_equal(when("2025-01-31T13:05:09Z", now), 1738328709);
        assert_int_equal(when("2025-01-31T14:05:09+01:00", now), 1738328709);
        assert_int_equal(when("2025-01-31T09:35:09-0330", now), 1738328709);
        assert_int_equal(when("2024-02-29", now), 1709161200);                 /* a leap day */
        assert_int_equal(when("@1700000000", now), 1700000000);
        assert_int_equal(when("@0", now), 0);
        assert_int_equal(when("now", now), now);
        assert_int_equal(when("today", now), 1738278000);
        assert_int_equal(when("yesterday", now), 1738191600);
        assert_int_equal(when("tomorrow", now), 1738364400);
        assert_int_equal(when("-1h", now), now - 3600);
        assert_int_equal(when("-30m", now), now - 1800);
        assert_int_equal(when("-2d", now), now - 2 * 86400);
        assert_int_equal(when("-1h30m", now), now - 5400);
        assert_int_equal(when("+15min", now), now + 900);
        /* What format_time() writes reads back. */
        format_time(now, text, sizeof(text));
        assert_string_equal(text, "2025-01-31T14:05:09+01:00");
        assert_int_equal(when(text, 0), now);
        format_time(1751364000, text, sizeof(text));
        assert_int_equal(when(text, 0), 1751364000);

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (parse_time(bad[i], now, &t) != -EINVAL)
                        fail_msg("'%s' was not refused", bad[i]);
        assert_int_equal(t, 7);                 /* untouched on failure */
        assert_int_equal(parse_time("-1000d", 86400, &t), -EINVAL);            /* before 1970 */
        unsetenv("TZ");
        tzset();
}

/* --name VALUE and --name=VALUE; no value, an empty one, twice: usage errors; anything else: -1. */
static void test_take_option(void **state) {
        const char *a = NULL, *b = NULL;
        const struct cli_option opts[] = { { "--aa", &a }, { "--b", &b } };
        char *argv[] = { "cmd", "--aa", "x", "--b=y", "--bb", "op", "--aa=", "--b", NULL };
        int i = 1;

        assert_int_equal(cli_take_option(8, argv, &i, "cmd", opts, 2), 0);
        assert_string_equal(a, "x");
        assert_int_equal(i, 2);
        i = 3;
        assert_int_equal(cli_take_option(8, argv, &i, "cmd", opts, 2), 0);
        assert_string_equal(b, "y");
        assert_int_equal(i, 3);
        i = 4;
        assert_int_equal(cli_take_option(8, argv, &i, "cmd", opts, 2), -1);      /* --bb is not --b */
        i = 5;
        assert_int_equal(cli_take_option(8, argv, &i, "cmd", opts, 2), -1);
        i = 1;
        assert_int_equal(capture(false, take_twice, argv).status, EXIT_USAGE);
        a = NULL;
        i = 6;
        assert_int_equal(cli_take_option(8, argv, &i, "cmd", opts, 2), EXIT_USAGE);      /* --aa= */
        b = NULL;
        i = 7;
        assert_int_equal(cli_take_option(8, argv, &i, "cmd", opts, 2), EXIT_USAGE);      /* --b, nothing after */
        assert_null(b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_json_ascii),
                cmocka_unit_test(test_json_valid_utf8),
                cmocka_unit_test(test_json_invalid_utf8),
                cmocka_unit_test(test_canonical_endpoint),
                cmocka_unit_test(test_parse_id),
                cmocka_unit_test(test_exec_failed),
                cmocka_unit_test(test_json_errors),
                cmocka_unit_test(test_parse_time),
                cmocka_unit_test(test_take_option),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
