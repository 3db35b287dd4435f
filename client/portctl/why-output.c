/* SPDX-License-Identifier: MIT */
/*
 * portctl why: printing the result. Text is the verdict and summary, one
 * indented line per piece of evidence and the fix; JSON is one object with
 * the same plus socket counts, probe results, the holding processes and
 * brokerd's lease, all strings through cli.c's json_string.
 */
#include <inttypes.h>
#include <stdio.h>

#include "cli.h"
#include "why.h"

void why_print_text(const struct why *w) {
        printf("%s: %s\n", w->verdict, w->summary);
        for (size_t i = 0; i < w->nev; i++)
                printf("  %s\n", w->ev[i]);
        printf("Fix: %s\n", w->fix);
}

static void json_socket_counts(const struct why *w) {
        unsigned listen = 0, time_wait = 0, closing = 0, conn = 0;

        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                if (!s->relevant)
                        continue;
                if (why_is_listener(w, s))
                        listen++;
                else if (s->state == ST_TIME_WAIT)
                        time_wait++;
                else if (why_is_closing(s->state))
                        closing++;
                else if (why_is_connection(s->state))
                        conn++;
        }
        printf(",\"uid\":%u,\"sockets\":{\"listen\":%u,\"time_wait\":%u,\"closing\":%u,\"connections\":%u}",
               (unsigned) w->uid, listen, time_wait, closing, conn);
}

static void json_probes(const struct why *w) {
        static const char *const probe_keys[3] = { "bind", "bind_reuseaddr", "bind_reuseport" };

        fputs(",\"probe\":{", stdout);
        for (int i = 0; i < 3; i++) {
                printf("%s\"%s\":", i ? "," : "", probe_keys[i]);
                if (w->probe[i] < 0)
                        fputs("null", stdout);
                else
                        json_string(stdout, why_errno_name(w->probe[i]));
        }
        printf("},\"probe_as_user\":%s", w->probe_as_user ? "true" : "false");
}

static bool holds_relevant(const struct why *w, const struct why_holder *h) {
        for (size_t j = 0; j < w->nsocks; j++)
                if (w->socks[j].inode == h->inode && w->socks[j].relevant)
                        return true;
        return false;
}

static void json_processes(const struct why *w) {
        bool first = true;

        fputs(",\"processes\":[", stdout);
        for (size_t i = 0; i < w->nholders; i++) {
                const struct why_holder *h = &w->holders[i];
                struct why_proc pi;

                if (!holds_relevant(w, h) || why_proc_info(h->pid, &pi) < 0)
                        continue;
                printf("%s{\"pid\":%d,\"ppid\":%d,\"fd\":%d,\"inode\":%u,\"uid\":%u,\"comm\":", first ? "" : ",",
                       (int) pi.pid, (int) pi.ppid, h->fd, h->inode, (unsigned) pi.uid);
                first = false;
                json_string(stdout, pi.comm);
                fputs(",\"command\":", stdout);
                json_string(stdout, pi.cmd);
                fputs(",\"unit\":", stdout);
                json_string_or_null(stdout, pi.unit[0] ? pi.unit : NULL);
                fputs(",\"cgroup\":", stdout);
                json_string(stdout, pi.cgroup);
                putchar('}');
        }
        putchar(']');
}

static void json_lease(const struct why *w) {
        fputs(",\"lease\":", stdout);
        if (w->broker != 1) {
                fputs("null", stdout);
                return;
        }
        printf("{\"id\":%" PRIu64 ",\"endpoint\":", w->lease.id);
        json_string(stdout, w->lease.endpoint);
        printf(",\"owner_uid\":%u,\"since\":%" PRId64 ",\"holders\":%u,\"queued\":%d,\"backlog\":%u,"
               "\"bound\":%s}", (unsigned) w->lease.owner_uid, w->lease.since, w->lease.holders,
               w->lease.queued, w->lease.backlog, w->lease.bound ? "true" : "false");
}

void why_print_json(const struct why *w) {
        fputs("{\"endpoint\":", stdout);
        json_string(stdout, w->canon);
        fputs(",\"verdict\":", stdout);
        json_string(stdout, w->verdict);
        fputs(",\"summary\":", stdout);
        json_string(stdout, w->summary);
        fputs(",\"evidence\":[", stdout);
        for (size_t i = 0; i < w->nev; i++) {
                if (i)
                        putchar(',');
                json_string(stdout, w->ev[i]);
        }
        fputs("],\"fix\":", stdout);
        json_string(stdout, w->fix);
        json_socket_counts(w);
        json_probes(w);
        json_processes(w);
        json_lease(w);
        fputs(",\"guard\":", stdout);
        if (w->guard < 0)
                fputs("null", stdout);
        else {
                printf("{\"on\":%s,\"state\":", w->guard ? "true" : "false");
                json_string(stdout, w->guard_state);
                putchar('}');
        }
        printf(",\"broker\":%s}\n", w->broker < 0 ? "false" : "true");
}
