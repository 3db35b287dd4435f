/* SPDX-License-Identifier: MIT */
/*
 * What portctl's command files share: the global options, exit statuses and
 * the one-line failure messages, endpoint checks, the connection to brokerd,
 * the JSON string writer, the table printer, user and group names, times and
 * a growable array. Functions named cli_* return an exit status (0, or the
 * EXIT_* below after printing `portctl: MESSAGE` on stderr and, under --json,
 * {"error":MESSAGE,"code":CODE} on stdout), never -errno; the others follow
 * the usual >= 0 / -errno rule or return nothing. CODE is "usage" for a
 * usage error, "connect" when brokerd cannot be reached, else the name of
 * the errno value that says why ("EACCES", brokerd's or our own).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "endpoint.h"
#include "names.h"
#include "portbroker.h"

#define EXIT_USAGE 2                    /* bad arguments (EXIT_FAILURE = 1: the command failed) */
#define EXIT_CANNOT_EXEC 126             /* the command after `--` exists but cannot be run */
#define EXIT_NOT_FOUND 127              /* the command after `--` was not found */

/* Options every command shares, before or after the command's name (portctl.c takes them). */
extern const char *arg_socket;          /* --socket; NULL: $PORTBROKER_SOCKET or the default */
extern bool arg_json;                   /* --json */

/* --- exit statuses (cli.c) -------------------------------------------------- */

/* Prints `portctl: MESSAGE` and the --help hint (code "usage"); returns EXIT_USAGE. */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints `portctl: MESSAGE` for the failure errno value e (%m is e's text; its name the code);
 * returns EXIT_FAILURE. */
int cli_fail(int e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints the library's error (or strerror of its code), its code's name the code; returns EXIT_FAILURE. */
int cli_fail_pb(const pb_error *err);

/* Prints `portctl: cannot run CMD: ERROR` for execvp's error e; returns EXIT_NOT_FOUND
 * for ENOENT, else EXIT_CANNOT_EXEC. */
int cli_exec_failed(const char *cmd, int e);

/* Checks endpoint (or pattern) text before anything is sent. Returns 0 or EXIT_USAGE. */
int cli_check_endpoint(const char *text, bool pattern);

/* Connects to brokerd (--socket, else the default). Returns 0 and *ret, or EXIT_FAILURE (code "connect"). */
int cli_connect(pb_conn **ret);

/* Starts a watcher for the server this process becomes when it execs: a
 * process of its own (detached by a second fork, so that the server has no
 * child of ours to reap), stdin and stdout on /dev/null, every fd closed
 * but stderr and the n in keep. Returns 0 in the watcher (which _exit()s
 * when done), 1 here once it started, or -errno. */
int cli_start_watcher(const int *keep, size_t n);

/* An option of a command that takes a value: --name VALUE or --name=VALUE. */
struct cli_option {
        const char *name;               /* "--user" */
        const char **value;             /* where its value goes (NULL until given) */
};

/* Takes argv[*i] when it is one of the n options opts, storing its value and moving *i past it.
 * Returns 0 when taken, -1 for any other argument, or EXIT_USAGE (said, naming verb: no value, an
 * empty one, or the option given twice). */
int cli_take_option(int argc, char **argv, int *i, const char *verb, const struct cli_option *opts, size_t n);

/* Parses the arguments of a command that takes at most one operand and no option of its own
 * (main took --json and --socket out): *ret_operand gets it, or NULL. A second operand is a
 * usage error saying too_many, or, when too_many is NULL, no operand is allowed ("VERB:
 * unexpected argument 'X'"). Returns 0 or EXIT_USAGE. */
int cli_parse_operand(int argc, char **argv, const char *verb, const char *too_many, const char **ret_operand);

/* --- text helpers ------------------------------------------------------------ */

/* The name of errno value e, "EACCES" ("error" for a value without one): a --json failure's code. */
const char *errno_name(int e);

/* The canonical text of endpoint (or pattern) text, or the text itself when it does not parse. Returns buf. */
char *canonical_endpoint(const char *text, bool pattern, char buf[static PB_ENDPOINT_STRLEN]);

/* Writes s to f as a JSON string: valid UTF-8 passes through; invalid bytes become \ufffd,
 * control characters and DEL are escaped. */
void json_string(FILE *f, const char *s);

/* json_string, or `null` for NULL. */
void json_string_or_null(FILE *f, const char *s);

/* The name of uid or gid from the user/group database, or NULL (static storage). */
const char *user_name(uid_t uid);
const char *group_name(gid_t gid);

/* "name (uid N)", or "uid N" when uid has no name, into buf. */
void user_text(uid_t uid, char *buf, size_t size);

/* ISO 8601 local time with a numeric offset (2025-01-31T14:05:09+01:00), "-" for t <= 0, into buf. */
void format_time(int64_t t, char *buf, size_t size);

/* A point in time as an admin types it, in unix seconds: YYYY-MM-DD, with [ |T]HH:MM[:SS] (local
 * time, or UTC with Z, or with an offset +HH:MM as format_time() writes it), @UNIXSECONDS, -SPAN
 * (that long before now: -1h, -30m, -2d, -1h30m; +SPAN after), now, today, yesterday or tomorrow
 * (local midnight). now is the time to count from. Returns 0, or -EINVAL (also before 1970). */
int parse_time(const char *s, int64_t now, int64_t *ret);
#define TIME_SYNTAX "expected YYYY-MM-DD [HH:MM[:SS]], @UNIXSECONDS, -1h (-30m, -2d: ago), now, today or yesterday"


/* Returns items with room for one more of size bytes (n used of *alloc, doubled as needed),
 * or NULL (items unchanged, still owned by the caller). */
void *grow(void *items, size_t n, size_t *alloc, size_t size);

/* A growing array of items of one size, for the list callbacks of the library. */
struct list {
        void *items;                    /* owned; free() it */
        size_t n, alloc;
        size_t size;                    /* of one item */
};

/* Appends a copy of *item. Returns 0 or -ENOMEM. */
int list_append(struct list *l, const void *item);

/* --- tables ------------------------------------------------------------------ */

#define TABLE_MAX_COLS 6

struct table {
        size_t ncols;                   /* cells per row, <= TABLE_MAX_COLS */
        size_t ncells, alloc;
        char **cells;                   /* row-major; the first row is the header; owned */
};

/* Appends one cell; rows fill left to right. Returns 0 or -ENOMEM. */
int table_cell(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints t with columns padded to their widest cell. */
void table_print(const struct table *t);

/* Frees the cells; t keeps its ncols. */
void table_free(struct table *t);

/* --- the sockets of a port (sockdiag.c) ------------------------------------ */

struct inet_diag_msg;
struct rtattr;

/* Called for each socket of a dump, with its family and attributes (len bytes). */
typedef void (*sockdiag_fn)(const struct inet_diag_msg *m, int family, const struct rtattr *attrs, int len,
                            void *userdata);

/* Dumps the sockets of family and protocol (IPPROTO_TCP or IPPROTO_UDP) on local port, in
 * states (a mask of 1 << TCP_* states; ~0U: all), with the extensions ext (a mask of
 * 1 << (INET_DIAG_* - 1)), calling fn for each. Returns 0 or -errno. */
int sockdiag_dump(int family, int protocol, uint16_t port, uint32_t states, uint8_t ext, sockdiag_fn fn,
                  void *userdata);

/* How long a connection may wait in a listener's accept queue before portctl says no
 * server accepts (get's watcher, status). */
#define ACCEPT_STALL_MS 3000

/* The connections a TCP lease's listener queued that no process accepted yet. */
struct accept_queue {
        unsigned waiting;
        uint32_t oldest_ms;             /* how long the oldest has waited (since its client's last segment) */
};

/* Reads the accept queue of the listener of TCP endpoint e. Returns 0 or -errno. */
int accept_queue(const struct pb_endpoint *e, struct accept_queue *ret);

/* --- help (help.c) ---------------------------------------------------------- */

/* Prints portctl's whole help on stdout. */
void help_all(void);

/* Prints the help of command name and its subcommand sub (NULL: all of them) on stdout: its
 * usage, what it does and the options it takes; the whole help for an unknown command. */
void help_command(const char *name, const char *sub);

/* --- commands ---------------------------------------------------------------- */

/* portctl get / release / status (cmd-lease.c). */
int cmd_get(int argc, char **argv);
int cmd_release(int argc, char **argv);
int cmd_status(int argc, char **argv);

/* portctl policy add / remove / list / export / test (cmd-policy.c), import (cmd-import.c). */
int cmd_policy(int argc, char **argv);
int cmd_policy_import(int argc, char **argv);

/* A rule as a line of a policy file (common/policyfile.h), users and groups
 * by name where this host knows them, into buf. Returns buf. */
char *policy_rule_line(const pb_rule *x, char *buf, size_t size);

/* Whether a and b are one rule (the same principal and pattern), and whether
 * they also say the same (socket group and mode, reservation, owner). */
bool policy_rule_same(const pb_rule *a, const pb_rule *b);
bool policy_rule_same_settings(const pb_rule *a, const pb_rule *b);

/* portctl admin reexec (cmd-admin.c). */
int cmd_admin(int argc, char **argv);

/* portctl run / portctl upgrade (run.c). */
int cmd_run(int argc, char **argv);
int cmd_upgrade(int argc, char **argv);

/* portctl why (why.c). */
int cmd_why(int argc, char **argv);

/* portctl log (cmd-log.c). */
int cmd_log(int argc, char **argv);
