/* SPDX-License-Identifier: MIT */
/*
 * The worker's confinement. Before the worker is executed, its process
 * gives up every privilege for good (sandbox_drop(): another uid when the
 * monitor runs as root, no capabilities in any set, no_new_privs); the
 * worker then seals itself (sandbox_enter(): not dumpable, and a seccomp
 * filter that fails with EPERM the system calls a worker never needs and a
 * compromised one would want: signals to other processes, ptrace and
 * process_vm_*, bpf(), pidfd_getfd(), chmod() and chown(), execve(),
 * mount and namespace calls, kernel keyrings, io_uring, perf events,
 * userfaultfd, module loading).
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#define SANDBOX_DEFAULT_USER "portbroker"

/* The uid and gid of user (a name or a number). Returns 0 or -ENOENT. */
int sandbox_lookup_user(const char *user, uid_t *ret_uid, gid_t *ret_gid);

/* Drops every privilege of this process for good: when it runs as root,
 * becomes uid:gid with no supplementary groups; then empties every
 * capability set (the bounding set where it may) and sets no_new_privs.
 * Returns 0 or -errno. In the worker's process, before it is executed. */
int sandbox_drop(uid_t uid, gid_t gid);

/* Built with AddressSanitizer only (else a no-op): turns LeakSanitizer off
 * for a process about to be sealed, in its environment. It stops the world
 * with ptrace() and clone(), which the filter refuses; the worker's leaks
 * are valgrind's to find (make check's first pass). */
void sandbox_sanitizer_env(void);

/* Seals the (unprivileged) worker: not dumpable, the seccomp filter on.
 * Refuses (-EPERM) to go on with any capability left or without
 * no_new_privs. Returns 0 or -errno. */
int sandbox_enter(void);
