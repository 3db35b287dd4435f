# SPDX-License-Identifier: MIT
"""`portctl admin reexec`: brokerd executes its binary again (an upgrade
installed at its path since it started), carrying every lease's socket, the
control socket and every open control connection across exec().

  * Under a bounded loopback load, with the server killed meanwhile and
    another uid trying to bind the port throughout: 0 refused, 0 timed out,
    the same listening socket, the same pid, no foreign bind.
  * A control connection opened before the re-exec is answered after it.
  * The binary at the path, replaced since (a new inode), is what runs.
  * Only admins may ask; a binary that does not start leaves the old
    brokerd serving and says why.
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time

import pytest

from conftest import BROKERD, Binder, Load, tcp_listener_inode, wait_for

pytestmark = pytest.mark.usefixtures("netns")

REEXEC_UNDER_VALGRIND = "under valgrind the re-executed image is valgrind's binary (/proc/PID/exe, the --check child)"

U1, U2 = 4242, 4343
PORT = 8080


def reexec(broker, **kw):
    return broker.portctl("admin", "reexec", json=True, **kw)


def broker_of_own_binary(make_broker, workdir):
    """A brokerd run from a copy of the binary that the test may replace,
    holding tcp:PORT. Returns (broker, the binary's path)."""
    binary = workdir / "sbin" / "brokerd"
    binary.parent.mkdir()
    shutil.copy(BROKERD, binary)
    broker = make_broker(binary=str(binary))
    broker.portctl("get", PORT)
    return broker, binary


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
def test_reexec_keeps_every_port_under_load(broker, procs):
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    broker.portctl("get", "udp:5353")
    srv = broker.serve(procs, PORT, uid=U1)
    srv.wait_ready()
    inode, pid = tcp_listener_inode(PORT), broker.pid
    early = broker.raw()                        # a control connection from before the re-exec
    load = Load(procs, PORT, rate=500, duration=4)
    binder = Binder(procs, U2, PORT, duration=4)
    time.sleep(1)                               # a schedule: the load runs before and after
    srv.kill9()
    out = reexec(broker).json
    assert out["pid"] == pid and out["version"], out
    srv = broker.serve(procs, PORT, uid=U1)
    srv.wait_ready()
    res, bind = load.result(), binder.result()
    assert res["refused"] == 0 and res["timed_out"] == 0 and res["errors"] == 0, res
    assert res["lost"] <= 1 and res["ok"] > 0, res
    assert bind["tries"] > 0 and bind["wins"] == 0, bind
    assert tcp_listener_inode(PORT) == inode
    assert broker.proc.poll() is None and broker.pid == pid
    st = {x["endpoint"]: x for x in broker.portctl("status", json=True).json}
    assert st[f"tcp:[::]:{PORT}"]["bound"] and st["udp:[::]:5353"]["bound"], st
    assert len(broker.events("keep")) == 2 and broker.events("reexec"), broker.log()
    # The early connection is served by the new image.
    early.sendall(bytes.fromhex("0000003100020003000000090000000000") + bytes(32))
    reply = early.recv(4096)
    assert reply[6:8] == b"\x80\x03" and reply[8:12] == b"\x00\x00\x00\x09", reply.hex()
    early.close()


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
def test_reexec_runs_the_binary_installed_since(make_broker, workdir):
    broker, binary = broker_of_own_binary(make_broker, workdir)
    # An upgrade: a new file at the same path; the running image is the old inode.
    binary.unlink()
    shutil.copy(BROKERD, binary)
    assert os.readlink(f"/proc/{broker.pid}/exe").endswith(" (deleted)")
    reexec(broker)
    assert os.readlink(f"/proc/{broker.pid}/exe") == str(binary)
    assert os.stat(f"/proc/{broker.pid}/exe").st_ino == binary.stat().st_ino
    broker.portctl("get", PORT)


def test_reexec_is_for_admins_only(broker):
    r = broker.portctl("admin", "reexec", uid=U1, check=1)
    assert "permission denied" in r.stderr or "admin" in r.stderr, r.stderr
    assert not broker.events("reexec")


def test_reexec_with_request_id_0_is_refused(broker):
    """The new image answers REEXEC by its request id, 0 meaning "none" on
    the way: such a request is refused at once (it went unanswered, found
    by fuzz_conn), and nothing is executed."""
    s = broker.raw(timeout=10)
    s.sendall(reexec_req(0))
    data = s.recv(4096)
    assert reply_type(data) == 0xFFFF and b"request id other than 0" in data, data
    assert not broker.events("reexec"), broker.log()
    s.close()


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
def test_a_request_queued_behind_reexec_is_answered_by_the_new_image(broker):
    """A client that sends its next request right behind REEXEC, both
    queued before brokerd read either (its monitor is stopped meanwhile):
    the request behind goes across with the connection, unread, and the new
    image answers both, in order."""
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        s = broker.raw(timeout=10)
        s.sendall(reexec_req(1))
        s.sendall(STATUS_REQ)
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    assert reply_type(s.recv(4096)) == 0x8007
    assert reply_type(s.recv(4096)) == 0x8003
    s.close()


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
def test_reexec_carries_connections_queued_for_the_worker(make_broker):
    """Connections the monitor passed that the worker has not read yet go
    across too: 120 queued behind an admin's REEXEC (the worker stopped
    meanwhile), with --max-connections 16. The monitor bounds what a worker
    may carry by what the event channel can hold, not by twice the
    connection limit (which killed the worker mid-way and lost the
    re-execution): the new image runs, and answers each connection, past
    its limit with the error that says so."""
    broker = make_broker("--max-connections", "16")
    worker = broker.worker_pid()
    os.kill(worker, signal.SIGSTOP)
    try:
        asker = broker.raw(timeout=20)
        asker.sendall(reexec_req(1))
        queued = [broker.raw(timeout=20) for _ in range(120)]
        wait_for(lambda: accept_queue(broker.control) == 0, 10, "the monitor to pass every connection")
    finally:
        os.kill(worker, signal.SIGCONT)
    assert reply_type(asker.recv(4096)) == 0x8007
    # The new image keeps what its limit allows and refuses the rest, with an error each.
    wait_for(lambda: broker.connections() == 16, 10, "the new image to take the connections in")
    answers = {}
    for conn in queued:
        conn.settimeout(0)
        try:
            t = reply_type(conn.recv(4096))     # refused: its error is there already
        except BlockingIOError:
            conn.settimeout(20)
            conn.sendall(STATUS_REQ)
            t = reply_type(conn.recv(4096))
        answers[t] = answers.get(t, 0) + 1
    assert answers == {0x8003: 15, 0xFFFF: 105}, answers
    assert len(broker.events("reexec")) == 1 and broker.events("inherit"), broker.log()
    assert "121 connections carried over" in broker.events("inherit")[0], broker.log()
    for conn in (asker, *queued):
        conn.close()
    wait_for(lambda: broker.connections() == 0, 10, "brokerd to close the connections")


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
@pytest.mark.expect_log(r"event=error .*re-execution refused")
def test_a_binary_that_does_not_start_leaves_brokerd_serving(make_broker, workdir):
    broker, binary = broker_of_own_binary(make_broker, workdir)
    inode, pid = tcp_listener_inode(PORT), broker.pid

    binary.unlink()
    binary.write_text("#!/bin/sh\nexit 3\n")
    binary.chmod(0o755)
    r = broker.portctl("admin", "reexec", check=1)
    assert "--check failed (exit status 3)" in r.stderr and "keeps serving" in r.stderr, r.stderr

    binary.unlink()
    r = broker.portctl("admin", "reexec", check=1)
    assert "No such file" in r.stderr and "keeps serving" in r.stderr, r.stderr

    assert broker.pid == pid and broker.proc.poll() is None
    assert tcp_listener_inode(PORT) == inode
    broker.portctl("get", PORT)
    assert json.loads(broker.portctl("status", json=True).stdout)[0]["bound"]


HDR = struct.Struct("!IHHII")                   # length, version, type, id, reserved
STATUS_REQ = HDR.pack(16 + 33, 2, 3, 9, 0) + bytes(33)


def accept_queue(path):
    """Connections waiting to be accepted on the listening socket at path
    (ss's Recv-Q; bound under a temporary name renamed to path, see
    Broker.connections)."""
    for line in subprocess.run(["ss", "-xlnH"], capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        if len(f) >= 5 and (f[4] == path or f[4].startswith(path + ".")):
            return int(f[2])
    raise AssertionError(f"no listening socket at {path}")


def reexec_req(mid):
    return HDR.pack(16, 2, 7, mid, 0)


def reply_type(data):
    return HDR.unpack(data[:16])[2]


# Connects to the control socket, asks once (so brokerd has identified it
# while it lives), hands the connection to its parent over the socketpair
# fd argv[2] and exits: the connection outlives its process.
HAND_OVER = r"""
import array, socket, sys
c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
c.connect(sys.argv[1])
c.sendall(bytes.fromhex(sys.argv[3]))
assert c.recv(4096)[6:8] == b"\x80\x03"
p = socket.socket(fileno=int(sys.argv[2]))
p.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [c.fileno()]))])
"""


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
def test_connections_keep_their_identity_across_reexec(broker):
    """A connection whose process exited before the re-exec is served after
    it (its identity is the one read at accept, carried over, not read again
    by a pid that is gone); two admins asking at once both get an answer and
    an idle third connection still works."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    subprocess.run([sys.executable, "-c", HAND_OVER, broker.control, str(child.fileno()), STATUS_REQ.hex()],
                   pass_fds=[child.fileno()], check=True, timeout=20, stdin=subprocess.DEVNULL)
    _, fds, _, _ = socket.recv_fds(parent, 16, 1)
    orphan = socket.socket(fileno=fds[0])
    orphan.settimeout(10)
    idle, a, b = broker.raw(timeout=10), broker.raw(timeout=10), broker.raw(timeout=10)

    a.sendall(reexec_req(1))
    b.sendall(reexec_req(2))
    assert reply_type(a.recv(4096)) == 0x8007
    assert reply_type(b.recv(4096)) == 0x8007
    for conn in (orphan, idle):
        conn.sendall(STATUS_REQ)
        assert reply_type(conn.recv(4096)) == 0x8003
    assert len(broker.events("reexec")) == 2, broker.log()
    for conn in (orphan, idle, a, b, parent, child):
        conn.close()


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
@pytest.mark.expect_log(r"event=error .*re-execution refused")
def test_reexec_refused_when_the_database_is_too_new_for_the_binary(broker):
    """A downgrade: the binary at the path cannot use the database, so
    --check fails before exec() and the running brokerd keeps serving."""
    broker.portctl("get", PORT)
    db = sqlite3.connect(broker.db)
    (version,) = db.execute("PRAGMA user_version").fetchone()
    db.execute("PRAGMA user_version = 99")
    db.commit()
    r = broker.portctl("admin", "reexec", check=1)
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()
    assert "--check failed" in r.stderr and "keeps serving" in r.stderr, r.stderr
    broker.portctl("get", PORT)
