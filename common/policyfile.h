/* SPDX-License-Identifier: MIT */
/*
 * Policy files: rules as text, read by `portctl policy import` and by
 * brokerd from its policy directory (policy.d), written by `portctl policy
 * export`. One rule per line:
 *
 *   PATTERN user|group|unit WHO [socket-group=GROUP] [socket-mode=MODE] [reserve] [owner=USER]
 *
 * PATTERN is an endpoint pattern (`tcp:80`, `udp:[::]:53`, `tcp:8000-8099`,
 * `unix:/run/app/`); WHO a user or group (name or number) or a unit name.
 * socket-group and socket-mode are for Unix patterns; `reserve` has
 * brokerd lease the pattern, one endpoint, at start for the user (or, for
 * a group or unit rule, for the owner named). `#` starts a comment that
 * runs to the end of the line; blank lines are fine.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "proto.h"

#define POLICYFILE_LINE_MAX 1024

struct policyfile_rule {
        struct pb_principal principal;
        struct pb_endpoint pattern;
        struct pb_socket_perm perm;     /* Unix patterns: PB_SOCKET_GROUP_NONE and 0600 unless given */
        struct pb_rule_attrs attrs;
        unsigned line;                  /* where it was read, from 1 */
};

/* Parses one line (NUL-terminated, no newline; changed in place). Returns
 * 1 and *ret for a rule, 0 for a blank or comment line, or -EINVAL (or
 * -ENOENT: a user or group this host does not know) with why. */
int policyfile_parse_line(char *line, struct policyfile_rule *ret, char *why, size_t size);

/* Reads the rules of f, calling fn(rule, userdata) for each in order; a
 * negative return stops the reading and is returned. Returns 0, or -errno
 * with why ("LINE: ..." for a line at fault; the caller names the file). */
int policyfile_read(FILE *f, int (*fn)(const struct policyfile_rule *rule, void *userdata), void *userdata,
                    char *why, size_t size);

/* Writes why a policy file cannot be read (printf-style) into why.
 * Returns -error: the one way policy file readers fail. */
int policyfile_fail(char *why, size_t size, int error, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Parses a socket mode: octal permission bits, at most 0777 ("0660",
 * "660"). Returns 0 or -EINVAL. */
int policyfile_parse_mode(const char *s, unsigned *ret);
