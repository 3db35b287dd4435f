/* SPDX-License-Identifier: MIT */
/*
 * Sockets that outlive the broker's process. Under systemd every bound
 * lease's socket is also in the service manager's fd store (FDSTORE=1,
 * FDNAME=lease-ID, FDPOLL=0), so no crash, watchdog kill or restart of
 * brokerd closes a port: the next brokerd finds the sockets in LISTEN_FDS,
 * named, beside the control socket, and takes them back before READY=1.
 * fdstore_take() reads what was passed; load_lease() claims each lease's
 * socket by id; what nobody claims is closed and removed from the store.
 * A re-exec passes its sockets by the same protocol.
 */
#include "broker-int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "fd-util.h"

#define LEASE_FDNAME_PREFIX "lease-"

/* The lease id an fd name stands for, or 0 when it names no lease. */
static uint64_t lease_id_of_name(const char *name) {
        const char *digits = name + strlen(LEASE_FDNAME_PREFIX);
        char *end;
        uint64_t id;

        if (strncmp(name, LEASE_FDNAME_PREFIX, strlen(LEASE_FDNAME_PREFIX)) != 0 || *digits < '1' || *digits > '9')
                return 0;
        errno = 0;
        id = strtoull(digits, &end, 10);
        return errno || *end ? 0 : id;
}

static void fdname_of_lease(uint64_t id, char *buf, size_t size) {
        snprintf(buf, size, LEASE_FDNAME_PREFIX "%" PRIu64, id);
}

/* Tells the service manager to forget every fd named name. */
static void store_remove_name(const struct broker *b, const char *name) {
        if (b->fdstore)
                (void) sd_notifyf(false, "FDSTOREREMOVE=1\nFDNAME=%s", name);
}

static int keep_lease_fd(struct broker *b, uint64_t id, int fd) {
        struct fdstore_entry *v = reallocarray(b->inherited, b->n_inherited + 1, sizeof(*v));

        if (!v)
                return -ENOMEM;
        b->inherited = v;
        v[b->n_inherited++] = (struct fdstore_entry) { .lease_id = id, .fd = fd };
        return 0;
}

/* Sorts one passed fd: a lease's socket is kept for fdstore_claim(), the
 * first other one is the control socket (control.c checks it), anything
 * else is closed and dropped from the store. Consumes fd. */
static int sort_fd(struct broker *b, int fd, const char *name) {
        uint64_t id = lease_id_of_name(name);

        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                int r = -errno;

                safe_close(fd);
                return r;
        }
        if (id > 0) {
                int r = keep_lease_fd(b, id, fd);

                if (r < 0)
                        safe_close(fd);
                return r;
        }
        if (b->control_fd < 0) {
                b->control_fd = fd;
                return 0;
        }
        log_msg(LOG_WARNING, "closing the unexpected file descriptor \"%s\" that was passed at start", name);
        safe_close(fd);
        store_remove_name(b, name);
        return 0;
}

/* Whether a service manager keeps fds for us: $FDSTORE says how many
 * (systemd 254 and later); before that, a systemd service is told by
 * $INVOCATION_ID beside $NOTIFY_SOCKET, and its unit sets
 * FileDescriptorStoreMax=. */
static bool fdstore_enabled(void) {
        const char *max = getenv("FDSTORE");

        if (max)
                return *max && strcmp(max, "0") != 0;
        return getenv("NOTIFY_SOCKET") && getenv("INVOCATION_ID");
}

int fdstore_take(struct broker *b) {
        char **names = NULL;
        int n, r = 0;

        b->fdstore = fdstore_enabled();
        n = sd_listen_fds_with_names(true, &names);
        if (n < 0) {
                log_msg(LOG_ERR, "cannot read the sockets passed at start: %s", strerror(-n));
                return n;
        }
        for (int i = 0; i < n; i++) {
                int k = sort_fd(b, SD_LISTEN_FDS_START + i, names && names[i] ? names[i] : "unknown");

                if (k < 0 && r == 0)
                        r = k;
        }
        for (int i = 0; names && names[i]; i++)
                free(names[i]);
        free(names);
        if (r < 0)
                log_msg(LOG_ERR, "cannot keep the sockets passed at start: %s", strerror(-r));
        if (b->n_inherited > 0)
                log_msg(LOG_INFO, "%zu lease sockets were passed at start", b->n_inherited);
        return r;
}

int fdstore_claim(struct broker *b, uint64_t lease_id) {
        for (size_t i = 0; i < b->n_inherited; i++) {
                struct fdstore_entry *x = &b->inherited[i];

                if (x->lease_id == lease_id && x->fd >= 0) {
                        int fd = x->fd;

                        x->fd = -1;
                        return fd;
                }
        }
        return -1;
}

void fdstore_drop_unclaimed(struct broker *b) {
        char name[32];

        for (size_t i = 0; i < b->n_inherited; i++) {
                struct fdstore_entry *x = &b->inherited[i];

                if (x->fd < 0)
                        continue;
                fdname_of_lease(x->lease_id, name, sizeof(name));
                log_msg(LOG_NOTICE, "closing the passed socket \"%s\": no such lease (released meanwhile)", name);
                x->fd = safe_close(x->fd);
                store_remove_name(b, name);
        }
        fdstore_done(b);
}

void fdstore_done(struct broker *b) {
        for (size_t i = 0; i < b->n_inherited; i++)
                safe_close(b->inherited[i].fd);
        free(b->inherited);
        b->inherited = NULL;
        b->n_inherited = 0;
}

int fdstore_add(struct broker *b, const struct lease *l) {
        char msg[96];
        int r;

        if (!b->fdstore || l->sock_fd < 0)
                return 0;
        /* FDPOLL=0: a listener that a holder shut down reports POLLHUP, and
         * the store would drop it while brokerd repairs it. */
        snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=" LEASE_FDNAME_PREFIX "%" PRIu64 "\nFDPOLL=0", l->id);
        r = sd_pid_notify_with_fds(0, false, msg, &l->sock_fd, 1);
        return r < 0 ? r : 0;
}

void fdstore_remove(struct broker *b, uint64_t lease_id) {
        char name[32];

        fdname_of_lease(lease_id, name, sizeof(name));
        store_remove_name(b, name);
}
