/* SPDX-License-Identifier: MIT */
/*
 * Kernel settings brokerd reads (see kernel.h).
 */
#include "kernel.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int kernel_boot_id(char *buf, size_t len) {
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
        int r = f && fgets(buf, (int) len, f) ? 0 : -EIO;

        if (f)
                fclose(f);
        buf[strcspn(buf, "\n")] = '\0';
        return r;
}

unsigned kernel_listen_backlog(unsigned backlog) {
        FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
        unsigned max = 0;

        if (f) {
                if (fscanf(f, "%u", &max) != 1)
                        max = 0;
                fclose(f);
        }
        return max && max < backlog ? max : backlog;
}
