/* SPDX-License-Identifier: MIT */
/*
 * libportbroker-preload.so: lets a server that binds its own sockets get
 * brokerd's instead, unchanged, under `portctl run`. It interposes bind():
 * when a TCP or UDP AF_INET/AF_INET6 socket is bound to an endpoint the
 * caller may hold, brokerd's socket takes its place on the same fd number
 * (its FD_CLOEXEC and O_NONBLOCK kept) and bind() returns 0; every other
 * bind() passes through untouched, errno included. The lease asked for is
 * exactly what the server made: its family (0.0.0.0:P is an IPv4 lease),
 * its type, and for [::] its IPV6_V6ONLY (tcp6:[::]:P, or the dual-stack
 * tcp:[::]:P); the options it set before bind() are carried over
 * (carry_options()). On a socket it swapped in, listen() never shrinks the
 * broker's backlog, and SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY are
 * left as brokerd set them. accept() and epoll_ctl(ADD) on one tell
 * `portctl upgrade` that the server serves.
 *
 * A Unix stream socket bound to a path is brokered only when that path is
 * named (`unix:/run/app/app.sock`); its file is brokerd's, made with the
 * owner, group and mode the rule gives. A server that removes the file
 * before bind() or at exit (gunicorn, php-fpm) or sets its owner or mode
 * would undo that: unlink(), unlinkat(), remove(), chmod(), fchmodat(),
 * chown(), lchown() and fchownat() of a named path succeed and do nothing.
 *
 * Only the wrapped calls are exported (preload.sym). Each wrapper calls the
 * next definition (RTLD_NEXT, found once at load: other preloaded libraries
 * and glibc's cancellation points keep working) and otherwise works on stack
 * buffers with plain system calls; nothing allocates or takes a lock. That
 * keeps listen(), setsockopt(), accept() and epoll_ctl() async-signal-safe
 * where the calls they wrap are; a bind() that asks brokerd is not (it waits
 * up to BROKER_TIMEOUT_SEC for the reply, and a refusal is formatted with
 * snprintf()). The connection to brokerd is close-on-exec and closed before
 * bind() returns. Configuration
 * comes from the environment, read once at load (never in a set-user-ID or
 * file-capability program: there every bind() passes through):
 *   PORTBROKER_PRELOAD_ENDPOINTS  comma-separated endpoints to broker (a
 *                                 dual-stack wildcard, such as a bare port,
 *                                 stands for each wildcard of its port:
 *                                 0.0.0.0, [::] and [::] IPv6-only); unset
 *                                 or empty: try every bind to a port, and
 *                                 pass through whatever brokerd refuses
 *   PORTBROKER_SOCKET             brokerd's control socket
 *   PORTBROKER_READY              abstract socket name to report serving to
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "endpoint.h"
#include "fd-util.h"
#include "fdpass.h"
#include "portbroker.h"
#include "proto.h"
#include "sockopt.h"

#define ENDPOINTS_MAX 64
#define BROKERED_MAX 256                /* sockets swapped in, by SO_COOKIE */
#define BROKER_TIMEOUT_SEC 10

static struct {
        bool all;                       /* no endpoint list: try every bind to a port */
        size_t n_endpoints;
        size_t n_unix;                  /* of them Unix endpoints: paths to keep */
        struct pb_endpoint endpoints[ENDPOINTS_MAX];
        struct sockaddr_un control;
        struct sockaddr_un ready;       /* abstract; sun_path[1] == 0: none */
        socklen_t ready_len;
} cfg;

static uint64_t brokered[BROKERED_MAX]; /* cookies of the sockets swapped in */
static unsigned brokered_next;
static int ready_sent;

/* The definitions we wrap, resolved once at load; NULL: the system call itself. */
static struct {
        int (*bind)(int, const struct sockaddr *, socklen_t);
        int (*listen)(int, int);
        int (*setsockopt)(int, int, int, const void *, socklen_t);
        int (*accept)(int, struct sockaddr *, socklen_t *);
        int (*accept4)(int, struct sockaddr *, socklen_t *, int);
        int (*epoll_ctl)(int, int, int, struct epoll_event *);
        int (*shutdown)(int, int);
        int (*unlink)(const char *);
        int (*unlinkat)(int, const char *, int);
        int (*remove)(const char *);
        int (*chmod)(const char *, mode_t);
        int (*fchmodat)(int, const char *, mode_t, int);
        int (*chown)(const char *, uid_t, gid_t);
        int (*lchown)(const char *, uid_t, gid_t);
        int (*fchownat)(int, const char *, uid_t, gid_t, int);
} next;

static int next_bind(int fd, const struct sockaddr *sa, socklen_t len) {
        return next.bind ? next.bind(fd, sa, len) : (int) syscall(SYS_bind, fd, sa, len);
}

static int next_setsockopt(int fd, int level, int name, const void *value, socklen_t len) {
        return next.setsockopt ? next.setsockopt(fd, level, name, value, len)
                               : (int) syscall(SYS_setsockopt, fd, level, name, value, len);
}

static void parse_endpoints(const char *list) {
        char item[PB_ENDPOINT_STRLEN];

        while (list && *list && cfg.n_endpoints < ENDPOINTS_MAX) {
                size_t len = strcspn(list, ",");

                if (len < sizeof(item)) {
                        memcpy(item, list, len);
                        item[len] = '\0';
                        if (endpoint_parse(item, &cfg.endpoints[cfg.n_endpoints]) == 0)
                                cfg.n_unix += endpoint_is_unix(&cfg.endpoints[cfg.n_endpoints++]);
                }
                list += len + (list[len] == ',');
        }
}

__attribute__((constructor)) static void preload_init(void) {
        const char *list = secure_getenv("PORTBROKER_PRELOAD_ENDPOINTS");
        const char *path = secure_getenv(PB_SOCKET_ENV);
        const char *ready = secure_getenv("PORTBROKER_READY");

        next.bind = (int (*)(int, const struct sockaddr *, socklen_t)) dlsym(RTLD_NEXT, "bind");
        next.listen = (int (*)(int, int)) dlsym(RTLD_NEXT, "listen");
        next.setsockopt = (int (*)(int, int, int, const void *, socklen_t)) dlsym(RTLD_NEXT, "setsockopt");
        next.accept = (int (*)(int, struct sockaddr *, socklen_t *)) dlsym(RTLD_NEXT, "accept");
        next.accept4 = (int (*)(int, struct sockaddr *, socklen_t *, int)) dlsym(RTLD_NEXT, "accept4");
        next.epoll_ctl = (int (*)(int, int, int, struct epoll_event *)) dlsym(RTLD_NEXT, "epoll_ctl");
        next.shutdown = (int (*)(int, int)) dlsym(RTLD_NEXT, "shutdown");
        next.unlink = (int (*)(const char *)) dlsym(RTLD_NEXT, "unlink");
        next.unlinkat = (int (*)(int, const char *, int)) dlsym(RTLD_NEXT, "unlinkat");
        next.remove = (int (*)(const char *)) dlsym(RTLD_NEXT, "remove");
        next.chmod = (int (*)(const char *, mode_t)) dlsym(RTLD_NEXT, "chmod");
        next.fchmodat = (int (*)(int, const char *, mode_t, int)) dlsym(RTLD_NEXT, "fchmodat");
        next.chown = (int (*)(const char *, uid_t, gid_t)) dlsym(RTLD_NEXT, "chown");
        next.lchown = (int (*)(const char *, uid_t, gid_t)) dlsym(RTLD_NEXT, "lchown");
        next.fchownat = (int (*)(int, const char *, uid_t, gid_t, int)) dlsym(RTLD_NEXT, "fchownat");
        /* A set-user-ID or file-capability program (secure execution) is
         * not steered by its caller's environment, which secure_getenv()
         * does not read there: the shim (loaded into one only through
         * /etc/ld.so.preload) then brokers no bind at all. */
        if (getauxval(AT_SECURE))
                return;
        parse_endpoints(list);
        cfg.all = !list || !*list;
        if (!path || !*path || strlen(path) >= sizeof(cfg.control.sun_path))
                path = PB_DEFAULT_SOCKET;
        cfg.control.sun_family = AF_UNIX;
        strcpy(cfg.control.sun_path, path);
        if (ready && *ready && strlen(ready) < sizeof(cfg.ready.sun_path) - 1) {
                cfg.ready.sun_family = AF_UNIX;
                strcpy(cfg.ready.sun_path + 1, ready);
                cfg.ready_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + strlen(ready));
        }
}

static bool endpoint_of(int fd, const struct sockaddr *sa, socklen_t len, struct pb_endpoint *ret);
static bool wanted(const struct pb_endpoint *e);

/* True for a socket swapped in here, or, with named endpoints, one bound to
 * one of them: brokerd holds those, so no other socket can be (this is what
 * still knows them after an exec, which empties the table). */
static bool is_brokered(int fd) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        struct pb_endpoint e;
        uint64_t c = socket_cookie(fd);

        for (unsigned i = 0; c && i < BROKERED_MAX; i++)
                if (__atomic_load_n(&brokered[i], __ATOMIC_RELAXED) == c)
                        return true;
        if (!c || cfg.all || getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                return false;
        return endpoint_of(fd, (struct sockaddr *) &ss, len, &e) && wanted(&e);
}

/* Appends the decimal digits of n to buf at *used (room permitting). */
static void append_number(char *buf, size_t size, size_t *used, unsigned long n) {
        char digits[24];
        size_t k = 0;

        do
                digits[k++] = (char) ('0' + n % 10);
        while ((n /= 10) > 0);
        while (k > 0 && *used + 1 < size)
                buf[(*used)++] = digits[--k];
}

/*
 * The Unix endpoint that path (n bytes, no NUL among them) names: when it
 * is relative, under dir_fd's directory (AT_FDCWD: the working one); empty
 * and `.` components dropped, as the kernel resolves names. A path with a
 * `..` component, or one too long for an endpoint, is none.
 */
static bool unix_endpoint_at(int dir_fd, const char *path, size_t n, struct pb_endpoint *ret) {
        char full[PATH_MAX], text[sizeof("unix:") + PB_UNIX_PATH_MAX + 1];
        size_t used = 0, t = 5;

        if (n == 0 || n >= sizeof(full) - 1)
                return false;
        if (path[0] != '/') {
                if (dir_fd == AT_FDCWD) {
                        if (!getcwd(full, sizeof(full) - 1 - n))
                                return false;
                        used = strlen(full);
                } else {
                        char link[32] = "/proc/self/fd/";
                        size_t k = strlen(link);
                        ssize_t got;

                        if (dir_fd < 0)
                                return false;
                        append_number(link, sizeof(link), &k, (unsigned long) dir_fd);
                        link[k] = '\0';
                        got = readlink(link, full, sizeof(full) - 1 - n);
                        if (got <= 0 || full[0] != '/' || (size_t) got >= sizeof(full) - 1 - n)
                                return false;
                        used = (size_t) got;
                }
                full[used++] = '/';
        }
        memcpy(full + used, path, n);
        used += n;
        memcpy(text, "unix:", t);
        for (size_t i = 0; i < used;) {
                size_t len = 0;

                while (i < used && full[i] == '/')
                        i++;
                while (i + len < used && full[i + len] != '/')
                        len++;
                if (len == 0 || (len == 1 && full[i] == '.')) {
                        i += len;
                        continue;
                }
                if ((len == 2 && full[i] == '.' && full[i + 1] == '.') || t + 1 + len >= sizeof(text))
                        return false;
                text[t++] = '/';
                memcpy(text + t, full + i, len);
                t += len;
                i += len;
        }
        text[t] = '\0';
        return endpoint_parse(text, ret) == 0;
}

/* The endpoint a bind() of fd to sa means, if it is one brokerd can hold. */
static bool endpoint_of(int fd, const struct sockaddr *sa, socklen_t len, struct pb_endpoint *ret) {
        struct pb_endpoint e = { 0 };
        int type, protocol;

        if (!sa)
                return false;
        if (sa->sa_family == AF_UNIX) {
                const struct sockaddr_un *un = (const struct sockaddr_un *) sa;
                size_t max = len > offsetof(struct sockaddr_un, sun_path)
                                     ? len - offsetof(struct sockaddr_un, sun_path) : 0;

                /* A stream socket bound to a pathname (not abstract, not unnamed);
                 * only named ones are brokered, so none at all without a name. */
                if (!cfg.n_unix || max == 0 || sockopt_get_int(fd, SOL_SOCKET, SO_DOMAIN) != AF_UNIX ||
                    sockopt_get_int(fd, SOL_SOCKET, SO_TYPE) != SOCK_STREAM)
                        return false;
                return unix_endpoint_at(AT_FDCWD, un->sun_path,
                                        strnlen(un->sun_path, max < sizeof(un->sun_path) ? max : sizeof(un->sun_path)),
                                        ret);
        }
        if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
                const struct sockaddr_in *sin = (const struct sockaddr_in *) sa;
                e.family = PB_FAMILY_INET;
                e.port_lo = ntohs(sin->sin_port);
                memcpy(e.addr, &sin->sin_addr, 4);
        } else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
                const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) sa;
                e.port_lo = ntohs(sin6->sin6_port);
                memcpy(e.addr, &sin6->sin6_addr, 16);
                /* [::] is the dual-stack lease, or with IPV6_V6ONLY the IPv6-only
                 * one (tcp6:[::]:P); v4-mapped and scoped addresses stay the server's own. */
                if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) || sin6->sin6_scope_id)
                        return false;
                if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr) && sockopt_get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY) == 0)
                        e.family = PB_FAMILY_ANY;
                else
                        e.family = PB_FAMILY_INET6;
        } else
                return false;
        if (e.port_lo == 0 || sockopt_get_int(fd, SOL_SOCKET, SO_DOMAIN) != sa->sa_family)
                return false;
        type = sockopt_get_int(fd, SOL_SOCKET, SO_TYPE);
        protocol = sockopt_get_int(fd, SOL_SOCKET, SO_PROTOCOL);
        if (type == SOCK_STREAM && protocol == IPPROTO_TCP)
                e.transport = PB_TCP;
        else if (type == SOCK_DGRAM && protocol == IPPROTO_UDP)
                e.transport = PB_UDP;
        else
                return false;
        e.port_hi = e.port_lo;
        *ret = e;
        return true;
}

static bool is_wildcard(const struct pb_endpoint *e) {
        static const uint8_t zero[16];

        return memcmp(e->addr, zero, sizeof(zero)) == 0;
}

/* Whether e is named: exactly, or as a wildcard of a port named as a
 * whole (a dual-stack wildcard: `portctl run 8080` serves a server that
 * binds 0.0.0.0:8080, [::]:8080 or both with IPV6_V6ONLY, each with the
 * lease of what it made). With no endpoint named, every port is, and no
 * Unix path. */
static bool wanted(const struct pb_endpoint *e) {
        if (cfg.all)
                return !endpoint_is_unix(e);
        for (size_t i = 0; i < cfg.n_endpoints; i++) {
                const struct pb_endpoint *n = &cfg.endpoints[i];

                if (endpoint_equal(n, e) || (n->family == PB_FAMILY_ANY && !endpoint_is_unix(n) &&
                                             n->transport == e->transport && n->port_lo == e->port_lo &&
                                             is_wildcard(e)))
                        return true;
        }
        return false;
}

/* One GET over a connection of our own. Returns the fd or -errno; msg gets brokerd's words. */
static int broker_get(const struct pb_endpoint *e, char *msg, size_t msglen) {
        struct timeval tv = { .tv_sec = BROKER_TIMEOUT_SEC };
        uint8_t buf[PB_MSG_MAX];
        struct pb_msg m;
        int sock_fd, got_fd = -1, n, r;

        msg[0] = '\0';
        sock_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (sock_fd < 0)
                return -errno;
        (void) next_setsockopt(sock_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void) next_setsockopt(sock_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(sock_fd, (struct sockaddr *) &cfg.control, sizeof(cfg.control)) < 0) {
                r = -errno;
                goto out;
        }
        memset(&m.hdr, 0, sizeof(m.hdr));
        m.hdr.type = PB_MSG_GET;
        m.hdr.id = 1;
        m.get.endpoint = *e;
        n = proto_encode(&m, buf, sizeof(buf));
        r = n < 0 ? n : fdpass_send(sock_fd, buf, (size_t) n, -1, 0);
        if (r < 0)
                goto out;
        n = fdpass_recv(sock_fd, buf, sizeof(buf), &got_fd, 0);
        r = n <= 0 ? (n < 0 ? n : -ECONNRESET) : proto_decode(buf, (size_t) n, &m);
        if (r < 0)
                goto out;
        if (m.hdr.type == PB_MSG_ERROR) {
                size_t k = strnlen(m.error.message, msglen - 1);
                memcpy(msg, m.error.message, k);
                msg[k] = '\0';
                r = -m.error.code;
        } else if (m.hdr.type != (PB_MSG_GET | PB_MSG_REPLY) || m.hdr.id != 1 || got_fd < 0 ||
                   !endpoint_equal(&m.got.endpoint, e))
                r = -EBADMSG;
        else {
                r = got_fd;
                got_fd = -1;
        }
out:
        got_fd = safe_close(got_fd);
        sock_fd = safe_close(sock_fd);
        return r;
}

/* One line on stderr with write(2): what failed, why. */
static void complain(const struct pb_endpoint *e, int code, const char *msg) {
        char text[PB_ENDPOINT_STRLEN], line[512];
        size_t n = 0;
        const char *parts[] = { "portbroker-preload: cannot get ", endpoint_format(e, text), " from brokerd: ",
                                msg[0] ? msg : strerrordesc_np(code) ? strerrordesc_np(code) : "error",
                                "\n" };

        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
                size_t k = strnlen(parts[i], sizeof(line) - 1 - n);
                memcpy(line + n, parts[i], k);
                n += k;
        }
        (void) !write(STDERR_FILENO, line, n);
}

/*
 * The options a server sets before bind() that brokerd's socket can take
 * for it: those of its buffers, what it receives with each datagram or
 * connection (IP_PKTINFO, IPV6_RECVPKTINFO, timestamps, ...), and what its
 * accepted connections inherit (TCP_NODELAY, keepalive, ...). Each is read
 * from the server's socket and set on brokerd's where the two differ; a
 * value the kernel refuses (SO_RCVBUF above net.core.rmem_max without
 * SO_RCVBUFFORCE's privilege) is left. Never carried, by design:
 * SO_REUSEADDR, SO_REUSEPORT and IPV6_V6ONLY (brokerd's choice, the last
 * one chose the lease), SO_BINDTODEVICE, SO_MARK and IP_TRANSPARENT (they
 * change which packets the port gets, or need privilege the server's
 * bind() did not), socket filters (brokerd detaches them before each
 * hand-out), and multicast group memberships (getsockopt() cannot read
 * them: join after bind()). portctl(1) has the list.
 */
static const struct carried_option {
        int level, name;
        int family;                     /* 0: any; AF_INET or AF_INET6: that family's sockets only */
        int transport;                  /* 0: any; SOCK_STREAM or SOCK_DGRAM */
        bool buffer;                    /* SO_RCVBUF/SO_SNDBUF: read back doubled, set half */
} carried_options[] = {
        { SOL_SOCKET, SO_RCVBUF, 0, 0, true },
        { SOL_SOCKET, SO_SNDBUF, 0, 0, true },
        { SOL_SOCKET, SO_KEEPALIVE, 0, SOCK_STREAM, false },
        { SOL_SOCKET, SO_OOBINLINE, 0, SOCK_STREAM, false },
        { SOL_SOCKET, SO_LINGER, 0, SOCK_STREAM, false },
        { SOL_SOCKET, SO_BROADCAST, 0, SOCK_DGRAM, false },
        { SOL_SOCKET, SO_PRIORITY, 0, 0, false },
        { SOL_SOCKET, SO_RCVLOWAT, 0, 0, false },
        { SOL_SOCKET, SO_TIMESTAMP, 0, 0, false },
        { SOL_SOCKET, SO_TIMESTAMPNS, 0, 0, false },
        { SOL_SOCKET, SO_RXQ_OVFL, 0, SOCK_DGRAM, false },
        { SOL_SOCKET, SO_PASSCRED, AF_UNIX, 0, false },
        { SOL_SOCKET, SO_PASSSEC, AF_UNIX, 0, false },
        { IPPROTO_IP, IP_PKTINFO, AF_INET, 0, false },
        { IPPROTO_IP, IP_RECVTOS, AF_INET, 0, false },
        { IPPROTO_IP, IP_RECVTTL, AF_INET, 0, false },
        { IPPROTO_IP, IP_RECVERR, AF_INET, 0, false },
        { IPPROTO_IP, IP_RECVORIGDSTADDR, AF_INET, SOCK_DGRAM, false },
        { IPPROTO_IP, IP_TOS, AF_INET, 0, false },
        { IPPROTO_IP, IP_TTL, AF_INET, 0, false },
        { IPPROTO_IP, IP_MTU_DISCOVER, AF_INET, 0, false },
        { IPPROTO_IP, IP_FREEBIND, AF_INET, 0, false },
        { IPPROTO_IP, IP_MULTICAST_TTL, AF_INET, SOCK_DGRAM, false },
        { IPPROTO_IP, IP_MULTICAST_LOOP, AF_INET, SOCK_DGRAM, false },
        { IPPROTO_IPV6, IPV6_RECVPKTINFO, AF_INET6, 0, false },
        { IPPROTO_IPV6, IPV6_RECVTCLASS, AF_INET6, 0, false },
        { IPPROTO_IPV6, IPV6_RECVHOPLIMIT, AF_INET6, 0, false },
        { IPPROTO_IPV6, IPV6_RECVERR, AF_INET6, 0, false },
        { IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, AF_INET6, SOCK_DGRAM, false },
        { IPPROTO_IPV6, IPV6_TCLASS, AF_INET6, 0, false },
        { IPPROTO_IPV6, IPV6_UNICAST_HOPS, AF_INET6, 0, false },
        { IPPROTO_IPV6, IPV6_MTU_DISCOVER, AF_INET6, 0, false },
        { IPPROTO_IPV6, IPV6_FREEBIND, AF_INET6, 0, false },
        { IPPROTO_IPV6, IPV6_MULTICAST_HOPS, AF_INET6, SOCK_DGRAM, false },
        { IPPROTO_IPV6, IPV6_MULTICAST_LOOP, AF_INET6, SOCK_DGRAM, false },
        { IPPROTO_TCP, TCP_NODELAY, 0, SOCK_STREAM, false },
        { IPPROTO_TCP, TCP_MAXSEG, 0, SOCK_STREAM, false },
        { IPPROTO_TCP, TCP_KEEPIDLE, 0, SOCK_STREAM, false },
        { IPPROTO_TCP, TCP_KEEPINTVL, 0, SOCK_STREAM, false },
        { IPPROTO_TCP, TCP_KEEPCNT, 0, SOCK_STREAM, false },
        { IPPROTO_TCP, TCP_USER_TIMEOUT, 0, SOCK_STREAM, false },
        { IPPROTO_TCP, TCP_DEFER_ACCEPT, 0, SOCK_STREAM, false },
        { IPPROTO_TCP, TCP_FASTOPEN, 0, SOCK_STREAM, false },
        { IPPROTO_TCP, TCP_NOTSENT_LOWAT, 0, SOCK_STREAM, false },
        { IPPROTO_TCP, TCP_CONGESTION, 0, SOCK_STREAM, false },
        { IPPROTO_UDP, UDP_SEGMENT, 0, SOCK_DGRAM, false },
        { IPPROTO_UDP, UDP_GRO, 0, SOCK_DGRAM, false },
};

/* Whether the server set buffer option name of socket from (of family and
 * type): setting one locks its size (no TCP autotuning), so brokerd's
 * socket takes it only from a server that asked for a size, one that
 * differs from a fresh socket's. */
static bool buffer_set(int from, int family, int type, int name) {
        int fresh = socket(family, type | SOCK_CLOEXEC, 0), a, b;

        if (fresh < 0)
                return false;
        a = sockopt_get_int(from, SOL_SOCKET, name);
        b = sockopt_get_int(fresh, SOL_SOCKET, name);
        safe_close(fresh);
        return a >= 0 && b >= 0 && a != b;
}

/* Sets on to (brokerd's socket) the options from (the server's own) has
 * that differ. Errors are ignored: a server gets no worse a socket than
 * brokerd's, and its own setsockopt() after bind() reports for itself. */
static void carry_options(int from, int to) {
        int family = sockopt_get_int(from, SOL_SOCKET, SO_DOMAIN);
        int type = sockopt_get_int(from, SOL_SOCKET, SO_TYPE);

        for (size_t i = 0; i < sizeof(carried_options) / sizeof(carried_options[0]); i++) {
                const struct carried_option *o = &carried_options[i];
                union {
                        int i;
                        struct linger linger;
                        char name[32];
                } want = { 0 }, have = { 0 };
                socklen_t want_len = sizeof(want), have_len = sizeof(have);

                if ((o->family && o->family != family) || (o->transport && o->transport != type) ||
                    (o->buffer && !buffer_set(from, family, type, o->name)))
                        continue;
                if (getsockopt(from, o->level, o->name, &want, &want_len) < 0 ||
                    getsockopt(to, o->level, o->name, &have, &have_len) < 0 ||
                    (want_len == have_len && memcmp(&want, &have, want_len) == 0))
                        continue;
                if (o->buffer)
                        want.i /= 2;    /* the kernel doubles what it is given (socket(7)) */
                if (o->name == TCP_CONGESTION && o->level == IPPROTO_TCP)
                        want_len = (socklen_t) strnlen(want.name, sizeof(want.name));
                (void) next_setsockopt(to, o->level, o->name, &want, want_len);
        }
}

int bind(int fd, const struct sockaddr *sa, socklen_t len) {
        int saved_errno = errno, fd_flags, fl_flags, new_fd, cur;
        struct pb_endpoint e;
        char msg[PB_TEXT_MAX + 1];
        bool ours = endpoint_of(fd, sa, len, &e) && wanted(&e);

        if (!ours) {
                errno = saved_errno;
                return next_bind(fd, sa, len);
        }
        fd_flags = fcntl(fd, F_GETFD);
        fl_flags = fcntl(fd, F_GETFL);
        new_fd = broker_get(&e, msg, sizeof(msg));
        if (new_fd < 0) {
                if (cfg.all) {          /* not one brokerd will give us: the server's own bind */
                        errno = saved_errno;
                        return next_bind(fd, sa, len);
                }
                complain(&e, -new_fd, msg);
                errno = -new_fd;
                return -1;
        }
        carry_options(fd, new_fd);
        /* Same fd number, the caller's close-on-exec; the socket's file status
         * flags are shared by every holder: set O_NONBLOCK as this caller had it. */
        if (fd_flags < 0 || fl_flags < 0 ||
            dup3(new_fd, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
                new_fd = safe_close(new_fd);     /* keeps errno */
                return -1;
        }
        new_fd = safe_close(new_fd);
        cur = fcntl(fd, F_GETFL);
        if (cur >= 0)
                (void) fcntl(fd, F_SETFL, (cur & ~O_NONBLOCK) | (fl_flags & O_NONBLOCK));
        __atomic_store_n(&brokered[__atomic_fetch_add(&brokered_next, 1, __ATOMIC_RELAXED) % BROKERED_MAX],
                         socket_cookie(fd), __ATOMIC_RELAXED);
        errno = saved_errno;
        return 0;
}

int listen(int fd, int backlog) {
        int saved_errno = errno;

        if (is_brokered(fd)) {
                errno = saved_errno;
                /* Listening already with brokerd's backlog: leave it. Otherwise (a
                 * holder shut it down) listen, never below the broker's default. */
                if (sockopt_get_int(fd, SOL_SOCKET, SO_ACCEPTCONN) == 1)
                        return 0;
                errno = saved_errno;
                backlog = 65535;        /* the kernel caps it at somaxconn, never below brokerd's */
        } else
                errno = saved_errno;
        return next.listen ? next.listen(fd, backlog) : (int) syscall(SYS_listen, fd, backlog);
}

/* shutdown() of a brokered socket would stop it for every holder (a
 * listener leaves LISTEN, and a port bound with SO_REUSEADDR is then open
 * to others until brokerd listens again): a server stopping does not get
 * to do that to the next one. It succeeds and does nothing. */
int shutdown(int fd, int how) {
        int saved_errno = errno;

        if (is_brokered(fd)) {
                errno = saved_errno;
                return 0;
        }
        errno = saved_errno;
        return next.shutdown ? next.shutdown(fd, how) : (int) syscall(SYS_shutdown, fd, how);
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t len) {
        int saved_errno = errno;
        bool guarded = (level == SOL_SOCKET && (name == SO_REUSEADDR || name == SO_REUSEPORT)) ||
                       (level == IPPROTO_IPV6 && name == IPV6_V6ONLY);

        if (guarded && is_brokered(fd)) {
                errno = saved_errno;
                return 0;               /* brokerd's choice stands; SO_REUSEPORT never */
        }
        errno = saved_errno;
        return next_setsockopt(fd, level, name, value, len);
}

/* Tells `portctl upgrade` once that this process serves a brokered socket. */
static void maybe_ready(int fd) {
        int saved_errno = errno;
        char text[32];
        size_t n = 0;
        int report_fd;

        if (!cfg.ready_len || __atomic_load_n(&ready_sent, __ATOMIC_RELAXED) || !is_brokered(fd))
                goto out;
        __atomic_store_n(&ready_sent, 1, __ATOMIC_RELAXED);
        report_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (report_fd < 0)
                goto out;
        append_number(text, sizeof(text), &n, (unsigned long) getpid());
        (void) sendto(report_fd, text, n, MSG_DONTWAIT, (struct sockaddr *) &cfg.ready, cfg.ready_len);
        report_fd = safe_close(report_fd);
out:
        errno = saved_errno;
}

int accept(int fd, struct sockaddr *sa, socklen_t *len) {
        maybe_ready(fd);
        return next.accept ? next.accept(fd, sa, len) : (int) syscall(SYS_accept4, fd, sa, len, 0);
}

int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags) {
        maybe_ready(fd);
        return next.accept4 ? next.accept4(fd, sa, len, flags) : (int) syscall(SYS_accept4, fd, sa, len, flags);
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
        if (op == EPOLL_CTL_ADD)
                maybe_ready(fd);
        return next.epoll_ctl ? next.epoll_ctl(epfd, op, fd, ev) : (int) syscall(SYS_epoll_ctl, epfd, op, fd, ev);
}

/* Whether path (under dir_fd when relative) is the file of a Unix endpoint
 * named for the shim: brokerd's, with the rule's owner, group and mode.
 * Keeps errno. */
static bool is_named_file(int dir_fd, const char *path) {
        int saved_errno = errno;
        struct pb_endpoint e;
        bool named = cfg.n_unix && path && unix_endpoint_at(dir_fd, path, strnlen(path, PATH_MAX), &e) && wanted(&e);

        errno = saved_errno;
        return named;
}

/* A server removes its socket's file before bind() (gunicorn, php-fpm) and
 * at exit; a named one is brokerd's, where the next server finds it (the
 * kernel would refuse anyway, in a directory that is root's, and the
 * server stop): it succeeds and stays. */
int unlink(const char *path) {
        if (is_named_file(AT_FDCWD, path))
                return 0;
        return next.unlink ? next.unlink(path) : (int) syscall(SYS_unlink, path);
}

int unlinkat(int dir_fd, const char *path, int flags) {
        if (!(flags & AT_REMOVEDIR) && is_named_file(dir_fd, path))
                return 0;
        return next.unlinkat ? next.unlinkat(dir_fd, path, flags) : (int) syscall(SYS_unlinkat, dir_fd, path, flags);
}

/* glibc's remove() calls its own unlink(), not ours. */
int remove(const char *path) {
        if (is_named_file(AT_FDCWD, path))
                return 0;
        return next.remove ? next.remove(path) : (int) syscall(SYS_unlink, path);
}

/* The owner, group and mode of a named file are the rule's (a server sets
 * them after bind(): php-fpm's listen.mode, gunicorn's --user): changing
 * them succeeds and does nothing. */
int chmod(const char *path, mode_t mode) {
        if (is_named_file(AT_FDCWD, path))
                return 0;
        return next.chmod ? next.chmod(path, mode) : (int) syscall(SYS_chmod, path, mode);
}

int fchmodat(int dir_fd, const char *path, mode_t mode, int flags) {
        if (is_named_file(dir_fd, path))
                return 0;
        return next.fchmodat ? next.fchmodat(dir_fd, path, mode, flags)
                             : (int) syscall(SYS_fchmodat, dir_fd, path, mode);
}

int chown(const char *path, uid_t uid, gid_t gid) {
        if (is_named_file(AT_FDCWD, path))
                return 0;
        return next.chown ? next.chown(path, uid, gid) : (int) syscall(SYS_chown, path, uid, gid);
}

int lchown(const char *path, uid_t uid, gid_t gid) {
        if (is_named_file(AT_FDCWD, path))
                return 0;
        return next.lchown ? next.lchown(path, uid, gid) : (int) syscall(SYS_lchown, path, uid, gid);
}

int fchownat(int dir_fd, const char *path, uid_t uid, gid_t gid, int flags) {
        if (is_named_file(dir_fd, path))
                return 0;
        return next.fchownat ? next.fchownat(dir_fd, path, uid, gid, flags)
                             : (int) syscall(SYS_fchownat, dir_fd, path, uid, gid, flags);
}
