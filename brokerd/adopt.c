/* SPDX-License-Identifier: MIT */
/*
 * Adoption: a socket that outlived a crashed broker in one of its holders is
 * taken back with pidfd_getfd(), so the port is never free for anyone else
 * to take. Only the lease's own socket (same SO_COOKIE, same endpoint) is
 * adopted. Start-up only: it reads all of /proc.
 */
#include "adopt.h"

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fd-util.h"
#include "lease.h"

#define ADOPT_CANDIDATES 16

/* Inodes of sockets on e's port, in the state a lease's socket has, created by uid. */
static size_t proc_net_inodes(const struct pb_endpoint *e, uid_t uid, unsigned long *inodes) {
        char path[32], line[512];
        bool tcp = e->transport == PB_TCP;
        size_t n = 0;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/net/%s%s", tcp ? "tcp" : "udp", e->family == PB_FAMILY_INET ? "" : "6");
        f = fopen(path, "re");
        if (!f)
                return 0;
        while (n < ADOPT_CANDIDATES && fgets(line, sizeof(line), f)) {
                char local[64];
                unsigned port, state, sock_uid;
                unsigned long inode;
                char *colon;

                /* sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode */
                if (sscanf(line, " %*s %63s %*s %x %*s %*s %*s %u %*s %lu", local, &state, &sock_uid, &inode) != 4)
                        continue;
                colon = strrchr(local, ':');
                if (!colon || sscanf(colon + 1, "%x", &port) != 1)
                        continue;
                /* 0x0A: TCP_LISTEN (a shut-down listener would be 0x07 but is then useless); 0x07: unconnected UDP. */
                if (port == e->port_lo && sock_uid == uid && state == (tcp ? 0x0Au : 0x07u) && inode)
                        inodes[n++] = inode;
        }
        fclose(f);
        return n;
}


/* True when fd is a socket bound exactly to e, of e's transport. */
static bool socket_is(int fd, const struct pb_endpoint *e) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int type = 0, v6only = 0;
        socklen_t tlen = sizeof(type), vlen = sizeof(v6only);

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0 ||
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 ||
            type != (e->transport == PB_TCP ? SOCK_STREAM : SOCK_DGRAM))
                return false;
        if (e->family == PB_FAMILY_INET) {
                const struct sockaddr_in *sin = (const struct sockaddr_in *) &ss;
                return ss.ss_family == AF_INET && ntohs(sin->sin_port) == e->port_lo &&
                       memcmp(&sin->sin_addr, e->addr, 4) == 0;
        }
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) &ss;
        if (ss.ss_family != AF_INET6 || ntohs(sin6->sin6_port) != e->port_lo ||
            memcmp(&sin6->sin6_addr, e->addr, 16) != 0 ||
            getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &vlen) < 0)
                return false;
        return v6only == (e->family == PB_FAMILY_INET6);
}

/* Copies fd number target_fd out of process pid. */
static int steal_fd(pid_t pid, int target_fd) {
        int pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        int fd;

        if (pidfd < 0)
                return -errno;
        fd = (int) syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);      /* arrives close-on-exec */
        fd = fd < 0 ? -errno : fd;
        close(pidfd);
        return fd;
}

int adopt_socket(const struct pb_endpoint *e, uid_t sock_uid, uint64_t cookie, int *ret_fd, pid_t *ret_pid) {
        unsigned long inodes[ADOPT_CANDIDATES];
        size_t n = cookie ? proc_net_inodes(e, sock_uid, inodes) : 0;
        struct dirent *pde;
        int r = -ENOENT;
        DIR *proc;

        if (n == 0)
                return -ENOENT;
        proc = opendir("/proc");
        if (!proc)
                return -errno;
        while (r < 0 && (pde = readdir(proc))) {
                char dir[64], link[64];
                struct dirent *fde;
                pid_t pid = (pid_t) atoi(pde->d_name);
                DIR *fds;

                if (pid <= 0 || pid == getpid())
                        continue;
                snprintf(dir, sizeof(dir), "/proc/%d/fd", (int) pid);
                fds = opendir(dir);
                if (!fds)
                        continue;
                while (r < 0 && (fde = readdir(fds))) {
                        unsigned long ino;
                        ssize_t len = readlinkat(dirfd(fds), fde->d_name, link, sizeof(link) - 1);

                        if (len <= 0)
                                continue;
                        link[len] = '\0';
                        if (sscanf(link, "socket:[%lu]", &ino) != 1)
                                continue;
                        for (size_t i = 0; i < n; i++) {
                                int fd;

                                if (ino != inodes[i])
                                        continue;
                                fd = steal_fd(pid, atoi(fde->d_name));
                                if (fd < 0)
                                        break;
                                if (lease_socket_cookie(fd) != cookie || !socket_is(fd, e)) {
                                        close(fd);
                                        break;
                                }
                                *ret_fd = fd;
                                *ret_pid = pid;
                                r = 0;
                                break;
                        }
                }
                closedir(fds);
        }
        closedir(proc);
        return r;
}
