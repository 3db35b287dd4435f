/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of brokerd/peer.c against real kernel credentials: a peer made
 * by fork() connects to a real listening socket, and peer_identify() must
 * read its uid, gid, pid and supplementary groups, and turn another user or
 * network namespace, or a peer that is gone, into a doubt. The namespace and
 * group cases need root (they are skipped otherwise).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd-util.h"
#include "peer.h"

struct fixture {
        char path[108];
        int listen_fd;
        struct peer_self self;
};

enum child_setup { PLAIN, OTHER_NETNS, SOCKET_THEN_OTHER_NETNS, OTHER_USERNS, GROUPS, USERNS_OF_4242,
                   NESTED_USERNS_OF_4242 };

/* Maps uids and gids 0-9 of pid's user namespace to 104242-104251 (we are root outside it). */
static void map_subordinate_ids(pid_t pid) {
        for (int i = 0; i < 2; i++) {
                char path[64];
                int fd;

                snprintf(path, sizeof(path), "/proc/%d/%s", (int) pid, i ? "gid_map" : "uid_map");
                fd = open(path, O_WRONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(write(fd, "0 104242 10\n", 12), 12);
                safe_close(fd);
        }
}

/* A peer: a child that sets itself up, connects, then waits until told to
 * exit (or exits at once when exit_first). Returns the accepted end. */
static int connect_child(struct fixture *fx, enum child_setup how, bool exit_first, pid_t *ret_pid, int *ret_go_fd) {
        int ready[2], go[2], conn_fd;
        char byte;
        pid_t pid;

        assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
        assert_int_equal(pipe2(go, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                gid_t groups[] = { 4242, 4343 };
                int fd, ok = 1;

                close(ready[0]);
                close(go[1]);           /* so that the parent's close is our EOF */
                if (how == OTHER_NETNS)
                        ok = unshare(CLONE_NEWNET) == 0;
                else if (how == OTHER_USERNS)
                        ok = unshare(CLONE_NEWUSER) == 0;
                else if (how == GROUPS)
                        ok = setgroups(2, groups) == 0;
                else if (how == USERNS_OF_4242 || how == NESTED_USERNS_OF_4242) {
                        /* uid 4242 makes a user namespace; we map 0-9 in it to 104242-104251 (as
                         * newuidmap would from /etc/subuid); inside, uid 1 connects, or makes
                         * another namespace and connects from there */
                        ok = setresuid(4242, 4242, 4242) == 0 && unshare(CLONE_NEWUSER) == 0;
                        (void) !write(ready[1], ok ? "m" : "n", 1);
                        ok = ok && read(go[0], &byte, 1) == 1 && setresgid(1, 1, 1) == 0 &&
                             setresuid(1, 1, 1) == 0 && (how == USERNS_OF_4242 || unshare(CLONE_NEWUSER) == 0);
                }
                strcpy(sa.sun_path, fx->path);
                fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
                if (how == SOCKET_THEN_OTHER_NETNS)     /* a socket made in ours, used from elsewhere */
                        ok = unshare(CLONE_NEWNET) == 0;
                ok = ok && fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
                (void) !write(ready[1], ok ? "y" : "n", 1);
                if (!exit_first)
                        (void) !read(go[0], &byte, 1);
                _exit(0);
        }
        close(ready[1]);
        close(go[0]);
        assert_int_equal(read(ready[0], &byte, 1), 1);
        if (byte == 'm') {
                map_subordinate_ids(pid);
                assert_int_equal(write(go[1], "c", 1), 1);
                assert_int_equal(read(ready[0], &byte, 1), 1);
        }
        assert_int_equal(byte, 'y');
        close(ready[0]);
        conn_fd = accept4(fx->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        assert_true(conn_fd >= 0);
        if (exit_first)
                assert_int_equal(waitpid(pid, NULL, 0), pid);
        *ret_pid = pid;
        *ret_go_fd = go[1];
        return conn_fd;
}

static void finish_child(pid_t pid, int go_fd, bool reaped) {
        safe_close(go_fd);                      /* EOF: the child exits */
        if (!reaped)
                assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static int setup(void **state) {
        struct fixture *fx = calloc(1, sizeof(*fx));
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        assert_non_null(fx);
        snprintf(fx->path, sizeof(fx->path), "/tmp/pb-test-peer-%d.sock", (int) getpid());
        strcpy(sa.sun_path, fx->path);
        unlink(fx->path);
        fx->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        assert_true(fx->listen_fd >= 0);
        assert_int_equal(bind(fx->listen_fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(chmod(fx->path, 0666), 0);
        assert_int_equal(listen(fx->listen_fd, 8), 0);
        assert_int_equal(peer_self_init(&fx->self), 0);
        *state = fx;
        return 0;
}

static int teardown(void **state) {
        struct fixture *fx = *state;

        safe_close(fx->listen_fd);
        unlink(fx->path);
        free(fx);
        return 0;
}

/* Identifies a child set up as how; returns the peer (free with peer_done). */
static struct peer identify(struct fixture *fx, enum child_setup how, bool exit_first) {
        struct peer p;
        pid_t pid;
        int go_fd, conn_fd = connect_child(fx, how, exit_first, &pid, &go_fd);

        assert_int_equal(peer_identify(conn_fd, &fx->self, false, &p), 0);
        if (!p.doubt) {
                assert_int_equal(p.pid, pid);
                assert_true(p.pid_fd >= 0);
        }
        if (how == GROUPS && !p.doubt) {        /* groups are read on first use, from the connection */
                assert_true(peer_in_group(&p, 4343));
                assert_true(peer_in_group(&p, getgid()));
                assert_false(peer_in_group(&p, 4444));
        }
        finish_child(pid, go_fd, exit_first);
        safe_close(conn_fd);
        return p;
}

static void test_plain_peer(void **state) {
        struct peer p = identify(*state, PLAIN, false);

        assert_null(p.doubt);
        assert_int_equal(p.uid, getuid());
        assert_int_equal(p.gid, getgid());
        peer_done(&p);
        assert_int_equal(p.pid_fd, -1);
}

static void test_groups(void **state) {
        struct peer p;

        if (geteuid() != 0)
                skip();
        p = identify(*state, GROUPS, false);
        assert_null(p.doubt);
        peer_done(&p);
}

static void test_other_network_namespace(void **state) {
        struct peer p;

        if (geteuid() != 0)
                skip();
        p = identify(*state, OTHER_NETNS, false);
        assert_non_null(p.doubt);
        assert_string_equal(p.doubt, "the peer is in another network namespace");
        peer_done(&p);
}

/* The namespace that counts is the process's, not its socket's: a socket
 * can be made (or handed over) in our netns and used from another. */
static void test_socket_from_our_netns_used_elsewhere(void **state) {
        struct peer p;

        if (geteuid() != 0)
                skip();
        p = identify(*state, SOCKET_THEN_OTHER_NETNS, false);
        assert_non_null(p.doubt);
        assert_string_equal(p.doubt, "the peer is in another network namespace");
        peer_done(&p);
}

static void test_other_user_namespace(void **state) {
        struct peer p = identify(*state, OTHER_USERNS, false);

        assert_non_null(p.doubt);
        assert_string_equal(p.doubt, "the peer is in another user namespace");
        assert_int_equal(p.account, 0);         /* we (root) made it */
        peer_done(&p);
}

/* The uids of a user's namespaces count as that user's, however deep. */
static void test_user_namespace_counts_under_its_owner(void **state) {
        enum child_setup how[] = { USERNS_OF_4242, NESTED_USERNS_OF_4242 };

        for (size_t i = 0; i < sizeof(how) / sizeof(how[0]); i++) {
                struct peer p = identify(*state, how[i], false);

                assert_non_null(p.doubt);
                assert_string_equal(p.doubt, "the peer is in another user namespace");
                assert_int_equal(p.uid, 104243);        /* its uid 1, as we see it */
                assert_int_equal(p.account, 4242);
                peer_done(&p);
        }
}

/* SO_PEERCRED as a given kernel answers it: 0 the real one, else fails with that errno. */
static int peercred_errno;

/* SO_PEERPIDFD as a given kernel answers it: 0 the real one, else fails with that errno. */
static int peerpidfd_errno;
int __real_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
int __wrap_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
int __wrap_getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
        if (level == SOL_SOCKET && name == 77 /* SO_PEERPIDFD */ && peerpidfd_errno) {
                errno = peerpidfd_errno;
                return -1;
        }
        if (level == SOL_SOCKET && name == SO_PEERCRED && peercred_errno) {
                errno = peercred_errno;
                return -1;
        }
        return __real_getsockopt(fd, level, name, val, len);
}

/* Before 6.5 (ENOPROTOOPT) the pidfd comes from pidfd_open(), checked
 * against the uid; an EINVAL (6.5-6.15: the peer was reaped) is doubt, not
 * that fallback, which could read a recycled pid's namespaces and unit. */
static void test_pidfd_fallback_only_without_so_peerpidfd(void **state) {
        struct peer p;

        peerpidfd_errno = ENOPROTOOPT;
        p = identify(*state, PLAIN, false);
        assert_null(p.doubt);
        assert_true(p.pid_fd >= 0);
        peer_done(&p);

        peerpidfd_errno = EINVAL;
        p = identify(*state, PLAIN, false);
        peerpidfd_errno = 0;
        assert_non_null(p.doubt);
        assert_string_equal(p.doubt, "cannot get a pidfd for the peer");
        assert_int_equal(p.pid_fd, -1);
        peer_done(&p);
}

/* A peer whose credentials cannot be read is nobody: never uid 0. */
static void test_unidentified_peer(void **state) {
        struct fixture *fx = *state;
        struct peer p;
        pid_t pid;
        int go_fd, conn_fd = connect_child(fx, PLAIN, false, &pid, &go_fd);

        peercred_errno = ENOBUFS;
        assert_int_equal(peer_identify(conn_fd, &fx->self, false, &p), -ENOBUFS);
        peercred_errno = 0;
        assert_non_null(p.doubt);
        assert_string_equal(p.doubt, "cannot read the peer's credentials");
        assert_int_equal(p.uid, PEER_UID_UNKNOWN);
        assert_int_equal(p.account, PEER_UID_UNKNOWN);
        assert_int_equal(p.pid_fd, -1);
        peer_done(&p);
        finish_child(pid, go_fd, false);
        safe_close(conn_fd);
}

static void test_peer_gone(void **state) {
        struct peer p = identify(*state, PLAIN, true);

        assert_non_null(p.doubt);               /* no pidfd, or exited: either way, no identity */
        peer_done(&p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_plain_peer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_groups, setup, teardown),
                cmocka_unit_test_setup_teardown(test_other_network_namespace, setup, teardown),
                cmocka_unit_test_setup_teardown(test_socket_from_our_netns_used_elsewhere, setup, teardown),
                cmocka_unit_test_setup_teardown(test_other_user_namespace, setup, teardown),
                cmocka_unit_test_setup_teardown(test_user_namespace_counts_under_its_owner, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unidentified_peer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_peer_gone, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pidfd_fallback_only_without_so_peerpidfd, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
