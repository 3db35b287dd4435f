/* SPDX-License-Identifier: MIT */
/*
 * pidfd_open(2) and pidfd_getfd(2) as system calls returning fd or -errno
 * (see pidfd-util.h); the kernel makes both fds close-on-exec.
 */
#include "pidfd-util.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fd-util.h"

int pidfd_open_pid(pid_t pid) {
        int fd = (int) syscall(SYS_pidfd_open, pid, 0);

        return fd < 0 ? -errno : fd;
}

int pidfd_copy_fd(int pidfd, int target_fd) {
        int fd = (int) syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);

        return fd < 0 ? -errno : fd;
}

int pidfd_copy_fd_of_pid(pid_t pid, int target_fd) {
        _cleanup_close_ int pid_fd = pidfd_open_pid(pid);

        if (pid_fd < 0)
                return pid_fd;
        return pidfd_copy_fd(pid_fd, target_fd);
}
