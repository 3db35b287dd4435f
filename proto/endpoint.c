/* SPDX-License-Identifier: MIT */
/*
 * Endpoint text and wire forms. Text is `[tcp:|udp:][ADDRESS:]PORT` where
 * ADDRESS is dotted IPv4 or a bracketed IPv6 address; `[::]` and an omitted
 * address both mean the dual-stack wildcard. Parsing is strict: no spaces,
 * no signs, no leading zeros beyond "0", ports 1..65535, and IPv4-mapped
 * IPv6 addresses are refused (use the IPv4 form).
 */
#include "endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int parse_port(const char *s, size_t len, uint16_t *ret) {
        unsigned v = 0;

        if (len == 0 || len > 5 || (s[0] == '0'))
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v < 1 || v > 65535)
                return -EINVAL;
        *ret = (uint16_t) v;
        return 0;
}

static int parse_ports(const char *s, bool pattern, struct pb_endpoint *e) {
        const char *dash = strchr(s, '-');
        int r;

        if (!dash) {
                r = parse_port(s, strlen(s), &e->port_lo);
                e->port_hi = e->port_lo;
                return r;
        }
        if (!pattern)
                return -EINVAL;
        r = parse_port(s, (size_t) (dash - s), &e->port_lo);
        if (r < 0)
                return r;
        r = parse_port(dash + 1, strlen(dash + 1), &e->port_hi);
        if (r < 0)
                return r;
        return e->port_lo <= e->port_hi ? 0 : -EINVAL;
}

static int parse(const char *s, bool pattern, struct pb_endpoint *ret) {
        struct pb_endpoint e = { .transport = PB_TCP, .family = PB_FAMILY_ANY };
        char host[INET6_ADDRSTRLEN + 1];
        const char *port;
        int r;

        if (!s || strlen(s) >= PB_ENDPOINT_STRLEN)
                return -EINVAL;
        if (strncmp(s, "tcp:", 4) == 0)
                s += 4;
        else if (strncmp(s, "udp:", 4) == 0) {
                e.transport = PB_UDP;
                s += 4;
        }

        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                size_t len;

                if (!end || end[1] != ':')
                        return -EINVAL;
                len = (size_t) (end - s - 1);
                if (len == 0 || len >= sizeof(host))
                        return -EINVAL;
                memcpy(host, s + 1, len);
                host[len] = '\0';
                if (inet_pton(AF_INET6, host, e.addr) != 1)
                        return -EINVAL;
                e.family = PB_FAMILY_INET6;
                port = end + 2;
        } else if (strchr(s, ':')) {
                const char *colon = strchr(s, ':');
                size_t len = (size_t) (colon - s);

                if (len == 0 || len >= sizeof(host))
                        return -EINVAL;
                memcpy(host, s, len);
                host[len] = '\0';
                if (inet_pton(AF_INET, host, e.addr) != 1)
                        return -EINVAL;
                e.family = PB_FAMILY_INET;
                port = colon + 1;
        } else
                port = s;

        /* `[::]` is the dual-stack wildcard, the same as no address. */
        if (e.family == PB_FAMILY_INET6 && memcmp(e.addr, &in6addr_any, sizeof(e.addr)) == 0)
                e.family = PB_FAMILY_ANY;

        r = parse_ports(port, pattern, &e);
        if (r < 0)
                return r;
        r = endpoint_validate(&e, pattern);
        if (r < 0)
                return r;
        *ret = e;
        return 0;
}

int endpoint_parse(const char *s, struct pb_endpoint *ret) {
        return parse(s, false, ret);
}

int endpoint_parse_pattern(const char *s, struct pb_endpoint *ret) {
        return parse(s, true, ret);
}

static char *format(const struct pb_endpoint *e, bool pattern, char buf[static PB_ENDPOINT_STRLEN]) {
        const char *transport = e->transport == PB_UDP ? "udp" : "tcp";
        char host[INET6_ADDRSTRLEN] = "";
        char ports[sizeof("65535-65535")];

        if (e->port_lo == e->port_hi)
                snprintf(ports, sizeof(ports), "%u", e->port_lo);
        else
                snprintf(ports, sizeof(ports), "%u-%u", e->port_lo, e->port_hi);

        switch (e->family) {
        case PB_FAMILY_INET:
                inet_ntop(AF_INET, e->addr, host, sizeof(host));
                snprintf(buf, PB_ENDPOINT_STRLEN, "%s:%s:%s", transport, host, ports);
                break;
        case PB_FAMILY_INET6:
                inet_ntop(AF_INET6, e->addr, host, sizeof(host));
                snprintf(buf, PB_ENDPOINT_STRLEN, "%s:[%s]:%s", transport, host, ports);
                break;
        default:
                if (pattern)
                        snprintf(buf, PB_ENDPOINT_STRLEN, "%s:%s", transport, ports);
                else
                        snprintf(buf, PB_ENDPOINT_STRLEN, "%s:[::]:%s", transport, ports);
        }
        return buf;
}

char *endpoint_format(const struct pb_endpoint *e, char buf[static PB_ENDPOINT_STRLEN]) {
        return format(e, false, buf);
}

char *endpoint_format_pattern(const struct pb_endpoint *p, char buf[static PB_ENDPOINT_STRLEN]) {
        return format(p, true, buf);
}

static bool all_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

int endpoint_validate(const struct pb_endpoint *e, bool pattern) {
        if (e->transport != PB_TCP && e->transport != PB_UDP)
                return -EINVAL;
        if (e->port_lo < 1 || e->port_lo > e->port_hi)
                return -EINVAL;
        if (!pattern && e->port_lo != e->port_hi)
                return -EINVAL;
        switch (e->family) {
        case PB_FAMILY_ANY:
                return all_zero(e->addr, 16) ? 0 : -EINVAL;
        case PB_FAMILY_INET:
                return all_zero(e->addr + 4, 12) ? 0 : -EINVAL;
        case PB_FAMILY_INET6: {
                struct in6_addr a;

                /* e->addr is not aligned for struct in6_addr: test a copy. */
                memcpy(&a, e->addr, sizeof(a));
                return IN6_IS_ADDR_V4MAPPED(&a) || IN6_IS_ADDR_UNSPECIFIED(&a) ? -EINVAL : 0;
        }
        default:
                return -EINVAL;
        }
}

bool endpoint_equal(const struct pb_endpoint *a, const struct pb_endpoint *b) {
        return a->transport == b->transport && a->family == b->family &&
               a->port_lo == b->port_lo && a->port_hi == b->port_hi &&
               memcmp(a->addr, b->addr, sizeof(a->addr)) == 0;
}

bool endpoint_matches(const struct pb_endpoint *p, const struct pb_endpoint *e) {
        if (p->transport != e->transport || e->port_lo < p->port_lo || e->port_lo > p->port_hi)
                return false;
        if (p->family == PB_FAMILY_ANY)
                return true;
        return p->family == e->family && memcmp(p->addr, e->addr, sizeof(p->addr)) == 0;
}

void endpoint_encode(const struct pb_endpoint *e, uint8_t out[static PB_ENDPOINT_WIRE_SIZE]) {
        out[0] = e->transport;
        out[1] = e->family;
        out[2] = (uint8_t) (e->port_lo >> 8);
        out[3] = (uint8_t) e->port_lo;
        out[4] = (uint8_t) (e->port_hi >> 8);
        out[5] = (uint8_t) e->port_hi;
        out[6] = out[7] = 0;
        memcpy(out + 8, e->addr, 16);
}

int endpoint_decode(const uint8_t in[static PB_ENDPOINT_WIRE_SIZE], bool pattern, struct pb_endpoint *ret) {
        struct pb_endpoint e = {
                .transport = in[0],
                .family = in[1],
                .port_lo = (uint16_t) (in[2] << 8 | in[3]),
                .port_hi = (uint16_t) (in[4] << 8 | in[5]),
        };

        if (in[6] || in[7])
                return -EBADMSG;
        memcpy(e.addr, in + 8, 16);
        if (endpoint_validate(&e, pattern) < 0)
                return -EBADMSG;
        *ret = e;
        return 0;
}
