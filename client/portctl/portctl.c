/* SPDX-License-Identifier: MIT */
/*
 * portctl: the command line client of brokerd, built on libportbroker.
 * This file holds main: the options every command shares, when to print
 * help (help.c has it: all of it, or one command's with `portctl COMMAND
 * --help`) and the dispatch to the commands: get/release/status
 * (cmd-lease.c), policy (cmd-policy.c), admin (cmd-admin.c), run/upgrade
 * (run.c), why (why*.c) and log (cmd-log.c); what they share is in cli.c.
 * Output is a human table or line by default and JSON with --json. This
 * is the only part of portbroker that prints for users: on failure exactly
 * one line `portctl: MESSAGE` on stderr (under --json also a JSON error
 * object on stdout, cli.c) and exit status 1; usage errors exit with 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fd-util.h"
#include "portbroker.h"

static const struct command {
        const char *name;
        int (*run)(int argc, char **argv);
} commands[] = {
        { "get", cmd_get },
        { "release", cmd_release },
        { "status", cmd_status },
        { "policy", cmd_policy },
        { "admin", cmd_admin },
        { "run", cmd_run },
        { "upgrade", cmd_upgrade },
        { "why", cmd_why },
        { "log", cmd_log },
};

static const struct command *find_command(const char *name) {
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(name, commands[i].name) == 0)
                        return &commands[i];
        return NULL;
}

/* --- main ------------------------------------------------------------------ */

/* Makes sure fds 0-2 are open, so that no socket we open lands on one of them. */
static void open_std_fds(void) {
        for (int fd = 0; fd < 3; fd++)
                if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
                        int null_fd = open("/dev/null", O_RDWR);
                        if (null_fd != fd)
                                null_fd = safe_close(null_fd);  /* cannot happen: lowest free fd is fd */
                }
}

/* True when argv[1..argc) holds option a or b (may be NULL) before any `--`. */
static bool has_option(int argc, char **argv, const char *a, const char *b) {
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0)
                        return false;
                if (strcmp(argv[i], a) == 0 || (b && strcmp(argv[i], b) == 0))
                        return true;
        }
        return false;
}

/* Takes argv[*i] when it is an option every command shares (--json, --socket PATH, --socket=PATH),
 * moving *i past its value. Returns 0 when taken, -1 for any other argument, or EXIT_USAGE. */
static int take_shared_option(int argc, char **argv, int *i) {
        const char *a = argv[*i];

        if (strcmp(a, "--json") == 0)
                arg_json = true;
        else if (strcmp(a, "--socket") == 0) {
                if (*i + 1 >= argc)
                        return cli_usage("--socket needs a path");
                arg_socket = argv[++*i];
        } else if (strncmp(a, "--socket=", 9) == 0)
                arg_socket = a + 9;
        else
                return -1;
        if (arg_socket && !arg_socket[0])
                return cli_usage("--socket needs a path");
        return 0;
}

/* Parses the options before the command; *ret_index: where the command is. Returns -1 to go on,
 * or the exit status to return now. */
static int parse_global_options(int argc, char **argv, int *ret_index) {
        int i;

        for (i = 1; i < argc && argv[i][0] == '-'; i++) {
                const char *a = argv[i];
                int r;

                if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                        help_all();
                        return fflush(stdout) == 0 ? 0 : EXIT_FAILURE;
                } else if (strcmp(a, "--version") == 0) {
                        printf("portctl %s\n", PB_VERSION);
                        return fflush(stdout) == 0 ? 0 : EXIT_FAILURE;
                }
                r = take_shared_option(argc, argv, &i);
                if (r > 0)
                        return r;
                if (r < 0)
                        return cli_usage("unknown option '%s'", a);
        }
        *ret_index = i;
        return -1;
}

/* Takes the shared options out of a command's arguments argv[1..argc) up to `--` (what follows
 * belongs to CMD); the others move down in order, argv stays NULL-terminated. Returns -1 and
 * *ret_argc, or the exit status to return now. */
static int take_command_options(int argc, char **argv, int *ret_argc) {
        int i, n = 1;

        for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
                int r = take_shared_option(argc, argv, &i);

                if (r > 0)
                        return r;
                if (r < 0)
                        argv[n++] = argv[i];
        }
        while (i < argc)
                argv[n++] = argv[i++];
        argv[n] = NULL;
        *ret_argc = n;
        return -1;
}

/* Prints the help of the command (and subcommand) in args[0..n), all of it for none. Returns
 * the exit status. */
static int print_help(int n, char **args) {
        if (n == 0)
                help_all();
        else
                help_command(args[0], n > 1 && args[1][0] != '-' ? args[1] : NULL);
        return fflush(stdout) == 0 ? 0 : EXIT_FAILURE;
}

int main(int argc, char **argv) {
        const struct command *c;
        int i = 0, n = 0, r;

        open_std_fds();
        /* Known before anything can fail, so that every failure under --json is JSON. */
        arg_json = has_option(argc, argv, "--json", NULL);
        r = parse_global_options(argc, argv, &i);
        if (r >= 0)
                return r;
        if (i >= argc)
                return cli_usage("no command given");
        if (strcmp(argv[i], "help") == 0)
                return print_help(argc - i - 1, argv + i + 1);
        r = take_command_options(argc - i, argv + i, &n);
        if (r >= 0)
                return r;
        if (has_option(n, argv + i, "--help", "-h"))
                return print_help(n, argv + i);
        c = find_command(argv[i]);
        if (!c)
                return cli_usage("unknown command '%s'", argv[i]);

        r = c->run(n, argv + i);
        if ((fflush(stdout) != 0 || ferror(stdout)) && r == 0)
                r = cli_fail(errno ? errno : EIO, "cannot write the output: %m");
        return r;
}
