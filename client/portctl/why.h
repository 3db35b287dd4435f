/* SPDX-License-Identifier: MIT */
/*
 * portctl why's private interface: the evidence it gathers about one
 * endpoint (struct why) and the files that fill and judge it. why.c parses
 * the arguments and runs the steps; why-diag.c lists the sockets on the port
 * (sock_diag); why-proc.c finds and describes the processes holding them
 * (/proc); why-probe.c binds throwaway sockets to see what bind() says;
 * why-verdict.c picks the verdict, evidence lines and fix; why-output.c
 * prints them as text or JSON.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "endpoint.h"
#include "portbroker.h"

#define WHY_MAX_LIST 8                  /* processes or connections named one by one */

enum {                                  /* TCP states as sock_diag reports them */
        ST_ESTABLISHED = 1, ST_SYN_SENT, ST_SYN_RECV, ST_FIN_WAIT1, ST_FIN_WAIT2, ST_TIME_WAIT,
        ST_CLOSE, ST_CLOSE_WAIT, ST_LAST_ACK, ST_LISTEN, ST_CLOSING, ST_NEW_SYN_RECV,
        ST_BOUND_INACTIVE,
};

struct why_sock {
        int family;                     /* AF_INET or AF_INET6 as reported */
        bool v4;                        /* an IPv4 address (AF_INET or v4-mapped) */
        uint8_t addr[16];               /* local address; v4 in the first 4 bytes when v4 */
        uint8_t raddr[16];              /* remote address, same layout */
        uint16_t rport;
        uint8_t state;
        int v6only;                     /* IPV6_V6ONLY of an AF_INET6 socket, -1 unknown */
        uint32_t inode;                 /* 0 for TIME_WAIT and orphans */
        uint32_t uid;
        uint32_t expires_ms;
        uint32_t rqueue, wqueue;        /* LISTEN: queued connections, backlog */
        bool relevant;                  /* its address conflicts with the endpoint's */
};

struct why_holder {
        uint32_t inode;
        pid_t pid;
        int fd;                         /* its number in pid's fd table, not an fd of ours */
};

struct why_proc {
        pid_t pid, ppid, pgid;
        uid_t uid;
        char comm[64];
        char cmd[256];                  /* cmdline, spaces for NULs, printable ASCII only */
        char unit[128];                 /* systemd unit from the cgroup path, "" if none */
        char cgroup[256];
};

struct why {
        const char *text;               /* the endpoint as given */
        struct pb_endpoint ep;
        char canon[PB_ENDPOINT_STRLEN];
        uid_t uid;                      /* whose bind() is evaluated */
        gid_t gid;
        bool as_given;
        char user[64];                  /* name or number of uid */

        long unpriv_start, range_lo, range_hi, bindv6only, tw_reuse;
        char reserved[256];             /* net.ipv4.ip_local_reserved_ports */

        struct why_sock *socks;
        size_t nsocks, asocks;
        struct why_holder *holders;
        size_t nholders, aholders;
        unsigned unreadable;            /* processes whose fds we could not read */

        int probe[3];                   /* bind's errno (positive): plain, SO_REUSEADDR, SO_REUSEPORT; 0 ok; -1 not run */
        bool probe_as_user;             /* the probes ran as uid (else as ourselves) */

        int broker;                     /* -1 not reachable, 0 no lease, 1 lease */
        char broker_msg[300];
        pb_lease lease;
        int guard;                      /* brokerd's bind guard: 1 on, 0 off, -1 not known */
        char guard_state[256];          /* where it guards, or why it is off */

        const char *verdict;
        char *summary, *fix;
        char **ev;
        size_t nev, aev;
        bool oom;
};

/* --- predicates on sockets -------------------------------------------------------- */

/* A socket that holds the port for new binds: bound or listening TCP, any UDP socket. */
static inline bool why_is_listener(const struct why *w, const struct why_sock *s) {
        if (w->ep.transport == PB_UDP)
                return true;
        return s->state == ST_LISTEN || s->state == ST_CLOSE || s->state == ST_BOUND_INACTIVE;
}

static inline bool why_is_closing(uint8_t st) {
        return st == ST_FIN_WAIT1 || st == ST_FIN_WAIT2 || st == ST_TIME_WAIT || st == ST_CLOSE_WAIT ||
               st == ST_LAST_ACK || st == ST_CLOSING;
}

static inline bool why_is_connection(uint8_t st) {
        return st == ST_ESTABLISHED || st == ST_SYN_SENT || st == ST_SYN_RECV;
}

/* --- why-verdict.c ------------------------------------------------------------------ */

/* Appends one evidence line (w->oom on failure). */
void why_evidence(struct why *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns a new formatted string, or NULL with w->oom set. */
char *why_fmt(struct why *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets w->verdict, w->summary, w->fix and the evidence from what was gathered. */
void why_decide(struct why *w);

/* --- why-diag.c --------------------------------------------------------------------- */

/* Fills w->socks with the sockets on the endpoint's port and transport (IPv4 and IPv6),
 * each marked relevant when its address overlaps the endpoint's. Returns 0 or -errno. */
int why_list_sockets(struct why *w);

/* The TCP state's name ("LISTEN"), "?" when unknown. */
const char *why_state_name(uint8_t st);

/* addr:port of s's family ("127.0.0.1:80", "[::1]:80") into buf. */
void why_format_addr(const struct why_sock *s, const uint8_t *addr, uint16_t port, char *buf, size_t size);

/* --- why-proc.c --------------------------------------------------------------------- */

/* Reads a small file into buf (NUL-terminated, trailing newlines dropped). Returns its length or -errno. */
ssize_t why_read_file(const char *path, char *buf, size_t size);

/* Fills w->holders with the processes holding the sockets in w->socks; counts in
 * w->unreadable those whose fds we may not read. Returns 0 or -errno. */
int why_scan_holders(struct why *w);

/* What /proc says about pid. Returns 0 or -ESRCH. */
int why_proc_info(pid_t pid, struct why_proc *ret);

/* fd's close-on-exec flag in pid: 1, 0, or -1 unknown. */
int why_fd_cloexec(pid_t pid, int fd);

/* True when every holder of inode inherited it from a process that is gone. */
bool why_all_inherited(const struct why *w, uint32_t inode);

/* One evidence line (prefixed what) per process holding inode; returns how many hold it. */
size_t why_describe_holders(struct why *w, uint32_t inode, const char *what);

/* --- why-probe.c -------------------------------------------------------------------- */

/* Fills w->probe: bind() of the endpoint plain, with SO_REUSEADDR, with SO_REUSEPORT, as
 * w->uid in a child when that is not us and we are root (w->probe_as_user says whether). */
void why_run_probes(struct why *w);

/* The name of a probe's errno ("EADDRINUSE"; "ok" for 0). */
const char *why_errno_name(int e);

/* --- why-output.c ------------------------------------------------------------------- */

void why_print_text(const struct why *w);
void why_print_json(const struct why *w);
