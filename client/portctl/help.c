/* SPDX-License-Identifier: MIT */
/*
 * portctl's help: one entry per command or subcommand (its arguments, what it
 * does, its own options, whether it takes --json). `portctl --help` prints
 * them all; `portctl COMMAND [SUBCOMMAND] --help` and `portctl help COMMAND
 * [SUBCOMMAND]` print one command's, or all of a group's (`policy`, `admin`),
 * with the options that command takes and no other.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define HELP_INDENT 24                  /* where the text of an option or a command starts */

static const struct usage {
        const char *command;            /* "get", "policy add" */
        const char *args;               /* what follows the command in its usage */
        const char *text;               /* what it does: lines of at most 80 - HELP_INDENT columns */
        const char *options;            /* its own options' help lines, "" for none */
        bool json;                      /* it takes --json */
} usages[] = {
        { "get", "ENDPOINT... [--nonblock] [-- CMD [ARGS...]]",
          "Get the sockets (creating the leases if needed). With CMD,\n"
          "run it with the sockets as fds 3, 4, ... and LISTEN_FDS,\n"
          "LISTEN_PID and LISTEN_FDNAMES set as systemd does (and say\n"
          "so if CMD leaves a connection waiting 3 s); without CMD,\n"
          "print the leases (the broker keeps them).\n",
          "  --nonblock            Set O_NONBLOCK on the sockets (shared by every holder);\n"
          "                        with CMD the sockets are otherwise made blocking\n",
          true },
        { "release", "ENDPOINT", "End a lease (its owner or an admin)\n", "", true },
        { "status", "[ENDPOINT]", "Show leases: owner, since, handouts, holders, queue\n", "", true },
        { "log", "[--since TIME] [--until TIME] [--endpoint E] [--uid USER] [--event KIND] [--limit N]",
          "Show brokerd's audit trail, newest first: grants, denials\n"
          "and why, leases created and released, rules added and\n"
          "removed, re-executions (admins: everyone's; others: their\n"
          "own)\n",
          "  --since TIME          Events at or after TIME: YYYY-MM-DD [HH:MM[:SS]] (local\n"
          "                        time), @UNIXSECONDS, -1h (-30m, -2d: ago), now, today\n"
          "                        or yesterday\n"
          "  --until TIME          Events at or before TIME\n"
          "  --endpoint E          Events about endpoint E, or the rules of pattern E\n"
          "  --uid USER            One user's events: a name or uid (another's: admins)\n"
          "  --event KIND          One kind: grant, deny, create, release, replace,\n"
          "                        rebind-failed, policy-add, policy-change,\n"
          "                        policy-remove, policy-dir-failed, reserve,\n"
          "                        reserve-failed, reexec or bad-message\n"
          "  --limit N             At most the N newest (default 100; 0: all)\n",
          true },
        { "policy add", "PATTERN (--user NAME|UID | --group NAME|GID | --unit UNIT) [--socket-group GROUP] "
                        "[--socket-mode MODE] [--reserve [--owner NAME|UID]]",
          "Let a user, group or systemd unit get endpoints matching\n"
          "PATTERN (admin only); a rule that exists already is kept\n",
          "  --user NAME|UID       The rule is for a user (a name is looked up here)\n"
          "  --group NAME|GID      The rule is for the members of a group\n"
          "  --unit UNIT           The rule is for the processes of a systemd unit\n"
          "  --socket-group GROUP  unix: patterns: the socket files' group (default:\n"
          "                        brokerd's), e.g. the proxy's that connects to them\n"
          "  --socket-mode MODE    unix: patterns: the socket files' mode (default 0600;\n"
          "                        their owner is the lease's)\n"
          "  --reserve             brokerd leases PATTERN (one endpoint) now and at each\n"
          "                        start, before anyone asks: nothing else takes the port\n"
          "  --owner NAME|UID      With --reserve, for a group or unit rule: whose lease\n"
          "                        the reservation is (a user rule's is its user's)\n",
          true },
        { "policy remove", "ID", "Remove a rule (admin only)\n", "", true },
        { "policy list", "", "List the rules\n", "", true },
        { "policy export", "",
          "Print the rules as a policy file: a line each, in an order\n"
          "that depends on the rules alone (diff two hosts' exports)\n",
          "", false },
        { "policy import", "FILE [--replace] [--check]",
          "Make the rules say what policy file FILE (- for standard\n"
          "input) says, in one transaction: rules added, and changed in\n"
          "place; a mistake in FILE changes nothing (admin only, but\n"
          "anyone may --check)\n",
          "  --replace             Also remove the rules FILE does not name (never the\n"
          "                        policy directory's)\n"
          "  --check               Print what would be added, changed and removed, and\n"
          "                        change nothing\n",
          true },
        { "policy test", "ENDPOINT [--user NAME|UID | --group NAME|GID] [--unit UNIT]",
          "Which rule would let a user (with its groups), a group or\n"
          "a systemd unit get ENDPOINT, and whether a get would be\n"
          "granted now, and why; nothing is bound. Exit status 0\n"
          "allowed, 1 denied\n",
          "  --user NAME|UID       A process of that user, with the groups the user\n"
          "                        database gives it (looked up here)\n"
          "  --group NAME|GID      A process of that group alone, of no user\n"
          "  --unit UNIT           A process in that systemd unit: of no user, or of the\n"
          "                        --user or --group given with it\n",
          true },
        { "admin reexec", "",
          "Make brokerd execute its binary again (an upgrade installed\n"
          "since), keeping every socket (admin only)\n",
          "", true },
        { "run", "[ENDPOINT...] -- CMD [ARGS...]",
          "Run a server that binds its own sockets: with\n"
          "libportbroker-preload.so its bind() to ENDPOINT (any port\n"
          "brokerd grants, when none is named) gets brokerd's socket\n",
          "", false },
        { "upgrade", "--pid PID [--signal SIG] [--timeout SEC] [ENDPOINT...] -- CMD [ARGS...]",
          "Like run; once the new server accepts on a brokered socket,\n"
          "send SIG (default QUIT) to the old server PID and wait for\n"
          "it to exit (default 30 s)\n",
          "  --pid PID             The running server to replace (required)\n"
          "  --signal SIG          What stops it gracefully: a name (QUIT, SIGTERM) or a\n"
          "                        number (default QUIT)\n"
          "  --timeout SEC         How long the new server may take to serve, and then the\n"
          "                        old one to exit (default 30)\n",
          false },
        { "why", "ENDPOINT [--as USER]",
          "Why bind() of ENDPOINT fails (or would succeed) for you or\n"
          "USER: the verdict, the evidence and the fix\n",
          "  --as USER             Whose bind() to judge: a user name or uid (default: you)\n",
          true },
};

#define N_USAGES (sizeof(usages) / sizeof(usages[0]))

/* Prints text's lines, the first after first_pad spaces, the others after pad. */
static void print_text(const char *text, int first_pad, int pad) {
        for (const char *line = text; *line; first_pad = pad) {
                size_t len = strcspn(line, "\n");

                printf("%*s%.*s\n", first_pad, "", (int) len, line);
                line += len + (line[len] == '\n');
        }
}

/* "  COMMAND ARGS" and what it does, as in the Commands section. */
static void print_summary(const struct usage *u) {
        int used = printf("  %s%s%s", u->command, u->args[0] ? " " : "", u->args);

        if (used > HELP_INDENT - 2) {
                putchar('\n');
                used = 0;
        }
        print_text(u->text, HELP_INDENT - used, HELP_INDENT);
}

/* The options every command shares; --json only when json. */
static void print_shared_options(bool json) {
        if (json)
                printf("  --json                Print JSON instead of text\n");
        printf("  --socket PATH         brokerd's control socket (default: $" PB_SOCKET_ENV ",\n"
               "                        else " PB_DEFAULT_SOCKET ")\n");
}

void help_all(void) {
        printf("Usage: portctl [OPTIONS] COMMAND [ARGS...]\n"
               "\n"
               "Get listening sockets from brokerd and manage who may hold which port.\n"
               "\n"
               "Commands:\n");
        for (size_t i = 0; i < N_USAGES; i++)
                print_summary(&usages[i]);
        printf("\n"
               "Options (--socket and --json may also follow the command, before any '--'):\n");
        print_shared_options(true);
        printf("  --help                Show this help; after a command, that command's\n"
               "  --version             Show the version\n"
               "\n"
               "ENDPOINT is [tcp|udp[4|6]:][ADDRESS:]PORT: 8080, udp:5353, tcp:127.0.0.1:8080,\n"
               "tcp:[::1]:8443, tcp6:8080, tcp4:8080; no address means [::] (IPv4 and IPv6),\n"
               "or with tcp6/udp6 [::] IPv6 only, with tcp4/udp4 0.0.0.0. A PATTERN may give a\n"
               "port range: tcp:8000-8099.\n"
               "\n"
               "Exit status: 0 success, 1 failure, 2 usage error; with CMD, 126 or 127 when it\n"
               "cannot be run. See portctl(1).\n");
}

/* True when u is command name, or subcommand sub of it (sub NULL: any of them). */
static bool usage_is(const struct usage *u, const char *name, const char *sub) {
        size_t len = strlen(name);

        if (strncmp(u->command, name, len) != 0 || (u->command[len] != '\0' && u->command[len] != ' '))
                return false;
        return !sub || (u->command[len] == ' ' && strcmp(u->command + len + 1, sub) == 0);
}

/* Prints the help of usages[from..to): one command's, or a group's. */
static void print_usages(size_t from, size_t to) {
        bool json = false;

        for (size_t i = from; i < to; i++)
                printf("%s portctl [OPTIONS] %s%s%s\n", i == from ? "Usage:" : "      ", usages[i].command,
                       usages[i].args[0] ? " " : "", usages[i].args);
        putchar('\n');
        if (to - from == 1)
                print_text(usages[from].text, 2, 2);
        else
                for (size_t i = from; i < to; i++)
                        print_summary(&usages[i]);
        printf("\nOptions:\n");
        for (size_t i = from; i < to; i++) {
                fputs(usages[i].options, stdout);
                json = json || usages[i].json;
        }
        print_shared_options(json);
        printf("  --help                Show this help\n\nSee portctl(1).\n");
}

void help_command(const char *name, const char *sub) {
        size_t from = 0, to;

        while (from < N_USAGES && !usage_is(&usages[from], name, NULL))
                from++;
        if (from == N_USAGES) {
                help_all();
                return;
        }
        for (to = from; to < N_USAGES && usage_is(&usages[to], name, NULL); to++)
                if (sub && usage_is(&usages[to], name, sub)) {
                        print_usages(to, to + 1);
                        return;
                }
        print_usages(from, to);
}
