/* SPDX-License-Identifier: MIT */
/*
 * The TCP and UDP sockets of a port, from sock_diag netlink (an
 * inet_diag_req_v2 dump the kernel filters by local port with a two-op
 * bytecode, as ss(8) does), with no privilege: `portctl why` lists every
 * socket on an endpoint's port, and the accept-queue check finds the
 * connections a lease's listener holds that no server has accepted.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "cli.h"
#include "fd-util.h"

/* Passes each socket of one datagram of a dump to fn. Returns 1 at its end
 * (NLMSG_DONE), 0 when more follows, or -errno. */
static int dump_batch(void *buf, size_t n, int family, sockdiag_fn fn, void *userdata) {
        int left = (int) n;

        for (struct nlmsghdr *h = buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
                const struct inet_diag_msg *m = NLMSG_DATA(h);

                if (h->nlmsg_type == NLMSG_DONE)
                        return 1;
                if (h->nlmsg_type == NLMSG_ERROR) {
                        const struct nlmsgerr *e = NLMSG_DATA(h);
                        return h->nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error ? e->error : -EPROTO;
                }
                if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
                        continue;
                fn(m, family, (const struct rtattr *) (m + 1), (int) (h->nlmsg_len - NLMSG_LENGTH(sizeof(*m))),
                   userdata);
        }
        return 0;
}

int sockdiag_dump(int family, int protocol, uint16_t port, uint32_t states, uint8_t ext, sockdiag_fn fn,
                  void *userdata) {
        /* The kernel runs the bytecode on each socket: "local port == port", else skip it. */
        struct {
                struct nlmsghdr nlh;
                struct inet_diag_req_v2 req;
                struct rtattr bc;
                struct inet_diag_bc_op ops[2];
        } q = {
                .nlh = {
                        .nlmsg_len = sizeof(q),
                        .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                        .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
                        .nlmsg_seq = 1,
                },
                .req = {
                        .sdiag_family = (uint8_t) family,
                        .sdiag_protocol = (uint8_t) protocol,
                        .idiag_ext = ext,
                        .idiag_states = states,
                },
                .bc = { .rta_len = RTA_LENGTH(sizeof(q.ops)), .rta_type = INET_DIAG_REQ_BYTECODE },
                .ops = {
                        { .code = INET_DIAG_BC_S_EQ, .yes = sizeof(q.ops), .no = sizeof(q.ops) + 4 },
                        { .no = port },
                },
        };
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        long buf[8192 / sizeof(long)];
        _cleanup_close_ int diag_fd = -1;

        diag_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (diag_fd < 0)
                return -errno;
        if (sendto(diag_fd, &q, sizeof(q), 0, (struct sockaddr *) &kernel, sizeof(kernel)) < 0)
                return -errno;
        for (;;) {
                ssize_t n = recv(diag_fd, buf, sizeof(buf), 0);
                int r;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return 0;
                r = dump_batch(buf, (size_t) n, family, fn, userdata);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
}

/* --- connections waiting to be accepted ------------------------------------------ */

struct waiting {
        const struct pb_endpoint *e;
        struct accept_queue *q;
};

/* Whether a connection with local address m->id.idiag_src (of family) came
 * in through e's listener: its family, and its address unless e is a wildcard. */
static bool through(const struct pb_endpoint *e, const struct inet_diag_msg *m, int family) {
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        static const uint8_t zero[16];
        const uint8_t *src = (const uint8_t *) m->id.idiag_src;

        switch (e->family) {
        case PB_FAMILY_ANY:             /* the dual-stack listener's: IPv6, IPv4 as v4-mapped */
                return family == AF_INET6;
        case PB_FAMILY_INET:
                return family == AF_INET && (memcmp(e->addr, zero, 4) == 0 || memcmp(e->addr, src, 4) == 0);
        default:
                return family == AF_INET6 && memcmp(src, mapped, sizeof(mapped)) != 0 &&
                       (memcmp(e->addr, zero, 16) == 0 || memcmp(e->addr, src, 16) == 0);
        }
}

static void count_waiting(const struct inet_diag_msg *m, int family, const struct rtattr *a, int len,
                          void *userdata) {
        struct waiting *w = userdata;

        /* In the accept queue: a full connection no process has a file for yet. */
        if (m->idiag_inode != 0 || !through(w->e, m, family))
                return;
        w->q->waiting++;
        for (; RTA_OK(a, len); a = RTA_NEXT(a, len))
                /* The kernel's struct tcp_info may be shorter than ours (an older kernel): only
                 * as much as it has is read. */
                if (a->rta_type == INET_DIAG_INFO &&
                    RTA_PAYLOAD(a) >= offsetof(struct tcp_info, tcpi_last_ack_recv) + sizeof(uint32_t)) {
                        const struct tcp_info *ti = RTA_DATA(a);

                        /* Since its client's last segment: the handshake's ACK, or its request. */
                        if (ti->tcpi_last_ack_recv > w->q->oldest_ms)
                                w->q->oldest_ms = ti->tcpi_last_ack_recv;
                }
}

int accept_queue(const struct pb_endpoint *e, struct accept_queue *ret) {
        struct accept_queue q = { 0 };
        struct waiting w = { .e = e, .q = &q };
        int family = e->family == PB_FAMILY_INET ? AF_INET : AF_INET6;
        int r;

        if (e->transport != PB_TCP)
                return -EOPNOTSUPP;
        r = sockdiag_dump(family, IPPROTO_TCP, e->port_lo, (1U << TCP_ESTABLISHED) | (1U << TCP_CLOSE_WAIT),
                          1 << (INET_DIAG_INFO - 1), count_waiting, &w);
        if (r < 0)
                return r;
        *ret = q;
        return 0;
}
