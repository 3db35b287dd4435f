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

#define GUARD_DEFAULT_DIR "/sys/fs/bpf/portbroker"

struct guard_options {
        bool off;                       /* --no-guard */
        const char *dir;                /* --guard-dir: where the links are pinned (bpffs) */
        const char *cgroup;             /* --guard-cgroup: attach point; NULL: cgroup v2's root */
};

struct bpf_object;

struct guard {
        bool on;                        /* the programs are attached and follow our map */
        char state[PATH_MAX + 128];     /* for status and logs: where it guards, or why it is off */
        struct bpf_object *obj;         /* the loaded programs and maps */
        int leases_fd;                  /* map of guard keys (owned by obj), -1 off */
        int allowed_fd;                 /* map of socket cookies brokerd is binding (owned by obj) */
        int dir_fd;                     /* the pin directory, locked against a second brokerd */
        int cgroup_fd;                  /* the cgroup the programs attach to */
        uint64_t netns;                 /* our network namespace's cookie */
};

/* An unopened guard: off, no handles (what guard_close() accepts). */
void guard_init(struct guard *g);

/* Loads the programs with an empty map sized for max_leases, not attached
 * yet. Returns 0 (g->on says whether the guard works; when not, g->state
 * says why, logged once), or -EBUSY when another brokerd uses o->dir. */
int guard_open(struct guard *g, const struct guard_options *o, unsigned max_leases);

/* Guards endpoint e (one more lease needs it). Returns 0 or -errno
 * (nothing changed). A no-op when off. */
int guard_add(struct guard *g, const struct pb_endpoint *e);

/* Stops guarding e for one lease (the port is free once no lease needs it). */
void guard_remove(struct guard *g, const struct pb_endpoint *e);

/* Attaches the programs: takes the pinned links over (an earlier brokerd's)
 * or creates and pins them. Call after every lease was added. Returns 0;
 * on failure the guard is off, logged. */
int guard_arm(struct guard *g);

/* bind() of fd to sa past the guard: brokerd's own sockets. Returns 0 or -errno. */
int guard_bind(const struct guard *g, int fd, const struct sockaddr *sa, socklen_t len);

/* Closes our handles; the pinned programs go on guarding. */
void guard_close(struct guard *g);
