/* SPDX-License-Identifier: MIT */
/*
 * Integer socket options and the socket cookie: the one way the daemon, the
 * library and the shim read and set them.
 */
#pragma once

#include <stdint.h>

/* The value of an int option (level, name) of fd. Returns it, or -errno
 * (fine for the options read here, whose values are never negative). */
int sockopt_get_int(int fd, int level, int name);

/* Sets an int option (level, name) of fd to value. Returns 0 or -errno. */
int sockopt_set_int(int fd, int level, int name, int value);

/* SO_COOKIE of socket fd (unique for the boot), 0 if unknown. */
uint64_t socket_cookie(int fd);
