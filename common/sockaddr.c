/* SPDX-License-Identifier: MIT */
/*
 * Socket addresses and sockets for endpoints (see sockaddr.h): one place
 * that knows how an endpoint's family, address and port map to a sockaddr
 * and which socket options its family implies.
 */
#include "sockaddr.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "fd-util.h"

int sockaddr_from_endpoint(const struct pb_endpoint *e, struct sockaddr_storage *ret, socklen_t *ret_len) {
        struct sockaddr_storage ss = { 0 };
        socklen_t len;

        switch (e->family) {
        case PB_FAMILY_INET: {
                struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

                sin->sin_family = AF_INET;
                sin->sin_port = htons(e->port_lo);
                memcpy(&sin->sin_addr, e->addr, 4);
                len = sizeof(*sin);
                break;
        }
        case PB_FAMILY_ANY:
        case PB_FAMILY_INET6: {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons(e->port_lo);
                memcpy(&sin6->sin6_addr, e->addr, 16);
                len = sizeof(*sin6);
                break;
        }
        default:
                return -EAFNOSUPPORT;
        }
        *ret = ss;
        *ret_len = len;
        return ss.ss_family;
}

int sockaddr_port(const struct sockaddr_storage *ss) {
        if (ss->ss_family == AF_INET)
                return ntohs(((const struct sockaddr_in *) ss)->sin_port);
        if (ss->ss_family == AF_INET6)
                return ntohs(((const struct sockaddr_in6 *) ss)->sin6_port);
        return -EAFNOSUPPORT;
}

int socket_for_endpoint(const struct pb_endpoint *e) {
        struct sockaddr_storage ss;
        socklen_t len;
        int family, v6only = e->family == PB_FAMILY_INET6, fd;

        family = sockaddr_from_endpoint(e, &ss, &len);
        if (family < 0)
                return family;
        fd = socket(family, (e->transport == PB_UDP ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0) {
                int r = -errno;

                safe_close(fd);
                return r;
        }
        return fd;
}
