/* SPDX-License-Identifier: MIT */
/*
 * Encoding and decoding of control messages. Every field is written and
 * read explicitly, big-endian, through a bounds-checked cursor (wire.h); a decoder
 * consumes exactly the message's length or rejects it. See PROTOCOL.md.
 */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "wire.h"

/* Text fields of the control protocol: at most PB_TEXT_MAX bytes. */
static void put_text(struct wcur *w, const char *s) {
        put_text_max(w, s, PB_TEXT_MAX);
}

static void put_principal(struct wcur *w, const struct pb_principal *p) {
        put_u8(w, p->kind);
        put_be(w, p->id, 4);
        put_text(w, p->unit);
}

static void get_text(struct rcur *r, char out[static PB_TEXT_MAX + 1]) {
        get_text_max(r, out, PB_TEXT_MAX);
}

static void get_principal(struct rcur *r, struct pb_principal *ret) {
        ret->kind = get_u8(r);
        ret->id = (uint32_t) get_be(r, 4);
        get_text(r, ret->unit);
        if (!r->bad && proto_principal_validate(ret) < 0)
                r->bad = true;
}

/* A Unix pattern's socket group and mode follow it. */
static void put_pattern(struct wcur *w, const struct pb_endpoint *p, const struct pb_socket_perm *perm) {
        put_endpoint(w, p);
        if (endpoint_is_unix(p)) {
                put_be(w, perm->gid, 4);
                put_be(w, perm->mode, 2);
        }
}

static void get_pattern(struct rcur *r, struct pb_endpoint *p, struct pb_socket_perm *perm) {
        get_endpoint(r, true, p);
        if (!r->bad && endpoint_is_unix(p)) {
                perm->gid = (uint32_t) get_be(r, 4);
                perm->mode = (uint16_t) get_be(r, 2);
                if (perm->mode > 0777)
                        r->bad = true;
        }
}

/* Version 6: a rule's flags and owner follow its pattern. */
static void put_rule_attrs(struct wcur *w, const struct pb_rule_attrs *a) {
        put_u8(w, a->flags);
        put_be(w, a->owner, 4);
}

static void get_rule_attrs(struct rcur *r, uint16_t version, const struct pb_principal *p,
                           const struct pb_endpoint *pattern, struct pb_rule_attrs *ret) {
        const char *why;

        *ret = (struct pb_rule_attrs) { 0 };
        if (version < PB_PROTO_VERSION_POLICY)
                return;
        ret->flags = get_u8(r);
        ret->owner = (uint32_t) get_be(r, 4);
        if (!r->bad && proto_rule_attrs_validate(p, pattern, ret, &why) < 0)
                r->bad = true;
}

static void put_lease_list(struct wcur *w, const struct pb_lease_list *list) {
        if (list->count > PB_LIST_MAX) {
                w->overflow = true;
                return;
        }
        put_u8(w, list->count);
        put_u8(w, list->more);
        for (unsigned i = 0; i < list->count; i++) {
                const struct pb_lease_entry *l = &list->leases[i];
                put_be(w, l->id, 8);
                put_endpoint(w, &l->endpoint);
                put_be(w, l->owner_uid, 4);
                put_be(w, l->since, 8);
                put_be(w, l->handouts, 8);
                put_be(w, l->holders, 4);
                put_be(w, (uint32_t) l->queued, 4);
                put_be(w, l->backlog, 4);
                put_u8(w, l->bound);
        }
}

/* A rule entry past its id (which says whether one follows, in POLICY_TEST's
 * reply); version 6 adds the rule's flags, owner and source. */
static void put_rule_rest(struct wcur *w, const struct pb_rule_entry *e, uint16_t version) {
        put_principal(w, &e->principal);
        put_pattern(w, &e->pattern, &e->perm);
        if (version >= PB_PROTO_VERSION_POLICY) {
                put_rule_attrs(w, &e->attrs);
                put_text_max(w, e->source, PB_RULE_SOURCE_MAX);
        }
        put_be(w, e->created, 8);
}

static void put_rule_list(struct wcur *w, const struct pb_rule_list *list, uint16_t version) {
        if (list->count > PB_RULES_MAX) {
                w->overflow = true;
                return;
        }
        put_u8(w, list->count);
        put_u8(w, list->more);
        for (unsigned i = 0; i < list->count; i++) {
                put_be(w, list->rules[i].id, 8);
                put_rule_rest(w, &list->rules[i], version);
        }
}

static void put_policy_test(struct wcur *w, const struct pb_msg *m) {
        if (m->policy_test.n_groups > PB_TEST_GROUPS_MAX) {
                w->overflow = true;
                return;
        }
        put_endpoint(w, &m->policy_test.endpoint);
        put_be(w, m->policy_test.uid, 4);
        put_u8(w, m->policy_test.n_groups);
        for (unsigned i = 0; i < m->policy_test.n_groups; i++)
                put_be(w, m->policy_test.groups[i], 4);
        put_text(w, m->policy_test.unit);
}

static void put_policy_tested(struct wcur *w, const struct pb_msg *m, uint16_t version) {
        put_u8(w, m->policy_tested.allowed);
        put_u8(w, m->policy_tested.admin);
        put_be(w, m->policy_tested.rule.id, 8);
        if (m->policy_tested.rule.id)
                put_rule_rest(w, &m->policy_tested.rule, version);
        put_be(w, m->policy_tested.lease_id, 8);
        put_be(w, m->policy_tested.lease_id ? m->policy_tested.owner_uid : 0, 4);
        put_text(w, m->policy_tested.reason);
}

/* An optional endpoint (STATUS, LOG): when absent, its 24 bytes are zero. */
static void put_optional_endpoint(struct wcur *w, bool has, const struct pb_endpoint *e) {
        static const struct pb_endpoint none;   /* encodes as 24 zero bytes */

        put_u8(w, has);
        put_endpoint(w, has ? e : &none);
}

static void put_log_request(struct wcur *w, const struct pb_msg *m) {
        put_be(w, m->log.before_id, 8);
        put_be(w, m->log.since, 8);
        put_be(w, m->log.until, 8);
        put_u8(w, m->log.limit);
        put_u8(w, m->log.has_uid);
        put_be(w, m->log.has_uid ? m->log.uid : 0, 4);
        put_optional_endpoint(w, m->log.has_endpoint, &m->log.endpoint);
        put_text_max(w, m->log.event, PB_EVENT_KIND_MAX);
}

static void put_event_list(struct wcur *w, const struct pb_event_list *list) {
        if (list->count > PB_EVENTS_MAX) {
                w->overflow = true;
                return;
        }
        put_u8(w, list->count);
        put_u8(w, list->more);
        put_be(w, list->next_id, 8);
        for (unsigned i = 0; i < list->count; i++) {
                const struct pb_event_entry *e = &list->events[i];
                put_be(w, e->id, 8);
                put_be(w, e->time, 8);
                put_be(w, e->uid, 4);
                put_be(w, e->pid, 4);
                put_text_max(w, e->event, PB_EVENT_KIND_MAX);
                put_text_max(w, e->endpoint, PB_ENDPOINT_STRLEN - 1);
                put_text(w, e->detail);
        }
}

static void encode_body(struct wcur *w, const struct pb_msg *m, uint16_t version) {
        switch (m->hdr.type) {
        case PB_MSG_GET:
        case PB_MSG_RELEASE:
        case PB_MSG_CHECK:
                put_endpoint(w, &m->get.endpoint);
                break;
        case PB_MSG_GET | PB_MSG_REPLY:
                put_endpoint(w, &m->got.endpoint);
                put_be(w, m->got.lease_id, 8);
                put_u8(w, m->got.created);
                break;
        case PB_MSG_STATUS:
                put_optional_endpoint(w, m->status.has_endpoint, &m->status.endpoint);
                put_be(w, m->status.after_id, 8);
                break;
        case PB_MSG_STATUS | PB_MSG_REPLY:
                put_lease_list(w, &m->leases);
                break;
        case PB_MSG_POLICY_ADD:
                put_principal(w, &m->policy_add.principal);
                put_pattern(w, &m->policy_add.pattern, &m->policy_add.perm);
                if (version >= PB_PROTO_VERSION_POLICY)
                        put_rule_attrs(w, &m->policy_add.attrs);
                break;
        case PB_MSG_POLICY_ADD | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE:
                put_be(w, m->rule_id.rule_id, 8);
                break;
        case PB_MSG_POLICY_LIST:
                put_be(w, m->policy_list.after_id, 8);
                break;
        case PB_MSG_POLICY_LIST | PB_MSG_REPLY:
                put_rule_list(w, &m->rules, version);
                break;
        case PB_MSG_POLICY_BEGIN:
                put_u8(w, m->policy_begin.flags);
                break;
        case PB_MSG_POLICY_COMMIT | PB_MSG_REPLY:
                put_be(w, m->policy_commit.added, 4);
                put_be(w, m->policy_commit.changed, 4);
                put_be(w, m->policy_commit.removed, 4);
                break;
        case PB_MSG_POLICY_TEST:
                put_policy_test(w, m);
                break;
        case PB_MSG_POLICY_TEST | PB_MSG_REPLY:
                put_policy_tested(w, m, version);
                break;
        case PB_MSG_REEXEC | PB_MSG_REPLY:
                put_be(w, m->reexec.pid, 4);
                put_text(w, m->reexec.version);
                break;
        case PB_MSG_INFO | PB_MSG_REPLY:
                put_be(w, m->info.pid, 4);
                put_text(w, m->info.version);
                put_be(w, m->info.guard, 1);
                put_text(w, m->info.guard_state);
                break;
        case PB_MSG_LOG:
                put_log_request(w, m);
                break;
        case PB_MSG_LOG | PB_MSG_REPLY:
                put_event_list(w, &m->events);
                break;
        case PB_MSG_RELEASE | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE | PB_MSG_REPLY:
        case PB_MSG_REEXEC:
        case PB_MSG_INFO:
        case PB_MSG_CHECK | PB_MSG_REPLY:
        case PB_MSG_POLICY_BEGIN | PB_MSG_REPLY:
        case PB_MSG_POLICY_COMMIT:
                break;
        case PB_MSG_ERROR:
                put_be(w, (uint32_t) m->error.code, 4);
                put_text(w, m->error.message);
                break;
        default:
                w->overflow = true;
        }
}

int proto_encode(const struct pb_msg *msg, uint8_t *buf, size_t size) {
        struct wcur w = { .buf = buf, .size = size < PB_MSG_MAX ? size : PB_MSG_MAX };
        uint16_t oldest = proto_msg_version(msg);
        uint16_t version = msg->hdr.version >= oldest && msg->hdr.version <= PB_PROTO_VERSION ? msg->hdr.version
                                                                                               : oldest;

        if (!wtake(&w, PB_HEADER_SIZE))
                return -EMSGSIZE;
        encode_body(&w, msg, version);
        if (w.overflow)
                return -EMSGSIZE;

        struct wcur h = { .buf = buf, .size = PB_HEADER_SIZE };
        put_be(&h, w.off, 4);
        put_be(&h, version, 2);
        put_be(&h, msg->hdr.type, 2);
        put_be(&h, msg->hdr.id, 4);
        put_be(&h, 0, 4);
        return (int) w.off;
}

uint16_t proto_type_version(uint16_t type) {
        switch (type & ~PB_MSG_REPLY) {
        case PB_MSG_INFO:
                return 3;
        case PB_MSG_CHECK:
                return PB_PROTO_VERSION_V6ONLY;
        case PB_MSG_LOG:
        case PB_MSG_POLICY_TEST:
        case PB_MSG_POLICY_BEGIN:
        case PB_MSG_POLICY_COMMIT:
                return PB_PROTO_VERSION_POLICY;
        default:
                return PB_PROTO_VERSION_MIN;
        }
}

uint16_t proto_endpoint_version(const struct pb_endpoint *e) {
        if (endpoint_is_unix(e))
                return PB_PROTO_VERSION_UNIX;
        return endpoint_is_v6only_any(e) ? PB_PROTO_VERSION_V6ONLY : 0;
}

static uint16_t newer(uint16_t a, uint16_t b) {
        return a > b ? a : b;
}

/* A rule's attributes other than the default need version 6. */
static uint16_t attrs_version(const struct pb_rule_attrs *a) {
        return a->flags || a->owner ? PB_PROTO_VERSION_POLICY : 0;
}

/* The oldest version whose rules allow m's endpoints (proto_endpoint_version()). */
static uint16_t content_version(const struct pb_msg *m) {
        uint16_t v = 0;

        switch (m->hdr.type) {
        case PB_MSG_GET:
        case PB_MSG_RELEASE:
        case PB_MSG_CHECK:
                v = proto_endpoint_version(&m->get.endpoint);
                break;
        case PB_MSG_GET | PB_MSG_REPLY:
                v = proto_endpoint_version(&m->got.endpoint);
                break;
        case PB_MSG_STATUS:
                v = m->status.has_endpoint ? proto_endpoint_version(&m->status.endpoint) : 0;
                break;
        case PB_MSG_STATUS | PB_MSG_REPLY:
                for (unsigned i = 0; i < m->leases.count && i < PB_LIST_MAX; i++)
                        v = newer(v, proto_endpoint_version(&m->leases.leases[i].endpoint));
                break;
        case PB_MSG_POLICY_ADD:
                v = newer(proto_endpoint_version(&m->policy_add.pattern), attrs_version(&m->policy_add.attrs));
                break;
        case PB_MSG_POLICY_LIST | PB_MSG_REPLY:
                /* Attributes an older client cannot read do not stop it from
                 * reading the rule: its entry leaves them out. */
                for (unsigned i = 0; i < m->rules.count && i < PB_RULES_MAX; i++)
                        v = newer(v, proto_endpoint_version(&m->rules.rules[i].pattern));
                break;
        default:
                break;
        }
        return v;
}

uint16_t proto_msg_version(const struct pb_msg *m) {
        uint16_t type = proto_type_version(m->hdr.type), content = content_version(m);

        return content > type ? content : type;
}

int proto_decode_header(const uint8_t *buf, size_t len, struct pb_header *ret_hdr) {
        struct rcur r = { .buf = buf, .len = len };
        struct pb_header h;

        if (len < PB_HEADER_SIZE || len > PB_MSG_MAX)
                return -EBADMSG;
        h.length = (uint32_t) get_be(&r, 4);
        h.version = (uint16_t) get_be(&r, 2);
        h.type = (uint16_t) get_be(&r, 2);
        h.id = (uint32_t) get_be(&r, 4);
        h.reserved = (uint32_t) get_be(&r, 4);
        if (h.length != len || h.reserved != 0)
                return -EBADMSG;
        *ret_hdr = h;
        return 0;
}

/* An optional endpoint (or pattern); returns whether it is there. */
static uint8_t get_optional_endpoint(struct rcur *r, bool pattern, struct pb_endpoint *ret) {
        uint8_t has = get_bool(r);

        if (has)
                get_endpoint(r, pattern, ret);
        else {
                /* No endpoint: its 24 bytes are reserved and must be zero. */
                const uint8_t *p = rtake(r, PB_ENDPOINT_WIRE_SIZE);
                for (size_t i = 0; p && i < PB_ENDPOINT_WIRE_SIZE; i++)
                        if (p[i])
                                r->bad = true;
        }
        return has;
}

static void get_status_request(struct rcur *r, struct pb_msg *m) {
        m->status.has_endpoint = get_optional_endpoint(r, false, &m->status.endpoint);
        m->status.after_id = get_be(r, 8);
}

/* A count of µs, an id or a cursor: SQLite's integers are signed, so at most INT64_MAX. */
static uint64_t get_be63(struct rcur *r) {
        uint64_t v = get_be(r, 8);

        if (v > INT64_MAX)
                r->bad = true;
        return v;
}

static void get_log_request(struct rcur *r, struct pb_msg *m) {
        m->log.before_id = get_be63(r);
        m->log.since = get_be63(r);
        m->log.until = get_be63(r);
        m->log.limit = get_u8(r);
        m->log.has_uid = get_bool(r);
        m->log.uid = (uint32_t) get_be(r, 4);
        m->log.has_endpoint = get_optional_endpoint(r, true, &m->log.endpoint);
        get_text_max(r, m->log.event, PB_EVENT_KIND_MAX);
        /* No uid: its 4 bytes are reserved. */
        if (m->log.limit > PB_EVENTS_MAX || (m->log.has_uid ? m->log.uid == PB_UID_NONE : m->log.uid != 0))
                r->bad = true;
}

static void get_event_list(struct rcur *r, struct pb_event_list *list) {
        list->count = get_u8(r);
        list->more = get_bool(r);
        list->next_id = get_be63(r);
        if (list->count > PB_EVENTS_MAX || (list->more ? list->next_id == 0 : list->next_id != 0)) {
                r->bad = true;
                return;
        }
        for (unsigned i = 0; i < list->count && !r->bad; i++) {
                struct pb_event_entry *e = &list->events[i];
                e->id = get_be63(r);
                e->time = get_be63(r);
                e->uid = (uint32_t) get_be(r, 4);
                e->pid = (uint32_t) get_be(r, 4);
                get_text_max(r, e->event, PB_EVENT_KIND_MAX);
                get_text_max(r, e->endpoint, PB_ENDPOINT_STRLEN - 1);
                get_text(r, e->detail);
                if (e->id == 0 || e->event[0] == '\0')
                        r->bad = true;
        }
}

static void get_lease_list(struct rcur *r, struct pb_lease_list *list) {
        list->count = get_u8(r);
        list->more = get_bool(r);
        if (list->count > PB_LIST_MAX) {
                r->bad = true;
                return;
        }
        for (unsigned i = 0; i < list->count && !r->bad; i++) {
                struct pb_lease_entry *l = &list->leases[i];
                l->id = get_be(r, 8);
                get_endpoint(r, false, &l->endpoint);
                l->owner_uid = (uint32_t) get_be(r, 4);
                l->since = get_be(r, 8);
                l->handouts = get_be(r, 8);
                l->holders = (uint32_t) get_be(r, 4);
                l->queued = (int32_t) (uint32_t) get_be(r, 4);
                l->backlog = (uint32_t) get_be(r, 4);
                l->bound = get_bool(r);
        }
}

static void get_rule_rest(struct rcur *r, struct pb_rule_entry *e, uint16_t version) {
        get_principal(r, &e->principal);
        get_pattern(r, &e->pattern, &e->perm);
        get_rule_attrs(r, version, &e->principal, &e->pattern, &e->attrs);
        if (version >= PB_PROTO_VERSION_POLICY)
                get_text_max(r, e->source, PB_RULE_SOURCE_MAX);
        e->created = get_be(r, 8);
}

static void get_rule_list(struct rcur *r, struct pb_rule_list *list, uint16_t version) {
        list->count = get_u8(r);
        list->more = get_bool(r);
        if (list->count > PB_RULES_MAX) {
                r->bad = true;
                return;
        }
        for (unsigned i = 0; i < list->count && !r->bad; i++) {
                list->rules[i].id = get_be(r, 8);
                get_rule_rest(r, &list->rules[i], version);
        }
}

/* The peer a POLICY_TEST describes: no uid or gid 0xffffffff but PB_UID_NONE
 * for "no user", at most PB_TEST_GROUPS_MAX groups, its unit empty or a
 * unit name as a rule's principal would have it. */
static void get_policy_test(struct rcur *r, struct pb_msg *m) {
        struct pb_principal unit = { .kind = PB_PRINCIPAL_UNIT };

        get_endpoint(r, false, &m->policy_test.endpoint);
        m->policy_test.uid = (uint32_t) get_be(r, 4);
        m->policy_test.n_groups = get_u8(r);
        if (m->policy_test.n_groups > PB_TEST_GROUPS_MAX) {
                r->bad = true;
                return;
        }
        for (unsigned i = 0; i < m->policy_test.n_groups; i++) {
                m->policy_test.groups[i] = (uint32_t) get_be(r, 4);
                if (m->policy_test.groups[i] == UINT32_MAX)
                        r->bad = true;
        }
        get_text(r, m->policy_test.unit);
        memcpy(unit.unit, m->policy_test.unit, sizeof(unit.unit));
        if (!r->bad && unit.unit[0] && proto_principal_validate(&unit) < 0)
                r->bad = true;
}

/* The verdict of a POLICY_TEST: allowed by a rule or as an admin, never
 * both (an admin is named only when no rule lets it); no lease owner
 * without a lease. */
static void get_policy_tested(struct rcur *r, struct pb_msg *m) {
        m->policy_tested.allowed = get_bool(r);
        m->policy_tested.admin = get_bool(r);
        m->policy_tested.rule.id = get_be(r, 8);
        if (m->policy_tested.rule.id)
                get_rule_rest(r, &m->policy_tested.rule, m->hdr.version);
        m->policy_tested.lease_id = get_be(r, 8);
        m->policy_tested.owner_uid = (uint32_t) get_be(r, 4);
        get_text(r, m->policy_tested.reason);
        if ((m->policy_tested.admin && m->policy_tested.rule.id) ||
            (m->policy_tested.allowed && !m->policy_tested.admin && !m->policy_tested.rule.id) ||
            (!m->policy_tested.lease_id && m->policy_tested.owner_uid))
                r->bad = true;
}

static void decode_body(struct rcur *r, struct pb_msg *m) {
        switch (m->hdr.type) {
        case PB_MSG_GET:
        case PB_MSG_RELEASE:
        case PB_MSG_CHECK:
                get_endpoint(r, false, &m->get.endpoint);
                break;
        case PB_MSG_GET | PB_MSG_REPLY:
                get_endpoint(r, false, &m->got.endpoint);
                m->got.lease_id = get_be(r, 8);
                m->got.created = get_bool(r);
                break;
        case PB_MSG_STATUS:
                get_status_request(r, m);
                break;
        case PB_MSG_STATUS | PB_MSG_REPLY:
                get_lease_list(r, &m->leases);
                break;
        case PB_MSG_POLICY_ADD:
                get_principal(r, &m->policy_add.principal);
                get_pattern(r, &m->policy_add.pattern, &m->policy_add.perm);
                get_rule_attrs(r, m->hdr.version, &m->policy_add.principal, &m->policy_add.pattern,
                               &m->policy_add.attrs);
                break;
        case PB_MSG_POLICY_ADD | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE:
                m->rule_id.rule_id = get_be(r, 8);
                break;
        case PB_MSG_POLICY_LIST:
                m->policy_list.after_id = get_be(r, 8);
                break;
        case PB_MSG_POLICY_LIST | PB_MSG_REPLY:
                get_rule_list(r, &m->rules, m->hdr.version);
                break;
        case PB_MSG_POLICY_BEGIN:
                m->policy_begin.flags = get_u8(r);
                if (m->policy_begin.flags & ~PB_POLICY_REPLACE)
                        r->bad = true;
                break;
        case PB_MSG_POLICY_COMMIT | PB_MSG_REPLY:
                m->policy_commit.added = (uint32_t) get_be(r, 4);
                m->policy_commit.changed = (uint32_t) get_be(r, 4);
                m->policy_commit.removed = (uint32_t) get_be(r, 4);
                break;
        case PB_MSG_POLICY_TEST:
                get_policy_test(r, m);
                break;
        case PB_MSG_POLICY_TEST | PB_MSG_REPLY:
                get_policy_tested(r, m);
                break;
        case PB_MSG_REEXEC | PB_MSG_REPLY:
                m->reexec.pid = (uint32_t) get_be(r, 4);
                get_text(r, m->reexec.version);
                break;
        case PB_MSG_INFO | PB_MSG_REPLY:
                m->info.pid = (uint32_t) get_be(r, 4);
                get_text(r, m->info.version);
                m->info.guard = get_bool(r);
                get_text(r, m->info.guard_state);
                break;
        case PB_MSG_LOG:
                get_log_request(r, m);
                break;
        case PB_MSG_LOG | PB_MSG_REPLY:
                get_event_list(r, &m->events);
                break;
        case PB_MSG_RELEASE | PB_MSG_REPLY:
        case PB_MSG_POLICY_REMOVE | PB_MSG_REPLY:
        case PB_MSG_REEXEC:
        case PB_MSG_INFO:
        case PB_MSG_CHECK | PB_MSG_REPLY:
        case PB_MSG_POLICY_BEGIN | PB_MSG_REPLY:
        case PB_MSG_POLICY_COMMIT:
                break;
        case PB_MSG_ERROR:
                m->error.code = (int32_t) (uint32_t) get_be(r, 4);
                get_text(r, m->error.message);
                if (m->error.code <= 0)
                        r->bad = true;
                break;
        default:
                r->bad = true;
        }
}

int proto_decode(const uint8_t *buf, size_t len, struct pb_msg *ret_msg) {
        struct pb_msg m;
        int k;

        memset(&m, 0, sizeof(m));
        k = proto_decode_header(buf, len, &m.hdr);
        if (k < 0)
                return k;
        if (m.hdr.version < proto_type_version(m.hdr.type) || m.hdr.version > PB_PROTO_VERSION)
                return -EPROTO;

        struct rcur r = { .buf = buf, .len = len, .off = PB_HEADER_SIZE };
        decode_body(&r, &m);
        if (r.bad || r.off != len || m.hdr.version < content_version(&m))
                return -EBADMSG;
        *ret_msg = m;
        return 0;
}

bool proto_type_carries_fd(uint16_t type) {
        return type == (PB_MSG_GET | PB_MSG_REPLY);
}

/* Replaces each control character (and DEL) in s with '?': printable, one line. */
static char *printable(char *s) {
        for (char *p = s; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = '?';
        return s;
}

void proto_set_error(struct pb_msg *msg, uint32_t id, int code, const char *fmt, ...) {
        va_list ap;

        memset(msg, 0, sizeof(*msg));
        msg->hdr.type = PB_MSG_ERROR;
        msg->hdr.id = id;
        msg->error.code = code > 0 ? code : code > -INT32_MAX ? -code : EINVAL;
        va_start(ap, fmt);
        vsnprintf(msg->error.message, sizeof(msg->error.message), fmt, ap);
        va_end(ap);
        printable(msg->error.message);
}

char *proto_text_copy(char *dst, size_t size, const char *src) {
        snprintf(dst, size, "%s", src);
        return printable(dst);
}

/* What brokerd audits (broker_audit() and the events of durable changes in
 * request.c and broker.c): a new kind goes here too. */
const char *const proto_event_kinds[] = {
        "grant", "deny", "create", "release", "replace", "rebind-failed", "policy-add", "policy-change",
        "policy-remove", "policy-dir-failed", "reserve", "reserve-failed", "reexec", "bad-message", NULL,
};

bool proto_event_kind_known(const char *s) {
        for (size_t i = 0; proto_event_kinds[i]; i++)
                if (strcmp(s, proto_event_kinds[i]) == 0)
                        return true;
        return false;
}

/* Unit names as systemd allows them: [A-Za-z0-9:_.\\@-], a '.', at most 255 bytes. */
static bool unit_name_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > PB_TEXT_MAX || !strchr(s, '.') || s[0] == '.')
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      strchr(":_.\\@-", c)))
                        return false;
        }
        return true;
}

int proto_principal_validate(const struct pb_principal *p) {
        switch (p->kind) {
        case PB_PRINCIPAL_USER:
        case PB_PRINCIPAL_GROUP:
                return p->unit[0] == '\0' && p->id != UINT32_MAX ? 0 : -EINVAL;
        case PB_PRINCIPAL_UNIT:
                return p->id == 0 && unit_name_valid(p->unit) ? 0 : -EINVAL;
        default:
                return -EINVAL;
        }
}

int proto_rule_attrs_validate(const struct pb_principal *p, const struct pb_endpoint *pattern,
                              const struct pb_rule_attrs *a, const char **ret_why) {
        bool reserve = a->flags & PB_RULE_RESERVE, owner = a->flags & PB_RULE_OWNER;

        if (a->flags & ~(PB_RULE_RESERVE | PB_RULE_OWNER) || (!owner && a->owner != 0) || a->owner == UINT32_MAX)
                *ret_why = "unknown rule flags, or an owner without its flag";
        else if (reserve && endpoint_validate(pattern, false) < 0)
                *ret_why = "a reservation is of one endpoint: one port, or a Unix socket's path (not a directory)";
        else if (owner && (!reserve || p->kind == PB_PRINCIPAL_USER))
                *ret_why = reserve ? "a user rule's reservation is its user's: it names no owner"
                                   : "only a reservation has an owner";
        else if (reserve && p->kind != PB_PRINCIPAL_USER && !owner)
                *ret_why = "the reservation of a group or unit rule needs an owner (the user whose lease it is)";
        else
                return 0;
        return -EINVAL;
}
