/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the endpoint parsers (proto/endpoint.c), the rules
 * (brokerd/policy.c) and the reserved-ports text (brokerd/reserved.c),
 * each against a model written here another way. An input is text up to
 * its first NUL, then a program:
 *
 *   - The text is parsed as an endpoint, a pattern and an
 *     ip_local_reserved_ports list, from a buffer of exactly its length
 *     (the sanitizers catch a read past it). Each parser must accept
 *     exactly what a reference parser here accepts, with the same fields;
 *     what it accepts must format (into a buffer of exactly
 *     PB_ENDPOINT_STRLEN bytes, or of any size for the list) to the
 *     model's canonical text, which parses back to the same value. A
 *     refusal leaves the output untouched.
 *   - The program adds rules decoded from POLICY_ADD messages whose bodies
 *     it gives (a duplicate is found, not added, as brokerd refuses it),
 *     removes rules, and asks which rule lets a peer (uid, gid, groups,
 *     unit, doubt, admin group) get an endpoint, and whether it is an
 *     admin: policy.c must answer as a plain list of rules does, first
 *     match in id order. It also decodes wire endpoints and checks that
 *     matching is monotonic (a wider pattern matches whatever a narrower
 *     one does).
 *
 * Standalone (gcc, no libFuzzer): `make build/fuzz_endpoint`, linked with
 * tests/fuzz/driver.c; `build/fuzz_endpoint FILE` replays a crash file.
 */
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "endpoint.h"
#include "peer.h"
#include "policy.h"
#include "proto.h"
#include "reserved.h"

#define SELF_UID 999                    /* brokerd's own uid in the model: an admin */
#define MODEL_RULES_MAX 64              /* rules one input may hold */

static size_t n_endpoints, n_patterns, n_lists, n_rules, n_queries, n_granted, n_accepted;

/* --- a reference endpoint parser -------------------------------------------- */

/* A port: 1 to 5 digits, no leading zero, 1..65535. */
static bool ref_port(const char *s, size_t len, uint16_t *ret) {
        unsigned v = 0;

        if (len < 1 || len > 5 || s[0] == '0')
                return false;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v > 65535)
                return false;
        *ret = (uint16_t) v;
        return true;
}

static bool all_zero(const uint8_t *p, size_t n) {
        while (n--)
                if (*p++)
                        return false;
        return true;
}

/* A Unix path, walked back to front: 2..107 bytes of letters, digits,
 * "._-@+~" and '/', the first a '/', and between slashes neither nothing,
 * "." nor ".."; the last name may be empty (a trailing '/') in a pattern only. */
static bool ref_unix_path(const char *path, bool pattern) {
        static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@+~/";
        size_t n = strlen(path), end = n;

        if (n < 2 || n > PB_UNIX_PATH_MAX || path[0] != '/' || strspn(path, allowed) != n)
                return false;
        for (size_t i = n; i-- > 0;) {
                size_t len;

                if (path[i] != '/')
                        continue;
                len = end - i - 1;              /* the name after this '/' */
                if ((len == 0 && !(end == n && pattern)) || (len == 1 && path[i + 1] == '.') ||
                    (len == 2 && path[i + 1] == '.' && path[i + 2] == '.'))
                        return false;
                end = i;
        }
        return true;
}

/* The grammar again, split the other way round: the port after the last
 * colon, then the host before it, bracketed IPv6 or dotted IPv4; or a
 * Unix path. */
static bool ref_parse(const char *s, bool pattern, struct pb_endpoint *ret) {
        struct pb_endpoint e = { .transport = PB_TCP, .family = PB_FAMILY_ANY };
        const char *colon, *port, *dash;
        char host[128];
        size_t hlen;

        char only = 0;                  /* '4' or '6' after tcp/udp: that family only */

        if (strlen(s) >= PB_ENDPOINT_STRLEN)
                return false;
        if (strncmp(s, "unix:", 5) == 0) {
                if (!ref_unix_path(s + 5, pattern))
                        return false;
                *ret = (struct pb_endpoint) { .transport = PB_UNIX };
                memcpy(ret->path, s + 5, strlen(s + 5) + 1);
                return true;
        }
        if (strncmp(s, "udp", 3) == 0)
                e.transport = PB_UDP;
        if (strncmp(s, "udp", 3) == 0 || strncmp(s, "tcp", 3) == 0) {
                if ((s[3] == '4' || s[3] == '6') && s[4] == ':')
                        only = s[3];
                if (s[3] == ':' || only)
                        s += only ? 5 : 4;
        }
        colon = strrchr(s, ':');
        port = colon ? colon + 1 : s;
        if (colon) {
                hlen = (size_t) (colon - s);
                if (hlen >= sizeof(host))
                        return false;
                memcpy(host, s, hlen);
                host[hlen] = '\0';
                if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
                        host[hlen - 1] = '\0';
                        if (inet_pton(AF_INET6, host + 1, e.addr) != 1)
                                return false;
                        e.family = all_zero(e.addr, 16) && only != '6' ? PB_FAMILY_ANY : PB_FAMILY_INET6;
                        if ((e.addr[10] == 0xff && e.addr[11] == 0xff && all_zero(e.addr, 10)) || only == '4')
                                return false;           /* v4-mapped: the IPv4 form is the one */
                } else {
                        if (inet_pton(AF_INET, host, e.addr) != 1 || only == '6')
                                return false;
                        e.family = PB_FAMILY_INET;
                }
        } else if (only)                /* no address: that family's wildcard */
                e.family = only == '4' ? PB_FAMILY_INET : PB_FAMILY_INET6;
        dash = strchr(port, '-');
        if (dash && !pattern)
                return false;
        if (!ref_port(port, dash ? (size_t) (dash - port) : strlen(port), &e.port_lo))
                return false;
        e.port_hi = e.port_lo;
        if (dash && (!ref_port(dash + 1, strlen(dash + 1), &e.port_hi) || e.port_hi < e.port_lo))
                return false;
        *ret = e;
        return true;
}

/* The canonical text of e (pattern: an omitted address for the wildcard). */
static void ref_format(const struct pb_endpoint *e, bool pattern, char *buf, size_t size) {
        char host[INET6_ADDRSTRLEN], ports[16];
        const char *t = e->transport == PB_UDP ? "udp" : "tcp";

        if (e->transport == PB_UNIX) {
                snprintf(buf, size, "unix:%s", e->path);
                return;
        }
        if (e->port_lo == e->port_hi)
                snprintf(ports, sizeof(ports), "%u", e->port_lo);
        else
                snprintf(ports, sizeof(ports), "%u-%u", e->port_lo, e->port_hi);
        if (e->family == PB_FAMILY_INET)
                snprintf(buf, size, "%s:%s:%s", t, inet_ntop(AF_INET, e->addr, host, sizeof(host)), ports);
        else if (e->family == PB_FAMILY_INET6)
                snprintf(buf, size, "%s%s:[%s]:%s", t, all_zero(e->addr, 16) ? "6" : "",
                         inet_ntop(AF_INET6, e->addr, host, sizeof(host)), ports);
        else
                snprintf(buf, size, pattern ? "%s:%s" : "%s:[::]:%s", t, ports);
}

/* What endpoint_validate() promises, from the field table in endpoint.h. */
static bool ref_valid(const struct pb_endpoint *e, bool pattern) {
        if (e->transport == PB_UNIX)
                return e->family == PB_FAMILY_ANY && e->port_lo == 0 && e->port_hi == 0 && all_zero(e->addr, 16) &&
                       memchr(e->path, '\0', sizeof(e->path)) && ref_unix_path(e->path, pattern);
        if (e->path[0])
                return false;
        if ((e->transport != PB_TCP && e->transport != PB_UDP) || e->port_lo == 0 || e->port_lo > e->port_hi ||
            (!pattern && e->port_lo != e->port_hi))
                return false;
        switch (e->family) {
        case PB_FAMILY_ANY:
                return all_zero(e->addr, 16);
        case PB_FAMILY_INET:
                return all_zero(e->addr + 4, 12);
        case PB_FAMILY_INET6:
                return !(all_zero(e->addr, 10) && e->addr[10] == 0xff && e->addr[11] == 0xff);    /* :: is IPv6-only */
        default:
                return false;
        }
}

/* A Unix pattern: its path, or, ending with '/', that directory plus one name. */
static bool ref_unix_matches(const char *p, const char *e) {
        const char *slash = strrchr(e, '/');
        size_t dir = (size_t) (slash - e) + 1;          /* e's directory, its '/' included */

        if (p[strlen(p) - 1] != '/')
                return strcmp(p, e) == 0;
        return strlen(p) == dir && strncmp(p, e, dir) == 0 && e[dir] != '\0';
}

static bool ref_matches(const struct pb_endpoint *p, const struct pb_endpoint *e) {
        if (p->transport == PB_UNIX || e->transport == PB_UNIX)
                return p->transport == e->transport && ref_unix_matches(p->path, e->path);
        return p->transport == e->transport && p->port_lo <= e->port_lo && e->port_lo <= p->port_hi &&
               (p->family == PB_FAMILY_ANY || (p->family == e->family && memcmp(p->addr, e->addr, 16) == 0));
}

/* One parser (pattern or not) against the reference, on s (exactly strlen(s) + 1 bytes). */
static void check_endpoint_text(const char *s, bool pattern) {
        struct pb_endpoint e, ref, again, untouched;
        char *text = malloc(PB_ENDPOINT_STRLEN), expect[128];
        int r;

        CHECK(text);
        memset(&e, 0xa5, sizeof(e));
        untouched = e;
        r = pattern ? endpoint_parse_pattern(s, &e) : endpoint_parse(s, &e);
        CHECK(r == 0 || r == -EINVAL);
        CHECK((r == 0) == ref_parse(s, pattern, &ref));
        if (r < 0) {
                CHECK(memcmp(&e, &untouched, sizeof(e)) == 0);
                free(text);
                return;
        }
        pattern ? n_patterns++ : n_endpoints++;
        CHECK(endpoint_equal(&e, &ref));
        CHECK(endpoint_validate(&e, pattern) == 0 && ref_valid(&e, pattern));

        /* The canonical text fits the buffer, is the model's, and reads back. */
        CHECK((pattern ? endpoint_format_pattern(&e, text) : endpoint_format(&e, text)) == text);
        ref_format(&e, pattern, expect, sizeof(expect));
        CHECK(strlen(expect) < PB_ENDPOINT_STRLEN && strcmp(text, expect) == 0);
        CHECK((pattern ? endpoint_parse_pattern(text, &again) : endpoint_parse(text, &again)) == 0);
        CHECK(endpoint_equal(&e, &again));
        /* An endpoint is a pattern too, for itself alone; a Unix directory is no endpoint. */
        CHECK(endpoint_matches(&e, &e) == !(e.transport == PB_UNIX && e.path[strlen(e.path) - 1] == '/'));
        if (!pattern) {
                CHECK(endpoint_parse_pattern(s, &again) == 0 && endpoint_equal(&e, &again));
        }
        free(text);
}

/* --- the reserved-ports list ------------------------------------------------ */

/* The list's grammar: up to the first newline, comma-separated items N or
 * N-M, decimal (leading zeros allowed, as the kernel writes none), 0..65535, N <= M. */
static bool ref_item(const char *s, size_t len, long *ret) {
        long v = 0;

        if (len == 0)
                return false;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (s[i] - '0');
                if (v > 65535)
                        return false;
        }
        *ret = v;
        return true;
}

static bool ref_reserved_parse(const char *text, struct port_set *ret) {
        size_t end = strcspn(text, "\n");

        memset(ret, 0, sizeof(*ret));
        for (size_t pos = 0; pos < end;) {
                size_t len = strcspn(text + pos, ",\n"), dash;
                long lo, hi;

                if (pos + len > end)
                        len = end - pos;
                dash = strcspn(text + pos, "-,\n");
                if (dash < len) {
                        if (!ref_item(text + pos, dash, &lo) ||
                            !ref_item(text + pos + dash + 1, len - dash - 1, &hi) || hi < lo)
                                return false;
                } else if (!ref_item(text + pos, len, &lo))
                        return false;
                else
                        hi = lo;
                for (long p = lo; p <= hi; p++)
                        ret->bits[p / 64] |= UINT64_C(1) << (p % 64);
                pos += len;
                if (pos < end) {                /* a comma: another item must follow */
                        pos++;
                        if (pos == end)
                                return false;
                }
        }
        return true;
}

/* The kernel's form of s: ascending, runs as ranges. Returns its length. */
static size_t ref_reserved_format(const struct port_set *s, char *buf, size_t size) {
        size_t len = 0;

        buf[0] = '\0';
        for (unsigned p = 0; p < 65536; p++) {
                unsigned hi = p;

                if (p % 64 == 0 && s->bits[p / 64] == 0) {
                        p += 63;
                        continue;
                }
                if (!((s->bits[p / 64] >> (p % 64)) & 1))
                        continue;
                while (hi < 65535 && ((s->bits[(hi + 1) / 64] >> ((hi + 1) % 64)) & 1))
                        hi++;
                len += (size_t) snprintf(buf + len, size - len, hi > p ? "%s%u-%u" : "%s%u", len ? "," : "", p, hi);
                CHECK(len < size);
                p = hi;
        }
        return len;
}

static void check_reserved(const char *s, size_t cut) {
        static struct port_set set, ref, again, untouched;
        static char expect[65536 * 7];
        size_t len, n;
        char *buf;
        int r;

        memset(&set, 0x5a, sizeof(set));
        untouched = set;
        r = reserved_parse(s, &set);
        CHECK(r == 0 || r == -EINVAL);
        CHECK((r == 0) == ref_reserved_parse(s, &ref));
        if (r < 0) {
                CHECK(memcmp(&set, &untouched, sizeof(set)) == 0);
                return;
        }
        CHECK(memcmp(&set, &ref, sizeof(set)) == 0);
        if (!s[0] || s[0] == '\n')
                return;                 /* empty: nothing more to learn */
        n_lists++;
        for (unsigned p = 0; p < 65536; p += 1 + p % 97)
                CHECK(port_set_has(&set, p) == !!((ref.bits[p / 64] >> (p % 64)) & 1));

        /* The whole text, exactly as long as it says, reads back the same. */
        len = ref_reserved_format(&set, expect, sizeof(expect));
        /* reserved_write() sizes the text with (NULL, 0). */
        CHECK(reserved_format(&set, NULL, 0) == len);
        buf = malloc(len + 1);
        CHECK(buf);
        CHECK(reserved_format(&set, buf, len + 1) == len && strcmp(buf, expect) == 0);
        CHECK(reserved_parse(buf, &again) == 0 && memcmp(&again, &set, sizeof(set)) == 0);
        free(buf);

        /* Cut short: a NUL-terminated prefix in exactly the room given. */
        n = len ? cut % (len + 1) + 1 : 1;
        buf = malloc(n);
        CHECK(buf);
        CHECK(reserved_format(&set, buf, n) == len);
        CHECK(strlen(buf) == n - 1 && memcmp(buf, expect, n - 1) == 0);
        free(buf);
}

/* --- rules, as POLICY_ADD makes them, against a list -------------------------- */

struct program {
        const uint8_t *p;
        size_t left;
};

static bool take(struct program *pr, void *out, size_t n) {
        if (pr->left < n)
                return false;
        memcpy(out, pr->p, n);
        pr->p += n;
        pr->left -= n;
        return true;
}

static uint8_t take8(struct program *pr) {
        uint8_t b = 0;

        take(pr, &b, 1);
        return b;
}

struct model {
        struct store_rule rules[MODEL_RULES_MAX];
        size_t n;
        uint64_t next_id;
        struct policy_admin_group admin_group;
};

/* A peer the model follows: whether its groups were read, and its doubt. */
struct model_peer {
        bool doubt, unread;
};

static bool model_in_group(const struct peer *p, struct model_peer *m, gid_t gid) {
        if (p->gid == gid)
                return true;
        if (m->unread) {
                m->unread = false;
                m->doubt = true;        /* the groups cannot be read: conn_fd is -1 */
                return false;
        }
        for (size_t i = 0; i < p->n_groups; i++)
                if (p->groups[i] == gid)
                        return true;
        return false;
}

static bool model_principal(const struct pb_principal *pr, const struct peer *p, struct model_peer *m) {
        switch (pr->kind) {
        case PB_PRINCIPAL_USER:
                return pr->id == p->uid;
        case PB_PRINCIPAL_GROUP:
                return model_in_group(p, m, pr->id);
        default:
                return p->unit[0] && strcmp(pr->unit, p->unit) == 0;
        }
}

static bool principal_same(const struct pb_principal *a, const struct pb_principal *b) {
        return a->kind == b->kind && a->id == b->id && strcmp(a->unit, b->unit) == 0;
}

/* The id of the first rule letting the peer get e (0: none). */
static uint64_t model_find(const struct model *md, const struct peer *p, struct model_peer m,
                           const struct pb_endpoint *e) {
        if (m.doubt)
                return 0;
        for (size_t i = 0; i < md->n; i++)
                if (ref_matches(&md->rules[i].pattern, e) && model_principal(&md->rules[i].principal, p, &m))
                        return m.doubt ? 0 : md->rules[i].id;
        return 0;
}

static bool model_admin(const struct model *md, const struct peer *p, struct model_peer m) {
        if (m.doubt)
                return false;
        if (p->uid == 0 || p->uid == SELF_UID)
                return true;
        return md->admin_group.set && model_in_group(p, &m, md->admin_group.gid);
}

static void check_counts(const struct policy *pol, const struct model *md) {
        size_t units = 0;

        CHECK(pol->n_rules == md->n);
        for (size_t i = 0; i < md->n; i++) {
                const struct store_rule *r = policy_get(pol, md->rules[i].id);

                CHECK(r && r->id == md->rules[i].id && principal_same(&r->principal, &md->rules[i].principal) &&
                      endpoint_equal(&r->pattern, &md->rules[i].pattern));
                CHECK(&pol->rules[i] == r);     /* kept in id order */
                units += md->rules[i].principal.kind == PB_PRINCIPAL_UNIT;
        }
        CHECK(pol->n_unit_rules == units);
}

/* ADD: a POLICY_ADD body (principal: kind, id, length-prefixed unit; the
 * 24-byte pattern) as the program gives it, decoded as brokerd decodes it. */
static void op_add(struct program *pr, struct policy *pol, struct model *md) {
        uint8_t msg[PB_HEADER_SIZE + 6 + 255 + PB_ENDPOINT_WIRE_MAX + 6];
        struct pb_msg m;
        struct store_rule rule = { 0 };
        const struct store_rule *same;
        size_t body, found = md->n;

        if (pr->left < 6)
                return;
        body = 6 + pr->p[5] + PB_ENDPOINT_WIRE_SIZE;
        /* A Unix pattern: its path, then its sockets' group and mode, follow. */
        if (pr->left > body && pr->p[6 + pr->p[5]] == PB_UNIX && pr->p[body] <= PB_UNIX_PATH_MAX)
                body += 1 + pr->p[body] + 6;
        if (!take(pr, msg + PB_HEADER_SIZE, body))
                return;
        memcpy(msg, (uint8_t[]) { 0, 0, (uint8_t) ((PB_HEADER_SIZE + body) >> 8), (uint8_t) (PB_HEADER_SIZE + body),
                                  0, PB_PROTO_VERSION, 0, PB_MSG_POLICY_ADD, 0, 0, 0, 1, 0, 0, 0, 0 },
               PB_HEADER_SIZE);
        if (proto_decode(msg, PB_HEADER_SIZE + body, &m) < 0)
                return;
        rule.principal = m.policy_add.principal;
        rule.pattern = m.policy_add.pattern;
        CHECK(ref_valid(&rule.pattern, true));

        for (size_t i = 0; i < md->n; i++)
                if (principal_same(&md->rules[i].principal, &rule.principal) &&
                    endpoint_equal(&md->rules[i].pattern, &rule.pattern))
                        found = i;
        same = policy_find_rule(pol, &rule);
        CHECK((same != NULL) == (found < md->n));
        if (same) {
                CHECK(same->id == md->rules[found].id);
                return;                 /* brokerd answers EEXIST */
        }
        if (md->n == MODEL_RULES_MAX)
                return;
        rule.id = md->next_id++;
        rule.created = 1700000000;
        CHECK(policy_add(pol, &rule) == 0);
        md->rules[md->n++] = rule;
        n_rules++;
}

/* REMOVE: a rule the model has (a byte below 0x80), or an id it may not. */
static void op_remove(struct program *pr, struct policy *pol, struct model *md) {
        uint8_t k = take8(pr);
        uint64_t id = k < 0x80 && md->n ? md->rules[k % md->n].id : k;
        size_t i;

        for (i = 0; i < md->n && md->rules[i].id != id; i++)
                ;
        CHECK(policy_remove(pol, id) == (i < md->n ? 0 : -ENOENT));
        if (i < md->n) {
                memmove(&md->rules[i], &md->rules[i + 1], (md->n - i - 1) * sizeof(md->rules[0]));
                md->n--;
        }
        CHECK(!policy_get(pol, id));
}

static const uint32_t ids[] = { 0, SELF_UID, 1000, 1001, 1002, 2000, 65534 };

/* A uid or gid: one of the usual (a small byte), or any. */
static uint32_t take_id(struct program *pr) {
        uint8_t b = take8(pr);
        uint32_t v = 0;

        if (b < 0xf0)
                return ids[b % ELEMENTSOF(ids)];
        take(pr, &v, sizeof(v));
        return v;
}

/* An endpoint's 24 bytes, all of them: a TCP or UDP one (the table's). */
static int decode24(const uint8_t in[static PB_ENDPOINT_WIRE_SIZE], bool pattern, struct pb_endpoint *ret) {
        size_t used = 0;
        int r = endpoint_decode(in, PB_ENDPOINT_WIRE_SIZE, pattern, ret, &used);

        CHECK(r < 0 || used == PB_ENDPOINT_WIRE_SIZE);
        return r;
}

/* An endpoint a query asks for: inside a rule's pattern (so that rules
 * match), or any valid wire endpoint. Returns false when there is none. */
static bool take_endpoint(struct program *pr, const struct model *md, struct pb_endpoint *ret) {
        static const uint8_t loopback6[16] = { [15] = 1 };
        uint8_t sel = take8(pr), wire[PB_ENDPOINT_WIRE_SIZE];
        uint16_t off = 0;

        if ((sel & 1) && md->n) {
                const struct store_rule *r = &md->rules[(sel >> 2) % md->n];

                take(pr, &off, sizeof(off));
                *ret = r->pattern;
                if (ret->transport == PB_UNIX) {        /* the path, or a name in the directory */
                        size_t n = strlen(ret->path);

                        if (ret->path[n - 1] == '/' && n < PB_UNIX_PATH_MAX)
                                memcpy(ret->path + n, "x", 2);
                        return ret->path[n - 1] != '/' || n < PB_UNIX_PATH_MAX;
                }
                ret->port_lo = ret->port_hi = (uint16_t) (r->pattern.port_lo +
                                                           off % (r->pattern.port_hi - r->pattern.port_lo + 1u));
                if (sel & 2)
                        ret->transport = ret->transport == PB_TCP ? PB_UDP : PB_TCP;
                if (ret->family == PB_FAMILY_ANY && (sel & 0x40)) {
                        ret->family = sel & 0x80 ? PB_FAMILY_INET6 : PB_FAMILY_INET;
                        if (sel & 0x80)
                                memcpy(ret->addr, loopback6, 16);
                        else
                                memcpy(ret->addr, (uint8_t[]) { 127, 0, 0, 1 }, 4);
                }
                return true;
        }
        return take(pr, wire, sizeof(wire)) && decode24(wire, false, ret) == 0;
}

/* QUERY: a peer and an endpoint; policy_find() and policy_is_admin() as the model says. */
static void op_query(struct program *pr, struct policy *pol, const struct model *md) {
        gid_t groups[4];
        struct peer p = { .pid = 1, .conn_fd = -1, .pid_fd = -1 }, q;
        struct model_peer m;
        struct pb_endpoint e;
        const struct store_rule *r;
        uint8_t flags, n;

        p.uid = take_id(pr);
        p.gid = take_id(pr);
        flags = take8(pr);
        p.n_groups = flags % 5;
        p.groups = groups;              /* the model's; each question gets a copy it owns */
        for (size_t i = 0; i < p.n_groups; i++)
                groups[i] = take_id(pr);
        n = take8(pr);
        if (n && !take(pr, p.unit, n % sizeof(p.unit)))
                return;
        p.unit[sizeof(p.unit) - 1] = '\0';
        if (!take_endpoint(pr, md, &e))
                return;
        m = (struct model_peer) { .doubt = flags & 0x10, .unread = flags & 0x20 };
        p.doubt = m.doubt ? peer_doubt_of("") : NULL;
        p.groups_unread = m.unread;

        /* Each question on a copy of its own: reading the groups changes the peer. */
        q = p;
        q.groups = p.n_groups ? malloc(p.n_groups * sizeof(gid_t)) : NULL;
        CHECK(!p.n_groups || q.groups);
        if (p.n_groups)
                memcpy(q.groups, groups, p.n_groups * sizeof(gid_t));
        r = policy_find(pol, &q, &e);
        CHECK((r ? r->id : 0) == model_find(md, &p, m, &e));
        CHECK(!r || (endpoint_matches(&r->pattern, &e) && policy_principal_matches(&r->principal, &q)));
        n_granted += r != NULL;
        peer_done(&q);

        q = p;
        q.groups = p.n_groups ? malloc(p.n_groups * sizeof(gid_t)) : NULL;
        CHECK(!p.n_groups || q.groups);
        if (p.n_groups)
                memcpy(q.groups, groups, p.n_groups * sizeof(gid_t));
        CHECK(policy_is_admin(pol, &q) == model_admin(md, &p, m));
        peer_done(&q);
        n_queries++;
}

/* WIRE: 24 bytes as an endpoint and as a pattern, against the field table
 * (which has no Unix transport: its path would follow the 24 bytes, so in
 * 24 bytes alone it is refused; fuzz_proto and fuzz_conn send paths). */
static void op_wire(struct program *pr) {
        uint8_t in[PB_ENDPOINT_WIRE_SIZE], out[PB_ENDPOINT_WIRE_MAX];
        struct pb_endpoint raw;

        if (!take(pr, in, sizeof(in)))
                return;
        raw = (struct pb_endpoint) { .transport = in[0], .family = in[1], .port_lo = (uint16_t) (in[2] << 8 | in[3]),
                                     .port_hi = (uint16_t) (in[4] << 8 | in[5]) };
        memcpy(raw.addr, in + 8, 16);
        for (int pattern = 0; pattern <= 1; pattern++) {
                struct pb_endpoint e;
                bool valid = in[6] == 0 && in[7] == 0 && ref_valid(&raw, pattern);
                int r = decode24(in, pattern, &e);

                CHECK(r == (valid ? 0 : -EBADMSG));
                if (!valid)
                        continue;
                CHECK(endpoint_equal(&e, &raw));
                CHECK(endpoint_encode(&e, out) == PB_ENDPOINT_WIRE_SIZE);
                CHECK(memcmp(in, out, sizeof(in)) == 0);
        }
}

/* MATCH: a pattern and an endpoint; matching agrees with the model and is
 * monotonic: dropping the pattern's address or widening its range keeps a match. */
static void op_match(struct program *pr, const struct model *md) {
        uint8_t wire[PB_ENDPOINT_WIRE_SIZE];
        struct pb_endpoint p, e, wider;
        bool m;

        if (!take(pr, wire, sizeof(wire)) || decode24(wire, true, &p) < 0 || !take_endpoint(pr, md, &e))
                return;
        m = endpoint_matches(&p, &e);
        CHECK(m == ref_matches(&p, &e));
        wider = p;
        wider.family = PB_FAMILY_ANY;
        memset(wider.addr, 0, sizeof(wider.addr));
        CHECK(!m || endpoint_matches(&wider, &e));
        wider = p;
        wider.port_lo = 1;
        wider.port_hi = 65535;
        CHECK(!m || endpoint_matches(&wider, &e));
        CHECK(m || !(endpoint_matches(&wider, &e) && e.port_lo >= p.port_lo && e.port_lo <= p.port_hi));
        /* The endpoint as a one-port pattern matches just its own transport. */
        p = e;
        CHECK(endpoint_matches(&p, &e));
        p.transport = p.transport == PB_TCP ? PB_UDP : PB_TCP;
        CHECK(!endpoint_matches(&p, &e));
}

static void run_program(const uint8_t *data, size_t size) {
        static struct model md;
        struct program pr = { data, size };
        struct policy pol = { .self_uid = SELF_UID };
        uint8_t head = take8(&pr);

        md = (struct model) { .next_id = 1 };
        md.admin_group = (struct policy_admin_group) { .set = head & 1, .gid = ids[(head >> 1) % ELEMENTSOF(ids)],
                                                       .name = "fuzz" };
        pol.admin_group = head & 0x80 ? NULL : &md.admin_group;
        if (!pol.admin_group)
                md.admin_group.set = false;
        while (pr.left > 0) {
                switch (take8(&pr) % 5) {
                case 0:
                        op_add(&pr, &pol, &md);
                        break;
                case 1:
                        op_remove(&pr, &pol, &md);
                        break;
                case 2:
                        op_query(&pr, &pol, &md);
                        break;
                case 3:
                        op_match(&pr, &md);
                        break;
                default:
                        op_wire(&pr);
                }
                check_counts(&pol, &md);
        }
        policy_done(&pol);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        size_t len = strnlen((const char *) data, size), before = n_endpoints + n_patterns + n_lists + n_granted;
        char *s = malloc(len + 1);

        CHECK(s);
        memcpy(s, data, len);
        s[len] = '\0';
        check_endpoint_text(s, false);
        check_endpoint_text(s, true);
        check_reserved(s, size > len + 1 ? data[size - 1] : len);
        free(s);
        if (len < size)
                run_program(data + len + 1, size - len - 1);
        if (n_endpoints + n_patterns + n_lists + n_granted != before)
                n_accepted++;
        return 0;
}

/* --- driver hooks ---------------------------------------------------------- */

size_t fuzz_accepted(void) {
        return n_accepted;
}

const char *fuzz_summary(void) {
        static char buf[200];

        snprintf(buf, sizeof(buf), "%zu endpoints, %zu patterns and %zu reserved lists parsed, %zu rules added, "
                 "%zu queries (%zu granted)", n_endpoints, n_patterns, n_lists, n_rules, n_queries, n_granted);
        return buf;
}

/* Program seeds stay programs: the text before them is empty. */
void fuzz_fixup(uint8_t *data, size_t size) {
        if (size > 0)
                data[0] = '\0';
}

/* Appends the wire form of endpoint or pattern text to a seed program. */
static void seed_wire(uint8_t *prog, size_t *n, const char *text) {
        struct pb_endpoint e;

        CHECK(endpoint_parse_pattern(text, &e) == 0);
        *n += endpoint_encode(&e, prog + *n);
}

/* Appends bytes to a seed program. */
static void seed_bytes(uint8_t *prog, size_t *n, const void *bytes, size_t len) {
        memcpy(prog + *n, bytes, len);
        *n += len;
}

/* Appends an ADD of principal kind/id/unit with pattern text. */
static void seed_add(uint8_t *prog, size_t *n, uint8_t kind, uint32_t id, const char *unit, const char *pattern) {
        seed_bytes(prog, n, (uint8_t[]) { 0, kind, (uint8_t) (id >> 24), (uint8_t) (id >> 16), (uint8_t) (id >> 8),
                                          (uint8_t) id, (uint8_t) strlen(unit) }, 7);
        seed_bytes(prog, n, unit, strlen(unit));
        seed_wire(prog, n, pattern);
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size, unsigned flags, void *userdata), void *userdata) {
        static const char *const texts[] = {
                "8080", "udp:5353", "tcp:127.0.0.1:8080", "tcp:[::1]:8443", "tcp:[::]:80", "tcp:0.0.0.0:80",
                "tcp6:80", "udp6:[::]:53", "tcp4:80", "udp4:127.0.0.1:53", "tcp6:[::1]:80", "tcp6:1.2.3.4:80",
                "udp:[2001:db8::1]:65535", "tcp:8000-8099", "udp:127.0.0.1:53-54", "tcp:[fe80::1]:1-65535",
                "[::ffff:1.2.3.4]:80", "tcp:[::1.2.3.4]:80", "080", "65536", "tcp:", "[::1]8080", "[::1]:80:81",
                "80,8000-8080\n", "0-65535", "1,3,5-7,9\n", "00080,65535", "80,", "8080-80", "1\nx",
                "tcp:[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535",
                "unix:/run/app/web.sock", "unix:/run/app/", "unix:/a//b", "unix:/a/./b", "unix:/..",
        };
        uint8_t prog[512];
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(texts); i++)
                add((const uint8_t *) texts[i], strlen(texts[i]), 0, userdata);

        /* No text; admin group 1000; rules for a user, a group and a unit, and a duplicate. */
        seed_bytes(prog, &n, (uint8_t[]) { 0, 1 | 2 << 1 }, 2);
        seed_add(prog, &n, PB_PRINCIPAL_USER, 1000, "", "tcp:8000-8099");
        seed_add(prog, &n, PB_PRINCIPAL_GROUP, 1001, "", "udp:127.0.0.1:53");
        seed_add(prog, &n, PB_PRINCIPAL_UNIT, 0, "web@1.service", "tcp:[::1]:443");
        seed_add(prog, &n, PB_PRINCIPAL_USER, 1000, "", "tcp:8000-8099");
        seed_add(prog, &n, PB_PRINCIPAL_USER, 1002, "", "unix:/run/app/");
        seed_bytes(prog, &n, (uint8_t[]) { 0, 0, 0, 33, 0x01, 0xb0 }, 6);     /* group 33, mode 0660 */
        /* Queries: uid 1000 inside rule 0; uid 1001 with group 1001 and unit web@1.service inside rule 1, then any. */
        seed_bytes(prog, &n, (uint8_t[]) { 2, 2, 2, 0, 0, 1, 0, 0x10 }, 8);
        seed_bytes(prog, &n, (uint8_t[]) { 2, 3, 3, 1, 3, 13 }, 6);
        seed_bytes(prog, &n, "web@1.service", 13);
        seed_bytes(prog, &n, (uint8_t[]) { 1 | 1 << 2, 0, 0 }, 3);
        seed_bytes(prog, &n, (uint8_t[]) { 2, 4, 4, 0x30, 0, 0 }, 6);
        seed_wire(prog, &n, "udp:[2001:db8::1]:53");
        /* Remove the first rule; a match; a wire endpoint. */
        seed_bytes(prog, &n, (uint8_t[]) { 1, 0, 3 }, 3);
        seed_wire(prog, &n, "tcp:10-20");
        seed_bytes(prog, &n, (uint8_t[]) { 0 }, 1);
        seed_wire(prog, &n, "tcp:127.0.0.1:15");
        seed_bytes(prog, &n, (uint8_t[]) { 4 }, 1);
        seed_wire(prog, &n, "udp:[::1]:53");
        add(prog, n, FUZZ_SEED_MESSAGE, userdata);
}
