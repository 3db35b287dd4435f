/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of brokerd/log.c: level names and numbers, the key=value
 * fields of a stderr/syslog line, the journal fields of an event, and that
 * a line less urgent than the level is not written at all.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fd-util.h"
#include "log.h"

static void test_levels(void **state) {
        assert_int_equal(log_parse_level("err"), LOG_ERR);
        assert_int_equal(log_parse_level("warning"), LOG_WARNING);
        assert_int_equal(log_parse_level("info"), LOG_INFO);
        assert_int_equal(log_parse_level("debug"), LOG_DEBUG);
        assert_int_equal(log_parse_level("0"), 0);
        assert_int_equal(log_parse_level("7"), 7);
        assert_int_equal(log_parse_level("8"), -EINVAL);
        assert_int_equal(log_parse_level("07"), -EINVAL);
        assert_int_equal(log_parse_level("INFO"), -EINVAL);
        assert_int_equal(log_parse_level(""), -EINVAL);
}

static void test_fields(void **state) {
        struct log_fields f = { .endpoint = "tcp:[::]:8080", .port = 8080, .uid = 4242, .pid = 77 };
        char buf[256], tiny[12];

        assert_int_equal(log_format_fields(buf, sizeof(buf), &f), strlen(" endpoint=tcp:[::]:8080 uid=4242 pid=77"));
        assert_string_equal(buf, " endpoint=tcp:[::]:8080 uid=4242 pid=77");
        log_format_fields(buf, sizeof(buf), &LOG_FIELDS_NONE);
        assert_string_equal(buf, "");
        f.endpoint = NULL;
        f.pid = -1;
        log_format_fields(buf, sizeof(buf), &f);
        assert_string_equal(buf, " uid=4242");
        f.endpoint = "tcp:[::]:8080";
        assert_int_equal(log_format_fields(tiny, sizeof(tiny), &f), sizeof(tiny) - 1);  /* cut, terminated */
        assert_string_equal(tiny, " endpoint=t");
}

static void test_journal_fields(void **state) {
        struct log_fields f = { .endpoint = "udp:5353", .port = 5353, .uid = 0, .pid = -1 };
        char buf[LOG_JOURNAL_FIELDS][LOG_JOURNAL_FIELD_MAX];
        size_t k = log_journal_fields(buf, LOG_NOTICE, "deny", &f, "no rule lets uid 0 get udp:5353");

        assert_int_equal(k, 6);
        assert_string_equal(buf[0], "MESSAGE=deny: no rule lets uid 0 get udp:5353");
        assert_string_equal(buf[1], "PRIORITY=5");
        assert_string_equal(buf[2], "PORTBROKER_EVENT=deny");
        assert_string_equal(buf[3], "ENDPOINT=udp:5353");
        assert_string_equal(buf[4], "PORT=5353");
        assert_string_equal(buf[5], "PEER_UID=0");   /* uid 0 is a uid; -1 is none */
        assert_int_equal(log_journal_fields(buf, LOG_INFO, "ready", &LOG_FIELDS_NONE, "x"), 3);
}

/* What log_event() writes to stderr (the test's own, redirected to a pipe). */
static void capture(char *out, size_t size, int priority) {
        int pipefd[2], saved_fd = dup(STDERR_FILENO);
        struct log_fields f = { .endpoint = "tcp:8080", .uid = 1, .pid = 2 };
        ssize_t n;

        assert_int_equal(pipe2(pipefd, O_CLOEXEC | O_NONBLOCK), 0);
        assert_true(dup2(pipefd[1], STDERR_FILENO) >= 0);
        log_event(priority, "grant", &f, "lease %d handed out", 3);
        fflush(stderr);
        assert_true(dup2(saved_fd, STDERR_FILENO) >= 0);
        safe_close(saved_fd);
        safe_close(pipefd[1]);
        n = read(pipefd[0], out, size - 1);
        out[n > 0 ? n : 0] = '\0';
        safe_close(pipefd[0]);
}

static void test_level_filters(void **state) {
        char out[512];

        unsetenv("JOURNAL_STREAM");
        unsetenv("BROKERD_LOG_LEVEL");
        log_setup();                            /* stderr, info */
        capture(out, sizeof(out), LOG_INFO);
        assert_string_equal(out, "brokerd: event=grant endpoint=tcp:8080 uid=1 pid=2: lease 3 handed out\n");
        capture(out, sizeof(out), LOG_DEBUG);
        assert_string_equal(out, "");
        log_set_max_level(LOG_DEBUG);
        capture(out, sizeof(out), LOG_DEBUG);
        assert_string_equal(out, "brokerd: event=grant endpoint=tcp:8080 uid=1 pid=2: lease 3 handed out\n");
        setenv("BROKERD_LOG_LEVEL", "warning", 1);
        log_setup();
        capture(out, sizeof(out), LOG_INFO);
        assert_string_equal(out, "");
        capture(out, sizeof(out), LOG_WARNING);
        assert_true(strstr(out, "event=grant") != NULL);
        unsetenv("BROKERD_LOG_LEVEL");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_levels),
                cmocka_unit_test(test_fields),
                cmocka_unit_test(test_journal_fields),
                cmocka_unit_test(test_level_filters),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
