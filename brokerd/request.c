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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* --- authorization: what a GET would meet, for GET, CHECK and POLICY_TEST --- */

/* A verdict on a GET of one endpoint by one peer, worked out with no side
 * effect: nothing logged, audited or changed. GET and CHECK deny (log and
 * audit) what it refuses; POLICY_TEST only tells it. */
struct authorization {
        const struct store_rule *rule;  /* the first rule letting the peer, or NULL */
        bool admin;                     /* no rule does, but the peer is an admin */
        const struct lease *lease;      /* the endpoint's lease, or the one in the way; NULL: none */
        int code;                       /* 0: granted; else the errno of the refusal */
        const char *denial;             /* what the audit trail calls the refusal; NULL: not a denial */
        char why[PB_TEXT_MAX + 1];      /* the refusal's message */
};

/* "uid 4242", "uid 4242 in unit web.service" (the unit it was seen in,
 * read only while unit rules exist, tells a service denied by its own unit
 * rule what brokerd saw instead); for a peer of no user (only POLICY_TEST
 * describes one) its groups and unit: "group 33 in unit web.service".
 * Returns buf. */
static const char *peer_who(const struct peer *p, char *buf, size_t size) {
        size_t n = 0;

        buf[0] = '\0';
        if (p->uid != PEER_UID_UNKNOWN) {
                snprintf(buf, size, "uid %u%s%s", (unsigned) p->uid, p->unit[0] ? " in unit " : "", p->unit);
                return buf;
        }
        for (size_t i = 0; i < p->n_groups && n < size; i++)
                n += (size_t) snprintf(buf + n, size - n, "%s%u", i ? ", " : p->n_groups > 1 ? "groups " : "group ",
                                       (unsigned) p->groups[i]);
        if (p->unit[0] && n < size)
                snprintf(buf + n, size - n, "%sunit %s", n ? " in " : "", p->unit);
        if (!buf[0])
                snprintf(buf, size, "a peer of no user, group or unit");
        return buf;
}

/* Sets a's refusal: code, the audit trail's word for it (NULL: not a denial), the message. */
static void refuse(struct authorization *a, int code, const char *denial, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void refuse(struct authorization *a, int code, const char *denial, const char *fmt, ...) {
        va_list ap;

        a->code = code;
        a->denial = denial;
        va_start(ap, fmt);
        vsnprintf(a->why, sizeof(a->why), fmt, ap);
        va_end(ap);
}

/*
 * Whether peer p may get e (text), whose lease is l (NULL: none yet), as
 * GET authorizes it before it binds: a rule or an admin, a --unix-dir for a
 * new Unix socket, no lease of another uid on it or in its way, the per-user
 * and total lease limits. With bind_too (CHECK, POLICY_TEST), also whether
 * the bind would find the port taken by a lease of p's own that overlaps e
 * (EADDRINUSE, no denial: a GET learns it from its bind).
 */
static void authorize(const struct broker *b, const struct peer *p, const struct pb_endpoint *e, const char *text,
                      const struct lease *l, bool bind_too, struct authorization *ret) {
        struct authorization a = { .lease = l };
        /* Another uid's lease that overlaps e (the kernel would refuse the
         * bind), or serves the other family of e's wildcard or loopback:
         * IPv6 (or [::1]:P) beside 0.0.0.0:P would get the clients of
         * "localhost:P" that try IPv6 first. */
        const struct lease *other = l ? NULL : lease_table_conflicting(&b->leases, e, p->uid);
        /* Any lease that overlaps e: once the others' are refused, one of p's own. */
        const struct lease *overlap = l || !bind_too ? NULL : lease_table_overlapping(&b->leases, e);
        char other_text[PB_ENDPOINT_STRLEN], who[300];

        a.rule = policy_find(&b->policy, p, e);
        a.admin = !a.rule && policy_is_admin(&b->policy, p);
        if (!a.rule && !a.admin)
                refuse(&a, EACCES, "no rule", "permission denied: no rule lets %s get %s",
                       peer_who(p, who, sizeof(who)), text);
        else if (!l && endpoint_is_unix(e) && unix_dirs_find(b->opt.unix_dirs, b->opt.n_unix_dirs, e) < 0) {
                char dirs[160] = "";

                for (size_t i = 0; i < b->opt.n_unix_dirs; i++)
                        snprintf(dirs + strlen(dirs), sizeof(dirs) - strlen(dirs), "%s%s", i ? ", " : "",
                                 b->opt.unix_dirs[i]);
                refuse(&a, EACCES, "not in a --unix-dir", "%s is not directly in a directory brokerd makes sockets "
                       "in (--unix-dir: %s)", text, dirs[0] ? dirs : "none");
        } else if (l && l->owner_uid != p->uid)
                refuse(&a, EBUSY, "held by another", "%s is held by uid %u", text, (unsigned) l->owner_uid);
        else if (other) {
                a.lease = other;
                refuse(&a, EBUSY, "port held by another", "%s is held by uid %u: its lease %s %s", text,
                       (unsigned) other->owner_uid, endpoint_format(&other->endpoint, other_text),
                       endpoint_overlaps(&other->endpoint, e) ? "overlaps it" : "serves the other family of the port");
        } else if (!l && lease_table_count_owner(&b->leases, p->uid) >= b->opt.max_leases_per_user)
                refuse(&a, EDQUOT, "lease limit", "uid %u already holds %u leases, the most allowed "
                       "(--max-leases-per-user)", (unsigned) p->uid, b->opt.max_leases_per_user);
        else if (!l && b->leases.n >= b->opt.max_leases)
                refuse(&a, EDQUOT, "lease limit", "brokerd holds %u leases, the most allowed (--max-leases)",
                       b->opt.max_leases);
        else if (overlap) {     /* a GET would find the port bound: say by which lease */
                a.lease = overlap;
                refuse(&a, EADDRINUSE, NULL, "%s overlaps the lease %s of uid %u", text,
                       endpoint_format(&overlap->endpoint, other_text), (unsigned) overlap->owner_uid);
        }
        *ret = a;
}

/* authorize() for c's request of e (text): true, or false with reply set and
 * a refusal denied. *ret_rule: the rule (NULL for an admin no rule names). */
static bool authorize_request(struct conn *c, const struct pb_msg *req, struct pb_msg *reply,
                              const struct pb_endpoint *e, const char *text, const struct lease *l, bool bind_too,
                              const struct store_rule **ret_rule) {
        struct authorization a;

        authorize(c->broker, &c->peer, e, text, l, bind_too, &a);
        *ret_rule = a.rule;
        if (a.code == 0)
                return true;
        proto_set_error(reply, req->hdr.id, a.code, "%s", a.why);
        if (a.denial)
                deny(c, req, reply, text, e, a.denial);
        return false;
}

/* --- get: authorize, create the lease if needed, hand it out ---------------- */

/* Has the monitor guard and bind e for a new lease of the peer (a Unix
 * socket's file made as rule says), and records it. Returns the lease, or
 * NULL with reply set. */
static struct lease *get_create(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, const char *text,
                                const struct store_rule *rule) {
        const struct pb_endpoint *e = &req->get.endpoint;
        struct log_fields f = broker_peer_fields(&c->peer, text, e);
        struct store_event who = { .event = "create", .uid = c->peer.uid, .pid = c->peer.pid };
        char why[PB_TEXT_MAX + 1];
        struct lease *l;
        int r;

        r = broker_lease_create(c->broker, e, c->peer.uid, rule, &who, &l, why, sizeof(why));
        if (r < 0) {
                proto_set_error(reply, req->hdr.id, -r, "%s", why);
                log_event(r == -EADDRINUSE ? LOG_WARNING : LOG_ERR, "error", &f, "%s", why);
                return NULL;
        }
        log_event(LOG_INFO, "create", &f, "lease %llu created for uid %u", (unsigned long long) l->id,
                  (unsigned) c->peer.uid);
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

        if (!authorize_request(c, req, reply, e, text, l, false, &rule))
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
 * logged and audited; a lease of its own in the way is not. */
static void handle_check(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        const struct pb_endpoint *e = &req->get.endpoint;
        char buf[PB_ENDPOINT_STRLEN];
        const struct store_rule *rule;

        if (authorize_request(c, req, reply, e, endpoint_format(e, buf), lease_table_find(&c->broker->leases, e),
                              true, &rule))
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
        struct pb_endpoint gone;
        uid_t gone_owner;
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
        gone = l->endpoint;
        gone_owner = l->owner_uid;
        lease_free(l);          /* closes our copy: the port is free for a reservation it kept out */
        reservations_after_release(b, &gone, gone_owner);
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

/* The rule a POLICY_ADD describes (an admin's: no source). */
static struct store_rule rule_of(const struct pb_msg *req) {
        struct store_rule rule = { .principal = req->policy_add.principal, .pattern = req->policy_add.pattern,
                                   .perm = req->policy_add.perm, .attrs = req->policy_add.attrs };

        if (!endpoint_is_unix(&rule.pattern))
                rule.perm = (struct pb_socket_perm) { .gid = PB_SOCKET_GROUP_NONE, .mode = PB_SOCKET_MODE_DEFAULT };
        return rule;
}

/* A POLICY_ADD inside the peer's import: kept for the commit. */
static void import_add(struct conn *c, const struct pb_msg *req, struct pb_msg *reply) {
        struct policy_import *im = &c->broker->import;

        if (im->n == POLICY_RULES_MAX) {
                proto_set_error(reply, req->hdr.id, ENOSPC, "an import has at most %d rules", POLICY_RULES_MAX);
                return;
        }
        if (im->n == im->cap) {
                size_t cap = im->cap ? im->cap * 2 : 64;
                struct store_rule *rules = realloc(im->rules, cap * sizeof(*rules));

                if (!rules) {
                        proto_set_error(reply, req->hdr.id, ENOMEM, "out of memory");
                        return;
                }
                im->rules = rules;
                im->cap = cap;
        }
        im->rules[im->n++] = rule_of(req);
        reply->hdr.type = PB_MSG_POLICY_ADD | PB_MSG_REPLY;
        reply->rule_id.rule_id = 0;                     /* none yet: the commit numbers them */
}

static void handle_policy_add(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        const struct peer *p = &c->peer;
        struct store_rule rule = rule_of(req);
        char text[PB_ENDPOINT_STRLEN], who[400];
        struct log_fields f = broker_peer_fields(p, endpoint_format_pattern(&rule.pattern, text), NULL);
        struct store_event ev = { .uid = p->uid, .pid = p->pid };
        const struct store_rule *same;
        int r;

        if (b->import.conn == c) {
                import_add(c, req, reply);
                return;
        }
        same = policy_find_rule(&b->policy, &rule);
        if (same) {
                proto_set_error(reply, req->hdr.id, EEXIST, "rule %llu already says: %s", (unsigned long long) same->id,
                                store_rule_describe(same, who, sizeof(who)));
                return;
        }
        if (b->policy.n_rules >= POLICY_RULES_MAX) {
                proto_set_error(reply, req->hdr.id, ENOSPC, "too many rules (at most %d)", POLICY_RULES_MAX);
                return;
        }
        /* Room first: once the store has the rule, memory must take it too. */
        r = policy_reserve(&b->policy, 1);
        if (r >= 0)
                r = store_rule_add(b->store, &rule, &ev);
        if (r >= 0)
                r = policy_add(&b->policy, &rule);
        if (r < 0) {
                proto_set_error(reply, req->hdr.id, -r, "cannot add the rule: %s", strerror(-r));
                log_event(LOG_ERR, "error", &f, "%s", reply->error.message);
                return;
        }
        store_rule_describe(&rule, who, sizeof(who));
        log_event(LOG_INFO, "policy-add", &f, "rule %llu added: %s", (unsigned long long) rule.id, who);
        (void) reservation_make(b, &rule, false);
        reply->hdr.type = PB_MSG_POLICY_ADD | PB_MSG_REPLY;
        reply->rule_id.rule_id = rule.id;
        broker_notify_status(b);
}

static void handle_policy_remove(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        const struct peer *p = &c->peer;
        uint64_t id = req->rule_id.rule_id;
        struct log_fields f = broker_peer_fields(p, NULL, NULL);
        struct store_event ev = { .uid = p->uid, .pid = p->pid };
        const struct store_rule *rule = policy_get(&b->policy, id);
        int r;

        if (!rule) {
                proto_set_error(reply, req->hdr.id, ENOENT, "no rule %llu", (unsigned long long) id);
                return;
        }
        if (rule->source[0]) {
                proto_set_error(reply, req->hdr.id, EROFS, "rule %llu comes from %s in %s: remove it there, then "
                                "systemctl reload portbroker", (unsigned long long) id, rule->source,
                                b->opt.policy_dir ? b->opt.policy_dir : "the policy directory");
                return;
        }
        r = store_rule_remove(b->store, rule, &ev);
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

static struct pb_rule_entry rule_entry(const struct store_rule *r) {
        struct pb_rule_entry e = {
                .id = r->id,
                .principal = r->principal,
                .pattern = r->pattern,
                .perm = r->perm,
                .attrs = r->attrs,
                .created = (uint64_t) r->created,
        };

        memcpy(e.source, r->source, sizeof(e.source));
        return e;
}

static void handle_policy_list(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        const struct policy *pol = &c->broker->policy;

        reply->hdr.type = PB_MSG_POLICY_LIST | PB_MSG_REPLY;
        for (size_t i = 0; i < pol->n_rules; i++) {
                const struct store_rule *r = &pol->rules[i];

                if (r->id <= req->policy_list.after_id || !expressible(req, &r->pattern))
                        continue;
                if (reply->rules.count == PB_RULES_MAX) {
                        reply->rules.more = 1;
                        break;
                }
                reply->rules.rules[reply->rules.count++] = rule_entry(r);
                /* Unix paths and sources make entries longer than PB_RULES_MAX was sized for. */
                if (!list_fits(reply)) {
                        reply->rules.count--;
                        reply->rules.more = 1;
                        break;
                }
        }
}

/* --- imports ------------------------------------------------------------------ */

/* Forgets the import of c, if it has one. */
void request_import_end(struct conn *c) {
        struct policy_import *im = &c->broker->import;

        if (im->conn != c)
                return;
        free(im->rules);
        *im = (struct policy_import) { 0 };
}

static void handle_policy_begin(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct policy_import *im = &c->broker->import;

        if (im->conn && im->conn != c) {
                proto_set_error(reply, req->hdr.id, EBUSY, "uid %u (pid %d) is importing rules; try again once "
                                "it is done", (unsigned) im->conn->peer.uid, (int) im->conn->peer.pid);
                return;
        }
        request_import_end(c);          /* a second BEGIN starts afresh */
        im->conn = c;
        im->replace = req->policy_begin.flags & PB_POLICY_REPLACE;
        reply->hdr.type = PB_MSG_POLICY_BEGIN | PB_MSG_REPLY;
}

static void handle_policy_commit(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        struct policy_import *im = &b->import;
        struct policy_counts counts;
        char why[PB_TEXT_MAX + 1], what[300];
        size_t conflict;
        int r;

        if (im->conn != c) {
                proto_set_error(reply, req->hdr.id, EINVAL, "no import begun on this connection (POLICY_BEGIN)");
                return;
        }
        r = broker_rules_set(b, im->rules, im->n, POLICY_SCOPE_IMPORT, im->replace, &c->peer,
                             im->replace ? "import --replace" : "import", &counts, &conflict, why, sizeof(why));
        if (r == -EEXIST) {
                const struct store_rule *x = &im->rules[conflict], *there = policy_find_rule(&b->policy, x);

                store_rule_describe(x, what, sizeof(what));
                if (there && there->source[0])
                        proto_set_error(reply, req->hdr.id, EEXIST, "rule %zu of the import (%s) differs from rule "
                                        "%llu, which only %s changes", conflict + 1, what,
                                        (unsigned long long) there->id, there->source);
                else
                        proto_set_error(reply, req->hdr.id, EEXIST, "rule %zu of the import (%s) is given twice",
                                        conflict + 1, what);
        } else if (r < 0)
                proto_set_error(reply, req->hdr.id, -r, "%s; nothing changed", why);
        else {
                reply->hdr.type = PB_MSG_POLICY_COMMIT | PB_MSG_REPLY;
                reply->policy_commit.added = counts.added;
                reply->policy_commit.changed = counts.changed;
                reply->policy_commit.removed = counts.removed;
        }
        request_import_end(c);
}

/* --- tests -------------------------------------------------------------------- */

/* Sets a POLICY_TEST reply's reason (cut to fit). */
static void tested_reason(struct pb_msg *reply, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tested_reason(struct pb_msg *reply, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(reply->policy_tested.reason, sizeof(reply->policy_tested.reason), fmt, ap);
        va_end(ap);
}

/*
 * Which rule would let a peer described in the request get an endpoint, and
 * whether a GET of it would be granted now, and why: authorize() for a peer
 * made up of the request's uid (or none: user rules never match it), groups
 * and unit, never the sender. That peer lives on this stack and goes nowhere
 * else: it is not the connection's, so it gets nothing, is never logged,
 * audited or counted, and its groups are what the request says (none read
 * from a socket). Nothing is bound or changed; either verdict is a reply,
 * not a denial. Anyone may ask (the rules and leases are anyone's to list).
 */
static void handle_policy_test(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        const struct broker *b = c->broker;
        const struct pb_endpoint *e = &req->policy_test.endpoint;
        const struct lease *l = lease_table_find(&b->leases, e);
        gid_t groups[PB_TEST_GROUPS_MAX];
        struct peer peer = {
                .uid = req->policy_test.uid == PB_UID_NONE ? PEER_UID_UNKNOWN : (uid_t) req->policy_test.uid,
                .gid = (gid_t) -1,      /* none: the groups are all in the list */
                .groups = groups,
                .n_groups = req->policy_test.n_groups,
                .conn_fd = -1,
                .pid_fd = -1,
        };
        char text[PB_ENDPOINT_STRLEN], rule[32];
        struct authorization a;

        peer.account = peer.uid;
        for (size_t i = 0; i < peer.n_groups; i++)
                groups[i] = (gid_t) req->policy_test.groups[i];
        snprintf(peer.unit, sizeof(peer.unit), "%s", req->policy_test.unit);
        authorize(b, &peer, e, endpoint_format(e, text), l, true, &a);

        reply->hdr.type = PB_MSG_POLICY_TEST | PB_MSG_REPLY;
        reply->policy_tested.allowed = a.code == 0;
        reply->policy_tested.admin = a.admin;
        if (a.rule)
                reply->policy_tested.rule = rule_entry(a.rule);
        if (a.lease) {
                reply->policy_tested.lease_id = a.lease->id;
                reply->policy_tested.owner_uid = a.lease->owner_uid;
        }
        snprintf(rule, sizeof(rule), "rule %llu", a.rule ? (unsigned long long) a.rule->id : 0ULL);
        if (a.code)
                tested_reason(reply, "%s%s%s%s", a.rule ? "allowed by " : a.admin ? "allowed as an admin" : "",
                              a.rule ? rule : "", a.rule || a.admin ? ", but " : "", a.why);
        else
                tested_reason(reply, "%s%s%s", a.rule ? "allowed by " : "an admin: no rule needed", a.rule ? rule : "",
                              l ? "; its lease exists: a get hands out the same socket" : "");
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
        /* An import lives in this worker only, and the new image would
         * serve its carried connection's next POLICY_ADDs one at a time:
         * the importer finishes first (another's import is cut, below). */
        if (b->import.conn == c) {
                proto_set_error(reply, req->hdr.id, EBUSY, "this connection has an import open: commit it or "
                                "close the connection first");
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
        { PB_MSG_POLICY_TEST, "policy-test", false, handle_policy_test },
        { PB_MSG_POLICY_BEGIN, "policy-begin", true, handle_policy_begin },
        { PB_MSG_POLICY_COMMIT, "policy-commit", true, handle_policy_commit },
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
