/* SPDX-License-Identifier: MIT */
/*
 * Adoption of a lease's socket that outlived an earlier broker in a holder.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "endpoint.h"

/* Takes back the socket for e that outlived an earlier broker in some other
 * process (a holder still running after a broker crash): finds sockets on
 * e's port created by sock_uid (the broker's uid) in /proc/net, a process
 * holding one, copies it with pidfd_getfd() and keeps it only if its
 * SO_COOKIE is cookie, the socket the lease had. Start-up only: it reads
 * all of /proc. Returns 0, *ret_fd (owned by the caller) and *ret_pid, or
 * -ENOENT. */
int adopt_socket(const struct pb_endpoint *e, uid_t sock_uid, uint64_t cookie, int *ret_fd, pid_t *ret_pid);
