/* SPDX-License-Identifier: MIT */
/*
 * brokerd's options, and the worker: one sd-event loop owning the client
 * connections, the policy, the store and the lease table, unprivileged
 * (the monitor, monitor.h, does what needs privilege; see privsep.h). Its
 * life cycle is all main.c sees; the insides are in broker-int.h.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "guard.h"
#include "policy.h"
#include "unixdir.h"

#define BROKER_DEFAULT_CONTROL "/run/portbroker/control.sock"
#define BROKER_DEFAULT_DB "/var/lib/portbroker/portbroker.db"
/* Set by a re-exec for the new image: names the memfd listing the fds it carries. */
#define REEXEC_FDS_ENV "PORTBROKER_REEXEC_FDS"

struct broker_options {
        const char *control_path;       /* ignored under socket activation */
        const char *db_path;
        struct policy_admin_group admin_group; /* --admin-group */
        unsigned backlog;               /* TCP listen() backlog */
        unsigned max_connections;       /* open control connections */
        unsigned max_connections_per_user; /* of one non-admin uid */
        unsigned idle_timeout_sec;      /* per connection */
        unsigned max_connection_age_sec; /* per connection, however active */
        unsigned max_leases_per_user;
        unsigned max_leases;            /* in all: each is a socket we (and systemd's fd store) hold */
        unsigned audit_max_rows;        /* audit events kept, the newest; 0: no limit */
        uint64_t audit_max_age_sec;     /* how long an audit event is kept; 0: no limit */
        struct guard_options guard;     /* --no-guard, --guard-dir, --guard-cgroup */
        const char *unix_dirs[UNIX_DIRS_MAX]; /* --unix-dir: where Unix leases' sockets may be made */
        size_t n_unix_dirs;
        const char *policy_dir;         /* --policy-dir: rules files read at start, or NULL */
        const char *worker_user;        /* --user: the worker's, when the monitor runs as root */
        const char *exe_path;           /* our binary, as started: what a re-exec executes */
        char **argv;                    /* our arguments, for a re-exec */
};

struct broker;

/* The worker (see privsep.h): sets up its loop, says hello to the monitor
 * on req_fd and ev_fd (its channels), opens the database, declares its
 * leases and takes their sockets. Returns 0 or -errno after logging one
 * line saying why. */
int broker_new(const struct broker_options *opt, int req_fd, int ev_fd, struct broker **ret);

/* Tells the monitor it is ready and serves until SIGTERM/SIGINT, or until
 * a re-execution or a lost monitor ends it. Returns 0 or -errno. */
int broker_run(struct broker *b);

/* Closes everything; NULL is fine. */
void broker_free(struct broker *b);
