/* SPDX-License-Identifier: MIT */
/*
 * Re-execution (`portctl admin reexec`, `systemctl reload`): the monitor
 * executes brokerd's binary again, from the path it was started from, so
 * an upgrade installed there since is what runs, with the same arguments
 * and the same pid; the new image starts a new worker. Every socket
 * crosses exec(): the control socket, each lease's socket, the guard's
 * locked directory and every open control connection (the worker hands
 * them over with PS_CARRY before it exits), listed with their names in a
 * memfd that $PORTBROKER_REEXEC_FDS names (fdstore.c reads it in the new
 * image). No port is unbound and no client refused at any moment:
 * connections queue on the control socket meanwhile.
 *
 * Before the point of no return the binary must accept its arguments and
 * the database (`brokerd ARGS --check`, run as the worker runs: its uid,
 * no privilege); when it does not, the worker answers why and goes on
 * serving. When exec() itself fails, the monitor starts a new worker and
 * the reply says why. A new image that passes the check and fails later is
 * a crash: under systemd the fd store keeps the sockets, otherwise ports
 * without a live holder are unbound until brokerd is back.
 */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "fd-util.h"
#include "pidfd-util.h"
#include "sandbox.h"

#define CHECK_TIMEOUT_MS 3000           /* for `brokerd --check` to exit: well inside WatchdogSec= */
#define CHECK_SAYS_MAX 512              /* of what `brokerd --check` says, read to tell why it failed */

/* In the child: `exe ARGS --check` with no privilege, its standard error
 * into say_fd (a pipe: why it would not start) and its output discarded;
 * why execv() failed, if it does, goes to err_fd. Never returns. */
static void __attribute__((noreturn)) check_exec(const struct monitor *m, char **argv, int err_fd, int say_fd) {
        sigset_t none;
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC), e;

        err_fd = fcntl(err_fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
        if (devnull < 0 || err_fd < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(devnull, STDOUT_FILENO) < 0 ||
            dup2(say_fd, STDERR_FILENO) < 0 || setsid() < 0)
                _exit(127);
        close_range(err_fd + 1, ~0U, 0);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        sandbox_sanitizer_env();
        e = -sandbox_drop(m->worker_uid, m->worker_gid);
        if (e == 0) {
                execv(m->opt.exe_path, argv);
                e = errno;
        }
        (void) !write(err_fd, &e, sizeof(e));
        _exit(127);
}

/* The last line of what the check said on say_fd (at most CHECK_SAYS_MAX
 * bytes read, nothing waited for), without "brokerd: " and with control
 * characters made '?', into buf; "" when it said nothing. */
static void check_said(int say_fd, char *buf, size_t size) {
        char text[CHECK_SAYS_MAX + 1], *line, *end;
        ssize_t n = read(say_fd, text, CHECK_SAYS_MAX);

        buf[0] = '\0';
        if (n <= 0)
                return;
        text[n] = '\0';
        for (end = text + strlen(text); end > text && (end[-1] == '\n' || end[-1] == '\r'); end--)
                *(end - 1) = '\0';
        line = strrchr(text, '\n');
        line = line ? line + 1 : text;
        if (strncmp(line, "brokerd: ", 9) == 0)
                line += 9;
        for (char *p = line; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = '?';
        snprintf(buf, size, "%s", line);
}

int reexec_check(struct monitor *m, char *why, size_t size) {
        const char *exe = m->opt.exe_path;
        char *const *args = m->opt.argv;
        struct pollfd pfd = { .events = POLLIN };
        size_t n = 0;
        char **argv;
        int status = 0, r = 0, pipefd[2], saypipe[2] = { -1, -1 }, e = 0;
        char said[CHECK_SAYS_MAX + 1];
        pid_t pid;

        while (args[n])
                n++;
        argv = calloc(n + 2, sizeof(*argv));
        if (!argv) {
                snprintf(why, size, "out of memory");
                return -ENOMEM;
        }
        argv[0] = (char *) exe;
        for (size_t i = 1; i < n; i++)
                argv[i] = args[i];
        argv[n > 0 ? n : 1] = (char *) "--check";
        if (pipe2(pipefd, O_CLOEXEC) < 0 || pipe2(saypipe, O_CLOEXEC | O_NONBLOCK) < 0) {
                r = -errno;
                free(argv);
                safe_close(pipefd[0]);
                safe_close(pipefd[1]);
                snprintf(why, size, "cannot run %s: %s", exe, strerror(-r));
                return r;
        }
        pid = fork();
        if (pid == 0)
                check_exec(m, argv, pipefd[1], saypipe[1]);
        free(argv);
        safe_close(pipefd[1]);
        safe_close(saypipe[1]);
        if (pid < 0) {
                r = -errno;
                safe_close(pipefd[0]);
                safe_close(saypipe[0]);
                snprintf(why, size, "cannot run %s: %s", exe, strerror(-r));
                return r;
        }
        /* EOF once it executed; an errno when it could not. */
        if (read(pipefd[0], &e, sizeof(e)) == sizeof(e) && e > 0) {
                safe_close(pipefd[0]);
                safe_close(saypipe[0]);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                        ;
                snprintf(why, size, "cannot run %s: %s", exe, strerror(e));
                return -e;
        }
        safe_close(pipefd[0]);
        pfd.fd = pidfd_open_pid(pid);
        if (pfd.fd < 0 || poll(&pfd, 1, CHECK_TIMEOUT_MS) == 0) {
                kill(pid, SIGKILL);
                snprintf(why, size, "%s --check did not exit within %d s", exe, CHECK_TIMEOUT_MS / 1000);
                r = -ETIMEDOUT;
        }
        safe_close(pfd.fd);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (r == 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
                check_said(saypipe[0], said, sizeof(said));
                snprintf(why, size, "%s --check failed (%s %d): %s", exe,
                         WIFEXITED(status) ? "exit status" : "signal",
                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                         said[0] ? said : "it would not start with these arguments and database");
                r = -ENOEXEC;
        }
        safe_close(saypipe[0]);
        return r;
}

/* One fd to carry, its name, and for a connection its peer's identity. */
struct carry {
        int fd;
        char name[32];
        const struct peer *peer;        /* connections only */
};

/* Every fd the new image needs, into *ret (free it). Returns the count or -ENOMEM. */
static ssize_t collect(struct monitor *m, struct carry **ret) {
        size_t n = 2 + m->leases.n + m->n_carried + m->n_pending, k = 0;
        struct carry *v = calloc(n, sizeof(*v));

        if (!v)
                return -ENOMEM;
        v[k++] = (struct carry) { .fd = m->control_fd, .name = "control" };
        if (m->control_created)
                snprintf(v[0].name, sizeof(v[0].name), "control-created");
        /* The guard's directory, locked: no other brokerd takes it meanwhile. */
        if (m->guard.dir_fd >= 0)
                v[k++] = (struct carry) { .fd = m->guard.dir_fd, .name = GUARD_DIR_FDNAME };
        for (size_t i = 0; i < m->leases.n; i++) {
                const struct lease *l = m->leases.by_id[i];

                if (l->sock_fd >= 0) {
                        v[k].fd = l->sock_fd;
                        snprintf(v[k++].name, sizeof(v[0].name), "lease-%llu", (unsigned long long) l->id);
                }
        }
        for (size_t i = 0; i < m->n_carried && k < n; i++) {
                const struct carried_conn *x = &m->carried[i];

                v[k].fd = x->fd;
                v[k].peer = &x->peer;
                if (x->reexec_id)
                        snprintf(v[k++].name, sizeof(v[0].name), "reexec-%u", x->reexec_id);
                else
                        snprintf(v[k++].name, sizeof(v[0].name), "conn");
        }
        /* Accepted, not yet passed to the worker: they go too. */
        for (size_t i = 0; i < m->n_pending && k < n; i++) {
                v[k].fd = m->pending[i].fd;
                v[k].peer = &m->pending[i].peer;
                snprintf(v[k++].name, sizeof(v[0].name), "conn");
        }
        *ret = v;
        return (ssize_t) k;
}

/* The memfd listing v, left without close-on-exec. Returns its fd or -errno. */
static int write_list(const struct carry *v, size_t n) {
        _cleanup_close_ int fd = memfd_create("portbroker-reexec", MFD_CLOEXEC);
        FILE *f;
        int dup_fd, r = 0;

        if (fd < 0)
                return -errno;
        dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        f = dup_fd >= 0 ? fdopen(dup_fd, "we") : NULL;
        if (!f) {
                safe_close(dup_fd);
                return -ENOMEM;
        }
        /* A connection keeps the identity read when it was accepted: its
         * process may be gone by now, and its pid another's. */
        for (size_t i = 0; i < n; i++) {
                const struct peer *p = v[i].peer;

                fprintf(f, "%d %s", v[i].fd, v[i].name);
                if (p)
                        fprintf(f, " %u %u %d %d %s %u", (unsigned) p->uid, (unsigned) p->gid, (int) p->pid,
                                p->doubt != NULL, p->unit[0] ? p->unit : "-", (unsigned) p->account);
                fputc('\n', f);
        }
        if (fclose(f) != 0)
                r = -errno;
        if (r == 0 && (lseek(fd, 0, SEEK_SET) < 0 || fcntl(fd, F_SETFD, 0) < 0))
                r = -errno;
        if (r < 0)
                return r;
        r = fd;
        fd = -1;
        return r;
}

static void set_cloexec(const struct carry *v, size_t n, bool on) {
        for (size_t i = 0; i < n; i++)
                (void) fcntl(v[i].fd, F_SETFD, on ? FD_CLOEXEC : 0);
}

/* The point of no return, unless exec() fails: returns -errno then, with
 * everything as it was. */
static int exec_carrying(struct monitor *m, const struct carry *v, size_t n) {
        char list_fd_text[16];
        int list_fd = write_list(v, n), r;

        if (list_fd < 0)
                return list_fd;
        snprintf(list_fd_text, sizeof(list_fd_text), "%d", list_fd);
        set_cloexec(v, n, false);
        if (setenv(REEXEC_FDS_ENV, list_fd_text, 1) < 0)
                r = -errno;
        else {
                (void) sd_notify(false, "RELOADING=1\nSTATUS=re-executing");
                execv(m->opt.exe_path, m->opt.argv);
                r = -errno;
                (void) sd_notify(false, "READY=1");
        }
        unsetenv(REEXEC_FDS_ENV);
        set_cloexec(v, n, true);
        safe_close(list_fd);
        return r;
}

int reexec(struct monitor *m) {
        struct carry *v = NULL;
        ssize_t n = collect(m, &v);
        int r;

        if (n < 0)
                return (int) n;
        r = exec_carrying(m, v, (size_t) n);
        free(v);
        return r;
}
