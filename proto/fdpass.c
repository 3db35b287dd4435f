/* SPDX-License-Identifier: MIT */
/*
 * One message and at most one fd over SOCK_SEQPACKET. The receiver always
 * asks for MSG_CMSG_CLOEXEC, closes every fd it did not ask for, and rejects
 * truncation of either the data or the control part.
 */
#include "fdpass.h"

#include <errno.h>
#include <linux/sockios.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd-util.h"

#define FDPASS_MAX_FDS 8                /* room to see (and close) a few strays */

int fdpass_send(int sock_fd, const void *buf, size_t len, int fd, int flags) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control;
        struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (fd >= 0) {
                struct cmsghdr *c;

                memset(&control, 0, sizeof(control));
                mh.msg_control = control.buf;
                mh.msg_controllen = sizeof(control.buf);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }

        do
                n = sendmsg(sock_fd, &mh, flags | MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return (size_t) n == len ? 0 : -EMSGSIZE;
}

static int recv_message(int sock_fd, void *buf, size_t size, int *ret_fd, int flags) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS)];
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = sizeof(control.buf),
        };
        int got_fd = -1, r = 0;
        ssize_t n;

        do
                n = recvmsg(sock_fd, &mh, flags | MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;

        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                        size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

                        for (size_t i = 0; i < nfds; i++) {
                                int fd;

                                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                                if (ret_fd && got_fd < 0 && nfds == 1)
                                        got_fd = fd;
                                else {
                                        safe_close(fd);
                                        r = -EBADMSG;
                                }
                        }
                } else
                        r = -EBADMSG;   /* credentials or anything else: not asked for */
        }

        if (mh.msg_flags & MSG_CTRUNC)
                r = -EBADMSG;
        else if (mh.msg_flags & MSG_TRUNC)
                r = r < 0 ? r : -EMSGSIZE;

        if (r < 0) {
                safe_close(got_fd);
                return r;
        }
        if (ret_fd)
                *ret_fd = got_fd;
        return (int) n;
}

/* After a non-blocking read said EOF: whether a message may be queued all
 * the same. Usually one ioctl says the queue is empty; only when it is not
 * does the peer's shutdown (POLLRDHUP) tell a message that raced the EOF
 * from one that follows an empty message (which is returned as such). */
static bool message_behind_eof(int sock_fd) {
        struct pollfd p = { .fd = sock_fd, .events = POLLRDHUP };
        int queued = 0;

        if (ioctl(sock_fd, SIOCINQ, &queued) < 0 || queued <= 0)
                return false;
        return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP));
}

int fdpass_recv(int sock_fd, void *buf, size_t size, int *ret_fd, int flags) {
        int n = recv_message(sock_fd, buf, size, ret_fd, flags);

        /* A non-blocking read can say EOF while a message is queued: the
         * kernel finds the queue empty, the peer sends and shuts down, and
         * only then is the shutdown looked at (__unix_dgram_recvmsg checks
         * the two apart). Nothing can arrive after the shutdown, so a second
         * read tells a message from the end. Without a shutdown (POLLRDHUP)
         * the 0 was an empty message, returned as such. */
        if (n == 0 && (flags & MSG_DONTWAIT) && !(ret_fd && *ret_fd >= 0) && message_behind_eof(sock_fd)) {
                int again = recv_message(sock_fd, buf, size, ret_fd, flags);

                if (again != -EAGAIN)
                        n = again;
        }
        return n;
}
