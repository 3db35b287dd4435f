/* SPDX-License-Identifier: MIT */
/*
 * pidfds: a process handle that cannot be confused with a recycled pid, and
 * copying an fd out of another process through one (pidfd_getfd(2), which
 * needs ptrace rights over it). Plain system calls, so they work whatever
 * glibc wraps; every fd they return is close-on-exec, as the kernel makes it.
 */
#pragma once

#include <sys/types.h>

/* Opens a pidfd for pid. Returns it (close-on-exec, owned by the caller) or -errno. */
int pidfd_open_pid(pid_t pid);

/* Copies fd target_fd of the process behind pidfd (not consumed). Returns the new fd
 * (close-on-exec, owned by the caller) or -errno (-EPERM: no ptrace rights, -EBADF: no such fd). */
int pidfd_copy_fd(int pidfd, int target_fd);

/* pidfd_copy_fd through a pidfd of pid opened and closed here. Returns the new fd or -errno. */
int pidfd_copy_fd_of_pid(pid_t pid, int target_fd);
