/* SPDX-License-Identifier: MIT */
/*
 * The broker's event loop: the control socket (from socket activation or
 * created safely at --control), one connection object per client with its
 * identity read at accept and an idle timer, the request table that every
 * message is validated and dispatched through, the handlers for get,
 * release, status and policy, the watch that repairs a TCP listener a
 * holder shut down, and the batched audit writes. Peer input is never
 * fatal: a bad message gets an error reply and the connection is closed.
 */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "fdpass.h"
#include "lease.h"
#include "log.h"
#include "peer.h"
#include "policy.h"
#include "proto.h"
#include "store.h"

#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

#define FLUSH_DELAY_USEC (50 * 1000)    /* audit batch window */
#define ACCEPT_PAUSE_USEC (100 * 1000)  /* back-off when out of fds */
#define ACCEPT_BURST 64                 /* accepts per wake-up */
#define REBIND_RETRY_USEC (250 * 1000)  /* retry of leases whose port was busy */
#define CHECKPOINT_IDLE_USEC (5 * 1000 * 1000) /* WAL checkpoint after this long without writes */

struct conn {
        struct broker *broker;
        int fd;
        sd_event_source *io_source;
        sd_event_source *idle_source;
        struct peer peer;
        struct conn *prev, *next;
};

struct broker {
        struct broker_options opt;
        sd_event *event;
        int control_fd;
        bool control_created;           /* we created control_path: unlink at exit */
        bool accept_drain;              /* connections queued before the listener refused fds: accept
                                         * until EAGAIN, refusing fds on each (SO_PASSRIGHTS) */
        sd_event_source *control_source;
        sd_event_source *accept_pause_source;
        sd_event_source *flush_source;
        sd_event_source *rebind_source; /* retries unbound leases */
        sd_event_source *checkpoint_source; /* WAL checkpoint once writes pause */
        struct conn *conns;
        unsigned n_conns;
        uint64_t refused_conns;         /* over --max-connections, since start */
        struct peer_self self;
        char boot_id[STORE_BOOT_ID_MAX]; /* this boot's id: socket cookies are unique within it */
        struct policy policy;
        struct store *store;
        struct lease_table leases;
};

struct request_type {
        uint16_t type;
        const char *name;
        bool admin;                     /* only admins may send it */
        void (*handle)(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd);
};

static void conn_free(struct conn *c);

/* --- helpers --------------------------------------------------------------- */

static struct log_fields peer_fields(const struct peer *p, const char *endpoint, const struct pb_endpoint *e) {
        return (struct log_fields) {
                .endpoint = endpoint,
                .port = e ? e->port_lo : 0,
                .uid = (long) p->uid,
                .pid = (long) p->pid,
        };
}

/* Arms timer s to fire once, delay from now, unless it is armed already. */
static void arm_oneshot(struct broker *b, sd_event_source *s, uint64_t delay) {
        uint64_t now;

        if (sd_event_source_get_enabled(s, NULL) > 0)
                return;
        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(s, now + delay);
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static void audit(struct broker *b, const char *event, const struct peer *p, const char *endpoint,
                  const char *detail) {
        struct store_event ev = {
                .event = event,
                .uid = p ? (long) p->uid : -1,
                .pid = p ? (long) p->pid : -1,
                .endpoint = endpoint,
                .detail = detail,
        };

        store_event_queue(b->store, &ev);
        arm_oneshot(b, b->flush_source, FLUSH_DELAY_USEC);
}

/* Checkpoints (an fsync) only when writes pause, or when the WAL grows large:
 * never per request. */
static void schedule_checkpoint(struct broker *b) {
        uint64_t now;

        if (store_wal_pages(b->store) >= STORE_WAL_PAGES_MAX) {
                (void) store_checkpoint(b->store);
                return;
        }
        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(b->checkpoint_source, now + CHECKPOINT_IDLE_USEC);
        sd_event_source_set_enabled(b->checkpoint_source, SD_EVENT_ONESHOT);
}

static int on_checkpoint(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;
        int r;

        /* Requests came in since: not idle after all; the next flush re-arms us. */
        if (store_pending(b->store) > 0)
                return 0;
        r = store_checkpoint(b->store);
        if (r < 0)
                log_msg(LOG_WARNING, "cannot checkpoint the database: %s", strerror(-r));
        return 0;
}

static int on_flush(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;
        int r = store_flush(b->store);

        if (r < 0)
                log_msg(LOG_ERR, "cannot write audit events: %s", strerror(-r));
        schedule_checkpoint(b);
        return 0;
}

static void notify_status(struct broker *b) {
        sd_notifyf(false, "STATUS=%zu leases, %zu rules, %u connections", b->leases.n, b->policy.n_rules,
                   b->n_conns);
}

/* --- the listener watch: a holder's shutdown() is repaired at once ---------- */

static int on_listener_hup(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct lease *l = userdata;
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = { .endpoint = endpoint_format(&l->endpoint, text), .port = l->endpoint.port_lo,
                                .uid = -1, .pid = -1 };
        int r = lease_ensure_listening(l);

        if (r > 0)
                log_event(LOG_WARNING, "repair", &f, "a holder shut the listener down; listening again");
        else if (r < 0 || (revents & EPOLLERR)) {
                /* Not something listen() fixes: stop watching (no busy loop); gets still check. */
                log_event(LOG_ERR, "repair", &f, "listener reports %s and cannot be repaired: %s",
                          revents & EPOLLERR ? "an error" : "hang-up", r < 0 ? strerror(-r) : "still listening");
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
        }
        return 0;
}

static int lease_watch(struct broker *b, struct lease *l) {
        if (l->sock_fd < 0 || l->endpoint.transport != PB_TCP)
                return 0;
        /* No events asked for: epoll still reports EPOLLHUP, which a listener
         * shows once shutdown() took it out of LISTEN. */
        return sd_event_add_io(b->event, &l->hup_source, l->sock_fd, 0, on_listener_hup, l);
}

/* --- holders: processes that got a lease's socket, until they exit -------- */

static void holder_clear(struct lease_holder *h) {
        h->exit_source = sd_event_source_disable_unref(h->exit_source);
        if (h->pidfd >= 0)
                close(h->pidfd);
        h->pidfd = -1;
        h->pid = 0;
}

static int on_holder_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        holder_clear(userdata);
        return 0;
}

/* Watches the peer as a holder of l: distinct pids, the oldest forgotten past LEASE_HOLDERS_MAX. */
static void holder_add(struct broker *b, struct lease *l, const struct peer *p) {
        struct lease_holder *h = &l->holders[l->holders_next];

        if (p->pidfd < 0)
                return;
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                if (l->holders[i].pid == p->pid)
                        return;
        holder_clear(h);
        h->pidfd = fcntl(p->pidfd, F_DUPFD_CLOEXEC, 3);
        if (h->pidfd < 0)
                return;
        h->pid = p->pid;
        /* A pidfd turns readable when its process exits. */
        if (sd_event_add_io(b->event, &h->exit_source, h->pidfd, EPOLLIN, on_holder_exit, h) < 0) {
                holder_clear(h);
                return;
        }
        l->holders_next = (l->holders_next + 1) % LEASE_HOLDERS_MAX;
}

static unsigned holders_live(const struct lease *l) {
        unsigned n = 0;

        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                n += l->holders[i].pidfd >= 0;
        return n;
}

static void lease_free(struct lease *l) {
        if (!l)
                return;
        l->hup_source = sd_event_source_disable_unref(l->hup_source);
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                holder_clear(&l->holders[i]);
        lease_close_socket(l);
        free(l);
}

static struct lease *lease_new(void) {
        struct lease *l = malloc(sizeof(*l));

        if (l)
                lease_init(l);
        return l;
}

/* Binds an unbound lease, or adopts the socket a holder kept from an earlier
 * broker, and watches it. Returns 0 or -errno; logs success only (the
 * failure was logged when the lease came back). */
static int lease_try_bind(struct broker *b, struct lease *l, uint64_t adopt_cookie) {
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = { .endpoint = endpoint_format(&l->endpoint, text), .port = l->endpoint.port_lo,
                                .uid = (long) l->owner_uid, .pid = -1 };
        int r = lease_bind(&l->endpoint, l->backlog, &l->sock_fd);
        pid_t from;

        if (r == -EADDRINUSE && adopt_cookie &&
            lease_adopt(&l->endpoint, geteuid(), adopt_cookie, &l->sock_fd, &from) >= 0) {
                log_event(LOG_INFO, "adopt", &f, "lease %llu: took its socket back from pid %d, which still held it",
                          (unsigned long long) l->id, (int) from);
        } else if (r < 0)
                return r;
        else {
                log_event(LOG_INFO, "rebind", &f, "lease %llu bound again", (unsigned long long) l->id);
                r = store_lease_set_socket(b->store, l->id, lease_socket_cookie(l->sock_fd), b->boot_id);
                if (r < 0)
                        log_event(LOG_WARNING, "error", &f, "cannot record the new socket: %s; a holder that "
                                  "outlives a broker crash will not be taken back", strerror(-r));
        }
        if (lease_watch(b, l) < 0)
                log_event(LOG_WARNING, "error", &f, "cannot watch the listener; repairs happen at the next get");
        return 0;
}

/* Retries every unbound lease, so a port is taken back soon after whatever
 * held it (say a holder that outlived a broker crash) lets go. */
static int on_rebind(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;
        bool pending = false;

        for (size_t i = 0; i < b->leases.n; i++) {
                struct lease *l = b->leases.by_id[i];

                if (l->sock_fd < 0 && lease_try_bind(b, l, 0) < 0)
                        pending = true;
        }
        if (pending)
                arm_oneshot(b, b->rebind_source, REBIND_RETRY_USEC);
        return 0;
}

/* --- request handlers ------------------------------------------------------ */

static void handle_get(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        const struct pb_endpoint *e = &req->get.endpoint;
        const struct peer *p = &c->peer;
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = peer_fields(p, endpoint_format(e, text), e);
        struct lease *l;
        bool created = false;
        int r;

        if (!policy_is_admin(&b->policy, p) && !policy_find(&b->policy, p, e)) {
                proto_set_error(reply, req->hdr.id, EACCES, "permission denied: no rule lets uid %u get %s",
                                (unsigned) p->uid, text);
                log_event(LOG_NOTICE, "deny", &f, "%s", reply->error.message);
                audit(b, "deny", p, text, "no rule");
                return;
        }

        l = lease_table_find(&b->leases, e);
        if (l && l->owner_uid != p->uid) {
                proto_set_error(reply, req->hdr.id, EBUSY, "%s is held by uid %u", text, (unsigned) l->owner_uid);
                log_event(LOG_NOTICE, "deny", &f, "%s", reply->error.message);
                audit(b, "deny", p, text, "held by another");
                return;
        }

        if (!l) {
                struct store_lease sl = { .endpoint = *e, .owner_uid = p->uid };
                struct store_event ev = { .event = "create", .uid = p->uid, .pid = p->pid, .endpoint = text };
                int sock_fd;

                if (lease_table_count_owner(&b->leases, p->uid) >= b->opt.max_leases_per_user) {
                        proto_set_error(reply, req->hdr.id, EDQUOT,
                                        "uid %u already holds %u leases, the most allowed (--max-leases-per-user)",
                                        (unsigned) p->uid, b->opt.max_leases_per_user);
                        log_event(LOG_NOTICE, "deny", &f, "%s", reply->error.message);
                        audit(b, "deny", p, text, "lease limit");
                        return;
                }
                r = lease_bind(e, b->opt.backlog, &sock_fd);
                if (r < 0) {
                        proto_set_error(reply, req->hdr.id, -r, "cannot bind %s: %s%s", text, strerror(-r),
                                        r == -EADDRINUSE ? " (another socket holds the port)" : "");
                        log_event(LOG_WARNING, "error", &f, "%s", reply->error.message);
                        return;
                }
                l = lease_new();
                if (!l) {
                        close(sock_fd);
                        proto_set_error(reply, req->hdr.id, ENOMEM, "out of memory");
                        return;
                }
                l->sock_fd = sock_fd;
                sl.socket_cookie = lease_socket_cookie(sock_fd);
                snprintf(sl.boot_id, sizeof(sl.boot_id), "%s", b->boot_id);
                r = store_lease_add(b->store, &sl, &ev);
                if (r >= 0) {
                        l->id = sl.id;
                        l->endpoint = *e;
                        l->owner_uid = p->uid;
                        l->since = sl.created;
                        l->backlog = b->opt.backlog;
                        r = lease_table_add(&b->leases, l);
                        if (r < 0) {    /* out of memory: keep store and table alike */
                                struct store_event undo = { .event = "release", .uid = p->uid, .pid = p->pid,
                                                            .endpoint = text, .detail = "creation undone" };
                                (void) store_lease_remove(b->store, sl.id, &undo);
                        }
                }
                if (r < 0) {
                        lease_free(l);
                        proto_set_error(reply, req->hdr.id, -r, "cannot record the lease for %s: %s", text,
                                        strerror(-r));
                        log_event(LOG_ERR, "error", &f, "%s", reply->error.message);
                        return;
                }
                if (lease_watch(b, l) < 0)
                        log_event(LOG_WARNING, "error", &f, "cannot watch the listener; repairs happen at the next get");
                created = true;
                log_event(LOG_INFO, "create", &f, "lease %llu created for uid %u", (unsigned long long) l->id,
                          (unsigned) p->uid);
                notify_status(b);
        }

        if (l->sock_fd < 0) {
                /* Not re-bound at start (the port was busy): try again now. */
                r = lease_try_bind(b, l, 0);
                if (r < 0) {
                        proto_set_error(reply, req->hdr.id, -r, "cannot bind %s again: %s%s", text, strerror(-r),
                                        r == -EADDRINUSE ? " (another socket holds the port; brokerd retries)" : "");
                        log_event(LOG_WARNING, "error", &f, "%s", reply->error.message);
                        return;
                }
        }

        r = lease_ensure_listening(l);
        if (r > 0) {
                log_event(LOG_WARNING, "repair", &f, "a holder had shut the listener down; listening again");
                sd_event_source_set_enabled(l->hup_source, SD_EVENT_ON);
        } else if (r < 0) {
                proto_set_error(reply, req->hdr.id, -r, "cannot listen on %s again: %s", text, strerror(-r));
                log_event(LOG_ERR, "error", &f, "%s", reply->error.message);
                return;
        }

        reply->hdr.type = PB_MSG_GET | PB_MSG_REPLY;
        reply->got.endpoint = *e;
        reply->got.lease_id = l->id;
        reply->got.created = created;
        *ret_fd = l->sock_fd;
        l->handouts++;
        holder_add(b, l, p);
        /* A repeat get is a debug line (one write() per get otherwise); the
         * audit trail records every grant. */
        log_event(created ? LOG_INFO : LOG_DEBUG, "grant", &f, "lease %llu handed out", (unsigned long long) l->id);
        audit(b, "grant", p, text, created ? "created" : NULL);
}

static void handle_release(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        const struct pb_endpoint *e = &req->get.endpoint;
        const struct peer *p = &c->peer;
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = peer_fields(p, endpoint_format(e, text), e);
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
                log_event(LOG_NOTICE, "deny", &f, "%s", reply->error.message);
                audit(b, "deny", p, text, "release by non-owner");
                return;
        }
        r = store_lease_remove(b->store, l->id, &ev);
        if (r < 0 && r != -ENOENT) {
                proto_set_error(reply, req->hdr.id, -r, "cannot record the release of %s: %s", text, strerror(-r));
                log_event(LOG_ERR, "error", &f, "%s", reply->error.message);
                return;
        }
        lease_table_remove(&b->leases, l);
        log_event(LOG_INFO, "release", &f, "lease %llu released", (unsigned long long) l->id);
        lease_free(l);
        reply->hdr.type = PB_MSG_RELEASE | PB_MSG_REPLY;
        notify_status(b);
}

static void lease_entry(const struct lease *l, struct pb_lease_entry *out) {
        *out = (struct pb_lease_entry) {
                .id = l->id,
                .endpoint = l->endpoint,
                .owner_uid = l->owner_uid,
                .since = (uint64_t) l->since,
                .handouts = l->handouts,
                .holders = holders_live(l),
                .queued = lease_queued(l),
                .backlog = l->endpoint.transport == PB_TCP ? l->backlog : 0,
                .bound = l->sock_fd >= 0,
        };
}

static void handle_status(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        struct lease_table *t = &b->leases;

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
        for (size_t i = lease_table_after(t, req->status.after_id); i < t->n; i++) {
                if (reply->leases.count == PB_LIST_MAX) {
                        reply->leases.more = 1;
                        break;
                }
                lease_entry(t->by_id[i], &reply->leases.leases[reply->leases.count++]);
        }
}

static void policy_denied(struct conn *c, const struct pb_msg *req, struct pb_msg *reply) {
        struct broker *b = c->broker;
        struct log_fields f = peer_fields(&c->peer, NULL, NULL);

        if (b->opt.has_admin_gid)
                proto_set_error(reply, req->hdr.id, EPERM,
                                "permission denied: only root or members of group %s may change policy",
                                b->opt.admin_group);
        else
                proto_set_error(reply, req->hdr.id, EPERM,
                                "permission denied: only root or uid %u may change policy (see --admin-group)",
                                (unsigned) b->policy.self_uid);
        log_event(LOG_NOTICE, "deny", &f, "%s", reply->error.message);
        audit(b, "deny", &c->peer, NULL, "policy change by non-admin");
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
        struct store_rule rule = { .principal = req->policy_add.principal, .pattern = req->policy_add.pattern };
        char text[PB_ENDPOINT_STRLEN], who[300], detail[400];
        struct log_fields f = peer_fields(p, endpoint_format_pattern(&rule.pattern, text), NULL);
        struct store_event ev = { .event = "policy-add", .uid = p->uid, .pid = p->pid, .endpoint = text,
                                  .detail = principal_text(&rule.principal, who, sizeof(who)) };
        int r;

        for (size_t i = 0; i < b->policy.n_rules; i++) {
                const struct store_rule *o = &b->policy.rules[i];
                if (memcmp(&o->principal, &rule.principal, sizeof(rule.principal)) == 0 &&
                    endpoint_equal(&o->pattern, &rule.pattern)) {
                        proto_set_error(reply, req->hdr.id, EEXIST, "rule %llu already lets %s get %s",
                                        (unsigned long long) o->id, who, text);
                        return;
                }
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
        snprintf(detail, sizeof(detail), "rule %llu: %s may get %s", (unsigned long long) rule.id, who, text);
        log_event(LOG_INFO, "policy-add", &f, "%s", detail);
        reply->hdr.type = PB_MSG_POLICY_ADD | PB_MSG_REPLY;
        reply->rule_id.rule_id = rule.id;
        notify_status(b);
}

static void handle_policy_remove(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        struct broker *b = c->broker;
        const struct peer *p = &c->peer;
        uint64_t id = req->rule_id.rule_id;
        struct log_fields f = peer_fields(p, NULL, NULL);
        char detail[64];
        struct store_event ev = { .event = "policy-remove", .uid = p->uid, .pid = p->pid, .detail = detail };
        int r;

        snprintf(detail, sizeof(detail), "rule %llu", (unsigned long long) id);
        if (!policy_get(&b->policy, id)) {
                proto_set_error(reply, req->hdr.id, ENOENT, "no rule %llu", (unsigned long long) id);
                return;
        }
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
        notify_status(b);
}

static void handle_policy_list(struct conn *c, const struct pb_msg *req, struct pb_msg *reply, int *ret_fd) {
        const struct policy *pol = &c->broker->policy;

        reply->hdr.type = PB_MSG_POLICY_LIST | PB_MSG_REPLY;
        for (size_t i = 0; i < pol->n_rules; i++) {
                const struct store_rule *r = &pol->rules[i];

                if (r->id <= req->policy_list.after_id)
                        continue;
                if (reply->rules.count == PB_RULES_MAX) {
                        reply->rules.more = 1;
                        break;
                }
                reply->rules.rules[reply->rules.count++] = (struct pb_rule_entry) {
                        .id = r->id,
                        .principal = r->principal,
                        .pattern = r->pattern,
                        .created = (uint64_t) r->created,
                };
        }
}

static const struct request_type request_types[] = {
        { PB_MSG_GET, "get", false, handle_get },
        { PB_MSG_RELEASE, "release", false, handle_release },
        { PB_MSG_STATUS, "status", false, handle_status },
        { PB_MSG_POLICY_ADD, "policy-add", true, handle_policy_add },
        { PB_MSG_POLICY_REMOVE, "policy-remove", true, handle_policy_remove },
        { PB_MSG_POLICY_LIST, "policy-list", false, handle_policy_list },
};

/* --- connections ----------------------------------------------------------- */

static int conn_send(struct conn *c, const struct pb_msg *reply, int fd) {
        uint8_t buf[PB_MSG_MAX];
        int n = proto_encode(reply, buf, sizeof(buf));

        if (n < 0)
                return n;
        /* Never block on a peer that does not read: it loses its connection. */
        return fdpass_send(c->fd, buf, (size_t) n, fd, MSG_DONTWAIT);
}

/* Logs a protocol error, answers it when possible and closes the connection. */
static void conn_reject(struct conn *c, uint32_t id, int code, const char *why) {
        struct log_fields f = peer_fields(&c->peer, NULL, NULL);
        struct pb_msg reply;

        log_event(LOG_WARNING, "bad-message", &f, "%s; closing the connection", why);
        audit(c->broker, "bad-message", &c->peer, NULL, why);
        proto_set_error(&reply, id, code, "%s", why);
        (void) conn_send(c, &reply, -1);
        conn_free(c);
}

static void conn_handle(struct conn *c, const uint8_t *buf, size_t len) {
        const struct request_type *rt = NULL;
        struct pb_header hdr;
        struct pb_msg req, reply;
        const char *bad = NULL;
        int code = EBADMSG, fd = -1, r;

        if (proto_decode_header(buf, len, &hdr) < 0) {
                hdr.id = 0;
                bad = "malformed request: bad header or length";
        } else if (hdr.version != PB_PROTO_VERSION) {
                code = EPROTONOSUPPORT;
                bad = "unsupported protocol version";
        } else {
                for (size_t i = 0; i < sizeof(request_types) / sizeof(request_types[0]); i++)
                        if (request_types[i].type == hdr.type)
                                rt = &request_types[i];
                if (!rt)
                        bad = "malformed request: unknown message type";
                else if (proto_decode(buf, len, &req) < 0)
                        bad = "malformed request: bad fields or length for its type";
        }
        if (bad) {
                conn_reject(c, hdr.id, code, bad);
                return;
        }

        memset(&reply, 0, sizeof(reply));
        reply.hdr.id = hdr.id;
        if (c->peer.doubt) {
                struct log_fields f = peer_fields(&c->peer, NULL, NULL);

                proto_set_error(&reply, hdr.id, EACCES, "permission denied: %s", c->peer.doubt);
                log_event(LOG_NOTICE, "deny", &f, "%s", reply.error.message);
                audit(c->broker, "deny", &c->peer, NULL, c->peer.doubt);
        } else if (rt->admin && !policy_is_admin(&c->broker->policy, &c->peer))
                policy_denied(c, &req, &reply);
        else
                rt->handle(c, &req, &reply, &fd);

        r = conn_send(c, &reply, reply.hdr.type == PB_MSG_ERROR ? -1 : fd);
        if (r < 0) {
                struct log_fields f = peer_fields(&c->peer, NULL, NULL);

                log_event(LOG_NOTICE, "error", &f, "cannot send the %s reply: %s; closing", rt->name, strerror(-r));
                conn_free(c);
        }
}

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct conn *c = userdata;
        uint8_t buf[PB_MSG_MAX];
        uint64_t now;
        int n;

        n = fdpass_recv(fd, buf, sizeof(buf), NULL, MSG_DONTWAIT);
        if (n == -EAGAIN)
                return 0;
        if (n == -EBADMSG) {
                conn_reject(c, 0, EBADMSG, "malformed request: file descriptors or control data attached");
                return 0;
        }
        if (n == -EMSGSIZE) {
                conn_reject(c, 0, EMSGSIZE, "malformed request: larger than 4096 bytes");
                return 0;
        }
        if (n <= 0) {
                conn_free(c);           /* EOF or a dead peer */
                return 0;
        }

        sd_event_now(c->broker->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(c->idle_source, now + (uint64_t) c->broker->opt.idle_timeout_sec * 1000000);
        conn_handle(c, buf, (size_t) n);
        return 0;
}

static int on_conn_idle(sd_event_source *s, uint64_t usec, void *userdata) {
        struct conn *c = userdata;
        struct log_fields f = peer_fields(&c->peer, NULL, NULL);

        log_event(LOG_INFO, "idle-timeout", &f, "no request for %u s; closing the connection",
                  c->broker->opt.idle_timeout_sec);
        conn_free(c);
        return 0;
}

static void conn_free(struct conn *c) {
        struct broker *b = c->broker;

        c->io_source = sd_event_source_disable_unref(c->io_source);
        c->idle_source = sd_event_source_disable_unref(c->idle_source);
        if (c->fd >= 0)
                close(c->fd);
        peer_done(&c->peer);
        if (c->prev)
                c->prev->next = c->next;
        else
                b->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        b->n_conns--;
        free(c);
}

/* Refuses a connection with an error reply. Consumes fd. */
static void refuse(int fd, int code, const char *why) {
        struct pb_msg reply;
        uint8_t buf[PB_MSG_MAX];
        int n;

        proto_set_error(&reply, 0, code, "%s", why);
        n = proto_encode(&reply, buf, sizeof(buf));
        if (n > 0)
                (void) fdpass_send(fd, buf, (size_t) n, -1, MSG_DONTWAIT);
        close(fd);
}

static unsigned conns_of_uid(const struct broker *b, uid_t uid) {
        unsigned n = 0;

        for (const struct conn *c = b->conns; c; c = c->next)
                n += c->peer.uid == uid;
        return n;
}

/* Takes ownership of fd (consumes it). */
static void conn_new(struct broker *b, int fd) {
        struct conn *c = calloc(1, sizeof(*c));
        uint64_t now;
        int r;

        if (!c) {
                close(fd);
                return;
        }
        c->broker = b;
        c->fd = fd;
        c->peer.pidfd = -1;
        /* A connection sees the unit rules that existed when it was accepted. */
        r = peer_identify(fd, &b->self, b->policy.n_unit_rules > 0, &c->peer);
        if (r < 0) {
                c->peer.pidfd = -1;
                c->peer.doubt = "cannot read the peer's credentials";
        }
        /* One uid cannot take every slot; admins are trusted. */
        if (!policy_is_admin(&b->policy, &c->peer) &&
            conns_of_uid(b, c->peer.uid) >= b->opt.max_connections_per_user) {
                struct log_fields f = peer_fields(&c->peer, NULL, NULL);
                char why[128];

                snprintf(why, sizeof(why), "uid %u already has %u connections to brokerd, the most allowed",
                         (unsigned) c->peer.uid, b->opt.max_connections_per_user);
                log_event(LOG_WARNING, "conn-limit", &f, "%s", why);
                refuse(fd, EUSERS, why);
                peer_done(&c->peer);
                free(c);
                return;
        }
        c->next = b->conns;
        if (b->conns)
                b->conns->prev = c;
        b->conns = c;
        b->n_conns++;

        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        r = sd_event_add_io(b->event, &c->io_source, fd, EPOLLIN, on_conn_io, c);
        if (r >= 0)
                r = sd_event_add_time(b->event, &c->idle_source, CLOCK_MONOTONIC,
                                      now + (uint64_t) b->opt.idle_timeout_sec * 1000000, 100 * 1000, on_conn_idle,
                                      c);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->idle_source, SD_EVENT_ON);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot watch a new connection: %s", strerror(-r));
                conn_free(c);
                return;
        }
        /* Clients send their request right after connect(), so it is usually
         * queued already: reading it now saves a loop iteration (an
         * epoll_wait()). Nothing there: EAGAIN, and the io source waits. */
        (void) on_conn_io(c->io_source, fd, EPOLLIN, c);
}

static int on_accept_resume(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;

        sd_event_source_set_enabled(b->control_source, SD_EVENT_ON);
        return 0;
}

/* Accepts one connection per wake-up: the listener is level-triggered, so a
 * second one pending wakes us at once, while looping until EAGAIN costs a
 * failing accept4() on nearly every wake-up. Connections accepted once the
 * listener refuses fds inherit SO_PASSRIGHTS=0; those queued before (under
 * socket activation) are drained in bursts and get it one by one. */
static int on_control(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct broker *b = userdata;

        for (int i = 0; i < ACCEPT_BURST; i++) {
                int zero = 0;
                int conn_fd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                if (conn_fd < 0) {
                        if (errno == EAGAIN)
                                b->accept_drain = false;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                log_msg(LOG_WARNING, "cannot accept: %s; pausing new connections for 100 ms",
                                        strerror(errno));
                                sd_event_source_set_enabled(b->control_source, SD_EVENT_OFF);
                                arm_oneshot(b, b->accept_pause_source, ACCEPT_PAUSE_USEC);
                        }
                        return 0;
                }
                if (b->accept_drain)
                        (void) setsockopt(conn_fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero));

                if (b->n_conns >= b->opt.max_connections) {
                        char why[128];

                        snprintf(why, sizeof(why), "brokerd is at its limit of %u connections; try again",
                                 b->opt.max_connections);
                        refuse(conn_fd, EUSERS, why);
                        /* One line per power of two: a flood does not flood the log. */
                        b->refused_conns++;
                        if ((b->refused_conns & (b->refused_conns - 1)) == 0)
                                log_event(LOG_WARNING, "conn-limit", &(struct log_fields) LOG_FIELDS_NONE,
                                          "%llu connections refused so far at the limit of %u",
                                          (unsigned long long) b->refused_conns, b->opt.max_connections);
                } else
                        conn_new(b, conn_fd);
                if (!b->accept_drain)
                        break;
        }
        return 0;
}

/* --- control socket -------------------------------------------------------- */

/* Creates dir (one level) or checks an existing one: a real directory,
 * ours or root's, writable by nobody else unless sticky. */
static int ensure_private_dir(const char *dir, mode_t mode) {
        struct stat st;

        if (mkdir(dir, mode) == 0)
                (void) chmod(dir, mode);        /* not narrowed by our umask */
        else if (errno != EEXIST) {
                int r = -errno;
                log_msg(LOG_ERR, "cannot create directory %s: %s", dir, strerror(errno));
                return r;
        }
        if (lstat(dir, &st) < 0) {
                int r = -errno;
                log_msg(LOG_ERR, "cannot inspect %s: %s", dir, strerror(errno));
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                log_msg(LOG_ERR, "%s is not a directory (a symlink?); refusing to use it", dir);
                return -ENOTDIR;
        }
        /* A sticky directory (like /tmp) keeps others from replacing our files. */
        if ((st.st_uid != geteuid() && st.st_uid != 0) || ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))) {
                log_msg(LOG_ERR, "%s must be owned by uid %u or root and not writable by group or others",
                        dir, (unsigned) geteuid());
                return -EPERM;
        }
        return 0;
}

static int parent_dir(const char *path, char *buf, size_t len) {
        const char *slash = strrchr(path, '/');

        if (!slash)
                snprintf(buf, len, ".");
        else if (slash == path)
                snprintf(buf, len, "/");
        else if ((size_t) (slash - path) < len)
                snprintf(buf, len, "%.*s", (int) (slash - path), path);
        else
                return -ENAMETOOLONG;
        return 0;
}

/* Refuses to replace a live broker's socket; a stale one is replaced atomically. */
static int check_existing_socket(const char *path, const struct sockaddr_un *sa) {
        struct stat st;
        int fd, r;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode)) {
                log_msg(LOG_ERR, "%s exists and is not a socket; refusing to replace it", path);
                return -EEXIST;
        }
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        r = connect(fd, (const struct sockaddr *) sa, sizeof(*sa));
        close(fd);
        if (r == 0) {
                log_msg(LOG_ERR, "another brokerd is listening on %s", path);
                return -EADDRINUSE;
        }
        return 0;
}

static int control_create(struct broker *b) {
        const char *path = b->opt.control_path;
        struct sockaddr_un sa = { .sun_family = AF_UNIX }, tmp = { .sun_family = AF_UNIX };
        char dir[sizeof(sa.sun_path)];
        int fd, r, zero = 0;

        if (strlen(path) >= sizeof(sa.sun_path) - 16) {
                log_msg(LOG_ERR, "control socket path too long: %s", path);
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);
        snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%s.%d.tmp", path, (int) getpid());
        r = parent_dir(path, dir, sizeof(dir));
        if (r >= 0)
                r = ensure_private_dir(dir, 0755);
        if (r >= 0)
                r = check_existing_socket(path, &sa);
        if (r < 0)
                return r;

        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* No fds may be sent to us at all, where the kernel can refuse them
         * (6.16+). Set before listen(): every connection inherits it. */
        (void) setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero));
        unlink(tmp.sun_path);
        if (bind(fd, (struct sockaddr *) &tmp, sizeof(tmp)) < 0 || chmod(tmp.sun_path, 0666) < 0 ||
            listen(fd, SOMAXCONN) < 0 || rename(tmp.sun_path, path) < 0) {
                r = -errno;
                log_msg(LOG_ERR, "cannot create control socket %s: %s", path, strerror(errno));
                unlink(tmp.sun_path);
                close(fd);
                return r;
        }
        b->control_fd = fd;
        b->control_created = true;
        return 0;
}

static int control_setup(struct broker *b) {
        int zero = 0, n = sd_listen_fds(true);

        if (n < 0) {
                log_msg(LOG_ERR, "cannot read sockets from systemd: %s", strerror(-n));
                return n;
        }
        if (n > 1) {
                log_msg(LOG_ERR, "systemd passed %d sockets; expected one (ListenSequentialPacket=)", n);
                return -EINVAL;
        }
        if (n == 1) {
                if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_SEQPACKET, 1, NULL, 0) <= 0) {
                        log_msg(LOG_ERR, "the socket systemd passed is not a listening AF_UNIX SOCK_SEQPACKET socket");
                        return -EINVAL;
                }
                b->control_fd = SD_LISTEN_FDS_START;
                if (fcntl(b->control_fd, F_SETFD, FD_CLOEXEC) < 0 ||
                    fcntl(b->control_fd, F_SETFL, fcntl(b->control_fd, F_GETFL) | O_NONBLOCK) < 0)
                        return -errno;
                /* Connections accepted from now on inherit it; those queued
                 * already do not (accept_drain). Kernels before 6.16 lack it:
                 * fds sent to us are closed and the message rejected. */
                if (setsockopt(b->control_fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero)) == 0)
                        b->accept_drain = true;
        } else {
                int r = control_create(b);
                if (r < 0)
                        return r;
        }
        return sd_event_add_io(b->event, &b->control_source, b->control_fd, EPOLLIN, on_control, b);
}

/* --- start-up -------------------------------------------------------------- */

static int load_rule(const struct store_rule *r, void *userdata) {
        return policy_add(userdata, r);
}

static int load_lease(const struct store_lease *sl, void *userdata) {
        struct broker *b = userdata;
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = { .endpoint = endpoint_format(&sl->endpoint, text), .port = sl->endpoint.port_lo,
                                .uid = (long) sl->owner_uid, .pid = -1 };
        struct lease *l = lease_new();
        int r;

        if (!l)
                return -ENOMEM;
        l->id = sl->id;
        l->endpoint = sl->endpoint;
        l->owner_uid = sl->owner_uid;
        l->since = sl->created;
        l->backlog = b->opt.backlog;
        r = lease_table_add(&b->leases, l);
        if (r < 0) {
                lease_free(l);
                return r;
        }
        /* Only a socket of this boot can still be held somewhere. */
        r = lease_try_bind(b, l, strcmp(sl->boot_id, b->boot_id) == 0 ? sl->socket_cookie : 0);
        if (r < 0) {
                log_event(LOG_ERR, "rebind", &f, "cannot bind lease %llu again: %s; retrying until it is free",
                          (unsigned long long) sl->id, strerror(-r));
                arm_oneshot(b, b->rebind_source, REBIND_RETRY_USEC);
        }
        return 0;
}

static int read_boot_id(char *buf, size_t len) {
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
        int r = f && fgets(buf, (int) len, f) ? 0 : -EIO;

        if (f)
                fclose(f);
        buf[strcspn(buf, "\n")] = '\0';
        return r;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct broker *b = userdata;

        log_msg(LOG_INFO, "received %s; stopping", strsignal((int) si->ssi_signo));
        return sd_event_exit(b->event, 0);
}

int broker_new(const struct broker_options *opt, struct broker **ret) {
        struct broker *b = calloc(1, sizeof(*b));
        char errbuf[256] = "", dir[4096];
        sigset_t mask;
        int r;

        if (!b)
                return -ENOMEM;
        b->opt = *opt;
        b->control_fd = -1;
        b->self.userns_fd = b->self.netns_fd = -1;
        b->policy.self_uid = geteuid();
        b->policy.has_admin_gid = opt->has_admin_gid;
        b->policy.admin_gid = opt->admin_gid;

        r = read_boot_id(b->boot_id, sizeof(b->boot_id));
        if (r >= 0)
                r = peer_self_init(&b->self);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot read the broker's own namespaces: %s", strerror(-r));
                goto fail;
        }
        /* Not sd_event_default(): that one checks its thread with a gettid()
         * system call on every loop iteration. */
        r = sd_event_new(&b->event);
        if (r < 0)
                goto fail;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        if ((r = sd_event_add_signal(b->event, NULL, SIGTERM, on_signal, b)) < 0 ||
            (r = sd_event_add_signal(b->event, NULL, SIGINT, on_signal, b)) < 0 ||
            (r = sd_event_add_time(b->event, &b->flush_source, CLOCK_MONOTONIC, 0, 10 * 1000, on_flush, b)) < 0 ||
            (r = sd_event_add_time(b->event, &b->accept_pause_source, CLOCK_MONOTONIC, 0, 10 * 1000,
                                   on_accept_resume, b)) < 0 ||
            (r = sd_event_add_time(b->event, &b->rebind_source, CLOCK_MONOTONIC, 0, 50 * 1000, on_rebind, b)) < 0 ||
            (r = sd_event_add_time(b->event, &b->checkpoint_source, CLOCK_MONOTONIC, 0, 500 * 1000,
                                   on_checkpoint, b)) < 0)
                goto fail;
        sd_event_source_set_enabled(b->checkpoint_source, SD_EVENT_OFF);
        sd_event_source_set_enabled(b->flush_source, SD_EVENT_OFF);
        sd_event_source_set_enabled(b->accept_pause_source, SD_EVENT_OFF);
        sd_event_source_set_enabled(b->rebind_source, SD_EVENT_OFF);
        (void) sd_event_set_watchdog(b->event, true);

        r = parent_dir(opt->db_path, dir, sizeof(dir));
        if (r >= 0)
                r = ensure_private_dir(dir, 0700);
        if (r < 0)
                goto fail;
        r = store_open(opt->db_path, &b->store, errbuf, sizeof(errbuf));
        if (r < 0) {
                log_msg(LOG_ERR, "cannot use database %s: %s (refusing to start without its policy)",
                        opt->db_path, errbuf);
                goto fail;
        }
        r = store_rules_load(b->store, load_rule, &b->policy);
        if (r >= 0)
                r = store_leases_load(b->store, load_lease, b);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot load database %s: %s", opt->db_path, strerror(-r));
                goto fail;
        }
        r = control_setup(b);
        if (r < 0)
                goto fail;
        *ret = b;
        return 0;

fail:
        broker_free(b);
        return r;
}

int broker_run(struct broker *b, int ready_fd) {
        struct log_fields f = LOG_FIELDS_NONE;
        int r;

        log_event(LOG_INFO, "ready", &f, "serving %zu leases and %zu rules", b->leases.n, b->policy.n_rules);
        sd_notifyf(false, "READY=1\nSTATUS=%zu leases, %zu rules", b->leases.n, b->policy.n_rules);
        if (ready_fd >= 0) {
                (void) !write(ready_fd, "", 1);
                close(ready_fd);
        }
        r = sd_event_loop(b->event);
        sd_notify(false, "STOPPING=1");
        log_event(LOG_INFO, "stop", &f, "stopping; %zu leases stay recorded", b->leases.n);
        return r;
}

void broker_free(struct broker *b) {
        if (!b)
                return;
        while (b->conns)
                conn_free(b->conns);
        for (size_t i = 0; i < b->leases.n; i++)
                lease_free(b->leases.by_id[i]);
        lease_table_done(&b->leases);
        b->control_source = sd_event_source_disable_unref(b->control_source);
        b->flush_source = sd_event_source_disable_unref(b->flush_source);
        b->accept_pause_source = sd_event_source_disable_unref(b->accept_pause_source);
        b->rebind_source = sd_event_source_disable_unref(b->rebind_source);
        b->checkpoint_source = sd_event_source_disable_unref(b->checkpoint_source);
        if (b->control_fd >= 0)
                close(b->control_fd);
        if (b->control_created)
                unlink(b->opt.control_path);
        store_close(b->store);
        peer_self_done(&b->self);
        policy_done(&b->policy);
        sd_event_unref(b->event);
        free(b);
}
