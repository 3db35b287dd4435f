/* SPDX-License-Identifier: MIT */
/*
 * Log output: the journal with fields PORTBROKER_EVENT, ENDPOINT, PORT,
 * PEER_UID and PEER_PID when stderr is connected to it, stderr otherwise.
 * Lines above the level ($BROKERD_LOG_LEVEL, LOG_INFO by default) cost
 * nothing: repeat grants are LOG_DEBUG, and the audit trail keeps them.
 */
#include "log.h"

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

/* $BROKERD_LOG_LEVEL: 0-7 or a syslog priority name; anything else keeps LOG_INFO. */
static void read_level(void) {
        static const char *const names[] = { "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug" };
        const char *e = getenv("BROKERD_LOG_LEVEL");

        if (!e)
                return;
        if (e[0] >= '0' && e[0] <= '7' && e[1] == '\0') {
                log_max_level = e[0] - '0';
                return;
        }
        for (int i = 0; i < 8; i++)
                if (strcmp(e, names[i]) == 0)
                        log_max_level = i;
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

void log_event(int priority, const char *event, const struct log_fields *f, const char *fmt, ...) {
        char text[512], fields[256] = "";
        int n = 0;
        va_list ap;

        if (priority > log_max_level)
                return;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);

        if (log_to_journal) {
                char buf[7][600];
                struct iovec iov[7];
                int k = 0;

                snprintf(buf[k++], sizeof(buf[0]), "MESSAGE=%s: %s", event, text);
                snprintf(buf[k++], sizeof(buf[0]), "PRIORITY=%d", priority);
                snprintf(buf[k++], sizeof(buf[0]), "PORTBROKER_EVENT=%s", event);
                if (f->endpoint)
                        snprintf(buf[k++], sizeof(buf[0]), "ENDPOINT=%s", f->endpoint);
                if (f->port)
                        snprintf(buf[k++], sizeof(buf[0]), "PORT=%u", f->port);
                if (f->uid >= 0)
                        snprintf(buf[k++], sizeof(buf[0]), "PEER_UID=%ld", f->uid);
                if (f->pid >= 0)
                        snprintf(buf[k++], sizeof(buf[0]), "PEER_PID=%ld", f->pid);
                for (int i = 0; i < k; i++)
                        iov[i] = (struct iovec) { .iov_base = buf[i], .iov_len = strlen(buf[i]) };
                sd_journal_sendv(iov, k);
                return;
        }
        if (f->endpoint)
                n += snprintf(fields + n, sizeof(fields) - (size_t) n, " endpoint=%s", f->endpoint);
        if (f->uid >= 0 && n < (int) sizeof(fields))
                n += snprintf(fields + n, sizeof(fields) - (size_t) n, " uid=%ld", f->uid);
        if (f->pid >= 0 && n < (int) sizeof(fields))
                snprintf(fields + n, sizeof(fields) - (size_t) n, " pid=%ld", f->pid);
        if (log_to_syslog) {
                syslog(priority, "event=%s%s: %s", event, fields, text);
                return;
        }

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
