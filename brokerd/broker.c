/* SPDX-License-Identifier: MIT */
/*
 * The broker's life cycle and timers: start-up (database, rules, leases
 * bound again or adopted, control socket), readiness, the loop, shutdown;
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
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "adopt.h"
#include "fd-util.h"
#include "sockaddr.h"
#include "sockopt.h"

#define FLUSH_DELAY_USEC (50 * 1000)    /* audit batch window */
#define FLUSH_RETRY_USEC (1000 * 1000)  /* after a failed flush */
#define REBIND_RETRY_USEC (250 * 1000)  /* retry of leases whose port was busy */
#define CHECKPOINT_IDLE_USEC (5 * 1000 * 1000) /* WAL checkpoint after this long without writes */

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

/* Log fields naming a lease and its owner. */
static struct log_fields lease_fields(const struct lease *l) {
        return (struct log_fields) { .endpoint = l->text, .port = l->endpoint.port_lo, .uid = (long) l->owner_uid,
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

void broker_notify_status(struct broker *b) {
        sd_notifyf(false, "STATUS=%zu leases, %zu rules, %u connections", b->leases.n, b->policy.n_rules,
                   b->n_conns);
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

static int on_checkpoint(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;
        int r;

        /* Requests came in since: not idle after all; the next flush re-arms us. */
        if (store_pending(b->store) > 0)
                return 0;
        r = store_checkpoint(b->store);
        if (r < 0)
                log_msg(LOG_WARNING, "cannot checkpoint the database: %s", strerror(-r));
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

/* --- leases bound again ----------------------------------------------------- */

/* Takes back the socket a holder kept from an earlier broker. Returns 0 or -errno. */
static int adopt_lease(struct lease *l, uint64_t cookie) {
        struct log_fields f = lease_fields(l);
        pid_t from;
        int r;

        if (!cookie)
                return -ENOENT;
        r = adopt_socket(&l->endpoint, geteuid(), cookie, &l->sock_fd, &from);
        if (r >= 0)
                log_event(LOG_INFO, "adopt", &f, "lease %llu: took its socket back from pid %d, which still held it",
                          (unsigned long long) l->id, (int) from);
        return r;
}

/* Puts l's socket in systemd's fd store; a failure is logged, not fatal. */
static void store_lease_socket(struct broker *b, const struct lease *l) {
        struct log_fields f = lease_fields(l);
        int r = fdstore_add(b, l);

        if (r < 0)
                log_event(LOG_WARNING, "error", &f, "cannot put lease %llu's socket in systemd's fd store: %s; "
                          "a restart of brokerd will bind it again", (unsigned long long) l->id, strerror(-r));
}

int broker_lease_bound(struct broker *b, struct lease *l) {
        struct log_fields f = lease_fields(l);

        store_lease_socket(b, l);
        if (watch_listener(b, l) < 0)
                log_event(LOG_WARNING, "error", &f, "cannot watch the listener; repairs happen at the next get");
        return 0;
}

int broker_rebind_lease(struct broker *b, struct lease *l, uint64_t adopt_cookie) {
        struct log_fields f = lease_fields(l);
        int r = lease_bind(&b->guard, &l->endpoint, l->backlog, &l->sock_fd);

        if (r == -EADDRINUSE && adopt_lease(l, adopt_cookie) >= 0)
                r = 0;
        else if (r < 0)
                return r;
        else {
                log_event(LOG_INFO, "rebind", &f, "lease %llu bound again", (unsigned long long) l->id);
                r = store_lease_set_socket(b->store, l->id, socket_cookie(l->sock_fd), b->boot_id);
                if (r < 0)
                        log_event(LOG_WARNING, "error", &f, "cannot record the new socket: %s; a holder that "
                                  "outlives a broker crash will not be taken back", strerror(-r));
        }
        return broker_lease_bound(b, l);
}

int broker_replace_socket(struct broker *b, struct lease *l, int error, const struct peer *p) {
        struct log_fields f = p ? broker_peer_fields(p, l->text, &l->endpoint) : lease_fields(l);
        int r;

        log_event(LOG_WARNING, "replace", &f, "lease %llu: its socket cannot be used again (%s); binding a fresh "
                  "one%s", (unsigned long long) l->id, strerror(-error),
                  b->guard.on ? " (the bind guard keeps the port meanwhile)" : "");
        broker_audit(b, "replace", p, l->text, strerror(-error));
        fdstore_remove(b, l->id);
        lease_unbind(l);
        r = broker_rebind_lease(b, l, 0);
        if (r < 0) {
                log_event(LOG_ERR, "error", &f, "cannot bind lease %llu afresh: %s; brokerd retries",
                          (unsigned long long) l->id, strerror(-r));
                broker_arm_oneshot(b, b->rebind_source, REBIND_RETRY_USEC);
        }
        return r;
}

/* Retries every unbound lease, so a port is taken back soon after whatever
 * held it (say a holder that outlived a broker crash) lets go. */
static int on_rebind(sd_event_source *s, uint64_t usec, void *userdata) {
        struct broker *b = userdata;
        bool pending = false;

        for (size_t i = 0; i < b->leases.n; i++) {
                struct lease *l = b->leases.by_id[i];

                if (l->sock_fd < 0 && broker_rebind_lease(b, l, 0) < 0)
                        pending = true;
        }
        if (pending)
                broker_arm_oneshot(b, b->rebind_source, REBIND_RETRY_USEC);
        return 0;
}

/* --- start-up ----------------------------------------------------------------- */

static int load_rule(const struct store_rule *r, void *userdata) {
        return policy_add(userdata, r);
}

/* The socket passed at start for l (kept by systemd's fd store, or carried
 * across a re-exec), when there is one and it is the socket l names: then
 * l has it, listening, and true is returned. One that is not is closed. */
static bool take_passed_socket(struct broker *b, struct lease *l) {
        struct log_fields f = lease_fields(l);
        int fd = fdstore_claim(b, l->id), r;

        if (fd < 0)
                return false;
        r = socket_is_for_endpoint(fd, &l->endpoint);
        if (r <= 0) {
                log_event(LOG_ERR, "error", &f, "lease %llu: the socket passed at start is not one for %s (%s); "
                          "closing it and binding again", (unsigned long long) l->id, l->text,
                          r < 0 ? strerror(-r) : "another family, type, address or port");
                safe_close(fd);
                fdstore_remove(b, l->id);
                return false;
        }
        l->sock_fd = fd;
        r = lease_ensure_listening(l);
        if (r < 0) {
                log_event(LOG_ERR, "error", &f, "lease %llu: cannot listen on the socket passed at start: %s; "
                          "closing it and binding again", (unsigned long long) l->id, strerror(-r));
                l->sock_fd = safe_close(l->sock_fd);
                fdstore_remove(b, l->id);
                return false;
        }
        log_event(LOG_INFO, "keep", &f, "lease %llu: its socket was kept while brokerd was away",
                  (unsigned long long) l->id);
        broker_lease_bound(b, l);
        return true;
}

/* A lease from the database: into the table. */
static int load_lease(const struct store_lease *sl, void *userdata) {
        struct broker *b = userdata;
        struct lease *l = lease_new();
        int r;

        if (!l)
                return -ENOMEM;
        l->id = sl->id;
        lease_set_endpoint(l, &sl->endpoint);
        l->owner_uid = sl->owner_uid;
        l->since = sl->created;
        l->backlog = b->backlog;
        /* Only a socket of this boot can still be held somewhere. */
        l->adopt_cookie = strcmp(sl->boot_id, b->boot_id) == 0 ? sl->socket_cookie : 0;
        r = lease_table_add(&b->leases, l);
        if (r < 0)
                lease_free(l);
        return r;
}

/* The guard put port in ip_local_reserved_ports (ours) or took it out. */
static int record_reserved(unsigned port, bool ours, void *userdata) {
        struct broker *b = userdata;
        int r = store_reserved_set(b->store, port, ours);

        broker_arm_oneshot(b, b->flush_source, FLUSH_DELAY_USEC);
        return r;
}

static int note_reserved(unsigned port, void *userdata) {
        guard_note_reserved(userdata, port);
        return 0;
}

/* The guard this brokerd ran from another directory, or before it ran
 * unguarded, is removed (the database remembers where it was). */
static void guard_forget_earlier(struct broker *b) {
        char last[PATH_MAX];
        const char *now = b->guard.on ? b->guard.dir : "";

        if (store_meta_get(b->store, "guard_dir", last, sizeof(last)) < 0)
                return;
        if (last[0] && strcmp(last, now) != 0)
                guard_drop(last);
        if (strcmp(last, now) != 0 && store_meta_set(b->store, "guard_dir", now) < 0)
                log_msg(LOG_WARNING, "cannot record the bind guard's directory %s", now);
}

/* Once the guard covers every lease: each lease's socket taken back from
 * systemd's fd store, or bound again (or adopted). A busy port is an error
 * event; the lease stays, unbound, and is retried. */
static void restore_lease_sockets(struct broker *b) {
        for (size_t i = 0; i < b->leases.n; i++) {
                struct lease *l = b->leases.by_id[i];
                struct log_fields f;
                int r;

                if (take_passed_socket(b, l))
                        continue;
                r = broker_rebind_lease(b, l, l->adopt_cookie);
                if (r < 0) {
                        f = lease_fields(l);
                        log_event(LOG_ERR, "error", &f, "cannot bind lease %llu again: %s; it stays unbound (see "
                                  "portctl status) and brokerd retries until the port is free",
                                  (unsigned long long) l->id, strerror(-r));
                        broker_audit(b, "rebind-failed", NULL, l->text, strerror(-r));
                        broker_arm_oneshot(b, b->rebind_source, REBIND_RETRY_USEC);
                }
                l->adopt_cookie = 0;
        }
}

/* The backlog listen(fd, backlog) gives in our network namespace: the
 * kernel caps it at net.core.somaxconn (what the check before every
 * hand-out compares with). */
static unsigned listen_backlog(unsigned backlog) {
        FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
        unsigned max = 0;

        if (f) {
                if (fscanf(f, "%u", &max) != 1)
                        max = 0;
                fclose(f);
        }
        return max && max < backlog ? max : backlog;
}

static int read_boot_id(char *buf, size_t len) {
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
        int r = f && fgets(buf, (int) len, f) ? 0 : -EIO;

        if (f)
                fclose(f);
        buf[strcspn(buf, "\n")] = '\0';
        return r;
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
        (void) sd_event_set_watchdog(b->event, true);
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
                r = control_check_owned_file(name);
        }
        return r;
}

/* Opens the database in its private directory and loads rules and leases. */
static int store_setup(struct broker *b) {
        const char *path = b->opt.db_path;
        char errbuf[256] = "", dir[4096];
        int r;

        r = control_parent_dir(path, dir, sizeof(dir));
        if (r >= 0)
                r = control_ensure_private_dir(dir, 0700);
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
        r = store_reserved_load(b->store, note_reserved, &b->guard);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot load database %s: %s", path, strerror(-r));
                return r;
        }
        b->guard.record_reserved = record_reserved;
        b->guard.userdata = b;
        guard_arm(&b->guard, &b->leases, b->opt.max_leases);
        guard_forget_earlier(b);
        restore_lease_sockets(b);
        fdstore_drop_unclaimed(b);
        return 0;
}

int broker_new(const struct broker_options *opt, struct broker **ret) {
        struct broker *b = calloc(1, sizeof(*b));
        int r;

        if (!b)
                return -ENOMEM;
        b->opt = *opt;
        b->control_fd = -1;
        b->guard_dir_fd = -1;
        b->backlog = listen_backlog(opt->backlog);
        guard_init(&b->guard);
        b->policy.self_uid = geteuid();
        b->policy.admin_group = &b->opt.admin_group;

        r = read_boot_id(b->boot_id, sizeof(b->boot_id));
        if (r >= 0)
                r = peer_self_init(&b->self);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot read the broker's own namespaces: %s", strerror(-r));
                goto fail;
        }
        r = loop_setup(b);
        if (r >= 0)
                r = fdstore_take(b);
        if (r >= 0) {
                r = guard_open(&b->guard, &b->opt.guard, b->guard_dir_fd);
                b->guard_dir_fd = -1;
        }
        if (r >= 0)
                r = store_setup(b);
        if (r >= 0)
                r = control_setup(b);
        if (r < 0)
                goto fail;
        *ret = b;
        return 0;

fail:
        broker_free(b);
        return r;
}

int broker_run(struct broker *b, int ready_fd) {
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
        sd_notifyf(false, "READY=1\nSTATUS=%zu leases, %zu rules", b->leases.n, b->policy.n_rules);
        if (ready_fd >= 0) {
                (void) !write(ready_fd, "", 1);
                safe_close(ready_fd);
        }
        fdstore_serve_carried(b);
        r = sd_event_loop(b->event);
        sd_notify(false, "STOPPING=1");
        guard_reserve_leases(&b->guard, &b->leases);
        log_event(LOG_INFO, "stop", &f, "stopping; %zu leases stay recorded", b->leases.n);
        return r;
}

void broker_free(struct broker *b) {
        if (!b)
                return;
        while (b->conns)
                conn_free(b->conns);
        for (size_t i = 0; i < b->leases.n; i++)
                lease_free(b->leases.by_id[i]);
        lease_table_done(&b->leases);
        fdstore_done(b);
        b->guard_dir_fd = safe_close(b->guard_dir_fd);
        guard_close(&b->guard);
        control_done(b);
        b->flush_source = sd_event_source_disable_unref(b->flush_source);
        b->rebind_source = sd_event_source_disable_unref(b->rebind_source);
        b->checkpoint_source = sd_event_source_disable_unref(b->checkpoint_source);
        store_close(b->store);
        policy_done(&b->policy);
        sd_event_unref(b->event);
        free(b);
}
