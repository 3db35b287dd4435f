/* SPDX-License-Identifier: MIT */
/*
 * Log output: the journal with fields PORTBROKER_EVENT, ENDPOINT, PORT,
 * PEER_UID and PEER_PID when stderr is connected to it, stderr otherwise.
 * Lines above the level ($BROKERD_LOG_LEVEL, LOG_INFO by default) cost
 * nothing: repeat grants are LOG_DEBUG, and the audit trail keeps them.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <systemd/sd-journal.h>

static bool log_to_journal, log_to_syslog;
static int log_max_level = LOG_INFO;

int log_parse_level(const char *s) {
        static const char *const names[] = { "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug" };

        if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
                return s[0] - '0';
        for (int i = 0; i < 8; i++)
                if (strcmp(s, names[i]) == 0)
                        return i;
        return -EINVAL;
}

void log_set_max_level(int level) {
        log_max_level = level;
}

/* $BROKERD_LOG_LEVEL: 0-7 or a syslog priority name; anything else keeps LOG_INFO. */
static void read_level(void) {
        const char *e = getenv("BROKERD_LOG_LEVEL");
        int level = e ? log_parse_level(e) : -EINVAL;

        if (level >= 0)
                log_max_level = level;
}

/* True when stderr is the journal stream systemd gave us (JOURNAL_STREAM=dev:ino). */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == dev && st.st_ino == ino;
}

void log_setup(void) {
        log_to_journal = stderr_is_journal();
        read_level();
}

void log_setup_detached(void) {
        log_to_journal = access("/run/systemd/journal/socket", F_OK) == 0;
        log_to_syslog = !log_to_journal;
        if (log_to_syslog)
                openlog("brokerd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

size_t log_format_fields(char *buf, size_t size, const struct log_fields *f) {
        size_t n = 0;

        buf[0] = '\0';
        if (f->endpoint)
                n += (size_t) snprintf(buf + n, size - n, " endpoint=%s", f->endpoint);
        if (f->uid >= 0 && n < size)
                n += (size_t) snprintf(buf + n, size - n, " uid=%ld", f->uid);
        if (f->pid >= 0 && n < size)
                n += (size_t) snprintf(buf + n, size - n, " pid=%ld", f->pid);
        return n < size ? n : size - 1;
}

size_t log_journal_fields(char buf[static LOG_JOURNAL_FIELDS][LOG_JOURNAL_FIELD_MAX], int priority, const char *event,
                          const struct log_fields *f, const char *text) {
        size_t k = 0;

        snprintf(buf[k++], LOG_JOURNAL_FIELD_MAX, "MESSAGE=%s: %s", event, text);
        snprintf(buf[k++], LOG_JOURNAL_FIELD_MAX, "PRIORITY=%d", priority);
        snprintf(buf[k++], LOG_JOURNAL_FIELD_MAX, "PORTBROKER_EVENT=%s", event);
        if (f->endpoint)
                snprintf(buf[k++], LOG_JOURNAL_FIELD_MAX, "ENDPOINT=%s", f->endpoint);
        if (f->port)
                snprintf(buf[k++], LOG_JOURNAL_FIELD_MAX, "PORT=%u", f->port);
        if (f->uid >= 0)
                snprintf(buf[k++], LOG_JOURNAL_FIELD_MAX, "PEER_UID=%ld", f->uid);
        if (f->pid >= 0)
                snprintf(buf[k++], LOG_JOURNAL_FIELD_MAX, "PEER_PID=%ld", f->pid);
        return k;
}

static void journal_event(int priority, const char *event, const struct log_fields *f, const char *text) {
        char buf[LOG_JOURNAL_FIELDS][LOG_JOURNAL_FIELD_MAX];
        struct iovec iov[LOG_JOURNAL_FIELDS];
        size_t k = log_journal_fields(buf, priority, event, f, text);

        for (size_t i = 0; i < k; i++)
                iov[i] = (struct iovec) { .iov_base = buf[i], .iov_len = strlen(buf[i]) };
        sd_journal_sendv(iov, (int) k);
}

void log_event(int priority, const char *event, const struct log_fields *f, const char *fmt, ...) {
        char text[512], fields[256];
        va_list ap;

        if (priority > log_max_level)
                return;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);

        if (log_to_journal) {
                journal_event(priority, event, f, text);
                return;
        }
        log_format_fields(fields, sizeof(fields), f);
        if (log_to_syslog)
                syslog(priority, "event=%s%s: %s", event, fields, text);
        else
                fprintf(stderr, "brokerd: event=%s%s: %s\n", event, fields, text);
}

void log_msg(int priority, const char *fmt, ...) {
        char text[512];
        va_list ap;

        if (priority > log_max_level)
                return;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);

        if (log_to_journal)
                sd_journal_send("MESSAGE=%s", text, "PRIORITY=%d", priority, NULL);
        else if (log_to_syslog)
                syslog(priority, "%s", text);
        else
                fprintf(stderr, "brokerd: %s\n", text);
}
