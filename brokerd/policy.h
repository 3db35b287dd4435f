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

/* Adds a copy of rule (id assigned by the store). Returns 0, -ENOSPC or -ENOMEM. */
int policy_add(struct policy *p, const struct store_rule *rule);

/* Removes rule id. Returns 0 or -ENOENT. */
int policy_remove(struct policy *p, uint64_t id);

/* The rule with id, or NULL. */
const struct store_rule *policy_get(const struct policy *p, uint64_t id);

void policy_done(struct policy *p);
