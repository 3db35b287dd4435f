/* SPDX-License-Identifier: MIT */
/*
 * Changing many rules at once: an admin's import (POLICY_BEGIN ..
 * POLICY_COMMIT) and the policy directory at start. The changes are
 * planned against the rules in memory (policy_plan()), written in one
 * transaction, then applied in memory, and the reservations they ask for
 * are made: all or nothing, in that order, so that memory never says more
 * than the database.
 */
#include "broker-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policydir.h"

int broker_rules_set(struct broker *b, const struct store_rule *want, size_t n, enum policy_scope scope, bool replace,
                     const struct peer *p, const char *detail, struct policy_counts *ret_counts, size_t *ret_conflict,
                     char *why, size_t size) {
        struct store_event who = { .uid = p ? (long) p->uid : -1, .pid = p ? (long) p->pid : -1, .detail = detail };
        struct log_fields f = p ? broker_peer_fields(p, NULL, NULL) : (struct log_fields) LOG_FIELDS_NONE;
        struct store_rule_change *changes = NULL;
        struct policy_counts counts;
        ssize_t k;
        int r;

        k = policy_plan(&b->policy, want, n, scope, replace, &changes, &counts, ret_conflict);
        if (k == -ENOSPC)
                snprintf(why, size, "more than %d rules would result", POLICY_RULES_MAX);
        else if (k < 0 && k != -EEXIST)
                snprintf(why, size, "cannot plan the changes: %s", strerror((int) -k));
        if (k < 0)
                return (int) k;
        r = policy_reserve(&b->policy, counts.added);
        if (r >= 0 && k > 0)
                r = store_rules_change(b->store, changes, (size_t) k, &who);
        if (r < 0) {
                snprintf(why, size, "cannot change the rules: %s", strerror(-r));
                free(changes);
                return r;
        }
        policy_apply(&b->policy, changes, (size_t) k);
        for (ssize_t i = 0; i < k; i++) {
                static const char *const verbs[] = { [STORE_RULE_ADD] = "added", [STORE_RULE_UPDATE] = "changed",
                                                     [STORE_RULE_REMOVE] = "removed" };
                const struct store_rule *x = &changes[i].rule;
                char what[400];

                log_event(LOG_INFO, changes[i].op == STORE_RULE_ADD ? "policy-add" :
                                    changes[i].op == STORE_RULE_UPDATE ? "policy-change" : "policy-remove", &f,
                          "rule %llu %s: %s%s%s", (unsigned long long) x->id, verbs[changes[i].op],
                          store_rule_describe(x, what, sizeof(what)), detail ? "; " : "", detail ? detail : "");
                if (changes[i].op != STORE_RULE_REMOVE && b->serving)
                        (void) reservation_make(b, policy_get(&b->policy, x->id), false);
        }
        free(changes);
        if (k > 0)
                broker_notify_status(b);
        if (ret_counts)
                *ret_counts = counts;
        return 0;
}

void broker_rules_from_dir(struct broker *b) {
        const char *dir = b->opt.policy_dir;
        struct policy_counts counts;
        struct policydir d = { 0 };     /* no --policy-dir: no files, so none of their rules */
        char why[512] = "";
        size_t conflict;
        int r = 0;

        if (dir)
                r = policydir_read(dir, b->policy.self_uid, &d, why, sizeof(why));
        if (r >= 0) {
                r = broker_rules_set(b, d.rules, d.n, POLICY_SCOPE_FILES, true, NULL, NULL, &counts, &conflict, why,
                                     sizeof(why));
                if (r == -EEXIST)       /* policydir_read() refuses a rule given twice first */
                        snprintf(why, sizeof(why), "%s: a rule given twice", dir);
                policydir_done(&d);
        }
        if (r < 0) {
                log_event(LOG_ERR, "error", &(struct log_fields) LOG_FIELDS_NONE,
                          "%s; the rules from the policy directory stay as they were", why);
                broker_audit(b, "policy-dir-failed", NULL, NULL, why);
                return;
        }
        if (counts.added || counts.changed || counts.removed)
                log_event(LOG_INFO, "policy-dir", &(struct log_fields) LOG_FIELDS_NONE,
                          "%s: %u rules added, %u changed, %u removed", dir ? dir : "no --policy-dir", counts.added,
                          counts.changed, counts.removed);
}
