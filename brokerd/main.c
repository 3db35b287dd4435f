/* SPDX-License-Identifier: MIT */
/*
 * brokerd: parse options, then run the monitor, which starts the worker
 * (this binary again, with --worker; see privsep.h). Without --foreground
 * and outside systemd it detaches, and the parent exits only once brokerd
 * is ready (or with its failure).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "broker.h"
#include "config.h"
#include "monitor.h"
#include "policydir.h"
#include "privsep.h"
#include "sandbox.h"
#include "fd-util.h"
#include "log.h"
#include "store.h"
#include "timespan.h"

static struct broker_options arg_opt = {
        .control_path = BROKER_DEFAULT_CONTROL,
        .db_path = BROKER_DEFAULT_DB,
        .backlog = 4096,
        .max_connections = 256,
        .max_connections_per_user = 32,
        .idle_timeout_sec = 10,
        .max_connection_age_sec = 600,
        .max_leases_per_user = 64,
        .max_leases = 4096,
        .policy_dir = POLICYDIR_DEFAULT,
        .audit_max_rows = STORE_EVENTS_KEEP,
        .audit_max_age_sec = STORE_EVENTS_MAX_AGE,
};
static int arg_foreground;
static int arg_check;                   /* --check: validate the arguments and the database, exit */
static int arg_worker;                  /* --worker: the monitor started us as its worker (internal) */
static int arg_log_level = -1;          /* --log-level; -1: $BROKERD_LOG_LEVEL or info */
static const char *arg_config = CONFIG_DEFAULT_PATH; /* --config */
static bool arg_config_given;           /* --config was: the file must exist */
static const char *arg_where = "";      /* "FILE:LINE: " while a setting of the file is applied */
static bool arg_unix_dirs_replaced;     /* a --unix-dir on the command line replaced the file's */

static void usage(FILE *out) {
        fprintf(out,
                "Usage: brokerd [OPTION]...\n"
                "Bind ports on request, hold them, and hand the same socket back to\n"
                "authorized clients over a Unix control socket.\n\n"
                "      --config FILE             settings, one KEY = VALUE per line for each long\n"
                "                                option below (default %s; none when missing);\n"
                "                                options given here override them\n"
                "  -c, --control PATH            control socket (default %s);\n"
                "                                ignored under systemd socket activation\n"
                "  -d, --db PATH                 SQLite database (default %s)\n"
                "  -g, --admin-group NAME|GID    members may change policy and release any lease\n"
                "  -f, --foreground              do not detach (implied under systemd)\n"
                "      --backlog N               TCP listen backlog (default 4096)\n"
                "      --max-connections N       open control connections (default 256; a sixteenth\n"
                "                                kept for admins; when full, the longest-idle\n"
                "                                connection of a non-admin is closed for a new one)\n"
                "      --max-connections-per-user N  of one uid, a user namespace's uids counted as\n"
                "                                its owner's; admins exempt (default 32)\n"
                "      --idle-timeout SECONDS    close idle control connections (default 10)\n"
                "      --max-connection-age SECONDS  close a control connection this long after it\n"
                "                                was accepted, however busy (default 600)\n"
                "      --max-leases-per-user N   leases one uid may own (default 64)\n"
                "      --max-leases N            leases in all (default 4096; under systemd, keep\n"
                "                                the unit's FileDescriptorStoreMax= as large)\n"
                "      --guard-dir DIR           where the bind guard's programs stay pinned while\n"
                "                                brokerd is away, on bpffs (default %s)\n"
                "      --guard-cgroup DIR        cgroup v2 directory whose processes the guard covers\n"
                "                                (default: the root of the cgroup v2 hierarchy)\n"
                "      --no-guard                no bind guard: a leased port is kept from others\n"
                "                                only while its socket is open somewhere\n"
                "      --policy-dir DIR          rules files (*.conf) read at start and at reload\n"
                "                                (default %s; /dev/null: none)\n"
                "      --unix-dir DIR            a directory Unix-domain leases (unix:DIR/NAME) may be\n"
                "                                made in, owned by brokerd's user or root and writable\n"
                "                                by nobody else, no symlink on its path (repeatable;\n"
                "                                default: none, no Unix leases)\n"
                "      --audit-max-age DURATION  keep audit events this long: 90d, 12h, 1h30m, ...\n"
                "                                (default %ud; 0 or infinity: no limit)\n"
                "      --audit-max-rows N        keep at most the N newest audit events (default\n"
                "                                %u; 0: no limit); both pruned when idle\n"
                "  -u, --user NAME|UID           the worker's user, which reads clients' messages and\n"
                "                                keeps the database, when brokerd runs as root\n"
                "                                (default %s); otherwise brokerd's own\n"
                "      --log-level LEVEL         least urgent priority logged: err, warning, notice,\n"
                "                                info (default) or debug (every grant), or 0-7\n"
                "      --check                   check the arguments and that the database can be\n"
                "                                used, then exit (a re-exec runs this first)\n"
                "  -h, --help                    show this help\n"
                "  -V, --version                 show the version\n\n"
                "Admins are root, brokerd's own uid and members of --admin-group.\n"
                "See brokerd(8) and portctl(1).\n",
                CONFIG_DEFAULT_PATH, BROKER_DEFAULT_CONTROL, BROKER_DEFAULT_DB, GUARD_DEFAULT_DIR,
                POLICYDIR_DEFAULT, STORE_EVENTS_MAX_AGE / 86400, STORE_EVENTS_KEEP, SANDBOX_DEFAULT_USER);
}

static int parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *ret) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

/* Says what is wrong with an option or setting (arg_where names the
 * file's line). Returns -1 (a usage error: exit 2). */
static int __attribute__((format(printf, 1, 2))) option_error(const char *fmt, ...) {
        va_list ap;

        fprintf(stderr, "brokerd: %s", arg_where);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, arg_where[0] ? "\n" : "\nTry 'brokerd --help'.\n");
        return -1;
}

static int parse_group(const char *s) {
        unsigned gid;
        struct group *gr;

        if (parse_unsigned(s, 0, UINT_MAX - 1, &gid) == 0) {
                arg_opt.admin_group.gid = gid;
        } else {
                gr = getgrnam(s);
                if (!gr)
                        return -ENOENT;
                arg_opt.admin_group.gid = gr->gr_gid;
        }
        arg_opt.admin_group.set = true;
        arg_opt.admin_group.name = s;
        return 0;
}

/* The numeric options: --NAME N with N in [min, max]. */
static const struct number_option {
        const char *name;
        unsigned min, max;
        unsigned *value;
} number_options[] = {
        { "backlog", 1, 65535, &arg_opt.backlog },
        { "max-connections", 1, 100000, &arg_opt.max_connections },
        { "max-connections-per-user", 1, 100000, &arg_opt.max_connections_per_user },
        { "idle-timeout", 1, 86400, &arg_opt.idle_timeout_sec },
        { "max-connection-age", 1, 86400, &arg_opt.max_connection_age_sec },
        { "max-leases-per-user", 1, 1000000, &arg_opt.max_leases_per_user },
        { "max-leases", 1, 1000000, &arg_opt.max_leases },
        { "audit-max-rows", 0, 1000000000, &arg_opt.audit_max_rows },
};

#define N_NUMBER_OPTIONS (sizeof(number_options) / sizeof(number_options[0]))
#define ARG_NUMBER 0x100                /* getopt value of number_options[0]; the others follow */

/* Sets numeric option i from text. Returns 0, or -1 after saying why (exit 2). */
static int parse_number_option(size_t i, const char *text) {
        const struct number_option *o = &number_options[i];

        if (parse_unsigned(text, o->min, o->max, o->value) < 0)
                return option_error("invalid number '%s' for --%s (%u to %u)", text, o->name, o->min, o->max);
        return 0;
}

/* Applies option c (getopt's value) with arg. Returns 0 to go on, 1 to exit
 * successfully, -1 on a usage error (said; exit 2). */
static int parse_option(int c, const char *arg) {
        if (c >= ARG_NUMBER && c < ARG_NUMBER + (int) N_NUMBER_OPTIONS)
                return parse_number_option((size_t) (c - ARG_NUMBER), arg);
        switch (c) {
        case 'c':
                arg_opt.control_path = arg;
                return 0;
        case 'd':
                arg_opt.db_path = arg;
                return 0;
        case 'g':
                if (parse_group(arg) < 0)
                        return option_error("--admin-group: no such group '%s'", arg);
                return 0;
        case 'f':
                arg_foreground = 1;
                return 0;
        case 'C':
                arg_check = 1;
                return 0;
        case 'G':
                arg_opt.guard.dir = arg;
                return 0;
        case 'P':
                arg_opt.guard.cgroup = arg;
                return 0;
        case 'N':
                arg_opt.guard.off = true;
                return 0;
        case 'U':
                if (!unix_dir_valid(arg))
                        return option_error("--unix-dir '%s': not an absolute normalized directory path (no "
                                            "trailing '/', '.' or '..'; at most %d bytes with a name)", arg,
                                            PB_UNIX_PATH_MAX);
                if (!arg_where[0] && !arg_unix_dirs_replaced) {    /* the command line's replace the file's */
                        arg_opt.n_unix_dirs = 0;
                        arg_unix_dirs_replaced = true;
                }
                for (size_t i = 0; i < arg_opt.n_unix_dirs; i++)
                        if (strcmp(arg_opt.unix_dirs[i], arg) == 0)
                                return 0;
                if (arg_opt.n_unix_dirs == UNIX_DIRS_MAX)
                        return option_error("at most %d --unix-dir", UNIX_DIRS_MAX);
                arg_opt.unix_dirs[arg_opt.n_unix_dirs++] = arg;
                return 0;
        case 'Y':
                if (arg[0] != '/')
                        return option_error("--policy-dir '%s': not an absolute path", arg);
                arg_opt.policy_dir = strcmp(arg, "/dev/null") == 0 ? NULL : arg;
                return 0;
        case 'u':
                arg_opt.worker_user = arg;
                return 0;
        case 'A':
                if (strcmp(arg, "infinity") == 0)
                        arg_opt.audit_max_age_sec = 0;
                else if (timespan_parse(arg, &arg_opt.audit_max_age_sec) < 0)
                        return option_error("invalid duration '%s' for --audit-max-age (e.g. 90d, 12h, 1h30m; "
                                            "0 or infinity: no limit)", arg);
                return 0;
        case 'W':
                arg_worker = 1;
                return 0;
        case 'l':
                arg_log_level = log_parse_level(arg);
                if (arg_log_level < 0)
                        return option_error("invalid --log-level '%s' (err, warning, notice, info, debug or 0-7)",
                                            arg);
                return 0;
        case 'F':                       /* read before the others: see parse_argv() */
                return 0;
        case 'h':
                usage(stdout);
                return 1;
        case 'V':
                printf("brokerd %s\n", PB_VERSION);
                return 1;
        default:
                fprintf(stderr, "Try 'brokerd --help'.\n");
                return -1;
        }
}

/* The long options, the numeric ones among them (init_options()). */
#define N_OTHER_OPTIONS 16              /* the ones listed here */
static struct option options[N_OTHER_OPTIONS + N_NUMBER_OPTIONS + 2] = {
        { "control", required_argument, NULL, 'c' },
        { "db", required_argument, NULL, 'd' },
        { "admin-group", required_argument, NULL, 'g' },
        { "foreground", no_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { "log-level", required_argument, NULL, 'l' },
        { "check", no_argument, NULL, 'C' },
        { "guard-dir", required_argument, NULL, 'G' },
        { "guard-cgroup", required_argument, NULL, 'P' },
        { "no-guard", no_argument, NULL, 'N' },
        { "user", required_argument, NULL, 'u' },
        { "worker", no_argument, NULL, 'W' },
        { "unix-dir", required_argument, NULL, 'U' },
        { "config", required_argument, NULL, 'F' },
        { "policy-dir", required_argument, NULL, 'Y' },
        { "audit-max-age", required_argument, NULL, 'A' },
};

static void init_options(void) {
        for (size_t i = 0; i < N_NUMBER_OPTIONS; i++)
                options[N_OTHER_OPTIONS + i] = (struct option) { number_options[i].name, required_argument, NULL,
                                                                ARG_NUMBER + (int) i };
        options[N_OTHER_OPTIONS + N_NUMBER_OPTIONS] = (struct option) { "version", no_argument, NULL, 'V' };
}

/* Options that are no settings: what to do now, not how to run. */
static bool command_line_only(int c) {
        return c == 'h' || c == 'V' || c == 'C' || c == 'W' || c == 'F' || c == 'f';
}

/* One setting of the configuration file: a long option's name and its
 * value (yes or no for one that takes none). Each but unix-dir once. */
static int apply_setting(const char *key, const char *value, unsigned line, void *userdata) {
        static unsigned seen[sizeof(options) / sizeof(options[0])];
        static char where[PATH_MAX + 32];
        int r;

        for (size_t i = 0; options[i].name; i++) {
                if (strcmp(options[i].name, key) != 0)
                        continue;
                snprintf(where, sizeof(where), "%s:%u: ", arg_config, line);
                arg_where = where;
                if (command_line_only(options[i].val))
                        r = option_error("%s is a command-line option, not a setting", key);
                else if (seen[i] && options[i].val != 'U')
                        r = option_error("%s given twice (line %u too)", key, seen[i]);
                else if (options[i].has_arg == no_argument && (!strcmp(value, "no") || !strcmp(value, "false")))
                        r = 0;
                else if (options[i].has_arg == no_argument && strcmp(value, "yes") && strcmp(value, "true"))
                        r = option_error("%s takes yes or no, not '%s'", key, value);
                else
                        r = parse_option(options[i].val, value);
                seen[i] = line;
                arg_where = "";
                return r;
        }
        fprintf(stderr, "brokerd: %s:%u: unknown setting '%s' (see brokerd --help)\n", arg_config, line, key);
        return -1;
}

/* --config FILE (or the default) from the command line, before anything
 * else is read: the file's settings come first, the options override them.
 * Returns whether to read it (not for --help or --version). */
static bool find_config(int argc, char **argv) {
        bool read = true;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0)
                        break;
                if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || !strcmp(argv[i], "--version") ||
                    !strcmp(argv[i], "-V"))
                        read = false;           /* help needs no settings, and a broken file is no reason */
                if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
                        arg_config = argv[++i];
                        arg_config_given = true;
                } else if (strncmp(argv[i], "--config=", 9) == 0) {
                        arg_config = argv[i] + 9;
                        arg_config_given = true;
                }
        }
        return read;
}

/* Returns 0 to go on, 1 to exit successfully, -1 on a usage error (exit 2). */
static int parse_argv(int argc, char **argv) {
        int c, r;

        init_options();
        if (find_config(argc, argv) && config_read(arg_config, arg_config_given, apply_setting, NULL) < 0)
                return -1;
        while ((c = getopt_long(argc, argv, "c:d:g:fhu:V", options, NULL)) >= 0) {
                r = parse_option(c, optarg);
                if (r != 0)
                        return r;
        }
        if (optind < argc) {
                fprintf(stderr, "brokerd: unexpected argument '%s'\nTry 'brokerd --help'.\n", argv[optind]);
                return -1;
        }
        if (arg_opt.control_path[0] != '/' || arg_opt.db_path[0] != '/' ||
            (arg_opt.guard.dir && arg_opt.guard.dir[0] != '/') ||
            (arg_opt.guard.cgroup && arg_opt.guard.cgroup[0] != '/')) {
                fprintf(stderr, "brokerd: --control, --db, --guard-dir and --guard-cgroup need absolute paths\n");
                return -1;
        }
        return 0;
}

/* Forks; the parent waits for the child's ready byte and exits. Returns the
 * write end of the pipe in the child. */
static int detach(void) {
        int pipefd[2], devnull;
        char byte;
        pid_t pid;

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid > 0) {
                safe_close(pipefd[1]);
                _exit(read(pipefd[0], &byte, 1) == 1 ? EXIT_SUCCESS : EXIT_FAILURE);
        }
        safe_close(pipefd[0]);
        setsid();
        if (chdir("/") < 0)
                return -errno;
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull >= 0) {
                dup2(devnull, STDIN_FILENO);
                dup2(devnull, STDOUT_FILENO);
                safe_close(devnull);
        }
        /* stderr stays the terminal until ready, so start-up errors are seen. */
        return pipefd[1];
}

static bool stderr_is_devnull(void) {
        struct stat a, b;

        return fstat(STDERR_FILENO, &a) == 0 && stat("/dev/null", &b) == 0 && S_ISCHR(a.st_mode) &&
               a.st_rdev == b.st_rdev;
}

/* brokerd --worker: the unprivileged half, started by the monitor with
 * its channels at PRIVSEP_WORKER_REQ_FD and PRIVSEP_WORKER_EV_FD and every
 * privilege dropped already; it seals itself before anything else. */
static int worker_main(void) {
        struct broker *b = NULL;
        int r;

        if (stderr_is_devnull())
                log_setup_detached();
        r = sandbox_enter();
        if (r < 0) {
                log_msg(LOG_ERR, "cannot confine the worker: %s", strerror(-r));
                return EXIT_FAILURE;
        }
        if (sd_is_socket_unix(PRIVSEP_WORKER_REQ_FD, SOCK_SEQPACKET, 0, NULL, 0) <= 0 ||
            sd_is_socket_unix(PRIVSEP_WORKER_EV_FD, SOCK_SEQPACKET, 0, NULL, 0) <= 0) {
                log_msg(LOG_ERR, "--worker is brokerd's own: it runs only as started by brokerd");
                return EXIT_FAILURE;
        }
        r = broker_new(&arg_opt, PRIVSEP_WORKER_REQ_FD, PRIVSEP_WORKER_EV_FD, &b);
        if (r >= 0)
                r = broker_run(b);
        broker_free(b);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char **argv) {
        static char exe_path[PATH_MAX];
        struct monitor *m = NULL;
        struct rlimit rl;
        int r, ready_fd = -1;

        r = parse_argv(argc, argv);
        if (r != 0)
                return r > 0 ? EXIT_SUCCESS : 2;
        if (arg_check) {
                char err[256] = "";

                /* As the monitor runs it (no privilege left): confined like the worker. */
                (void) sandbox_enter();
                r = store_check(arg_opt.db_path, err, sizeof(err));
                if (r < 0)
                        fprintf(stderr, "brokerd: cannot use database %s: %s\n", arg_opt.db_path, err);
                else
                        r = unix_dirs_check(arg_opt.unix_dirs, arg_opt.n_unix_dirs);    /* says why */
                if (r >= 0)
                        r = policydir_check(arg_opt.policy_dir, geteuid());               /* says why */
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        }

        umask(0077);
        log_setup();
        if (arg_log_level >= 0)
                log_set_max_level(arg_log_level);
        /* A re-exec runs what was started at this path, upgraded or not. */
        if (!realpath("/proc/self/exe", exe_path)) {
                fprintf(stderr, "brokerd: cannot read /proc/self/exe: %s\n", strerror(errno));
                return EXIT_FAILURE;
        }
        arg_opt.exe_path = exe_path;
        arg_opt.argv = argv;
        if (arg_worker)
                return worker_main();

        /* Every lease is an fd: use the whole hard limit (the worker inherits it). */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (getenv(REEXEC_FDS_ENV) && stderr_is_devnull())
                log_setup_detached();   /* an image that had detached, executed again */
        else if (!arg_foreground && !getenv("NOTIFY_SOCKET") && !getenv("LISTEN_FDS")) {
                ready_fd = detach();
                if (ready_fd < 0) {
                        fprintf(stderr, "brokerd: cannot detach: %s\n", strerror(-ready_fd));
                        return EXIT_FAILURE;
                }
        }

        r = monitor_new(&arg_opt, &m);
        if (r < 0)
                return EXIT_FAILURE;
        r = monitor_run(m, ready_fd);
        monitor_free(m);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
