/* SPDX-License-Identifier: MIT */
/*
 * portctl why ENDPOINT [--as USER]: why bind() of an endpoint fails, from
 * what the kernel says now. The sockets on the port come from sock_diag
 * netlink (inet_diag_req_v2 dumps for AF_INET and AF_INET6 of the endpoint's
 * transport), their owners from /proc/PID/fd, the rules from the per-netns
 * sysctls, and the effect of SO_REUSEADDR / SO_REUSEPORT from probe binds of
 * throwaway sockets (bound, never listening, closed at once; as the --as user
 * when we are root). With brokerd reachable, its lease for the endpoint
 * (pb_conn_status) is part of the evidence. The result is one verdict, the
 * evidence lines and the fix, as text or as one JSON object.
 *
 * This file holds the command: its arguments, the user in question, the
 * sysctls, brokerd's lease, and the order of the steps in why-*.c (why.h).
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "endpoint.h"
#include "portbroker.h"
#include "why.h"

static long sysctl_long(const char *path, long dflt) {
        char buf[64];

        if (why_read_file(path, buf, sizeof(buf)) <= 0)
                return dflt;
        return strtol(buf, NULL, 10);
}

/* The sysctls of the network namespace that decide who may bind what. */
static void read_sysctls(struct why *w) {
        char buf[64];

        w->unpriv_start = sysctl_long("/proc/sys/net/ipv4/ip_unprivileged_port_start", 1024);
        w->bindv6only = sysctl_long("/proc/sys/net/ipv6/bindv6only", 0);
        w->tw_reuse = sysctl_long("/proc/sys/net/ipv4/tcp_tw_reuse", -1);
        w->range_lo = 32768;
        w->range_hi = 60999;
        if (why_read_file("/proc/sys/net/ipv4/ip_local_port_range", buf, sizeof(buf)) > 0)
                sscanf(buf, "%ld %ld", &w->range_lo, &w->range_hi);
        if (why_read_file("/proc/sys/net/ipv4/ip_local_reserved_ports", w->reserved, sizeof(w->reserved)) < 0)
                w->reserved[0] = '\0';
}

static int take_lease(const pb_lease *lease, void *userdata) {
        struct why *w = userdata;

        w->lease = *lease;
        w->broker = 1;
        return 0;
}

static void ask_broker(struct why *w) {
        pb_conn *c;
        pb_error err;

        w->broker = -1;
        if (pb_connect(arg_socket, &c, &err) < 0) {
                snprintf(w->broker_msg, sizeof(w->broker_msg), "%s", err.message);
                return;
        }
        w->broker = 0;
        if (pb_conn_status(c, w->canon, take_lease, w, &err) < 0) {
                w->broker = -1;
                snprintf(w->broker_msg, sizeof(w->broker_msg), "brokerd did not say: %s", err.message);
        } else {
                pb_info info;

                if (pb_conn_info(c, &info, NULL) >= 0) {
                        w->guard = info.guard;
                        snprintf(w->guard_state, sizeof(w->guard_state), "%s", info.guard_state);
                }
        }
        pb_disconnect(c);
}

/* Whose bind() is in question: --as USER (name or uid), else ourselves. Returns 0 or the exit status. */
static int resolve_user(struct why *w, const char *as) {
        const char *name;
        struct passwd *pw;

        if (!as) {
                name = user_name(w->uid);
                if (name)
                        snprintf(w->user, sizeof(w->user), "%s", name);
                else
                        snprintf(w->user, sizeof(w->user), "%u", (unsigned) w->uid);
                return 0;
        }
        if (parse_user(as, &w->uid) < 0)
                return cli_fail(ENOENT, "why: no such user '%s'", as);
        pw = getpwuid(w->uid);
        w->gid = pw ? pw->pw_gid : (gid_t) w->uid;
        snprintf(w->user, sizeof(w->user), "%s", pw ? pw->pw_name : as);
        w->as_given = true;
        return 0;
}

static int parse_why_args(int argc, char **argv, struct why *w) {
        const char *as = NULL;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--as") == 0) {
                        if (i + 1 >= argc || !argv[i + 1][0])
                                return cli_usage("why: --as needs a user");
                        as = argv[++i];
                } else if (strncmp(argv[i], "--as=", 5) == 0 && argv[i][5])
                        as = argv[i] + 5;
                else if (argv[i][0] == '-' && argv[i][1])
                        return cli_usage("why: unknown option '%s'", argv[i]);
                else if (w->text)
                        return cli_usage("why: one endpoint at a time");
                else
                        w->text = argv[i];
        }
        if (!w->text)
                return cli_usage("why: no endpoint given");
        r = cli_check_endpoint(w->text, false);
        if (r != 0)
                return r;
        endpoint_parse(w->text, &w->ep);
        if (endpoint_is_unix(&w->ep))
                return cli_usage("why: ports only; for %s, see `portctl status` and `ls -l` of the path", w->text);
        endpoint_format(&w->ep, w->canon);
        return resolve_user(w, as);
}

/* Lists the sockets and their holders, probes, asks brokerd. Returns 0 or the exit status. */
static int gather(struct why *w) {
        int r;

        read_sysctls(w);
        r = why_list_sockets(w);
        if (r < 0) {
                return cli_fail(-r, "why: cannot list the sockets (sock_diag netlink): %m");
        }
        r = why_scan_holders(w);
        if (r < 0) {
                return cli_fail(-r, "why: cannot read /proc: %m");
        }
        why_run_probes(w);
        ask_broker(w);
        return 0;
}

static void why_free(struct why *w) {
        for (size_t i = 0; i < w->nev; i++)
                free(w->ev[i]);
        free(w->ev);
        free(w->socks);
        free(w->holders);
        free(w->summary);
        free(w->fix);
}

int cmd_why(int argc, char **argv) {
        struct why w = { .uid = geteuid(), .gid = getegid(), .broker = -1, .guard = -1 };
        int r;

        r = parse_why_args(argc, argv, &w);
        if (r == 0)
                r = gather(&w);
        if (r == 0) {
                why_decide(&w);
                if (w.oom || !w.summary || !w.fix)
                        r = cli_fail(ENOMEM, "why: %m");
                else if (arg_json)
                        why_print_json(&w);
                else
                        why_print_text(&w);
        }
        why_free(&w);
        return r;
}
