/* SPDX-License-Identifier: MIT */
/*
 * File descriptor ownership: the one close-and-reset idiom used everywhere
 * (systemd's safe_close and _cleanup_close_ are the model). A variable or
 * field that owns an fd ends in `_fd`, is -1 when empty, and is released
 * with `x_fd = safe_close(x_fd);` or declared `_cleanup_close_ int x_fd`.
 */
#pragma once

#include <errno.h>
#include <unistd.h>

/* Closes fd when it is one, keeping errno, and returns -1 for the owner to store. */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved_errno = errno;

                (void) close(fd);
                errno = saved_errno;
        }
        return -1;
}

/* For _cleanup_close_: closes *fd and resets it. */
static inline void closep(int *fd) {
        *fd = safe_close(*fd);
}

#define _cleanup_close_ __attribute__((cleanup(closep)))
