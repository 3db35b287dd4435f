/* SPDX-License-Identifier: MIT */
/*
 * The worker's confinement (see sandbox.h). The seccomp filter is a short
 * deny list written by hand: the architecture is checked first (a system
 * call of another ABI is refused outright), then each denied number
 * returns EPERM, and everything else is allowed. The unit's own
 * SystemCallFilter= still applies on top of it.
 */
#include "sandbox.h"

#include <errno.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/prctl.h>
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
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

static int seccomp_on(void) {
        struct sock_filter filter[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_AUDIT_ARCH, 1, 0),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef SANDBOX_X32_BIT
                BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, SANDBOX_X32_BIT, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
#endif
                /* other processes: signals, tracing, their memory and fds */
                DENY(__NR_kill), DENY(__NR_tkill), DENY(__NR_tgkill), DENY(__NR_rt_sigqueueinfo),
                DENY(__NR_rt_tgsigqueueinfo), DENY(__NR_pidfd_send_signal), DENY(__NR_pidfd_getfd),
                DENY(__NR_ptrace), DENY(__NR_process_vm_readv), DENY(__NR_process_vm_writev),
                /* the bind guard's programs, links and maps */
                DENY(__NR_bpf),
                /* files' modes and owners (the guard's pins are the monitor's) */
#ifdef __NR_chmod
                DENY(__NR_chmod), DENY(__NR_chown), DENY(__NR_lchown),
#endif
                DENY(__NR_fchmod), DENY(__NR_fchmodat), DENY(__NR_fchmodat2), DENY(__NR_fchown),
                DENY(__NR_fchownat),
                /* running anything else, mounts and namespaces */
                DENY(__NR_execve), DENY(__NR_execveat), DENY(__NR_mount), DENY(__NR_umount2),
                DENY(__NR_pivot_root), DENY(__NR_chroot), DENY(__NR_unshare), DENY(__NR_setns),
                /* kernel surfaces a worker has no use for */
                DENY(__NR_keyctl), DENY(__NR_add_key), DENY(__NR_request_key), DENY(__NR_perf_event_open),
                DENY(__NR_userfaultfd), DENY(__NR_io_uring_setup), DENY(__NR_init_module),
                DENY(__NR_finit_module), DENY(__NR_delete_module), DENY(__NR_kexec_load),
                DENY(__NR_open_by_handle_at), DENY(__NR_name_to_handle_at),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };

        return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0 ? -errno : 0;
}
#else
static int seccomp_on(void) {
        return 0;                       /* an architecture this filter does not know: no filter */
}
#endif

int sandbox_enter(void) {
        if (has_capabilities() || prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
                return -EPERM;
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                return -errno;
        return seccomp_on();
}
