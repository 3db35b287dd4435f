/* SPDX-License-Identifier: MIT */
/*
 * The worker's life cycle and timers (the unprivileged half of brokerd; see
 * privsep.h): start-up (database, rules, its leases declared to the
 * monitor and their sockets taken from it), readiness, the loop, shutdown;
 * the batched audit writes and the idle WAL checkpoint; the retry of leases
 * whose port was busy at start. Connections, requests and watches live in
 * their own files (see broker-int.h).
 */
#include "broker-int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd-util.h"
#include "kernel.h"
#include "privsep.h"
#include "safepath.h"
#include "sockaddr.h"
#include "sockopt.h"

#define FLUSH_DELAY_USEC (50 * 1000)    /* audit batch window */
#define FLUSH_RETRY_USEC (1000 * 1000)  /* after a failed flush */
#define CHECKPOINT_IDLE_USEC (5 * 1000 * 1000) /* WAL checkpoint after this long without writes */
#define PRUNE_STEP 1000                 /* audit events pruned at most per step when idle (a few ms) */
#define PRUNE_AGAIN_USEC (20 * 1000)    /* between steps: the loop serves requests meanwhile */
#define PRUNE_IDLE_USEC (3600ull * 1000 * 1000) /* events age while nothing happens: pruned hourly */

/* The uid logged and audited for p: -1 (none) for an unidentified peer, never a uid it may not have. */
static long peer_uid_field(const struct peer *p) {
        return p->uid == PEER_UID_UNKNOWN ? -1 : (long) p->uid;
}

struct log_fields broker_peer_fields(const struct peer *p, const char *endpoint, const struct pb_endpoint *e) {
        return (struct log_fields) {
                .endpoint = endpoint,
                .port = e ? e->port_lo : 0,
                .uid = peer_uid_field(p),
                .pid = (long) p->pid,
        };
}

/* Log fields naming a lease (its text formatted into buf) and its owner. */
static struct log_fields lease_fields(const struct lease *l, char buf[static PB_ENDPOINT_STRLEN]) {
        return (struct log_fields) { .endpoint = endpoint_format(&l->endpoint, buf), .port = l->endpoint.port_lo, .uid = (long) l->owner_uid,
                                     .pid = -1 };
}

void broker_arm_oneshot(struct broker *b, sd_event_source *s, uint64_t delay) {
        uint64_t now;

        if (sd_event_source_get_enabled(s, NULL) > 0)
                return;
        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(s, now + delay);
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

void broker_audit(struct broker *b, const char *event, const struct peer *p, const char *endpoint,
                  const char *detail) {
        struct store_event ev = {
                .event = event,
                .uid = p ? peer_uid_field(p) : -1,
                .pid = p ? (long) p->pid : -1,
                .endpoint = endpoint,
                .detail = detail,
        };

        int lost = store_event_queue(b->store, &ev);

        if (lost > 0)
                log_msg(LOG_ERR, "audit trail: %d events lost: the database could not take them (see the errors "
                        "above) and the queue was full", lost);
        broker_arm_oneshot(b, b->flush_source, FLUSH_DELAY_USEC);
}

void broker_flush_soon(struct broker *b) {
        broker_arm_oneshot(b, b->flush_source, FLUSH_DELAY_USEC);
}

void broker_notify_status(struct broker *b) {
        mm_status(b);
}

/* --- audit batches and checkpoints ------------------------------------------ */

/* Checkpoints (an fsync) only when writes pause, or when the WAL grows large:
 * never per request. */
static void schedule_checkpoint(struct broker *b) {
        uint64_t now;

        if (store_wal_pages(b->store) >= STORE_WAL_PAGES_MAX) {
                (void) store_checkpoint(b->store);
                return;
        }
        sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        sd_event_source_set_time(b->checkpoint_source, now + CHECKPOINT_IDLE_USEC);
        sd_event_source_set_enabled(b->checkpoint_source, SD_EVENT_ONESHOT);
}

/* When writes pause: the audit events past --audit-max-rows and
 * --audit-max-age go, a bounded step at a time (the queued ones, the
 * newest, never: they are written first), then the WAL is checkpointed. */
static int on_checkpoint(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;
        int r;

        /* Requests came in since: not idle after all; the next flush re-arms us. */
        if (store_pending(b->store) > 0)
                return 0;
        r = store_prune(b->store, PRUNE_STEP);
        if (r == PRUNE_STEP) {          /* maybe more: the next step soon */
                if (store_wal_pages(b->store) >= STORE_WAL_PAGES_MAX)
                        (void) store_checkpoint(b->store);      /* a long prune keeps the WAL bounded too */
                broker_arm_oneshot(b, b->checkpoint_source, PRUNE_AGAIN_USEC);
                return 0;
        }
        if (r < 0)
                log_msg(LOG_WARNING, "cannot prune the audit trail: %s", strerror(-r));
        r = store_checkpoint(b->store);
        if (r < 0)
                log_msg(LOG_WARNING, "cannot checkpoint the database: %s", strerror(-r));
        if (b->opt.audit_max_age_sec)
                broker_arm_oneshot(b, b->checkpoint_source, PRUNE_IDLE_USEC);
        return 0;
}

static int on_flush(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;
        int r = store_flush(b->store);

        if (r < 0) {
                /* Kept: tried again, and lost (and said) only when the queue fills. */
                log_msg(LOG_ERR, "cannot write audit events: %s; %u kept, tried again in 1 s", strerror(-r),
                        store_pending(b->store));
                broker_arm_oneshot(b, b->flush_source, FLUSH_RETRY_USEC);
                return 0;
        }
        schedule_checkpoint(b);
        return 0;
}

int broker_flush(struct broker *b) {
        int r;

        /* Nothing queued, nothing written: the idle checkpoint stays due. */
        if (store_pending(b->store) == 0)
                return 0;
        r = store_flush(b->store);
        if (r >= 0)
                schedule_checkpoint(b);
        return r;
}

/* --- leases bound again ----------------------------------------------------- */

int broker_lease_bound(struct broker *b, struct lease *l) {
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = lease_fields(l, text);

        if (watch_listener(b, l) < 0)
                log_event(LOG_WARNING, "error", &f, "cannot watch the listener; repairs happen at the next get");
        return 0;
}

/* Logs how l got the socket the monitor gave it, and records a Unix
 * socket's new file (the next start may replace that one alone). */
static void note_socket(struct broker *b, struct lease *l, const struct mm_socket *got) {
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = lease_fields(l, text);

        if (l->ux && memcmp(&l->ux->file, &got->file, sizeof(got->file)) != 0) {
                l->ux->file = got->file;
                if (store_lease_set_file(b->store, l->id, l->ux) < 0)
                        log_event(LOG_ERR, "error", &f, "lease %llu: cannot record its new socket file; a start "
                                  "without its socket will find the file brokerd made not its own",
                                  (unsigned long long) l->id);
        }

        if (got->how == PS_HOW_KEPT)
                log_event(LOG_INFO, "keep", &f, "lease %llu: its socket was kept while brokerd was away",
                          (unsigned long long) l->id);
        else if (got->how == PS_HOW_BOUND)
                log_event(LOG_INFO, "rebind", &f, "lease %llu bound again", (unsigned long long) l->id);
}

int broker_rebind_lease(struct broker *b, struct lease *l) {
        struct mm_socket got;
        int r = mm_socket(b, l->id, &l->endpoint, l->ux, &l->sock_fd, &got);

        if (r < 0)
                return r;
        note_socket(b, l, &got);
        return broker_lease_bound(b, l);
}

int broker_replace_socket(struct broker *b, struct lease *l, int error, const struct peer *p) {
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = p ? broker_peer_fields(p, endpoint_format(&l->endpoint, text), &l->endpoint)
                                : lease_fields(l, text);
        struct mm_socket got;
        int r;

        log_event(LOG_WARNING, "replace", &f, "lease %llu: its socket cannot be used again (%s); binding a fresh "
                  "one%s", (unsigned long long) l->id, strerror(-error),
                  b->guard_on ? " (the bind guard keeps the port meanwhile)" : "");
        broker_audit(b, "replace", p, text, strerror(-error));
        lease_unbind(l);
        r = mm_replace(b, l->id, &l->endpoint, &l->sock_fd, &got);
        if (r >= 0) {
                note_socket(b, l, &got);
                return broker_lease_bound(b, l);
        }
        log_event(LOG_ERR, "error", &f, "cannot bind lease %llu afresh: %s; brokerd retries",
                  (unsigned long long) l->id, strerror(-r));
        broker_arm_oneshot(b, b->rebind_source, BROKER_REBIND_RETRY_USEC);
        return r;
}

/* --- leases made -------------------------------------------------------------- */

/* Records lease id of e for owner, with socket sock_fd (consumed), in the
 * store (audited as who says) and the table. Returns 0 and *ret, or -errno. */
static int record_lease(struct broker *b, const struct pb_endpoint *e, uid_t owner, uint64_t id, int sock_fd,
                        uint64_t cookie, const struct lease_unix *ux, const struct store_event *who,
                        struct lease **ret) {
        char text[PB_ENDPOINT_STRLEN];
        struct store_lease sl = { .id = id, .endpoint = *e, .owner_uid = owner, .socket_cookie = cookie, .ux = *ux };
        struct store_event ev = *who;
        struct lease *l = lease_new();
        int r;

        if (!l) {
                safe_close(sock_fd);
                return -ENOMEM;
        }
        l->sock_fd = sock_fd;
        ev.endpoint = endpoint_format(e, text);
        snprintf(sl.boot_id, sizeof(sl.boot_id), "%s", b->boot_id);
        r = store_lease_add(b->store, &sl, &ev);
        if (r < 0) {
                lease_free(l);
                return r;
        }
        l->id = sl.id;
        r = lease_set_endpoint(l, e);
        if (l->ux)
                *l->ux = *ux;
        l->owner_uid = owner;
        l->since = sl.created;
        l->backlog = b->backlog;
        if (r >= 0)
                r = lease_table_add(&b->leases, l);
        if (r < 0) {    /* out of memory: keep store and table alike */
                struct store_event undo = { .event = "release", .uid = who->uid, .pid = who->pid,
                                            .endpoint = text, .detail = "creation undone" };

                (void) store_lease_remove(b->store, sl.id, &undo);
                lease_free(l);
                return r;
        }
        *ret = l;
        return 0;
}

int broker_lease_create(struct broker *b, const struct pb_endpoint *e, uid_t owner, const struct store_rule *rule,
                        const struct store_event *who, struct lease **ret, char *why, size_t size) {
        bool rule_unix = rule && endpoint_is_unix(&rule->pattern);
        struct lease_unix ux = {
                .uid = owner,
                .gid = rule_unix ? rule->perm.gid : PB_SOCKET_GROUP_NONE,
                .mode = rule_unix ? rule->perm.mode : PB_SOCKET_MODE_DEFAULT,
        };
        char text[PB_ENDPOINT_STRLEN], other_text[PB_ENDPOINT_STRLEN];
        struct mm_socket got;
        struct lease *l;
        uint64_t id;
        int sock_fd, r;

        endpoint_format(e, text);
        r = store_lease_next_id(b->store, &id);
        if (r < 0) {
                snprintf(why, size, "cannot number a new lease: %s", strerror(-r));
                return r;
        }
        /* Guarded by the monitor first: from its bind() on, nobody else may bind it. */
        r = mm_socket(b, id, e, endpoint_is_unix(e) ? &ux : NULL, &sock_fd, &got);
        if (r < 0) {
                const struct lease *other = r == -EADDRINUSE ? lease_table_overlapping(&b->leases, e) : NULL;

                if (other)      /* tcp:[::]:P beside tcp:0.0.0.0:P, say: which one stands in the way */
                        snprintf(why, size, "cannot bind %s: %s (the lease %s of uid %u holds the port%s)", text,
                                 strerror(-r), endpoint_format(&other->endpoint, other_text),
                                 (unsigned) other->owner_uid, other->owner_uid == owner ? "; release it first" : "");
                else
                        snprintf(why, size, "cannot bind %s: %s%s", text, strerror(-r),
                                 r == -EADDRINUSE ? " (another socket holds the port)" :
                                 r == -EEXIST ? " (a file brokerd did not make is at the path; it is never "
                                                "replaced)" : "");
                return r;
        }
        ux.file = got.file;
        r = record_lease(b, e, owner, id, sock_fd, got.cookie, &ux, who, &l);
        if (r < 0) {
                mm_release(b, id);
                snprintf(why, size, "cannot record the lease for %s: %s", text, strerror(-r));
                return r;
        }
        broker_lease_bound(b, l);
        broker_notify_status(b);
        *ret = l;
        return 0;
}

/* Retries every unbound lease, so a port is taken back soon after whatever
 * held it (say a holder that outlived a broker crash) lets go. */
static int on_rebind(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;
        bool pending = false;

        for (size_t i = 0; i < b->leases.n; i++) {
                struct lease *l = b->leases.by_id[i];

                if (l->sock_fd < 0 && broker_rebind_lease(b, l) < 0)
                        pending = true;
        }
        pending |= reservations_retry(b);
        if (pending)
                broker_arm_oneshot(b, b->rebind_source, BROKER_REBIND_RETRY_USEC);
        return 0;
}

/* --- start-up ----------------------------------------------------------------- */

static int load_rule(const struct store_rule *r, void *userdata) {
        return policy_add(userdata, r);
}

/* A lease from the database: into the table. */
static int load_lease(const struct store_lease *sl, void *userdata) {
        struct broker *b = userdata;
        struct lease *l = lease_new();
        int r;

        if (!l)
                return -ENOMEM;
        l->id = sl->id;
        r = lease_set_endpoint(l, &sl->endpoint);
        if (l->ux)
                *l->ux = sl->ux;
        l->owner_uid = sl->owner_uid;
        l->since = sl->created;
        l->backlog = b->backlog;
        if (r >= 0)
                r = lease_table_add(&b->leases, l);
        if (r < 0)
                lease_free(l);
        return r;
}

static int note_reserved(unsigned port, void *userdata) {
        mm_note_reserved(userdata, port);
        return 0;
}

/* Tells the monitor every lease (which guards them all before anything is
 * bound), what the database says of the guard, then takes each lease's
 * socket from it: the one it holds, kept, or bound again. A busy
 * port is an error event; the lease stays, unbound, and is retried. */
/* At start: lease l got its socket (r == 0), or not. */
static void restored(struct broker *b, struct lease *l, int r, const struct mm_socket *got) {
        char text[PB_ENDPOINT_STRLEN];
        struct log_fields f = lease_fields(l, text);

        if (r >= 0) {
                note_socket(b, l, got);
                (void) broker_lease_bound(b, l);
                return;
        }
        log_event(LOG_ERR, "error", &f, "cannot bind lease %llu again: %s; it stays unbound (see portctl status) "
                  "and brokerd retries until the port is free", (unsigned long long) l->id, strerror(-r));
        broker_audit(b, "rebind-failed", NULL, text, strerror(-r));
        broker_arm_oneshot(b, b->rebind_source, BROKER_REBIND_RETRY_USEC);
}

static int restore_leases(struct broker *b) {
        char last[PATH_MAX] = "";
        int r;

        for (size_t i = 0; i < b->leases.n; i++)
                mm_declare(b, b->leases.by_id[i]);
        r = store_reserved_load(b->store, note_reserved, b);
        if (r >= 0)
                r = store_meta_get(b->store, "guard_dir", last, sizeof(last));
        if (r < 0) {
                log_msg(LOG_ERR, "cannot load database %s: %s", b->opt.db_path, strerror(-r));
                return r;
        }
        mm_last_guard(b, last);
        mm_arm(b);
        if (strcmp(last, b->guard_dir) != 0 && store_meta_set(b->store, "guard_dir", b->guard_dir) < 0)
                log_msg(LOG_WARNING, "cannot record the bind guard's directory %s", b->guard_dir);
        mm_sockets(b, b->leases.by_id, b->leases.n, restored);
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct broker *b = userdata;

        log_msg(LOG_INFO, "received %s; stopping", strsignal((int) si->ssi_signo));
        return sd_event_exit(b->event, 0);
}

/* An off timer on b's loop, for broker_arm_oneshot(). */
static int add_timer(struct broker *b, sd_event_source **ret, uint64_t accuracy, sd_event_time_handler_t handler) {
        int r = sd_event_add_time(b->event, ret, CLOCK_MONOTONIC, 0, accuracy, handler, b);

        return r < 0 ? r : sd_event_source_set_enabled(*ret, SD_EVENT_OFF);
}

static int loop_setup(struct broker *b) {
        sigset_t mask;
        int r;

        /* Not sd_event_default(): that one checks its thread with a gettid()
         * system call on every loop iteration. */
        r = sd_event_new(&b->event);
        if (r < 0)
                return r;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        if ((r = sd_event_add_signal(b->event, NULL, SIGTERM, on_signal, b)) < 0 ||
            (r = sd_event_add_signal(b->event, NULL, SIGINT, on_signal, b)) < 0 ||
            (r = add_timer(b, &b->flush_source, 10 * 1000, on_flush)) < 0 ||
            (r = add_timer(b, &b->rebind_source, 50 * 1000, on_rebind)) < 0 ||
            (r = add_timer(b, &b->checkpoint_source, 500 * 1000, on_checkpoint)) < 0)
                return r;
        return 0;
}

/* The database and its -wal and -shm files, each brokerd's own and written
 * by nobody else (or absent). Returns 0 or -EPERM, logged. */
static int check_db_files(const char *path) {
        static const char *const suffixes[] = { "", "-wal", "-shm" };
        char name[4200];
        int r = 0;

        for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]) && r >= 0; i++) {
                snprintf(name, sizeof(name), "%s%s", path, suffixes[i]);
                r = safepath_owned_file(name, geteuid());
        }
        return r;
}

/* Opens the database in its private directory and loads rules and leases. */
static int store_setup(struct broker *b) {
        const char *path = b->opt.db_path;
        char errbuf[256] = "", dir[4096];
        int r;

        r = safepath_parent_dir(path, dir, sizeof(dir));
        if (r >= 0)
                r = safepath_private_dir(dir, 0700, geteuid());
        if (r < 0)
                return r;
        r = check_db_files(path);       /* before SQLite reads any of them */
        if (r < 0)
                return r;
        r = store_open(path, &b->store, errbuf, sizeof(errbuf));
        if (r < 0) {
                log_msg(LOG_ERR, "cannot use database %s: %s (refusing to start without its policy)", path, errbuf);
                return r;
        }
        store_set_retention(b->store, b->opt.audit_max_rows, b->opt.audit_max_age_sec);
        r = check_db_files(path);       /* and the -wal and -shm that SQLite made */
        if (r < 0)
                return r;
        r = store_rules_load(b->store, load_rule, &b->policy);
        if (r >= 0)
                r = store_leases_load(b->store, load_lease, b);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot load database %s: %s", path, strerror(-r));
                return r;
        }
        return restore_leases(b);
}

int broker_new(const struct broker_options *opt, int req_fd, int ev_fd, struct broker **ret) {
        struct broker *b = calloc(1, sizeof(*b));
        struct ucred cred;
        socklen_t len = sizeof(cred);
        int r;

        if (!b)
                return -ENOMEM;
        b->opt = *opt;
        b->req_fd = req_fd;
        b->ev_fd = ev_fd;
        b->backlog = kernel_listen_backlog(opt->backlog);
        b->policy.admin_group = &b->opt.admin_group;
        b->listeners_fd = -1;
        b->conns_fd = -1;
        b->holders.epoll_fd = -1;

        /* brokerd's pid and uid (an admin) are the monitor's, as the kernel tells. */
        r = getsockopt(req_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ? -errno : 0;
        if (r >= 0) {
                b->monitor_pid = cred.pid;
                b->policy.self_uid = cred.uid;
                r = kernel_boot_id(b->boot_id, sizeof(b->boot_id));
        }
        if (r < 0) {
                log_msg(LOG_ERR, "cannot read the monitor's credentials or the boot id: %s", strerror(-r));
                goto fail;
        }
        r = loop_setup(b);
        if (r >= 0)
                r = watch_setup(b);
        if (r >= 0)
                r = conn_setup(b);
        if (r >= 0)
                r = mm_hello(b);
        if (r >= 0)
                r = store_setup(b);
        if (r >= 0) {
                broker_rules_from_dir(b);
                reservations_make(b);   /* before READY=1: before anyone asks */
                b->serving = true;
                watch_limit_holders(b);
        }
        if (r >= 0)
                r = mm_watch(b);
        if (r < 0)
                goto fail;
        *ret = b;
        return 0;

fail:
        broker_free(b);
        return r;
}

int broker_run(struct broker *b) {
        struct log_fields f = LOG_FIELDS_NONE;
        size_t unbound = 0;
        int r;

        for (size_t i = 0; i < b->leases.n; i++)
                unbound += b->leases.by_id[i]->sock_fd < 0;
        if (unbound)
                log_event(LOG_WARNING, "ready", &f, "serving %zu leases and %zu rules; %zu leases are not bound "
                          "yet (their ports are busy; see portctl status)", b->leases.n, b->policy.n_rules, unbound);
        else
                log_event(LOG_INFO, "ready", &f, "serving %zu leases and %zu rules", b->leases.n, b->policy.n_rules);
        mm_want_units(b);
        mm_ready(b, unbound);
        /* What the retention limits let go since the last run, once idle. */
        broker_arm_oneshot(b, b->checkpoint_source, CHECKPOINT_IDLE_USEC);
        r = sd_event_loop(b->event);
        /* Nothing queued is lost: the audit trail is written before we go. */
        if (store_pending(b->store) > 0 && store_flush(b->store) < 0)
                log_msg(LOG_ERR, "cannot write %u audit events before stopping", store_pending(b->store));
        if (!b->reexecuting)
                log_event(LOG_INFO, "stop", &f, "stopping; %zu leases stay recorded", b->leases.n);
        return r;
}

void broker_free(struct broker *b) {
        if (!b)
                return;
        conn_done(b);
        for (size_t i = 0; i < b->leases.n; i++)
                lease_free(b->leases.by_id[i]);
        lease_table_done(&b->leases);
        watch_done(b);
        b->ev_source = sd_event_source_disable_unref(b->ev_source);
        b->flush_source = sd_event_source_disable_unref(b->flush_source);
        b->rebind_source = sd_event_source_disable_unref(b->rebind_source);
        b->checkpoint_source = sd_event_source_disable_unref(b->checkpoint_source);
        store_close(b->store);
        free(b->import.rules);
        free(b->busy_reservations);
        policy_done(&b->policy);
        sd_event_unref(b->event);
        free(b);
}
