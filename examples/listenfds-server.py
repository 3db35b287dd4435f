#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""listenfds-server.py: a socket-activated server in plain Python, no library.

It takes its listening socket the way systemd (and `portctl get`) hands it
over: fd 3, with LISTEN_FDS=1 (or more; only fd 3 is used) and LISTEN_PID
naming this process. It answers every connection with the line
"ok listenfds-server.py PID" and closes it.

    portctl get 8080 -- ./listenfds-server.py
"""

import os
import socket
import sys

SD_LISTEN_FDS_START = 3


def listen_fds():
    """The number of sockets passed to us, as sd_listen_fds(1) counts them:
    0 unless LISTEN_PID is our pid. Unsets the variables so that children
    do not take the sockets for theirs."""
    pid, fds = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if not pid or not fds:
        return 0
    if not pid.isdigit() or int(pid) != os.getpid():
        return 0
    return int(fds) if fds.isdigit() else 0


def main():
    if listen_fds() < 1:
        print("listenfds-server.py: no socket passed (LISTEN_FDS/LISTEN_PID unset or not ours); "
              "run me as `portctl get 8080 -- listenfds-server.py`", file=sys.stderr)
        return 1
    # family/type/proto are read from the fd itself.
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    # The open file description is shared with every other holder of the
    # socket; this loop blocks in accept(), so make the mode say so.
    sock.setblocking(True)
    reply = f"ok listenfds-server.py {os.getpid()}\n".encode()
    print(f"listenfds-server.py: serving {sock.getsockname()[:2]} as pid {os.getpid()}",
          file=sys.stderr, flush=True)
    while True:
        try:
            conn, _ = sock.accept()
        except (ConnectionAbortedError, InterruptedError):
            continue
        with conn:
            try:
                conn.sendall(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
