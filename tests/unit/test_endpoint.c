/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of proto/endpoint.c: parsing and formatting every text form
 * (port only, transport prefix, IPv4, bracketed IPv6, `[::]` as the omitted
 * address, tcp4/tcp6 and the IPv6-only wildcard), rejection of malformed text, policy patterns and matching,
 * field validation, and the 24-byte wire encoding with its reserved bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "endpoint.h"

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

static struct pb_endpoint parse_ok(const char *s) {
        struct pb_endpoint e;

        memset(&e, 0xAA, sizeof(e));
        if (endpoint_parse(s, &e) < 0)
                fail_msg("endpoint_parse(\"%s\") failed", s);
        return e;
}

static struct pb_endpoint pattern_ok(const char *s) {
        struct pb_endpoint e;

        memset(&e, 0xAA, sizeof(e));
        if (endpoint_parse_pattern(s, &e) < 0)
                fail_msg("endpoint_parse_pattern(\"%s\") failed", s);
        return e;
}

static bool addr_zero_from(const struct pb_endpoint *e, size_t from) {
        for (size_t i = from; i < sizeof(e->addr); i++)
                if (e->addr[i])
                        return false;
        return true;
}

/* --- the accepted forms -------------------------------------------------- */

static void test_parse_port_only(void **state) {
        struct pb_endpoint e = parse_ok("8080");
        char buf[PB_ENDPOINT_STRLEN];

        assert_int_equal(e.transport, PB_TCP);
        assert_int_equal(e.family, PB_FAMILY_ANY);
        assert_int_equal(e.port_lo, 8080);
        assert_int_equal(e.port_hi, 8080);
        assert_true(addr_zero_from(&e, 0));
        assert_string_equal(endpoint_format(&e, buf), "tcp:[::]:8080");
        assert_ptr_equal(endpoint_format(&e, buf), buf);
}

static void test_parse_udp(void **state) {
        struct pb_endpoint e = parse_ok("udp:5353");
        char buf[PB_ENDPOINT_STRLEN];

        assert_int_equal(e.transport, PB_UDP);
        assert_int_equal(e.family, PB_FAMILY_ANY);
        assert_int_equal(e.port_lo, 5353);
        assert_int_equal(e.port_hi, 5353);
        assert_true(addr_zero_from(&e, 0));
        assert_string_equal(endpoint_format(&e, buf), "udp:[::]:5353");
}

static void test_parse_ipv4(void **state) {
        struct pb_endpoint e = parse_ok("tcp:127.0.0.1:8080");
        static const uint8_t lo[4] = { 127, 0, 0, 1 };
        char buf[PB_ENDPOINT_STRLEN];

        assert_int_equal(e.transport, PB_TCP);
        assert_int_equal(e.family, PB_FAMILY_INET);
        assert_int_equal(e.port_lo, 8080);
        assert_int_equal(e.port_hi, 8080);
        assert_memory_equal(e.addr, lo, 4);
        assert_true(addr_zero_from(&e, 4));
        assert_string_equal(endpoint_format(&e, buf), "tcp:127.0.0.1:8080");

        /* The transport defaults to TCP. */
        struct pb_endpoint d = parse_ok("127.0.0.1:8080");
        assert_true(endpoint_equal(&e, &d));
}

static void test_parse_ipv6(void **state) {
        struct pb_endpoint e = parse_ok("tcp:[::1]:8443");
        static const uint8_t lo6[16] = { [15] = 1 };
        char buf[PB_ENDPOINT_STRLEN];

        assert_int_equal(e.transport, PB_TCP);
        assert_int_equal(e.family, PB_FAMILY_INET6);
        assert_int_equal(e.port_lo, 8443);
        assert_int_equal(e.port_hi, 8443);
        assert_memory_equal(e.addr, lo6, 16);
        assert_string_equal(endpoint_format(&e, buf), "tcp:[::1]:8443");
}

static void test_parse_wildcard_is_omitted(void **state) {
        struct pb_endpoint a = parse_ok("tcp:[::]:80"), b = parse_ok("80"), c = parse_ok("tcp:80"),
                           d = parse_ok("[::]:80"), e = parse_ok("tcp:[0:0::0]:80");

        assert_int_equal(a.family, PB_FAMILY_ANY);
        assert_true(addr_zero_from(&a, 0));
        assert_true(endpoint_equal(&a, &b));
        assert_true(endpoint_equal(&a, &c));
        assert_true(endpoint_equal(&a, &d));
        assert_true(endpoint_equal(&a, &e));

        struct pb_endpoint u1 = parse_ok("udp:[::]:53"), u2 = parse_ok("udp:53");
        assert_true(endpoint_equal(&u1, &u2));
        assert_false(endpoint_equal(&u1, &a));
}

static void test_parse_ipv4_any(void **state) {
        struct pb_endpoint e = parse_ok("tcp:0.0.0.0:80"), any = parse_ok("tcp:80");
        char buf[PB_ENDPOINT_STRLEN];

        /* 0.0.0.0 is IPv4-only: a different endpoint from the dual-stack wildcard. */
        assert_int_equal(e.family, PB_FAMILY_INET);
        assert_true(addr_zero_from(&e, 0));
        assert_false(endpoint_equal(&e, &any));
        assert_string_equal(endpoint_format(&e, buf), "tcp:0.0.0.0:80");
}

/* tcp6/udp6 name the IPv6-only wildcard `[::]` (IPV6_V6ONLY=1), a
 * different endpoint from the dual-stack one; tcp4/udp4 IPv4, 0.0.0.0 when
 * no address is given. With an address the family must fit it. */
static void test_parse_family_prefixes(void **state) {
        struct pb_endpoint v6 = parse_ok("tcp6:53"), v6b = parse_ok("tcp6:[::]:53"), dual = parse_ok("tcp:[::]:53");
        struct pb_endpoint u6 = parse_ok("udp6:53"), v4 = parse_ok("tcp4:53"), v4b = parse_ok("tcp:0.0.0.0:53");
        struct pb_endpoint lo6 = parse_ok("tcp6:[::1]:53"), lo6b = parse_ok("tcp:[::1]:53");
        struct pb_endpoint lo4 = parse_ok("udp4:127.0.0.1:53"), lo4b = parse_ok("udp:127.0.0.1:53");
        char buf[PB_ENDPOINT_STRLEN];

        assert_int_equal(v6.family, PB_FAMILY_INET6);
        assert_true(addr_zero_from(&v6, 0));
        assert_true(endpoint_is_v6only_any(&v6));
        assert_true(endpoint_equal(&v6, &v6b));
        assert_false(endpoint_equal(&v6, &dual));
        assert_false(endpoint_is_v6only_any(&dual));
        assert_string_equal(endpoint_format(&v6, buf), "tcp6:[::]:53");
        assert_int_equal(u6.transport, PB_UDP);
        assert_string_equal(endpoint_format(&u6, buf), "udp6:[::]:53");
        assert_true(endpoint_equal(&v4, &v4b));
        assert_string_equal(endpoint_format(&v4, buf), "tcp:0.0.0.0:53");
        assert_true(endpoint_equal(&lo6, &lo6b));
        assert_false(endpoint_is_v6only_any(&lo6));
        assert_string_equal(endpoint_format(&lo6, buf), "tcp:[::1]:53");
        assert_true(endpoint_equal(&lo4, &lo4b));
        assert_int_equal(endpoint_validate(&v6, false), 0);

        /* As patterns: the IPv6-only wildcard matches itself only. */
        struct pb_endpoint p = pattern_ok("tcp6:50-60"), any = pattern_ok("tcp:50-60");
        assert_string_equal(endpoint_format_pattern(&p, buf), "tcp6:[::]:50-60");
        assert_true(endpoint_matches(&p, &v6));
        assert_false(endpoint_matches(&p, &dual));
        assert_false(endpoint_matches(&p, &lo6));
        assert_true(endpoint_matches(&any, &v6));
        assert_true(endpoint_matches(&any, &v4));
}

/* Which leases of one port can be held at once (the kernel's bind rules). */
static void test_overlaps(void **state) {
        static const struct {
                const char *a, *b;
                bool overlap;
        } cases[] = {
                { "tcp:8080", "tcp:0.0.0.0:8080", true },       /* dual-stack meets everything */
                { "tcp:8080", "tcp6:8080", true },
                { "tcp:8080", "tcp:[::1]:8080", true },
                { "tcp:0.0.0.0:8080", "tcp6:8080", false },     /* nginx's `listen 8080; listen [::]:8080;` */
                { "tcp:0.0.0.0:8080", "tcp:127.0.0.1:8080", true },
                { "tcp:127.0.0.2:8080", "tcp:127.0.0.1:8080", false },
                { "tcp6:8080", "tcp:[::1]:8080", true },
                { "tcp:[::2]:8080", "tcp:[::1]:8080", false },
                { "tcp:[::1]:8080", "tcp:127.0.0.1:8080", false },
                { "tcp:8080", "udp:8080", false },
                { "tcp:8080", "tcp:8081", false },
                { "udp6:53", "udp6:53", true },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct pb_endpoint a = parse_ok(cases[i].a), b = parse_ok(cases[i].b);

                if (endpoint_overlaps(&a, &b) != cases[i].overlap || endpoint_overlaps(&b, &a) != cases[i].overlap)
                        fail_msg("%s and %s: overlap should be %d", cases[i].a, cases[i].b, cases[i].overlap);
        }
}

/* Which leases of one port, held by two uids, would share one host name's clients. */
static void test_splits_clients(void **state) {
        static const struct {
                const char *a, *b;
                bool splits;
        } cases[] = {
                { "tcp:0.0.0.0:80", "tcp6:80", true },          /* both wildcards */
                { "tcp:0.0.0.0:80", "tcp:[::1]:80", true },     /* a wildcard and the other's loopback */
                { "tcp:127.0.0.1:80", "tcp:[::1]:80", true },   /* localhost:80 */
                { "tcp:127.0.0.1:80", "tcp6:80", true },
                { "tcp:192.0.2.1:80", "tcp6:80", true },        /* a wildcard takes any name's IPv6 */
                { "tcp:192.0.2.1:80", "tcp:[2001:db8::1]:80", false },  /* one tenant per address */
                { "tcp:127.0.0.1:80", "tcp:[2001:db8::1]:80", false },
                { "tcp:127.0.0.2:80", "tcp:127.0.0.3:80", false },      /* one family: the kernel decides */
                { "tcp:0.0.0.0:80", "tcp:127.0.0.1:80", false },
                { "tcp:80", "tcp:0.0.0.0:80", false },          /* dual-stack: the kernel refuses it anyway */
                { "tcp:0.0.0.0:80", "udp6:80", false },
                { "tcp:0.0.0.0:80", "tcp6:81", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct pb_endpoint a = parse_ok(cases[i].a), b = parse_ok(cases[i].b);

                if (endpoint_splits_clients(&a, &b) != cases[i].splits ||
                    endpoint_splits_clients(&b, &a) != cases[i].splits)
                        fail_msg("%s and %s: splits should be %d", cases[i].a, cases[i].b, cases[i].splits);
        }
}

static void test_parse_port_edges(void **state) {
        struct pb_endpoint e = parse_ok("1");
        assert_int_equal(e.port_lo, 1);
        e = parse_ok("65535");
        assert_int_equal(e.port_lo, 65535);
        assert_int_equal(e.port_hi, 65535);
        e = parse_ok("udp:[2001:db8::1]:65535");
        assert_int_equal(e.port_lo, 65535);
}

/* Parse, format, parse again: the same endpoint, and canonical text stays as it is. */
static void test_round_trip(void **state) {
        static const struct {
                const char *in, *canonical;
        } cases[] = {
                { "8080", "tcp:[::]:8080" },
                { "udp:5353", "udp:[::]:5353" },
                { "tcp:127.0.0.1:8080", "tcp:127.0.0.1:8080" },
                { "127.0.0.1:8080", "tcp:127.0.0.1:8080" },
                { "tcp:[::1]:8443", "tcp:[::1]:8443" },
                { "[::1]:8443", "tcp:[::1]:8443" },
                { "[::]:80", "tcp:[::]:80" },
                { "tcp:0.0.0.0:80", "tcp:0.0.0.0:80" },
                { "udp:255.255.255.255:1", "udp:255.255.255.255:1" },
                { "udp:[2001:DB8:0:0:0:0:0:1]:53", "udp:[2001:db8::1]:53" },
                { "tcp:[fe80::1]:22", "tcp:[fe80::1]:22" },
                { "tcp:[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                  "tcp:[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535" },
                { "tcp:[::2.0.0.0]:80", NULL },      /* v4-compatible: allowed, inet_ntop decides */
                { "tcp6:8080", "tcp6:[::]:8080" },
                { "udp6:[::]:53", "udp6:[::]:53" },
                { "udp6:[::1]:53", "udp:[::1]:53" },
                { "tcp4:80", "tcp:0.0.0.0:80" },
                { "udp4:10.0.0.1:53", "udp:10.0.0.1:53" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char buf[PB_ENDPOINT_STRLEN], buf2[PB_ENDPOINT_STRLEN];
                struct pb_endpoint e = parse_ok(cases[i].in), f, p;

                endpoint_format(&e, buf);
                if (cases[i].canonical)
                        assert_string_equal(buf, cases[i].canonical);
                f = parse_ok(buf);
                assert_true(endpoint_equal(&e, &f));
                assert_string_equal(endpoint_format(&f, buf2), buf);
                assert_int_equal(endpoint_validate(&e, false), 0);
                /* Every endpoint is also a (single-port) pattern. */
                p = pattern_ok(cases[i].in);
                assert_true(endpoint_equal(&e, &p));
                assert_int_equal(endpoint_validate(&e, true), 0);
                assert_true(endpoint_matches(&p, &e));
        }
}

/* --- rejections ---------------------------------------------------------- */

static const char *const bad_text[] = {
        /* ports */
        "0", "65536", "99999", "100000", "4294967376", "080", "00", "01", "0080",
        "tcp:127.0.0.1:08080", "tcp:[::1]:0", "udp:0",
        /* signs and spaces */
        "+80", "-80", "tcp:+80", "tcp:-80", " 80", "80 ", "8 0", "\t80", "80\n", "tcp: 80",
        " tcp:80", "tcp :80", "tcp:127.0.0.1 :80", "tcp: 127.0.0.1:80", "tcp:[ ::1]:80", "tcp:[::1] :80",
        "tcp:[::1]: 80", "0x50", "8e1", "80.0",
        /* empty and incomplete */
        "", "tcp:", "udp:", ":", ":80", "tcp::80", "127.0.0.1:", "127.0.0.1", "tcp:127.0.0.1",
        "[::1]", "[::1]:", "tcp:[::1]", "[]:80", "[:80", "[::1:80", "]:80",
        /* brackets */
        "[::1]8080", "tcp:[::1]8080", "[::1]]:80", "[[::1]]:80", "::1:80", "tcp:::1:80",
        "[1.2.3.4]:80", "[::1%lo]:80", "[fe80::1%1]:80", "1.2.3.4]:80",
        /* IPv4 forms */
        "1.2.3:80", "1.2.3.4.5:80", "256.0.0.1:80", "01.2.3.4:80", "1.2.3.04:80", "localhost:80",
        "0x7f.0.0.1:80", "2130706433:80", "[127.0.0.1]:80",
        /* v4-mapped IPv6 */
        "[::ffff:1.2.3.4]:80", "tcp:[::ffff:127.0.0.1]:80", "udp:[::ffff:0.0.0.0]:53", "[::ffff:7f00:1]:80",
        /* ranges outside patterns */
        "8000-8099", "tcp:8000-8099", "tcp:127.0.0.1:1-2", "tcp:[::1]:80-80",
        /* transport */
        "sctp:80", "TCP:80", "Tcp:80", "TCP6:80", "tcp46:80", "tcp5:80", "ip:80", "raw:80", "tcp:tcp:80",
        "tcp:udp:80", "udp:tcp:80", "unix:80", "tcp;80", "tcp/80", "80/tcp", "tcp6:tcp:80", "tcp:tcp6:80",
        "6:80", "tcp6", "tcp6:", "udp4:",
        /* a family that does not fit the address */
        "tcp6:127.0.0.1:80", "tcp6:0.0.0.0:80", "udp4:[::1]:53", "tcp4:[::]:80", "tcp6:[::ffff:1.2.3.4]:80",
        /* over-long */
        "tcp:[0000:0000:0000:0000:0000:0000:0000:0001]:8080aaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:80",
        "[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]:80",
};

static void test_parse_rejects(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(bad_text); i++) {
                struct pb_endpoint e, before;

                memset(&e, 0x5A, sizeof(e));
                before = e;
                if (endpoint_parse(bad_text[i], &e) != -EINVAL)
                        fail_msg("endpoint_parse(\"%s\") was accepted", bad_text[i]);
                /* ret is written only on success. */
                assert_memory_equal(&e, &before, sizeof(e));
        }
}

static void test_parse_rejects_in_patterns(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(bad_text); i++) {
                struct pb_endpoint e;
                int r = endpoint_parse_pattern(bad_text[i], &e);

                /* The only texts above a pattern may take are the ranges. */
                if (strchr(bad_text[i], '-') && r == 0) {
                        assert_true(e.port_lo <= e.port_hi);
                        continue;
                }
                if (r != -EINVAL)
                        fail_msg("endpoint_parse_pattern(\"%s\") was accepted", bad_text[i]);
        }
}

static void test_parse_rejects_long(void **state) {
        char buf[8192];
        struct pb_endpoint e;

        /* Far longer than any endpoint (PB_ENDPOINT_STRLEN - 1 at most). */
        memset(buf, '1', sizeof(buf));
        buf[sizeof(buf) - 1] = '\0';
        assert_int_equal(endpoint_parse(buf, &e), -EINVAL);
        assert_int_equal(endpoint_parse_pattern(buf, &e), -EINVAL);

        /* One past the limit, digits only: refused for its length alone. */
        memset(buf, '1', PB_ENDPOINT_STRLEN);
        buf[PB_ENDPOINT_STRLEN] = '\0';
        assert_int_equal(endpoint_parse(buf, &e), -EINVAL);

        assert_int_equal(endpoint_parse(NULL, &e), -EINVAL);
        assert_int_equal(endpoint_parse_pattern(NULL, &e), -EINVAL);
}

/* --- patterns ------------------------------------------------------------ */

static void test_pattern_forms(void **state) {
        static const struct {
                const char *in, *canonical;
                uint8_t transport, family;
                uint16_t lo, hi;
        } cases[] = {
                { "tcp:8000-8099", "tcp:8000-8099", PB_TCP, PB_FAMILY_ANY, 8000, 8099 },
                { "8000-8099", "tcp:8000-8099", PB_TCP, PB_FAMILY_ANY, 8000, 8099 },
                { "tcp:[::]:8000-8099", "tcp:8000-8099", PB_TCP, PB_FAMILY_ANY, 8000, 8099 },
                { "udp:127.0.0.1:53-54", "udp:127.0.0.1:53-54", PB_UDP, PB_FAMILY_INET, 53, 54 },
                { "tcp:[::1]:1-65535", "tcp:[::1]:1-65535", PB_TCP, PB_FAMILY_INET6, 1, 65535 },
                { "tcp:0.0.0.0:80-81", "tcp:0.0.0.0:80-81", PB_TCP, PB_FAMILY_INET, 80, 81 },
                { "8080", "tcp:8080", PB_TCP, PB_FAMILY_ANY, 8080, 8080 },
                { "80-80", "tcp:80", PB_TCP, PB_FAMILY_ANY, 80, 80 },
                { "udp:[::]:53", "udp:53", PB_UDP, PB_FAMILY_ANY, 53, 53 },
                { "1-1", "tcp:1", PB_TCP, PB_FAMILY_ANY, 1, 1 },
                { "65535-65535", "tcp:65535", PB_TCP, PB_FAMILY_ANY, 65535, 65535 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char buf[PB_ENDPOINT_STRLEN];
                struct pb_endpoint p = pattern_ok(cases[i].in), q;

                assert_int_equal(p.transport, cases[i].transport);
                assert_int_equal(p.family, cases[i].family);
                assert_int_equal(p.port_lo, cases[i].lo);
                assert_int_equal(p.port_hi, cases[i].hi);
                assert_int_equal(endpoint_validate(&p, true), 0);
                assert_string_equal(endpoint_format_pattern(&p, buf), cases[i].canonical);
                q = pattern_ok(buf);
                assert_true(endpoint_equal(&p, &q));
                if (p.port_lo != p.port_hi)
                        assert_int_equal(endpoint_validate(&p, false), -EINVAL);
        }
}

static void test_pattern_rejects(void **state) {
        static const char *const bad[] = {
                "8099-8000", "2-1", "65535-1", "0-80", "0-0", "80-65536", "80-", "-80", "-", "80--90",
                "80-90-100", "080-90", "80-090", "80 -90", "80- 90", "+80-90", "80-+90", "tcp:-", "tcp:80-",
                "tcp:[::1]:90-80", "udp:127.0.0.1:-53", "[::ffff:1.2.3.4]:1-2", "1-2:80", "tcp:1-2-",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct pb_endpoint e;

                if (endpoint_parse_pattern(bad[i], &e) != -EINVAL)
                        fail_msg("endpoint_parse_pattern(\"%s\") was accepted", bad[i]);
                assert_int_equal(endpoint_parse(bad[i], &e), -EINVAL);
        }
}

static void test_matches_range_edges(void **state) {
        struct pb_endpoint p = pattern_ok("tcp:8000-8099");
        static const struct {
                const char *e;
                bool match;
        } cases[] = {
                { "tcp:7999", false },
                { "tcp:8000", true },
                { "tcp:8050", true },
                { "tcp:8099", true },
                { "tcp:8100", false },
                { "udp:8000", false },
                { "udp:8050", false },
                /* A pattern without an address matches every address. */
                { "tcp:127.0.0.1:8000", true },
                { "tcp:0.0.0.0:8099", true },
                { "tcp:[::1]:8042", true },
                { "tcp:[::1]:8100", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct pb_endpoint e = parse_ok(cases[i].e);
                if (endpoint_matches(&p, &e) != cases[i].match)
                        fail_msg("tcp:8000-8099 vs %s: expected %s", cases[i].e,
                                 cases[i].match ? "match" : "no match");
        }

        struct pb_endpoint all = pattern_ok("udp:1-65535"), e1 = parse_ok("udp:1"), e2 = parse_ok("udp:65535"),
                           t = parse_ok("tcp:1");
        assert_true(endpoint_matches(&all, &e1));
        assert_true(endpoint_matches(&all, &e2));
        assert_false(endpoint_matches(&all, &t));

        struct pb_endpoint one = pattern_ok("443"), e443 = parse_ok("443"), e442 = parse_ok("442"),
                           e444 = parse_ok("444");
        assert_true(endpoint_matches(&one, &e443));
        assert_false(endpoint_matches(&one, &e442));
        assert_false(endpoint_matches(&one, &e444));
}

static void test_matches_specific_address(void **state) {
        struct pb_endpoint v4 = pattern_ok("tcp:127.0.0.1:8000-8099"), v6 = pattern_ok("tcp:[::1]:443"),
                           zero = pattern_ok("tcp:0.0.0.0:80");
        struct pb_endpoint e;

        e = parse_ok("tcp:127.0.0.1:8000");
        assert_true(endpoint_matches(&v4, &e));
        e = parse_ok("tcp:127.0.0.1:8099");
        assert_true(endpoint_matches(&v4, &e));
        e = parse_ok("tcp:127.0.0.1:8100");
        assert_false(endpoint_matches(&v4, &e));
        e = parse_ok("tcp:127.0.0.2:8000");
        assert_false(endpoint_matches(&v4, &e));
        e = parse_ok("tcp:8000");               /* the wildcard is not a specific address */
        assert_false(endpoint_matches(&v4, &e));
        e = parse_ok("tcp:0.0.0.0:8000");
        assert_false(endpoint_matches(&v4, &e));
        e = parse_ok("udp:127.0.0.1:8000");
        assert_false(endpoint_matches(&v4, &e));

        e = parse_ok("tcp:[::1]:443");
        assert_true(endpoint_matches(&v6, &e));
        e = parse_ok("tcp:127.0.0.1:443");
        assert_false(endpoint_matches(&v6, &e));
        e = parse_ok("tcp:443");
        assert_false(endpoint_matches(&v6, &e));
        e = parse_ok("tcp:[::2]:443");
        assert_false(endpoint_matches(&v6, &e));

        /* 0.0.0.0 is a specific (IPv4-only) address in a pattern, not "any". */
        e = parse_ok("tcp:0.0.0.0:80");
        assert_true(endpoint_matches(&zero, &e));
        e = parse_ok("tcp:80");
        assert_false(endpoint_matches(&zero, &e));
        e = parse_ok("tcp:127.0.0.1:80");
        assert_false(endpoint_matches(&zero, &e));
}

/* --- validation ---------------------------------------------------------- */

static void test_validate(void **state) {
        struct pb_endpoint good = parse_ok("tcp:127.0.0.1:80"), e;

        assert_int_equal(endpoint_validate(&good, false), 0);

        e = good;
        e.transport = 0;
        assert_int_equal(endpoint_validate(&e, false), -EINVAL);
        e.transport = 7;
        assert_int_equal(endpoint_validate(&e, true), -EINVAL);
        e.transport = PB_UDP;
        assert_int_equal(endpoint_validate(&e, false), 0);

        e = good;
        e.family = 5;
        assert_int_equal(endpoint_validate(&e, false), -EINVAL);

        e = good;
        e.port_lo = e.port_hi = 0;
        assert_int_equal(endpoint_validate(&e, true), -EINVAL);
        e.port_hi = 1;
        assert_int_equal(endpoint_validate(&e, true), -EINVAL);

        e = good;
        e.port_lo = 81;                         /* reversed */
        assert_int_equal(endpoint_validate(&e, true), -EINVAL);
        e.port_lo = 79;                         /* a range */
        assert_int_equal(endpoint_validate(&e, true), 0);
        assert_int_equal(endpoint_validate(&e, false), -EINVAL);

        e = good;
        e.addr[4] = 1;                          /* IPv4 uses four bytes only */
        assert_int_equal(endpoint_validate(&e, false), -EINVAL);
        e = good;
        e.addr[15] = 1;
        assert_int_equal(endpoint_validate(&e, false), -EINVAL);

        e = parse_ok("80");
        e.addr[15] = 1;                         /* the wildcard has no address */
        assert_int_equal(endpoint_validate(&e, false), -EINVAL);

        e = parse_ok("[::1]:80");
        memset(e.addr, 0, 16);                  /* [::] as INET6: the IPv6-only wildcard */
        assert_int_equal(endpoint_validate(&e, false), 0);
        e.addr[10] = e.addr[11] = 0xff;         /* ::ffff:0.0.0.0, v4-mapped */
        assert_int_equal(endpoint_validate(&e, false), -EINVAL);
        e.addr[15] = 1;
        assert_int_equal(endpoint_validate(&e, false), -EINVAL);
        e.addr[10] = 0;                         /* ::ff:0:1, not mapped */
        assert_int_equal(endpoint_validate(&e, false), 0);
}

/* --- wire encoding ------------------------------------------------------- */

/* Decodes all of in (len bytes), as one endpoint must be. */
static int decode(const uint8_t *in, size_t len, bool pattern, struct pb_endpoint *ret) {
        size_t used = 0;
        int r = endpoint_decode(in, len, pattern, ret, &used);

        if (r == 0)
                assert_int_equal(used, len);
        return r;
}

static void test_encode_layout(void **state) {
        struct pb_endpoint e = parse_ok("tcp:[::1]:8443"), p = pattern_ok("udp:10.1.2.3:1000-2000");
        uint8_t out[PB_ENDPOINT_WIRE_MAX];
        static const uint8_t want6[PB_ENDPOINT_WIRE_SIZE] = {
                6, 6, 0x20, 0xfb, 0x20, 0xfb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        };
        static const uint8_t want4[PB_ENDPOINT_WIRE_SIZE] = {
                17, 4, 0x03, 0xe8, 0x07, 0xd0, 0, 0, 10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        };
        static const uint8_t want_any[PB_ENDPOINT_WIRE_SIZE] = { 6, 0, 0, 80, 0, 80 };

        static const uint8_t want_unix[PB_ENDPOINT_WIRE_SIZE + 1 + 11] = {
                1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                11, '/', 'r', 'u', 'n', '/', 'a', '.', 's', 'o', 'c', 'k',
        };

        memset(out, 0xEE, sizeof(out));
        assert_int_equal(endpoint_encode(&e, out), PB_ENDPOINT_WIRE_SIZE);
        assert_memory_equal(out, want6, sizeof(want6));

        memset(out, 0xEE, sizeof(out));
        assert_int_equal(endpoint_encode(&p, out), PB_ENDPOINT_WIRE_SIZE);
        assert_memory_equal(out, want4, sizeof(want4));

        e = parse_ok("80");
        memset(out, 0xEE, sizeof(out));
        assert_int_equal(endpoint_encode(&e, out), PB_ENDPOINT_WIRE_SIZE);
        assert_memory_equal(out, want_any, sizeof(want_any));

        /* Unix: transport 1, the rest of the 24 bytes zero, then the path's length and bytes. */
        e = parse_ok("unix:/run/a.sock");
        memset(out, 0xEE, sizeof(out));
        assert_int_equal(endpoint_encode(&e, out), sizeof(want_unix));
        assert_memory_equal(out, want_unix, sizeof(want_unix));
}

static void test_encode_decode_round_trip(void **state) {
        static const char *const endpoints[] = {
                "80", "udp:5353", "tcp:127.0.0.1:8080", "tcp:[::1]:8443", "tcp:0.0.0.0:80", "udp:[2001:db8::53]:53",
                "65535", "1", "unix:/run/app/web.sock", "unix:/a",
        };
        static const char *const patterns[] = {
                "tcp:8000-8099", "udp:127.0.0.1:53-54", "tcp:[::1]:1-65535", "443", "unix:/run/app/",
        };
        uint8_t out[PB_ENDPOINT_WIRE_MAX];
        struct pb_endpoint d;
        size_t n;

        for (size_t i = 0; i < ELEMENTSOF(endpoints); i++) {
                struct pb_endpoint e = parse_ok(endpoints[i]);

                n = endpoint_encode(&e, out);
                assert_int_equal(decode(out, n, false, &d), 0);
                assert_true(endpoint_equal(&e, &d));
                assert_int_equal(decode(out, n, true, &d), 0);
                assert_true(endpoint_equal(&e, &d));
        }
        for (size_t i = 0; i < ELEMENTSOF(patterns); i++) {
                struct pb_endpoint p = pattern_ok(patterns[i]);
                bool many = p.port_lo != p.port_hi || (endpoint_is_unix(&p) && p.path[strlen(p.path) - 1] == '/');

                n = endpoint_encode(&p, out);
                assert_int_equal(decode(out, n, true, &d), 0);
                assert_true(endpoint_equal(&p, &d));
                assert_int_equal(decode(out, n, false, &d), many ? -EBADMSG : 0);
        }
}

static void test_decode_rejects(void **state) {
        struct pb_endpoint e = parse_ok("tcp:127.0.0.1:80"), d, before;
        uint8_t good[PB_ENDPOINT_WIRE_MAX], in[PB_ENDPOINT_WIRE_SIZE];

        endpoint_encode(&e, good);
        memset(&d, 0x77, sizeof(d));
        before = d;

#define EXPECT_BAD(pattern)                                                     \
        do {                                                                    \
                assert_int_equal(decode(in, sizeof(in), pattern, &d), -EBADMSG); \
                assert_memory_equal(&d, &before, sizeof(d));                    \
        } while (0)

        /* Reserved bytes 6 and 7 must be zero, every bit of them. */
        for (unsigned byte = 6; byte <= 7; byte++)
                for (unsigned bit = 0; bit < 8; bit++) {
                        memcpy(in, good, sizeof(in));
                        in[byte] = (uint8_t) (1u << bit);
                        EXPECT_BAD(false);
                        EXPECT_BAD(true);
                }

        memcpy(in, good, sizeof(in));
        in[0] = 0;                              /* transport */
        EXPECT_BAD(true);
        in[0] = 7;
        EXPECT_BAD(true);
        in[0] = 0xff;
        EXPECT_BAD(true);

        memcpy(in, good, sizeof(in));
        in[1] = 5;                              /* family */
        EXPECT_BAD(true);
        in[1] = 0xff;
        EXPECT_BAD(true);

        memcpy(in, good, sizeof(in));
        in[2] = in[3] = in[4] = in[5] = 0;      /* port 0 */
        EXPECT_BAD(true);

        memcpy(in, good, sizeof(in));
        in[5] = 81;                             /* a range */
        EXPECT_BAD(false);
        assert_int_equal(decode(in, sizeof(in), true, &d), 0);
        assert_int_equal(d.port_lo, 80);
        assert_int_equal(d.port_hi, 81);
        d = before;
        in[3] = 82;                             /* reversed */
        EXPECT_BAD(true);

        memcpy(in, good, sizeof(in));
        in[12] = 1;                             /* IPv4 with bytes past the fourth */
        EXPECT_BAD(false);

        memcpy(in, good, sizeof(in));
        in[1] = PB_FAMILY_ANY;                  /* the wildcard with an address */
        EXPECT_BAD(false);

        memcpy(in, good, sizeof(in));
        in[1] = PB_FAMILY_INET6;
        memset(in + 8, 0, 16);                  /* [::] as INET6: the IPv6-only wildcard */
        assert_int_equal(decode(in, sizeof(in), false, &d), 0);
        assert_true(endpoint_is_v6only_any(&d));
        d = before;
        in[18] = in[19] = 0xff;                 /* ::ffff:0.0.0.0 */
        EXPECT_BAD(false);
        in[20] = 1;
        in[23] = 4;                             /* ::ffff:1.0.0.4 */
        EXPECT_BAD(true);

        memcpy(in, good, sizeof(in));
        in[0] = PB_UNIX;                        /* Unix, with no path after the 24 bytes */
        memset(in + 1, 0, sizeof(in) - 1);
        EXPECT_BAD(true);
#undef EXPECT_BAD
}

/* A Unix endpoint's path on the wire: its length byte must fit the
 * message, the path be valid, nothing else set. */
static void test_decode_rejects_unix(void **state) {
        struct pb_endpoint e = parse_ok("unix:/run/a.sock"), d;
        uint8_t good[PB_ENDPOINT_WIRE_MAX], in[PB_ENDPOINT_WIRE_MAX + 1];
        size_t n = endpoint_encode(&e, good), used;

        memcpy(in, good, n);
        assert_int_equal(endpoint_decode(in, n - 1, false, &d, &used), -EBADMSG);    /* cut short */
        assert_int_equal(endpoint_decode(in, PB_ENDPOINT_WIRE_SIZE, false, &d, &used), -EBADMSG);
        in[n] = 'x';                                    /* more after it: the caller's */
        assert_int_equal(endpoint_decode(in, n + 1, false, &d, &used), 0);
        assert_int_equal(used, n);

        memcpy(in, good, n);
        in[PB_ENDPOINT_WIRE_SIZE + 5] = '\0';           /* a NUL in the path */
        assert_int_equal(decode(in, n, false, &d), -EBADMSG);
        memcpy(in, good, n);
        in[PB_ENDPOINT_WIRE_SIZE + 1] = 'r';            /* relative */
        assert_int_equal(decode(in, n, false, &d), -EBADMSG);
        memcpy(in, good, n);
        in[3] = 80;                                     /* a port */
        assert_int_equal(decode(in, n, false, &d), -EBADMSG);
        memcpy(in, good, n);
        in[1] = PB_FAMILY_INET;                         /* a family */
        assert_int_equal(decode(in, n, false, &d), -EBADMSG);
        memcpy(in, good, n);
        in[8] = 1;                                      /* an address */
        assert_int_equal(decode(in, n, false, &d), -EBADMSG);
        memcpy(in, good, n);
        in[PB_ENDPOINT_WIRE_SIZE] = PB_UNIX_PATH_MAX + 1; /* longer than sun_path allows */
        memset(in + PB_ENDPOINT_WIRE_SIZE + 1, 'a', PB_UNIX_PATH_MAX + 1);
        in[PB_ENDPOINT_WIRE_SIZE + 1] = '/';
        assert_int_equal(endpoint_decode(in, sizeof(in), false, &d, &used), -EBADMSG);
        /* A TCP endpoint never has a path: its 24 bytes are all of it. */
        e = parse_ok("tcp:80");
        e.path[0] = '/';
        assert_int_equal(endpoint_validate(&e, false), -EINVAL);
}

/* Unix paths: absolute and normalized; `/dir/` only as a pattern, where
 * it matches names directly in dir. */
static void test_unix(void **state) {
        static const char *const bad[] = {
                "unix:", "unix:/", "unix:rel/a", "unix://a", "unix:/a//b", "unix:/a/./b", "unix:/a/../b",
                "unix:/a/..", "unix:/a/.", "unix:/a\tb", "unix:/a/b/", "unix:./a", "unix:/a b", "unix:/a=b",
                "unix:/a,b", "unix:/a:b", "unix:/a\\b", "unix:/\xc3\xa9",
        };
        struct pb_endpoint e = parse_ok("unix:/run/app/web.sock"), p, q;
        char buf[PB_ENDPOINT_STRLEN], longest[PB_ENDPOINT_STRLEN];

        assert_true(endpoint_is_unix(&e));
        assert_string_equal(endpoint_format(&e, buf), "unix:/run/app/web.sock");
        assert_int_equal(e.port_lo, 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_int_equal(endpoint_parse(bad[i], &q), -EINVAL);
        assert_int_equal(endpoint_parse("unix:/run/app/", &q), -EINVAL);        /* a directory: patterns only */
        assert_int_equal(endpoint_parse_pattern("unix:/a//", &q), -EINVAL);
        assert_int_equal(endpoint_parse("unix:/a/..b", &q), 0);                 /* just a name */
        assert_int_equal(endpoint_parse("unix:/run/php/php8.2-fpm_1@x+y~.sock", &q), 0);

        /* 107 bytes of path fit sun_path with its NUL; 108 do not. */
        memset(longest, 'a', sizeof(longest));
        memcpy(longest, "unix:/", 6);
        longest[5 + PB_UNIX_PATH_MAX] = '\0';
        assert_int_equal(endpoint_parse(longest, &q), 0);
        assert_string_equal(endpoint_format(&q, buf), longest);
        longest[5 + PB_UNIX_PATH_MAX] = 'a';
        longest[6 + PB_UNIX_PATH_MAX] = '\0';
        assert_int_equal(endpoint_parse(longest, &q), -EINVAL);

        p = pattern_ok("unix:/run/app/");
        assert_true(endpoint_matches(&p, &e));
        q = parse_ok("unix:/run/app/sub/web.sock");             /* not directly in it */
        assert_false(endpoint_matches(&p, &q));
        q = parse_ok("unix:/run/application");                  /* a prefix, not a directory */
        assert_false(endpoint_matches(&p, &q));
        q = parse_ok("unix:/run/app");
        assert_false(endpoint_matches(&p, &q));
        p = pattern_ok("unix:/run/app/web.sock");               /* exact */
        assert_true(endpoint_matches(&p, &e));
        q = parse_ok("unix:/run/app/web.sock2");
        assert_false(endpoint_matches(&p, &q));
        p = pattern_ok("tcp:1-65535");                          /* ports never match paths, nor back */
        assert_false(endpoint_matches(&p, &e));
        p = pattern_ok("unix:/run/app/");
        q = parse_ok("tcp:80");
        assert_false(endpoint_matches(&p, &q));

        q = parse_ok("unix:/run/app/web.sock");
        assert_true(endpoint_equal(&e, &q));
        assert_true(endpoint_overlaps(&e, &q));
        assert_false(endpoint_splits_clients(&e, &q));
        q = parse_ok("unix:/run/app/api.sock");
        assert_false(endpoint_equal(&e, &q));
        assert_false(endpoint_overlaps(&e, &q));
}

/* Every single-bit change of a valid encoding is either refused or decodes
 * to an endpoint whose encoding is exactly the changed bytes: the wire form
 * is canonical, nothing is silently dropped. */
static void test_decode_bit_flips(void **state) {
        static const char *const seeds[] = { "80", "udp:127.0.0.1:53", "tcp:[fe80::1]:443", "tcp:0.0.0.0:1",
                                             "unix:/run/a/b.sock" };
        unsigned accepted = 0, refused = 0;

        for (size_t s = 0; s < ELEMENTSOF(seeds); s++) {
                struct pb_endpoint e = parse_ok(seeds[s]);
                uint8_t good[PB_ENDPOINT_WIRE_MAX];
                size_t n = endpoint_encode(&e, good);

                for (unsigned bit = 0; bit < 8 * n; bit++)
                        for (int pattern = 0; pattern <= 1; pattern++) {
                                uint8_t in[PB_ENDPOINT_WIRE_MAX], again[PB_ENDPOINT_WIRE_MAX];
                                struct pb_endpoint d;

                                size_t used;

                                memcpy(in, good, n);
                                in[bit / 8] ^= (uint8_t) (1u << (bit % 8));
                                if (endpoint_decode(in, n, pattern, &d, &used) < 0) {
                                        refused++;
                                        continue;
                                }
                                /* A shorter path leaves the rest to the caller. */
                                accepted++;
                                assert_true(used <= n);
                                assert_int_equal(endpoint_validate(&d, pattern), 0);
                                assert_int_equal(endpoint_encode(&d, again), used);
                                assert_memory_equal(in, again, used);
                        }
        }
        assert_true(accepted > 0);
        assert_true(refused > 0);
}

static void test_equal(void **state) {
        struct pb_endpoint a = parse_ok("tcp:[::1]:80"), b = a;

        assert_true(endpoint_equal(&a, &b));
        b.transport = PB_UDP;
        assert_false(endpoint_equal(&a, &b));
        b = a;
        b.port_hi = 81;
        assert_false(endpoint_equal(&a, &b));
        b = a;
        b.addr[0] = 0x20;
        assert_false(endpoint_equal(&a, &b));
        b = a;
        b.family = PB_FAMILY_INET;
        assert_false(endpoint_equal(&a, &b));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_port_only),
                cmocka_unit_test(test_parse_udp),
                cmocka_unit_test(test_parse_ipv4),
                cmocka_unit_test(test_parse_ipv6),
                cmocka_unit_test(test_parse_wildcard_is_omitted),
                cmocka_unit_test(test_parse_ipv4_any),
                cmocka_unit_test(test_parse_family_prefixes),
                cmocka_unit_test(test_overlaps),
                cmocka_unit_test(test_splits_clients),
                cmocka_unit_test(test_parse_port_edges),
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_parse_rejects),
                cmocka_unit_test(test_parse_rejects_in_patterns),
                cmocka_unit_test(test_parse_rejects_long),
                cmocka_unit_test(test_pattern_forms),
                cmocka_unit_test(test_pattern_rejects),
                cmocka_unit_test(test_matches_range_edges),
                cmocka_unit_test(test_matches_specific_address),
                cmocka_unit_test(test_validate),
                cmocka_unit_test(test_encode_layout),
                cmocka_unit_test(test_encode_decode_round_trip),
                cmocka_unit_test(test_decode_rejects),
                cmocka_unit_test(test_decode_rejects_unix),
                cmocka_unit_test(test_unix),
                cmocka_unit_test(test_decode_bit_flips),
                cmocka_unit_test(test_equal),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
