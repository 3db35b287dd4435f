# SPDX-License-Identifier: MIT
"""A holder cannot break the shared listener for the others: after one
calls shutdown() on its copy (which stops the listener for every holder),
the next get is handed a socket that listens again. File status flags
(O_NONBLOCK) set by one holder do not disturb the broker."""

import errno

import pytest

from conftest import PYTHON, fetch, try_bind

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
