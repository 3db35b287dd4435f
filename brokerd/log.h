/* SPDX-License-Identifier: MIT */
/*
 * Logging: one line per event. Under systemd (JOURNAL_STREAM names our
 * stderr) lines go to the journal with structured fields; otherwise to
 * stderr as `brokerd: event=NAME key=value...: text`, or, once detached,
 * to the journal or syslog.
 */
#pragma once

#include <stdbool.h>
#include <syslog.h>
#include <sys/types.h>

struct log_fields {
        const char *endpoint;           /* canonical endpoint text or NULL */
        unsigned port;                  /* 0: none */
        long uid;                       /* peer uid, -1: none */
        long pid;                       /* peer pid, -1: none */
};

#define LOG_FIELDS_NONE ((struct log_fields) { .uid = -1, .pid = -1 })

#define LOG_JOURNAL_FIELDS 7            /* MESSAGE, PRIORITY, PORTBROKER_EVENT and one per field */
#define LOG_JOURNAL_FIELD_MAX 600

/* Picks journal or stderr and the most verbose priority written, LOG_INFO
 * unless $BROKERD_LOG_LEVEL says otherwise (a number 0-7 or a name: err,
 * warning, notice, info, debug); call once at start. */
void log_setup(void);

/* A level from its number (0-7) or syslog name (emerg ... debug). Returns it or -EINVAL. */
int log_parse_level(const char *s);

/* The least urgent priority that is still written (--log-level). */
void log_set_max_level(int level);

/* After detaching from the terminal: the journal if it runs, else syslog. */
void log_setup_detached(void);

/* Logs event with fields and a printf-style message at priority; lines less
 * urgent than the level are dropped before they are formatted. */
void log_event(int priority, const char *event, const struct log_fields *f, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Writes f as " endpoint=E uid=U pid=P" (each only when set) into buf, cut
 * to fit. Returns the length written. */
size_t log_format_fields(char *buf, size_t size, const struct log_fields *f);

/* Fills buf with the journal fields of an event, "NAME=value" each, cut to
 * fit. Returns how many. */
size_t log_journal_fields(char buf[static LOG_JOURNAL_FIELDS][LOG_JOURNAL_FIELD_MAX], int priority, const char *event,
                          const struct log_fields *f, const char *text);

/* Logs a line that is not an event (start-up errors, notices). */
void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
