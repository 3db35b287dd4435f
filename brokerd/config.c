/* SPDX-License-Identifier: MIT */
/*
 * brokerd.conf (see config.h): read whole, line by line, before brokerd
 * does anything else; every problem is a start-up error naming the line.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Every value read: options point into them for the life of the process. */
static struct {
        char **v;
        size_t n, cap;
} kept;

/* A copy of s kept for good, or NULL when out of memory. */
static char *keep(const char *s) {
        char *copy;

        if (kept.n == kept.cap) {
                size_t cap = kept.cap ? kept.cap * 2 : 16;
                char **v = realloc(kept.v, cap * sizeof(*v));

                if (!v)
                        return NULL;
                kept.v = v;
                kept.cap = cap;
        }
        copy = strdup(s);
        if (copy)
                kept.v[kept.n++] = copy;
        return copy;
}

static char *trim(char *s) {
        char *end;

        while (*s == ' ' || *s == '\t')
                s++;
        end = s + strlen(s);
        while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
                *--end = '\0';
        return s;
}

/* The file's owner and mode: root's or ours, writable by nobody else. */
static int check_file(FILE *f, const char *path) {
        struct stat st;

        if (fstat(fileno(f), &st) < 0) {
                fprintf(stderr, "brokerd: cannot inspect %s: %s\n", path, strerror(errno));
                return -1;
        }
        if (!S_ISREG(st.st_mode) || (st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022)) {
                fprintf(stderr, "brokerd: %s must be a plain file owned by root (or uid %u) and not writable by "
                        "group or others; refusing to read it\n", path, (unsigned) geteuid());
                return -1;
        }
        return 0;
}

int config_read(const char *path, bool required, int (*fn)(const char *key, const char *value, unsigned line,
                                                            void *userdata), void *userdata) {
        char buf[CONFIG_LINE_MAX + 2];
        unsigned line = 0;
        FILE *f;
        int r = 0;

        if (strcmp(path, "/dev/null") == 0)
                return 0;
        f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT && !required)
                        return 0;
                fprintf(stderr, "brokerd: cannot read %s: %s\n", path, strerror(errno));
                return -1;
        }
        if (check_file(f, path) < 0) {
                fclose(f);
                return -1;
        }
        while (r == 0 && fgets(buf, sizeof(buf), f)) {
                char *s, *eq, *key, *value;
                size_t n = strlen(buf);

                line++;
                if (n > CONFIG_LINE_MAX || (n == sizeof(buf) - 1 && buf[n - 1] != '\n')) {
                        fprintf(stderr, "brokerd: %s:%u: line longer than %d bytes\n", path, line, CONFIG_LINE_MAX);
                        r = -1;
                        break;
                }
                if (n && buf[n - 1] == '\n')
                        buf[n - 1] = '\0';
                s = trim(buf);
                if (!*s || *s == '#')
                        continue;
                eq = strchr(s, '=');
                if (!eq) {
                        fprintf(stderr, "brokerd: %s:%u: expected KEY = VALUE, got '%s'\n", path, line, s);
                        r = -1;
                        break;
                }
                *eq = '\0';
                key = trim(s);
                value = keep(trim(eq + 1));
                if (!value) {
                        fprintf(stderr, "brokerd: out of memory\n");
                        r = -1;
                        break;
                }
                r = fn(key, value, line, userdata);
        }
        if (r == 0 && ferror(f)) {
                fprintf(stderr, "brokerd: cannot read %s: %s\n", path, strerror(errno));
                r = -1;
        }
        fclose(f);
        return r;
}
