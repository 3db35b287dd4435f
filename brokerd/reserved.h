/* SPDX-License-Identifier: MIT */
/*
 * net.ipv4.ip_local_reserved_ports of our network namespace: the ports the
 * kernel never picks by itself for a socket that did not bind one (see
 * reserved.c), read and written as a set of ports.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct port_set {
        uint64_t bits[65536 / 64];
};

/* Whether port is in s. */
bool port_set_has(const struct port_set *s, unsigned port);

/* Puts port in s (on) or takes it out. */
void port_set_put(struct port_set *s, unsigned port, bool on);

/* Parses the sysctl's text ("80,8000-8080", a trailing newline allowed)
 * into *ret. Returns 0 or -EINVAL. */
int reserved_parse(const char *text, struct port_set *ret);

/* Formats s as the sysctl's text into buf (cut to size, NUL-terminated when
 * size > 0). Returns the length the whole text needs. */
size_t reserved_format(const struct port_set *s, char *buf, size_t size);

/* The reserved ports now. Returns 0 or -errno. */
int reserved_read(struct port_set *ret);

/* Replaces the reserved ports with s. Returns 0 or -errno. */
int reserved_write(const struct port_set *s);
