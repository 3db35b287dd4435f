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
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "endpoint.h"
#include "portbroker.h"
#include "portctl.h"

#define WHY_MAX_LIST 8                  /* processes or connections named one by one */

enum {                                  /* TCP states as sock_diag reports them */
        ST_ESTABLISHED = 1, ST_SYN_SENT, ST_SYN_RECV, ST_FIN_WAIT1, ST_FIN_WAIT2, ST_TIME_WAIT,
        ST_CLOSE, ST_CLOSE_WAIT, ST_LAST_ACK, ST_LISTEN, ST_CLOSING, ST_NEW_SYN_RECV,
        ST_BOUND_INACTIVE,
};

static const char *const state_names[] = {
        [ST_ESTABLISHED] = "ESTABLISHED", [ST_SYN_SENT] = "SYN_SENT", [ST_SYN_RECV] = "SYN_RECV",
        [ST_FIN_WAIT1] = "FIN_WAIT1", [ST_FIN_WAIT2] = "FIN_WAIT2", [ST_TIME_WAIT] = "TIME_WAIT",
        [ST_CLOSE] = "CLOSE", [ST_CLOSE_WAIT] = "CLOSE_WAIT", [ST_LAST_ACK] = "LAST_ACK",
        [ST_LISTEN] = "LISTEN", [ST_CLOSING] = "CLOSING", [ST_NEW_SYN_RECV] = "NEW_SYN_RECV",
        [ST_BOUND_INACTIVE] = "BOUND_INACTIVE",
};

struct why_sock {
        int family;                     /* AF_INET or AF_INET6 as reported */
        bool v4;                        /* an IPv4 address (AF_INET or v4-mapped) */
        uint8_t addr[16];               /* local address; v4 in the first 4 bytes when v4 */
        uint8_t raddr[16];              /* remote address, same layout */
        uint16_t rport;
        uint8_t state;
        int v6only;                     /* IPV6_V6ONLY of an AF_INET6 socket, -1 unknown */
        uint32_t inode;                 /* 0 for TIME_WAIT and orphans */
        uint32_t uid;
        uint32_t expires_ms;
        uint32_t rqueue, wqueue;        /* LISTEN: queued connections, backlog */
        bool relevant;                  /* its address conflicts with the endpoint's */
};

struct why_holder {
        uint32_t inode;
        pid_t pid;
        int fd;
};

struct why_proc {
        pid_t pid, ppid, pgid;
        uid_t uid;
        char comm[64];
        char cmd[256];                  /* cmdline, spaces for NULs, printable ASCII only */
        char unit[128];                 /* systemd unit from the cgroup path, "" if none */
        char cgroup[256];
};

struct why {
        const char *text;               /* the endpoint as given */
        struct pb_endpoint ep;
        char canon[PB_ENDPOINT_STRLEN];
        uid_t uid;                      /* whose bind() is evaluated */
        gid_t gid;
        bool as_given;
        char user[64];                  /* name or number of uid */

        long unpriv_start, range_lo, range_hi, bindv6only, tw_reuse;
        char reserved[256];             /* net.ipv4.ip_local_reserved_ports */

        struct why_sock *socks;
        size_t nsocks, asocks;
        struct why_holder *holders;
        size_t nholders, aholders;
        unsigned unreadable;            /* processes whose fds we could not read */

        int probe[3];                   /* errno of bind: plain, SO_REUSEADDR, SO_REUSEPORT; 0 ok; -1 not run */
        bool probe_as_user;             /* the probes ran as uid (else as ourselves) */

        int broker;                     /* -1 not reachable, 0 no lease, 1 lease */
        char broker_msg[300];
        pb_lease lease;

        const char *verdict;
        char *summary, *fix;
        char **ev;
        size_t nev, aev;
        bool oom;
};

/* --- small helpers ----------------------------------------------------------- */

__attribute__((format(printf, 2, 3)))
static void evidence(struct why *w, const char *fmt, ...) {
        va_list ap;
        char *s;

        if (w->nev == w->aev) {
                size_t na = w->aev ? w->aev * 2 : 16;
                char **n = realloc(w->ev, na * sizeof(char *));
                if (!n) {
                        w->oom = true;
                        return;
                }
                w->ev = n;
                w->aev = na;
        }
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                w->oom = true;
        else
                w->ev[w->nev++] = s;
        va_end(ap);
}

__attribute__((format(printf, 2, 3)))
static char *fmt_alloc(struct why *w, const char *fmt, ...) {
        va_list ap;
        char *s;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0) {
                s = NULL;
                w->oom = true;
        }
        va_end(ap);
        return s;
}

/* Reads a small file into buf (NUL-terminated, trailing newline dropped). Returns its length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t size) {
        ssize_t n;
        int fd;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        if (n < 0)
                n = -errno;
        close(fd);
        if (n < 0)
                return n;
        buf[n] = '\0';
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        return n;
}

static long sysctl_long(const char *path, long dflt) {
        char buf[64];

        if (read_small(path, buf, sizeof(buf)) <= 0)
                return dflt;
        return strtol(buf, NULL, 10);
}

static const char *errno_name(int e) {
        switch (e) {
        case 0:
                return "ok";
        case EADDRINUSE:
                return "EADDRINUSE";
        case EACCES:
                return "EACCES";
        case EADDRNOTAVAIL:
                return "EADDRNOTAVAIL";
        case EPERM:
                return "EPERM";
        case EINVAL:
                return "EINVAL";
        default:
                return "error";
        }
}

static const char *state_name(uint8_t st) {
        return st < sizeof(state_names) / sizeof(state_names[0]) && state_names[st] ? state_names[st] : "?";
}

static void format_addr(const struct why_sock *s, const uint8_t *addr, uint16_t port, char *buf, size_t size) {
        char host[INET6_ADDRSTRLEN] = "?";

        if (s->v4) {
                inet_ntop(AF_INET, addr, host, sizeof(host));
                snprintf(buf, size, "%s:%u", host, port);
        } else {
                inet_ntop(AF_INET6, addr, host, sizeof(host));
                snprintf(buf, size, "[%s]:%u", host, port);
        }
}

static bool is_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

static bool is_listener(const struct why *w, const struct why_sock *s) {
        if (w->ep.transport == PB_UDP)
                return true;
        return s->state == ST_LISTEN || s->state == ST_CLOSE || s->state == ST_BOUND_INACTIVE;
}

static bool is_closing(uint8_t st) {
        return st == ST_FIN_WAIT1 || st == ST_FIN_WAIT2 || st == ST_TIME_WAIT || st == ST_CLOSE_WAIT ||
               st == ST_LAST_ACK || st == ST_CLOSING;
}

static bool is_connection(uint8_t st) {
        return st == ST_ESTABLISHED || st == ST_SYN_SENT || st == ST_SYN_RECV;
}

/* True when a socket bound like s keeps the endpoint from being bound (addresses overlap). */
static bool overlaps(const struct why *w, const struct why_sock *s) {
        const struct pb_endpoint *e = &w->ep;

        switch (e->family) {
        case PB_FAMILY_ANY:             /* [::] dual-stack: every address of the port */
                return true;
        case PB_FAMILY_INET:
                if (s->v4)
                        return is_zero(e->addr, 4) || is_zero(s->addr, 4) || memcmp(e->addr, s->addr, 4) == 0;
                /* an IPv6 wildcard that is not v6-only covers IPv4 too */
                return is_zero(s->addr, 16) && (s->v6only == 0 || (s->v6only < 0 && w->bindv6only == 0));
        default:
                if (s->v4)
                        return false;
                return is_zero(s->addr, 16) || memcmp(e->addr, s->addr, 16) == 0;
        }
}

/* The overlap is between IPv4 and the IPv6 dual-stack wildcard. */
static bool cross_family(const struct why *w, const struct why_sock *s) {
        if (w->ep.family == PB_FAMILY_ANY)
                return s->v4;
        if (w->ep.family == PB_FAMILY_INET)
                return !s->v4;
        return false;
}

/* --- sock_diag ----------------------------------------------------------------- */

static int add_sock(struct why *w, const struct why_sock *s) {
        if (w->nsocks == w->asocks) {
                size_t na = w->asocks ? w->asocks * 2 : 32;
                struct why_sock *n = realloc(w->socks, na * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                w->socks = n;
                w->asocks = na;
        }
        w->socks[w->nsocks++] = *s;
        return 0;
}

static void parse_diag(struct why *w, const struct nlmsghdr *h, int family) {
        const struct inet_diag_msg *m = NLMSG_DATA(h);
        struct why_sock s = { .family = family, .v6only = -1 };
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        const struct rtattr *a;
        int len;

        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)) || ntohs(m->id.idiag_sport) != w->ep.port_lo)
                return;
        s.state = m->idiag_state;
        s.inode = m->idiag_inode;
        s.uid = m->idiag_uid;
        s.expires_ms = m->idiag_expires;
        s.rqueue = m->idiag_rqueue;
        s.wqueue = m->idiag_wqueue;
        s.rport = ntohs(m->id.idiag_dport);
        if (family == AF_INET) {
                s.v4 = true;
                memcpy(s.addr, m->id.idiag_src, 4);
                memcpy(s.raddr, m->id.idiag_dst, 4);
        } else if (memcmp(m->id.idiag_src, mapped, 12) == 0) {
                s.v4 = true;
                memcpy(s.addr, (const uint8_t *) m->id.idiag_src + 12, 4);
                memcpy(s.raddr, (const uint8_t *) m->id.idiag_dst + 12, 4);
        } else {
                memcpy(s.addr, m->id.idiag_src, 16);
                memcpy(s.raddr, m->id.idiag_dst, 16);
        }
        len = (int) (h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
        for (a = (const struct rtattr *) (m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len))
                if (a->rta_type == INET_DIAG_SKV6ONLY && RTA_PAYLOAD(a) >= 1)
                        s.v6only = *(const uint8_t *) RTA_DATA(a);
        s.relevant = overlaps(w, &s);
        if (add_sock(w, &s) < 0)
                w->oom = true;
}

/* Dumps the sockets of family and the endpoint's transport, keeping those on its port. Returns 0 or -errno. */
static int diag_dump(struct why *w, int family) {
        struct {
                struct nlmsghdr nlh;
                struct inet_diag_req_v2 req;
        } q = {
                .nlh = {
                        .nlmsg_len = sizeof(q),
                        .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                        .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
                        .nlmsg_seq = 1,
                },
                .req = {
                        .sdiag_family = (uint8_t) family,
                        .sdiag_protocol = w->ep.transport == PB_UDP ? IPPROTO_UDP : IPPROTO_TCP,
                        .idiag_states = ~0U,
                },
        };
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        long buf[8192 / sizeof(long)];
        int fd, r = 0;
        bool done = false;

        fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0)
                return -errno;
        if (sendto(fd, &q, sizeof(q), 0, (struct sockaddr *) &kernel, sizeof(kernel)) < 0) {
                r = -errno;
                goto out;
        }
        while (!done) {
                ssize_t n = recv(fd, buf, sizeof(buf), 0);
                int left;

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto out;
                }
                if (n == 0)
                        break;
                left = (int) n;
                for (struct nlmsghdr *h = (struct nlmsghdr *) buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
                        if (h->nlmsg_type == NLMSG_DONE) {
                                done = true;
                                break;
                        }
                        if (h->nlmsg_type == NLMSG_ERROR) {
                                const struct nlmsgerr *e = NLMSG_DATA(h);
                                r = h->nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error ? e->error : -EPROTO;
                                goto out;
                        }
                        if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY)
                                parse_diag(w, h, family);
                }
        }
out:
        close(fd);
        return r;
}

/* --- processes ----------------------------------------------------------------- */

static bool wanted_inode(const struct why *w, uint32_t inode) {
        for (size_t i = 0; i < w->nsocks; i++)
                if (w->socks[i].inode == inode && inode != 0)
                        return true;
        return false;
}

/* Finds which processes hold the sockets we saw, from /proc/PID/fd. */
static int scan_holders(struct why *w) {
        DIR *proc = opendir("/proc");
        struct dirent *de;

        if (!proc)
                return -errno;
        while ((de = readdir(proc))) {
                char path[64];
                struct dirent *fe;
                DIR *fds;
                pid_t pid;

                if (de->d_name[0] < '1' || de->d_name[0] > '9')
                        continue;
                pid = (pid_t) strtol(de->d_name, NULL, 10);
                snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
                fds = opendir(path);
                if (!fds) {
                        if (errno == EACCES || errno == EPERM)
                                w->unreadable++;
                        continue;
                }
                while ((fe = readdir(fds))) {
                        char link[64];
                        unsigned long inode;
                        ssize_t n;

                        if (fe->d_name[0] < '0' || fe->d_name[0] > '9')
                                continue;
                        n = readlinkat(dirfd(fds), fe->d_name, link, sizeof(link) - 1);
                        if (n <= 0)
                                continue;
                        link[n] = '\0';
                        if (sscanf(link, "socket:[%lu]", &inode) != 1 || !wanted_inode(w, (uint32_t) inode))
                                continue;
                        if (w->nholders == w->aholders) {
                                size_t na = w->aholders ? w->aholders * 2 : 16;
                                struct why_holder *nh = realloc(w->holders, na * sizeof(*nh));
                                if (!nh) {
                                        closedir(fds);
                                        closedir(proc);
                                        return -ENOMEM;
                                }
                                w->holders = nh;
                                w->aholders = na;
                        }
                        w->holders[w->nholders++] = (struct why_holder) {
                                .inode = (uint32_t) inode, .pid = pid, .fd = atoi(fe->d_name),
                        };
                }
                closedir(fds);
        }
        closedir(proc);
        return 0;
}

static bool holds(const struct why *w, pid_t pid, uint32_t inode) {
        for (size_t i = 0; i < w->nholders; i++)
                if (w->holders[i].pid == pid && w->holders[i].inode == inode)
                        return true;
        return false;
}

/* The systemd unit a cgroup path names, as sd_pid_get_unit() finds it: the first
 * component below the slices that is a service or scope. */
static void unit_of_cgroup(const char *cg, char *unit, size_t size) {
        const char *p = cg;

        unit[0] = '\0';
        while (*p) {
                const char *end;
                size_t n;

                while (*p == '/')
                        p++;
                end = strchrnul(p, '/');
                n = (size_t) (end - p);
                if ((n > 8 && memcmp(end - 8, ".service", 8) == 0) || (n > 6 && memcmp(end - 6, ".scope", 6) == 0)) {
                        snprintf(unit, size, "%.*s", (int) n, p);
                        return;
                }
                if (!(n > 6 && memcmp(end - 6, ".slice", 6) == 0))
                        return;
                p = end;
        }
}

static int proc_info(pid_t pid, struct why_proc *ret) {
        char path[64], buf[1024], *p;
        struct why_proc pi = { .pid = pid, .ppid = -1, .pgid = -1, .uid = (uid_t) -1 };
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        if (read_small(path, buf, sizeof(buf)) < 0)
                return -ESRCH;
        p = strrchr(buf, ')');
        if (p) {
                int ppid, pgid;
                if (sscanf(p + 1, " %*c %d %d", &ppid, &pgid) == 2) {
                        pi.ppid = ppid;
                        pi.pgid = pgid;
                }
        }
        snprintf(path, sizeof(path), "/proc/%d/comm", (int) pid);
        if (read_small(path, pi.comm, sizeof(pi.comm)) < 0)
                snprintf(pi.comm, sizeof(pi.comm), "?");
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
        n = read_small(path, pi.cmd, sizeof(pi.cmd));
        if (n > 0) {
                for (ssize_t i = 0; i < n; i++)
                        if (pi.cmd[i] == '\0')
                                pi.cmd[i] = ' ';
                        else if ((unsigned char) pi.cmd[i] < 0x20 || (unsigned char) pi.cmd[i] >= 0x7f)
                                pi.cmd[i] = '?';
                while (n > 0 && pi.cmd[n - 1] == ' ')
                        pi.cmd[--n] = '\0';
        }
        if (n <= 0)
                snprintf(pi.cmd, sizeof(pi.cmd), "[%s]", pi.comm);
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        if (read_small(path, buf, sizeof(buf)) > 0 && (p = strstr(buf, "\nUid:"))) {
                unsigned ruid, euid;
                if (sscanf(p + 5, "%u %u", &ruid, &euid) == 2)
                        pi.uid = euid;
        }
        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int) pid);
        if (read_small(path, buf, sizeof(buf)) > 0 && (p = strstr(buf, "0::"))) {
                char *nl = strchr(p, '\n');
                if (nl)
                        *nl = '\0';
                snprintf(pi.cgroup, sizeof(pi.cgroup), "%s", p + 3);
                unit_of_cgroup(pi.cgroup, pi.unit, sizeof(pi.unit));
        }
        *ret = pi;
        return 0;
}

/* fd's close-on-exec flag in pid, from /proc/PID/fdinfo: 1, 0, or -1 unknown. */
static int fd_cloexec(pid_t pid, int fd) {
        char path[64], buf[512], *p;

        snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int) pid, fd);
        if (read_small(path, buf, sizeof(buf)) < 0 || !(p = strstr(buf, "flags:")))
                return -1;
        return (strtoul(p + 6, NULL, 8) & O_CLOEXEC) != 0;
}

/* SO_REUSEADDR and SO_REUSEPORT of fd in pid, through pidfd_getfd (needs ptrace rights). */
static int holder_reuse(pid_t pid, int fd, int *ret_addr, int *ret_port) {
        int pidfd, sfd, a = 0, p = 0;
        socklen_t l = sizeof(int);

        pidfd = (int) syscall(SYS_pidfd_open, pid, 0);     /* always close-on-exec */
        if (pidfd < 0)
                return -errno;
        sfd = (int) syscall(SYS_pidfd_getfd, pidfd, fd, 0); /* always close-on-exec */
        close(pidfd);
        if (sfd < 0)
                return -errno;
        if (getsockopt(sfd, SOL_SOCKET, SO_REUSEADDR, &a, &l) < 0 ||
            (l = sizeof(int), getsockopt(sfd, SOL_SOCKET, SO_REUSEPORT, &p, &l) < 0)) {
                int r = -errno;
                close(sfd);
                return r;
        }
        close(sfd);
        *ret_addr = a;
        *ret_port = p;
        return 0;
}

static void user_text(uid_t uid, char *buf, size_t size) {
        struct passwd *pw = getpwuid(uid);

        if (pw)
                snprintf(buf, size, "%s (uid %u)", pw->pw_name, (unsigned) uid);
        else
                snprintf(buf, size, "uid %u", (unsigned) uid);
}

/* One evidence line per process holding inode; returns how many. */
static size_t describe_holders(struct why *w, uint32_t inode, const char *what) {
        size_t n = 0;

        for (size_t i = 0; i < w->nholders; i++) {
                const struct why_holder *h = &w->holders[i];
                struct why_proc pi;
                char who[96], opts[96] = "";
                int ra = 0, rp = 0;

                if (h->inode != inode)
                        continue;
                if (n++ >= WHY_MAX_LIST)
                        continue;
                if (proc_info(h->pid, &pi) < 0)
                        continue;
                user_text(pi.uid, who, sizeof(who));
                if (holder_reuse(h->pid, h->fd, &ra, &rp) == 0)
                        snprintf(opts, sizeof(opts), ", SO_REUSEADDR=%d SO_REUSEPORT=%d", ra, rp);
                evidence(w, "%s: pid %d (%s) fd %d, %s, %s%s%s", what, (int) pi.pid, pi.cmd, h->fd, who,
                         pi.unit[0] ? "unit " : "cgroup ", pi.unit[0] ? pi.unit : pi.cgroup[0] ? pi.cgroup : "?",
                         opts);
        }
        if (n > WHY_MAX_LIST)
                evidence(w, "... and %zu more processes", n - WHY_MAX_LIST);
        return n;
}

/* --- probes ---------------------------------------------------------------------- */

/* Binds (never listens) a throwaway socket like the endpoint's with option opt set, closes it.
 * Returns 0 or the positive errno of bind(). */
static int probe_bind(const struct pb_endpoint *e, int opt) {
        int family = e->family == PB_FAMILY_INET ? AF_INET : AF_INET6, one = 1, fd, r = 0;
        int v6only = e->family == PB_FAMILY_INET6;
        union {
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = { 0 };
        socklen_t len;

        fd = socket(family, (e->transport == PB_UDP ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return errno;
        if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0)
                r = errno;
        if (r == 0 && opt && setsockopt(fd, SOL_SOCKET, opt, &one, sizeof(one)) < 0)
                r = errno;
        if (family == AF_INET) {
                sa.in.sin_family = AF_INET;
                sa.in.sin_port = htons(e->port_lo);
                memcpy(&sa.in.sin_addr, e->addr, 4);
                len = sizeof(sa.in);
        } else {
                sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons(e->port_lo);
                memcpy(&sa.in6.sin6_addr, e->addr, 16);
                len = sizeof(sa.in6);
        }
        if (r == 0 && bind(fd, (struct sockaddr *) &sa, len) < 0)
                r = errno;
        close(fd);
        return r;
}

/* Runs the three probes, as w->uid in a child when that is not us and we may switch. */
static void run_probes(struct why *w) {
        static const int opts[3] = { 0, SO_REUSEADDR, SO_REUSEPORT };

        for (int i = 0; i < 3; i++)
                w->probe[i] = -1;
        if (w->uid == geteuid()) {
                for (int i = 0; i < 3; i++)
                        w->probe[i] = probe_bind(&w->ep, opts[i]);
                w->probe_as_user = true;
                return;
        }
        if (geteuid() == 0) {
                for (int i = 0; i < 3; i++) {
                        int status;
                        pid_t pid;

                        fflush(stdout);
                        pid = fork();
                        if (pid < 0)
                                break;
                        if (pid == 0) {
                                if (setgroups(0, NULL) < 0 || setresgid(w->gid, w->gid, w->gid) < 0 ||
                                    setresuid(w->uid, w->uid, w->uid) < 0)
                                        _exit(255);
                                _exit(probe_bind(&w->ep, opts[i]) & 0xff);
                        }
                        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                                ;
                        if (WIFEXITED(status) && WEXITSTATUS(status) != 255)
                                w->probe[i] = WEXITSTATUS(status);
                }
                w->probe_as_user = w->probe[0] >= 0;
                if (w->probe_as_user)
                        return;
        }
        for (int i = 0; i < 3; i++)
                w->probe[i] = probe_bind(&w->ep, opts[i]);
        w->probe_as_user = false;
}

/* --- brokerd ----------------------------------------------------------------------- */

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
        }
        pb_disconnect(c);
}

/* --- verdicts ---------------------------------------------------------------------- */

static bool privileged_for_user(const struct why *w) {
        char buf[2048], *p;

        if (w->ep.port_lo >= w->unpriv_start || w->uid == 0)
                return false;
        if (w->as_given || w->uid != geteuid())
                return true;            /* a plain user: only a file capability could help */
        if (read_small("/proc/self/status", buf, sizeof(buf)) > 0 && (p = strstr(buf, "\nCapEff:")))
                return !(strtoull(p + 8, NULL, 16) & (1ULL << 10));        /* CAP_NET_BIND_SERVICE */
        return true;
}

static void probe_evidence(struct why *w) {
        char who[96];

        user_text(w->uid, who, sizeof(who));
        if (w->probe[0] < 0)
                return;
        evidence(w, "probe bind of %s as %s%s (bound, never listening, closed at once): "
                 "plain %s, with SO_REUSEADDR %s, with SO_REUSEPORT %s",
                 w->canon, w->probe_as_user ? "" : "us, not ", who, errno_name(w->probe[0]),
                 errno_name(w->probe[1]), errno_name(w->probe[2]));
}

/* A brokerd lease for the endpoint. */
static void verdict_lease(struct why *w) {
        char owner[96], asker[96];
        bool may = w->uid == 0 || w->uid == w->lease.owner_uid;

        user_text(w->lease.owner_uid, owner, sizeof(owner));
        user_text(w->uid, asker, sizeof(asker));
        w->verdict = "broker-lease";
        w->summary = fmt_alloc(w, "brokerd holds %s in a lease owned by %s.", w->lease.endpoint, owner);
        evidence(w, "lease %" PRIu64 ": owner %s, since %" PRId64 ", %u live holder%s, %" PRIu64 " hand-outs, %s",
                 w->lease.id, owner, w->lease.since, w->lease.holders, w->lease.holders == 1 ? "" : "s",
                 w->lease.handouts, w->lease.bound ? "socket bound" : "no socket bound right now");
        if (w->lease.transport != IPPROTO_UDP && w->lease.queued >= 0)
                evidence(w, "queued connections: %d of backlog %u", w->lease.queued, w->lease.backlog);
        for (size_t i = 0; i < w->nsocks; i++)
                if (w->socks[i].relevant && is_listener(w, &w->socks[i]) && w->socks[i].inode)
                        describe_holders(w, w->socks[i].inode, "holder");
        if (may)
                w->fix = fmt_alloc(w, "%s may get it: `portctl get %s -- CMD` runs CMD with the broker's socket "
                                   "(fd 3, LISTEN_FDS=1); never bind the port yourself.", asker, w->text);
        else
                w->fix = fmt_alloc(w, "%s may not get it: the lease is held by %s (uid %u). Run as that user "
                                   "(`portctl get %s -- CMD`), or ask an admin to `portctl release %s`.",
                                   asker, owner, (unsigned) w->lease.owner_uid, w->text, w->canon);
}

static void verdict_privileged(struct why *w) {
        char who[96], pattern[PB_ENDPOINT_STRLEN];

        user_text(w->uid, who, sizeof(who));
        if (w->ep.family == PB_FAMILY_ANY)
                snprintf(pattern, sizeof(pattern), "%s:%u", w->ep.transport == PB_UDP ? "udp" : "tcp", w->ep.port_lo);
        else
                snprintf(pattern, sizeof(pattern), "%s", w->canon);
        w->verdict = "privileged-port";
        probe_evidence(w);
        w->summary = fmt_alloc(w, "port %u is below net.ipv4.ip_unprivileged_port_start (%ld): bind() as %s "
                               "fails with EACCES without CAP_NET_BIND_SERVICE.", w->ep.port_lo, w->unpriv_start, who);
        evidence(w, "net.ipv4.ip_unprivileged_port_start = %ld (per network namespace); uid 0 is exempt, "
                 "any other uid needs CAP_NET_BIND_SERVICE", w->unpriv_start);
        w->fix = fmt_alloc(w, "let brokerd bind it: as root `portctl policy add %s --user %s`, then as that user "
                           "`portctl get %s -- CMD`. (Or give the program cap_net_bind_service, "
                           "or lower net.ipv4.ip_unprivileged_port_start.)", pattern, w->user, w->text);
}

static bool all_inherited(struct why *w, uint32_t inode) {
        size_t n = 0;

        for (size_t i = 0; i < w->nholders; i++) {
                struct why_proc pi;

                if (w->holders[i].inode != inode)
                        continue;
                n++;
                if (proc_info(w->holders[i].pid, &pi) < 0)
                        return false;
                /* Not a group leader, its group's leader has exited, and its parent does not hold the socket. */
                if (pi.pgid == pi.pid || pi.pgid <= 0 || kill(pi.pgid, 0) == 0 || errno != ESRCH ||
                    holds(w, pi.ppid, inode))
                        return false;
        }
        return n > 0;
}

static void verdict_listeners(struct why *w) {
        const struct why_sock *first = NULL, *group = NULL;
        size_t nlisten = 0, ngroup = 0;
        bool inherited;
        char addr[80];

        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                if (!s->relevant || !is_listener(w, s))
                        continue;
                if (!first)
                        first = s;
                nlisten++;
        }
        /* several sockets on the very same address: a SO_REUSEPORT group */
        for (size_t i = 0; i < w->nsocks && !group; i++) {
                const struct why_sock *s = &w->socks[i];
                size_t same = 0;
                if (!s->relevant || !is_listener(w, s))
                        continue;
                for (size_t j = 0; j < w->nsocks; j++) {
                        const struct why_sock *t = &w->socks[j];
                        if (t->relevant && is_listener(w, t) && t->v4 == s->v4 &&
                            memcmp(t->addr, s->addr, 16) == 0 && t->inode != s->inode)
                                same++;
                }
                if (same > 0) {
                        group = s;
                        ngroup = same + 1;
                }
        }

        if (group) {
                uid_t guid = group->uid;
                char owner[96];

                format_addr(group, group->addr, w->ep.port_lo, addr, sizeof(addr));
                user_text(guid, owner, sizeof(owner));
                w->verdict = "reuseport-group";
                w->summary = fmt_alloc(w, "a SO_REUSEPORT group of %zu sockets of %s holds %s.", ngroup, owner, addr);
                for (size_t i = 0; i < w->nsocks; i++) {
                        const struct why_sock *s = &w->socks[i];
                        if (s->relevant && is_listener(w, s) && s->v4 == group->v4 &&
                            memcmp(s->addr, group->addr, 16) == 0) {
                                evidence(w, "member socket inode %u (%s, uid %u)", s->inode, state_name(s->state), s->uid);
                                describe_holders(w, s->inode, "  held by");
                        }
                }
                evidence(w, "the rule: a new socket joins the group only if it sets SO_REUSEPORT before bind() "
                         "and has the same effective uid as the group (%u); it then takes a share of the "
                         "connections", (unsigned) guid);
                probe_evidence(w);
                evidence(w, "brokerd never sets SO_REUSEPORT: with it any process of the owner's uid could bind the "
                         "port and take a share of its connections");
                w->fix = fmt_alloc(w, "stop the members to free the port; to restart without a gap, let brokerd hold "
                                   "one listener (`portctl get %s -- CMD`) instead of joining a group.", w->text);
                return;
        }

        format_addr(first, first->addr, w->ep.port_lo, addr, sizeof(addr));
        if (cross_family(w, first)) {
                w->verdict = "dual-stack-overlap";
                if (w->ep.family == PB_FAMILY_ANY)
                        w->summary = fmt_alloc(w, "%s is the dual-stack wildcard, which also takes IPv4 port %u, and "
                                               "an IPv4 socket holds %s.", w->canon, w->ep.port_lo, addr);
                else
                        w->summary = fmt_alloc(w, "a dual-stack IPv6 socket on %s (IPV6_V6ONLY=0) also holds IPv4 "
                                               "port %u.", addr, w->ep.port_lo);
                evidence(w, "holder %s, %s, IPV6_V6ONLY=%s", addr, state_name(first->state),
                         first->v4 ? "n/a (IPv4)" : first->v6only < 0 ? "unknown" : first->v6only ? "1" : "0");
                evidence(w, "net.ipv6.bindv6only = %ld (the default of IPV6_V6ONLY for new IPv6 sockets)",
                         w->bindv6only);
                describe_holders(w, first->inode, "held by");
                probe_evidence(w);
                if (w->ep.family == PB_FAMILY_ANY)
                        w->fix = fmt_alloc(w, "bind only IPv6 (IPV6_V6ONLY=1, e.g. a specific IPv6 address) next to "
                                           "the IPv4 socket, or stop the IPv4 holder and let one [::] socket serve both.");
                else
                        w->fix = fmt_alloc(w, "the [::] holder already serves IPv4 on this port; set IPV6_V6ONLY=1 on "
                                           "it (or net.ipv6.bindv6only=1 before it starts) to leave IPv4 free, or "
                                           "stop it.");
                return;
        }

        inherited = first->inode && all_inherited(w, first->inode);
        if (inherited) {
                w->verdict = "inherited-listener";
                w->summary = fmt_alloc(w, "%s is still in %s, held by a process that inherited it from a "
                                       "server that is gone.", addr, state_name(first->state));
                for (size_t i = 0; i < w->nholders; i++) {
                        const struct why_holder *h = &w->holders[i];
                        struct why_proc pi, parent;
                        int cloexec;

                        if (h->inode != first->inode || proc_info(h->pid, &pi) < 0)
                                continue;
                        if (proc_info(pi.ppid, &parent) < 0)
                                snprintf(parent.comm, sizeof(parent.comm), "?");
                        cloexec = fd_cloexec(h->pid, h->fd);
                        evidence(w, "pid %d (%s) holds it as fd %d%s but did not create it: its process group "
                                 "leader, pid %d (the process that started the group), has exited, and its parent "
                                 "is now pid %d (%s), which does not hold the socket",
                                 (int) pi.pid, pi.cmd, h->fd, cloexec == 0 ? " (not close-on-exec)" : "",
                                 (int) pi.pgid, (int) pi.ppid, parent.comm);
                }
                describe_holders(w, first->inode, "held by");
                evidence(w, "a listener in LISTEN blocks every new bind() of the port, with or without SO_REUSEADDR");
                probe_evidence(w);
                w->fix = fmt_alloc(w, "stop the holder (kill the pid above); a restarted server cannot bind until it "
                                   "exits or closes the fd. In the server, create listeners with SOCK_CLOEXEC and "
                                   "close them in forked children, or let brokerd hold the port (`portctl get %s -- "
                                   "CMD`).", w->text);
                return;
        }

        w->verdict = "listener";
        w->summary = fmt_alloc(w, "%s is %s by %zu socket%s: %s.", w->canon,
                               first->state == ST_LISTEN ? "listened on" : "bound", nlisten, nlisten == 1 ? "" : "s",
                               addr);
        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                char a[80];
                if (!s->relevant || !is_listener(w, s))
                        continue;
                format_addr(s, s->addr, w->ep.port_lo, a, sizeof(a));
                evidence(w, "socket %s %s, uid %u, inode %u%s", a, state_name(s->state), s->uid, s->inode,
                         s->state == ST_LISTEN ? "" : " (bound, not listening)");
                if (s->inode && describe_holders(w, s->inode, "  held by") == 0)
                        evidence(w, "  held by: no process we could see%s",
                                 w->unreadable ? " (some processes' fds are not readable: run as root)" : "");
        }
        probe_evidence(w);
        w->fix = fmt_alloc(w, "stop that process (or its unit), or pick another port; if it is your own server "
                           "restarting, let brokerd hold the port so restarts reuse its socket: `portctl get %s -- "
                           "CMD`.", w->text);
}

static void verdict_closing(struct why *w) {
        unsigned count[ST_BOUND_INACTIVE + 1] = { 0 };
        uint32_t min_ms = UINT32_MAX, max_ms = 0;
        size_t n = 0;

        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                if (!s->relevant || !is_closing(s->state))
                        continue;
                n++;
                count[s->state]++;
                if (s->state == ST_TIME_WAIT) {
                        if (s->expires_ms < min_ms)
                                min_ms = s->expires_ms;
                        if (s->expires_ms > max_ms)
                                max_ms = s->expires_ms;
                }
        }
        w->verdict = "time-wait";
        w->summary = fmt_alloc(w, "%zu closing connection%s (no listener) still use port %u.", n, n == 1 ? "" : "s",
                               w->ep.port_lo);
        for (int st = 0; st <= ST_BOUND_INACTIVE; st++)
                if (count[st])
                        evidence(w, "%u in %s", count[st], state_name((uint8_t) st));
        if (count[ST_TIME_WAIT])
                evidence(w, "TIME_WAIT entries expire in %.1f to %.1f s (the kernel's timer; TIME_WAIT lasts 60 s)",
                         min_ms / 1000.0, max_ms / 1000.0);
        for (size_t i = 0; i < w->nsocks; i++)
                if (w->socks[i].relevant && w->socks[i].state == ST_CLOSE_WAIT && w->socks[i].inode)
                        describe_holders(w, w->socks[i].inode, "CLOSE_WAIT held by");
        evidence(w, "the rule (measured on Linux): a new socket with SO_REUSEADDR binds over TIME_WAIT iff the old "
                 "listener had SO_REUSEADDR too (the entries keep the flag); without it on either side: EADDRINUSE");
        probe_evidence(w);
        evidence(w, "net.ipv4.tcp_tw_reuse = %ld (%s): it only lets outgoing connect() reuse a TIME_WAIT "
                 "4-tuple; it never helps bind()", w->tw_reuse,
                 w->tw_reuse == 0 ? "off" : w->tw_reuse == 1 ? "on" : w->tw_reuse == 2 ? "loopback only" : "?");
        if (w->probe[1] == 0)
                w->fix = fmt_alloc(w, "set SO_REUSEADDR on the new listener before bind(): the probe with it bound, "
                                   "so the old listener had it too. To never rebind at all, let brokerd hold the "
                                   "port (`portctl get %s -- CMD`).", w->text);
        else
                w->fix = fmt_alloc(w, "no option of the new socket helps (the old listener lacked SO_REUSEADDR): wait "
                                   "%.0f s for the entries to expire, and give the server SO_REUSEADDR; or let brokerd "
                                   "hold the port so restarts never rebind (`portctl get %s -- CMD`).",
                                   max_ms == 0 ? 60.0 : max_ms / 1000.0 + 1, w->text);
}

static void verdict_connections(struct why *w) {
        bool ephemeral = w->ep.port_lo >= w->range_lo && w->ep.port_lo <= w->range_hi;
        size_t n = 0, shown = 0;

        for (size_t i = 0; i < w->nsocks; i++)
                if (w->socks[i].relevant && is_connection(w->socks[i].state))
                        n++;
        w->verdict = ephemeral ? "ephemeral-ports" : "connections";
        if (ephemeral)
                w->summary = fmt_alloc(w, "port %u is in net.ipv4.ip_local_port_range (%ld-%ld) and %zu outgoing "
                                       "connection%s use it as their local port.", w->ep.port_lo, w->range_lo,
                                       w->range_hi, n, n == 1 ? "" : "s");
        else
                w->summary = fmt_alloc(w, "%zu connection%s (no listener) use local port %u.", n, n == 1 ? "" : "s",
                                       w->ep.port_lo);
        evidence(w, "net.ipv4.ip_local_port_range = %ld %ld; net.ipv4.ip_local_reserved_ports = %s", w->range_lo,
                 w->range_hi, w->reserved[0] ? w->reserved : "(none)");
        for (size_t i = 0; i < w->nsocks && shown < WHY_MAX_LIST; i++) {
                const struct why_sock *s = &w->socks[i];
                char a[80], b[80];
                if (!s->relevant || !is_connection(s->state))
                        continue;
                shown++;
                format_addr(s, s->addr, w->ep.port_lo, a, sizeof(a));
                format_addr(s, s->raddr, s->rport, b, sizeof(b));
                evidence(w, "%s %s -> %s, uid %u", state_name(s->state), a, b, s->uid);
                if (s->inode)
                        describe_holders(w, s->inode, "  held by");
        }
        probe_evidence(w);
        if (ephemeral)
                w->fix = fmt_alloc(w, "reserve the port so the kernel stops picking it for outgoing connections: "
                                   "`sysctl -w net.ipv4.ip_local_reserved_ports=%u` (add to the list, persist it in "
                                   "/etc/sysctl.d); bind() still works on reserved ports. The connections holding it "
                                   "now keep it until they close.", w->ep.port_lo);
        else
                w->fix = fmt_alloc(w, "the connections keep the port until their processes close them.");
}

static void verdict_free(struct why *w) {
        w->verdict = "free";
        w->summary = fmt_alloc(w, "nothing holds %s: bind() would succeed.", w->canon);
        probe_evidence(w);
        w->fix = fmt_alloc(w, "nothing to fix; to keep the port across restarts, `portctl get %s -- CMD`.", w->text);
}

static void decide(struct why *w) {
        bool listener = false, closing = false, conn = false;

        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                if (!s->relevant)
                        continue;
                if (is_listener(w, s))
                        listener = true;
                else if (is_closing(s->state))
                        closing = true;
                else if (is_connection(s->state))
                        conn = true;
        }

        if (w->broker == 1)
                verdict_lease(w);
        else if (privileged_for_user(w))
                verdict_privileged(w);
        else if (listener)
                verdict_listeners(w);
        else if (closing)
                verdict_closing(w);
        else if (conn)
                verdict_connections(w);
        else if (w->probe[0] > 0) {
                w->verdict = "unknown";
                w->summary = fmt_alloc(w, "bind() of %s fails with %s, but no socket on the port explains it.",
                                       w->canon, errno_name(w->probe[0]));
                probe_evidence(w);
                w->fix = fmt_alloc(w, "check `ss -tuanp sport = :%u` and the address (EADDRNOTAVAIL: not local).",
                                   w->ep.port_lo);
        } else
                verdict_free(w);

        if (strcmp(w->verdict, "privileged-port") == 0 && (listener || closing || conn))
                evidence(w, "also: other sockets use port %u (run as root or with --as root to see why)", w->ep.port_lo);

        /* what could not be seen */
        if (w->broker < 0)
                evidence(w, "brokerd: not asked (%s)", w->broker_msg[0] ? w->broker_msg : "not reachable");
        else if (w->broker == 0)
                evidence(w, "brokerd: no lease for %s", w->canon);
        if (w->unreadable)
                evidence(w, "could not read the open files of %u process%s (not root): their sockets' owners are "
                         "not named", w->unreadable, w->unreadable == 1 ? "" : "es");
}

/* --- output ------------------------------------------------------------------------- */

static void json_str(const char *s) {
        putchar('"');
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (*p == '"' || *p == '\\')
                        printf("\\%c", *p);
                else if (*p < 0x20 || *p >= 0x7f)
                        printf("\\u%04x", *p < 0x80 ? *p : 0xfffd);
                else
                        putchar(*p);
        }
        putchar('"');
}

static void print_json(const struct why *w) {
        static const char *const probe_keys[3] = { "bind", "bind_reuseaddr", "bind_reuseport" };
        unsigned listen = 0, time_wait = 0, closing = 0, conn = 0;
        bool first = true;

        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                if (!s->relevant)
                        continue;
                if (is_listener(w, s))
                        listen++;
                else if (s->state == ST_TIME_WAIT)
                        time_wait++;
                else if (is_closing(s->state))
                        closing++;
                else if (is_connection(s->state))
                        conn++;
        }
        fputs("{\"endpoint\":", stdout);
        json_str(w->canon);
        fputs(",\"verdict\":", stdout);
        json_str(w->verdict);
        fputs(",\"summary\":", stdout);
        json_str(w->summary);
        fputs(",\"evidence\":[", stdout);
        for (size_t i = 0; i < w->nev; i++) {
                if (i)
                        putchar(',');
                json_str(w->ev[i]);
        }
        fputs("],\"fix\":", stdout);
        json_str(w->fix);
        printf(",\"uid\":%u,\"sockets\":{\"listen\":%u,\"time_wait\":%u,\"closing\":%u,\"connections\":%u}",
               (unsigned) w->uid, listen, time_wait, closing, conn);
        fputs(",\"probe\":{", stdout);
        for (int i = 0; i < 3; i++) {
                printf("%s\"%s\":", i ? "," : "", probe_keys[i]);
                if (w->probe[i] < 0)
                        fputs("null", stdout);
                else
                        json_str(errno_name(w->probe[i]));
        }
        printf("},\"probe_as_user\":%s,\"processes\":[", w->probe_as_user ? "true" : "false");
        for (size_t i = 0; i < w->nholders; i++) {
                const struct why_holder *h = &w->holders[i];
                struct why_proc pi;
                bool rel = false;

                for (size_t j = 0; j < w->nsocks; j++)
                        if (w->socks[j].inode == h->inode && w->socks[j].relevant)
                                rel = true;
                if (!rel || proc_info(h->pid, &pi) < 0)
                        continue;
                printf("%s{\"pid\":%d,\"ppid\":%d,\"fd\":%d,\"inode\":%u,\"uid\":%u,\"comm\":", first ? "" : ",",
                       (int) pi.pid, (int) pi.ppid, h->fd, h->inode, (unsigned) pi.uid);
                first = false;
                json_str(pi.comm);
                fputs(",\"command\":", stdout);
                json_str(pi.cmd);
                fputs(",\"unit\":", stdout);
                if (pi.unit[0])
                        json_str(pi.unit);
                else
                        fputs("null", stdout);
                fputs(",\"cgroup\":", stdout);
                json_str(pi.cgroup);
                putchar('}');
        }
        fputs("],\"lease\":", stdout);
        if (w->broker == 1) {
                printf("{\"id\":%" PRIu64 ",\"endpoint\":", w->lease.id);
                json_str(w->lease.endpoint);
                printf(",\"owner_uid\":%u,\"since\":%" PRId64 ",\"holders\":%u,\"queued\":%d,\"backlog\":%u,"
                       "\"bound\":%s}", (unsigned) w->lease.owner_uid, w->lease.since, w->lease.holders,
                       w->lease.queued, w->lease.backlog, w->lease.bound ? "true" : "false");
        } else
                fputs("null", stdout);
        printf(",\"broker\":%s}\n", w->broker < 0 ? "false" : "true");
}

static void print_text(const struct why *w) {
        printf("%s: %s\n", w->verdict, w->summary);
        for (size_t i = 0; i < w->nev; i++)
                printf("  %s\n", w->ev[i]);
        printf("Fix: %s\n", w->fix);
}

/* --- command ------------------------------------------------------------------------ */

static int parse_user(struct why *w, const char *s) {
        struct passwd *pw;
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (s[0] >= '0' && s[0] <= '9' && !*end && errno == 0 && v < UINT32_MAX) {
                w->uid = (uid_t) v;
                pw = getpwuid(w->uid);
                w->gid = pw ? pw->pw_gid : (gid_t) v;
                snprintf(w->user, sizeof(w->user), "%s", pw ? pw->pw_name : s);
                return 0;
        }
        pw = getpwnam(s);
        if (!pw)
                return -ENOENT;
        w->uid = pw->pw_uid;
        w->gid = pw->pw_gid;
        snprintf(w->user, sizeof(w->user), "%s", pw->pw_name);
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
        struct why w = { .uid = geteuid(), .gid = getegid(), .broker = -1 };
        const char *as = NULL;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        arg_json = true;
                else if (strcmp(argv[i], "--as") == 0) {
                        if (i + 1 >= argc || !argv[i + 1][0])
                                return usage_error("why: --as needs a user");
                        as = argv[++i];
                } else if (strncmp(argv[i], "--as=", 5) == 0 && argv[i][5])
                        as = argv[i] + 5;
                else if (argv[i][0] == '-' && argv[i][1])
                        return usage_error("why: unknown option '%s'", argv[i]);
                else if (w.text)
                        return usage_error("why: one endpoint at a time");
                else
                        w.text = argv[i];
        }
        if (!w.text)
                return usage_error("why: no endpoint given");
        r = check_endpoint(w.text, false);
        if (r != 0)
                return r;
        endpoint_parse(w.text, &w.ep);
        endpoint_format(&w.ep, w.canon);
        if (as) {
                if (parse_user(&w, as) < 0)
                        return failure("why: no such user '%s'", as);
                w.as_given = true;
        } else {
                struct passwd *pw = getpwuid(w.uid);
                if (pw)
                        snprintf(w.user, sizeof(w.user), "%s", pw->pw_name);
                else
                        snprintf(w.user, sizeof(w.user), "%u", (unsigned) w.uid);
        }

        w.unpriv_start = sysctl_long("/proc/sys/net/ipv4/ip_unprivileged_port_start", 1024);
        w.bindv6only = sysctl_long("/proc/sys/net/ipv6/bindv6only", 0);
        w.tw_reuse = sysctl_long("/proc/sys/net/ipv4/tcp_tw_reuse", -1);
        {
                char buf[64];
                w.range_lo = 32768;
                w.range_hi = 60999;
                if (read_small("/proc/sys/net/ipv4/ip_local_port_range", buf, sizeof(buf)) > 0)
                        sscanf(buf, "%ld %ld", &w.range_lo, &w.range_hi);
                if (read_small("/proc/sys/net/ipv4/ip_local_reserved_ports", w.reserved, sizeof(w.reserved)) < 0)
                        w.reserved[0] = '\0';
        }

        r = diag_dump(&w, AF_INET);
        if (r >= 0)
                r = diag_dump(&w, AF_INET6);
        if (r < 0) {
                errno = -r;
                r = failure("why: cannot list the sockets (sock_diag netlink): %m");
                goto out;
        }
        r = scan_holders(&w);
        if (r < 0) {
                errno = -r;
                r = failure("why: cannot read /proc: %m");
                goto out;
        }
        run_probes(&w);
        ask_broker(&w);
        decide(&w);
        if (w.oom || !w.summary || !w.fix) {
                r = failure("why: %s", strerror(ENOMEM));
                goto out;
        }
        if (arg_json)
                print_json(&w);
        else
                print_text(&w);
        r = 0;
out:
        why_free(&w);
        return r;
}
