/* SPDX-License-Identifier: MIT */
/*
 * The directories Unix-domain leases live in (--unix-dir): the only places
 * brokerd makes socket files, each a file brokerd created for one lease's
 * owner. A directory is opened once at start without following a symlink
 * anywhere in its path, and checked, with every directory above it: none
 * may be writable by anyone but root and brokerd's uid (sticky directories
 * may, when what they hold on the way is root's or brokerd's), so nobody
 * else can swap a name on the path between our check and a bind(). Every
 * file is made and removed by one name directly in such a directory; a
 * file there that brokerd did not make (its device and inode recorded with
 * the lease) is never replaced nor removed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "endpoint.h"
#include "lease.h"

#define UNIX_DIRS_MAX 16

struct unix_dirs {
        size_t n;
        struct unix_dir {
                const char *path;       /* absolute, normalized, no trailing '/' */
                int fd;                 /* O_PATH handle, opened by unix_dirs_open() */
        } dirs[UNIX_DIRS_MAX];
};

/* Whether dir is an absolute normalized directory path --unix-dir takes. */
bool unix_dir_valid(const char *dir);

/* The index in dirs (n of them) of the directory that holds Unix endpoint
 * e directly (`/run/app/x.sock` in `/run/app`), or -1. */
int unix_dirs_find(const char *const *dirs, size_t n, const struct pb_endpoint *e);

/* Creates (one level, 0755) or checks each of the n paths, and opens it.
 * Returns 0 or -errno, logged naming the directory. */
int unix_dirs_open(struct unix_dirs *d, const char *const *paths, size_t n);

void unix_dirs_close(struct unix_dirs *d);

/* What unix_dirs_open() would refuse, without making or keeping anything
 * (a directory still to be made is fine): brokerd --check. Returns 0 or
 * -errno, logged. */
int unix_dirs_check(const char *const *paths, size_t n);

/* Makes a listening socket for Unix endpoint e in its directory, after
 * checking that the directory's path still leads to the directory opened
 * at start: bound with umask 0177, then given ux's mode, owner and group
 * (gid UINT32_MAX: brokerd's), listen(backlog). A file already at the path
 * is removed first only when it is the socket file ux records (ux->file)
 * and either this monitor made it (ux->made) or nothing listens on it any
 * more; any other is -EEXIST. On success ux->file names the new file and
 * ux->made is set. Returns 0 and *ret_fd (CLOEXEC), or -errno (-EACCES:
 * not in one of d's directories; -ESTALE: the path leads elsewhere now). */
int unix_bind(const struct unix_dirs *d, const struct pb_endpoint *e, unsigned backlog, struct lease_unix *ux,
              int *ret_fd);

/* Removes the socket file of e when it is still the one ux records and
 * this monitor made it (ux->made). */
void unix_unlink(const struct unix_dirs *d, const struct pb_endpoint *e, const struct lease_unix *ux);
