/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of brokerd/lease.c with real kernel sockets on loopback: the
 * options every bind sets (and never sets), the repair of a listener a
 * holder shut down, the accept-queue reading, holder counting, and the
 * lease table at 10,000 entries.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd-util.h"
#include "lease.h"
#include "sockopt.h"

static int getopt_int(int fd, int level, int name) {
        int v = sockopt_get_int(fd, level, name);

        assert_true(v >= 0);
        return v;
}

/* A port the kernel just called free on both loopback families. */
static uint16_t free_port(int type) {
        struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET6, type | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
        close(fd);
        return ntohs(sa.sin6_port);
}

static int plain_bind(int family, int type, const char *addr, uint16_t port, bool reuseaddr) {
        struct sockaddr_storage ss = { 0 };
        int one = 1, r, fd = socket(family, type | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        if (reuseaddr)
                assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
        if (family == AF_INET) {
                struct sockaddr_in *sin = (struct sockaddr_in *) &ss;
                sin->sin_family = AF_INET;
                sin->sin_port = htons(port);
                inet_pton(AF_INET, addr, &sin->sin_addr);
        } else {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;
                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons(port);
                inet_pton(AF_INET6, addr, &sin6->sin6_addr);
        }
        r = bind(fd, (struct sockaddr *) &ss, family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
        r = r < 0 ? -errno : 0;
        close(fd);
        return r;
}

static int connect_v4(uint16_t port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        assert_true(fd >= 0);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                close(fd);
                return -errno;
        }
        return fd;
}

static void test_tcp_wildcard_options(void **state) {
        struct pb_endpoint e;
        char text[32];
        uint16_t port = free_port(SOCK_STREAM);
        int fd;

        snprintf(text, sizeof(text), "tcp:%u", port);
        assert_int_equal(endpoint_parse(text, &e), 0);
        assert_int_equal(lease_bind(NULL, &e, 128, &fd), 0);
        assert_int_equal(getopt_int(fd, SOL_SOCKET, SO_REUSEADDR), 1);
        assert_int_equal(getopt_int(fd, SOL_SOCKET, SO_REUSEPORT), 0);
        assert_int_equal(getopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY), 0);
        assert_int_equal(getopt_int(fd, SOL_SOCKET, SO_ACCEPTCONN), 1);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        /* Dual-stack: nobody binds the port on either family, SO_REUSEADDR or not. */
        assert_int_equal(plain_bind(AF_INET6, SOCK_STREAM, "::", port, true), -EADDRINUSE);
        assert_int_equal(plain_bind(AF_INET, SOCK_STREAM, "0.0.0.0", port, true), -EADDRINUSE);
        assert_int_equal(plain_bind(AF_INET, SOCK_STREAM, "127.0.0.1", port, false), -EADDRINUSE);
        close(fd);
}

static void test_tcp_specific_v6_is_v6only(void **state) {
        struct pb_endpoint e;
        char text[32];
        int fd;

        snprintf(text, sizeof(text), "tcp:[::1]:%u", free_port(SOCK_STREAM));
        assert_int_equal(endpoint_parse(text, &e), 0);
        assert_int_equal(lease_bind(NULL, &e, 16, &fd), 0);
        assert_int_equal(getopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY), 1);
        close(fd);
}

static void test_udp_never_shared(void **state) {
        struct pb_endpoint e;
        char text[32];
        uint16_t port = free_port(SOCK_DGRAM);
        int fd;

        snprintf(text, sizeof(text), "udp:%u", port);
        assert_int_equal(endpoint_parse(text, &e), 0);
        assert_int_equal(lease_bind(NULL, &e, 16, &fd), 0);
        assert_int_equal(getopt_int(fd, SOL_SOCKET, SO_REUSEADDR), 0);
        assert_int_equal(getopt_int(fd, SOL_SOCKET, SO_REUSEPORT), 0);
        /* Were SO_REUSEADDR set on ours, this bind would share the port. */
        assert_int_equal(plain_bind(AF_INET6, SOCK_DGRAM, "::", port, true), -EADDRINUSE);
        close(fd);
}

static void test_shutdown_repaired(void **state) {
        struct lease l = { .backlog = 16 };
        char text[32];
        uint16_t port = free_port(SOCK_STREAM);
        int holder_fd, c;

        snprintf(text, sizeof(text), "tcp:127.0.0.1:%u", port);
        assert_int_equal(endpoint_parse(text, &l.endpoint), 0);
        assert_int_equal(lease_bind(NULL, &l.endpoint, l.backlog, &l.sock_fd), 0);
        assert_int_equal(lease_ensure_listening(&l), 0);

        holder_fd = dup(l.sock_fd);
        assert_int_equal(shutdown(holder_fd, SHUT_RDWR), 0);
        assert_int_equal(getopt_int(l.sock_fd, SOL_SOCKET, SO_ACCEPTCONN), 0);
        assert_int_equal(connect_v4(port), -ECONNREFUSED);

        assert_int_equal(lease_ensure_listening(&l), 1);
        assert_int_equal(lease_ensure_listening(&l), 0);
        c = connect_v4(port);
        assert_true(c >= 0);
        assert_int_equal(lease_queued(&l), 1);
        close(c);
        close(holder_fd);
        l.sock_fd = safe_close(l.sock_fd);
        assert_int_equal(l.sock_fd, -1);
}

/* A lease on a free 127.0.0.1 port of proto ("tcp" or "udp"), bound. */
static void bind_loopback_lease(struct lease *l, const char *proto, unsigned backlog) {
        char text[32];

        lease_init(l);
        l->backlog = backlog;
        snprintf(text, sizeof(text), "%s:127.0.0.1:%u", proto,
                 free_port(strcmp(proto, "tcp") == 0 ? SOCK_STREAM : SOCK_DGRAM));
        assert_int_equal(endpoint_parse(text, &l->endpoint), 0);
        assert_int_equal(lease_bind(NULL, &l->endpoint, l->backlog, &l->sock_fd), 0);
}

/* The accept queue's limit of listener fd (TCP_INFO). */
static unsigned backlog_of(int fd) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);

        assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
        return ti.tcpi_sacked;
}

static void test_backlog_restored(void **state) {
        struct lease l;
        int holder_fd;

        bind_loopback_lease(&l, "tcp", 16);
        assert_int_equal(lease_ensure_listening(&l), 0);
        holder_fd = dup(l.sock_fd);
        assert_int_equal(listen(holder_fd, 1), 0);      /* a holder shrinks the queue for all */
        assert_int_equal(backlog_of(l.sock_fd), 1);
        assert_int_equal(lease_ensure_listening(&l), LEASE_FIXED_BACKLOG);
        assert_int_equal(backlog_of(l.sock_fd), 16);
        assert_int_equal(lease_ensure_listening(&l), 0);
        close(holder_fd);
        l.sock_fd = safe_close(l.sock_fd);
}

static void test_filter_detached_or_replaced(void **state) {
        struct sock_filter drop_all = BPF_STMT(BPF_RET | BPF_K, 0);
        struct sock_fprog prog = { .len = 1, .filter = &drop_all };
        struct lease l;
        int one = 1;

        bind_loopback_lease(&l, "udp", 0);
        /* A holder's filter drops every datagram for every holder: detached. */
        assert_int_equal(setsockopt(l.sock_fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)), 0);
        assert_int_equal(lease_ensure_listening(&l), LEASE_FIXED_FILTER);
        assert_int_equal(lease_ensure_listening(&l), 0);
        /* Locked with SO_LOCK_FILTER it cannot be: the socket must be replaced. */
        assert_int_equal(setsockopt(l.sock_fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)), 0);
        assert_int_equal(setsockopt(l.sock_fd, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof(one)), 0);
        assert_int_equal(lease_ensure_listening(&l), -EPERM);
        l.sock_fd = safe_close(l.sock_fd);
}

static void test_queued(void **state) {
        struct lease l;
        int c[3];

        bind_loopback_lease(&l, "tcp", 16);
        assert_int_equal(lease_queued(&l), 0);
        for (int i = 0; i < 3; i++)
                assert_true((c[i] = connect_v4(l.endpoint.port_lo)) >= 0);
        assert_int_equal(lease_queued(&l), 3);

        for (int i = 0; i < 3; i++)
                close(c[i]);
        l.sock_fd = safe_close(l.sock_fd);
        assert_int_equal(l.sock_fd, -1);
        assert_int_equal(lease_queued(&l), -EBADF);
}

static void test_table_10000(void **state) {
        enum { N = 10000 };
        struct lease_table t = { 0 };
        struct lease *leases = calloc(N, sizeof(*leases));
        struct pb_endpoint e;

        assert_non_null(leases);
        for (int i = 0; i < N; i++) {
                leases[i].id = (uint64_t) i + 1;
                leases[i].sock_fd = -1;
                leases[i].owner_uid = (uid_t) (i % 7);
                leases[i].endpoint = (struct pb_endpoint) {
                        .transport = i % 2 ? PB_UDP : PB_TCP,
                        .family = PB_FAMILY_ANY,
                        .port_lo = (uint16_t) (1 + i / 2),
                        .port_hi = (uint16_t) (1 + i / 2),
                };
                assert_int_equal(lease_table_add(&t, &leases[i]), 0);
        }
        assert_int_equal(t.n, N);
        assert_int_equal(lease_table_add(&t, &leases[5]), -EEXIST);
        assert_true(lease_table_has_port(&t, 1) && lease_table_has_port(&t, N / 2));
        assert_false(lease_table_has_port(&t, N / 2 + 1));
        for (int i = 0; i < N; i++)
                assert_ptr_equal(lease_table_find(&t, &leases[i].endpoint), &leases[i]);
        assert_int_equal(lease_table_count_owner(&t, 3), N / 7 + (N % 7 > 3));
        assert_int_equal(lease_table_after(&t, 0), 0);
        assert_int_equal(lease_table_after(&t, 500), 500);
        assert_int_equal(lease_table_after(&t, N), N);

        /* Remove every other lease; the rest stay findable, removed ones are gone. */
        for (int i = 0; i < N; i += 2)
                lease_table_remove(&t, &leases[i]);
        assert_int_equal(t.n, N / 2);
        for (int i = 0; i < N; i++)
                assert_ptr_equal(lease_table_find(&t, &leases[i].endpoint), i % 2 ? &leases[i] : NULL);
        assert_int_equal(t.by_id[lease_table_after(&t, 1)]->id, 2);
        assert_int_equal(t.by_id[lease_table_after(&t, 2)]->id, 4);
        /* Each port keeps its UDP lease; one without any is free. */
        assert_true(lease_table_has_port(&t, 1) && lease_table_has_port(&t, N / 2));
        lease_table_remove(&t, &leases[1]);
        assert_false(lease_table_has_port(&t, 1));
        assert_int_equal(lease_table_add(&t, &leases[1]), 0);

        /* Re-adding after tombstones works and ids stay sorted. */
        for (int i = 0; i < N; i += 2) {
                leases[i].id = (uint64_t) (N + i + 1);
                assert_int_equal(lease_table_add(&t, &leases[i]), 0);
        }
        for (size_t i = 1; i < t.n; i++)
                assert_true(t.by_id[i - 1]->id < t.by_id[i]->id);
        assert_int_equal(endpoint_parse("tcp:65000", &e), 0);
        assert_null(lease_table_find(&t, &e));
        lease_table_done(&t);
        free(leases);
}

/* A child that waits for its parent to kill it (or to exit), and a pidfd for it. */
static pid_t child(int *ret_pidfd) {
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                pause();
                _exit(0);
        }
        *ret_pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        assert_true(*ret_pidfd >= 0);
        return pid;
}

/* One holder per process, shared by the leases it holds, counted dead
 * once it exits, freed with the last lease listing it; no more live ones
 * than the set allows. */
static void test_holders_shared(void **state) {
        struct holder_set hs;
        struct lease *a = lease_new(), *b = lease_new();
        struct lease_holder *h1, *h2, *h3;
        int fd1, fd2, fd3;
        pid_t p1 = child(&fd1), p2 = child(&fd2), p3 = child(&fd3);

        assert_int_equal(holder_set_init(&hs, 2), 0);
        assert_int_equal(holder_set_add(&hs, p1, fd1, &h1), 0);
        lease_add_holder(a, h1);
        lease_add_holder(b, h1);
        lease_add_holder(b, h1);                /* listed once */
        assert_ptr_equal(holder_set_find(&hs, p1), h1);
        assert_int_equal(h1->refs, 2);
        assert_int_equal(holder_set_add(&hs, p2, fd2, &h2), 0);
        lease_add_holder(b, h2);
        assert_int_equal(holder_set_add(&hs, p3, fd3, &h3), -ENOSPC);   /* fd3 closed */
        assert_true(lease_held_by(a, p1) && lease_held_by(b, p1) && lease_held_by(b, p2));
        assert_false(lease_held_by(a, p2));
        assert_int_equal(lease_holders_live(b), 2);

        /* p1 exits: its pidfd turns readable; reaped, it is dead for both leases. */
        kill(p1, SIGKILL);
        assert_int_equal(waitpid(p1, NULL, 0), p1);
        holder_set_reap(&hs);
        assert_null(holder_set_find(&hs, p1));
        assert_false(lease_held_by(a, p1) || lease_held_by(b, p1));
        assert_int_equal(lease_holders_live(a), 0);
        assert_int_equal(lease_holders_live(b), 1);
        assert_int_equal(hs.n_live, 1);

        /* Freeing the leases frees what they listed: h2, alive, leaves the set with b. */
        lease_free(a);
        lease_free(b);
        assert_null(holder_set_find(&hs, p2));
        assert_int_equal(hs.n_live, 0);
        holder_set_done(&hs);
        kill(p2, SIGKILL);
        kill(p3, SIGKILL);
        waitpid(p2, NULL, 0);
        waitpid(p3, NULL, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_tcp_wildcard_options),
                cmocka_unit_test(test_tcp_specific_v6_is_v6only),
                cmocka_unit_test(test_udp_never_shared),
                cmocka_unit_test(test_shutdown_repaired),
                cmocka_unit_test(test_backlog_restored),
                cmocka_unit_test(test_filter_detached_or_replaced),
                cmocka_unit_test(test_queued),
                cmocka_unit_test(test_table_10000),
                cmocka_unit_test(test_holders_shared),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
