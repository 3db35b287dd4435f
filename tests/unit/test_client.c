/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of libportbroker without brokerd: socket path selection,
 * client-side endpoint checks, connect failures, and the library against a
 * hostile peer. A thread in this process listens on a real SOCK_SEQPACKET
 * socket and answers with garbage, wrong ids, wrong types, stray or extra
 * fds, sockets that are not the one asked for, or nothing at all; each test
 * checks the error the library returns and that /proc/self/fd shows no fd
 * left behind. A few well-formed exchanges (a real listening socket, list
 * paging, an error reply, reconnecting after an idle close, the refusal
 * at the connection limit, concurrent callers) check the paths that must
 * succeed or fail cleanly.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "endpoint.h"
#include "fdpass.h"
#include "portbroker.h"
#include "proto.h"

/* --- helpers --------------------------------------------------------------- */

static int count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        int n = 0;

        assert_non_null(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n - 1;           /* the directory's own fd */
}

struct server;
typedef void (*script_fn)(struct server *s);

struct server {
        char dir[64];
        char path[108];
        int listen_fd;
        pthread_t thread;
        script_fn script;
        int failed;                     /* set by the thread: cmocka asserts only in the main thread */
        int port_fd;                    /* a listening socket the script may hand out, -1 if none */
        uint16_t port;
        uint32_t ids[8];                /* request ids seen */
        uint64_t after[8];              /* after_id of list requests seen */
        uint16_t versions[8];           /* protocol version of the requests seen */
        unsigned nreq;
        int sync[2];                    /* pipe: the script signals the test */
};

static void *server_main(void *userdata) {
        struct server *s = userdata;

        s->script(s);
        return NULL;
}

static void server_start(struct server *s, script_fn script) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        memset(s, 0, sizeof(*s));
        s->port_fd = -1;
        s->script = script;
        snprintf(s->dir, sizeof(s->dir), "/tmp/test_client.XXXXXX");
        assert_non_null(mkdtemp(s->dir));
        snprintf(s->path, sizeof(s->path), "%s/control.sock", s->dir);
        memcpy(sa.sun_path, s->path, strlen(s->path) + 1);
        s->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        assert_true(s->listen_fd >= 0);
        assert_int_equal(bind(s->listen_fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(s->listen_fd, 8), 0);
        assert_int_equal(pipe2(s->sync, O_CLOEXEC), 0);
}

static void server_run(struct server *s) {
        assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_join(struct server *s) {
        assert_int_equal(pthread_join(s->thread, NULL), 0);
        assert_int_equal(s->failed, 0);
}

static void server_stop(struct server *s) {
        close(s->listen_fd);
        close(s->sync[0]);
        close(s->sync[1]);
        if (s->port_fd >= 0)
                close(s->port_fd);
        unlink(s->path);
        rmdir(s->dir);
}

static int accept_one(struct server *s) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
                s->failed = 1;
        return fd;
}

/* Receives and decodes one request; records its id. */
static int recv_request(struct server *s, int conn_fd, struct pb_msg *ret) {
        uint8_t buf[PB_MSG_MAX];
        int n = fdpass_recv(conn_fd, buf, sizeof(buf), NULL, MSG_CMSG_CLOEXEC);

        if (n <= 0 || proto_decode(buf, (size_t) n, ret) < 0) {
                s->failed = n == 0 ? 0 : 1;     /* EOF is the client going away */
                return -1;
        }
        if (s->nreq < 8) {
                s->ids[s->nreq] = ret->hdr.id;
                s->versions[s->nreq] = ret->hdr.version;
                if (ret->hdr.type == PB_MSG_STATUS)
                        s->after[s->nreq] = ret->status.after_id;
                else if (ret->hdr.type == PB_MSG_POLICY_LIST)
                        s->after[s->nreq] = ret->policy_list.after_id;
                else if (ret->hdr.type == PB_MSG_LOG)
                        s->after[s->nreq] = ret->log.before_id;
        }
        s->nreq++;
        return 0;
}

static void send_msg(struct server *s, int conn_fd, const struct pb_msg *m, int fd) {
        uint8_t buf[PB_MSG_MAX];
        int n = proto_encode(m, buf, sizeof(buf));

        if (n < 0 || fdpass_send(conn_fd, buf, (size_t) n, fd, 0) < 0)
                s->failed = 1;
}

/* Sends buf with n_fds copies of fd attached. */
static void send_with_fds(struct server *s, int conn_fd, const void *buf, size_t len, int fd, int n_fds) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 4)];
        } control = { 0 };
        struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t) n_fds),
        };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t) n_fds);
        for (int i = 0; i < n_fds; i++)
                memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
        if (sendmsg(conn_fd, &mh, MSG_NOSIGNAL) != (ssize_t) len)
                s->failed = 1;
}

/* A reply to req: the matching reply type with the request's id (and its endpoint for GET). */
static void reply_to(const struct pb_msg *req, struct pb_msg *ret) {
        memset(ret, 0, sizeof(*ret));
        ret->hdr.type = req->hdr.type | PB_MSG_REPLY;
        ret->hdr.id = req->hdr.id;
        if (req->hdr.type == PB_MSG_GET) {
                ret->got.endpoint = req->get.endpoint;
                ret->got.lease_id = 7;
                ret->got.created = 1;
        }
}

/* A TCP listener on 127.0.0.1 and an ephemeral port, for the script to hand out. */
static void make_port(struct server *s) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sin);

        s->port_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(s->port_fd >= 0);
        assert_int_equal(bind(s->port_fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
        assert_int_equal(listen(s->port_fd, 16), 0);
        assert_int_equal(getsockname(s->port_fd, (struct sockaddr *) &sin, &len), 0);
        s->port = ntohs(sin.sin_port);
}

static void port_endpoint(const struct server *s, char buf[static 64]) {
        snprintf(buf, 64, "tcp:127.0.0.1:%u", s->port);
}

/* Connects to s, runs its script, and checks one failing request: return code, message and fds. */
typedef int (*call_fn)(pb_conn *c, struct server *s, pb_error *err);

static void expect_failure(script_fn script, call_fn call, int code, const char *fragment) {
        struct server s;
        pb_error err;
        pb_conn *c;
        int before, r;

        server_start(&s, script);
        make_port(&s);
        before = count_fds();
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        r = call(c, &s, &err);
        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(r, -code);
        assert_int_equal(err.code, code);
        assert_non_null(strstr(err.message, fragment));
        assert_null(strchr(err.message, '\n'));
        assert_int_equal(count_fds(), before);
        server_stop(&s);
}

static int call_get(pb_conn *c, struct server *s, pb_error *err) {
        char ep[64];

        port_endpoint(s, ep);
        return pb_conn_get(c, ep, 0, NULL, err);
}

static int call_release(pb_conn *c, struct server *s, pb_error *err) {
        char ep[64];

        port_endpoint(s, ep);
        return pb_conn_release(c, ep, err);
}

static int count_cb(const pb_lease *lease, void *userdata) {
        (*(unsigned *) userdata)++;
        return 0;
}

static int call_status(pb_conn *c, struct server *s, pb_error *err) {
        unsigned n = 0;

        return pb_conn_status(c, NULL, count_cb, &n, err);
}

/* --- no daemon needed ------------------------------------------------------ */

static void test_socket_path(void **state) {
        unsetenv(PB_SOCKET_ENV);
        assert_string_equal(pb_socket_path(), PB_DEFAULT_SOCKET);
        setenv(PB_SOCKET_ENV, "", 1);
        assert_string_equal(pb_socket_path(), PB_DEFAULT_SOCKET);
        setenv(PB_SOCKET_ENV, "/tmp/elsewhere.sock", 1);
        assert_string_equal(pb_socket_path(), "/tmp/elsewhere.sock");
        unsetenv(PB_SOCKET_ENV);
}

static void test_bad_endpoint(void **state) {
        static const char *bad[] = { "", "bogus", "tcp:", "0", "65536", "sctp:80", "tcp:8000-8099",
                                     "1.2.3:80", "[::1]80", "tcp:[::ffff:1.2.3.4]:80", " 80" };
        int before = count_fds();
        pb_error err;

        /* Parsed before any connection: the socket path does not even exist. */
        setenv(PB_SOCKET_ENV, "/nonexistent/portbroker.sock", 1);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char want[128];

                snprintf(want, sizeof(want), "invalid endpoint '%s': " PB_ENDPOINT_SYNTAX, bad[i]);
                assert_int_equal(pb_get(bad[i], 0, &err), -EINVAL);
                assert_int_equal(err.code, EINVAL);
                assert_string_equal(err.message, want);
                assert_int_equal(pb_release(bad[i], &err), -EINVAL);
                assert_string_equal(err.message, want);
        }
        assert_int_equal(pb_get(NULL, 0, &err), -EINVAL);
        assert_int_equal(pb_get("8080", PB_GET_NONBLOCK | PB_GET_BLOCKING, &err), -EINVAL);
        assert_int_equal(pb_get("8080", 1u << 7, &err), -EINVAL);
        assert_int_equal(pb_get("bogus", 0, NULL), -EINVAL);   /* err is optional */
        unsetenv(PB_SOCKET_ENV);
        assert_int_equal(count_fds(), before);
}

static void test_connect_missing(void **state) {
        int before = count_fds();
        pb_conn *c = NULL;
        pb_error err;

        assert_int_equal(pb_connect("/nonexistent/portbroker.sock", &c, &err), -ENOENT);
        assert_null(c);
        assert_int_equal(err.code, ENOENT);
        assert_non_null(strstr(err.message, "cannot connect to brokerd at /nonexistent/portbroker.sock"));
        assert_non_null(strstr(err.message, "is brokerd running? set PORTBROKER_SOCKET"));

        setenv(PB_SOCKET_ENV, "/nonexistent/other.sock", 1);
        assert_int_equal(pb_get("8080", 0, &err), -ENOENT);
        assert_non_null(strstr(err.message, "/nonexistent/other.sock"));
        assert_int_equal(pb_connect(NULL, &c, &err), -ENOENT);
        unsetenv(PB_SOCKET_ENV);

        assert_int_equal(pb_connect("", &c, &err), -EINVAL);
        char longpath[200];
        memset(longpath, 'x', sizeof(longpath) - 1);
        longpath[sizeof(longpath) - 1] = '\0';
        assert_int_equal(pb_connect(longpath, &c, &err), -ENAMETOOLONG);
        assert_int_equal(count_fds(), before);
        pb_disconnect(NULL);
}

static void test_connect_refused(void **state) {
        struct server s;
        pb_conn *c = NULL;
        pb_error err;
        int before;

        /* A socket file nobody listens on any more: what a crashed brokerd leaves. */
        server_start(&s, NULL);
        close(s.listen_fd);
        s.listen_fd = -1;
        before = count_fds();
        assert_int_equal(pb_connect(s.path, &c, &err), -ECONNREFUSED);
        assert_non_null(strstr(err.message, "is brokerd running?"));
        assert_int_equal(count_fds(), before);
        server_stop(&s);
}

/* --- hostile replies ------------------------------------------------------- */

static void script_garbage(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req;
        uint8_t junk[40];

        memset(junk, 0xaa, sizeof(junk));
        if (recv_request(s, fd, &req) == 0)
                send_with_fds(s, fd, junk, sizeof(junk), s->port_fd, 1);
        close(fd);
}

static void test_garbage(void **state) {
        expect_failure(script_garbage, call_get, EBADMSG, "invalid reply from brokerd: malformed");
        expect_failure(script_garbage, call_release, EBADMSG, "invalid reply from brokerd");
}

static void script_oversized(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req;
        static uint8_t big[PB_MSG_MAX + 100];

        if (recv_request(s, fd, &req) == 0)
                send_with_fds(s, fd, big, sizeof(big), s->port_fd, 1);
        close(fd);
}

static void test_oversized(void **state) {
        expect_failure(script_oversized, call_get, EBADMSG, "longer than");
}

static void script_wrong_id(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                reply.hdr.id++;
                send_msg(s, fd, &reply, req.hdr.type == PB_MSG_GET ? s->port_fd : -1);
        }
        close(fd);
}

static void test_wrong_id(void **state) {
        expect_failure(script_wrong_id, call_get, EPROTO, "answers request 2, expected 1");
        expect_failure(script_wrong_id, call_release, EPROTO, "expected 1");
}

static void script_wrong_type(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                memset(&reply, 0, sizeof(reply));
                reply.hdr.type = PB_MSG_POLICY_REMOVE | PB_MSG_REPLY;
                reply.hdr.id = req.hdr.id;
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static void test_wrong_type(void **state) {
        expect_failure(script_wrong_type, call_get, EPROTO, "type 0x8005");
        expect_failure(script_wrong_type, call_status, EPROTO, "type 0x8005");
}

/* A well-formed reply that carries an fd although its type never does. */
static void script_stray_fd(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;
        uint8_t buf[PB_MSG_MAX];
        int n;

        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                n = proto_encode(&reply, buf, sizeof(buf));
                send_with_fds(s, fd, buf, (size_t) n, s->port_fd, 1);
        }
        close(fd);
}

static void test_stray_fd(void **state) {
        expect_failure(script_stray_fd, call_release, EBADMSG, "unexpected file descriptor");
}

/* An error reply with an fd attached: the error is not believed, the fd is closed. */
static void script_error_with_fd(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                proto_set_error(&reply, req.hdr.id, EACCES, "denied");
                send_msg(s, fd, &reply, s->port_fd);
        }
        close(fd);
}

static void test_error_with_fd(void **state) {
        expect_failure(script_error_with_fd, call_get, EBADMSG, "unexpected file descriptor");
}

/* The GET reply with two fds instead of one. */
static void script_two_fds(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;
        uint8_t buf[PB_MSG_MAX];
        int n;

        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                n = proto_encode(&reply, buf, sizeof(buf));
                send_with_fds(s, fd, buf, (size_t) n, s->port_fd, 2);
        }
        close(fd);
}

static void test_two_fds(void **state) {
        expect_failure(script_two_fds, call_get, EBADMSG, "unexpected file descriptors");
}

static void script_get_no_fd(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static void test_get_no_fd(void **state) {
        expect_failure(script_get_no_fd, call_get, EPROTO, "no socket for tcp:127.0.0.1:");
}

/* GET replies that hand out something other than the socket asked for. */
static void script_get_pipe(struct server *s) {
        int fd = accept_one(s), p[2];
        struct pb_msg req, reply;

        if (pipe2(p, O_CLOEXEC) < 0) {
                s->failed = 1;
                return;
        }
        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                send_msg(s, fd, &reply, p[0]);
        }
        close(p[0]);
        close(p[1]);
        close(fd);
}

static void script_get_udp(struct server *s) {
        int fd = accept_one(s), udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                send_msg(s, fd, &reply, udp_fd);
        }
        close(udp_fd);
        close(fd);
}

static void script_get_other_endpoint(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                reply.got.endpoint.port_lo = reply.got.endpoint.port_hi = (uint16_t) (s->port == 1 ? 2 : s->port - 1);
                send_msg(s, fd, &reply, s->port_fd);
        }
        close(fd);
}

static void test_get_wrong_socket(void **state) {
        expect_failure(script_get_pipe, call_get, EPROTO, "not a socket");
        expect_failure(script_get_udp, call_get, EPROTO, "not the one asked for");
        expect_failure(script_get_other_endpoint, call_get, EPROTO, "instead of tcp:127.0.0.1:");
}

/* brokerd hangs up without a reply, on both connections a get tries. */
static void script_hang_up(struct server *s) {
        for (int i = 0; i < 2; i++) {
                int fd = accept_one(s);
                struct pb_msg req;

                recv_request(s, fd, &req);
                close(fd);
        }
}

static void test_hang_up(void **state) {
        expect_failure(script_hang_up, call_get, ECONNRESET, "closed the connection");
}

/* brokerd drops the connection an import began on: it forgets the import.
 * Whatever connects next must carry no POLICY_ADD (an import's rule sent on
 * a new connection would be added at once, alone); the test's own empty
 * connection ends the script. */
static void script_import_dropped(struct server *s) {
        struct pb_msg req, reply;
        int fd = accept_one(s);

        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
        fd = accept_one(s);
        if (recv_request(s, fd, &req) == 0) {
                s->failed = 1;
                reply_to(&req, &reply);
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static int call_import_after_drop(pb_conn *c, struct server *s, pb_error *err) {
        pb_rule rule = { .kind = PB_USER, .id_value = 4242, .pattern = "tcp:8080", .owner_uid = PB_OWNER_NONE };
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int r, fd;

        assert_int_equal(pb_conn_policy_begin(c, 0, err), 0);
        r = (int) pb_conn_policy_add_rule(c, &rule, err);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        strcpy(sa.sun_path, s->path);
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);
        return r;
}

static void test_an_import_is_never_carried_to_a_new_connection(void **state) {
        expect_failure(script_import_dropped, call_import_after_drop, ECONNRESET, "lost during the import");
}

/* brokerd hangs up once without a reply (its worker was replaced), then answers. */
static void script_hang_up_once(struct server *s) {
        struct pb_msg req, reply;
        int fd = accept_one(s);

        recv_request(s, fd, &req);
        close(fd);
        fd = accept_one(s);
        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                send_msg(s, fd, &reply, req.hdr.type == PB_MSG_GET ? s->port_fd : -1);
        }
        close(fd);
}

/* brokerd hangs up without a reply; no second connection may come. */
static void script_hang_up_no_retry(struct server *s) {
        struct pb_msg req;
        int fd = accept_one(s);

        recv_request(s, fd, &req);
        close(fd);
        if (s->nreq != 1)
                s->failed = 1;
}

static int call_policy_add(pb_conn *c, struct server *s, pb_error *err) {
        int64_t r = pb_conn_policy_add(c, PB_USER, 4242, NULL, "tcp:8080", err);

        return r < 0 ? (int) r : 0;
}

/* A get, a status, a list are sent again once on a new connection; a
 * policy change is not (brokerd may have made it before it hung up). */
static void test_a_repeatable_request_is_sent_again_once(void **state) {
        struct server s;
        pb_error err;
        pb_conn *c;
        int fd;
        char ep[64];

        server_start(&s, script_hang_up_once);
        make_port(&s);
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        port_endpoint(&s, ep);
        fd = pb_conn_get(c, ep, 0, NULL, &err);
        assert_true(fd >= 0);
        close(fd);
        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(s.nreq, 2);
        server_stop(&s);

        expect_failure(script_hang_up_no_retry, call_policy_add, ECONNRESET, "closed the connection");
}

/* Lists whose ids do not grow would page forever. */
static void script_status_loop(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        while (s->nreq < 3 && recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                reply.leases.count = 1;
                reply.leases.more = 1;
                reply.leases.leases[0] = (struct pb_lease_entry) {
                        .id = 5,
                        .endpoint = { .transport = PB_TCP, .port_lo = 80, .port_hi = 80 },
                        .queued = -1,
                };
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static void test_status_loop(void **state) {
        expect_failure(script_status_loop, call_status, EPROTO, "out of order");
}

/* --- well-formed exchanges ------------------------------------------------- */

/* A brokerd that speaks versions up to 3: a list request in a newer one
 * gets EPROTONOSUPPORT and the connection closed; the one in version 3 an
 * empty list. */
static void script_old_brokerd(struct server *s) {
        struct pb_msg req, reply;
        bool answered = false;

        for (int k = 0; k <= PB_PROTO_VERSION - 3 && !answered; k++) {
                int fd = accept_one(s);

                if (recv_request(s, fd, &req) == 0) {
                        answered = req.hdr.version <= 3;
                        if (!answered)
                                proto_set_error(&reply, req.hdr.id, EPROTONOSUPPORT, "unsupported protocol version");
                        else
                                reply_to(&req, &reply);
                        send_msg(s, fd, &reply, -1);
                }
                close(fd);
        }
}

/* Lists are asked for in the newest version (so that IPv6-only wildcards
 * and Unix endpoints are listed), then one older at a time. */
static void test_lists_fall_back_to_an_old_brokerds_version(void **state) {
        struct server s;
        unsigned n = 0;
        pb_error err;
        pb_conn *c;

        server_start(&s, script_old_brokerd);
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        assert_int_equal(pb_conn_status(c, NULL, count_cb, &n, &err), 0);
        pb_disconnect(c);
        server_join(&s);
        /* Leases: no version after 5 lists more of them. */
        assert_int_equal(s.nreq, PB_PROTO_VERSION_UNIX - 2);
        for (unsigned i = 0; i < s.nreq; i++)
                assert_int_equal(s.versions[i], PB_PROTO_VERSION_UNIX - i);
        assert_int_equal(s.versions[s.nreq - 1], 3);
        assert_int_equal(n, 0);
        server_stop(&s);
}

static void script_error(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                proto_set_error(&reply, req.hdr.id, EACCES, "uid 1000 may not get tcp:[::]:80: no rule allows it");
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static void test_error_reply(void **state) {
        expect_failure(script_error, call_get, EACCES, "uid 1000 may not get tcp:[::]:80: no rule allows it");
}

/* Two gets on one connection: ids grow, the fd is the listener, O_NONBLOCK follows the flags. */
static void script_get_ok(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        while (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                reply.got.created = s->nreq == 1;
                send_msg(s, fd, &reply, s->port_fd);
        }
        close(fd);
}

static void test_get_ok(void **state) {
        struct server s;
        pb_lease lease;
        pb_error err;
        pb_conn *c;
        char ep[64];
        int before, fd1, fd2, fd3;

        server_start(&s, script_get_ok);
        make_port(&s);
        port_endpoint(&s, ep);
        before = count_fds();
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);

        fd1 = pb_conn_get(c, ep, PB_GET_NONBLOCK, &lease, &err);
        assert_true(fd1 >= 0);
        assert_int_equal(err.code, 0);
        assert_int_equal(lease.id, 7);
        assert_string_equal(lease.endpoint, ep);
        assert_int_equal(lease.transport, IPPROTO_TCP);
        assert_true(lease.created);
        assert_true(fcntl(fd1, F_GETFL) & O_NONBLOCK);
        assert_true(fcntl(fd1, F_GETFD) & FD_CLOEXEC);

        fd2 = pb_conn_get(c, ep, PB_GET_BLOCKING, &lease, &err);
        assert_true(fd2 >= 0);
        assert_false(lease.created);
        assert_false(fcntl(fd1, F_GETFL) & O_NONBLOCK);        /* one open file description */

        fd3 = pb_conn_get(c, ep, 0, NULL, &err);
        assert_true(fd3 >= 0);
        assert_false(fcntl(fd3, F_GETFL) & O_NONBLOCK);        /* neither flag: left as it was */

        /* Checked without a round trip. */
        assert_int_equal(pb_conn_policy_add(c, PB_UNIT, 0, "no dot", "tcp:80", &err), -EINVAL);
        assert_int_equal(pb_conn_policy_add(c, PB_USER, 0, "x.service", "tcp:80", &err), -EINVAL);
        assert_int_equal(pb_conn_policy_add(c, PB_USER, 0, NULL, "tcp:90-80", &err), -EINVAL);
        assert_non_null(strstr(err.message, "invalid endpoint pattern 'tcp:90-80'"));
        assert_int_equal(pb_conn_policy_add(c, 9, 0, NULL, "tcp:80", &err), -EINVAL);
        assert_int_equal(pb_conn_policy_remove(c, 0, &err), -EINVAL);

        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(s.nreq, 3);
        assert_int_equal(s.ids[0], 1);
        assert_int_equal(s.ids[1], 2);
        assert_int_equal(s.ids[2], 3);
        close(fd1);
        close(fd2);
        close(fd3);
        assert_int_equal(count_fds(), before);
        server_stop(&s);
}

/* Status in two pages, then the rule list in two pages. */
static void script_lists(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        while (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                if (req.hdr.type == PB_MSG_STATUS) {
                        bool first = req.status.after_id == 0;

                        reply.leases.count = first ? 2 : 1;
                        reply.leases.more = first;
                        for (unsigned i = 0; i < reply.leases.count; i++)
                                reply.leases.leases[i] = (struct pb_lease_entry) {
                                        .id = first ? 3 + 2 * i : 9,
                                        .endpoint = { .transport = PB_UDP, .port_lo = (uint16_t) (5000 + i),
                                                      .port_hi = (uint16_t) (5000 + i) },
                                        .owner_uid = 1000,
                                        .since = 1700000000,
                                        .handouts = 4,
                                        .holders = 2,
                                        .queued = -1,
                                        .bound = 1,
                                };
                } else if (req.hdr.type == PB_MSG_POLICY_LIST) {
                        bool first = req.policy_list.after_id == 0;

                        reply.rules.count = first ? PB_RULES_MAX : 1;
                        reply.rules.more = first;
                        for (unsigned i = 0; i < reply.rules.count; i++) {
                                struct pb_rule_entry *e = &reply.rules.rules[i];

                                e->id = first ? i + 1 : 100;
                                e->principal.kind = i % 2 ? PB_PRINCIPAL_UNIT : PB_PRINCIPAL_GROUP;
                                e->principal.id = i % 2 ? 0 : 42;
                                if (i % 2)
                                        snprintf(e->principal.unit, sizeof(e->principal.unit), "web%u.service", i);
                                e->pattern = (struct pb_endpoint) { .transport = PB_TCP, .port_lo = 8000,
                                                                    .port_hi = 8099 };
                                e->created = 1700000000;
                        }
                }
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

struct seen {
        unsigned n;
        uint64_t ids[64];
        char text[64][400];
        int stop_at;                    /* return stop_with on this entry, or -1 */
        int stop_with;
};

static int lease_cb(const pb_lease *lease, void *userdata) {
        struct seen *seen = userdata;

        seen->ids[seen->n] = lease->id;
        snprintf(seen->text[seen->n], sizeof(seen->text[0]), "%s %u %u", lease->endpoint,
                 (unsigned) lease->owner_uid, lease->holders);
        seen->n++;
        return (int) seen->n == seen->stop_at ? seen->stop_with : 0;
}

static int rule_cb(const pb_rule *rule, void *userdata) {
        struct seen *seen = userdata;

        seen->ids[seen->n] = rule->id;
        snprintf(seen->text[seen->n], sizeof(seen->text[0]), "%d %u %s %s", rule->kind, rule->id_value,
                 rule->unit, rule->pattern);
        seen->n++;
        return 0;
}

static void test_lists(void **state) {
        struct seen seen = { .stop_at = -1 };
        struct server s;
        pb_error err;
        pb_conn *c;
        int before;

        server_start(&s, script_lists);
        before = count_fds();
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);

        assert_int_equal(pb_conn_status(c, NULL, lease_cb, &seen, &err), 0);
        assert_int_equal(seen.n, 3);
        assert_int_equal(seen.ids[0], 3);
        assert_int_equal(seen.ids[1], 5);
        assert_int_equal(seen.ids[2], 9);
        assert_string_equal(seen.text[0], "udp:[::]:5000 1000 2");
        assert_string_equal(seen.text[1], "udp:[::]:5001 1000 2");
        assert_int_equal(s.after[0], 0);
        assert_int_equal(s.after[1], 5);

        /* > 0 from the callback: an early stop, success */
        seen = (struct seen) { .stop_at = 2, .stop_with = 99 };
        assert_int_equal(pb_conn_status(c, "udp:5000", lease_cb, &seen, &err), 0);
        assert_int_equal(seen.n, 2);

        /* -errno from the callback: that failure, with err saying it */
        seen = (struct seen) { .stop_at = 1, .stop_with = -ENOMEM };
        assert_int_equal(pb_conn_status(c, NULL, lease_cb, &seen, &err), -ENOMEM);
        assert_int_equal(seen.n, 1);
        assert_int_equal(err.code, ENOMEM);
        assert_string_equal(err.message, strerror(ENOMEM));

        seen = (struct seen) { .stop_at = -1 };
        assert_int_equal(pb_conn_policy_list(c, rule_cb, &seen, &err), 0);
        assert_int_equal(seen.n, PB_RULES_MAX + 1);
        assert_string_equal(seen.text[0], "2 42  tcp:8000-8099");
        assert_string_equal(seen.text[1], "3 0 web1.service tcp:8000-8099");
        assert_int_equal(seen.ids[PB_RULES_MAX], 100);

        assert_int_equal(pb_conn_status(c, NULL, NULL, NULL, &err), -EINVAL);
        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(s.after[4], 0);                /* the rule list starts over */
        assert_int_equal(s.after[5], PB_RULES_MAX);
        assert_int_equal(count_fds(), before);
        server_stop(&s);
}

/* POLICY_TEST: the described peer goes out as given, the verdict comes back whole. */
static struct pb_msg policy_test_req[2];

static void script_policy_test(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        for (int k = 0; k < 2 && recv_request(s, fd, &req) == 0; k++) {
                policy_test_req[k] = req;
                reply_to(&req, &reply);
                if (k == 0) {
                        reply.policy_tested.rule = (struct pb_rule_entry) {
                                .id = 7, .principal = { .kind = PB_PRINCIPAL_GROUP, .id = 33 },
                                .created = 1700000000 };
                        if (endpoint_parse_pattern("tcp:8000-8099", &reply.policy_tested.rule.pattern) < 0)
                                s->failed = 1;
                        reply.policy_tested.lease_id = 12;
                        reply.policy_tested.owner_uid = 33;
                        strcpy(reply.policy_tested.reason, "allowed by rule 7, but tcp:[::]:8050 is held by uid 33");
                } else {
                        reply.policy_tested.allowed = reply.policy_tested.admin = 1;
                        strcpy(reply.policy_tested.reason, "an admin: no rule needed");
                }
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static void test_policy_test(void **state) {
        pb_test_peer alice = { .has_uid = true, .uid = 4242, .n_groups = 2, .groups = { 4242, 33 },
                               .unit = "web.service" };
        pb_test_peer group = { .n_groups = 1, .groups = { 5000 } };
        pb_test_result res;
        struct server s;
        pb_error err;
        pb_conn *c;
        int before;

        server_start(&s, script_policy_test);
        before = count_fds();
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);

        /* Refused here, nothing sent: a range, too many groups, the kernel's "none" ids, a bad unit. */
        assert_int_equal(pb_conn_policy_test(c, "tcp:8000-8099", &alice, &res, &err), -EINVAL);
        alice.n_groups = PB_TEST_GROUPS_MAX + 1;
        assert_int_equal(pb_conn_policy_test(c, "8050", &alice, &res, &err), -EINVAL);
        assert_non_null(strstr(err.message, "at most 64 groups"));
        alice.n_groups = 2;
        alice.groups[1] = (gid_t) -1;
        assert_int_equal(pb_conn_policy_test(c, "8050", &alice, &res, &err), -EINVAL);
        alice.groups[1] = 33;
        alice.uid = (uid_t) -1;
        assert_int_equal(pb_conn_policy_test(c, "8050", &alice, &res, &err), -EINVAL);
        alice.uid = 4242;
        strcpy(alice.unit, "webservice");
        assert_int_equal(pb_conn_policy_test(c, "8050", &alice, &res, &err), -EINVAL);
        assert_non_null(strstr(err.message, "invalid unit name 'webservice'"));
        strcpy(alice.unit, "web.service");
        assert_int_equal(pb_conn_policy_test(c, "8050", NULL, &res, &err), -EINVAL);

        assert_int_equal(pb_conn_policy_test(c, "8050", &alice, &res, &err), 0);
        assert_false(res.allowed);
        assert_false(res.admin);
        assert_true(res.has_rule);
        assert_int_equal(res.rule.id, 7);
        assert_int_equal(res.rule.kind, PB_GROUP);
        assert_int_equal(res.rule.id_value, 33);
        assert_string_equal(res.rule.pattern, "tcp:8000-8099");
        assert_int_equal(res.lease_id, 12);
        assert_int_equal(res.lease_owner, 33);
        assert_string_equal(res.reason, "allowed by rule 7, but tcp:[::]:8050 is held by uid 33");

        assert_int_equal(pb_conn_policy_test(c, "unix:/run/app/web.sock", &group, &res, &err), 0);
        assert_true(res.allowed && res.admin && !res.has_rule && res.lease_id == 0);
        assert_string_equal(res.reason, "an admin: no rule needed");
        pb_disconnect(c);
        server_join(&s);

        assert_int_equal(s.nreq, 2);
        assert_int_equal(s.versions[0], PB_PROTO_VERSION_POLICY);
        assert_int_equal(policy_test_req[0].policy_test.endpoint.port_lo, 8050);
        assert_int_equal(policy_test_req[0].policy_test.uid, 4242);
        assert_int_equal(policy_test_req[0].policy_test.n_groups, 2);
        assert_int_equal(policy_test_req[0].policy_test.groups[1], 33);
        assert_string_equal(policy_test_req[0].policy_test.unit, "web.service");
        assert_int_equal(policy_test_req[1].policy_test.uid, PB_UID_NONE);
        assert_int_equal(policy_test_req[1].policy_test.n_groups, 1);
        assert_int_equal(policy_test_req[1].policy_test.groups[0], 5000);
        assert_string_equal(policy_test_req[1].policy_test.unit, "");
        assert_true(endpoint_is_unix(&policy_test_req[1].policy_test.endpoint));
        assert_int_equal(count_fds(), before);
        server_stop(&s);
}

/* The audit trail in three pages, the second empty, each from the
 * request's cursor; every request must carry the filter. */
static void script_log(struct server *s) {
        static const uint64_t pages[3][3] = { { 100, 99 }, { 0 }, { 10 } };
        static const uint64_t next[3] = { 99, 50, 0 };
        int fd = accept_one(s);
        struct pb_msg req, reply;

        for (unsigned k = 0; k < 3 && recv_request(s, fd, &req) == 0; k++) {
                if (req.hdr.type != PB_MSG_LOG || req.log.since != 5 || req.log.until != 7 || !req.log.has_uid ||
                    req.log.uid != 4242 || !req.log.has_endpoint || req.log.endpoint.port_lo != 8000 ||
                    req.log.endpoint.port_hi != 8099 || strcmp(req.log.event, "deny") != 0 || req.log.limit != 0)
                        s->failed = 1;
                reply_to(&req, &reply);
                for (unsigned i = 0; i < 3 && pages[k][i]; i++) {
                        struct pb_event_entry *e = &reply.events.events[reply.events.count++];

                        *e = (struct pb_event_entry) { .id = pages[k][i], .time = 1700000000000000 + pages[k][i],
                                                       .uid = i ? PB_UID_NONE : 4242, .pid = 77, .event = "deny" };
                        snprintf(e->endpoint, sizeof(e->endpoint), "tcp:[::]:%u", 8000 + i);
                        snprintf(e->detail, sizeof(e->detail), "no rule");
                }
                reply.events.more = next[k] > 0;
                reply.events.next_id = next[k];
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static int event_cb(const pb_event *event, void *userdata) {
        struct seen *seen = userdata;

        seen->ids[seen->n] = event->id;
        snprintf(seen->text[seen->n], sizeof(seen->text[0]), "%lld %s %d %d %.40s %.40s", (long long) event->time_us,
                 event->event, (int) event->uid, (int) event->pid, event->endpoint, event->detail);
        seen->n++;
        return (int) seen->n == seen->stop_at ? seen->stop_with : 0;
}

static void test_log(void **state) {
        pb_log_filter f = { .since_us = 5, .until_us = 7, .has_uid = true, .uid = 4242, .endpoint = "8000-8099",
                            .event = "deny" };
        struct seen seen = { .stop_at = -1 };
        struct server s;
        pb_error err;
        pb_conn *c;
        int before;

        server_start(&s, script_log);
        before = count_fds();
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        assert_int_equal(pb_conn_log(c, &f, 0, event_cb, &seen, &err), 0);
        assert_int_equal(seen.n, 3);
        assert_int_equal(seen.ids[0], 100);
        assert_int_equal(seen.ids[1], 99);
        assert_int_equal(seen.ids[2], 10);
        assert_string_equal(seen.text[0], "1700000000000100 deny 4242 77 tcp:[::]:8000 no rule");
        assert_string_equal(seen.text[1], "1700000000000099 deny -1 77 tcp:[::]:8001 no rule");
        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(s.nreq, 3);
        assert_int_equal(s.versions[0], PB_PROTO_VERSION_POLICY);
        assert_int_equal(s.after[0], 0);
        assert_int_equal(s.after[1], 99);               /* each page from the last one's cursor */
        assert_int_equal(s.after[2], 50);
        assert_int_equal(count_fds(), before);
        server_stop(&s);
}

/* A limit: brokerd is asked for no more than are left, and no page after the last wanted. */
static void script_log_limit(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                if (req.log.limit != 2 || req.log.has_uid || req.log.has_endpoint || req.log.event[0])
                        s->failed = 1;
                reply_to(&req, &reply);
                reply.events.count = 2;
                reply.events.events[0] = (struct pb_event_entry) { .id = 9, .event = "grant" };
                reply.events.events[1] = (struct pb_event_entry) { .id = 8, .event = "grant" };
                reply.events.more = 1;
                reply.events.next_id = 8;
                send_msg(s, fd, &reply, -1);
        }
        if (recv_request(s, fd, &req) == 0)     /* none may come */
                s->failed = 1;
        close(fd);
}

static void test_log_limit(void **state) {
        struct seen seen = { .stop_at = -1 };
        struct server s;
        pb_error err;
        pb_conn *c;

        server_start(&s, script_log_limit);
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        assert_int_equal(pb_conn_log(c, NULL, 2, event_cb, &seen, &err), 0);
        assert_int_equal(seen.n, 2);
        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(s.nreq, 1);
        server_stop(&s);
}

/* Pages that do not move on, or go the wrong way, would page forever. */
static void script_log_loop(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        while (s->nreq < 3 && recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                reply.events.more = 1;
                reply.events.next_id = req.log.before_id ? req.log.before_id : 5;      /* 5, then 5 again */
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static void script_log_order(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                reply.events.count = 2;
                reply.events.events[0] = (struct pb_event_entry) { .id = 8, .event = "grant" };
                reply.events.events[1] = (struct pb_event_entry) { .id = 9, .event = "grant" };
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

/* A brokerd before version 6. */
static void script_log_old_brokerd(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                proto_set_error(&reply, req.hdr.id, EPROTONOSUPPORT, "unsupported protocol version");
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static int call_log(pb_conn *c, struct server *s, pb_error *err) {
        struct seen seen = { .stop_at = -1 };

        return pb_conn_log(c, NULL, 0, event_cb, &seen, err);
}

static void test_log_hostile_and_old(void **state) {
        expect_failure(script_log_loop, call_log, EPROTO, "does not move on");
        expect_failure(script_log_order, call_log, EPROTO, "out of order");
        expect_failure(script_log_old_brokerd, call_log, EPROTONOSUPPORT, "older than protocol version 6");
}

/* A filter the library refuses, before anything is sent. */
static void test_log_bad_filter(void **state) {
        static const pb_log_filter bad[] = {
                { .since_us = -1 }, { .until_us = -5 }, { .has_uid = true, .uid = (uid_t) -1 },
                { .endpoint = "tcp:" }, { .event = "gr\nant" }, { .event = "a-kind-longer-than-23-bytes" },
        };
        struct seen seen = { .stop_at = -1 };
        struct server s;
        pb_error err;
        pb_conn *c;

        server_start(&s, NULL);         /* it never accepts: nothing may be sent */
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_int_equal(pb_conn_log(c, &bad[i], 0, event_cb, &seen, &err), -EINVAL);
                assert_int_equal(err.code, EINVAL);
        }
        assert_int_equal(pb_conn_log(c, NULL, 0, NULL, NULL, &err), -EINVAL);
        assert_int_equal(seen.n, 0);
        pb_disconnect(c);
        server_stop(&s);
}

/* brokerd closes idle connections; the next call must reconnect and resend. */
static void script_idle_close(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        close(fd);
        if (write(s->sync[1], "x", 1) != 1)
                s->failed = 1;
        fd = accept_one(s);
        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static void test_reconnect_after_idle_close(void **state) {
        struct server s;
        pb_error err;
        pb_conn *c;
        char x;
        int before;

        server_start(&s, script_idle_close);
        before = count_fds();
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        assert_int_equal(read(s.sync[0], &x, 1), 1);
        assert_int_equal(pb_conn_release(c, "tcp:8080", &err), 0);
        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(s.nreq, 1);
        assert_int_equal(count_fds(), before);
        server_stop(&s);
}

/* At its connection limit brokerd sends an error with id 0 and hangs up before any request. */
static void script_refuse(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg reply;

        proto_set_error(&reply, 0, EUSERS, "brokerd is at its limit of 256 connections; try again");
        send_msg(s, fd, &reply, -1);
        close(fd);
        if (write(s->sync[1], "x", 1) != 1)
                s->failed = 1;
}

static void test_refused_at_limit(void **state) {
        struct server s;
        pb_error err;
        pb_conn *c;
        char x;
        int before;

        server_start(&s, script_refuse);
        before = count_fds();
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        assert_int_equal(read(s.sync[0], &x, 1), 1);
        assert_int_equal(pb_conn_release(c, "tcp:8080", &err), -EUSERS);
        assert_string_equal(err.message, "brokerd is at its limit of 256 connections; try again");
        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(s.nreq, 0);
        assert_int_equal(count_fds(), before);
        server_stop(&s);
}

/* After a protocol error the connection is dropped: a late reply cannot answer the next request. */
static void script_late_reply(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                uint8_t buf[PB_MSG_MAX];
                int n;

                reply.hdr.id += 1;                      /* answers the request that comes next */
                send_msg(s, fd, &reply, -1);
                n = proto_encode(&reply, buf, sizeof(buf));
                (void) fdpass_send(fd, buf, (size_t) n, -1, 0); /* fails once the client hung up */
        }
        close(fd);
        fd = accept_one(s);
        if (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static void test_drop_after_protocol_error(void **state) {
        struct server s;
        pb_error err;
        pb_conn *c;

        server_start(&s, script_late_reply);
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        assert_int_equal(pb_conn_release(c, "8080", &err), -EPROTO);
        assert_int_equal(pb_conn_release(c, "8080", &err), 0);
        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(s.ids[1], 2);
        server_stop(&s);
}

/* Several threads on one connection: every reply reaches the thread that asked. */
static void script_echo(struct server *s) {
        int fd = accept_one(s);
        struct pb_msg req, reply;

        while (recv_request(s, fd, &req) == 0) {
                reply_to(&req, &reply);
                send_msg(s, fd, &reply, -1);
        }
        close(fd);
}

static void *release_many(void *userdata) {
        pb_conn *c = userdata;
        pb_error err;
        long failures = 0;

        for (int i = 0; i < 200; i++)
                if (pb_conn_release(c, "udp:5353", &err) != 0)
                        failures++;
        return (void *) failures;
}

static void test_threads(void **state) {
        pthread_t t[4];
        struct server s;
        pb_error err;
        pb_conn *c;

        server_start(&s, script_echo);
        server_run(&s);
        assert_int_equal(pb_connect(s.path, &c, &err), 0);
        for (int i = 0; i < 4; i++)
                assert_int_equal(pthread_create(&t[i], NULL, release_many, c), 0);
        for (int i = 0; i < 4; i++) {
                void *failures;

                assert_int_equal(pthread_join(t[i], &failures), 0);
                assert_null(failures);
        }
        pb_disconnect(c);
        server_join(&s);
        assert_int_equal(s.nreq, 800);
        server_stop(&s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_socket_path),
                cmocka_unit_test(test_bad_endpoint),
                cmocka_unit_test(test_connect_missing),
                cmocka_unit_test(test_connect_refused),
                cmocka_unit_test(test_garbage),
                cmocka_unit_test(test_oversized),
                cmocka_unit_test(test_wrong_id),
                cmocka_unit_test(test_wrong_type),
                cmocka_unit_test(test_stray_fd),
                cmocka_unit_test(test_error_with_fd),
                cmocka_unit_test(test_two_fds),
                cmocka_unit_test(test_get_no_fd),
                cmocka_unit_test(test_get_wrong_socket),
                cmocka_unit_test(test_hang_up),
                cmocka_unit_test(test_an_import_is_never_carried_to_a_new_connection),
                cmocka_unit_test(test_a_repeatable_request_is_sent_again_once),
                cmocka_unit_test(test_status_loop),
                cmocka_unit_test(test_lists_fall_back_to_an_old_brokerds_version),
                cmocka_unit_test(test_error_reply),
                cmocka_unit_test(test_get_ok),
                cmocka_unit_test(test_lists),
                cmocka_unit_test(test_policy_test),
                cmocka_unit_test(test_log),
                cmocka_unit_test(test_log_limit),
                cmocka_unit_test(test_log_hostile_and_old),
                cmocka_unit_test(test_log_bad_filter),
                cmocka_unit_test(test_reconnect_after_idle_close),
                cmocka_unit_test(test_refused_at_limit),
                cmocka_unit_test(test_drop_after_protocol_error),
                cmocka_unit_test(test_threads),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
