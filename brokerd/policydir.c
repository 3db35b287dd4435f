/* SPDX-License-Identifier: MIT */
/*
 * Reading the policy directory (policydir.h). Each file is opened once and
 * checked through its descriptor, so what is read is what was checked.
 */
#include "policydir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "endpoint.h"
#include "fd-util.h"
#include "policy.h"
#include "policyfile.h"

/* Root's or self's, and nobody else may write it. */
static bool trusted(const struct stat *st, uid_t self) {
        return (st->st_uid == 0 || st->st_uid == self) && !(st->st_mode & 022);
}

/* A rules file's name: NAME.conf, of the characters a source may have. */
static bool wanted_name(const char *name) {
        size_t n = strlen(name);

        return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".conf") == 0;
}

static bool valid_name(const char *name) {
        if (strlen(name) > PB_RULE_SOURCE_MAX)
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr(PB_UNIX_PATH_CHARS, *p)))
                        return false;
        return true;
}

struct reading {
        struct policydir *d;
        const char *name;
};

static int add_rule(const struct policyfile_rule *pr, void *userdata) {
        struct reading *rd = userdata;
        struct policydir *d = rd->d;

        if (d->n == POLICY_RULES_MAX)
                return -ENOSPC;
        if (d->n == d->cap) {
                size_t cap = d->cap ? d->cap * 2 : 16;
                struct store_rule *rules = realloc(d->rules, cap * sizeof(*rules));
                unsigned *lines;

                if (!rules)
                        return -ENOMEM;
                d->rules = rules;
                lines = realloc(d->lines, cap * sizeof(*lines));
                if (!lines)
                        return -ENOMEM;
                d->lines = lines;
                d->cap = cap;
        }
        d->rules[d->n] = (struct store_rule) { .principal = pr->principal, .pattern = pr->pattern,
                                               .perm = pr->perm, .attrs = pr->attrs };
        snprintf(d->rules[d->n].source, sizeof(d->rules[d->n].source), "%s", rd->name);
        d->lines[d->n++] = pr->line;
        return 0;
}

static int read_file(int dir_fd, const char *dir, const char *name, uid_t self, struct policydir *d, char *why,
                     size_t size) {
        struct reading rd = { .d = d, .name = name };
        char reason[300];
        struct stat st;
        FILE *f;
        int fd, r;

        if (!valid_name(name))
                return policyfile_fail(why, size, EINVAL, "%s/%s: a rules file's name is at most %d letters, digits and %s",
                            dir, name, PB_RULE_SOURCE_MAX, PB_UNIX_PATH_CHARS);
        fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)     /* the worker reads it, as its own unprivileged user */
                return policyfile_fail(why, size, errno, "%s/%s: cannot open: %s%s", dir, name, strerror(errno),
                                       errno == EACCES ? " (brokerd's unprivileged worker reads it: mode 0644)" : "");
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || !trusted(&st, self)) {
                safe_close(fd);
                return policyfile_fail(why, size, EPERM, "%s/%s must be a plain file owned by root (or uid %u) and not "
                            "writable by group or others; nothing read", dir, name, (unsigned) self);
        }
        f = fdopen(fd, "r");
        if (!f) {
                safe_close(fd);
                return policyfile_fail(why, size, ENOMEM, "out of memory");
        }
        r = policyfile_read(f, add_rule, &rd, reason, sizeof(reason));
        fclose(f);
        if (r == -ENOSPC)
                return policyfile_fail(why, size, ENOSPC, "%s/%s: more than %d rules in all", dir, name, POLICY_RULES_MAX);
        return r < 0 ? policyfile_fail(why, size, -r, "%s/%s:%s", dir, name, reason) : 0;
}

static int compare_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The names of dir's rules files, sorted, into *ret (n in *ret_n). */
static int list_files(DIR *dh, const char *dir, char ***ret, size_t *ret_n, char *why, size_t size) {
        char **names = calloc(POLICYDIR_FILES_MAX, sizeof(*names));
        struct dirent *de;
        size_t n = 0;

        if (!names)
                return policyfile_fail(why, size, ENOMEM, "out of memory");
        while ((errno = 0, de = readdir(dh))) {
                if (!wanted_name(de->d_name))
                        continue;
                if (n == POLICYDIR_FILES_MAX || !(names[n] = strdup(de->d_name))) {
                        for (size_t i = 0; i < n; i++)
                                free(names[i]);
                        free(names);
                        return n == POLICYDIR_FILES_MAX
                                       ? policyfile_fail(why, size, ENOSPC, "%s: more than %d rules files", dir,
                                              POLICYDIR_FILES_MAX)
                                       : policyfile_fail(why, size, ENOMEM, "out of memory");
                }
                n++;
        }
        qsort(names, n, sizeof(*names), compare_names);
        *ret = names;
        *ret_n = n;
        return 0;
}

int policydir_read(const char *dir, uid_t self, struct policydir *ret, char *why, size_t size) {
        struct policydir d = { 0 };
        struct policy empty = { 0 };
        struct store_rule_change *changes = NULL;
        char **names = NULL;
        size_t n_names = 0, conflict = 0;
        struct stat st;
        DIR *dh;
        int r;

        dh = opendir(dir);
        if (!dh && errno == ENOENT) {
                *ret = d;
                return 0;
        }
        if (!dh)
                return policyfile_fail(why, size, errno, "%s: cannot open: %s", dir, strerror(errno));
        if (fstat(dirfd(dh), &st) < 0 || !trusted(&st, self)) {
                closedir(dh);
                return policyfile_fail(why, size, EPERM, "%s must be a directory owned by root (or uid %u) and not writable "
                            "by group or others; nothing read", dir, (unsigned) self);
        }
        r = list_files(dh, dir, &names, &n_names, why, size);
        for (size_t i = 0; r >= 0 && i < n_names; i++)
                r = read_file(dirfd(dh), dir, names[i], self, &d, why, size);
        for (size_t i = 0; i < n_names; i++)
                free(names[i]);
        free(names);
        closedir(dh);
        /* A rule in two places: planned against no rules, it conflicts with itself. */
        if (r >= 0 && policy_plan(&empty, d.rules, d.n, POLICY_SCOPE_FILES, true, &changes, NULL, &conflict) == -EEXIST) {
                const struct store_rule *x = &d.rules[conflict];
                size_t first = 0;

                while (first < conflict && policy_rule_compare(&d.rules[first], x) != 0)
                        first++;
                r = policyfile_fail(why, size, EEXIST, "%s/%s:%u: the rule of %s:%u again (one line per pattern and who)", dir,
                         x->source, d.lines[conflict], d.rules[first].source, d.lines[first]);
        }
        free(changes);
        if (r < 0) {
                policydir_done(&d);
                return r;
        }
        *ret = d;
        return 0;
}

void policydir_done(struct policydir *d) {
        free(d->rules);
        free(d->lines);
        *d = (struct policydir) { 0 };
}

int policydir_check(const char *dir, uid_t self) {
        struct policydir d;
        char why[512];
        int r;

        if (!dir)
                return 0;
        r = policydir_read(dir, self, &d, why, sizeof(why));
        if (r < 0)
                fprintf(stderr, "brokerd: %s\n", why);
        else
                policydir_done(&d);
        return r;
}
