/* SPDX-License-Identifier: MIT */
/*
 * Control connections: one per client, its peer identified once at accept
 * (never from anything the peer sends), limited per uid, closed after
 * --idle-timeout without a request. Reads one message at a time and hands
 * it to the request table; a message with fds or control data attached, or
 * too large, is rejected and the connection closed.
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
        return request_handle(c, buf, (size_t) n) >= 0;
}

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct conn *c = userdata;
        uint64_t now;

        if (!conn_serve(c))
                return 0;
        sd_event_now(c->broker->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(c->idle_source, now + c->broker->opt.idle_timeout_sec * USEC_PER_SEC);
        return 0;
}

static int on_conn_idle(sd_event_source *s, uint64_t usec, void *userdata) {
        struct conn *c = userdata;
        struct log_fields f = broker_peer_fields(&c->peer, NULL, NULL);

        log_event(LOG_INFO, "idle-timeout", &f, "no request for %u s; closing the connection",
                  c->broker->opt.idle_timeout_sec);
        conn_free(c);
        return 0;
}

void conn_free(struct conn *c) {
        struct broker *b = c->broker;

        c->io_source = sd_event_source_disable_unref(c->io_source);
        c->idle_source = sd_event_source_disable_unref(c->idle_source);
        c->sock_fd = safe_close(c->sock_fd);
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

static unsigned conns_of_uid(const struct broker *b, uid_t uid) {
        unsigned n = 0;

        for (const struct conn *c = b->conns; c; c = c->next)
                n += c->peer.uid == uid;
        return n;
}

/* One uid cannot take every slot; admins are trusted. True when the peer
 * is over its limit, with the reason in why. */
static bool over_user_limit(const struct broker *b, const struct conn *c, char *why, size_t size) {
        if (policy_is_admin(&b->policy, &c->peer) ||
            conns_of_uid(b, c->peer.uid) < b->opt.max_connections_per_user)
                return false;
        snprintf(why, size, "uid %u already has %u connections to brokerd, the most allowed",
                 (unsigned) c->peer.uid, b->opt.max_connections_per_user);
        return true;
}

static void conn_link(struct broker *b, struct conn *c) {
        c->next = b->conns;
        if (b->conns)
                b->conns->prev = c;
        b->conns = c;
        b->n_conns++;
}

/* Watches c for requests and for idleness. Returns 0 or -errno. */
static int conn_watch(struct broker *b, struct conn *c) {
        uint64_t now;
        int r;

        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        r = sd_event_add_io(b->event, &c->io_source, c->sock_fd, EPOLLIN, on_conn_io, c);
        if (r >= 0)
                r = sd_event_add_time(b->event, &c->idle_source, CLOCK_MONOTONIC,
                                      now + b->opt.idle_timeout_sec * USEC_PER_SEC, 100 * 1000, on_conn_idle, c);
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
        c->peer.conn_fd = fd;
        /* For holder watches only; the identity stays the one read at accept. */
        c->peer.pid_fd = peer_pidfd(fd);
        conn_link(b, c);
        if (conn_watch(b, c) < 0) {
                log_msg(LOG_ERR, "cannot watch a connection carried over; closing it");
                conn_free(c);
        }
}

void conn_new(struct broker *b, int fd) {
        struct conn *c = calloc(1, sizeof(*c));
        char why[128];
        int r;

        if (!c) {
                safe_close(fd);
                return;
        }
        c->broker = b;
        c->sock_fd = fd;
        c->peer.pid_fd = -1;
        /* A connection sees the unit rules that existed when it was accepted. */
        r = peer_identify(fd, &b->self, b->policy.n_unit_rules > 0, &c->peer);
        if (r < 0) {
                c->peer.pid_fd = -1;
                c->peer.doubt = "cannot read the peer's credentials";
        }
        if (over_user_limit(b, c, why, sizeof(why))) {
                struct log_fields f = broker_peer_fields(&c->peer, NULL, NULL);

                log_event(LOG_WARNING, "conn-limit", &f, "%s", why);
                conn_refuse(fd, EUSERS, why);
                peer_done(&c->peer);
                free(c);
                return;
        }
        conn_link(b, c);
        /* Clients send their request right after connect(), so it is usually
         * queued already: serving it before the connection is watched keeps
         * the watch's set-up (epoll_ctl, the idle timer) and a loop
         * iteration off the client's wait. Nothing there yet: EAGAIN. A
         * client with one request (pb_get()) shuts its side down after it:
         * the second read usually sees that end already, and the connection
         * is closed at once, never watched; if not, the watch sees it. */
        if (!conn_serve(c) || !conn_serve(c))
                return;
        r = conn_watch(b, c);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot watch a new connection: %s", strerror(-r));
                conn_free(c);
        }
}
