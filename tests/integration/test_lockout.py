# SPDX-License-Identifier: MIT
"""No lock-out: no set of non-admin peers keeps an admin or a new peer from
being served within a second, with default flags. Ten uids at their
per-uid cap, flooding the table and reconnecting as they are evicted; eight
uids of one user's subordinate range (a user namespace it owns), which
count as that user; the longest-idle connection is the one evicted; a
denied request is no activity; a peer in doubt is closed after its error;
no connection outlives --max-connection-age."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import as_user, child_env, read_line, wait_for
from rawproto import GET, STATUS, STATUS_BODY, answer, check_error_reply, endpoint, msg

pytestmark = pytest.mark.usefixtures("netns")

U1, U2 = 4242, 4343
HOGS = range(5000, 5010)                # ten uids
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def libdir(workdir):
    """A directory with rawproto.py that the other uids' scripts can import
    (the tree itself may be under a 0700 /root)."""
    d = workdir / "lib"
    d.mkdir(mode=0o755, exist_ok=True)
    shutil.copy(os.path.join(HERE, "rawproto.py"), d)
    (d / "rawproto.py").chmod(0o644)
    return str(d)

# Holds N control connections for SECONDS, opening a new one whenever
# brokerd closes one (evicted, or refused), at most one per 2 ms and
# MAX_RECONNECTS in all. Prints "ready" once the first N are open, then
# {"evicted": ..., "refused": ..., "reconnects": ...}.
HOG = r"""
import json, select, socket, sys, time
path, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
MAX_RECONNECTS = 3000

def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    s.setblocking(False)
    return s

held = [connect() for _ in range(n)]
print("ready", flush=True)
stats = {"evicted": 0, "refused": 0, "reconnects": 0}
deadline = time.monotonic() + seconds
while time.monotonic() < deadline and stats["reconnects"] < MAX_RECONNECTS:
    ready, _, _ = select.select(held, [], [], 0.05)
    for s in ready:
        try:
            data = s.recv(8192)
        except ConnectionResetError:
            data = b""
        stats["refused" if data else "evicted"] += 1
        held.remove(s)
        s.close()
        time.sleep(0.002)               # pacing the flood, not waiting on a condition
        held.append(connect())
        stats["reconnects"] += 1
print(json.dumps(stats), flush=True)
"""


def served_within(seconds, fn):
    """Runs fn and asserts it took less than seconds."""
    t = time.monotonic()
    fn()
    took = time.monotonic() - t
    assert took < seconds, f"served after {took:.2f} s"
    return took


def test_ten_uids_at_their_cap_lock_out_no_one(make_broker):
    broker = make_broker()                                   # default flags: 256 connections, 32 per uid
    broker.portctl("policy", "add", "tcp:8080", "--user", U2)
    hogs = [subprocess.Popen(as_user(uid) + [sys.executable, "-c", HOG, broker.control, "32", "8"],
                             stdout=subprocess.PIPE, text=True, env=child_env()) for uid in HOGS]
    try:
        for h in hogs:
            assert read_line(h.stdout, 10, "a hog's 32 connections") == "ready"
        # 320 wanted, 240 for non-admins: the table is full, and the hogs evict each other.
        wait_for(lambda: broker.events("conn-evict"), 10, "brokerd to evict a connection")
        for _ in range(3):
            served_within(1.0, lambda: broker.portctl("status", timeout=5))
            served_within(1.0, lambda: broker.portctl("get", "8080", uid=U2, timeout=5))
            served_within(1.0, lambda: broker.portctl("status", uid=U1, timeout=5))
        stats = [json.loads(h.communicate(timeout=30)[0].splitlines()[-1]) for h in hogs]
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert sum(s["evicted"] for s in stats) > 0, stats
    assert sum(s["refused"] for s in stats) == 0, stats      # nobody went over its own cap


# Run as root: makes a user namespace owned by OWNER with its uids 0..N-1
# mapped to 100000..; in it, each of those uids opens PER connections to
# brokerd and prints "open". Once stdin closes, each sends a STATUS request
# on the connections brokerd kept and prints what it saw as JSON.
USERNS_HOGS = r"""
import ctypes, json, os, socket, sys
sys.path.insert(0, sys.argv[5])
from rawproto import STATUS, STATUS_BODY, answer, check_error_reply, msg
path, owner, n, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setgroups([])
    os.setresgid(owner, owner, owner)
    os.setresuid(owner, owner, owner)
    ok = libc.unshare(0x10000000) == 0                 # CLONE_NEWUSER
    os.write(ready_w, b"m" if ok else b"n")
    os.read(go_r, 1)                                   # mapped
    kids = []
    for k in range(n):
        kid = os.fork()
        if kid == 0:
            os.setresgid(k, k, k)
            os.setresuid(k, k, k)
            held = []
            for _ in range(per):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                s.connect(path)
                held.append(s)
            os.write(1, b"open\n")
            sys.stdin.read()                           # until the test says go
            seen = {"refused": [], "denied": [], "closed_after": 0, "other": []}
            for s in held:
                kind, hdr, data = answer(s, timeout=0.2)
                if kind == "reply":                    # refused at accept
                    seen["refused"].append(check_error_reply(hdr, data)[1])
                    continue
                if kind != "silent":
                    seen["other"].append(kind)
                    continue
                s.send(msg(STATUS, STATUS_BODY))
                kind, hdr, data = answer(s)
                seen["denied"].append(check_error_reply(hdr, data)[1] if kind == "reply" else kind)
                seen["closed_after"] += answer(s)[0] == "closed"
            os.write(1, (json.dumps(seen) + "\n").encode())
            os._exit(0)
        kids.append(kid)
    for kid in kids:
        os.waitpid(kid, 0)
    os._exit(0)
assert os.read(ready_r, 1) == b"m", "cannot make a user namespace"
for f in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{f}", "w") as m:
        m.write(f"0 100000 {n}\n")
os.write(go_w, b"g")
os.waitpid(pid, 0)
"""


def test_subordinate_uids_count_as_their_owner(make_broker, libdir):
    broker = make_broker()
    broker.portctl("policy", "add", "tcp:8080", "--user", U2)
    base = broker.connections()
    hogs = subprocess.Popen([sys.executable, "-c", USERNS_HOGS, broker.control, str(U1), "8", "32", libdir],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        for _ in range(8):
            assert read_line(hogs.stdout, 10, "a subordinate uid's connections") == "open"
        # 256 asked for; the owner's 32 kept, the rest refused.
        wait_for(lambda: broker.connections() == base + 32, 10, "brokerd to keep 32 of the 256")
        for _ in range(3):
            served_within(1.0, lambda: broker.portctl("status", timeout=5))
            served_within(1.0, lambda: broker.portctl("get", "8080", uid=U2, timeout=5))
        out, _ = hogs.communicate("", timeout=60)
    finally:
        hogs.kill()
        hogs.wait()
    seen = [json.loads(line) for line in out.splitlines()]
    assert len(seen) == 8, out
    refused = [t for s in seen for t in s["refused"]]
    denied = [t for s in seen for t in s["denied"]]
    assert not any(s["other"] for s in seen), seen
    assert len(refused) == 256 - 32 and len(denied) == 32, (len(refused), len(denied))
    assert all(t.startswith(f"uid {U1}, the owner of uid 1000") and "already has 32 connections" in t
               for t in refused), set(refused)
    # A peer in doubt gets its error, then the connection is closed.
    assert set(denied) == {"permission denied: the peer is in another user namespace"}, set(denied)
    assert sum(s["closed_after"] for s in seen) == 32, seen
    wait_for(lambda: broker.connections() == base, 10, "brokerd to close the denied peers' connections")


def test_longest_idle_connection_is_evicted(make_broker, libdir):
    """32 slots, 2 of them the admins': 30 for everyone else."""
    broker = make_broker("--max-connections", "32", "--idle-timeout", "60")
    held = [broker.raw() for _ in range(30)]               # root's, so admins': never evicted
    # Admins may use the whole table; at its end, they are refused.
    extra = [broker.raw() for _ in range(2)]
    wait_for(lambda: broker.connections() >= 32, 10, "brokerd to accept 32 connections")
    s = broker.raw()
    kind, hdr, data = answer(s)
    assert kind == "reply" and check_error_reply(hdr, data)[1] == \
        "brokerd is at its limit of 32 connections; try again"
    s.close()
    for s in held + extra:
        s.close()
    wait_for(lambda: broker.connections() == 0, 10, "brokerd to close them")

    # Thirty of U1's, opened in order; the second one is then used.
    script = r"""
import socket, sys, time
sys.path.insert(0, sys.argv[2])
from rawproto import STATUS, STATUS_BODY, answer, msg
held = []
for i in range(30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    held.append(s)
    # served in order: each is accepted before the next is opened
    s.send(msg(STATUS, STATUS_BODY)); assert answer(s)[0] == "reply"
held[0].send(msg(STATUS, STATUS_BODY)); assert answer(held[0])[0] == "reply"
print("ready", flush=True)
sys.stdin.readline()                    # U2 connected meanwhile
print(" ".join(str(i) for i, s in enumerate(held) if answer(s, timeout=0.2)[0] == "closed"), flush=True)
"""
    hog = subprocess.Popen(as_user(U1) + [sys.executable, "-c", script, broker.control, libdir],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert read_line(hog.stdout, 10, "U1's 30 connections") == "ready"
        broker.portctl("status", uid=U2)                   # evicts U1's longest idle: its second
        hog.stdin.write("\n")
        hog.stdin.flush()
        assert read_line(hog.stdout, 10, "which were closed") == "1"
    finally:
        hog.kill()
        hog.wait()
    assert [l for l in broker.events("conn-evict") if "uid=4242" in l and "for uid 4343" in l], broker.log()


def test_denied_requests_are_no_activity(make_broker, libdir):
    broker = make_broker("--idle-timeout", "1")
    script = r"""
import socket, sys, time
sys.path.insert(0, sys.argv[2])
from rawproto import GET, answer, check_error_reply, endpoint, msg
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
t0 = time.monotonic()
denied = 0
while time.monotonic() - t0 < 10:
    try:
        s.send(msg(GET, endpoint(8080)))
    except BrokenPipeError:
        break
    kind, hdr, data = answer(s)
    if kind != "reply":
        break
    assert "no rule lets uid" in check_error_reply(hdr, data)[1]
    denied += 1
    time.sleep(0.2)                     # pacing the client, not waiting on a condition
print(denied, round(time.monotonic() - t0, 2))
"""
    r = subprocess.run(as_user(U1) + [sys.executable, "-c", script, broker.control, libdir],
                       capture_output=True, text=True, timeout=30, env=child_env())
    assert r.returncode == 0, r.stderr
    denied, took = r.stdout.split()
    assert int(denied) >= 3 and 0.8 <= float(took) < 3, r.stdout
    broker.wait_event("idle-timeout")


def test_connection_age_is_capped(make_broker):
    broker = make_broker("--max-connection-age", "1", "--idle-timeout", "60")
    s = broker.raw()
    t0 = time.monotonic()
    while True:                                            # busy, never idle
        try:
            s.send(msg(STATUS, STATUS_BODY))
        except BrokenPipeError:
            kind = "closed"
            break
        kind, _, _ = answer(s)
        if kind != "reply":
            break
        assert time.monotonic() - t0 < 5, "a busy connection outlived --max-connection-age"
        time.sleep(0.1)                                    # pacing the client, not waiting on a condition
    assert kind == "closed"
    assert 0.8 <= time.monotonic() - t0 < 3
    broker.wait_event("conn-age")
    s.close()
