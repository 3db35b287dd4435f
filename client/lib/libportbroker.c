/* SPDX-License-Identifier: MIT */
/*
 * libportbroker: the client side of the control protocol. A pb_conn is one
 * AF_UNIX SOCK_SEQPACKET connection to brokerd, guarded by a mutex; each call
 * sends one request with a fresh id and reads exactly one reply, which must
 * echo that id and answer that type (or be an error). Anything else -- bad
 * framing, a stray fd, a reply to another request -- is rejected, every fd
 * that came with it is closed, and the connection is dropped; the next call
 * reconnects. Endpoint text is parsed here so that typos fail without a
 * round trip. Nothing here prints, exits or keeps global state.
 */
#include "portbroker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "endpoint.h"
#include "fd-util.h"
#include "fdpass.h"
#include "proto.h"
#include "sockaddr.h"
#include "sockopt.h"

#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *) NULL)->sun_path))
/* The versions lists are asked in: the newest that lists more (brokerd lists
 * what a version can say: IPv6-only wildcards from 4 on, Unix endpoints
 * from 5 on; rules' reservations and sources from 6 on). A newer one would
 * only cost an older brokerd's refusal. */
#define LEASE_LIST_VERSION PB_PROTO_VERSION_UNIX
#define RULE_LIST_VERSION PB_PROTO_VERSION_POLICY

struct pb_conn {
        pthread_mutex_t lock;           /* serializes requests on this connection */
        int sock_fd;                    /* control connection; -1 after an error, reopened on demand */
        uint32_t next_id;               /* id of the next request, never 0 */
        char path[SUN_PATH_MAX];        /* control socket path, for reconnecting */
        bool one_shot;                  /* pb_get()/pb_release(): one request, then we hang up */
        bool importing;                 /* between pb_conn_policy_begin() and _commit(): brokerd keeps the
                                         * import with this connection, so it is never reopened */
};

/* One request and its reply; big (the rule list), so kept off the stack. */
struct exchange {
        struct pb_msg req;
        struct pb_msg reply;
};

static void clear_error(pb_error *err) {
        if (err) {
                err->code = 0;
                err->message[0] = '\0';
        }
}

/* Stores code and a one-line message in err (fmt may use %m for code). Returns -code. */
__attribute__((format(printf, 3, 4)))
static int fail(pb_error *err, int code, const char *fmt, ...) {
        va_list ap;

        if (err) {
                err->code = code;
                va_start(ap, fmt);
                errno = code;
                vsnprintf(err->message, sizeof(err->message), fmt, ap);
                va_end(ap);
                for (char *p = err->message; *p; p++)
                        if ((unsigned char) *p < 0x20 || *p == 0x7f)
                                *p = '?';
        }
        return -code;
}

const char *pb_socket_path(void) {
        const char *p = secure_getenv(PB_SOCKET_ENV);

        return p && p[0] ? p : PB_DEFAULT_SOCKET;
}

static int open_socket(const char *path, int *ret_fd, pb_error *err) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len = strlen(path);
        int fd, r;

        if (len == 0)
                return fail(err, EINVAL, "cannot connect to brokerd: empty control socket path");
        if (len >= SUN_PATH_MAX)
                return fail(err, ENAMETOOLONG, "cannot connect to brokerd at %.64s...: path longer than %zu bytes",
                            path, SUN_PATH_MAX - 1);
        memcpy(sa.sun_path, path, len);

        for (;;) {
                fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return fail(err, errno, "cannot create a socket for brokerd: %m");
                if (connect(fd, (struct sockaddr *) &sa, (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + 1)) >= 0)
                        break;
                r = errno;
                fd = safe_close(fd);
                if (r == EINTR)
                        continue;
                if (r == ENOENT || r == ECONNREFUSED)
                        return fail(err, r, "cannot connect to brokerd at %s: %m (is brokerd running? set "
                                    PB_SOCKET_ENV ")", path);
                return fail(err, r, "cannot connect to brokerd at %s: %m", path);
        }
        *ret_fd = fd;
        return 0;
}

int pb_connect(const char *path, pb_conn **ret, pb_error *err) {
        pb_conn *c;
        int r;

        clear_error(err);
        if (!ret)
                return fail(err, EINVAL, "pb_connect: no place to store the connection");
        if (!path)
                path = pb_socket_path();

        c = calloc(1, sizeof(*c));
        if (!c)
                return fail(err, ENOMEM, "cannot connect to brokerd: %m");
        c->sock_fd = -1;
        c->next_id = 1;
        r = open_socket(path, &c->sock_fd, err);
        if (r < 0) {
                free(c);
                return r;
        }
        memcpy(c->path, path, strlen(path) + 1);        /* fits: open_socket checked */
        r = pthread_mutex_init(&c->lock, NULL);
        if (r != 0) {
                c->sock_fd = safe_close(c->sock_fd);
                free(c);
                return fail(err, r, "cannot connect to brokerd: %m");
        }
        *ret = c;
        return 0;
}

void pb_disconnect(pb_conn *c) {
        if (!c)
                return;
        c->sock_fd = safe_close(c->sock_fd);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

static int parse_endpoint(const char *text, struct pb_endpoint *ret, pb_error *err) {
        if (!text)
                return fail(err, EINVAL, "no endpoint given: " PB_ENDPOINT_SYNTAX);
        if (endpoint_parse(text, ret) < 0)
                return fail(err, EINVAL, "invalid endpoint '%.100s': " PB_ENDPOINT_SYNTAX, text);
        return 0;
}

static int parse_pattern(const char *text, struct pb_endpoint *ret, pb_error *err) {
        if (!text)
                return fail(err, EINVAL, "no endpoint pattern given: " PB_PATTERN_SYNTAX);
        if (endpoint_parse_pattern(text, ret) < 0)
                return fail(err, EINVAL, "invalid endpoint pattern '%.100s': " PB_PATTERN_SYNTAX, text);
        return 0;
}

/* Copies the broker's error reply into err; returns -code. */
static int broker_error(const struct pb_msg *reply, pb_error *err) {
        int code = reply->error.code;

        if (code <= 0 || code > 4095)
                code = EPROTO;
        if (reply->error.message[0])
                return fail(err, code, "%s", reply->error.message);
        return fail(err, code, "brokerd: %m");
}

/* After a failed send on sock_fd: returns the -code of a connection-level error reply
 * (id 0) that brokerd left before it closed, or 0 when there is none. */
static int closed_reason(int sock_fd, struct pb_msg *scratch, pb_error *err) {
        uint8_t buf[PB_MSG_MAX];
        int len;

        len = fdpass_recv(sock_fd, buf, sizeof(buf), NULL, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (len > 0 && proto_decode(buf, (size_t) len, scratch) == 0 &&
            scratch->hdr.type == PB_MSG_ERROR && scratch->hdr.id == 0)
                return broker_error(scratch, err);
        return 0;
}

/* Assigns x->req the next request id of c (never 0), encodes it into buf. Returns the length or -code. */
static int encode_request(pb_conn *c, struct exchange *x, uint8_t buf[static PB_MSG_MAX], pb_error *err) {
        int len;

        x->req.hdr.id = c->next_id++;
        if (c->next_id == 0)
                c->next_id = 1;
        len = proto_encode(&x->req, buf, PB_MSG_MAX);
        if (len < 0)
                return fail(err, -len, "cannot encode the request: %m");
        return len;
}

/*
 * Sends buf on c's connection, opening it when there is none. A connection
 * that brokerd closed while idle is reopened and the request sent again,
 * once; on a fresh one that fails, brokerd's parting error reply (if any)
 * is the answer. Returns 0 or -code (the connection then dropped).
 */
/* brokerd forgets an import with the connection it began on. */
static int import_lost(pb_error *err) {
        return fail(err, ECONNRESET, "the connection to brokerd was lost during the import; nothing was changed");
}

static int send_request(pb_conn *c, const uint8_t *buf, size_t len, struct pb_msg *scratch, pb_error *err) {
        bool fresh = false;
        int r;

        if (c->sock_fd < 0 && c->importing)
                return import_lost(err);
        if (c->sock_fd < 0) {
                r = open_socket(c->path, &c->sock_fd, err);
                if (r < 0)
                        return r;
                fresh = true;
        }
        for (;;) {
                r = fdpass_send(c->sock_fd, buf, len, -1, 0);
                if (r >= 0) {
                        /* Nothing more to say: brokerd sees the end right after the
                         * request and closes at once instead of watching for more. */
                        if (c->one_shot)
                                (void) shutdown(c->sock_fd, SHUT_WR);
                        return 0;
                }
                if (r == -EPIPE || r == -ECONNRESET) {
                        /* brokerd may have said why it hung up (e.g. its connection limit). */
                        int k = closed_reason(c->sock_fd, scratch, err);
                        if (k < 0) {
                                c->sock_fd = safe_close(c->sock_fd);
                                return k;
                        }
                }
                c->sock_fd = safe_close(c->sock_fd);
                if (c->importing)
                        return import_lost(err);
                if (fresh || (r != -EPIPE && r != -ECONNRESET && r != -ENOTCONN))
                        return fail(err, -r, "cannot send the request to brokerd: %m");
                /* brokerd closed an idle connection before seeing the request: resend on a new one. */
                r = open_socket(c->path, &c->sock_fd, err);
                if (r < 0)
                        return r;
                fresh = true;
        }
}

/* Receives one reply into buf, its fd (when ret_fd is non-NULL) into *ret_fd (-1 if none,
 * owned by the caller). Returns the length (> 0) or -code, the connection then dropped. */
static int receive_reply(pb_conn *c, uint8_t buf[static PB_MSG_MAX], int *ret_fd, pb_error *err) {
        int len = fdpass_recv(c->sock_fd, buf, PB_MSG_MAX, ret_fd, MSG_CMSG_CLOEXEC);

        if (len > 0)
                return len;
        c->sock_fd = safe_close(c->sock_fd);
        if (len == 0)
                return fail(err, ECONNRESET, "brokerd closed the connection without replying");
        if (len == -EMSGSIZE)
                return fail(err, EBADMSG, "invalid reply from brokerd: longer than %d bytes", PB_MSG_MAX);
        if (len == -EBADMSG)
                return fail(err, EBADMSG, "invalid reply from brokerd: unexpected file descriptors "
                            "or control data (closed)");
        return fail(err, -len, "cannot receive the reply from brokerd: %m");
}

/* Checks that x->reply (which came with fd, or -1) answers x->req. Returns 0, an error
 * reply's -code, or -EPROTO/-EBADMSG for a reply that must drop the connection (*ret_drop). */
static int check_reply(const struct exchange *x, int fd, bool *ret_drop, pb_error *err) {
        const struct pb_header *h = &x->reply.hdr;

        *ret_drop = true;
        if (fd >= 0 && !proto_type_carries_fd(h->type))
                return fail(err, EBADMSG, "invalid reply from brokerd: unexpected file descriptor (closed)");
        if (h->type == PB_MSG_ERROR && h->id == 0)
                /* An error about the connection itself (e.g. too many connections): it ends here. */
                return broker_error(&x->reply, err);
        if (h->id != x->req.hdr.id)
                return fail(err, EPROTO, "invalid reply from brokerd: answers request %u, expected %u",
                            h->id, x->req.hdr.id);
        *ret_drop = false;
        if (h->type == PB_MSG_ERROR)
                return broker_error(&x->reply, err);
        if (h->type != (x->req.hdr.type | PB_MSG_REPLY)) {
                *ret_drop = true;
                return fail(err, EPROTO, "invalid reply from brokerd: type 0x%x to a request of type %u",
                            h->type, x->req.hdr.type);
        }
        return 0;
}

/*
 * Sends x->req (its id is assigned here) and reads the reply into x->reply.
 * When ret_fd is non-NULL the reply may carry one fd, stored there (-1 if
 * none) and owned by the caller. Called with c->lock held. An error reply
 * returns its -code; any transport or protocol failure also drops the
 * connection, so that a late or stray reply can never answer a later request.
 */
static int transact(pb_conn *c, struct exchange *x, int *ret_fd, pb_error *err) {
        uint8_t buf[PB_MSG_MAX];
        _cleanup_close_ int fd = -1;
        bool drop;
        int len, r;

        len = encode_request(c, x, buf, err);
        if (len < 0)
                return len;
        r = send_request(c, buf, (size_t) len, &x->reply, err);
        if (r < 0)
                return r;
        len = receive_reply(c, buf, ret_fd ? &fd : NULL, err);
        if (len < 0)
                return len;
        if (proto_decode(buf, (size_t) len, &x->reply) < 0) {
                r = fail(err, EBADMSG, "invalid reply from brokerd: malformed message (%d bytes)", len);
                drop = true;
        } else
                r = check_reply(x, fd, &drop, err);
        if (drop)
                c->sock_fd = safe_close(c->sock_fd);
        if (r < 0)
                return r;
        if (ret_fd) {
                *ret_fd = fd;
                fd = -1;
        }
        return 0;
}

/* Whether brokerd may see a request of type twice with the same outcome. */
static bool repeatable(uint16_t type) {
        return type == PB_MSG_GET || type == PB_MSG_STATUS || type == PB_MSG_POLICY_LIST || type == PB_MSG_INFO ||
               type == PB_MSG_CHECK || type == PB_MSG_POLICY_TEST || type == PB_MSG_LOG;
}

/* Runs one request on c under its lock. One that brokerd may see twice is
 * sent again, once, on a new connection when brokerd closed the connection
 * without answering (the worker that had it was replaced, or its idle time
 * ran out as the request came). One sent in a newer version than it needs
 * (a list, so that it shows IPv6-only wildcards and Unix endpoints) goes
 * again one version older while brokerd does not speak the one sent (it
 * has none of what that version added to show). */
static int request(pb_conn *c, struct exchange *x, int *ret_fd, pb_error *err) {
        int r;

        pthread_mutex_lock(&c->lock);
        r = transact(c, x, ret_fd, err);
        if (r == -ECONNRESET && repeatable(x->req.hdr.type))
                r = transact(c, x, ret_fd, err);
        while (r == -EPROTONOSUPPORT && x->req.hdr.version > proto_msg_version(&x->req) &&
               x->req.hdr.version > PB_PROTO_VERSION_MIN) {
                c->sock_fd = safe_close(c->sock_fd);    /* brokerd closes after a version error */
                x->req.hdr.version--;
                clear_error(err);
                r = transact(c, x, ret_fd, err);
        }
        /* However brokerd hung up (before our request or after it), an import is what was lost. */
        if (c->importing && c->sock_fd < 0 && r < 0)
                r = import_lost(err);
        pthread_mutex_unlock(&c->lock);
        return r;
}

static struct exchange *exchange_new(uint16_t type, pb_error *err) {
        struct exchange *x = calloc(1, sizeof(*x));

        if (!x) {
                fail(err, ENOMEM, "cannot allocate a request: %m");
                return NULL;
        }
        x->req.hdr.type = type;
        return x;
}

/* Checks that fd is the socket brokerd should have sent for e. */
static int check_socket(int fd, const struct pb_endpoint *e, pb_error *err) {
        int r = socket_is_for_endpoint(fd, e);

        if (r == -ENOTSOCK || r == -EBADF)
                return fail(err, EPROTO, "invalid reply from brokerd: the file descriptor is not a socket");
        if (r < 0)
                return fail(err, -r, "cannot read the socket brokerd handed out: %s", strerror(-r));
        if (r == 0)
                return fail(err, EPROTO, "invalid reply from brokerd: the socket is not the one asked for");
        return 0;
}

static int set_blocking_mode(int fd, unsigned flags, pb_error *err) {
        int fl = fcntl(fd, F_GETFL);

        if (fl < 0)
                return fail(err, errno, "cannot read the socket's file status flags: %m");
        if (!!(fl & O_NONBLOCK) == !!(flags & PB_GET_NONBLOCK))
                return 0;               /* already so: the usual case, one system call */
        fl ^= O_NONBLOCK;
        if (fcntl(fd, F_SETFL, fl) < 0)
                return fail(err, errno, "cannot set the socket's O_NONBLOCK flag: %m");
        return 0;
}

static int conn_get(pb_conn *c, const struct pb_endpoint *e, unsigned flags, pb_lease *ret_lease,
                    pb_error *err) {
        char want[PB_ENDPOINT_STRLEN], got[PB_ENDPOINT_STRLEN];
        struct exchange *x;
        int fd = -1, r;

        x = exchange_new(PB_MSG_GET, err);
        if (!x)
                return -ENOMEM;
        x->req.get.endpoint = *e;
        r = request(c, x, &fd, err);
        if (r < 0)
                goto out;
        if (fd < 0) {
                r = fail(err, EPROTO, "invalid reply from brokerd: no socket for %s", endpoint_format(e, want));
                goto out;
        }
        if (!endpoint_equal(&x->reply.got.endpoint, e)) {
                r = fail(err, EPROTO, "invalid reply from brokerd: a socket for %s instead of %s",
                         endpoint_format(&x->reply.got.endpoint, got), endpoint_format(e, want));
                goto out;
        }
        r = check_socket(fd, e, err);
        if (r < 0)
                goto out;
        if (flags & (PB_GET_NONBLOCK | PB_GET_BLOCKING)) {
                r = set_blocking_mode(fd, flags, err);
                if (r < 0)
                        goto out;
        }
        if (ret_lease) {
                *ret_lease = (pb_lease) {
                        .id = x->reply.got.lease_id,
                        .transport = endpoint_is_unix(e) ? 0 : e->transport,
                        .owner_uid = (uid_t) -1,
                        .queued = -1,
                        .created = x->reply.got.created,
                };
                endpoint_format(e, ret_lease->endpoint);
        }
        r = fd;
        fd = -1;
out:
        fd = safe_close(fd);
        free(x);
        return r;
}

static int check_get_flags(unsigned flags, pb_error *err) {
        if ((flags & ~(unsigned) (PB_GET_NONBLOCK | PB_GET_BLOCKING)) ||
            ((flags & PB_GET_NONBLOCK) && (flags & PB_GET_BLOCKING)))
                return fail(err, EINVAL, "invalid flags 0x%x: give at most one of PB_GET_NONBLOCK and "
                            "PB_GET_BLOCKING", flags);
        return 0;
}

int pb_conn_get(pb_conn *c, const char *endpoint, unsigned flags, pb_lease *ret_lease, pb_error *err) {
        struct pb_endpoint e;
        int r;

        clear_error(err);
        if (!c)
                return fail(err, EINVAL, "pb_conn_get: no connection");
        r = check_get_flags(flags, err);
        if (r < 0)
                return r;
        r = parse_endpoint(endpoint, &e, err);
        if (r < 0)
                return r;
        return conn_get(c, &e, flags, ret_lease, err);
}

int pb_get(const char *endpoint, unsigned flags, pb_error *err) {
        struct pb_endpoint e;
        pb_conn *c;
        int r;

        clear_error(err);
        r = check_get_flags(flags, err);
        if (r < 0)
                return r;
        r = parse_endpoint(endpoint, &e, err);
        if (r < 0)
                return r;
        r = pb_connect(NULL, &c, err);
        if (r < 0)
                return r;
        c->one_shot = true;
        r = conn_get(c, &e, flags, NULL, err);
        pb_disconnect(c);
        return r;
}

/* A request whose body is one endpoint and whose reply has none (RELEASE, CHECK). Returns 0 or -errno. */
static int conn_endpoint_request(pb_conn *c, uint16_t type, const struct pb_endpoint *e, pb_error *err) {
        struct exchange *x;
        int r;

        x = exchange_new(type, err);
        if (!x)
                return -ENOMEM;
        x->req.get.endpoint = *e;
        r = request(c, x, NULL, err);
        free(x);
        return r < 0 ? r : 0;
}

/* conn_endpoint_request() for the public function fn, on endpoint text. */
static int endpoint_request(pb_conn *c, const char *fn, uint16_t type, const char *endpoint, pb_error *err) {
        struct pb_endpoint e;
        int r;

        clear_error(err);
        if (!c)
                return fail(err, EINVAL, "%s: no connection", fn);
        r = parse_endpoint(endpoint, &e, err);
        if (r < 0)
                return r;
        return conn_endpoint_request(c, type, &e, err);
}

int pb_conn_release(pb_conn *c, const char *endpoint, pb_error *err) {
        return endpoint_request(c, "pb_conn_release", PB_MSG_RELEASE, endpoint, err);
}

int pb_conn_check(pb_conn *c, const char *endpoint, pb_error *err) {
        return endpoint_request(c, "pb_conn_check", PB_MSG_CHECK, endpoint, err);
}

int pb_release(const char *endpoint, pb_error *err) {
        struct pb_endpoint e;
        pb_conn *c;
        int r;

        clear_error(err);
        r = parse_endpoint(endpoint, &e, err);
        if (r < 0)
                return r;
        r = pb_connect(NULL, &c, err);
        if (r < 0)
                return r;
        c->one_shot = true;
        r = conn_endpoint_request(c, PB_MSG_RELEASE, &e, err);
        pb_disconnect(c);
        return r;
}

/* A status reply's entry as the caller's pb_lease. */
static void lease_from_entry(const struct pb_lease_entry *l, pb_lease *ret) {
        *ret = (pb_lease) {
                .id = l->id,
                .transport = endpoint_is_unix(&l->endpoint) ? 0 : l->endpoint.transport,
                .owner_uid = (uid_t) l->owner_uid,
                .since = l->since > INT64_MAX ? INT64_MAX : (int64_t) l->since,
                .handouts = l->handouts,
                .holders = l->holders,
                .queued = l->queued < 0 ? -1 : l->queued,
                .backlog = l->backlog,
                .bound = l->bound,
        };
        endpoint_format(&l->endpoint, ret->endpoint);
}

/* A policy list reply's entry as the caller's pb_rule. */
static void rule_from_entry(const struct pb_rule_entry *e, pb_rule *ret) {
        *ret = (pb_rule) {
                .id = e->id,
                .id_value = e->principal.id,
                .created = e->created > INT64_MAX ? INT64_MAX : (int64_t) e->created,
        };
        switch (e->principal.kind) {
        case PB_PRINCIPAL_USER:
                ret->kind = PB_USER;
                break;
        case PB_PRINCIPAL_GROUP:
                ret->kind = PB_GROUP;
                break;
        default:
                ret->kind = PB_UNIT;
                ret->id_value = 0;
                snprintf(ret->unit, sizeof(ret->unit), "%s", e->principal.unit);
        }
        endpoint_format_pattern(&e->pattern, ret->pattern);
        ret->socket_gid = endpoint_is_unix(&e->pattern) ? e->perm.gid : PB_SOCKET_GROUP_NONE;
        ret->socket_mode = endpoint_is_unix(&e->pattern) ? e->perm.mode : 0;
        ret->reserve = e->attrs.flags & PB_RULE_RESERVE;
        ret->owner_uid = e->attrs.flags & PB_RULE_OWNER ? e->attrs.owner : PB_OWNER_NONE;
        snprintf(ret->source, sizeof(ret->source), "%s", e->source);
}

/* A list page must move forward: ids above after and rising, or a hostile
 * or broken broker could keep us paging forever; and no empty page with
 * more to come. ids points at the first entry's id, stride apart. */
static int check_page(const uint64_t *ids, size_t stride, unsigned count, bool more, uint64_t after,
                      const char *what, pb_error *err) {
        for (unsigned i = 0; i < count; i++) {
                uint64_t id;

                memcpy(&id, (const char *) ids + i * stride, sizeof(id));
                if (id <= after)
                        return fail(err, EPROTO, "invalid reply from brokerd: %s list out of order", what);
                after = id;
        }
        if (more && count == 0)
                return fail(err, EPROTO, "invalid reply from brokerd: empty %s page with more to come", what);
        return 0;
}

/* What a list call returns once its callback returned r != 0: > 0 stops the walk with
 * success (0); -errno stops it with that failure, which err then says. */
static int callback_result(int r, pb_error *err) {
        if (r > 0)
                return 0;
        return fail(err, r < -4095 ? EINVAL : -r, "%m");
}

int pb_conn_status(pb_conn *c, const char *endpoint,
                   int (*fn)(const pb_lease *lease, void *userdata), void *userdata, pb_error *err) {
        struct exchange *x;
        uint64_t after = 0;
        int r;

        clear_error(err);
        if (!c || !fn)
                return fail(err, EINVAL, "pb_conn_status: no connection or no callback");
        x = exchange_new(PB_MSG_STATUS, err);
        if (!x)
                return -ENOMEM;
        x->req.hdr.version = LEASE_LIST_VERSION;
        if (endpoint) {
                r = parse_endpoint(endpoint, &x->req.status.endpoint, err);
                if (r < 0)
                        goto out;
                x->req.status.has_endpoint = 1;
        }

        for (;;) {
                unsigned count;

                x->req.status.after_id = after;
                r = request(c, x, NULL, err);
                if (r < 0)
                        goto out;
                count = x->reply.leases.count;
                r = check_page(&x->reply.leases.leases[0].id, sizeof(x->reply.leases.leases[0]), count,
                               x->reply.leases.more, after, "lease", err);
                if (r < 0)
                        goto out;
                for (unsigned i = 0; i < count; i++) {
                        pb_lease lease;

                        lease_from_entry(&x->reply.leases.leases[i], &lease);
                        r = fn(&lease, userdata);
                        if (r != 0) {
                                r = callback_result(r, err);
                                goto out;
                        }
                }
                if (!x->reply.leases.more)
                        break;
                after = x->reply.leases.leases[count - 1].id;
        }
        r = 0;
out:
        free(x);
        return r;
}

int64_t pb_conn_policy_add(pb_conn *c, pb_principal_kind kind, uint32_t id_value, const char *unit,
                           const char *pattern, pb_error *err) {
        return pb_conn_policy_add_unix(c, kind, id_value, unit, pattern, PB_SOCKET_GROUP_NONE, PB_SOCKET_MODE_DEFAULT,
                                       err);
}

int64_t pb_conn_policy_add_unix(pb_conn *c, pb_principal_kind kind, uint32_t id_value, const char *unit,
                                const char *pattern, uint32_t socket_gid, unsigned socket_mode, pb_error *err) {
        pb_rule rule = { .kind = kind, .id_value = id_value, .socket_gid = socket_gid, .socket_mode = socket_mode,
                         .owner_uid = PB_OWNER_NONE };

        if (unit && strlen(unit) >= sizeof(rule.unit)) {
                clear_error(err);
                return fail(err, EINVAL, "invalid unit name: expected e.g. 'web.service'");
        }
        if (unit)
                strcpy(rule.unit, unit);
        if (!pattern || strlen(pattern) >= sizeof(rule.pattern)) {
                clear_error(err);
                return fail(err, EINVAL, "invalid pattern: %s", PB_PATTERN_SYNTAX);
        }
        strcpy(rule.pattern, pattern);
        return pb_conn_policy_add_rule(c, &rule, err);
}

/* The principal of rule into ret. Returns 0 or -EINVAL (err says why). */
static int principal_of(const pb_rule *rule, struct pb_principal *ret, pb_error *err) {
        *ret = (struct pb_principal) { 0 };
        switch (rule->kind) {
        case PB_USER:
        case PB_GROUP:
                if (rule->unit[0])
                        return fail(err, EINVAL, "a user or group rule takes no unit name");
                if (rule->id_value == UINT32_MAX)
                        return fail(err, EINVAL, "invalid %s id %u", rule->kind == PB_USER ? "user" : "group",
                                    rule->id_value);
                ret->kind = rule->kind == PB_USER ? PB_PRINCIPAL_USER : PB_PRINCIPAL_GROUP;
                ret->id = rule->id_value;
                break;
        case PB_UNIT:
                ret->kind = PB_PRINCIPAL_UNIT;
                snprintf(ret->unit, sizeof(ret->unit), "%s", rule->unit);
                break;
        default:
                return fail(err, EINVAL, "invalid principal kind %d", (int) rule->kind);
        }
        if (proto_principal_validate(ret) < 0)
                return fail(err, EINVAL, "invalid unit name '%.100s': expected e.g. 'web.service'", rule->unit);
        return 0;
}

int64_t pb_conn_policy_add_rule(pb_conn *c, const pb_rule *rule, pb_error *err) {
        struct exchange *x;
        const char *why;
        int64_t r;

        clear_error(err);
        if (!c || !rule)
                return fail(err, EINVAL, "pb_conn_policy_add_rule: no connection or rule");
        if (rule->socket_mode > 0777)
                return fail(err, EINVAL, "invalid socket mode %o: permission bits only (at most 0777)",
                            rule->socket_mode);
        x = exchange_new(PB_MSG_POLICY_ADD, err);
        if (!x)
                return -ENOMEM;
        r = principal_of(rule, &x->req.policy_add.principal, err);
        if (r < 0)
                goto out;
        r = parse_pattern(rule->pattern, &x->req.policy_add.pattern, err);
        if (r < 0)
                goto out;
        x->req.policy_add.perm = (struct pb_socket_perm) { .gid = rule->socket_gid,
                                                           .mode = (uint16_t) rule->socket_mode };
        /* An owner is a group or unit rule's reservation's: a zeroed pb_rule names none. */
        if (rule->reserve)
                x->req.policy_add.attrs.flags = PB_RULE_RESERVE;
        if (rule->reserve && rule->kind != PB_USER && rule->owner_uid != PB_OWNER_NONE) {
                x->req.policy_add.attrs.flags |= PB_RULE_OWNER;
                x->req.policy_add.attrs.owner = rule->owner_uid;
        }
        if (proto_rule_attrs_validate(&x->req.policy_add.principal, &x->req.policy_add.pattern,
                                      &x->req.policy_add.attrs, &why) < 0) {
                r = fail(err, EINVAL, "%s", why);
                goto out;
        }

        r = request(c, x, NULL, err);
        if (r < 0)
                goto out;
        /* In an import brokerd numbers the rules at the commit: 0 until then. */
        if ((x->reply.rule_id.rule_id == 0) != c->importing || x->reply.rule_id.rule_id > INT64_MAX) {
                r = fail(err, EPROTO, "invalid reply from brokerd: rule id %llu",
                         (unsigned long long) x->reply.rule_id.rule_id);
                goto out;
        }
        r = (int64_t) x->reply.rule_id.rule_id;
out:
        free(x);
        return r;
}

int pb_conn_policy_begin(pb_conn *c, unsigned flags, pb_error *err) {
        struct exchange *x;
        int r;

        clear_error(err);
        if (!c)
                return fail(err, EINVAL, "pb_conn_policy_begin: no connection");
        if (flags & ~PB_IMPORT_REPLACE)
                return fail(err, EINVAL, "pb_conn_policy_begin: unknown flags 0x%x", flags);
        if (c->importing)
                return fail(err, EBUSY, "pb_conn_policy_begin: an import is under way on this connection");
        x = exchange_new(PB_MSG_POLICY_BEGIN, err);
        if (!x)
                return -ENOMEM;
        x->req.policy_begin.flags = flags & PB_IMPORT_REPLACE ? PB_POLICY_REPLACE : 0;
        r = request(c, x, NULL, err);
        free(x);
        if (r < 0)
                return r;
        c->importing = true;
        return 0;
}

int pb_conn_policy_commit(pb_conn *c, pb_import_counts *ret, pb_error *err) {
        struct exchange *x;
        int r;

        clear_error(err);
        if (!c)
                return fail(err, EINVAL, "pb_conn_policy_commit: no connection");
        if (!c->importing)
                return fail(err, EINVAL, "pb_conn_policy_commit: no import begun (pb_conn_policy_begin)");
        x = exchange_new(PB_MSG_POLICY_COMMIT, err);
        if (!x)
                return -ENOMEM;
        r = request(c, x, NULL, err);
        c->importing = false;
        if (r >= 0 && ret)
                *ret = (pb_import_counts) { .added = x->reply.policy_commit.added,
                                            .changed = x->reply.policy_commit.changed,
                                            .removed = x->reply.policy_commit.removed };
        free(x);
        return r < 0 ? r : 0;
}

int pb_conn_policy_remove(pb_conn *c, uint64_t id, pb_error *err) {
        struct exchange *x;
        int r;

        clear_error(err);
        if (!c)
                return fail(err, EINVAL, "pb_conn_policy_remove: no connection");
        if (id == 0 || id > INT64_MAX)
                return fail(err, EINVAL, "invalid rule id %llu", (unsigned long long) id);
        x = exchange_new(PB_MSG_POLICY_REMOVE, err);
        if (!x)
                return -ENOMEM;
        x->req.rule_id.rule_id = id;
        r = request(c, x, NULL, err);
        free(x);
        return r < 0 ? r : 0;
}

int pb_conn_policy_list(pb_conn *c, int (*fn)(const pb_rule *rule, void *userdata), void *userdata,
                        pb_error *err) {
        struct exchange *x;
        uint64_t after = 0;
        int r;

        clear_error(err);
        if (!c || !fn)
                return fail(err, EINVAL, "pb_conn_policy_list: no connection or no callback");
        x = exchange_new(PB_MSG_POLICY_LIST, err);
        if (!x)
                return -ENOMEM;
        x->req.hdr.version = RULE_LIST_VERSION;

        for (;;) {
                unsigned count;

                x->req.policy_list.after_id = after;
                r = request(c, x, NULL, err);
                if (r < 0)
                        goto out;
                count = x->reply.rules.count;
                r = check_page(&x->reply.rules.rules[0].id, sizeof(x->reply.rules.rules[0]), count,
                               x->reply.rules.more, after, "rule", err);
                if (r < 0)
                        goto out;
                for (unsigned i = 0; i < count; i++) {
                        pb_rule rule;

                        rule_from_entry(&x->reply.rules.rules[i], &rule);
                        r = fn(&rule, userdata);
                        if (r != 0) {
                                r = callback_result(r, err);
                                goto out;
                        }
                }
                if (!x->reply.rules.more)
                        break;
                after = x->reply.rules.rules[count - 1].id;
        }
        r = 0;
out:
        free(x);
        return r;
}

/* The POLICY_TEST request's peer from the caller's. Returns 0 or -EINVAL. */
static int test_peer(const pb_test_peer *peer, struct pb_msg *req, pb_error *err) {
        struct pb_principal unit = { .kind = PB_PRINCIPAL_UNIT };

        if (peer->n_groups > PB_TEST_GROUPS_MAX)
                return fail(err, EINVAL, "a policy test's peer has at most %d groups, not %u", PB_TEST_GROUPS_MAX,
                            peer->n_groups);
        if (peer->has_uid && peer->uid == (uid_t) PB_UID_NONE)
                return fail(err, EINVAL, "invalid uid %u", (unsigned) peer->uid);
        req->policy_test.uid = peer->has_uid ? (uint32_t) peer->uid : PB_UID_NONE;
        req->policy_test.n_groups = (uint8_t) peer->n_groups;
        for (unsigned i = 0; i < peer->n_groups; i++) {
                if (peer->groups[i] == (gid_t) -1)
                        return fail(err, EINVAL, "invalid gid %u", (unsigned) peer->groups[i]);
                req->policy_test.groups[i] = (uint32_t) peer->groups[i];
        }
        if (strnlen(peer->unit, sizeof(peer->unit)) == sizeof(peer->unit))
                return fail(err, EINVAL, "invalid unit name: expected e.g. 'web.service'");
        memcpy(unit.unit, peer->unit, sizeof(unit.unit));
        if (unit.unit[0] && proto_principal_validate(&unit) < 0)
                return fail(err, EINVAL, "invalid unit name '%.100s': expected e.g. 'web.service'", peer->unit);
        memcpy(req->policy_test.unit, unit.unit, sizeof(unit.unit));
        return 0;
}

int pb_conn_policy_test(pb_conn *c, const char *endpoint, const pb_test_peer *peer, pb_test_result *ret,
                        pb_error *err) {
        struct exchange *x;
        int r;

        clear_error(err);
        if (!c || !peer || !ret)
                return fail(err, EINVAL, "pb_conn_policy_test: no connection, peer or result");
        x = exchange_new(PB_MSG_POLICY_TEST, err);
        if (!x)
                return -ENOMEM;
        r = parse_endpoint(endpoint, &x->req.policy_test.endpoint, err);
        if (r >= 0)
                r = test_peer(peer, &x->req, err);
        if (r >= 0)
                r = request(c, x, NULL, err);
        if (r >= 0) {
                const struct pb_test_verdict *t = &x->reply.policy_tested;

                *ret = (pb_test_result) {
                        .allowed = t->allowed,
                        .admin = t->admin,
                        .has_rule = t->rule.id != 0,
                        .lease_id = t->lease_id,
                        .lease_owner = (uid_t) t->owner_uid,
                };
                if (t->rule.id)
                        rule_from_entry(&t->rule, &ret->rule);
                snprintf(ret->reason, sizeof(ret->reason), "%s", t->reason);
                r = 0;
        }
        free(x);
        return r;
}

int pb_conn_reexec(pb_conn *c, char *version, size_t size, pb_error *err) {
        struct exchange *x;
        int r;

        clear_error(err);
        if (!c)
                return fail(err, EINVAL, "pb_conn_reexec: no connection");
        x = exchange_new(PB_MSG_REEXEC, err);
        if (!x)
                return -ENOMEM;
        r = request(c, x, NULL, err);
        if (r >= 0) {
                if (version && size)
                        snprintf(version, size, "%s", x->reply.reexec.version);
                r = (int) (x->reply.reexec.pid & INT32_MAX);
        }
        free(x);
        return r;
}

int pb_conn_info(pb_conn *c, pb_info *ret, pb_error *err) {
        struct exchange *x;
        int r;

        clear_error(err);
        if (!c || !ret)
                return fail(err, EINVAL, "pb_conn_info: no connection or result");
        x = exchange_new(PB_MSG_INFO, err);
        if (!x)
                return -ENOMEM;
        r = request(c, x, NULL, err);
        if (r >= 0) {
                *ret = (pb_info) { .pid = (pid_t) (x->reply.info.pid & INT32_MAX), .guard = x->reply.info.guard };
                snprintf(ret->version, sizeof(ret->version), "%s", x->reply.info.version);
                snprintf(ret->guard_state, sizeof(ret->guard_state), "%s", x->reply.info.guard_state);
                r = 0;
        }
        free(x);
        return r;
}

/* The LOG request filter asks for. Returns 0 or -EINVAL. */
static int log_request(const pb_log_filter *filter, struct pb_msg *req, pb_error *err) {
        static const pb_log_filter none;
        const pb_log_filter *f = filter ? filter : &none;
        const char *kind = f->event ? f->event : "";
        int r;

        if (f->since_us < 0 || f->until_us < 0)
                return fail(err, EINVAL, "invalid time: before 1970");
        if (f->has_uid && f->uid == (uid_t) -1)
                return fail(err, EINVAL, "invalid uid %u", (unsigned) f->uid);
        if (strlen(kind) > PB_EVENT_KIND_MAX)
                return fail(err, EINVAL, "invalid event kind '%.40s'", kind);
        for (const char *p = kind; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        return fail(err, EINVAL, "invalid event kind '%.40s'", kind);
        req->log.since = (uint64_t) f->since_us;
        req->log.until = (uint64_t) f->until_us;
        req->log.has_uid = f->has_uid;
        req->log.uid = f->has_uid ? (uint32_t) f->uid : 0;
        if (f->endpoint) {
                r = parse_pattern(f->endpoint, &req->log.endpoint, err);
                if (r < 0)
                        return r;
                req->log.has_endpoint = 1;
        }
        memcpy(req->log.event, kind, strlen(kind) + 1);
        return 0;
}

/* A LOG page must move on: ids below before (0: none yet) and falling, the
 * cursor below before and at most the last id, or a hostile or broken
 * broker could keep us paging forever. */
static int check_log_page(const struct pb_event_list *l, uint64_t before, pb_error *err) {
        uint64_t below = before ? before : UINT64_MAX;

        for (unsigned i = 0; i < l->count; i++) {
                if (l->events[i].id >= below)
                        return fail(err, EPROTO, "invalid reply from brokerd: event list out of order");
                below = l->events[i].id;
        }
        if (l->more && (l->next_id > below || (before && l->next_id >= before)))
                return fail(err, EPROTO, "invalid reply from brokerd: event list does not move on");
        return 0;
}

/* A LOG reply's entry as the caller's pb_event. */
static void event_from_entry(const struct pb_event_entry *e, pb_event *ret) {
        *ret = (pb_event) {
                .id = e->id,
                .time_us = (int64_t) e->time,
                .uid = e->uid == PB_UID_NONE ? (uid_t) -1 : (uid_t) e->uid,
                .pid = e->pid <= INT32_MAX ? (pid_t) e->pid : 0,
        };
        snprintf(ret->event, sizeof(ret->event), "%s", e->event);
        snprintf(ret->endpoint, sizeof(ret->endpoint), "%s", e->endpoint);
        snprintf(ret->detail, sizeof(ret->detail), "%s", e->detail);
}

int pb_conn_log(pb_conn *c, const pb_log_filter *filter, unsigned limit,
                int (*fn)(const pb_event *event, void *userdata), void *userdata, pb_error *err) {
        struct exchange *x;
        uint64_t before = 0;
        unsigned left = limit;
        int r;

        clear_error(err);
        if (!c || !fn)
                return fail(err, EINVAL, "pb_conn_log: no connection or no callback");
        x = exchange_new(PB_MSG_LOG, err);
        if (!x)
                return -ENOMEM;
        r = log_request(filter, &x->req, err);
        if (r < 0)
                goto out;

        for (;;) {
                const struct pb_event_list *l = &x->reply.events;

                x->req.log.before_id = before;
                x->req.log.limit = (uint8_t) (limit && left < PB_EVENTS_MAX ? left : 0);
                r = request(c, x, NULL, err);
                if (r == -EPROTONOSUPPORT) {
                        r = fail(err, EPROTONOSUPPORT, "brokerd is older than protocol version %d, which "
                                 "reading its audit trail needs", PB_PROTO_VERSION_POLICY);
                        goto out;
                }
                if (r < 0)
                        goto out;
                r = check_log_page(l, before, err);
                if (r < 0)
                        goto out;
                for (unsigned i = 0; i < l->count && !(limit && left == 0); i++) {
                        pb_event event;

                        event_from_entry(&l->events[i], &event);
                        r = fn(&event, userdata);
                        if (r != 0) {
                                r = callback_result(r, err);
                                goto out;
                        }
                        if (limit)
                                left--;
                }
                if (!l->more || (limit && left == 0))
                        break;
                before = l->next_id;
        }
        r = 0;
out:
        free(x);
        return r;
}
