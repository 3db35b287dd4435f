/* SPDX-License-Identifier: MIT */
/*
 * Policy: the rules in memory (the store keeps them durable), who is an
 * admin, and which rule, if any, lets a peer get an endpoint. Default deny.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "peer.h"
#include "store.h"

#define POLICY_RULES_MAX 10000

/* Whose members administer besides root and brokerd's own uid (--admin-group). */
struct policy_admin_group {
        bool set;
        gid_t gid;
        const char *name;               /* as given, for messages */
};

struct policy {
        struct store_rule *rules;       /* in id order */
        size_t n_rules, cap;
        size_t n_unit_rules;            /* rules whose principal is a unit */
        uid_t self_uid;                 /* brokerd's own uid: always admin */
        const struct policy_admin_group *admin_group; /* the options', or NULL */
};

/* True when the peer may change rules and release any lease. */
bool policy_is_admin(const struct policy *p, const struct peer *peer);

/* True when the rule's principal describes the peer. */
bool policy_principal_matches(const struct pb_principal *principal, const struct peer *peer);

/* The first rule letting peer get endpoint e, or NULL. */
const struct store_rule *policy_find(const struct policy *p, const struct peer *peer, const struct pb_endpoint *e);

/* The rule with the same principal and pattern as rule, or NULL. */
const struct store_rule *policy_find_rule(const struct policy *p, const struct store_rule *rule);

/* Orders rules by what makes a rule itself, its principal and pattern:
 * 0 for two that policy_find_rule() takes for one. */
int policy_rule_compare(const struct store_rule *a, const struct store_rule *b);

/* Whether a and b say the same beyond their principal and pattern: a Unix
 * pattern's socket group and mode, the flags and the owner. */
bool policy_rule_same_attrs(const struct store_rule *a, const struct store_rule *b);

/* Whose rules a set of wanted rules replaces (policy_plan()). */
enum policy_scope {
        POLICY_SCOPE_IMPORT,            /* an admin's (source ""): portctl policy import */
        POLICY_SCOPE_FILES,             /* the policy.d files' (source not ""): brokerd at start */
};

/* The changes that make p's rules of scope say what want (n rules, with
 * their sources) says. A wanted rule that p lacks is added; one that p has
 * with other attributes (or, for POLICY_SCOPE_FILES, from another source:
 * a file takes over a rule an admin added) is changed in place, keeping its
 * id; with replace (always for POLICY_SCOPE_FILES) a rule of the scope that
 * want lacks is removed. An import never changes a policy.d file's rule:
 * one it names with other attributes is a conflict.
 *
 * Returns the number of changes (*ret, to be freed; the counts in
 * *ret_added, ..., may be NULL), -ENOMEM, -ENOSPC (more than
 * POLICY_RULES_MAX rules would result), or -EEXIST with *ret_conflict the
 * index in want of a rule given twice or in conflict. */
struct policy_counts {
        unsigned added, changed, removed;
};

ssize_t policy_plan(const struct policy *p, const struct store_rule *want, size_t n, enum policy_scope scope,
                    bool replace, struct store_rule_change **ret, struct policy_counts *ret_counts,
                    size_t *ret_conflict);

/* Applies changes that the store made (after store_rules_change()): every
 * add must fit (policy_reserve()). */
void policy_apply(struct policy *p, const struct store_rule_change *changes, size_t n);

/* Room for n more rules, so that policy_apply() cannot fail. Returns 0 or -ENOMEM. */
int policy_reserve(struct policy *p, size_t n);

/* Adds a copy of rule (id assigned by the store). Returns 0, -ENOSPC or -ENOMEM. */
int policy_add(struct policy *p, const struct store_rule *rule);

/* Removes rule id. Returns 0 or -ENOENT. */
int policy_remove(struct policy *p, uint64_t id);

/* The rule with id, or NULL. */
const struct store_rule *policy_get(const struct policy *p, uint64_t id);

void policy_done(struct policy *p);
