/* SPDX-License-Identifier: MIT */
/*
 * Endpoints: `[proto:][address:]port` or `unix:/path`, parsed from and
 * formatted to text, and encoded in 24 bytes on the wire (a Unix path
 * follows them). An omitted address and `[::]` both mean the dual-stack
 * wildcard (PB_FAMILY_ANY); `tcp6:` / `udp6:` name the IPv6-only wildcard
 * (PB_FAMILY_INET6, address ::) and `tcp4:` / `udp4:` IPv4 (0.0.0.0 when
 * no address is given). Policy patterns may give a port range `lo-hi`; a
 * pattern with no address and no family matches any address. A Unix
 * endpoint is a stream socket at a normalized absolute path; as a pattern,
 * a path ending in `/` matches every name directly in that directory.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PB_ENDPOINT_WIRE_SIZE 24        /* the fixed part; a Unix endpoint's path follows (1 + n bytes) */
#define PB_UNIX_PATH_MAX 107            /* sun_path less its NUL */
#define PB_UNIX_PATH_CHARS "._-@+~"     /* in a Unix path's names besides letters and digits */
#define PB_ENDPOINT_STRLEN 128          /* buffer for endpoint_format(): "unix:" and a path fit */

/* What an error about endpoint or pattern text says is expected. */
#define PB_ENDPOINT_SYNTAX "expected [tcp|udp|tcp4|udp4|tcp6|udp6:][ADDRESS:]PORT or unix:/PATH"
#define PB_PATTERN_SYNTAX "expected [tcp|udp|tcp4|udp4|tcp6|udp6:][ADDRESS:]PORT[-PORT], unix:/PATH or unix:/DIR/"

enum pb_transport {
        PB_UNIX = 1,                    /* AF_UNIX SOCK_STREAM at path (wire version 5 and later) */
        PB_TCP = 6,
        PB_UDP = 17,
};

enum pb_family {
        PB_FAMILY_ANY = 0,              /* [::] dual-stack wildcard (IPV6_V6ONLY=0) */
        PB_FAMILY_INET = 4,             /* an IPv4 address, 0.0.0.0 included */
        PB_FAMILY_INET6 = 6,            /* an IPv6 address, :: too (IPV6_V6ONLY=1) */
};

struct pb_endpoint {
        uint8_t transport;              /* enum pb_transport */
        uint8_t family;                 /* enum pb_family */
        uint16_t port_lo;               /* 1..65535 */
        uint16_t port_hi;               /* == port_lo except in policy patterns */
        uint8_t addr[16];               /* network order; 4 bytes used for INET, zero for ANY */
        char path[PB_UNIX_PATH_MAX + 1]; /* PB_UNIX: the socket's absolute path (family ANY, ports
                                         * and addr zero); "" for TCP and UDP */
};

/* Parses one endpoint; ranges are refused. Returns 0 or -EINVAL. */
int endpoint_parse(const char *s, struct pb_endpoint *ret);

/* Parses a policy pattern: like an endpoint, but the port may be `lo-hi`. */
int endpoint_parse_pattern(const char *s, struct pb_endpoint *ret);

/* Formats endpoint e as canonical text (`tcp:[::]:8080`, `udp:127.0.0.1:53`,
 * `tcp:[::1]:8443`, `udp6:[::]:53`) into buf. Returns buf. */
char *endpoint_format(const struct pb_endpoint *e, char buf[static PB_ENDPOINT_STRLEN]);

/* Formats pattern p (`tcp:8000-8099` when it matches any address). Returns buf. */
char *endpoint_format_pattern(const struct pb_endpoint *p, char buf[static PB_ENDPOINT_STRLEN]);

/* Checks fields: known transport/family, 1 <= port_lo <= port_hi, zero
 * padding, no v4-mapped IPv6; for Unix, a normalized absolute path (no
 * empty, `.` or `..` component; a trailing `/` only in a pattern; names
 * of letters, digits and PB_UNIX_PATH_CHARS) and everything else zero. pattern=false also requires port_lo == port_hi. */
int endpoint_validate(const struct pb_endpoint *e, bool pattern);

/* True for the IPv6-only wildcard `tcp6:[::]:P` (wire version 4 and later). */
bool endpoint_is_v6only_any(const struct pb_endpoint *e);

/* True for a Unix endpoint or pattern (wire version 5 and later). */
bool endpoint_is_unix(const struct pb_endpoint *e);

bool endpoint_equal(const struct pb_endpoint *a, const struct pb_endpoint *b);

/* True when sockets bound to a and b (endpoints, not patterns) could not
 * both listen: the same transport and port, and addresses that meet (the
 * dual-stack wildcard meets every address, 0.0.0.0 every IPv4 one, the
 * IPv6-only wildcard every IPv6 one). */
bool endpoint_overlaps(const struct pb_endpoint *a, const struct pb_endpoint *b);

/* True when leases of a and b (endpoints, not patterns) held by two uids
 * would split one host name's clients between them: the same transport and
 * port, one IPv4 and one IPv6 (the dual-stack wildcard overlaps both, which
 * the kernel refuses anyway), and either a wildcard among them or both
 * loopback (127.0.0.1:P beside [::1]:P serve "localhost:P", whose clients
 * try IPv6 first). Two specific addresses of other kinds (one tenant per
 * address) do not. */
bool endpoint_splits_clients(const struct pb_endpoint *a, const struct pb_endpoint *b);

/* True when endpoint e (not a pattern) falls inside pattern p: for Unix,
 * the same path, or a name directly in p's directory. */
bool endpoint_matches(const struct pb_endpoint *p, const struct pb_endpoint *e);

/* The wire form: 24 bytes, then for Unix the path's length (1 byte) and
 * bytes. PB_ENDPOINT_WIRE_MAX bytes hold any endpoint. */
#define PB_ENDPOINT_WIRE_MAX (PB_ENDPOINT_WIRE_SIZE + 1 + PB_UNIX_PATH_MAX)

/* Encodes e into out; returns the length used. */
size_t endpoint_encode(const struct pb_endpoint *e, uint8_t out[static PB_ENDPOINT_WIRE_MAX]);

/* Decodes and validates (see endpoint_validate) the endpoint at the start
 * of in (len bytes), setting *used to its length. Returns 0 or -EBADMSG. */
int endpoint_decode(const uint8_t *in, size_t len, bool pattern, struct pb_endpoint *ret, size_t *used);
