/* SPDX-License-Identifier: MIT */
/*
 * portctl policy add, remove, list, export and test: the rules saying which
 * user, group or systemd unit may get endpoints matching a pattern (and
 * which endpoints brokerd reserves at start). Changing rules is for admins
 * (brokerd decides); listing prints a table or JSON, export a policy file;
 * test asks brokerd which rule would let a user, group or unit get an
 * endpoint, and the verdict. Import is cmd-import.c.
 */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "endpoint.h"
#include "policyfile.h"
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

/* --- the arguments of add and test ---------------------------------------- */

struct principal_args {
        const char *operand;                    /* add: the pattern; test: the endpoint */
        const char *user, *group, *unit;        /* add: exactly one is set */
        const char *socket_group, *socket_mode; /* add, Unix patterns only */
        bool reserve;                           /* add */
        const char *owner;                      /* add: a group or unit rule's reservation's */
};

/* Parses verb's operand (what names it in messages) and options, each at
 * most once (add_options: add's besides --user, --group and --unit); which
 * combine is the caller's to check. Returns 0 or EXIT_USAGE. */
static int parse_principal_args(int argc, char **argv, const char *verb, const char *what, bool add_options,
                                struct principal_args *ret) {
        struct principal_args a = { 0 };
        const struct cli_option opts[] = {
                { "--user", &a.user }, { "--group", &a.group }, { "--unit", &a.unit },
                { "--socket-group", &a.socket_group }, { "--socket-mode", &a.socket_mode }, { "--owner", &a.owner },
        };

        for (int i = 1; i < argc; i++) {
                int r;

                if (add_options && strcmp(argv[i], "--reserve") == 0) {
                        a.reserve = true;
                        continue;
                }
                r = cli_take_option(argc, argv, &i, verb, opts, add_options ? 6 : 3);
                if (r > 0)
                        return r;
                if (r == 0)
                        continue;
                if (argv[i][0] == '-' && argv[i][1])
                        return cli_usage("%s: unknown option '%s'", verb, argv[i]);
                if (a.operand)
                        return cli_usage("%s: one %s at a time", verb, what);
                a.operand = argv[i];
        }
        if (!a.operand)
                return cli_usage("%s: no %s given", verb, what);
        *ret = a;
        return 0;
}

/* --- add ------------------------------------------------------------------- */

static int parse_add_args(int argc, char **argv, struct principal_args *ret) {
        struct principal_args a = { 0 };
        int r = parse_principal_args(argc, argv, "policy add", "endpoint pattern", true, &a);

        if (r != 0)
                return r;
        if (!!a.user + !!a.group + !!a.unit != 1)
                return cli_usage("policy add: give exactly one of --user, --group or --unit");
        if ((a.socket_group || a.socket_mode) && strncmp(a.operand, "unix:", 5) != 0)
                return cli_usage("policy add: --socket-group and --socket-mode are for unix: patterns");
        if (a.owner && !a.reserve)
                return cli_usage("policy add: --owner names whose a reservation is: give --reserve too");
        if (a.reserve && !a.user && !a.owner)
                return cli_usage("policy add: the reservation of a group or unit rule needs --owner USER");
        if (a.owner && a.user)
                return cli_usage("policy add: a user rule's reservation is its user's: no --owner");
        *ret = a;
        return cli_check_endpoint(a.operand, true);
}

/* The socket group and mode a gives (brokerd's group and 0600 when not). Returns 0 or EXIT_FAILURE. */
static int resolve_socket(const struct principal_args *a, uint32_t *ret_gid, unsigned *ret_mode) {
        gid_t gid;

        *ret_gid = PB_SOCKET_GROUP_NONE;
        *ret_mode = PB_SOCKET_MODE_DEFAULT;
        if (a->socket_group) {
                if (parse_group(a->socket_group, &gid) < 0)
                        return cli_fail(ENOENT, "no such group '%s'", a->socket_group);
                *ret_gid = (uint32_t) gid;
        }
        if (a->socket_mode && policyfile_parse_mode(a->socket_mode, ret_mode) < 0)
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

/* The rule a describes into ret, users and groups looked up by name.
 * Returns 0 or an exit status. */
static int resolve_rule(const struct principal_args *a, pb_rule *ret) {
        pb_rule rule = { .kind = PB_UNIT, .owner_uid = PB_OWNER_NONE, .reserve = a->reserve };
        char canonical[PB_ENDPOINT_STRLEN];
        uid_t uid;
        gid_t gid;
        int r;

        if (a->user) {
                if (parse_user(a->user, &uid) < 0)
                        return cli_fail(ENOENT, "no such user '%s'", a->user);
                rule.kind = PB_USER;
                rule.id_value = (uint32_t) uid;
        } else if (a->group) {
                if (parse_group(a->group, &gid) < 0)
                        return cli_fail(ENOENT, "no such group '%s'", a->group);
                rule.kind = PB_GROUP;
                rule.id_value = (uint32_t) gid;
        } else if (strlen(a->unit) >= sizeof(rule.unit))
                return cli_usage("policy add: invalid unit name '%.64s...'", a->unit);
        else
                strcpy(rule.unit, a->unit);
        if (a->owner) {
                if (parse_user(a->owner, &uid) < 0)
                        return cli_fail(ENOENT, "no such user '%s'", a->owner);
                rule.owner_uid = (uint32_t) uid;
        }
        r = resolve_socket(a, &rule.socket_gid, &rule.socket_mode);
        if (r != 0)
                return r;
        snprintf(rule.pattern, sizeof(rule.pattern), "%s", canonical_endpoint(a->operand, true, canonical));
        *ret = rule;
        return 0;
}

/* ", reserved for www-data (33)" for a rule that reserves, "" for others. */
static const char *reserve_text(const pb_rule *x, char *buf, size_t size) {
        uint32_t owner = x->owner_uid != PB_OWNER_NONE ? x->owner_uid : x->id_value;
        char who[160];

        if (!x->reserve)
                return "";
        user_text(owner, who, sizeof(who));
        snprintf(buf, size, ", reserved for %s", who);
        return buf;
}

bool policy_rule_same(const pb_rule *a, const pb_rule *b) {
        return a->kind == b->kind && a->id_value == b->id_value && strcmp(a->unit, b->unit) == 0 &&
               strcmp(a->pattern, b->pattern) == 0;
}

bool policy_rule_same_settings(const pb_rule *a, const pb_rule *b) {
        if (strncmp(a->pattern, "unix:", 5) == 0 && (a->socket_gid != b->socket_gid || a->socket_mode != b->socket_mode))
                return false;
        return a->reserve == b->reserve && a->owner_uid == b->owner_uid;
}

/* The rule being added, and the one brokerd has like it (same principal and pattern). */
struct same_rule {
        const pb_rule *rule;
        pb_rule found;
        bool seen;
};

static int find_same(const pb_rule *rule, void *userdata) {
        struct same_rule *w = userdata;

        if (!policy_rule_same(rule, w->rule))
                return 0;
        w->found = *rule;
        w->seen = true;
        return 1;
}

/* brokerd has a rule with this principal and pattern (EEXIST): the add is
 * done already when that rule is the same (the same socket group and mode,
 * reservation and owner), and says so; a different one is an error.
 * Returns the exit status. */
static int already_there(pb_conn *c, const pb_rule *rule, const pb_error *add_err) {
        struct same_rule w = { .rule = rule };
        char who[512], sock[128], reserve[200];
        pb_error err;

        if (pb_conn_policy_list(c, find_same, &w, &err) < 0)
                return cli_fail_pb(&err);
        if (!w.seen)                    /* removed meanwhile: brokerd's word stands */
                return cli_fail_pb(add_err);
        format_principal(rule->kind, rule->id_value, rule->unit, who, sizeof(who));
        if (!policy_rule_same_settings(&w.found, rule))
                return cli_fail(EEXIST, "rule %" PRIu64 " already lets %s get %s%s%s; remove it first (or use policy "
                                "import) to change it", w.found.id, who, rule->pattern,
                                socket_text(rule->pattern, w.found.socket_gid, w.found.socket_mode, sock, sizeof(sock)),
                                reserve_text(&w.found, reserve, sizeof(reserve)));
        if (arg_json)
                printf("{\"id\":%" PRIu64 ",\"added\":false}\n", w.found.id);
        else
                printf("rule %" PRIu64 " already lets %s get %s%s%s: nothing to add\n", w.found.id, who, rule->pattern,
                       socket_text(rule->pattern, rule->socket_gid, rule->socket_mode, sock, sizeof(sock)),
                       reserve_text(rule, reserve, sizeof(reserve)));
        return 0;
}

static int cmd_policy_add(int argc, char **argv) {
        char who[512], sock[128], reserve[200];
        struct principal_args a = { 0 };
        pb_rule rule;
        pb_conn *c;
        pb_error err;
        int64_t id;
        int r;

        r = parse_add_args(argc, argv, &a);
        if (r == 0)
                r = resolve_rule(&a, &rule);
        if (r == 0)
                r = cli_connect(&c);
        if (r != 0)
                return r;
        id = pb_conn_policy_add_rule(c, &rule, &err);
        if (id == -EEXIST) {            /* as a script running it twice expects */
                r = already_there(c, &rule, &err);
                pb_disconnect(c);
                return r;
        }
        pb_disconnect(c);
        if (id < 0)
                return cli_fail_pb(&err);

        if (arg_json) {
                printf("{\"id\":%" PRId64 ",\"added\":true}\n", id);
                return 0;
        }
        format_principal(rule.kind, rule.id_value, rule.unit, who, sizeof(who));
        printf("rule %" PRId64 " added: %s may get %s%s%s\n", id, who, rule.pattern,
               socket_text(rule.pattern, rule.socket_gid, rule.socket_mode, sock, sizeof(sock)),
               reserve_text(&rule, reserve, sizeof(reserve)));
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

/* One rule as a JSON object, as policy list prints it. */
static void rule_json(const pb_rule *x) {
        const char *kind = x->kind == PB_USER ? "user" : x->kind == PB_GROUP ? "group" : "unit";

        printf("{\"id\":%" PRIu64 ",\"kind\":\"%s\",\"id_value\":", x->id, kind);
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
        printf(",\"reserve\":%s", x->reserve ? "true" : "false");
        if (x->reserve)
                printf(",\"owner_uid\":%u", x->owner_uid != PB_OWNER_NONE ? x->owner_uid : x->id_value);
        fputs(",\"source\":", stdout);
        json_string_or_null(stdout, x->source[0] ? x->source : NULL);
        printf(",\"created\":%" PRId64 "}", x->created);
}

static void policy_json(const struct list *l) {
        putchar('[');
        for (size_t i = 0; i < l->n; i++) {
                fputs(i ? "," : "", stdout);
                rule_json((const pb_rule *) l->items + i);
        }
        puts("]");
}

/* Prints the n rules as policy list does: a table of ID, PRINCIPAL, PATTERN
 * (and what it reserves), SOURCE, CREATED. Returns 0 or EXIT_FAILURE. */
static int rules_table(const pb_rule *rules, size_t n) {
        struct table t = { .ncols = 5 };
        int r = 0;

        r |= table_cell(&t, "ID");
        r |= table_cell(&t, "PRINCIPAL");
        r |= table_cell(&t, "PATTERN");
        r |= table_cell(&t, "SOURCE");
        r |= table_cell(&t, "CREATED");
        for (size_t i = 0; i < n && r == 0; i++) {
                const pb_rule *x = &rules[i];
                char who[512], created[64], sock[128], reserve[200];

                format_principal(x->kind, x->id_value, x->unit, who, sizeof(who));
                format_time(x->created, created, sizeof(created));
                r |= table_cell(&t, "%" PRIu64, x->id);
                r |= table_cell(&t, "%s", who);
                r |= table_cell(&t, "%s%s%s", x->pattern,
                                socket_text(x->pattern, x->socket_gid, x->socket_mode, sock, sizeof(sock)),
                                reserve_text(x, reserve, sizeof(reserve)));
                r |= table_cell(&t, "%s", x->source[0] ? x->source : "portctl");
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
                r = rules_table(l.items, l.n);
        free(l.items);
        return r;
}

/* --- export ----------------------------------------------------------------- */

char *policy_rule_line(const pb_rule *x, char *buf, size_t size) {
        char who[300], sock[160] = "", gid[16], owner[120] = "";
        const char *name;

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
        if (x->reserve && x->owner_uid != PB_OWNER_NONE) {
                name = user_name(x->owner_uid);
                if (name)
                        snprintf(owner, sizeof(owner), " owner=%s", name);
                else
                        snprintf(owner, sizeof(owner), " owner=%u", x->owner_uid);
        }
        snprintf(buf, size, "%s %s%s%s%s", x->pattern, who, sock, x->reserve ? " reserve" : "", owner);
        return buf;
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
        for (size_t i = 0; lines && i < l.n; i++) {
                char line[POLICYFILE_LINE_MAX];

                if (!(lines[i] = strdup(policy_rule_line((const pb_rule *) l.items + i, line, sizeof(line)))))
                        r = -ENOMEM;
        }
        if (!lines || r < 0)
                r = cli_fail(ENOMEM, "out of memory");
        else {
                qsort(lines, l.n, sizeof(*lines), compare_lines);
                puts("# portbroker policy: PATTERN user|group|unit WHO [socket-group=GROUP] [socket-mode=MODE] "
                     "[reserve] [owner=USER]");
                for (size_t i = 0; i < l.n; i++)
                        puts(lines[i]);
        }
        for (size_t i = 0; lines && i < l.n; i++)
                free(lines[i]);
        free(lines);
        free(l.items);
        return r;
}

/* --- test ------------------------------------------------------------------ */

/* The peer `policy test` asks about, and how portctl found it. */
struct test_peer {
        pb_test_peer peer;
        const char *user, *group, *unit;        /* as given */
        bool no_passwd;                         /* --user is a uid the user database does not know */
};

/* The peer of --user (the uid with its groups from the user database),
 * --group (that group alone, no user) and --unit. Returns 0, EXIT_USAGE
 * for a name that names nothing, or EXIT_FAILURE. */
static int resolve_test_peer(const struct principal_args *a, struct test_peer *ret) {
        struct pb_principal unit = { .kind = PB_PRINCIPAL_UNIT };
        struct test_peer t = { .user = a->user, .group = a->group, .unit = a->unit };
        gid_t gid;

        if (a->user) {
                struct passwd *pw;
                int n = PB_TEST_GROUPS_MAX;

                if (parse_user(a->user, &t.peer.uid) < 0)
                        return cli_usage("policy test: no such user '%s'", a->user);
                t.peer.has_uid = true;
                pw = getpwnam(a->user);         /* the entry named, of the uids two names share */
                if (!pw || pw->pw_uid != t.peer.uid)
                        pw = getpwuid(t.peer.uid);
                if (!pw)
                        t.no_passwd = true;
                else if (getgrouplist(pw->pw_name, pw->pw_gid, t.peer.groups, &n) < 0)
                        return cli_fail(E2BIG, "policy test: user %s is in %d groups, more than the %d a test "
                                        "carries; test one of them with --group", pw->pw_name, n, PB_TEST_GROUPS_MAX);
                else
                        t.peer.n_groups = (unsigned) n;
        } else if (a->group) {
                if (parse_group(a->group, &gid) < 0)
                        return cli_usage("policy test: no such group '%s'", a->group);
                t.peer.groups[0] = gid;
                t.peer.n_groups = 1;
        }
        if (a->unit) {
                if (strlen(a->unit) < sizeof(unit.unit))        /* else "": invalid */
                        memcpy(unit.unit, a->unit, strlen(a->unit) + 1);
                if (proto_principal_validate(&unit) < 0)
                        return cli_usage("policy test: invalid unit name '%s': expected e.g. 'web.service'", a->unit);
                memcpy(t.peer.unit, unit.unit, sizeof(unit.unit));
        }
        *ret = t;
        return 0;
}

/* "user alice (4242) in unit web.service", "group www-data (33) (no user)". */
static void test_peer_text(const struct test_peer *t, char *buf, size_t size) {
        char who[512];

        if (t->peer.has_uid)
                format_principal(PB_USER, (uint32_t) t->peer.uid, NULL, who, sizeof(who));
        else if (t->group)
                format_principal(PB_GROUP, (uint32_t) t->peer.groups[0], NULL, who, sizeof(who));
        else
                who[0] = '\0';
        snprintf(buf, size, "%s%s%s%s%s", who, who[0] && t->unit ? " in " : "", t->unit ? "unit " : "",
                 t->unit ? t->unit : "", t->peer.has_uid ? "" : " (no user)");
}

static void test_print_json(const char *endpoint, const struct test_peer *t, const pb_test_result *res) {
        printf("{\"endpoint\":");
        json_string(stdout, endpoint);
        printf(",\"allowed\":%s,\"admin\":%s,\"uid\":", res->allowed ? "true" : "false", res->admin ? "true" : "false");
        if (t->peer.has_uid) {
                printf("%u,\"user\":", (unsigned) t->peer.uid);
                json_string_or_null(stdout, user_name(t->peer.uid));
        } else
                fputs("null,\"user\":null", stdout);
        fputs(",\"groups\":[", stdout);
        for (unsigned i = 0; i < t->peer.n_groups; i++) {
                printf("%s{\"gid\":%u,\"name\":", i ? "," : "", (unsigned) t->peer.groups[i]);
                json_string_or_null(stdout, group_name(t->peer.groups[i]));
                putchar('}');
        }
        fputs("],\"unit\":", stdout);
        json_string_or_null(stdout, t->unit);
        fputs(",\"rule\":", stdout);
        if (res->has_rule)
                rule_json(&res->rule);
        else
                fputs("null", stdout);
        if (res->lease_id) {
                printf(",\"lease\":{\"id\":%" PRIu64 ",\"owner_uid\":%u,\"owner\":", res->lease_id,
                       (unsigned) res->lease_owner);
                json_string_or_null(stdout, user_name(res->lease_owner));
                putchar('}');
        } else
                fputs(",\"lease\":null", stdout);
        fputs(",\"reason\":", stdout);
        json_string(stdout, res->reason);
        puts("}");
}

/* The verdict, whose groups were considered, why, and the rule as policy list shows it. */
static int test_print_text(const char *endpoint, const struct test_peer *t, const pb_test_result *res) {
        char who[800];

        test_peer_text(t, who, sizeof(who));
        printf("%s: %s may%s get %s\ngroups considered: ", res->allowed ? "allowed" : "denied", who,
               res->allowed ? "" : " not", endpoint);
        for (unsigned i = 0; i < t->peer.n_groups; i++) {
                const char *name = group_name(t->peer.groups[i]);

                if (name)
                        printf("%s%s (%u)", i ? ", " : "", name, (unsigned) t->peer.groups[i]);
                else
                        printf("%s%u", i ? ", " : "", (unsigned) t->peer.groups[i]);
        }
        if (t->no_passwd)
                printf("none (uid %u has no entry in the user database)\n", (unsigned) t->peer.uid);
        else
                puts(t->peer.n_groups ? "" : "none");
        printf("why: %s\n", res->reason);
        return res->has_rule ? rules_table(&res->rule, 1) : 0;
}

/* Which rule would let a user, group or unit get ENDPOINT, and the verdict
 * of a get now, from brokerd (POLICY_TEST): nothing is bound. Exit status
 * 0 allowed, 1 denied (or the test failed: one line on stderr), 2 usage. */
static int cmd_policy_test(int argc, char **argv) {
        char canonical[PB_ENDPOINT_STRLEN];
        struct principal_args a = { 0 };
        struct test_peer t;
        pb_test_result res;
        pb_conn *c;
        pb_error err;
        int r;

        r = parse_principal_args(argc, argv, "policy test", "endpoint", false, &a);
        if (r == 0 && a.user && a.group)
                r = cli_usage("policy test: give --user or --group, not both (a user brings its own groups)");
        if (r == 0 && !a.user && !a.group && !a.unit)
                r = cli_usage("policy test: give --user, --group or --unit (and --unit with either)");
        if (r == 0)
                r = cli_check_endpoint(a.operand, false);
        if (r == 0)
                r = resolve_test_peer(&a, &t);
        if (r == 0)
                r = cli_connect(&c);
        if (r != 0)
                return r;
        r = pb_conn_policy_test(c, a.operand, &t.peer, &res, &err);
        pb_disconnect(c);
        if (r < 0)
                return cli_fail_pb(&err);
        canonical_endpoint(a.operand, false, canonical);
        if (arg_json)
                test_print_json(canonical, &t, &res);
        else {
                r = test_print_text(canonical, &t, &res);
                if (r != 0)
                        return r;
        }
        return res.allowed ? 0 : EXIT_FAILURE;
}

int cmd_policy(int argc, char **argv) {
        if (argc < 2)
                return cli_usage("policy: no subcommand given (add, remove, list, export, import or test)");
        if (strcmp(argv[1], "add") == 0)
                return cmd_policy_add(argc - 1, argv + 1);
        if (strcmp(argv[1], "remove") == 0)
                return cmd_policy_remove(argc - 1, argv + 1);
        if (strcmp(argv[1], "list") == 0)
                return cmd_policy_list(argc - 1, argv + 1);
        if (strcmp(argv[1], "export") == 0)
                return cmd_policy_export(argc - 1, argv + 1);
        if (strcmp(argv[1], "import") == 0)
                return cmd_policy_import(argc - 1, argv + 1);
        if (strcmp(argv[1], "test") == 0)
                return cmd_policy_test(argc - 1, argv + 1);
        return cli_usage("policy: unknown subcommand '%s'", argv[1]);
}

