/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of proto/proto.c and proto/fdpass.c: the exact header layout,
 * an encode/decode round trip of every message type (full lists included),
 * rejection of truncated, padded, oversized and malformed messages field by
 * field, and fd passing over a real SOCK_SEQPACKET socketpair: the one fd
 * the GET reply carries arrives close-on-exec, every other fd is closed.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdpass.h"
#include "proto.h"

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

#define LEASE_ENTRY_SIZE 65             /* id 8, endpoint 24, uid 4, since 8, handouts 8, holders 4, queued 4, backlog 4, bound 1 */
#define RULE_ENTRY_SIZE(unit_len) (8 + 1 + 4 + 1 + (unit_len) + PB_ENDPOINT_WIRE_SIZE + 8)
/* id 8, time 8, uid 4, pid 4, then the event, endpoint and detail texts (a length byte each) */
#define EVENT_ENTRY_SIZE(e) (8 + 8 + 4 + 4 + 3 + strlen((e)->event) + strlen((e)->endpoint) + strlen((e)->detail))
#define LOG_REQUEST_SIZE 56             /* body: before 8, since 8, until 8, limit 1, has_uid 1, uid 4,
                                         * has_endpoint 1, endpoint 24, event length 1 */
#define SAMPLES_MAX 48                  /* room for samples() */

/* The request types, each with a reply of its own type. */
static const uint16_t request_types[] = {
        PB_MSG_GET, PB_MSG_RELEASE, PB_MSG_STATUS, PB_MSG_POLICY_ADD, PB_MSG_POLICY_REMOVE, PB_MSG_POLICY_LIST,
        PB_MSG_REEXEC, PB_MSG_INFO, PB_MSG_CHECK, PB_MSG_LOG, PB_MSG_POLICY_TEST,
};

/* --- helpers ------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

/* Sets the header's length field to len, as a sender would. */
static void fix_length(uint8_t *buf, size_t len) {
        put_be32(buf, (uint32_t) len);
}

static size_t encode_ok(const struct pb_msg *m, uint8_t buf[static PB_MSG_MAX]) {
        int n = proto_encode(m, buf, PB_MSG_MAX);

        if (n < 0)
                fail_msg("proto_encode(type 0x%x) failed: %d", m->hdr.type, n);
        assert_true(n >= PB_HEADER_SIZE && n <= PB_MSG_MAX);
        return (size_t) n;
}

static int decode(const uint8_t *buf, size_t len) {
        struct pb_msg m;
        return proto_decode(buf, len, &m);
}

static void assert_endpoint_equal(const struct pb_endpoint *a, const struct pb_endpoint *b) {
        assert_true(endpoint_equal(a, b));
}

static void assert_principal_equal(const struct pb_principal *a, const struct pb_principal *b) {
        assert_int_equal(a->kind, b->kind);
        assert_int_equal(a->id, b->id);
        assert_string_equal(a->unit, b->unit);
}

/* Field-wise comparison of the members the header's type selects. */
static void assert_msg_equal(const struct pb_msg *a, const struct pb_msg *b) {
        assert_int_equal(a->hdr.type, b->hdr.type);
        assert_int_equal(a->hdr.id, b->hdr.id);

        switch (a->hdr.type) {
        case PB_MSG_GET:
        case PB_MSG_RELEASE:
        case PB_MSG_CHECK:
                assert_endpoint_equal(&a->get.endpoint, &b->get.endpoint);
                break;
        case PB_MSG_GET | PB_MSG_REPLY:
                assert_endpoint_equal(&a->got.endpoint, &b->got.endpoint);
                assert_int_equal(a->got.lease_id, b->got.lease_id);
                assert_int_equal(a->got.created, b->got.created);
                break;
        case PB_MSG_STATUS:
                assert_int_equal(a->status.has_endpoint, b->status.has_endpoint);
                if (a->status.has_endpoint)
                        assert_endpoint_equal(&a->status.endpoint, &b->status.endpoint);
                assert_int_equal(a->status.after_id, b->status.after_id);
                break;
        case PB_MSG_STATUS | PB_MSG_REPLY:
                assert_int_equal(a->leases.count, b->leases.count);
                assert_int_equal(a->leases.more, b->leases.more);
                for (unsigned i = 0; i < a->leases.count; i++) {
                        const struct pb_lease_entry *x = &a->leases.leases[i], *y = &b->leases.leases[i];
                        assert_int_equal(x->id, y->id);
                        assert_endpoint_equal(&x->endpoint, &y->endpoint);
                        assert_int_equal(x->owner_uid, y->owner_uid);
                        assert_int_equal(x->since, y->since);
                        assert_int_equal(x->handouts, y->handouts);
                        assert_int_equal(x->holders, y->holders);
                        assert_int_equal(x->queued, y->queued);
                        assert_int_equal(x->backlog, y->backlog);
                        assert_int_equal(x->bound, y->bound);
                }
                break;
        case PB_MSG_POLICY_ADD:
                assert_principal_equal(&a->policy_add.principal, &b->policy_add.principal);
                assert_endpoint_equal(&a->policy_add.pattern, &b->policy_add.pattern);
                break;
        case PB_MSG_POLICY_ADD | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE:
                assert_int_equal(a->rule_id.rule_id, b->rule_id.rule_id);
                break;
        case PB_MSG_POLICY_LIST:
                assert_int_equal(a->policy_list.after_id, b->policy_list.after_id);
                break;
        case PB_MSG_POLICY_LIST | PB_MSG_REPLY:
                assert_int_equal(a->rules.count, b->rules.count);
                assert_int_equal(a->rules.more, b->rules.more);
                for (unsigned i = 0; i < a->rules.count; i++) {
                        const struct pb_rule_entry *x = &a->rules.rules[i], *y = &b->rules.rules[i];
                        assert_int_equal(x->id, y->id);
                        assert_principal_equal(&x->principal, &y->principal);
                        assert_endpoint_equal(&x->pattern, &y->pattern);
                        assert_int_equal(x->created, y->created);
                }
                break;
        case PB_MSG_POLICY_TEST:
                assert_endpoint_equal(&a->policy_test.endpoint, &b->policy_test.endpoint);
                assert_int_equal(a->policy_test.uid, b->policy_test.uid);
                assert_int_equal(a->policy_test.n_groups, b->policy_test.n_groups);
                for (unsigned i = 0; i < a->policy_test.n_groups; i++)
                        assert_int_equal(a->policy_test.groups[i], b->policy_test.groups[i]);
                assert_string_equal(a->policy_test.unit, b->policy_test.unit);
                break;
        case PB_MSG_POLICY_TEST | PB_MSG_REPLY:
                assert_int_equal(a->policy_tested.allowed, b->policy_tested.allowed);
                assert_int_equal(a->policy_tested.admin, b->policy_tested.admin);
                assert_int_equal(a->policy_tested.rule.id, b->policy_tested.rule.id);
                if (a->policy_tested.rule.id) {
                        assert_principal_equal(&a->policy_tested.rule.principal, &b->policy_tested.rule.principal);
                        assert_endpoint_equal(&a->policy_tested.rule.pattern, &b->policy_tested.rule.pattern);
                        assert_int_equal(a->policy_tested.rule.created, b->policy_tested.rule.created);
                }
                assert_int_equal(a->policy_tested.lease_id, b->policy_tested.lease_id);
                assert_int_equal(a->policy_tested.owner_uid, b->policy_tested.owner_uid);
                assert_string_equal(a->policy_tested.reason, b->policy_tested.reason);
                break;
        case PB_MSG_REEXEC | PB_MSG_REPLY:
                assert_int_equal(a->reexec.pid, b->reexec.pid);
                assert_string_equal(a->reexec.version, b->reexec.version);
                break;
        case PB_MSG_INFO | PB_MSG_REPLY:
                assert_int_equal(a->info.pid, b->info.pid);
                assert_string_equal(a->info.version, b->info.version);
                assert_int_equal(a->info.guard, b->info.guard);
                assert_string_equal(a->info.guard_state, b->info.guard_state);
                break;
        case PB_MSG_LOG:
                assert_int_equal(a->log.before_id, b->log.before_id);
                assert_int_equal(a->log.since, b->log.since);
                assert_int_equal(a->log.until, b->log.until);
                assert_int_equal(a->log.limit, b->log.limit);
                assert_int_equal(a->log.has_uid, b->log.has_uid);
                if (a->log.has_uid)
                        assert_int_equal(a->log.uid, b->log.uid);
                assert_int_equal(a->log.has_endpoint, b->log.has_endpoint);
                if (a->log.has_endpoint)
                        assert_endpoint_equal(&a->log.endpoint, &b->log.endpoint);
                assert_string_equal(a->log.event, b->log.event);
                break;
        case PB_MSG_LOG | PB_MSG_REPLY:
                assert_int_equal(a->events.count, b->events.count);
                assert_int_equal(a->events.more, b->events.more);
                assert_int_equal(a->events.next_id, b->events.next_id);
                for (unsigned i = 0; i < a->events.count; i++) {
                        const struct pb_event_entry *x = &a->events.events[i], *y = &b->events.events[i];
                        assert_int_equal(x->id, y->id);
                        assert_int_equal(x->time, y->time);
                        assert_int_equal(x->uid, y->uid);
                        assert_int_equal(x->pid, y->pid);
                        assert_string_equal(x->event, y->event);
                        assert_string_equal(x->endpoint, y->endpoint);
                        assert_string_equal(x->detail, y->detail);
                }
                break;
        case PB_MSG_RELEASE | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE | PB_MSG_REPLY:
        case PB_MSG_REEXEC:
        case PB_MSG_INFO:
        case PB_MSG_CHECK | PB_MSG_REPLY:
                break;
        case PB_MSG_ERROR:
                assert_int_equal(a->error.code, b->error.code);
                assert_string_equal(a->error.message, b->error.message);
                break;
        default:
                fail_msg("unexpected type 0x%x", a->hdr.type);
        }
}

static struct pb_endpoint ep(const char *s) {
        struct pb_endpoint e;
        if (endpoint_parse(s, &e) < 0)
                fail_msg("bad test endpoint %s", s);
        return e;
}

/* The bytes e takes on the wire (a Unix one's path after its 24). */
static size_t endpoint_wire_size(const struct pb_endpoint *e) {
        uint8_t buf[PB_ENDPOINT_WIRE_MAX];

        return endpoint_encode(e, buf);
}

static struct pb_endpoint pat(const char *s) {
        struct pb_endpoint e;
        if (endpoint_parse_pattern(s, &e) < 0)
                fail_msg("bad test pattern %s", s);
        return e;
}

/* A valid unit name of exactly len bytes (len >= 9), distinct per seed. */
static void unit_name(char *out, size_t len, unsigned seed) {
        static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_\\@-";
        size_t body = len - strlen(".service");

        for (size_t i = 0; i < body; i++)
                out[i] = chars[(i * 7 + seed * 13) % (sizeof(chars) - 1)];
        out[0] = (char) ('a' + seed % 26);
        strcpy(out + body, ".service");
        assert_int_equal(strlen(out), len);
}

static void fill_leases(struct pb_msg *m, unsigned count, bool more) {
        static const char *const eps[] = { "80", "udp:127.0.0.1:53", "tcp:[::1]:8443", "tcp:0.0.0.0:65535" };

        memset(m, 0, sizeof(*m));
        m->hdr.type = PB_MSG_STATUS | PB_MSG_REPLY;
        m->hdr.id = 77;
        m->leases.count = (uint8_t) count;
        m->leases.more = more;
        for (unsigned i = 0; i < count; i++)
                m->leases.leases[i] = (struct pb_lease_entry) {
                        .id = 0x0100000000000000ull + i,
                        .endpoint = ep(eps[i % ELEMENTSOF(eps)]),
                        .owner_uid = i == 0 ? UINT32_MAX : 1000 + i,
                        .since = 1700000000ull + i,
                        .handouts = i == 1 ? UINT64_MAX : i * 3,
                        .holders = i,
                        .queued = i == 0 ? -1 : (i == 1 ? INT32_MIN : (int32_t) i),
                        .backlog = i % 2 ? 0 : 4096,
                        .bound = i % 3 != 0,
                };
}

static void fill_rules(struct pb_msg *m, unsigned count, bool more, size_t unit_len) {
        memset(m, 0, sizeof(*m));
        m->hdr.type = PB_MSG_POLICY_LIST | PB_MSG_REPLY;
        m->hdr.id = 78;
        m->rules.count = (uint8_t) count;
        m->rules.more = more;
        for (unsigned i = 0; i < count; i++) {
                struct pb_rule_entry *r = &m->rules.rules[i];

                r->id = 1000 + i;
                r->principal.kind = PB_PRINCIPAL_UNIT;
                unit_name(r->principal.unit, unit_len, i);
                r->pattern = pat(i % 2 ? "udp:127.0.0.1:5000-5999" : "tcp:[::1]:1-65535");
                r->created = 1700000000ull + i;
        }
}

/* A POLICY_TEST of endpoint by uid with n_groups groups (4000, 4001, ...) in unit. */
static void policy_test_sample(struct pb_msg *m, const char *endpoint, uint32_t uid, unsigned n_groups,
                               const char *unit) {
        memset(m, 0, sizeof(*m));
        m->hdr.type = PB_MSG_POLICY_TEST;
        m->hdr.id = 20 + n_groups;
        m->policy_test.endpoint = ep(endpoint);
        m->policy_test.uid = uid;
        m->policy_test.n_groups = (uint8_t) n_groups;
        for (unsigned i = 0; i < n_groups; i++)
                m->policy_test.groups[i] = 4000 + i;
        strcpy(m->policy_test.unit, unit);
}

/* Its reply: by rule 7 of pattern (NULL: no rule), the lease lease_id of uid 33 in the way. */
static void policy_tested_sample(struct pb_msg *m, bool allowed, bool admin, const char *pattern, uint64_t lease_id,
                                 const char *reason) {
        memset(m, 0, sizeof(*m));
        m->hdr.type = PB_MSG_POLICY_TEST | PB_MSG_REPLY;
        m->hdr.id = 30;
        m->policy_tested.allowed = allowed;
        m->policy_tested.admin = admin;
        if (pattern)
                m->policy_tested.rule = (struct pb_rule_entry) {
                        .id = 7, .principal = { .kind = PB_PRINCIPAL_GROUP, .id = 33 }, .pattern = pat(pattern),
                        .perm = { .gid = PB_SOCKET_GROUP_NONE, .mode = 0600 }, .created = 1700000000 };
        m->policy_tested.lease_id = lease_id;
        m->policy_tested.owner_uid = lease_id ? 33 : 0;
        strcpy(m->policy_tested.reason, reason);
}

/* A LOG reply of count entries, the longest texts when full (a page that then fills 4 KiB). */
static void fill_events(struct pb_msg *m, unsigned count, bool more, bool full) {
        static const char *const kinds[] = { "grant", "deny", "policy-remove", "rebind-failed" };

        memset(m, 0, sizeof(*m));
        m->hdr.type = PB_MSG_LOG | PB_MSG_REPLY;
        m->hdr.id = 79;
        m->events.count = (uint8_t) count;
        m->events.more = more;
        m->events.next_id = more ? 500 : 0;
        for (unsigned i = 0; i < count; i++) {
                struct pb_event_entry *e = &m->events.events[i];

                e->id = 1000 - i;
                e->time = i == 0 ? INT64_MAX : 1700000000000000ull + i;
                e->uid = i == 1 ? PB_UID_NONE : 4242 + i;
                e->pid = i == 2 ? 0 : UINT32_MAX - i;
                strcpy(e->event, kinds[i % ELEMENTSOF(kinds)]);
                if (full) {
                        memset(e->event, 'k', PB_EVENT_KIND_MAX);
                        memset(e->endpoint, 'e', PB_ENDPOINT_STRLEN - 1);
                        memset(e->detail, 'd', PB_TEXT_MAX);
                } else if (i % 3) {
                        strcpy(e->endpoint, i % 2 ? "tcp:[::]:8080" : "udp:8000-8099");
                        strcpy(e->detail, "no rule \xc3\xa9");
                }
        }
}

static struct pb_msg *next_sample(struct pb_msg *out, size_t *n, size_t max, uint16_t type, uint32_t id) {
        struct pb_msg *m;

        assert_true(*n < max);
        m = &out[(*n)++];
        memset(m, 0, sizeof(*m));
        m->hdr.type = type;
        m->hdr.id = id;
        return m;
}

/* Builds one valid sample of every message type (some types twice). */
static size_t samples(struct pb_msg *out, size_t max) {
        size_t n = 0;
        struct pb_msg *m;

#define NEXT(t, i) (m = next_sample(out, &n, max, (t), (i)))

        NEXT(PB_MSG_GET, 1)->get.endpoint = ep("tcp:127.0.0.1:8080");
        NEXT(PB_MSG_GET, UINT32_MAX)->get.endpoint = ep("udp:[2001:db8::1]:5353");
        NEXT(PB_MSG_RELEASE, 0)->get.endpoint = ep("8080");
        NEXT(PB_MSG_GET | PB_MSG_REPLY, 3);
        m->got.endpoint = ep("tcp:[::1]:8443");
        m->got.lease_id = 0x0102030405060708ull;
        m->got.created = 1;
        NEXT(PB_MSG_GET | PB_MSG_REPLY, 4);
        m->got.endpoint = ep("udp:5353");
        m->got.lease_id = UINT64_MAX;
        m->got.created = 0;
        NEXT(PB_MSG_RELEASE | PB_MSG_REPLY, 5);
        NEXT(PB_MSG_STATUS, 6)->status.after_id = 0x1122334455667788ull;
        NEXT(PB_MSG_STATUS, 7);
        m->status.has_endpoint = 1;
        m->status.endpoint = ep("tcp:0.0.0.0:80");
        fill_leases(NEXT(0, 0), 0, false);
        fill_leases(NEXT(0, 0), 1, false);
        fill_leases(NEXT(0, 0), PB_LIST_MAX, true);
        NEXT(PB_MSG_POLICY_ADD, 8);
        m->policy_add.principal = (struct pb_principal) { .kind = PB_PRINCIPAL_USER, .id = 1000 };
        m->policy_add.pattern = pat("tcp:8000-8099");
        NEXT(PB_MSG_POLICY_ADD, 9);
        m->policy_add.principal = (struct pb_principal) { .kind = PB_PRINCIPAL_GROUP, .id = 0 };
        m->policy_add.pattern = pat("udp:127.0.0.1:53");
        NEXT(PB_MSG_POLICY_ADD, 10);
        m->policy_add.principal.kind = PB_PRINCIPAL_UNIT;
        unit_name(m->policy_add.principal.unit, PB_TEXT_MAX, 1);
        m->policy_add.pattern = pat("tcp:[::1]:443");
        NEXT(PB_MSG_POLICY_ADD | PB_MSG_REPLY, 11)->rule_id.rule_id = 42;
        NEXT(PB_MSG_POLICY_REMOVE, 12)->rule_id.rule_id = UINT64_MAX;
        NEXT(PB_MSG_POLICY_REMOVE | PB_MSG_REPLY, 13);
        NEXT(PB_MSG_POLICY_LIST, 14)->policy_list.after_id = 7;
        fill_rules(NEXT(0, 0), 0, false, 9);
        fill_rules(NEXT(0, 0), 3, true, 20);
        fill_rules(NEXT(0, 0), PB_RULES_MAX, true, PB_TEXT_MAX);
        NEXT(PB_MSG_REEXEC, 17);
        NEXT(PB_MSG_REEXEC | PB_MSG_REPLY, 17);
        m->reexec.pid = 4242;
        strcpy(m->reexec.version, "0.1.0");
        NEXT(PB_MSG_INFO, 18);
        NEXT(PB_MSG_INFO | PB_MSG_REPLY, 18);
        m->info.pid = 4243;
        strcpy(m->info.version, "0.1.0");
        m->info.guard = 1;
        strcpy(m->info.guard_state, "on: cgroup /sys/fs/cgroup, pinned in /sys/fs/bpf/portbroker");
        NEXT(PB_MSG_CHECK, 19)->get.endpoint = ep("udp:10.0.0.1:53");
        NEXT(PB_MSG_CHECK | PB_MSG_REPLY, 19);
        NEXT(PB_MSG_LOG, 20);
        NEXT(PB_MSG_LOG, 21);
        m->log = (typeof(m->log)) { .before_id = INT64_MAX, .since = 1, .until = INT64_MAX, .limit = PB_EVENTS_MAX,
                                    .has_uid = 1, .uid = 0, .has_endpoint = 1, .endpoint = pat("tcp:8000-8099"),
                                    .event = "policy-remove" };
        NEXT(PB_MSG_LOG, 22);
        m->log = (typeof(m->log)) { .has_uid = 1, .uid = PB_UID_NONE - 1, .has_endpoint = 1,
                                    .endpoint = pat("unix:/run/app/") };
        fill_events(NEXT(0, 0), 0, false, false);
        fill_events(NEXT(0, 0), 0, true, false);
        fill_events(NEXT(0, 0), 5, true, false);
        fill_events(NEXT(0, 0), PB_EVENTS_MAX, false, false);
        policy_test_sample(NEXT(0, 0), "tcp:127.0.0.1:80", 4242, 3, "");
        policy_test_sample(NEXT(0, 0), "udp6:53", PB_UID_NONE, 0, "");
        policy_test_sample(NEXT(0, 0), "unix:/run/app/web.sock", PB_UID_NONE, PB_TEST_GROUPS_MAX, "web@1.service");
        policy_tested_sample(NEXT(0, 0), true, false, "tcp:8000-8099", 0, "rule 7 allows it");
        policy_tested_sample(NEXT(0, 0), true, true, NULL, 0, "an admin: no rule needed");
        policy_tested_sample(NEXT(0, 0), false, false, "unix:/run/app/", 9, "allowed by rule 7, but ...");
        policy_tested_sample(NEXT(0, 0), false, false, NULL, 0, "permission denied: no rule lets uid 4242 get 80");
        NEXT(PB_MSG_ERROR, 15);
        m->error.code = EBUSY;
        strcpy(m->error.message, "tcp:[::]:80 is held by uid 1000 (alice) \xc3\xa9");
        NEXT(PB_MSG_ERROR, 0);
        m->error.code = INT32_MAX;
        NEXT(PB_MSG_ERROR, 16);
        m->error.code = EUSERS;
        memset(m->error.message, 'x', PB_TEXT_MAX);
#undef NEXT
        return n;
}

/* --- header -------------------------------------------------------------- */

static void test_header_layout(void **state) {
        struct pb_msg m = { .hdr = { .type = PB_MSG_GET, .id = 0x11223344, .version = 99, .reserved = 5 } };
        uint8_t buf[PB_MSG_MAX];
        static const uint8_t want[] = {
                0, 0, 0, 40,                    /* length */
                0, 2,                           /* version */
                0, 1,                           /* type */
                0x11, 0x22, 0x33, 0x44,         /* id */
                0, 0, 0, 0,                     /* reserved */
                6, 0, 0x1f, 0x90, 0x1f, 0x90, 0, 0, /* tcp:[::]:8080 */
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        };
        struct pb_header h;

        /* The encoder fills in length and reserved itself, and the version
         * when the one asked for (99) does not have the type: GET's oldest. */
        m.get.endpoint = ep("8080");
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), (int) sizeof(want));
        assert_memory_equal(buf, want, sizeof(want));

        assert_int_equal(proto_decode_header(buf, sizeof(want), &h), 0);
        assert_int_equal(h.length, 40);
        assert_int_equal(h.version, 2);
        /* A version that has the type is kept: a reply in the request's version. */
        m.hdr.version = 3;
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), (int) sizeof(want));
        assert_int_equal(buf[5], 3);
        assert_int_equal(h.type, PB_MSG_GET);
        assert_int_equal(h.id, 0x11223344);
        assert_int_equal(h.reserved, 0);
}

static void test_encoded_sizes(void **state) {
        static struct pb_msg m[SAMPLES_MAX];
        static const struct {
                uint16_t type;
                size_t len;
        } fixed[] = {
                { PB_MSG_GET, 40 },
                { PB_MSG_RELEASE, 40 },
                { PB_MSG_GET | PB_MSG_REPLY, 49 },
                { PB_MSG_RELEASE | PB_MSG_REPLY, 16 },
                { PB_MSG_STATUS, 49 },
                { PB_MSG_POLICY_ADD | PB_MSG_REPLY, 24 },
                { PB_MSG_POLICY_REMOVE, 24 },
                { PB_MSG_POLICY_REMOVE | PB_MSG_REPLY, 16 },
                { PB_MSG_POLICY_LIST, 24 },
                { PB_MSG_REEXEC, 16 },
                { PB_MSG_INFO, 16 },
                { PB_MSG_CHECK, 40 },
                { PB_MSG_CHECK | PB_MSG_REPLY, 16 },
        };
        uint8_t buf[PB_MSG_MAX];
        size_t n = samples(m, ELEMENTSOF(m));

        for (size_t i = 0; i < n; i++) {
                size_t len = encode_ok(&m[i], buf), want = 0;

                for (size_t j = 0; j < ELEMENTSOF(fixed); j++)
                        if (fixed[j].type == m[i].hdr.type)
                                want = fixed[j].len;
                switch (m[i].hdr.type) {
                case PB_MSG_STATUS | PB_MSG_REPLY:
                        want = 16 + 2 + (size_t) m[i].leases.count * LEASE_ENTRY_SIZE;
                        break;
                case PB_MSG_POLICY_ADD:
                        want = 16 + 6 + strlen(m[i].policy_add.principal.unit) + PB_ENDPOINT_WIRE_SIZE;
                        break;
                case PB_MSG_POLICY_LIST | PB_MSG_REPLY:
                        want = 16 + 2;
                        for (unsigned k = 0; k < m[i].rules.count; k++)
                                want += RULE_ENTRY_SIZE(strlen(m[i].rules.rules[k].principal.unit));
                        break;
                case PB_MSG_ERROR:
                        want = 16 + 4 + 1 + strlen(m[i].error.message);
                        break;
                case PB_MSG_REEXEC | PB_MSG_REPLY:
                        want = 16 + 4 + 1 + strlen(m[i].reexec.version);
                        break;
                case PB_MSG_INFO | PB_MSG_REPLY:
                        want = 16 + 4 + 1 + strlen(m[i].info.version) + 1 + 1 + strlen(m[i].info.guard_state);
                        break;
                case PB_MSG_POLICY_TEST:
                        want = 16 + endpoint_wire_size(&m[i].policy_test.endpoint) + 4 + 1 +
                               4 * (size_t) m[i].policy_test.n_groups + 1 + strlen(m[i].policy_test.unit);
                        break;
                case PB_MSG_POLICY_TEST | PB_MSG_REPLY: {
                        const struct pb_rule_entry *r = &m[i].policy_tested.rule;

                        want = 16 + 1 + 1 + 8 + 8 + 4 + 1 + strlen(m[i].policy_tested.reason);
                        if (r->id)      /* the rest of a rule entry, a Unix pattern's socket group and mode,
                                         * version 6's flags, owner and source */
                                want += RULE_ENTRY_SIZE(strlen(r->principal.unit)) - 8 - PB_ENDPOINT_WIRE_SIZE +
                                        endpoint_wire_size(&r->pattern) + (endpoint_is_unix(&r->pattern) ? 6 : 0) +
                                        5 + 1 + strlen(r->source);
                        break;
                case PB_MSG_LOG:
                        want = 16 + LOG_REQUEST_SIZE + strlen(m[i].log.event);
                        if (m[i].log.has_endpoint && endpoint_is_unix(&m[i].log.endpoint))
                                want += 1 + strlen(m[i].log.endpoint.path);
                        break;
                case PB_MSG_LOG | PB_MSG_REPLY:
                        want = 16 + 2 + 8;
                        for (unsigned k = 0; k < m[i].events.count; k++)
                                want += EVENT_ENTRY_SIZE(&m[i].events.events[k]);
                        break;
                }
                }
                assert_int_equal(len, want);
        }
}

/* The largest lists fit one packet. */
static void test_full_lists_fit(void **state) {
        static struct pb_msg m, d;
        uint8_t buf[PB_MSG_MAX];
        size_t len;

        fill_leases(&m, PB_LIST_MAX, true);
        len = encode_ok(&m, buf);
        assert_int_equal(len, 16 + 2 + PB_LIST_MAX * LEASE_ENTRY_SIZE);
        assert_true(len <= PB_MSG_MAX);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_msg_equal(&m, &d);

        fill_rules(&m, PB_RULES_MAX, true, PB_TEXT_MAX);
        len = encode_ok(&m, buf);
        assert_int_equal(len, 16 + 2 + PB_RULES_MAX * RULE_ENTRY_SIZE(PB_TEXT_MAX));
        assert_true(len <= PB_MSG_MAX);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_msg_equal(&m, &d);
        for (unsigned i = 0; i < PB_RULES_MAX; i++)
                assert_int_equal(strlen(d.rules.rules[i].principal.unit), PB_TEXT_MAX);

        /* A full page of short events fits; one of the longest does not (brokerd ends a page early). */
        fill_events(&m, PB_EVENTS_MAX, true, false);
        len = encode_ok(&m, buf);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_msg_equal(&m, &d);
        fill_events(&m, PB_EVENTS_MAX, true, true);
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);
        m.events.count = (PB_MSG_MAX - 16 - 2 - 8) / EVENT_ENTRY_SIZE(&m.events.events[0]);
        len = encode_ok(&m, buf);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_msg_equal(&m, &d);
        assert_int_equal(strlen(d.events.events[0].detail), PB_TEXT_MAX);
        assert_int_equal(strlen(d.events.events[0].endpoint), PB_ENDPOINT_STRLEN - 1);
}

/* --- round trips --------------------------------------------------------- */

static void test_round_trip_every_type(void **state) {
        static struct pb_msg m[SAMPLES_MAX], d;
        uint8_t buf[PB_MSG_MAX], again[PB_MSG_MAX];
        size_t n = samples(m, ELEMENTSOF(m));
        unsigned seen[PB_MSG_POLICY_COMMIT + 1][2] = { { 0 } };

        for (size_t i = 0; i < n; i++) {
                size_t len = encode_ok(&m[i], buf);

                memset(&d, 0xA5, sizeof(d));
                assert_int_equal(proto_decode(buf, len, &d), 0);
                assert_int_equal(d.hdr.length, len);
                /* Sent with the oldest version that has the type (INFO: 3, CHECK: 4, LOG,
                 * POLICY_TEST and the import's: 6). */
                assert_int_equal(d.hdr.version, (m[i].hdr.type & ~PB_MSG_REPLY) == PB_MSG_INFO    ? 3
                                                : (m[i].hdr.type & ~PB_MSG_REPLY) == PB_MSG_CHECK ? 4
                                                : (m[i].hdr.type & ~PB_MSG_REPLY) >= PB_MSG_LOG &&
                                                  m[i].hdr.type != PB_MSG_ERROR                   ? 6
                                                                                                  : 2);
                assert_int_equal(d.hdr.reserved, 0);
                assert_msg_equal(&m[i], &d);
                /* The encoding is canonical: re-encoding gives the same bytes. */
                assert_int_equal(encode_ok(&d, again), len);
                assert_memory_equal(buf, again, len);

                if (m[i].hdr.type == PB_MSG_ERROR)
                        seen[0][0]++;
                else
                        seen[m[i].hdr.type & ~PB_MSG_REPLY][!!(m[i].hdr.type & PB_MSG_REPLY)]++;
        }
        for (size_t k = 0; k < ELEMENTSOF(request_types); k++) {
                assert_true(seen[request_types[k]][0] > 0);
                assert_true(seen[request_types[k]][1] > 0);
        }
        assert_true(seen[0][0] > 0);
}

/* The encoder needs room for the whole message and never writes past size. */
static void test_encode_small_buffer(void **state) {
        static struct pb_msg m[SAMPLES_MAX];
        uint8_t buf[PB_MSG_MAX + 16];
        size_t n = samples(m, ELEMENTSOF(m));

        for (size_t i = 0; i < n; i++) {
                size_t len = encode_ok(&m[i], buf);

                for (size_t size = 0; size < len; size++) {
                        memset(buf, 0xEE, sizeof(buf));
                        assert_int_equal(proto_encode(&m[i], buf, size), -EMSGSIZE);
                        for (size_t k = size; k < sizeof(buf); k++)
                                assert_int_equal(buf[k], 0xEE);
                }
                assert_int_equal(proto_encode(&m[i], buf, len), (int) len);
                assert_int_equal(proto_encode(&m[i], buf, sizeof(buf)), (int) len);
        }
}

static void test_encode_refuses(void **state) {
        static struct pb_msg m;
        uint8_t buf[PB_MSG_MAX];

        fill_leases(&m, PB_LIST_MAX, false);
        m.leases.count = PB_LIST_MAX + 1;
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);

        fill_rules(&m, PB_RULES_MAX, false, 10);
        m.rules.count = PB_RULES_MAX + 1;
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);

        fill_events(&m, PB_EVENTS_MAX, false, false);
        m.events.count = PB_EVENTS_MAX + 1;
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);
        fill_events(&m, 1, false, false);       /* texts past their limits, unterminated */
        memset(m.events.events[0].event, 'k', sizeof(m.events.events[0].event));
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);
        fill_events(&m, 1, false, false);
        memset(m.events.events[0].endpoint, 'e', sizeof(m.events.events[0].endpoint));
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);

        memset(&m, 0, sizeof(m));
        m.hdr.type = PB_MSG_ERROR;
        m.error.code = EIO;
        memset(m.error.message, 'x', sizeof(m.error.message));  /* no terminator: 256 bytes */
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);

        static const uint16_t unknown[] = { 0, 14, 0x8000, 0x800e, 0x7fff, 0xfffe, PB_MSG_ERROR & ~PB_MSG_REPLY };
        for (size_t i = 0; i < ELEMENTSOF(unknown); i++) {
                memset(&m, 0, sizeof(m));
                m.hdr.type = unknown[i];
                assert_int_equal(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);
        }
}

/* A STATUS request without an endpoint sends 24 zero bytes whatever the struct holds. */
static void test_status_without_endpoint(void **state) {
        struct pb_msg m = { .hdr = { .type = PB_MSG_STATUS, .id = 1 } }, d;
        uint8_t buf[PB_MSG_MAX];
        size_t len;

        m.status.endpoint = ep("tcp:127.0.0.1:80");
        m.status.after_id = 9;
        len = encode_ok(&m, buf);
        assert_int_equal(len, 49);
        assert_int_equal(buf[16], 0);
        for (size_t i = 17; i < 17 + PB_ENDPOINT_WIRE_SIZE; i++)
                assert_int_equal(buf[i], 0);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_int_equal(d.status.has_endpoint, 0);
        assert_int_equal(d.status.after_id, 9);

        /* Any non-zero byte there is refused. */
        for (size_t i = 17; i < 17 + PB_ENDPOINT_WIRE_SIZE; i++) {
                buf[i] = 1;
                assert_int_equal(decode(buf, len), -EBADMSG);
                buf[i] = 0;
        }
        assert_int_equal(decode(buf, len), 0);
}

/* --- rejections of every sample ------------------------------------------ */

static void test_truncated_every_length(void **state) {
        static struct pb_msg m[SAMPLES_MAX];
        uint8_t buf[PB_MSG_MAX], cut[PB_MSG_MAX];
        size_t n = samples(m, ELEMENTSOF(m));

        for (size_t i = 0; i < n; i++) {
                size_t len = encode_ok(&m[i], buf);

                for (size_t k = 0; k < len; k++) {
                        struct pb_msg d, before;

                        memset(&d, 0x3C, sizeof(d));
                        before = d;
                        /* As received: the length field no longer matches. */
                        assert_int_equal(proto_decode(buf, k, &d), -EBADMSG);
                        /* And with the length field fixed up, so only the body is short. */
                        memcpy(cut, buf, k);
                        if (k >= 4)
                                fix_length(cut, k);
                        assert_int_equal(proto_decode(cut, k, &d), -EBADMSG);
                        assert_memory_equal(&d, &before, sizeof(d));     /* written only on success */
                }
        }
}

static void test_trailing_byte(void **state) {
        static struct pb_msg m[SAMPLES_MAX];
        uint8_t buf[PB_MSG_MAX + 1];
        size_t n = samples(m, ELEMENTSOF(m));

        for (size_t i = 0; i < n; i++) {
                size_t len = encode_ok(&m[i], buf);

                for (unsigned v = 0; v < 256; v += 51) {
                        buf[len] = (uint8_t) v;
                        assert_int_equal(decode(buf, len + 1), -EBADMSG);
                        fix_length(buf, len + 1);
                        assert_int_equal(decode(buf, len + 1), -EBADMSG);
                        fix_length(buf, len);
                }
                assert_int_equal(decode(buf, len), 0);
        }
}

static void test_oversized(void **state) {
        static uint8_t buf[PB_MSG_MAX * 2];
        struct pb_msg m = { .hdr = { .type = PB_MSG_ERROR, .id = 1 }, .error = { .code = EIO } };
        struct pb_header h;
        size_t len = encode_ok(&m, buf);

        assert_int_equal(decode(buf, len), 0);
        static const size_t sizes[] = { PB_MSG_MAX + 1, PB_MSG_MAX + 2, 5000, sizeof(buf) };
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                fix_length(buf, sizes[i]);
                assert_int_equal(decode(buf, sizes[i]), -EBADMSG);
                assert_int_equal(proto_decode_header(buf, sizes[i], &h), -EBADMSG);
        }

        /* PB_MSG_MAX itself is allowed by the header check (the body decides). */
        fix_length(buf, PB_MSG_MAX);
        assert_int_equal(proto_decode_header(buf, PB_MSG_MAX, &h), 0);
        assert_int_equal(decode(buf, PB_MSG_MAX), -EBADMSG);
}

static void test_wrong_length_field(void **state) {
        static struct pb_msg m[SAMPLES_MAX];
        uint8_t buf[PB_MSG_MAX];
        size_t n = samples(m, ELEMENTSOF(m));
        struct pb_header h;

        for (size_t i = 0; i < n; i++) {
                size_t len = encode_ok(&m[i], buf);
                const uint32_t wrong[] = { 0, 1, PB_HEADER_SIZE, (uint32_t) len - 1, (uint32_t) len + 1,
                                           PB_MSG_MAX, PB_MSG_MAX + 1, 0x01000000u | (uint32_t) len, UINT32_MAX };

                for (size_t k = 0; k < ELEMENTSOF(wrong); k++) {
                        if (wrong[k] == len)
                                continue;
                        fix_length(buf, wrong[k]);
                        assert_int_equal(decode(buf, len), -EBADMSG);
                        assert_int_equal(proto_decode_header(buf, len, &h), -EBADMSG);
                }
                fix_length(buf, len);
                assert_int_equal(decode(buf, len), 0);
        }
}

static void test_reserved_nonzero(void **state) {
        static struct pb_msg m[SAMPLES_MAX];
        uint8_t buf[PB_MSG_MAX];
        size_t n = samples(m, ELEMENTSOF(m));
        struct pb_header h;

        for (size_t i = 0; i < n; i++) {
                size_t len = encode_ok(&m[i], buf);

                for (size_t byte = 12; byte < 16; byte++)
                        for (unsigned bit = 0; bit < 8; bit++) {
                                buf[byte] = (uint8_t) (1u << bit);
                                assert_int_equal(decode(buf, len), -EBADMSG);
                                assert_int_equal(proto_decode_header(buf, len, &h), -EBADMSG);
                                buf[byte] = 0;
                        }
                assert_int_equal(decode(buf, len), 0);
        }
}

static void test_wrong_version(void **state) {
        static struct pb_msg m[SAMPLES_MAX];
        uint8_t buf[PB_MSG_MAX];
        size_t n = samples(m, ELEMENTSOF(m));
        static const uint16_t versions[] = { 0, 1, PB_PROTO_VERSION + 1, 0x0100, 0x8002, 0xffff };

        for (size_t i = 0; i < n; i++) {
                size_t len = encode_ok(&m[i], buf);

                for (size_t k = 0; k < ELEMENTSOF(versions); k++) {
                        struct pb_header h;

                        buf[4] = (uint8_t) (versions[k] >> 8);
                        buf[5] = (uint8_t) versions[k];
                        assert_int_equal(decode(buf, len), -EPROTO);
                        /* The header alone still decodes, so the id can be echoed in the error. */
                        assert_int_equal(proto_decode_header(buf, len, &h), 0);
                        assert_int_equal(h.version, versions[k]);
                        assert_int_equal(h.id, m[i].hdr.id);
                }
        }

        /* Version 6 has every type; 5 and 4 all but POLICY_TEST; version 3 neither CHECK; version 2
         * neither INFO. Each is encoded in the version tried (a rule's layout depends on it), or
         * in its type's oldest with the header then saying the version tried. */
        for (size_t i = 0; i < n; i++) {
                uint16_t type = m[i].hdr.type & ~PB_MSG_REPLY, oldest = proto_type_version(m[i].hdr.type);
                bool info = type == PB_MSG_INFO, check = type == PB_MSG_CHECK;
                bool v6 = type == PB_MSG_LOG || type == PB_MSG_POLICY_TEST || type == PB_MSG_POLICY_BEGIN ||
                          type == PB_MSG_POLICY_COMMIT;

                for (uint16_t v = 6; v >= 2; v--) {
                        struct pb_msg x = m[i];
                        size_t len;

                        x.hdr.version = v;
                        len = encode_ok(&x, buf);
                        buf[5] = (uint8_t) v;
                        assert_int_equal(decode(buf, len), v < oldest ? -EPROTO : 0);
                }
                assert_int_equal(oldest, v6 ? 6 : check ? 4 : info ? 3 : 2);
        }

        /* A wrong version with a bad header is a bad header. */
        size_t len = encode_ok(&m[0], buf);
        buf[5] = PB_PROTO_VERSION + 1;
        buf[15] = 1;
        assert_int_equal(decode(buf, len), -EBADMSG);
        /* A wrong version wins over a bad body: the body is not looked at. */
        buf[15] = 0;
        fix_length(buf, len - 1);
        assert_int_equal(decode(buf, len - 1), -EPROTO);
}

/* The IPv6-only wildcard (family 6, address ::) is version 4's: every
 * message carrying one is sent with version 4 whatever the header asked
 * for, and under versions 2 and 3 the same bytes are malformed. */
static void test_v6only_any_needs_version_4(void **state) {
        struct pb_endpoint v6 = { .transport = PB_UDP, .family = PB_FAMILY_INET6, .port_lo = 53, .port_hi = 53 };
        struct pb_msg m[6] = {
                { .hdr = { .type = PB_MSG_GET, .id = 1 }, .get.endpoint = v6 },
                { .hdr = { .type = PB_MSG_GET | PB_MSG_REPLY, .id = 1, .version = 2 }, .got.endpoint = v6 },
                { .hdr = { .type = PB_MSG_STATUS, .id = 1 }, .status = { .has_endpoint = true, .endpoint = v6 } },
                { .hdr = { .type = PB_MSG_STATUS | PB_MSG_REPLY, .id = 1, .version = 3 },
                  .leases = { .count = 2, .leases = { { .id = 1, .endpoint = v6 }, { .id = 2, .endpoint = v6 } } } },
                { .hdr = { .type = PB_MSG_POLICY_ADD, .id = 1 },
                  .policy_add = { .principal = { .kind = PB_PRINCIPAL_USER, .id = 1000 }, .pattern = v6 } },
                { .hdr = { .type = PB_MSG_POLICY_LIST | PB_MSG_REPLY, .id = 1 },
                  .rules = { .count = 1, .rules = { { .id = 1, .principal = { .kind = PB_PRINCIPAL_USER },
                                                      .pattern = v6 } } } },
        };
        uint8_t buf[PB_MSG_MAX];

        m[3].leases.leases[0].endpoint.family = PB_FAMILY_ANY;      /* the second one needs version 4 */
        for (size_t i = 0; i < ELEMENTSOF(m); i++) {
                size_t len = encode_ok(&m[i], buf);
                struct pb_msg d;

                assert_int_equal(proto_msg_version(&m[i]), 4);
                assert_int_equal(buf[4] << 8 | buf[5], 4);
                assert_int_equal(proto_decode(buf, len, &d), 0);
                buf[5] = 3;
                assert_int_equal(decode(buf, len), -EBADMSG);
                buf[5] = 2;
                assert_int_equal(decode(buf, len), -EBADMSG);
        }
        /* Any other endpoint leaves a message at its type's version. */
        m[0].get.endpoint.family = PB_FAMILY_ANY;
        assert_int_equal(proto_msg_version(&m[0]), 2);
        encode_ok(&m[0], buf);
        assert_int_equal(buf[4] << 8 | buf[5], 2);
}

/* Version 6: a rule's reservation and owner, its source in lists, and
 * imports. An older version's messages have none of it, and a list
 * answered in one leaves it out. */
static void test_rule_attrs_and_imports_need_version_6(void **state) {
        struct pb_msg add = { .hdr = { .type = PB_MSG_POLICY_ADD, .id = 1 },
                              .policy_add = { .principal = { .kind = PB_PRINCIPAL_GROUP, .id = 33 },
                                              .pattern = pat("tcp:80"),
                                              .attrs = { .flags = PB_RULE_RESERVE | PB_RULE_OWNER, .owner = 0 } } };
        struct pb_msg list = { .hdr = { .type = PB_MSG_POLICY_LIST | PB_MSG_REPLY, .id = 2, .version = 6 },
                               .rules = { .count = 1, .rules = { { .id = 7, .principal = { .kind = PB_PRINCIPAL_USER,
                                                                                           .id = 1000 },
                                                                   .pattern = pat("udp:53"),
                                                                   .attrs = { .flags = PB_RULE_RESERVE },
                                                                   .source = "dns.conf", .created = 5 } } } };
        struct pb_msg begin = { .hdr = { .type = PB_MSG_POLICY_BEGIN, .id = 3 },
                                .policy_begin.flags = PB_POLICY_REPLACE };
        struct pb_msg done = { .hdr = { .type = PB_MSG_POLICY_COMMIT | PB_MSG_REPLY, .id = 4 },
                               .policy_commit = { .added = 1, .changed = UINT32_MAX, .removed = 3 } };
        static const struct {
                uint8_t principal, flags;
                uint32_t owner;
                const char *pattern;
        } bad[] = {
                { PB_PRINCIPAL_GROUP, PB_RULE_RESERVE, 0, "tcp:80" },                   /* no owner */
                { PB_PRINCIPAL_USER, PB_RULE_RESERVE | PB_RULE_OWNER, 5, "tcp:80" },    /* a user's has none */
                { PB_PRINCIPAL_GROUP, PB_RULE_OWNER, 5, "tcp:80" },                     /* owner, no reservation */
                { PB_PRINCIPAL_GROUP, PB_RULE_RESERVE, 5, "tcp:80" },                   /* owner without its flag */
                { PB_PRINCIPAL_USER, PB_RULE_RESERVE | 0x04, 0, "tcp:80" },             /* unknown flag */
                { PB_PRINCIPAL_USER, PB_RULE_RESERVE, 0, "tcp:80-81" },                 /* a range */
                { PB_PRINCIPAL_USER, PB_RULE_RESERVE, 0, "unix:/run/a/" },              /* a directory */
                { PB_PRINCIPAL_GROUP, PB_RULE_RESERVE | PB_RULE_OWNER, UINT32_MAX, "tcp:80" }, /* not a uid */
        };
        uint8_t buf[PB_MSG_MAX];
        struct pb_msg d;
        size_t len;

        assert_int_equal(proto_msg_version(&add), 6);
        len = encode_ok(&add, buf);
        assert_int_equal(len, 16 + 6 + PB_ENDPOINT_WIRE_SIZE + 5);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_int_equal(d.policy_add.attrs.flags, PB_RULE_RESERVE | PB_RULE_OWNER);
        assert_int_equal(d.policy_add.attrs.owner, 0);
        buf[5] = 5;
        assert_int_equal(decode(buf, len), -EBADMSG);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct pb_msg m = add;

                m.policy_add.principal.kind = bad[i].principal;
                m.policy_add.pattern = pat(bad[i].pattern);
                m.policy_add.attrs = (struct pb_rule_attrs) { .flags = bad[i].flags, .owner = bad[i].owner };
                len = encode_ok(&m, buf);
                if (decode(buf, len) != -EBADMSG)
                        fail_msg("bad attributes %zu decoded", i);
        }
        /* No attributes: the older layout, as before. */
        add.policy_add.attrs = (struct pb_rule_attrs) { 0 };
        add.policy_add.principal.kind = PB_PRINCIPAL_USER;
        assert_int_equal(proto_msg_version(&add), 2);

        len = encode_ok(&list, buf);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_int_equal(d.rules.rules[0].attrs.flags, PB_RULE_RESERVE);
        assert_string_equal(d.rules.rules[0].source, "dns.conf");
        assert_int_equal(d.rules.rules[0].created, 5);
        list.hdr.version = 5;
        assert_int_equal(encode_ok(&list, buf), len - 5 - 1 - strlen("dns.conf"));
        assert_int_equal(proto_decode(buf, len - 14, &d), 0);
        assert_int_equal(d.rules.rules[0].attrs.flags, 0);
        assert_string_equal(d.rules.rules[0].source, "");

        assert_int_equal(proto_msg_version(&begin), 6);
        len = encode_ok(&begin, buf);
        assert_int_equal(len, 17);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_int_equal(d.policy_begin.flags, PB_POLICY_REPLACE);
        buf[16] = 0x02;
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[16] = 0;
        buf[5] = 5;
        assert_int_equal(decode(buf, len), -EPROTO);

        len = encode_ok(&done, buf);
        assert_int_equal(len, 28);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_int_equal(d.policy_commit.added, 1);
        assert_int_equal(d.policy_commit.changed, UINT32_MAX);
        assert_int_equal(d.policy_commit.removed, 3);
}

static void test_unknown_type(void **state) {
        static const uint16_t types[] = {
                0, 14, 15, 0x00ff, 0x7fff, 0x8000, 0x800e, 0x800f, 0x80ff, 0xc001, 0xfffe,
        };
        uint8_t buf[PB_MSG_MAX];
        struct pb_msg m = { .hdr = { .type = PB_MSG_RELEASE | PB_MSG_REPLY, .id = 3 } };
        size_t len = encode_ok(&m, buf);

        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                struct pb_header h;

                buf[6] = (uint8_t) (types[i] >> 8);
                buf[7] = (uint8_t) types[i];
                assert_int_equal(decode(buf, len), -EBADMSG);
                assert_int_equal(proto_decode_header(buf, len, &h), 0);
                assert_int_equal(h.type, types[i]);
        }

        /* Unknown types with a body that would fit a known type are refused too. */
        m = (struct pb_msg) { .hdr = { .type = PB_MSG_POLICY_LIST, .id = 3 } };
        len = encode_ok(&m, buf);
        buf[7] = 14;
        assert_int_equal(decode(buf, len), -EBADMSG);
}

/* --- rejections of particular fields ------------------------------------- */

static void test_bool_fields(void **state) {
        static struct pb_msg m;
        uint8_t buf[PB_MSG_MAX];
        size_t len;

#define CHECK_BOOL(off)                                                                 \
        do {                                                                            \
                assert_int_equal(decode(buf, len), 0);                                  \
                for (unsigned v = 2; v < 256; v++) {                                    \
                        uint8_t keep = buf[off];                                        \
                        buf[off] = (uint8_t) v;                                         \
                        assert_int_equal(decode(buf, len), -EBADMSG);                   \
                        buf[off] = keep;                                                \
                }                                                                       \
                buf[off] ^= 1;  /* the other boolean value is fine (if the rest is) */  \
        } while (0)

        memset(&m, 0, sizeof(m));
        m.hdr.type = PB_MSG_GET | PB_MSG_REPLY;
        m.got.endpoint = ep("80");
        len = encode_ok(&m, buf);
        CHECK_BOOL(16 + 24 + 8);                        /* created */
        assert_int_equal(decode(buf, len), 0);

        memset(&m, 0, sizeof(m));
        m.hdr.type = PB_MSG_STATUS;
        m.status.has_endpoint = 1;
        m.status.endpoint = ep("80");
        len = encode_ok(&m, buf);
        CHECK_BOOL(16);                                 /* has_endpoint */
        /* has_endpoint 0 with an endpoint present is refused (reserved bytes). */
        assert_int_equal(decode(buf, len), -EBADMSG);

        fill_leases(&m, 2, false);
        len = encode_ok(&m, buf);
        CHECK_BOOL(17);                                 /* more */
        assert_int_equal(decode(buf, len), 0);
        CHECK_BOOL(18 + LEASE_ENTRY_SIZE - 1);          /* leases[0].bound */
        CHECK_BOOL(18 + 2 * LEASE_ENTRY_SIZE - 1);      /* leases[1].bound */

        fill_rules(&m, 1, false, 12);
        len = encode_ok(&m, buf);
        CHECK_BOOL(17);                                 /* more */
        assert_int_equal(decode(buf, len), 0);
#undef CHECK_BOOL
}

static void test_counts_above_max(void **state) {
        static struct pb_msg m;
        static uint8_t buf[PB_MSG_MAX];
        size_t len;

        /* 33 well-formed lease entries still fit a packet: only the count check refuses them. */
        fill_leases(&m, PB_LIST_MAX, false);
        len = encode_ok(&m, buf);
        memcpy(buf + len, buf + 18, LEASE_ENTRY_SIZE);
        len += LEASE_ENTRY_SIZE;
        assert_true(len <= PB_MSG_MAX);
        buf[16] = PB_LIST_MAX + 1;
        fix_length(buf, len);
        assert_int_equal(decode(buf, len), -EBADMSG);
        for (unsigned c = PB_LIST_MAX + 2; c < 256; c++) {
                buf[16] = (uint8_t) c;
                assert_int_equal(decode(buf, len), -EBADMSG);
        }

        /* 13 rules with long unit names fit too. */
        fill_rules(&m, PB_RULES_MAX, false, PB_TEXT_MAX);
        len = encode_ok(&m, buf);
        memcpy(buf + len, buf + 18, RULE_ENTRY_SIZE(PB_TEXT_MAX));
        len += RULE_ENTRY_SIZE(PB_TEXT_MAX);
        assert_true(len <= PB_MSG_MAX);
        buf[16] = PB_RULES_MAX + 1;
        fix_length(buf, len);
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[16] = 255;
        assert_int_equal(decode(buf, len), -EBADMSG);

        /* A count that disagrees with the entries present. */
        fill_leases(&m, 2, false);
        len = encode_ok(&m, buf);
        buf[16] = 1;
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[16] = 3;
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[16] = 0;
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[16] = 2;
        assert_int_equal(decode(buf, len), 0);
}

static void test_text_control_bytes(void **state) {
        struct pb_msg m = { .hdr = { .type = PB_MSG_ERROR, .id = 2 }, .error = { .code = EACCES } }, d;
        uint8_t buf[PB_MSG_MAX];
        size_t len;

        strcpy(m.error.message, "permission denied");
        len = encode_ok(&m, buf);
        for (unsigned pos = 21; pos < len; pos++) {
                uint8_t keep = buf[pos];

                for (unsigned c = 0; c < 0x20; c++) {
                        buf[pos] = (uint8_t) c;
                        assert_int_equal(decode(buf, len), -EBADMSG);
                }
                buf[pos] = 0x7f;
                assert_int_equal(decode(buf, len), -EBADMSG);
                /* Bytes 0x80..0xff (UTF-8) and printable ASCII are fine. */
                buf[pos] = 0x80;
                assert_int_equal(decode(buf, len), 0);
                buf[pos] = 0xff;
                assert_int_equal(decode(buf, len), 0);
                buf[pos] = ' ';
                assert_int_equal(decode(buf, len), 0);
                buf[pos] = keep;
        }

        /* Text length byte past the end, or short of it. */
        buf[20]++;
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[20] -= 2;
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[20]++;
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_string_equal(d.error.message, "permission denied");

        /* A unit name with a control byte. */
        memset(&m, 0, sizeof(m));
        m.hdr.type = PB_MSG_POLICY_ADD;
        m.policy_add.principal.kind = PB_PRINCIPAL_UNIT;
        strcpy(m.policy_add.principal.unit, "web.service");
        m.policy_add.pattern = pat("80");
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), 0);
        buf[22 + 3] = '\n';
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[22 + 3] = '\0';
        assert_int_equal(decode(buf, len), -EBADMSG);
}

static void test_error_code(void **state) {
        struct pb_msg m = { .hdr = { .type = PB_MSG_ERROR, .id = 2 }, .error = { .code = 1 } }, d;
        uint8_t buf[PB_MSG_MAX];
        size_t len = encode_ok(&m, buf);
        static const uint32_t bad[] = { 0, 0xffffffffu, 0x80000000u, 0xfffff000u };

        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_int_equal(d.error.code, 1);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                put_be32(buf + 16, bad[i]);
                assert_int_equal(decode(buf, len), -EBADMSG);
        }
        put_be32(buf + 16, 0x7fffffffu);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_int_equal(d.error.code, INT32_MAX);
}

static void test_invalid_principals(void **state) {
        static const struct pb_principal bad[] = {
                { .kind = 0, .id = 1000 },
                { .kind = 4, .id = 1000 },
                { .kind = 0xff },
                { .kind = PB_PRINCIPAL_USER, .id = UINT32_MAX },
                { .kind = PB_PRINCIPAL_GROUP, .id = UINT32_MAX },
                { .kind = PB_PRINCIPAL_USER, .id = 1000, .unit = "web.service" },
                { .kind = PB_PRINCIPAL_GROUP, .id = 0, .unit = "x.service" },
                { .kind = PB_PRINCIPAL_UNIT, .id = 1, .unit = "web.service" },
                { .kind = PB_PRINCIPAL_UNIT, .id = 0, .unit = "" },
                { .kind = PB_PRINCIPAL_UNIT, .id = 0, .unit = "webservice" },
                { .kind = PB_PRINCIPAL_UNIT, .id = 0, .unit = ".service" },
                { .kind = PB_PRINCIPAL_UNIT, .id = 0, .unit = "web service.service" },
                { .kind = PB_PRINCIPAL_UNIT, .id = 0, .unit = "a/b.service" },
                { .kind = PB_PRINCIPAL_UNIT, .id = 0, .unit = "web.service\x7f" },
                { .kind = PB_PRINCIPAL_UNIT, .id = 0, .unit = "w\xc3\xa9.service" },
                { .kind = PB_PRINCIPAL_UNIT, .id = 0, .unit = "web.service;" },
        };
        static const struct pb_principal good[] = {
                { .kind = PB_PRINCIPAL_USER, .id = 0 },
                { .kind = PB_PRINCIPAL_USER, .id = UINT32_MAX - 1 },
                { .kind = PB_PRINCIPAL_GROUP, .id = 100 },
                { .kind = PB_PRINCIPAL_UNIT, .unit = "web.service" },
                { .kind = PB_PRINCIPAL_UNIT, .unit = "getty@tty1.service" },
                { .kind = PB_PRINCIPAL_UNIT, .unit = "user-1000.slice" },
                { .kind = PB_PRINCIPAL_UNIT, .unit = "a:b_c\\x2d.d" },
        };
        static struct pb_msg m, rm;
        uint8_t buf[PB_MSG_MAX];

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                assert_int_equal(proto_principal_validate(&good[i]), 0);
                memset(&m, 0, sizeof(m));
                m.hdr.type = PB_MSG_POLICY_ADD;
                m.policy_add.principal = good[i];
                m.policy_add.pattern = pat("80");
                assert_int_equal(decode(buf, encode_ok(&m, buf)), 0);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                if (proto_principal_validate(&bad[i]) != -EINVAL)
                        fail_msg("principal %zu (kind %u, id %u, unit '%s') was accepted", i, bad[i].kind,
                                 bad[i].id, bad[i].unit);
                /* In a policy-add request... */
                memset(&m, 0, sizeof(m));
                m.hdr.type = PB_MSG_POLICY_ADD;
                m.policy_add.principal = bad[i];
                m.policy_add.pattern = pat("80");
                assert_int_equal(decode(buf, encode_ok(&m, buf)), -EBADMSG);
                /* ...and in a rule list reply. */
                fill_rules(&rm, 2, false, 30);
                rm.rules.rules[1].principal = bad[i];
                assert_int_equal(decode(buf, encode_ok(&rm, buf)), -EBADMSG);
        }
}

static void test_endpoints_in_messages(void **state) {
        static struct pb_msg m;
        uint8_t buf[PB_MSG_MAX];
        size_t len;

        /* A GET carries an endpoint, never a range. */
        memset(&m, 0, sizeof(m));
        m.hdr.type = PB_MSG_GET;
        m.get.endpoint = pat("tcp:8000-8001");
        assert_int_equal(decode(buf, encode_ok(&m, buf)), -EBADMSG);
        m.hdr.type = PB_MSG_RELEASE;
        assert_int_equal(decode(buf, encode_ok(&m, buf)), -EBADMSG);

        /* ...but a policy-add pattern may be one. */
        memset(&m, 0, sizeof(m));
        m.hdr.type = PB_MSG_POLICY_ADD;
        m.policy_add.principal.kind = PB_PRINCIPAL_USER;
        m.policy_add.pattern = pat("tcp:8000-8001");
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), 0);
        /* Its endpoint's reserved bytes are checked. */
        buf[len - PB_ENDPOINT_WIRE_SIZE + 6] = 1;
        assert_int_equal(decode(buf, len), -EBADMSG);

        memset(&m, 0, sizeof(m));
        m.hdr.type = PB_MSG_GET;
        m.get.endpoint = ep("80");
        len = encode_ok(&m, buf);
        buf[16 + 7] = 0x80;
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[16 + 7] = 0;
        buf[16] = 0;                            /* transport */
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[16] = PB_TCP;
        buf[18] = buf[19] = 0;                  /* port 0 */
        assert_int_equal(decode(buf, len), -EBADMSG);

        /* A STATUS that has an endpoint must have a valid one. */
        memset(&m, 0, sizeof(m));
        m.hdr.type = PB_MSG_STATUS;
        m.status.has_endpoint = 1;
        m.status.endpoint = pat("tcp:8000-8001");
        assert_int_equal(decode(buf, encode_ok(&m, buf)), -EBADMSG);

        /* A lease entry's endpoint too. */
        fill_leases(&m, 3, false);
        m.leases.leases[2].endpoint.family = 5;
        assert_int_equal(decode(buf, encode_ok(&m, buf)), -EBADMSG);
}

/* POLICY_TEST: the peer it describes and the verdict, field by field. */
static void test_policy_test_fields(void **state) {
        static struct pb_msg m, d;
        static uint8_t buf[PB_MSG_MAX];
        size_t len;

        /* 16 endpoint, 40 uid, 44 n_groups, 45 groups, then the unit. */
        policy_test_sample(&m, "80", 4242, 2, "web.service");
        len = encode_ok(&m, buf);
        assert_int_equal(len, 16 + 24 + 4 + 1 + 2 * 4 + 1 + strlen("web.service"));
        assert_int_equal(buf[44], 2);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_msg_equal(&m, &d);

        /* At most PB_TEST_GROUPS_MAX groups, sent or received. */
        policy_test_sample(&m, "80", PB_UID_NONE, PB_TEST_GROUPS_MAX, "");
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), 0);
        m.policy_test.n_groups = PB_TEST_GROUPS_MAX + 1;
        assert_int_equal(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);
        len = encode_ok(&(struct pb_msg) { .hdr = m.hdr, .policy_test = { .endpoint = m.policy_test.endpoint,
                                                                           .n_groups = 0 } }, buf);
        memset(buf + len - 1, 0, 4 * (PB_TEST_GROUPS_MAX + 1) + 1);   /* 65 gids 0, an empty unit */
        buf[44] = PB_TEST_GROUPS_MAX + 1;
        len += 4 * (PB_TEST_GROUPS_MAX + 1);
        fix_length(buf, len);
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[44] = 255;
        assert_int_equal(decode(buf, len), -EBADMSG);

        /* No gid 0xffffffff (the kernel's "none"); any uid, 0xffffffff meaning none. */
        policy_test_sample(&m, "80", 0, 3, "");
        m.policy_test.groups[1] = UINT32_MAX;
        assert_int_equal(decode(buf, encode_ok(&m, buf)), -EBADMSG);
        m.policy_test.groups[1] = UINT32_MAX - 1;
        assert_int_equal(decode(buf, encode_ok(&m, buf)), 0);

        /* The unit: empty, or a name a unit rule could have. */
        static const char *const bad_units[] = { "webservice", ".service", "web service.service", "a/b.service" };
        for (size_t i = 0; i < ELEMENTSOF(bad_units); i++) {
                policy_test_sample(&m, "80", 4242, 1, bad_units[i]);
                assert_int_equal(decode(buf, encode_ok(&m, buf)), -EBADMSG);
        }
        policy_test_sample(&m, "80", 4242, 1, "getty@tty1.service");
        assert_int_equal(decode(buf, encode_ok(&m, buf)), 0);

        /* An endpoint, no range. */
        policy_test_sample(&m, "80", 4242, 0, "");
        m.policy_test.endpoint = pat("tcp:80-81");
        assert_int_equal(decode(buf, encode_ok(&m, buf)), -EBADMSG);

        /* The reply: 16 allowed, 17 admin, 18 rule id, then the rule, lease id, owner, reason. */
        policy_tested_sample(&m, false, false, NULL, 0, "no");
        len = encode_ok(&m, buf);
        assert_int_equal(len, 16 + 1 + 1 + 8 + 8 + 4 + 1 + 2);
        assert_int_equal(decode(buf, len), 0);
        buf[16] = 2;
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[16] = 1;                    /* allowed, by no rule and not as an admin */
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[17] = 1;                    /* allowed as an admin */
        assert_int_equal(decode(buf, len), 0);
        buf[17] = 2;
        assert_int_equal(decode(buf, len), -EBADMSG);
        buf[17] = 0;
        buf[16] = 0;
        put_be32(buf + 16 + 2 + 8 + 8, 33);     /* an owner of no lease */
        assert_int_equal(decode(buf, len), -EBADMSG);

        /* An admin is named only where no rule is. */
        policy_tested_sample(&m, true, false, "tcp:80", 0, "");
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), 0);
        buf[17] = 1;
        assert_int_equal(decode(buf, len), -EBADMSG);

        /* The rule is decoded as a list's entry is: a bad principal is refused. */
        policy_tested_sample(&m, false, false, "tcp:80", 12, "allowed by rule 7, but tcp:[::]:80 is held by uid 33");
        m.policy_tested.rule.principal.kind = 4;
        assert_int_equal(decode(buf, encode_ok(&m, buf)), -EBADMSG);

        /* The encoder writes no owner without a lease. */
        policy_tested_sample(&m, false, false, NULL, 0, "");
        m.policy_tested.owner_uid = 33;
        len = encode_ok(&m, buf);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_int_equal(d.policy_tested.owner_uid, 0);
}

/* Sets byte off of a copy of msg (len bytes) to v: whether the copy decodes. */
static int decode_with(const uint8_t *msg, size_t len, size_t off, uint8_t v) {
        uint8_t copy[PB_MSG_MAX];

        memcpy(copy, msg, len);
        copy[off] = v;
        return decode(copy, len);
}

/* LOG's fields: bools, the uid and endpoint reserved when absent, the
 * limit, times and ids within SQLite's integers, the event kind's text. */
static void test_log_request_fields(void **state) {
        static struct pb_msg m, d;
        uint8_t buf[PB_MSG_MAX];
        size_t len;

        memset(&m, 0, sizeof(m));
        m.hdr.type = PB_MSG_LOG;
        len = encode_ok(&m, buf);
        assert_int_equal(len, 16 + LOG_REQUEST_SIZE);
        assert_int_equal(buf[5], PB_PROTO_VERSION_POLICY);
        for (size_t off = 16; off < len; off++)
                assert_int_equal(buf[off], 0);
        assert_int_equal(decode(buf, len), 0);
        for (unsigned v = 2; v < 256; v += 7) {
                assert_int_equal(decode_with(buf, len, 41, (uint8_t) v), -EBADMSG);    /* has_uid */
                assert_int_equal(decode_with(buf, len, 46, (uint8_t) v), -EBADMSG);    /* has_endpoint */
        }
        for (size_t off = 42; off < 46; off++)                  /* uid, reserved without has_uid */
                assert_int_equal(decode_with(buf, len, off, 1), -EBADMSG);
        for (size_t off = 47; off < 47 + PB_ENDPOINT_WIRE_SIZE; off++)  /* endpoint, reserved without has_endpoint */
                assert_int_equal(decode_with(buf, len, off, 1), -EBADMSG);
        assert_int_equal(decode_with(buf, len, 40, PB_EVENTS_MAX), 0);  /* limit */
        assert_int_equal(decode_with(buf, len, 40, PB_EVENTS_MAX + 1), -EBADMSG);
        assert_int_equal(decode_with(buf, len, 40, 255), -EBADMSG);
        for (size_t off = 16; off < 40; off += 8) {             /* before_id, since, until: <= INT64_MAX */
                assert_int_equal(decode_with(buf, len, off, 0x7f), 0);
                assert_int_equal(decode_with(buf, len, off, 0x80), -EBADMSG);
        }

        /* A uid, but not the one that means none. */
        m.log.has_uid = 1;
        m.log.uid = PB_UID_NONE;
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), -EBADMSG);
        m.log.uid = 0;
        len = encode_ok(&m, buf);
        assert_int_equal(proto_decode(buf, len, &d), 0);
        assert_true(d.log.has_uid && d.log.uid == 0);

        /* An endpoint or a pattern, valid. */
        m.log.has_endpoint = 1;
        m.log.endpoint = pat("udp:127.0.0.1:5000-5999");
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), 0);
        assert_int_equal(decode_with(buf, len, 47 + 6, 1), -EBADMSG);  /* its reserved bytes */
        assert_int_equal(decode_with(buf, len, 47, 99), -EBADMSG);     /* its transport */

        /* The event: text of at most PB_EVENT_KIND_MAX bytes, no control character. */
        strcpy(m.log.event, "rebind-failed");
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), 0);
        assert_int_equal(decode_with(buf, len, len - 1, '\n'), -EBADMSG);
        assert_int_equal(decode_with(buf, len, len - 1, '\0'), -EBADMSG);
        memset(m.log.event, 'x', PB_EVENT_KIND_MAX);
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), 0);
        buf[len] = 'x';                 /* one byte longer */
        fix_length(buf, len + 1);
        buf[len - PB_EVENT_KIND_MAX - 1]++;
        assert_int_equal(decode(buf, len + 1), -EBADMSG);
}

/* LOG reply: the cursor agrees with more, entries have an id and a kind,
 * times fit, texts within their limits, the count within PB_EVENTS_MAX. */
static void test_log_reply_fields(void **state) {
        static struct pb_msg m;
        static uint8_t buf[PB_MSG_MAX];
        size_t len, entry;

        fill_events(&m, 0, false, false);
        len = encode_ok(&m, buf);
        assert_int_equal(len, 16 + 2 + 8);
        assert_int_equal(decode(buf, len), 0);
        assert_int_equal(decode_with(buf, len, 17, 1), -EBADMSG);      /* more, but no cursor */
        assert_int_equal(decode_with(buf, len, 25, 1), -EBADMSG);      /* a cursor, but no more */
        assert_int_equal(decode_with(buf, len, 17, 2), -EBADMSG);
        fill_events(&m, 0, true, false);
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), 0);
        assert_int_equal(decode_with(buf, len, 18, 0x80), -EBADMSG);   /* cursor > INT64_MAX */

        fill_events(&m, 1, false, false);
        len = encode_ok(&m, buf);
        entry = 26;
        assert_int_equal(decode(buf, len), 0);
        for (size_t off = entry; off < entry + 8; off++)        /* id 0 */
                buf[off] = 0;
        assert_int_equal(decode(buf, len), -EBADMSG);
        len = encode_ok(&m, buf);
        assert_int_equal(decode_with(buf, len, entry + 8, 0x80), -EBADMSG);    /* time > INT64_MAX */
        assert_int_equal(decode_with(buf, len, entry + 24 + 1, '\t'), -EBADMSG);    /* the kind's text */

        /* An empty kind is refused; empty endpoint and detail are "none". */
        strcpy(m.events.events[0].event, "");
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), -EBADMSG);

        /* Endpoint text longer than any endpoint's: refused even if it fits. */
        fill_events(&m, 1, false, true);
        len = encode_ok(&m, buf);
        assert_int_equal(decode(buf, len), 0);
        entry = 26 + 24 + 1 + PB_EVENT_KIND_MAX;        /* the endpoint's length byte */
        assert_int_equal(buf[entry], PB_ENDPOINT_STRLEN - 1);
        memmove(buf + entry + 2, buf + entry + 1, len - entry - 1);
        buf[entry]++;
        buf[entry + 1] = 'e';
        fix_length(buf, len + 1);
        assert_int_equal(decode(buf, len + 1), -EBADMSG);

        /* PB_EVENTS_MAX + 1 short entries fit a packet: only the count refuses them. */
        fill_events(&m, PB_EVENTS_MAX, false, false);
        len = encode_ok(&m, buf);
        entry = EVENT_ENTRY_SIZE(&m.events.events[0]);
        memcpy(buf + len, buf + 26, entry);
        buf[16] = PB_EVENTS_MAX + 1;
        fix_length(buf, len + entry);
        assert_int_equal(decode(buf, len + entry), -EBADMSG);
}

static void test_event_kinds_and_text_copy(void **state) {
        char out[8];

        for (size_t i = 0; proto_event_kinds[i]; i++) {
                assert_true(strlen(proto_event_kinds[i]) <= PB_EVENT_KIND_MAX);
                assert_true(proto_event_kind_known(proto_event_kinds[i]));
        }
        assert_true(proto_event_kind_known("grant") && proto_event_kind_known("policy-remove"));
        assert_false(proto_event_kind_known("") || proto_event_kind_known("Grant") ||
                     proto_event_kind_known("gran"));

        assert_string_equal(proto_text_copy(out, sizeof(out), "a\nb\x7f\x01" "c"), "a?b??c");
        assert_string_equal(proto_text_copy(out, sizeof(out), "long text"), "long te");
        assert_string_equal(proto_text_copy(out, sizeof(out), "\xc3\xa9"), "\xc3\xa9");
}

static void test_decode_writes_only_on_success(void **state) {
        static struct pb_msg m, d, before;
        uint8_t buf[PB_MSG_MAX];
        size_t len;

        fill_rules(&m, 2, false, 20);
        len = encode_ok(&m, buf);
        buf[len - 1] ^= 0x40;           /* still decodes to something: the created time */
        assert_int_equal(proto_decode(buf, len, &d), 0);
        buf[18 + 8] = 9;                /* first rule's principal kind */
        memset(&d, 0x61, sizeof(d));
        before = d;
        assert_int_equal(proto_decode(buf, len, &d), -EBADMSG);
        assert_memory_equal(&d, &before, sizeof(d));
}

/* --- small helpers --------------------------------------------------------- */

static void test_carries_fd(void **state) {
        for (unsigned t = 0; t <= 0xffff; t++)
                assert_int_equal(proto_type_carries_fd((uint16_t) t), t == (PB_MSG_GET | PB_MSG_REPLY));
}

static void test_set_error(void **state) {
        static struct pb_msg m, d;
        uint8_t buf[PB_MSG_MAX];
        char long_text[1000];

        memset(&m, 0x55, sizeof(m));
        proto_set_error(&m, 9, -EBUSY, "held by %s\nsecond line\t%c", "uid 1000", 0x7f);
        assert_int_equal(m.hdr.type, PB_MSG_ERROR);
        assert_int_equal(m.hdr.id, 9);
        assert_int_equal(m.error.code, EBUSY);
        assert_string_equal(m.error.message, "held by uid 1000?second line??");
        assert_int_equal(proto_decode(buf, encode_ok(&m, buf), &d), 0);
        assert_msg_equal(&m, &d);

        proto_set_error(&m, 0, EUSERS, "x");
        assert_int_equal(m.error.code, EUSERS);
        assert_int_equal(m.hdr.id, 0);

        /* Long text is cut to PB_TEXT_MAX and still encodes. */
        memset(long_text, 'y', sizeof(long_text) - 1);
        long_text[sizeof(long_text) - 1] = '\0';
        proto_set_error(&m, 1, EIO, "%s", long_text);
        assert_int_equal(strlen(m.error.message), PB_TEXT_MAX);
        assert_int_equal(encode_ok(&m, buf), 16 + 4 + 1 + PB_TEXT_MAX);
        assert_int_equal(proto_decode(buf, 16 + 4 + 1 + PB_TEXT_MAX, &d), 0);
}

/* --- fdpass ---------------------------------------------------------------- */

static int count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        int n = 0;

        assert_non_null(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

static void make_pair(int sv[2]) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static int open_null(void) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        return fd;
}

static bool same_file(int a, int b) {
        struct stat sa, sb;
        assert_int_equal(fstat(a, &sa), 0);
        assert_int_equal(fstat(b, &sb), 0);
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Sends buf with the given fds in one SCM_RIGHTS message. */
static void send_fds(int sock_fd, const void *buf, size_t len, const int *fds, size_t n_fds) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 16)];
        } control;
        struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = CMSG_SPACE(sizeof(int) * n_fds),
        };
        struct cmsghdr *c;

        assert_true(n_fds >= 1 && n_fds <= 16);
        memset(&control, 0, sizeof(control));
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        assert_int_equal(sendmsg(sock_fd, &mh, MSG_NOSIGNAL), (ssize_t) len);
}

static void test_fdpass_one_fd(void **state) {
        int sv[2], null_fd = open_null(), got_fd = -2;
        char buf[64];

        make_pair(sv);
        assert_int_equal(fdpass_send(sv[0], "hello", 5, null_fd, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), 5);
        assert_memory_equal(buf, "hello", 5);
        assert_true(got_fd >= 0);
        assert_int_not_equal(got_fd, null_fd);
        assert_true(fcntl(got_fd, F_GETFD) & FD_CLOEXEC);
        assert_true(same_file(got_fd, null_fd));
        /* fdpass_send does not consume the fd. */
        assert_true(fcntl(null_fd, F_GETFD) >= 0);
        close(got_fd);

        /* No fd sent, one allowed: -1. */
        assert_int_equal(fdpass_send(sv[0], "x", 1, -1, 0), 0);
        got_fd = -2;
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), 1);
        assert_int_equal(got_fd, -1);

        /* A buffer exactly the message's size is enough. */
        assert_int_equal(fdpass_send(sv[0], "abcd", 4, null_fd, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, 4, &got_fd, 0), 4);
        assert_true(got_fd >= 0);
        close(got_fd);

        close(null_fd);
        close(sv[0]);
        close(sv[1]);
}

static void test_fdpass_unexpected_fd(void **state) {
        int sv[2], null_fd = open_null(), before, got_fd = -2;
        char buf[64];

        make_pair(sv);
        before = count_fds();
        assert_int_equal(fdpass_send(sv[0], "hello", 5, null_fd, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), NULL, 0), -EBADMSG);
        assert_int_equal(count_fds(), before);

        /* The socket still works for the next message. */
        assert_int_equal(fdpass_send(sv[0], "again", 5, -1, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), 5);
        assert_int_equal(got_fd, -1);

        close(null_fd);
        close(sv[0]);
        close(sv[1]);
}

static void test_fdpass_two_fds(void **state) {
        int sv[2], fds[2] = { open_null(), open_null() }, before, got_fd = -2;
        char buf[64];

        make_pair(sv);
        before = count_fds();
        send_fds(sv[0], "two", 3, fds, 2);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), -EBADMSG);
        assert_int_equal(got_fd, -2);           /* not written on failure */
        assert_int_equal(count_fds(), before);

        send_fds(sv[0], "two", 3, fds, 2);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), NULL, 0), -EBADMSG);
        assert_int_equal(count_fds(), before);

        /* Four fds, and twelve: more than fdpass makes room for, so the
         * kernel truncates the control data (MSG_CTRUNC). All are closed. */
        {
                int many[12];

                for (size_t i = 0; i < ELEMENTSOF(many); i++)
                        many[i] = fds[i % 2];
                send_fds(sv[0], "four", 4, many, 4);
                assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), -EBADMSG);
                assert_int_equal(count_fds(), before);
                send_fds(sv[0], "twelve", 6, many, 12);
                assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), -EBADMSG);
                assert_int_equal(got_fd, -2);
                assert_int_equal(count_fds(), before);
        }

        close(fds[0]);
        close(fds[1]);
        close(sv[0]);
        close(sv[1]);
}

static void test_fdpass_too_large(void **state) {
        int sv[2], null_fd = open_null(), before, got_fd = -2;
        static uint8_t big[PB_MSG_MAX + 1];
        static uint8_t buf[PB_MSG_MAX];

        make_pair(sv);
        memset(big, 'z', sizeof(big));
        assert_int_equal(fdpass_send(sv[0], big, sizeof(big), -1, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), -EMSGSIZE);
        assert_int_equal(got_fd, -2);

        /* Too large and carrying an fd: the fd is closed as well. */
        before = count_fds();
        assert_int_equal(fdpass_send(sv[0], big, sizeof(big), null_fd, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), -EMSGSIZE);
        assert_int_equal(count_fds(), before);

        /* A too-large packet is consumed whole: the next one reads normally. */
        assert_int_equal(fdpass_send(sv[0], "ok", 2, -1, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), NULL, 0), 2);

        close(null_fd);
        close(sv[0]);
        close(sv[1]);
}

static void test_fdpass_credentials(void **state) {
        int sv[2], one = 1, got_fd = -2, null_fd = open_null(), before;
        char buf[64];

        make_pair(sv);
        assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
        assert_int_equal(fdpass_send(sv[0], "cred", 4, -1, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), -EBADMSG);
        assert_int_equal(got_fd, -2);

        /* Credentials and an fd: the fd is closed. */
        before = count_fds();
        assert_int_equal(fdpass_send(sv[0], "cred", 4, null_fd, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), -EBADMSG);
        assert_int_equal(count_fds(), before);

        close(null_fd);
        close(sv[0]);
        close(sv[1]);
}

static void test_fdpass_eof_and_errors(void **state) {
        int sv[2], got_fd = -2;
        char buf[64];

        make_pair(sv);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, MSG_DONTWAIT), -EAGAIN);
        close(sv[0]);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, 0), 0);
        assert_int_equal(got_fd, -1);
        /* MSG_NOSIGNAL: a closed peer is -EPIPE, not SIGPIPE. */
        assert_int_equal(fdpass_send(sv[1], "x", 1, -1, 0), -EPIPE);
        close(sv[1]);

        assert_int_equal(fdpass_send(-1, "x", 1, -1, 0), -EBADF);
        assert_int_equal(fdpass_recv(-1, buf, sizeof(buf), NULL, 0), -EBADF);
}

/* A real message through the socketpair, as brokerd answers a GET. */
/* The kernel's race in a non-blocking SEQPACKET read (EOF said while a
 * message sent just before the peer's shutdown is queued) cannot be timed
 * from a test: this wrapper of recvmsg() (linked with --wrap=recvmsg) plays
 * it, making the next read say EOF once. */
static bool eof_once;
ssize_t __real_recvmsg(int fd, struct msghdr *mh, int flags);
ssize_t __wrap_recvmsg(int fd, struct msghdr *mh, int flags);
ssize_t __wrap_recvmsg(int fd, struct msghdr *mh, int flags) {
        if (eof_once) {
                eof_once = false;
                mh->msg_controllen = 0;
                mh->msg_flags = 0;
                return 0;
        }
        return __real_recvmsg(fd, mh, flags);
}

static void test_fdpass_message_behind_an_early_eof(void **state) {
        int sv[2], got_fd = -2;
        char buf[64];

        make_pair(sv);
        assert_int_equal(fdpass_send(sv[0], "req", 3, -1, 0), 0);
        assert_int_equal(shutdown(sv[0], SHUT_WR), 0);
        eof_once = true;
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, MSG_DONTWAIT), 3);
        assert_memory_equal(buf, "req", 3);
        assert_int_equal(got_fd, -1);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &got_fd, MSG_DONTWAIT), 0);

        /* An empty message is still 0 (the protocol closes on it), even with
         * a message queued behind it, which is not eaten. */
        close(sv[0]);
        close(sv[1]);
        make_pair(sv);
        assert_int_equal(fdpass_send(sv[0], "", 0, -1, 0), 0);
        assert_int_equal(fdpass_send(sv[0], "x", 1, -1, 0), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), NULL, MSG_DONTWAIT), 0);
        assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), NULL, MSG_DONTWAIT), 1);
        close(sv[0]);
        close(sv[1]);
}

static void test_fdpass_get_reply(void **state) {
        struct pb_msg m = { .hdr = { .type = PB_MSG_GET | PB_MSG_REPLY, .id = 5 } }, d;
        uint8_t buf[PB_MSG_MAX], rbuf[PB_MSG_MAX];
        int sv[2], null_fd = open_null(), got_fd = -1, n;
        size_t len;

        m.got.endpoint = ep("tcp:[::1]:8443");
        m.got.lease_id = 12;
        m.got.created = 1;
        len = encode_ok(&m, buf);
        make_pair(sv);
        assert_int_equal(fdpass_send(sv[0], buf, len, null_fd, 0), 0);
        n = fdpass_recv(sv[1], rbuf, sizeof(rbuf), &got_fd, 0);
        assert_int_equal(n, (int) len);
        assert_int_equal(proto_decode(rbuf, (size_t) n, &d), 0);
        assert_msg_equal(&m, &d);
        assert_true(proto_type_carries_fd(d.hdr.type));
        assert_true(got_fd >= 0 && same_file(got_fd, null_fd));
        close(got_fd);
        close(null_fd);
        close(sv[0]);
        close(sv[1]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_header_layout),
                cmocka_unit_test(test_encoded_sizes),
                cmocka_unit_test(test_full_lists_fit),
                cmocka_unit_test(test_round_trip_every_type),
                cmocka_unit_test(test_encode_small_buffer),
                cmocka_unit_test(test_encode_refuses),
                cmocka_unit_test(test_status_without_endpoint),
                cmocka_unit_test(test_truncated_every_length),
                cmocka_unit_test(test_trailing_byte),
                cmocka_unit_test(test_oversized),
                cmocka_unit_test(test_wrong_length_field),
                cmocka_unit_test(test_reserved_nonzero),
                cmocka_unit_test(test_wrong_version),
                cmocka_unit_test(test_v6only_any_needs_version_4),
                cmocka_unit_test(test_rule_attrs_and_imports_need_version_6),
                cmocka_unit_test(test_unknown_type),
                cmocka_unit_test(test_bool_fields),
                cmocka_unit_test(test_counts_above_max),
                cmocka_unit_test(test_text_control_bytes),
                cmocka_unit_test(test_error_code),
                cmocka_unit_test(test_invalid_principals),
                cmocka_unit_test(test_log_request_fields),
                cmocka_unit_test(test_log_reply_fields),
                cmocka_unit_test(test_event_kinds_and_text_copy),
                cmocka_unit_test(test_endpoints_in_messages),
                cmocka_unit_test(test_policy_test_fields),
                cmocka_unit_test(test_decode_writes_only_on_success),
                cmocka_unit_test(test_carries_fd),
                cmocka_unit_test(test_set_error),
                cmocka_unit_test(test_fdpass_one_fd),
                cmocka_unit_test(test_fdpass_message_behind_an_early_eof),
                cmocka_unit_test(test_fdpass_unexpected_fd),
                cmocka_unit_test(test_fdpass_two_fds),
                cmocka_unit_test(test_fdpass_too_large),
                cmocka_unit_test(test_fdpass_credentials),
                cmocka_unit_test(test_fdpass_eof_and_errors),
                cmocka_unit_test(test_fdpass_get_reply),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
