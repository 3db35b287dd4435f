/* SPDX-License-Identifier: MIT */
/*
 * portctl why: the verdict. From the sockets, holders, probes, sysctls and
 * brokerd's lease gathered in struct why, picks one verdict (broker-lease,
 * privileged-port, reuseport-group, dual-stack-overlap, inherited-listener,
 * listener, time-wait, connections / ephemeral-ports, unknown, free), its
 * one-sentence summary, the evidence lines and the fix.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>

#include "cli.h"
#include "why.h"

void why_evidence(struct why *w, const char *fmt, ...) {
        char **ev = grow(w->ev, w->nev, &w->aev, sizeof(char *));
        va_list ap;
        char *s;

        if (!ev) {
                w->oom = true;
                return;
        }
        w->ev = ev;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                w->oom = true;
        else
                w->ev[w->nev++] = s;
        va_end(ap);
}

char *why_fmt(struct why *w, const char *fmt, ...) {
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

static bool privileged_for_user(const struct why *w) {
        char buf[2048], *p;

        if (w->ep.port_lo >= w->unpriv_start || w->uid == 0)
                return false;
        if (w->as_given || w->uid != geteuid())
                return true;            /* a plain user: only a file capability could help */
        if (why_read_file("/proc/self/status", buf, sizeof(buf)) > 0 && (p = strstr(buf, "\nCapEff:")))
                return !(strtoull(p + 8, NULL, 16) & (1ULL << 10));        /* CAP_NET_BIND_SERVICE */
        return true;
}

static void probe_evidence(struct why *w) {
        char who[96];

        user_text(w->uid, who, sizeof(who));
        if (w->probe[0] < 0)
                return;
        why_evidence(w, "probe bind of %s as %s%s (bound, never listening, closed at once): "
                 "plain %s, with SO_REUSEADDR %s, with SO_REUSEPORT %s",
                 w->canon, w->probe_as_user ? "" : "us, not ", who, why_errno_name(w->probe[0]),
                 why_errno_name(w->probe[1]), why_errno_name(w->probe[2]));
}

/* A brokerd lease for the endpoint. */
static void verdict_lease(struct why *w) {
        char owner[96], asker[96];
        bool may = w->uid == 0 || w->uid == w->lease.owner_uid;

        user_text(w->lease.owner_uid, owner, sizeof(owner));
        user_text(w->uid, asker, sizeof(asker));
        w->verdict = "broker-lease";
        w->summary = why_fmt(w, "brokerd holds %s in a lease owned by %s%s.", w->lease.endpoint, owner,
                             w->guard == 1 ? "; the kernel's bind guard refuses bind() of it to every process "
                                             "but brokerd" : "");
        if (w->guard == 1)
                why_evidence(w, "bind guard on (%s): bind() of %s, or of an address overlapping it, fails with "
                             "EADDRINUSE for every process but brokerd, also while brokerd is down",
                             w->guard_state + (strncmp(w->guard_state, "on: ", 4) == 0 ? 4 : 0), w->canon);
        else if (w->guard == 0)
                why_evidence(w, "bind guard off (%s): only the lease's open socket keeps others from binding it",
                             w->guard_state);
        why_evidence(w, "lease %" PRIu64 ": owner %s, since %" PRId64 ", %u live holder%s, %" PRIu64 " hand-outs, %s",
                 w->lease.id, owner, w->lease.since, w->lease.holders, w->lease.holders == 1 ? "" : "s",
                 w->lease.handouts, w->lease.bound ? "socket bound" : "no socket bound right now");
        if (w->lease.transport != IPPROTO_UDP && w->lease.queued >= 0)
                why_evidence(w, "queued connections: %d of backlog %u", w->lease.queued, w->lease.backlog);
        for (size_t i = 0; i < w->nsocks; i++)
                if (w->socks[i].relevant && why_is_listener(w, &w->socks[i]) && w->socks[i].inode)
                        why_describe_holders(w, w->socks[i].inode, "holder");
        if (may)
                w->fix = why_fmt(w, "%s may get it: `portctl get %s -- CMD` runs CMD with the broker's socket "
                                   "(fd 3, LISTEN_FDS=1); never bind the port yourself.", asker, w->text);
        else
                w->fix = why_fmt(w, "%s may not get it: the lease is held by %s (uid %u). Run as that user "
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
        w->summary = why_fmt(w, "port %u is below net.ipv4.ip_unprivileged_port_start (%ld): bind() as %s "
                               "fails with EACCES without CAP_NET_BIND_SERVICE.", w->ep.port_lo, w->unpriv_start, who);
        why_evidence(w, "net.ipv4.ip_unprivileged_port_start = %ld (per network namespace); uid 0 is exempt, "
                 "any other uid needs CAP_NET_BIND_SERVICE", w->unpriv_start);
        w->fix = why_fmt(w, "let brokerd bind it: as root `portctl policy add %s --user %s`, then as that user "
                           "`portctl get %s -- CMD`. (Or give the program cap_net_bind_service, "
                           "or lower net.ipv4.ip_unprivileged_port_start.)", pattern, w->user, w->text);
}

/* The overlap is between IPv4 and the IPv6 dual-stack wildcard. */
static bool cross_family(const struct why *w, const struct why_sock *s) {
        if (w->ep.family == PB_FAMILY_ANY)
                return s->v4;
        if (w->ep.family == PB_FAMILY_INET)
                return !s->v4;
        return false;
}

/* The first relevant listener; *ret_n: how many there are. */
static const struct why_sock *first_listener(const struct why *w, size_t *ret_n) {
        const struct why_sock *first = NULL;
        size_t n = 0;

        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                if (!s->relevant || !why_is_listener(w, s))
                        continue;
                if (!first)
                        first = s;
                n++;
        }
        *ret_n = n;
        return first;
}

/* True when t is another relevant listener on the very same address as s. */
static bool same_address(const struct why *w, const struct why_sock *s, const struct why_sock *t) {
        return t->relevant && why_is_listener(w, t) && t->v4 == s->v4 && memcmp(t->addr, s->addr, 16) == 0;
}

/* Several listeners on the very same address: a SO_REUSEPORT group. Returns its first member
 * (*ret_n: its size) or NULL. */
static const struct why_sock *reuseport_group(const struct why *w, size_t *ret_n) {
        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                size_t same = 0;

                if (!s->relevant || !why_is_listener(w, s))
                        continue;
                for (size_t j = 0; j < w->nsocks; j++)
                        if (same_address(w, s, &w->socks[j]) && w->socks[j].inode != s->inode)
                                same++;
                if (same > 0) {
                        *ret_n = same + 1;
                        return s;
                }
        }
        return NULL;
}

static void verdict_reuseport_group(struct why *w, const struct why_sock *group, size_t ngroup) {
        uid_t guid = group->uid;
        char owner[96], addr[80];

        why_format_addr(group, group->addr, w->ep.port_lo, addr, sizeof(addr));
        user_text(guid, owner, sizeof(owner));
        w->verdict = "reuseport-group";
        w->summary = why_fmt(w, "a SO_REUSEPORT group of %zu sockets of %s holds %s.", ngroup, owner, addr);
        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                if (same_address(w, group, s)) {
                        why_evidence(w, "member socket inode %u (%s, uid %u)", s->inode, why_state_name(s->state),
                                     s->uid);
                        why_describe_holders(w, s->inode, "  held by");
                }
        }
        why_evidence(w, "the rule: a new socket joins the group only if it sets SO_REUSEPORT before bind() "
                     "and has the same effective uid as the group (%u); it then takes a share of the "
                     "connections", (unsigned) guid);
        probe_evidence(w);
        why_evidence(w, "brokerd never sets SO_REUSEPORT: with it any process of the owner's uid could bind the "
                     "port and take a share of its connections");
        w->fix = why_fmt(w, "stop the members to free the port; to restart without a gap, let brokerd hold "
                         "one listener (`portctl get %s -- CMD`) instead of joining a group.", w->text);
}

static void verdict_dual_stack(struct why *w, const struct why_sock *first) {
        char addr[80];

        why_format_addr(first, first->addr, w->ep.port_lo, addr, sizeof(addr));
        w->verdict = "dual-stack-overlap";
        if (w->ep.family == PB_FAMILY_ANY)
                w->summary = why_fmt(w, "%s is the dual-stack wildcard, which also takes IPv4 port %u, and "
                                     "an IPv4 socket holds %s.", w->canon, w->ep.port_lo, addr);
        else
                w->summary = why_fmt(w, "a dual-stack IPv6 socket on %s (IPV6_V6ONLY=0) also holds IPv4 "
                                     "port %u.", addr, w->ep.port_lo);
        why_evidence(w, "holder %s, %s, IPV6_V6ONLY=%s", addr, why_state_name(first->state),
                     first->v4 ? "n/a (IPv4)" : first->v6only < 0 ? "unknown" : first->v6only ? "1" : "0");
        why_evidence(w, "net.ipv6.bindv6only = %ld (the default of IPV6_V6ONLY for new IPv6 sockets)",
                     w->bindv6only);
        why_describe_holders(w, first->inode, "held by");
        probe_evidence(w);
        if (w->ep.family == PB_FAMILY_ANY)
                w->fix = why_fmt(w, "bind only IPv6 (IPV6_V6ONLY=1, e.g. a specific IPv6 address) next to "
                                 "the IPv4 socket, or stop the IPv4 holder and let one [::] socket serve both.");
        else
                w->fix = why_fmt(w, "the [::] holder already serves IPv4 on this port; set IPV6_V6ONLY=1 on "
                                 "it (or net.ipv6.bindv6only=1 before it starts) to leave IPv4 free, or "
                                 "stop it.");
}

/* One line per holder of inode: it holds the fd but its creator is gone. */
static void inherited_evidence(struct why *w, uint32_t inode) {
        for (size_t i = 0; i < w->nholders; i++) {
                const struct why_holder *h = &w->holders[i];
                struct why_proc pi, parent;
                int cloexec;

                if (h->inode != inode || why_proc_info(h->pid, &pi) < 0)
                        continue;
                if (why_proc_info(pi.ppid, &parent) < 0)
                        snprintf(parent.comm, sizeof(parent.comm), "?");
                cloexec = why_fd_cloexec(h->pid, h->fd);
                why_evidence(w, "pid %d (%s) holds it as fd %d%s but did not create it: its process group "
                             "leader, pid %d (the process that started the group), has exited, and its parent "
                             "is now pid %d (%s), which does not hold the socket",
                             (int) pi.pid, pi.cmd, h->fd, cloexec == 0 ? " (not close-on-exec)" : "",
                             (int) pi.pgid, (int) pi.ppid, parent.comm);
        }
}

static void verdict_inherited(struct why *w, const struct why_sock *first) {
        char addr[80];

        why_format_addr(first, first->addr, w->ep.port_lo, addr, sizeof(addr));
        w->verdict = "inherited-listener";
        w->summary = why_fmt(w, "%s is still in %s, held by a process that inherited it from a "
                             "server that is gone.", addr, why_state_name(first->state));
        inherited_evidence(w, first->inode);
        why_describe_holders(w, first->inode, "held by");
        why_evidence(w, "a listener in LISTEN blocks every new bind() of the port, with or without SO_REUSEADDR");
        probe_evidence(w);
        w->fix = why_fmt(w, "stop the holder (kill the pid above); a restarted server cannot bind until it "
                         "exits or closes the fd. In the server, create listeners with SOCK_CLOEXEC and "
                         "close them in forked children, or let brokerd hold the port (`portctl get %s -- "
                         "CMD`).", w->text);
}

static void verdict_listener(struct why *w, const struct why_sock *first, size_t nlisten) {
        char addr[80];

        why_format_addr(first, first->addr, w->ep.port_lo, addr, sizeof(addr));
        w->verdict = "listener";
        w->summary = why_fmt(w, "%s is %s by %zu socket%s: %s.", w->canon,
                             first->state == ST_LISTEN ? "listened on" : "bound", nlisten, nlisten == 1 ? "" : "s",
                             addr);
        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                char a[80];
                if (!s->relevant || !why_is_listener(w, s))
                        continue;
                why_format_addr(s, s->addr, w->ep.port_lo, a, sizeof(a));
                why_evidence(w, "socket %s %s, uid %u, inode %u%s", a, why_state_name(s->state), s->uid, s->inode,
                             s->state == ST_LISTEN ? "" : " (bound, not listening)");
                if (s->inode && why_describe_holders(w, s->inode, "  held by") == 0)
                        why_evidence(w, "  held by: no process we could see%s",
                                     w->unreadable ? " (some processes' fds are not readable: run as root)" : "");
        }
        probe_evidence(w);
        w->fix = why_fmt(w, "stop that process (or its unit), or pick another port; if it is your own server "
                         "restarting, let brokerd hold the port so restarts reuse its socket: `portctl get %s -- "
                         "CMD`.", w->text);
}

/* Listeners hold the port: which kind. */
static void verdict_listeners(struct why *w) {
        size_t nlisten, ngroup;
        const struct why_sock *first = first_listener(w, &nlisten);
        const struct why_sock *group = reuseport_group(w, &ngroup);

        if (group)
                verdict_reuseport_group(w, group, ngroup);
        else if (cross_family(w, first))
                verdict_dual_stack(w, first);
        else if (first->inode && why_all_inherited(w, first->inode))
                verdict_inherited(w, first);
        else
                verdict_listener(w, first, nlisten);
}

static void verdict_closing(struct why *w) {
        unsigned count[ST_BOUND_INACTIVE + 1] = { 0 };
        uint32_t min_ms = UINT32_MAX, max_ms = 0;
        size_t n = 0;

        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                if (!s->relevant || !why_is_closing(s->state))
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
        w->summary = why_fmt(w, "%zu closing connection%s (no listener) still use port %u.", n, n == 1 ? "" : "s",
                               w->ep.port_lo);
        for (int st = 0; st <= ST_BOUND_INACTIVE; st++)
                if (count[st])
                        why_evidence(w, "%u in %s", count[st], why_state_name((uint8_t) st));
        if (count[ST_TIME_WAIT])
                why_evidence(w, "TIME_WAIT entries expire in %.1f to %.1f s (the kernel's timer; TIME_WAIT lasts 60 s)",
                         min_ms / 1000.0, max_ms / 1000.0);
        for (size_t i = 0; i < w->nsocks; i++)
                if (w->socks[i].relevant && w->socks[i].state == ST_CLOSE_WAIT && w->socks[i].inode)
                        why_describe_holders(w, w->socks[i].inode, "CLOSE_WAIT held by");
        why_evidence(w, "the rule (measured on Linux): a new socket with SO_REUSEADDR binds over TIME_WAIT iff the old "
                 "listener had SO_REUSEADDR too (the entries keep the flag); without it on either side: EADDRINUSE");
        probe_evidence(w);
        why_evidence(w, "net.ipv4.tcp_tw_reuse = %ld (%s): it only lets outgoing connect() reuse a TIME_WAIT "
                 "4-tuple; it never helps bind()", w->tw_reuse,
                 w->tw_reuse == 0 ? "off" : w->tw_reuse == 1 ? "on" : w->tw_reuse == 2 ? "loopback only" : "?");
        if (w->probe[1] == 0)
                w->fix = why_fmt(w, "set SO_REUSEADDR on the new listener before bind(): the probe with it bound, "
                                   "so the old listener had it too. To never rebind at all, let brokerd hold the "
                                   "port (`portctl get %s -- CMD`).", w->text);
        else
                w->fix = why_fmt(w, "no option of the new socket helps (the old listener lacked SO_REUSEADDR): wait "
                                   "%.0f s for the entries to expire, and give the server SO_REUSEADDR; or let brokerd "
                                   "hold the port so restarts never rebind (`portctl get %s -- CMD`).",
                                   max_ms == 0 ? 60.0 : max_ms / 1000.0 + 1, w->text);
}

static void verdict_connections(struct why *w) {
        bool ephemeral = w->ep.port_lo >= w->range_lo && w->ep.port_lo <= w->range_hi;
        size_t n = 0, shown = 0;

        for (size_t i = 0; i < w->nsocks; i++)
                if (w->socks[i].relevant && why_is_connection(w->socks[i].state))
                        n++;
        w->verdict = ephemeral ? "ephemeral-ports" : "connections";
        if (ephemeral)
                w->summary = why_fmt(w, "port %u is in net.ipv4.ip_local_port_range (%ld-%ld) and %zu outgoing "
                                       "connection%s use it as their local port.", w->ep.port_lo, w->range_lo,
                                       w->range_hi, n, n == 1 ? "" : "s");
        else
                w->summary = why_fmt(w, "%zu connection%s (no listener) use local port %u.", n, n == 1 ? "" : "s",
                                       w->ep.port_lo);
        why_evidence(w, "net.ipv4.ip_local_port_range = %ld %ld; net.ipv4.ip_local_reserved_ports = %s", w->range_lo,
                 w->range_hi, w->reserved[0] ? w->reserved : "(none)");
        for (size_t i = 0; i < w->nsocks && shown < WHY_MAX_LIST; i++) {
                const struct why_sock *s = &w->socks[i];
                char a[80], b[80];
                if (!s->relevant || !why_is_connection(s->state))
                        continue;
                shown++;
                why_format_addr(s, s->addr, w->ep.port_lo, a, sizeof(a));
                why_format_addr(s, s->raddr, s->rport, b, sizeof(b));
                why_evidence(w, "%s %s -> %s, uid %u", why_state_name(s->state), a, b, s->uid);
                if (s->inode)
                        why_describe_holders(w, s->inode, "  held by");
        }
        probe_evidence(w);
        if (ephemeral)
                w->fix = why_fmt(w, "reserve the port so the kernel stops picking it for outgoing connections: "
                                   "`sysctl -w net.ipv4.ip_local_reserved_ports=%u` (add to the list, persist it in "
                                   "/etc/sysctl.d); bind() still works on reserved ports. The connections holding it "
                                   "now keep it until they close.", w->ep.port_lo);
        else
                w->fix = why_fmt(w, "the connections keep the port until their processes close them.");
}

static void verdict_free(struct why *w) {
        w->verdict = "free";
        w->summary = why_fmt(w, "nothing holds %s: bind() would succeed.", w->canon);
        probe_evidence(w);
        w->fix = why_fmt(w, "nothing to fix; to keep the port across restarts, `portctl get %s -- CMD`.", w->text);
}

/* Which kinds of relevant sockets there are. */
static void classify(const struct why *w, bool *ret_listener, bool *ret_closing, bool *ret_conn) {
        bool listener = false, closing = false, conn = false;

        for (size_t i = 0; i < w->nsocks; i++) {
                const struct why_sock *s = &w->socks[i];
                if (!s->relevant)
                        continue;
                if (why_is_listener(w, s))
                        listener = true;
                else if (why_is_closing(s->state))
                        closing = true;
                else if (why_is_connection(s->state))
                        conn = true;
        }
        *ret_listener = listener;
        *ret_closing = closing;
        *ret_conn = conn;
}

static void verdict_unknown(struct why *w) {
        w->verdict = "unknown";
        w->summary = why_fmt(w, "bind() of %s fails with %s, but no socket on the port explains it.",
                             w->canon, why_errno_name(w->probe[0]));
        probe_evidence(w);
        if (w->probe[0] == EADDRINUSE && w->broker < 0)
                why_evidence(w, "a cgroup bind program may refuse it: portbroker's bind guard keeps every leased "
                             "endpoint (pinned in /sys/fs/bpf/portbroker) while brokerd is down");
        w->fix = why_fmt(w, "check `ss -tuanp sport = :%u` and the address (EADDRNOTAVAIL: not local)%s.",
                         w->ep.port_lo, w->probe[0] == EADDRINUSE && w->broker < 0 ?
                         "; start brokerd and run this again, or `portctl status`" : "");
}

/* Evidence on what could not be seen. */
static void unseen_evidence(struct why *w) {
        if (w->broker < 0)
                why_evidence(w, "brokerd: not asked (%s)", w->broker_msg[0] ? w->broker_msg : "not reachable");
        else if (w->broker == 0)
                why_evidence(w, "brokerd: no lease for %s", w->canon);
        if (w->unreadable)
                why_evidence(w, "could not read the open files of %u process%s (not root): their sockets' owners "
                             "are not named", w->unreadable, w->unreadable == 1 ? "" : "es");
}

void why_decide(struct why *w) {
        bool listener, closing, conn;

        classify(w, &listener, &closing, &conn);
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
        else if (w->probe[0] > 0)
                verdict_unknown(w);
        else
                verdict_free(w);

        if (strcmp(w->verdict, "privileged-port") == 0 && (listener || closing || conn))
                why_evidence(w, "also: other sockets use port %u (run as root or with --as root to see why)",
                             w->ep.port_lo);
        unseen_evidence(w);
}
