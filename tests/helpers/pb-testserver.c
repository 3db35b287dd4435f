/* SPDX-License-Identifier: MIT */
/*
 * pb-testserver: the server the integration tests and benchmarks restart.
 * It either takes its sockets from socket activation (LISTEN_FDS, fd 3 on,
 * as `portctl get ... -- pb-testserver` passes them) or binds one itself
 * with `--bind PORT`. On a TCP listener it accepts one connection at a time,
 * writes "ok PID\n" and closes it; on a UDP socket it writes each datagram's
 * payload as one line to stdout or --out FILE. Once it serves it says so:
 * "ready PID" on stdout, and optionally a --ready-file and sd_notify READY=1.
 * --delay-ms simulates start-up work before the server listens or accepts.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#define MAX_FDS 16

enum {
        EXIT_USAGE = 2,
        EXIT_BIND = 3,                  /* bind() failed: the tests look for this */
};

static const char *arg_addr = "::";
static unsigned arg_port;               /* 0: socket activation */
static bool arg_udp;
static int arg_reuseaddr = 1;
static int arg_backlog = SOMAXCONN;
static unsigned arg_delay_ms;
static const char *arg_out;
static const char *arg_ready_file;
static bool arg_notify;
static bool arg_die_with_parent;

static void usage(FILE *f) {
        fprintf(f,
                "usage: pb-testserver [OPTIONS]\n"
                "Serves sockets from socket activation (LISTEN_FDS) or binds one itself.\n"
                "  --bind PORT         bind ADDR:PORT instead of using LISTEN_FDS\n"
                "  --addr ADDR         address for --bind (default ::, dual-stack)\n"
                "  --udp               bind a UDP socket (default TCP)\n"
                "  --reuseaddr         set SO_REUSEADDR before bind (default)\n"
                "  --no-reuseaddr      do not set SO_REUSEADDR\n"
                "  --backlog N         listen() backlog for --bind (default SOMAXCONN)\n"
                "  --delay-ms MS       start-up delay before listening/accepting\n"
                "  --out FILE          append UDP payload lines to FILE (default stdout)\n"
                "  --ready-file FILE   write our pid to FILE once serving\n"
                "  --notify            also send READY=1 with sd_notify()\n"
                "  --die-with-parent   exit on SIGTERM when the parent dies\n");
}

static int parse_uint(const char *s, unsigned long max, unsigned long *ret) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_args(int argc, char **argv) {
        enum {
                OPT_BIND = 0x100, OPT_ADDR, OPT_UDP, OPT_REUSEADDR, OPT_NO_REUSEADDR, OPT_BACKLOG,
                OPT_DELAY, OPT_OUT, OPT_READY_FILE, OPT_NOTIFY, OPT_DIE_WITH_PARENT,
        };
        static const struct option options[] = {
                { "help",            no_argument,       NULL, 'h' },
                { "bind",            required_argument, NULL, OPT_BIND },
                { "addr",            required_argument, NULL, OPT_ADDR },
                { "udp",             no_argument,       NULL, OPT_UDP },
                { "reuseaddr",       no_argument,       NULL, OPT_REUSEADDR },
                { "no-reuseaddr",    no_argument,       NULL, OPT_NO_REUSEADDR },
                { "backlog",         required_argument, NULL, OPT_BACKLOG },
                { "delay-ms",        required_argument, NULL, OPT_DELAY },
                { "out",             required_argument, NULL, OPT_OUT },
                { "ready-file",      required_argument, NULL, OPT_READY_FILE },
                { "notify",          no_argument,       NULL, OPT_NOTIFY },
                { "die-with-parent", no_argument,       NULL, OPT_DIE_WITH_PARENT },
                {}
        };
        unsigned long v;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        usage(stdout);
                        exit(EXIT_SUCCESS);
                case OPT_BIND:
                        if (parse_uint(optarg, 65535, &v) < 0 || v == 0)
                                goto bad;
                        arg_port = (unsigned) v;
                        break;
                case OPT_ADDR:
                        arg_addr = optarg;
                        break;
                case OPT_UDP:
                        arg_udp = true;
                        break;
                case OPT_REUSEADDR:
                        arg_reuseaddr = 1;
                        break;
                case OPT_NO_REUSEADDR:
                        arg_reuseaddr = 0;
                        break;
                case OPT_BACKLOG:
                        if (parse_uint(optarg, INT_MAX, &v) < 0)
                                goto bad;
                        arg_backlog = (int) v;
                        break;
                case OPT_DELAY:
                        if (parse_uint(optarg, 600000, &v) < 0)
                                goto bad;
                        arg_delay_ms = (unsigned) v;
                        break;
                case OPT_OUT:
                        arg_out = optarg;
                        break;
                case OPT_READY_FILE:
                        arg_ready_file = optarg;
                        break;
                case OPT_NOTIFY:
                        arg_notify = true;
                        break;
                case OPT_DIE_WITH_PARENT:
                        arg_die_with_parent = true;
                        break;
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        }
        if (optind != argc) {
                fprintf(stderr, "pb-testserver: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        return 0;
bad:
        fprintf(stderr, "pb-testserver: bad value '%s' for an option\n", optarg);
        return -EINVAL;
}

static void sleep_ms(unsigned ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Binds arg_addr:arg_port; returns the socket fd or exits with EXIT_BIND. */
static int bind_socket(void) {
        struct sockaddr_storage ss = {};
        socklen_t sl;
        int family, fd, zero = 0;

        if (strchr(arg_addr, ':')) {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *) &ss;

                family = AF_INET6;
                s6->sin6_family = AF_INET6;
                s6->sin6_port = htons((uint16_t) arg_port);
                if (inet_pton(AF_INET6, arg_addr, &s6->sin6_addr) != 1)
                        goto bad_addr;
                sl = sizeof(*s6);
        } else {
                struct sockaddr_in *s4 = (struct sockaddr_in *) &ss;

                family = AF_INET;
                s4->sin_family = AF_INET;
                s4->sin_port = htons((uint16_t) arg_port);
                if (inet_pton(AF_INET, arg_addr, &s4->sin_addr) != 1)
                        goto bad_addr;
                sl = sizeof(*s4);
        }

        fd = socket(family, (arg_udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                fprintf(stderr, "pb-testserver: socket: %m\n");
                exit(EXIT_FAILURE);
        }
        if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0) {
                fprintf(stderr, "pb-testserver: IPV6_V6ONLY: %m\n");
                exit(EXIT_FAILURE);
        }
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &arg_reuseaddr, sizeof(arg_reuseaddr)) < 0) {
                fprintf(stderr, "pb-testserver: SO_REUSEADDR: %m\n");
                exit(EXIT_FAILURE);
        }
        if (bind(fd, (struct sockaddr *) &ss, sl) < 0) {
                fprintf(stderr, "pb-testserver: bind %s port %u: %s (%s)\n", arg_addr, arg_port,
                        strerror(errno), strerrorname_np(errno) ?: "?");
                exit(EXIT_BIND);
        }
        if (!arg_udp && listen(fd, arg_backlog) < 0) {
                fprintf(stderr, "pb-testserver: listen: %m\n");
                exit(EXIT_FAILURE);
        }
        return fd;

bad_addr:
        fprintf(stderr, "pb-testserver: bad address '%s'\n", arg_addr);
        exit(EXIT_USAGE);
}

static int write_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, buf, len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                buf += n;
                len -= (size_t) n;
        }
        return 0;
}

static void signal_ready(void) {
        char line[64];
        int n;

        n = snprintf(line, sizeof(line), "ready %d\n", (int) getpid());
        if (write_all(STDOUT_FILENO, line, (size_t) n) < 0)
                fprintf(stderr, "pb-testserver: writing readiness: %m\n");

        if (arg_ready_file) {
                char tmp[PATH_MAX];
                int fd;

                if ((size_t) snprintf(tmp, sizeof(tmp), "%s.tmp", arg_ready_file) >= sizeof(tmp)) {
                        fprintf(stderr, "pb-testserver: --ready-file path too long\n");
                        exit(EXIT_USAGE);
                }
                fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0 || write_all(fd, line + 6, (size_t) n - 6) < 0 || close(fd) < 0 ||
                    rename(tmp, arg_ready_file) < 0) {
                        fprintf(stderr, "pb-testserver: writing %s: %m\n", arg_ready_file);
                        exit(EXIT_FAILURE);
                }
        }
        if (arg_notify)
                (void) sd_notify(0, "READY=1");
}

/* Accepts one connection, if any is ready, and answers it. Returns -errno only
 * when the listener itself is broken. */
static int serve_tcp(int fd, const char *reply, size_t reply_len) {
        int conn_fd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

        if (conn_fd < 0) {
                switch (errno) {
                case EAGAIN: case EINTR: case ECONNABORTED: case EPROTO:
                case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM:
                        return 0;
                default:
                        return -errno;
                }
        }
        (void) send(conn_fd, reply, reply_len, MSG_NOSIGNAL);
        close(conn_fd);
        return 0;
}

/* Reads one datagram, if any, and appends its payload as a line to out_fd. */
static int serve_udp(int fd, int out_fd) {
        static char buf[65536 + 1];
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

        if (n < 0)
                return (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED) ? 0 : -errno;
        while (n > 0 && buf[n - 1] == '\n')
                n--;
        buf[n++] = '\n';
        return write_all(out_fd, buf, (size_t) n);
}

int main(int argc, char **argv) {
        struct pollfd pfd[MAX_FDS];
        bool is_stream[MAX_FDS];
        char reply[32];
        int n_fds, reply_len, out_fd = STDOUT_FILENO;

        if (parse_args(argc, argv) < 0)
                return EXIT_USAGE;

        signal(SIGPIPE, SIG_IGN);
        if (arg_die_with_parent) {
                if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0) {
                        fprintf(stderr, "pb-testserver: PR_SET_PDEATHSIG: %m\n");
                        return EXIT_FAILURE;
                }
                if (getppid() == 1)
                        return EXIT_FAILURE;
        }

        if (arg_out) {
                out_fd = open(arg_out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (out_fd < 0) {
                        fprintf(stderr, "pb-testserver: open %s: %m\n", arg_out);
                        return EXIT_FAILURE;
                }
        }

        if (arg_port > 0) {
                sleep_ms(arg_delay_ms);
                pfd[0].fd = bind_socket();
                n_fds = 1;
        } else {
                n_fds = sd_listen_fds(1);
                if (n_fds < 0) {
                        fprintf(stderr, "pb-testserver: sd_listen_fds: %s\n", strerror(-n_fds));
                        return EXIT_FAILURE;
                }
                if (n_fds == 0) {
                        fprintf(stderr, "pb-testserver: no sockets passed (LISTEN_FDS) and no --bind\n");
                        return EXIT_USAGE;
                }
                if (n_fds > MAX_FDS) {
                        fprintf(stderr, "pb-testserver: %d sockets passed, at most %d served\n",
                                n_fds, MAX_FDS);
                        n_fds = MAX_FDS;
                }
                for (int i = 0; i < n_fds; i++)
                        pfd[i].fd = SD_LISTEN_FDS_START + i;
                sleep_ms(arg_delay_ms);
        }

        for (int i = 0; i < n_fds; i++) {
                int type;
                socklen_t tl = sizeof(type);

                if (getsockopt(pfd[i].fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) {
                        fprintf(stderr, "pb-testserver: fd %d is not a socket: %m\n", pfd[i].fd);
                        return EXIT_FAILURE;
                }
                is_stream[i] = type == SOCK_STREAM;
                pfd[i].events = POLLIN;
        }

        reply_len = snprintf(reply, sizeof(reply), "ok %d\n", (int) getpid());
        signal_ready();

        for (;;) {
                if (poll(pfd, (nfds_t) n_fds, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        fprintf(stderr, "pb-testserver: poll: %m\n");
                        return EXIT_FAILURE;
                }
                for (int i = 0; i < n_fds; i++) {
                        int r;

                        if (pfd[i].revents == 0)
                                continue;
                        r = is_stream[i] ? serve_tcp(pfd[i].fd, reply, (size_t) reply_len)
                                         : serve_udp(pfd[i].fd, out_fd);
                        if (r < 0) {
                                fprintf(stderr, "pb-testserver: serving fd %d: %s\n", pfd[i].fd,
                                        strerror(-r));
                                return EXIT_FAILURE;
                        }
                        if (is_stream[i] && (pfd[i].revents & (POLLHUP | POLLERR | POLLNVAL)) &&
                            !(pfd[i].revents & POLLIN)) {
                                fprintf(stderr, "pb-testserver: listener fd %d is shut down\n", pfd[i].fd);
                                return EXIT_FAILURE;
                        }
                }
        }
}
