/* SPDX-License-Identifier: MIT */
/*
 * Bounds-checked cursors for writing and reading messages field by field,
 * big-endian: the one way portbroker puts a structure on a wire (the
 * control protocol, proto.c, and brokerd's own monitor channel,
 * brokerd/privsep.c). A write past the buffer sets overflow, a read past
 * the message or of an invalid value sets bad; either makes the whole
 * message fail, checked once at the end.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "endpoint.h"

struct wcur {
        uint8_t *buf;
        size_t size, off;
        bool overflow;
};

struct rcur {
        const uint8_t *buf;
        size_t len, off;
        bool bad;
};

static inline uint8_t *wtake(struct wcur *w, size_t n) {
        if (w->overflow || n > w->size - w->off) {
                w->overflow = true;
                return NULL;
        }
        w->off += n;
        return w->buf + w->off - n;
}

static inline void put_u8(struct wcur *w, uint8_t v) {
        uint8_t *p = wtake(w, 1);
        if (p)
                p[0] = v;
}

static inline void put_be(struct wcur *w, uint64_t v, size_t n) {
        uint8_t *p = wtake(w, n);
        if (p)
                for (size_t i = 0; i < n; i++)
                        p[i] = (uint8_t) (v >> (8 * (n - 1 - i)));
}

/* Text of at most max bytes (max <= 255): a length byte, then the bytes. */
static inline void put_text_max(struct wcur *w, const char *s, size_t max) {
        size_t n = strnlen(s, max + 1);
        uint8_t *p;

        if (n > max) {
                w->overflow = true;
                return;
        }
        put_u8(w, (uint8_t) n);
        p = wtake(w, n);
        if (p)
                memcpy(p, s, n);
}

static inline void put_endpoint(struct wcur *w, const struct pb_endpoint *e) {
        uint8_t buf[PB_ENDPOINT_WIRE_MAX];
        size_t n = endpoint_encode(e, buf);
        uint8_t *p = wtake(w, n);

        if (p)
                memcpy(p, buf, n);
}

static inline const uint8_t *rtake(struct rcur *r, size_t n) {
        if (r->bad || n > r->len - r->off) {
                r->bad = true;
                return NULL;
        }
        r->off += n;
        return r->buf + r->off - n;
}

static inline uint8_t get_u8(struct rcur *r) {
        const uint8_t *p = rtake(r, 1);
        return p ? p[0] : 0;
}

static inline uint64_t get_be(struct rcur *r, size_t n) {
        const uint8_t *p = rtake(r, n);
        uint64_t v = 0;

        if (p)
                for (size_t i = 0; i < n; i++)
                        v = v << 8 | p[i];
        return v;
}

/* A bool: 0 or 1, anything else is bad. */
static inline uint8_t get_bool(struct rcur *r) {
        uint8_t v = get_u8(r);
        if (v > 1)
                r->bad = true;
        return v;
}

/* Text: a length byte (at most max), then that many bytes, none NUL or a
 * control character; out has room for max + 1. */
static inline void get_text_max(struct rcur *r, char *out, size_t max) {
        size_t n = get_u8(r);
        const uint8_t *p = n <= max ? rtake(r, n) : NULL;

        out[0] = '\0';
        if (!p) {
                r->bad = true;
                return;
        }
        for (size_t i = 0; i < n; i++)
                if (p[i] < 0x20 || p[i] == 0x7f)
                        r->bad = true;
        memcpy(out, p, n);
        out[n] = '\0';
}

static inline void get_endpoint(struct rcur *r, bool pattern, struct pb_endpoint *ret) {
        size_t n;

        if (r->bad || endpoint_decode(r->buf + r->off, r->len - r->off, pattern, ret, &n) < 0)
                r->bad = true;
        else
                r->off += n;
}
