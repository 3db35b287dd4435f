/* SPDX-License-Identifier: MIT */
/*
 * The worker's confinement (see sandbox.h). The seccomp filter is a short
 * deny list written by hand: the architecture is checked first (a system
 * call of another ABI is refused outright), then each denied number
 * returns EPERM (a few after a look at an argument: fcntl() and ioctl()
 * commands, clone() without CLONE_THREAD, socket() families), and
 * everything else is allowed. On an architecture the filter does not know
 * the worker does not start. The unit's own SystemCallFilter= still applies
 * on top of it.
 */
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define SANDBOX_AUDIT_ARCH AUDIT_ARCH_X86_64
#define SANDBOX_X32_BIT 0x40000000u     /* x32 system calls share the arch: refused too */
#elif defined(__aarch64__)
#define SANDBOX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__i386__)
#define SANDBOX_AUDIT_ARCH AUDIT_ARCH_I386
#endif

#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#ifndef __NR_mount_setattr
#define __NR_mount_setattr 442
#endif
#ifndef __NR_process_madvise
#define __NR_process_madvise 440
#endif

int sandbox_lookup_user(const char *user, uid_t *ret_uid, gid_t *ret_gid) {
        struct passwd *pw;
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(user, &end, 10);
        if (*user && !*end && !errno && v < (uid_t) -1) {
                pw = getpwuid((uid_t) v);
                *ret_uid = (uid_t) v;
                *ret_gid = pw ? pw->pw_gid : (gid_t) v;   /* a uid without an entry: its own gid */
                return 0;
        }
        pw = getpwnam(user);
        if (!pw)
                return -ENOENT;
        *ret_uid = pw->pw_uid;
        *ret_gid = pw->pw_gid;
        return 0;
}

static int capset_empty(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { { 0 } };

        return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

/* True when any capability is left in the permitted, effective or inheritable set. */
static bool has_capabilities(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { { 0 } };  /* (valgrind marks only d[0] written) */

        if (syscall(SYS_capget, &h, d) < 0)
                return true;
        for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
                if (d[i].permitted || d[i].effective || d[i].inheritable)
                        return true;
        return false;
}

int sandbox_drop(uid_t uid, gid_t gid) {
        /* The bounding set goes while we still may (CAP_SETPCAP); under a
         * unit that never had that, its bounding set is narrow already. */
        for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
                (void) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
        if (geteuid() == 0 && uid != 0) {
                if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
                        return -errno;
        }
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                return -errno;
        if (capset_empty() < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return -errno;
        return has_capabilities() ? -EPERM : 0;
}

#ifdef SANDBOX_AUDIT_ARCH
#define RET(v) BPF_STMT(BPF_RET | BPF_K, (v))
#define RET_ERRNO(e) RET(SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), RET_ERRNO(EPERM)
/* The low 32 bits of argument i (little-endian: the architectures above). */
#define LOAD_ARG(i) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[i]))
/* System call nr when argument i is none of three values, else EPERM. The
 * block ends in a return either way, so the accumulator need not be nr again. */
#define DENY_ARG3(nr, i, a, b, c) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 6), LOAD_ARG(i), \
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (a), 3, 0), BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (b), 2, 0), \
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (c), 1, 0), RET(SECCOMP_RET_ALLOW), RET_ERRNO(EPERM)

static int seccomp_on(void) {
        struct sock_filter filter[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_AUDIT_ARCH, 1, 0),
                RET(SECCOMP_RET_KILL_PROCESS),
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef SANDBOX_X32_BIT
                BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, SANDBOX_X32_BIT, 0, 1),
                RET_ERRNO(EPERM),
#endif
                /* other processes: signals (sent, or asked for by F_SETOWN and
                 * its ioctl twins, which the kernel checks against our uid
                 * only), tracing, their memory and fds, a terminal's input */
                DENY(__NR_kill), DENY(__NR_tkill), DENY(__NR_tgkill), DENY(__NR_rt_sigqueueinfo),
                DENY(__NR_rt_tgsigqueueinfo), DENY(__NR_pidfd_send_signal), DENY(__NR_pidfd_getfd),
                DENY(__NR_ptrace), DENY(__NR_process_vm_readv), DENY(__NR_process_vm_writev),
                DENY(__NR_process_madvise), DENY(__NR_kcmp),
                DENY_ARG3(__NR_fcntl, 1, F_SETOWN, F_SETOWN_EX, F_SETSIG),
                DENY_ARG3(__NR_ioctl, 1, FIOSETOWN, SIOCSPGRP, TIOCSTI),
                /* processes of its own (a child would outlive a replaced worker) */
#ifdef __NR_fork
                DENY(__NR_fork), DENY(__NR_vfork),
#endif
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4), LOAD_ARG(0),
                BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1), RET(SECCOMP_RET_ALLOW), RET_ERRNO(EPERM),
                /* clone3's flags are in memory a filter cannot read: as if it did not exist */
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1), RET_ERRNO(ENOSYS),
                /* sockets: Unix ones only (the journal, its channels); no netlink, no raw */
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 4), LOAD_ARG(0),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 1), RET(SECCOMP_RET_ALLOW),
                RET_ERRNO(EAFNOSUPPORT),
                /* the bind guard's programs, links and maps */
                DENY(__NR_bpf),
                /* files' modes and owners (the guard's pins are the monitor's) */
#ifdef __NR_chmod
                DENY(__NR_chmod), DENY(__NR_chown), DENY(__NR_lchown),
#endif
#ifdef __NR_chown32
                DENY(__NR_chown32), DENY(__NR_fchown32), DENY(__NR_lchown32),
#endif
                DENY(__NR_fchmod), DENY(__NR_fchmodat), DENY(__NR_fchmodat2), DENY(__NR_fchown),
                DENY(__NR_fchownat),
                /* running anything else, mounts and namespaces */
                DENY(__NR_execve), DENY(__NR_execveat), DENY(__NR_mount), DENY(__NR_umount2),
                DENY(__NR_pivot_root), DENY(__NR_chroot), DENY(__NR_unshare), DENY(__NR_setns),
                DENY(__NR_open_tree), DENY(__NR_move_mount), DENY(__NR_fsopen), DENY(__NR_fsconfig),
                DENY(__NR_fsmount), DENY(__NR_fspick), DENY(__NR_mount_setattr),
                /* kernel surfaces a worker has no use for */
                DENY(__NR_keyctl), DENY(__NR_add_key), DENY(__NR_request_key), DENY(__NR_perf_event_open),
                DENY(__NR_userfaultfd), DENY(__NR_io_uring_setup), DENY(__NR_init_module),
                DENY(__NR_finit_module), DENY(__NR_delete_module), DENY(__NR_kexec_load),
                DENY(__NR_open_by_handle_at), DENY(__NR_name_to_handle_at), DENY(__NR_personality),
                RET(SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };

        return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0 ? -errno : 0;
}
#else
static int seccomp_on(void) {
        return -ENOSYS;                 /* an architecture this filter does not know: the worker does not start */
}
#endif

void sandbox_sanitizer_env(void) {
#ifdef __SANITIZE_ADDRESS__
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[1024];

        snprintf(opts, sizeof(opts), "%s%sdetect_leaks=0", asan ? asan : "", asan && *asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
#endif
}

int sandbox_enter(void) {
        if (has_capabilities() || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
                return -EPERM;
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                return -errno;
        return seccomp_on();
}
