/* SPDX-License-Identifier: MIT */
/*
 * Re-execution (`portctl admin reexec`, `systemctl reload`): brokerd
 * executes its binary again, from the path it was started from, so an
 * upgrade installed there since is what runs, with the same arguments and
 * the same pid. Every socket crosses exec(): the control socket, each
 * lease's socket and every open control connection, listed with their
 * names in a memfd that $PORTBROKER_REEXEC_FDS names (fdstore.c reads it in
 * the new image). No port is unbound and no client refused at any moment:
 * connections queue on the control socket meanwhile.
 *
 * Before the point of no return the binary must accept its arguments and
 * the database (`brokerd ARGS --check`); when it does not, or exec() fails,
 * the old image makes its fds close-on-exec again and goes on serving, and
 * the reply says why. A new image that passes the check and fails later is
 * a crash: under systemd the fd store keeps the sockets, otherwise ports
 * without a live holder are unbound until brokerd is back.
 */
#include "broker-int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "fd-util.h"
#include "pidfd-util.h"

#define CHECK_TIMEOUT_MS 3000           /* for `brokerd --check` to exit: well inside WatchdogSec= */

extern char **environ;

/* Runs `exe ARGS --check` (our arguments; output discarded) and waits for
 * it, bounded. Returns 0 when it exited 0, else -errno with why. */
static int check_binary(const char *exe, char *const *args, char *why, size_t size) {
        size_t n = 0;
        char **argv;
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        sigset_t none;
        struct pollfd pfd = { .events = POLLIN };
        int status = 0, r;
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
        sigemptyset(&none);
        posix_spawnattr_init(&attr);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        r = -posix_spawn(&pid, exe, &actions, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        free(argv);
        if (r < 0) {
                snprintf(why, size, "cannot run %s: %s", exe, strerror(-r));
                return r;
        }
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
                snprintf(why, size, "%s --check failed (%s %d): it would not start with these arguments "
                         "and database", exe,
                         WIFEXITED(status) ? "exit status" : "signal",
                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
                r = -ENOEXEC;
        }
        return r;
}

/* One fd to carry, its name, and for a connection its peer's identity. */
struct carry {
        int fd;
        char name[32];
        const struct peer *peer;        /* connections only */
};

/* Every fd the new image needs, into *ret (free it). Returns the count or -ENOMEM. */
static ssize_t collect(struct broker *b, const struct conn *asker, uint32_t id, struct carry **ret) {
        size_t n = 2 + b->leases.n + b->n_conns, k = 0;
        struct carry *v = calloc(n, sizeof(*v));

        if (!v)
                return -ENOMEM;
        v[k++] = (struct carry) { .fd = b->control_fd, .name = "control" };
        if (b->control_created)
                snprintf(v[0].name, sizeof(v[0].name), "control-created");
        /* The guard's directory, locked: no other brokerd takes it meanwhile. */
        if (b->guard.dir_fd >= 0)
                v[k++] = (struct carry) { .fd = b->guard.dir_fd, .name = GUARD_DIR_FDNAME };
        for (size_t i = 0; i < b->leases.n; i++) {
                const struct lease *l = b->leases.by_id[i];

                if (l->sock_fd >= 0) {
                        v[k].fd = l->sock_fd;
                        snprintf(v[k++].name, sizeof(v[0].name), "lease-%llu", (unsigned long long) l->id);
                }
        }
        for (const struct conn *c = b->conns; c && k < n; c = c->next) {
                v[k].fd = c->sock_fd;
                v[k].peer = &c->peer;
                if (c == asker)
                        snprintf(v[k++].name, sizeof(v[0].name), "reexec-%u", id);
                else
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
static int exec_carrying(struct broker *b, const struct carry *v, size_t n) {
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
                execv(b->opt.exe_path, b->opt.argv);
                r = -errno;
                (void) sd_notify(false, "READY=1");
        }
        unsetenv(REEXEC_FDS_ENV);
        set_cloexec(v, n, true);
        safe_close(list_fd);
        return r;
}

int reexec(struct broker *b, struct conn *c, uint32_t id, struct pb_msg *reply) {
        struct log_fields f = broker_peer_fields(&c->peer, NULL, NULL);
        struct carry *v = NULL;
        char why[PB_TEXT_MAX + 1] = "";
        ssize_t n;
        int r;

        r = check_binary(b->opt.exe_path, b->opt.argv, why, sizeof(why));
        if (r < 0)
                goto fail;
        n = collect(b, c, id, &v);
        if (n < 0) {
                r = (int) n;
                snprintf(why, sizeof(why), "out of memory");
                goto fail;
        }
        log_event(LOG_NOTICE, "reexec", &f, "executing %s again; %zu leases and %u connections carried over",
                  b->opt.exe_path, b->leases.n, b->n_conns);
        broker_audit(b, "reexec", &c->peer, NULL, b->opt.exe_path);
        r = store_flush(b->store);      /* no audit event is lost across exec() */
        if (r < 0) {
                snprintf(why, sizeof(why), "cannot write the audit trail first: %s", strerror(-r));
                goto fail;
        }
        r = exec_carrying(b, v, (size_t) n);
        snprintf(why, sizeof(why), "cannot execute %s: %s", b->opt.exe_path, strerror(-r));
fail:
        free(v);
        log_event(LOG_ERR, "error", &f, "re-execution refused: %s; this brokerd keeps serving", why);
        proto_set_error(reply, id, -r, "%s; brokerd keeps serving", why);
        return r;
}

void reexec_answer(int fd, uint32_t id) {
        struct pb_msg reply = { .hdr = { .type = PB_MSG_REEXEC | PB_MSG_REPLY, .id = id } };

        reply.reexec.pid = (uint32_t) getpid();
        snprintf(reply.reexec.version, sizeof(reply.reexec.version), "%s", PB_VERSION);
        (void) conn_send_fd(fd, &reply, -1);
}
