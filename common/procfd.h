/* SPDX-License-Identifier: MIT */
/*
 * Processes and the sockets they hold, from /proc: a walk over the pids in
 * /proc and a scan of one process's /proc/PID/fd yielding (fd, socket inode)
 * for each socket. The inode is what sock_diag and /proc/net/{tcp,udp}*
 * report, so these find who holds a socket seen there (portctl why's holder
 * list; the daemon's adoption of a socket that outlived it).
 *
 * Callbacks return 0 to go on, > 0 to stop the walk (the walk then returns
 * 0), or -errno to stop it with that error (the walk returns it).
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

/* Calls fn for each process directory in /proc. Returns 0, fn's -errno, or -errno of opening /proc. */
int procfd_foreach_process(int (*fn)(pid_t pid, void *userdata), void *userdata);

/* Calls fn(fd, inode) for each socket among pid's open fds. Returns 0, fn's -errno, or -errno of
 * opening /proc/PID/fd (-EACCES/-EPERM: not ours to read; -ENOENT: pid is gone). */
int procfd_foreach_socket(pid_t pid, int (*fn)(int fd, uint64_t inode, void *userdata), void *userdata);
