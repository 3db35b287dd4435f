/* SPDX-License-Identifier: MIT */
/*
 * Paths brokerd keeps state at (its control socket, its database) must be
 * its own: nobody else may have put them there or be able to change them.
 * Each check is made by the process that uses the path, as its own uid.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Creates dir (one level) or checks an existing one: a real directory,
 * owner's or root's, writable by nobody else (sticky or not). Returns 0 or
 * -errno, logged. */
int safepath_private_dir(const char *dir, mode_t mode, uid_t owner);

/* A file brokerd relies on (its database and its -wal and -shm files):
 * absent, or a plain file (or socket) of uid owner that nobody else may
 * write. Returns 0 or -errno, logged naming its owner. */
int safepath_owned_file(const char *path, uid_t owner);

/* The directory part of path into buf. Returns 0 or -ENAMETOOLONG. */
int safepath_parent_dir(const char *path, char *buf, size_t len);
