/* SPDX-License-Identifier: MIT */
/*
 * portctl admin: operations on brokerd itself (admin only). `admin reexec`
 * makes brokerd execute its binary again, an upgrade installed since
 * included, keeping every socket; `systemctl reload portbrokerd` runs it.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int cmd_admin_reexec(int argc, char **argv) {
        char version[256] = "";
        const char *none;
        pb_conn *c;
        pb_error err;
        int r;

        r = cli_parse_operand(argc, argv, "admin reexec", NULL, &none);
        if (r != 0)
                return r;
        r = cli_connect(&c);
        if (r != 0)
                return r;
        r = pb_conn_reexec(c, version, sizeof(version), &err);
        pb_disconnect(c);
        if (r < 0)
                return cli_fail_pb(&err);
        if (arg_json) {
                printf("{\"pid\":%d,\"version\":", r);
                json_string(stdout, version);
                puts("}");
        } else
                printf("brokerd %s (pid %d) executed again; every socket kept\n", version, r);
        return 0;
}

int cmd_admin(int argc, char **argv) {
        if (argc < 2)
                return cli_usage("admin: no subcommand given (reexec)");
        if (strcmp(argv[1], "reexec") == 0)
                return cmd_admin_reexec(argc - 1, argv + 1);
        return cli_usage("admin: unknown subcommand '%s'", argv[1]);
}
