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
        const char *orphan_timeout;             /* a duration, or NULL */
};

/* The slot of an option taking a value (--user, --group, --unit,
 * --orphan-timeout, maybe with =VALUE), its name's length in *ret_len;
 * NULL for any other argument. */
static const char **option_slot(struct add_args *a, const char *opt, size_t *ret_len) {
        static const char *const names[] = { "--user", "--group", "--unit", "--orphan-timeout" };
        const char **slots[] = { &a->user, &a->group, &a->unit, &a->orphan_timeout };

        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                size_t len = strlen(names[i]);

                if (strncmp(opt, names[i], len) == 0 && (opt[len] == '=' || opt[len] == '\0')) {
                        *ret_len = len;
                        return slots[i];
                }
        }
        return NULL;
}

static int parse_add_args(int argc, char **argv, struct add_args *ret) {
        struct add_args a = { 0 };

        for (int i = 1; i < argc; i++) {
                const char *opt = argv[i], *value, **slot;
                size_t len;

                if (strcmp(opt, "--json") == 0) {
                        arg_json = true;
                        continue;
                }
                slot = option_slot(&a, opt, &len);
                if (!slot && opt[0] == '-' && opt[1])
                        return cli_usage("policy add: unknown option '%s'", opt);
                if (!slot && a.pattern)
                        return cli_usage("policy add: one pattern at a time");
                if (!slot) {
                        a.pattern = opt;
                        continue;
                }
                if (opt[len] == '=')
                        value = opt + len + 1;
                else if (i + 1 >= argc)
                        return cli_usage("policy add: %s needs a value", opt);
                else
                        value = argv[++i];
                if (*slot)
                        return cli_usage("policy add: %.*s given twice", (int) len, opt);
                if (!value[0])
                        return cli_usage("policy add: %.*s needs a value", (int) len, opt);
                *slot = value;
        }
        if (!a.pattern)
                return cli_usage("policy add: no endpoint pattern given");
        if (!!a.user + !!a.group + !!a.unit != 1)
                return cli_usage("policy add: give exactly one of --user, --group or --unit");
        *ret = a;
        return cli_check_endpoint(a.pattern, true);
}

/* The principal a names, users and groups looked up by name. Returns 0 or EXIT_FAILURE. */
static int resolve_principal(const struct add_args *a, pb_principal_kind *ret_kind, uint32_t *ret_id) {
        uid_t uid;
        gid_t gid;

        if (a->user) {
                if (parse_user(a->user, &uid) < 0)
                        return cli_fail("no such user '%s'", a->user);
                *ret_kind = PB_USER;
                *ret_id = (uint32_t) uid;
        } else if (a->group) {
                if (parse_group(a->group, &gid) < 0)
                        return cli_fail("no such group '%s'", a->group);
                *ret_kind = PB_GROUP;
                *ret_id = (uint32_t) gid;
        } else {
                *ret_kind = PB_UNIT;
                *ret_id = 0;
        }
        return 0;
}

/* A duration: N with an optional unit s, m, h or d, 1 second to 2^32 - 1. Returns seconds or -EINVAL. */
static int64_t parse_duration(const char *s) {
        static const struct { char unit; uint32_t seconds; } units[] = {
                { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
        };
        uint64_t v = 0, scale = 1;
        const char *p = s;

        if (*p < '0' || *p > '9')
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                v = v * 10 + (uint64_t) (*p - '0');
                if (v > UINT32_MAX)
                        return -EINVAL;
        }
        if (*p) {
                size_t i = 0;

                while (i < sizeof(units) / sizeof(units[0]) && units[i].unit != *p)
                        i++;
                if (i == sizeof(units) / sizeof(units[0]) || p[1])
                        return -EINVAL;
                scale = units[i].seconds;
        }
        v *= scale;
        return v == 0 || v > UINT32_MAX ? -EINVAL : (int64_t) v;
}

static int cmd_policy_add(int argc, char **argv) {
        char canonical[PB_ENDPOINT_STRLEN], who[512];
        pb_rule rule = { .kind = PB_UNIT };
        struct add_args a = { 0 };
        pb_conn *c;
        pb_error err;
        int64_t id;
        int r;

        r = parse_add_args(argc, argv, &a);
        if (r == 0)
                r = resolve_principal(&a, &rule.kind, &rule.id_value);
        if (r == 0 && a.orphan_timeout) {
                int64_t t = parse_duration(a.orphan_timeout);

                if (t < 0)
                        return cli_usage("policy add: invalid --orphan-timeout '%s' (e.g. 90, 30s, 5m, 1h, 2d)",
                                         a.orphan_timeout);
                rule.orphan_timeout = (uint32_t) t;
        }
        if (r != 0)
                return r;
        if (strlen(a.pattern) >= sizeof(rule.pattern) || (a.unit && strlen(a.unit) >= sizeof(rule.unit)))
                return cli_usage("policy add: the %s is too long", strlen(a.pattern) >= sizeof(rule.pattern) ?
                                 "pattern" : "unit name");
        snprintf(rule.unit, sizeof(rule.unit), "%s", a.unit ? a.unit : "");
        snprintf(rule.pattern, sizeof(rule.pattern), "%s", a.pattern);
        r = cli_connect(&c);
        if (r != 0)
                return r;
        id = pb_conn_policy_add_rule(c, &rule, &err);
        pb_disconnect(c);
        if (id < 0)
                return cli_fail_pb(&err);

        if (arg_json) {
                printf("{\"id\":%" PRId64 "}\n", id);
                return 0;
        }
        format_principal(rule.kind, rule.id_value, rule.unit, who, sizeof(who));
        printf("rule %" PRId64 " added: %s may get %s", id, who, canonical_endpoint(a.pattern, true, canonical));
        if (rule.orphan_timeout)
                printf("; a lease without a holder for %" PRIu32 " s is closed", rule.orphan_timeout);
        putchar('\n');
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
                printf(",\"created\":%" PRId64 ",\"orphan_timeout\":", x->created);
                if (x->orphan_timeout)
                        printf("%" PRIu32 "}", x->orphan_timeout);
                else
                        fputs("null}", stdout);
        }
        puts("]");
}

static int policy_table(const struct list *l) {
        struct table t = { .ncols = 5 };
        int r = 0;

        r |= table_cell(&t, "ID");
        r |= table_cell(&t, "PRINCIPAL");
        r |= table_cell(&t, "PATTERN");
        r |= table_cell(&t, "CREATED");
        r |= table_cell(&t, "ORPHAN TIMEOUT");
        for (size_t i = 0; i < l->n && r == 0; i++) {
                const pb_rule *x = (const pb_rule *) l->items + i;
                char who[512], created[64];

                format_principal(x->kind, x->id_value, x->unit, who, sizeof(who));
                format_time(x->created, created, sizeof(created));
                r |= table_cell(&t, "%" PRIu64, x->id);
                r |= table_cell(&t, "%s", who);
                r |= table_cell(&t, "%s", x->pattern);
                r |= table_cell(&t, "%s", created);
                if (x->orphan_timeout)
                        r |= table_cell(&t, "%" PRIu32 " s", x->orphan_timeout);
                else
                        r |= table_cell(&t, "-");
        }
        if (r == 0)
                table_print(&t);
        table_free(&t);
        return r < 0 ? cli_fail("%s", strerror(ENOMEM)) : 0;
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

int cmd_policy(int argc, char **argv) {
        if (argc < 2)
                return cli_usage("policy: no subcommand given (add, remove or list)");
        if (strcmp(argv[1], "add") == 0)
                return cmd_policy_add(argc - 1, argv + 1);
        if (strcmp(argv[1], "remove") == 0)
                return cmd_policy_remove(argc - 1, argv + 1);
        if (strcmp(argv[1], "list") == 0)
                return cmd_policy_list(argc - 1, argv + 1);
        return cli_usage("policy: unknown subcommand '%s'", argv[1]);
}

