/* SPDX-License-Identifier: MIT */
/*
 * Rule matching. A rule is a principal (user, group or unit) and an
 * endpoint pattern; a peer may get an endpoint when some rule's principal
 * describes it and the pattern contains the endpoint. Admins (root,
 * brokerd's own uid, members of --admin-group) need no rule.
 */
#include "policy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool policy_is_admin(const struct policy *p, const struct peer *peer) {
        if (peer->doubt)
                return false;
        if (peer->uid == 0 || peer->uid == p->self_uid)
                return true;
        return p->admin_group && p->admin_group->set && peer_in_group(peer, p->admin_group->gid);
}

bool policy_principal_matches(const struct pb_principal *principal, const struct peer *peer) {
        switch (principal->kind) {
        case PB_PRINCIPAL_USER:
                return principal->id == peer->uid;
        case PB_PRINCIPAL_GROUP:
                return peer_in_group(peer, principal->id);
        case PB_PRINCIPAL_UNIT:
                return peer->unit[0] && strcmp(principal->unit, peer->unit) == 0;
        default:
                return false;
        }
}

const struct store_rule *policy_find(const struct policy *p, const struct peer *peer, const struct pb_endpoint *e) {
        if (peer->doubt)
                return NULL;
        for (size_t i = 0; i < p->n_rules; i++)
                if (endpoint_matches(&p->rules[i].pattern, e) &&
                    policy_principal_matches(&p->rules[i].principal, peer))
                        /* Groups are read on first use: a failure there is a doubt too. */
                        return peer->doubt ? NULL : &p->rules[i];
        return NULL;
}

/* Field by field: struct padding is whatever the copy left there. The
 * patterns compare as their wire form, which is canonical. */
int policy_rule_compare(const struct store_rule *a, const struct store_rule *b) {
        uint8_t ea[PB_ENDPOINT_WIRE_MAX], eb[PB_ENDPOINT_WIRE_MAX];
        size_t na, nb;
        int c;

        if (a->principal.kind != b->principal.kind)
                return a->principal.kind < b->principal.kind ? -1 : 1;
        if (a->principal.id != b->principal.id)
                return a->principal.id < b->principal.id ? -1 : 1;
        c = strcmp(a->principal.unit, b->principal.unit);
        if (c != 0)
                return c;
        na = endpoint_encode(&a->pattern, ea);
        nb = endpoint_encode(&b->pattern, eb);
        c = memcmp(ea, eb, na < nb ? na : nb);
        return c != 0 ? c : na < nb ? -1 : na > nb;
}

bool policy_rule_same_attrs(const struct store_rule *a, const struct store_rule *b) {
        if (endpoint_is_unix(&a->pattern) && (a->perm.gid != b->perm.gid || a->perm.mode != b->perm.mode))
                return false;
        return a->attrs.flags == b->attrs.flags && a->attrs.owner == b->attrs.owner;
}

const struct store_rule *policy_find_rule(const struct policy *p, const struct store_rule *rule) {
        for (size_t i = 0; i < p->n_rules; i++)
                if (policy_rule_compare(&p->rules[i], rule) == 0)
                        return &p->rules[i];
        return NULL;
}

/* --- planning a set of rules -------------------------------------------------- */

static int compare_rule_ptrs(const void *a, const void *b) {
        const struct store_rule *x = *(const struct store_rule *const *) a, *y = *(const struct store_rule *const *) b;
        int c = policy_rule_compare(x, y);

        return c != 0 ? c : x < y ? -1 : x > y;         /* a rule given twice: the first one first */
}

/* Rule pointers sorted by policy_rule_compare(). Returns NULL on ENOMEM. */
static const struct store_rule **sorted(const struct store_rule *rules, size_t n) {
        const struct store_rule **v = malloc((n ? n : 1) * sizeof(*v));

        if (!v)
                return NULL;
        for (size_t i = 0; i < n; i++)
                v[i] = &rules[i];
        qsort(v, n, sizeof(*v), compare_rule_ptrs);
        return v;
}

static bool in_scope(const struct store_rule *r, enum policy_scope scope) {
        return (r->source[0] != '\0') == (scope == POLICY_SCOPE_FILES);
}

ssize_t policy_plan(const struct policy *p, const struct store_rule *want, size_t n, enum policy_scope scope,
                    bool replace, struct store_rule_change **ret, struct policy_counts *ret_counts,
                    size_t *ret_conflict) {
        const struct store_rule **w = sorted(want, n), **h = sorted(p->rules, p->n_rules);
        struct store_rule_change *changes = calloc(n + p->n_rules + 1, sizeof(*changes));
        struct policy_counts counts = { 0 };
        size_t i = 0, j = 0, k = 0;
        ssize_t r = 0;

        if (!w || !h || !changes) {
                r = -ENOMEM;
                goto out;
        }
        replace |= scope == POLICY_SCOPE_FILES;
        /* Both sorted by principal and pattern: one merge finds what is new,
         * what changed and what is gone. */
        while (i < n || j < p->n_rules) {
                int c = i == n ? 1 : j == p->n_rules ? -1 : policy_rule_compare(w[i], h[j]);

                if (i > 0 && i < n && policy_rule_compare(w[i - 1], w[i]) == 0) {
                        *ret_conflict = (size_t) (w[i] - want);         /* given twice */
                        r = -EEXIST;
                        goto out;
                }
                if (c < 0) {                    /* wanted, not there */
                        changes[k++] = (struct store_rule_change) { .op = STORE_RULE_ADD, .rule = *w[i++] };
                        counts.added++;
                } else if (c > 0) {             /* there, not wanted */
                        if (replace && in_scope(h[j], scope)) {
                                changes[k++] = (struct store_rule_change) { .op = STORE_RULE_REMOVE, .rule = *h[j] };
                                counts.removed++;
                        }
                        j++;
                } else {                        /* both: the same, or changed */
                        bool same = policy_rule_same_attrs(w[i], h[j]) && strcmp(w[i]->source, h[j]->source) == 0;

                        if (!same && scope == POLICY_SCOPE_IMPORT && !in_scope(h[j], scope)) {
                                if (!policy_rule_same_attrs(w[i], h[j])) {
                                        *ret_conflict = (size_t) (w[i] - want);   /* a policy.d file's rule */
                                        r = -EEXIST;
                                        goto out;
                                }
                        } else if (!same) {
                                struct store_rule x = *w[i];

                                x.id = h[j]->id;
                                x.created = h[j]->created;
                                changes[k++] = (struct store_rule_change) { .op = STORE_RULE_UPDATE, .rule = x };
                                counts.changed++;
                        }
                        i++;
                        j++;
                }
        }
        if (p->n_rules + counts.added - counts.removed > POLICY_RULES_MAX) {
                r = -ENOSPC;
                goto out;
        }
        r = (ssize_t) k;
        *ret = changes;
        changes = NULL;
        if (ret_counts)
                *ret_counts = counts;
out:
        free(changes);
        free(w);
        free(h);
        return r;
}

int policy_reserve(struct policy *p, size_t n) {
        size_t cap = p->cap ? p->cap : 16;
        struct store_rule *rules;

        while (cap < p->n_rules + n)
                cap *= 2;
        if (cap == p->cap)
                return 0;
        rules = realloc(p->rules, cap * sizeof(*rules));
        if (!rules)
                return -ENOMEM;
        p->rules = rules;
        p->cap = cap;
        return 0;
}

/* Removals first, so that the adds fit under POLICY_RULES_MAX; the adds
 * in the order the store numbered them, which keeps the rules in id order. */
void policy_apply(struct policy *p, const struct store_rule_change *changes, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (changes[i].op == STORE_RULE_REMOVE)
                        (void) policy_remove(p, changes[i].rule.id);
        for (size_t i = 0; i < n; i++) {
                const struct store_rule_change *c = &changes[i];
                struct store_rule *r;

                if (c->op == STORE_RULE_UPDATE && (r = (struct store_rule *) policy_get(p, c->rule.id)))
                        *r = c->rule;
                else if (c->op == STORE_RULE_ADD)
                        (void) policy_add(p, &c->rule);         /* room reserved */
        }
}

/* --- one rule at a time --------------------------------------------------------- */

int policy_add(struct policy *p, const struct store_rule *rule) {
        int r;

        if (p->n_rules >= POLICY_RULES_MAX)
                return -ENOSPC;
        r = policy_reserve(p, 1);
        if (r < 0)
                return r;
        p->rules[p->n_rules++] = *rule;
        p->n_unit_rules += rule->principal.kind == PB_PRINCIPAL_UNIT;
        return 0;
}

int policy_remove(struct policy *p, uint64_t id) {
        for (size_t i = 0; i < p->n_rules; i++)
                if (p->rules[i].id == id) {
                        p->n_unit_rules -= p->rules[i].principal.kind == PB_PRINCIPAL_UNIT;
                        memmove(&p->rules[i], &p->rules[i + 1], (p->n_rules - i - 1) * sizeof(p->rules[0]));
                        p->n_rules--;
                        return 0;
                }
        return -ENOENT;
}

const struct store_rule *policy_get(const struct policy *p, uint64_t id) {
        for (size_t i = 0; i < p->n_rules; i++)
                if (p->rules[i].id == id)
                        return &p->rules[i];
        return NULL;
}

void policy_done(struct policy *p) {
        free(p->rules);
        p->rules = NULL;
        p->n_rules = p->cap = p->n_unit_rules = 0;
}
