# SPDX-License-Identifier: MIT
"""The bind guard: the kernel refuses bind() of a leased endpoint to every
process but brokerd, whatever the holders do to the shared socket, and while
brokerd itself is down. Another uid (U2, no rule) tries each way in: IPv4,
IPv6 and dual-stack, TCP and UDP, with and without SO_REUSEADDR. Every
broker here guards from the test's own cgroup (see conftest's guard fixture).
"""

import errno
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import BROKERD, PORTCTL, PYTHON, wait_for

U1, U2 = 4242, 4343
REEXEC_UNDER_VALGRIND = "under valgrind the re-executed image is valgrind's binary (/proc/PID/exe, the --check child)"

# Binds each case as the uid it runs as, repeatedly for a bounded time (or
# once); prints one JSON list: per case {"wins": binds that succeeded,
# "errnos": {errno: count}}. A case: [proto, addr, port, reuseaddr, v6only].
ATTACKER = r"""
import json, socket, sys, time
cases, duration = json.loads(sys.argv[1]), float(sys.argv[2])
out = [{"wins": 0, "errnos": {}} for _ in cases]
until = time.monotonic() + duration
while True:
    for c, r in zip(cases, out):
        proto, addr, port, reuse, v6only = c
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET,
                          socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        if ":" in addr:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
            if proto == "tcp":
                s.listen()
            r["wins"] += 1
        except OSError as e:
            r["errnos"][str(e.errno)] = r["errnos"].get(str(e.errno), 0) + 1
        s.close()
    if time.monotonic() >= until:
        break
    time.sleep(0.001)
print(json.dumps(out))
"""


def attack(procs, cases, duration=0.0, uid=U2):
    """Runs ATTACKER as uid; returns its result per case."""
    p = procs.spawn([PYTHON, "-c", ATTACKER, json.dumps(cases), str(duration)], uid=uid, name="attacker")
    assert p.wait(timeout=duration + 30) == 0, p.stderr()
    return json.loads(p.output().strip().splitlines()[-1])


# For each kind of lease: (binds another uid must never get, binds that do
# not overlap the lease and stay free). A case: (addr, v6only).
LEASES = {
    "127.0.0.1": ([("127.0.0.1", 0), ("0.0.0.0", 0), ("::", 0), ("::ffff:127.0.0.1", 0)],
                  [("127.0.0.2", 0), ("::1", 1)]),
    "[::1]": ([("::1", 1), ("::", 0), ("::", 1)],
              [("127.0.0.1", 0), ("0.0.0.0", 0)]),
    "[::]": ([("127.0.0.1", 0), ("0.0.0.0", 0), ("::1", 1), ("::", 0), ("::", 1), ("::ffff:127.0.0.2", 0)],
             []),
}


def cases_for(proto, port, addrs):
    return [[proto, a, port, reuse, v6only] for a, v6only in addrs for reuse in (True, False)]


def need_guard(broker):
    if broker.guard_dir is None:
        pytest.skip("no cgroup v2 or bpffs here: the bind guard cannot be tested")
    assert any("bind guard on" in l for l in broker.events("guard")), broker.log()


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("addr", list(LEASES))
def test_nobody_binds_a_leased_endpoint_while_brokerd_is_down(make_broker, procs, proto, addr):
    """brokerd killed (-9) with no holder left: nothing in the kernel holds
    the port any more, and still another uid gets EADDRINUSE for every bind
    that overlaps the lease, while binds beside it work (so the refusals are
    the guard's, and it is exact). Restarted, brokerd binds it again past
    its own guard and the owner gets it."""
    broker = make_broker()
    need_guard(broker)
    port = 9100
    endpoint = f"{proto}:{addr}:{port}"
    broker.portctl("policy", "add", endpoint, "--user", U1)
    lease = broker.portctl("get", endpoint, uid=U1, json=True).json[0]["id"]
    broker.kill9()
    refused, free = LEASES[addr]
    got = attack(procs, cases_for(proto, port, refused))
    for case, r in zip(cases_for(proto, port, refused), got):
        assert r == {"wins": 0, "errnos": {str(errno.EADDRINUSE): 1}}, (case, r)
    got = attack(procs, cases_for(proto, port, free))
    for case, r in zip(cases_for(proto, port, free), got):
        assert r["wins"] == 1, (case, r)
    # Root is refused too: only brokerd binds a leased endpoint.
    got = attack(procs, cases_for(proto, port, refused[:1]), uid=0)
    assert all(r["wins"] == 0 for r in got), got

    broker.start()
    assert broker.events("rebind"), broker.log()
    assert broker.portctl("get", endpoint, uid=U1, json=True).json[0]["id"] == lease


def test_without_the_guard_the_port_is_free_while_brokerd_is_down(make_broker, procs):
    """The control: with --no-guard, the same attack wins once brokerd is gone."""
    broker = make_broker("--no-guard")
    assert any("bind guard off (--no-guard)" in l for l in broker.events("guard")), broker.log()
    broker.portctl("policy", "add", "tcp:127.0.0.1:9100", "--user", U1)
    broker.portctl("get", "tcp:127.0.0.1:9100", uid=U1)
    broker.kill9()
    got = attack(procs, [["tcp", "127.0.0.1", 9100, True, 0]])
    assert got[0]["wins"] == 1, got
    broker.start()


# A holder (the owner's server): does what the argument says to fd 3, says
# "done", then counts datagrams (UDP) until "stop" arrives or 20 s pass.
HOLDER = r"""
import ctypes, os, socket, sys, time
s = socket.socket(fileno=3)
what = sys.argv[1]
if what == "shutdown":
    s.shutdown(socket.SHUT_RDWR)
if what == "shutdown-connect":          # once the file sys.argv[3] exists (brokerd is stopped)
    print("got", flush=True)
    until = time.monotonic() + 10
    while not os.path.exists(sys.argv[3]) and time.monotonic() < until:
        time.sleep(0.005)
    s.shutdown(socket.SHUT_RDWR)
    s.connect(("127.0.0.1", int(sys.argv[2])))
if what == "reuseaddr":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if what == "locked-filter":             # drop everything, for every holder, for good
    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Insn))]
    ret0 = Insn(0x06, 0, 0, 0)          # BPF_RET | BPF_K, 0
    prog = Prog(1, ctypes.pointer(ret0))
    s.setsockopt(socket.SOL_SOCKET, 26, bytes(memoryview(prog)))     # SO_ATTACH_FILTER
    s.setsockopt(socket.SOL_SOCKET, 44, 1)                           # SO_LOCK_FILTER
print("done", flush=True)
n = 0
if s.type == socket.SOCK_DGRAM:
    s.settimeout(20)
    while True:
        data = s.recv(64)
        if data == b"stop":
            break
        n += 1
print(n, flush=True)
sys.stdin.read()
"""


def holder(broker, procs, endpoint, what, *args, uid=U1, wait=True):
    p = procs.spawn([PORTCTL, "--socket", broker.control, "get", endpoint, "--", PYTHON, "-c", HOLDER, what,
                     *map(str, args)], uid=uid, name=f"holder-{what}")
    if wait:
        wait_holder(p, "done", what)
    return p


def wait_holder(p, word, what):
    wait_for(lambda: word in p.output() or not p.alive(), 10, f"the holder to {what}")
    assert word in p.output(), p.stderr()


def check_listening(broker, endpoint, port, uid=U1):
    """The owner's next get: a socket that listens, and a client gets in."""
    broker.portctl("get", endpoint, "--", PYTHON, "-c",
                   "import socket; s = socket.socket(fileno=3); "
                   "assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1", uid=uid)
    socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_holders_shutdown_leaves_no_window(make_broker, procs):
    """A holder's shutdown() takes the listener out of LISTEN, still bound
    with SO_REUSEADDR: the kernel alone would let another uid's SO_REUSEADDR
    socket bind and listen there. The guard refuses it, every time."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:127.0.0.1:9000", "--user", U1)
    broker.portctl("get", "tcp:127.0.0.1:9000", uid=U1)       # leased before the racer's first try
    racer = procs.spawn([PYTHON, "-c", ATTACKER, json.dumps(
        [["tcp", "127.0.0.1", 9000, True, 0], ["tcp", "0.0.0.0", 9000, True, 0], ["tcp", "::", 9000, True, 0]]),
        "3"], uid=U2, name="racer")
    for _ in range(3):
        holder(broker, procs, "tcp:127.0.0.1:9000", "shutdown")
    assert racer.wait(timeout=30) == 0, racer.stderr()
    got = json.loads(racer.output().strip().splitlines()[-1])
    assert all(r["wins"] == 0 and r["errnos"] for r in got), got
    check_listening(broker, "tcp:127.0.0.1:9000", 9000)


def test_every_datagram_reaches_the_owner(make_broker, procs):
    """The owner's server sets SO_REUSEADDR on its UDP socket, as many
    frameworks do: another uid's SO_REUSEADDR socket still cannot bind the
    address, so all 20 datagrams reach the owner."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "udp:127.0.0.1:9200", "--user", U1)
    h = holder(broker, procs, "udp:127.0.0.1:9200", "reuseaddr")
    got = attack(procs, cases_for("udp", 9200, [("127.0.0.1", 0), ("0.0.0.0", 0)]))
    assert all(r["wins"] == 0 for r in got), got
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        for i in range(20):
            c.sendto(b"%d" % i, ("127.0.0.1", 9200))
        c.sendto(b"stop", ("127.0.0.1", 9200))
    wait_for(lambda: h.output().split()[-1:] == ["20"], 10, "the owner to count 20 datagrams")


def test_a_socket_turned_into_a_connection_is_replaced_and_the_port_kept(make_broker, procs):
    """shutdown() then connect(): the shared socket becomes an outgoing
    connection and can never listen again. Meanwhile nobody else binds the
    port; brokerd replaces the socket (event=replace) and the owner's next
    get gets it. brokerd is stopped (SIGSTOP) while the holder does it, or
    it would listen again between the two calls."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:127.0.0.1:9000", "--user", U1)
    target = socket.create_server(("127.0.0.1", 9001))
    trigger = Path(broker.dir, "act")
    h = holder(broker, procs, "tcp:127.0.0.1:9000", "shutdown-connect", 9001, trigger, wait=False)
    wait_holder(h, "got", "get the socket")
    stopped = broker.pids()                             # the monitor and the worker: both hold the socket
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        trigger.touch()
        wait_holder(h, "done", "turn the socket into a connection")
        target.accept()[0].close()
        got = attack(procs, cases_for("tcp", 9000, [("127.0.0.1", 0), ("0.0.0.0", 0), ("::", 0)]))
        assert all(r["wins"] == 0 for r in got), got   # nothing listens there now: only the guard refuses
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    got = attack(procs, cases_for("tcp", 9000, [("127.0.0.1", 0), ("0.0.0.0", 0), ("::", 0)]))
    assert all(r["wins"] == 0 for r in got), got
    check_listening(broker, "tcp:127.0.0.1:9000", 9000)
    assert broker.events("replace"), broker.log()
    target.close()


def test_a_socket_with_a_locked_filter_is_replaced(make_broker, procs):
    """A holder attaches a filter that drops every SYN and locks it
    (SO_LOCK_FILTER): brokerd cannot detach it, so the owner's next get
    gets a fresh socket (event=replace). The owner is root here: this
    machine's kernel refuses socket filters to other uids (EPERM)."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:127.0.0.1:9000", "--user", "root")
    holder(broker, procs, "tcp:127.0.0.1:9000", "locked-filter", uid=0)
    check_listening(broker, "tcp:127.0.0.1:9000", 9000, uid=0)
    assert any("Operation not permitted" in l for l in broker.events("replace")), broker.log()


def test_release_frees_the_port_at_once(make_broker, procs):
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:9300", "--user", U1)
    broker.portctl("policy", "add", "udp:127.0.0.1:9300", "--user", U1)
    broker.portctl("get", "tcp:9300", "udp:127.0.0.1:9300", uid=U1)
    broker.kill9()                      # no socket left: only the guard holds them
    cases = cases_for("tcp", 9300, [("127.0.0.1", 0), ("::", 0)]) + cases_for("udp", 9300, [("127.0.0.1", 0)])
    assert all(r["wins"] == 0 for r in attack(procs, cases))
    broker.start()
    broker.portctl("release", "tcp:9300", uid=U1)
    got = attack(procs, cases)
    assert [r["wins"] for r in got] == [1, 1, 1, 1, 0, 0], got     # UDP is still leased
    broker.portctl("release", "udp:127.0.0.1:9300", uid=U1)
    assert all(r["wins"] == 1 for r in attack(procs, cases))


def test_a_restart_takes_the_pinned_guard_over(make_broker, procs, tmp_path):
    """A new brokerd switches the pinned links to its own programs (no
    second attachment, nothing left over in the guard directory), and a
    second brokerd on the same guard directory refuses to start."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:9400", "--user", U1)
    broker.portctl("get", "tcp:9400", uid=U1)
    pins = sorted(os.listdir(broker.guard_dir))
    assert pins == ["bind4", "bind6"], pins
    links = [os.stat(Path(broker.guard_dir, p)).st_ino for p in pins]
    broker.restart()
    assert [os.stat(Path(broker.guard_dir, p)).st_ino for p in sorted(os.listdir(broker.guard_dir))] == links
    broker.kill9()
    broker.start()
    assert sorted(os.listdir(broker.guard_dir)) == pins
    assert all(r["wins"] == 0 for r in attack(procs, cases_for("tcp", 9400, [("::", 0)])))

    other = subprocess.run([BROKERD, "--foreground", "--control", str(tmp_path / "c.sock"), "--db",
                            str(tmp_path / "db" / "pb.db"), *broker.args[:4]],
                           capture_output=True, text=True, timeout=10)
    assert other.returncode == 1 and "another brokerd guards its leases from" in other.stderr, other.stderr


def test_status_and_why_name_the_guard(make_broker, procs):
    """portctl status says whether the guard is on; portctl why names it as
    what refuses another uid's bind (and, with brokerd down, points at it)."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:9500", "--user", U1)
    broker.portctl("get", "tcp:9500", uid=U1)
    text = broker.portctl("status", uid=U2).stdout
    assert f"bind guard on: cgroup {broker.args[3]}, pinned in {broker.guard_dir}" in text.splitlines()[0], text
    assert broker.portctl("status", json=True, uid=U2).json[0]["guarded"] is True

    why = broker.portctl("why", "tcp:9500", json=True, uid=U2, check=False).json
    assert why["verdict"] == "broker-lease" and why["guard"]["on"] is True, why
    assert "bind guard refuses bind() of it to every process but brokerd" in why["summary"], why
    assert any(e.startswith("bind guard on") for e in why["evidence"]), why

    broker.kill9()
    why = broker.portctl("why", "tcp:9500", json=True, uid=U2, check=False).json
    assert why["verdict"] == "unknown" and why["probe"]["bind_reuseaddr"] == "EADDRINUSE", why
    assert any("portbroker's bind guard keeps every leased endpoint" in e for e in why["evidence"]), why
    broker.start()


def test_status_says_when_the_guard_is_off(make_broker):
    broker = make_broker("--no-guard")
    broker.portctl("policy", "add", "tcp:9500", "--user", U1)
    broker.portctl("get", "tcp:9500", uid=U1)
    assert "bind guard off: --no-guard" in broker.portctl("status").stdout.splitlines()[0]
    assert broker.portctl("status", json=True).json[0]["guarded"] is False


def test_a_guard_nobody_runs_is_removed(make_broker, procs):
    """A brokerd that starts without the guard (--no-guard here; a kernel
    that refuses BPF alike) removes the one an earlier brokerd pinned in its
    guard directory: its frozen map would refuse brokerd's own binds."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:9600", "--user", U1)
    broker.portctl("get", "tcp:9600", uid=U1)
    broker.kill9()
    broker.args = ["--no-guard", "--guard-dir", broker.guard_dir]
    broker.start()
    assert any(f"removed the bind guard pinned in {broker.guard_dir}" in l for l in broker.events("guard")), \
        broker.log()
    assert os.listdir(broker.guard_dir) == []
    assert broker.events("rebind"), broker.log()         # its own bind was not refused
    broker.portctl("release", "tcp:9600", uid=U1)
    assert attack(procs, [["tcp", "127.0.0.1", 9600, False, 0]])[0]["wins"] == 1


def test_more_leases_than_max_leases_are_all_guarded(make_broker, procs):
    """A database holding more leases than --max-leases (lowered since):
    the guard's map makes room for all of them."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:9700-9704", "--user", U1)
    for port in range(9700, 9705):
        broker.portctl("get", f"tcp:{port}", uid=U1)
    broker.stop()
    broker.args += ["--max-leases", "1"]
    broker.start()
    assert any("bind guard on" in l for l in broker.events("guard")), broker.log()
    broker.kill9()
    got = attack(procs, [["tcp", "127.0.0.1", port, True, 0] for port in range(9700, 9705)])
    assert all(r["wins"] == 0 for r in got), got
    broker.start()


# Lets the kernel choose the local port, confined to [port, port] with
# IP_LOCAL_PORT_RANGE, each way it does: bind() to port 0, listen(),
# connect() and sendto() on an unbound socket. Prints one JSON list: per
# way, the port got, or the errno.
AUTOBIND = r"""
import json, socket, struct, sys
port, target = int(sys.argv[1]), int(sys.argv[2])
out = {}
for way, typ in (("bind0", "tcp"), ("bind0", "udp"), ("listen", "tcp"), ("connect", "tcp"), ("sendto", "udp")):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if typ == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, 51, struct.pack("I", port | port << 16))     # IP_LOCAL_PORT_RANGE
    try:
        if way == "bind0":
            s.bind(("127.0.0.1", 0))
        elif way == "listen":
            s.listen()
        elif way == "connect":
            s.connect(("127.0.0.1", target))
        else:
            s.sendto(b"x", ("127.0.0.1", target))
        out[f"{way}-{typ}"] = s.getsockname()[1]
    except OSError as e:
        out[f"{way}-{typ}"] = f"errno {e.errno}"
    s.close()
print(json.dumps(out))
"""


def reserved_ports():
    return Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text().strip()


def autobind(procs, port, target):
    p = procs.spawn([PYTHON, "-c", AUTOBIND, str(port), str(target)], uid=U2, name="autobind")
    assert p.wait(timeout=30) == 0, p.stderr()
    return json.loads(p.output().strip().splitlines()[-1])


def test_the_kernel_never_picks_a_leased_port_for_anyone(make_broker, procs):
    """bind() to port 0, listen(), connect() and sendto() on an unbound
    socket let the kernel choose the port, and the guard's bind programs do
    not see that choice. brokerd keeps leased ports in
    net.ipv4.ip_local_reserved_ports, which every such choice skips: with
    brokerd killed and nothing holding the ports, another uid that narrows
    its range to the leased port (IP_LOCAL_PORT_RANGE) still never gets it.
    A release takes out the reservations brokerd made, not an admin's."""
    Path("/proc/sys/net/ipv4/ip_local_reserved_ports").write_text("50002\n")     # the admin's own
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "50000-50002", "--user", U1)
    broker.portctl("policy", "add", "udp:50000", "--user", U1)
    for ep in ("udp:127.0.0.1:50000", "tcp:127.0.0.1:50001", "tcp:50002"):
        broker.portctl("get", ep, uid=U1)
    assert reserved_ports() == "50000-50002", reserved_ports()
    target = socket.create_server(("127.0.0.1", 9800))
    broker.kill9()
    for port in (50000, 50001):
        got = autobind(procs, port, 9800)
        assert port not in got.values(), got
    # The same attack wins on a port no lease holds.
    assert 50003 in autobind(procs, 50003, 9800).values()

    broker.start()
    for ep in ("udp:127.0.0.1:50000", "tcp:127.0.0.1:50001", "tcp:50002"):
        broker.portctl("release", ep, uid=U1)
    assert reserved_ports() == "50002", reserved_ports()         # brokerd's went, the admin's stayed
    target.close()


def test_only_the_guard_of_its_own_database_is_removed(make_broker, procs):
    """Another brokerd (its own database) run with --no-guard on the same
    guard directory leaves the stopped brokerd's guard alone and does not
    hold the directory: that brokerd starts again and takes it over. A
    brokerd moved to another --guard-dir removes its old guard (its
    database says where it was), so its own binds are not refused."""
    a = make_broker()
    need_guard(a)
    guard_args = a.args[:4]
    a.portctl("policy", "add", "tcp:9900", "--user", U1)
    a.portctl("get", "tcp:9900", uid=U1)
    a.stop()
    b = make_broker("--no-guard", "--guard-dir", a.guard_dir)
    assert sorted(os.listdir(a.guard_dir)) == ["bind4", "bind6"]
    assert not any("removed the bind guard" in l for l in b.events("guard")), b.log()
    a.start()                            # not refused: b holds no lock on the directory
    assert any("bind guard on" in l for l in a.events("guard")), a.log()

    a.kill9()
    moved = str(Path(a.guard_dir).parent / (Path(a.guard_dir).name + "-moved"))
    a.args = ["--guard-dir", moved, *guard_args[2:], *a.args[4:]]
    a.start()
    assert any(f"removed the bind guard pinned in {guard_args[1]}" in l for l in a.events("guard")), a.log()
    assert not Path(guard_args[1], "bind4").exists()
    assert a.events("rebind"), a.log()
    assert all(r["wins"] == 0 for r in attack(procs, [["tcp", "127.0.0.1", 9900, True, 0]]))


def test_a_guard_dir_not_on_bpffs_is_left_alone(make_broker, guard, tmp_path):
    """A --guard-dir that is not on bpffs: the guard is off, and files there
    named like its pins are not brokerd's to remove."""
    if guard is None:
        pytest.skip("no cgroup v2 or bpffs here")
    d = tmp_path / "notbpf"
    d.mkdir(mode=0o700)
    (d / "bind4").write_text("keep")
    broker = make_broker("--guard-dir", str(d), "--guard-cgroup", guard.cgroup)
    assert any(f"{d} is not on a BPF filesystem" in l for l in broker.events("guard")), broker.log()
    assert (d / "bind4").read_text() == "keep"


def test_reservations_are_put_back_at_stop(make_broker):
    """An admin's write of ip_local_reserved_ports replaces the whole list;
    brokerd puts its leased ports back when it stops (they matter most
    while it is down) and at its next start."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:50001", "--user", U1)
    broker.portctl("get", "tcp:127.0.0.1:50001", uid=U1)
    Path("/proc/sys/net/ipv4/ip_local_reserved_ports").write_text("8080\n")
    broker.stop()
    assert reserved_ports() == "8080,50001", reserved_ports()
    broker.start()


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
def test_a_reexec_keeps_the_guard_and_its_lock(make_broker, procs):
    """portctl admin reexec: the new image takes the same pinned links over
    and the guard directory's lock, carried across exec() (never let go, so
    no other brokerd can take the directory in between)."""
    broker = make_broker()
    need_guard(broker)
    broker.portctl("policy", "add", "tcp:9950", "--user", U1)
    broker.portctl("get", "tcp:9950", uid=U1)
    pins = {p: os.stat(Path(broker.guard_dir, p)).st_ino for p in ("bind4", "bind6")}
    dir_ino = os.stat(broker.guard_dir).st_ino

    def locked_by_broker():
        return [l for l in Path("/proc/locks").read_text().splitlines()
                if " FLOCK " in l and l.split()[4] == str(broker.pid) and l.split()[5].endswith(f":{dir_ino}")]
    assert locked_by_broker()
    broker.portctl("admin", "reexec")
    assert len(broker.events("guard")) == 2 and "bind guard on" in broker.events("guard")[1], broker.log()
    assert {p: os.stat(Path(broker.guard_dir, p)).st_ino for p in ("bind4", "bind6")} == pins
    assert locked_by_broker()
    assert all(r["wins"] == 0 for r in attack(procs, [["tcp", "::", 9950, True, 0]]))


def test_before_linux_5_18_the_guard_refuses_with_eperm(make_broker, procs):
    """Kernels before 5.18 have no bpf_set_retval(): brokerd falls back to
    programs that refuse with the kernel's EPERM (asked for here with
    $BROKERD_GUARD_EPERM=1), and says so."""
    broker = make_broker(start=False)
    if broker.guard_dir is None:
        pytest.skip("no cgroup v2 or bpffs here: the bind guard cannot be tested")
    broker.env["BROKERD_GUARD_EPERM"] = "1"
    broker.start()
    assert any("refusing with EPERM" in l for l in broker.events("guard")), broker.log()
    assert "refusing with EPERM" in broker.portctl("status").stdout.splitlines()[0]
    broker.portctl("policy", "add", "tcp:9960", "--user", U1)
    broker.portctl("get", "tcp:9960", uid=U1)
    broker.kill9()
    got = attack(procs, cases_for("tcp", 9960, [("127.0.0.1", 0), ("::", 0)]))
    assert all(r == {"wins": 0, "errnos": {str(errno.EPERM): 1}} for r in got), got
    broker.start()                       # its own bind passes
    assert broker.events("rebind"), broker.log()
