# SPDX-License-Identifier: MIT
"""Orphan timeouts: a rule may say how long a lease it allowed may go
without a live holder; then brokerd closes the socket (and drops it from
systemd's fd store), so clients are refused at once instead of hanging in a
backlog nobody drains, records it in the audit trail, and binds it again at
the owner's next get. Default off. `portctl status` shows since when a
lease has had no holder.

"No holder" is decided by the holders' pids and their cgroups: a process a
holder forked keeps the cgroup populated. So every server here runs in a
cgroup of its own (a child of the cgroup2 root, removed afterwards), as a
systemd service would; a server left in the test's own cgroup would never
be taken for gone."""

import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import PORTCTL, PYTHON, TESTSERVER, fetch, wait_for

pytestmark = pytest.mark.usefixtures("netns")

U1 = 4242

# As a server that daemonizes: forks a child that keeps the socket (fd 3,
# from portctl get) and serves, and exits itself.
FORKING_SERVER = r"""
import os, socket, sys
if os.fork():
    os._exit(0)
s = socket.socket(fileno=3)
while True:
    c, _ = s.accept()
    c.sendall(b"ok child\n")
    c.close()
"""


def cgroup2_root():
    for d in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(os.path.join(d, "cgroup.controllers")):
            return Path(d)
    return None


@pytest.fixture
def cgroup_serve(broker, procs):
    """serve(port, cmd=None) starts `portctl get PORT -- CMD` as U1 in a
    fresh cgroup and returns (proc, cgroup dir); all are emptied and removed
    at teardown."""
    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 hierarchy")
    made = []

    def serve(port, cmd=None):
        cg = root / f"pb-orphan-{os.getpid()}-{time.monotonic_ns()}"
        cg.mkdir()
        made.append(cg)
        cmd = cmd or [TESTSERVER, "--die-with-parent"]
        argv = ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "sh", str(cg),
                "setpriv", "--reuid", str(U1), "--regid", str(U1), "--clear-groups",
                PORTCTL, "--socket", broker.control, "get", str(port), "--", *cmd]
        return procs.spawn(argv, name=f"server-{port}"), cg

    yield serve
    for cg in made:
        if (cg / "cgroup.kill").exists():
            (cg / "cgroup.kill").write_text("1")
        wait_for(lambda: "populated 0" in (cg / "cgroup.events").read_text(), 10, f"{cg} to empty")
        cg.rmdir()


def status(broker):
    return {x["endpoint"]: x for x in broker.portctl("status", json=True).json}


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_orphan_timeout_closes_a_lease_nobody_holds(broker, cgroup_serve):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1, "--orphan-timeout", "1s")
    srv, _ = cgroup_serve(8080)
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
    srv, _ = cgroup_serve(8080)
    pid = srv.wait_ready()
    assert fetch(8080) == f"ok {pid}\n"
    assert status(broker)["tcp:[::]:8080"]["bound"] is True


def test_only_leases_past_their_timeout_are_closed(broker, cgroup_serve):
    """Three leases lose or keep their holders at once: the one with a
    timeout and no holder is closed (the signal to look); the one with no
    timeout, and the one whose holder lives, keep their sockets."""
    broker.portctl("policy", "add", "tcp:9000", "--user", U1, "--orphan-timeout", "1")
    broker.portctl("policy", "add", "tcp:9001", "--user", U1)
    broker.portctl("policy", "add", "tcp:9002", "--user", U1, "--orphan-timeout", "1")
    servers = {}
    for port in (9000, 9001, 9002):
        servers[port], _ = cgroup_serve(port)
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


def test_a_forked_child_keeps_the_socket(broker, cgroup_serve):
    """A holder that forks a child keeping the socket and exits (a server
    that daemonizes): brokerd no longer watches anybody, but the child is in
    the holder's cgroup, so the socket stays (orphan-wait) and serves; once
    the child is gone too, the socket is closed."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1, "--orphan-timeout", "1")
    srv, cg = cgroup_serve(8080, [PYTHON, "-c", FORKING_SERVER])
    wait_for(lambda: srv.popen.poll() is not None, 10, "the forking holder to exit")
    broker.wait_event("orphan-wait", timeout=10)
    st = status(broker)["tcp:[::]:8080"]
    assert st["bound"] is True and st["holders"] == 0 and st["holderless_since"] > 0, st
    assert fetch(8080) == "ok child\n"
    assert not broker.events("orphan-close")
    (cg / "cgroup.kill").write_text("1")
    broker.wait_event("orphan-close", timeout=15)
    assert status(broker)["tcp:[::]:8080"]["bound"] is False
    assert refused(8080)


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
