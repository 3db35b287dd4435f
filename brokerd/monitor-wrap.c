/* SPDX-License-Identifier: MIT */
/*
 * The worker's side of the monitor channel (privsep.h; OpenSSH's
 * monitor_wrap.c is the model). Each request waits for its one reply, in
 * order, on the request channel; the event channel brings the connections
 * the monitor accepted and what changed, read by the loop. A monitor that
 * answers outside the message set, or not at all, leaves the worker
 * nothing to stand on: it writes what it has queued and exits, and the
 * monitor (if it is still there) starts another.
 */
#include "broker-int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd-util.h"
#include "privsep.h"

#define REPLY_TIMEOUT_MS (30 * 1000)    /* well above the re-execution check's 3 s */
#define MM_SOCKETS_WINDOW 32            /* PS_SOCKET requests in flight at start */

static void __attribute__((noreturn)) monitor_lost(struct broker *b, const char *what, int r) {
        /* Closed, or killed with our messages unread (ECONNRESET, EPIPE): gone. */
        if (r == -ENOTCONN || r == -ECONNRESET || r == -EPIPE)
                log_event(LOG_NOTICE, "worker", &(struct log_fields) LOG_FIELDS_NONE, "the monitor is gone; the "
                          "worker stops");
        else
                log_msg(LOG_ERR, "the monitor %s (%s); the worker stops", what, strerror(-r));
        if (b->store && store_pending(b->store) > 0)
                (void) store_flush(b->store);
        exit(EXIT_FAILURE);
}

/* A port brokerd put in (or took out of) ip_local_reserved_ports, for the database. */
static void note_reserved(struct broker *b, const struct privsep_msg *m) {
        if (b->store)
                (void) store_reserved_set(b->store, m->reserved.port, m->reserved.ours);
        broker_flush_soon(b);
}

static void send_request(struct broker *b, const struct privsep_msg *m, int fd) {
        int r = privsep_send(b->req_fd, m, fd, 0);

        if (r < 0)
                monitor_lost(b, "takes no request", r);
}

/* Waits for the reply to the oldest request not answered yet, of type
 * reply_type; its fd (-1 if none) into *ret_fd, or closed when ret_fd is NULL. */
static void await_reply(struct broker *b, uint8_t reply_type, struct privsep_msg *ret, int *ret_fd) {
        struct pollfd pfd = { .fd = b->req_fd, .events = POLLIN };
        int fd = -1, r;

        for (;;) {
                do
                        r = poll(&pfd, 1, REPLY_TIMEOUT_MS);
                while (r < 0 && errno == EINTR);
                if (r <= 0)
                        monitor_lost(b, "did not answer", r < 0 ? -errno : -ETIMEDOUT);
                r = privsep_recv(b->req_fd, ret, &fd, 0);
                if (r < 0)
                        monitor_lost(b, "sent no valid reply", r);
                if (ret->type != PS_RESERVED)
                        break;
                /* What the request changed, queued for the commit that follows it. */
                note_reserved(b, ret);
        }
        if (ret->type != reply_type) {
                safe_close(fd);
                monitor_lost(b, "answered out of turn", -EPROTO);
        }
        if (ret_fd)
                *ret_fd = fd;
        else
                safe_close(fd);
}

/* Sends m and waits for its reply (see await_reply()). */
static void ask(struct broker *b, const struct privsep_msg *m, uint8_t reply_type, struct privsep_msg *ret,
                int *ret_fd) {
        send_request(b, m, -1);
        await_reply(b, reply_type, ret, ret_fd);
}

/* The monitor's PS_STATE: the guard's state into b. */
static void take_state(struct broker *b, const struct privsep_msg *r) {
        b->guard_on = r->state.guard_on;
        snprintf(b->guard_state, sizeof(b->guard_state), "%s", r->state.guard_state);
        snprintf(b->guard_dir, sizeof(b->guard_dir), "%s", r->state.guard_dir);
        b->detach = r->state.detach;
}

int mm_hello(struct broker *b) {
        struct privsep_msg m = { .type = PS_HELLO, .hello.version = PRIVSEP_VERSION }, r;

        ask(b, &m, PS_STATE, &r, NULL);
        take_state(b, &r);
        return 0;
}

void mm_declare(struct broker *b, const struct lease *l) {
        struct privsep_msg m = { .type = PS_DECLARE_LEASE,
                                 .lease = { .lease_id = l->id, .endpoint = l->endpoint } };

        if (l->ux)
                m.lease.ux = *l->ux;

        send_request(b, &m, -1);
}

void mm_note_reserved(struct broker *b, unsigned port) {
        struct privsep_msg m = { .type = PS_NOTE_RESERVED, .reserved = { .port = (uint16_t) port, .ours = true } };

        if (port > 0 && port <= 65535)
                send_request(b, &m, -1);
}

void mm_last_guard(struct broker *b, const char *dir) {
        struct privsep_msg m = { .type = PS_LAST_GUARD };

        /* A directory too long for the message cannot have been ours to guard from. */
        if (strlen(dir) <= PRIVSEP_TEXT_MAX)
                snprintf(m.last_guard.dir, sizeof(m.last_guard.dir), "%s", dir);
        send_request(b, &m, -1);
}

void mm_arm(struct broker *b) {
        struct privsep_msg m = { .type = PS_ARM }, r;

        ask(b, &m, PS_STATE, &r, NULL);
        take_state(b, &r);
}

/* Waits for the reply to PS_SOCKET or PS_REPLACE for lease id. Returns 0 or -errno. */
static int await_socket(struct broker *b, uint64_t id, int *ret_fd, struct mm_socket *ret) {
        struct privsep_msg r;
        int fd = -1;

        await_reply(b, PS_SOCKET_REPLY, &r, &fd);
        if (r.socket.lease_id != id) {
                safe_close(fd);
                monitor_lost(b, "answered for another lease", -EPROTO);
        }
        if (r.socket.error)
                return -r.socket.error;
        *ret_fd = fd;
        *ret = (struct mm_socket) { .cookie = r.socket.cookie, .how = r.socket.how, .file = r.socket.file };
        return 0;
}

static void send_socket(struct broker *b, uint64_t id, const struct pb_endpoint *e, const struct lease_unix *ux) {
        struct privsep_msg m = { .type = PS_SOCKET, .lease = { .lease_id = id, .endpoint = *e } };

        if (ux)
                m.lease.ux = *ux;
        send_request(b, &m, -1);
}

int mm_socket(struct broker *b, uint64_t id, const struct pb_endpoint *e, const struct lease_unix *ux, int *ret_fd,
              struct mm_socket *ret) {
        send_socket(b, id, e, ux);
        return await_socket(b, id, ret_fd, ret);
}

/* Requests in flight at start: the monitor's replies wait in its send
 * buffer (made as ours is, SO_SNDBUF), a reply with its fd taking under
 * 1 KiB of it, and a reply it cannot send is a worker gone wrong. */
static size_t sockets_window(const struct broker *b) {
        int sndbuf = 0;
        socklen_t len = sizeof(sndbuf);
        size_t fit;

        if (getsockopt(b->req_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0 || sndbuf <= 0)
                return 1;
        fit = (size_t) sndbuf / 1024;
        return fit < 1 ? 1 : fit < MM_SOCKETS_WINDOW ? fit : MM_SOCKETS_WINDOW;
}

void mm_sockets(struct broker *b, struct lease *const *leases, size_t n, mm_socket_done_fn done) {
        size_t sent = 0, window = sockets_window(b);

        /* The monitor answers in order: no round trip per lease. */
        for (size_t i = 0; i < n; i++) {
                struct mm_socket got = {};
                int r;

                for (; sent < n && sent - i < window; sent++)
                        send_socket(b, leases[sent]->id, &leases[sent]->endpoint, leases[sent]->ux);
                r = await_socket(b, leases[i]->id, &leases[i]->sock_fd, &got);
                done(b, leases[i], r, &got);
        }
}

int mm_replace(struct broker *b, uint64_t id, const struct pb_endpoint *e, int *ret_fd, struct mm_socket *ret) {
        struct privsep_msg m = { .type = PS_REPLACE, .id.lease_id = id };

        send_request(b, &m, -1);
        return await_socket(b, id, ret_fd, ret);
}

void mm_release(struct broker *b, uint64_t id) {
        struct privsep_msg m = { .type = PS_RELEASE, .id.lease_id = id }, r;

        ask(b, &m, PS_DONE, &r, NULL);
}

void mm_ready(struct broker *b, size_t unbound) {
        struct privsep_msg m = { .type = PS_READY,
                                 .counts = { .leases = (uint32_t) b->leases.n, .rules = (uint32_t) b->policy.n_rules,
                                             .unbound = (uint32_t) unbound } }, r;

        ask(b, &m, PS_DONE, &r, NULL);
        if (b->detach) {
                /* brokerd detached from its terminal: our lines go where the monitor's do. */
                int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);

                log_setup_detached();
                if (devnull >= 0) {
                        dup2(devnull, STDERR_FILENO);
                        safe_close(devnull);
                }
        }
}

/* An event; the channel never blocks us: a full one loses the event (counts are told again). */
static void send_event(struct broker *b, const struct privsep_msg *m) {
        (void) privsep_send(b->ev_fd, m, -1, MSG_DONTWAIT);
}

void mm_want_units(struct broker *b) {
        struct privsep_msg m = { .type = PS_WANT_UNITS, .units.want = b->policy.n_unit_rules > 0 };

        if (m.units.want == b->units_wanted)
                return;
        b->units_wanted = m.units.want;
        send_event(b, &m);
}

void mm_status(struct broker *b) {
        struct privsep_msg m = { .type = PS_STATUS,
                                 .counts = { .leases = (uint32_t) b->leases.n, .rules = (uint32_t) b->policy.n_rules,
                                             .conns = b->n_conns } };

        send_event(b, &m);
        mm_want_units(b);
}

int mm_reexec_check(struct broker *b, char *why, size_t size) {
        struct privsep_msg m = { .type = PS_REEXEC_CHECK }, r;

        ask(b, &m, PS_DONE, &r, NULL);
        snprintf(why, size, "%s", r.done.why);
        return -r.done.error;
}

void mm_reexec(struct broker *b, const struct conn *asker, uint32_t id) {
        struct privsep_msg m = { .type = PS_CARRY }, ev;
        int fd;

        for (const struct conn *c = b->conns; c; c = c->next) {
                /* Not an importer's: its import dies with this worker, and
                 * the new image would apply the rest of it rule by rule.
                 * Closed (when this worker exits), its import fails whole. */
                if (c == b->import.conn)
                        continue;
                privsep_peer_to_wire(&c->peer, c == asker ? id : 0, &m.peer);
                send_request(b, &m, c->sock_fd);
        }
        /* Connections the monitor passed before it stopped (at the check)
         * and we have not read yet go back with the rest. */
        while (privsep_recv(b->ev_fd, &ev, &fd, MSG_DONTWAIT) == 0) {
                if (ev.type == PS_CONN) {
                        m.peer = ev.peer;
                        send_request(b, &m, fd);
                } else if (ev.type == PS_RESERVED)
                        note_reserved(b, &ev);
                safe_close(fd);
        }
        m = (struct privsep_msg) { .type = PS_REEXEC, .reexec.request_id = id };
        send_request(b, &m, -1);
}

static int on_monitor_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct broker *b = userdata;
        struct privsep_msg m;
        struct peer p;
        int msg_fd = -1, r;

        r = privsep_recv(b->ev_fd, &m, &msg_fd, MSG_DONTWAIT);
        if (r == -EAGAIN)
                return 0;
        if (r == -ENOTCONN || r == -ECONNRESET)
                monitor_lost(b, "is gone", r);
        if (r < 0 || (m.type != PS_CONN && m.type != PS_RESERVED)) {
                safe_close(msg_fd);
                monitor_lost(b, "sent a malformed event", r < 0 ? r : -EPROTO);
        }
        if (m.type == PS_RESERVED) {
                note_reserved(b, &m);
                return 0;
        }
        privsep_peer_from_wire(&m.peer, msg_fd, &p);      /* a pidfd only when a holder is watched */
        if (m.peer.reexec_id) {
                request_reexec_answer(b, msg_fd, m.peer.reexec_id);
                conn_carried(b, msg_fd, &p);
        } else
                conn_new(b, msg_fd, &p);
        return 0;
}

int mm_watch(struct broker *b) {
        return sd_event_add_io(b->event, &b->ev_source, b->ev_fd, EPOLLIN, on_monitor_event, b);
}
