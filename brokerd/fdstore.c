/* SPDX-License-Identifier: MIT */
/*
 * Sockets that outlive the broker's process. Under systemd every bound
 * lease's socket is also in the service manager's fd store (FDSTORE=1,
 * FDNAME=lease-ID, FDPOLL=0), so no crash, watchdog kill or restart of
 * brokerd closes a port: the next brokerd finds the sockets in LISTEN_FDS,
 * named, beside the control socket, and takes them back before READY=1.
 * fdstore_take() reads what was passed; load_lease() claims each lease's
 * socket by id; what nobody claims is closed and removed from the store.
 * A re-exec (reexec.c) passes its sockets with the same names, listed in a
 * memfd, and its open control connections too ("conn", and "reexec-ID"
 * for the one that asked, which the new image's worker answers once it is
 * ready). The monitor's: it alone talks to systemd.
 */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "fd-util.h"

#define LEASE_FDNAME_PREFIX "lease-"
#define CONN_FDNAME "conn"
#define REEXEC_FDNAME_PREFIX "reexec-"
#define REEXEC_LIST_MAX (16u << 20)     /* bytes of fd list a re-exec may pass */

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
static void store_remove_name(const struct monitor *m, const char *name) {
        if (m->fdstore)
                (void) sd_notifyf(false, "FDSTOREREMOVE=1\nFDNAME=%s", name);
}

static int keep_lease_fd(struct monitor *m, uint64_t id, int fd) {
        struct fdstore_entry *v = reallocarray(m->inherited, m->n_inherited + 1, sizeof(*v));

        if (!v)
                return -ENOMEM;
        m->inherited = v;
        v[m->n_inherited++] = (struct fdstore_entry) { .lease_id = id, .fd = fd };
        return 0;
}

/* Keeps a carried connection; ident is the rest of its line: "UID GID PID
 * DOUBTFUL UNIT [ACCOUNT]", its peer as read at accept (UNIT "-" for none;
 * ACCOUNT, the uid its connections count under, is UID when an older
 * brokerd left it out). */
static int keep_conn_fd(struct monitor *m, int fd, uint32_t reexec_id, const char *ident) {
        struct carried_conn *v, x = { .fd = fd, .reexec_id = reexec_id };
        char unit[PEER_UNIT_MAX];
        unsigned uid, gid, account;
        int pid, doubtful, n;

        n = ident ? sscanf(ident, "%u %u %d %d %255s %u", &uid, &gid, &pid, &doubtful, unit, &account) : 0;
        if (n < 5)
                return -EBADMSG;
        if (n == 5)
                account = uid;
        x.peer = (struct peer) { .uid = uid, .account = account, .gid = gid, .pid = pid, .pid_fd = -1,
                                 .conn_fd = fd, .groups_unread = true };
        if (strcmp(unit, "-") != 0)
                snprintf(x.peer.unit, sizeof(x.peer.unit), "%s", unit);
        if (doubtful)
                x.peer.doubt = "the peer's identity was in doubt before brokerd executed itself again";
        v = reallocarray(m->carried, m->n_carried + 1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        m->carried = v;
        v[m->n_carried++] = x;
        return 0;
}

/* A control connection carried across a re-exec: "conn", or "reexec-ID"
 * for the one whose request ID is answered by the new image. Returns
 * true and *ret_id (0 for "conn") when name is one. */
static bool conn_name(const char *name, uint32_t *ret_id) {
        char *end;
        unsigned long id;

        if (strcmp(name, CONN_FDNAME) == 0) {
                *ret_id = 0;
                return true;
        }
        if (strncmp(name, REEXEC_FDNAME_PREFIX, strlen(REEXEC_FDNAME_PREFIX)) != 0)
                return false;
        errno = 0;
        id = strtoul(name + strlen(REEXEC_FDNAME_PREFIX), &end, 10);
        if (errno || *end || id == 0 || id > UINT32_MAX)
                return false;
        *ret_id = (uint32_t) id;
        return true;
}

/* Sorts one passed fd: a lease's socket is kept for fdstore_claim(), a
 * carried connection for fdstore_serve_carried(), the first other one is
 * the control socket (control.c checks it), anything else is closed and
 * dropped from the store. ident: the rest of a re-exec's line, or NULL.
 * Consumes fd. */
static int sort_fd(struct monitor *m, int fd, const char *name, const char *ident) {
        uint64_t id = lease_id_of_name(name);
        uint32_t reexec_id;

        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                int r = -errno;

                safe_close(fd);
                return r;
        }
        if (id > 0) {
                int r = keep_lease_fd(m, id, fd);

                if (r < 0)
                        safe_close(fd);
                return r;
        }
        if (strcmp(name, GUARD_DIR_FDNAME) == 0 && m->guard_dir_fd < 0) {
                m->guard_dir_fd = fd;
                return 0;
        }
        if (conn_name(name, &reexec_id)) {
                int r = keep_conn_fd(m, fd, reexec_id, ident);

                if (r < 0)
                        safe_close(fd);
                return r;
        }
        if (m->control_fd < 0) {
                m->control_fd = fd;
                /* One brokerd made itself (not systemd): unlinked at exit. */
                m->control_created = strcmp(name, "control-created") == 0;
                return 0;
        }
        log_msg(LOG_WARNING, "closing the unexpected file descriptor \"%s\" that was passed at start", name);
        safe_close(fd);
        store_remove_name(m, name);
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

/* The fds an earlier image of brokerd passed across exec(): the memfd named
 * by $PORTBROKER_REEXEC_FDS lists them, one "FD NAME" line each. */
static int take_reexec_fds(struct monitor *m, const char *list_fd_text) {
        char *end, *text = NULL, *line, *save = NULL;
        long list_fd = strtol(list_fd_text, &end, 10);
        struct stat st;
        FILE *f;
        size_t n;
        int r = 0;

        if (*end || list_fd <= STDERR_FILENO || list_fd > INT_MAX)
                return -EBADF;
        if (fstat((int) list_fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > REEXEC_LIST_MAX) {
                if (fcntl((int) list_fd, F_GETFD) >= 0)
                        safe_close((int) list_fd);
                return -EBADF;
        }
        text = calloc(1, (size_t) st.st_size + 1);
        f = text ? fdopen((int) list_fd, "re") : NULL;
        if (!f) {
                free(text);
                safe_close((int) list_fd);
                return -ENOMEM;
        }
        n = fread(text, 1, (size_t) st.st_size, f);
        fclose(f);
        text[n] = '\0';
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char name[64];
                int fd, k, used = 0;

                if (sscanf(line, "%d %63s %n", &fd, name, &used) != 2 || fd <= STDERR_FILENO || fd == list_fd ||
                    fcntl(fd, F_GETFD) < 0) {
                        log_msg(LOG_WARNING, "ignoring a bad line in the fd list of the earlier image: %s", line);
                        continue;
                }
                if (fd > STDERR_FILENO && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                        safe_close(fd);
                        continue;
                }
                k = sort_fd(m, fd, name, used > 0 ? line + used : NULL);
                if (k < 0 && r == 0)
                        r = k;
        }
        free(text);
        return r;
}

int fdstore_take(struct monitor *m) {
        const char *reexec = getenv(REEXEC_FDS_ENV);
        char **names = NULL;
        int n, r = 0;

        m->fdstore = fdstore_enabled();
        if (reexec) {
                r = take_reexec_fds(m, reexec);
                unsetenv(REEXEC_FDS_ENV);
                if (r < 0) {
                        log_msg(LOG_ERR, "cannot take the sockets of the earlier image: %s", strerror(-r));
                        return r;
                }
                log_event(LOG_INFO, "inherit", &(struct log_fields) LOG_FIELDS_NONE,
                          "re-executed: %zu lease sockets and %zu connections carried over",
                        m->n_inherited, m->n_carried);
                return 0;
        }
        n = sd_listen_fds_with_names(true, &names);
        if (n < 0) {
                log_msg(LOG_ERR, "cannot read the sockets passed at start: %s", strerror(-n));
                return n;
        }
        for (int i = 0; i < n; i++) {
                int k = sort_fd(m, SD_LISTEN_FDS_START + i, names && names[i] ? names[i] : "unknown", NULL);

                if (k < 0 && r == 0)
                        r = k;
        }
        for (int i = 0; names && names[i]; i++)
                free(names[i]);
        free(names);
        if (r < 0)
                log_msg(LOG_ERR, "cannot keep the sockets passed at start: %s", strerror(-r));
        if (m->n_inherited > 0)
                log_event(LOG_INFO, "inherit", &(struct log_fields) LOG_FIELDS_NONE,
                          "%zu lease sockets were passed at start", m->n_inherited);
        return r;
}

int fdstore_claim(struct monitor *m, uint64_t lease_id) {
        for (size_t i = 0; i < m->n_inherited; i++) {
                struct fdstore_entry *x = &m->inherited[i];

                if (x->lease_id == lease_id && x->fd >= 0) {
                        int fd = x->fd;

                        x->fd = -1;
                        return fd;
                }
        }
        return -1;
}

void fdstore_drop_unclaimed(struct monitor *m) {
        char name[32];

        for (size_t i = 0; i < m->n_inherited; i++) {
                struct fdstore_entry *x = &m->inherited[i];

                if (x->fd < 0)
                        continue;
                fdname_of_lease(x->lease_id, name, sizeof(name));
                log_event(LOG_NOTICE, "inherit", &(struct log_fields) LOG_FIELDS_NONE,
                          "closing the passed socket \"%s\": no such lease", name);
                x->fd = safe_close(x->fd);
                store_remove_name(m, name);
        }
        free(m->inherited);
        m->inherited = NULL;
        m->n_inherited = 0;
}

void fdstore_done(struct monitor *m) {
        for (size_t i = 0; i < m->n_inherited; i++)
                safe_close(m->inherited[i].fd);
        free(m->inherited);
        m->inherited = NULL;
        m->n_inherited = 0;
        for (size_t i = 0; i < m->n_carried; i++)
                safe_close(m->carried[i].fd);
        free(m->carried);
        m->carried = NULL;
        m->n_carried = 0;
}

void fdstore_pass_carried(struct monitor *m) {
        for (size_t i = 0; i < m->n_carried; i++) {
                struct carried_conn *x = &m->carried[i];

                monitor_pass_conn(m, x->fd, &x->peer, x->reexec_id);
        }
        free(m->carried);
        m->carried = NULL;
        m->n_carried = 0;
}

int fdstore_add(struct monitor *m, const struct lease *l) {
        char msg[96];
        int r;

        if (!m->fdstore || l->sock_fd < 0)
                return 0;
        /* FDPOLL=0: a listener that a holder shut down reports POLLHUP, and
         * the store would drop it while brokerd repairs it. */
        snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=" LEASE_FDNAME_PREFIX "%" PRIu64 "\nFDPOLL=0", l->id);
        r = sd_pid_notify_with_fds(0, false, msg, &l->sock_fd, 1);
        return r < 0 ? r : 0;
}

void fdstore_remove(struct monitor *m, uint64_t lease_id) {
        char name[32];

        fdname_of_lease(lease_id, name, sizeof(name));
        store_remove_name(m, name);
}
