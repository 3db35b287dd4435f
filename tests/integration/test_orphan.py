# SPDX-License-Identifier: MIT
"""Orphan timeouts: a rule may say how long a lease it allowed may go
without a live holder; then brokerd closes the socket (and drops it from
systemd's fd store), so clients are refused at once instead of hanging in a
backlog nobody drains, records it in the audit trail, and binds it again at
the owner's next get. Default off. `portctl status` shows since when a
lease has had no holder."""

import socket
import sqlite3

import pytest

from conftest import fetch, wait_for

pytestmark = pytest.mark.usefixtures("netns")

U1 = 4242


def status(broker):
    return {x["endpoint"]: x for x in broker.portctl("status", json=True).json}


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_orphan_timeout_closes_a_lease_nobody_holds(broker, procs):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1, "--orphan-timeout", "1s")
    srv = broker.serve(procs, 8080, uid=U1)
    srv.wait_ready()
    assert status(broker)["tcp:[::]:8080"]["holderless_since"] is None
    srv.kill9()

    broker.wait_event("orphan-close", timeout=10)
    st = status(broker)["tcp:[::]:8080"]
    assert st["bound"] is False and st["holderless_since"] > 0, st
    assert refused(8080)                        # at once, not a hang in a dead backlog
    db = sqlite3.connect(broker.db)
    rows = db.execute("SELECT detail FROM events WHERE event = 'orphan-close'").fetchall()
    db.close()
    assert rows == [("no holder for 1 s",)], rows

    # It stays closed across a restart of brokerd, until the owner's next get.
    broker.restart()
    assert status(broker)["tcp:[::]:8080"]["bound"] is False
    assert refused(8080)
    srv = broker.serve(procs, 8080, uid=U1)
    pid = srv.wait_ready()
    assert fetch(8080) == f"ok {pid}\n"
    assert status(broker)["tcp:[::]:8080"]["bound"] is True


def test_only_leases_past_their_timeout_are_closed(broker, procs):
    """Three leases lose or keep their holders at once: the one with a
    timeout and no holder is closed (the signal to look); the one with no
    timeout, and the one whose holder lives, keep their sockets."""
    broker.portctl("policy", "add", "tcp:9000", "--user", U1, "--orphan-timeout", "1")
    broker.portctl("policy", "add", "tcp:9001", "--user", U1)
    broker.portctl("policy", "add", "tcp:9002", "--user", U1, "--orphan-timeout", "1")
    servers = {}
    for port in (9000, 9001, 9002):
        servers[port] = broker.serve(procs, port, uid=U1, name=f"server-{port}")
        servers[port].wait_ready()
    servers[9000].kill9()
    servers[9001].kill9()

    broker.wait_event("orphan-close", timeout=10)
    st = status(broker)
    assert st["tcp:[::]:9000"]["bound"] is False
    assert st["tcp:[::]:9001"]["bound"] is True and st["tcp:[::]:9001"]["holderless_since"] > 0
    assert st["tcp:[::]:9002"]["bound"] is True and st["tcp:[::]:9002"]["holderless_since"] is None
    assert not refused(9001)                    # waits in the backlog for a server
    assert fetch(9002).startswith("ok ")
    assert len(broker.events("orphan-close")) == 1


def test_orphan_timeout_option(broker):
    broker.portctl("policy", "add", "tcp:7000", "--user", U1, "--orphan-timeout", "2m")
    rules = broker.portctl("policy", "list", json=True).json
    assert [r["orphan_timeout"] for r in rules] == [120], rules
    assert "120 s" in broker.portctl("policy", "list").stdout
    for bad in ("0", "5x", "-1", "", "4294967296", "50000d"):
        r = broker.portctl("policy", "add", "tcp:7001", "--user", U1, "--orphan-timeout", bad, check=2)
        assert "orphan-timeout" in r.stderr, r.stderr
    # Only admins set rules, timeouts included.
    broker.portctl("policy", "add", "tcp:7001", "--user", U1, "--orphan-timeout", "1", uid=U1, check=1)
