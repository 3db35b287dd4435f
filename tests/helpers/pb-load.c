/* SPDX-License-Identifier: MIT */
/*
 * pb-load: a bounded loopback load generator for the integration tests and
 * benchmarks. It opens --rate new TCP connections per second for --duration
 * seconds (non-blocking connects on one epoll, many in flight); each
 * connection expects one line "ok ..." and then EOF. Every connection ends
 * in exactly one class: ok, refused (ECONNREFUSED), timed out (connecting,
 * or waiting for the reply), lost (accepted, then EOF or reset with no
 * reply: lost in flight), bad reply, or another error. At the end it prints
 * the counts and connect/reply latencies, as one JSON object with --json.
 * Hard limits keep it a test tool: rate <= 5000/s, duration <= 60 s (so at
 * most 300,000 connections), --max-inflight open at once, loopback
 * addresses only, and a wall-clock bound of duration + timeout + 1 s after
 * which whatever is still open counts as aborted and unstarted ones are
 * reported as not_started. SIGINT/SIGTERM stop it early with a report.
 * --records FILE also writes one line per started connection (for plots):
 * start offset in ms, outcome, connect and total latency in us.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_RATE 5000u
#define MAX_DURATION_S 60.0
#define MAX_TIMEOUT_MS 60000u
#define REPLY_MAX 64                    /* longest reply we keep */
#define N_ERRNO_KINDS 8                 /* distinct "other" errnos we name */

enum conn_state {
        CONN_UNSTARTED = 0,
        CONN_CONNECTING,
        CONN_CONNECTED,
        CONN_DONE,
};

enum outcome {
        OUT_OK,
        OUT_REFUSED,
        OUT_TIMEOUT_CONNECT,
        OUT_TIMEOUT_REPLY,
        OUT_EMPTY,                      /* accepted, then EOF with no reply */
        OUT_RESET,                      /* accepted, then reset with no reply */
        OUT_BAD_REPLY,
        OUT_ERROR,
        OUT_ABORTED,                    /* still in flight when stopped by a signal */
        _OUT_MAX,
};

struct conn {
        int fd;                         /* -1 unless in flight */
        uint8_t state;                  /* enum conn_state */
        uint8_t len;                    /* reply bytes in buf */
        uint8_t connected;              /* the handshake completed */
        uint8_t outcome;                /* enum outcome, once CONN_DONE */
        uint64_t start_ns;              /* connect() call */
        uint32_t connect_us;            /* connect() to established */
        uint32_t total_us;              /* connect() to the reply's EOF */
        char buf[REPLY_MAX];
};

struct errno_kind {
        int err;
        unsigned long count;
};

struct load {
        struct sockaddr_storage addr;
        socklen_t addr_len;
        int epoll_fd;
        struct conn *conns;
        size_t total, started, oldest;  /* conns[oldest..started) may be in flight */
        size_t inflight, max_inflight_seen;
        unsigned long outcome[_OUT_MAX];
        struct errno_kind errors[N_ERRNO_KINDS];
        unsigned long errors_unnamed;
        unsigned long late_starts;      /* connections started late: in-flight limit reached */
        size_t last_late;               /* index of the last one counted there */
};

static const char *arg_addr = "127.0.0.1";
static unsigned arg_port;
static unsigned arg_rate;
static double arg_duration;
static unsigned arg_timeout_ms = 5000;
static unsigned arg_max_inflight = 4096;
static bool arg_json;
static const char *arg_records;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
        stop_requested = sig;
}

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void usage(FILE *f) {
        fprintf(f,
                "usage: pb-load --port P --rate N --duration SEC [OPTIONS]\n"
                "Opens N TCP connections/s to a loopback server expecting \"ok ...\" then EOF.\n"
                "  --addr ADDR         loopback address (default 127.0.0.1; ::1 works)\n"
                "  --rate N            new connections per second, 1..%u\n"
                "  --duration SEC      seconds to run, > 0 and <= %.0f\n"
                "  --timeout-ms T      per-connection timeout (default 5000, max %u)\n"
                "  --max-inflight M    connections open at once (default 4096)\n"
                "  --json              print one JSON object instead of text\n"
                "  --records FILE      write \"start_ms outcome connect_us total_us\" per connection\n",
                MAX_RATE, MAX_DURATION_S, MAX_TIMEOUT_MS);
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

static int parse_addr(struct load *l) {
        memset(&l->addr, 0, sizeof(l->addr));
        if (strchr(arg_addr, ':')) {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &l->addr;

                s6->sin6_family = AF_INET6;
                s6->sin6_port = htons((uint16_t) arg_port);
                if (inet_pton(AF_INET6, arg_addr, &s6->sin6_addr) != 1 ||
                    !IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
                        return -EINVAL;
                l->addr_len = sizeof(*s6);
        } else {
                struct sockaddr_in *s4 = (struct sockaddr_in *) &l->addr;

                s4->sin_family = AF_INET;
                s4->sin_port = htons((uint16_t) arg_port);
                if (inet_pton(AF_INET, arg_addr, &s4->sin_addr) != 1 ||
                    (ntohl(s4->sin_addr.s_addr) >> 24) != 127)
                        return -EINVAL;
                l->addr_len = sizeof(*s4);
        }
        return 0;
}

static int parse_args(int argc, char **argv) {
        enum { OPT_PORT = 0x100, OPT_ADDR, OPT_RATE, OPT_DURATION, OPT_TIMEOUT, OPT_INFLIGHT, OPT_JSON, OPT_RECORDS };
        static const struct option options[] = {
                { "help",         no_argument,       NULL, 'h' },
                { "port",         required_argument, NULL, OPT_PORT },
                { "addr",         required_argument, NULL, OPT_ADDR },
                { "rate",         required_argument, NULL, OPT_RATE },
                { "duration",     required_argument, NULL, OPT_DURATION },
                { "timeout-ms",   required_argument, NULL, OPT_TIMEOUT },
                { "max-inflight", required_argument, NULL, OPT_INFLIGHT },
                { "json",         no_argument,       NULL, OPT_JSON },
                { "records",      required_argument, NULL, OPT_RECORDS },
                {}
        };
        char *end;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        usage(stdout);
                        exit(EXIT_SUCCESS);
                case OPT_PORT:
                        if (parse_uint(optarg, 1, 65535, &arg_port) < 0)
                                goto bad;
                        break;
                case OPT_ADDR:
                        arg_addr = optarg;
                        break;
                case OPT_RATE:
                        if (parse_uint(optarg, 1, MAX_RATE, &arg_rate) < 0)
                                goto bad;
                        break;
                case OPT_DURATION:
                        errno = 0;
                        arg_duration = strtod(optarg, &end);
                        if (errno != 0 || end == optarg || *end != '\0' || !isfinite(arg_duration) ||
                            arg_duration <= 0 || arg_duration > MAX_DURATION_S)
                                goto bad;
                        break;
                case OPT_TIMEOUT:
                        if (parse_uint(optarg, 1, MAX_TIMEOUT_MS, &arg_timeout_ms) < 0)
                                goto bad;
                        break;
                case OPT_INFLIGHT:
                        if (parse_uint(optarg, 1, 60000, &arg_max_inflight) < 0)
                                goto bad;
                        break;
                case OPT_JSON:
                        arg_json = true;
                        break;
                case OPT_RECORDS:
                        arg_records = optarg;
                        break;
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        }
        if (optind != argc) {
                fprintf(stderr, "pb-load: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        if (arg_port == 0 || arg_rate == 0 || arg_duration <= 0) {
                fprintf(stderr, "pb-load: --port, --rate and --duration are required\n");
                usage(stderr);
                return -EINVAL;
        }
        return 0;
bad:
        fprintf(stderr, "pb-load: bad or out-of-range value '%s' for an option (see --help)\n", optarg);
        return -EINVAL;
}

static void count_error(struct load *l, int err) {
        for (size_t i = 0; i < N_ERRNO_KINDS; i++) {
                if (l->errors[i].count == 0)
                        l->errors[i].err = err;
                if (l->errors[i].err == err) {
                        l->errors[i].count++;
                        return;
                }
        }
        l->errors_unnamed++;
}

/* Ends connection c with outcome o (err names OUT_ERROR) and closes its fd. */
static void finish(struct load *l, struct conn *c, enum outcome o, int err, uint64_t now) {
        if (c->fd >= 0) {
                close(c->fd);   /* also removes it from the epoll set */
                c->fd = -1;
                l->inflight--;
        }
        c->state = CONN_DONE;
        c->outcome = (uint8_t) o;
        c->total_us = (uint32_t) ((now - c->start_ns) / 1000u);
        l->outcome[o]++;
        if (o == OUT_ERROR)
                count_error(l, err);
}

static void start_conn(struct load *l, size_t idx, uint64_t now) {
        struct conn *c = &l->conns[idx];
        struct epoll_event ev = { .data.u64 = idx };
        int fd;

        c->start_ns = now;
        fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                finish(l, c, OUT_ERROR, errno, now);
                return;
        }
        c->fd = fd;
        l->inflight++;
        if (l->inflight > l->max_inflight_seen)
                l->max_inflight_seen = l->inflight;

        if (connect(fd, (struct sockaddr *) &l->addr, l->addr_len) == 0) {
                c->state = CONN_CONNECTED;
                c->connected = 1;
                c->connect_us = (uint32_t) ((now_ns() - now) / 1000u);
                ev.events = EPOLLIN | EPOLLRDHUP;
        } else if (errno == EINPROGRESS) {
                c->state = CONN_CONNECTING;
                ev.events = EPOLLOUT;
        } else {
                finish(l, c, errno == ECONNREFUSED ? OUT_REFUSED : OUT_ERROR, errno, now);
                return;
        }
        if (epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
                finish(l, c, OUT_ERROR, errno, now);
}

static void on_connected(struct load *l, struct conn *c, uint64_t now) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t) (c - l->conns) };
        socklen_t sl = sizeof(int);
        int err = 0;

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
                err = errno;
        if (err != 0) {
                if (err == ECONNREFUSED)
                        finish(l, c, OUT_REFUSED, err, now);
                else if (err == ETIMEDOUT)
                        finish(l, c, OUT_TIMEOUT_CONNECT, err, now);
                else
                        finish(l, c, OUT_ERROR, err, now);
                return;
        }
        c->state = CONN_CONNECTED;
        c->connected = 1;
        c->connect_us = (uint32_t) ((now - c->start_ns) / 1000u);
        if (epoll_ctl(l->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                finish(l, c, OUT_ERROR, errno, now);
}

static void on_readable(struct load *l, struct conn *c, uint64_t now) {
        for (;;) {
                char tmp[REPLY_MAX];
                ssize_t n = read(c->fd, tmp, sizeof(tmp));

                if (n > 0) {
                        if ((size_t) n > sizeof(c->buf) - c->len) {
                                finish(l, c, OUT_BAD_REPLY, 0, now);
                                return;
                        }
                        memcpy(c->buf + c->len, tmp, (size_t) n);
                        c->len = (uint8_t) (c->len + n);
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n < 0 && errno != ECONNRESET) {
                        finish(l, c, OUT_ERROR, errno, now);
                        return;
                }
                /* EOF, or a reset after whatever arrived. */
                if (c->len >= 4 && memcmp(c->buf, "ok ", 3) == 0 && c->buf[c->len - 1] == '\n')
                        finish(l, c, OUT_OK, 0, now);
                else if (c->len == 0)
                        finish(l, c, n == 0 ? OUT_EMPTY : OUT_RESET, 0, now);
                else
                        finish(l, c, OUT_BAD_REPLY, 0, now);
                return;
        }
}

static void expire(struct load *l, uint64_t now, uint64_t timeout_ns) {
        while (l->oldest < l->started) {
                struct conn *c = &l->conns[l->oldest];

                if (c->state != CONN_DONE) {
                        if (now - c->start_ns < timeout_ns)
                                return;
                        finish(l, c, c->state == CONN_CONNECTING ? OUT_TIMEOUT_CONNECT : OUT_TIMEOUT_REPLY,
                               0, now);
                }
                l->oldest++;
        }
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;

        return (x > y) - (x < y);
}

struct latency {
        uint32_t p50, p99, max;
        size_t n;
};

/* Latency percentiles: of the handshake over connected connections, or
 * (total) of the whole exchange over the ok ones. */
static struct latency latency_of(const struct load *l, bool total) {
        struct latency r = {};
        uint32_t *v = calloc(l->started ? l->started : 1, sizeof(uint32_t));

        if (!v)
                return r;
        for (size_t i = 0; i < l->started; i++) {
                const struct conn *c = &l->conns[i];

                if (c->state != CONN_DONE)
                        continue;
                if (total ? c->outcome == OUT_OK : c->connected)
                        v[r.n++] = total ? c->total_us : c->connect_us;
        }
        if (r.n > 0) {
                qsort(v, r.n, sizeof(uint32_t), cmp_u32);
                r.p50 = v[(r.n - 1) / 2];
                r.p99 = v[(size_t) ((double) (r.n - 1) * 0.99)];
                r.max = v[r.n - 1];
        }
        free(v);
        return r;
}

static const char *const outcome_names[_OUT_MAX] = {
        [OUT_OK] = "ok",
        [OUT_REFUSED] = "refused",
        [OUT_TIMEOUT_CONNECT] = "timed_out_connect",
        [OUT_TIMEOUT_REPLY] = "timed_out_reply",
        [OUT_EMPTY] = "lost_empty",
        [OUT_RESET] = "lost_reset",
        [OUT_BAD_REPLY] = "bad_reply",
        [OUT_ERROR] = "errors",
        [OUT_ABORTED] = "aborted",
};

/* Writes one line per started connection to arg_records; t0 is the run's start. */
static int write_records(const struct load *l, uint64_t t0) {
        FILE *f = fopen(arg_records, "we");

        if (!f)
                return -errno;
        for (size_t i = 0; i < l->started; i++) {
                const struct conn *c = &l->conns[i];

                fprintf(f, "%.3f %s %u %u\n", (double) (c->start_ns - t0) / 1e6,
                        c->state == CONN_DONE ? outcome_names[c->outcome] : "aborted",
                        c->connected ? c->connect_us : 0, c->total_us);
        }
        if (fclose(f) != 0)
                return -errno;
        return 0;
}

static void report(const struct load *l, double elapsed_s) {
        static const char *const names[_OUT_MAX] = {
                [OUT_OK] = "ok",
                [OUT_REFUSED] = "refused",
                [OUT_TIMEOUT_CONNECT] = "timed_out_connect",
                [OUT_TIMEOUT_REPLY] = "timed_out_reply",
                [OUT_EMPTY] = "lost_empty",
                [OUT_RESET] = "lost_reset",
                [OUT_BAD_REPLY] = "bad_reply",
                [OUT_ERROR] = "errors",
                [OUT_ABORTED] = "aborted",
        };
        struct latency lc = latency_of(l, false), lt = latency_of(l, true);
        unsigned long timed_out = l->outcome[OUT_TIMEOUT_CONNECT] + l->outcome[OUT_TIMEOUT_REPLY];
        unsigned long lost = l->outcome[OUT_EMPTY] + l->outcome[OUT_RESET];

        if (!arg_json) {
                printf("attempted %zu of %zu in %.3f s (rate %u/s, target %s port %u)\n",
                       l->started, l->total, elapsed_s, arg_rate, arg_addr, arg_port);
                for (int i = 0; i < _OUT_MAX; i++)
                        printf("  %-18s %lu\n", names[i], l->outcome[i]);
                for (size_t i = 0; i < N_ERRNO_KINDS && l->errors[i].count > 0; i++)
                        printf("  error %-12s %lu\n", strerrorname_np(l->errors[i].err) ?: "?",
                               l->errors[i].count);
                printf("  connect latency us: p50 %u p99 %u max %u\n", lc.p50, lc.p99, lc.max);
                printf("  reply latency us:   p50 %u p99 %u max %u\n", lt.p50, lt.p99, lt.max);
                printf("  max in flight %zu, late starts %lu\n", l->max_inflight_seen, l->late_starts);
                return;
        }

        printf("{\"addr\":\"%s\",\"port\":%u,\"rate\":%u,\"duration_s\":%.3f,\"elapsed_s\":%.3f,"
               "\"timeout_ms\":%u,\"planned\":%zu,\"attempted\":%zu,\"not_started\":%zu",
               arg_addr, arg_port, arg_rate, arg_duration, elapsed_s, arg_timeout_ms, l->total, l->started,
               l->total - l->started);
        for (int i = 0; i < _OUT_MAX; i++)
                printf(",\"%s\":%lu", names[i], l->outcome[i]);
        printf(",\"timed_out\":%lu,\"lost\":%lu,\"error_kinds\":{", timed_out, lost);
        for (size_t i = 0; i < N_ERRNO_KINDS && l->errors[i].count > 0; i++)
                printf("%s\"%s\":%lu", i ? "," : "", strerrorname_np(l->errors[i].err) ?: "unknown",
                       l->errors[i].count);
        if (l->errors_unnamed > 0)
                printf("%s\"other\":%lu", l->errors[0].count ? "," : "", l->errors_unnamed);
        printf("},\"connect_us\":{\"p50\":%u,\"p99\":%u,\"max\":%u},"
               "\"reply_us\":{\"p50\":%u,\"p99\":%u,\"max\":%u},"
               "\"max_inflight\":%zu,\"late_starts\":%lu}\n",
               lc.p50, lc.p99, lc.max, lt.p50, lt.p99, lt.max, l->max_inflight_seen, l->late_starts);
}

int main(int argc, char **argv) {
        struct load l = { .epoll_fd = -1, .last_late = SIZE_MAX };
        struct epoll_event events[256];
        struct sigaction sa = { .sa_handler = on_signal };
        struct rlimit rl;
        uint64_t t0, interval_ns, timeout_ns, end_ns;

        if (parse_args(argc, argv) < 0)
                return 2;
        if (parse_addr(&l) < 0) {
                fprintf(stderr, "pb-load: '%s' is not a loopback address\n", arg_addr);
                return 2;
        }

        /* One fd per connection in flight, plus a few. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t) arg_max_inflight + 64) {
                rl.rlim_cur = rl.rlim_max < (rlim_t) arg_max_inflight + 64 ? rl.rlim_max
                                                                          : (rlim_t) arg_max_inflight + 64;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
                if (rl.rlim_cur < 128) {
                        fprintf(stderr, "pb-load: RLIMIT_NOFILE too low\n");
                        return 1;
                }
                if (rl.rlim_cur < (rlim_t) arg_max_inflight + 64)
                        arg_max_inflight = (unsigned) rl.rlim_cur - 64;
        }

        l.total = (size_t) ceil((double) arg_rate * arg_duration);
        if (l.total == 0)
                l.total = 1;
        l.conns = calloc(l.total, sizeof(struct conn));
        l.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (!l.conns || l.epoll_fd < 0) {
                fprintf(stderr, "pb-load: setting up: %m\n");
                return 1;
        }
        for (size_t i = 0; i < l.total; i++)
                l.conns[i].fd = -1;

        signal(SIGPIPE, SIG_IGN);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);

        interval_ns = 1000000000u / arg_rate;
        timeout_ns = (uint64_t) arg_timeout_ms * 1000000u;
        t0 = now_ns();
        end_ns = t0 + (uint64_t) (arg_duration * 1e9) + timeout_ns + 1000000000u;

        while (!stop_requested && (l.started < l.total || l.inflight > 0)) {
                uint64_t now = now_ns(), wait_ns = UINT64_MAX;
                int n, timeout_ms;

                if (now > end_ns)       /* cannot happen unless the clock jumps; stay bounded */
                        break;

                while (l.started < l.total && now >= t0 + l.started * interval_ns) {
                        if (l.inflight >= arg_max_inflight) {
                                if (l.last_late != l.started) {
                                        l.late_starts++;
                                        l.last_late = l.started;
                                }
                                break;
                        }
                        start_conn(&l, l.started++, now);
                }
                expire(&l, now, timeout_ns);

                if (l.started < l.total && l.inflight < arg_max_inflight)
                        wait_ns = t0 + l.started * interval_ns > now ? t0 + l.started * interval_ns - now : 0;
                if (l.oldest < l.started) {
                        uint64_t deadline = l.conns[l.oldest].start_ns + timeout_ns;
                        uint64_t w = deadline > now ? deadline - now : 0;

                        if (w < wait_ns)
                                wait_ns = w;
                }
                if (wait_ns == UINT64_MAX)
                        timeout_ms = 1000;
                else
                        timeout_ms = (int) ((wait_ns + 999999u) / 1000000u);

                n = epoll_wait(l.epoll_fd, events, (int) (sizeof(events) / sizeof(events[0])), timeout_ms);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        fprintf(stderr, "pb-load: epoll_wait: %m\n");
                        return 1;
                }
                now = now_ns();
                for (int i = 0; i < n; i++) {
                        struct conn *c = &l.conns[events[i].data.u64];

                        if (c->state == CONN_CONNECTING)
                                on_connected(&l, c, now);
                        else if (c->state == CONN_CONNECTED)
                                on_readable(&l, c, now);
                }
        }

        {
                uint64_t now = now_ns();

                for (size_t i = l.oldest; i < l.started; i++)
                        if (l.conns[i].state != CONN_DONE)
                                finish(&l, &l.conns[i], OUT_ABORTED, 0, now);
                report(&l, (double) (now - t0) / 1e9);
                if (arg_records) {
                        int r = write_records(&l, t0);

                        if (r < 0) {
                                fprintf(stderr, "pb-load: writing %s: %s\n", arg_records, strerror(-r));
                                return 1;
                        }
                }
        }
        close(l.epoll_fd);
        free(l.conns);
        return 0;
}
