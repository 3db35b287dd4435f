/* SPDX-License-Identifier: MIT */
/*
 * The bind guard, in the kernel: cgroup bind4/bind6 programs that refuse
 * bind() of an endpoint brokerd holds a lease on, with EADDRINUSE, to every
 * socket but the one brokerd is binding. brokerd keeps the maps; the
 * programs stay attached (pinned links) while brokerd is away. Compiled by
 * clang -target bpf; no CO-RE, no kernel headers beyond the UAPI. The
 * *_eperm variants are for kernels before 5.18, which have no
 * bpf_set_retval(): the refusal is the kernel's EPERM there. See
 * bind-guard.h for the keys.
 */
#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bind-guard.h"

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(map_flags, BPF_F_NO_PREALLOC);
        __uint(max_entries, 1);         /* set by brokerd from --max-leases */
        __type(key, struct guard_key);
        __type(value, __u32);           /* leases needing the key */
} leases SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(max_entries, 16);
        __type(key, __u64);             /* socket cookie */
        __type(value, __u8);
} allowed SEC(".maps");

static __always_inline int has(struct guard_key *k, __u32 a0, __u32 a1, __u32 a2, __u32 a3, __u8 kind) {
        k->addr[0] = a0;
        k->addr[1] = a1;
        k->addr[2] = a2;
        k->addr[3] = a3;
        k->kind = kind;
        return bpf_map_lookup_elem(&leases, k) != 0;
}

/* The verdict on binding address a0..a3 (IPv6 layout, network order). */
static __always_inline int check(struct bpf_sock_addr *ctx, __u32 a0, __u32 a1, __u32 a2, __u32 a3,
                                 int addrinuse) {
        struct guard_key k = {};
        __u64 cookie;
        int hit;

        k.port = bpf_ntohs((__u16) ctx->user_port);
        if (k.port == 0)
                return 1;               /* the kernel picks a free port */
        if (ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_MPTCP)
                k.proto = IPPROTO_TCP;
        else if (ctx->protocol == IPPROTO_UDP)
                k.proto = IPPROTO_UDP;
        else
                return 1;
        k.netns = bpf_get_netns_cookie(ctx);

        if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) {   /* IPv4 */
                hit = has(&k, a0, a1, a2, a3, GUARD_ADDR) || has(&k, 0, 0, a2, 0, GUARD_ADDR) ||
                      (a3 == 0 && has(&k, 0, 0, 0, 0, GUARD_ANY4));
        } else {
                hit = has(&k, a0, a1, a2, a3, GUARD_ADDR) || has(&k, 0, 0, 0, 0, GUARD_ADDR);
                if (!hit && (a0 | a1 | a2 | a3) == 0)
                        hit = has(&k, 0, 0, 0, 0, GUARD_ANY4) || has(&k, 0, 0, 0, 0, GUARD_ANY6);
        }
        if (!hit)
                return 1;
        cookie = bpf_get_socket_cookie(ctx);
        if (bpf_map_lookup_elem(&allowed, &cookie))
                return 1;
        if (addrinuse)
                bpf_set_retval(-EADDRINUSE);
        return 0;
}

SEC("cgroup/bind4")
int guard_bind4(struct bpf_sock_addr *ctx) {
        return check(ctx, 0, 0, bpf_htonl(0xffff), ctx->user_ip4, 1);
}

SEC("cgroup/bind6")
int guard_bind6(struct bpf_sock_addr *ctx) {
        return check(ctx, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3], 1);
}

SEC("cgroup/bind4")
int guard_bind4_eperm(struct bpf_sock_addr *ctx) {
        return check(ctx, 0, 0, bpf_htonl(0xffff), ctx->user_ip4, 0);
}

SEC("cgroup/bind6")
int guard_bind6_eperm(struct bpf_sock_addr *ctx) {
        return check(ctx, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3], 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
