/* SPDX-License-Identifier: MIT */
/*
 * portctl log: brokerd's audit trail, newest first: grants, denials with
 * their reason, leases created and released, rules added and removed,
 * sockets replaced, leases not bound again at start, re-executions, bad
 * messages. Filtered by time, uid, endpoint and kind; at most --limit
 * events (100 by default); a table or a JSON array. brokerd decides who
 * reads what: admins every uid's events, anyone else their own uid's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "proto.h"

#define LOG_LIMIT_DEFAULT 100           /* a screenful or two; --limit 0 for all */
#define LOG_LIMIT_MAX 100000000         /* far past what brokerd keeps (--audit-max-rows) */

struct log_args {
        const char *since, *until, *endpoint, *uid, *event, *limit;
};

/* The kinds brokerd records, for a usage error. */
static const char *kinds_text(char *buf, size_t size) {
        buf[0] = '\0';
        for (size_t i = 0; proto_event_kinds[i]; i++)
                snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", i ? ", " : "", proto_event_kinds[i]);
        return buf;
}

/* TIME of option opt (NULL: not given, 0) in µs into *ret: its second's
 * start, or with end its last µs (--until 14:05:09 takes in all of that
 * second, --until now all so far). Returns 0 or EXIT_USAGE. */
static int time_option(const char *opt, const char *text, int64_t now, bool end, int64_t *ret) {
        int64_t t;

        *ret = 0;
        if (!text)
                return 0;
        if (parse_time(text, now, &t) < 0 || t >= INT64_MAX / 1000000)
                return cli_usage("log: invalid time '%s' for %s: " TIME_SYNTAX, text, opt);
        *ret = t * 1000000 + (end ? 999999 : 0);
        return 0;
}

/* The arguments as a filter and a limit. Returns 0, or the exit status (said). */
static int parse_log_args(int argc, char **argv, pb_log_filter *f, unsigned *ret_limit) {
        struct log_args a = { 0 };
        const struct cli_option opts[] = {
                { "--since", &a.since }, { "--until", &a.until }, { "--endpoint", &a.endpoint },
                { "--uid", &a.uid }, { "--event", &a.event }, { "--limit", &a.limit },
        };
        char kinds[256];
        uint32_t limit = LOG_LIMIT_DEFAULT;
        uid_t uid;
        int r;

        for (int i = 1; i < argc; i++) {
                r = cli_take_option(argc, argv, &i, "log", opts, sizeof(opts) / sizeof(opts[0]));
                if (r > 0)
                        return r;
                if (r == 0)
                        continue;
                if (argv[i][0] == '-' && argv[i][1])
                        return cli_usage("log: unknown option '%s'", argv[i]);
                /* --since 2025-01-31 14:05 unquoted: the time came apart. */
                return cli_usage("log: unexpected argument '%s'%s", argv[i],
                                 strchr(argv[i], ':') ? " (quote a date and time: --since '2025-01-31 14:05')" : "");
        }
        r = time_option("--since", a.since, (int64_t) time(NULL), false, &f->since_us);
        if (r == 0)
                r = time_option("--until", a.until, (int64_t) time(NULL), true, &f->until_us);
        if (r != 0)
                return r;
        if (f->since_us && f->until_us && f->since_us > f->until_us)
                return cli_usage("log: --since %s is after --until %s", a.since, a.until);
        if (a.event && !proto_event_kind_known(a.event))
                return cli_usage("log: unknown event kind '%s' (one of %s)", a.event, kinds_text(kinds, sizeof(kinds)));
        if (a.limit && (parse_id(a.limit, &limit) < 0 || limit > LOG_LIMIT_MAX))
                return cli_usage("log: invalid --limit '%s': a number of events, 0 for all", a.limit);
        if (a.endpoint) {
                r = cli_check_endpoint(a.endpoint, true);
                if (r != 0)
                        return r;
        }
        if (a.uid) {
                if (parse_user(a.uid, &uid) < 0)
                        return cli_fail(ENOENT, "no such user '%s'", a.uid);
                f->has_uid = true;
                f->uid = uid;
        }
        f->endpoint = a.endpoint;
        f->event = a.event;
        *ret_limit = limit;
        return 0;
}

/* --- output -------------------------------------------------------------------- */

struct log_output {
        unsigned limit;                 /* 0: all */
        unsigned n;                     /* events printed */
        bool more;                      /* events left past the limit */
        struct table table;             /* text */
        FILE *json;                     /* --json: the array so far */
};

static void event_json(FILE *f, const pb_event *e, bool first) {
        fprintf(f, "%s{\"id\":%" PRIu64 ",\"time\":%" PRId64 ",\"time_us\":%" PRId64 ",\"event\":", first ? "" : ",",
                e->id, e->time_us / 1000000, e->time_us);
        json_string(f, e->event);
        if (e->uid == (uid_t) -1)
                fputs(",\"uid\":null,\"user\":null", f);
        else {
                fprintf(f, ",\"uid\":%u,\"user\":", (unsigned) e->uid);
                json_string_or_null(f, user_name(e->uid));
        }
        if (e->pid > 0)
                fprintf(f, ",\"pid\":%d", (int) e->pid);
        else
                fputs(",\"pid\":null", f);
        fputs(",\"endpoint\":", f);
        json_string_or_null(f, e->endpoint[0] ? e->endpoint : NULL);
        fputs(",\"detail\":", f);
        json_string_or_null(f, e->detail[0] ? e->detail : NULL);
        fputc('}', f);
}

static int event_row(struct table *t, const pb_event *e) {
        char when[64], who[128];
        int r = 0;

        format_time(e->time_us / 1000000, when, sizeof(when));
        if (e->uid == (uid_t) -1)
                snprintf(who, sizeof(who), "-");
        else
                user_text(e->uid, who, sizeof(who));
        r |= table_cell(t, "%s", when);
        r |= table_cell(t, "%s", e->event);
        r |= table_cell(t, "%s", who);
        if (e->pid > 0)
                r |= table_cell(t, "%d", (int) e->pid);
        else
                r |= table_cell(t, "-");
        r |= table_cell(t, "%s", e->endpoint[0] ? e->endpoint : "-");
        r |= table_cell(t, "%s", e->detail[0] ? e->detail : "-");
        return r;
}

/* One event, unless the limit is reached: then there are more, and the walk stops. */
static int add_event(const pb_event *e, void *userdata) {
        struct log_output *o = userdata;

        if (o->limit && o->n == o->limit) {
                o->more = true;
                return 1;
        }
        if (o->json)
                event_json(o->json, e, o->n == 0);
        else if (event_row(&o->table, e) < 0)
                return -ENOMEM;
        o->n++;
        return 0;
}

static const char *const columns[] = { "TIME", "EVENT", "USER", "PID", "ENDPOINT", "DETAIL" };

int cmd_log(int argc, char **argv) {
        struct log_output o = { .table = { .ncols = sizeof(columns) / sizeof(columns[0]) } };
        pb_log_filter f = { 0 };
        char *json = NULL;
        size_t json_size = 0;
        pb_conn *c;
        pb_error err;
        int r;

        r = parse_log_args(argc, argv, &f, &o.limit);
        if (r != 0)
                return r;
        if (arg_json) {
                o.json = open_memstream(&json, &json_size);
                if (!o.json)
                        return cli_fail(ENOMEM, "%m");
        }
        for (size_t i = 0; !arg_json && i < o.table.ncols && r == 0; i++)
                r = table_cell(&o.table, "%s", columns[i]);
        if (r == 0)
                r = cli_connect(&c);
        else
                r = cli_fail(ENOMEM, "%m");
        if (r == 0) {
                /* One more than the limit: whether there are more, to say so. */
                r = pb_conn_log(c, &f, o.limit ? o.limit + 1 : 0, add_event, &o, &err);
                pb_disconnect(c);
                r = r < 0 ? cli_fail_pb(&err) : 0;
        }
        if (o.json && fclose(o.json) != 0 && r == 0)
                r = cli_fail(ENOMEM, "%m");
        /* The whole output or none: a failure half-way prints only the error. */
        if (r == 0 && arg_json)
                printf("[%s]\n", json);
        else if (r == 0) {
                table_print(&o.table);
                if (o.more)
                        printf("(the newest %u events; --limit N for more, --limit 0 for all)\n", o.limit);
        }
        free(json);
        table_free(&o.table);
        return r;
}
