/* SPDX-License-Identifier: MIT */
/*
 * The bind guard: brokerd's side of the cgroup BPF programs that refuse
 * bind() of a leased endpoint to everyone but brokerd (bpf/bind-guard.bpf.c).
 * The programs hang on pinned links in bpffs, so they go on guarding while
 * brokerd is down; each start loads them afresh with a map filled from the
 * leases and swaps them in atomically (bpf_link_update), so an upgrade
 * takes over too. Off, with one line saying why, where the kernel or our
 * privileges refuse BPF; then every call here is a no-op.
 */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "endpoint.h"

struct lease_table;

#define GUARD_DEFAULT_DIR "/sys/fs/bpf/portbroker"
#define GUARD_DIR_FDNAME "guard-dir"    /* the locked directory, carried across a re-exec */

struct guard_options {
        bool off;                       /* --no-guard */
        const char *dir;                /* --guard-dir: where the links are pinned (bpffs) */
        const char *cgroup;             /* --guard-cgroup: attach point; NULL: cgroup v2's root */
};

struct bpf_object;
struct port_set;

struct guard {
        bool on;                        /* the programs are attached and follow our map */
        bool eperm;                     /* the variant that refuses with EPERM (before Linux 5.18) */
        char state[PATH_MAX + 128];     /* for status and logs: where it guards, or why it is off */
        struct bpf_object *obj;         /* the programs and maps, until they are attached */
        int leases_fd;                  /* map of guard keys, -1 off */
        int allowed_fd;                 /* map of socket cookies brokerd is binding, -1 off */
        int dir_fd;                     /* the pin directory, locked against a second brokerd */
        int cgroup_fd;                  /* the cgroup the programs attach to */
        char dir[PATH_MAX];             /* the pin directory */
        uint64_t netns;                 /* our network namespace's cookie */
        struct port_set *ours;          /* ports brokerd put in ip_local_reserved_ports */
        bool reserve_failed;            /* that sysctl cannot be written: said once */
        /* Told when a port becomes one of ours or stops being one (ours),
         * to keep that in the database; NULL: nobody. Returns 0 or -errno. */
        int (*record_reserved)(unsigned port, bool ours, void *userdata);
        void *userdata;
};

/* An unopened guard: off, no handles (what guard_close() accepts). */
void guard_init(struct guard *g);

/* Checks what the guard needs and locks its directory (or takes
 * passed_dir_fd, the directory locked by the image before a re-exec, when
 * it is the same; consumed); nothing is loaded yet. Returns 0 (when the
 * guard cannot be had, g->state says why, logged once), or -EBUSY when
 * another brokerd uses o->dir. */
int guard_open(struct guard *g, const struct guard_options *o, int passed_dir_fd);

/* Notes that brokerd put port in ip_local_reserved_ports before (as the
 * database says), so that a release takes it out again. Before guard_arm(). */
void guard_note_reserved(struct guard *g, unsigned port);

/* Guards endpoint e (one more lease needs it): refuses others' bind() of
 * it and keeps its port in net.ipv4.ip_local_reserved_ports, out of the
 * kernel's own choice of a port. Returns 0 or -errno (nothing changed; a
 * sysctl that cannot be written is only said, once). A no-op when off. */
int guard_add(struct guard *g, const struct pb_endpoint *e);

/* Stops guarding e for one lease (the endpoint is free once no lease needs
 * it); unless port_still_leased, takes its port out of the reserved ports
 * when we put it there. */
void guard_remove(struct guard *g, const struct pb_endpoint *e, bool port_still_leased);

/* Removes the guard pinned in dir, unless a brokerd runs on it: what this
 * brokerd's database says it guarded from last, when that is not where it
 * guards now (or it runs unguarded). Else that guard would go on refusing
 * binds from a map nobody updates, our own binds included. */
void guard_drop(const char *dir);

/* Loads the programs with a map of every lease in t (room for max_leases,
 * or more when t holds more) and attaches them: takes the pinned links over
 * (an earlier brokerd's) or creates and pins them. Call before binding
 * anything. Returns 0; on failure the guard is off, logged. */
int guard_arm(struct guard *g, const struct lease_table *t, unsigned max_leases);

/* Puts every port of t in ip_local_reserved_ports again (an admin's write
 * of that sysctl replaces the whole list), and takes out ours that no lease
 * needs. At arm, and at stop: the reservations matter most while brokerd
 * is down. A no-op when off. */
void guard_reserve_leases(struct guard *g, const struct lease_table *t);

/* bind() of fd to sa past the guard: brokerd's own sockets. Returns 0 or -errno. */
int guard_bind(const struct guard *g, int fd, const struct sockaddr *sa, socklen_t len);

/* Closes our handles; the pinned programs go on guarding. */
void guard_close(struct guard *g);
