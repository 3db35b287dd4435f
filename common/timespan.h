/* SPDX-License-Identifier: MIT */
/*
 * Time spans as people write them, `90d`, `12h`, `1h30m`: how long brokerd
 * keeps audit events (--audit-max-age) and how far back `portctl log
 * --since -2d` looks. The one parser of them.
 */
#pragma once

#include <stdint.h>

/* Parses a span: one or more NUMBER UNIT in a row, UNIT one of s, m (or
 * min), h, d, w, or a bare number of seconds; no sign, no spaces. Returns
 * 0 with the seconds in *ret, -EINVAL, or -ERANGE past a century. */
int timespan_parse(const char *s, uint64_t *ret);
