/* SPDX-License-Identifier: MIT */
/*
 * Socket addresses and sockets for endpoints (see sockaddr.h): one place
 * that knows how an endpoint's family, address and port map to a sockaddr
 * and which socket options its family implies.
 */
#include "sockaddr.h"

#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

#include "fd-util.h"
#include "sockopt.h"

int sockaddr_from_endpoint(const struct pb_endpoint *e, struct sockaddr_storage *ret, socklen_t *ret_len) {
        struct sockaddr_storage ss = { 0 };
        socklen_t len;

        if (endpoint_is_unix(e)) {
                struct sockaddr_un *sun = (struct sockaddr_un *) &ss;
                size_t n = strnlen(e->path, sizeof(sun->sun_path));

                if (n >= sizeof(sun->sun_path))
                        return -ENAMETOOLONG;
                sun->sun_family = AF_UNIX;
                memcpy(sun->sun_path, e->path, n);
                *ret = ss;
                *ret_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1);
                return AF_UNIX;
        }
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

/* IPV6_V6ONLY of an AF_INET6 socket for e: on for a specific IPv6 address,
 * off for the dual-stack wildcard. */
static int endpoint_v6only(const struct pb_endpoint *e) {
        return e->family == PB_FAMILY_INET6;
}

int socket_for_endpoint(const struct pb_endpoint *e) {
        struct sockaddr_storage ss;
        socklen_t len;
        int family, v6only = endpoint_v6only(e), fd;

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

int socket_is_for_endpoint(int fd, const struct pb_endpoint *e) {
        struct sockaddr_storage want, got;
        socklen_t want_len, got_len = sizeof(got);
        int family = sockaddr_from_endpoint(e, &want, &want_len);
        int type = sockopt_get_int(fd, SOL_SOCKET, SO_TYPE);
        int protocol = sockopt_get_int(fd, SOL_SOCKET, SO_PROTOCOL);

        if (family < 0)
                return family;
        if (type < 0)
                return type;            /* -ENOTSOCK for any other kind of file */
        if (protocol < 0)
                return protocol;
        if (getsockname(fd, (struct sockaddr *) &got, &got_len) < 0)
                return -errno;
        if (got.ss_family != family || got_len != want_len || memcmp(&got, &want, want_len) != 0 ||
            type != (e->transport == PB_UDP ? SOCK_DGRAM : SOCK_STREAM) ||
            protocol != (family == AF_UNIX ? 0 : (int) e->transport))
                return 0;
        if (family == AF_INET6) {
                int v6only = sockopt_get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY);

                if (v6only < 0)
                        return v6only;
                return v6only == endpoint_v6only(e);
        }
        return 1;
}
