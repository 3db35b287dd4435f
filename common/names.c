/* SPDX-License-Identifier: MIT */
/*
 * Users and groups given by name or number (names.h).
 */
#include "names.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>

int parse_id(const char *s, uint32_t *ret) {
        unsigned long long v = 0;

        if (!s[0] || strlen(s) > 10)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (*p - '0');
        }
        if (v >= UINT32_MAX)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

int parse_user(const char *s, uid_t *ret) {
        struct passwd *pw;
        uint32_t id;

        if (parse_id(s, &id) == 0) {
                *ret = (uid_t) id;
                return 0;
        }
        pw = getpwnam(s);
        if (!pw)
                return -ENOENT;
        *ret = pw->pw_uid;
        return 0;
}

int parse_group(const char *s, gid_t *ret) {
        struct group *gr;
        uint32_t id;

        if (parse_id(s, &id) == 0) {
                *ret = (gid_t) id;
                return 0;
        }
        gr = getgrnam(s);
        if (!gr)
                return -ENOENT;
        *ret = gr->gr_gid;
        return 0;
}
