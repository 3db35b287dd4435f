/* SPDX-License-Identifier: MIT */
/*
 * Walks over /proc: its pids, and the socket fds of one pid (readlink of
 * /proc/PID/fd/N is `socket:[INODE]` for a socket). See procfd.h for the
 * callback convention. Entries that vanish during the walk (a process that
 * exits, an fd closed) are skipped, not errors.
 */
#include "procfd.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* A decimal entry name (no sign, no leading zero) as a number, or -1. */
static long decimal_name(const char *s) {
        char *end;
        long v;

        if (s[0] < '0' || s[0] > '9' || (s[0] == '0' && s[1]))
                return -1;
        errno = 0;
        v = strtol(s, &end, 10);
        return *end || errno ? -1 : v;
}

int procfd_foreach_process(int (*fn)(pid_t pid, void *userdata), void *userdata) {
        struct dirent *de;
        DIR *proc;
        int r = 0;

        proc = opendir("/proc");
        if (!proc)
                return -errno;
        while (r == 0 && (de = readdir(proc))) {
                long pid = decimal_name(de->d_name);

                if (pid > 0)
                        r = fn((pid_t) pid, userdata);
        }
        closedir(proc);
        return r < 0 ? r : 0;
}

int procfd_foreach_socket(pid_t pid, int (*fn)(int fd, uint64_t inode, void *userdata), void *userdata) {
        struct dirent *de;
        char path[64];
        DIR *fds;
        int r = 0;

        snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        fds = opendir(path);
        if (!fds)
                return -errno;
        while (r == 0 && (de = readdir(fds))) {
                long fd = decimal_name(de->d_name);
                char link[64];
                uint64_t inode;
                ssize_t n;

                if (fd < 0)
                        continue;
                n = readlinkat(dirfd(fds), de->d_name, link, sizeof(link) - 1);
                if (n <= 0)
                        continue;
                link[n] = '\0';
                if (sscanf(link, "socket:[%" SCNu64 "]", &inode) != 1)
                        continue;
                r = fn((int) fd, inode, userdata);
        }
        closedir(fds);
        return r < 0 ? r : 0;
}
