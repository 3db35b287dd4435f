/* SPDX-License-Identifier: MIT */
/*
 * c-server: the smallest server that gets its listening socket from brokerd
 * through libportbroker instead of socket()/bind()/listen(). It asks for the
 * endpoint in argv[1] (default "8080"), then accepts connections one at a
 * time and answers each with the line "ok c-server PID\n". Killed and
 * restarted, it gets the same socket back: clients that connected meanwhile
 * wait in the backlog and are answered.
 *
 *   cc -o c-server c-server.c $(pkg-config --cflags --libs portbroker)
 *   PORTBROKER_SOCKET=/run/portbroker/control.sock ./c-server 8080
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* accept4() */
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <portbroker.h>

int main(int argc, char **argv) {
        const char *endpoint = argc > 1 ? argv[1] : "8080";
        char reply[64];
        pb_error err;
        int listen_fd, n;

        if (argc > 2) {
                fprintf(stderr, "usage: c-server [ENDPOINT]   (default 8080)\n");
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);       /* a client that left early is not our problem */

        /* Blocking mode: this server waits in accept(). The mode is shared by every
         * holder of the socket, so ask for the one this program relies on. */
        listen_fd = pb_get(endpoint, PB_GET_BLOCKING, &err);
        if (listen_fd < 0) {
                fprintf(stderr, "c-server: cannot get %s from brokerd at %s: %s\n",
                        endpoint, pb_socket_path(), err.message);
                return 1;
        }
        n = snprintf(reply, sizeof(reply), "ok c-server %ld\n", (long) getpid());
        fprintf(stderr, "c-server: serving %s as pid %ld\n", endpoint, (long) getpid());

        for (;;) {
                int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);

                if (fd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                                continue;
                        fprintf(stderr, "c-server: accept: %s\n", strerror(errno));
                        return 1;
                }
                if (write(fd, reply, (size_t) n) < 0 && errno != EPIPE && errno != ECONNRESET)
                        fprintf(stderr, "c-server: write: %s\n", strerror(errno));
                close(fd);
        }
}
