/* SPDX-License-Identifier: MIT */
/*
 * portctl get, release and status: the lease commands. `get` acquires
 * listening sockets and either prints the leases or execs a command with
 * them passed the way systemd socket activation does (fds 3..,
 * LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), watching for a while that it
 * accepts on them; `release` ends a lease; `status` lists leases as a
 * table or JSON, naming a TCP listener whose queue nobody accepts from.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "cli.h"
#include "endpoint.h"
#include "fd-util.h"
#include "pidfd-util.h"
#include "portbroker.h"

/* --- get ------------------------------------------------------------------- */

/*
 * The LISTEN_FDNAMES name of an endpoint. systemd forbids ':' in fd names,
 * so the parts are joined with '-': `tcp-8080` for the [::] wildcard,
 * `tcp6-8080` for the IPv6-only one, `tcp-127.0.0.1-8080`, and
 * `tcp-__1-8443` for [::1] (an IPv6 address with its ':' turned into '_').
 */
static void fd_name(const char *endpoint, char *buf, size_t size) {
        char host[INET6_ADDRSTRLEN] = "";
        struct pb_endpoint e;

        if (endpoint_parse(endpoint, &e) < 0) {
                snprintf(buf, size, "unknown");
                return;
        }
        if (endpoint_is_unix(&e)) {     /* `unix-web.sock`: the file's name, no ':' */
                snprintf(buf, size, "unix-%s", strrchr(e.path, '/') + 1);
                for (char *p = buf; *p; p++)
                        if (*p == ':')
                                *p = '_';
                return;
        }
        if (e.family == PB_FAMILY_INET)
                inet_ntop(AF_INET, e.addr, host, sizeof(host));
        else if (endpoint_is_v6only_any(&e)) {
                snprintf(buf, size, "%s6-%u", e.transport == PB_UDP ? "udp" : "tcp", e.port_lo);
                return;
        } else if (e.family == PB_FAMILY_INET6) {
                inet_ntop(AF_INET6, e.addr, host, sizeof(host));
                for (char *p = host; *p; p++)
                        if (*p == ':')
                                *p = '_';
        }
        snprintf(buf, size, "%s%s%s-%u", e.transport == PB_UDP ? "udp" : "tcp",
                 host[0] ? "-" : "", host, e.port_lo);
}

/* Closes fds[0..n) that are open and resets them. */
static void close_fds(int *fds, size_t n) {
        for (size_t i = 0; i < n; i++)
                fds[i] = safe_close(fds[i]);
}

/* The LISTEN_FDNAMES value: the leases' fd names joined with ':'. Returns a new string or NULL. */
static char *fd_names(const pb_lease *leases, size_t n) {
        size_t size = n * PB_ENDPOINT_STRLEN + 1;
        char *names = calloc(1, size);

        for (size_t i = 0; names && i < n; i++) {
                char name[PB_ENDPOINT_STRLEN];

                fd_name(leases[i].endpoint, name, sizeof(name));
                if (i)
                        strcat(names, ":");
                strcat(names, name);
        }
        return names;
}

/* Moves fds[0..n) to fds 3, 3 + 1, ... (not close-on-exec). Consumes the fds (reset to -1).
 * Returns 0 or -errno. */
static int place_fds(int *fds, size_t n) {
        int r = 0;

        /* First move every socket above the target range, so that none is overwritten when
         * another one is placed on 3 + i; then place them (dup2 clears close-on-exec). */
        for (size_t i = 0; i < n && r == 0; i++) {
                int moved_fd = fcntl(fds[i], F_DUPFD_CLOEXEC, (int) (3 + n));

                if (moved_fd < 0)
                        r = -errno;
                else {
                        safe_close(fds[i]);
                        fds[i] = moved_fd;
                }
        }
        for (size_t i = 0; i < n && r == 0; i++)
                if (dup2(fds[i], (int) (3 + i)) < 0)
                        r = -errno;
        close_fds(fds, n);
        return r;
}

/* Passes fds[0..n) to cmd as fds 3.. with the systemd variables and execs it. Consumes the fds;
 * returns only on failure, with the exit status. */
/* How long get's watcher looks, and how often. */
#define GET_WATCH_MS (60 * 1000)
#define GET_WATCH_TICK_MS 250

/*
 * get's watcher: a server that never takes its socket (one that binds its
 * own port and ignores fd 3, such as `python3 -m http.server`) leaves its
 * clients hanging in a backlog nobody drains, and says nothing. While the
 * server runs, for up to GET_WATCH_MS, each TCP lease's accept queue is
 * read; a connection waiting ACCEPT_STALL_MS is said once on stderr, with
 * the `portctl run` alternative.
 */
static int watch_accepts(int server_pidfd, const pb_lease *leases, char **texts, size_t n, char **cmd) {
        struct pollfd p = { .fd = server_pidfd, .events = POLLIN };

        for (int t = 0; t < GET_WATCH_MS / GET_WATCH_TICK_MS; t++) {
                if (poll(&p, 1, GET_WATCH_TICK_MS) != 0)
                        return 0;               /* the server exited */
                for (size_t i = 0; i < n; i++) {
                        struct pb_endpoint e;
                        struct accept_queue q;

                        if (leases[i].transport != IPPROTO_TCP || endpoint_parse(leases[i].endpoint, &e) < 0 ||
                            accept_queue(&e, &q) < 0 || !q.waiting || q.oldest_ms < ACCEPT_STALL_MS)
                                continue;
                        fprintf(stderr, "portctl: %s accepts no connections on %s: %u waiting, the oldest for %u s: "
                                "does it take its socket from fd %zu (LISTEN_FDS, sd_listen_fds())? For a server "
                                "that binds its own port, use `portctl run %s -- %s ...`.\n", cmd[0],
                                leases[i].endpoint, q.waiting, (unsigned) (q.oldest_ms / 1000), 3 + i, texts[i],
                                cmd[0]);
                        return 0;
                }
        }
        return 0;
}

/* Starts get's watcher for the server this process becomes. Failing to is no reason not to
 * run it. As a container's pid 1 there is none: the watcher would be the server's child
 * (orphans go to pid 1), a zombie for it to reap. */
static void start_accept_watcher(const pb_lease *leases, char **texts, size_t n, char **cmd) {
        bool tcp = false;
        int pidfd;

        for (size_t i = 0; i < n; i++)
                tcp |= leases[i].transport == IPPROTO_TCP;
        if (!tcp || getpid() == 1)
                return;
        pidfd = pidfd_open_pid(getpid());
        if (pidfd < 0)
                return;
        if (cli_start_watcher(&pidfd, 1) == 0)
                _exit(watch_accepts(pidfd, leases, texts, n, cmd));
        safe_close(pidfd);
}

static int exec_with_fds(int *fds, const pb_lease *leases, size_t n, char **cmd) {
        char *names = fd_names(leases, n), pid[32], count[32];
        int r;

        if (!names) {
                close_fds(fds, n);
                return cli_fail(ENOMEM, "cannot run %s: %m", cmd[0]);
        }
        r = place_fds(fds, n);
        if (r < 0) {
                free(names);
                return cli_fail(-r, "cannot pass the sockets to %s: %m", cmd[0]);
        }
        snprintf(count, sizeof(count), "%zu", n);
        snprintf(pid, sizeof(pid), "%ld", (long) getpid());     /* we exec, so the pid stays */
        if (setenv("LISTEN_FDS", count, 1) < 0 || setenv("LISTEN_PID", pid, 1) < 0 ||
            setenv("LISTEN_FDNAMES", names, 1) < 0) {
                r = cli_fail(errno, "cannot run %s: %m", cmd[0]);
                free(names);
                return r;
        }
        free(names);
        fflush(stdout);
        execvp(cmd[0], cmd);
        return cli_exec_failed(cmd[0], errno);
}

struct get_args {
        char **endpoints;               /* argv slices, compacted to argv + 1; not owned */
        size_t n;
        char **cmd;                     /* after `--`, or NULL */
        unsigned flags;                 /* PB_GET_* */
};

static int parse_get_args(int argc, char **argv, struct get_args *ret) {
        struct get_args a = { .endpoints = argv + 1 };
        bool nonblock = false;

        for (int i = 1; i < argc && !a.cmd; i++) {
                if (strcmp(argv[i], "--") == 0) {
                        a.cmd = argv + i + 1;
                        if (!a.cmd[0])
                                return cli_usage("get: no command after '--'");
                } else if (strcmp(argv[i], "--nonblock") == 0)
                        nonblock = true;
                else if (argv[i][0] == '-' && argv[i][1])
                        return cli_usage("get: unknown option '%s'", argv[i]);
                else {
                        int r = cli_check_endpoint(argv[i], false);
                        if (r != 0)
                                return r;
                        a.endpoints[a.n++] = argv[i];
                }
        }
        if (a.n == 0)
                return cli_usage("get: no endpoint given");
        /* Only a command that will serve the sockets decides their mode; a bare `get` leaves the
         * flag that every holder shares alone unless asked. */
        if (nonblock)
                a.flags = PB_GET_NONBLOCK;
        else if (a.cmd)
                a.flags = PB_GET_BLOCKING;
        *ret = a;
        return 0;
}

/* Gets every endpoint of a on one connection into fds[] and leases[]. Returns 0 or the exit
 * status (the fds got so far stay in fds[], for the caller to close). */
static int get_leases(const struct get_args *a, int *fds, pb_lease *leases) {
        pb_conn *c = NULL;
        pb_error err;
        int r = cli_connect(&c);

        for (size_t i = 0; r == 0 && i < a->n; i++) {
                int fd = pb_conn_get(c, a->endpoints[i], a->flags, &leases[i], &err);

                if (fd < 0)
                        r = cli_fail_pb(&err);
                else
                        fds[i] = fd;
        }
        pb_disconnect(c);
        return r;
}

static void print_leases(const pb_lease *leases, size_t n) {
        if (!arg_json) {
                for (size_t i = 0; i < n; i++)
                        printf("%s lease %" PRIu64 " (%s)\n", leases[i].endpoint, leases[i].id,
                               leases[i].created ? "created" : "existing");
                return;
        }
        putchar('[');
        for (size_t i = 0; i < n; i++) {
                printf("%s{\"id\":%" PRIu64 ",\"endpoint\":", i ? "," : "", leases[i].id);
                json_string(stdout, leases[i].endpoint);
                printf(",\"created\":%s}", leases[i].created ? "true" : "false");
        }
        puts("]");
}

int cmd_get(int argc, char **argv) {
        struct get_args a = { 0 };
        pb_lease *leases;
        int *fds, r;

        r = parse_get_args(argc, argv, &a);
        if (r != 0)
                return r;
        leases = calloc(a.n, sizeof(*leases));
        fds = malloc(a.n * sizeof(int));
        if (!leases || !fds)
                r = cli_fail(ENOMEM, "%m");
        else {
                for (size_t i = 0; i < a.n; i++)
                        fds[i] = -1;
                r = get_leases(&a, fds, leases);
        }
        if (r == 0 && a.cmd) {
                start_accept_watcher(leases, a.endpoints, a.n, a.cmd);
                r = exec_with_fds(fds, leases, a.n, a.cmd);
        }
        else if (r == 0)
                print_leases(leases, a.n);
        if (fds)
                close_fds(fds, a.n);
        free(fds);
        free(leases);
        return r;
}

/* --- a port's leases ---------------------------------------------------------- */

struct port_filter {
        struct list *l;
        struct pb_endpoint port;        /* its transport and port */
};

static int collect_port_lease(const pb_lease *lease, void *userdata) {
        struct port_filter *f = userdata;
        struct pb_endpoint e;

        if (endpoint_parse(lease->endpoint, &e) < 0 || e.transport != f->port.transport ||
            e.port_lo != f->port.port_lo)
                return 0;
        return list_append(f->l, lease);
}

/* When text names a port as a whole (`8080`, `udp:53`; not `[::]:8080`, the dual-stack
 * wildcard by name) that has no such lease, its leases of other addresses or families
 * (`portctl run 8080` makes tcp:0.0.0.0:8080 and tcp6:[::]:8080) into l. Returns 0 or -errno. */
static int port_leases(pb_conn *c, const char *text, struct list *l) {
        struct port_filter f = { .l = l };

        if (strchr(text, '[') || endpoint_parse(text, &f.port) < 0 || f.port.family != PB_FAMILY_ANY)
                return 0;
        return pb_conn_status(c, NULL, collect_port_lease, &f, NULL);
}

/* --- release --------------------------------------------------------------- */

int cmd_release(int argc, char **argv) {
        const char *endpoint;
        char canonical[PB_ENDPOINT_STRLEN];
        pb_conn *c;
        pb_error err;
        int r;

        r = cli_parse_operand(argc, argv, "release", "one endpoint at a time", &endpoint);
        if (r != 0)
                return r;
        if (!endpoint)
                return cli_usage("release: no endpoint given");
        r = cli_check_endpoint(endpoint, false);
        if (r != 0)
                return r;

        r = cli_connect(&c);
        if (r != 0)
                return r;
        r = pb_conn_release(c, endpoint, &err);
        if (r == -ENOENT) {
                struct list l = { .size = sizeof(pb_lease) };
                char names[512] = "";

                /* Which of the port's leases the caller meant is theirs to say: name them. */
                if (port_leases(c, endpoint, &l) >= 0)
                        for (size_t i = 0, used = 0; i < l.n && used < sizeof(names); i++)
                                used += (size_t) snprintf(names + used, sizeof(names) - used, "%s%s",
                                                          i ? ", " : "", ((const pb_lease *) l.items)[i].endpoint);
                free(l.items);
                if (names[0]) {
                        pb_disconnect(c);
                        return cli_fail(ENOENT, "%s; the port's leases are %s: release them by name", err.message,
                                        names);
                }
        }
        pb_disconnect(c);
        if (r < 0)
                return cli_fail_pb(&err);

        canonical_endpoint(endpoint, false, canonical);
        if (arg_json) {
                fputs("{\"released\":", stdout);
                json_string(stdout, canonical);
                puts("}");
        } else
                printf("released %s\n", canonical);
        return 0;
}

/* --- status ---------------------------------------------------------------- */

static int collect_lease(const pb_lease *lease, void *userdata) {
        return list_append(userdata, lease);
}

/* A lease's TCP accept queue as status shows it: 1 when a connection has
 * waited ACCEPT_STALL_MS (no server accepting), 0 when none has, -1 when it
 * cannot be told (UDP, unbound, sock_diag refused). */
static int stalled(const pb_lease *x, struct accept_queue *q) {
        struct pb_endpoint e;

        *q = (struct accept_queue) { 0 };
        if (x->transport != IPPROTO_TCP || !x->bound || endpoint_parse(x->endpoint, &e) < 0)
                return -1;
        if (x->queued == 0)
                return 0;
        if (accept_queue(&e, q) < 0)
                return -1;
        return q->waiting && q->oldest_ms >= ACCEPT_STALL_MS;
}

static int status_table(const struct list *l) {
        struct table t = { .ncols = 6 };
        int r = 0;

        r |= table_cell(&t, "ENDPOINT");
        r |= table_cell(&t, "OWNER");
        r |= table_cell(&t, "SINCE");
        r |= table_cell(&t, "HANDOUTS");
        r |= table_cell(&t, "HOLDERS");
        r |= table_cell(&t, "QUEUED");
        for (size_t i = 0; i < l->n && r == 0; i++) {
                const pb_lease *x = (const pb_lease *) l->items + i;
                const char *owner = user_name(x->owner_uid);
                struct accept_queue q;
                char since[64];

                format_time(x->since, since, sizeof(since));
                r |= table_cell(&t, "%s", x->endpoint);
                if (owner)
                        r |= table_cell(&t, "%s", owner);
                else
                        r |= table_cell(&t, "%u", (unsigned) x->owner_uid);
                r |= table_cell(&t, "%s", since);
                r |= table_cell(&t, "%" PRIu64, x->handouts);
                r |= table_cell(&t, "%u", x->holders);
                if (!x->bound)
                        r |= table_cell(&t, "unbound");
                else if (x->transport == IPPROTO_UDP || x->backlog == 0)
                        r |= table_cell(&t, "-");
                else if (x->queued < 0)
                        r |= table_cell(&t, "?/%u", x->backlog);
                else if (stalled(x, &q) == 1)
                        r |= table_cell(&t, "%d/%u, no server accepting for %u s", x->queued, x->backlog,
                                        (unsigned) (q.oldest_ms / 1000));
                else
                        r |= table_cell(&t, "%d/%u", x->queued, x->backlog);
        }
        if (r == 0)
                table_print(&t);
        table_free(&t);
        return r < 0 ? cli_fail(ENOMEM, "%m") : 0;
}

/* brokerd and its bind guard, one line (text output only). */
static void status_header(const pb_info *info, int info_r) {
        if (info_r == -EPROTONOSUPPORT)
                printf("brokerd is older than this portctl: whether its bind guard is on is not known\n");
        else if (info_r >= 0)
                printf("brokerd %s, pid %d; bind guard %s%s\n", info->version, (int) info->pid,
                       info->guard ? "" : "off: ", info->guard_state);
}

static void status_json(const struct list *l, const pb_info *info, int info_r) {
        putchar('[');
        for (size_t i = 0; i < l->n; i++) {
                const pb_lease *x = (const pb_lease *) l->items + i;
                struct accept_queue q;

                printf("%s{\"id\":%" PRIu64 ",\"endpoint\":", i ? "," : "", x->id);
                json_string(stdout, x->endpoint);
                printf(",\"owner_uid\":%u,\"owner\":", (unsigned) x->owner_uid);
                json_string_or_null(stdout, user_name(x->owner_uid));
                printf(",\"since\":%" PRId64 ",\"handouts\":%" PRIu64 ",\"holders\":%u,\"queued\":",
                       x->since, x->handouts, x->holders);
                if (x->queued < 0)
                        fputs("null", stdout);
                else
                        printf("%d", x->queued);
                printf(",\"backlog\":%u,\"bound\":%s,\"guarded\":%s", x->backlog, x->bound ? "true" : "false",
                       info_r < 0 ? "null" : info->guard ? "true" : "false");
                switch (stalled(x, &q)) {
                case 1:
                        printf(",\"accepting\":false,\"oldest_wait_ms\":%" PRIu32 "}", q.oldest_ms);
                        break;
                case 0:
                        printf(",\"accepting\":true,\"oldest_wait_ms\":%" PRIu32 "}", q.oldest_ms);
                        break;
                default:
                        fputs(",\"accepting\":null,\"oldest_wait_ms\":null}", stdout);
                }
        }
        puts("]");
}

int cmd_status(int argc, char **argv) {
        struct list l = { .size = sizeof(pb_lease) };
        pb_info info;
        int info_r = -EIO;
        const char *endpoint;
        pb_conn *c;
        pb_error err;
        int r;

        r = cli_parse_operand(argc, argv, "status", "at most one endpoint", &endpoint);
        if (r != 0)
                return r;
        if (endpoint) {
                r = cli_check_endpoint(endpoint, false);
                if (r != 0)
                        return r;
        }

        r = cli_connect(&c);
        if (r != 0)
                return r;
        r = pb_conn_status(c, endpoint, collect_lease, &l, &err);
        if (r == -ENOENT && port_leases(c, endpoint, &l) >= 0 && l.n > 0)
                r = 0;                  /* `status 8080`: the port's leases */
        if (r >= 0)
                info_r = pb_conn_info(c, &info, NULL);
        pb_disconnect(c);
        if (r < 0)
                r = cli_fail_pb(&err);
        else if (endpoint && l.n == 0) {
                char canonical[PB_ENDPOINT_STRLEN];

                r = cli_fail(ENOENT, "no lease for %s", canonical_endpoint(endpoint, false, canonical));
        } else if (arg_json) {
                status_json(&l, &info, info_r);
                r = 0;
        } else {
                status_header(&info, info_r);
                r = status_table(&l);
        }
        free(l.items);
        return r;
}

