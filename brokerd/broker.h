/* SPDX-License-Identifier: MIT */
/*
 * The broker: one sd-event loop owning the control socket, the client
 * connections, the policy, the store and the lease table. Its life cycle
 * is all main.c sees; the insides are in broker-int.h.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "guard.h"
#include "policy.h"

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
        struct guard_options guard;     /* --no-guard, --guard-dir, --guard-cgroup */
        const char *exe_path;           /* our binary, as started: what a re-exec executes */
        char **argv;                    /* our arguments, for a re-exec */
};

struct broker;

/* Sets up everything (store, policy, leases re-bound, control socket, loop).
 * Returns 0 or -errno after logging one line saying why. */
int broker_new(const struct broker_options *opt, struct broker **ret);

/* Announces readiness (ready_fd >= 0: writes one byte to it and closes it, for
 * the daemonizing parent) and runs until SIGTERM/SIGINT. Returns 0 or -errno. */
int broker_run(struct broker *b, int ready_fd);

/* Closes everything; NULL is fine. */
void broker_free(struct broker *b);
