/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the worker's whole connection state machine: brokerd's
 * own broker.c, conn.c, request.c, watch.c, monitor-wrap.c, lease.c,
 * policy.c and store.c (a real SQLite database in a private temporary
 * directory, on /dev/shm when it can), on the real sd-event loop, made with
 * broker_new() as `brokerd --worker` makes it. Its monitor is a stand-in
 * here that speaks the real message set (privsep.h) over the same two
 * SOCK_SEQPACKET socketpairs and answers as monitor.c does: the state
 * (guard on), every request in its turn, a real loopback socket of the
 * right transport for each lease (kept across worker restarts, as the
 * monitor keeps them), PS_RESERVED before a reply when asked to, carried
 * connections handed to the next worker after a re-execution. It answers
 * inline: the worker waits for each reply in poll(), which this target
 * wraps (-Wl,--wrap=poll), so a run is one thread and, but for timers,
 * deterministic.
 *
 * An input is a program. Its operations connect clients (PS_CONN with a
 * peer it picks: root, users, an --admin-group member, peers in doubt or
 * unidentified; a pid, a unit), send requests built with the encoder,
 * raw or mutated bytes, oversized messages, messages with fds or
 * credentials attached, empty messages; half-close and close clients; run
 * the loop until nothing is pending; act as a holder on sockets received
 * (shutdown(), listen(), SO_REUSEPORT, filters, locked filters, connect());
 * make the monitor fail the next socket, reserve ports, allow a
 * re-execution; send PS_RESERVED events; restart the worker.
 *
 * Checked, abort() on failure: the worker never exit()s, never binds a
 * socket itself, sends only requests of the message set in their turn (a
 * lease it asks for is one it has, under the same endpoint) and only
 * PS_STATUS/PS_WANT_UNITS events; its loop settles (no busy loop); every
 * reply decodes, answers the client's requests in order (same id, the
 * request's type or an error; an error for a malformed message, which
 * then ends the connection; none for an empty one), and comes with an fd
 * exactly when it is a GET reply: a socket the monitor gave for that lease
 * (its cookie), of the endpoint's transport, fit to use whatever a holder
 * did (TCP listening; UDP not connected, no SO_REUSEADDR; no SO_REUSEPORT,
 * no filter); on a connection still open once the loop settles,
 * every request was answered, and a half-closed one is closed. After each
 * input every client is closed (and every fd received): the worker has no
 * connection left; the fds open in the process are those before the input
 * plus the leases' sockets (the worker's and the monitor's) that STATUS
 * reports, and a pidfd per holder process (at least as many as one lease
 * lists, at most all they list); then an admin releases every lease and
 * removes every rule, and the process is back to exactly its fds before
 * the input. One worker serves every input (replaced by one on a fresh
 * database every FUZZ_CONN_RESTART inputs, 1000 by default);
 * BROKERD_LOG_LEVEL shows its log (silent but for critical lines otherwise),
 * FUZZ_CONN_TRACE=1 what each input does. The named files in
 * tests/fuzz/corpus/conn reproduce the bugs it found (fixed since).
 *
 * Standalone (gcc, no libFuzzer): `make build/fuzz_conn`, linked with
 * tests/fuzz/driver.c; `build/fuzz_conn FILE` replays a crash file.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker-int.h"
#include "fd-util.h"
#include "fdpass.h"
#include "privsep.h"
#include "proto.h"
#include "sockopt.h"

#define CLIENTS_MAX 24                  /* open at once */
#define SENT_MAX 64                     /* requests per client */
#define HELD_MAX 16                     /* sockets clients received and still hold */
#define SEEN_MAX 32                     /* lease and rule ids learnt from replies */
#define TURNS_MAX 20000                 /* loop iterations before "it never settles" */
#define CARRIED_MAX 4096                /* more than the event channel holds */
#define STANDIN_LEASES_MAX 64
#define ADMIN_GID 4242
#define RESTART_DEFAULT 1000
#define RESTARTS_PER_INPUT 2
#define OVERSIZE_MAX (2 * PB_MSG_MAX)

/* brokerd's options as --worker gets them, with small limits so inputs reach them. */
static struct broker_options options = {
        .control_path = "/run/portbroker-fuzz/control.sock",
        .admin_group = { .set = true, .gid = ADMIN_GID, .name = "fuzzadm" },
        .backlog = 64,
        .max_connections = 16,
        .max_connections_per_user = 4,
        .idle_timeout_sec = 10,
        .max_connection_age_sec = 600,
        .max_leases_per_user = 6,
        .max_leases = 24,
        .unix_dirs = { "/run/pb-fuzz" },        /* the worker only checks paths against it */
        .n_unix_dirs = 1,
        .exe_path = "/proc/self/exe",
};

static size_t n_inputs, n_requests, n_replies, n_granted, n_bad, n_reexecs, n_restarts, n_replaced, n_accepted,
        n_log_events;

/* --- the stand-in monitor ----------------------------------------------------- */

struct standin_lease {
        uint64_t id;
        struct pb_endpoint endpoint;
        int fd;                         /* the monitor's copy, -1 when a fresh bind failed */
        bool declared;                  /* by the current worker */
};

enum standin_state { ST_HELLO, ST_DECLARING, ST_STARTING, ST_SERVING, ST_REEXEC, ST_GONE };

struct carried {
        int fd;
        struct privsep_peer peer;
};

static struct standin {
        int req_fd, ev_fd;              /* the monitor's ends of the channels */
        int worker_req_fd, worker_ev_fd; /* the worker's */
        enum standin_state state;
        struct standin_lease leases[STANDIN_LEASES_MAX];
        size_t n_leases;
        bool want_units;                /* the worker asked for peers' units */
        int fail_errno;                 /* the next socket bound fails with this (0: none) */
        bool reserve;                   /* PS_RESERVED with every new socket and release */
        int reexec_error;               /* the answer to PS_REEXEC_CHECK (0: go ahead) */
        bool kept;                      /* a held socket is told as kept (fd store) */
        struct carried carried[CARRIED_MAX];
        size_t n_carried;
        bool reexec;                    /* PS_REEXEC came: the worker stops now */
        uint64_t files_made;            /* Unix sockets' files, as birth times */
} sm = { .req_fd = -1, .ev_fd = -1, .worker_req_fd = -1, .worker_ev_fd = -1 };

/* The sockets given to the worker lately, for lease ids. */
#define GIVEN_MAX 4096                  /* more than one loop run can bind */
static struct given {
        uint64_t lease_id, cookie;
} given[GIVEN_MAX];
static unsigned n_given;

static struct broker *b;
static bool in_input;
static bool trace;                      /* FUZZ_CONN_TRACE=1: what each input does, on stderr */
static unsigned restarts_left;          /* worker restarts (and re-executions) this input may still make:
                                         * each costs as much as a hundred requests */

#define TRACE(...)                                                              \
        do {                                                                    \
                if (trace) {                                                    \
                        fprintf(stderr, "fuzz_conn: ");                         \
                        fprintf(stderr, __VA_ARGS__);                           \
                        fputc('\n', stderr);                                    \
                }                                                               \
        } while (0)

static void sm_reply(const struct privsep_msg *m, int fd) {
        int r = privsep_send(sm.req_fd, m, fd, MSG_DONTWAIT);

        CHECK(r == 0);
}

static void sm_done(int error, const char *why) {
        struct privsep_msg m = { .type = PS_DONE, .done.error = error };

        snprintf(m.done.why, sizeof(m.done.why), "%s", why);
        sm_reply(&m, -1);
}

static void sm_state(void) {
        struct privsep_msg m = { .type = PS_STATE, .state = { .guard_on = true } };

        snprintf(m.state.guard_state, sizeof(m.state.guard_state), "on: the fuzz stand-in guards nothing");
        snprintf(m.state.guard_dir, sizeof(m.state.guard_dir), "/run/portbroker-fuzz/guard");
        sm_reply(&m, -1);
}

static struct standin_lease *sm_lease(uint64_t id) {
        for (size_t i = 0; i < sm.n_leases; i++)
                if (sm.leases[i].id == id)
                        return &sm.leases[i];
        return NULL;
}

static bool sm_has_port(uint16_t port, const struct standin_lease *except) {
        for (size_t i = 0; i < sm.n_leases; i++)
                if (&sm.leases[i] != except && !endpoint_is_unix(&sm.leases[i].endpoint) &&
                    sm.leases[i].endpoint.port_lo == port)
                        return true;
        return false;
}

/* A socket for e as the monitor binds one (on loopback, any port: the
 * worker cannot tell), or the failure the input asked for. */
static int sm_bind(const struct pb_endpoint *e, int *ret_fd) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        bool tcp = e->transport == PB_TCP;
        int fd, r = -sm.fail_errno;

        sm.fail_errno = 0;
        if (r < 0)
                return r;
        if (endpoint_is_unix(e)) {              /* no file: an abstract name the kernel picks */
                sa_family_t unix_family = AF_UNIX;

                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                CHECK(fd >= 0 && bind(fd, (struct sockaddr *) &unix_family, sizeof(unix_family)) == 0);
                CHECK(listen(fd, (int) options.backlog) == 0);
                *ret_fd = fd;
                return 0;
        }
        fd = socket(AF_INET, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0);
        CHECK(!tcp || sockopt_set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) == 0);
        CHECK(bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0);
        CHECK(!tcp || listen(fd, (int) options.backlog) == 0);
        *ret_fd = fd;
        return 0;
}

static void sm_socket_reply(uint64_t id, int error, const struct standin_lease *l, uint8_t how) {
        struct privsep_msg m = { .type = PS_SOCKET_REPLY,
                                 .socket = { .lease_id = id, .error = error, .how = error ? 0 : how } };

        if (!error && endpoint_is_unix(&l->endpoint))   /* the file it would have made */
                m.socket.file = (struct unix_file) { .dev = 1, .ino = id, .born = ++sm.files_made };
        if (!error) {
                m.socket.cookie = socket_cookie(l->fd);
                given[n_given++ % GIVEN_MAX] = (struct given) { .lease_id = id, .cookie = m.socket.cookie };
        }
        sm_reply(&m, error ? -1 : l->fd);
}

/* A port reserved (or no longer), told on the request channel before the reply. */
static void sm_reserved(uint16_t port, bool ours) {
        struct privsep_msg m = { .type = PS_RESERVED, .reserved = { .port = port, .ours = ours } };

        if (sm.reserve)
                sm_reply(&m, -1);
}

static void sm_handle_socket(const struct privsep_msg *m) {
        struct standin_lease *l = sm_lease(m->lease.lease_id);
        int r;

        if (l) {
                uint8_t how = sm.kept ? PS_HOW_KEPT : PS_HOW_HELD;

                /* monitor.c kills a worker asking for a lease as something else. */
                CHECK(endpoint_equal(&l->endpoint, &m->lease.endpoint));
                if (l->fd < 0) {
                        r = sm_bind(&l->endpoint, &l->fd);
                        if (r < 0) {
                                sm_socket_reply(l->id, -r, NULL, 0);
                                return;
                        }
                        how = PS_HOW_BOUND;
                }
                sm_socket_reply(l->id, 0, l, how);
                return;
        }
        /* A new lease: the worker's table has no other lease for it, nor more than it may. */
        for (size_t i = 0; i < sm.n_leases; i++)
                CHECK(!endpoint_equal(&sm.leases[i].endpoint, &m->lease.endpoint));
        CHECK(sm.n_leases < options.max_leases);
        l = &sm.leases[sm.n_leases];
        *l = (struct standin_lease) { .id = m->lease.lease_id, .endpoint = m->lease.endpoint, .declared = true };
        r = sm_bind(&l->endpoint, &l->fd);
        if (r < 0) {
                sm_socket_reply(l->id, -r, NULL, 0);
                return;
        }
        sm.n_leases++;
        if (!endpoint_is_unix(&l->endpoint) && !sm_has_port(l->endpoint.port_lo, l))
                sm_reserved(l->endpoint.port_lo, true);
        sm_socket_reply(l->id, 0, l, PS_HOW_BOUND);
}

static void sm_handle_replace(uint64_t id) {
        struct standin_lease *l = sm_lease(id);
        int r;

        CHECK(l);                       /* only a lease the worker has */
        l->fd = safe_close(l->fd);
        r = sm_bind(&l->endpoint, &l->fd);
        sm_socket_reply(id, r < 0 ? -r : 0, l, PS_HOW_BOUND);
        n_replaced++;
}

static void sm_handle_release(uint64_t id) {
        struct standin_lease *l = sm_lease(id);
        uint16_t port;

        CHECK(l);                       /* only a lease the worker has */
        port = endpoint_is_unix(&l->endpoint) ? 0 : l->endpoint.port_lo;
        safe_close(l->fd);
        *l = sm.leases[--sm.n_leases];
        if (port && !sm_has_port(port, NULL))
                sm_reserved(port, false);
        sm_done(0, "");
}

/* The most connections a worker may carry across a re-execution, as
 * monitor.c's carry_max() says: those it serves and those the event
 * channel can hold unread (each message with its fd takes over 256 bytes). */
static size_t sm_carry_max(void) {
        int sndbuf = sockopt_get_int(sm.ev_fd, SOL_SOCKET, SO_SNDBUF);

        return (size_t) options.max_connections + (size_t) (sndbuf > 0 ? sndbuf : 256 * 1024) / 256 + 64;
}

/* Whether the worker may send type now (monitor.c's request_in_turn()). */
static bool sm_in_turn(uint8_t type) {
        switch (type) {
        case PS_HELLO:
                return sm.state == ST_HELLO;
        case PS_DECLARE_LEASE:
        case PS_NOTE_RESERVED:
        case PS_LAST_GUARD:
        case PS_ARM:
                return sm.state == ST_DECLARING;
        case PS_SOCKET:
        case PS_REPLACE:
        case PS_RELEASE:
                return sm.state == ST_STARTING || sm.state == ST_SERVING;
        case PS_READY:
                return sm.state == ST_STARTING;
        case PS_REEXEC_CHECK:
                return sm.state == ST_SERVING;
        case PS_CARRY:
        case PS_REEXEC:
                return sm.state == ST_REEXEC;
        default:
                return false;
        }
}

static void sm_handle(const struct privsep_msg *m, int fd) {
        struct standin_lease *l;
        int type = 0;

        if (!sm_in_turn(m->type)) {
                fprintf(stderr, "fuzz_conn: the worker sent %s out of turn (state %d)\n",
                        privsep_type_name(m->type), sm.state);
                CHECK(!"a request in its turn");
        }
        switch (m->type) {
        case PS_HELLO:
                CHECK(m->hello.version == PRIVSEP_VERSION);
                for (size_t i = 0; i < sm.n_leases; i++)
                        sm.leases[i].declared = false;
                sm.state = ST_DECLARING;
                sm_state();
                break;
        case PS_DECLARE_LEASE:
                /* Its database has only leases the monitor made for it, as they are. */
                l = sm_lease(m->lease.lease_id);
                CHECK(l && endpoint_equal(&l->endpoint, &m->lease.endpoint) && !l->declared);
                l->declared = true;
                break;
        case PS_NOTE_RESERVED:
                CHECK(m->reserved.ours);
                break;
        case PS_LAST_GUARD:
                break;
        case PS_ARM:
                /* Nothing it holds was lost: the database has every lease. */
                for (size_t i = 0; i < sm.n_leases; i++)
                        CHECK(sm.leases[i].declared);
                sm.state = ST_STARTING;
                sm_state();
                break;
        case PS_SOCKET:
                sm_handle_socket(m);
                break;
        case PS_REPLACE:
                sm_handle_replace(m->id.lease_id);
                break;
        case PS_RELEASE:
                sm_handle_release(m->id.lease_id);
                break;
        case PS_READY:
                sm.state = ST_SERVING;
                sm_done(0, "");
                break;
        case PS_REEXEC_CHECK:
                if (restarts_left == 0)
                        sm_done(EAGAIN, "the fuzz stand-in has re-executed enough for one input");
                else
                        sm_done(sm.reexec_error, sm.reexec_error ? "the fuzz stand-in says no" : "");
                if (!sm.reexec_error && restarts_left > 0) {
                        restarts_left--;
                        sm.state = ST_REEXEC;
                }
                break;
        case PS_CARRY:
                /* Only control connections, and no more than monitor.c's carry_max(). */
                if (sm.n_carried >= sm_carry_max())
                        fprintf(stderr, "fuzz_conn: the worker carries more than %zu connections across a "
                                "re-execution\n", sm_carry_max());
                CHECK(fd >= 0 && sm.n_carried < sm_carry_max() && sm.n_carried < CARRIED_MAX);
                CHECK(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &(socklen_t) { sizeof(type) }) == 0 &&
                      type == SOCK_SEQPACKET);
                sm.carried[sm.n_carried++] = (struct carried) { .fd = fd, .peer = m->peer };
                return;
        case PS_REEXEC:
                sm.reexec = true;
                sm.state = ST_GONE;
                break;
        }
        CHECK(fd < 0);
}

/* The next message from the worker on fd (a channel's monitor end), and
 * its fd: false when none waits; anything outside the message set fails. */
static bool sm_next(int fd, struct privsep_msg *ret, int *ret_fd) {
        int r;

        *ret_fd = -1;
        r = privsep_recv(fd, ret, ret_fd, MSG_DONTWAIT);
        if (r == -EAGAIN)
                return false;
        if (r < 0)
                fprintf(stderr, "fuzz_conn: no valid message from the worker: %s\n", strerror(-r));
        CHECK(r == 0);
        return true;
}

/* Answers every request the worker sent. */
static void sm_serve(void) {
        struct privsep_msg m;
        int fd;

        while (sm_next(sm.req_fd, &m, &fd))
                sm_handle(&m, fd);
}

/* Reads the worker's events: only PS_STATUS and PS_WANT_UNITS, without fds. */
static void sm_events(void) {
        struct privsep_msg m;
        int fd;

        while (sm_next(sm.ev_fd, &m, &fd)) {
                CHECK(fd < 0 && (m.type == PS_STATUS || m.type == PS_WANT_UNITS));
                if (m.type == PS_WANT_UNITS)
                        sm.want_units = m.units.want;
        }
}

/* The worker waits for its reply here: the monitor answers first. */
int __real_poll(struct pollfd *fds, nfds_t n, int timeout);
int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout);
int __wrap_poll(struct pollfd *fds, nfds_t n, int timeout) {
        int r;

        if (n != 1 || sm.worker_req_fd < 0 || fds[0].fd != sm.worker_req_fd)
                return __real_poll(fds, n, timeout);
        sm_serve();
        r = __real_poll(fds, n, 0);
        if (r == 0)
                fprintf(stderr, "fuzz_conn: the worker waits for a reply to a request that has none\n");
        CHECK(r > 0);
        return r;
}

/* The worker never binds: the monitor does (lease.c's lease_bind() is the monitor's). */
int guard_bind(const struct guard *g, int fd, const struct sockaddr *sa, socklen_t len) {
        CHECK(!"the worker binds a socket itself");
        return -EPERM;
}

/* --- the worker's life ---------------------------------------------------------- */

/* Starts a worker as the monitor does: fresh channels, broker_new(), then
 * what broker_run() does before its loop, and the connections carried
 * across a re-execution. */
static void worker_start(void) {
        int req[2], ev[2];

        CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, req) == 0);
        CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ev) == 0);
        sm.req_fd = req[0], sm.worker_req_fd = req[1];
        sm.ev_fd = ev[0], sm.worker_ev_fd = ev[1];
        sm.state = ST_HELLO;
        sm.reexec = sm.want_units = false;
        CHECK(broker_new(&options, sm.worker_req_fd, sm.worker_ev_fd, &b) == 0);
        CHECK(sm.state == ST_STARTING);
        mm_want_units(b);
        mm_ready(b, 0);
        CHECK(sm.state == ST_SERVING);
        sm_serve();
        sm_events();
        for (size_t i = 0; i < sm.n_carried; i++) {
                struct privsep_msg m = { .type = PS_CONN, .peer = sm.carried[i].peer };

                CHECK(privsep_send(sm.ev_fd, &m, sm.carried[i].fd, MSG_DONTWAIT) == 0);
                safe_close(sm.carried[i].fd);
        }
        sm.n_carried = 0;
}

/* Stops the worker (as if it died: what it had not read is lost). */
static void worker_stop(void) {
        broker_free(b);
        b = NULL;
        sm_serve();
        sm.req_fd = safe_close(sm.req_fd);
        sm.ev_fd = safe_close(sm.ev_fd);
        sm.worker_req_fd = safe_close(sm.worker_req_fd);
        sm.worker_ev_fd = safe_close(sm.worker_ev_fd);
}

/* The worker's loop ended: only for a re-execution the monitor was asked for. */
static void worker_reexec(void) {
        TRACE("re-execution: %zu connections carried", sm.n_carried);
        CHECK(b->reexecuting && sm.reexec);
        worker_stop();
        worker_start();
        n_reexecs++;
}

/* Runs the loop until nothing is pending. (Requests that wait for a reply
 * are answered in poll(); the rest, and the worker's events, here.) */
static void run_loop(void) {
        for (unsigned turns = 0;; turns++) {
                int r;

                CHECK(turns < TURNS_MAX);       /* it settles: no busy loop */
                if (sd_event_get_state(b->event) == SD_EVENT_FINISHED) {
                        sm_serve();
                        worker_reexec();
                        continue;
                }
                r = sd_event_run(b->event, 0);
                CHECK(r >= 0);
                if (r == 0 && sd_event_get_state(b->event) != SD_EVENT_FINISHED)
                        break;
        }
        sm_serve();
        sm_events();
}

/* --- clients ------------------------------------------------------------------ */

enum sent_kind {
        SENT_REQUEST,                   /* a valid request: answered with its type or an error */
        SENT_BAD,                       /* malformed: an error, then the connection ends */
        SENT_EMPTY,                     /* no bytes: the connection ends without a reply */
};

struct sent {
        uint8_t kind;                   /* enum sent_kind */
        uint16_t type;
        uint32_t id;
        struct pb_endpoint endpoint;    /* GET's */
        uint64_t before_id;             /* LOG's */
        uint8_t limit;                  /* LOG's */
};

struct client {
        int fd;                         /* our end; -1: a free slot */
        bool half_closed;               /* we shut our side down */
        bool eof;                       /* the worker closed its side */
        bool ended;                     /* it answered what ends the connection: nothing may follow */
        struct sent sent[SENT_MAX];
        unsigned n_sent, n_answered;
        uint32_t uid;                   /* the peer's */
        bool admin;                     /* root, our uid or in --admin-group: reads every uid's events */
};

static struct client clients[CLIENTS_MAX];
static int held[HELD_MAX];              /* sockets received, as their holders keep them */
static unsigned n_held;
static uint64_t seen_leases[SEEN_MAX], seen_rules[SEEN_MAX];
static unsigned n_seen_leases, n_seen_rules;
static int devnull_fd = -1, listener_fd = -1;
static bool reserved_events;            /* PS_RESERVED events were sent: undone at the end */

static void seen(uint64_t *v, unsigned *n, uint64_t id) {
        if (*n < SEEN_MAX)
                v[(*n)++] = id;
}

/* Every request brokerd knows: programs pick from these. */
static const uint16_t request_types[] = {
        PB_MSG_GET, PB_MSG_RELEASE, PB_MSG_STATUS, PB_MSG_POLICY_ADD, PB_MSG_POLICY_REMOVE, PB_MSG_POLICY_LIST,
        PB_MSG_REEXEC, PB_MSG_INFO, PB_MSG_CHECK, PB_MSG_POLICY_TEST, PB_MSG_POLICY_BEGIN, PB_MSG_POLICY_COMMIT,
};

static bool is_request_type(uint16_t type) {
        if (type == PB_MSG_LOG)
                return true;
        for (size_t i = 0; i < ELEMENTSOF(request_types); i++)
                if (request_types[i] == type)
                        return true;
        return false;
}

/* A LOG reply to s on c: a page newest first, below the cursor, within
 * the limit, its cursor moving on; a non-admin's own uid's events only. */
static void check_log_page(const struct client *c, const struct sent *s, const struct pb_event_list *l) {
        uint64_t below = s->before_id ? s->before_id : UINT64_MAX;

        CHECK(l->count <= (s->limit ? s->limit : PB_EVENTS_MAX));
        for (unsigned i = 0; i < l->count; i++) {
                CHECK(l->events[i].id < below);
                below = l->events[i].id;
                CHECK(c->admin || l->events[i].uid == c->uid);
        }
        n_log_events += l->count;
        if (l->more) {
                CHECK(l->next_id <= below && (!s->before_id || l->next_id < s->before_id));
        }
}

/* Whether s may be sent on c now. */
static bool may_send(const struct client *c, const struct sent *s) {
        return c->n_sent < SENT_MAX && !c->half_closed;
}

static void sent(struct client *c, const struct sent *s, size_t len) {
        TRACE("client %d: sent %zu bytes: %s type %u id %u", (int) (c - clients), len,
              s->kind == SENT_REQUEST ? "request" : s->kind == SENT_BAD ? "malformed" : "empty", s->type, s->id);
        c->sent[c->n_sent++] = *s;
        n_requests++;
}

/* Sends a message on c, fd attached when fd >= 0; records it when it went. */
static void client_send(struct client *c, const uint8_t *buf, size_t len, const struct sent *s, int fd) {
        if (!may_send(c, s) || fdpass_send(c->fd, buf, len, fd, MSG_DONTWAIT) < 0)
                return;                 /* not now, full, or the worker closed it */
        sent(c, s, len);
}

/* The length of fd's socket filter (0: none), as SO_GET_FILTER tells when asked with no room. */
static socklen_t filter_length(int fd) {
        socklen_t len = 0;

        CHECK(getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, NULL, &len) == 0);
        return len;
}

/* What a socket a GET reply carried must be: one the monitor gave the
 * worker for that lease (the lease may be gone or its socket replaced
 * since), of the transport asked for, fit to use. */
static void check_got_socket(const struct pb_msg *r, int fd) {
        uint64_t cookie = socket_cookie(fd);
        int type = sockopt_get_int(fd, SOL_SOCKET, SO_TYPE);
        bool found = false;

        for (unsigned i = 0; i < GIVEN_MAX && i < n_given && !found; i++)
                found = given[(n_given - 1 - i) % GIVEN_MAX].lease_id == r->got.lease_id &&
                        given[(n_given - 1 - i) % GIVEN_MAX].cookie == cookie;
        CHECK(found);
        CHECK(type == (r->got.endpoint.transport == PB_UDP ? SOCK_DGRAM : SOCK_STREAM));
        CHECK(sockopt_get_int(fd, SOL_SOCKET, SO_REUSEPORT) == 0);
        if (r->got.endpoint.transport != PB_UDP)
                CHECK(sockopt_get_int(fd, SOL_SOCKET, SO_ACCEPTCONN) == 1);
        else {
                struct sockaddr_storage ss;

                CHECK(sockopt_get_int(fd, SOL_SOCKET, SO_REUSEADDR) == 0);
                CHECK(getpeername(fd, (struct sockaddr *) &ss, &(socklen_t) { sizeof(ss) }) < 0 && errno == ENOTCONN);
        }
        CHECK(filter_length(fd) == 0);
}

static void hold(int fd) {
        if (n_held == HELD_MAX) {
                safe_close(fd);
                return;
        }
        held[n_held++] = fd;
}

/* One reply on c: it decodes, and answers c's oldest unanswered message. */
static void check_reply(struct client *c, const uint8_t *buf, size_t len, int fd) {
        struct pb_msg r;
        const struct sent *s;

        CHECK(!c->ended);               /* nothing after what ends a connection */
        CHECK(proto_decode(buf, len, &r) == 0);
        CHECK(r.hdr.type == PB_MSG_ERROR ||
              ((r.hdr.type & PB_MSG_REPLY) && is_request_type(r.hdr.type & ~PB_MSG_REPLY)));
        CHECK((fd >= 0) == (r.hdr.type == (PB_MSG_GET | PB_MSG_REPLY)));
        n_replies++;
        TRACE("client %d: reply type %#x id %u%s%s", (int) (c - clients), r.hdr.type, r.hdr.id,
              r.hdr.type == PB_MSG_ERROR ? ": " : "", r.hdr.type == PB_MSG_ERROR ? r.error.message : "");

        /* Refused at a limit, before any request was read. */
        if (c->n_answered == 0 && r.hdr.type == PB_MSG_ERROR && r.hdr.id == 0 && r.error.code == EUSERS) {
                c->ended = true;
                return;
        }
        /* A zero-length packet reads like the end (PROTOCOL.md), but when the
         * client shut down too, fdpass_recv() cannot tell it from an early
         * EOF and reads on (message_behind_eof()): what follows it is served. */
        while (c->half_closed && c->n_answered < c->n_sent && c->sent[c->n_answered].kind == SENT_EMPTY)
                c->n_answered++;
        CHECK(c->n_answered < c->n_sent);       /* no reply to nothing */
        s = &c->sent[c->n_answered++];
        switch (s->kind) {
        case SENT_EMPTY:
                CHECK(!"a reply to an empty message, which ends the connection");
                break;
        case SENT_BAD:
                CHECK(r.hdr.type == PB_MSG_ERROR);
                c->ended = true;
                n_bad++;
                break;
        case SENT_REQUEST:
                CHECK(r.hdr.id == s->id);
                if (r.hdr.type == PB_MSG_ERROR)
                        break;
                CHECK(r.hdr.type == (s->type | PB_MSG_REPLY));
                switch (s->type) {
                case PB_MSG_GET:
                        CHECK(endpoint_equal(&r.got.endpoint, &s->endpoint));
                        check_got_socket(&r, fd);
                        seen(seen_leases, &n_seen_leases, r.got.lease_id);
                        n_granted++;
                        break;
                case PB_MSG_STATUS:
                        for (unsigned i = 0; i < r.leases.count; i++)
                                seen(seen_leases, &n_seen_leases, r.leases.leases[i].id);
                        break;
                case PB_MSG_POLICY_ADD:
                        seen(seen_rules, &n_seen_rules, r.rule_id.rule_id);
                        break;
                case PB_MSG_POLICY_TEST:        /* what it names is there: a rule, a lease */
                        if (r.policy_tested.rule.id)
                                seen(seen_rules, &n_seen_rules, r.policy_tested.rule.id);
                        if (r.policy_tested.lease_id)
                                seen(seen_leases, &n_seen_leases, r.policy_tested.lease_id);
                        break;
                case PB_MSG_REEXEC:
                        CHECK(r.reexec.pid == (uint32_t) getpid());
                        break;
                case PB_MSG_INFO:
                        CHECK(r.info.pid == (uint32_t) getpid() && r.info.guard == 1);
                        break;
                case PB_MSG_LOG:
                        check_log_page(c, s, &r.events);
                        break;
                }
        }
}

/* Reads every reply waiting on c. */
static void client_read(struct client *c) {
        static uint8_t buf[PB_MSG_MAX + 1];

        while (c->fd >= 0 && !c->eof) {
                union {
                        struct cmsghdr align;
                        char buf[CMSG_SPACE(sizeof(int) * 4)];
                } control;
                struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                                     .msg_controllen = sizeof(control.buf) };
                int fds[4], nfds = 0;
                ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

                if (n < 0 && errno == EAGAIN)
                        return;
                /* The worker closed its end with messages of ours unread: the
                 * kernel says so once, before the replies still queued. */
                if (n < 0 && errno == ECONNRESET)
                        continue;
                CHECK(n >= 0);
                for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
                        CHECK(cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS);
                        for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++)
                                memcpy(&fds[nfds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                }
                CHECK(!(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) && nfds <= 1);
                if (n == 0) {
                        CHECK(nfds == 0);
                        c->eof = true;
                        return;
                }
                check_reply(c, buf, (size_t) n, nfds ? fds[0] : -1);
                if (nfds)
                        hold(fds[0]);
        }
}

static void client_close(struct client *c) {
        c->fd = safe_close(c->fd);
}

/* Runs the loop, reads every reply; on a connection still open, every
 * request was answered, and one we half-closed is closed. */
static void settle(void) {
        run_loop();
        for (size_t i = 0; i < CLIENTS_MAX; i++) {
                struct client *c = &clients[i];

                if (c->fd < 0)
                        continue;
                client_read(c);
                if (c->eof)
                        continue;
                if (c->n_answered != c->n_sent)
                        fprintf(stderr, "fuzz_conn: client %zu: %u of %u messages answered on an open connection "
                                "(next: type %u id %u)\n", i, c->n_answered, c->n_sent,
                                c->sent[c->n_answered].type, c->sent[c->n_answered].id);
                CHECK(c->n_answered == c->n_sent);
                CHECK(!c->half_closed);
                CHECK(!c->ended);
        }
}

/* --- the program ---------------------------------------------------------------- */

struct program {
        const uint8_t *p;
        size_t left;
};

static uint8_t take8(struct program *pr) {
        if (!pr->left)
                return 0;
        pr->left--;
        return *pr->p++;
}

static struct client *pick_client(uint8_t k) {
        unsigned n = 0;

        for (size_t i = 0; i < CLIENTS_MAX; i++)
                n += clients[i].fd >= 0;
        if (!n)
                return NULL;
        k %= n;
        for (size_t i = 0; i < CLIENTS_MAX; i++)
                if (clients[i].fd >= 0 && k-- == 0)
                        return &clients[i];
        return NULL;
}

/* Who connects: the peer as the monitor identified it. */
static const struct privsep_peer identities[] = {
        { .uid = 0, .gid = 0, .account = 0 },                                   /* root: an admin */
        { .uid = 1000, .gid = 1000, .account = 1000 },
        { .uid = 1001, .gid = 1001, .account = 1001 },
        { .uid = 1002, .gid = ADMIN_GID, .account = 1002 },                     /* in --admin-group */
        { .uid = 101000, .gid = 101000, .account = 1000, .doubt = "the peer is in another user namespace" },
        { .uid = UINT32_MAX, .gid = UINT32_MAX, .account = UINT32_MAX, .unidentified = true,
          .doubt = "cannot read the peer's credentials" },
        { .uid = 1000, .gid = 1000, .account = 1000, .doubt = "a doubt the worker does not know" },
};
static const char *const units[] = { "web@1.service", "db.service" };

/* Connects a client: PS_CONN with its end of a fresh pair, as the monitor passes one. */
static struct client *connect_client(const struct privsep_peer *who) {
        struct privsep_msg m = { .type = PS_CONN, .peer = *who };
        struct client *c = NULL;
        int sv[2], r;

        for (size_t i = 0; i < CLIENTS_MAX && !c; i++)
                if (clients[i].fd < 0)
                        c = &clients[i];
        if (!c)
                return NULL;
        CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
        r = privsep_send(sm.ev_fd, &m, sv[1], MSG_DONTWAIT);
        safe_close(sv[1]);
        if (r == -EAGAIN) {             /* the monitor keeps it waiting; here it is dropped */
                safe_close(sv[0]);
                return NULL;
        }
        CHECK(r == 0);
        *c = (struct client) { .fd = sv[0], .uid = who->uid,
                               .admin = who->uid == 0 || who->uid == getuid() || who->gid == ADMIN_GID };
        TRACE("client %d: connected as uid %u (%s) pid %d unit '%s'", (int) (c - clients), who->uid,
              who->doubt[0] ? who->doubt : "certain", who->pid, who->unit);
        return c;
}

static void op_connect(struct program *pr) {
        uint8_t who = take8(pr), pid = take8(pr);
        struct privsep_peer p = identities[(who & 0x7f) % ELEMENTSOF(identities)];

        p.pid = pid ? 1000 + pid % 8 : 0;       /* more distinct pids than a lease watches */
        if (sm.want_units && (who & 0x80))      /* units only when the worker asks for them */
                snprintf(p.unit, sizeof(p.unit), "%s", units[pid >> 7]);
        connect_client(&p);
}

static const uint16_t ports[] = { 80, 443, 53, 8000, 8080, 8099, 9000, 65535 };
static const uint32_t principal_ids[] = { 0, 1000, 1001, 1002, ADMIN_GID };

/* An endpoint from one byte: transport, address (any, 127.0.0.1, 0.0.0.0, ::1; any with
 * bit 6: the IPv6-only wildcard), port; with bits 6 and 7 a Unix path instead, in the
 * --unix-dir but for port 7's (bits 3-5). */
static struct pb_endpoint endpoint_of(uint8_t a) {
        struct pb_endpoint e = { .transport = a & 1 ? PB_UDP : PB_TCP };

        if ((a & 0xc0) == 0xc0) {
                e = (struct pb_endpoint) { .transport = PB_UNIX };
                snprintf(e.path, sizeof(e.path), "%s/s%u", ((a >> 3) & 7) == 7 ? "/run/pb-elsewhere" : "/run/pb-fuzz",
                         (a >> 3) & 7);
                return e;
        }

        e.port_lo = e.port_hi = ports[(a >> 3) & 7];
        switch ((a >> 1) & 3) {
        case 0:
                if (a & 0x40)
                        e.family = PB_FAMILY_INET6;     /* tcp6:[::]:P */
                break;
        case 1:
                e.family = PB_FAMILY_INET;
                memcpy(e.addr, (uint8_t[]) { 127, 0, 0, 1 }, 4);
                break;
        case 2:
                e.family = PB_FAMILY_INET;
                break;
        case 3:
                e.family = PB_FAMILY_INET6;
                e.addr[15] = 1;
                break;
        }
        return e;
}

static size_t n_event_kinds(void) {
        size_t n = 0;

        while (proto_event_kinds[n])
                n++;
        return n;
}

/* A request from the program: type (its low 7 bits: 0x7f LOG, else one of
 * request_types; bit 7: sent in the newest version), fields from two
 * bytes, the id. */
static void build_request(struct program *pr, struct pb_msg *m) {
        uint8_t t = take8(pr), a = take8(pr), f = take8(pr);
        static const uint16_t widths[] = { 0, 1, 99, 65535 };

        memset(m, 0, sizeof(*m));
        /* LOG from two values only, so that older inputs keep their meaning. */
        m->hdr.type = (t & 0x7f) == 0x7f ? PB_MSG_LOG : request_types[(t & 0x7f) % ELEMENTSOF(request_types)];
        m->hdr.version = t & 0x80 ? PB_PROTO_VERSION : PB_PROTO_VERSION_MIN;
        m->hdr.id = take8(pr);
        switch (m->hdr.type) {
        case PB_MSG_GET:
        case PB_MSG_RELEASE:
        case PB_MSG_CHECK:
                m->get.endpoint = endpoint_of(a);
                break;
        case PB_MSG_STATUS:
                m->status.has_endpoint = f & 1;
                if (f & 1)
                        m->status.endpoint = endpoint_of(a);
                if ((f & 2) && n_seen_leases)
                        m->status.after_id = seen_leases[(f >> 2) % n_seen_leases];
                break;
        case PB_MSG_POLICY_ADD:
                m->policy_add.pattern = endpoint_of(a);
                if (endpoint_is_unix(&m->policy_add.pattern)) {        /* a width: the directory */
                        if ((f >> 6) & 3)
                                strrchr(m->policy_add.pattern.path, '/')[1] = '\0';
                        m->policy_add.perm = (struct pb_socket_perm) {
                                .gid = f & 0x20 ? PB_SOCKET_GROUP_NONE : ADMIN_GID, .mode = f & 0x10 ? 0660 : 0600 };
                } else
                        m->policy_add.pattern.port_hi = (uint16_t) (m->policy_add.pattern.port_lo +
                                                            (widths[(f >> 6) & 3] < 65535u - m->policy_add.pattern.port_lo ?
                                                             widths[(f >> 6) & 3] : 65535u - m->policy_add.pattern.port_lo));
                m->policy_add.principal.kind = (uint8_t) (PB_PRINCIPAL_USER + (f & 3) % 3);
                if (m->policy_add.principal.kind == PB_PRINCIPAL_UNIT)
                        snprintf(m->policy_add.principal.unit, sizeof(m->policy_add.principal.unit), "%s",
                                 units[(f >> 2) & 1]);
                else
                        m->policy_add.principal.id = principal_ids[((f >> 2) & 7) % ELEMENTSOF(principal_ids)];
                /* A reservation (one endpoint), for its user or the admin's uid. */
                if ((t & 0x40) && endpoint_validate(&m->policy_add.pattern, false) == 0) {
                        m->policy_add.attrs.flags = PB_RULE_RESERVE;
                        if (m->policy_add.principal.kind != PB_PRINCIPAL_USER) {
                                m->policy_add.attrs.flags |= PB_RULE_OWNER;
                                m->policy_add.attrs.owner = principal_ids[0];
                        }
                }
                break;
        case PB_MSG_POLICY_BEGIN:
                m->policy_begin.flags = f & PB_POLICY_REPLACE;
                break;
        case PB_MSG_POLICY_REMOVE:
                m->rule_id.rule_id = (a & 0x80) || !n_seen_rules ? a & 0x7f : seen_rules[a % n_seen_rules];
                break;
        case PB_MSG_POLICY_LIST:
                if ((f & 1) && n_seen_rules)
                        m->policy_list.after_id = seen_rules[(f >> 1) % n_seen_rules];
                break;
        case PB_MSG_POLICY_TEST:        /* a uid or none, up to two groups, a unit or none */
                m->policy_test.endpoint = endpoint_of(a);
                m->policy_test.uid = f & 1 ? PB_UID_NONE : principal_ids[((f >> 1) & 7) % ELEMENTSOF(principal_ids)];
                m->policy_test.n_groups = (f >> 4) & 3 ? (uint8_t) (((f >> 4) & 3) - 1) : 0;
                for (unsigned i = 0; i < m->policy_test.n_groups; i++)
                        m->policy_test.groups[i] = principal_ids[(f + i) % ELEMENTSOF(principal_ids)];
                if (f & 0x40)
                        snprintf(m->policy_test.unit, sizeof(m->policy_test.unit), "%s", units[(f >> 7) & 1]);
                break;
        case PB_MSG_LOG:
                m->log.before_id = f & 1 ? a : 0;
                m->log.since = f & 2 ? 1 : 0;
                m->log.until = f & 4 ? INT64_MAX : 0;
                m->log.limit = (uint8_t) (a % (PB_EVENTS_MAX + 1));
                m->log.has_uid = (f >> 3) & 1;
                m->log.uid = m->log.has_uid ? principal_ids[a % ELEMENTSOF(principal_ids)] : 0;
                m->log.has_endpoint = (f >> 4) & 1;
                if (m->log.has_endpoint)
                        m->log.endpoint = endpoint_of(a);
                snprintf(m->log.event, sizeof(m->log.event), "%s",
                         f & 0x20 ? proto_event_kinds[a % n_event_kinds()] : f & 0x40 ? "no-such-kind" : "");
                break;
        }
}

/* How a message of len bytes is to be answered (see enum sent_kind). */
static struct sent classify(const uint8_t *buf, size_t len) {
        struct pb_msg m;

        if (len == 0)
                return (struct sent) { .kind = SENT_EMPTY };
        if (proto_decode(buf, len, &m) < 0 || !is_request_type(m.hdr.type))
                return (struct sent) { .kind = SENT_BAD };
        return (struct sent) { .kind = SENT_REQUEST, .type = m.hdr.type, .id = m.hdr.id, .endpoint = m.get.endpoint,
                               .before_id = m.hdr.type == PB_MSG_LOG ? m.log.before_id : 0,
                               .limit = m.hdr.type == PB_MSG_LOG ? m.log.limit : 0 };
}

static void op_request(struct program *pr) {
        struct client *c = pick_client(take8(pr));
        uint8_t buf[PB_MSG_MAX];
        struct pb_msg m;
        int n;

        build_request(pr, &m);
        n = proto_encode(&m, buf, sizeof(buf));
        CHECK(n > 0);
        if (c) {
                struct sent s = classify(buf, (size_t) n);

                CHECK(s.kind == SENT_REQUEST);
                client_send(c, buf, (size_t) n, &s, -1);
        }
}

/* Raw bytes, as many as the program says; with the header's length and
 * reserved field made right when it asks (else most are rejected at once). */
static void op_raw(struct program *pr) {
        uint8_t k = take8(pr), len = take8(pr), buf[256];
        struct client *c = pick_client(k);
        size_t n = len < pr->left ? len : pr->left;
        struct sent s;

        memcpy(buf, pr->p, n);
        pr->p += n;
        pr->left -= n;
        if ((k & 0x80) && n >= PB_HEADER_SIZE) {
                buf[0] = buf[1] = 0;
                buf[2] = (uint8_t) (n >> 8);
                buf[3] = (uint8_t) n;
                memset(buf + 12, 0, 4);
        }
        s = classify(buf, n);
        if (c)
                client_send(c, buf, n, &s, -1);
}

static void op_oversize(struct program *pr) {
        static uint8_t buf[OVERSIZE_MAX];
        struct client *c = pick_client(take8(pr));
        size_t n = PB_MSG_MAX + 1 + take8(pr) * (size_t) (OVERSIZE_MAX - PB_MSG_MAX - 1) / 255;
        struct pb_msg m;

        build_request(pr, &m);
        memset(buf, 0, sizeof(buf));
        CHECK(proto_encode(&m, buf, sizeof(buf)) > 0);
        if (c)
                client_send(c, buf, n, &(struct sent) { .kind = SENT_BAD }, -1);
}

/* A valid request with control data attached: fds (one to nine, past what
 * the worker makes room for) or our credentials. */
static void op_control(struct program *pr) {
        struct client *c = pick_client(take8(pr));
        uint8_t how = take8(pr), buf[PB_MSG_MAX];
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 9) + CMSG_SPACE(sizeof(struct ucred))];
        } control;
        struct iovec iov = { .iov_base = buf };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf };
        struct cmsghdr *cm;
        struct pb_msg m;
        struct sent s;
        int n, fds[9];
        size_t nfds = how & 0x80 ? 0 : 1 + how % 9;

        build_request(pr, &m);
        n = proto_encode(&m, buf, sizeof(buf));
        CHECK(n > 0);
        if (!c)
                return;
        iov.iov_len = (size_t) n;
        memset(&control, 0, sizeof(control));
        mh.msg_controllen = nfds ? CMSG_SPACE(sizeof(int) * nfds) : CMSG_SPACE(sizeof(struct ucred));
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        if (nfds) {
                for (size_t i = 0; i < nfds; i++)
                        fds[i] = i == 1 && n_held ? held[how % n_held] : i == 2 ? c->fd : devnull_fd;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
                memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
                s = (struct sent) { .kind = SENT_BAD };
        } else {
                /* Credentials reach only a socket that asked for them (SO_PASSCRED): the message is plain. */
                struct ucred cred = { .pid = getpid(), .uid = getuid(), .gid = getgid() };

                cm->cmsg_type = SCM_CREDENTIALS;
                cm->cmsg_len = CMSG_LEN(sizeof(cred));
                memcpy(CMSG_DATA(cm), &cred, sizeof(cred));
                s = classify(buf, (size_t) n);
        }
        TRACE("client %d: with %zu fds (else credentials):", (int) (c - clients), nfds);
        if (may_send(c, &s) && sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) == n)
                sent(c, &s, (size_t) n);
}

static void op_half_close(struct program *pr) {
        struct client *c = pick_client(take8(pr));

        if (c && !c->half_closed) {
                TRACE("client %d: shut down for writing", (int) (c - clients));
                CHECK(shutdown(c->fd, SHUT_WR) == 0);
                c->half_closed = true;
        }
}

static void op_close(struct program *pr) {
        struct client *c = pick_client(take8(pr));

        if (c) {
                TRACE("client %d: closed", (int) (c - clients));
                client_close(c);
        }
}

/* A holder does what it likes with a socket it got. */
static void op_holder(struct program *pr) {
        uint8_t k = take8(pr), a = take8(pr);
        struct sock_filter accept_all[] = { BPF_STMT(BPF_RET | BPF_K, 0xffffffff) };
        struct sock_fprog prog = { .len = 1, .filter = accept_all };
        struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        unsigned i;
        int fd, accepted;

        if (!n_held)
                return;
        i = k % n_held;
        fd = held[i];
        TRACE("holder of socket %u: action %u", i, a % 8);
        switch (a % 8) {
        case 0:
                (void) shutdown(fd, SHUT_RDWR);
                break;
        case 1:
                (void) listen(fd, 1 + a / 8);
                break;
        case 2:
                (void) sockopt_set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
                break;
        case 3:
        case 4:
                (void) setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
                if (a % 8 == 4)
                        (void) sockopt_set_int(fd, SOL_SOCKET, SO_LOCK_FILTER, 1);
                break;
        case 5:
                /* UDP: connected to one peer. TCP: out of LISTEN, then a connection. */
                CHECK(getsockname(listener_fd, (struct sockaddr *) &to, &(socklen_t) { sizeof(to) }) == 0);
                if (sockopt_get_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM)
                        (void) shutdown(fd, SHUT_RDWR);
                (void) connect(fd, (struct sockaddr *) &to, sizeof(to));
                while ((accepted = accept4(listener_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
                        safe_close(accepted);
                break;
        case 6:
                (void) sockopt_set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
                break;
        default:
                safe_close(fd);
                held[i] = held[--n_held];
        }
}

static void op_monitor(struct program *pr) {
        static const int errnos[] = { EADDRINUSE, EACCES, EADDRNOTAVAIL, ENOMEM, EMFILE };
        uint8_t a = take8(pr);

        TRACE("monitor: mode %u (%u)", a % 4, a >> 2);
        switch (a % 4) {
        case 0:
                sm.fail_errno = errnos[(a >> 2) % ELEMENTSOF(errnos)];
                break;
        case 1:
                sm.reserve = !sm.reserve;
                break;
        case 2:
                sm.reexec_error = (a >> 2) & 1 ? 0 : ENOEXEC;
                break;
        default:
                sm.kept = !sm.kept;
        }
}

/* A port brokerd put in ip_local_reserved_ports (or took out), as the monitor tells. */
static void send_reserved(uint16_t port, bool ours) {
        struct privsep_msg m = { .type = PS_RESERVED, .reserved = { .port = port, .ours = ours } };

        (void) privsep_send(sm.ev_fd, &m, -1, MSG_DONTWAIT);
}

static void op_reserved(struct program *pr) {
        uint8_t a = take8(pr);

        send_reserved(ports[a & 7], a & 8);
        reserved_events = true;
}

static void op_restart(struct program *pr) {
        if (restarts_left == 0)
                return;
        restarts_left--;
        TRACE("worker restart");
        worker_stop();
        worker_start();
        n_restarts++;
}

static void (*const ops[])(struct program *pr) = {
        op_connect, op_request, op_raw, op_oversize, op_control, op_half_close, op_close,
        NULL /* run */, op_holder, op_monitor, op_reserved, op_restart,
};

enum { OP_CONNECT, OP_REQUEST, OP_RAW, OP_OVERSIZE, OP_CONTROL, OP_HALF_CLOSE, OP_CLOSE, OP_RUN, OP_HOLDER,
       OP_MONITOR, OP_RESERVED, OP_RESTART };

/* --- after each input: nothing left behind ------------------------------------ */

/* The fds open in the process, but pipes (libFuzzer's symbolizer keeps two
 * once it names a new function; nothing here makes any): pidfds apart. */
struct fds {
        int other, pidfds;
};

static struct fds count_fds(bool show) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        struct fds n = { 0 };

        CHECK(d);
        while ((de = readdir(d))) {
                char target[256] = "";
                struct stat st;
                int fd = atoi(de->d_name);

                if (de->d_name[0] == '.' || fd == dirfd(d) || fstat(fd, &st) < 0 || S_ISFIFO(st.st_mode))
                        continue;
                /* Only anonymous inodes (epoll, signalfd, timerfd, pidfd) have no file type. */
                if ((show || (st.st_mode & S_IFMT) == 0) &&
                    readlinkat(dirfd(d), de->d_name, target, sizeof(target) - 1) < 0)
                        snprintf(target, sizeof(target), "?");
                if (strstr(target, "[pidfd]"))
                        n.pidfds++;
                else
                        n.other++;
                if (show)
                        fprintf(stderr, "  fd %s: %s\n", de->d_name, target);
        }
        closedir(d);
        return n;
}

/* Fails unless the fds open are other fds but pidfds, and pidfds in pidfds_min..pidfds_max. */
static void check_fds(int other, int pidfds_min, int pidfds_max, const char *when) {
        struct fds n = count_fds(false);

        if (n.other != other || n.pidfds < pidfds_min || n.pidfds > pidfds_max) {
                fprintf(stderr, "fuzz_conn: %d fds and %d pidfds open %s, %d and %d to %d expected:\n", n.other,
                        n.pidfds, when, other, pidfds_min, pidfds_max);
                count_fds(true);
        }
        CHECK(n.other == other && n.pidfds >= pidfds_min && n.pidfds <= pidfds_max);
}

/* An admin's request on c; the reply into *ret. */
static void admin_ask(struct client *c, struct pb_msg *req, struct pb_msg *ret) {
        uint8_t buf[PB_MSG_MAX];
        int n;

        req->hdr.id = c->n_sent + 1;
        n = proto_encode(req, buf, sizeof(buf));
        CHECK(n > 0);
        client_send(c, buf, (size_t) n, &(struct sent) { .kind = SENT_REQUEST, .type = req->hdr.type,
                                                         .id = req->hdr.id, .endpoint = req->get.endpoint }, -1);
        CHECK(c->n_sent == req->hdr.id);
        run_loop();
        n = (int) recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        CHECK(n > 0 && proto_decode(buf, (size_t) n, ret) == 0);
        if (ret->hdr.type == PB_MSG_ERROR)
                fprintf(stderr, "fuzz_conn: the admin's request failed: %s\n", ret->error.message);
        CHECK(ret->hdr.type == (req->hdr.type | PB_MSG_REPLY) && ret->hdr.id == req->hdr.id);
        c->n_answered++;
}

/* Root, with no pid (so it holds nothing), on a connection of its own. */
static struct client *admin_connect(void) {
        struct client *c = connect_client(&identities[0]);

        CHECK(c);
        return c;
}

/* Every lease released and every rule removed, by an admin; first, the
 * fds open are checked against baseline and what the leases account for. */
static void reset(struct fds baseline) {
        static struct pb_msg req, reply, list;
        struct pb_endpoint endpoints[STANDIN_LEASES_MAX];
        size_t n = 0, expected;
        unsigned holders = 0, holders_max = 0;
        struct client *c;
        uint64_t after = 0;
        bool more = true;

        if (reserved_events)
                for (size_t i = 0; i < ELEMENTSOF(ports); i++)
                        send_reserved(ports[i], false);
        reserved_events = false;
        if (b->leases.n == 0 && b->policy.n_rules == 0 && sm.n_leases == 0)
                return;                 /* nothing to account for or to undo */
        sm.fail_errno = 0;
        sm.reserve = true;              /* every release unreserves its port */

        c = admin_connect();
        /* The fds: ours, the admin's connection (both ends), and per lease the
         * worker's socket if bound and the monitor's; a pidfd per holder
         * process, which a lease counts once and the leases it holds each. */
        expected = (size_t) baseline.other + 2;
        while (more) {
                /* Version 4: the lists leave out IPv6-only wildcards for older clients. */
                req = (struct pb_msg) { .hdr = { .type = PB_MSG_STATUS, .version = PB_PROTO_VERSION },
                                        .status.after_id = after };
                admin_ask(c, &req, &reply);
                for (unsigned i = 0; i < reply.leases.count; i++) {
                        const struct pb_lease_entry *l = &reply.leases.leases[i];

                        CHECK(n < STANDIN_LEASES_MAX);
                        endpoints[n++] = l->endpoint;
                        expected += l->bound;
                        holders += l->holders;
                        holders_max = l->holders > holders_max ? l->holders : holders_max;
                        after = l->id;
                }
                more = reply.leases.more;
        }
        CHECK(n == b->leases.n && n == sm.n_leases);
        for (size_t i = 0; i < sm.n_leases; i++)
                expected += sm.leases[i].fd >= 0;
        check_fds((int) expected, baseline.pidfds + (int) holders_max, baseline.pidfds + (int) holders,
                  "with every client gone");

        /* Rules first: a release makes the reservations it kept out (of other owners). */
        for (more = true; more;) {
                req = (struct pb_msg) { .hdr = { .type = PB_MSG_POLICY_LIST, .version = PB_PROTO_VERSION } };
                admin_ask(c, &req, &list);
                more = list.rules.more;
                for (unsigned i = 0; i < list.rules.count; i++) {
                        req = (struct pb_msg) { .hdr.type = PB_MSG_POLICY_REMOVE,
                                                .rule_id.rule_id = list.rules.rules[i].id };
                        admin_ask(c, &req, &reply);
                }
        }
        for (size_t i = 0; i < n; i++) {
                req = (struct pb_msg) { .hdr.type = PB_MSG_RELEASE, .get.endpoint = endpoints[i] };
                admin_ask(c, &req, &reply);
        }
        client_close(c);
        run_loop();
        sm.reserve = false;
        CHECK(b->n_conns == 0 && b->leases.n == 0 && b->policy.n_rules == 0 && sm.n_leases == 0);
}

/* --- setup ------------------------------------------------------------------------- */

static char dir[256], db_path[300];
static struct fds baseline = { -1, -1 };

/* Removes the database files in directory d (which stays). */
static void remove_db_in(const char *d) {
        static const char *const suffixes[] = { "", "-wal", "-shm", "-journal" };
        char path[PATH_MAX];

        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                snprintf(path, sizeof(path), "%s/portbroker.db%s", d, suffixes[i]);
                (void) unlink(path);
        }
}

static void remove_db(void) {
        remove_db_in(dir);
}

static void remove_dir(void) {
        if (in_input || !dir[0])
                return;
        remove_db();
        (void) rmdir(dir);
}

/* Our directories in base whose process is gone (a crash skips atexit()): removed. */
static void remove_stale_dirs(const char *base) {
        DIR *d = opendir(base);
        struct dirent *de;

        while (d && (de = readdir(d))) {
                char path[sizeof(dir) + sizeof(de->d_name) + 2];
                int pid;

                if (sscanf(de->d_name, "portbroker-fuzz-%d-", &pid) != 1 || pid <= 0 ||
                    kill(pid, 0) == 0 || errno != ESRCH)
                        continue;
                snprintf(path, sizeof(path), "%s/%s", base, de->d_name);
                remove_db_in(path);
                (void) rmdir(path);
        }
        if (d)
                closedir(d);
}

static void on_exit_check(void) {
        if (in_input) {
                fprintf(stderr, "fuzz_conn: the worker called exit() while serving an input\n");
                abort();
        }
}

static void setup(void) {
        const char *base = getenv("FUZZ_CONN_DIR"), *level = getenv("BROKERD_LOG_LEVEL");
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

        if (!base)
                base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        remove_stale_dirs(base);
        snprintf(dir, sizeof(dir), "%s/portbroker-fuzz-%d-XXXXXX", base, (int) getpid());
        CHECK(mkdtemp(dir));
        snprintf(db_path, sizeof(db_path), "%s/portbroker.db", dir);
        options.db_path = db_path;
        atexit(remove_dir);
        atexit(on_exit_check);
        log_set_max_level(level && log_parse_level(level) >= 0 ? log_parse_level(level) : LOG_CRIT);
        trace = getenv("FUZZ_CONN_TRACE") && strcmp(getenv("FUZZ_CONN_TRACE"), "1") == 0;

        devnull_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        listener_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        CHECK(devnull_fd >= 0 && listener_fd >= 0);
        CHECK(bind(listener_fd, (struct sockaddr *) &a, sizeof(a)) == 0 && listen(listener_fd, 64) == 0);
        for (size_t i = 0; i < CLIENTS_MAX; i++)
                clients[i].fd = -1;
        sm.reexec_error = ENOEXEC;
        worker_start();
        baseline = count_fds(false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static unsigned long restart_every;
        struct program pr = { data, size };
        size_t granted = n_granted;

        if (baseline.other < 0) {
                const char *e = getenv("FUZZ_CONN_RESTART");

                restart_every = e ? strtoul(e, NULL, 0) : RESTART_DEFAULT;
                setup();
        }
        /* The audit trail grows with every input, and a worker's start reads it all (quick_check). */
        if (restart_every && n_inputs && n_inputs % restart_every == 0) {
                worker_stop();
                remove_db();
                worker_start();
        }
        in_input = true;
        n_inputs++;
        n_seen_leases = n_seen_rules = 0;
        restarts_left = RESTARTS_PER_INPUT;
        sm.fail_errno = 0;
        sm.reserve = sm.kept = false;
        sm.reexec_error = ENOEXEC;

        while (pr.left) {
                uint8_t op = take8(&pr) % ELEMENTSOF(ops);

                if (op == OP_RUN) {
                        TRACE("run");
                        settle();
                } else
                        ops[op](&pr);
        }
        settle();

        /* Every client gone (and every socket it got): the worker has no connection left. */
        for (size_t i = 0; i < CLIENTS_MAX; i++)
                client_close(&clients[i]);
        while (n_held)
                safe_close(held[--n_held]);
        run_loop();
        CHECK(b->n_conns == 0);
        reset(baseline);
        check_fds(baseline.other, baseline.pidfds, baseline.pidfds, "after the input");
        in_input = false;
        if (n_granted != granted)
                n_accepted++;
        return 0;
}

/* --- driver hooks ---------------------------------------------------------- */

size_t fuzz_accepted(void) {
        return n_accepted;
}

const char *fuzz_summary(void) {
        static char buf[256];

        snprintf(buf, sizeof(buf), "%zu requests, %zu replies (%zu sockets handed out, %zu malformed refused, "
                 "%zu audit events read), %zu sockets replaced, %zu re-executions, %zu worker restarts", n_requests,
                 n_replies, n_granted, n_bad, n_log_events, n_replaced, n_reexecs, n_restarts);
        return buf;
}

/* Programs are any bytes: nothing to repair. */
void fuzz_fixup(uint8_t *data, size_t size) {
}

/* Seed programs. An endpoint byte is udp (1) | family << 1 (any, 127.0.0.1,
 * 0.0.0.0, ::1) | port << 3 (80, 443, 53, 8000, 8080, 8099, 9000, 65535);
 * a request is OP_REQUEST client type fields id (see build_request()). */
#define CONNECT(who, pid) OP_CONNECT, who, pid
#define REQ(client, type, a, f, id) OP_REQUEST, client, type, a, f, id
#define GET(client, a, id) REQ(client, 0, a, 0, id)
#define T_TCP8080 (4 << 3)
#define T_TCP8000 (3 << 3)
#define T_UDP53 (1 | 1 << 1 | 2 << 3)

static const uint8_t seed_basic[] = {           /* root: get, status, info, release */
        CONNECT(0, 1), GET(0, T_TCP8080, 1), OP_RUN, REQ(0, 2, 0, 0, 2), REQ(0, 0x87, 0, 0, 3),
        REQ(0, 1, T_TCP8080, 0, 4), OP_RUN, REQ(0, 5, 0, 0, 5), OP_RUN,
};
static const uint8_t seed_policy[] = {          /* a rule for uid 1000, whose process shuts the listener down */
        CONNECT(0, 0), REQ(0, 3, T_TCP8000, 0 | 1 << 2 | 2 << 6, 1), OP_RUN, CONNECT(1, 2), GET(1, T_TCP8000, 1),
        OP_RUN, OP_HOLDER, 0, 0, OP_RUN, GET(1, T_TCP8000, 2), OP_RUN, OP_HOLDER, 0, 1, GET(1, T_TCP8000, 3),
        OP_RUN, REQ(1, 2, 0, 0, 4), REQ(0, 5, 0, 0, 2), REQ(0, 4, 0, 0, 3), OP_RUN,
};
static const uint8_t seed_holder[] = {          /* a holder locks a filter on, connects */
        CONNECT(0, 3), GET(0, T_UDP53, 1), GET(0, T_TCP8080, 2), OP_RUN, OP_HOLDER, 0, 5, OP_HOLDER, 0, 6,
        OP_HOLDER, 0, 2, OP_HOLDER, 0, 3, OP_HOLDER, 1, 4, GET(0, T_UDP53, 3), GET(0, T_TCP8080, 4), OP_RUN,
        OP_HOLDER, 1, 5, OP_RUN, GET(0, T_TCP8080, 5), OP_HOLDER, 0, 7, OP_RUN,
};
static const uint8_t seed_bad[] = {             /* garbage, a wrong header, oversized, fds, credentials, empty */
        CONNECT(1, 1), OP_RAW, 0, 5, 'h', 'e', 'l', 'l', 'o', OP_RUN,
        CONNECT(1, 1), OP_RAW, 0x81, 16, 0, 0, 0, 16, 0, 2, 0, 9, 0, 0, 0, 7, 0, 0, 0, 0, OP_RUN,
        CONNECT(2, 1), OP_OVERSIZE, 2, 0, 0, 0, 0, 1, OP_RUN,
        CONNECT(0, 1), OP_CONTROL, 3, 3, 7, 0, 0, 9, OP_CONTROL, 3, 0x80, 7, 0, 0, 10, OP_RUN,
        CONNECT(0, 1), OP_CONTROL, 4, 0x80, 0x87, 0, 0, 11, OP_RUN, OP_RAW, 4, 0, OP_RUN,
};
static const uint8_t seed_limits[] = {          /* one uid's limit, then a full table */
        CONNECT(1, 1), CONNECT(1, 1), CONNECT(1, 1), CONNECT(1, 1), CONNECT(1, 1), OP_RUN,
        CONNECT(2, 1), CONNECT(2, 2), CONNECT(2, 3), CONNECT(3, 1), CONNECT(3, 2), CONNECT(3, 3), CONNECT(3, 4),
        CONNECT(4, 1), CONNECT(5, 1), CONNECT(6, 1), CONNECT(2, 4), CONNECT(0, 0), OP_RUN, CONNECT(0, 0), OP_RUN,
        REQ(17, 2, 0, 0, 1), OP_RUN,
};
static const uint8_t seed_reexec[] = {          /* an allowed re-execution, a request behind it */
        OP_MONITOR, 2 | 1 << 2, CONNECT(0, 1), GET(0, T_TCP8080, 1), OP_RUN, CONNECT(1, 1),
        REQ(0, 6, 0, 0, 7), OP_RUN, REQ(0, 0x87, 0, 0, 8), REQ(1, 2, 0, 0, 9), OP_RUN,
        REQ(0, 6, 0, 0, 10), REQ(0, 0x87, 0, 0, 11), OP_RUN,
};
static const uint8_t seed_restart[] = {         /* leases across a worker restart; ports reserved */
        OP_MONITOR, 1, CONNECT(0, 1), GET(0, T_TCP8080, 1), GET(0, T_TCP8080 | 1, 2), GET(0, T_UDP53, 3), OP_RUN,
        OP_MONITOR, 3, OP_RESERVED, 8 | 3, OP_RESTART, CONNECT(0, 1), REQ(0, 2, 0, 0, 1), GET(0, T_TCP8080, 2),
        OP_RUN, REQ(0, 1, T_UDP53, 0, 3), OP_RUN,
};
static const uint8_t seed_fail[] = {            /* the monitor cannot bind: new, replaced, again */
        OP_MONITOR, 0, CONNECT(0, 1), GET(0, T_TCP8080, 1), OP_RUN, GET(0, T_TCP8080, 2), OP_RUN,
        OP_HOLDER, 0, 4, OP_MONITOR, 4, GET(0, T_TCP8080, 3), OP_RUN, GET(0, T_TCP8080, 4), OP_RUN,
};
static const uint8_t seed_units[] = {           /* a unit rule, and a peer in that unit */
        CONNECT(0, 0), REQ(0, 3, T_TCP8080, 2, 1), OP_RUN, CONNECT(0x81, 2), GET(1, T_TCP8080, 1), OP_RUN,
        CONNECT(0x81, 0x82), GET(2, T_TCP8080, 1), OP_RUN,
};
static const uint8_t seed_doubt[] = {           /* peers in doubt, unidentified; an admin group member */
        CONNECT(4, 1), REQ(0, 7, 0, 0, 1), OP_RUN, CONNECT(5, 1), GET(1, T_TCP8080, 1), OP_RUN,
        CONNECT(6, 1), REQ(2, 2, 0, 0, 1), OP_RUN, CONNECT(3, 1), REQ(3, 3, 0, 1 | 4 << 2, 1), OP_RUN,
        REQ(3, 4, 0, 0, 2), GET(3, T_UDP53, 3), REQ(3, 1, T_UDP53, 0, 4), OP_RUN,
};
static const uint8_t seed_test[] = {            /* a group's rule tested, by uid 1000 in it, by no one; a lease */
        CONNECT(0, 0), REQ(0, 3, T_TCP8000, 1 | 4 << 2, 1), OP_RUN, CONNECT(1, 1),
        REQ(1, 9, T_TCP8000, 1 << 1 | 2 << 4, 1), REQ(1, 9, T_TCP8080, 1 | 0x40, 2), OP_RUN,
        GET(0, T_TCP8000, 2), OP_RUN, REQ(1, 0x89, T_TCP8000, 1 << 1 | 2 << 4, 3), OP_RUN,
};
static const uint8_t seed_half_close[] = {      /* requests, then shutdown(): every one answered first */
        CONNECT(0, 1), GET(0, T_TCP8080, 1), REQ(0, 2, 0, 0, 2), OP_HALF_CLOSE, 0, OP_RUN,
        CONNECT(1, 1), REQ(1, 0x87, 0, 0, 1), OP_HALF_CLOSE, 1, OP_CLOSE, 0, OP_RUN,
};

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size, unsigned flags, void *userdata), void *userdata) {
        static const struct {
                const uint8_t *data;
                size_t size;
        } seeds[] = {
                { seed_basic, sizeof(seed_basic) }, { seed_policy, sizeof(seed_policy) },
                { seed_holder, sizeof(seed_holder) }, { seed_bad, sizeof(seed_bad) },
                { seed_limits, sizeof(seed_limits) }, { seed_reexec, sizeof(seed_reexec) },
                { seed_restart, sizeof(seed_restart) }, { seed_fail, sizeof(seed_fail) },
                { seed_units, sizeof(seed_units) }, { seed_doubt, sizeof(seed_doubt) },
                { seed_half_close, sizeof(seed_half_close) }, { seed_test, sizeof(seed_test) },
        };

        for (size_t i = 0; i < ELEMENTSOF(seeds); i++)
                add(seeds[i].data, seeds[i].size, 0, userdata);
}
