/* SPDX-License-Identifier: MIT */
/*
 * Adoption: a socket that outlived a crashed broker in one of its holders is
 * taken back with pidfd_getfd(), so the port is never free for anyone else
 * to take. Only the lease's own socket (same SO_COOKIE, same endpoint) is
 * adopted. Start-up only: it reads all of /proc.
 */
#include "adopt.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd-util.h"
#include "lease.h"
#include "pidfd-util.h"
#include "procfd.h"
#include "sockaddr.h"
#include "sockopt.h"

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


/* True when fd is a socket bound exactly to e, of e's transport and family
 * (IPV6_V6ONLY included). */
static bool socket_is(int fd, const struct pb_endpoint *e) {
        struct sockaddr_storage want, got;
        socklen_t want_len, got_len = sizeof(got);
        int type = 0, v6only = 0;
        socklen_t tlen = sizeof(type), vlen = sizeof(v6only);

        if (sockaddr_from_endpoint(e, &want, &want_len) < 0 ||
            getsockname(fd, (struct sockaddr *) &got, &got_len) < 0 || got_len != want_len ||
            memcmp(&got, &want, want_len) != 0 ||
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 ||
            type != (e->transport == PB_TCP ? SOCK_STREAM : SOCK_DGRAM))
                return false;
        if (got.ss_family != AF_INET6)
                return true;
        return getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &vlen) == 0 &&
               v6only == (e->family == PB_FAMILY_INET6);
}

/* What the walk over /proc looks for, and what it found. */
struct adopt_search {
        const struct pb_endpoint *endpoint;
        uint64_t cookie;                /* SO_COOKIE of the lease's socket */
        unsigned long inodes[ADOPT_CANDIDATES]; /* candidates from /proc/net */
        size_t n_inodes;
        pid_t pid;                      /* the process being scanned */
        int found_fd;                   /* the copy taken back, -1 until found */
};

/* For each socket of the process: a candidate inode is copied out and kept
 * only when it is the lease's own socket. Returns 1 (stop) when found. */
static int on_socket(int fd, uint64_t inode, void *userdata) {
        struct adopt_search *a = userdata;
        int copy_fd;

        for (size_t i = 0; i < a->n_inodes; i++) {
                if (inode != a->inodes[i])
                        continue;
                copy_fd = pidfd_copy_fd_of_pid(a->pid, fd);     /* arrives close-on-exec */
                if (copy_fd < 0)
                        return 0;
                if (socket_cookie(copy_fd) != a->cookie || !socket_is(copy_fd, a->endpoint)) {
                        safe_close(copy_fd);
                        return 0;
                }
                a->found_fd = copy_fd;
                return 1;
        }
        return 0;
}

static int on_process(pid_t pid, void *userdata) {
        struct adopt_search *a = userdata;

        if (pid == getpid())
                return 0;
        a->pid = pid;
        (void) procfd_foreach_socket(pid, on_socket, a);       /* a process we cannot read is skipped */
        return a->found_fd >= 0;
}

int adopt_socket(const struct pb_endpoint *e, uid_t sock_uid, uint64_t cookie, int *ret_fd, pid_t *ret_pid) {
        struct adopt_search a = { .endpoint = e, .cookie = cookie, .found_fd = -1 };
        int r;

        if (!cookie)
                return -ENOENT;
        a.n_inodes = proc_net_inodes(e, sock_uid, a.inodes);
        if (a.n_inodes == 0)
                return -ENOENT;
        r = procfd_foreach_process(on_process, &a);
        if (r < 0)
                return r;
        if (a.found_fd < 0)
                return -ENOENT;
        *ret_fd = a.found_fd;
        *ret_pid = a.pid;
        return 0;
}
