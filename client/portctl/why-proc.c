/* SPDX-License-Identifier: MIT */
/*
 * portctl why: the processes behind the sockets, from /proc. Which pids
 * hold a socket inode (common/procfd.c's scan of /proc/PID/fd), what each
 * one is (stat, comm, cmdline, status, cgroup and its systemd unit), whether
 * a holder inherited its listener from a server that is gone, and the
 * SO_REUSEADDR / SO_REUSEPORT of a holder's copy (pidfd_getfd, needs
 * ptrace rights).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "cli.h"
#include "fd-util.h"
#include "pidfd-util.h"
#include "procfd.h"
#include "why.h"

ssize_t why_read_file(const char *path, char *buf, size_t size) {
        _cleanup_close_ int file_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        ssize_t n;

        if (file_fd < 0)
                return -errno;
        n = read(file_fd, buf, size - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        return n;
}

static bool wanted_inode(const struct why *w, uint32_t inode) {
        for (size_t i = 0; i < w->nsocks; i++)
                if (w->socks[i].inode == inode && inode != 0)
                        return true;
        return false;
}

struct scan {
        struct why *w;
        pid_t pid;                      /* the process being scanned */
};

static int add_holder(int fd, uint64_t inode, void *userdata) {
        struct scan *s = userdata;
        struct why *w = s->w;
        struct why_holder *holders;

        if (!wanted_inode(w, (uint32_t) inode))
                return 0;
        holders = grow(w->holders, w->nholders, &w->aholders, sizeof(*holders));
        if (!holders)
                return -ENOMEM;
        w->holders = holders;
        w->holders[w->nholders++] = (struct why_holder) { .inode = (uint32_t) inode, .pid = s->pid, .fd = fd };
        return 0;
}

static int scan_process(pid_t pid, void *userdata) {
        struct scan s = { .w = userdata, .pid = pid };
        int r = procfd_foreach_socket(pid, add_holder, &s);

        if (r == -EACCES || r == -EPERM)
                s.w->unreadable++;
        return r == -ENOMEM ? r : 0;
}

int why_scan_holders(struct why *w) {
        return procfd_foreach_process(scan_process, w);
}

static bool holds(const struct why *w, pid_t pid, uint32_t inode) {
        for (size_t i = 0; i < w->nholders; i++)
                if (w->holders[i].pid == pid && w->holders[i].inode == inode)
                        return true;
        return false;
}

/* The systemd unit a cgroup path names, as sd_pid_get_unit() finds it: the first
 * component below the slices that is a service or scope. */
static void unit_of_cgroup(const char *cg, char *unit, size_t size) {
        const char *p = cg;

        unit[0] = '\0';
        while (*p) {
                const char *end;
                size_t n;

                while (*p == '/')
                        p++;
                end = strchrnul(p, '/');
                n = (size_t) (end - p);
                if ((n > 8 && memcmp(end - 8, ".service", 8) == 0) || (n > 6 && memcmp(end - 6, ".scope", 6) == 0)) {
                        snprintf(unit, size, "%.*s", (int) n, p);
                        return;
                }
                if (!(n > 6 && memcmp(end - 6, ".slice", 6) == 0))
                        return;
                p = end;
        }
}

int why_proc_info(pid_t pid, struct why_proc *ret) {
        char path[64], buf[1024], *p;
        struct why_proc pi = { .pid = pid, .ppid = -1, .pgid = -1, .uid = (uid_t) -1 };
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        if (why_read_file(path, buf, sizeof(buf)) < 0)
                return -ESRCH;
        p = strrchr(buf, ')');
        if (p) {
                int ppid, pgid;
                if (sscanf(p + 1, " %*c %d %d", &ppid, &pgid) == 2) {
                        pi.ppid = ppid;
                        pi.pgid = pgid;
                }
        }
        snprintf(path, sizeof(path), "/proc/%d/comm", (int) pid);
        if (why_read_file(path, pi.comm, sizeof(pi.comm)) < 0)
                snprintf(pi.comm, sizeof(pi.comm), "?");
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
        n = why_read_file(path, pi.cmd, sizeof(pi.cmd));
        if (n > 0) {
                for (ssize_t i = 0; i < n; i++)
                        if (pi.cmd[i] == '\0')
                                pi.cmd[i] = ' ';
                        else if ((unsigned char) pi.cmd[i] < 0x20 || (unsigned char) pi.cmd[i] >= 0x7f)
                                pi.cmd[i] = '?';
                while (n > 0 && pi.cmd[n - 1] == ' ')
                        pi.cmd[--n] = '\0';
        }
        if (n <= 0)
                snprintf(pi.cmd, sizeof(pi.cmd), "[%s]", pi.comm);
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        if (why_read_file(path, buf, sizeof(buf)) > 0 && (p = strstr(buf, "\nUid:"))) {
                unsigned ruid, euid;
                if (sscanf(p + 5, "%u %u", &ruid, &euid) == 2)
                        pi.uid = euid;
        }
        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int) pid);
        if (why_read_file(path, buf, sizeof(buf)) > 0 && (p = strstr(buf, "0::"))) {
                char *nl = strchr(p, '\n');
                if (nl)
                        *nl = '\0';
                snprintf(pi.cgroup, sizeof(pi.cgroup), "%s", p + 3);
                unit_of_cgroup(pi.cgroup, pi.unit, sizeof(pi.unit));
        }
        *ret = pi;
        return 0;
}

/* From /proc/PID/fdinfo. */
int why_fd_cloexec(pid_t pid, int fd) {
        char path[64], buf[512], *p;

        snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int) pid, fd);
        if (why_read_file(path, buf, sizeof(buf)) < 0 || !(p = strstr(buf, "flags:")))
                return -1;
        return (strtoul(p + 6, NULL, 8) & O_CLOEXEC) != 0;
}

/* SO_REUSEADDR and SO_REUSEPORT of fd in pid, through pidfd_getfd (needs ptrace rights). Returns 0 or -errno. */
static int holder_reuse(pid_t pid, int fd, int *ret_addr, int *ret_port) {
        _cleanup_close_ int sock_fd = pidfd_copy_fd_of_pid(pid, fd);
        socklen_t len = sizeof(int);
        int a = 0, p = 0;

        if (sock_fd < 0)
                return sock_fd;
        if (getsockopt(sock_fd, SOL_SOCKET, SO_REUSEADDR, &a, &len) < 0)
                return -errno;
        len = sizeof(int);
        if (getsockopt(sock_fd, SOL_SOCKET, SO_REUSEPORT, &p, &len) < 0)
                return -errno;
        *ret_addr = a;
        *ret_port = p;
        return 0;
}

size_t why_describe_holders(struct why *w, uint32_t inode, const char *what) {
        size_t n = 0;

        for (size_t i = 0; i < w->nholders; i++) {
                const struct why_holder *h = &w->holders[i];
                struct why_proc pi;
                char who[96], opts[96] = "";
                int ra = 0, rp = 0;

                if (h->inode != inode)
                        continue;
                if (n++ >= WHY_MAX_LIST)
                        continue;
                if (why_proc_info(h->pid, &pi) < 0)
                        continue;
                user_text(pi.uid, who, sizeof(who));
                if (holder_reuse(h->pid, h->fd, &ra, &rp) == 0)
                        snprintf(opts, sizeof(opts), ", SO_REUSEADDR=%d SO_REUSEPORT=%d", ra, rp);
                why_evidence(w, "%s: pid %d (%s) fd %d, %s, %s%s%s", what, (int) pi.pid, pi.cmd, h->fd, who,
                         pi.unit[0] ? "unit " : "cgroup ", pi.unit[0] ? pi.unit : pi.cgroup[0] ? pi.cgroup : "?",
                         opts);
        }
        if (n > WHY_MAX_LIST)
                why_evidence(w, "... and %zu more processes", n - WHY_MAX_LIST);
        return n;
}

bool why_all_inherited(const struct why *w, uint32_t inode) {
        size_t n = 0;

        for (size_t i = 0; i < w->nholders; i++) {
                struct why_proc pi;

                if (w->holders[i].inode != inode)
                        continue;
                n++;
                if (why_proc_info(w->holders[i].pid, &pi) < 0)
                        return false;
                /* Not a group leader, its group's leader has exited, and its parent does not hold the socket. */
                if (pi.pgid == pi.pid || pi.pgid <= 0 || kill(pi.pgid, 0) == 0 || errno != ESRCH ||
                    holds(w, pi.ppid, inode))
                        return false;
        }
        return n > 0;
}
