/* SPDX-License-Identifier: MIT */
/*
 * portctl why: probe binds. A throwaway socket like the endpoint's is bound
 * (never listening, closed at once) plain, with SO_REUSEADDR and with
 * SO_REUSEPORT, as the user whose bind() is in question: in a child that
 * drops to that uid when we are root, else as ourselves (and said so).
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "fd-util.h"
#include "sockaddr.h"
#include "cli.h"
#include "why.h"

const char *why_errno_name(int e) {
        return e == 0 ? "ok" : errno_name(e);
}

/* Binds (never listens) a throwaway socket like the endpoint's with option opt set, closes it.
 * Returns 0 or -errno of the socket, setsockopt or bind call. */
static int probe_bind(const struct pb_endpoint *e, int opt) {
        _cleanup_close_ int probe_fd = socket_for_endpoint(e);
        struct sockaddr_storage ss;
        socklen_t len;
        int one = 1, r;

        if (probe_fd < 0)
                return probe_fd;
        if (opt && setsockopt(probe_fd, SOL_SOCKET, opt, &one, sizeof(one)) < 0)
                return -errno;
        r = sockaddr_from_endpoint(e, &ss, &len);
        if (r < 0)
                return r;
        if (bind(probe_fd, (struct sockaddr *) &ss, len) < 0)
                return -errno;
        return 0;
}

static const int probe_opts[3] = { 0, SO_REUSEADDR, SO_REUSEPORT };

/* Runs probe i in a child as w->uid. Returns bind's errno (positive, 0 ok) or -1 when the
 * child could not run it. */
static int probe_as_user(const struct why *w, int i) {
        int status;
        pid_t pid;

        fflush(stdout);
        pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setresgid(w->gid, w->gid, w->gid) < 0 ||
                    setresuid(w->uid, w->uid, w->uid) < 0)
                        _exit(255);
                _exit(-probe_bind(&w->ep, probe_opts[i]) & 0xff);
        }
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (WIFEXITED(status) && WEXITSTATUS(status) != 255)
                return WEXITSTATUS(status);
        return -1;
}

void why_run_probes(struct why *w) {
        for (int i = 0; i < 3; i++)
                w->probe[i] = -1;
        if (w->uid != geteuid() && geteuid() == 0) {
                for (int i = 0; i < 3; i++)
                        w->probe[i] = probe_as_user(w, i);
                w->probe_as_user = w->probe[0] >= 0;
                if (w->probe_as_user)
                        return;
        }
        for (int i = 0; i < 3; i++)
                w->probe[i] = -probe_bind(&w->ep, probe_opts[i]);
        w->probe_as_user = w->uid == geteuid();
}
