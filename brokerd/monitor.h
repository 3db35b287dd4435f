/* SPDX-License-Identifier: MIT */
/*
 * The monitor: brokerd's privileged process (see privsep.h for the split).
 * It is the process systemd knows (the main pid: readiness, the watchdog,
 * the fd store), and the one the files that need privilege work for:
 * monitor.c (life cycle, the worker, its requests), control.c (the
 * control socket), fdstore.c (sockets kept outside the process) and
 * reexec.c (executing the binary again).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "broker.h"
#include "guard.h"
#include "lease.h"
#include "peer.h"
#include "store.h"
#include "log.h"

/* A lease's socket passed at start, until its lease claims it. */
struct fdstore_entry {
        uint64_t lease_id;
        int fd;                         /* -1 once claimed or closed */
};

/* A control connection carried across a re-exec, until the worker has it. */
struct carried_conn {
        int fd;
        uint32_t reexec_id;             /* the REEXEC request to answer on it, 0: none */
        struct peer peer;               /* its identity as read at accept by the earlier image */
};

struct monitor {
        struct broker_options opt;
        sd_event *event;

        /* the control socket (control.c) */
        int control_fd;                 /* listening, -1 before set-up */
        bool control_created;           /* we created opt.control_path: unlink at exit */
        bool accept_drain;              /* connections queued before the listener refused fds: accept
                                         * until EAGAIN, refusing fds on each (SO_PASSRIGHTS) */
        sd_event_source *control_source; /* accepts on control_fd: on only while a worker serves */
        sd_event_source *accept_pause_source; /* resumes accepting after running out of fds */
        struct peer_self self;          /* our own namespaces, compared with each peer's */
        bool want_units;                /* the worker has unit rules: read each peer's unit */

        /* the worker */
        pid_t worker_pid;               /* 0: none */
        int req_fd, ev_fd;              /* its request and event channels, -1: none */
        sd_event_source *worker_source; /* its exit */
        sd_event_source *req_source, *ev_source;
        sd_event_source *respawn_source; /* starts the next worker */
        sd_event_source *stuck_source;  /* its event channel broke: kills it if it is still alive then */
        pid_t stuck_pid;                /* the worker it is for */
        uint64_t worker_started_usec;   /* CLOCK_MONOTONIC */
        unsigned quick_deaths;          /* workers in a row that died soon after start: backs off */
        bool in_request;                /* handling a request: news goes before its reply */
        enum worker_state {
                WORKER_HELLO,           /* started: PS_HELLO first */
                WORKER_DECLARING,       /* its leases, reserved ports, last guard; then PS_ARM */
                WORKER_STARTING,        /* its leases' sockets; then PS_READY */
                WORKER_SERVING,
                WORKER_REEXEC,          /* the binary passed its check: its connections, then PS_REEXEC */
        } worker_state;
        uid_t worker_uid;               /* --user, when the monitor runs as root; else ours */
        gid_t worker_gid;
        struct pending_conn {           /* accepted, not yet passed: the event channel was full */
                int fd;
                struct peer peer;
                uint32_t reexec_id;
        } *pending;
        size_t n_pending;

        /* leases and their sockets */
        struct lease_table leases;      /* id, endpoint and the monitor's copy of the socket */
        unsigned backlog;               /* --backlog as listen() keeps it: net.core.somaxconn at most */
        bool armed;                     /* the guard covers every declared lease */
        char last_guard[PATH_MAX];      /* where the database says the guard was */
        struct guard guard;
        struct unix_dirs unix_dirs;     /* --unix-dir, opened */
        bool fdstore;                   /* under systemd: lease sockets go to its fd store too */
        struct fdstore_entry *inherited; /* lease sockets passed at start (LISTEN_FDS) */
        size_t n_inherited;
        struct carried_conn *carried;   /* control connections carried across a re-exec */
        size_t n_carried;
        int guard_dir_fd;               /* the guard's directory carried across a re-exec, still locked; -1 */
        char boot_id[STORE_BOOT_ID_MAX];

        /* stopping and re-executing */
        bool ready;                     /* READY=1 sent */
        bool detach;                    /* the daemonizing parent waits for readiness */
        bool stopping;                  /* SIGTERM: the worker is told to stop, then we exit */
        uint32_t reexec_id;             /* PS_REEXEC asked: execute once the worker is gone, 0: not */
};

/* --- monitor.c --- */

/* Sets up the monitor (sockets passed at start, the bind guard's lock, the
 * control socket) and starts the worker. Returns 0 or -errno, logged. */
int monitor_new(const struct broker_options *opt, struct monitor **ret);

/* Runs until SIGTERM/SIGINT: the worker's start-up, readiness (ready_fd as
 * for broker_run()), serving. Returns 0 or -errno. */
int monitor_run(struct monitor *m, int ready_fd);

void monitor_free(struct monitor *m);

/* Passes an accepted connection, identified, to the worker. Consumes fd
 * and p (peer_done). */
void monitor_pass_conn(struct monitor *m, int fd, struct peer *p, uint32_t reexec_id);

/* A port became (or stopped being) one brokerd put in ip_local_reserved_ports: told to the worker. */
int monitor_record_reserved(unsigned port, bool ours, void *userdata);

/* --- control.c --- */

/* Takes the control socket from systemd or creates it safely at
 * opt.control_path; accepting starts with control_resume(). Returns 0 or
 * -errno, logged. */
int control_setup(struct monitor *m);

/* Accepting on or off (no worker to serve: connections wait in the backlog). */
void control_resume(struct monitor *m, bool on);

/* Stops accepting, closes the control socket, unlinks what we created. */
void control_done(struct monitor *m);

/* --- fdstore.c --- */

/* Reads the sockets passed at start (LISTEN_FDS, LISTEN_FDNAMES; after a
 * re-exec, the list in $PORTBROKER_REEXEC_FDS): lease sockets ("lease-ID")
 * are kept for fdstore_claim(), control connections for
 * fdstore_pass_carried(), the first other one becomes m->control_fd
 * (control.c checks it), others are closed. Also notes whether systemd
 * may keep fds for us. Returns 0 or -errno, logged. */
int fdstore_take(struct monitor *m);

/* The socket passed at start for lease_id, now owned by the caller, or -1. */
int fdstore_claim(struct monitor *m, uint64_t lease_id);

/* Passes the control connections carried across a re-exec to the worker
 * (the one that asked gets its REEXEC answered by it). */
void fdstore_pass_carried(struct monitor *m);

/* Closes the passed sockets no lease claimed and drops them from the store. */
void fdstore_drop_unclaimed(struct monitor *m);

/* Closes our copies of passed sockets not claimed yet, leaving the store
 * as it is (brokerd failed to start: the next one gets them). */
void fdstore_done(struct monitor *m);

/* Puts l's socket in systemd's fd store (a no-op without systemd; the
 * store ignores a socket it has). Returns 0 or -errno. */
int fdstore_add(struct monitor *m, const struct lease *l);

/* Drops the socket of lease lease_id from systemd's fd store. */
void fdstore_remove(struct monitor *m, uint64_t lease_id);

/* --- reexec.c --- */

/* Runs `brokerd ARGS --check` as the worker would run (the same uid, no
 * privilege) and waits for it, bounded. Returns 0, or -errno with why. */
int reexec_check(struct monitor *m, char *why, size_t size);

/* Executes brokerd's binary again, carrying every socket (the control
 * socket, each lease's, the guard's locked directory, m->carried). Returns
 * only on failure: -errno. */
int reexec(struct monitor *m);
