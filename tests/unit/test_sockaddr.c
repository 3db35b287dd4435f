/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of common/sockaddr.c: the sockaddr of each endpoint family
 * (IPv4, a specific IPv6 address, the [::] wildcard), the port read back,
 * an unknown family refused with nothing written, and the socket made for
 * an endpoint (type, close-on-exec, IPV6_V6ONLY).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include "endpoint.h"
#include "fd-util.h"
#include "sockaddr.h"

static struct pb_endpoint parse(const char *s) {
        struct pb_endpoint e;

        assert_int_equal(endpoint_parse(s, &e), 0);
        return e;
}

static void test_inet(void **state) {
        struct pb_endpoint e = parse("udp:127.0.0.1:5353");
        struct sockaddr_storage ss;
        socklen_t len = 0;
        const struct sockaddr_in *sin = (const struct sockaddr_in *) &ss;

        assert_int_equal(sockaddr_from_endpoint(&e, &ss, &len), AF_INET);
        assert_int_equal(len, sizeof(struct sockaddr_in));
        assert_int_equal(sin->sin_family, AF_INET);
        assert_int_equal(ntohs(sin->sin_port), 5353);
        assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
        assert_int_equal(sockaddr_port(&ss), 5353);
}

static void test_inet6_and_any(void **state) {
        struct pb_endpoint e = parse("tcp:[::1]:8443"), any = parse("8080");
        struct sockaddr_storage ss;
        socklen_t len = 0;
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) &ss;

        assert_int_equal(sockaddr_from_endpoint(&e, &ss, &len), AF_INET6);
        assert_int_equal(len, sizeof(struct sockaddr_in6));
        assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
        assert_int_equal(sockaddr_port(&ss), 8443);

        assert_int_equal(sockaddr_from_endpoint(&any, &ss, &len), AF_INET6);
        assert_true(IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr));
        assert_int_equal(sin6->sin6_scope_id, 0);
        assert_int_equal(sockaddr_port(&ss), 8080);
}

static void test_unknown_family(void **state) {
        struct pb_endpoint e = parse("8080");
        struct sockaddr_storage ss = { .ss_family = AF_UNIX };
        socklen_t len = 7;

        e.family = 5;
        assert_int_equal(sockaddr_from_endpoint(&e, &ss, &len), -EAFNOSUPPORT);
        assert_int_equal(len, 7);
        assert_int_equal(ss.ss_family, AF_UNIX);
        assert_int_equal(sockaddr_port(&ss), -EAFNOSUPPORT);
        assert_int_equal(socket_for_endpoint(&e), -EAFNOSUPPORT);
}

static int sockopt(int fd, int level, int name) {
        int v = -1;
        socklen_t len = sizeof(v);

        assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
        return v;
}

static void test_socket_for_endpoint(void **state) {
        static const struct {
                const char *text;
                int domain, type, v6only;
        } cases[] = {
                { "tcp:127.0.0.1:1", AF_INET, SOCK_STREAM, -1 },
                { "udp:1", AF_INET6, SOCK_DGRAM, 0 },
                { "tcp:[::1]:1", AF_INET6, SOCK_STREAM, 1 },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct pb_endpoint e = parse(cases[i].text);
                _cleanup_close_ int fd = socket_for_endpoint(&e);

                assert_true(fd >= 0);
                assert_int_equal(sockopt(fd, SOL_SOCKET, SO_DOMAIN), cases[i].domain);
                assert_int_equal(sockopt(fd, SOL_SOCKET, SO_TYPE), cases[i].type);
                assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
                if (cases[i].v6only >= 0)
                        assert_int_equal(sockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY), cases[i].v6only);
        }
}

/* Binds a socket for e at a port the kernel picks, and sets e's port to it. */
static int bind_any_port(struct pb_endpoint *e, int v6only) {
        struct sockaddr_storage ss;
        socklen_t len;
        int fd = socket_for_endpoint(e);

        assert_true(fd >= 0);
        if (v6only >= 0)
                assert_int_equal(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)), 0);
        e->port_lo = e->port_hi = 0;
        assert_true(sockaddr_from_endpoint(e, &ss, &len) > 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &ss, len), 0);
        len = sizeof(ss);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &ss, &len), 0);
        e->port_lo = e->port_hi = (uint16_t) sockaddr_port(&ss);
        return fd;
}

static void test_socket_is_for_endpoint(void **state) {
        struct pb_endpoint e = parse("tcp:127.0.0.1:1"), any = parse("udp:1"), other;
        _cleanup_close_ int fd = bind_any_port(&e, -1);
        _cleanup_close_ int dual_fd = bind_any_port(&any, -1);
        _cleanup_close_ int v6only_fd = -1;
        int pipe_fds[2];

        assert_int_equal(socket_is_for_endpoint(fd, &e), 1);
        other = e;
        other.port_lo = other.port_hi = (uint16_t) (e.port_lo + 1);
        assert_int_equal(socket_is_for_endpoint(fd, &other), 0);
        other = e;
        other.addr[3] = 2;                              /* 127.0.0.2 */
        assert_int_equal(socket_is_for_endpoint(fd, &other), 0);
        other = e;
        other.transport = PB_UDP;
        assert_int_equal(socket_is_for_endpoint(fd, &other), 0);

        /* The dual-stack wildcard is [::] with IPV6_V6ONLY off, not on. */
        assert_int_equal(socket_is_for_endpoint(dual_fd, &any), 1);
        other = any;
        v6only_fd = bind_any_port(&other, 1);
        assert_int_equal(socket_is_for_endpoint(v6only_fd, &other), 0);

        assert_int_equal(pipe(pipe_fds), 0);
        assert_int_equal(socket_is_for_endpoint(pipe_fds[0], &e), -ENOTSOCK);
        close(pipe_fds[0]);
        close(pipe_fds[1]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_inet),
                cmocka_unit_test(test_inet6_and_any),
                cmocka_unit_test(test_unknown_family),
                cmocka_unit_test(test_socket_for_endpoint),
                cmocka_unit_test(test_socket_is_for_endpoint),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
