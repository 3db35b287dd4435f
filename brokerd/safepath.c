/* SPDX-License-Identifier: MIT */
/*
 * Safe state paths (see safepath.h).
 */
#include "safepath.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

int safepath_private_dir(const char *dir, mode_t mode, uid_t owner) {
        struct stat st;

        if (mkdir(dir, mode) == 0)
                (void) chmod(dir, mode);        /* not narrowed by our umask */
        else if (errno != EEXIST) {
                int r = -errno;
                log_msg(LOG_ERR, "cannot create directory %s: %s", dir, strerror(errno));
                return r;
        }
        if (lstat(dir, &st) < 0) {
                int r = -errno;
                log_msg(LOG_ERR, "cannot inspect %s: %s", dir, strerror(errno));
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                log_msg(LOG_ERR, "%s is not a directory (a symlink?); refusing to use it", dir);
                return -ENOTDIR;
        }
        /* Not even a sticky one (like /tmp): there anyone may create the
         * database or the socket before we do, and have us use theirs. */
        if ((st.st_uid != owner && st.st_uid != 0) || (st.st_mode & 022)) {
                log_msg(LOG_ERR, "%s must be owned by uid %u or root and not writable by group or others%s",
                        dir, (unsigned) owner, st.st_mode & S_ISVTX ? " (sticky or not)" : "");
                return -EPERM;
        }
        return 0;
}

int safepath_owned_file(const char *path, uid_t owner) {
        struct stat st;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (st.st_uid != owner || (st.st_mode & 022) || !(S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode))) {
                log_msg(LOG_ERR, "%s is %s uid %u%s; refusing to use it (brokerd uses it as uid %u)", path,
                        S_ISREG(st.st_mode) || S_ISSOCK(st.st_mode) ? "owned by" : "not a plain file, owned by",
                        (unsigned) st.st_uid, st.st_mode & 022 ? " and writable by group or others" : "",
                        (unsigned) owner);
                return -EPERM;
        }
        return 0;
}

int safepath_parent_dir(const char *path, char *buf, size_t len) {
        const char *slash = strrchr(path, '/');

        if (!slash)
                snprintf(buf, len, ".");
        else if (slash == path)
                snprintf(buf, len, "/");
        else if ((size_t) (slash - path) < len)
                snprintf(buf, len, "%.*s", (int) (slash - path), path);
        else
                return -ENAMETOOLONG;
        return 0;
}
