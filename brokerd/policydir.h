/* SPDX-License-Identifier: MIT */
/*
 * The policy directory (--policy-dir, /etc/portbroker/policy.d): rules
 * files an admin or a configuration-management tool puts there, NAME.conf
 * each in the format of common/policyfile.h. brokerd reads them at start
 * (so at `systemctl reload`, a re-exec, too) and makes its rules from
 * them say what the files say: a rule a file gained is added, one it
 * changed is changed, one no file has any more is removed; rules added
 * with portctl are left alone. A file with a mistake changes nothing.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "store.h"

#ifdef PB_POLICY_DIR
#define POLICYDIR_DEFAULT PB_POLICY_DIR /* $(SYSCONFDIR)/portbroker/policy.d, from make */
#else
#define POLICYDIR_DEFAULT "/etc/portbroker/policy.d"
#endif
#define POLICYDIR_FILES_MAX 256         /* NAME.conf files read */

struct policydir {
        struct store_rule *rules;       /* in file and line order; source: the file's name */
        unsigned *lines;                /* each rule's line in its file */
        size_t n, cap;
};

/* Reads every NAME.conf of dir in name order (other names are skipped):
 * the directory and each file must belong to root or uid self and be
 * writable by nobody else, and a rule may be in only one place. A missing
 * directory has no rules. Returns 0 and *ret (policydir_done() it), or
 * -errno with why, naming the file and line at fault. */
int policydir_read(const char *dir, uid_t self, struct policydir *ret, char *why, size_t size);

void policydir_done(struct policydir *d);

/* brokerd --check: policydir_read(), saying on stderr what is wrong. dir
 * NULL (none) is fine. Returns 0 or -errno. */
int policydir_check(const char *dir, uid_t self);
