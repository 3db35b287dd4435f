/* SPDX-License-Identifier: MIT */
/*
 * Socket addresses and sockets for endpoints: the one translation of a
 * `struct pb_endpoint` into a sockaddr, and the socket a bind of it needs
 * (family, type, close-on-exec, IPV6_V6ONLY as the endpoint's family says).
 * Used by the daemon's lease sockets, portctl why's probe binds and the
 * library's check of a socket brokerd hands out.
 */
#pragma once

#include <sys/socket.h>

#include "endpoint.h"

/* Writes e's address and port (port_lo) to *ret and its length to *ret_len; [::]
 * for PB_FAMILY_ANY, the path for a Unix endpoint. Returns the family
 * (AF_INET, AF_INET6 or AF_UNIX) or -EAFNOSUPPORT. */
int sockaddr_from_endpoint(const struct pb_endpoint *e, struct sockaddr_storage *ret, socklen_t *ret_len);

/* The port (host order) of an AF_INET or AF_INET6 address. Returns it or -EAFNOSUPPORT. */
int sockaddr_port(const struct sockaddr_storage *ss);

/* Opens an unbound socket for e: its family and transport (a Unix endpoint's
 * is a stream socket), close-on-exec, and for AF_INET6 IPV6_V6ONLY=1 for a
 * specific IPv6 address, 0 for the dual-stack wildcard.
 * Returns the fd (owned by the caller) or -errno. */
int socket_for_endpoint(const struct pb_endpoint *e);

/* Whether fd is a socket for e as socket_for_endpoint() and a bind() make
 * it: family, type, protocol, address and port, IPV6_V6ONLY. Returns 1 or
 * 0, or -errno when fd cannot be read (-ENOTSOCK: not a socket). */
int socket_is_for_endpoint(int fd, const struct pb_endpoint *e);
