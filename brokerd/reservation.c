/* SPDX-License-Identifier: MIT */
/*
 * Reservations. A rule that says reserve has brokerd lease its endpoint
 * itself, for the rule's user (or the owner a group or unit rule names):
 * at start before READY=1, and as soon as such a rule is added, so that
 * nothing else (another user, an outgoing connection's ephemeral port) can
 * take the port before its server first asks. The lease is an ordinary
 * one from then on: its owner gets it, the guard keeps it, a release ends
 * it (and the next start or change of rules makes it again).
 *
 * A reservation that cannot be made never stops brokerd: it is logged and
 * audited (reserve-failed). One whose port another socket holds is tried
 * again with the leases that could not be bound again; one that another
 * uid's lease holds waits for that lease to go.
 */
#include "broker-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uid_t reservation_owner(const struct store_rule *rule) {
        return rule->attrs.flags & PB_RULE_OWNER ? rule->attrs.owner : rule->principal.id;
}

/* Logs and audits why rule's reservation of text was not made. */
static void failed(struct broker *b, const struct store_rule *rule, const char *text, int level, const char *why) {
        struct log_fields f = { .endpoint = text, .port = rule->pattern.port_lo, .uid = reservation_owner(rule),
                                .pid = -1 };
        char detail[160];

        log_event(level, "reserve", &f, "rule %llu: cannot reserve %s for uid %u: %s", (unsigned long long) rule->id,
                  text, (unsigned) reservation_owner(rule), why);
        snprintf(detail, sizeof(detail), "rule %llu: %s", (unsigned long long) rule->id, why);
        broker_audit(b, "reserve-failed", NULL, text, detail);
}

/* Notes that rule id's reservation found its port busy, to be tried again.
 * Only these are: a reservation its owner (or an admin) released stays
 * released until the next start or change of rules, whatever else is
 * retried meanwhile. */
static void retry_later(struct broker *b, uint64_t id) {
        for (size_t i = 0; i < b->n_busy_reservations; i++)
                if (b->busy_reservations[i] == id)
                        goto arm;
        if (b->n_busy_reservations == b->cap_busy_reservations) {
                size_t cap = b->cap_busy_reservations ? b->cap_busy_reservations * 2 : 16;
                uint64_t *ids = realloc(b->busy_reservations, cap * sizeof(*ids));

                if (!ids)
                        return;         /* made at the next start or change of rules */
                b->busy_reservations = ids;
                b->cap_busy_reservations = cap;
        }
        b->busy_reservations[b->n_busy_reservations++] = id;
arm:
        broker_arm_oneshot(b, b->rebind_source, BROKER_REBIND_RETRY_USEC);
}

int reservation_make(struct broker *b, const struct store_rule *rule, bool quiet) {
        const struct pb_endpoint *e = &rule->pattern;   /* one endpoint (proto_rule_attrs_validate()) */
        uid_t owner = reservation_owner(rule);
        char text[PB_ENDPOINT_STRLEN], other_text[PB_ENDPOINT_STRLEN], why[PB_TEXT_MAX + 1], detail[32];
        const struct lease *l = lease_table_find(&b->leases, e), *other;
        struct store_event who = { .event = "reserve", .uid = owner, .pid = -1, .detail = detail };
        struct lease *made;
        int r;

        if (!(rule->attrs.flags & PB_RULE_RESERVE) || (l && l->owner_uid == owner))
                return 0;
        endpoint_format(e, text);
        other = l ? l : lease_table_conflicting(&b->leases, e, owner);
        if (other) {
                snprintf(why, sizeof(why), "uid %u holds %s", (unsigned) other->owner_uid,
                         endpoint_format(&other->endpoint, other_text));
                if (!quiet)
                        failed(b, rule, text, LOG_WARNING, why);
                return -EBUSY;
        }
        /* One of the owner's own on another address of the port (tcp:[::]:P
         * beside tcp:0.0.0.0:P): no bind can succeed until its owner picks
         * one, so this is said once, not retried. */
        other = lease_table_overlapping(&b->leases, e);
        if (other) {
                snprintf(why, sizeof(why), "its own lease %s holds the port: release that one first",
                         endpoint_format(&other->endpoint, other_text));
                if (!quiet)
                        failed(b, rule, text, LOG_WARNING, why);
                return -EBUSY;
        }
        if (b->leases.n >= b->opt.max_leases) {
                snprintf(why, sizeof(why), "brokerd holds %u leases, the most allowed (--max-leases)",
                         b->opt.max_leases);
                if (!quiet)
                        failed(b, rule, text, LOG_WARNING, why);
                return -EDQUOT;
        }
        snprintf(detail, sizeof(detail), "rule %llu", (unsigned long long) rule->id);
        r = broker_lease_create(b, e, owner, rule, &who, &made, why, sizeof(why));
        if (r < 0) {
                if (r == -EADDRINUSE)   /* whatever holds the port may let go: tried again */
                        retry_later(b, rule->id);
                if (!quiet)
                        failed(b, rule, text, r == -EADDRINUSE ? LOG_WARNING : LOG_ERR, why);
                return r;
        }
        log_event(LOG_INFO, "reserve", &(struct log_fields) { .endpoint = text, .port = e->port_lo, .uid = owner,
                                                              .pid = -1 },
                  "lease %llu reserved for uid %u by rule %llu", (unsigned long long) made->id, (unsigned) owner,
                  (unsigned long long) rule->id);
        return 0;
}

void reservations_make(struct broker *b) {
        for (size_t i = 0; i < b->policy.n_rules; i++)
                (void) reservation_make(b, &b->policy.rules[i], false);
}

bool reservations_retry(struct broker *b) {
        uint64_t *ids = b->busy_reservations;
        size_t n = b->n_busy_reservations;

        /* Taken out: those still busy are noted again by reservation_make(). */
        b->busy_reservations = NULL;
        b->n_busy_reservations = b->cap_busy_reservations = 0;
        for (size_t i = 0; i < n; i++) {
                const struct store_rule *rule = policy_get(&b->policy, ids[i]);

                if (rule)       /* a rule removed since has no reservation to wait for */
                        (void) reservation_make(b, rule, true);
        }
        free(ids);
        return b->n_busy_reservations > 0;
}

void reservations_after_release(struct broker *b, const struct pb_endpoint *gone, uid_t gone_owner) {
        for (size_t i = 0; i < b->policy.n_rules; i++) {
                const struct store_rule *rule = &b->policy.rules[i];

                /* The owner's own reservation released stays released (until
                 * the next start or change of rules); only those the lease
                 * kept out, as lease_table_conflicting() finds, are made. */
                if ((rule->attrs.flags & PB_RULE_RESERVE) && reservation_owner(rule) != gone_owner &&
                    (endpoint_overlaps(&rule->pattern, gone) || endpoint_splits_clients(&rule->pattern, gone)))
                        (void) reservation_make(b, rule, false);
        }
}
