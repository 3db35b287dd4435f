/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of client/portctl/cli.c: the one JSON string writer (valid
 * UTF-8 passes through; invalid bytes, overlongs, surrogates and truncated
 * sequences become \ufffd; quotes, backslashes, control characters and DEL
 * are escaped), null for NULL, the canonical-or-raw endpoint text, decimal
 * ids, the exit statuses of an exec that failed, and the failures' JSON
 * error objects under --json.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_json_ascii),
                cmocka_unit_test(test_json_valid_utf8),
                cmocka_unit_test(test_json_invalid_utf8),
                cmocka_unit_test(test_canonical_endpoint),
                cmocka_unit_test(test_parse_id),
                cmocka_unit_test(test_exec_failed),
                cmocka_unit_test(test_json_errors),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
