/* SPDX-License-Identifier: MIT */
/*
 * What portctl's command files share: the global options and the helpers
 * that print the one stderr line of a failure.
 */
#pragma once

#include <stdbool.h>

#include "portbroker.h"

#define EXIT_USAGE 2

extern const char *arg_socket;          /* --socket; NULL: $PORTBROKER_SOCKET or the default */
extern bool arg_json;                   /* --json */

/* Prints `portctl: MESSAGE` and the --help hint; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints `portctl: MESSAGE` (%m allowed); returns EXIT_FAILURE. */
int failure(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Checks endpoint (or pattern) text. Returns 0 or the usage exit status. */
int check_endpoint(const char *text, bool pattern);

/* Prints the library's error; returns EXIT_FAILURE. */
int pb_failure(const pb_error *err);

/* Connects to brokerd (--socket, else the default). Returns 0 or the exit status. */
int connect_broker(pb_conn **ret);

/* portctl run / portctl upgrade (run.c). */
int cmd_run(int argc, char **argv);
int cmd_upgrade(int argc, char **argv);

/* portctl why (why.c). */
int cmd_why(int argc, char **argv);
