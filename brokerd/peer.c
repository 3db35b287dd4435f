/* SPDX-License-Identifier: MIT */
/*
 * Peer identification from kernel credentials only. SCM_CREDENTIALS are
 * never asked for. The pid from SO_PEERCRED is only trusted together with
 * the pidfd from SO_PEERPIDFD: after reading /proc/PID (namespaces, cgroup)
 * we check through the pidfd that the same process is still alive, so a
 * recycled pid cannot lend its identity. The namespaces are the process's,
 * not its socket's: a socket can be handed to a process elsewhere. Kernels
 * without SO_PEERPIDFD (before 6.5: ENOPROTOOPT) get a pidfd from
 * pidfd_open() checked against the uid; any other failure of SO_PEERPIDFD
 * (EINVAL: a peer already reaped, on 6.5 to 6.15) is doubt, never that
 * fallback: its pid may be another process's by now.
 */
#include "peer.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-login.h>
#include <unistd.h>

#include "fd-util.h"
#include "pidfd-util.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif


/* Every doubt a peer can be in, by what made it; a doubt told by another
 * process is mapped back here (peer_doubt_of()). */
enum {
        DOUBT_CREDENTIALS, DOUBT_PIDFD, DOUBT_PID_NS, DOUBT_NAMESPACES, DOUBT_USERNS, DOUBT_NETNS, DOUBT_CGROUP,
        DOUBT_EXITED, DOUBT_GROUPS, DOUBT_REEXEC, DOUBT_ELSEWHERE,
};
static const char *const doubts[] = {
        [DOUBT_CREDENTIALS] = "cannot read the peer's credentials",
        [DOUBT_PIDFD] = "cannot get a pidfd for the peer",
        [DOUBT_PID_NS] = "the peer's pid is not visible from the broker's pid namespace",
        [DOUBT_NAMESPACES] = "cannot read the peer's namespaces",
        [DOUBT_USERNS] = "the peer is in another user namespace",
        [DOUBT_NETNS] = "the peer is in another network namespace",
        [DOUBT_CGROUP] = "cannot read the peer's cgroup",
        [DOUBT_EXITED] = "the peer exited while being identified",
        [DOUBT_GROUPS] = "cannot read the peer's groups",
        [DOUBT_REEXEC] = "the peer's identity was in doubt before brokerd executed itself again",
        [DOUBT_ELSEWHERE] = "the peer's identity is in doubt",
};

const char *peer_doubt_of(const char *text) {
        for (size_t i = 0; i < sizeof(doubts) / sizeof(doubts[0]); i++)
                if (strcmp(text, doubts[i]) == 0)
                        return doubts[i];
        return doubts[DOUBT_ELSEWHERE];
}

/* The text of the link /proc/PID/ns/NS, such as "net:[4026531840]": it names
 * the namespace by its inode, as a stat() of the link would, at less than
 * half the cost (a stat also looks up the namespace's nsfs file). */
static int ns_link(const char *pid, const char *ns, char *buf, size_t size) {
        char path[64];
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%s/ns/%s", pid, ns);
        n = readlink(path, buf, size);
        if (n < 0)
                return -errno;
        if ((size_t) n >= size)
                return -ENAMETOOLONG;
        buf[n] = '\0';
        return 0;
}

int peer_self_init(struct peer_self *self) {
        struct stat st;
        int r = ns_link("self", "user", self->userns, sizeof(self->userns));

        if (r >= 0)
                r = ns_link("self", "net", self->netns, sizeof(self->netns));
        if (r >= 0 && stat("/proc/self/ns/user", &st) < 0)
                r = -errno;
        if (r >= 0) {
                self->userns_dev = st.st_dev;
                self->userns_ino = st.st_ino;
        }
        return r;
}

/* The deepest nesting of user namespaces the kernel allows. */
#define USERNS_DEPTH_MAX 32

/*
 * The uid a peer in another user namespace counts under: the owner of the
 * namespace just below ours on the way up from the peer's. Every uid of a
 * user's subordinate range (/etc/subuid), however deeply nested, counts as
 * that user. Read by pid: the caller checks afterwards that the pid still
 * names the peer. Returns 0 and *ret, or -errno (-EPERM: the peer's
 * namespace is not below ours).
 */
static int userns_owner_below_us(pid_t pid, const struct peer_self *self, uid_t *ret) {
        char path[64];
        _cleanup_close_ int fd = -1;

        snprintf(path, sizeof(path), "/proc/%d/ns/user", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (int depth = 0; depth < USERNS_DEPTH_MAX; depth++) {
                _cleanup_close_ int parent_fd = ioctl(fd, NS_GET_PARENT);
                struct stat st;

                if (parent_fd < 0 || fstat(parent_fd, &st) < 0)
                        return -errno;
                if (st.st_dev == self->userns_dev && st.st_ino == self->userns_ino)
                        return ioctl(fd, NS_GET_OWNER_UID, ret) < 0 ? -errno : 0;
                safe_close(fd);
                fd = parent_fd;
                parent_fd = -1;
        }
        return -ELOOP;
}

static int read_groups(int fd, struct peer *p) {
        gid_t small[64];
        socklen_t len = sizeof(small);
        gid_t *groups;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, small, &len) == 0) {
                p->n_groups = len / sizeof(gid_t);
                p->groups = malloc(len ? len : 1);
                if (!p->groups)
                        return -ENOMEM;
                memcpy(p->groups, small, len);
                return 0;
        }
        if (errno != ERANGE || len > PEER_GROUPS_MAX * sizeof(gid_t))
                return -errno;
        groups = malloc(len);
        if (!groups)
                return -ENOMEM;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
                free(groups);
                return -errno;
        }
        p->groups = groups;
        p->n_groups = len / sizeof(gid_t);
        return 0;
}

/* A pidfd turns readable when its process exits. (Not kill(0): that needs
 * permission to signal, which a broker without CAP_KILL lacks.) */
static bool pidfd_alive(int pidfd) {
        struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
        return poll(&pfd, 1, 0) == 0;
}

/* Kernels before 6.5 have no SO_PEERPIDFD: open a pidfd for the pid and make
 * sure it is still a process of the peer's uid (a recycled pid of another
 * user is refused; the same user gains nothing by it). */
static int pidfd_for_peer(pid_t pid, uid_t uid, int *ret) {
        char path[64], line[256];
        unsigned real_uid = (unsigned) -1;
        int fd = pidfd_open_pid(pid);
        FILE *f;

        if (fd < 0)
                return fd;
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "Uid: %u", &real_uid) == 1)
                        break;
        if (f)
                fclose(f);
        if (real_uid != uid) {
                safe_close(fd);
                return -ESRCH;
        }
        *ret = fd;
        return 0;
}

/* Why the peer's namespaces are not ours, or NULL when they are; a peer in
 * a user namespace below ours gets that namespace's owner as its account.
 * Read from /proc/PID: the caller checks afterwards that pid still names
 * the peer. */
static const char *namespaces_doubt(struct peer *p, const struct peer_self *self) {
        char pid[16], userns[PEER_NS_MAX], netns[PEER_NS_MAX];

        snprintf(pid, sizeof(pid), "%d", (int) p->pid);
        if (ns_link(pid, "user", userns, sizeof(userns)) < 0 || ns_link(pid, "net", netns, sizeof(netns)) < 0)
                return doubts[DOUBT_NAMESPACES];
        if (strcmp(userns, self->userns) != 0) {
                (void) userns_owner_below_us(p->pid, self, &p->account);   /* else: its uid as we see it */
                return doubts[DOUBT_USERNS];
        }
        if (strcmp(netns, self->netns) != 0)
                return doubts[DOUBT_NETNS];
        return NULL;
}

int peer_pidfd(int conn_fd) {
        int fd;
        socklen_t len = sizeof(fd);

        return getsockopt(conn_fd, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) < 0 ? -1 : fd;
}

int peer_identify(int conn_fd, const struct peer_self *self, bool want_unit, struct peer *ret) {
        struct peer p = { .pid_fd = -1 };
        struct ucred cred;
        socklen_t len = sizeof(cred);
        char *unit = NULL;
        int r;

        if (getsockopt(conn_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                r = -errno;
                *ret = (struct peer) { .uid = PEER_UID_UNKNOWN, .account = PEER_UID_UNKNOWN,
                                       .gid = (gid_t) -1, .pid_fd = -1, .conn_fd = conn_fd,
                                       .doubt = doubts[DOUBT_CREDENTIALS] };
                return r;
        }
        p.pid = cred.pid;
        p.uid = cred.uid;
        p.account = cred.uid;
        p.gid = cred.gid;

        len = sizeof(p.pid_fd);
        if (getsockopt(conn_fd, SOL_SOCKET, SO_PEERPIDFD, &p.pid_fd, &len) < 0) {
                p.pid_fd = -1;
                if (errno != ENOPROTOOPT || p.pid <= 0 ||
                    pidfd_for_peer(p.pid, p.uid, &p.pid_fd) < 0)
                        p.doubt = doubts[DOUBT_PIDFD];
        }
        p.groups_unread = true;         /* read by peer_in_group() when a rule asks */
        p.conn_fd = conn_fd;

        if (p.pid <= 0 && !p.doubt)
                p.doubt = doubts[DOUBT_PID_NS];
        if (!p.doubt)
                p.doubt = namespaces_doubt(&p, self);
        if (!p.doubt && want_unit) {
                /* The unit comes from the cgroup path; -ENODATA: not in a system unit. */
                r = sd_pid_get_unit(p.pid, &unit);
                if (r >= 0)
                        snprintf(p.unit, sizeof(p.unit), "%s", unit);
                free(unit);
                if (r < 0 && r != -ENODATA && r != -ENOENT && r != -ENXIO)
                        p.doubt = doubts[DOUBT_CGROUP];
        }
        /* What was read by pid belongs to the peer only if it is still alive. */
        if (!p.doubt && !pidfd_alive(p.pid_fd))
                p.doubt = doubts[DOUBT_EXITED];

        *ret = p;
        return 0;
}

bool peer_in_group(const struct peer *p, gid_t gid) {
        if (p->gid == gid)
                return true;
        if (p->groups_unread) {
                struct peer *mp = (struct peer *) p;      /* filling the cache */

                mp->groups_unread = false;
                if (read_groups(p->conn_fd, mp) < 0) {
                        mp->doubt = doubts[DOUBT_GROUPS];
                        return false;
                }
        }
        for (size_t i = 0; i < p->n_groups; i++)
                if (p->groups[i] == gid)
                        return true;
        return false;
}

void peer_done(struct peer *p) {
        free(p->groups);
        p->groups = NULL;
        p->n_groups = 0;
        p->groups_unread = false;
        p->pid_fd = safe_close(p->pid_fd);
}
