/* SPDX-License-Identifier: MIT */
/*
 * The bind guard's map layout, shared by the BPF program (bind-guard.bpf.c)
 * and brokerd (guard.c). Every lease puts keys in the "leases" map, each a
 * count of the leases that need it:
 *   IPv4 address A (0.0.0.0 too)  ADDR ::ffff:A, ANY4
 *   IPv6 address X                ADDR X, ANY6
 *   [::], IPv6 only               ADDR ::, ANY6
 *   [::], dual-stack              ADDR ::, ADDR ::ffff:0.0.0.0, ANY4, ANY6
 * A bind() of a specific address is refused when its ADDR key or its
 * family's wildcard ADDR key is there; a bind() of a wildcard address when
 * any lease of its family holds the port (ANY4; for [::] ANY4 or ANY6, as
 * the program cannot see IPV6_V6ONLY). Unless the socket's cookie is in the
 * "allowed" map: brokerd's own, for the one bind() it is in.
 */
#pragma once

#include <linux/types.h>

enum guard_kind {
        GUARD_ADDR = 0,                 /* this address and port */
        GUARD_ANY4 = 1,                 /* some IPv4 address (or dual-stack [::]) on this port */
        GUARD_ANY6 = 2,                 /* some IPv6 address on this port */
};

struct guard_key {
        __u64 netns;                    /* network namespace cookie (SO_NETNS_COOKIE) */
        __u32 addr[4];                  /* IPv6, or IPv4 as ::ffff:A; zero for ANY4/ANY6 */
        __u16 port;                     /* host byte order */
        __u8 proto;                     /* IPPROTO_TCP or IPPROTO_UDP */
        __u8 kind;                      /* enum guard_kind */
        __u32 zero;                     /* padding, always 0 */
};
