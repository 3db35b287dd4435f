/* SPDX-License-Identifier: MIT */
/*
 * portctl's shared helpers (see cli.h): the parsed global options, the
 * one-line failure and usage messages with their exit statuses (and under
 * --json their JSON error objects and codes), endpoint checks and canonical
 * text, the connection to brokerd, the one JSON string writer every --json
 * output uses, user and group names, times, a growable array and the table
 * printer of the human output.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "timespan.h"

const char *arg_socket = NULL;
bool arg_json = false;

/* --- exit statuses ------------------------------------------------------------ */

const char *errno_name(int e) {
        const char *name = strerrorname_np(e);

        return name ? name : "error";
}

/* Prints `portctl: MESSAGE` and hint (may be NULL) on stderr and, under --json,
 * {"error":MESSAGE,"code":code} on stdout. Returns status. */
static int vreport(int status, const char *code, const char *hint, const char *fmt, va_list ap) {
        char *message = NULL;

        if (vasprintf(&message, fmt, ap) < 0)   /* %m: the caller's errno, untouched so far */
                message = NULL;
        fprintf(stderr, "portctl: %s\n%s", message ? message : strerror(ENOMEM), hint ? hint : "");
        if (arg_json) {
                fputs("{\"error\":", stdout);
                json_string(stdout, message ? message : strerror(ENOMEM));
                fputs(",\"code\":", stdout);
                json_string(stdout, code);
                fputs("}\n", stdout);
                fflush(stdout);
        }
        free(message);
        return status;
}

static int report(int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int report(int status, const char *code, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vreport(status, code, NULL, fmt, ap);
        va_end(ap);
        return r;
}

int cli_usage(const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vreport(EXIT_USAGE, "usage", "Try 'portctl --help'.\n", fmt, ap);
        va_end(ap);
        return r;
}

int cli_fail(int e, const char *fmt, ...) {
        const char *code = errno_name(e);
        va_list ap;
        int r;

        errno = e;                      /* for %m */
        va_start(ap, fmt);
        r = vreport(EXIT_FAILURE, code, NULL, fmt, ap);
        va_end(ap);
        return r;
}

int cli_fail_pb(const pb_error *err) {
        int e = err->code > 0 ? err->code : EIO;

        return err->message[0] ? cli_fail(e, "%s", err->message) : cli_fail(e, "%m");
}

int cli_exec_failed(const char *cmd, int e) {
        const char *code = errno_name(e);

        errno = e;                      /* for %m */
        return report(e == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC, code, "cannot run %s: %m", cmd);
}

int cli_check_endpoint(const char *text, bool pattern) {
        struct pb_endpoint e;

        if (!pattern && endpoint_parse(text, &e) < 0)
                return cli_usage("invalid endpoint '%s': " PB_ENDPOINT_SYNTAX, text);
        if (pattern && endpoint_parse_pattern(text, &e) < 0)
                return cli_usage("invalid endpoint pattern '%s': " PB_PATTERN_SYNTAX, text);
        return 0;
}

int cli_connect(pb_conn **ret) {
        pb_error err;

        if (pb_connect(arg_socket, ret, &err) < 0)
                return report(EXIT_FAILURE, "connect", "%s", err.message[0] ? err.message : strerror(err.code));
        return 0;
}

/* Closes every fd above stderr but the n in keep (at most 8): a watcher
 * must not keep open what the server closes (a pipe a reader waits on). */
static void close_all_but(const int *keep, size_t n) {
        int sorted[8];
        unsigned from = 3;

        n = n < 8 ? n : 8;
        for (size_t i = 0; i < n; i++) {
                size_t j = i;

                for (; j > 0 && sorted[j - 1] > keep[i]; j--)
                        sorted[j] = sorted[j - 1];
                sorted[j] = keep[i];
        }
        for (size_t i = 0; i < n; i++) {
                if (sorted[i] < 3)
                        continue;
                if ((unsigned) sorted[i] > from)
                        (void) syscall(SYS_close_range, from, (unsigned) sorted[i] - 1, 0);
                from = (unsigned) sorted[i] + 1;
        }
        (void) syscall(SYS_close_range, from, ~0U, 0);
}

int cli_start_watcher(const int *keep, size_t n) {
        struct sigaction dfl = { .sa_handler = SIG_DFL }, old;
        int status = 0, null_fd, r;
        pid_t child, watcher;

        /* SIGCHLD ignored (inherited so) would reap the child before waitpid() reads its status. */
        (void) sigaction(SIGCHLD, &dfl, &old);
        fflush(NULL);
        child = fork();
        if (child > 0) {
                r = waitpid(child, &status, 0) < 0 ? -errno
                    : WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 1 : -EAGAIN;  /* the second fork failed */
                (void) sigaction(SIGCHLD, &old, NULL);
                return r;
        }
        if (child < 0) {
                r = -errno;
                (void) sigaction(SIGCHLD, &old, NULL);
                return r;
        }
        (void) sigaction(SIGCHLD, &old, NULL);
        watcher = fork();
        if (watcher != 0)
                _exit(watcher < 0 ? EXIT_FAILURE : 0);
        null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd >= 0) {
                dup2(null_fd, STDIN_FILENO);
                dup2(null_fd, STDOUT_FILENO);
        }
        close_all_but(keep, n);
        return 0;
}

int cli_take_option(int argc, char **argv, int *i, const char *verb, const struct cli_option *opts, size_t n) {
        const char *arg = argv[*i], *value;

        for (size_t k = 0; k < n; k++) {
                size_t len = strlen(opts[k].name);

                if (strncmp(arg, opts[k].name, len) != 0 || (arg[len] != '=' && arg[len] != '\0'))
                        continue;
                if (arg[len] == '=')
                        value = arg + len + 1;
                else if (*i + 1 >= argc)
                        return cli_usage("%s: %s needs a value", verb, arg);
                else
                        value = argv[++*i];
                if (*opts[k].value)
                        return cli_usage("%s: %s given twice", verb, opts[k].name);
                if (!value[0])
                        return cli_usage("%s: %s needs a value", verb, opts[k].name);
                *opts[k].value = value;
                return 0;
        }
        return -1;
}

int cli_parse_operand(int argc, char **argv, const char *verb, const char *too_many, const char **ret_operand) {
        const char *operand = NULL;

        for (int i = 1; i < argc; i++) {
                if (argv[i][0] == '-' && argv[i][1])
                        return cli_usage("%s: unknown option '%s'", verb, argv[i]);
                else if (!too_many)
                        return cli_usage("%s: unexpected argument '%s'", verb, argv[i]);
                else if (operand)
                        return cli_usage("%s: %s", verb, too_many);
                else
                        operand = argv[i];
        }
        *ret_operand = operand;
        return 0;
}

/* --- text -------------------------------------------------------------------- */

char *canonical_endpoint(const char *text, bool pattern, char buf[static PB_ENDPOINT_STRLEN]) {
        struct pb_endpoint e;

        if (!pattern && endpoint_parse(text, &e) == 0)
                return endpoint_format(&e, buf);
        if (pattern && endpoint_parse_pattern(text, &e) == 0)
                return endpoint_format_pattern(&e, buf);
        snprintf(buf, PB_ENDPOINT_STRLEN, "%s", text);
        return buf;
}

/* Length of the valid UTF-8 sequence at s, or 0. */
static size_t utf8_len(const unsigned char *s) {
        size_t n;
        uint32_t cp;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2, cp = s[0] & 0x1f;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                n = 3, cp = s[0] & 0x0f;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                n = 4, cp = s[0] & 0x07;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return n;
}

/* Writes the ASCII character c, escaped as JSON needs. */
static void json_ascii(FILE *f, unsigned char c) {
        switch (c) {
        case '"':
                fputs("\\\"", f);
                break;
        case '\\':
                fputs("\\\\", f);
                break;
        case '\n':
                fputs("\\n", f);
                break;
        case '\t':
                fputs("\\t", f);
                break;
        default:
                if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\u%04x", c);
                else
                        fputc(c, f);
        }
}

void json_string(FILE *f, const char *s) {
        const unsigned char *p = (const unsigned char *) s;

        fputc('"', f);
        while (*p) {
                size_t n = utf8_len(p);

                if (n == 0) {
                        fputs("\\ufffd", f);
                        p++;
                } else if (n > 1) {
                        fwrite(p, 1, n, f);
                        p += n;
                } else
                        json_ascii(f, *p++);
        }
        fputc('"', f);
}

void json_string_or_null(FILE *f, const char *s) {
        if (s)
                json_string(f, s);
        else
                fputs("null", f);
}

/* --- names, ids and times ------------------------------------------------------ */

const char *user_name(uid_t uid) {
        struct passwd *pw = getpwuid(uid);
        return pw ? pw->pw_name : NULL;
}

const char *group_name(gid_t gid) {
        struct group *gr = getgrgid(gid);
        return gr ? gr->gr_name : NULL;
}

void user_text(uid_t uid, char *buf, size_t size) {
        const char *name = user_name(uid);

        if (name)
                snprintf(buf, size, "%s (uid %u)", name, (unsigned) uid);
        else
                snprintf(buf, size, "uid %u", (unsigned) uid);
}

void format_time(int64_t t, char *buf, size_t size) {
        time_t tt = (time_t) t;
        struct tm tm;
        size_t n;

        if (t <= 0 || !localtime_r(&tt, &tm) ||
            (n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S%z", &tm)) < 5 || n + 2 > size) {
                snprintf(buf, size, "-");
                return;
        }
        /* %z gives +hhmm; ISO 8601's extended format wants +hh:mm. */
        memmove(buf + n - 1, buf + n - 2, 3);
        buf[n - 2] = ':';
}

/* Takes n decimal digits at *s into *ret, moving *s past them. */
static bool take_digits(const char **s, int n, int *ret) {
        int v = 0;

        for (int i = 0; i < n; i++) {
                if ((*s)[i] < '0' || (*s)[i] > '9')
                        return false;
                v = v * 10 + ((*s)[i] - '0');
        }
        *s += n;
        *ret = v;
        return true;
}

/* YYYY-MM-DD[( |T)HH:MM[:SS]][Z|(+|-)HH[:]MM]: local time unless an offset is given. */
static int parse_date(const char *s, int64_t *ret) {
        int year, mon, day, hour = 0, min = 0, sec = 0, off_h, off_m;
        bool utc = false;
        long offset = 0;
        struct tm tm;
        time_t t;

        if (!take_digits(&s, 4, &year) || *s++ != '-' || !take_digits(&s, 2, &mon) || *s++ != '-' ||
            !take_digits(&s, 2, &day))
                return -EINVAL;
        if (*s == ' ' || *s == 'T') {
                s++;
                if (!take_digits(&s, 2, &hour) || *s++ != ':' || !take_digits(&s, 2, &min))
                        return -EINVAL;
                if (*s == ':') {
                        s++;
                        if (!take_digits(&s, 2, &sec))
                                return -EINVAL;
                }
        }
        if (*s == 'Z') {
                utc = true;
                s++;
        } else if (*s == '+' || *s == '-') {
                long sign = *s++ == '-' ? -1 : 1;

                if (!take_digits(&s, 2, &off_h))
                        return -EINVAL;
                if (*s == ':')
                        s++;
                if (!take_digits(&s, 2, &off_m) || off_h > 23 || off_m > 59)
                        return -EINVAL;
                utc = true;
                offset = sign * (off_h * 3600L + off_m * 60L);
        }
        if (*s || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 59)
                return -EINVAL;
        tm = (struct tm) { .tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = day, .tm_hour = hour, .tm_min = min,
                           .tm_sec = sec, .tm_isdst = -1 };
        t = utc ? timegm(&tm) - offset : mktime(&tm);
        /* mktime() and timegm() roll February 30 over into March: no such day. */
        if (tm.tm_mday != day || tm.tm_mon != mon - 1 || t < 0)
                return -EINVAL;
        *ret = (int64_t) t;
        return 0;
}

int parse_time(const char *s, int64_t now, int64_t *ret) {
        static const char *const days[] = { "yesterday", "today", "tomorrow" };
        uint64_t span;
        struct tm tm;
        time_t t = (time_t) now;
        int64_t v = 0;

        if (strcmp(s, "now") == 0) {
                *ret = now;
                return 0;
        }
        for (int i = 0; i < 3; i++)
                if (strcmp(s, days[i]) == 0) {
                        if (!localtime_r(&t, &tm))
                                return -EINVAL;
                        tm = (struct tm) { .tm_year = tm.tm_year, .tm_mon = tm.tm_mon, .tm_mday = tm.tm_mday + i - 1,
                                           .tm_isdst = -1 };
                        t = mktime(&tm);
                        if (t < 0)
                                return -EINVAL;
                        *ret = (int64_t) t;
                        return 0;
                }
        if (s[0] == '@') {
                if (!s[1] || strlen(s + 1) > 12 || strspn(s + 1, "0123456789") != strlen(s + 1))
                        return -EINVAL;
                for (const char *p = s + 1; *p; p++)
                        v = v * 10 + (*p - '0');
                *ret = v;
                return 0;
        }
        if (s[0] == '-' || s[0] == '+') {
                if (timespan_parse(s + 1, &span) < 0 || (s[0] == '-' && span > (uint64_t) now))
                        return -EINVAL;
                *ret = s[0] == '-' ? now - (int64_t) span : now + (int64_t) span;
                return 0;
        }
        return parse_date(s, ret);
}

void *grow(void *items, size_t n, size_t *alloc, size_t size) {
        size_t na;
        void *ni;

        if (n < *alloc)
                return items;
        na = *alloc ? *alloc * 2 : 16;
        ni = realloc(items, na * size);
        if (ni)
                *alloc = na;
        return ni;
}

int list_append(struct list *l, const void *item) {
        void *items = grow(l->items, l->n, &l->alloc, l->size);

        if (!items)
                return -ENOMEM;
        l->items = items;
        memcpy((char *) l->items + l->n++ * l->size, item, l->size);
        return 0;
}

/* --- tables -------------------------------------------------------------------- */

int table_cell(struct table *t, const char *fmt, ...) {
        char **cells = grow(t->cells, t->ncells, &t->alloc, sizeof(char *));
        va_list ap;
        char *s;
        int r;

        if (!cells)
                return -ENOMEM;
        t->cells = cells;
        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        t->cells[t->ncells++] = s;
        return 0;
}

void table_print(const struct table *t) {
        size_t width[TABLE_MAX_COLS] = { 0 };

        for (size_t i = 0; i < t->ncells; i++) {
                size_t n = strlen(t->cells[i]);
                if (n > width[i % t->ncols])
                        width[i % t->ncols] = n;
        }
        for (size_t i = 0; i < t->ncells; i++) {
                if ((i + 1) % t->ncols == 0 || i + 1 == t->ncells)
                        printf("%s\n", t->cells[i]);
                else
                        printf("%-*s  ", (int) width[i % t->ncols], t->cells[i]);
        }
}

void table_free(struct table *t) {
        for (size_t i = 0; i < t->ncells; i++)
                free(t->cells[i]);
        free(t->cells);
        *t = (struct table) { .ncols = t->ncols };
}
