/* SPDX-License-Identifier: MIT */
/*
 * portctl why: the sockets on the endpoint's port (sockdiag.c dumps for
 * AF_INET and AF_INET6 of the endpoint's transport), each with its state,
 * owner uid, inode, queues and IPV6_V6ONLY, and whether its address
 * overlaps the endpoint's.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cli.h"
#include "why.h"

static const char *const state_names[] = {
        [ST_ESTABLISHED] = "ESTABLISHED", [ST_SYN_SENT] = "SYN_SENT", [ST_SYN_RECV] = "SYN_RECV",
        [ST_FIN_WAIT1] = "FIN_WAIT1", [ST_FIN_WAIT2] = "FIN_WAIT2", [ST_TIME_WAIT] = "TIME_WAIT",
        [ST_CLOSE] = "CLOSE", [ST_CLOSE_WAIT] = "CLOSE_WAIT", [ST_LAST_ACK] = "LAST_ACK",
        [ST_LISTEN] = "LISTEN", [ST_CLOSING] = "CLOSING", [ST_NEW_SYN_RECV] = "NEW_SYN_RECV",
        [ST_BOUND_INACTIVE] = "BOUND_INACTIVE",
};

const char *why_state_name(uint8_t st) {
        return st < sizeof(state_names) / sizeof(state_names[0]) && state_names[st] ? state_names[st] : "?";
}

void why_format_addr(const struct why_sock *s, const uint8_t *addr, uint16_t port, char *buf, size_t size) {
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
        default:                        /* an IPv6 address; [::] IPv6-only: every IPv6 address */
                if (s->v4)
                        return false;
                return is_zero(e->addr, 16) || is_zero(s->addr, 16) || memcmp(e->addr, s->addr, 16) == 0;
        }
}

static int add_sock(struct why *w, const struct why_sock *s) {
        struct why_sock *socks = grow(w->socks, w->nsocks, &w->asocks, sizeof(*socks));

        if (!socks)
                return -ENOMEM;
        w->socks = socks;
        w->socks[w->nsocks++] = *s;
        return 0;
}

static void parse_diag(const struct inet_diag_msg *m, int family, const struct rtattr *a, int len, void *userdata) {
        struct why *w = userdata;
        struct why_sock s = { .family = family, .v6only = -1 };
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

        if (ntohs(m->id.idiag_sport) != w->ep.port_lo)
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
        for (; RTA_OK(a, len); a = RTA_NEXT(a, len))
                if (a->rta_type == INET_DIAG_SKV6ONLY && RTA_PAYLOAD(a) >= 1)
                        s.v6only = *(const uint8_t *) RTA_DATA(a);
        s.relevant = overlaps(w, &s);
        if (add_sock(w, &s) < 0)
                w->oom = true;
}

int why_list_sockets(struct why *w) {
        int protocol = w->ep.transport == PB_UDP ? IPPROTO_UDP : IPPROTO_TCP;
        int r = sockdiag_dump(AF_INET, protocol, w->ep.port_lo, ~0U, 0, parse_diag, w);

        return r < 0 ? r : sockdiag_dump(AF_INET6, protocol, w->ep.port_lo, ~0U, 0, parse_diag, w);
}
