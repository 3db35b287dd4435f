/* SPDX-License-Identifier: MIT */
/*
 * The broker: one sd-event loop owning the control socket, the client
 * connections, the policy, the store and the lease table.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#define BROKER_DEFAULT_CONTROL "/run/portbroker/control.sock"
#define BROKER_DEFAULT_DB "/var/lib/portbroker/portbroker.db"

struct broker_options {
        const char *control_path;       /* ignored under socket activation */
        const char *db_path;
        bool has_admin_gid;
        gid_t admin_gid;
        const char *admin_group;        /* as given, for messages */
        unsigned backlog;               /* TCP listen() backlog */
        unsigned max_connections;       /* open control connections */
        unsigned max_connections_per_user; /* of one non-admin uid */
        unsigned idle_timeout_sec;      /* per connection */
        unsigned max_leases_per_user;
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
