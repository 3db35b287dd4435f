/* SPDX-License-Identifier: MIT */
/*
 * Integer socket options and the socket cookie (see sockopt.h).
 */
#include "sockopt.h"

#include <errno.h>
#include <sys/socket.h>

int sockopt_get_int(int fd, int level, int name) {
        int value = 0;
        socklen_t len = sizeof(value);

        return getsockopt(fd, level, name, &value, &len) < 0 ? -errno : value;
}

int sockopt_set_int(int fd, int level, int name, int value) {
        return setsockopt(fd, level, name, &value, sizeof(value)) < 0 ? -errno : 0;
}

uint64_t socket_cookie(int fd) {
        uint64_t cookie = 0;
        socklen_t len = sizeof(cookie);

        return getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0 ? 0 : cookie;
}
