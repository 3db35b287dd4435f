/* SPDX-License-Identifier: MIT */
/*
 * portctl run and portctl upgrade: servers that bind their own sockets.
 * run gets the named leases first (so a denial is one clear line before the
 * server starts), then execs the server with libportbroker-preload.so, whose
 * bind() hands it brokerd's socket. A program the dynamic loader would not
 * preload into (static, setuid) is refused with the reason. upgrade does the
 * same for a new version while the old one runs: both share the socket's
 * accept queue; once the new one serves (the shim reports its first accept
 * or epoll registration on a brokered socket), a watcher process signals the
 * old one to stop gracefully and waits for it to exit.
 *
 * The steps that print (parse_args, find_preload, check_*, prefetch,
 * setup_environment, prepare, exec_command, start_watcher, watch) return an
 * exit status, 0 to go on; the others return >= 0 / -errno or a bool.
 */
#include <elf.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fd-util.h"
#include "pidfd-util.h"

#define PRELOAD_NAME "libportbroker-preload.so"

struct run_args {
        const char *verb;               /* "run" or "upgrade" */
        char **endpoints;               /* argv slices, not owned */
        size_t n_endpoints;
        char **cmd;
        pid_t old_pid;                  /* upgrade: the server to replace */
        int signal;                     /* upgrade: sent to old_pid */
        unsigned timeout_sec;           /* upgrade: for readiness, then for the old one's exit */
        pid_t new_pid;                  /* upgrade: the server portctl becomes */
};

static const struct {
        const char *name;
        int number;
} signals[] = {
        { "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "TERM", SIGTERM },
        { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "WINCH", SIGWINCH }, { "KILL", SIGKILL },
};

/* A signal by name (QUIT, SIGQUIT) or number. Returns it or -EINVAL. */
static int parse_signal(const char *s) {
        char *end;
        long n;

        if (strncmp(s, "SIG", 3) == 0)
                s += 3;
        for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
                if (strcmp(s, signals[i].name) == 0)
                        return signals[i].number;
        n = strtol(s, &end, 10);
        return *s && !*end && n > 0 && n < NSIG ? (int) n : -EINVAL;
}

static const char *signal_name(int sig) {
        for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
                if (signals[i].number == sig)
                        return signals[i].name;
        return "signal";
}

static int parse_args(const char *verb, int argc, char **argv, struct run_args *a) {
        bool upgrade = strcmp(verb, "upgrade") == 0;

        *a = (struct run_args) { .verb = verb, .signal = SIGQUIT, .timeout_sec = 30 };
        if (arg_json)           /* main took it, before or after the command */
                return cli_usage("%s: --json is not supported: the server's output is its own", verb);
        a->endpoints = argv + 1;
        for (int i = 1; i < argc; i++) {
                const char *opt = argv[i];
                const char *val = i + 1 < argc ? argv[i + 1] : NULL;

                if (strcmp(opt, "--") == 0) {
                        a->cmd = argv + i + 1;
                        break;
                } else if (upgrade && strcmp(opt, "--pid") == 0 && val) {
                        char *end;
                        long pid = strtol(val, &end, 10);
                        if (*end || pid <= 1 || pid > INT_MAX)
                                return cli_usage("upgrade: invalid --pid '%s'", val);
                        a->old_pid = (pid_t) pid;
                        i++;
                } else if (upgrade && strcmp(opt, "--signal") == 0 && val) {
                        a->signal = parse_signal(val);
                        if (a->signal < 0)
                                return cli_usage("upgrade: unknown signal '%s'", val);
                        i++;
                } else if (upgrade && strcmp(opt, "--timeout") == 0 && val) {
                        char *end;
                        unsigned long t = strtoul(val, &end, 10);
                        if (*end || val[0] == '-' || t < 1 || t > 86400)
                                return cli_usage("upgrade: invalid --timeout '%s'", val);
                        a->timeout_sec = (unsigned) t;
                        i++;
                } else if (opt[0] == '-' && opt[1])
                        return cli_usage("%s: unknown option or missing value '%s'", verb, opt);
                else {
                        int r = cli_check_endpoint(opt, false);
                        if (r != 0)
                                return r;
                        /* The shim's list is comma-separated. */
                        if (strchr(opt, ','))
                                return cli_usage("%s: '%s': a path with ',' cannot be handed to the shim", verb, opt);
                        /* Endpoints are compacted to the front of argv. */
                        a->endpoints[a->n_endpoints++] = argv[i];
                }
        }
        if (!a->cmd || !a->cmd[0])
                return cli_usage("%s: no command after '--'", verb);
        if (upgrade && !a->old_pid)
                return cli_usage("upgrade: --pid of the running server is required");
        return 0;
}

/* Where the shim is: $PORTBROKER_PRELOAD, beside portctl (a build tree), or installed. Returns 0 or the exit status. */
static int find_preload(char *buf, size_t size) {
        const char *env = getenv("PORTBROKER_PRELOAD");
        char self[PATH_MAX - 64];      /* room for the name after it */
        ssize_t n;

        if (env && *env) {
                snprintf(buf, size, "%s", env);
                return access(buf, R_OK) == 0 ? 0 : cli_fail(errno, "PORTBROKER_PRELOAD=%s: %m", env);
        }
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = '\0';
                *strrchr(self, '/') = '\0';
                snprintf(buf, size, "%s/%s", self, PRELOAD_NAME);
                if (access(buf, R_OK) == 0)
                        return 0;
        }
        snprintf(buf, size, "%s", PB_PRELOAD_PATH);
        if (access(buf, R_OK) == 0)
                return 0;
        return cli_fail(ENOENT, "cannot find %s (looked beside portctl and at %s; set PORTBROKER_PRELOAD)", PRELOAD_NAME,
                       PB_PRELOAD_PATH);
}

/* The file execvp() would run for name, into buf. Returns 0 or -errno. */
static int resolve_command(const char *name, char *buf, size_t size) {
        const char *path = getenv("PATH");

        if (strchr(name, '/')) {
                snprintf(buf, size, "%s", name);
                return access(buf, X_OK) == 0 ? 0 : -errno;
        }
        for (const char *p = path && *path ? path : "/usr/local/bin:/usr/bin:/bin"; *p;) {
                size_t len = strcspn(p, ":");

                snprintf(buf, size, "%.*s/%s", (int) len, p, name);
                if (access(buf, X_OK) == 0)
                        return 0;
                p += len + (p[len] == ':');
        }
        return -ENOENT;
}

/* True when the 64-bit ELF file has a section named like a Go binary's:
 * Go's runtime makes the bind system call itself, never libc's bind(). */
static bool elf_is_go(int fd, const Elf64_Ehdr *eh) {
        Elf64_Shdr names;
        char name[32];

        if (eh->e_shoff == 0 || eh->e_shstrndx >= eh->e_shnum || eh->e_shnum > 4096 ||
            pread(fd, &names, sizeof(names), (off_t) (eh->e_shoff + (Elf64_Off) eh->e_shstrndx * eh->e_shentsize)) !=
                    (ssize_t) sizeof(names))
                return false;
        for (unsigned i = 0; i < eh->e_shnum; i++) {
                Elf64_Shdr sh;

                if (pread(fd, &sh, sizeof(sh), (off_t) (eh->e_shoff + (Elf64_Off) i * eh->e_shentsize)) !=
                            (ssize_t) sizeof(sh) ||
                    pread(fd, name, sizeof(name), (off_t) (names.sh_offset + sh.sh_name)) <= 0)
                        continue;
                name[sizeof(name) - 1] = '\0';
                if (strcmp(name, ".go.buildinfo") == 0 || strcmp(name, ".note.go.buildid") == 0)
                        return true;
        }
        return false;
}

/* True when the ELF file is built for another word size or machine than this
 * portctl (and so the shim): the loader would skip the shim and run it bare. */
static bool elf_is_foreign(int fd) {
        _cleanup_close_ int self_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        Elf64_Ehdr self, eh;
        bool foreign = false;

        if (self_fd < 0)
                return false;
        if (pread(self_fd, &self, sizeof(self), 0) == (ssize_t) sizeof(self) &&
            pread(fd, &eh, sizeof(eh), 0) == (ssize_t) sizeof(eh) && memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0)
                foreign = eh.e_ident[EI_CLASS] != self.e_ident[EI_CLASS] ||
                          eh.e_ident[EI_DATA] != self.e_ident[EI_DATA] || eh.e_machine != self.e_machine;
        return foreign;
}

/* True when the ELF file asks for a dynamic loader (PT_INTERP). */
static int elf_is_dynamic(int fd, bool *ret, bool *ret_go) {
        Elf64_Ehdr eh;
        unsigned char ident[EI_NIDENT];

        if (pread(fd, ident, sizeof(ident), 0) != (ssize_t) sizeof(ident))
                return -ENOEXEC;
        if (memcmp(ident, ELFMAG, SELFMAG) != 0)
                return -ENOEXEC;
        /* Only ELF files like portctl's own get here (elf_is_foreign). */
        if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t) sizeof(eh))
                return -ENOEXEC;
        *ret_go = elf_is_go(fd, &eh);
        for (unsigned i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;
                if (pread(fd, &ph, sizeof(ph), (off_t) (eh.e_phoff + (Elf64_Off) i * eh.e_phentsize)) !=
                    (ssize_t) sizeof(ph))
                        return -ENOEXEC;
                if (ph.p_type == PT_INTERP) {
                        *ret = true;
                        return 0;
                }
        }
        *ret = false;
        return 0;
}

static int check_preloadable(const char *name, int depth);

/* For a `#!` script (head, n bytes read): checks its interpreter, or the program
 * `#!/usr/bin/env` runs. Returns 0 or EXIT_FAILURE. */
static int check_interpreter(char *head, ssize_t n, int depth) {
        char *interp;

        head[n] = '\0';
        interp = head + 2 + strspn(head + 2, " \t");
        interp[strcspn(interp, " \t\n")] = '\0';
        /* `#!/usr/bin/env python3`: the program is the argument. */
        if (strcmp(interp, "/usr/bin/env") == 0) {
                char *arg = interp + strlen(interp) + 1;
                if (arg < head + n) {
                        arg += strspn(arg, " \t");
                        arg[strcspn(arg, " \t\n")] = '\0';
                        if (*arg)
                                return check_preloadable(arg, depth + 1);
                }
        }
        return check_preloadable(interp, depth + 1);
}

/* Refuses an ELF file (fd, at path) the loader would run without the shim. Returns 0 or EXIT_FAILURE. */
static int check_elf(const char *path, int fd) {
        bool dynamic, go = false;
        int r;

        if (elf_is_foreign(fd))
                return cli_fail(ENOTSUP, "%s is built for another architecture or word size than %s: the loader would "
                                "run it without the shim", path, PRELOAD_NAME);
        r = elf_is_dynamic(fd, &dynamic, &go);
        if (r == 0 && !dynamic)
                return cli_fail(ENOTSUP, "%s is statically linked: LD_PRELOAD cannot reach its bind(); give it its "
                                "socket by socket activation instead (portctl get ENDPOINT -- CMD)", path);
        if (r == 0 && go)
                return cli_fail(ENOTSUP, "%s is a Go program: its runtime makes the bind system call itself, which "
                                "LD_PRELOAD cannot reach; use socket activation (portctl get ENDPOINT -- CMD, "
                                "net.FileListener on fd 3)", path);
        return 0;
}

/* Refuses, with the reason, a program LD_PRELOAD cannot reach. depth: #! levels followed. */
static int check_preloadable(const char *name, int depth) {
        _cleanup_close_ int file_fd = -1;
        char path[PATH_MAX], head[256];
        struct stat st;
        ssize_t n;

        if (resolve_command(name, path, sizeof(path)) < 0)
                return 0;               /* exec reports it */
        file_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (file_fd < 0 || fstat(file_fd, &st) < 0)
                return 0;
        if ((st.st_mode & (S_ISUID | S_ISGID)) && (st.st_uid != geteuid() || st.st_gid != getegid()))
                return cli_fail(ENOTSUP, "%s is setuid or setgid: the dynamic loader ignores LD_PRELOAD for it, so its "
                                "bind() would never reach brokerd", path);
        if (fgetxattr(file_fd, "security.capability", NULL, 0) > 0 && geteuid() != 0)
                return cli_fail(ENOTSUP, "%s has file capabilities: the dynamic loader ignores LD_PRELOAD for it, so its "
                                "bind() would never reach brokerd", path);
        n = pread(file_fd, head, sizeof(head) - 1, 0);
        if (n > 2 && head[0] == '#' && head[1] == '!' && depth < 2)
                return check_interpreter(head, n, depth);
        return check_elf(path, file_fd);
}

/* Whether the caller may get some wildcard of the port that e (the
 * dual-stack wildcard) names: dual-stack, IPv4 or IPv6-only. Returns 0 or
 * the exit status, with brokerd's reason for the dual-stack one. */
static int check_port(pb_conn *c, const struct pb_endpoint *e) {
        struct pb_endpoint v4 = *e, v6 = *e;
        char text[PB_ENDPOINT_STRLEN];
        pb_error err, other;
        int r = pb_conn_check(c, endpoint_format(e, text), &err);

        if (r == 0 || r == -EPROTONOSUPPORT)    /* an older brokerd: the shim's get says it */
                return 0;
        v4.family = PB_FAMILY_INET;
        v6.family = PB_FAMILY_INET6;
        if (pb_conn_check(c, endpoint_format(&v4, text), &other) == 0 ||
            pb_conn_check(c, endpoint_format(&v6, text), &other) == 0)
                return 0;
        return cli_fail_pb(&err);
}

/* Gets each named lease once (creating it), so a denial stops us before the server starts;
 * list gets their canonical texts, comma-separated. A port named as a whole
 * (`8080`, the dual-stack wildcard) is checked, not got: which of its
 * wildcards the server binds (0.0.0.0, [::] IPv6-only, dual-stack [::])
 * decides its lease, and the shim asks for that one then. Returns 0 or the
 * exit status. */
static int prefetch(const struct run_args *a, char *list, size_t size) {
        pb_conn *c = NULL;
        pb_lease lease;
        pb_error err;
        size_t used = 0;
        int r = cli_connect(&c);

        list[0] = '\0';
        for (size_t i = 0; r == 0 && i < a->n_endpoints; i++) {
                struct pb_endpoint e;
                char text[PB_ENDPOINT_STRLEN];
                int lease_fd;

                if (endpoint_parse(a->endpoints[i], &e) == 0 && e.family == PB_FAMILY_ANY) {
                        r = check_port(c, &e);
                        if (r != 0)
                                break;
                        snprintf(lease.endpoint, sizeof(lease.endpoint), "%s", endpoint_format(&e, text));
                } else if ((lease_fd = pb_conn_get(c, a->endpoints[i], 0, &lease, &err)) >= 0)
                        safe_close(lease_fd);
                else {
                        r = cli_fail_pb(&err);
                        break;
                }
                used += (size_t) snprintf(list + used, size - used, "%s%s", used ? "," : "", lease.endpoint);
                if (used >= size)
                        r = cli_fail(E2BIG, "%s: too many endpoints", a->verb);
        }
        pb_disconnect(c);
        return r;
}

static int setup_environment(const struct run_args *a, const char *preload, const char *endpoints) {
        const char *old = getenv("LD_PRELOAD");
        char *value = NULL;

        if (asprintf(&value, "%s%s%s", preload, old && *old ? " " : "", old && *old ? old : "") < 0)
                return cli_fail(ENOMEM, "%m");
        /* Absolute, so a server that changes directory still finds brokerd. */
        char socket_path[PATH_MAX];
        const char *path = arg_socket ? arg_socket : pb_socket_path();
        if (!realpath(path, socket_path))
                snprintf(socket_path, sizeof(socket_path), "%s", path);
        if (setenv("LD_PRELOAD", value, 1) < 0 || setenv("PORTBROKER_PRELOAD_ENDPOINTS", endpoints, 1) < 0 ||
            setenv(PB_SOCKET_ENV, socket_path, 1) < 0) {
                free(value);
                return cli_fail(errno, "cannot set the environment: %m");
        }
        free(value);
        return 0;
}

/* Execs cmd; returns only on failure, with the exit status. */
static int exec_command(char **cmd) {
        execvp(cmd[0], cmd);
        return cli_exec_failed(cmd[0], errno);
}

static int prepare(const struct run_args *a) {
        char preload[PATH_MAX], endpoints[4096];
        int r = find_preload(preload, sizeof(preload));

        if (r == 0)
                r = check_preloadable(a->cmd[0], 0);
        if (r == 0)
                r = prefetch(a, endpoints, sizeof(endpoints));
        if (r == 0)
                r = setup_environment(a, preload, endpoints);
        return r;
}

int cmd_run(int argc, char **argv) {
        struct run_args a;
        int r = parse_args("run", argc, argv, &a);

        if (r == 0)
                r = prepare(&a);
        return r == 0 ? exec_command(a.cmd) : r;
}

/* --- upgrade ----------------------------------------------------------------- */

static bool pidfd_exited(int pidfd, int timeout_ms) {
        struct pollfd p = { .fd = pidfd, .events = POLLIN };
        return poll(&p, 1, timeout_ms) > 0;
}

/* Receives one datagram and the sender's pid from the kernel (SO_PASSCRED). Returns its length or -errno. */
static ssize_t recv_from_pid(int fd, char *buf, size_t size, pid_t *ret_pid) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(struct ucred))];
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = size - 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                             .msg_controllen = sizeof(control.buf) };
        struct cmsghdr *c;
        ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);

        if (n < 0)
                return -errno;
        buf[n] = '\0';
        c = CMSG_FIRSTHDR(&mh);
        if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_CREDENTIALS)
                return -EBADMSG;
        *ret_pid = ((struct ucred *) CMSG_DATA(c))->pid;
        return n;
}

/* True when pid is ancestor or one of its descendants (walking PPid up, bounded). */
static bool is_descendant(pid_t pid, pid_t ancestor) {
        for (int depth = 0; pid > 1 && depth < 64; depth++) {
                char path[64], line[128];
                FILE *f;
                pid_t parent = 0;

                if (pid == ancestor)
                        return true;
                snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
                f = fopen(path, "re");
                if (!f)
                        return false;
                while (fgets(line, sizeof(line), f))
                        if (sscanf(line, "PPid: %d", &parent) == 1)
                                break;
                fclose(f);
                pid = parent;
        }
        return false;
}

/* The watcher: waits for the new server (server_pidfd) to report serving on
 * ready_fd, then signals the old one (old_pidfd) and waits for it to exit.
 * Runs detached from the server (double fork), so it never is its child. */
static int watch(const struct run_args *a, int ready_fd, int server_pidfd, int old_pidfd) {
        struct pollfd p[2] = { { .fd = ready_fd, .events = POLLIN }, { .fd = server_pidfd, .events = POLLIN } };
        char buf[32] = "";
        ssize_t n;
        int r;

        /* Only a report from the new server or a descendant of it counts: the
         * abstract name is visible to all, so the kernel's credentials decide. */
        for (;;) {
                pid_t sender = 0;

                r = poll(p, 2, (int) a->timeout_sec * 1000);
                if (r <= 0 || (p[1].revents & POLLIN) || !(p[0].revents & POLLIN)) {
                        fprintf(stderr, "portctl: upgrade: the new server %s; pid %d left running\n",
                                r > 0 ? "exited before it served" : "did not serve in time", (int) a->old_pid);
                        return EXIT_FAILURE;
                }
                n = recv_from_pid(ready_fd, buf, sizeof(buf), &sender);
                if (n >= 0 && is_descendant(sender, a->new_pid))
                        break;
        }
        if (syscall(SYS_pidfd_send_signal, old_pidfd, a->signal, NULL, 0) < 0) {
                fprintf(stderr, "portctl: upgrade: cannot signal pid %d: %s\n", (int) a->old_pid, strerror(errno));
                return EXIT_FAILURE;
        }
        fprintf(stderr, "portctl: upgrade: pid %d is serving (pid %s accepted first); sent SIG%s to pid %d\n",
                (int) a->new_pid, buf, signal_name(a->signal), (int) a->old_pid);
        if (!pidfd_exited(old_pidfd, (int) a->timeout_sec * 1000)) {
                fprintf(stderr, "portctl: upgrade: pid %d still runs after %u s\n", (int) a->old_pid,
                        a->timeout_sec);
                return EXIT_FAILURE;
        }
        fprintf(stderr, "portctl: upgrade: pid %d exited\n", (int) a->old_pid);
        return 0;
}

/* A socket bound to a fresh abstract name (into name) for the shim's readiness report.
 * Returns it (owned by the caller) or -errno. */
static int ready_socket(char *name, size_t size) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timespec ts;
        socklen_t len;
        int ready_fd;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(name, size, "portbroker-ready-%d-%ld", (int) getpid(), (long) ts.tv_nsec);
        ready_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (ready_fd < 0)
                return -errno;
        len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
        memcpy(sa.sun_path + 1, name, strlen(name));
        if (setsockopt(ready_fd, SOL_SOCKET, SO_PASSCRED, &(int) { 1 }, sizeof(int)) < 0 ||
            bind(ready_fd, (struct sockaddr *) &sa, len) < 0) {
                int r = -errno;
                safe_close(ready_fd);
                return r;
        }
        return ready_fd;
}

/* Forks the watcher (detached by a second fork) for the new server, this process once it
 * execs. Returns 0 or the exit status. */
static int start_watcher(const struct run_args *a, int ready_fd, int self_pid_fd, int old_pid_fd) {
        const int keep[] = { ready_fd, self_pid_fd, old_pid_fd };
        int r = cli_start_watcher(keep, 3);

        if (r == 0)
                _exit(watch(a, ready_fd, self_pid_fd, old_pid_fd));
        if (r < 0)
                return cli_fail(-r, "upgrade: cannot start the watcher: %m; pid %d left running", (int) a->old_pid);
        return 0;
}

/* True when pid ignores sig (SIG_IGN: it would never stop on it), from
 * the SigIgn mask in /proc/PID/status; false when that cannot be read. */
static bool ignores_signal(pid_t pid, int sig) {
        char path[64], line[256];
        unsigned long long mask = 0;
        bool found = false;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        while (f && !found && fgets(line, sizeof(line), f))
                found = sscanf(line, "SigIgn: %llx", &mask) == 1;
        if (f)
                fclose(f);
        return found && sig >= 1 && sig <= 64 && (mask >> (sig - 1) & 1);
}

int cmd_upgrade(int argc, char **argv) {
        _cleanup_close_ int old_pid_fd = -1, self_pid_fd = -1, ready_fd = -1;
        struct run_args a;
        char name[96];
        int r;

        r = parse_args("upgrade", argc, argv, &a);
        if (r != 0)
                return r;
        old_pid_fd = pidfd_open_pid(a.old_pid);
        if (old_pid_fd < 0) {
                return cli_fail(-old_pid_fd, "upgrade: no process %d to replace: %m", (int) a.old_pid);
        }
        /* Say so now, not after the new server started and --timeout ran out. */
        if (ignores_signal(a.old_pid, a.signal))
                return cli_fail(EINVAL, "upgrade: pid %d ignores %s, so it would never stop; name the signal it stops on "
                                "with --signal", (int) a.old_pid, signal_name(a.signal));
        r = prepare(&a);
        if (r != 0)
                return r;
        ready_fd = ready_socket(name, sizeof(name));
        self_pid_fd = pidfd_open_pid(getpid());
        if (ready_fd < 0 || self_pid_fd < 0)
                return cli_fail(ready_fd < 0 ? -ready_fd : -self_pid_fd, "upgrade: cannot set up the watcher: %m");
        if (setenv("PORTBROKER_READY", name, 1) < 0)
                return cli_fail(errno, "upgrade: cannot set the environment: %m");
        a.new_pid = getpid();           /* exec keeps it */

        r = start_watcher(&a, ready_fd, self_pid_fd, old_pid_fd);
        if (r != 0)
                return r;
        ready_fd = safe_close(ready_fd);
        self_pid_fd = safe_close(self_pid_fd);
        old_pid_fd = safe_close(old_pid_fd);
        return exec_command(a.cmd);
}
