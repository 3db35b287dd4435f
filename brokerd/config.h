/* SPDX-License-Identifier: MIT */
/*
 * brokerd's configuration file (/etc/portbroker/brokerd.conf, --config):
 * `key = value` lines, one per long option, `#` comments and blank lines.
 * This file only reads it; main.c knows what each key means.
 */
#pragma once

#include <stdbool.h>

#ifdef PB_CONFIG_PATH
#define CONFIG_DEFAULT_PATH PB_CONFIG_PATH      /* $(SYSCONFDIR)/portbroker/brokerd.conf, from make */
#else
#define CONFIG_DEFAULT_PATH "/etc/portbroker/brokerd.conf"
#endif
#define CONFIG_LINE_MAX 1024

/* Calls fn(key, value, line, userdata) for each setting of the file at
 * path, in order; keys and values are trimmed, values may be empty, and
 * stay valid for the life of the process. A missing file is no settings
 * unless required; "/dev/null" is none. The file must be a regular file of
 * root or brokerd's uid that nobody else may write (it names brokerd's
 * admins). Returns 0, or -1 after printing why, naming the file and line
 * (fn prints its own reasons). */
int config_read(const char *path, bool required, int (*fn)(const char *key, const char *value, unsigned line,
                                                            void *userdata), void *userdata);
