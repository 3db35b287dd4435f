/* SPDX-License-Identifier: MIT */
/*
 * What brokerd reads of the kernel's settings: this boot's id (socket
 * cookies are unique within a boot) and the backlog listen() really gives.
 */
#pragma once

#include <stddef.h>

/* This boot's id (/proc/sys/kernel/random/boot_id) into buf. Returns 0 or -EIO. */
int kernel_boot_id(char *buf, size_t len);

/* The backlog listen(fd, backlog) gives in our network namespace: the
 * kernel caps it at net.core.somaxconn (what the check before every
 * hand-out compares with). */
unsigned kernel_listen_backlog(unsigned backlog);
