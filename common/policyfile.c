/* SPDX-License-Identifier: MIT */
/*
 * Policy files (policyfile.h): parsed a line at a time, strictly: an
 * unknown word, a value given twice or a setting that does not fit the
 * rule is an error naming the line, so that a file with a mistake changes
 * nothing.
 */
#include "policyfile.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "endpoint.h"
#include "names.h"

int policyfile_fail(char *why, size_t size, int error, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, size, fmt, ap);
        va_end(ap);
        return -error;
}

int policyfile_parse_mode(const char *s, unsigned *ret) {
        unsigned v = 0;

        if (!s[0] || strlen(s) > 4)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '7')
                        return -EINVAL;
                v = v * 8 + (unsigned) (*p - '0');
        }
        if (v > 0777)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* The value of word if it is `key=VALUE`, else NULL. */
static const char *setting(const char *word, const char *key) {
        size_t n = strlen(key);

        return strncmp(word, key, n) == 0 && word[n] == '=' ? word + n + 1 : NULL;
}

static int parse_principal(const char *kind, const char *who, struct pb_principal *ret, char *why, size_t size) {
        uid_t uid;
        gid_t gid;

        *ret = (struct pb_principal) { 0 };
        if (strcmp(kind, "user") == 0) {
                if (parse_user(who, &uid) < 0)
                        return policyfile_fail(why, size, ENOENT, "no such user '%s'", who);
                *ret = (struct pb_principal) { .kind = PB_PRINCIPAL_USER, .id = (uint32_t) uid };
        } else if (strcmp(kind, "group") == 0) {
                if (parse_group(who, &gid) < 0)
                        return policyfile_fail(why, size, ENOENT, "no such group '%s'", who);
                *ret = (struct pb_principal) { .kind = PB_PRINCIPAL_GROUP, .id = (uint32_t) gid };
        } else if (strcmp(kind, "unit") == 0) {
                ret->kind = PB_PRINCIPAL_UNIT;
                if (strlen(who) > PB_TEXT_MAX)
                        return policyfile_fail(why, size, EINVAL, "unit name longer than %d bytes", PB_TEXT_MAX);
                strcpy(ret->unit, who);
        } else
                return policyfile_fail(why, size, EINVAL, "expected user, group or unit after the pattern, got '%s'", kind);
        if (proto_principal_validate(ret) < 0)
                return policyfile_fail(why, size, EINVAL, "invalid %s '%s'", kind, who);
        return 0;
}

/* The words after WHO. */
static int parse_settings(char **words, size_t n, struct policyfile_rule *rule, char *why, size_t size) {
        bool is_unix = endpoint_is_unix(&rule->pattern), group_given = false, mode_given = false;
        const char *v, *reason;
        unsigned mode;
        uid_t uid;
        gid_t gid;

        for (size_t i = 0; i < n; i++) {
                const char *w = words[i];

                if (strcmp(w, "reserve") == 0) {
                        if (rule->attrs.flags & PB_RULE_RESERVE)
                                return policyfile_fail(why, size, EINVAL, "reserve given twice");
                        rule->attrs.flags |= PB_RULE_RESERVE;
                } else if ((v = setting(w, "owner"))) {
                        if (rule->attrs.flags & PB_RULE_OWNER)
                                return policyfile_fail(why, size, EINVAL, "owner given twice");
                        if (parse_user(v, &uid) < 0)
                                return policyfile_fail(why, size, ENOENT, "no such user '%s'", v);
                        rule->attrs.flags |= PB_RULE_OWNER;
                        rule->attrs.owner = (uint32_t) uid;
                } else if ((v = setting(w, "socket-group")) || (v = setting(w, "socket-mode"))) {
                        bool is_group = w[7] == 'g';

                        if (!is_unix)
                                return policyfile_fail(why, size, EINVAL, "socket-group and socket-mode are for unix: patterns");
                        if (is_group ? group_given : mode_given)
                                return policyfile_fail(why, size, EINVAL, "%s given twice", is_group ? "socket-group" : "socket-mode");
                        if (is_group && parse_group(v, &gid) < 0)
                                return policyfile_fail(why, size, ENOENT, "no such group '%s'", v);
                        if (!is_group && policyfile_parse_mode(v, &mode) < 0)
                                return policyfile_fail(why, size, EINVAL, "invalid socket-mode '%s': octal permission bits, "
                                            "e.g. 0660", v);
                        if (is_group)
                                rule->perm.gid = (uint32_t) gid;
                        else
                                rule->perm.mode = (uint16_t) mode;
                        group_given |= is_group;
                        mode_given |= !is_group;
                } else
                        return policyfile_fail(why, size, EINVAL, "unknown word '%s' (expected socket-group=GROUP, "
                                    "socket-mode=MODE, reserve or owner=USER)", w);
        }
        if (proto_rule_attrs_validate(&rule->principal, &rule->pattern, &rule->attrs, &reason) < 0)
                return policyfile_fail(why, size, EINVAL, "%s", reason);
        return 0;
}

int policyfile_parse_line(char *line, struct policyfile_rule *ret, char *why, size_t size) {
        struct policyfile_rule rule = { .perm = { .gid = PB_SOCKET_GROUP_NONE, .mode = PB_SOCKET_MODE_DEFAULT } };
        char *words[8], *save = NULL, *w, *hash = strchr(line, '#');
        size_t n = 0;
        int r;

        if (hash)
                *hash = '\0';
        for (w = strtok_r(line, " \t\r", &save); w; w = strtok_r(NULL, " \t\r", &save)) {
                if (n == sizeof(words) / sizeof(words[0]))
                        return policyfile_fail(why, size, EINVAL, "too many words for one rule");
                words[n++] = w;
        }
        if (n == 0)
                return 0;
        if (n < 3)
                return policyfile_fail(why, size, EINVAL, "expected PATTERN user|group|unit WHO [SETTINGS...]");
        if (endpoint_parse_pattern(words[0], &rule.pattern) < 0)
                return policyfile_fail(why, size, EINVAL, "invalid pattern '%s': %s", words[0], PB_PATTERN_SYNTAX);
        r = parse_principal(words[1], words[2], &rule.principal, why, size);
        if (r < 0)
                return r;
        r = parse_settings(words + 3, n - 3, &rule, why, size);
        if (r < 0)
                return r;
        *ret = rule;
        return 1;
}

/* The next line of f into buf (size POLICYFILE_LINE_MAX + 1), without its
 * newline. Returns 1, 0 at the end, or -EINVAL (too long, a NUL byte) / -EIO. */
static int next_line(FILE *f, char *buf) {
        size_t n = 0;
        bool nul = false;
        int c;

        while ((c = getc(f)) != EOF && c != '\n') {
                if (n == POLICYFILE_LINE_MAX)
                        return -E2BIG;
                nul |= c == '\0';
                buf[n++] = (char) c;
        }
        buf[n] = '\0';
        if (ferror(f))
                return -EIO;
        if (nul)
                return -EINVAL;
        return c != EOF || n > 0;
}

int policyfile_read(FILE *f, int (*fn)(const struct policyfile_rule *rule, void *userdata), void *userdata,
                    char *why, size_t size) {
        char buf[POLICYFILE_LINE_MAX + 1], reason[256];
        unsigned line = 0;
        int r;

        while ((r = next_line(f, buf)) > 0) {
                struct policyfile_rule rule;

                line++;
                r = policyfile_parse_line(buf, &rule, reason, sizeof(reason));
                if (r < 0)
                        return policyfile_fail(why, size, -r, "%u: %s", line, reason);
                if (r == 0)
                        continue;
                rule.line = line;
                r = fn(&rule, userdata);
                if (r < 0)
                        return policyfile_fail(why, size, -r, "%u: %s", line, strerror(-r));
        }
        if (r == -E2BIG)
                return policyfile_fail(why, size, EINVAL, "%u: line longer than %d bytes", line + 1, POLICYFILE_LINE_MAX);
        if (r == -EINVAL)
                return policyfile_fail(why, size, EINVAL, "%u: a NUL byte in the line", line + 1);
        if (r < 0)
                return policyfile_fail(why, size, EIO, "cannot read: %s", strerror(errno));
        return 0;
}
