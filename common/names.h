/* SPDX-License-Identifier: MIT */
/*
 * Users and groups as an admin writes them, a name or a number: the one
 * way portctl's options and policy files (portctl's and brokerd's) read them.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

/* Parses a decimal id (no sign, no spaces) below UINT32_MAX. Returns 0, -EINVAL or -ERANGE. */
int parse_id(const char *s, uint32_t *ret);

/* A user (name or number) as uid; a group (name or number) as gid. Returns 0 or -ENOENT. */
int parse_user(const char *s, uid_t *ret);
int parse_group(const char *s, gid_t *ret);
