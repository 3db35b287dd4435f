/* SPDX-License-Identifier: MIT */
/*
 * Lease sockets and the lease table. Each bind sets every option it relies
 * on explicitly. A TCP listener whose holder called shutdown() drops out of
 * LISTEN (SO_ACCEPTCONN becomes 0) but keeps its port, because it was bound
 * explicitly; listen() again brings it back with the same accept queue.
 * A socket that outlived a crashed broker in a holder is adopted back with
 * pidfd_getfd(), so the port is never free for anyone else to take.
 */
#include "lease.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TOMBSTONE ((struct lease *) 1)

static int setopt_int(int fd, int level, int name, int value) {
        return setsockopt(fd, level, name, &value, sizeof(value)) < 0 ? -errno : 0;
}

int lease_bind(const struct pb_endpoint *e, unsigned backlog, int *ret_fd) {
        bool tcp = e->transport == PB_TCP;
        struct sockaddr_storage ss = { 0 };
        socklen_t sslen;
        int fd, r;

        if (e->family == PB_FAMILY_INET) {
                struct sockaddr_in *sin = (struct sockaddr_in *) &ss;
                sin->sin_family = AF_INET;
                sin->sin_port = htons(e->port_lo);
                memcpy(&sin->sin_addr, e->addr, 4);
                sslen = sizeof(*sin);
        } else {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;
                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons(e->port_lo);
                memcpy(&sin6->sin6_addr, e->addr, 16);
                sslen = sizeof(*sin6);
        }

        fd = socket(ss.ss_family, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;

        /* TCP: bind over TIME_WAIT left by earlier listeners. UDP: nothing, so
         * no other socket can share the port (SO_REUSEADDR would let it). */
        r = tcp ? setopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) : 0;
        if (r >= 0 && ss.ss_family == AF_INET6)
                r = setopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, e->family == PB_FAMILY_INET6);
        if (r >= 0 && bind(fd, (struct sockaddr *) &ss, sslen) < 0)
                r = -errno;
        if (r >= 0 && tcp && listen(fd, (int) backlog) < 0)
                r = -errno;
        if (r < 0) {
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

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

uint64_t lease_socket_cookie(int fd) {
        uint64_t cookie = 0;
        socklen_t len = sizeof(cookie);

        if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0)
                return 0;
        return cookie;
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

int lease_adopt(const struct pb_endpoint *e, uid_t sock_uid, uint64_t cookie, int *ret_fd, pid_t *ret_pid) {
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

int lease_ensure_listening(struct lease *l) {
        int listening = 0;
        socklen_t len = sizeof(listening);

        if (l->sock_fd < 0)
                return 0;
        /* Undo what a holder may have set on the shared socket that would let
         * others share the port: SO_REUSEPORT ever, SO_REUSEADDR on UDP. */
        if (setopt_int(l->sock_fd, SOL_SOCKET, SO_REUSEPORT, 0) < 0 ||
            (l->endpoint.transport == PB_UDP && setopt_int(l->sock_fd, SOL_SOCKET, SO_REUSEADDR, 0) < 0))
                return -errno;
        if (l->endpoint.transport != PB_TCP)
                return 0;
        if (getsockopt(l->sock_fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
                return -errno;
        if (listening)
                return 0;
        return listen(l->sock_fd, (int) l->backlog) < 0 ? -errno : 1;
}

int lease_queued(const struct lease *l) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);

        if (l->sock_fd < 0 || l->endpoint.transport != PB_TCP)
                return -1;
        /* On a listener, tcpi_unacked is the accept queue's length. */
        if (getsockopt(l->sock_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
                return -1;
        return (int) ti.tcpi_unacked;
}

void lease_init(struct lease *l) {
        *l = (struct lease) { .sock_fd = -1 };
        for (unsigned i = 0; i < LEASE_HOLDERS_MAX; i++)
                l->holders[i].pidfd = -1;
}

void lease_close_socket(struct lease *l) {
        if (l->sock_fd >= 0)
                close(l->sock_fd);
        l->sock_fd = -1;
}

/* FNV-1a over the endpoint's wire form. */
static size_t endpoint_hash(const struct pb_endpoint *e) {
        uint8_t wire[PB_ENDPOINT_WIRE_SIZE];
        uint64_t h = 1469598103934665603ULL;

        endpoint_encode(e, wire);
        for (size_t i = 0; i < sizeof(wire); i++)
                h = (h ^ wire[i]) * 1099511628211ULL;
        return (size_t) h;
}

static int table_grow(struct lease_table *t) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct lease **slots;

        /* Rehash when live entries pass half; tombstones alone do not grow it. */
        if (t->cap && t->n * 2 < t->cap)
                cap = t->cap;
        slots = calloc(cap, sizeof(*slots));
        if (!slots)
                return -ENOMEM;
        for (size_t i = 0; i < t->cap; i++) {
                struct lease *l = t->slots[i];
                size_t j;

                if (!l || l == TOMBSTONE)
                        continue;
                for (j = endpoint_hash(&l->endpoint) & (cap - 1); slots[j]; j = (j + 1) & (cap - 1))
                        ;
                slots[j] = l;
        }
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
        t->used = t->n;
        return 0;
}

int lease_table_add(struct lease_table *t, struct lease *l) {
        size_t j;
        int r;

        if (lease_table_find(t, &l->endpoint))
                return -EEXIST;
        if ((t->used + 1) * 4 > t->cap * 3) {
                r = table_grow(t);
                if (r < 0)
                        return r;
        }
        if (t->n == t->by_id_cap) {
                size_t cap = t->by_id_cap ? t->by_id_cap * 2 : 64;
                struct lease **by_id = realloc(t->by_id, cap * sizeof(*by_id));

                if (!by_id)
                        return -ENOMEM;
                t->by_id = by_id;
                t->by_id_cap = cap;
        }

        for (j = endpoint_hash(&l->endpoint) & (t->cap - 1); t->slots[j] && t->slots[j] != TOMBSTONE;
             j = (j + 1) & (t->cap - 1))
                ;
        if (!t->slots[j])
                t->used++;
        t->slots[j] = l;

        /* Ids only grow, so this is nearly always an append. */
        j = lease_table_after(t, l->id);
        memmove(&t->by_id[j + 1], &t->by_id[j], (t->n - j) * sizeof(*t->by_id));
        t->by_id[j] = l;
        t->n++;
        return 0;
}

static size_t find_slot(const struct lease_table *t, const struct pb_endpoint *e, bool *ret_found) {
        size_t j = t->cap ? endpoint_hash(e) & (t->cap - 1) : 0;

        *ret_found = false;
        if (!t->cap)
                return 0;
        for (; t->slots[j]; j = (j + 1) & (t->cap - 1))
                if (t->slots[j] != TOMBSTONE && endpoint_equal(&t->slots[j]->endpoint, e)) {
                        *ret_found = true;
                        break;
                }
        return j;
}

struct lease *lease_table_find(const struct lease_table *t, const struct pb_endpoint *e) {
        bool found;
        size_t j = find_slot(t, e, &found);

        return found ? t->slots[j] : NULL;
}

size_t lease_table_after(const struct lease_table *t, uint64_t after_id) {
        size_t lo = 0, hi = t->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (t->by_id[mid]->id <= after_id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

void lease_table_remove(struct lease_table *t, struct lease *l) {
        bool found;
        size_t j = find_slot(t, &l->endpoint, &found);

        if (!found || t->slots[j] != l)
                return;
        t->slots[j] = TOMBSTONE;
        j = lease_table_after(t, l->id - 1);
        if (j < t->n && t->by_id[j] == l) {
                memmove(&t->by_id[j], &t->by_id[j + 1], (t->n - j - 1) * sizeof(*t->by_id));
                t->n--;
        }
}

size_t lease_table_count_owner(const struct lease_table *t, uid_t uid) {
        size_t n = 0;

        for (size_t i = 0; i < t->n; i++)
                if (t->by_id[i]->owner_uid == uid)
                        n++;
        return n;
}

void lease_table_done(struct lease_table *t) {
        free(t->slots);
        free(t->by_id);
        *t = (struct lease_table) { 0 };
}
