/* SPDX-License-Identifier: MIT */
/*
 * Endpoint text and wire forms. Text is `[TRANSPORT:][ADDRESS:]PORT` where
 * TRANSPORT is tcp or udp, alone or with a family: tcp4/udp4 (IPv4 only)
 * or tcp6/udp6 (IPv6 only), as Go's network names. ADDRESS is dotted IPv4
 * or a bracketed IPv6 address; `[::]` and an omitted address both mean the
 * dual-stack wildcard, and with tcp6/udp6 the IPv6-only wildcard. Parsing
 * is strict: no spaces, no signs, no leading zeros beyond "0", ports
 * 1..65535, a family that fits the address, and IPv4-mapped IPv6 addresses
 * are refused (use the IPv4 form). `unix:/path` is a Unix stream socket;
 * its path must be absolute and normalized, as the kernel would resolve it
 * name by name: no empty, `.` or `..` component, no trailing `/` (in a
 * pattern, a trailing `/` means "any name directly in this directory").
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

/* The transport prefix, if any: tcp, udp, and each with 4 or 6. Sets
 * e->transport and *only (the family it names, 0 for both); returns what
 * follows it. */
static const char *parse_transport(const char *s, struct pb_endpoint *e, int *only) {
        static const struct {
                const char *prefix;
                uint8_t transport;
                int only;
        } prefixes[] = {
                { "tcp:", PB_TCP, 0 }, { "udp:", PB_UDP, 0 }, { "tcp4:", PB_TCP, 4 },
                { "udp4:", PB_UDP, 4 }, { "tcp6:", PB_TCP, 6 }, { "udp6:", PB_UDP, 6 },
        };

        *only = 0;
        for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
                size_t n = strlen(prefixes[i].prefix);

                if (strncmp(s, prefixes[i].prefix, n) == 0) {
                        e->transport = prefixes[i].transport;
                        *only = prefixes[i].only;
                        return s + n;
                }
        }
        return s;
}

/* The family of what the address said (ANY: none), with a tcp4/tcp6
 * family applied: no address becomes that family's wildcard, an address of
 * the other family is refused, and `[::]` is the dual-stack wildcard but
 * for tcp6, whose wildcard it is. */
static int apply_family(struct pb_endpoint *e, int only) {
        if ((only == 4 && e->family == PB_FAMILY_INET6) || (only == 6 && e->family == PB_FAMILY_INET))
                return -EINVAL;
        if (e->family == PB_FAMILY_INET6 && memcmp(e->addr, &in6addr_any, sizeof(e->addr)) == 0 && only != 6)
                e->family = PB_FAMILY_ANY;
        if (only == 4 && e->family == PB_FAMILY_ANY)
                e->family = PB_FAMILY_INET;     /* 0.0.0.0 */
        else if (only == 6 && e->family == PB_FAMILY_ANY)
                e->family = PB_FAMILY_INET6;    /* [::], IPv6 only */
        return 0;
}

/* Whether path is absolute and normalized (see the top), at most
 * PB_UNIX_PATH_MAX bytes of PB_UNIX_PATH_CHARS and '/'; a trailing `/`
 * only when dir_ok. (No space, '=', ',' or control byte: a path goes
 * into log lines and portctl run's comma-separated list as it is.) */
static bool unix_path_valid(const char *path, bool dir_ok) {
        size_t n = strnlen(path, PB_UNIX_PATH_MAX + 1);

        if (n < 2 || n > PB_UNIX_PATH_MAX || path[0] != '/')
                return false;
        if (path[n - 1] == '/' && !dir_ok)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = path[i];

                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      (c && strchr("/" PB_UNIX_PATH_CHARS, c))))
                        return false;
        }
        for (const char *c = path + 1; *c; ) {           /* each component after a '/' */
                size_t len = strcspn(c, "/");

                if (len == 0 && c[len] == '/')
                        return false;                   /* "//" */
                if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
                        return false;
                c += len;
                if (*c == '/')
                        c++;
        }
        return true;
}

static int parse(const char *s, bool pattern, struct pb_endpoint *ret) {
        struct pb_endpoint e = { .transport = PB_TCP, .family = PB_FAMILY_ANY };
        char host[INET6_ADDRSTRLEN + 1];
        const char *port;
        int only, r;

        if (!s || strlen(s) >= PB_ENDPOINT_STRLEN)
                return -EINVAL;
        if (strncmp(s, "unix:", 5) == 0) {
                e = (struct pb_endpoint) { .transport = PB_UNIX };
                if (strlen(s + 5) > PB_UNIX_PATH_MAX)
                        return -EINVAL;
                strcpy(e.path, s + 5);
                r = endpoint_validate(&e, pattern);
                if (r < 0)
                        return r;
                *ret = e;
                return 0;
        }
        s = parse_transport(s, &e, &only);

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

        r = apply_family(&e, only);
        if (r < 0)
                return r;
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

        if (e->transport == PB_UNIX) {
                snprintf(buf, PB_ENDPOINT_STRLEN, "unix:%s", e->path);
                return buf;
        }
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
                /* The IPv6-only wildcard needs its family said: `[::]` alone is dual-stack. */
                if (endpoint_is_v6only_any(e)) {
                        snprintf(buf, PB_ENDPOINT_STRLEN, "%s6:[::]:%s", transport, ports);
                        break;
                }
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
        if (e->transport == PB_UNIX)
                return e->family == PB_FAMILY_ANY && e->port_lo == 0 && e->port_hi == 0 &&
                       all_zero(e->addr, 16) && unix_path_valid(e->path, pattern) ? 0 : -EINVAL;
        if (e->path[0])
                return -EINVAL;
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

                /* e->addr is not aligned for struct in6_addr: test a copy. [::]
                 * here is the IPv6-only wildcard. */
                memcpy(&a, e->addr, sizeof(a));
                return IN6_IS_ADDR_V4MAPPED(&a) ? -EINVAL : 0;
        }
        default:
                return -EINVAL;
        }
}

bool endpoint_is_v6only_any(const struct pb_endpoint *e) {
        return e->family == PB_FAMILY_INET6 && all_zero(e->addr, 16);
}

bool endpoint_is_unix(const struct pb_endpoint *e) {
        return e->transport == PB_UNIX;
}

bool endpoint_equal(const struct pb_endpoint *a, const struct pb_endpoint *b) {
        return a->transport == b->transport && a->family == b->family &&
               a->port_lo == b->port_lo && a->port_hi == b->port_hi &&
               memcmp(a->addr, b->addr, sizeof(a->addr)) == 0 && strcmp(a->path, b->path) == 0;
}

bool endpoint_overlaps(const struct pb_endpoint *a, const struct pb_endpoint *b) {
        size_t n = a->family == PB_FAMILY_INET ? 4 : 16;

        if (a->transport != b->transport || a->port_lo != b->port_lo)
                return false;
        if (a->transport == PB_UNIX)
                return strcmp(a->path, b->path) == 0;
        if (a->family == PB_FAMILY_ANY || b->family == PB_FAMILY_ANY)
                return true;
        return a->family == b->family &&
               (all_zero(a->addr, n) || all_zero(b->addr, n) || memcmp(a->addr, b->addr, n) == 0);
}

static bool is_wildcard(const struct pb_endpoint *e) {
        return all_zero(e->addr, 16);
}

static bool is_loopback(const struct pb_endpoint *e) {
        static const uint8_t lo6[16] = { [15] = 1 };

        return e->family == PB_FAMILY_INET ? e->addr[0] == 127 : memcmp(e->addr, lo6, 16) == 0;
}

bool endpoint_splits_clients(const struct pb_endpoint *a, const struct pb_endpoint *b) {
        if (a->transport != b->transport || a->transport == PB_UNIX || a->port_lo != b->port_lo ||
            a->family == PB_FAMILY_ANY ||
            b->family == PB_FAMILY_ANY || a->family == b->family)
                return false;
        return is_wildcard(a) || is_wildcard(b) || (is_loopback(a) && is_loopback(b));
}

bool endpoint_matches(const struct pb_endpoint *p, const struct pb_endpoint *e) {
        if (p->transport == PB_UNIX && e->transport == PB_UNIX) {
                size_t n = strlen(p->path);

                if (p->path[n - 1] != '/')
                        return strcmp(p->path, e->path) == 0;
                return strncmp(p->path, e->path, n) == 0 && e->path[n] && !strchr(e->path + n, '/');
        }
        if (p->transport != e->transport || e->port_lo < p->port_lo || e->port_lo > p->port_hi)
                return false;
        if (p->family == PB_FAMILY_ANY)
                return true;
        return p->family == e->family && memcmp(p->addr, e->addr, sizeof(p->addr)) == 0;
}

size_t endpoint_encode(const struct pb_endpoint *e, uint8_t out[static PB_ENDPOINT_WIRE_MAX]) {
        size_t n;

        out[0] = e->transport;
        out[1] = e->family;
        out[2] = (uint8_t) (e->port_lo >> 8);
        out[3] = (uint8_t) e->port_lo;
        out[4] = (uint8_t) (e->port_hi >> 8);
        out[5] = (uint8_t) e->port_hi;
        out[6] = out[7] = 0;
        memcpy(out + 8, e->addr, 16);
        if (e->transport != PB_UNIX)
                return PB_ENDPOINT_WIRE_SIZE;
        n = strnlen(e->path, PB_UNIX_PATH_MAX);
        out[PB_ENDPOINT_WIRE_SIZE] = (uint8_t) n;
        memcpy(out + PB_ENDPOINT_WIRE_SIZE + 1, e->path, n);
        return PB_ENDPOINT_WIRE_SIZE + 1 + n;
}

int endpoint_decode(const uint8_t *in, size_t len, bool pattern, struct pb_endpoint *ret, size_t *used) {
        struct pb_endpoint e = { 0 };
        size_t n = PB_ENDPOINT_WIRE_SIZE;

        if (len < PB_ENDPOINT_WIRE_SIZE || in[6] || in[7])
                return -EBADMSG;
        e.transport = in[0];
        e.family = in[1];
        e.port_lo = (uint16_t) (in[2] << 8 | in[3]);
        e.port_hi = (uint16_t) (in[4] << 8 | in[5]);
        memcpy(e.addr, in + 8, 16);
        if (e.transport == PB_UNIX) {
                size_t k = len > n ? in[n] : 0;

                /* The path: a length byte, then that many bytes, no NUL among them. */
                if (len <= n || k > PB_UNIX_PATH_MAX || k > len - n - 1 || memchr(in + n + 1, '\0', k))
                        return -EBADMSG;
                memcpy(e.path, in + n + 1, k);
                n += 1 + k;
        }
        if (endpoint_validate(&e, pattern) < 0)
                return -EBADMSG;
        *ret = e;
        *used = n;
        return 0;
}
