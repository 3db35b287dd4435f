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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_inet),
                cmocka_unit_test(test_inet6_and_any),
                cmocka_unit_test(test_unknown_family),
                cmocka_unit_test(test_socket_for_endpoint),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
