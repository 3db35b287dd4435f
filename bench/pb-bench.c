/* SPDX-License-Identifier: MIT */
/*
 * pb-bench: the measuring half of `make bench` (bench/run.py drives it).
 *
 *   pb-bench raw-server SOCKPATH PORT   the floor: a minimal SCM_RIGHTS server
 *       with no policy and no database. It binds 127.0.0.1:PORT once, then per
 *       client: accept4, SO_PEERCRED, recvmsg, sendmsg with the one fd, close.
 *       Prints "ready PID"; exits after --max-seconds (default 900).
 *   pb-bench get ...      repeat gets of one endpoint, each on a connection of
 *       its own: --mode lib (pb_get through libportbroker) or --mode raw (the
 *       same steps against raw-server); --procs P client processes at once.
 *   pb-bench create ...   first gets of --count new leases (--first-port up).
 *   pb-bench spread ...   --gets repeat gets spread over --count leases.
 *   pb-bench concurrent ...  --conns threads, each with its own control
 *       connection open at once, all doing --gets gets (pb_conn_get).
 *   pb-bench binds PORT ...  --count socket()+bind(127.0.0.1:PORT)+close(),
 *       what any process does, timed in batches of BIND_BATCH (the bind
 *       guard's cost on an unrelated bind(); brokerd is not involved).
 * Every client mode prints one JSON object: n, p50/p99/max in microseconds,
 * elapsed seconds and gets per second. Every loop is bounded by a count and
 * by --max-seconds.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fdpass.h"
#include "portbroker.h"

#define MAX_COUNT 2000000u
#define MAX_PROCS 16u
#define MAX_CONNS 5000u
#define BIND_BATCH 50u

static const char *arg_mode = "lib";
static const char *arg_socket;
static const char *arg_endpoint = "tcp:127.0.0.1:9000";
static unsigned arg_count = 1000;
static unsigned arg_procs = 1;
static unsigned arg_first_port = 20000;
static unsigned arg_gets = 1000;
static unsigned arg_conns = 100;
static unsigned arg_max_seconds = 900;

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;

        return (x > y) - (x < y);
}

/* Sorts v (ns / 1000 stored as 0.1 us units) and prints the JSON summary. */
static void report(const char *what, uint32_t *v, size_t n, size_t failed, double elapsed_s) {
        double p50 = 0, p99 = 0, max = 0;

        if (n > 0) {
                qsort(v, n, sizeof(uint32_t), cmp_u32);
                p50 = v[(n - 1) / 2] / 10.0;
                p99 = v[(size_t) ((double) (n - 1) * 0.99)] / 10.0;
                max = v[n - 1] / 10.0;
        }
        printf("{\"what\":\"%s\",\"n\":%zu,\"failed\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,"
               "\"elapsed_s\":%.4f,\"per_s\":%.0f}\n",
               what, n, failed, p50, p99, max, elapsed_s, elapsed_s > 0 ? (double) n / elapsed_s : 0.0);
}

static uint32_t tenths_us(uint64_t ns) {
        uint64_t t = ns / 100u;

        return t > UINT32_MAX ? UINT32_MAX : (uint32_t) t;
}

/* --- the raw floor ------------------------------------------------------ */

static int unix_connect(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int r = -errno;

                close(fd);
                return r;
        }
        return fd;
}

static int raw_server(const char *path, unsigned port) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
        int listen_fd, tcp_fd, one = 1;
        uint64_t deadline = now_ns() + (uint64_t) arg_max_seconds * 1000000000u;

        tcp_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (tcp_fd < 0 || setsockopt(tcp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(tcp_fd, (struct sockaddr *) &sin, sizeof(sin)) < 0 || listen(tcp_fd, 4096) < 0) {
                fprintf(stderr, "pb-bench raw-server: binding 127.0.0.1:%u: %m\n", port);
                return 1;
        }
        if (strlen(path) >= sizeof(sa.sun_path)) {
                fprintf(stderr, "pb-bench raw-server: path too long\n");
                return 2;
        }
        strcpy(sa.sun_path, path);
        unlink(path);
        listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
            listen(listen_fd, 128) < 0) {
                fprintf(stderr, "pb-bench raw-server: listening on %s: %m\n", path);
                return 1;
        }
        /* accept() wakes up at least once a second so the time bound holds. */
        {
                struct timeval tv = { .tv_sec = 1 };

                (void) setsockopt(listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        }
        printf("ready %d\n", (int) getpid());
        fflush(stdout);

        while (now_ns() < deadline) {
                struct ucred cred;
                socklen_t cl = sizeof(cred);
                char buf[64];
                int conn_fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC), r;

                if (conn_fd < 0)
                        continue;
                if (getsockopt(conn_fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
                        fprintf(stderr, "pb-bench raw-server: SO_PEERCRED: %m\n");
                else if ((r = fdpass_recv(conn_fd, buf, sizeof(buf), NULL, 0)) <= 0)
                        fprintf(stderr, "pb-bench raw-server: no request: %s\n", r ? strerror(-r) : "EOF");
                else if ((r = fdpass_send(conn_fd, "ok", 2, tcp_fd, 0)) < 0)
                        fprintf(stderr, "pb-bench raw-server: cannot reply: %s\n", strerror(-r));
                close(conn_fd);
        }
        return 0;
}

/* One raw get: connect, request, fd back, close. Returns the fd or -errno. */
static int raw_get(const char *path) {
        char buf[64];
        int sock_fd, fd = -1, r;

        sock_fd = unix_connect(path);
        if (sock_fd < 0)
                return sock_fd;
        r = fdpass_send(sock_fd, "get", 3, -1, 0);
        if (r >= 0)
                r = fdpass_recv(sock_fd, buf, sizeof(buf), &fd, 0);
        close(sock_fd);
        if (r < 0)
                return r;
        if (r == 0)
                return -ECONNRESET;     /* closed without a reply */
        return fd >= 0 ? fd : -EBADMSG;
}

/* --- clients ------------------------------------------------------------ */

/* One get; the first failure of each process says why on stderr. */
static int one_get(bool raw, const char *endpoint) {
        static bool told;
        pb_error err;
        int fd = raw ? raw_get(arg_socket) : pb_get(endpoint, 0, &err);

        if (fd < 0) {
                if (!told)
                        fprintf(stderr, "pb-bench: get failed: %s\n", raw ? strerror(-fd) : err.message);
                told = true;
                return fd;
        }
        close(fd);
        return 0;
}

/* Repeat gets of arg_endpoint from arg_procs processes, arg_count each. */
static int cmd_get(void) {
        bool raw = strcmp(arg_mode, "raw") == 0;
        size_t total = (size_t) arg_count * arg_procs, n = 0, failed = 0;
        uint32_t *v = mmap(NULL, total * sizeof(uint32_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        size_t *fails = mmap(NULL, MAX_PROCS * sizeof(size_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        uint64_t t0, deadline;
        pid_t pids[MAX_PROCS];

        if (v == MAP_FAILED || fails == MAP_FAILED) {
                fprintf(stderr, "pb-bench: mmap: %m\n");
                return 1;
        }
        if (one_get(raw, arg_endpoint) < 0) {   /* warm up; also: the lease exists */
                fprintf(stderr, "pb-bench: first get failed\n");
                return 1;
        }
        t0 = now_ns();
        deadline = t0 + (uint64_t) arg_max_seconds * 1000000000u;
        for (unsigned p = 0; p < arg_procs; p++) {
                pids[p] = fork();
                if (pids[p] < 0) {
                        fprintf(stderr, "pb-bench: fork: %m\n");
                        return 1;
                }
                if (pids[p] == 0) {
                        uint32_t *mine = v + (size_t) p * arg_count;

                        for (unsigned i = 0; i < arg_count && now_ns() < deadline; i++) {
                                uint64_t a = now_ns();

                                if (one_get(raw, arg_endpoint) < 0) {
                                        fails[p]++;
                                        mine[i] = UINT32_MAX;
                                        continue;
                                }
                                mine[i] = tenths_us(now_ns() - a);
                                if (mine[i] == 0)
                                        mine[i] = 1;
                        }
                        _exit(0);
                }
        }
        for (unsigned p = 0; p < arg_procs; p++)
                waitpid(pids[p], NULL, 0);
        {
                double el = (double) (now_ns() - t0) / 1e9;

                for (size_t i = 0; i < total; i++)
                        if (v[i] != 0 && v[i] != UINT32_MAX)
                                v[n++] = v[i];
                for (unsigned p = 0; p < arg_procs; p++)
                        failed += fails[p];
                report(raw ? "raw" : "lib", v, n, failed, el);
        }
        return failed ? 1 : 0;
}

static void endpoint_of(unsigned i, char *buf, size_t size) {
        snprintf(buf, size, "tcp:127.0.0.1:%u", arg_first_port + i);
}

/* First gets: arg_count leases created on ports arg_first_port... */
static int cmd_create(void) {
        uint32_t *v = calloc(arg_count, sizeof(uint32_t));
        uint64_t t0 = now_ns(), deadline = t0 + (uint64_t) arg_max_seconds * 1000000000u;
        size_t n = 0, failed = 0;

        if (!v)
                return 1;
        for (unsigned i = 0; i < arg_count && now_ns() < deadline; i++) {
                char ep[64];
                pb_error err;
                uint64_t a = now_ns();
                int fd;

                endpoint_of(i, ep, sizeof(ep));
                fd = pb_get(ep, 0, &err);
                if (fd < 0) {
                        if (failed++ == 0)
                                fprintf(stderr, "pb-bench: get %s: %s\n", ep, err.message);
                        continue;
                }
                v[n++] = tenths_us(now_ns() - a);
                close(fd);
        }
        report("create", v, n, failed, (double) (now_ns() - t0) / 1e9);
        free(v);
        return failed ? 1 : 0;
}

/* Repeat gets spread over the leases arg_first_port..+arg_count (pseudo-random order). */
static int cmd_spread(void) {
        uint32_t *v = calloc(arg_gets, sizeof(uint32_t));
        uint64_t t0 = now_ns(), deadline = t0 + (uint64_t) arg_max_seconds * 1000000000u;
        uint32_t x = 2463534242u;
        size_t n = 0, failed = 0;

        if (!v)
                return 1;
        for (unsigned i = 0; i < arg_gets && now_ns() < deadline; i++) {
                char ep[64];
                uint64_t a;

                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                endpoint_of(x % arg_count, ep, sizeof(ep));
                a = now_ns();
                if (one_get(false, ep) < 0) {
                        failed++;
                        continue;
                }
                v[n++] = tenths_us(now_ns() - a);
        }
        report("spread", v, n, failed, (double) (now_ns() - t0) / 1e9);
        free(v);
        return failed ? 1 : 0;
}

struct worker {
        pthread_t thread;
        pb_conn *conn;
        uint32_t *lat;                  /* arg_gets entries */
        size_t n, failed;
};

static pthread_barrier_t start_barrier;
static uint64_t conc_deadline;

static void *worker_main(void *userdata) {
        struct worker *w = userdata;

        pthread_barrier_wait(&start_barrier);
        for (unsigned i = 0; i < arg_gets && now_ns() < conc_deadline; i++) {
                pb_error err;
                uint64_t a = now_ns();
                int fd = pb_conn_get(w->conn, arg_endpoint, 0, NULL, &err);

                if (fd < 0) {
                        if (w->failed++ == 0)
                                fprintf(stderr, "pb-bench: concurrent get: %s\n", err.message);
                        continue;
                }
                w->lat[w->n++] = tenths_us(now_ns() - a);
                close(fd);
        }
        return NULL;
}

/* arg_conns control connections open at once, each doing arg_gets gets. */
static int cmd_concurrent(void) {
        struct worker *w = calloc(arg_conns, sizeof(*w));
        uint32_t *all = calloc((size_t) arg_conns * arg_gets, sizeof(uint32_t));
        pthread_attr_t attr;
        size_t n = 0, failed = 0;
        uint64_t t0;
        struct rlimit rl;

        if (!w || !all)
                return 1;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        for (unsigned i = 0; i < arg_conns; i++) {
                pb_error err;

                if (pb_connect(arg_socket, &w[i].conn, &err) < 0) {
                        fprintf(stderr, "pb-bench: connection %u: %s\n", i, err.message);
                        return 1;
                }
                w[i].lat = all + (size_t) i * arg_gets;
        }
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 128 * 1024);
        pthread_barrier_init(&start_barrier, NULL, arg_conns + 1);
        conc_deadline = now_ns() + (uint64_t) arg_max_seconds * 1000000000u;
        for (unsigned i = 0; i < arg_conns; i++)
                if (pthread_create(&w[i].thread, &attr, worker_main, &w[i]) != 0) {
                        fprintf(stderr, "pb-bench: pthread_create failed\n");
                        return 1;
                }
        t0 = now_ns();
        pthread_barrier_wait(&start_barrier);
        for (unsigned i = 0; i < arg_conns; i++) {
                pthread_join(w[i].thread, NULL);
                memmove(all + n, w[i].lat, w[i].n * sizeof(uint32_t));
                n += w[i].n;
                failed += w[i].failed;
        }
        report("concurrent", all, n, failed, (double) (now_ns() - t0) / 1e9);
        for (unsigned i = 0; i < arg_conns; i++)
                pb_disconnect(w[i].conn);
        return failed ? 1 : 0;
}

static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned *ret) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

/* --count binds of a fresh TCP socket to 127.0.0.1:port, closed at once
 * (never listening: no TIME_WAIT); one sample per BIND_BATCH, in ns per bind. */
static int cmd_binds(unsigned port) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        size_t batches = arg_count / BIND_BATCH, n = 0;
        uint32_t *v = calloc(batches ? batches : 1, sizeof(*v));
        uint64_t t0 = now_ns(), deadline = t0 + (uint64_t) arg_max_seconds * 1000000000u;

        if (!v)
                return 1;
        for (; n < batches && now_ns() < deadline; n++) {
                uint64_t t = now_ns();

                for (unsigned i = 0; i < BIND_BATCH; i++) {
                        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

                        if (fd < 0 || bind(fd, (struct sockaddr *) &sin, sizeof(sin)) < 0) {
                                fprintf(stderr, "pb-bench: bind 127.0.0.1:%u: %s\n", port, strerror(errno));
                                return 1;
                        }
                        close(fd);
                }
                v[n] = (uint32_t) ((now_ns() - t) / BIND_BATCH);
        }
        qsort(v, n, sizeof(*v), cmp_u32);
        printf("{\"what\":\"binds\",\"n\":%zu,\"p50_ns\":%u,\"p99_ns\":%u,\"elapsed_s\":%.4f}\n",
               n * BIND_BATCH, n ? v[(n - 1) / 2] : 0, n ? v[(size_t) ((double) (n - 1) * 0.99)] : 0,
               (double) (now_ns() - t0) / 1e9);
        free(v);
        return n ? 0 : 1;
}

static void usage(FILE *f) {
        fprintf(f, "usage: pb-bench raw-server SOCKPATH PORT\n"
                   "       pb-bench binds PORT [--count N] [--max-seconds S]\n"
                   "       pb-bench get|create|spread|concurrent [--socket PATH] [--mode lib|raw]\n"
                   "                [--endpoint E] [--count N] [--procs P] [--first-port P]\n"
                   "                [--gets N] [--conns N] [--max-seconds S]\n");
}

int main(int argc, char **argv) {
        enum { O_MODE = 0x100, O_SOCKET, O_ENDPOINT, O_COUNT, O_PROCS, O_FIRST, O_GETS, O_CONNS, O_MAXS };
        static const struct option options[] = {
                { "mode", required_argument, NULL, O_MODE },
                { "socket", required_argument, NULL, O_SOCKET },
                { "endpoint", required_argument, NULL, O_ENDPOINT },
                { "count", required_argument, NULL, O_COUNT },
                { "procs", required_argument, NULL, O_PROCS },
                { "first-port", required_argument, NULL, O_FIRST },
                { "gets", required_argument, NULL, O_GETS },
                { "conns", required_argument, NULL, O_CONNS },
                { "max-seconds", required_argument, NULL, O_MAXS },
                {}
        };
        const char *cmd;
        int c, r = 0;

        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        cmd = argv[1];
        signal(SIGPIPE, SIG_IGN);
        if (strcmp(cmd, "raw-server") == 0) {
                unsigned port;

                if (argc != 4 || parse_uint(argv[3], 1, 65535, &port) < 0) {
                        usage(stderr);
                        return 2;
                }
                return raw_server(argv[2], port);
        }
        optind = strcmp(cmd, "binds") == 0 ? 3 : 2;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case O_MODE: arg_mode = optarg; break;
                case O_SOCKET: arg_socket = optarg; break;
                case O_ENDPOINT: arg_endpoint = optarg; break;
                case O_COUNT: r = parse_uint(optarg, 1, MAX_COUNT, &arg_count); break;
                case O_PROCS: r = parse_uint(optarg, 1, MAX_PROCS, &arg_procs); break;
                case O_FIRST: r = parse_uint(optarg, 1, 65535, &arg_first_port); break;
                case O_GETS: r = parse_uint(optarg, 1, MAX_COUNT, &arg_gets); break;
                case O_CONNS: r = parse_uint(optarg, 1, MAX_CONNS, &arg_conns); break;
                case O_MAXS: r = parse_uint(optarg, 1, 3600, &arg_max_seconds); break;
                default: usage(stderr); return 2;
                }
                if (r < 0) {
                        fprintf(stderr, "pb-bench: bad value '%s'\n", optarg);
                        return 2;
                }
        }
        if (strcmp(cmd, "binds") == 0) {
                unsigned port;

                if (argc < 3 || parse_uint(argv[2], 1, 65535, &port) < 0) {
                        usage(stderr);
                        return 2;
                }
                return cmd_binds(port);
        }
        if (!arg_socket) {
                fprintf(stderr, "pb-bench: --socket is required\n");
                return 2;
        }
        if (strcmp(arg_mode, "raw") != 0 && setenv(PB_SOCKET_ENV, arg_socket, 1) < 0)
                return 1;
        if (arg_first_port + arg_count > 65536u && strcmp(cmd, "get") != 0) {
                fprintf(stderr, "pb-bench: --first-port + --count passes 65535\n");
                return 2;
        }
        if (strcmp(cmd, "get") == 0)
                return cmd_get();
        if (strcmp(cmd, "create") == 0)
                return cmd_create();
        if (strcmp(cmd, "spread") == 0)
                return cmd_spread();
        if (strcmp(cmd, "concurrent") == 0)
                return cmd_concurrent();
        usage(stderr);
        return 2;
}
