# SPDX-License-Identifier: MIT
"""What a hostile or careless peer must not achieve: a socket taken back
at start that was never the lease's, a broker with only the capabilities
its unit grants refusing everyone, a holder opening a UDP lease to others,
one uid taking every control connection; and holders counted until they
exit."""

import errno
import os
import pwd
import socket
import sqlite3
import subprocess
import sys

import pytest

from conftest import PORTCTL, as_user, child_env, try_bind, wait_for

pytestmark = pytest.mark.usefixtures("netns")

U1, U2 = 4242, 4343


@pytest.mark.expect_log(r"event=error endpoint=tcp:\[::\]:8083 .*cannot bind lease 1 again: Address already in use",
                        r"event=error endpoint=tcp:\[::\]:8083 .*cannot bind tcp:\[::\]:8083 again: Address already in use")
def test_foreign_root_socket_is_not_taken(make_broker, procs):
    """A lease's port taken meanwhile by an unrelated root listener: at start
    brokerd must not hand that listener to the lease owner (brokerd never
    takes a socket from another process), and takes the port once that
    listener is gone. Only without the bind guard (--no-guard, or a kernel
    that refuses BPF) can anyone take it meanwhile: test_guard.py shows the
    guard refusing it."""
    broker = make_broker("--no-guard")
    broker.portctl("policy", "add", "tcp:8083", "--user", U1)
    broker.portctl("get", "8083", uid=U1)
    broker.stop()
    other = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    other.bind(("::", 8083))
    other.listen()
    broker.start()
    st = broker.portctl("status", "8083", json=True).json
    assert st[0]["bound"] is False, st
    # Ready all the same, and the unbound lease is said: in the ready line, an error event and an audit row.
    assert any("1 leases are not bound yet" in l for l in broker.events("ready")), broker.log()
    assert any("cannot bind lease" in l and "[::]:8083" in l for l in broker.events("error")), broker.log()
    broker.stop()
    with sqlite3.connect(broker.db) as db:
        rows = db.execute("SELECT endpoint, detail FROM events WHERE event = 'rebind-failed'").fetchall()
    assert rows == [("tcp:[::]:8083", "Address already in use")], rows
    broker.start()
    r = broker.portctl("get", "8083", uid=U1, check=1)
    assert "Address already in use" in r.stderr
    other.close()
    wait_for(lambda: broker.portctl("status", "8083", json=True).json[0]["bound"], 5,
             "brokerd to bind 8083 once the other listener closed")
    assert try_bind(8083) == errno.EADDRINUSE


def test_broker_without_cap_kill_serves_other_uids(make_broker):
    """portbrokerd.service runs brokerd as user portbroker with ambient
    CAP_NET_BIND_SERVICE and CAP_SYS_PTRACE (and the guard's two): its
    monitor identifies peers of other uids without CAP_KILL, its worker
    runs with none at all."""
    pw = pwd.getpwnam("portbroker")
    broker = make_broker(start=False, wrapper=[
        "setpriv", "--reuid", str(pw.pw_uid), "--regid", str(pw.pw_gid), "--clear-groups",
        "--bounding-set", "-all,+net_bind_service,+sys_ptrace", "--inh-caps", "-all,+net_bind_service,+sys_ptrace",
        "--ambient-caps", "-all,+net_bind_service,+sys_ptrace"])
    os.chown(broker.dir, pw.pw_uid, pw.pw_gid)      # its state is its own, as the unit's is
    broker.start()
    status = open(f"/proc/{broker.pid}/status").read()
    assert "CapBnd:\t0000000000080400" in status, status     # NET_BIND_SERVICE (10) + SYS_PTRACE (19)
    assert "CapEff:\t0000000000080400" in status, status
    worker = open(f"/proc/{broker.worker_pid()}/status").read()
    assert "CapEff:\t0000000000000000" in worker and "CapPrm:\t0000000000000000" in worker, worker
    # Without CAP_BPF and CAP_NET_ADMIN the bind guard is off, and it says why, once.
    assert [l for l in broker.events("guard") if "needs CAP_BPF and CAP_NET_ADMIN" in l], broker.log()
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    broker.portctl("get", "8080", uid=U1)
    broker.portctl("status", uid=U2)


def test_holder_cannot_open_udp_lease_to_others(broker, procs):
    """A holder setting SO_REUSEADDR on the shared UDP socket would let any
    uid bind the port too; brokerd clears it before every hand-out."""
    broker.portctl("policy", "add", "udp:5353", "--user", U1)
    script = ("import socket; s = socket.socket(fileno=3); "
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.detach()")
    broker.portctl("get", "udp:5353", "--", sys.executable, "-c", script, uid=U1)
    check = ("import socket; s = socket.socket(fileno=3); "
             "print(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), "
             "s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)); s.detach()")
    r = broker.portctl("get", "udp:5353", "--", sys.executable, "-c", check, uid=U1)
    assert r.stdout.split() == ["0", "0"], r
    assert try_bind(5353, proto="udp", reuseaddr=True) == errno.EADDRINUSE


CONNECT_MANY = """
import socket, sys
path, n = sys.argv[1], int(sys.argv[2])
held = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(path)
    held.append(s)
last = held[-1]
last.settimeout(5)
data = last.recv(4096)       # refused connections get one error reply, then EOF
print(data[20:].decode(errors="replace") if data else "no reply")
"""


def test_one_uid_cannot_take_every_connection(make_broker):
    broker = make_broker("--max-connections-per-user", 3)
    argv = as_user(U1) + [sys.executable, "-c", CONNECT_MANY, broker.control, "4"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=child_env())
    assert r.returncode == 0, r.stderr
    assert "uid 4242 already has 3 connections" in r.stdout, r.stdout
    assert broker.events("conn-limit"), broker.log()
    # Other uids, and admins, are served meanwhile.
    broker.portctl("status", uid=U2)
    broker.portctl("status")


def test_holders_counted_until_they_exit(broker, procs):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    srv = broker.serve(procs, "8080", uid=U1)
    srv.wait_ready()
    st = broker.portctl("status", "8080", json=True).json
    assert st[0]["holders"] == 1, st
    srv.kill9()
    wait_for(lambda: broker.portctl("status", "8080", json=True).json[0]["holders"] == 0, 5,
             "holders to drop to 0 once the server exited")
    # The watch on the holder is gone with it: no fd kept for a dead process
    # (the one pidfd left is the monitor's on its worker).
    wait_for(lambda: [p for p in broker.fd_census()[1] if p != broker.worker_pid()] == [], 5,
             "brokerd to close the holder's pidfd")


def test_one_pidfd_per_holder_however_many_leases(broker, procs):
    """A server holding 40 leases is one process to watch: brokerd keeps one
    pidfd for it, not one per lease (10,000 leases held by one server once
    cost 10,000 pidfds and took brokerd's worker past its fd limit)."""
    ports = range(9000, 9040)
    broker.portctl("policy", "add", "tcp:9000-9039", "--user", U1)
    srv = broker.serve(procs, list(ports), uid=U1)
    pid = srv.wait_ready()
    st = broker.portctl("status", json=True).json
    assert len(st) == 40 and all(l["holders"] == 1 for l in st), st
    assert broker.fd_census()[1].count(pid) == 1, broker.fd_census()
    srv.kill9()
    wait_for(lambda: all(l["holders"] == 0 for l in broker.portctl("status", json=True).json), 5,
             "holders to drop to 0 once the server exited")
    wait_for(lambda: pid not in broker.fd_census()[1], 5, "brokerd to close the holder's pidfd")


def test_holders_cannot_exhaust_brokerds_fds(make_broker, procs):
    """Another uid's 200 processes, four on each of its 50 leases, would
    have the worker watch 200 pidfds beside its 50 sockets: past a 220-fd
    limit, where it could no longer take a socket or a connection from the
    monitor. brokerd watches only as many holders as its fd limit spares
    (220 - 51 leases - 16 connections - 64 in reserve = 89): every get is
    served, the worker never restarts, and root is served after."""
    broker = make_broker("--max-leases", "51", "--max-connections", "16", "--max-connections-per-user", "16",
                         "--max-leases-per-user", "50", wrapper=["prlimit", "--nofile=220:220"])
    worker = broker.worker_pid()
    broker.portctl("policy", "add", "tcp:9000-9049", "--user", U1)
    servers = []
    for i in range(200):
        servers.append(broker.serve(procs, 9000 + i % 50, uid=U1, name=f"holder{i}"))
        if len(servers) % 10 == 0:          # within the connection limits: ten at a time
            for s in servers[-10:]:
                s.wait_ready()
    st = broker.portctl("status", json=True).json
    holders = sum(l["holders"] for l in st)
    assert len(st) == 50 and 1 <= holders <= 89, st
    assert broker.worker_pid() == worker, broker.log()
    kinds, pids = broker.fd_census()
    assert len(broker.holder_pids(pids)) == holders, (kinds, holders)
    broker.portctl("policy", "add", "tcp:9100", "--user", "0")
    broker.portctl("get", "9100")
    for s in servers:
        s.kill9()
    wait_for(lambda: not broker.holder_pids(broker.fd_census()[1]), 30, "brokerd to close the holders' pidfds")
    assert broker.worker_pid() == worker, broker.log()


def test_holders_cannot_exhaust_fds_when_the_database_has_more_leases(make_broker, procs):
    """An admin lowered --max-leases below the leases the database has:
    the worker holds all 150 of them, and counts them, not the flag, when
    it works out how many holders its 220 fds leave room for (none here,
    and it says so). 120 holders later it still serves, never restarted."""
    broker = make_broker("--max-leases", "200", "--max-leases-per-user", "200")
    broker.portctl("policy", "add", "tcp:9000-9199", "--user", U1)
    ports = [f"tcp:127.0.0.1:{9000 + i}" for i in range(150)]
    for i in range(0, 150, 50):
        broker.portctl("get", *ports[i:i + 50], uid=U1)
    broker.stop()
    broker.args += ["--max-leases", "51", "--max-leases-per-user", "50", "--max-connections", "16",
                    "--max-connections-per-user", "16"]     # the last of each flag counts
    broker.wrapper = ["prlimit", "--nofile=220:220"]
    broker.start()
    worker = broker.worker_pid()
    assert [l for l in broker.events("fd-limit") if "room to watch 0 holders beside 150 leases" in l], broker.log()
    servers = []
    for i in range(120):
        servers.append(broker.serve(procs, ports[i], uid=U1, name=f"holder{i}"))
        if len(servers) % 10 == 0:
            for s in servers[-10:]:
                s.wait_ready()
    assert broker.worker_pid() == worker, broker.log()
    broker.portctl("status")
    for s in servers:
        s.kill9()


def systemd_cgroup_root():
    """Where libsystemd reads a process's unit from: the "0::" (cgroup2)
    hierarchy, at /sys/fs/cgroup/unified on a hybrid layout, else /sys/fs/cgroup."""
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(root, "cgroup.controllers")) and os.access(root, os.W_OK):
            return root
    return None


@pytest.fixture
def unit_cgroups():
    root = systemd_cgroup_root()
    if not root:
        pytest.skip("no writable systemd cgroup hierarchy to place a client in a unit")
    made = []

    def make(path):
        full = os.path.join(root, path.strip("/"))
        os.makedirs(full, exist_ok=True)
        made.append(full)
        return full

    yield make
    for full in reversed(made):
        try:
            with open(os.path.join(full, "cgroup.procs")) as f:
                for pid in f.read().split():
                    with open(os.path.join(root, "cgroup.procs"), "w") as back:
                        back.write(pid)
        except OSError:
            pass
    for full in sorted(made, key=len, reverse=True):
        while full != root:                     # the leaf, then parents left empty
            try:
                os.rmdir(full)
            except OSError:
                break
            full = os.path.dirname(full)


def test_unit_rule_matches_cgroup_path_only(broker, unit_cgroups):
    """A unit rule matches a peer whose cgroup path puts it in that unit, and
    not one that named a sub-cgroup after it inside another unit's subtree."""
    svc = unit_cgroups("system.slice/pbtest-web.service")
    fake = unit_cgroups("system.slice/pbtest-other.service/pbtest-web.service")
    broker.portctl("policy", "add", "tcp:8085", "--unit", "pbtest-web.service")

    def get_in(cgroup):
        argv = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh",
                *as_user(U1), PORTCTL, "--socket", broker.control, "get", "8085"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, env=child_env())

    r = broker.portctl("get", "8085", uid=U1, check=1)          # not in the unit
    assert "no rule" in r.stderr
    r = get_in(fake)                                              # a delegated subtree's lookalike
    assert r.returncode == 1 and "no rule" in r.stderr, r
    r = get_in(svc)
    assert r.returncode == 0, r.stderr
    st = broker.portctl("status", "8085", json=True).json
    assert st[0]["owner_uid"] == U1, st


@pytest.mark.expect_log(r"cannot write audit events: .*; \d+ kept, tried again in 1 s")
def test_a_failed_audit_flush_is_tried_again(broker):
    """The database refuses the audit rows for a while (a trigger here; a
    full disk or a lock in life): they are kept and written once it takes
    them again, with no new event needed to bring that about."""
    broker.portctl("get", "tcp:9990")                  # created: its audit rows are in
    wait_for(lambda: broker.events("grant") and broker.portctl("status", json=True).json, 10, "the lease")
    db = sqlite3.connect(broker.db, timeout=10)
    with db:
        db.execute("CREATE TRIGGER no_events BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'refused'); END")
    broker.portctl("get", "tcp:9990")                  # a repeat get: an audit row only, queued
    wait_for(lambda: "cannot write audit events" in broker.log(), 10, "a failed audit flush")
    with db:
        db.execute("DROP TRIGGER no_events")
    wait_for(lambda: db.execute("SELECT count(*) FROM events WHERE event = 'grant' AND endpoint = 'tcp:[::]:9990'")
             .fetchone()[0] == 2, 10, "both grants in the audit trail")
    db.close()
