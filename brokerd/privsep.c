/* SPDX-License-Identifier: MIT */
/*
 * The monitor channel's messages: encoding, strict decoding, sending and
 * receiving. See privsep.h for who sends what.
 */
#include "privsep.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd-util.h"
#include "fdpass.h"
#include "peer.h"
#include "wire.h"

#define ERRNO_MAX 4095                  /* the largest errno a reply may carry */

static const struct {
        uint8_t type;
        const char *name;
        bool fd;
} types[] = {
        { PS_HELLO, "hello", false },
        { PS_DECLARE_LEASE, "declare-lease", false },
        { PS_NOTE_RESERVED, "note-reserved", false },
        { PS_LAST_GUARD, "last-guard", false },
        { PS_ARM, "arm", false },
        { PS_SOCKET, "socket", false },
        { PS_REPLACE, "replace", false },
        { PS_RELEASE, "release", false },
        { PS_READY, "ready", false },
        { PS_REEXEC_CHECK, "reexec-check", false },
        { PS_CARRY, "carry", true },
        { PS_REEXEC, "reexec", false },
        { PS_DONE, "done", false },
        { PS_STATE, "state", false },
        { PS_SOCKET_REPLY, "socket-reply", true },
        { PS_CONN, "conn", true },
        { PS_RESERVED, "reserved", false },
        { PS_STATUS, "status", false },
        { PS_WANT_UNITS, "want-units", false },
};

static int type_index(uint8_t type) {
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
                if (types[i].type == type)
                        return (int) i;
        return -1;
}

const char *privsep_type_name(uint8_t type) {
        int i = type_index(type);
        return i < 0 ? "unknown" : types[i].name;
}

bool privsep_carries_fd(const struct privsep_msg *m) {
        int i = type_index(m->type);

        if (m->type == PS_SOCKET_REPLY)
                return m->socket.error == 0;
        return i >= 0 && types[i].fd;
}

void privsep_peer_to_wire(const struct peer *p, uint32_t reexec_id, struct privsep_peer *ret) {
        *ret = (struct privsep_peer) { .pid = p->pid, .uid = p->uid, .gid = p->gid, .account = p->account,
                                       .reexec_id = reexec_id, .unidentified = p->uid == PEER_UID_UNKNOWN };
        snprintf(ret->doubt, sizeof(ret->doubt), "%s", p->doubt ? p->doubt : "");
        snprintf(ret->unit, sizeof(ret->unit), "%s", p->unit);
}

void privsep_peer_from_wire(const struct privsep_peer *w, int conn_fd, struct peer *ret) {
        *ret = (struct peer) { .pid = w->pid, .uid = w->uid, .gid = w->gid, .account = w->account,
                               .conn_fd = conn_fd, .pid_fd = -1, .groups_unread = true };
        if (w->unidentified)
                ret->uid = ret->account = PEER_UID_UNKNOWN;
        snprintf(ret->unit, sizeof(ret->unit), "%s", w->unit);
        if (w->doubt[0] || w->unidentified)
                ret->doubt = peer_doubt_of(w->doubt);
}

static void put_text(struct wcur *w, const char *s) {
        put_text_max(w, s, PRIVSEP_TEXT_MAX);
}

static void get_text(struct rcur *r, char out[static PRIVSEP_TEXT_MAX + 1]) {
        get_text_max(r, out, PRIVSEP_TEXT_MAX);
}

/* An errno a reply carries: 0 or 1 to ERRNO_MAX (sign dropped on the wire). */
static void put_errno(struct wcur *w, int32_t error) {
        if (error < 0 || error > ERRNO_MAX)
                w->overflow = true;
        put_be(w, (uint32_t) error, 4);
}

static int32_t get_errno(struct rcur *r) {
        uint32_t v = (uint32_t) get_be(r, 4);

        if (v > ERRNO_MAX)
                r->bad = true;
        return (int32_t) v;
}

/* A lease id: never 0. */
static uint64_t get_id(struct rcur *r) {
        uint64_t id = get_be(r, 8);

        if (id == 0)
                r->bad = true;
        return id;
}

static void put_peer(struct wcur *w, const struct privsep_peer *p) {
        put_be(w, (uint32_t) p->pid, 4);
        put_be(w, p->uid, 4);
        put_be(w, p->gid, 4);
        put_be(w, p->account, 4);
        put_be(w, p->reexec_id, 4);
        put_u8(w, p->unidentified);
        put_text(w, p->doubt);
        put_text(w, p->unit);
}

static void get_peer(struct rcur *r, struct privsep_peer *p) {
        p->pid = (int32_t) get_be(r, 4);
        p->uid = (uint32_t) get_be(r, 4);
        p->gid = (uint32_t) get_be(r, 4);
        p->account = (uint32_t) get_be(r, 4);
        p->reexec_id = (uint32_t) get_be(r, 4);
        p->unidentified = get_bool(r);
        get_text(r, p->doubt);
        get_text(r, p->unit);
        /* An unidentified peer is always in doubt, and has no uid ((uid_t) -1,
         * which no identified one has). */
        if (p->pid < 0 || (p->unidentified && !p->doubt[0]) || p->unidentified != (p->uid == UINT32_MAX) ||
            p->unidentified != (p->account == UINT32_MAX))
                r->bad = true;
}

static void put_counts(struct wcur *w, const struct privsep_msg *m) {
        put_be(w, m->counts.leases, 4);
        put_be(w, m->counts.rules, 4);
        put_be(w, m->counts.conns, 4);
        put_be(w, m->counts.unbound, 4);
}

static void put_unix_file(struct wcur *w, const struct unix_file *f) {
        put_be(w, f->dev, 8);
        put_be(w, f->ino, 8);
        put_be(w, f->born, 8);
}

static void get_unix_file(struct rcur *r, struct unix_file *f) {
        f->dev = get_be(r, 8);
        f->ino = get_be(r, 8);
        f->born = get_be(r, 8);
}

static void encode_body(struct wcur *w, const struct privsep_msg *m) {
        switch (m->type) {
        case PS_HELLO:
                put_be(w, m->hello.version, 4);
                break;
        case PS_DECLARE_LEASE:
        case PS_SOCKET:
                put_be(w, m->lease.lease_id, 8);
                put_endpoint(w, &m->lease.endpoint);
                if (endpoint_is_unix(&m->lease.endpoint)) {
                        put_be(w, m->lease.ux.uid, 4);
                        put_be(w, m->lease.ux.gid, 4);
                        put_be(w, m->lease.ux.mode, 2);
                        put_unix_file(w, &m->lease.ux.file);
                }
                break;
        case PS_NOTE_RESERVED:
        case PS_RESERVED:
                put_be(w, m->reserved.port, 2);
                put_u8(w, m->reserved.ours);
                break;
        case PS_LAST_GUARD:
                put_text(w, m->last_guard.dir);
                break;
        case PS_REPLACE:
        case PS_RELEASE:
                put_be(w, m->id.lease_id, 8);
                break;
        case PS_READY:
        case PS_STATUS:
                put_counts(w, m);
                break;
        case PS_ARM:
        case PS_REEXEC_CHECK:
                break;
        case PS_CARRY:
        case PS_CONN:
                put_peer(w, &m->peer);
                break;
        case PS_REEXEC:
                put_be(w, m->reexec.request_id, 4);
                break;
        case PS_DONE:
                put_errno(w, m->done.error);
                put_text(w, m->done.why);
                break;
        case PS_STATE:
                put_u8(w, m->state.guard_on);
                put_u8(w, m->state.detach);
                put_text(w, m->state.guard_state);
                put_text(w, m->state.guard_dir);
                break;
        case PS_SOCKET_REPLY:
                put_be(w, m->socket.lease_id, 8);
                put_errno(w, m->socket.error);
                put_be(w, m->socket.cookie, 8);
                put_unix_file(w, &m->socket.file);
                put_u8(w, m->socket.how);
                break;
        case PS_WANT_UNITS:
                put_u8(w, m->units.want);
                break;
        default:
                w->overflow = true;
        }
}

int privsep_encode(const struct privsep_msg *m, uint8_t buf[static PRIVSEP_MSG_MAX]) {
        struct wcur w = { .buf = buf, .size = PRIVSEP_MSG_MAX };

        put_u8(&w, m->type);
        encode_body(&w, m);
        return w.overflow ? -EINVAL : (int) w.off;
}

static void decode_body(struct rcur *r, struct privsep_msg *m) {
        switch (m->type) {
        case PS_HELLO:
                m->hello.version = (uint32_t) get_be(r, 4);
                break;
        case PS_DECLARE_LEASE:
        case PS_SOCKET:
                m->lease.lease_id = get_id(r);
                get_endpoint(r, false, &m->lease.endpoint);
                if (!r->bad && endpoint_is_unix(&m->lease.endpoint)) {
                        m->lease.ux.uid = (uint32_t) get_be(r, 4);
                        m->lease.ux.gid = (uint32_t) get_be(r, 4);
                        m->lease.ux.mode = (uint16_t) get_be(r, 2);
                        get_unix_file(r, &m->lease.ux.file);
                        if (m->lease.ux.mode > 0777 || m->lease.ux.uid == UINT32_MAX)
                                r->bad = true;
                }
                break;
        case PS_NOTE_RESERVED:
        case PS_RESERVED:
                m->reserved.port = (uint16_t) get_be(r, 2);
                m->reserved.ours = get_bool(r);
                if (m->reserved.port == 0 || (m->type == PS_NOTE_RESERVED && !m->reserved.ours))
                        r->bad = true;
                break;
        case PS_LAST_GUARD:
                get_text(r, m->last_guard.dir);
                break;
        case PS_REPLACE:
        case PS_RELEASE:
                m->id.lease_id = get_id(r);
                break;
        case PS_READY:
        case PS_STATUS:
                m->counts.leases = (uint32_t) get_be(r, 4);
                m->counts.rules = (uint32_t) get_be(r, 4);
                m->counts.conns = (uint32_t) get_be(r, 4);
                m->counts.unbound = (uint32_t) get_be(r, 4);
                break;
        case PS_ARM:
        case PS_REEXEC_CHECK:
                break;
        case PS_CARRY:
        case PS_CONN:
                get_peer(r, &m->peer);
                break;
        case PS_REEXEC:
                m->reexec.request_id = (uint32_t) get_be(r, 4);
                break;
        case PS_DONE:
                m->done.error = get_errno(r);
                get_text(r, m->done.why);
                break;
        case PS_STATE:
                m->state.guard_on = get_bool(r);
                m->state.detach = get_bool(r);
                get_text(r, m->state.guard_state);
                get_text(r, m->state.guard_dir);
                break;
        case PS_SOCKET_REPLY:
                m->socket.lease_id = get_id(r);
                m->socket.error = get_errno(r);
                m->socket.cookie = get_be(r, 8);
                get_unix_file(r, &m->socket.file);
                m->socket.how = get_u8(r);
                /* A socket says how it came; an error has none. */
                if (m->socket.error ? m->socket.how != 0 : m->socket.how < PS_HOW_HELD || m->socket.how > PS_HOW_BOUND)
                        r->bad = true;
                break;
        case PS_WANT_UNITS:
                m->units.want = get_bool(r);
                break;
        default:
                r->bad = true;
        }
}

int privsep_decode(const uint8_t *buf, size_t len, struct privsep_msg *ret) {
        struct rcur r = { .buf = buf, .len = len };
        struct privsep_msg m;

        memset(&m, 0, sizeof(m));
        m.type = get_u8(&r);
        decode_body(&r, &m);
        if (r.bad || r.off != len)
                return -EBADMSG;
        *ret = m;
        return 0;
}

int privsep_send(int sock_fd, const struct privsep_msg *m, int fd, int flags) {
        uint8_t buf[PRIVSEP_MSG_MAX];
        int n = privsep_encode(m, buf);

        if (n < 0)
                return n;
        if ((fd >= 0) != privsep_carries_fd(m))
                return -EINVAL;
        return fdpass_send(sock_fd, buf, (size_t) n, fd, flags);
}

int privsep_recv(int sock_fd, struct privsep_msg *ret, int *ret_fd, int flags) {
        uint8_t buf[PRIVSEP_MSG_MAX];
        int fd = -1, n;

        n = fdpass_recv(sock_fd, buf, sizeof(buf), &fd, flags | MSG_CMSG_CLOEXEC);
        if (n == 0 && fd >= 0) {
                safe_close(fd);         /* an empty message with an fd: no message at all */
                return -EBADMSG;
        }
        if (n == 0)
                return -ENOTCONN;
        if (n < 0)
                return n;
        n = privsep_decode(buf, (size_t) n, ret);
        /* An fd comes with the types that carry one, and only with them. */
        if (n == 0 && (fd >= 0) != privsep_carries_fd(ret))
                n = -EBADMSG;
        if (n < 0) {
                safe_close(fd);
                return n;
        }
        *ret_fd = fd;
        return 0;
}
