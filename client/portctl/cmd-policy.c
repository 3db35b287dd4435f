/* SPDX-License-Identifier: MIT */
/*
 * portctl policy add, remove and list: the rules saying which user, group
 * or systemd unit may get endpoints matching a pattern. Changing rules is
 * for admins (brokerd decides); listing prints a table or JSON.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "endpoint.h"
#include "portbroker.h"
#include "proto.h"

/* "user nobody (65534)", "group 1234", "unit web.service" */
static void format_principal(pb_principal_kind kind, uint32_t id, const char *unit, char *buf, size_t size) {
        const char *name;

        switch (kind) {
        case PB_USER:
        case PB_GROUP:
                name = kind == PB_USER ? user_name(id) : group_name(id);
                if (name)
                        snprintf(buf, size, "%s %s (%u)", kind == PB_USER ? "user" : "group", name, id);
                else
                        snprintf(buf, size, "%s %u", kind == PB_USER ? "user" : "group", id);
                break;
        default:
                snprintf(buf, size, "unit %s", unit);
        }
}

/* --- add ------------------------------------------------------------------- */

struct add_args {
        const char *pattern;
        const char *user, *group, *unit;        /* exactly one is set */
        const char *socket_group, *socket_mode; /* Unix patterns only */
};

static int parse_add_args(int argc, char **argv, struct add_args *ret) {
        struct add_args a = { 0 };
        const struct cli_option opts[] = {
                { "--user", &a.user }, { "--group", &a.group }, { "--unit", &a.unit },
                { "--socket-group", &a.socket_group }, { "--socket-mode", &a.socket_mode },
        };

        for (int i = 1; i < argc; i++) {
                int r = cli_take_option(argc, argv, &i, "policy add", opts, sizeof(opts) / sizeof(opts[0]));

                if (r > 0)
                        return r;
                if (r == 0)
                        continue;
                if (argv[i][0] == '-' && argv[i][1])
                        return cli_usage("policy add: unknown option '%s'", argv[i]);
                if (a.pattern)
                        return cli_usage("policy add: one pattern at a time");
                a.pattern = argv[i];
        }
        if (!a.pattern)
                return cli_usage("policy add: no endpoint pattern given");
        if (!!a.user + !!a.group + !!a.unit != 1)
                return cli_usage("policy add: give exactly one of --user, --group or --unit");
        if ((a.socket_group || a.socket_mode) && strncmp(a.pattern, "unix:", 5) != 0)
                return cli_usage("policy add: --socket-group and --socket-mode are for unix: patterns");
        *ret = a;
        return cli_check_endpoint(a.pattern, true);
}

/* A socket mode: octal permission bits, at most 0777. */
static int parse_mode(const char *s, unsigned *ret) {
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

/* The socket group and mode a gives (brokerd's group and 0600 when not). Returns 0 or EXIT_FAILURE. */
static int resolve_socket(const struct add_args *a, uint32_t *ret_gid, unsigned *ret_mode) {
        gid_t gid;

        *ret_gid = PB_SOCKET_GROUP_NONE;
        *ret_mode = PB_SOCKET_MODE_DEFAULT;
        if (a->socket_group) {
                if (parse_group(a->socket_group, &gid) < 0)
                        return cli_fail(ENOENT, "no such group '%s'", a->socket_group);
                *ret_gid = (uint32_t) gid;
        }
        if (a->socket_mode && parse_mode(a->socket_mode, ret_mode) < 0)
                return cli_usage("policy add: invalid --socket-mode '%s': octal permission bits, e.g. 0660",
                                 a->socket_mode);
        return 0;
}

/* " (socket group www-data, mode 0660)" for a Unix rule, "" for others. */
static const char *socket_text(const char *pattern, uint32_t gid, unsigned mode, char *buf, size_t size) {
        const char *name = gid == PB_SOCKET_GROUP_NONE ? "brokerd's" : group_name(gid);
        char num[16];

        if (strncmp(pattern, "unix:", 5) != 0)
                return "";
        snprintf(num, sizeof(num), "%u", gid);
        snprintf(buf, size, " (socket group %s, mode %04o)", name ? name : num, mode);
        return buf;
}

/* The principal a names, users and groups looked up by name. Returns 0 or EXIT_FAILURE. */
static int resolve_principal(const struct add_args *a, pb_principal_kind *ret_kind, uint32_t *ret_id) {
        uid_t uid;
        gid_t gid;

        if (a->user) {
                if (parse_user(a->user, &uid) < 0)
                        return cli_fail(ENOENT, "no such user '%s'", a->user);
                *ret_kind = PB_USER;
                *ret_id = (uint32_t) uid;
        } else if (a->group) {
                if (parse_group(a->group, &gid) < 0)
                        return cli_fail(ENOENT, "no such group '%s'", a->group);
                *ret_kind = PB_GROUP;
                *ret_id = (uint32_t) gid;
        } else {
                *ret_kind = PB_UNIT;
                *ret_id = 0;
        }
        return 0;
}

/* The rule being added, and the one brokerd has like it (same principal and pattern). */
struct same_rule {
        pb_principal_kind kind;
        uint32_t id;
        const char *unit;
        const char *pattern;            /* canonical */
        pb_rule found;
        bool seen;
};

static int find_same(const pb_rule *rule, void *userdata) {
        struct same_rule *w = userdata;

        if (rule->kind != w->kind || strcmp(rule->pattern, w->pattern) != 0 ||
            (w->kind == PB_UNIT ? strcmp(rule->unit, w->unit) != 0 : rule->id_value != w->id))
                return 0;
        w->found = *rule;
        w->seen = true;
        return 1;
}

/* brokerd has a rule with this principal and pattern (EEXIST): the add is
 * done already when that rule is the same (a Unix one with the same socket
 * group and mode), and says so; a different one is an error. Returns the
 * exit status. */
static int already_there(pb_conn *c, struct same_rule *w, uint32_t socket_gid, unsigned socket_mode,
                         const pb_error *add_err) {
        char who[512], sock[128];
        pb_error err;

        if (pb_conn_policy_list(c, find_same, w, &err) < 0)
                return cli_fail_pb(&err);
        if (!w->seen)                   /* removed meanwhile: brokerd's word stands */
                return cli_fail_pb(add_err);
        format_principal(w->kind, w->id, w->unit, who, sizeof(who));
        if (!strncmp(w->pattern, "unix:", 5) && (w->found.socket_gid != socket_gid ||
                                                 w->found.socket_mode != socket_mode))
                return cli_fail(EEXIST, "rule %" PRIu64 " already lets %s get %s%s; remove it first to change "
                                "the sockets' group or mode", w->found.id, who, w->pattern,
                                socket_text(w->pattern, w->found.socket_gid, w->found.socket_mode, sock,
                                            sizeof(sock)));
        if (arg_json)
                printf("{\"id\":%" PRIu64 ",\"added\":false}\n", w->found.id);
        else
                printf("rule %" PRIu64 " already lets %s get %s%s: nothing to add\n", w->found.id, who, w->pattern,
                       socket_text(w->pattern, socket_gid, socket_mode, sock, sizeof(sock)));
        return 0;
}

static int cmd_policy_add(int argc, char **argv) {
        char canonical[PB_ENDPOINT_STRLEN], who[512], sock[128];
        pb_principal_kind kind = PB_UNIT;
        struct add_args a = { 0 };
        uint32_t id = 0, socket_gid;
        unsigned socket_mode;
        pb_conn *c;
        pb_error err;
        int64_t rule;
        int r;

        r = parse_add_args(argc, argv, &a);
        if (r == 0)
                r = resolve_principal(&a, &kind, &id);
        if (r == 0)
                r = resolve_socket(&a, &socket_gid, &socket_mode);
        if (r == 0)
                r = cli_connect(&c);
        if (r != 0)
                return r;
        rule = pb_conn_policy_add_unix(c, kind, id, a.unit, a.pattern, socket_gid, socket_mode, &err);
        if (rule == -EEXIST) {          /* as a script running it twice expects */
                struct same_rule w = { .kind = kind, .id = id, .unit = a.unit ? a.unit : "",
                                       .pattern = canonical_endpoint(a.pattern, true, canonical) };

                r = already_there(c, &w, socket_gid, socket_mode, &err);
                pb_disconnect(c);
                return r;
        }
        pb_disconnect(c);
        if (rule < 0)
                return cli_fail_pb(&err);

        if (arg_json) {
                printf("{\"id\":%" PRId64 ",\"added\":true}\n", rule);
                return 0;
        }
        format_principal(kind, id, a.unit, who, sizeof(who));
        printf("rule %" PRId64 " added: %s may get %s%s\n", rule, who,
               canonical_endpoint(a.pattern, true, canonical),
               socket_text(a.pattern, socket_gid, socket_mode, sock, sizeof(sock)));
        return 0;
}

/* --- remove and list --------------------------------------------------------- */

/* Parses a rule id: decimal, >= 1. */
static int parse_rule_id(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!s[0] || strlen(s) > 18 || s[0] == '0')
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (*p - '0');
        }
        *ret = v;
        return 0;
}

static int cmd_policy_remove(int argc, char **argv) {
        const char *arg;
        uint64_t id;
        pb_conn *c;
        pb_error err;
        int r;

        r = cli_parse_operand(argc, argv, "policy remove", "one rule id at a time", &arg);
        if (r != 0)
                return r;
        if (!arg)
                return cli_usage("policy remove: no rule id given");
        if (parse_rule_id(arg, &id) < 0)
                return cli_usage("policy remove: invalid rule id '%s'", arg);

        r = cli_connect(&c);
        if (r != 0)
                return r;
        r = pb_conn_policy_remove(c, id, &err);
        pb_disconnect(c);
        if (r < 0)
                return cli_fail_pb(&err);
        if (arg_json)
                printf("{\"removed\":%" PRIu64 "}\n", id);
        else
                printf("rule %" PRIu64 " removed\n", id);
        return 0;
}

static int collect_rule(const pb_rule *rule, void *userdata) {
        return list_append(userdata, rule);
}

static void policy_json(const struct list *l) {
        putchar('[');
        for (size_t i = 0; i < l->n; i++) {
                const pb_rule *x = (const pb_rule *) l->items + i;
                const char *kind = x->kind == PB_USER ? "user" : x->kind == PB_GROUP ? "group" : "unit";

                printf("%s{\"id\":%" PRIu64 ",\"kind\":\"%s\",\"id_value\":", i ? "," : "", x->id, kind);
                if (x->kind == PB_UNIT) {
                        fputs("null,\"name\":", stdout);
                        json_string(stdout, x->unit);
                } else {
                        printf("%u,\"name\":", x->id_value);
                        json_string_or_null(stdout, x->kind == PB_USER ? user_name(x->id_value) : group_name(x->id_value));
                }
                fputs(",\"pattern\":", stdout);
                json_string(stdout, x->pattern);
                if (strncmp(x->pattern, "unix:", 5) == 0 && x->socket_gid != PB_SOCKET_GROUP_NONE)
                        printf(",\"socket_gid\":%u,\"socket_mode\":%u", x->socket_gid, x->socket_mode);
                else if (strncmp(x->pattern, "unix:", 5) == 0)
                        printf(",\"socket_gid\":null,\"socket_mode\":%u", x->socket_mode);
                printf(",\"created\":%" PRId64 "}", x->created);
        }
        puts("]");
}

static int policy_table(const struct list *l) {
        struct table t = { .ncols = 4 };
        int r = 0;

        r |= table_cell(&t, "ID");
        r |= table_cell(&t, "PRINCIPAL");
        r |= table_cell(&t, "PATTERN");
        r |= table_cell(&t, "CREATED");
        for (size_t i = 0; i < l->n && r == 0; i++) {
                const pb_rule *x = (const pb_rule *) l->items + i;
                char who[512], created[64], sock[128];

                format_principal(x->kind, x->id_value, x->unit, who, sizeof(who));
                format_time(x->created, created, sizeof(created));
                r |= table_cell(&t, "%" PRIu64, x->id);
                r |= table_cell(&t, "%s", who);
                r |= table_cell(&t, "%s%s", x->pattern,
                                socket_text(x->pattern, x->socket_gid, x->socket_mode, sock, sizeof(sock)));
                r |= table_cell(&t, "%s", created);
        }
        if (r == 0)
                table_print(&t);
        table_free(&t);
        return r < 0 ? cli_fail(ENOMEM, "%m") : 0;
}

static int cmd_policy_list(int argc, char **argv) {
        struct list l = { .size = sizeof(pb_rule) };
        const char *none;
        pb_conn *c;
        pb_error err;
        int r;

        r = cli_parse_operand(argc, argv, "policy list", NULL, &none);
        if (r != 0)
                return r;

        r = cli_connect(&c);
        if (r != 0)
                return r;
        r = pb_conn_policy_list(c, collect_rule, &l, &err);
        pb_disconnect(c);
        if (r < 0)
                r = cli_fail_pb(&err);
        else if (arg_json) {
                policy_json(&l);
                r = 0;
        } else
                r = policy_table(&l);
        free(l.items);
        return r;
}

/* --- export ----------------------------------------------------------------- */

/* One rule as a line of a policy file: `PATTERN user|group NAME|ID` or
 * `PATTERN unit UNIT`, then a Unix rule's `socket-group=GROUP` and
 * `socket-mode=MODE` (names where this host knows them). Returns a new
 * string or NULL. */
static char *rule_line(const pb_rule *x) {
        char who[300], sock[160] = "", gid[16];
        const char *name;
        char *line;

        if (x->kind == PB_UNIT)
                snprintf(who, sizeof(who), "unit %s", x->unit);
        else {
                name = x->kind == PB_USER ? user_name(x->id_value) : group_name(x->id_value);
                if (name)
                        snprintf(who, sizeof(who), "%s %s", x->kind == PB_USER ? "user" : "group", name);
                else
                        snprintf(who, sizeof(who), "%s %u", x->kind == PB_USER ? "user" : "group", x->id_value);
        }
        if (!strncmp(x->pattern, "unix:", 5)) {
                name = x->socket_gid == PB_SOCKET_GROUP_NONE ? NULL : group_name(x->socket_gid);
                snprintf(gid, sizeof(gid), "%u", x->socket_gid);
                snprintf(sock, sizeof(sock), "%s%s socket-mode=%04o",
                         x->socket_gid == PB_SOCKET_GROUP_NONE ? "" : " socket-group=",
                         x->socket_gid == PB_SOCKET_GROUP_NONE ? "" : name ? name : gid, x->socket_mode);
        }
        return asprintf(&line, "%s %s%s", x->pattern, who, sock) < 0 ? NULL : line;
}

static int compare_lines(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The rules as a policy file: a line each, in an order that depends on
 * nothing but the rules (not their ids or when they were added), so that
 * two hosts' exports diff line by line. */
static int cmd_policy_export(int argc, char **argv) {
        struct list l = { .size = sizeof(pb_rule) };
        char **lines = NULL;
        const char *none;
        pb_conn *c;
        pb_error err;
        int r;

        r = cli_parse_operand(argc, argv, "policy export", NULL, &none);
        if (r == 0)
                r = cli_connect(&c);
        if (r != 0)
                return r;
        r = pb_conn_policy_list(c, collect_rule, &l, &err);
        pb_disconnect(c);
        if (r < 0) {
                free(l.items);
                return cli_fail_pb(&err);
        }
        lines = calloc(l.n ? l.n : 1, sizeof(*lines));
        for (size_t i = 0; lines && i < l.n; i++)
                if (!(lines[i] = rule_line((const pb_rule *) l.items + i)))
                        r = -ENOMEM;
        if (!lines || r < 0)
                r = cli_fail(ENOMEM, "out of memory");
        else {
                qsort(lines, l.n, sizeof(*lines), compare_lines);
                puts("# portbroker policy: PATTERN user|group|unit WHO [socket-group=GROUP] [socket-mode=MODE]");
                for (size_t i = 0; i < l.n; i++)
                        puts(lines[i]);
        }
        for (size_t i = 0; lines && i < l.n; i++)
                free(lines[i]);
        free(lines);
        free(l.items);
        return r;
}

int cmd_policy(int argc, char **argv) {
        if (argc < 2)
                return cli_usage("policy: no subcommand given (add, remove, list or export)");
        if (strcmp(argv[1], "add") == 0)
                return cmd_policy_add(argc - 1, argv + 1);
        if (strcmp(argv[1], "remove") == 0)
                return cmd_policy_remove(argc - 1, argv + 1);
        if (strcmp(argv[1], "list") == 0)
                return cmd_policy_list(argc - 1, argv + 1);
        if (strcmp(argv[1], "export") == 0)
                return cmd_policy_export(argc - 1, argv + 1);
        return cli_usage("policy: unknown subcommand '%s'", argv[1]);
}

