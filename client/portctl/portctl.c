/* SPDX-License-Identifier: MIT */
/*
 * portctl: the command line client of brokerd, built on libportbroker.
 * `get` acquires listening sockets and either prints the leases or execs a
 * command with them passed the way systemd socket activation does (fds 3..,
 * LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES); `release`, `status` and `policy`
 * wrap the matching library calls. Output is a human table or line by
 * default and JSON with --json. This is the only part of portbroker that
 * prints for users: on failure exactly one line `portctl: MESSAGE` on stderr
 * and exit status 1; usage errors exit with 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "endpoint.h"
#include "portbroker.h"
#include "portctl.h"


const char *arg_socket = NULL;          /* --socket; NULL: $PORTBROKER_SOCKET or the default */
bool arg_json = false;                  /* --json */

static void help(void) {
        printf("Usage: portctl [OPTIONS] COMMAND [ARGS...]\n"
               "\n"
               "Get listening sockets from brokerd and manage who may hold which port.\n"
               "\n"
               "Commands:\n"
               "  get ENDPOINT... [--nonblock] [-- CMD [ARGS...]]\n"
               "                        Get the sockets (creating the leases if needed). With CMD,\n"
               "                        run it with the sockets as fds 3, 4, ... and LISTEN_FDS,\n"
               "                        LISTEN_PID and LISTEN_FDNAMES set as systemd does; without\n"
               "                        CMD, print the leases (the broker keeps them).\n"
               "  release ENDPOINT      End a lease (its owner or an admin)\n"
               "  status [ENDPOINT]     Show leases: owner, since, handouts, holders, queue\n"
               "  policy add PATTERN (--user NAME|UID | --group NAME|GID | --unit UNIT)\n"
               "                        Let a user, group or systemd unit get endpoints matching\n"
               "                        PATTERN (admin only)\n"
               "  policy remove ID      Remove a rule (admin only)\n"
               "  policy list           List the rules\n"
               "  run [ENDPOINT...] -- CMD [ARGS...]\n"
               "                        Run a server that binds its own sockets: with\n"
               "                        libportbroker-preload.so its bind() to ENDPOINT (any port\n"
               "                        brokerd grants, when none is named) gets brokerd's socket\n"
               "  upgrade --pid PID [--signal SIG] [--timeout SEC] [ENDPOINT...] -- CMD [ARGS...]\n"
               "                        Like run; once the new server accepts on a brokered socket,\n"
               "                        send SIG (default QUIT) to the old server PID and wait for\n"
               "                        it to exit (default 30 s)\n"
               "  why ENDPOINT [--as USER]\n"
               "                        Why bind() of ENDPOINT fails (or would succeed) for you or\n"
               "                        USER: the verdict, the evidence and the fix\n"
               "\n"
               "Options:\n"
               "  --socket PATH         brokerd's control socket (default: $" PB_SOCKET_ENV ",\n"
               "                        else " PB_DEFAULT_SOCKET ")\n"
               "  --json                Print JSON instead of text (also after the command)\n"
               "  --nonblock            get: set O_NONBLOCK on the sockets (shared by every holder);\n"
               "                        with CMD the sockets are otherwise made blocking\n"
               "  --help                Show this help\n"
               "  --version             Show the version\n"
               "\n"
               "ENDPOINT is [tcp|udp:][ADDRESS:]PORT: 8080, udp:5353, tcp:127.0.0.1:8080,\n"
               "tcp:[::1]:8443; no address means [::] (IPv4 and IPv6). A PATTERN may give a port\n"
               "range: tcp:8000-8099.\n"
               "\n"
               "Exit status: 0 success, 1 failure, 2 usage error; with CMD, 126 or 127 when it\n"
               "cannot be run. See portctl(1).\n");
}

int usage_error(const char *fmt, ...) {
        va_list ap;

        fputs("portctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\nTry 'portctl --help'.\n", stderr);
        return EXIT_USAGE;
}

int failure(const char *fmt, ...) {
        int saved_errno = errno;        /* for %m */
        va_list ap;

        fputs("portctl: ", stderr);
        errno = saved_errno;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return EXIT_FAILURE;
}

/* Checks endpoint (or pattern) text before anything is sent. Returns 0 or the usage exit status. */
int check_endpoint(const char *text, bool pattern) {
        struct pb_endpoint e;

        if (!pattern && endpoint_parse(text, &e) < 0)
                return usage_error("invalid endpoint '%s': expected [tcp|udp:][ADDRESS:]PORT", text);
        if (pattern && endpoint_parse_pattern(text, &e) < 0)
                return usage_error("invalid endpoint pattern '%s': expected [tcp|udp:][ADDRESS:]PORT[-PORT]",
                                   text);
        return 0;
}

int pb_failure(const pb_error *err) {
        return failure("%s", err->message[0] ? err->message : strerror(err->code ? err->code : EIO));
}

int connect_broker(pb_conn **ret) {
        pb_error err;

        if (pb_connect(arg_socket, ret, &err) < 0)
                return pb_failure(&err);
        return 0;
}

/* --- JSON ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s, or 0. */
static size_t utf8_len(const unsigned char *s) {
        size_t n;
        uint32_t cp;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2, cp = s[0] & 0x1f;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                n = 3, cp = s[0] & 0x0f;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                n = 4, cp = s[0] & 0x07;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return n;
}

/* Prints s as a JSON string; invalid UTF-8 becomes U+FFFD. */
static void json_string(const char *s) {
        const unsigned char *p = (const unsigned char *) s;

        putchar('"');
        while (*p) {
                size_t n = utf8_len(p);

                if (n == 0) {
                        fputs("\\ufffd", stdout);
                        p++;
                } else if (n > 1) {
                        fwrite(p, 1, n, stdout);
                        p += n;
                } else {
                        switch (*p) {
                        case '"':
                                fputs("\\\"", stdout);
                                break;
                        case '\\':
                                fputs("\\\\", stdout);
                                break;
                        case '\n':
                                fputs("\\n", stdout);
                                break;
                        case '\t':
                                fputs("\\t", stdout);
                                break;
                        default:
                                if (*p < 0x20 || *p == 0x7f)
                                        printf("\\u%04x", *p);
                                else
                                        putchar(*p);
                        }
                        p++;
                }
        }
        putchar('"');
}

static void json_string_or_null(const char *s) {
        if (s)
                json_string(s);
        else
                fputs("null", stdout);
}

/* --- names and times ------------------------------------------------------- */

static const char *user_name(uid_t uid) {
        struct passwd *pw = getpwuid(uid);
        return pw ? pw->pw_name : NULL;
}

static const char *group_name(gid_t gid) {
        struct group *gr = getgrgid(gid);
        return gr ? gr->gr_name : NULL;
}

/* Parses a decimal id (no sign, no spaces) below UINT32_MAX. */
static int parse_id(const char *s, uint32_t *ret) {
        unsigned long long v = 0;

        if (!s[0] || strlen(s) > 10)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (*p - '0');
        }
        if (v >= UINT32_MAX)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

/* Parses a rule id: decimal, >= 1. */
static int parse_rule_id(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!s[0] || strlen(s) > 18 || s[0] == '0')
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (*p - '0');
        }
        *ret = v;
        return 0;
}

/* ISO 8601 local time with a numeric offset, e.g. 2025-01-31T14:05:09+01:00. */
static void format_time(int64_t t, char *buf, size_t size) {
        time_t tt = (time_t) t;
        struct tm tm;
        size_t n;

        if (t <= 0 || !localtime_r(&tt, &tm) ||
            (n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S%z", &tm)) < 5 || n + 2 > size) {
                snprintf(buf, size, "-");
                return;
        }
        /* %z gives +hhmm; ISO 8601's extended format wants +hh:mm. */
        memmove(buf + n - 1, buf + n - 2, 3);
        buf[n - 2] = ':';
}

/* --- tables ---------------------------------------------------------------- */

#define TABLE_MAX_COLS 6

struct table {
        size_t ncols;                   /* cells per row */
        size_t ncells, alloc;
        char **cells;                   /* row-major; the first row is the header */
};

/* Appends one cell; rows fill left to right. Returns 0 or -ENOMEM. */
__attribute__((format(printf, 2, 3)))
static int table_cell(struct table *t, const char *fmt, ...) {
        va_list ap;
        char *s;
        int r;

        if (t->ncells == t->alloc) {
                size_t na = t->alloc ? t->alloc * 2 : 64;
                char **nc = realloc(t->cells, na * sizeof(char *));
                if (!nc)
                        return -ENOMEM;
                t->cells = nc;
                t->alloc = na;
        }
        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        t->cells[t->ncells++] = s;
        return 0;
}

static void table_print(const struct table *t) {
        size_t width[TABLE_MAX_COLS] = { 0 };

        for (size_t i = 0; i < t->ncells; i++) {
                size_t n = strlen(t->cells[i]);
                if (n > width[i % t->ncols])
                        width[i % t->ncols] = n;
        }
        for (size_t i = 0; i < t->ncells; i++) {
                if ((i + 1) % t->ncols == 0 || i + 1 == t->ncells)
                        printf("%s\n", t->cells[i]);
                else
                        printf("%-*s  ", (int) width[i % t->ncols], t->cells[i]);
        }
}

static void table_free(struct table *t) {
        for (size_t i = 0; i < t->ncells; i++)
                free(t->cells[i]);
        free(t->cells);
        *t = (struct table) { .ncols = t->ncols };
}

/* --- get ------------------------------------------------------------------- */

/*
 * The LISTEN_FDNAMES name of an endpoint. systemd forbids ':' in fd names,
 * so the parts are joined with '-': `tcp-8080` for the [::] wildcard,
 * `tcp-127.0.0.1-8080`, and `tcp-__1-8443` for [::1] (an IPv6 address with
 * its ':' turned into '_').
 */
static void fd_name(const char *endpoint, char *buf, size_t size) {
        char host[INET6_ADDRSTRLEN] = "";
        struct pb_endpoint e;

        if (endpoint_parse(endpoint, &e) < 0) {
                snprintf(buf, size, "unknown");
                return;
        }
        if (e.family == PB_FAMILY_INET)
                inet_ntop(AF_INET, e.addr, host, sizeof(host));
        else if (e.family == PB_FAMILY_INET6) {
                inet_ntop(AF_INET6, e.addr, host, sizeof(host));
                for (char *p = host; *p; p++)
                        if (*p == ':')
                                *p = '_';
        }
        snprintf(buf, size, "%s%s%s-%u", e.transport == PB_UDP ? "udp" : "tcp",
                 host[0] ? "-" : "", host, e.port_lo);
}

/* Passes fds[0..n) to cmd as fds 3.. with the systemd variables and execs it. Consumes the fds;
 * returns only on failure, with the exit status. */
static int exec_with_fds(int *fds, const pb_lease *leases, size_t n, char **cmd) {
        char *names, pid[32], count[32];
        size_t size = n * PB_ENDPOINT_STRLEN + 1;
        int r;

        names = calloc(1, size);
        if (!names)
                return failure("cannot run %s: %s", cmd[0], strerror(ENOMEM));
        for (size_t i = 0; i < n; i++) {
                char name[PB_ENDPOINT_STRLEN];

                fd_name(leases[i].endpoint, name, sizeof(name));
                if (i)
                        strcat(names, ":");
                strcat(names, name);
        }

        /* First move every socket above the target range, so that none is overwritten when
         * another one is placed on 3 + i; then place them (dup2 clears close-on-exec). */
        for (size_t i = 0; i < n; i++) {
                int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, (int) (3 + n));
                if (fd < 0) {
                        r = failure("cannot pass the sockets to %s: %m", cmd[0]);
                        goto fail;
                }
                close(fds[i]);
                fds[i] = fd;
        }
        for (size_t i = 0; i < n; i++) {
                if (dup2(fds[i], (int) (3 + i)) < 0) {
                        r = failure("cannot pass the sockets to %s: %m", cmd[0]);
                        goto fail;
                }
        }
        for (size_t i = 0; i < n; i++) {
                close(fds[i]);
                fds[i] = -1;
        }

        snprintf(count, sizeof(count), "%zu", n);
        snprintf(pid, sizeof(pid), "%ld", (long) getpid());     /* we exec, so the pid stays */
        if (setenv("LISTEN_FDS", count, 1) < 0 || setenv("LISTEN_PID", pid, 1) < 0 ||
            setenv("LISTEN_FDNAMES", names, 1) < 0) {
                r = failure("cannot run %s: %m", cmd[0]);
                goto fail;
        }
        free(names);
        names = NULL;

        fflush(stdout);
        execvp(cmd[0], cmd);
        r = errno == ENOENT ? 127 : 126;
        failure("cannot run %s: %m", cmd[0]);
        return r;

fail:
        for (size_t i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        free(names);
        return r;
}

static int cmd_get(int argc, char **argv) {
        unsigned flags = 0;
        bool nonblock = false;
        char **endpoints, **cmd = NULL;
        size_t n = 0;
        pb_lease *leases = NULL;
        int *fds = NULL, r = EXIT_FAILURE;
        pb_conn *c = NULL;
        pb_error err;

        endpoints = calloc((size_t) argc + 1, sizeof(char *));
        if (!endpoints)
                return failure("%s", strerror(ENOMEM));
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0) {
                        cmd = argv + i + 1;
                        if (!cmd[0]) {
                                r = usage_error("get: no command after '--'");
                                goto out;
                        }
                        break;
                } else if (strcmp(argv[i], "--nonblock") == 0)
                        nonblock = true;
                else if (strcmp(argv[i], "--json") == 0)
                        arg_json = true;
                else if (argv[i][0] == '-' && argv[i][1]) {
                        r = usage_error("get: unknown option '%s'", argv[i]);
                        goto out;
                } else {
                        r = check_endpoint(argv[i], false);
                        if (r != 0)
                                goto out;
                        endpoints[n++] = argv[i];
                }
        }
        if (n == 0) {
                r = usage_error("get: no endpoint given");
                goto out;
        }
        /* Only a command that will serve the sockets decides their mode; a bare `get` leaves the
         * flag that every holder shares alone unless asked. */
        if (nonblock)
                flags = PB_GET_NONBLOCK;
        else if (cmd)
                flags = PB_GET_BLOCKING;

        leases = calloc(n, sizeof(*leases));
        fds = malloc(n * sizeof(int));
        if (!leases || !fds) {
                r = failure("%s", strerror(ENOMEM));
                goto out;
        }
        for (size_t i = 0; i < n; i++)
                fds[i] = -1;

        r = connect_broker(&c);
        if (r != 0)
                goto out;
        for (size_t i = 0; i < n; i++) {
                fds[i] = pb_conn_get(c, endpoints[i], flags, &leases[i], &err);
                if (fds[i] < 0) {
                        fds[i] = -1;
                        r = pb_failure(&err);
                        goto out;
                }
        }
        pb_disconnect(c);
        c = NULL;

        if (cmd) {
                r = exec_with_fds(fds, leases, n, cmd);
                n = 0;          /* consumed */
                goto out;
        }

        if (arg_json) {
                putchar('[');
                for (size_t i = 0; i < n; i++) {
                        printf("%s{\"id\":%" PRIu64 ",\"endpoint\":", i ? "," : "", leases[i].id);
                        json_string(leases[i].endpoint);
                        printf(",\"created\":%s}", leases[i].created ? "true" : "false");
                }
                puts("]");
        } else
                for (size_t i = 0; i < n; i++)
                        printf("%s lease %" PRIu64 " (%s)\n", leases[i].endpoint, leases[i].id,
                               leases[i].created ? "created" : "existing");
        r = 0;
out:
        pb_disconnect(c);
        if (fds)
                for (size_t i = 0; i < n; i++)
                        if (fds[i] >= 0)
                                close(fds[i]);
        free(fds);
        free(leases);
        free(endpoints);
        return r;
}

/* --- release --------------------------------------------------------------- */

static int cmd_release(int argc, char **argv) {
        const char *endpoint = NULL;
        char canonical[PB_ENDPOINT_STRLEN];
        struct pb_endpoint e;
        pb_conn *c;
        pb_error err;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        arg_json = true;
                else if (argv[i][0] == '-' && argv[i][1])
                        return usage_error("release: unknown option '%s'", argv[i]);
                else if (endpoint)
                        return usage_error("release: one endpoint at a time");
                else
                        endpoint = argv[i];
        }
        if (!endpoint)
                return usage_error("release: no endpoint given");
        r = check_endpoint(endpoint, false);
        if (r != 0)
                return r;

        r = connect_broker(&c);
        if (r != 0)
                return r;
        r = pb_conn_release(c, endpoint, &err);
        pb_disconnect(c);
        if (r < 0)
                return pb_failure(&err);

        if (endpoint_parse(endpoint, &e) == 0)
                endpoint_format(&e, canonical);
        else
                snprintf(canonical, sizeof(canonical), "%s", endpoint);
        if (arg_json) {
                fputs("{\"released\":", stdout);
                json_string(canonical);
                puts("}");
        } else
                printf("released %s\n", canonical);
        return 0;
}

/* --- status ---------------------------------------------------------------- */

/* Returns items with room for one more of size bytes (n used of *alloc), or NULL. */
static void *grow(void *items, size_t n, size_t *alloc, size_t size) {
        size_t na;
        void *ni;

        if (n < *alloc)
                return items;
        na = *alloc ? *alloc * 2 : 16;
        ni = realloc(items, na * size);
        if (ni)
                *alloc = na;
        return ni;
}

struct lease_list {
        pb_lease *items;
        size_t n, alloc;
};

static int collect_lease(const pb_lease *lease, void *userdata) {
        struct lease_list *l = userdata;
        pb_lease *items = grow(l->items, l->n, &l->alloc, sizeof(*items));

        if (!items)
                return -ENOMEM;
        l->items = items;
        l->items[l->n++] = *lease;
        return 0;
}

static int status_table(const struct lease_list *l) {
        struct table t = { .ncols = 6 };
        int r = 0;

        r |= table_cell(&t, "ENDPOINT");
        r |= table_cell(&t, "OWNER");
        r |= table_cell(&t, "SINCE");
        r |= table_cell(&t, "HANDOUTS");
        r |= table_cell(&t, "HOLDERS");
        r |= table_cell(&t, "QUEUED");
        for (size_t i = 0; i < l->n && r == 0; i++) {
                const pb_lease *x = &l->items[i];
                const char *owner = user_name(x->owner_uid);
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
                else
                        r |= table_cell(&t, "%d/%u", x->queued, x->backlog);
        }
        if (r == 0)
                table_print(&t);
        table_free(&t);
        return r < 0 ? failure("%s", strerror(ENOMEM)) : 0;
}

static void status_json(const struct lease_list *l) {
        putchar('[');
        for (size_t i = 0; i < l->n; i++) {
                const pb_lease *x = &l->items[i];

                printf("%s{\"id\":%" PRIu64 ",\"endpoint\":", i ? "," : "", x->id);
                json_string(x->endpoint);
                printf(",\"owner_uid\":%u,\"owner\":", (unsigned) x->owner_uid);
                json_string_or_null(user_name(x->owner_uid));
                printf(",\"since\":%" PRId64 ",\"handouts\":%" PRIu64 ",\"holders\":%u,\"queued\":",
                       x->since, x->handouts, x->holders);
                if (x->queued < 0)
                        fputs("null", stdout);
                else
                        printf("%d", x->queued);
                printf(",\"backlog\":%u,\"bound\":%s}", x->backlog, x->bound ? "true" : "false");
        }
        puts("]");
}

static int cmd_status(int argc, char **argv) {
        struct lease_list l = { 0 };
        const char *endpoint = NULL;
        pb_conn *c;
        pb_error err;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        arg_json = true;
                else if (argv[i][0] == '-' && argv[i][1])
                        return usage_error("status: unknown option '%s'", argv[i]);
                else if (endpoint)
                        return usage_error("status: at most one endpoint");
                else
                        endpoint = argv[i];
        }
        if (endpoint) {
                r = check_endpoint(endpoint, false);
                if (r != 0)
                        return r;
        }

        r = connect_broker(&c);
        if (r != 0)
                return r;
        r = pb_conn_status(c, endpoint, collect_lease, &l, &err);
        pb_disconnect(c);
        if (r == -ENOMEM && !err.message[0])
                r = failure("%s", strerror(ENOMEM));
        else if (r < 0)
                r = pb_failure(&err);
        else if (endpoint && l.n == 0) {
                struct pb_endpoint e;
                char canonical[PB_ENDPOINT_STRLEN];

                if (endpoint_parse(endpoint, &e) == 0)
                        endpoint_format(&e, canonical);
                else
                        snprintf(canonical, sizeof(canonical), "%s", endpoint);
                r = failure("no lease for %s", canonical);
        } else if (arg_json) {
                status_json(&l);
                r = 0;
        } else
                r = status_table(&l);
        free(l.items);
        return r;
}

/* --- policy ---------------------------------------------------------------- */

/* "user nobody (65534)", "group 1234", "unit web.service" */
static void format_principal(pb_principal_kind kind, uint32_t id, const char *unit, char *buf, size_t size) {
        const char *name;

        switch (kind) {
        case PB_USER:
        case PB_GROUP:
                name = kind == PB_USER ? user_name(id) : group_name(id);
                if (name)
                        snprintf(buf, size, "%s %s (%u)", kind == PB_USER ? "user" : "group", name, id);
                else
                        snprintf(buf, size, "%s %u", kind == PB_USER ? "user" : "group", id);
                break;
        default:
                snprintf(buf, size, "unit %s", unit);
        }
}

static int policy_add(int argc, char **argv) {
        const char *pattern = NULL, *user = NULL, *group = NULL, *unit = NULL;
        char canonical[PB_ENDPOINT_STRLEN], who[512];
        pb_principal_kind kind;
        struct pb_endpoint p;
        uint32_t id = 0;
        pb_conn *c;
        pb_error err;
        int64_t rule;
        int r;

        for (int i = 1; i < argc; i++) {
                const char **slot = NULL, *opt = argv[i], *value = NULL;
                size_t len;

                if (strcmp(opt, "--json") == 0) {
                        arg_json = true;
                        continue;
                }
                if (strncmp(opt, "--user", len = 6) == 0)
                        slot = &user;
                else if (strncmp(opt, "--group", len = 7) == 0)
                        slot = &group;
                else if (strncmp(opt, "--unit", len = 6) == 0)
                        slot = &unit;
                if (slot && opt[len] == '=')
                        value = opt + len + 1;
                else if (slot && opt[len] == '\0') {
                        if (i + 1 >= argc)
                                return usage_error("policy add: %s needs a value", opt);
                        value = argv[++i];
                } else if (opt[0] == '-' && opt[1])
                        return usage_error("policy add: unknown option '%s'", opt);
                else if (pattern)
                        return usage_error("policy add: one pattern at a time");
                else {
                        pattern = opt;
                        continue;
                }
                if (*slot)
                        return usage_error("policy add: %.*s given twice", (int) len, opt);
                if (!value[0])
                        return usage_error("policy add: %.*s needs a value", (int) len, opt);
                *slot = value;
        }
        if (!pattern)
                return usage_error("policy add: no endpoint pattern given");
        if (!!user + !!group + !!unit != 1)
                return usage_error("policy add: give exactly one of --user, --group or --unit");
        r = check_endpoint(pattern, true);
        if (r != 0)
                return r;

        if (user) {
                kind = PB_USER;
                if (parse_id(user, &id) < 0) {
                        struct passwd *pw = getpwnam(user);
                        if (!pw)
                                return failure("no such user '%s'", user);
                        id = (uint32_t) pw->pw_uid;
                }
        } else if (group) {
                kind = PB_GROUP;
                if (parse_id(group, &id) < 0) {
                        struct group *gr = getgrnam(group);
                        if (!gr)
                                return failure("no such group '%s'", group);
                        id = (uint32_t) gr->gr_gid;
                }
        } else
                kind = PB_UNIT;

        r = connect_broker(&c);
        if (r != 0)
                return r;
        rule = pb_conn_policy_add(c, kind, id, unit, pattern, &err);
        pb_disconnect(c);
        if (rule < 0)
                return pb_failure(&err);

        if (arg_json) {
                printf("{\"id\":%" PRId64 "}\n", rule);
                return 0;
        }
        if (endpoint_parse_pattern(pattern, &p) == 0)
                endpoint_format_pattern(&p, canonical);
        else
                snprintf(canonical, sizeof(canonical), "%s", pattern);
        format_principal(kind, id, unit, who, sizeof(who));
        printf("rule %" PRId64 " added: %s may get %s\n", rule, who, canonical);
        return 0;
}

static int policy_remove(int argc, char **argv) {
        const char *arg = NULL;
        uint64_t id;
        pb_conn *c;
        pb_error err;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        arg_json = true;
                else if (argv[i][0] == '-' && argv[i][1])
                        return usage_error("policy remove: unknown option '%s'", argv[i]);
                else if (arg)
                        return usage_error("policy remove: one rule id at a time");
                else
                        arg = argv[i];
        }
        if (!arg)
                return usage_error("policy remove: no rule id given");
        if (parse_rule_id(arg, &id) < 0)
                return usage_error("policy remove: invalid rule id '%s'", arg);

        r = connect_broker(&c);
        if (r != 0)
                return r;
        r = pb_conn_policy_remove(c, id, &err);
        pb_disconnect(c);
        if (r < 0)
                return pb_failure(&err);
        if (arg_json)
                printf("{\"removed\":%" PRIu64 "}\n", id);
        else
                printf("rule %" PRIu64 " removed\n", id);
        return 0;
}

struct rule_list {
        pb_rule *items;
        size_t n, alloc;
};

static int collect_rule(const pb_rule *rule, void *userdata) {
        struct rule_list *l = userdata;
        pb_rule *items = grow(l->items, l->n, &l->alloc, sizeof(*items));

        if (!items)
                return -ENOMEM;
        l->items = items;
        l->items[l->n++] = *rule;
        return 0;
}

static void policy_json(const struct rule_list *l) {
        putchar('[');
        for (size_t i = 0; i < l->n; i++) {
                const pb_rule *x = &l->items[i];
                const char *kind = x->kind == PB_USER ? "user" : x->kind == PB_GROUP ? "group" : "unit";

                printf("%s{\"id\":%" PRIu64 ",\"kind\":\"%s\",\"id_value\":", i ? "," : "", x->id, kind);
                if (x->kind == PB_UNIT) {
                        fputs("null,\"name\":", stdout);
                        json_string(x->unit);
                } else {
                        printf("%u,\"name\":", x->id_value);
                        json_string_or_null(x->kind == PB_USER ? user_name(x->id_value) : group_name(x->id_value));
                }
                fputs(",\"pattern\":", stdout);
                json_string(x->pattern);
                printf(",\"created\":%" PRId64 "}", x->created);
        }
        puts("]");
}

static int policy_table(const struct rule_list *l) {
        struct table t = { .ncols = 4 };
        int r = 0;

        r |= table_cell(&t, "ID");
        r |= table_cell(&t, "PRINCIPAL");
        r |= table_cell(&t, "PATTERN");
        r |= table_cell(&t, "CREATED");
        for (size_t i = 0; i < l->n && r == 0; i++) {
                const pb_rule *x = &l->items[i];
                char who[512], created[64];

                format_principal(x->kind, x->id_value, x->unit, who, sizeof(who));
                format_time(x->created, created, sizeof(created));
                r |= table_cell(&t, "%" PRIu64, x->id);
                r |= table_cell(&t, "%s", who);
                r |= table_cell(&t, "%s", x->pattern);
                r |= table_cell(&t, "%s", created);
        }
        if (r == 0)
                table_print(&t);
        table_free(&t);
        return r < 0 ? failure("%s", strerror(ENOMEM)) : 0;
}

static int policy_list(int argc, char **argv) {
        struct rule_list l = { 0 };
        pb_conn *c;
        pb_error err;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        arg_json = true;
                else if (argv[i][0] == '-' && argv[i][1])
                        return usage_error("policy list: unknown option '%s'", argv[i]);
                else
                        return usage_error("policy list: unexpected argument '%s'", argv[i]);
        }

        r = connect_broker(&c);
        if (r != 0)
                return r;
        r = pb_conn_policy_list(c, collect_rule, &l, &err);
        pb_disconnect(c);
        if (r == -ENOMEM && !err.message[0])
                r = failure("%s", strerror(ENOMEM));
        else if (r < 0)
                r = pb_failure(&err);
        else if (arg_json) {
                policy_json(&l);
                r = 0;
        } else
                r = policy_table(&l);
        free(l.items);
        return r;
}

static int cmd_policy(int argc, char **argv) {
        if (argc < 2)
                return usage_error("policy: no subcommand given (add, remove or list)");
        if (strcmp(argv[1], "add") == 0)
                return policy_add(argc - 1, argv + 1);
        if (strcmp(argv[1], "remove") == 0)
                return policy_remove(argc - 1, argv + 1);
        if (strcmp(argv[1], "list") == 0)
                return policy_list(argc - 1, argv + 1);
        return usage_error("policy: unknown subcommand '%s'", argv[1]);
}

/* --- main ------------------------------------------------------------------ */

/* Makes sure fds 0-2 are open, so that no socket we open lands on one of them. */
static void open_std_fds(void) {
        for (int fd = 0; fd < 3; fd++)
                if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
                        int null_fd = open("/dev/null", O_RDWR);
                        if (null_fd >= 0 && null_fd != fd)
                                close(null_fd);     /* cannot happen: lowest free fd is fd */
                }
}

/* True when the arguments of a command ask for help (before any `--`). */
static bool wants_help(int argc, char **argv) {
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0)
                        return false;
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
                        return true;
        }
        return false;
}

int main(int argc, char **argv) {
        static const struct {
                const char *name;
                int (*run)(int argc, char **argv);
        } commands[] = {
                { "get", cmd_get },
                { "release", cmd_release },
                { "status", cmd_status },
                { "policy", cmd_policy },
                { "run", cmd_run },
                { "upgrade", cmd_upgrade },
                { "why", cmd_why },
        };
        int i, r = -1;

        open_std_fds();

        for (i = 1; i < argc && argv[i][0] == '-'; i++) {
                const char *a = argv[i];

                if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                        help();
                        return fflush(stdout) == 0 ? 0 : EXIT_FAILURE;
                } else if (strcmp(a, "--version") == 0) {
                        printf("portctl %s\n", PB_VERSION);
                        return fflush(stdout) == 0 ? 0 : EXIT_FAILURE;
                } else if (strcmp(a, "--json") == 0)
                        arg_json = true;
                else if (strcmp(a, "--socket") == 0) {
                        if (i + 1 >= argc)
                                return usage_error("--socket needs a path");
                        arg_socket = argv[++i];
                } else if (strncmp(a, "--socket=", 9) == 0)
                        arg_socket = a + 9;
                else
                        return usage_error("unknown option '%s'", a);
                if (arg_socket && !arg_socket[0])
                        return usage_error("--socket needs a path");
        }
        if (i >= argc)
                return usage_error("no command given");
        if (strcmp(argv[i], "help") == 0 || wants_help(argc - i, argv + i)) {
                help();
                return fflush(stdout) == 0 ? 0 : EXIT_FAILURE;
        }

        for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
                if (strcmp(argv[i], commands[k].name) == 0) {
                        r = commands[k].run(argc - i, argv + i);
                        break;
                }
        if (r < 0)
                return usage_error("unknown command '%s'", argv[i]);

        if (fflush(stdout) != 0 || ferror(stdout)) {
                if (r == 0)
                        r = failure("cannot write the output: %m");
        }
        return r;
}
