/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the monitor's message set (brokerd/privsep.c): what a
 * compromised worker could send the privileged monitor, and what the
 * monitor sends back. privsep_decode() on the raw bytes must never read
 * past them; whatever it accepts must re-encode to exactly the same bytes
 * (the encoding is canonical: one message, one form) and decode again to
 * the same fields, and a peer carried on it must cross to struct peer and
 * back unchanged. Any mismatch abort()s.
 *
 * Standalone (gcc, no libFuzzer): `make build/fuzz_privsep`, linked with
 * tests/fuzz/driver.c; `build/fuzz_privsep FILE` replays a crash file.
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peer.h"
#include "privsep.h"

static size_t n_accepted, n_peers;

static const uint8_t types[] = {
        PS_HELLO, PS_DECLARE_LEASE, PS_NOTE_RESERVED, PS_LAST_GUARD, PS_ARM, PS_SOCKET, PS_REPLACE, PS_RELEASE,
        PS_READY, PS_REEXEC_CHECK, PS_CARRY, PS_REEXEC, PS_DONE, PS_STATE, PS_SOCKET_REPLY, PS_CONN,
        PS_RESERVED, PS_STATUS, PS_WANT_UNITS,
};

/* A peer crosses to struct peer and back with every field it carries. */
static void check_peer(const struct privsep_peer *w) {
        struct privsep_peer again;
        struct peer p;

        privsep_peer_from_wire(w, -1, &p);
        privsep_peer_to_wire(&p, w->reexec_id, &again);
        CHECK(again.pid == w->pid && again.gid == w->gid && again.reexec_id == w->reexec_id);
        CHECK(strcmp(again.unit, w->unit) == 0);
        CHECK(again.unidentified == w->unidentified);
        if (!w->unidentified)
                CHECK(again.uid == w->uid && again.account == w->account);
        /* A doubt stays a doubt (mapped to one of ours), and no doubt appears. */
        CHECK(!!again.doubt[0] == !!w->doubt[0]);
        n_peers++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint8_t out[PRIVSEP_MSG_MAX];
        struct privsep_msg m, again;
        int n;

        if (privsep_decode(data, size, &m) < 0)
                return 0;
        n = privsep_encode(&m, out);
        CHECK(n >= 0 && (size_t) n == size && memcmp(out, data, size) == 0);
        CHECK(privsep_decode(out, (size_t) n, &again) == 0);
        CHECK(memcmp(&again, &m, sizeof(m)) == 0);
        if (m.type == PS_CONN || m.type == PS_CARRY)
                check_peer(&m.peer);
        n_accepted++;
        return 0;
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size, unsigned flags, void *userdata), void *userdata) {
        struct pb_endpoint e = { .transport = PB_TCP, .family = PB_FAMILY_ANY, .port_lo = 8080, .port_hi = 8080 };
        struct privsep_msg v[] = {
                { .type = PS_HELLO, .hello.version = PRIVSEP_VERSION },
                { .type = PS_DECLARE_LEASE, .lease = { .lease_id = 7, .endpoint = e } },
                { .type = PS_NOTE_RESERVED, .reserved = { .port = 80, .ours = true } },
                { .type = PS_LAST_GUARD, .last_guard.dir = "/sys/fs/bpf/portbroker" },
                { .type = PS_ARM },
                { .type = PS_SOCKET, .lease = { .lease_id = 1, .endpoint = e } },
                { .type = PS_REPLACE, .id.lease_id = 3 },
                { .type = PS_RELEASE, .id.lease_id = 4 },
                { .type = PS_READY, .counts = { .leases = 5, .rules = 6, .unbound = 1 } },
                { .type = PS_REEXEC_CHECK },
                { .type = PS_CARRY, .peer = { .pid = 42, .uid = 4242, .gid = 4242, .account = 4242, .reexec_id = 9,
                                              .unit = "nginx.service",
                                              .doubt = "the peer is in another user namespace" } },
                { .type = PS_REEXEC, .reexec.request_id = 9 },
                { .type = PS_DONE, .done = { .error = 8, .why = "brokerd --check failed" } },
                { .type = PS_STATE, .state = { .guard_on = true, .guard_state = "on",
                                               .guard_dir = "/run/portbroker-guard" } },
                { .type = PS_SOCKET_REPLY, .socket = { .lease_id = 1, .cookie = 1234, .how = PS_HOW_KEPT } },
                { .type = PS_SOCKET_REPLY, .socket = { .lease_id = 2, .error = 98 } },
                { .type = PS_CONN, .peer = { .uid = PEER_UID_UNKNOWN, .account = PEER_UID_UNKNOWN,
                                             .unidentified = true,
                                             .doubt = "cannot read the peer's credentials" } },
                { .type = PS_RESERVED, .reserved = { .port = 8080 } },
                { .type = PS_STATUS, .counts = { .leases = 1, .rules = 2, .conns = 3 } },
                { .type = PS_WANT_UNITS, .units.want = true },
        };
        uint8_t buf[PRIVSEP_MSG_MAX];

        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                int n = privsep_encode(&v[i], buf);

                CHECK(n > 0);
                add(buf, (size_t) n, FUZZ_SEED_MESSAGE, userdata);
        }
}

void fuzz_fixup(uint8_t *data, size_t size) {
        /* A type of the set, most of the time: the fields are what is fuzzed. */
        if (size > 0)
                data[0] = types[data[0] % ELEMENTSOF(types)];
}

size_t fuzz_accepted(void) {
        return n_accepted;
}

const char *fuzz_summary(void) {
        static char buf[96];

        snprintf(buf, sizeof(buf), "%zu messages accepted, %zu peers crossed", n_accepted, n_peers);
        return buf;
}
