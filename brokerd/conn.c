/* SPDX-License-Identifier: MIT */
/*
 * Control connections: one per client, its peer identified once at accept
 * by the monitor (never from anything the peer sends). Reads one message at a time and
 * hands it to the request table; a message with fds or control data
 * attached, or too large, is rejected and the connection closed.
 *
 * No set of non-admin peers can keep an admin or a new peer out. The peer
 * is identified before any limit is applied: an admin may use the whole
 * table, others all but a sixteenth of it, and a uid (with every uid of the
 * user namespaces below ours that it owns) --max-connections-per-user.
 * When the table is full, the longest-idle connection of a non-admin is
 * closed for the new one: the list runs from the most recently active to
 * the longest idle, and a new connection enters at the front, so a flood
 * of connections evicts its own before a new peer's (whose request is
 * served as soon as it arrives: sd-event dispatches the oldest pending
 * source first). A denied request is no activity, a peer in doubt is closed
 * after its error, and no connection lives past --max-connection-age.
 * Clients reconnect and resend on a connection closed without a reply.
 */
#include "broker-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "fd-util.h"
#include "fdpass.h"

#define USEC_PER_SEC 1000000ULL
#define CONN_BATCH 64                   /* connections served per turn of the loop */

int conn_send_fd(int sock_fd, const struct pb_msg *reply, int fd) {
        uint8_t buf[PB_MSG_MAX];
        int n = proto_encode(reply, buf, sizeof(buf));

        if (n < 0)
                return n;
        /* Never block on a peer that does not read: it loses its connection. */
        return fdpass_send(sock_fd, buf, (size_t) n, fd, MSG_DONTWAIT);
}

int conn_send(struct conn *c, const struct pb_msg *reply, int fd) {
        return conn_send_fd(c->sock_fd, reply, fd);
}

void conn_refuse(int fd, int code, const char *why) {
        struct pb_msg reply;

        proto_set_error(&reply, 0, code, "%s", why);
        (void) conn_send_fd(fd, &reply, -1);
        safe_close(fd);
}

void conn_reject(struct conn *c, uint32_t id, int code, const char *why) {
        struct log_fields f = broker_peer_fields(&c->peer, NULL, NULL);
        struct pb_msg reply;

        log_event(LOG_WARNING, "bad-message", &f, "%s; closing the connection", why);
        broker_audit(c->broker, "bad-message", &c->peer, NULL, why);
        proto_set_error(&reply, id, code, "%s", why);
        (void) conn_send(c, &reply, -1);
        conn_free(c);
}

static void conn_arm_timer(struct conn *c);

/* --- the list of connections, from the most recently active to the longest idle --- */

static void conn_link(struct broker *b, struct conn *c) {
        c->prev = NULL;
        c->next = b->conns;
        if (b->conns)
                b->conns->prev = c;
        else
                b->conns_tail = c;
        b->conns = c;
}

static void conn_unlink(struct broker *b, struct conn *c) {
        if (c->prev)
                c->prev->next = c->next;
        else
                b->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        else
                b->conns_tail = c->prev;
}

/* A request of c was served: c moves to the front, the most recently active. */
static void conn_touch(struct conn *c) {
        struct broker *b = c->broker;

        sd_event_now(b->event, CLOCK_MONOTONIC, &c->active_usec);
        if (b->conns != c) {
                conn_unlink(b, c);
                conn_link(b, c);
        }
}

/* Counts c in and puts it at the front, accepted now. */
static void conn_add(struct broker *b, struct conn *c) {
        sd_event_now(b->event, CLOCK_MONOTONIC, &c->accepted_usec);
        c->active_usec = c->accepted_usec;
        conn_link(b, c);
        b->n_conns++;
        b->n_admin_conns += c->admin;
}

/* Reads one message, if one is there, and serves it. Returns true while
 * the connection stays open, false once it was closed (c is freed). */
static bool conn_serve(struct conn *c) {
        uint8_t buf[PB_MSG_MAX];
        int n;

        n = fdpass_recv(c->sock_fd, buf, sizeof(buf), NULL, MSG_DONTWAIT);
        if (n == -EAGAIN)
                return true;
        if (n == -EBADMSG) {
                conn_reject(c, 0, EBADMSG, "malformed request: file descriptors or control data attached");
                return false;
        }
        if (n == -EMSGSIZE) {
                conn_reject(c, 0, EMSGSIZE, "malformed request: larger than 4096 bytes");
                return false;
        }
        if (n <= 0) {
                conn_free(c);           /* EOF or a dead peer */
                return false;
        }
        c->denied = false;
        if (request_handle(c, buf, (size_t) n) < 0)
                return false;
        if (c->denied && c->peer.doubt) {
                /* Nothing it asks will be granted: its error said why. */
                conn_free(c);
                return false;
        }
        if (!c->denied)
                conn_touch(c);
        return true;
}

/* The connections with something to read, a batch per turn of the loop,
 * one message each: with a thousand clients busy, a turn costs what its
 * batch does (a source per connection had sd-event collect every ready
 * connection from epoll for each one it served). Level-triggered: one
 * with more to read comes back in a later batch, after the others. */
static int on_conns(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct broker *b = userdata;
        struct epoll_event evs[CONN_BATCH];
        int n = epoll_wait(fd, evs, CONN_BATCH, 0);

        for (int i = 0; i < n && !b->reexecuting; i++) {
                struct conn *c = evs[i].data.ptr;

                /* Serving one never frees another: each entry is alive. */
                if (conn_serve(c))
                        conn_arm_timer(c);
        }
        return 0;
}

int conn_setup(struct broker *b) {
        b->conns_fd = epoll_create1(EPOLL_CLOEXEC);
        if (b->conns_fd < 0)
                return -errno;
        return sd_event_add_io(b->event, &b->conns_source, b->conns_fd, EPOLLIN, on_conns, b);
}

void conn_done(struct broker *b) {
        while (b->conns)
                conn_free(b->conns);
        b->conns_source = sd_event_source_disable_unref(b->conns_source);
        b->conns_fd = safe_close(b->conns_fd);
}

static uint64_t conn_idle_deadline(const struct conn *c) {
        return c->active_usec + c->broker->opt.idle_timeout_sec * USEC_PER_SEC;
}

static uint64_t conn_age_deadline(const struct conn *c) {
        return c->accepted_usec + c->broker->opt.max_connection_age_sec * USEC_PER_SEC;
}

/* Sets c's timer to whichever comes first: its idle timeout or its age limit. */
static void conn_arm_timer(struct conn *c) {
        uint64_t idle = conn_idle_deadline(c), age = conn_age_deadline(c);

        sd_event_source_set_time(c->idle_source, idle < age ? idle : age);
}

static int on_conn_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct conn *c = userdata;
        struct log_fields f = broker_peer_fields(&c->peer, NULL, NULL);

        if (usec >= conn_age_deadline(c))
                log_event(LOG_INFO, "conn-age", &f, "open for %u s, the most allowed; closing the connection",
                          c->broker->opt.max_connection_age_sec);
        else
                log_event(LOG_INFO, "idle-timeout", &f, "no request for %u s; closing the connection",
                          c->broker->opt.idle_timeout_sec);
        conn_free(c);
        return 0;
}

void conn_free(struct conn *c) {
        struct broker *b = c->broker;

        request_import_end(c);
        if (c->watched)
                (void) epoll_ctl(b->conns_fd, EPOLL_CTL_DEL, c->sock_fd, NULL);
        c->idle_source = sd_event_source_disable_unref(c->idle_source);
        c->sock_fd = safe_close(c->sock_fd);
        peer_done(&c->peer);
        conn_unlink(b, c);
        b->n_conns--;
        b->n_admin_conns -= c->admin;
        free(c);
}

/* True for the 1st, 2nd, 4th, 8th, ... time *count is counted: a flood
 * at a limit is logged, but not line by line. */
static bool log_sampled(uint64_t *count) {
        ++*count;
        return (*count & (*count - 1)) == 0;
}

static unsigned conns_of_account(const struct broker *b, uid_t account) {
        unsigned n = 0;

        for (const struct conn *c = b->conns; c; c = c->next)
                n += c->peer.account == account;
        return n;
}

/* One uid cannot take every slot; admins are trusted. True when the peer
 * is over its limit, with the reason in why. */
static bool over_user_limit(const struct broker *b, const struct conn *c, char *why, size_t size) {
        if (c->admin || conns_of_account(b, c->peer.account) < b->opt.max_connections_per_user)
                return false;
        if (c->peer.account != c->peer.uid)
                snprintf(why, size, "uid %u, the owner of uid %u's user namespace, already has %u connections "
                         "to brokerd, the most allowed", (unsigned) c->peer.account, (unsigned) c->peer.uid,
                         b->opt.max_connections_per_user);
        else
                snprintf(why, size, "uid %u already has %u connections to brokerd, the most allowed",
                         (unsigned) c->peer.uid, b->opt.max_connections_per_user);
        return true;
}

/* The slots of --max-connections kept for admins: a sixteenth. */
static unsigned admin_reserve(const struct broker *b) {
        return b->opt.max_connections / 16;
}

/* True when c (not linked yet) would go over the table's limit for its kind of peer. */
static bool table_full_for(const struct broker *b, const struct conn *c) {
        if (b->n_conns >= b->opt.max_connections)
                return true;
        return !c->admin && b->n_conns - b->n_admin_conns >= b->opt.max_connections - admin_reserve(b);
}

/* The longest-idle connection of a non-admin, or NULL. */
static struct conn *eviction_victim(const struct broker *b) {
        for (struct conn *c = b->conns_tail; c; c = c->prev)
                if (!c->admin)
                        return c;
        return NULL;
}

/* Closes the longest-idle non-admin connection to make room for c. Returns
 * false when there is none (every connection is an admin's). */
static bool evict_for(struct broker *b, const struct conn *c) {
        struct conn *victim = eviction_victim(b);
        uint64_t now;

        if (!victim)
                return false;
        if (log_sampled(&b->evicted_conns)) {
                struct log_fields f = broker_peer_fields(&victim->peer, NULL, NULL);

                sd_event_now(b->event, CLOCK_MONOTONIC, &now);
                log_event(LOG_WARNING, "conn-evict", &f, "%u connections, the most allowed: closing the one idle "
                          "longest (%llu ms) for uid %u's; %llu closed so far", b->n_conns,
                          (unsigned long long) (now - victim->active_usec) / 1000, (unsigned) c->peer.uid,
                          (unsigned long long) b->evicted_conns);
        }
        conn_free(victim);      /* without a reply: its client reconnects if it has more to ask */
        return true;
}

/* Refuses c, not linked yet, with why (an error reply) and frees it. */
static void conn_refuse_new(struct broker *b, struct conn *c, const char *why) {
        if (log_sampled(&b->refused_conns)) {
                struct log_fields f = broker_peer_fields(&c->peer, NULL, NULL);

                log_event(LOG_WARNING, "conn-limit", &f, "%s; %llu connections refused so far", why,
                          (unsigned long long) b->refused_conns);
        }
        conn_refuse(c->sock_fd, EUSERS, why);
        peer_done(&c->peer);
        free(c);
}

/* Watches c for requests and for its timer. Returns 0 or -errno. */
static int conn_watch(struct broker *b, struct conn *c) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        int r;

        r = epoll_ctl(b->conns_fd, EPOLL_CTL_ADD, c->sock_fd, &ev) < 0 ? -errno : 0;
        c->watched = r >= 0;
        if (r >= 0)
                r = sd_event_add_time(b->event, &c->idle_source, CLOCK_MONOTONIC, 0, 100 * 1000, on_conn_timer, c);
        if (r >= 0)
                conn_arm_timer(c);
        return r;
}

void conn_carried(struct broker *b, int fd, const struct peer *p) {
        struct conn *c = calloc(1, sizeof(*c));

        if (!c) {
                safe_close(fd);
                return;
        }
        c->broker = b;
        c->sock_fd = fd;
        c->peer = *p;
        c->admin = policy_is_admin(&b->policy, &c->peer);
        conn_add(b, c);
        if (conn_watch(b, c) < 0) {
                log_msg(LOG_ERR, "cannot watch a connection carried over; closing it");
                conn_free(c);
        }
}

void conn_new(struct broker *b, int fd, const struct peer *p) {
        struct conn *c = calloc(1, sizeof(*c));
        char why[160];
        int r;

        if (!c) {
                struct peer gone = *p;

                peer_done(&gone);
                safe_close(fd);
                return;
        }
        c->broker = b;
        c->sock_fd = fd;
        c->peer = *p;
        c->admin = policy_is_admin(&b->policy, &c->peer);
        if (over_user_limit(b, c, why, sizeof(why))) {
                conn_refuse_new(b, c, why);
                return;
        }
        if (table_full_for(b, c) && !evict_for(b, c)) {
                snprintf(why, sizeof(why), "brokerd is at its limit of %u connections; try again",
                         b->opt.max_connections);
                conn_refuse_new(b, c, why);
                return;
        }
        conn_add(b, c);
        /* Clients send their request right after connect(), so it is usually
         * queued already: serving it before the connection is watched keeps
         * the watch's set-up (epoll_ctl, the idle timer) and a loop
         * iteration off the client's wait. Nothing there yet: EAGAIN. A
         * client with one request (pb_get()) shuts its side down after it:
         * the second read usually sees that end already, and the connection
         * is closed at once, never watched; if not, the watch sees it. */
        if (!conn_serve(c) || b->reexecuting || !conn_serve(c))
                return;                 /* closed; or carried to the next image with what it has queued */
        r = conn_watch(b, c);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot watch a new connection: %s", strerror(-r));
                conn_free(c);
        }
}
