# SPDX-License-Identifier: MIT
"""Privilege separation: brokerd's worker, the process that reads clients'
messages and keeps the database, runs as user portbroker with no
capability, no_new_privs, a seccomp filter and not dumpable; its monitor
keeps every socket. A worker killed under load, or one that breaks the
monitor's message set (a compromised worker, played here by writing on its
channel), is replaced: no port is let go, no client refused, another uid
never binds the port meanwhile."""

import ctypes
import os
import pwd
import re
import signal
import socket
import struct
import time

import pytest

import rawproto
from conftest import Binder, Load, tcp_listener_inode, wait_for

pytestmark = pytest.mark.usefixtures("netns")

U1, U2 = 4242, 4343
PORT = 8080
SYS_PIDFD_GETFD = 438


def new_workers(broker):
    """How many times a new worker took over (after the first)."""
    return sum("a new worker" in l for l in broker.events("worker"))


def proc_status(pid):
    return dict(l.split(":", 1) for l in open(f"/proc/{pid}/status").read().splitlines())


def test_the_worker_runs_without_privilege(broker):
    worker = broker.worker_pid()
    assert worker, "brokerd has no worker"
    st = {k: v.strip() for k, v in proc_status(worker).items()}
    uid = str(pwd.getpwnam("portbroker").pw_uid)
    assert st["Uid"].split() == [uid] * 4 and st["Gid"].split()[0] == str(pwd.getpwnam("portbroker").pw_gid), st
    assert st["Groups"] == "", st
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[cap], 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
    # Not dumpable: its /proc files are root's, not its own uid's.
    assert os.stat(f"/proc/{worker}/environ").st_uid == 0
    # It holds nothing of the monitor's: no guard map, no cgroup, no bpffs directory.
    fds = [os.readlink(f"/proc/{worker}/fd/{fd}") for fd in os.listdir(f"/proc/{worker}/fd")]
    assert not [f for f in fds if "bpf" in f or "/sys/fs/cgroup" in f], fds
    # The database is the worker's.
    assert all(os.stat(p).st_uid == int(uid) for p in (broker.db, os.path.dirname(broker.db)))


@pytest.mark.expect_log(r"event=error: the worker was killed by signal 9")
def test_worker_killed_under_load_keeps_every_port(broker, procs):
    """kill -9 of the worker, three times, while clients connect all along
    and the server restarts each time: 0 refused, the port never free."""
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    srv = broker.serve(procs, PORT, uid=U1)
    srv.wait_ready()
    inode, monitor = tcp_listener_inode(PORT), broker.pid
    load = Load(procs, PORT, rate=500, duration=6)
    binder = Binder(procs, U2, PORT, duration=6)
    workers = {broker.worker_pid()}
    for i in range(1, 4):
        os.kill(broker.worker_pid(), 9)
        srv.kill9()
        # The restarted server asks for its socket while no worker serves:
        # its request waits in the control socket's backlog.
        srv = broker.serve(procs, PORT, uid=U1)
        srv.wait_ready()
        wait_for(lambda: new_workers(broker) >= i, 10, "a new worker to serve")
        workers.add(broker.worker_pid())
    res, bind = load.result(), binder.result()
    assert res["refused"] == 0 and res["timed_out"] == 0 and res["errors"] == 0, res
    assert res["lost"] <= 3 and res["ok"] > 0, res         # at most one in flight per server kill
    assert bind["tries"] > 0 and bind["wins"] == 0, bind
    assert tcp_listener_inode(PORT) == inode and broker.pid == monitor
    assert len(workers) == 4, workers
    st = broker.portctl("status", json=True).json
    assert [(x["endpoint"], x["bound"]) for x in st] == [(f"tcp:[::]:{PORT}", True)], st


def zombie(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False


@pytest.mark.expect_log(r"event=error: the worker was killed by signal 9")
def test_a_connection_accepted_as_the_worker_dies_waits_for_the_next(broker):
    """The monitor may accept a connection after its worker died and before
    it saw the exit (the channel to the worker already broken): that
    connection waits for the next worker and is answered, never closed
    unanswered. The monitor is stopped while the worker dies and the client
    connects and asks, so that it finds all of it at once."""
    for i in range(1, 6):
        worker = broker.worker_pid()
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda: zombie(worker), 10, "the worker to die")
            s = broker.raw(timeout=10)
            s.sendall(rawproto.msg(rawproto.STATUS, rawproto.STATUS_BODY))
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        kind, hdr, _ = rawproto.answer(s, timeout=20)
        s.close()
        assert kind == "reply" and hdr[2] == rawproto.STATUS | rawproto.REPLY, (i, kind, hdr)
        wait_for(lambda: new_workers(broker) >= i, 10, "a new worker to serve")


@pytest.mark.expect_log(r"event=error: the worker \(pid \d+\) no longer reads its connections; killing it",
                        r"event=error: the worker was killed by signal 9")
def test_a_worker_that_stops_reading_connections_is_replaced(broker):
    """A worker that shuts its event channel's reading side (what a
    compromised one could do) leaves the channel writable and broken: the
    monitor kills it rather than spin waiting for it to drain, and the next
    worker answers the connection that was waiting."""
    worker = broker.worker_pid()
    ev = worker_channel(broker, fd=4)
    os.kill(worker, signal.SIGSTOP)     # it reads nothing more, nor sees the shutdown
    ev.shutdown(socket.SHUT_RD)
    s = broker.raw(timeout=10)
    s.sendall(rawproto.msg(rawproto.STATUS, rawproto.STATUS_BODY))
    kind, hdr, _ = rawproto.answer(s, timeout=10)
    assert kind == "reply" and hdr[2] == rawproto.STATUS | rawproto.REPLY, (kind, hdr)
    assert broker.worker_pid() != worker
    ev.close()
    s.close()


def worker_channel(broker, fd=3):
    """A copy of the worker's request channel (fd 3; its event channel is
    fd 4), as a worker gone bad would use it."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(broker.worker_pid())
    try:
        fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        assert fd >= 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(pidfd)
    return socket.socket(fileno=fd)


def socket_request(lease_id, port):
    """PS_SOCKET for lease_id as tcp:[::]:port (privsep.c's encoding)."""
    endpoint = struct.pack("!BBHHH", 6, 0, port, port, 0) + bytes(16)
    return struct.pack("!BQ", 6, lease_id) + endpoint


BAD_REQUESTS = {
    "malformed": (b"\x06\x00\x01", "sent a malformed request"),
    "out-of-turn": (struct.pack("!BI", 1, 1), "sent hello out of turn"),
    "another-endpoint": (socket_request(1, 9999), "asked for lease 1 as tcp:[::]:9999; it is tcp:[::]:8080"),
    "unknown-type": (b"\x7f", "sent a malformed request"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_worker_breaking_the_message_set_is_replaced(broker, procs, expect_log, case):
    """What a compromised worker could send: the monitor takes it for what
    it is, kills it and starts another, and gives nothing out."""
    data, why = BAD_REQUESTS[case]
    expect_log([r"event=error: the worker \(pid \d+\) " + re.escape(why) + r".*killing it",
                r"event=error: the worker was killed by signal 9"])
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    broker.portctl("get", PORT, uid=U1)
    inode, worker = tcp_listener_inode(PORT), broker.worker_pid()
    with worker_channel(broker) as ch:
        ch.send(data)
    wait_for(lambda: new_workers(broker) >= 1, 10, "a new worker to serve")
    assert broker.worker_pid() != worker
    assert any(why in l for l in broker.events("error")), broker.log()
    assert tcp_listener_inode(PORT) == inode
    broker.portctl("get", PORT, uid=U1)
    assert tcp_listener_inode(PORT) == inode


def test_a_database_from_before_the_split_is_handed_to_the_worker(make_broker):
    """A database root's brokerd kept becomes the worker's at start."""
    broker = make_broker()
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    broker.stop()
    db_dir = os.path.dirname(broker.db)
    for p in [db_dir] + [os.path.join(db_dir, f) for f in os.listdir(db_dir)]:
        os.chown(p, 0, 0)
    broker.start()
    uid = pwd.getpwnam("portbroker").pw_uid
    assert all(os.stat(os.path.join(db_dir, f)).st_uid == uid for f in os.listdir(db_dir))
    assert os.stat(db_dir).st_uid == uid
    assert [r["pattern"] for r in broker.portctl("policy", "list", json=True).json] == [f"tcp:{PORT}"]
