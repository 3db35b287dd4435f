/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of brokerd/sandbox.c against the real kernel, in a child
 * process each: after sandbox_drop() and sandbox_enter() the process has
 * another uid (when root started it), no capability, no_new_privs, is not
 * dumpable, and each system call a compromised worker would want fails
 * with EPERM, while what a worker does still works. sandbox_enter() refuses
 * to seal a process that kept a capability.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"

#define TEST_UID 4242

/* Runs fn in a child; its exit status is what fn returns (0: passed). */
static int in_child(int (*fn)(void)) {
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0)
                _exit(fn());
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

/* Fails (exit status line) when the call did not fail with EPERM. */
#define EXPECT_EPERM(call) do { errno = 0; if ((call) != -1 || errno != EPERM) { \
                fprintf(stderr, "%s: not EPERM (errno %d)\n", #call, errno); return __LINE__ % 250 + 1; } } while (0)
#define EXPECT_OK(cond) do { if (!(cond)) { fprintf(stderr, "%s: failed (errno %d)\n", #cond, errno); \
                return __LINE__ % 250 + 1; } } while (0)

/* The line of /proc/self/status that starts with key, as a number (base 16 for Cap*). */
static unsigned long long status_value(const char *key) {
        char line[256];
        unsigned long long v = ~0ULL;
        FILE *f = fopen("/proc/self/status", "re");

        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, key, strlen(key)) == 0)
                        v = strtoull(line + strlen(key), NULL, strncmp(key, "Cap", 3) == 0 ? 16 : 10);
        if (f)
                fclose(f);
        return v;
}

static int sealed(void) {
        char path[] = "/tmp/pb-test-sandbox-XXXXXX";
        int fd = mkstemp(path), sv[2];
        uid_t uid = geteuid() == 0 ? TEST_UID : geteuid();
        union bpf_attr attr = { .map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 1 };

        /* Before: chmod of our own file and signalling ourselves work. */
        EXPECT_OK(fd >= 0 && fchmod(fd, 0600) == 0 && kill(getpid(), 0) == 0);
        EXPECT_OK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
        if (geteuid() == 0)
                EXPECT_OK(chown(path, TEST_UID, TEST_UID) == 0);
        EXPECT_OK(sandbox_drop(uid, uid) == 0);
        EXPECT_OK(sandbox_enter() == 0);

        EXPECT_OK(geteuid() == uid && getegid() == uid && getgroups(0, NULL) == 0);
        EXPECT_OK(status_value("CapInh:") == 0 && status_value("CapPrm:") == 0 && status_value("CapEff:") == 0 &&
                  status_value("CapAmb:") == 0);
        EXPECT_OK(status_value("NoNewPrivs:") == 1 && status_value("Seccomp:") == 2);
        EXPECT_OK(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
        /* Denied, though the kernel alone would allow them. */
        EXPECT_EPERM(kill(getpid(), 0));
        EXPECT_EPERM(syscall(SYS_tgkill, getpid(), gettid(), 0));
        EXPECT_EPERM(fchmod(fd, 0644));
        EXPECT_EPERM(chmod(path, 0644));
        EXPECT_EPERM(ptrace(PTRACE_TRACEME, 0, NULL, NULL));
        EXPECT_EPERM(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr)));
        EXPECT_EPERM(execl("/bin/true", "true", (char *) NULL));
        EXPECT_EPERM(unshare(CLONE_NEWUSER));
        EXPECT_EPERM(syscall(SYS_io_uring_setup, 1, NULL));
        EXPECT_EPERM(syscall(SYS_pidfd_getfd, 0, 0, 0));
        /* Signals asked for by fd ownership, a terminal's input, processes of its own, other sockets. */
        EXPECT_EPERM(fcntl(sv[0], F_SETOWN, getppid()));
        EXPECT_EPERM(fcntl(sv[0], F_SETSIG, SIGKILL));
        EXPECT_EPERM(ioctl(sv[0], FIOSETOWN, &(int) { getppid() }));
        EXPECT_EPERM(ioctl(STDIN_FILENO, TIOCSTI, "x"));
        EXPECT_EPERM(fork());
        errno = 0;
        EXPECT_OK(syscall(SYS_clone3, NULL, 0) == -1 && errno == ENOSYS);
        errno = 0;
        EXPECT_OK(socket(AF_NETLINK, SOCK_RAW, 0) == -1 && errno == EAFNOSUPPORT);
        EXPECT_OK(socket(AF_INET, SOCK_STREAM, 0) == -1 && errno == EAFNOSUPPORT);
        EXPECT_OK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
        /* What a worker does goes on: files, Unix sockets, its own memory. */
        EXPECT_OK(write(fd, "x", 1) == 1 && socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
        EXPECT_OK(socket(AF_UNIX, SOCK_DGRAM, 0) >= 0);
        unlink(path);
        return 0;
}

static void test_the_sealed_worker_can_do_none_of_it(void **state) {
        assert_int_equal(in_child(sealed), 0);
}

static int unsealed_with_capabilities(void) {
        /* Root, never dropped: sandbox_enter() will not seal a capable process. */
        return sandbox_enter() == -EPERM ? 0 : 1;
}

static void test_a_capable_process_is_not_sealed(void **state) {
        if (geteuid() != 0)
                skip();
        assert_int_equal(in_child(unsealed_with_capabilities), 0);
}

static void test_users_are_looked_up(void **state) {
        uid_t uid;
        gid_t gid;

        assert_int_equal(sandbox_lookup_user("root", &uid, &gid), 0);
        assert_int_equal(uid, 0);
        assert_int_equal(sandbox_lookup_user("4242", &uid, &gid), 0);     /* no entry: its own gid */
        assert_int_equal(uid, 4242);
        assert_int_equal(gid, 4242);
        assert_int_equal(sandbox_lookup_user("no-such-user-xyz", &uid, &gid), -ENOENT);
        assert_int_equal(sandbox_lookup_user("", &uid, &gid), -ENOENT);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_the_sealed_worker_can_do_none_of_it),
                cmocka_unit_test(test_a_capable_process_is_not_sealed),
                cmocka_unit_test(test_users_are_looked_up),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
