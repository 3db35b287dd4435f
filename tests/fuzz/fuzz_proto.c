/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for every parser in proto/: proto_decode() and
 * proto_decode_header() on the raw bytes, endpoint_parse() and
 * endpoint_parse_pattern() on the bytes as a NUL-terminated string, and
 * endpoint_decode() at two offsets (a Unix endpoint's path after its 24
 * bytes). Whatever is accepted must be valid,
 * must re-encode to exactly the same bytes (the wire form is canonical) and
 * must decode again to the same fields; text must format and parse back to
 * the same endpoint. Any mismatch abort()s.
 *
 * Standalone (gcc, no libFuzzer): `make build/fuzz_proto`, linked with
 * tests/fuzz/driver.c; make check runs it and replays tests/fuzz/corpus/proto.
 * Coverage-guided, with clang's libFuzzer: `make fuzz` (tests/fuzz/run.sh).
 * A crash file from libFuzzer replays with `build/fuzz_proto FILE`.
 */
#include "fuzz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"
#include "proto.h"

/* Counters for the driver's summary and corpus only. */
static size_t n_decoded, n_endpoints, n_patterns, n_wire, n_accepted;

/* --- messages -------------------------------------------------------------- */

/* Text in a buffer of size bytes (sizeof the field): terminated, at most
 * PB_TEXT_MAX bytes, no control character. */
#define text_ok(s) text_ok_in(s, sizeof(s))
static bool text_ok_in(const char *s, size_t size) {
        size_t n = strnlen(s, size);

        if (n == size || n > PB_TEXT_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
                        return false;
        return true;
}

static bool principal_equal(const struct pb_principal *a, const struct pb_principal *b) {
        return a->kind == b->kind && a->id == b->id && strcmp(a->unit, b->unit) == 0;
}

static bool attrs_equal(const struct pb_rule_attrs *a, const struct pb_rule_attrs *b) {
        return a->flags == b->flags && a->owner == b->owner;
}

/* Field-wise equality of the members the type selects. */
static bool msg_equal(const struct pb_msg *a, const struct pb_msg *b) {
        if (a->hdr.type != b->hdr.type || a->hdr.id != b->hdr.id)
                return false;

        switch (a->hdr.type) {
        case PB_MSG_GET:
        case PB_MSG_RELEASE:
        case PB_MSG_CHECK:
                return endpoint_equal(&a->get.endpoint, &b->get.endpoint);
        case PB_MSG_GET | PB_MSG_REPLY:
                return endpoint_equal(&a->got.endpoint, &b->got.endpoint) && a->got.lease_id == b->got.lease_id &&
                       a->got.created == b->got.created;
        case PB_MSG_STATUS:
                return a->status.has_endpoint == b->status.has_endpoint &&
                       (!a->status.has_endpoint || endpoint_equal(&a->status.endpoint, &b->status.endpoint)) &&
                       a->status.after_id == b->status.after_id;
        case PB_MSG_STATUS | PB_MSG_REPLY:
                if (a->leases.count != b->leases.count || a->leases.more != b->leases.more)
                        return false;
                for (unsigned i = 0; i < a->leases.count; i++) {
                        const struct pb_lease_entry *x = &a->leases.leases[i], *y = &b->leases.leases[i];
                        if (x->id != y->id || !endpoint_equal(&x->endpoint, &y->endpoint) ||
                            x->owner_uid != y->owner_uid || x->since != y->since || x->handouts != y->handouts ||
                            x->holders != y->holders || x->queued != y->queued || x->backlog != y->backlog ||
                            x->bound != y->bound)
                                return false;
                }
                return true;
        case PB_MSG_POLICY_ADD:
                return principal_equal(&a->policy_add.principal, &b->policy_add.principal) &&
                       endpoint_equal(&a->policy_add.pattern, &b->policy_add.pattern) &&
                       attrs_equal(&a->policy_add.attrs, &b->policy_add.attrs);
        case PB_MSG_POLICY_ADD | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE:
                return a->rule_id.rule_id == b->rule_id.rule_id;
        case PB_MSG_POLICY_LIST:
                return a->policy_list.after_id == b->policy_list.after_id;
        case PB_MSG_POLICY_LIST | PB_MSG_REPLY:
                if (a->rules.count != b->rules.count || a->rules.more != b->rules.more)
                        return false;
                for (unsigned i = 0; i < a->rules.count; i++) {
                        const struct pb_rule_entry *x = &a->rules.rules[i], *y = &b->rules.rules[i];
                        if (x->id != y->id || !principal_equal(&x->principal, &y->principal) ||
                            !endpoint_equal(&x->pattern, &y->pattern) || x->created != y->created ||
                            !attrs_equal(&x->attrs, &y->attrs) || strcmp(x->source, y->source) != 0)
                                return false;
                }
                return true;
        case PB_MSG_LOG:
                return a->log.before_id == b->log.before_id && a->log.since == b->log.since &&
                       a->log.until == b->log.until && a->log.limit == b->log.limit &&
                       a->log.has_uid == b->log.has_uid && a->log.uid == b->log.uid &&
                       a->log.has_endpoint == b->log.has_endpoint &&
                       (!a->log.has_endpoint || endpoint_equal(&a->log.endpoint, &b->log.endpoint)) &&
                       strcmp(a->log.event, b->log.event) == 0;
        case PB_MSG_LOG | PB_MSG_REPLY:
                if (a->events.count != b->events.count || a->events.more != b->events.more ||
                    a->events.next_id != b->events.next_id)
                        return false;
                for (unsigned i = 0; i < a->events.count; i++) {
                        const struct pb_event_entry *x = &a->events.events[i], *y = &b->events.events[i];
                        if (x->id != y->id || x->time != y->time || x->uid != y->uid || x->pid != y->pid ||
                            strcmp(x->event, y->event) || strcmp(x->endpoint, y->endpoint) ||
                            strcmp(x->detail, y->detail))
                                return false;
                }
                return true;
                return true;
        case PB_MSG_POLICY_TEST:
                return endpoint_equal(&a->policy_test.endpoint, &b->policy_test.endpoint) &&
                       a->policy_test.uid == b->policy_test.uid && a->policy_test.n_groups == b->policy_test.n_groups &&
                       a->policy_test.n_groups <= PB_TEST_GROUPS_MAX &&
                       memcmp(a->policy_test.groups, b->policy_test.groups,
                              a->policy_test.n_groups * sizeof(a->policy_test.groups[0])) == 0 &&
                       strcmp(a->policy_test.unit, b->policy_test.unit) == 0;
        case PB_MSG_POLICY_TEST | PB_MSG_REPLY: {
                const struct pb_rule_entry *x = &a->policy_tested.rule, *y = &b->policy_tested.rule;

                return a->policy_tested.allowed == b->policy_tested.allowed &&
                       a->policy_tested.admin == b->policy_tested.admin && x->id == y->id &&
                       (!x->id || (principal_equal(&x->principal, &y->principal) &&
                                   endpoint_equal(&x->pattern, &y->pattern) && x->created == y->created)) &&
                       a->policy_tested.lease_id == b->policy_tested.lease_id &&
                       a->policy_tested.owner_uid == b->policy_tested.owner_uid &&
                       strcmp(a->policy_tested.reason, b->policy_tested.reason) == 0;
        }
        case PB_MSG_REEXEC | PB_MSG_REPLY:
                return a->reexec.pid == b->reexec.pid && strcmp(a->reexec.version, b->reexec.version) == 0;
        case PB_MSG_INFO | PB_MSG_REPLY:
                return a->info.pid == b->info.pid && strcmp(a->info.version, b->info.version) == 0 &&
                       a->info.guard == b->info.guard && strcmp(a->info.guard_state, b->info.guard_state) == 0;
        case PB_MSG_POLICY_BEGIN:
                return a->policy_begin.flags == b->policy_begin.flags;
        case PB_MSG_POLICY_COMMIT | PB_MSG_REPLY:
                return a->policy_commit.added == b->policy_commit.added &&
                       a->policy_commit.changed == b->policy_commit.changed &&
                       a->policy_commit.removed == b->policy_commit.removed;
        case PB_MSG_INFO:
        case PB_MSG_RELEASE | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE | PB_MSG_REPLY:
        case PB_MSG_REEXEC:
        case PB_MSG_CHECK | PB_MSG_REPLY:
        case PB_MSG_POLICY_BEGIN | PB_MSG_REPLY:
        case PB_MSG_POLICY_COMMIT:
                return true;
        case PB_MSG_ERROR:
                return a->error.code == b->error.code && strcmp(a->error.message, b->error.message) == 0;
        default:
                return false;
        }
}

/* What a successful decode promises about the fields. */
static void check_valid(const struct pb_msg *m, size_t size) {
        const char *why;

        CHECK(m->hdr.length == size);
        CHECK(m->hdr.version >= proto_type_version(m->hdr.type) && m->hdr.version <= PB_PROTO_VERSION);
        CHECK(m->hdr.version >= proto_msg_version(m));  /* an IPv6-only wildcard: version 4 and later */
        CHECK(m->hdr.reserved == 0);

        switch (m->hdr.type) {
        case PB_MSG_GET:
        case PB_MSG_RELEASE:
        case PB_MSG_CHECK:
                CHECK(endpoint_validate(&m->get.endpoint, false) == 0);
                break;
        case PB_MSG_GET | PB_MSG_REPLY:
                CHECK(endpoint_validate(&m->got.endpoint, false) == 0);
                CHECK(m->got.created <= 1);
                break;
        case PB_MSG_STATUS:
                CHECK(m->status.has_endpoint <= 1);
                if (m->status.has_endpoint)
                        CHECK(endpoint_validate(&m->status.endpoint, false) == 0);
                break;
        case PB_MSG_STATUS | PB_MSG_REPLY:
                CHECK(m->leases.count <= PB_LIST_MAX);
                CHECK(m->leases.more <= 1);
                for (unsigned i = 0; i < m->leases.count; i++) {
                        CHECK(endpoint_validate(&m->leases.leases[i].endpoint, false) == 0);
                        CHECK(m->leases.leases[i].bound <= 1);
                }
                break;
        case PB_MSG_POLICY_ADD:
                CHECK(proto_principal_validate(&m->policy_add.principal) == 0);
                CHECK(endpoint_validate(&m->policy_add.pattern, true) == 0);
                CHECK(proto_rule_attrs_validate(&m->policy_add.principal, &m->policy_add.pattern,
                                                &m->policy_add.attrs, &why) == 0);
                /* A reservation is one endpoint; only a group or unit rule's names its owner. */
                if (m->policy_add.attrs.flags & PB_RULE_RESERVE)
                        CHECK(endpoint_validate(&m->policy_add.pattern, false) == 0);
                if (m->policy_add.attrs.flags & PB_RULE_OWNER)
                        CHECK(m->policy_add.principal.kind != PB_PRINCIPAL_USER);
                break;
        case PB_MSG_POLICY_LIST | PB_MSG_REPLY:
                CHECK(m->rules.count <= PB_RULES_MAX);
                CHECK(m->rules.more <= 1);
                for (unsigned i = 0; i < m->rules.count; i++) {
                        const struct pb_rule_entry *e = &m->rules.rules[i];

                        CHECK(proto_principal_validate(&e->principal) == 0);
                        CHECK(endpoint_validate(&e->pattern, true) == 0);
                        CHECK(proto_rule_attrs_validate(&e->principal, &e->pattern, &e->attrs, &why) == 0);
                        CHECK(strlen(e->source) <= PB_RULE_SOURCE_MAX && text_ok(e->source));
                        if (m->hdr.version < PB_PROTO_VERSION_POLICY)
                                CHECK(e->attrs.flags == 0 && e->source[0] == '\0');
                }
                break;
        case PB_MSG_POLICY_BEGIN:
                CHECK((m->policy_begin.flags & ~PB_POLICY_REPLACE) == 0);
                break;
        case PB_MSG_POLICY_TEST: {
                struct pb_principal unit = { .kind = PB_PRINCIPAL_UNIT };

                CHECK(endpoint_validate(&m->policy_test.endpoint, false) == 0);
                CHECK(m->policy_test.n_groups <= PB_TEST_GROUPS_MAX);
                for (unsigned i = 0; i < m->policy_test.n_groups; i++)
                        CHECK(m->policy_test.groups[i] != UINT32_MAX);
                memcpy(unit.unit, m->policy_test.unit, sizeof(unit.unit));
                CHECK(!unit.unit[0] || proto_principal_validate(&unit) == 0);
                break;
        }
        case PB_MSG_POLICY_TEST | PB_MSG_REPLY:
                CHECK(m->policy_tested.allowed <= 1 && m->policy_tested.admin <= 1);
                CHECK(!(m->policy_tested.admin && m->policy_tested.rule.id));
                CHECK(!m->policy_tested.allowed || m->policy_tested.admin || m->policy_tested.rule.id);
                CHECK(m->policy_tested.lease_id || !m->policy_tested.owner_uid);
                if (m->policy_tested.rule.id) {
                        CHECK(proto_principal_validate(&m->policy_tested.rule.principal) == 0);
                        CHECK(endpoint_validate(&m->policy_tested.rule.pattern, true) == 0);
                }
                CHECK(text_ok(m->policy_tested.reason));
                break;
        case PB_MSG_ERROR:
                CHECK(m->error.code > 0);
                CHECK(text_ok(m->error.message));
                break;
        case PB_MSG_REEXEC | PB_MSG_REPLY:
                CHECK(text_ok(m->reexec.version));
                break;
        case PB_MSG_INFO | PB_MSG_REPLY:
                CHECK(text_ok(m->info.version) && text_ok(m->info.guard_state) && m->info.guard <= 1);
                break;
        case PB_MSG_LOG:
                CHECK(m->log.before_id <= INT64_MAX && m->log.since <= INT64_MAX && m->log.until <= INT64_MAX);
                CHECK(m->log.limit <= PB_EVENTS_MAX && m->log.has_uid <= 1 && m->log.has_endpoint <= 1);
                CHECK(m->log.has_uid ? m->log.uid != PB_UID_NONE : m->log.uid == 0);
                if (m->log.has_endpoint)
                        CHECK(endpoint_validate(&m->log.endpoint, true) == 0);
                CHECK(text_ok(m->log.event) && strlen(m->log.event) <= PB_EVENT_KIND_MAX);
                break;
        case PB_MSG_LOG | PB_MSG_REPLY:
                CHECK(m->events.count <= PB_EVENTS_MAX && m->events.more <= 1);
                CHECK(m->events.more ? m->events.next_id > 0 && m->events.next_id <= INT64_MAX
                                     : m->events.next_id == 0);
                for (unsigned i = 0; i < m->events.count; i++) {
                        const struct pb_event_entry *e = &m->events.events[i];

                        CHECK(e->id > 0 && e->id <= INT64_MAX && e->time <= INT64_MAX);
                        CHECK(e->event[0] && strlen(e->event) <= PB_EVENT_KIND_MAX && text_ok(e->event));
                        CHECK(strlen(e->endpoint) < PB_ENDPOINT_STRLEN && text_ok(e->endpoint));
                        CHECK(text_ok(e->detail));
                }
                break;
        case PB_MSG_INFO:
        case PB_MSG_REEXEC:
        case PB_MSG_POLICY_ADD | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE:
        case PB_MSG_POLICY_LIST:
        case PB_MSG_RELEASE | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE | PB_MSG_REPLY:
        case PB_MSG_CHECK | PB_MSG_REPLY:
        case PB_MSG_POLICY_BEGIN | PB_MSG_REPLY:
        case PB_MSG_POLICY_COMMIT:
        case PB_MSG_POLICY_COMMIT | PB_MSG_REPLY:
                break;
        default:
                CHECK(!"decoded an unknown type");
        }
}

static void check_message(const uint8_t *data, size_t size) {
        static struct pb_msg m, again, untouched;
        static uint8_t buf[PB_MSG_MAX];
        struct pb_header h;
        int r, rh, n;

        memset(&m, 0x5c, sizeof(m));
        untouched = m;
        r = proto_decode(data, size, &m);
        rh = proto_decode_header(data, size, &h);

        /* The header decoder agrees with the full decoder. */
        CHECK(rh == 0 || rh == -EBADMSG);
        if (rh < 0)
                CHECK(r == -EBADMSG);
        else {
                CHECK(h.length == size && h.reserved == 0);
                CHECK(size >= PB_HEADER_SIZE && size <= PB_MSG_MAX);
                CHECK((r == -EPROTO) ==
                      (h.version < proto_type_version(h.type) || h.version > PB_PROTO_VERSION));
        }
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -EPROTO);
                CHECK(memcmp(&m, &untouched, sizeof(m)) == 0);  /* written only on success */
                return;
        }
        CHECK(r == 0);
        n_decoded++;
        CHECK(m.hdr.type == h.type && m.hdr.id == h.id);
        check_valid(&m, size);

        /* encode(decode(x)) == x, byte for byte... */
        n = proto_encode(&m, buf, sizeof(buf));
        CHECK(n >= 0);
        CHECK((size_t) n == size);
        CHECK(memcmp(buf, data, size) == 0);
        /* ...and decode(encode(m)) == m, field by field. */
        CHECK(proto_decode(buf, (size_t) n, &again) == 0);
        CHECK(msg_equal(&m, &again));
        CHECK(proto_type_carries_fd(m.hdr.type) == (m.hdr.type == (PB_MSG_GET | PB_MSG_REPLY)));
}

/* --- endpoints ------------------------------------------------------------- */

static void check_endpoint_text(const uint8_t *data, size_t size) {
        char *s = malloc(size + 1), text[PB_ENDPOINT_STRLEN], text2[PB_ENDPOINT_STRLEN];
        struct pb_endpoint e, p, again;
        int re, rp;

        CHECK(s);
        memcpy(s, data, size);
        s[size] = '\0';

        re = endpoint_parse(s, &e);
        rp = endpoint_parse_pattern(s, &p);
        CHECK(re == 0 || re == -EINVAL);
        CHECK(rp == 0 || rp == -EINVAL);

        if (re == 0) {
                n_endpoints++;
                CHECK(strlen(s) < PB_ENDPOINT_STRLEN);
                CHECK(endpoint_validate(&e, false) == 0);
                endpoint_format(&e, text);
                CHECK(endpoint_parse(text, &again) == 0);
                CHECK(endpoint_equal(&e, &again));
                CHECK(strcmp(endpoint_format(&again, text2), text) == 0);
                /* Every endpoint is a pattern of itself, matching itself. */
                CHECK(rp == 0 && endpoint_equal(&e, &p));
                CHECK(endpoint_matches(&p, &e));
        }
        if (rp == 0) {
                n_patterns++;
                CHECK(endpoint_validate(&p, true) == 0);
                endpoint_format_pattern(&p, text);
                CHECK(endpoint_parse_pattern(text, &again) == 0);
                CHECK(endpoint_equal(&p, &again));
                CHECK(strcmp(endpoint_format_pattern(&again, text2), text) == 0);
                /* Only a range or a Unix directory makes a pattern that is not an endpoint. */
                if (re < 0)
                        CHECK(strchr(s, '-') || (endpoint_is_unix(&p) && s[strlen(s) - 1] == '/'));
        }
        free(s);
}

static void check_endpoint_wire(const uint8_t *in, size_t len) {
        for (int pattern = 0; pattern <= 1; pattern++) {
                uint8_t out[PB_ENDPOINT_WIRE_MAX];
                char text[PB_ENDPOINT_STRLEN];
                struct pb_endpoint e, again;
                size_t used = 0;
                int r = endpoint_decode(in, len, pattern, &e, &used);

                CHECK(r == 0 || r == -EBADMSG);
                if (r < 0)
                        continue;
                n_wire++;
                CHECK(used >= PB_ENDPOINT_WIRE_SIZE && used <= len && used <= PB_ENDPOINT_WIRE_MAX);
                CHECK(endpoint_validate(&e, pattern) == 0);
                CHECK(endpoint_encode(&e, out) == used);
                CHECK(memcmp(in, out, used) == 0);
                /* Whatever the wire carries can be written as text and read back. */
                if (pattern) {
                        endpoint_format_pattern(&e, text);
                        CHECK(endpoint_parse_pattern(text, &again) == 0);
                } else {
                        endpoint_format(&e, text);
                        CHECK(endpoint_parse(text, &again) == 0);
                }
                CHECK(endpoint_equal(&e, &again));
                /* Every pattern but a Unix directory matches itself. */
                CHECK(endpoint_matches(&e, &e) == !(endpoint_is_unix(&e) && e.path[strlen(e.path) - 1] == '/'));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        size_t before = n_decoded + n_endpoints + n_patterns;

        check_message(data, size);
        check_endpoint_text(data, size);
        if (n_decoded + n_endpoints + n_patterns != before)
                n_accepted++;
        /* The first 24 bytes, and where a GET or RELEASE carries its endpoint. */
        check_endpoint_wire(data, size);
        if (size >= PB_HEADER_SIZE)
                check_endpoint_wire(data + PB_HEADER_SIZE, size - PB_HEADER_SIZE);
        return 0;
}

/* --- driver hooks ---------------------------------------------------------- */

size_t fuzz_accepted(void) {
        return n_accepted;
}

const char *fuzz_summary(void) {
        static char buf[160];

        snprintf(buf, sizeof(buf), "%zu messages decoded, %zu endpoints and %zu patterns parsed, %zu wire endpoints",
                 n_decoded, n_endpoints, n_patterns, n_wire);
        return buf;
}

void fuzz_fixup(uint8_t *data, size_t size) {
        if (size >= 4) {
                data[0] = (uint8_t) (size >> 24);
                data[1] = (uint8_t) (size >> 16);
                data[2] = (uint8_t) (size >> 8);
                data[3] = (uint8_t) size;
        }
        if (size >= PB_HEADER_SIZE) {
                /* A version brokerd speaks: the oldest (what every message
                 * but INFO is sent with) or the newest, by a bit of the id. */
                data[4] = 0;
                data[5] = data[8] & 1 ? PB_PROTO_VERSION : PB_PROTO_VERSION_MIN;
                memset(data + 12, 0, 4);
        }
}

static struct pb_endpoint seed_endpoint(const char *s, bool pattern) {
        struct pb_endpoint e;
        int r = pattern ? endpoint_parse_pattern(s, &e) : endpoint_parse(s, &e);

        CHECK(r == 0);
        return e;
}

/* A valid unit name of len bytes. */
static void seed_unit(char *out, size_t len, unsigned seed) {
        static const char chars[] = "abcdefghijklmnopqrstuvwxyz0123456789:_\\@-";
        size_t body = len - strlen(".service");

        for (size_t i = 0; i < body; i++)
                out[i] = chars[(i + seed) % (sizeof(chars) - 1)];
        out[0] = 'u';
        strcpy(out + body, ".service");
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size, unsigned flags, void *userdata), void *userdata) {
        static const char *const texts[] = {
                "8080", "udp:5353", "tcp:127.0.0.1:8080", "tcp:[::1]:8443", "tcp:[::]:80", "tcp:0.0.0.0:80",
                "udp:[2001:db8::1]:65535", "tcp:8000-8099", "udp:127.0.0.1:53-54", "tcp:[fe80::1]:1-65535",
                "[::ffff:1.2.3.4]:80", "tcp:[::1.2.3.4]:80", "080", "65536", "tcp:", "[::1]8080",
                "unix:/run/app/web.sock", "unix:/run/app/", "unix:/a/../b", "unix:rel",
        };
        static struct pb_msg m;
        static uint8_t buf[PB_MSG_MAX];
        int n;

        for (size_t i = 0; i < ELEMENTSOF(texts); i++)
                add((const uint8_t *) texts[i], strlen(texts[i]), 0, userdata);

        for (unsigned k = 0;; k++) {
                memset(&m, 0, sizeof(m));
                m.hdr.id = k * 0x01010101u;
                switch (k) {
                case 0:
                        m.hdr.type = PB_MSG_GET;
                        m.get.endpoint = seed_endpoint("tcp:127.0.0.1:8080", false);
                        break;
                case 1:
                        m.hdr.type = PB_MSG_RELEASE;
                        m.get.endpoint = seed_endpoint("udp:[::1]:53", false);
                        break;
                case 2:
                        m.hdr.type = PB_MSG_GET | PB_MSG_REPLY;
                        m.got.endpoint = seed_endpoint("8080", false);
                        m.got.lease_id = 7;
                        m.got.created = 1;
                        break;
                case 3:
                        m.hdr.type = PB_MSG_RELEASE | PB_MSG_REPLY;
                        break;
                case 4:
                        m.hdr.type = PB_MSG_STATUS;
                        m.status.after_id = 3;
                        break;
                case 5:
                        m.hdr.type = PB_MSG_STATUS;
                        m.status.has_endpoint = 1;
                        m.status.endpoint = seed_endpoint("tcp:0.0.0.0:80", false);
                        break;
                case 6:
                case 7:
                        m.hdr.type = PB_MSG_STATUS | PB_MSG_REPLY;
                        m.leases.count = k == 6 ? 2 : PB_LIST_MAX;
                        m.leases.more = k == 7;
                        for (unsigned i = 0; i < m.leases.count; i++)
                                m.leases.leases[i] = (struct pb_lease_entry) {
                                        .id = i + 1,
                                        .endpoint = seed_endpoint(i % 2 ? "udp:[2001:db8::1]:53" : "9000", false),
                                        .owner_uid = 1000,
                                        .since = 1700000000,
                                        .handouts = i,
                                        .holders = 1,
                                        .queued = i ? (int32_t) i : -1,
                                        .backlog = 4096,
                                        .bound = 1,
                                };
                        break;
                case 8:
                        m.hdr.type = PB_MSG_POLICY_ADD;
                        m.policy_add.principal.kind = PB_PRINCIPAL_USER;
                        m.policy_add.principal.id = 1000;
                        m.policy_add.pattern = seed_endpoint("tcp:8000-8099", true);
                        break;
                case 9:
                        m.hdr.type = PB_MSG_POLICY_ADD;
                        m.policy_add.principal.kind = PB_PRINCIPAL_UNIT;
                        strcpy(m.policy_add.principal.unit, "web@1.service");
                        m.policy_add.pattern = seed_endpoint("udp:127.0.0.1:53", true);
                        break;
                case 10:
                        m.hdr.type = PB_MSG_POLICY_ADD | PB_MSG_REPLY;
                        m.rule_id.rule_id = 12;
                        break;
                case 11:
                        m.hdr.type = PB_MSG_POLICY_REMOVE;
                        m.rule_id.rule_id = 12;
                        break;
                case 12:
                        m.hdr.type = PB_MSG_POLICY_REMOVE | PB_MSG_REPLY;
                        break;
                case 13:
                        m.hdr.type = PB_MSG_POLICY_LIST;
                        m.policy_list.after_id = 1;
                        break;
                case 14:
                case 15:
                        m.hdr.type = PB_MSG_POLICY_LIST | PB_MSG_REPLY;
                        m.rules.count = k == 14 ? 2 : PB_RULES_MAX;
                        m.rules.more = k == 15;
                        for (unsigned i = 0; i < m.rules.count; i++) {
                                struct pb_rule_entry *r = &m.rules.rules[i];

                                r->id = 100 + i;
                                r->created = 1700000000 + i;
                                r->pattern = seed_endpoint(i % 2 ? "tcp:[::1]:1-1024" : "udp:5000", true);
                                if (i % 3 == 0) {
                                        r->principal.kind = PB_PRINCIPAL_UNIT;
                                        seed_unit(r->principal.unit, k == 15 ? PB_TEXT_MAX : 20, i);
                                } else {
                                        r->principal.kind = i % 3 == 1 ? PB_PRINCIPAL_USER : PB_PRINCIPAL_GROUP;
                                        r->principal.id = 1000 + i;
                                }
                        }
                        break;
                case 16:
                        proto_set_error(&m, 9, EBUSY, "tcp:[::]:80 is held by uid 1000 (alice)");
                        break;
                case 17:
                        proto_set_error(&m, 0, EUSERS, "%s", "");
                        break;
                case 18:
                        m.hdr.type = PB_MSG_REEXEC;
                        break;
                case 19:
                        m.hdr.type = PB_MSG_REEXEC | PB_MSG_REPLY;
                        m.reexec.pid = 4242;
                        strcpy(m.reexec.version, "0.1.0");
                        break;
                case 20:
                        m.hdr.type = PB_MSG_INFO;
                        break;
                case 21:
                        m.hdr.type = PB_MSG_INFO | PB_MSG_REPLY;
                        m.info.pid = 4242;
                        strcpy(m.info.version, "0.1.0");
                        m.info.guard = 1;
                        strcpy(m.info.guard_state, "on: cgroup /sys/fs/cgroup, pinned in /sys/fs/bpf/portbroker");
                        break;
                case 22:
                        m.hdr.type = PB_MSG_CHECK;
                        m.get.endpoint = seed_endpoint("udp6:53", false);
                        break;
                case 23:
                        m.hdr.type = PB_MSG_CHECK | PB_MSG_REPLY;
                        break;
                case 24:
                        m.hdr.type = PB_MSG_GET | PB_MSG_REPLY;
                        m.got.endpoint = seed_endpoint("tcp6:[::]:443", false);
                        m.got.lease_id = 7;
                        break;
                case 25:
                        m.hdr.type = PB_MSG_GET;
                        m.get.endpoint = seed_endpoint("unix:/run/portbroker-sockets/app.sock", false);
                        break;
                case 26:
                        m.hdr.id |= 0x01000000;         /* odd first byte: the newest version (fuzz_fixup) */
                        m.hdr.type = PB_MSG_POLICY_ADD;
                        m.policy_add.principal.kind = PB_PRINCIPAL_USER;
                        m.policy_add.principal.id = 4242;
                        m.policy_add.pattern = seed_endpoint("unix:/run/portbroker-sockets/", true);
                        m.policy_add.perm = (struct pb_socket_perm) { .gid = 33, .mode = 0660 };
                        break;
                case 27:
                        m.hdr.type = PB_MSG_STATUS | PB_MSG_REPLY;
                        m.leases.count = 2;
                        m.leases.leases[0] = (struct pb_lease_entry) {
                                .id = 1, .endpoint = seed_endpoint("unix:/run/portbroker-sockets/a.sock", false),
                                .queued = -1, .bound = 1 };
                        m.leases.leases[1] = (struct pb_lease_entry) { .id = 2, .endpoint = seed_endpoint("80", false) };
                        break;
                case 28:
                        m.hdr.id |= 0x01000000;
                        m.hdr.type = PB_MSG_POLICY_LIST | PB_MSG_REPLY;
                        m.rules.count = 1;
                        m.rules.rules[0] = (struct pb_rule_entry) {
                                .id = 3, .principal = { .kind = PB_PRINCIPAL_GROUP, .id = 33 },
                                .pattern = seed_endpoint("unix:/srv/sock/", true),
                                .perm = { .gid = PB_SOCKET_GROUP_NONE, .mode = 0600 } };
                        break;
                case 29:
                        m.hdr.type = PB_MSG_POLICY_ADD;
                        m.policy_add.principal = (struct pb_principal) { .kind = PB_PRINCIPAL_GROUP, .id = 33 };
                        m.policy_add.pattern = seed_endpoint("tcp:0.0.0.0:80", true);
                        m.policy_add.attrs = (struct pb_rule_attrs) { .flags = PB_RULE_RESERVE | PB_RULE_OWNER,
                                                                      .owner = 33 };
                        break;
                case 30:
                        m.hdr.type = PB_MSG_POLICY_LIST | PB_MSG_REPLY;
                        m.hdr.version = PB_PROTO_VERSION_POLICY;
                        m.rules.count = 2;
                        m.rules.rules[0] = (struct pb_rule_entry) {
                                .id = 4, .principal = { .kind = PB_PRINCIPAL_USER, .id = 53 },
                                .pattern = seed_endpoint("udp:53", true), .attrs = { .flags = PB_RULE_RESERVE },
                                .source = "dns.conf" };
                        m.rules.rules[1] = (struct pb_rule_entry) {
                                .id = 5, .principal = { .kind = PB_PRINCIPAL_USER, .id = 1000 },
                                .pattern = seed_endpoint("tcp:8000-8099", true) };
                        break;
                case 31:
                        m.hdr.type = PB_MSG_POLICY_BEGIN;
                        m.policy_begin.flags = PB_POLICY_REPLACE;
                        break;
                case 32:
                        m.hdr.type = PB_MSG_POLICY_COMMIT;
                        break;
                case 33:
                        m.hdr.type = PB_MSG_POLICY_COMMIT | PB_MSG_REPLY;
                        m.policy_commit.added = 3;
                        m.policy_commit.removed = 1;
                        break;
                case 34:
                        m.hdr.type = PB_MSG_POLICY_BEGIN | PB_MSG_REPLY;
                        break;
                case 35:
                        m.hdr.type = PB_MSG_POLICY_TEST;
                        m.policy_test.endpoint = seed_endpoint("tcp:[::]:80", false);
                        m.policy_test.uid = 4242;
                        m.policy_test.n_groups = 3;
                        m.policy_test.groups[0] = 4242;
                        m.policy_test.groups[1] = 33;
                        m.policy_test.groups[2] = 0;
                        strcpy(m.policy_test.unit, "web.service");
                        break;
                case 36:
                        m.hdr.id |= 0x01000000;         /* the newest version, POLICY_TEST's (fuzz_fixup) */
                        m.hdr.type = PB_MSG_POLICY_TEST;
                        m.policy_test.endpoint = seed_endpoint("unix:/run/portbroker-sockets/app.sock", false);
                        m.policy_test.uid = PB_UID_NONE;
                        m.policy_test.n_groups = PB_TEST_GROUPS_MAX;
                        for (unsigned i = 0; i < PB_TEST_GROUPS_MAX; i++)
                                m.policy_test.groups[i] = 1000 + i;
                        break;
                case 37:
                        m.hdr.type = PB_MSG_POLICY_TEST | PB_MSG_REPLY;
                        m.policy_tested.allowed = 1;
                        m.policy_tested.rule = (struct pb_rule_entry) {
                                .id = 3, .principal = { .kind = PB_PRINCIPAL_GROUP, .id = 33 },
                                .pattern = seed_endpoint("tcp:80-443", true), .created = 1700000000 };
                        strcpy(m.policy_tested.reason, "rule 3 allows it");
                        break;
                case 38:
                        m.hdr.id |= 0x01000000;
                        m.hdr.type = PB_MSG_POLICY_TEST | PB_MSG_REPLY;
                        m.policy_tested.rule = (struct pb_rule_entry) {
                                .id = 4, .principal = { .kind = PB_PRINCIPAL_UNIT, .unit = "web.service" },
                                .pattern = seed_endpoint("unix:/srv/sock/", true),
                                .perm = { .gid = 33, .mode = 0660 } };
                        m.policy_tested.lease_id = 9;
                        m.policy_tested.owner_uid = 33;
                        strcpy(m.policy_tested.reason, "allowed by rule 4, but unix:/srv/sock/a is held by uid 33");
                        break;
                case 39:
                        m.hdr.type = PB_MSG_POLICY_TEST | PB_MSG_REPLY;
                        m.policy_tested.allowed = 1;
                        m.policy_tested.admin = 1;
                        strcpy(m.policy_tested.reason, "an admin: no rule needed");
                        break;
                /* LOG is version 6's: fuzz_fixup() keeps it only with an odd first id byte (the newest). */
                case 40:
                        m.hdr.id |= 0x01000000;
                        m.hdr.type = PB_MSG_LOG;
                        break;
                case 41:
                        m.hdr.id |= 0x01000000;
                        m.hdr.type = PB_MSG_LOG;
                        m.log.before_id = 77;
                        m.log.since = 1700000000000000;
                        m.log.until = 1800000000000000;
                        m.log.limit = 5;
                        m.log.has_uid = 1;
                        m.log.uid = 4242;
                        m.log.has_endpoint = 1;
                        m.log.endpoint = seed_endpoint("tcp:8000-8099", true);
                        strcpy(m.log.event, "deny");
                        break;
                case 42:
                        m.hdr.id |= 0x01000000;
                        m.hdr.type = PB_MSG_LOG;
                        m.log.has_endpoint = 1;
                        m.log.endpoint = seed_endpoint("unix:/run/portbroker-sockets/", true);
                        strcpy(m.log.event, "policy-remove");
                        break;
                case 43:
                case 44:
                        m.hdr.id |= 0x01000000;
                        m.hdr.type = PB_MSG_LOG | PB_MSG_REPLY;
                        m.events.count = k == 43 ? 3 : PB_EVENTS_MAX;
                        m.events.more = k == 44;
                        m.events.next_id = k == 44 ? 9 : 0;
                        for (unsigned i = 0; i < m.events.count; i++) {
                                struct pb_event_entry *e = &m.events.events[i];

                                *e = (struct pb_event_entry) { .id = 100 - i, .time = 1700000000000000 + i,
                                                               .uid = i % 3 ? 4242 : PB_UID_NONE, .pid = i % 2 ? 77 : 0 };
                                strcpy(e->event, proto_event_kinds[i % 4]);
                                if (i % 3)
                                        strcpy(e->endpoint, i % 2 ? "tcp:[::]:8080" : "unix:/run/app/web.sock");
                                if (i % 2)
                                        strcpy(e->detail, "no rule");
                        }
                        break;
                case 45:
                        m.hdr.id |= 0x01000000;
                        m.hdr.type = PB_MSG_LOG | PB_MSG_REPLY;
                        m.events.more = 1;
                        m.events.next_id = INT64_MAX;
                        break;
                default:
                        return;
                }
                n = proto_encode(&m, buf, sizeof(buf));
                CHECK(n > 0);
                add(buf, (size_t) n, FUZZ_SEED_MESSAGE, userdata);
        }
}
