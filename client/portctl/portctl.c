/* SPDX-License-Identifier: MIT */
/*
 * portctl: the command line client of brokerd, built on libportbroker.
 * This file holds main: the global options, the help (all of it, or one
 * command's with `portctl COMMAND --help`) and the dispatch to the commands:
 * get/release/status (cmd-lease.c), policy (cmd-policy.c), run/upgrade
 * (run.c) and why (why*.c); what they share is in cli.c. Output is a human
 * table or line by default and JSON with --json. This is the only part of
 * portbroker that prints for users: on failure exactly one line
 * `portctl: MESSAGE` on stderr and exit status 1; usage errors exit with 2.
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
        const char *help;               /* its lines of the Commands section */
} commands[] = {
        { "get", cmd_get,
          "  get ENDPOINT... [--nonblock] [-- CMD [ARGS...]]\n"
          "                        Get the sockets (creating the leases if needed). With CMD,\n"
          "                        run it with the sockets as fds 3, 4, ... and LISTEN_FDS,\n"
          "                        LISTEN_PID and LISTEN_FDNAMES set as systemd does; without\n"
          "                        CMD, print the leases (the broker keeps them).\n" },
        { "release", cmd_release,
          "  release ENDPOINT      End a lease (its owner or an admin)\n" },
        { "status", cmd_status,
          "  status [ENDPOINT]     Show leases: owner, since, handouts, holders, queue\n" },
        { "policy", cmd_policy,
          "  policy add PATTERN (--user NAME|UID | --group NAME|GID | --unit UNIT)\n"
          "                        Let a user, group or systemd unit get endpoints matching\n"
          "                        PATTERN (admin only)\n"
          "  policy remove ID      Remove a rule (admin only)\n"
          "  policy list           List the rules\n" },
        { "admin", cmd_admin,
          "  admin reexec          Make brokerd execute its binary again (an upgrade installed\n"
          "                        since), keeping every socket (admin only)\n" },
        { "run", cmd_run,
          "  run [ENDPOINT...] -- CMD [ARGS...]\n"
          "                        Run a server that binds its own sockets: with\n"
          "                        libportbroker-preload.so its bind() to ENDPOINT (any port\n"
          "                        brokerd grants, when none is named) gets brokerd's socket\n" },
        { "upgrade", cmd_upgrade,
          "  upgrade --pid PID [--signal SIG] [--timeout SEC] [ENDPOINT...] -- CMD [ARGS...]\n"
          "                        Like run; once the new server accepts on a brokered socket,\n"
          "                        send SIG (default QUIT) to the old server PID and wait for\n"
          "                        it to exit (default 30 s)\n" },
        { "why", cmd_why,
          "  why ENDPOINT [--as USER]\n"
          "                        Why bind() of ENDPOINT fails (or would succeed) for you or\n"
          "                        USER: the verdict, the evidence and the fix\n" },
};

static const struct command *find_command(const char *name) {
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(name, commands[i].name) == 0)
                        return &commands[i];
        return NULL;
}

static void help(void) {
        printf("Usage: portctl [OPTIONS] COMMAND [ARGS...]\n"
               "\n"
               "Get listening sockets from brokerd and manage who may hold which port.\n"
               "\n"
               "Commands:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fputs(commands[i].help, stdout);
        printf("\n"
               "Options (--socket and --json may also follow the command, before any '--'):\n"
               "  --socket PATH         brokerd's control socket (default: $" PB_SOCKET_ENV ",\n"
               "                        else " PB_DEFAULT_SOCKET ")\n"
               "  --json                Print JSON instead of text\n"
               "  --nonblock            get: set O_NONBLOCK on the sockets (shared by every holder);\n"
               "                        with CMD the sockets are otherwise made blocking\n"
               "  --help                Show this help\n"
               "  --version             Show the version\n"
               "\n"
               "ENDPOINT is [tcp|udp:][ADDRESS:]PORT: 8080, udp:5353, tcp:127.0.0.1:8080,\n"
               "tcp:[::1]:8443; no address means [::] (IPv4 and IPv6). A PATTERN may give a port\n"
               "range: tcp:8000-8099.\n"
               "\n"
               "Exit status: 0 success, 1 failure, 2 usage error; with CMD, 126 or 127 when it\n"
               "cannot be run. See portctl(1).\n");
}

/* `portctl COMMAND --help`: that command's lines of the help. */
static void command_help(const struct command *c) {
        printf("Usage: portctl [OPTIONS] %s ...\n\n%s\nSee 'portctl --help' for the options and portctl(1).\n",
               c->name, c->help);
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

/* True when the arguments of a command ask for help (before any `--`). */
static bool wants_help(int argc, char **argv) {
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0)
                        return false;
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
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
                        help();
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

/* Prints c's help, or all of it for NULL. Returns the exit status. */
static int print_help(const struct command *c) {
        if (c)
                command_help(c);
        else
                help();
        return fflush(stdout) == 0 ? 0 : EXIT_FAILURE;
}

int main(int argc, char **argv) {
        const struct command *c;
        int i = 0, n = 0, r;

        open_std_fds();
        r = parse_global_options(argc, argv, &i);
        if (r >= 0)
                return r;
        if (i >= argc)
                return cli_usage("no command given");
        if (strcmp(argv[i], "help") == 0)
                return print_help(i + 1 < argc ? find_command(argv[i + 1]) : NULL);
        c = find_command(argv[i]);
        if (wants_help(argc - i, argv + i))
                return print_help(c);
        if (!c)
                return cli_usage("unknown command '%s'", argv[i]);
        r = take_command_options(argc - i, argv + i, &n);
        if (r >= 0)
                return r;

        r = c->run(n, argv + i);
        if ((fflush(stdout) != 0 || ferror(stdout)) && r == 0)
                r = cli_fail("cannot write the output: %m");
        return r;
}
