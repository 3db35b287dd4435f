/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of common/procfd.c and common/pidfd-util.c: our own process is
 * among /proc's pids; the socket scan of our pid finds a socket we opened
 * under its fd number and inode (and no non-socket fd); a callback stops a
 * walk with > 0 (success) or -errno (returned); a missing pid is -ENOENT;
 * pidfd_copy_fd copies our own socket (same inode, close-on-exec).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd-util.h"
#include "pidfd-util.h"
#include "procfd.h"

struct want {
        uint64_t inode;
        int fd;                         /* the fd seen with inode, -1 none */
        unsigned calls;
        int stop_with;                  /* what the callback returns once it found inode */
};

static uint64_t inode_of(int fd) {
        struct stat st;

        assert_int_equal(fstat(fd, &st), 0);
        return (uint64_t) st.st_ino;
}

static int find_socket(int fd, uint64_t inode, void *userdata) {
        struct want *w = userdata;

        w->calls++;
        if (inode != w->inode)
                return 0;
        w->fd = fd;
        return w->stop_with;
}

static void test_socket_scan(void **state) {
        _cleanup_close_ int sock_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        _cleanup_close_ int file_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        struct want w = { .inode = inode_of(sock_fd), .fd = -1 };

        assert_true(sock_fd >= 0 && file_fd >= 0);
        assert_int_equal(procfd_foreach_socket(getpid(), find_socket, &w), 0);
        assert_int_equal(w.fd, sock_fd);

        w = (struct want) { .inode = inode_of(sock_fd), .fd = -1, .stop_with = 1 };
        assert_int_equal(procfd_foreach_socket(getpid(), find_socket, &w), 0);
        assert_int_equal(w.fd, sock_fd);

        w = (struct want) { .inode = inode_of(sock_fd), .fd = -1, .stop_with = -EIO };
        assert_int_equal(procfd_foreach_socket(getpid(), find_socket, &w), -EIO);

        /* /dev/null is no socket: never reported */
        w = (struct want) { .inode = inode_of(file_fd), .fd = -1 };
        assert_int_equal(procfd_foreach_socket(getpid(), find_socket, &w), 0);
        assert_int_equal(w.fd, -1);

        assert_int_equal(procfd_foreach_socket(0x7ffffff0, find_socket, &w), -ENOENT);
}

static int find_pid(pid_t pid, void *userdata) {
        return pid == *(pid_t *) userdata ? 1 : 0;
}

static int fail_at_once(pid_t pid, void *userdata) {
        (*(unsigned *) userdata)++;
        return -ENOMEM;
}

static void test_process_walk(void **state) {
        pid_t self = getpid();
        unsigned calls = 0;

        assert_int_equal(procfd_foreach_process(find_pid, &self), 0);
        assert_int_equal(procfd_foreach_process(fail_at_once, &calls), -ENOMEM);
        assert_int_equal(calls, 1);
}

static void test_pidfd_copy(void **state) {
        _cleanup_close_ int sock_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        _cleanup_close_ int pid_fd = pidfd_open_pid(getpid());
        _cleanup_close_ int copy_fd = -1, copy2_fd = -1;

        assert_true(sock_fd >= 0);
        if (pid_fd == -ENOSYS)
                skip();
        assert_true(pid_fd >= 0);
        assert_true(fcntl(pid_fd, F_GETFD) & FD_CLOEXEC);
        copy_fd = pidfd_copy_fd(pid_fd, sock_fd);
        if (copy_fd == -ENOSYS || copy_fd == -EPERM)
                skip();
        assert_true(copy_fd >= 0);
        assert_int_not_equal(copy_fd, sock_fd);
        assert_int_equal(inode_of(copy_fd), inode_of(sock_fd));
        assert_true(fcntl(copy_fd, F_GETFD) & FD_CLOEXEC);

        copy2_fd = pidfd_copy_fd_of_pid(getpid(), sock_fd);
        assert_true(copy2_fd >= 0);
        assert_int_equal(inode_of(copy2_fd), inode_of(sock_fd));

        assert_int_equal(pidfd_copy_fd(pid_fd, 100000), -EBADF);
        assert_int_equal(pidfd_open_pid(0x7ffffff0), -ESRCH);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_socket_scan),
                cmocka_unit_test(test_process_walk),
                cmocka_unit_test(test_pidfd_copy),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
