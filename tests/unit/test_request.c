/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of brokerd/request.c's validation: the order the protocol
 * fixes (size and header, version, type, exact fields for the type), the
 * errno each failure is answered with, and the request id echoed once the
 * header could be read.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "broker-int.h"

/* A valid GET of tcp:8080 with request id 7 into buf; returns its length. */
static size_t valid_get(uint8_t *buf) {
        struct pb_msg m = { .hdr = { .version = PB_PROTO_VERSION, .type = PB_MSG_GET, .id = 7 } };
        int n;

        assert_int_equal(endpoint_parse("tcp:8080", &m.get.endpoint), 0);
        n = proto_encode(&m, buf, PB_MSG_MAX);
        assert_true(n > PB_HEADER_SIZE);
        return (size_t) n;
}

static void put16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) (v >> 8);
        p[1] = (uint8_t) v;
}

static void put32(uint8_t *p, uint32_t v) {
        put16(p, (uint16_t) (v >> 16));
        put16(p + 2, (uint16_t) v);
}

static const char *validate(const uint8_t *buf, size_t len, int *code, uint32_t *id) {
        struct pb_msg req;

        return request_validate(buf, len, &req, code, id);
}

static void test_valid_get(void **state) {
        uint8_t buf[PB_MSG_MAX];
        size_t len = valid_get(buf);
        struct pb_msg req;
        uint32_t id = 0;
        int code = 0;

        assert_null(request_validate(buf, len, &req, &code, &id));
        assert_int_equal(id, 7);
        assert_int_equal(req.hdr.type, PB_MSG_GET);
        assert_int_equal(req.get.endpoint.port_lo, 8080);
}

static void test_short_or_bad_header(void **state) {
        uint8_t buf[PB_MSG_MAX];
        size_t len = valid_get(buf);
        uint32_t id = 99;
        int code = 0;

        assert_string_equal(validate(buf, PB_HEADER_SIZE - 1, &code, &id), "malformed request: bad header or length");
        assert_int_equal(code, EBADMSG);
        assert_int_equal(id, 0);                /* no header read: no id to echo */

        put32(buf, (uint32_t) len + 1);         /* length field disagrees with the packet */
        assert_string_equal(validate(buf, len, &code, &id), "malformed request: bad header or length");
        assert_int_equal(id, 0);

        len = valid_get(buf);
        put32(buf + 12, 1);                     /* reserved must be 0 */
        assert_string_equal(validate(buf, len, &code, &id), "malformed request: bad header or length");
}

/* The version is judged before the type: a newer client gets "unsupported
 * version", not "unknown type", for a type this version lacks. */
static void test_version_before_type(void **state) {
        uint8_t buf[PB_MSG_MAX];
        size_t len = valid_get(buf);
        uint32_t id = 0;
        int code = 0;

        put16(buf + 4, PB_PROTO_VERSION + 1);
        put16(buf + 6, 0x0777);
        assert_string_equal(validate(buf, len, &code, &id), "unsupported protocol version");
        assert_int_equal(code, EPROTONOSUPPORT);
        assert_int_equal(id, 7);                /* echoed: the header was read */
}

/* The type is judged before its fields, and a reply type is no request. */
static void test_type_before_fields(void **state) {
        static const uint16_t not_requests[] = { 0, 0x0777, PB_MSG_GET | PB_MSG_REPLY, PB_MSG_ERROR };
        uint8_t buf[PB_MSG_MAX];
        size_t len;
        uint32_t id = 0;
        int code = 0;

        for (size_t i = 0; i < sizeof(not_requests) / sizeof(not_requests[0]); i++) {
                len = valid_get(buf);
                put16(buf + 6, not_requests[i]);
                assert_string_equal(validate(buf, len, &code, &id), "malformed request: unknown message type");
                assert_int_equal(code, EBADMSG);
        }
}

static void test_fields_for_the_type(void **state) {
        uint8_t buf[PB_MSG_MAX];
        size_t len = valid_get(buf);
        uint32_t id = 0;
        int code = 0;

        put16(buf + 6, PB_MSG_POLICY_REMOVE);   /* a GET body under another type's name */
        assert_string_equal(validate(buf, len, &code, &id), "malformed request: bad fields or length for its type");
        assert_int_equal(code, EBADMSG);

        len = valid_get(buf);
        buf[PB_HEADER_SIZE] = 42;               /* transport neither TCP nor UDP */
        assert_string_equal(validate(buf, len, &code, &id), "malformed request: bad fields or length for its type");
}

/* A type newer than the request's version: unsupported, not malformed (POLICY_TEST came with 6). */
static void test_type_older_than_its_version(void **state) {
        struct pb_msg m = { .hdr = { .type = PB_MSG_POLICY_TEST, .id = 9 }, .policy_test = { .uid = PB_UID_NONE } };
        uint8_t buf[PB_MSG_MAX];
        struct pb_msg req;
        uint32_t id = 0;
        int code = 0, n;

        assert_int_equal(endpoint_parse("tcp:8080", &m.policy_test.endpoint), 0);
        n = proto_encode(&m, buf, sizeof(buf));
        assert_true(n > PB_HEADER_SIZE);
        assert_int_equal(buf[5], PB_PROTO_VERSION_POLICY);
        assert_null(request_validate(buf, (size_t) n, &req, &code, &id));
        assert_int_equal(req.hdr.type, PB_MSG_POLICY_TEST);
        assert_int_equal(req.policy_test.uid, PB_UID_NONE);
        put16(buf + 4, PB_PROTO_VERSION_POLICY - 1);
        assert_string_equal(validate(buf, (size_t) n, &code, &id), "unsupported protocol version for this message type");
        assert_int_equal(code, EPROTONOSUPPORT);
        assert_int_equal(id, 9);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_valid_get),
                cmocka_unit_test(test_short_or_bad_header),
                cmocka_unit_test(test_version_before_type),
                cmocka_unit_test(test_type_before_fields),
                cmocka_unit_test(test_fields_for_the_type),
                cmocka_unit_test(test_type_older_than_its_version),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
