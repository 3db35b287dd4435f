# SPDX-License-Identifier: MIT
"""The servers in examples/ work as their README says, run as a non-root uid
that a rule allows tcp:8080:

  * c-server (libportbroker's pb_get, built into build/examples/): answers
    "ok c-server PID" on 127.0.0.1 and ::1; SIGKILLed and restarted it gets
    the same socket back and answers a client that connected while it was
    down; without a rule it exits 1 with one line naming the denial.
  * listenfds-server.py and listenfds-server.sh under `portctl get 8080 --`
    (socket activation, fd 3): each answers its line; started without
    LISTEN_FDS (or with a LISTEN_PID that is not its own) each exits 1 with
    one line saying how to run it.
"""

import os
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import BUILD, ROOT, as_user, child_env, fetch, need, wait_for

pytestmark = pytest.mark.usefixtures("netns")

U1, U2 = 4242, 4343
PORT = 8080
# PB_EXAMPLES: a copy other uids can reach (tests/run-integration.sh), as PB_BUILD.
EXAMPLES = Path(os.environ.get("PB_EXAMPLES", ROOT / "examples"))
C_SERVER = BUILD / "examples" / "c-server"


def reply_when_up(port=PORT, addr="127.0.0.1", timeout=10.0):
    """The first reply on addr:port, retrying while the port is refused (no lease yet)."""
    def attempt():
        try:
            return fetch(port, addr)
        except ConnectionRefusedError:
            return None
    return wait_for(attempt, timeout, f"a reply on {addr}:{port}", interval=0.02)


def test_c_server_replies_and_keeps_its_socket_across_kill9(broker, procs):
    need(C_SERVER)
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    env = child_env(PORTBROKER_SOCKET=broker.control)
    srv = procs.spawn([C_SERVER, PORT], uid=U1, env=env, name="c-server")
    assert reply_when_up() == f"ok c-server {srv.pid}\n"
    assert fetch(PORT, "::1") == f"ok c-server {srv.pid}\n"
    st = broker.portctl("status", PORT, json=True).json[0]
    assert st["owner_uid"] == U1 and st["endpoint"] == f"tcp:[::]:{PORT}", st

    # While no server runs, a client connects: it waits in the broker's
    # backlog and the restarted server answers it.
    srv.kill9()
    got = {}
    waiting = threading.Thread(target=lambda: got.setdefault("reply", fetch(PORT, timeout=10)))
    waiting.start()
    wait_for(lambda: broker.portctl("status", PORT, json=True).json[0]["queued"] >= 1, 10,
             "the client to be queued in the broker's backlog")
    again = procs.spawn([C_SERVER, f"tcp:[::]:{PORT}"], uid=U1, env=env, name="c-server")
    waiting.join(15)
    assert got.get("reply") == f"ok c-server {again.pid}\n", got
    assert "serving" in again.stderr()


def test_c_server_denied_says_why(broker, procs):
    need(C_SERVER)
    cp = subprocess.run(as_user(U2) + [str(C_SERVER), str(PORT)], capture_output=True, text=True,
                        timeout=20, env=child_env(PORTBROKER_SOCKET=broker.control))
    assert cp.returncode == 1, cp
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"c-server: cannot get {PORT} from brokerd at "
                                                    f"{broker.control}: "), cp.stderr
    assert lines[0].endswith(f"no rule lets uid {U2} get tcp:[::]:{PORT}"), cp.stderr
    assert "no lease" in broker.portctl("status", PORT, check=1).stderr

    cp = subprocess.run(as_user(U1) + [str(C_SERVER), str(PORT)], capture_output=True, text=True,
                        timeout=20, env=child_env(PORTBROKER_SOCKET=str(broker.dir / "nonexistent")))
    assert cp.returncode == 1 and cp.stderr.count("\n") == 1 and "c-server: cannot get" in cp.stderr, cp


@pytest.mark.parametrize("script", ["listenfds-server.py", "listenfds-server.sh"])
def test_listenfds_example_replies(broker, procs, script):
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    srv = broker.serve(procs, PORT, uid=U1, cmd=[EXAMPLES / script], name=script)
    first = reply_when_up()
    assert first.startswith(f"ok {script} ") and first.endswith("\n"), first
    assert fetch(PORT, "::1").startswith(f"ok {script} ")
    if script.endswith(".py"):
        assert first == f"ok {script} {srv.pid}\n"      # one process serves every connection
    # Restarted after SIGKILL, it serves the same socket again.
    srv.kill9()
    srv = broker.serve(procs, PORT, uid=U1, cmd=[EXAMPLES / script], name=script)
    assert reply_when_up().startswith(f"ok {script} ")
    assert srv.alive()
    st = broker.portctl("status", PORT, json=True).json[0]
    assert st["owner_uid"] == U1 and st["handouts"] == 2, st           # one get per server start


@pytest.mark.parametrize("script", ["listenfds-server.py", "listenfds-server.sh"])
def test_listenfds_example_without_a_socket_says_how_to_run_it(script, scratch):
    for env in (child_env(), child_env(LISTEN_FDS=1, LISTEN_PID=1)):
        cp = subprocess.run(as_user(U1) + [str(EXAMPLES / script)], capture_output=True, text=True,
                            timeout=20, env=env, stdin=subprocess.DEVNULL)
        assert cp.returncode == 1, cp
        lines = cp.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{script}: no socket passed") and \
            "portctl get 8080 --" in lines[0], cp.stderr
