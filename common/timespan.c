/* SPDX-License-Identifier: MIT */
/*
 * Time spans (see timespan.h): digits and a unit, repeated; each part
 * checked against the bound before it is added, so no sum overflows.
 */
#include "timespan.h"

#include <errno.h>
#include <string.h>

#define TIMESPAN_MAX (100ull * 366 * 86400)     /* a century: more is a typo */

static const struct unit {
        const char *name;
        uint64_t sec;
} units[] = {
        { "min", 60 }, { "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 }, { "w", 7 * 86400 },
};

int timespan_parse(const char *s, uint64_t *ret) {
        uint64_t total = 0;

        if (!*s)
                return -EINVAL;
        while (*s) {
                uint64_t n = 0, mult = 0;

                if (*s < '0' || *s > '9')
                        return -EINVAL;
                for (; *s >= '0' && *s <= '9'; s++) {
                        n = n * 10 + (uint64_t) (*s - '0');
                        if (n > TIMESPAN_MAX)
                                return -ERANGE;
                }
                for (size_t i = 0; i < sizeof(units) / sizeof(units[0]) && !mult; i++)
                        if (strncmp(s, units[i].name, strlen(units[i].name)) == 0) {
                                mult = units[i].sec;
                                s += strlen(units[i].name);
                        }
                if (!mult && *s)
                        return -EINVAL;
                if (!mult && total)             /* "1h30": the last part needs its unit too */
                        return -EINVAL;
                if (!mult)
                        mult = 1;
                if (n > (TIMESPAN_MAX - total) / mult)
                        return -ERANGE;
                total += n * mult;
        }
        *ret = total;
        return 0;
}
