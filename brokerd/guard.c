/* SPDX-License-Identifier: MIT */
/*
 * The bind guard, brokerd's side. The BPF object (bpf/bind-guard.bpf.c,
 * built by clang and embedded below) is loaded at every start with a fresh
 * "leases" map, filled with every lease before guard_arm() attaches it: a
 * link pinned in the guard directory from an earlier brokerd is switched
 * to the new programs in one step (bpf_link_update), so the port stays
 * guarded through a crash, a restart or an upgrade, and the old programs
 * and map go with their last reference. The directory is flock()ed (the
 * lock is carried across a re-exec) so two brokerds cannot take turns
 * undoing each other's map. brokerd's own bind() passes by putting its
 * socket's cookie in the "allowed" map for the length of that one call.
 * The ports the kernel picks by itself never meet the programs: leased
 * ports also go in ip_local_reserved_ports (reserved.c), and those we put
 * there are recorded (through record_reserved) to be taken out at release.
 */
#include "guard.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "bpf/bind-guard.h"
#include "fd-util.h"
#include "lease.h"
#include "log.h"
#include "reserved.h"
#include "sockopt.h"

/* The compiled programs, embedded: what runs is what this brokerd was built with. */
__asm__(".pushsection .rodata\n"
        ".balign 8\n"
        "guard_bpf_object:\n"
        ".incbin \"" GUARD_BPF_OBJECT "\"\n"
        "guard_bpf_object_end:\n"
        ".popsection\n");
extern const char guard_bpf_object[] __attribute__((visibility("hidden")));
extern const char guard_bpf_object_end[] __attribute__((visibility("hidden")));

static const struct log_fields no_fields = LOG_FIELDS_NONE;

#define GUARD_KEYS_MAX 4                /* keys of one lease (dual-stack [::]) */
#define GUARD_MAP_SLACK 64

static const struct hook {
        const char *prog;               /* program name in the object */
        const char *prog_eperm;         /* the same before Linux 5.18 (no bpf_set_retval()) */
        const char *pin;                /* its link's name in the guard directory */
        enum bpf_attach_type type;
} hooks[] = {
        { "guard_bind4", "guard_bind4_eperm", "bind4", BPF_CGROUP_INET4_BIND },
        { "guard_bind6", "guard_bind6_eperm", "bind6", BPF_CGROUP_INET6_BIND },
};

/* The program of hook h that is loaded. */
static struct bpf_program *hook_program(const struct guard *g, const struct hook *h) {
        return bpf_object__find_program_by_name(g->obj, g->eperm ? h->prog_eperm : h->prog);
}

/* libbpf's own messages (the verifier's log among them) are debug lines. */
static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap) {
        char line[512];

        if (level == LIBBPF_DEBUG)
                return 0;
        vsnprintf(line, sizeof(line), fmt, ap);
        line[strcspn(line, "\n")] = '\0';
        log_msg(LOG_DEBUG, "libbpf: %s", line);
        return 0;
}

/* Detaches and removes the links pinned in directory dir_fd; path names
 * it for the log. */
static void unpin(int dir_fd, const char *path) {
        static const char *const names[] = { "bind4", "bind6", "bind4-new", "bind6-new" };
        unsigned n = 0;

        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                char pin[64];
                _cleanup_close_ int link_fd = -1;

                /* Detached first: the last reference's release is deferred. */
                snprintf(pin, sizeof(pin), "/proc/self/fd/%d/%s", dir_fd, names[i]);
                link_fd = bpf_obj_get(pin);
                if (link_fd >= 0)
                        (void) bpf_link_detach(link_fd);
                n += unlinkat(dir_fd, names[i], 0) == 0;
        }
        if (n)
                log_event(LOG_NOTICE, "guard", &no_fields, "removed the bind guard pinned in %s: nothing would "
                          "update it", path);
}

/* Opens dir when it is a guard directory: on bpffs, ours, written by nobody
 * else. Returns the fd, or -errno. */
static int open_guard_dir(const char *dir, struct stat *ret_st) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct statfs sfs;
        int r;

        if (fd < 0 || fstatfs(fd, &sfs) < 0 || fstat(fd, ret_st) < 0)
                return -errno;
        if (sfs.f_type != BPF_FS_MAGIC)
                return -EMEDIUMTYPE;
        if (ret_st->st_uid != geteuid() || (ret_st->st_mode & 0022))
                return -EPERM;
        r = fd;
        fd = -1;
        return r;
}

/* The pin directory writable by its owner while we pin (or unpin) there,
 * read-only (0500) once the links hold: then a process of our uid without
 * CAP_FOWNER (brokerd's worker under its unit) cannot remove a pin unless
 * it chmod()s first, which its seccomp filter refuses. */
static void dir_writable(int dir_fd, bool writable) {
        if (dir_fd >= 0)
                (void) fchmod(dir_fd, writable ? 0700 : 0500);
}

void guard_drop(const char *dir) {
        struct stat st;
        _cleanup_close_ int fd = open_guard_dir(dir, &st);

        /* Not while a brokerd runs on it. */
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0) {
                dir_writable(fd, true);
                unpin(fd, dir);
        }
}

/* Turns the guard off for good with why (printf-style), logged once. When
 * we hold our guard directory, what this brokerd pinned half-way, or an
 * earlier one of it left, is removed and the directory let go. */
static void __attribute__((format(printf, 2, 3))) guard_off(struct guard *g, const char *fmt, ...) {
        va_list ap;

        g->on = false;
        va_start(ap, fmt);
        vsnprintf(g->state, sizeof(g->state), fmt, ap);
        va_end(ap);
        log_event(LOG_WARNING, "guard", &no_fields, "bind guard off: %s; a leased port is kept from others only "
                  "while brokerd or a holder has its socket open", g->state);
        if (g->dir_fd >= 0) {
                dir_writable(g->dir_fd, true);
                unpin(g->dir_fd, g->dir);
        }
        g->dir_fd = safe_close(g->dir_fd);
        bpf_object__close(g->obj);
        g->obj = NULL;
        g->leases_fd = safe_close(g->leases_fd);
        g->allowed_fd = safe_close(g->allowed_fd);
}

/* The mount point of the cgroup v2 hierarchy (unified, or beside v1 as
 * /sys/fs/cgroup/unified) into buf. Returns 0 or -ENOENT. */
static int cgroup2_root(char *buf, size_t size) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096];
        int r = -ENOENT;

        if (!f)
                return -errno;
        while (r < 0 && fgets(line, sizeof(line), f)) {
                char root[PATH_MAX], point[PATH_MAX];
                const char *sep = strstr(line, " - cgroup2 ");

                /* id parent major:minor root mount-point ... - fstype ... */
                if (sep && sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) == 2 && strcmp(root, "/") == 0 &&
                    !strchr(point, '\\') && strlen(point) < size) {
                        snprintf(buf, size, "%s", point);
                        r = 0;
                }
        }
        fclose(f);
        return r;
}

/* Whether we have CAP_BPF and CAP_NET_ADMIN (CapEff in /proc/self/status). */
static bool guard_capable(void) {
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        unsigned long long eff = 0;

        if (!f)
                return true;            /* cannot tell: let the kernel say */
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "CapEff: %llx", &eff) == 1)
                        break;
        fclose(f);
        return (eff >> 39 & 1) && (eff >> 12 & 1);     /* CAP_BPF, CAP_NET_ADMIN */
}

/* Our network namespace's cookie, as the programs see it; 0 if unknown. */
static uint64_t netns_cookie(void) {
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        uint64_t cookie = 0;
        socklen_t len = sizeof(cookie);

        if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) < 0)
                return 0;
        return cookie;
}

/* Opens (creating it 0700) the pin directory on bpffs and locks it.
 * Returns 0, -EBUSY (another brokerd's), or -1 with the guard off. */
static int open_dir(struct guard *g, const char *dir, int *passed_dir_fd) {
        struct stat st, passed;
        int fd;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                guard_off(g, "cannot create %s: %s%s", dir, strerror(errno),
                          errno == ENOENT ? " (is bpffs mounted? mount -t bpf bpf /sys/fs/bpf)" : "");
                return -1;
        }
        fd = open_guard_dir(dir, &st);
        if (fd == -EMEDIUMTYPE || fd == -EPERM) {
                guard_off(g, fd == -EPERM ? "%s is not ours, or others may write to it" :
                          "%s is not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)", dir);
                return -1;
        }
        if (fd < 0) {
                guard_off(g, "cannot open %s: %s", dir, strerror(-fd));
                return -1;
        }
        /* The same directory, locked before the re-exec: that lock is ours. */
        if (*passed_dir_fd >= 0 && fstat(*passed_dir_fd, &passed) == 0 && passed.st_dev == st.st_dev &&
            passed.st_ino == st.st_ino) {
                safe_close(fd);
                fd = *passed_dir_fd;
                *passed_dir_fd = -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int e = errno;

                safe_close(fd);
                if (e == EWOULDBLOCK) {
                        log_msg(LOG_ERR, "another brokerd guards its leases from %s; give each brokerd its own "
                                "--guard-dir (or run this one with --no-guard)", dir);
                        return -EBUSY;
                }
                guard_off(g, "cannot lock %s: %s", dir, strerror(e));
                return -1;
        }
        g->dir_fd = fd;                 /* ours from here: guard_off() may clear it */
        return 0;
}

void guard_init(struct guard *g) {
        *g = (struct guard) { .leases_fd = -1, .allowed_fd = -1, .dir_fd = -1, .cgroup_fd = -1 };
}

int guard_open(struct guard *g, const struct guard_options *o, int passed_dir_fd) {
        _cleanup_close_ int passed_fd = passed_dir_fd;  /* closed (its lock let go) unless taken */
        const char *dir = o->dir ? o->dir : GUARD_DEFAULT_DIR;
        char cgroup[PATH_MAX];
        struct statfs sfs;
        int r;

        guard_init(g);
        snprintf(g->dir, sizeof(g->dir), "%s", dir);
        if (o->off) {
                snprintf(g->state, sizeof(g->state), "--no-guard");
                log_event(LOG_NOTICE, "guard", &no_fields, "bind guard off (--no-guard)");
                return 0;
        }
        if (!guard_capable()) {
                guard_off(g, "it needs CAP_BPF and CAP_NET_ADMIN (root has them), and brokerd runs as uid %u "
                          "without them", (unsigned) geteuid());
                return 0;
        }
        if (o->cgroup)
                snprintf(cgroup, sizeof(cgroup), "%s", o->cgroup);
        else if (cgroup2_root(cgroup, sizeof(cgroup)) < 0) {
                guard_off(g, "no cgroup v2 hierarchy is mounted");
                return 0;
        }
        g->netns = netns_cookie();
        if (g->netns == 0) {
                guard_off(g, "cannot read our network namespace's cookie (SO_NETNS_COOKIE needs Linux 5.14)");
                return 0;
        }
        g->cgroup_fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (g->cgroup_fd < 0 || fstatfs(g->cgroup_fd, &sfs) < 0) {
                guard_off(g, "cannot open cgroup %s: %s", cgroup, strerror(errno));
                return 0;
        }
        if (sfs.f_type != CGROUP2_SUPER_MAGIC) {
                guard_off(g, "%s is not a cgroup v2 directory", cgroup);
                return 0;
        }
        r = open_dir(g, dir, &passed_fd);
        if (r < 0)
                return r == -EBUSY ? r : 0;

        libbpf_set_print(libbpf_log);
        g->obj = bpf_object__open_mem(guard_bpf_object, (size_t) (guard_bpf_object_end - guard_bpf_object), NULL);
        if (!g->obj) {
                guard_off(g, "cannot read the guard's BPF object: %s", strerror(errno));
                return 0;
        }
        g->ours = calloc(1, sizeof(*g->ours));
        if (!g->ours) {
                guard_off(g, "out of memory");
                return 0;
        }
        snprintf(g->state, sizeof(g->state), "on: cgroup %s, pinned in %s", cgroup, dir);
        return 0;
}

/* Loads one variant of the programs (g->eperm says which) with a map sized
 * for n leases. Returns 0 or -errno. */
static int load_variant(struct guard *g, size_t n) {
        struct bpf_map *leases = bpf_object__find_map_by_name(g->obj, "leases");
        int r = leases ? 0 : -ENOENT;

        for (size_t i = 0; i < sizeof(hooks) / sizeof(hooks[0]) && r >= 0; i++) {
                struct bpf_program *p = bpf_object__find_program_by_name(g->obj, g->eperm ? hooks[i].prog :
                                                                                  hooks[i].prog_eperm);

                r = p ? bpf_program__set_autoload(p, false) : -ENOENT;         /* the other variant */
        }
        if (r >= 0)
                r = bpf_map__set_max_entries(leases, (__u32) (n * GUARD_KEYS_MAX + GUARD_MAP_SLACK));
        if (r >= 0)
                r = bpf_object__load(g->obj);
        if (r < 0)
                return r;
        /* Our own handles on the maps: the object is closed once attached. */
        g->leases_fd = fcntl(bpf_map__fd(leases), F_DUPFD_CLOEXEC, 3);
        g->allowed_fd = fcntl(bpf_object__find_map_fd_by_name(g->obj, "allowed"), F_DUPFD_CLOEXEC, 3);
        return g->leases_fd < 0 || g->allowed_fd < 0 ? -errno : 0;
}

/* Loads the programs that refuse with EADDRINUSE, or where the kernel has
 * no bpf_set_retval() (before 5.18: the verifier says EINVAL), those that
 * refuse with the kernel's EPERM. $BROKERD_GUARD_EPERM=1 asks for the
 * latter (for tests). Returns 0 or -errno. */
static int load(struct guard *g, size_t n) {
        const char *e = secure_getenv("BROKERD_GUARD_EPERM");
        int r;

        g->eperm = e && strcmp(e, "1") == 0;
        r = load_variant(g, n);
        if (r != -EINVAL || g->eperm)
                return r;
        bpf_object__close(g->obj);
        g->obj = bpf_object__open_mem(guard_bpf_object, (size_t) (guard_bpf_object_end - guard_bpf_object), NULL);
        if (!g->obj)
                return -errno;
        g->eperm = true;
        return load_variant(g, n);
}

/* The keys a lease on e needs (see bpf/bind-guard.h). Returns how many. */
static size_t keys_of(const struct guard *g, const struct pb_endpoint *e, struct guard_key keys[GUARD_KEYS_MAX]) {
        const struct guard_key base = { .netns = g->netns, .port = e->port_lo, .proto = e->transport };
        size_t n = 0;

        switch (e->family) {
        case PB_FAMILY_INET:
                keys[n] = base;
                keys[n].addr[2] = htonl(0xffff);
                memcpy(&keys[n++].addr[3], e->addr, 4);
                keys[n] = base;
                keys[n++].kind = GUARD_ANY4;
                break;
        case PB_FAMILY_INET6:
                keys[n] = base;
                memcpy(keys[n++].addr, e->addr, 16);
                keys[n] = base;
                keys[n++].kind = GUARD_ANY6;
                break;
        default:                        /* [::], dual-stack */
                keys[n++] = base;
                keys[n] = base;
                keys[n++].addr[2] = htonl(0xffff);
                keys[n] = base;
                keys[n++].kind = GUARD_ANY4;
                keys[n] = base;
                keys[n++].kind = GUARD_ANY6;
                break;
        }
        return n;
}

/* Adds delta (+1 or -1) to the count of leases needing k; 0 deletes it. Returns 0 or -errno. */
static int adjust(int map_fd, const struct guard_key *k, int delta) {
        __u32 n = 0;
        int r = bpf_map_lookup_elem(map_fd, k, &n);

        if (r < 0 && r != -ENOENT)
                return r;
        if (delta < 0 && n <= 1) {
                r = bpf_map_delete_elem(map_fd, k);
                return r == -ENOENT ? 0 : r;
        }
        n = delta < 0 ? n - 1 : n + 1;
        return bpf_map_update_elem(map_fd, k, &n, BPF_ANY);
}

/* Says once that leased ports cannot be kept out of the kernel's own choice. */
static void reserve_failed(struct guard *g, int r) {
        if (g->reserve_failed)
                return;
        g->reserve_failed = true;
        log_event(LOG_WARNING, "guard", &no_fields, "cannot keep leased ports in net.ipv4.ip_local_reserved_ports: "
                  "%s; while no socket holds a leased port, a bind() to port 0 or an outgoing connection may "
                  "take it", strerror(-r));
}

/* Marks port as ours or not, and has it recorded. */
static void set_ours(struct guard *g, unsigned port, bool ours) {
        int r;

        port_set_put(g->ours, port, ours);
        r = g->record_reserved ? g->record_reserved(port, ours, g->userdata) : 0;
        if (r < 0)
                log_event(LOG_WARNING, "guard", &no_fields, "cannot record that port %u is %s reserved by brokerd: "
                          "%s", port, ours ? "" : "no longer", strerror(-r));
}

/* Keeps ports[0..n) out of the kernel's automatic choice: adds those not
 * reserved yet to ip_local_reserved_ports, as ours. */
static void reserve_ports(struct guard *g, const uint16_t *ports, size_t n) {
        struct port_set *now = malloc(sizeof(*now));
        uint16_t *added = calloc(n ? n : 1, sizeof(*added));
        size_t n_added = 0;
        int r = now && added ? reserved_read(now) : -ENOMEM;

        for (size_t i = 0; i < n && r >= 0; i++)
                if (!port_set_has(now, ports[i])) {
                        port_set_put(now, ports[i], true);
                        added[n_added++] = ports[i];
                }
        /* Recorded first (written with the next transaction: a new lease's
         * own commit, just after): a record of a port that is not reserved
         * is dropped at the next start; a crash before the write leaves the
         * port reserved, as if an admin had. */
        for (size_t i = 0; r >= 0 && i < n_added; i++)
                set_ours(g, added[i], true);
        if (r >= 0 && n_added)
                r = reserved_write(now);
        if (r < 0) {
                reserve_failed(g, r);
                for (size_t i = 0; i < n_added; i++)
                        set_ours(g, added[i], false);
        }
        free(now);
        free(added);
}

/* Takes the ports of ours that no lease needs (drop) out of
 * ip_local_reserved_ports. */
static void unreserve_ports(struct guard *g, const struct port_set *drop) {
        struct port_set *now = malloc(sizeof(*now));
        int r = now ? reserved_read(now) : -ENOMEM;

        for (unsigned port = 1; port < 65536 && r >= 0; port++)
                if (port_set_has(drop, port))
                        port_set_put(now, port, false);
        if (r >= 0)
                r = reserved_write(now);
        if (r < 0)
                log_event(LOG_WARNING, "guard", &no_fields, "cannot take released ports out of "
                          "net.ipv4.ip_local_reserved_ports: %s", strerror(-r));
        else
                for (unsigned port = 1; port < 65536; port++)
                        if (port_set_has(drop, port))
                                set_ours(g, port, false);
        free(now);
}

void guard_note_reserved(struct guard *g, unsigned port) {
        if (g->ours)
                port_set_put(g->ours, port, true);
}

/* Adds e's keys to the map. Returns 0 or -errno (nothing changed). */
static int map_add(struct guard *g, const struct pb_endpoint *e) {
        struct guard_key keys[GUARD_KEYS_MAX];
        size_t n, i;
        int r = 0;

        n = keys_of(g, e, keys);
        for (i = 0; i < n && r >= 0; i++)
                r = adjust(g->leases_fd, &keys[i], +1);
        if (r < 0)                      /* undo the keys added */
                for (i--; i-- > 0;)
                        (void) adjust(g->leases_fd, &keys[i], -1);
        return r;
}

int guard_add(struct guard *g, const struct pb_endpoint *e) {
        int r;

        if (!g->on || endpoint_is_unix(e))     /* a Unix socket's file is its own guard */
                return 0;
        r = map_add(g, e);
        if (r >= 0)
                reserve_ports(g, &e->port_lo, 1);
        return r;
}

void guard_remove(struct guard *g, const struct pb_endpoint *e, bool port_still_leased) {
        struct guard_key keys[GUARD_KEYS_MAX];
        struct port_set *drop;
        size_t n;

        if (!g->on || endpoint_is_unix(e))
                return;
        n = keys_of(g, e, keys);
        for (size_t i = 0; i < n; i++)
                if (adjust(g->leases_fd, &keys[i], -1) < 0)
                        log_event(LOG_ERR, "error", &no_fields, "bind guard: cannot drop a key of a released "
                                  "lease on port %u", (unsigned) e->port_lo);
        /* Only a reservation we added: an admin's own stays. */
        if (port_still_leased || !port_set_has(g->ours, e->port_lo))
                return;
        drop = calloc(1, sizeof(*drop));
        if (!drop)
                return;
        port_set_put(drop, e->port_lo, true);
        unreserve_ports(g, drop);
        free(drop);
}

/* Points hook h's pinned link at prog_fd: the link an earlier brokerd
 * pinned when it is on our cgroup, else a new one pinned in its place.
 * Returns 0 or -errno. */
static int attach(struct guard *g, const struct hook *h, int prog_fd, uint64_t cgroup_id) {
        char path[64], tmp[64], tmp_name[32];
        struct bpf_link_info info = {};
        __u32 len = sizeof(info);
        _cleanup_close_ int link_fd = -1, old_fd = -1;
        int r;

        /* Paths through our handle on the directory: it cannot be swapped under us. */
        snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", g->dir_fd, h->pin);
        snprintf(tmp_name, sizeof(tmp_name), "%s-new", h->pin);  /* bpffs refuses dots */
        snprintf(tmp, sizeof(tmp), "/proc/self/fd/%d/%s", g->dir_fd, tmp_name);
        old_fd = bpf_obj_get(path);
        if (old_fd >= 0 && bpf_obj_get_info_by_fd(old_fd, &info, &len) >= 0 && info.type == BPF_LINK_TYPE_CGROUP &&
            info.cgroup.cgroup_id == cgroup_id && info.cgroup.attach_type == h->type &&
            bpf_link_update(old_fd, prog_fd, NULL) >= 0)
                return 0;
        link_fd = bpf_link_create(prog_fd, g->cgroup_fd, h->type, NULL);
        if (link_fd < 0)
                return link_fd;
        (void) unlinkat(g->dir_fd, tmp_name, 0);
        r = bpf_obj_pin(link_fd, tmp);
        if (r >= 0 && renameat(g->dir_fd, tmp_name, g->dir_fd, h->pin) < 0)
                r = -errno;
        /* An earlier link on another cgroup (or a dead one): detached now,
         * not whenever its last reference's deferred release comes. */
        if (r >= 0 && old_fd >= 0)
                (void) bpf_link_detach(old_fd);
        return r;
}

int guard_arm(struct guard *g, const struct lease_table *t, unsigned max_leases) {
        struct stat st;
        int r;

        if (!g->obj)
                return 0;
        dir_writable(g->dir_fd, true);
        /* Room for every lease the database holds, even past --max-leases. */
        r = load(g, t->n > max_leases ? t->n : max_leases);
        if (r < 0) {
                guard_off(g, "the kernel refused the guard's BPF programs: %s (they need CAP_BPF and "
                          "CAP_NET_ADMIN, and Linux 5.14)", strerror(-r));
                return 0;
        }
        for (size_t i = 0; i < t->n && r >= 0; i++)
                if (!endpoint_is_unix(&t->by_id[i]->endpoint))
                        r = map_add(g, &t->by_id[i]->endpoint);
        if (r >= 0 && fstat(g->cgroup_fd, &st) < 0)
                r = -errno;
        if (r < 0) {
                guard_off(g, "cannot fill its map: %s", strerror(-r));
                return 0;
        }
        for (size_t i = 0; i < sizeof(hooks) / sizeof(hooks[0]); i++) {
                struct bpf_program *p = hook_program(g, &hooks[i]);

                r = p ? attach(g, &hooks[i], bpf_program__fd(p), (uint64_t) st.st_ino) : -ENOENT;
                if (r < 0) {
                        guard_off(g, "cannot attach its %s program: %s", hooks[i].pin, strerror(-r));
                        return 0;
                }
        }
        g->on = true;
        dir_writable(g->dir_fd, false);
        /* The links keep the programs: libbpf's copy of them (and of their
         * BTF) is not needed any more. */
        bpf_object__close(g->obj);
        g->obj = NULL;
        if (g->eperm)
                snprintf(g->state + strlen(g->state), sizeof(g->state) - strlen(g->state),
                         "; refusing with EPERM (no bpf_set_retval() before Linux 5.18)");
        log_event(LOG_INFO, "guard", &no_fields, "bind guard %s", g->state);
        guard_reserve_leases(g, t);
        return 0;
}

void guard_reserve_leases(struct guard *g, const struct lease_table *t) {
        struct port_set *stale;
        uint16_t *ports;
        size_t n = 0;

        if (!g->on)
                return;
        ports = calloc(t->n ? t->n : 1, sizeof(*ports));
        stale = malloc(sizeof(*stale));
        if (!ports || !stale)
                reserve_failed(g, -ENOMEM);
        else {
                /* Every leased port reserved; ours that no lease needs any more not. */
                *stale = *g->ours;
                for (size_t i = 0; i < t->n; i++) {
                        if (endpoint_is_unix(&t->by_id[i]->endpoint))
                                continue;
                        ports[n] = t->by_id[i]->endpoint.port_lo;
                        port_set_put(stale, ports[n++], false);
                }
                reserve_ports(g, ports, n);
                if (memcmp(stale, &(struct port_set) { { 0 } }, sizeof(*stale)) != 0)
                        unreserve_ports(g, stale);
        }
        free(ports);
        free(stale);
}

int guard_bind(const struct guard *g, int fd, const struct sockaddr *sa, socklen_t len) {
        uint64_t cookie = 0;
        __u8 one = 1;
        int r;

        if (g && g->allowed_fd >= 0) {
                cookie = socket_cookie(fd);
                r = cookie ? bpf_map_update_elem(g->allowed_fd, &cookie, &one, BPF_ANY) : -EIO;
                if (r < 0)
                        return r;
        }
        r = bind(fd, sa, len) < 0 ? -errno : 0;
        if (cookie)
                (void) bpf_map_delete_elem(g->allowed_fd, &cookie);
        return r;
}

void guard_close(struct guard *g) {
        free(g->ours);
        g->ours = NULL;
        bpf_object__close(g->obj);
        g->obj = NULL;
        g->leases_fd = safe_close(g->leases_fd);
        g->allowed_fd = safe_close(g->allowed_fd);
        g->dir_fd = safe_close(g->dir_fd);
        g->cgroup_fd = safe_close(g->cgroup_fd);
        g->on = false;
}
