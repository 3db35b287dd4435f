/* SPDX-License-Identifier: MIT */
/*
 * Moving one message, and at most one file descriptor, over a SOCK_SEQPACKET
 * socket. Receiving uses MSG_CMSG_CLOEXEC, closes every fd that was not
 * expected and rejects truncated data or control messages.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Sends len bytes and, when fd >= 0, that fd (not consumed) with SCM_RIGHTS.
 * flags are added to MSG_NOSIGNAL. Returns 0 or -errno (-EMSGSIZE on a short send). */
int fdpass_send(int sock_fd, const void *buf, size_t len, int fd, int flags);

/* Receives one message into buf. When ret_fd is non-NULL, one fd may arrive
 * and is stored there (-1 if none); any other fd is closed. Returns the
 * length (0 on EOF) or -errno: -EMSGSIZE on MSG_TRUNC, -EBADMSG on
 * MSG_CTRUNC, an unexpected fd or any control message but SCM_RIGHTS.
 * With MSG_DONTWAIT an EOF is read twice before it is believed: the kernel
 * can report it with the peer's last message still queued. */
int fdpass_recv(int sock_fd, void *buf, size_t size, int *ret_fd, int flags);
