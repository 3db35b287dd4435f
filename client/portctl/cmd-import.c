/* SPDX-License-Identifier: MIT */
/*
 * portctl policy import FILE [--replace] [--check]: makes brokerd's rules
 * say what a policy file (common/policyfile.h) says, in one transaction.
 * The file is read whole and checked first, so a mistake changes nothing
 * and names its line; the plan (what is added, changed and, with
 * --replace, removed) is worked out against the rules brokerd lists and
 * printed; --check stops there. brokerd plans the import again at the
 * commit, against the rules it has then: its counts are the ones printed
 * last. The rules of brokerd's policy directory are not the import's to
 * change: a file that says otherwise about one is refused.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "endpoint.h"
#include "policyfile.h"
#include "portbroker.h"

struct wanted {
        pb_rule rule;
        unsigned line;
};

struct import_args {
        const char *file;               /* "-": standard input */
        bool replace, check;
};

static int parse_import_args(int argc, char **argv, struct import_args *ret) {
        struct import_args a = { 0 };

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--replace") == 0)
                        a.replace = true;
                else if (strcmp(argv[i], "--check") == 0)
                        a.check = true;
                else if (argv[i][0] == '-' && argv[i][1])
                        return cli_usage("policy import: unknown option '%s'", argv[i]);
                else if (a.file)
                        return cli_usage("policy import: one file at a time");
                else
                        a.file = argv[i];
        }
        if (!a.file)
                return cli_usage("policy import: no file given (- reads standard input)");
        *ret = a;
        return 0;
}

/* A rule of the file as the library's rule. */
static int collect(const struct policyfile_rule *pr, void *userdata) {
        struct wanted w = { .line = pr->line };
        pb_rule *x = &w.rule;
        char text[PB_ENDPOINT_STRLEN];

        x->kind = pr->principal.kind == PB_PRINCIPAL_USER ? PB_USER :
                  pr->principal.kind == PB_PRINCIPAL_GROUP ? PB_GROUP : PB_UNIT;
        x->id_value = pr->principal.id;
        snprintf(x->unit, sizeof(x->unit), "%s", pr->principal.unit);
        snprintf(x->pattern, sizeof(x->pattern), "%s", endpoint_format_pattern(&pr->pattern, text));
        x->socket_gid = endpoint_is_unix(&pr->pattern) ? pr->perm.gid : PB_SOCKET_GROUP_NONE;
        x->socket_mode = endpoint_is_unix(&pr->pattern) ? pr->perm.mode : 0;
        x->reserve = pr->attrs.flags & PB_RULE_RESERVE;
        x->owner_uid = pr->attrs.flags & PB_RULE_OWNER ? pr->attrs.owner : PB_OWNER_NONE;
        return list_append(userdata, &w);
}

/* The rules of the file into want. Returns 0 or an exit status. */
static int read_rules(const char *file, struct list *want) {
        const char *name = strcmp(file, "-") == 0 ? "standard input" : file;
        FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "re");
        char why[400];
        int r;

        if (!f)
                return cli_fail(errno, "cannot read %s: %m", name);
        r = policyfile_read(f, collect, want, why, sizeof(why));
        if (f != stdin)
                fclose(f);
        return r < 0 ? cli_fail(-r, "%s:%s", name, why) : 0;
}

static int collect_rule(const pb_rule *rule, void *userdata) {
        return list_append(userdata, rule);
}

/* The import's plan: for each wanted rule the rule brokerd has like it, or NULL. */
struct plan {
        const pb_rule **there;          /* want.n of them */
        bool *kept;                     /* have.n: named by the file */
        unsigned add, change, remove, same;
};

/* Works the plan out (quadratic in the rules: an import is a rare, admin's
 * act). Returns 0 or an exit status, naming the line at fault. */
static int make_plan(const char *file, const struct list *want, const struct list *have, bool replace,
                     struct plan *ret) {
        const struct wanted *w = want->items;
        const pb_rule *h = have->items;
        struct plan p = { .there = calloc(want->n + 1, sizeof(*p.there)), .kept = calloc(have->n + 1, sizeof(bool)) };
        char line[POLICYFILE_LINE_MAX];

        if (!p.there || !p.kept) {
                free(p.there);
                free(p.kept);
                return cli_fail(ENOMEM, "out of memory");
        }
        *ret = p;
        for (size_t i = 0; i < want->n; i++) {
                for (size_t k = 0; k < i; k++)
                        if (policy_rule_same(&w[k].rule, &w[i].rule))
                                return cli_fail(EEXIST, "%s:%u: the rule of line %u again (one line per pattern and "
                                                "who)", file, w[i].line, w[k].line);
                for (size_t j = 0; j < have->n; j++)
                        if (policy_rule_same(&h[j], &w[i].rule)) {
                                ret->there[i] = &h[j];
                                ret->kept[j] = true;
                        }
                if (!ret->there[i])
                        ret->add++;
                else if (policy_rule_same_settings(ret->there[i], &w[i].rule))
                        ret->same++;
                else if (ret->there[i]->source[0])
                        return cli_fail(EEXIST, "%s:%u: rule %" PRIu64 " of the policy directory's %s says %s; "
                                        "change it there, not by import", file, w[i].line, ret->there[i]->id,
                                        ret->there[i]->source, policy_rule_line(ret->there[i], line, sizeof(line)));
                else
                        ret->change++;
        }
        for (size_t j = 0; j < have->n; j++)
                ret->remove += replace && !ret->kept[j] && !h[j].source[0];
        return 0;
}

static void print_plan(const struct list *want, const struct list *have, bool replace, const struct plan *p) {
        const struct wanted *w = want->items;
        const pb_rule *h = have->items;
        char line[POLICYFILE_LINE_MAX], was[POLICYFILE_LINE_MAX];
        bool first = true;

        if (arg_json) {
                fputs("{\"add\":[", stdout);
                for (size_t i = 0; i < want->n; i++)
                        if (!p->there[i]) {
                                printf("%s{\"line\":%u,\"rule\":", first ? "" : ",", w[i].line);
                                json_string(stdout, policy_rule_line(&w[i].rule, line, sizeof(line)));
                                putchar('}');
                                first = false;
                        }
                fputs("],\"change\":[", stdout);
                first = true;
                for (size_t i = 0; i < want->n; i++)
                        if (p->there[i] && !policy_rule_same_settings(p->there[i], &w[i].rule)) {
                                printf("%s{\"id\":%" PRIu64 ",\"line\":%u,\"rule\":", first ? "" : ",",
                                       p->there[i]->id, w[i].line);
                                json_string(stdout, policy_rule_line(&w[i].rule, line, sizeof(line)));
                                fputs(",\"was\":", stdout);
                                json_string(stdout, policy_rule_line(p->there[i], line, sizeof(line)));
                                putchar('}');
                                first = false;
                        }
                fputs("],\"remove\":[", stdout);
                first = true;
                for (size_t j = 0; j < have->n; j++)
                        if (replace && !p->kept[j] && !h[j].source[0]) {
                                printf("%s{\"id\":%" PRIu64 ",\"rule\":", first ? "" : ",", h[j].id);
                                json_string(stdout, policy_rule_line(&h[j], line, sizeof(line)));
                                putchar('}');
                                first = false;
                        }
                printf("],\"unchanged\":%u", p->same);
                return;
        }
        for (size_t i = 0; i < want->n; i++)
                if (!p->there[i])
                        printf("+ %s\n", policy_rule_line(&w[i].rule, line, sizeof(line)));
                else if (!policy_rule_same_settings(p->there[i], &w[i].rule))
                        printf("~ rule %" PRIu64 ": %s (was: %s)\n", p->there[i]->id,
                               policy_rule_line(&w[i].rule, line, sizeof(line)),
                               policy_rule_line(p->there[i], was, sizeof(was)));
        for (size_t j = 0; j < have->n; j++)
                if (replace && !p->kept[j] && !h[j].source[0])
                        printf("- rule %" PRIu64 ": %s\n", h[j].id, policy_rule_line(&h[j], line, sizeof(line)));
}

/* Sends the file's rules as one import. Returns 0 or an exit status. */
static int apply(pb_conn *c, const struct list *want, bool replace, pb_import_counts *ret) {
        const struct wanted *w = want->items;
        pb_error err;

        if (pb_conn_policy_begin(c, replace ? PB_IMPORT_REPLACE : 0, &err) < 0)
                return cli_fail_pb(&err);
        for (size_t i = 0; i < want->n; i++)
                if (pb_conn_policy_add_rule(c, &w[i].rule, &err) < 0)
                        return cli_fail_pb(&err);       /* brokerd drops the import with the connection */
        if (pb_conn_policy_commit(c, ret, &err) < 0)
                return cli_fail_pb(&err);
        return 0;
}

int cmd_policy_import(int argc, char **argv) {
        struct list want = { .size = sizeof(struct wanted) }, have = { .size = sizeof(pb_rule) };
        struct import_args a = { 0 };
        struct plan p = { 0 };
        pb_import_counts counts;
        pb_conn *c = NULL;
        pb_error err;
        int r;

        r = parse_import_args(argc, argv, &a);
        if (r == 0)
                r = read_rules(a.file, &want);
        if (r == 0)
                r = cli_connect(&c);
        if (r == 0 && pb_conn_policy_list(c, collect_rule, &have, &err) < 0)
                r = cli_fail_pb(&err);
        if (r == 0)
                r = make_plan(strcmp(a.file, "-") == 0 ? "standard input" : a.file, &want, &have, a.replace, &p);
        /* Under --json the plan comes with the outcome, in one object (or the error alone). */
        if (r == 0 && !arg_json)
                print_plan(&want, &have, a.replace, &p);
        if (r == 0 && !a.check)
                r = apply(c, &want, a.replace, &counts);
        if (r == 0 && arg_json) {
                print_plan(&want, &have, a.replace, &p);
                if (a.check)
                        puts(",\"applied\":false}");
                else
                        printf(",\"applied\":true,\"added\":%u,\"changed\":%u,\"removed\":%u}\n", counts.added,
                               counts.changed, counts.removed);
        } else if (r == 0 && a.check)
                printf("%u to add, %u to change, %u to remove, %u unchanged; nothing changed (--check)\n", p.add,
                       p.change, p.remove, p.same);
        else if (r == 0)
                printf("%u added, %u changed, %u removed\n", counts.added, counts.changed, counts.removed);
        pb_disconnect(c);
        free(p.there);
        free(p.kept);
        free(want.items);
        free(have.items);
        return r;
}
