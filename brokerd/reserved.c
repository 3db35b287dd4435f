/* SPDX-License-Identifier: MIT */
/*
 * net.ipv4.ip_local_reserved_ports of brokerd's network namespace (it
 * applies to IPv6 too): ports the kernel never picks by itself for a socket
 * that did not bind one (bind() to port 0, listen(), connect() or sendto()
 * on an unbound socket, whatever IP_LOCAL_PORT_RANGE says), while an
 * explicit bind() of them works as before. The bind guard refuses the
 * explicit binds of a leased port; keeping leased ports in this list closes
 * the other way in, for a leased port no socket holds at that moment. The
 * file's text is a comma-separated list of ports and ranges ("80,8000-8080").
 */
#include "reserved.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fd-util.h"

#define RESERVED_PATH "/proc/sys/net/ipv4/ip_local_reserved_ports"
#define RESERVED_TEXT_MAX (65536u * 7u) /* every port on its own, "65535," each */
#define RESERVED_READ_CHUNK 4096u

bool port_set_has(const struct port_set *s, unsigned port) {
        return port < 65536 && (s->bits[port / 64] >> (port % 64)) & 1;
}

void port_set_put(struct port_set *s, unsigned port, bool on) {
        if (port >= 65536)
                return;
        if (on)
                s->bits[port / 64] |= UINT64_C(1) << (port % 64);
        else
                s->bits[port / 64] &= ~(UINT64_C(1) << (port % 64));
}

/* A port number at *p (moved past it). Returns it, or -1. */
static long parse_port(const char **p) {
        char *end;
        long v;

        if (**p < '0' || **p > '9')
                return -1;
        errno = 0;
        v = strtol(*p, &end, 10);
        if (errno || v > 65535)
                return -1;
        *p = end;
        return v;
}

int reserved_parse(const char *text, struct port_set *ret) {
        struct port_set s = { { 0 } };
        const char *p = text;

        while (*p && *p != '\n') {
                long lo = parse_port(&p), hi = lo;

                if (lo >= 0 && *p == '-') {
                        p++;
                        hi = parse_port(&p);
                }
                if (lo < 0 || hi < lo)
                        return -EINVAL;
                for (long port = lo; port <= hi; port++)
                        port_set_put(&s, (unsigned) port, true);
                if (*p == ',' && p[1] >= '0' && p[1] <= '9')
                        p++;
                else if (*p && *p != '\n')
                        return -EINVAL;
        }
        *ret = s;
        return 0;
}

size_t reserved_format(const struct port_set *s, char *buf, size_t size) {
        size_t len = 0;

        if (size)
                buf[0] = '\0';
        for (unsigned port = 0; port < 65536; port++) {
                unsigned hi = port;
                size_t room;
                char *at;
                int n;

                if (s->bits[port / 64] == 0) {  /* 64 at a time: most of the set is empty */
                        port |= 63;
                        continue;
                }
                if (!port_set_has(s, port))
                        continue;
                while (hi + 1 < 65536 && port_set_has(s, hi + 1))
                        hi++;
                /* Past the buffer (or with none: buf NULL, size 0), only counted. */
                at = len < size ? buf + len : NULL;
                room = len < size ? size - len : 0;

                n = hi > port ? snprintf(at, room, "%s%u-%u", len ? "," : "", port, hi)
                              : snprintf(at, room, "%s%u", len ? "," : "", port);
                len += (size_t) n;
                port = hi;
        }
        return len;
}

/* Buffers grow as the text needs (a few bytes, usually): a fixed 450 KiB
 * one would be malloc()ed from the heap after the first free, for good. */
int reserved_read(struct port_set *ret) {
        _cleanup_close_ int fd = open(RESERVED_PATH, O_RDONLY | O_CLOEXEC);
        char *text = NULL;
        size_t len = 0, size = 0;
        ssize_t n = 1;
        int r = fd < 0 ? -errno : 0;

        while (r >= 0 && n > 0) {
                if (size - len < RESERVED_READ_CHUNK) {
                        char *t = size <= RESERVED_TEXT_MAX ? realloc(text, size + RESERVED_READ_CHUNK) : NULL;

                        if (!t) {
                                r = -ENOMEM;
                                break;
                        }
                        text = t;
                        size += RESERVED_READ_CHUNK;
                }
                n = read(fd, text + len, size - len - 1);
                if (n < 0)
                        r = -errno;
                else
                        len += (size_t) n;
        }
        if (r >= 0) {
                text[len] = '\0';
                r = reserved_parse(text, ret);
        }
        free(text);
        return r;
}

int reserved_write(const struct port_set *s) {
        _cleanup_close_ int fd = open(RESERVED_PATH, O_WRONLY | O_CLOEXEC);
        size_t len = reserved_format(s, NULL, 0), off = 0;
        char *text = malloc(len + 2);
        int r = 0;

        if (fd < 0 || !text) {
                r = fd < 0 ? -errno : -ENOMEM;
                free(text);
                return r;
        }
        reserved_format(s, text, len + 1);
        text[len++] = '\n';
        /* The kernel takes a page per write() and merges the rest in. */
        while (off < len && r >= 0) {
                ssize_t n = write(fd, text + off, len - off);

                if (n <= 0)
                        r = n < 0 ? -errno : -EIO;
                else
                        off += (size_t) n;
        }
        free(text);
        return r;
}
