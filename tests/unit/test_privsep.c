/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of brokerd/privsep.c, the monitor's message set: every type
 * goes there and back unchanged; the decoder takes exactly a type's fields
 * (one byte short or long, an unknown type, a bool that is not 0 or 1, a
 * lease id 0, an errno out of range, text with a control character: each
 * refused); an fd comes with the types that carry one and with no other,
 * over a real socketpair.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd-util.h"
#include "fdpass.h"
#include "peer.h"
#include "privsep.h"

static struct pb_endpoint tcp_any(uint16_t port) {
        return (struct pb_endpoint) { .transport = PB_TCP, .family = PB_FAMILY_ANY, .port_lo = port, .port_hi = port };
}

/* One valid message of every type. */
static size_t samples(struct privsep_msg *v) {
        size_t n = 0;

        v[n++] = (struct privsep_msg) { .type = PS_HELLO, .hello.version = PRIVSEP_VERSION };
        v[n++] = (struct privsep_msg) { .type = PS_DECLARE_LEASE,
                                        .lease = { .lease_id = 7, .endpoint = tcp_any(8080) } };
        v[n++] = (struct privsep_msg) { .type = PS_NOTE_RESERVED, .reserved = { .port = 80, .ours = true } };
        v[n] = (struct privsep_msg) { .type = PS_LAST_GUARD };
        strcpy(v[n++].last_guard.dir, "/sys/fs/bpf/portbroker");
        v[n++] = (struct privsep_msg) { .type = PS_ARM };
        v[n++] = (struct privsep_msg) { .type = PS_SOCKET, .lease = { .lease_id = 1, .endpoint = tcp_any(443) } };
        v[n++] = (struct privsep_msg) { .type = PS_REPLACE, .id.lease_id = 3 };
        v[n++] = (struct privsep_msg) { .type = PS_RELEASE, .id.lease_id = 4 };
        v[n++] = (struct privsep_msg) { .type = PS_READY, .counts = { .leases = 5, .rules = 6, .unbound = 1 } };
        v[n++] = (struct privsep_msg) { .type = PS_REEXEC_CHECK };
        v[n] = (struct privsep_msg) { .type = PS_CARRY, .peer = { .pid = 42, .uid = 4242, .gid = 4242,
                                                                  .account = 4242, .reexec_id = 9 } };
        strcpy(v[n].peer.unit, "nginx.service");
        strcpy(v[n++].peer.doubt, "the peer is in another user namespace");
        v[n++] = (struct privsep_msg) { .type = PS_REEXEC, .reexec.request_id = 9 };
        v[n] = (struct privsep_msg) { .type = PS_DONE, .done.error = ENOEXEC };
        strcpy(v[n++].done.why, "brokerd --check failed");
        v[n] = (struct privsep_msg) { .type = PS_STATE, .state = { .guard_on = true } };
        strcpy(v[n].state.guard_state, "on: cgroup /sys/fs/cgroup");
        strcpy(v[n++].state.guard_dir, "/run/portbroker-guard");
        v[n++] = (struct privsep_msg) { .type = PS_SOCKET_REPLY,
                                        .socket = { .lease_id = 1, .cookie = 1234, .how = PS_HOW_KEPT } };
        v[n++] = (struct privsep_msg) { .type = PS_SOCKET_REPLY, .socket = { .lease_id = 2, .error = EADDRINUSE } };
        v[n++] = (struct privsep_msg) { .type = PS_CONN, .peer = { .pid = 0, .uid = PEER_UID_UNKNOWN,
                                                                   .account = PEER_UID_UNKNOWN, .unidentified = true,
                                                                   .doubt = "cannot read the peer's credentials" } };
        v[n++] = (struct privsep_msg) { .type = PS_RESERVED, .reserved = { .port = 8080, .ours = false } };
        v[n++] = (struct privsep_msg) { .type = PS_STATUS, .counts = { .leases = 1, .rules = 2, .conns = 3 } };
        v[n++] = (struct privsep_msg) { .type = PS_WANT_UNITS, .units.want = true };
        return n;
}

static void test_every_type_round_trips(void **state) {
        struct privsep_msg v[32], back;
        uint8_t buf[PRIVSEP_MSG_MAX];
        size_t n = samples(v);

        for (size_t i = 0; i < n; i++) {
                int len = privsep_encode(&v[i], buf);

                assert_true(len > 0);
                assert_int_equal(privsep_decode(buf, (size_t) len, &back), 0);
                assert_memory_equal(&back, &v[i], sizeof(back));
                /* One byte short, one too many: refused. */
                assert_int_equal(privsep_decode(buf, (size_t) len - 1, &back), -EBADMSG);
                buf[len] = 0;
                assert_int_equal(privsep_decode(buf, (size_t) len + 1, &back), -EBADMSG);
        }
}

/* Encodes m, sets byte at (from the end, when negative) to value, decodes. */
static int decode_with_byte(const struct privsep_msg *m, int at, uint8_t value) {
        uint8_t buf[PRIVSEP_MSG_MAX];
        struct privsep_msg back;
        int len = privsep_encode(m, buf);

        assert_true(len > 0);
        buf[at < 0 ? len + at : at] = value;
        return privsep_decode(buf, (size_t) len, &back);
}

static void test_values_out_of_range_are_refused(void **state) {
        struct privsep_msg m;
        uint8_t unknown = 0x7f, empty = 0;

        /* An unknown type, nothing at all. */
        assert_int_equal(privsep_decode(&unknown, 1, &m), -EBADMSG);
        assert_int_equal(privsep_decode(&empty, 0, &m), -EBADMSG);
        /* A bool other than 0 or 1. */
        m = (struct privsep_msg) { .type = PS_WANT_UNITS, .units.want = true };
        assert_int_equal(decode_with_byte(&m, -1, 2), -EBADMSG);
        /* Lease id 0. */
        m = (struct privsep_msg) { .type = PS_RELEASE, .id.lease_id = 256 };
        assert_int_equal(decode_with_byte(&m, 7, 0), -EBADMSG);
        /* A port 0; a noted port that is not ours. */
        m = (struct privsep_msg) { .type = PS_RESERVED, .reserved = { .port = 256, .ours = true } };
        assert_int_equal(decode_with_byte(&m, 1, 0), -EBADMSG);
        m = (struct privsep_msg) { .type = PS_NOTE_RESERVED, .reserved = { .port = 80, .ours = true } };
        assert_int_equal(decode_with_byte(&m, -1, 0), -EBADMSG);
        /* An errno past 4095; a socket with no way it came; an error with one. */
        m = (struct privsep_msg) { .type = PS_DONE };
        assert_int_equal(decode_with_byte(&m, 2, 0x10), -EBADMSG);
        m = (struct privsep_msg) { .type = PS_SOCKET_REPLY, .socket = { .lease_id = 1, .how = PS_HOW_BOUND } };
        assert_int_equal(decode_with_byte(&m, -1, 0), -EBADMSG);
        assert_int_equal(decode_with_byte(&m, -1, PS_HOW_BOUND + 1), -EBADMSG);
        m = (struct privsep_msg) { .type = PS_SOCKET_REPLY, .socket = { .lease_id = 1, .error = EIO } };
        assert_int_equal(decode_with_byte(&m, -1, PS_HOW_BOUND), -EBADMSG);
        /* A range where an endpoint must be one port; a control character in text. */
        m = (struct privsep_msg) { .type = PS_SOCKET, .lease = { .lease_id = 1, .endpoint = tcp_any(80) } };
        assert_int_equal(decode_with_byte(&m, 9 + 5, 81), -EBADMSG);        /* port_hi */
        m = (struct privsep_msg) { .type = PS_LAST_GUARD };
        strcpy(m.last_guard.dir, "/x");
        assert_int_equal(decode_with_byte(&m, -1, '\n'), -EBADMSG);
        /* An unidentified peer with no doubt, or with a uid; an identified one without. */
        m = (struct privsep_msg) { .type = PS_CONN, .peer = { .unidentified = true, .uid = PEER_UID_UNKNOWN,
                                                              .account = PEER_UID_UNKNOWN } };
        assert_int_equal(decode_with_byte(&m, 0, PS_CONN), -EBADMSG);
        strcpy(m.peer.doubt, "x");
        assert_int_equal(decode_with_byte(&m, 0, PS_CONN), 0);
        assert_int_equal(decode_with_byte(&m, 5, 0), -EBADMSG);          /* uid's last byte */
        m = (struct privsep_msg) { .type = PS_CONN, .peer = { .uid = 4242, .account = 4242 } };
        assert_int_equal(decode_with_byte(&m, 5, 0xff), 0);
        m.peer.uid = 0xffffff00;
        assert_int_equal(decode_with_byte(&m, 8, 0xff), -EBADMSG);        /* uid (uid_t) -1 */
        /* Text longer than the limit cannot even be encoded. */
        m = (struct privsep_msg) { .type = PS_DONE };
        memset(m.done.why, 'x', PRIVSEP_TEXT_MAX);
        assert_true(privsep_encode(&m, (uint8_t[PRIVSEP_MSG_MAX]) { 0 }) > 0);
}

static void test_fds_come_with_their_types_only(void **state) {
        struct privsep_msg m = { .type = PS_CONN }, got;
        uint8_t buf[PRIVSEP_MSG_MAX];
        int sv[2], fd = -1, len;

        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        /* Sending refuses a wrong pairing itself. */
        assert_int_equal(privsep_send(sv[0], &m, -1, 0), -EINVAL);
        m = (struct privsep_msg) { .type = PS_RELEASE, .id.lease_id = 1 };
        assert_int_equal(privsep_send(sv[0], &m, sv[0], 0), -EINVAL);
        /* A connection with its fd arrives, the fd close-on-exec. */
        m = (struct privsep_msg) { .type = PS_CONN, .peer = { .pid = 1 } };
        assert_int_equal(privsep_send(sv[0], &m, STDIN_FILENO, 0), 0);
        assert_int_equal(privsep_recv(sv[1], &got, &fd, 0), 0);
        assert_true(fd >= 0);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        fd = safe_close(fd);
        /* Forged by hand: a release with an fd, a connection without one: refused, the fd closed. */
        m = (struct privsep_msg) { .type = PS_RELEASE, .id.lease_id = 1 };
        len = privsep_encode(&m, buf);
        assert_int_equal(fdpass_send(sv[0], buf, (size_t) len, STDIN_FILENO, 0), 0);
        assert_int_equal(privsep_recv(sv[1], &got, &fd, 0), -EBADMSG);
        m = (struct privsep_msg) { .type = PS_CONN, .peer = { .pid = 1 } };
        len = privsep_encode(&m, buf);
        assert_int_equal(fdpass_send(sv[0], buf, (size_t) len, -1, 0), 0);
        assert_int_equal(privsep_recv(sv[1], &got, &fd, 0), -EBADMSG);
        /* The peer gone: -ENOTCONN. */
        safe_close(sv[0]);
        assert_int_equal(privsep_recv(sv[1], &got, &fd, 0), -ENOTCONN);
        safe_close(sv[1]);
}

static void test_a_peer_crosses_unchanged(void **state) {
        struct peer p = { .pid = 42, .uid = 4242, .gid = 4343, .account = 1000, .pid_fd = -1, .conn_fd = -1,
                          .doubt = peer_doubt_of("the peer is in another user namespace") }, back;
        struct privsep_peer w;

        strcpy(p.unit, "web.service");
        privsep_peer_to_wire(&p, 5, &w);
        assert_int_equal(w.reexec_id, 5);
        privsep_peer_from_wire(&w, 9, &back);
        assert_int_equal(back.pid, 42);
        assert_int_equal(back.uid, 4242);
        assert_int_equal(back.gid, 4343);
        assert_int_equal(back.account, 1000);
        assert_int_equal(back.conn_fd, 9);
        assert_int_equal(back.pid_fd, -1);
        assert_string_equal(back.unit, "web.service");
        assert_ptr_equal(back.doubt, p.doubt);          /* our own doubt, not a copy */
        /* A doubt nobody here knows is still a doubt; an unidentified peer is nobody. */
        strcpy(w.doubt, "something else");
        privsep_peer_from_wire(&w, 9, &back);
        assert_non_null(back.doubt);
        w.unidentified = true;
        privsep_peer_from_wire(&w, 9, &back);
        assert_int_equal(back.uid, PEER_UID_UNKNOWN);
        assert_int_equal(back.account, PEER_UID_UNKNOWN);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_type_round_trips),
                cmocka_unit_test(test_values_out_of_range_are_refused),
                cmocka_unit_test(test_fds_come_with_their_types_only),
                cmocka_unit_test(test_a_peer_crosses_unchanged),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
