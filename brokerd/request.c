/* SPDX-License-Identifier: MIT */
/*
 * The request table and its handlers. Every message is validated in a fixed
 * order (size, header, version, type, exact fields for its type), then
 * authorized (a doubtful peer is denied everything; admin-only types need
 * an admin) and dispatched through the const table below. A handler fills
 * the reply and, for get, names the fd to attach; it never closes the
 * connection itself.
 */
#include "broker-int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fd-util.h"
#include "sockopt.h"

struct request_type {
        uint16_t type;
        const char *name;               /* for the log */
        bool admin;                     /* only admins may send it */
        void (*handle)(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd);
};

/* Sets an error reply, and logs and audits it as a denial. */
static void deny(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, const char *endpoint,
                 const struct pb_endpoint *e, const char *audit_detail) {
        struct log_fields f = broker_peer_fields(&c->peer, endpoint, e);

        log_event(LOG_NOTICE, "deny", &f, "%s", reply->error.message);
        broker_audit(c->broker, "deny", &c->peer, endpoint, audit_detail);
        c->denied = true;       /* no activity: the idle timer runs on (conn.c) */
}

/* --- get: authorize, create the lease if needed, hand it out ---------------- */

/* Whether the peer may get e, whose lease is l (NULL: none yet), and by
 * which rule (*ret_rule; NULL for an admin no rule names); when it may
 * not, reply says why. */
static bool get_authorize(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, const char *text,
                          const struct lease *l, const struct store_rule **ret_rule) {
        struct broker *b = c->broker;
        const struct pb_endpoint *e = &req->get.endpoint;
        const struct peer *p = &c->peer;
        const struct lease *other;
        char other_text[PB_ENDPOINT_STRLEN];

        *ret_rule = policy_find(&b->policy, p, e);
        if (!*ret_rule && !policy_is_admin(&b->policy, p)) {
                proto_set_error(reply, req->hdr.id, EACCES, "permission denied: no rule lets uid %u get %s",
                                (unsigned) p->uid, text);
                deny(c, req, reply, text, e, "no rule");
                return false;
        }
        if (!l && endpoint_is_unix(e) && unix_dirs_find(b->opt.unix_dirs, b->opt.n_unix_dirs, e) < 0) {
                char dirs[160] = "";

                for (size_t i = 0; i < b->opt.n_unix_dirs; i++)
                        snprintf(dirs + strlen(dirs), sizeof(dirs) - strlen(dirs), "%s%s", i ? ", " : "",
                                 b->opt.unix_dirs[i]);
                proto_set_error(reply, req->hdr.id, EACCES, "%s is not directly in a directory brokerd makes "
                                "sockets in (--unix-dir: %s)", text, dirs[0] ? dirs : "none");
                deny(c, req, reply, text, e, "not in a --unix-dir");
                return false;
        }
        if (l && l->owner_uid != p->uid) {
                proto_set_error(reply, req->hdr.id, EBUSY, "%s is held by uid %u", text, (unsigned) l->owner_uid);
                deny(c, req, reply, text, e, "held by another");
                return false;
        }
        /* Another uid's lease that overlaps e (the kernel would refuse the
         * bind), or serves the other family of e's wildcard or loopback:
         * IPv6 (or [::1]:P) beside 0.0.0.0:P would get the clients of
         * "localhost:P" that try IPv6 first. */
        other = l ? NULL : lease_table_conflicting(&b->leases, e, p->uid);
        if (other) {
                proto_set_error(reply, req->hdr.id, EBUSY, "%s is held by uid %u: its lease %s %s", text,
                                (unsigned) other->owner_uid, endpoint_format(&other->endpoint, other_text),
                                endpoint_overlaps(&other->endpoint, e) ? "overlaps it"
                                                                       : "serves the other family of the port");
                deny(c, req, reply, text, e, "port held by another");
                return false;
        }
        if (!l && lease_table_count_owner(&b->leases, p->uid) >= b->opt.max_leases_per_user) {
                proto_set_error(reply, req->hdr.id, EDQUOT,
                                "uid %u already holds %u leases, the most allowed (--max-leases-per-user)",
                                (unsigned) p->uid, b->opt.max_leases_per_user);
                deny(c, req, reply, text, e, "lease limit");
                return false;
        }
        if (!l && b->leases.n >= b->opt.max_leases) {
                proto_set_error(reply, req->hdr.id, EDQUOT, "brokerd holds %u leases, the most allowed (--max-leases)",
                                b->opt.max_leases);
                deny(c, req, reply, text, e, "lease limit");
                return false;
        }
        return true;
}

/* Records lease id for the peer, with socket sock_fd (consumed), in the
 * store and the table. Returns the lease, or NULL with reply set. */
static struct lease *get_record(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, const char *text,
                                uint64_t id, int sock_fd, uint64_t cookie, const struct lease_unix *ux) {
        struct broker *b = c->broker;
        const struct peer *p = &c->peer;
        const struct pb_endpoint *e = &req->get.endpoint;
        struct store_lease sl = { .id = id, .endpoint = *e, .owner_uid = p->uid, .socket_cookie = cookie,
                                  .ux = *ux };
        struct store_event ev = { .event = "create", .uid = p->uid, .pid = p->pid, .endpoint = text };
        struct lease *l = lease_new();
        int r;

        if (!l) {
                safe_close(sock_fd);
                proto_set_error(reply, req->hdr.id, ENOMEM, "out of memory");
                return NULL;
        }
        l->sock_fd = sock_fd;
        snprintf(sl.boot_id, sizeof(sl.boot_id), "%s", b->boot_id);
        r = store_lease_add(b->store, &sl, &ev);
        if (r >= 0) {
                l->id = sl.id;
                r = lease_set_endpoint(l, e);
                if (l->ux)
                        *l->ux = *ux;
                l->owner_uid = p->uid;
                l->since = sl.created;
                l->backlog = b->backlog;
                if (r >= 0)
                        r = lease_table_add(&b->leases, l);
                if (r < 0) {    /* out of memory: keep store and table alike */
                        struct store_event undo = { .event = "release", .uid = p->uid, .pid = p->pid,
                                                    .endpoint = text, .detail = "creation undone" };
                        (void) store_lease_remove(b->store, sl.id, &undo);
                }
        }
        if (r < 0) {
                struct log_fields f = broker_peer_fields(p, text, e);

                lease_free(l);
                proto_set_error(reply, req->hdr.id, -r, "cannot record the lease for %s: %s", text, strerror(-r));
                log_event(LOG_ERR, "error", &f, "%s", reply->error.message);
                return NULL;
        }
        return l;
}

/* Has the monitor guard and bind e for a new lease (a Unix socket's file
 * made for the peer as rule says), and records it. Returns the lease, or
 * NULL with reply set. */
static struct lease *get_create(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, const char *text,
                                const struct store_rule *rule) {
        struct broker *b = c->broker;
        const struct pb_endpoint *e = &req->get.endpoint;
        struct log_fields f = broker_peer_fields(&c->peer, text, e);
        struct lease_unix ux = {
                .uid = c->peer.uid,
                .gid = rule && endpoint_is_unix(&rule->pattern) ? rule->perm.gid : PB_SOCKET_GROUP_NONE,
                .mode = rule && endpoint_is_unix(&rule->pattern) ? rule->perm.mode : PB_SOCKET_MODE_DEFAULT,
        };
        struct mm_socket got;
        struct lease *l;
        uint64_t id;
        int sock_fd, r;

        r = store_lease_next_id(b->store, &id);
        if (r < 0) {
                proto_set_error(reply, req->hdr.id, -r, "cannot number a new lease: %s", strerror(-r));
                log_event(LOG_ERR, "error", &f, "%s", reply->error.message);
                return NULL;
        }
        /* Guarded by the monitor first: from its bind() on, nobody else may bind it. */
        r = mm_socket(b, id, e, endpoint_is_unix(e) ? &ux : NULL, &sock_fd, &got);
        if (r < 0) {
                const struct lease *other = r == -EADDRINUSE ? lease_table_overlapping(&b->leases, e) : NULL;
                char other_text[PB_ENDPOINT_STRLEN];

                if (other)      /* tcp:[::]:P beside tcp:0.0.0.0:P, say: which one stands in the way */
                        proto_set_error(reply, req->hdr.id, -r, "cannot bind %s: %s (the lease %s of uid %u holds "
                                        "the port%s)", text, strerror(-r), endpoint_format(&other->endpoint, other_text),
                                        (unsigned) other->owner_uid,
                                        other->owner_uid == c->peer.uid ? "; release it first" : "");
                else
                        proto_set_error(reply, req->hdr.id, -r, "cannot bind %s: %s%s", text, strerror(-r),
                                        r == -EADDRINUSE ? " (another socket holds the port)" :
                                        r == -EEXIST ? " (a file brokerd did not make is at the path; it is "
                                                       "never replaced)" : "");
                log_event(r == -EADDRINUSE ? LOG_WARNING : LOG_ERR, "error", &f, "%s", reply->error.message);
                return NULL;
        }
        ux.file = got.file;
        l = get_record(c, req, reply, text, id, sock_fd, got.cookie, &ux);
        if (!l) {
                mm_release(b, id);
                return NULL;
        }
        broker_lease_bound(b, l);
        log_event(LOG_INFO, "create", &f, "lease %llu created for uid %u", (unsigned long long) l->id,
                  (unsigned) c->peer.uid);
        broker_notify_status(b);
        return l;
}

/* What lease_ensure_listening() repaired, for the log. */
static void log_repairs(const struct log_fields *f, int fixed) {
        log_event(LOG_WARNING, "repair", f, "a holder had changed the shared socket; undone:%s%s%s%s",
                  fixed & LEASE_FIXED_LISTEN ? " listening again after its shutdown()" : "",
                  fixed & LEASE_FIXED_BACKLOG ? " the backlog its listen() set" : "",
                  fixed & LEASE_FIXED_FILTER ? " the socket filter it attached" : "",
                  fixed & LEASE_FIXED_CONNECT ? " its connect()" : "");
}

/* Makes l's socket fit to hand out: bound (a lease the broker could not bind
 * at start is tried again), listening, no reuse options a holder set.
 * Returns true, or false with reply set. */
static bool get_ready_socket(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, const char *text,
                             struct lease *l) {
        struct log_fields f = broker_peer_fields(&c->peer, text, &l->endpoint);
        int r;

        if (l->sock_fd < 0) {
                r = broker_rebind_lease(c->broker, l);
                if (r < 0) {
                        proto_set_error(reply, req->hdr.id, -r, "cannot bind %s again: %s%s", text, strerror(-r),
                                        r == -EADDRINUSE ? " (another socket holds the port; brokerd retries)" : "");
                        log_event(LOG_WARNING, "error", &f, "%s", reply->error.message);
                        return false;
                }
        }
        r = lease_ensure_listening(l);
        if (r < 0) {
                r = broker_replace_socket(c->broker, l, r, &c->peer);
                if (r < 0)
                        proto_set_error(reply, req->hdr.id, -r, "cannot bind %s afresh: %s", text, strerror(-r));
                return r >= 0;
        }
        if (r > 0) {
                log_repairs(&f, r);
                (void) watch_listener(c->broker, l);  /* again, if an error had stopped it */
        }
        return true;
}

static void handle_get(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        const struct pb_endpoint *e = &req->get.endpoint;
        struct lease *l = lease_table_find(&c->broker->leases, e);
        char buf[PB_ENDPOINT_STRLEN];
        const char *text = endpoint_format(e, buf);
        struct log_fields f = broker_peer_fields(&c->peer, text, e);
        const struct store_rule *rule;
        bool created = false;

        if (!get_authorize(c, req, reply, text, l, &rule))
                return;
        if (!l) {
                l = get_create(c, req, reply, text, rule);
                if (!l)
                        return;
                created = true;
        }
        if (!get_ready_socket(c, req, reply, text, l))
                return;

        reply->hdr.type = PB_MSG_GET | PB_MSG_REPLY;
        reply->got.endpoint = *e;
        reply->got.lease_id = l->id;
        reply->got.created = created;
        *ret_fd = l->sock_fd;
        l->handouts++;
        watch_holder(c->broker, l, &c->peer);
        /* A repeat get is a debug line (one write() per get otherwise); the
         * audit trail records every grant. */
        log_event(created ? LOG_INFO : LOG_DEBUG, "grant", &f, "lease %llu handed out", (unsigned long long) l->id);
        broker_audit(c->broker, "grant", &c->peer, text, created ? "created" : NULL);
}

/* Whether the peer may get an endpoint now, as a GET would find (rule,
 * owner, limits, a lease of another endpoint holding the port), with
 * nothing bound or recorded: `portctl run 8080`
 * asks before its server starts, since which lease of the port the server
 * gets depends on the socket it makes. A refusal is a denial like a GET's,
 * logged and audited. */
static void handle_check(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        const struct pb_endpoint *e = &req->get.endpoint;
        struct lease *l = lease_table_find(&c->broker->leases, e);
        char buf[PB_ENDPOINT_STRLEN];
        const char *text = endpoint_format(e, buf);

        const struct lease *other = l ? NULL : lease_table_overlapping(&c->broker->leases, e);
        char other_text[PB_ENDPOINT_STRLEN];
        const struct store_rule *rule;

        if (!get_authorize(c, req, reply, text, l, &rule))
                return;
        if (other) {            /* a GET would find the port bound: say by which lease */
                proto_set_error(reply, req->hdr.id, EADDRINUSE, "%s overlaps the lease %s of uid %u", text,
                                endpoint_format(&other->endpoint, other_text), (unsigned) other->owner_uid);
                return;
        }
        reply->hdr.type = PB_MSG_CHECK | PB_MSG_REPLY;
}

/* --- release, status ----------------------------------------------------- */

static void handle_release(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        const struct pb_endpoint *e = &req->get.endpoint;
        const struct peer *p = &c->peer;
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = broker_peer_fields(p, endpoint_format(e, text), e);
        struct store_event ev = { .event = "release", .uid = p->uid, .pid = p->pid, .endpoint = text };
        struct lease *l = lease_table_find(&b->leases, e);
        int r;

        if (!l) {
                proto_set_error(reply, req->hdr.id, ENOENT, "no lease for %s", text);
                return;
        }
        if (l->owner_uid != p->uid && !policy_is_admin(&b->policy, p)) {
                proto_set_error(reply, req->hdr.id, EPERM,
                                "%s is held by uid %u; only its owner or an admin may release it", text,
                                (unsigned) l->owner_uid);
                deny(c, req, reply, text, e, "release by non-owner");
                return;
        }
        r = store_lease_remove(b->store, l->id, &ev);
        if (r < 0 && r != -ENOENT) {
                proto_set_error(reply, req->hdr.id, -r, "cannot record the release of %s: %s", text, strerror(-r));
                log_event(LOG_ERR, "error", &f, "%s", reply->error.message);
                return;
        }
        lease_table_remove(&b->leases, l);
        mm_release(b, l->id);
        log_event(LOG_INFO, "release", &f, "lease %llu released", (unsigned long long) l->id);
        lease_free(l);
        reply->hdr.type = PB_MSG_RELEASE | PB_MSG_REPLY;
        broker_notify_status(b);
}

static void lease_entry(const struct lease *l, struct pb_lease_entry *out) {
        int queued = lease_queued(l);

        *out = (struct pb_lease_entry) {
                .id = l->id,
                .endpoint = l->endpoint,
                .owner_uid = l->owner_uid,
                .since = (uint64_t) l->since,
                .handouts = l->handouts,
                .holders = lease_holders_live(l),
                .queued = queued < 0 ? -1 : queued,   /* -1 on the wire: unknown */
                .backlog = l->endpoint.transport == PB_TCP ? l->backlog : 0,
                .bound = l->sock_fd >= 0,
        };
}

/* Whether a reply in req's version can carry e: a client older than
 * version 4 cannot read an IPv6-only wildcard, one older than 5 a Unix
 * endpoint, so lists leave those out for it (answering in a newer version
 * would make its whole list unreadable). */
static bool expressible(const struct pb_msg *req, const struct pb_endpoint *e) {
        return req->hdr.version >= proto_endpoint_version(e);
}

/* Whether a list reply still fits one message: Unix paths make entries
 * longer than the counts PB_LIST_MAX and PB_RULES_MAX were sized for, so
 * once a page holds one, every entry added after is checked too. */
static bool list_fits(const struct pb_msg *reply) {
        uint8_t buf[PB_MSG_MAX];

        return proto_encode(reply, buf, sizeof(buf)) >= 0;
}

static void handle_status(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct lease_table *t = &c->broker->leases;

        reply->hdr.type = PB_MSG_STATUS | PB_MSG_REPLY;
        if (req->status.has_endpoint) {
                char text[PB_ENDPOINT_STRLEN];
                struct lease *l = lease_table_find(t, &req->status.endpoint);

                if (!l) {
                        proto_set_error(reply, req->hdr.id, ENOENT, "no lease for %s",
                                        endpoint_format(&req->status.endpoint, text));
                        return;
                }
                lease_entry(l, &reply->leases.leases[0]);
                reply->leases.count = 1;
                return;
        }
        bool long_entries = false;

        for (size_t i = lease_table_after(t, req->status.after_id); i < t->n; i++) {
                if (!expressible(req, &t->by_id[i]->endpoint))
                        continue;
                if (reply->leases.count == PB_LIST_MAX) {
                        reply->leases.more = 1;
                        break;
                }
                lease_entry(t->by_id[i], &reply->leases.leases[reply->leases.count++]);
                long_entries |= endpoint_is_unix(&t->by_id[i]->endpoint);
                if (long_entries && !list_fits(reply)) {
                        reply->leases.count--;
                        reply->leases.more = 1;
                        break;
                }
        }
}

/* --- policy ----------------------------------------------------------------- */

static void policy_denied(struct conn *c, const struct pb_msg *req, struct pb_msg *reply) {
        const struct policy *pol = &c->broker->policy;

        if (pol->admin_group && pol->admin_group->set)
                proto_set_error(reply, req->hdr.id, EPERM,
                                "permission denied: only root or members of group %s may change policy",
                                pol->admin_group->name);
        else
                proto_set_error(reply, req->hdr.id, EPERM,
                                "permission denied: only root or uid %u may change policy (see --admin-group)",
                                (unsigned) pol->self_uid);
        deny(c, req, reply, NULL, NULL, "policy change by non-admin");
}

static const char *principal_text(const struct pb_principal *pr, char *buf, size_t len) {
        switch (pr->kind) {
        case PB_PRINCIPAL_USER:
                snprintf(buf, len, "user %u", (unsigned) pr->id);
                break;
        case PB_PRINCIPAL_GROUP:
                snprintf(buf, len, "group %u", (unsigned) pr->id);
                break;
        default:
                snprintf(buf, len, "unit %s", pr->unit);
        }
        return buf;
}

static void handle_policy_add(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        const struct peer *p = &c->peer;
        struct store_rule rule = { .principal = req->policy_add.principal, .pattern = req->policy_add.pattern,
                                   .perm = req->policy_add.perm };
        char text[PB_ENDPOINT_STRLEN], who[300];
        struct log_fields f = broker_peer_fields(p, endpoint_format_pattern(&rule.pattern, text), NULL);
        struct store_event ev = { .event = "policy-add", .uid = p->uid, .pid = p->pid, .endpoint = text,
                                  .detail = principal_text(&rule.principal, who, sizeof(who)) };
        const struct store_rule *same = policy_find_rule(&b->policy, &rule);
        int r;

        if (same) {
                proto_set_error(reply, req->hdr.id, EEXIST, "rule %llu already lets %s get %s",
                                (unsigned long long) same->id, who, text);
                return;
        }
        if (b->policy.n_rules >= POLICY_RULES_MAX) {
                proto_set_error(reply, req->hdr.id, ENOSPC, "too many rules (at most %d)", POLICY_RULES_MAX);
                return;
        }
        r = store_rule_add(b->store, &rule, &ev);
        if (r >= 0)
                r = policy_add(&b->policy, &rule);
        if (r < 0) {
                proto_set_error(reply, req->hdr.id, -r, "cannot add the rule: %s", strerror(-r));
                log_event(LOG_ERR, "error", &f, "%s", reply->error.message);
                return;
        }
        log_event(LOG_INFO, "policy-add", &f, "rule %llu: %s may get %s", (unsigned long long) rule.id, who, text);
        reply->hdr.type = PB_MSG_POLICY_ADD | PB_MSG_REPLY;
        reply->rule_id.rule_id = rule.id;
        broker_notify_status(b);
}

static void handle_policy_remove(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        const struct peer *p = &c->peer;
        uint64_t id = req->rule_id.rule_id;
        const struct store_rule *rule = policy_get(&b->policy, id);
        struct log_fields f = broker_peer_fields(p, NULL, NULL);
        char detail[320], who[300], text[PB_ENDPOINT_STRLEN];
        /* Audited with the rule's pattern and principal, as its policy-add was. */
        struct store_event ev = { .event = "policy-remove", .uid = p->uid, .pid = p->pid, .detail = detail };
        int r;

        if (!rule) {
                proto_set_error(reply, req->hdr.id, ENOENT, "no rule %llu", (unsigned long long) id);
                return;
        }
        ev.endpoint = endpoint_format_pattern(&rule->pattern, text);
        snprintf(detail, sizeof(detail), "rule %llu: %s", (unsigned long long) id,
                 principal_text(&rule->principal, who, sizeof(who)));
        r = store_rule_remove(b->store, id, &ev);
        if (r < 0) {
                proto_set_error(reply, req->hdr.id, -r, "cannot remove rule %llu: %s", (unsigned long long) id,
                                strerror(-r));
                log_event(LOG_ERR, "error", &f, "%s", reply->error.message);
                return;
        }
        policy_remove(&b->policy, id);
        log_event(LOG_INFO, "policy-remove", &f, "rule %llu removed; leases it allowed stay until released",
                  (unsigned long long) id);
        reply->hdr.type = PB_MSG_POLICY_REMOVE | PB_MSG_REPLY;
        broker_notify_status(b);
}

static void handle_policy_list(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        const struct policy *pol = &c->broker->policy;
        bool long_entries = false;

        reply->hdr.type = PB_MSG_POLICY_LIST | PB_MSG_REPLY;
        for (size_t i = 0; i < pol->n_rules; i++) {
                const struct store_rule *r = &pol->rules[i];

                if (r->id <= req->policy_list.after_id || !expressible(req, &r->pattern))
                        continue;
                if (reply->rules.count == PB_RULES_MAX) {
                        reply->rules.more = 1;
                        break;
                }
                reply->rules.rules[reply->rules.count++] = (struct pb_rule_entry) {
                        .id = r->id,
                        .principal = r->principal,
                        .pattern = r->pattern,
                        .perm = r->perm,
                        .created = (uint64_t) r->created,
                };
                long_entries |= endpoint_is_unix(&r->pattern);
                if (long_entries && !list_fits(reply)) {
                        reply->rules.count--;
                        reply->rules.more = 1;
                        break;
                }
        }
}

/* --- the audit trail ---------------------------------------------------------- */

/* Adds event e to the LOG reply, its texts made printable; returns 1 when
 * it does not fit (the page ends without it). */
static int log_add(const struct store_event_row *e, void *userdata) {
        struct pb_msg *reply = userdata;
        struct pb_event_list *list = &reply->events;
        struct pb_event_entry *out = &list->events[list->count];

        *out = (struct pb_event_entry) {
                .id = e->id,
                .time = e->time_us > 0 ? (uint64_t) e->time_us : 0,
                .uid = e->uid >= 0 && e->uid < PB_UID_NONE ? (uint32_t) e->uid : PB_UID_NONE,
                .pid = e->pid > 0 && e->pid <= UINT32_MAX ? (uint32_t) e->pid : 0,
        };
        proto_text_copy(out->event, sizeof(out->event), e->event[0] ? e->event : "?");
        proto_text_copy(out->endpoint, sizeof(out->endpoint), e->endpoint ? e->endpoint : "");
        proto_text_copy(out->detail, sizeof(out->detail), e->detail ? e->detail : "");
        list->count++;
        if (!list_fits(reply)) {
                list->count--;
                return 1;
        }
        return 0;
}

/* Refuses a request for events of a kind brokerd does not record, naming those it does. */
static void log_unknown_kind(const struct pb_msg *req, struct pb_msg *reply) {
        char kinds[PB_TEXT_MAX + 1] = "";

        for (size_t i = 0; proto_event_kinds[i]; i++)
                snprintf(kinds + strlen(kinds), sizeof(kinds) - strlen(kinds), "%s%s", i ? ", " : "",
                         proto_event_kinds[i]);
        proto_set_error(reply, req->hdr.id, EINVAL, "unknown event kind '%s' (brokerd records %s)", req->log.event,
                        kinds);
}

/*
 * The audit trail, newest first, from the database: the queued events are
 * written first, so that the page holds all that was recorded until now.
 * An admin reads every uid's events; anyone else their own uid's (the
 * kernel's word at accept, whatever the request says), and a request for
 * another uid's is a denial.
 */
static void handle_log(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        const struct peer *p = &c->peer;
        char endpoint[PB_ENDPOINT_STRLEN], pattern[PB_ENDPOINT_STRLEN];
        struct store_event_filter f = {
                .before_id = req->log.before_id,
                .since_us = (int64_t) req->log.since,
                .until_us = (int64_t) req->log.until,
                .uid = req->log.has_uid ? (long) req->log.uid : -1,
                .event = req->log.event[0] ? req->log.event : NULL,
        };
        uint64_t next;
        int r;

        if (!policy_is_admin(&b->policy, p)) {
                if (req->log.has_uid && req->log.uid != p->uid) {
                        proto_set_error(reply, req->hdr.id, EPERM, "permission denied: uid %u may read its own "
                                        "events only, not uid %u's (admins read everyone's)", (unsigned) p->uid,
                                        (unsigned) req->log.uid);
                        deny(c, req, reply, NULL, NULL, "log of another uid");
                        return;
                }
                f.uid = (long) p->uid;
        }
        if (f.event && !proto_event_kind_known(f.event)) {
                log_unknown_kind(req, reply);
                return;
        }
        /* As brokerd writes it: an endpoint's text (grants, leases), or a pattern's (rules). */
        if (req->log.has_endpoint) {
                f.endpoint[0] = endpoint_format_pattern(&req->log.endpoint, pattern);
                if (endpoint_validate(&req->log.endpoint, false) == 0)
                        f.endpoint[1] = endpoint_format(&req->log.endpoint, endpoint);
        }

        reply->hdr.type = PB_MSG_LOG | PB_MSG_REPLY;    /* what log_add() fits */
        r = broker_flush(b);
        if (r < 0) {
                proto_set_error(reply, req->hdr.id, -r, "cannot write the queued audit events first: %s",
                                strerror(-r));
                return;
        }
        r = store_events_page(b->store, &f, req->log.limit ? req->log.limit : PB_EVENTS_MAX, log_add, reply, &next);
        if (r < 0) {
                struct log_fields lf = broker_peer_fields(p, NULL, NULL);

                proto_set_error(reply, req->hdr.id, -r, "cannot read the audit trail: %s", strerror(-r));
                log_event(LOG_ERR, "error", &lf, "%s", reply->error.message);
                return;
        }
        reply->events.more = next > 0;
        reply->events.next_id = next;
}

/* --- admin ------------------------------------------------------------------ */

/*
 * The monitor checks that the binary would start (as the worker would run
 * it); then every connection goes to the monitor, which executes brokerd
 * again once this worker has written its database and exited, and the new
 * image's worker answers the request. A check that fails is answered here,
 * and nothing changes.
 */
static void handle_reexec(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        struct log_fields f = broker_peer_fields(&c->peer, NULL, NULL);
        char why[PB_TEXT_MAX + 1] = "";
        int r;

        /* The new image answers the request by its id, and 0 means "none"
         * on the way there (privsep.h): refused, rather than never answered. */
        if (req->hdr.id == 0) {
                proto_set_error(reply, 0, EINVAL, "REEXEC needs a request id other than 0");
                return;
        }
        /* The audit trail first (no event is lost across exec()): once the
         * binary passed its check, nothing stops the re-execution. */
        broker_audit(b, "reexec", &c->peer, NULL, b->opt.exe_path);
        r = store_flush(b->store);
        if (r < 0)
                snprintf(why, sizeof(why), "cannot write the audit trail first: %s", strerror(-r));
        else
                r = mm_reexec_check(b, why, sizeof(why));
        if (r < 0) {
                log_event(LOG_ERR, "error", &f, "re-execution refused: %s; this brokerd keeps serving", why);
                proto_set_error(reply, req->hdr.id, -r, "%s; brokerd keeps serving", why);
                return;
        }
        log_event(LOG_NOTICE, "reexec", &f, "executing %s again; %zu leases and %u connections carried over",
                  b->opt.exe_path, b->leases.n, b->n_conns);
        mm_reexec(b, c, req->hdr.id);
        /* The connections are the monitor's now; this worker is done. */
        b->reexecuting = true;
        sd_event_exit(b->event, 0);
}

void request_reexec_answer(struct broker *b, int fd, uint32_t id) {
        struct pb_msg reply = { .hdr = { .type = PB_MSG_REEXEC | PB_MSG_REPLY, .id = id,
                                         .version = proto_type_version(PB_MSG_REEXEC) } };

        reply.reexec.pid = (uint32_t) b->monitor_pid;
        snprintf(reply.reexec.version, sizeof(reply.reexec.version), "%s", PB_VERSION);
        (void) conn_send_fd(fd, &reply, -1);
}

static void handle_info(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        const struct broker *b = c->broker;

        reply->hdr.type = PB_MSG_INFO | PB_MSG_REPLY;
        reply->info.pid = (uint32_t) b->monitor_pid;
        snprintf(reply->info.version, sizeof(reply->info.version), "%s", PB_VERSION);
        reply->info.guard = b->guard_on;
        snprintf(reply->info.guard_state, sizeof(reply->info.guard_state), "%.*s",
                 (int) sizeof(reply->info.guard_state) - 1, b->guard_state);        /* cut to the wire's text */
}

/* --- the table and dispatch ------------------------------------------------- */

static const struct request_type request_types[] = {
        { PB_MSG_GET, "get", false, handle_get },
        { PB_MSG_RELEASE, "release", false, handle_release },
        { PB_MSG_STATUS, "status", false, handle_status },
        { PB_MSG_POLICY_ADD, "policy-add", true, handle_policy_add },
        { PB_MSG_POLICY_REMOVE, "policy-remove", true, handle_policy_remove },
        { PB_MSG_POLICY_LIST, "policy-list", false, handle_policy_list },
        { PB_MSG_REEXEC, "reexec", true, handle_reexec },
        { PB_MSG_INFO, "info", false, handle_info },
        { PB_MSG_CHECK, "check", false, handle_check },
        { PB_MSG_LOG, "log", false, handle_log },
};

static const struct request_type *request_type_of(uint16_t type) {
        for (size_t i = 0; i < sizeof(request_types) / sizeof(request_types[0]); i++)
                if (request_types[i].type == type)
                        return &request_types[i];
        return NULL;
}

const char *request_validate(const uint8_t *buf, size_t len, struct pb_msg *ret_req, int *ret_code,
                             uint32_t *ret_id) {
        struct pb_header hdr;

        *ret_code = EBADMSG;
        *ret_id = 0;
        if (proto_decode_header(buf, len, &hdr) < 0)
                return "malformed request: bad header or length";
        *ret_id = hdr.id;
        if (hdr.version < PB_PROTO_VERSION_MIN || hdr.version > PB_PROTO_VERSION) {
                *ret_code = EPROTONOSUPPORT;
                return "unsupported protocol version";
        }
        if (!request_type_of(hdr.type))
                return "malformed request: unknown message type";
        if (hdr.version < proto_type_version(hdr.type)) {
                *ret_code = EPROTONOSUPPORT;
                return "unsupported protocol version for this message type";
        }
        if (proto_decode(buf, len, ret_req) < 0)
                return "malformed request: bad fields or length for its type";
        return NULL;
}

int request_handle(struct conn *c, const uint8_t *buf, size_t len) {
        const struct request_type *rt;
        struct pb_msg req, reply;
        const char *bad;
        uint32_t id;
        int code, fd = -1, r;

        bad = request_validate(buf, len, &req, &code, &id);
        if (bad) {
                conn_reject(c, id, code, bad);
                return -EBADMSG;
        }
        rt = request_type_of(req.hdr.type);

        memset(&reply, 0, sizeof(reply));
        reply.hdr.id = id;
        reply.hdr.version = req.hdr.version;   /* answered in the version asked in */
        if (c->peer.doubt) {
                proto_set_error(&reply, id, EACCES, "permission denied: %s", c->peer.doubt);
                deny(c, &req, &reply, NULL, NULL, c->peer.doubt);
        } else if (rt->admin && !policy_is_admin(&c->broker->policy, &c->peer))
                policy_denied(c, &req, &reply);
        else
                rt->handle(c, &req, &reply, &fd);
        if (c->broker->reexecuting)
                return 0;               /* the new image answers */

        r = conn_send(c, &reply, reply.hdr.type == PB_MSG_ERROR ? -1 : fd);
        if (r < 0) {
                struct log_fields f = broker_peer_fields(&c->peer, NULL, NULL);

                log_event(LOG_NOTICE, "error", &f, "cannot send the %s reply: %s; closing", rt->name, strerror(-r));
                conn_free(c);
                return r;
        }
        return 0;
}
