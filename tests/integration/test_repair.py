# SPDX-License-Identifier: MIT
"""A holder cannot break the shared listener for the others: after one
calls shutdown() on its copy (which stops the listener for every holder),
the next get is handed a socket that listens again. File status flags
(O_NONBLOCK) set by one holder do not disturb the broker."""

import errno
import os
import signal
import socket
import sqlite3

import pytest

from conftest import PYTHON, fetch, try_bind, wait_for

pytestmark = pytest.mark.usefixtures("netns")

U1 = 4242

SHUTDOWN = r"""
import socket, sys
s = socket.socket(fileno=3)
s.shutdown(getattr(socket, sys.argv[1]))
s.detach()
"""

NONBLOCK = r"""
import os, socket
os.set_blocking(3, False)
print(os.get_blocking(3))
"""


@pytest.mark.parametrize("how", ["SHUT_RDWR", "SHUT_RD"])
def test_shutdown_by_holder_is_repaired(broker, procs, how):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    broker.portctl("get", "8080", "--", PYTHON, "-I", "-c", SHUTDOWN, how, uid=U1)
    # The shut-down listener is noticed (at once, or at the latest at the next
    # get) and the port stays the broker's: nobody else may bind it meanwhile.
    assert try_bind(8080) == errno.EADDRINUSE

    srv = broker.serve(procs, "8080", uid=U1)
    pid = srv.wait_ready()
    assert fetch(8080) == f"ok {pid}\n"
    assert fetch(8080, addr="::1") == f"ok {pid}\n"
    assert broker.events("repair"), "a repaired listener must be logged (event=repair)"
    st = broker.portctl("status", "8080", json=True).json[0]
    assert st["bound"] is True and st["owner_uid"] == U1, st


def test_nonblocking_holder_does_not_disturb_broker(broker, procs):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    r = broker.portctl("get", "8080", "--", PYTHON, "-I", "-c", NONBLOCK, uid=U1)
    assert r.stdout.split() == ["False"], r
    # The flag is shared by every holder (one open file description) ...
    srv = broker.serve(procs, "8080", uid=U1)
    pid = srv.wait_ready()
    # ... and the broker and a poll()-based server work either way.
    for _ in range(5):
        assert fetch(8080) == f"ok {pid}\n"
    st = broker.portctl("status", "8080", json=True).json[0]
    assert st["handouts"] >= 2 and st["queued"] == 0, st


# A holder that makes the shared listener an outgoing connection: once the
# file argv[2] exists (the test has paused brokerd), stops it (shutdown)
# and connects it to port argv[1].
CONNECT_AWAY = r"""
import os, socket, sys, time
s = socket.socket(fileno=3)
print(f"ready {os.getpid()}", flush=True)
deadline = time.monotonic() + 10
while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.01)
s.shutdown(socket.SHUT_RDWR)
s.connect(("::1", int(sys.argv[1])))
print("connected", flush=True)
time.sleep(30)
"""

# A holder that connects the shared UDP socket to one peer (it then receives
# from that peer only).
UDP_CONNECT = r"""
import socket
s = socket.socket(fileno=3)
s.connect(("::1", 9))
s.detach()
"""

# Receives one datagram on fd 3 and prints it.
UDP_RECV = r"""
import os, socket
s = socket.socket(fileno=3)
s.settimeout(10)
print(f"ready {os.getpid()}", flush=True)
print(s.recv(64).decode(), flush=True)
"""


def test_a_listener_turned_into_a_connection_is_replaced(broker, procs, workdir):
    """A holder's shutdown() then connect() turns the lease's socket into an
    outgoing connection, which can never listen again (brokerd is paused
    meanwhile so that it cannot listen again first). The owner's next get
    gets a fresh socket on the port, logged and audited as replace, and
    clients reach the new server. (Meanwhile the port is not guarded: a
    connection does not keep others from binding it; issue 10's kernel
    guard will.)"""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    target = socket.socket(socket.AF_INET6)
    target.bind(("::1", 0))
    target.listen()
    go = workdir / "scratch" / "go"
    holder = broker.serve(procs, "8080", uid=U1, cmd=[PYTHON, "-I", "-c", CONNECT_AWAY,
                                                      str(target.getsockname()[1]), str(go)], name="holder")
    holder.wait_ready()
    stopped = broker.pids()                             # the monitor and the worker: both hold the socket
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        go.write_text("")
        wait_for(lambda: "connected" in holder.output(), 10, "the holder to connect the lease's socket away")
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    srv = broker.serve(procs, "8080", uid=U1)
    pid = srv.wait_ready()
    assert fetch(8080) == f"ok {pid}\n"
    assert broker.events("replace"), broker.log()
    db = sqlite3.connect(broker.db)
    # Audit rows are written in batches, within moments.
    wait_for(lambda: db.execute("SELECT count(*) FROM events WHERE event = 'replace'").fetchone()[0] == 1, 5,
             "the replace to be audited")
    db.close()
    target.close()


def test_a_connected_udp_socket_is_disconnected(broker, procs):
    """A holder that connect()s the shared UDP socket makes it receive from
    one peer only; the next get disconnects it, and datagrams from anyone
    reach the owner again."""
    broker.portctl("policy", "add", "udp:5353", "--user", U1)
    broker.portctl("get", "udp:5353", "--", PYTHON, "-I", "-c", UDP_CONNECT, uid=U1)
    srv = broker.serve(procs, "udp:5353", uid=U1, cmd=[PYTHON, "-I", "-c", UDP_RECV], name="receiver")
    srv.wait_ready()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"hello", ("127.0.0.1", 5353))
    wait_for(lambda: "hello" in srv.output(), 10, "the datagram to reach the owner")
    assert broker.events("repair"), broker.log()
