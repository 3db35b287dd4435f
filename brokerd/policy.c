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

const struct store_rule *policy_find_rule(const struct policy *p, const struct store_rule *rule) {
        for (size_t i = 0; i < p->n_rules; i++) {
                const struct store_rule *o = &p->rules[i];

                /* Field by field: struct padding is whatever the copy left there. */
                if (o->principal.kind == rule->principal.kind && o->principal.id == rule->principal.id &&
                    strcmp(o->principal.unit, rule->principal.unit) == 0 &&
                    endpoint_equal(&o->pattern, &rule->pattern))
                        return o;
        }
        return NULL;
}

int policy_add(struct policy *p, const struct store_rule *rule) {
        if (p->n_rules >= POLICY_RULES_MAX)
                return -ENOSPC;
        if (p->n_rules == p->cap) {
                size_t cap = p->cap ? p->cap * 2 : 16;
                struct store_rule *rules = realloc(p->rules, cap * sizeof(*rules));

                if (!rules)
                        return -ENOMEM;
                p->rules = rules;
                p->cap = cap;
        }
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
