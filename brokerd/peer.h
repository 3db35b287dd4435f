/* SPDX-License-Identifier: MIT */
/*
 * Who is on the other end of a control connection, read from the kernel at
 * accept: SO_PEERCRED, SO_PEERPIDFD, the systemd unit of the peer's cgroup
 * path, and whether it shares our user and network namespaces. The
 * supplementary groups (SO_PEERGROUPS) are read on first use: the kernel
 * keeps them as they were at connect(), so reading them later gives the
 * same answer, and a policy without group rules or --admin-group never
 * pays for them. Anything we cannot establish becomes a doubt, and a
 * doubtful peer is denied everything.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PEER_UNIT_MAX 256
#define PEER_GROUPS_MAX 65536

#define PEER_UID_UNKNOWN ((uid_t) -1)  /* uid of a peer whose credentials could not be read */

struct peer {
        pid_t pid;
        uid_t uid;                      /* PEER_UID_UNKNOWN: unidentified (doubt says why) */
        uid_t account;                  /* the uid its connections count under: uid, or for a peer in a
                                         * user namespace below ours, that namespace's owner */
        gid_t gid;
        gid_t *groups;                  /* supplementary groups (SO_PEERGROUPS), owned */
        size_t n_groups;
        bool groups_unread;             /* groups still to be read from conn_fd on first use */
        int conn_fd;                    /* the connection (not owned), for groups_unread */
        char unit[PEER_UNIT_MAX];       /* system unit from the cgroup path, "" if none */
        int pid_fd;                     /* its pidfd (SO_PEERPIDFD), -1 if none */
        const char *doubt;              /* NULL when identity is certain, else why not */
};

/* The broker's own namespaces, compared against each peer's: the texts of
 * the links /proc/self/ns/{user,net}, which name a namespace by its inode. */
#define PEER_NS_MAX 64
struct peer_self {
        char userns[PEER_NS_MAX], netns[PEER_NS_MAX];
        dev_t userns_dev;               /* our user namespace's nsfs inode, to find it among a peer's ancestors */
        ino_t userns_ino;
};

/* Reads the broker's own namespaces. Returns 0 or -errno. */
int peer_self_init(struct peer_self *self);

/* The pidfd of conn_fd's peer (SO_PEERPIDFD, close-on-exec), or -1. */
int peer_pidfd(int conn_fd);

/* Identifies the peer of connected socket conn_fd into *ret; its unit only
 * when want_unit (reading the cgroup costs a third of a hand-off, and only
 * unit rules need it). Returns 0 (check ret->doubt), or -errno when the
 * socket itself fails: *ret is then an unidentified peer (uid and account
 * PEER_UID_UNKNOWN, pid 0) in doubt. Free with peer_done(). */
int peer_identify(int conn_fd, const struct peer_self *self, bool want_unit, struct peer *ret);

/* True when gid is the peer's primary or a supplementary group. Reads the
 * groups on first use (the peer is const to its callers, the groups a
 * cache); when that fails, sets p->doubt and returns false. */
bool peer_in_group(const struct peer *p, gid_t gid);

/* The doubt of ours whose text is text (as another process told it), or a
 * general one: never NULL. */
const char *peer_doubt_of(const char *text);

/* Releases the peer's groups and pidfd. */
void peer_done(struct peer *p);
