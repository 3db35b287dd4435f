/* SPDX-License-Identifier: MIT */
/*
 * The monitor: brokerd's privileged process (privsep.h tells the split).
 * It starts the worker, answers its requests one at a time, passes it each
 * accepted control connection with the peer's identity, and starts another
 * worker when one dies, handing every socket back: no port is ever let go
 * for a worker's sake. A worker that sends anything outside the message
 * set, or out of turn, is taken for compromised: killed and replaced.
 */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "fd-util.h"
#include "kernel.h"
#include "privsep.h"
#include "proto.h"
#include "safepath.h"
#include "sandbox.h"
#include "sockaddr.h"
#include "sockopt.h"

#define USEC_PER_SEC 1000000ULL
#define RESPAWN_MIN_USEC (100 * 1000)   /* after a worker that died soon after its start */
#define RESPAWN_MAX_USEC (5 * USEC_PER_SEC)
#define QUICK_DEATH_USEC (10 * USEC_PER_SEC) /* a worker dying sooner counts as a quick death */
#define STOP_TIMEOUT_USEC (5 * USEC_PER_SEC) /* for the worker to stop on SIGTERM */
#define STUCK_GRACE_USEC (USEC_PER_SEC)  /* for a worker whose channel broke to be seen exiting */

extern char **environ;

static void worker_close(struct monitor *m);

/* --- talking to the worker ------------------------------------------------ */

/* The worker went wrong (or was compromised): killed, and another started
 * once it is gone. */
static void __attribute__((format(printf, 2, 3))) worker_abort(struct monitor *m, const char *fmt, ...) {
        char why[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        log_event(LOG_ERR, "error", &(struct log_fields) LOG_FIELDS_NONE,
                  "the worker (pid %d) %s; killing it and starting another", (int) m->worker_pid, why);
        if (m->worker_pid > 0)
                (void) kill(m->worker_pid, SIGKILL);
        worker_close(m);
}

/* Answers the worker's request; a worker that does not take it is aborted. */
static void reply(struct monitor *m, const struct privsep_msg *msg, int fd) {
        int r = privsep_send(m->req_fd, msg, fd, MSG_DONTWAIT);

        if (r < 0)
                worker_abort(m, "does not take its reply (%s)", strerror(-r));
}

static void __attribute__((format(printf, 3, 4))) reply_done(struct monitor *m, int error, const char *fmt, ...) {
        struct privsep_msg msg = { .type = PS_DONE, .done.error = error };
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg.done.why, sizeof(msg.done.why), fmt, ap);
        va_end(ap);
        reply(m, &msg, -1);
}

static void reply_ok(struct monitor *m) {
        struct privsep_msg msg = { .type = PS_DONE };

        reply(m, &msg, -1);
}

int monitor_record_reserved(unsigned port, bool ours, void *userdata) {
        struct monitor *m = userdata;
        struct privsep_msg msg = { .type = PS_RESERVED, .reserved = { .port = (uint16_t) port, .ours = ours } };
        /* During a request, before its reply: the worker records it in the
         * same commit as the lease it came with, and waits for it anyway. */
        int fd = m->in_request ? m->req_fd : m->ev_fd;
        int r;

        if (fd < 0)
                return -ENOTCONN;       /* no worker to record it (stopping) */
        r = privsep_send(fd, &msg, -1, m->in_request ? 0 : MSG_DONTWAIT);
        /* Not recorded: at worst a reservation of ours stays behind at release. */
        if (r < 0)
                log_msg(LOG_WARNING, "cannot tell the worker that port %u is %s reserved by brokerd: %s", port,
                        ours ? "now" : "no longer", strerror(-r));
        return r;
}

/* --- passing connections ---------------------------------------------------- */

/* Sends connection fd with its peer. Returns 0; -EAGAIN when the channel
 * is full, -EPIPE when the worker no longer reads it (gone, its exit not
 * seen yet): the connection waits either way, fd kept. Consumes fd on
 * anything else. */
static int send_conn(struct monitor *m, int fd, const struct peer *p, uint32_t reexec_id) {
        struct privsep_msg msg = { .type = PS_CONN };
        int r;

        privsep_peer_to_wire(p, reexec_id, &msg.peer);
        r = m->ev_fd < 0 ? -ENOTCONN : privsep_send(m->ev_fd, &msg, fd, MSG_DONTWAIT);
        if (r == -EAGAIN)
                return r;
        if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN)
                return -EPIPE;
        safe_close(fd);                 /* the worker has its own copy now (or the client sees EOF) */
        return r;
}

/* Whether the worker has exited (its exit not handled yet). */
static bool worker_exited(const struct monitor *m) {
        siginfo_t si = { 0 };

        return m->worker_pid <= 0 || waitid(P_PID, (id_t) m->worker_pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 ||
               si.si_pid != 0;
}

/* STUCK_GRACE_USEC after the channel broke, the same worker runs on: it no longer reads. */
static int on_stuck(sd_event_source *s, uint64_t usec, void *userdata) {
        struct monitor *m = userdata;

        if (m->worker_pid == m->stuck_pid && !worker_exited(m))
                worker_abort(m, "no longer reads its connections");
        return 0;
}

/* The event channel is full (-EAGAIN: passing resumes once it is writable)
 * or broken (-EPIPE): a worker that exited is replaced once its exit is
 * seen; one still running a moment later (a SIGKILLed one closes its
 * channels before it becomes a zombie) no longer reads its connections and
 * is killed. Waiting for a broken channel to drain would spin: it stays
 * writable. */
static void channel_stuck(struct monitor *m, int r) {
        if (r == -EAGAIN) {
                if (m->ev_source)
                        sd_event_source_set_io_events(m->ev_source, EPOLLIN | EPOLLOUT);
                return;
        }
        if (m->ev_source)
                sd_event_source_set_io_events(m->ev_source, EPOLLIN);
        if (worker_exited(m) || sd_event_source_get_enabled(m->stuck_source, NULL) > 0)
                return;
        m->stuck_pid = m->worker_pid;
        sd_event_source_set_time_relative(m->stuck_source, STUCK_GRACE_USEC);
        sd_event_source_set_enabled(m->stuck_source, SD_EVENT_ONESHOT);
}

void monitor_pass_conn(struct monitor *m, int fd, struct peer *p, uint32_t reexec_id) {
        struct pending_conn *v;
        /* In order: behind what waits; and while no worker serves, it waits too. */
        int r = m->n_pending || m->worker_state != WORKER_SERVING ? -EAGAIN : send_conn(m, fd, p, reexec_id);

        if (r == -EAGAIN || r == -EPIPE) {
                /* The worker is behind, or gone: this one waits, in order, and accepting pauses. */
                v = reallocarray(m->pending, m->n_pending + 1, sizeof(*v));
                if (v) {
                        m->pending = v;
                        v[m->n_pending++] = (struct pending_conn) { .fd = fd, .peer = *p, .reexec_id = reexec_id };
                        control_resume(m, false);
                        if (m->worker_state == WORKER_SERVING)
                                channel_stuck(m, r);
                        return;
                }
                safe_close(fd);
                r = -ENOMEM;
        }
        if (r < 0)
                log_msg(LOG_WARNING, "cannot pass a connection to the worker: %s", strerror(-r));
        peer_done(p);
}

/* The event channel is writable again (or a new worker serves): what
 * waits goes, in order, and accepting resumes once none is left. */
static void pass_pending(struct monitor *m) {
        size_t i = 0;
        int r = 0;

        if (m->worker_state != WORKER_SERVING)
                return;
        while (i < m->n_pending) {
                struct pending_conn *x = &m->pending[i];

                r = send_conn(m, x->fd, &x->peer, x->reexec_id);
                if (r == -EAGAIN || r == -EPIPE)
                        break;
                if (r < 0)
                        log_msg(LOG_WARNING, "cannot pass a connection to the worker: %s", strerror(-r));
                peer_done(&x->peer);
                i++;
        }
        if (i > 0 && i < m->n_pending)
                memmove(m->pending, m->pending + i, (m->n_pending - i) * sizeof(*m->pending));
        m->n_pending -= i;
        if (m->n_pending) {
                channel_stuck(m, r);
                return;
        }
        if (m->ev_source)
                sd_event_source_set_io_events(m->ev_source, EPOLLIN);
        if (m->worker_state == WORKER_SERVING)
                control_resume(m, true);
}

/* --- leases ------------------------------------------------------------------- */

static struct lease *lease_by_id(const struct monitor *m, uint64_t id) {
        size_t i = lease_table_after(&m->leases, id - 1);

        return i < m->leases.n && m->leases.by_id[i]->id == id ? m->leases.by_id[i] : NULL;
}

/* The socket passed at start for l, when it is one for l's endpoint and listens. */
static bool take_passed_socket(struct monitor *m, struct lease *l) {
        int fd = fdstore_claim(m, l->id), r;
        char text[PB_ENDPOINT_STRLEN];

        if (fd < 0)
                return false;
        r = socket_is_for_endpoint(fd, &l->endpoint);
        if (r <= 0) {
                endpoint_format(&l->endpoint, text);
                log_event(LOG_ERR, "error", &(struct log_fields) { .endpoint = text, .uid = -1, .pid = -1 },
                          "lease %llu: the socket passed at start is not one for %s (%s); closing it and "
                          "binding again", (unsigned long long) l->id, text,
                          r < 0 ? strerror(-r) : "another family, type, address or port");
                safe_close(fd);
                fdstore_remove(m, l->id);
                return false;
        }
        l->sock_fd = fd;
        if (l->ux)              /* the path the kept socket is bound to: the file is the lease's */
                l->ux->made = true;
        if (lease_ensure_listening(l) < 0) {
                l->sock_fd = safe_close(l->sock_fd);
                fdstore_remove(m, l->id);
                return false;
        }
        return true;
}

/* Binds a fresh socket for l: past the guard, or a Unix one's file made
 * in its directory (and l->ux naming it). Returns 0 and *ret_fd, or -errno. */
static int bind_socket(struct monitor *m, struct lease *l, int *ret_fd) {
        if (l->ux)
                return unix_bind(&m->unix_dirs, &l->endpoint, m->backlog, l->ux, ret_fd);
        return lease_bind(&m->guard, &l->endpoint, m->backlog, ret_fd);
}

/* Gives l a socket: the one passed at start, or a fresh bind. (One a
 * holder kept from before a crash is not taken from it: the port stays its
 * until it exits, the guard keeping everyone else out, then is bound
 * again.) Returns 0 and *ret_how, or -errno. */
static int lease_socket(struct monitor *m, struct lease *l, uint8_t *ret_how) {
        char text[PB_ENDPOINT_STRLEN];
        int r;

        if (take_passed_socket(m, l)) {
                *ret_how = PS_HOW_KEPT;
                return 0;
        }
        r = bind_socket(m, l, &l->sock_fd);
        if (r >= 0)
                *ret_how = PS_HOW_BOUND;
        if (r >= 0 && fdstore_add(m, l) < 0)
                log_event(LOG_WARNING, "error", &(struct log_fields) { .endpoint = endpoint_format(&l->endpoint, text),
                          .uid = -1, .pid = -1 },
                          "cannot put lease %llu's socket in systemd's fd store; a restart of brokerd will bind "
                          "it again", (unsigned long long) l->id);
        return r;
}

static void reply_socket(struct monitor *m, const struct lease *l, uint64_t id, int error, uint8_t how) {
        struct privsep_msg msg = {
                .type = PS_SOCKET_REPLY,
                .socket = { .lease_id = id, .error = error, .how = error ? 0 : how },
        };

        if (!error)
                msg.socket.cookie = socket_cookie(l->sock_fd);
        if (!error && l->ux) {
                msg.socket.file = l->ux->file;
        }
        reply(m, &msg, error ? -1 : l->sock_fd);
}

/* A lease the worker is creating: guarded before its bind, so that from
 * its bind() on nobody else may bind it. */
static void create_lease(struct monitor *m, const struct privsep_msg *msg) {
        const struct pb_endpoint *e = &msg->lease.endpoint;
        struct lease *l;
        int r;

        if (lease_table_find(&m->leases, e)) {
                reply_socket(m, NULL, msg->lease.lease_id, EEXIST, 0);
                return;
        }
        if (m->leases.n >= m->opt.max_leases) {
                reply_socket(m, NULL, msg->lease.lease_id, EDQUOT, 0);
                return;
        }
        l = lease_new();
        if (!l) {
                reply_socket(m, NULL, msg->lease.lease_id, ENOMEM, 0);
                return;
        }
        l->id = msg->lease.lease_id;
        r = lease_set_endpoint(l, e);
        if (l->ux) {            /* a new lease has no file yet, whatever the worker says */
                *l->ux = msg->lease.ux;
                l->ux->file = (struct unix_file) { 0 };
                l->ux->made = false;
        }
        l->backlog = m->backlog;
        if (r >= 0)
                r = guard_add(&m->guard, e);
        if (r >= 0) {
                r = bind_socket(m, l, &l->sock_fd);
                if (r >= 0 && (r = lease_table_add(&m->leases, l)) < 0 && l->ux)
                        unix_unlink(&m->unix_dirs, e, l->ux);
                if (r < 0)
                        guard_remove(&m->guard, e, lease_table_has_port(&m->leases, e->port_lo));
        }
        if (r < 0) {
                lease_free(l);
                reply_socket(m, NULL, msg->lease.lease_id, -r, 0);
                return;
        }
        (void) fdstore_add(m, l);
        reply_socket(m, l, l->id, 0, PS_HOW_BOUND);
}

static void handle_socket(struct monitor *m, const struct privsep_msg *msg) {
        struct lease *l = lease_by_id(m, msg->lease.lease_id);
        char text[PB_ENDPOINT_STRLEN], had[PB_ENDPOINT_STRLEN];
        uint8_t how = PS_HOW_HELD;
        int r = 0;

        if (!l) {
                create_lease(m, msg);
                return;
        }
        if (!endpoint_equal(&l->endpoint, &msg->lease.endpoint)) {
                worker_abort(m, "asked for lease %llu as %s; it is %s", (unsigned long long) l->id,
                             endpoint_format(&msg->lease.endpoint, text), endpoint_format(&l->endpoint, had));
                return;
        }
        if (l->sock_fd < 0)
                r = lease_socket(m, l, &how);
        reply_socket(m, l, l->id, r < 0 ? -r : 0, how);
}

static void handle_replace(struct monitor *m, uint64_t id) {
        struct lease *l = lease_by_id(m, id);
        int fd = -1, r;

        if (!l) {
                reply_socket(m, NULL, id, ENOENT, 0);
                return;
        }
        /* Holders keep the old socket; the lease (and the fd store) get a
         * fresh one, once ours of the old is closed (the guard keeps the
         * port meanwhile). */
        fdstore_remove(m, l->id);
        lease_unbind(l);
        r = bind_socket(m, l, &fd);
        if (r >= 0) {
                l->sock_fd = fd;
                (void) fdstore_add(m, l);
        }
        reply_socket(m, l, id, r < 0 ? -r : 0, PS_HOW_BOUND);
}

/* l is gone: its socket closed and unguarded, a Unix one's file removed. */
static void lease_drop(struct monitor *m, struct lease *l) {
        if (l->ux)
                unix_unlink(&m->unix_dirs, &l->endpoint, l->ux);
        fdstore_remove(m, l->id);
        lease_table_remove(&m->leases, l);
        guard_remove(&m->guard, &l->endpoint, lease_table_has_port(&m->leases, l->endpoint.port_lo));
        lease_free(l);
}

static void handle_release(struct monitor *m, uint64_t id) {
        struct lease *l = lease_by_id(m, id);

        if (!l) {
                reply_done(m, ENOENT, "no lease %llu", (unsigned long long) id);
                return;
        }
        lease_drop(m, l);
        reply_ok(m);
}

/* --- the worker's start-up: its leases declared, then guarded --------------- */

/* Tells the worker the guard's state (and how to go on). */
static void reply_state(struct monitor *m) {
        struct privsep_msg r = { .type = PS_STATE };

        r.state.guard_on = m->guard.on;
        r.state.detach = m->detach && !m->ready;
        snprintf(r.state.guard_state, sizeof(r.state.guard_state), "%.*s", PRIVSEP_TEXT_MAX,
                 m->guard.state);
        /* A directory too long for the message is not remembered (nor dropped when it changes). */
        if (m->guard.on && strlen(m->guard.dir) <= PRIVSEP_TEXT_MAX)
                memcpy(r.state.guard_dir, m->guard.dir, strlen(m->guard.dir) + 1);
        reply(m, &r, -1);
}

static void handle_hello(struct monitor *m, const struct privsep_msg *msg) {
        if (msg->hello.version != PRIVSEP_VERSION) {
                worker_abort(m, "speaks version %u, not %u", msg->hello.version, PRIVSEP_VERSION);
                return;
        }
        for (size_t i = 0; i < m->leases.n; i++)
                m->leases.by_id[i]->declared = false;
        m->worker_state = WORKER_DECLARING;
        reply_state(m);
}

/* The most leases a database may declare: more than --max-leases (an admin
 * may have lowered it since), not without bound. */
static size_t declared_max(const struct monitor *m) {
        return m->opt.max_leases < 16384 ? 65536 : (size_t) m->opt.max_leases * 4;
}

static void handle_declare(struct monitor *m, const struct privsep_msg *msg) {
        struct lease *l = lease_by_id(m, msg->lease.lease_id), *other;
        char text[PB_ENDPOINT_STRLEN];

        other = lease_table_find(&m->leases, &msg->lease.endpoint);
        if ((l && !endpoint_equal(&l->endpoint, &msg->lease.endpoint)) || (other && other != l)) {
                worker_abort(m, "declared lease %llu for %s against the leases it has",
                             (unsigned long long) msg->lease.lease_id, endpoint_format(&msg->lease.endpoint, text));
                return;
        }
        if (!l && m->leases.n >= declared_max(m)) {
                worker_abort(m, "declared more than %zu leases", declared_max(m));
                return;
        }
        if (!l) {
                l = lease_new();
                if (!l || (l->id = msg->lease.lease_id, lease_set_endpoint(l, &msg->lease.endpoint)) < 0 ||
                    lease_table_add(&m->leases, l) < 0) {
                        lease_free(l);
                        worker_abort(m, "declared more leases than memory holds");
                        return;
                }
                l->backlog = m->backlog;
                if (l->ux) {
                        *l->ux = msg->lease.ux;
                        l->ux->made = false;    /* the worker's word, until a socket shows it */
                }
                /* A lease the guard does not know yet (the first start arms it with all). */
                if (m->armed)
                        (void) guard_add(&m->guard, &l->endpoint);
        }
        l->declared = true;
}

/* The guard this brokerd ran from another directory, or before it ran
 * unguarded, is removed (the database remembers where it was). */
static void guard_forget_earlier(struct monitor *m) {
        const char *now = m->guard.on ? m->guard.dir : "";

        if (m->last_guard[0] == '/' && strcmp(m->last_guard, now) != 0)
                guard_drop(m->last_guard);
}

static void handle_arm(struct monitor *m, const struct privsep_msg *msg) {
        m->worker_state = WORKER_STARTING;
        if (!m->armed) {
                guard_arm(&m->guard, &m->leases, m->opt.max_leases);    /* ours, not the worker's number */
                guard_forget_earlier(m);
                m->armed = true;
        }
        /* What this worker's database does not have was released by a worker
         * that died before it could say so. */
        for (size_t i = m->leases.n; i-- > 0;) {
                struct lease *l = m->leases.by_id[i];

                if (!l->declared) {
                        char text[PB_ENDPOINT_STRLEN];

                        log_event(LOG_NOTICE, "release", &(struct log_fields) { .endpoint =
                                  endpoint_format(&l->endpoint, text), .uid = -1,
                                  .pid = -1 }, "lease %llu is no longer in the database; closing its socket",
                                  (unsigned long long) l->id);
                        lease_drop(m, l);
                }
        }
        reply_state(m);
}

static void handle_ready(struct monitor *m, const struct privsep_msg *msg) {
        m->worker_state = WORKER_SERVING;
        if (!m->ready) {
                fdstore_drop_unclaimed(m);
                sd_notifyf(false, "READY=1\nSTATUS=%u leases, %u rules", msg->counts.leases, msg->counts.rules);
                m->ready = true;
        } else {
                log_event(LOG_NOTICE, "worker", &(struct log_fields) LOG_FIELDS_NONE,
                          "a new worker (pid %d) serves %u leases", (int) m->worker_pid, msg->counts.leases);
                sd_notifyf(false, "STATUS=%u leases, %u rules", msg->counts.leases, msg->counts.rules);
        }
        reply_ok(m);
        fdstore_pass_carried(m);
        pass_pending(m);
}

/* --- re-execution ------------------------------------------------------------ */

/* Whether fd is a connection accepted on our control socket (an accepted
 * socket has its listener's address). */
static bool is_control_connection(const struct monitor *m, int fd) {
        struct sockaddr_un a, b;
        socklen_t la = sizeof(a), lb = sizeof(b);
        int type = 0;
        socklen_t lt = sizeof(type);

        return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &lt) == 0 && type == SOCK_SEQPACKET &&
               getsockname(fd, (struct sockaddr *) &a, &la) == 0 && a.sun_family == AF_UNIX &&
               getsockname(m->control_fd, (struct sockaddr *) &b, &lb) == 0 && la == lb && memcmp(&a, &b, la) == 0;
}

/* The most connections a worker may carry across a re-execution: those it
 * serves (--max-connections) and those passed to it that it has not read
 * yet, which the event channel's send buffer bounds (each message with its
 * fd takes more than 256 bytes of it), and some room. */
static size_t carry_max(const struct monitor *m) {
        int sndbuf = 0;
        socklen_t len = sizeof(sndbuf);

        if (m->ev_fd < 0 || getsockopt(m->ev_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0 || sndbuf <= 0)
                sndbuf = 1024 * 256;
        return (size_t) m->opt.max_connections + (size_t) sndbuf / 256 + 64;
}

static void handle_carry(struct monitor *m, const struct privsep_msg *msg, int fd) {
        struct carried_conn *v, *x;
        bool too_many = m->n_carried >= carry_max(m);

        /* At most what the worker can hold, and only our own connections. */
        if (too_many || !is_control_connection(m, fd)) {
                safe_close(fd);
                worker_abort(m, "carried %s", too_many ? "more connections than it can have" :
                             "something that is not a control connection");
                return;
        }
        v = reallocarray(m->carried, m->n_carried + 1, sizeof(*v));
        if (!v) {
                safe_close(fd);
                return;
        }
        m->carried = v;
        x = &v[m->n_carried++];
        *x = (struct carried_conn) { .fd = fd, .reexec_id = msg->peer.reexec_id };
        privsep_peer_from_wire(&msg->peer, fd, &x->peer);
}

/* The re-execution failed after the worker let go: the one that asked hears why. */
static void reexec_failed(struct monitor *m, int error) {
        for (size_t i = 0; i < m->n_carried; i++) {
                struct carried_conn *x = &m->carried[i];
                struct pb_msg r;
                uint8_t buf[PB_MSG_MAX];
                int n;

                if (!x->reexec_id)
                        continue;
                proto_set_error(&r, x->reexec_id, error, "cannot execute %s: %s; brokerd keeps serving",
                                m->opt.exe_path, strerror(error));
                r.hdr.version = proto_type_version(PB_MSG_REEXEC);
                n = proto_encode(&r, buf, sizeof(buf));
                if (n > 0)
                        (void) send(x->fd, buf, (size_t) n, MSG_DONTWAIT | MSG_NOSIGNAL);
                x->reexec_id = 0;
        }
}

/* --- the worker's messages ------------------------------------------------- */

/* The requests a worker may send in each state of its life. */
static bool request_in_turn(enum worker_state state, uint8_t type) {
        switch (type) {
        case PS_HELLO:
                return state == WORKER_HELLO;
        case PS_DECLARE_LEASE:
        case PS_NOTE_RESERVED:
        case PS_LAST_GUARD:
        case PS_ARM:
                return state == WORKER_DECLARING;
        case PS_SOCKET:
        case PS_REPLACE:
        case PS_RELEASE:
                return state == WORKER_STARTING || state == WORKER_SERVING;
        case PS_READY:
                return state == WORKER_STARTING;
        case PS_REEXEC_CHECK:
                return state == WORKER_SERVING;
        case PS_CARRY:
        case PS_REEXEC:
                return state == WORKER_REEXEC;          /* only once the binary passed its check */
        default:
                return false;
        }
}

static void handle_request(struct monitor *m, const struct privsep_msg *msg, int fd) {
        char why[PRIVSEP_TEXT_MAX + 1] = "";
        int r;

        if (!request_in_turn(m->worker_state, msg->type)) {
                safe_close(fd);
                worker_abort(m, "sent %s out of turn", privsep_type_name(msg->type));
                return;
        }
        switch (msg->type) {
        case PS_HELLO:
                handle_hello(m, msg);
                break;
        case PS_DECLARE_LEASE:
                handle_declare(m, msg);
                break;
        case PS_NOTE_RESERVED:
                /* Only for a port a declared lease has: else a database could
                 * make the guard take an admin's reservations out. */
                if (!m->armed && lease_table_has_port(&m->leases, msg->reserved.port))
                        guard_note_reserved(&m->guard, msg->reserved.port);
                break;
        case PS_LAST_GUARD:
                snprintf(m->last_guard, sizeof(m->last_guard), "%s", msg->last_guard.dir);
                break;
        case PS_ARM:
                handle_arm(m, msg);
                break;
        case PS_SOCKET:
                handle_socket(m, msg);
                break;
        case PS_REPLACE:
                handle_replace(m, msg->id.lease_id);
                break;
        case PS_RELEASE:
                handle_release(m, msg->id.lease_id);
                break;
        case PS_READY:
                handle_ready(m, msg);
                break;
        case PS_REEXEC_CHECK:
                /* No connection is passed from now on: what the worker has
                 * (or has queued) is all it carries. */
                control_resume(m, false);
                r = reexec_check(m, why, sizeof(why));
                reply_done(m, r < 0 ? -r : 0, "%s", why);
                if (r < 0)
                        control_resume(m, true);
                else
                        m->worker_state = WORKER_REEXEC;
                break;
        case PS_CARRY:
                handle_carry(m, msg, fd);
                break;
        case PS_REEXEC:
                /* Executed once the worker, which flushed its database, is gone. */
                m->reexec_id = msg->reexec.request_id ? msg->reexec.request_id : 1;
                control_resume(m, false);
                break;
        }
}

/* Whether a message waits on fd. */
static bool privsep_pending(int fd) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
}

static int on_request(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct monitor *m = userdata;
        struct privsep_msg msg;
        int msg_fd = -1, r;

        r = privsep_recv(m->req_fd, &msg, &msg_fd, MSG_DONTWAIT);
        if (r == -EAGAIN)
                return 0;
        if (r == -ENOTCONN || r == -ECONNRESET) {
                /* It is exiting: its exit is handled as it comes. */
                sd_event_source_set_enabled(m->req_source, SD_EVENT_OFF);
                return 0;
        }
        if (r < 0) {
                worker_abort(m, "sent a malformed request (%s)", strerror(-r));
                return 0;
        }
        m->in_request = true;
        handle_request(m, &msg, msg_fd);
        m->in_request = false;
        return 0;
}

static int on_worker_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct monitor *m = userdata;
        struct privsep_msg msg;
        int msg_fd = -1, r;

        if (revents & EPOLLOUT)
                pass_pending(m);
        if (!(revents & (EPOLLIN | EPOLLHUP)) || m->ev_fd < 0)
                return 0;
        r = privsep_recv(m->ev_fd, &msg, &msg_fd, MSG_DONTWAIT);
        if (r == -EAGAIN)
                return 0;
        if (r == -ENOTCONN || r == -ECONNRESET) {
                sd_event_source_set_enabled(m->ev_source, SD_EVENT_OFF);
                return 0;
        }
        if (r < 0 || (msg.type != PS_STATUS && msg.type != PS_WANT_UNITS)) {
                safe_close(msg_fd);
                worker_abort(m, "sent a malformed or unexpected event");
                return 0;
        }
        if (msg.type == PS_WANT_UNITS)
                m->want_units = msg.units.want;
        else
                sd_notifyf(false, "STATUS=%u leases, %u rules, %u connections", msg.counts.leases,
                           msg.counts.rules, msg.counts.conns);
        return 0;
}

/* --- the worker's life ------------------------------------------------------- */

/* Forgets the worker's channels (it is gone, or going). */
static void worker_close(struct monitor *m) {
        if (m->stuck_source)
                sd_event_source_set_enabled(m->stuck_source, SD_EVENT_OFF);
        m->req_source = sd_event_source_disable_unref(m->req_source);
        m->ev_source = sd_event_source_disable_unref(m->ev_source);
        m->req_fd = safe_close(m->req_fd);
        m->ev_fd = safe_close(m->ev_fd);
        m->worker_state = WORKER_HELLO;
        control_resume(m, false);
}

/* argv of the worker: ours, with --worker after the program. NULL when out of memory. */
static char **worker_argv(const struct monitor *m) {
        size_t n = 0;
        char **argv;

        while (m->opt.argv[n])
                n++;
        argv = calloc(n + 2, sizeof(*argv));
        if (!argv)
                return NULL;
        argv[0] = (char *) m->opt.exe_path;
        argv[1] = (char *) "--worker";
        for (size_t i = 1; i < n; i++)
                argv[i + 1] = m->opt.argv[i];
        return argv;
}

/* In the child: the channels at their numbers, nothing else open but the
 * standard streams, no privilege, then the worker. Never returns. */
static void __attribute__((noreturn)) worker_exec(const struct monitor *m, pid_t monitor_pid, int req_fd, int ev_fd,
                                                  char **argv) {
        sigset_t none;
        int null_fd, r;

        /* Out of the way of 3 and 4 first, then into them (dup2 clears close-on-exec). */
        req_fd = fcntl(req_fd, F_DUPFD_CLOEXEC, 10);
        ev_fd = fcntl(ev_fd, F_DUPFD_CLOEXEC, 10);
        if (req_fd < 0 || ev_fd < 0 || dup2(req_fd, PRIVSEP_WORKER_REQ_FD) < 0 || dup2(ev_fd, PRIVSEP_WORKER_EV_FD) < 0)
                _exit(127);
        close_range(PRIVSEP_WORKER_EV_FD + 1, ~0U, 0);
        /* No terminal of ours to type into (TIOCSTI) or signal: a session of its own, stdin /dev/null. */
        null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || setsid() < 0)
                _exit(127);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        sandbox_sanitizer_env();
        /* systemd talks to the monitor only. */
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_PID");
        unsetenv("WATCHDOG_USEC");
        r = sandbox_drop(m->worker_uid, m->worker_gid);
        if (r < 0) {
                fprintf(stderr, "brokerd: event=error: cannot drop the worker's privileges: %s\n", strerror(-r));
                _exit(127);
        }
        /* The worker goes with the monitor (set after the credentials
         * changed, which clears it; kept across our own execve()). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != monitor_pid)
                _exit(127);
        execv(m->opt.exe_path, argv);
        fprintf(stderr, "brokerd: event=error: cannot execute the worker %s: %s\n", m->opt.exe_path,
                strerror(errno));
        _exit(127);
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

static int worker_spawn(struct monitor *m) {
        int req[2] = { -1, -1 }, ev[2] = { -1, -1 }, r;
        char **argv = worker_argv(m);
        pid_t self = getpid(), pid;

        if (!argv)
                return -ENOMEM;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, req) < 0 ||
            socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ev) < 0) {
                r = -errno;
                goto out;
        }
        pid = fork();
        if (pid < 0) {
                r = -errno;
                goto out;
        }
        if (pid == 0)
                worker_exec(m, self, req[1], ev[1], argv);
        m->worker_pid = pid;
        m->req_fd = req[0];
        m->ev_fd = ev[0];
        req[0] = ev[0] = -1;
        /* News sent during a request may wait while the worker reads it; a
         * worker that does not read cannot hold the monitor longer. */
        (void) setsockopt(m->req_fd, SOL_SOCKET, SO_SNDTIMEO, &(struct timeval) { .tv_sec = 10 },
                          sizeof(struct timeval));
        sd_event_now(m->event, CLOCK_MONOTONIC, &m->worker_started_usec);
        log_event(LOG_INFO, "worker", &(struct log_fields) LOG_FIELDS_NONE, "started the worker: pid %d, uid %u",
                  (int) pid, (unsigned) m->worker_uid);
        r = sd_event_add_child(m->event, &m->worker_source, pid, WEXITED, on_worker_exit, m);
        if (r >= 0)
                r = sd_event_add_io(m->event, &m->req_source, m->req_fd, EPOLLIN, on_request, m);
        if (r >= 0)
                r = sd_event_add_io(m->event, &m->ev_source, m->ev_fd, EPOLLIN, on_worker_event, m);
        if (r < 0) {
                (void) kill(pid, SIGKILL);
                worker_close(m);
        }
out:
        safe_close(req[0]);
        safe_close(req[1]);
        safe_close(ev[0]);
        safe_close(ev[1]);
        free(argv);
        return r;
}

static int on_respawn(sd_event_source *s, uint64_t usec, void *userdata) {
        struct monitor *m = userdata;
        int r = worker_spawn(m);

        if (r < 0) {
                log_event(LOG_ERR, "error", &(struct log_fields) LOG_FIELDS_NONE,
                          "cannot start a worker: %s; trying again", strerror(-r));
                sd_event_source_set_time_relative(m->respawn_source, RESPAWN_MAX_USEC);
                sd_event_source_set_enabled(m->respawn_source, SD_EVENT_ONESHOT);
        }
        return 0;
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        struct monitor *m = userdata;
        struct log_fields f = LOG_FIELDS_NONE;
        uint64_t now, delay = 0;
        int r;

        /* What it said before it went (a re-execution's connections) comes
         * first: what was queued, bounded (the queue's own limit). */
        for (size_t i = 0, most = carry_max(m) + 64; i < most && m->req_fd >= 0 &&
                             sd_event_source_get_enabled(m->req_source, NULL) > 0 && privsep_pending(m->req_fd); i++)
                on_request(m->req_source, m->req_fd, EPOLLIN, m);
        m->worker_source = sd_event_source_disable_unref(m->worker_source);
        m->worker_pid = 0;
        worker_close(m);
        if (m->stopping) {
                sd_event_exit(m->event, 0);
                return 0;
        }
        if (!m->ready) {
                /* The first worker could not start (it said why): nor can brokerd. */
                log_msg(LOG_ERR, "the worker exited before brokerd was ready; stopping");
                sd_event_exit(m->event, -ECHILD);
                return 0;
        }
        if (m->reexec_id) {
                m->reexec_id = 0;
                r = reexec(m);          /* returns only on failure */
                log_event(LOG_ERR, "error", &f, "cannot execute %s again: %s; this brokerd keeps serving",
                          m->opt.exe_path, strerror(-r));
                reexec_failed(m, -r);
        } else if (si->si_code == CLD_EXITED)
                log_event(si->si_status == 0 ? LOG_WARNING : LOG_ERR, si->si_status == 0 ? "worker" : "error", &f,
                          "the worker exited with status %d; starting another (every socket stays open)",
                          si->si_status);
        else
                log_event(LOG_ERR, "error", &f, "the worker was killed by signal %d (%s); starting another "
                          "(every socket stays open)", si->si_status, strsignal(si->si_status));
        /* A worker that keeps dying at once (a database it cannot open) is
         * started again more and more slowly, not in a tight loop. */
        sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        if (now - m->worker_started_usec < QUICK_DEATH_USEC) {
                for (unsigned i = 0, d = RESPAWN_MIN_USEC; i <= m->quick_deaths && d <= RESPAWN_MAX_USEC; i++, d *= 2)
                        delay = d;
                m->quick_deaths++;
        } else
                m->quick_deaths = 0;
        sd_event_source_set_time_relative(m->respawn_source, delay);
        sd_event_source_set_enabled(m->respawn_source, SD_EVENT_ONESHOT);
        return 0;
}

/* --- start and stop ------------------------------------------------------------ */

static int on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct monitor *m = userdata;

        if (m->worker_pid > 0) {
                log_msg(LOG_WARNING, "the worker did not stop within %llu s; killing it",
                        STOP_TIMEOUT_USEC / USEC_PER_SEC);
                (void) kill(m->worker_pid, SIGKILL);
        }
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct monitor *m = userdata;

        if (m->stopping)
                return 0;
        log_msg(LOG_INFO, "received %s; stopping", strsignal((int) si->ssi_signo));
        m->stopping = true;
        control_resume(m, false);
        if (m->worker_pid <= 0)
                return sd_event_exit(m->event, 0);
        /* The reservations matter most while brokerd is down: put back now,
         * while the worker can still record which are ours. */
        guard_reserve_leases(&m->guard, &m->leases);
        (void) kill(m->worker_pid, SIGTERM);
        return sd_event_add_time_relative(m->event, NULL, CLOCK_MONOTONIC, STOP_TIMEOUT_USEC, 0, on_stop_timeout, m);
}

/* Started as root, the monitor hands the database to the worker's uid,
 * after the checks the worker makes itself (safepath.h): its directory
 * (made if need be) and, of the database and its -wal and -shm files,
 * those that are root's (a database from before the split). Nothing else
 * is touched; anything planted is refused, naming it. */
static int chown_failed(const char *path, uid_t uid) {
        int r = -errno;

        log_msg(LOG_ERR, "cannot give %s to the worker's uid %u: %s", path, (unsigned) uid, strerror(-r));
        return r;
}

static int db_for_worker(const struct monitor *m) {
        static const char *const suffixes[] = { "", "-wal", "-shm" };
        char dir[PATH_MAX], control_dir[PATH_MAX], name[PATH_MAX + 8];
        struct stat st, control_st;
        int r;

        if (geteuid() != 0 || m->worker_uid == 0)
                return 0;
        r = safepath_parent_dir(m->opt.db_path, dir, sizeof(dir));
        if (r >= 0)
                r = safepath_parent_dir(m->opt.control_path, control_dir, sizeof(control_dir));
        if (r < 0) {
                log_msg(LOG_ERR, "path too long: %s", m->opt.db_path);
                return r;
        }
        r = safepath_private_dir(dir, 0700, m->worker_uid);
        if (r < 0)
                return r;
        if (lstat(dir, &st) < 0)
                return -errno;
        /* The worker may write its database's directory, never the control
         * socket's (it could put another socket in its place). */
        if (!getenv("LISTEN_FDS") && stat(control_dir, &control_st) == 0 && control_st.st_dev == st.st_dev &&
            control_st.st_ino == st.st_ino) {
                log_msg(LOG_ERR, "the database (%s) must be in a directory of its own, not the control socket's: the "
                        "worker (uid %u) writes it", m->opt.db_path, (unsigned) m->worker_uid);
                return -EPERM;
        }
        if (st.st_uid == 0 && lchown(dir, m->worker_uid, m->worker_gid) < 0)
                return chown_failed(dir, m->worker_uid);
        for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
                snprintf(name, sizeof(name), "%s%s", m->opt.db_path, suffixes[i]);
                if (lstat(name, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0 && !(st.st_mode & 022) &&
                    lchown(name, m->worker_uid, m->worker_gid) < 0)
                        return chown_failed(name, m->worker_uid);
                r = safepath_owned_file(name, m->worker_uid);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The uid the worker runs as: --user (default portbroker) when we are
 * root, else ours (there is no privilege to change it, nor to keep from it). */
static int worker_user(struct monitor *m) {
        const char *user = m->opt.worker_user ? m->opt.worker_user : SANDBOX_DEFAULT_USER;

        if (geteuid() != 0) {
                m->worker_uid = geteuid();
                m->worker_gid = getegid();
                return 0;
        }
        if (sandbox_lookup_user(user, &m->worker_uid, &m->worker_gid) < 0) {
                log_msg(LOG_ERR, "no user %s for brokerd's worker: create it (make install and the package do; "
                        "see brokerd(8)) or name another with --user", user);
                return -ENOENT;
        }
        if (m->worker_uid == 0) {
                log_msg(LOG_ERR, "the worker must not run as root (--user %s)", user);
                return -EPERM;
        }
        return 0;
}

static int loop_setup(struct monitor *m) {
        sigset_t mask;
        int r;

        r = sd_event_new(&m->event);
        if (r < 0)
                return r;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m)) < 0 ||
            (r = sd_event_add_time(m->event, &m->respawn_source, CLOCK_MONOTONIC, 0, 10 * 1000, on_respawn, m)) < 0 ||
            (r = sd_event_add_time(m->event, &m->stuck_source, CLOCK_MONOTONIC, 0, 10 * 1000, on_stuck, m)) < 0)
                return r;
        sd_event_source_set_enabled(m->respawn_source, SD_EVENT_OFF);
        sd_event_source_set_enabled(m->stuck_source, SD_EVENT_OFF);
        (void) sd_event_set_watchdog(m->event, true);
        return 0;
}

int monitor_new(const struct broker_options *opt, struct monitor **ret) {
        struct monitor *m = calloc(1, sizeof(*m));
        int r;

        if (!m)
                return -ENOMEM;
        /* Under its unit the worker has our uid: our memory and /proc files are not its to read. */
        (void) prctl(PR_SET_DUMPABLE, 0, 0, 0);
        m->opt = *opt;
        m->control_fd = m->req_fd = m->ev_fd = m->guard_dir_fd = -1;
        m->backlog = kernel_listen_backlog(opt->backlog);
        guard_init(&m->guard);

        r = kernel_boot_id(m->boot_id, sizeof(m->boot_id));
        if (r >= 0)
                r = peer_self_init(&m->self);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot read the broker's own namespaces: %s", strerror(-r));
                goto fail;
        }
        r = worker_user(m);
        if (r >= 0)
                r = db_for_worker(m);
        if (r >= 0)
                r = loop_setup(m);
        if (r >= 0)
                r = fdstore_take(m);
        if (r >= 0)
                r = unix_dirs_open(&m->unix_dirs, opt->unix_dirs, opt->n_unix_dirs);
        if (r >= 0) {
                r = guard_open(&m->guard, &m->opt.guard, m->guard_dir_fd);
                m->guard_dir_fd = -1;
                m->guard.record_reserved = monitor_record_reserved;
                m->guard.userdata = m;
        }
        if (r >= 0)
                r = control_setup(m);
        if (r >= 0)
                r = worker_spawn(m);
        if (r < 0)
                goto fail;
        *ret = m;
        return 0;

fail:
        monitor_free(m);
        return r;
}

int monitor_run(struct monitor *m, int ready_fd) {
        int r;

        m->detach = ready_fd >= 0;
        /* The worker's PS_READY sends READY=1; the daemonizing parent waits for it too. */
        while (!m->ready) {
                r = sd_event_run(m->event, UINT64_MAX);
                if (r < 0 || sd_event_get_state(m->event) == SD_EVENT_FINISHED) {
                        sd_event_get_exit_code(m->event, &r);
                        goto done;
                }
        }
        if (ready_fd >= 0) {
                /* Detached: the parent exits; from now on we log to the journal or syslog. */
                int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);

                (void) !write(ready_fd, "", 1);
                safe_close(ready_fd);
                log_setup_detached();
                if (devnull >= 0) {
                        dup2(devnull, STDERR_FILENO);
                        safe_close(devnull);
                }
        }
        r = sd_event_loop(m->event);
done:
        sd_notify(false, "STOPPING=1");
        guard_reserve_leases(&m->guard, &m->leases);
        return r;
}

void monitor_free(struct monitor *m) {
        if (!m)
                return;
        if (m->worker_pid > 0) {
                (void) kill(m->worker_pid, SIGKILL);
                (void) waitpid(m->worker_pid, NULL, 0);
        }
        m->worker_source = sd_event_source_disable_unref(m->worker_source);
        worker_close(m);
        m->respawn_source = sd_event_source_disable_unref(m->respawn_source);
        m->stuck_source = sd_event_source_disable_unref(m->stuck_source);
        for (size_t i = 0; i < m->n_pending; i++) {
                safe_close(m->pending[i].fd);
                peer_done(&m->pending[i].peer);
        }
        free(m->pending);
        for (size_t i = 0; i < m->leases.n; i++)
                lease_free(m->leases.by_id[i]);
        lease_table_done(&m->leases);
        fdstore_done(m);
        m->guard_dir_fd = safe_close(m->guard_dir_fd);
        guard_close(&m->guard);
        unix_dirs_close(&m->unix_dirs);
        control_done(m);
        sd_event_unref(m->event);
        free(m);
}
