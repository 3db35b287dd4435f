# SPDX-License-Identifier: MIT
"""libportbroker-preload.so under `portctl run`, probed from inside a real
process (Python calls libc's bind/listen/setsockopt, so the shim is what it
calls): the swap keeps the fd number and its flags, and the family, type
and IPV6_V6ONLY the server gave its socket (0.0.0.0 an IPv4 lease, [::]
with IPV6_V6ONLY the IPv6-only one, beside it), the options it set before
bind() are carried over, errno is untouched on the pass-through path,
listen() keeps the broker's backlog, SO_REUSEPORT cannot be set, no broker
connection is left behind, children (fork + exec) get the same socket, UDP
works, and what is not named passes through."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import PORTCTL, PRELOAD, PYTHON, as_user, child_env, fetch, try_bind, wait_for

pytestmark = pytest.mark.usefixtures("netns")

U1, U2 = 4242, 4343

PROBE = r"""
import ctypes, json, os, socket, subprocess, sys

libc = ctypes.CDLL(None, use_errno=True)
out = {}

def sockets():
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:           # the directory's own fd, closed by now
            continue
        if link.startswith("socket:"):
            found.append(link)
    return found

# Pass-through keeps errno: bind an AF_UNIX socket with errno set to 1234 beforehand.
u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = b"\x01\x00" + b"\x00probe-" + str(os.getpid()).encode()
ctypes.set_errno(1234)
r = libc.bind(u.fileno(), ctypes.c_char_p(addr), len(addr))
out["passthrough_rc"], out["passthrough_errno"] = r, ctypes.get_errno()

before = sockets()
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
fd = s.fileno()
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)      # nginx's default for [::]
s.bind(("::", 8080))
out["same_fd"] = s.fileno() == fd
out["cloexec"] = not os.get_inheritable(fd)
out["nonblocking"] = not s.getblocking()
s.listen(5)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
out["reuseport"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
out["v6only"] = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
out["inode"] = os.fstat(fd).st_ino
after = sockets()
out["sockets_added"] = len(after) - len(before)

# A plain bind of a port not named passes through: the server's own socket.
p = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
p.bind(("127.0.0.1", 8095))
out["other_port_bound"] = p.getsockname()[1]

d = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
d.bind(("::", 5353))
out["udp_inode"] = os.fstat(d.fileno()).st_ino

# A child that execs and binds again (the shim is in its environment) gets the same socket.
child = subprocess.run([sys.executable, "-c",
    "import os, socket; s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); "
    "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); "
    "s.bind(('::', 8080)); print(os.fstat(s.fileno()).st_ino)"], capture_output=True, text=True)
out["child_inode"] = int(child.stdout) if child.stdout.strip() else child.stderr

# An exec'd child that inherited the socket cannot shrink the backlog or set SO_REUSEPORT.
subprocess.run([sys.executable, "-c",
    f"import socket; s = socket.socket(fileno={fd}); s.listen(5); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); s.detach()"], pass_fds=[fd], check=True)
out["reuseport_after_exec"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)

# nginx's `listen 8080; listen [::]:8080;`: beside the IPv6-only socket, the
# IPv4 wildcard gets an IPv4 socket of its own, as the server made it.
v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    v4.bind(("0.0.0.0", 8080))
    out["v4_inode"] = os.fstat(v4.fileno()).st_ino
    out["v4_family"] = v4.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
    out["v4_name"] = list(v4.getsockname())
except OSError as e:
    out["v4_inode"] = str(e)
print(json.dumps(out))
"""


def run_probe(broker, *endpoints, probe=PROBE):
    argv = as_user(U1) + [PORTCTL, "--socket", broker.control, "run", *endpoints, "--",
                          sys.executable, "-c", probe]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=child_env())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_shim_swaps_in_the_brokered_socket(broker):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    broker.portctl("policy", "add", "udp:5353", "--user", U1)
    out = run_probe(broker, "8080", "udp:5353")
    assert out["passthrough_rc"] == 0 and out["passthrough_errno"] == 1234, out
    assert out["same_fd"] and out["cloexec"] and out["nonblocking"], out
    assert out["reuseport"] == 0, out
    assert out["v6only"] == 1, out                      # the IPv6-only lease the server's socket asked for
    assert out["sockets_added"] == 1, out               # the swapped socket; no broker connection left
    assert out["other_port_bound"] == 8095, out
    assert out["child_inode"] == out["inode"], out
    assert out["reuseport_after_exec"] == 0, out
    assert isinstance(out["v4_inode"], int) and out["v4_inode"] != out["inode"], out
    assert out["v4_family"] == socket.AF_INET and out["v4_name"] == ["0.0.0.0", 8080], out
    # The server holds brokerd's sockets, listening with brokerd's backlog, not its own 5
    # (nor the exec'd child's 5).
    ss = subprocess.run(["ss", "-Hltn", "sport = :8080"], capture_output=True, text=True).stdout
    assert [l.split()[2] for l in ss.splitlines()] == ["4096", "4096"], ss
    st = {l["endpoint"]: l for l in broker.portctl("status", json=True).json}
    # A port named as a whole (8080) covers each wildcard the server binds, each its own
    # lease; udp:5353 is dual-stack as the server made it; 8095 never went to brokerd.
    assert set(st) == {"tcp6:[::]:8080", "tcp:0.0.0.0:8080", "udp:[::]:5353"}, st


def test_shim_without_endpoints_tries_every_bind(broker):
    """No endpoints named: 8080 (allowed) is brokered, each bind with the
    lease of what it made; 8095 (no rule) passes through."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    broker.portctl("policy", "add", "udp:5353", "--user", U1)
    out = run_probe(broker)
    assert out["same_fd"] and out["child_inode"] == out["inode"] and out["v6only"] == 1, out
    assert out["other_port_bound"] == 8095, out
    assert out["v4_family"] == socket.AF_INET and out["v4_inode"] != out["inode"], out
    denied = [l for l in broker.events("deny") if "8095" in l]
    assert len(denied) == 1 and f"uid={U1}" in denied[0], broker.events("deny")   # 8095: asked for, refused
    st = {l["endpoint"] for l in broker.portctl("status", json=True).json}
    assert st == {"tcp6:[::]:8080", "tcp:0.0.0.0:8080", "udp:[::]:5353"}, st


# A server that sets options before bind(), as dnsmasq and memcached do: an
# IPv4 UDP socket with IP_PKTINFO, a receive buffer and SO_BROADCAST; an
# IPv6-only TCP listener whose connections inherit TCP_NODELAY and
# SO_KEEPALIVE. Each is read back after the swap, and used.
OPTIONS_PROBE = r"""
import json, os, socket
IP_PKTINFO = 8                  # <linux/in.h>; Python's socket module lacks it
out = {}
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
own = os.fstat(u.fileno()).st_ino
u.bind(("0.0.0.0", 5353))
out["udp_swapped"] = os.fstat(u.fileno()).st_ino != own
out["udp_family"] = u.family == socket.AF_INET and u.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_INET
out["udp_name"] = list(u.getsockname())
out["pktinfo"] = u.getsockopt(socket.IPPROTO_IP, IP_PKTINFO)
out["rcvbuf"] = u.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
out["broadcast"] = u.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.sendto(b"q", ("127.0.0.1", 5353))
data, anc, flags, peer = u.recvmsg(16, socket.CMSG_SPACE(12))
out["from"] = peer[0]
out["cmsg"] = [[level, ctype] for level, ctype, _ in anc]

t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
own = os.fstat(t.fileno()).st_ino
t.bind(("::", 8080))
t.listen(16)
out["tcp_swapped"] = os.fstat(t.fileno()).st_ino != own
out["v6only"] = t.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
k = socket.create_connection(("::1", 8080), timeout=5)
a, peer = t.accept()
out["peer"] = peer[0]
out["accepted_nodelay"] = a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
out["accepted_keepalive"] = a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
print(json.dumps(out))
"""


def test_shim_keeps_the_family_and_carries_the_options(broker):
    """The issue's http.server and dnsmasq: a server that made an AF_INET
    socket gets an AF_INET one (sockaddr_in from getsockname() and
    recvmsg(), IP_PKTINFO where it looks for it), a [::] IPv6-only one an
    IPv6-only one; and what it set before bind() holds on brokerd's socket."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    broker.portctl("policy", "add", "udp:5353", "--user", U1)
    out = run_probe(broker, "8080", "udp:5353", probe=OPTIONS_PROBE)
    assert out["udp_swapped"] and out["udp_family"] and out["udp_name"] == ["0.0.0.0", 5353], out
    assert out["pktinfo"] == 1 and out["broadcast"] == 1, out
    assert out["rcvbuf"] == 2 * 65536, out              # the kernel doubles what it is given
    assert out["from"] == "127.0.0.1", out
    assert out["cmsg"] == [[socket.IPPROTO_IP, 8]], out               # IP_PKTINFO
    assert out["tcp_swapped"] and out["v6only"] == 1 and out["peer"] == "::1", out
    assert out["accepted_nodelay"] == 1 and out["accepted_keepalive"] == 1, out
    st = {l["endpoint"] for l in broker.portctl("status", json=True).json}
    assert st == {"udp:0.0.0.0:5353", "tcp6:[::]:8080"}, st


def test_run_refuses_what_it_cannot_reach(broker, tmp_path):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    src = tmp_path / "s.c"
    src.write_text("int main(void) { return 0; }\n")
    static = tmp_path / "static"
    subprocess.run(["cc", "-static", str(src), "-o", str(static)], check=True)
    r = broker.portctl("run", "8080", "--", static, check=1)
    assert "statically linked" in r.stderr
    setuid = broker.dir / "setuid"                     # a directory uid 4242 can reach
    subprocess.run(["cp", "/usr/bin/true", str(setuid)], check=True)
    setuid.chmod(0o4755)
    r = broker.portctl("run", "8080", "--", setuid, uid=U1, check=1)
    assert "setuid" in r.stderr
    # A denied endpoint stops run before the server starts.
    r = broker.portctl("run", "9999", "--", "/usr/bin/true", uid=U1, check=1)
    assert "no rule" in r.stderr


def test_run_checks_a_port_without_taking_it(broker):
    """`portctl run PORT` asks brokerd (CHECK) whether the caller may have
    some wildcard of the port, creating no lease: which one the server gets
    is its socket's business. Another uid's lease of one family's wildcard
    (or loopback) keeps the other family's from the caller too, so that
    nobody gets the clients of localhost:P that try IPv6 first; specific
    addresses of other kinds may be different uids' (one tenant per
    address)."""
    broker.portctl("policy", "add", "tcp:8080-8081", "--user", U1)
    broker.portctl("policy", "add", "tcp:8081", "--user", U2)
    r = broker.portctl("run", "8080", "--", "/bin/sh", "-c", "echo started", uid=U1)
    assert r.stdout == "started\n" and broker.portctl("status", json=True).json == [], r
    assert try_bind(8080) == 0                          # nothing bound for a check
    broker.portctl("get", "tcp6:8081", uid=U2)           # U2's IPv6-only wildcard
    for ep in ("8081", "tcp4:8081", "tcp:127.0.0.1:8081", "tcp:[::1]:8081"):
        r = broker.portctl("run", ep, "--", "/bin/sh", "-c", "echo started", uid=U1, check=1)
        assert "uid 4343" in r.stderr and "started" not in r.stdout, (ep, r)
    r = broker.portctl("get", "tcp4:8081", uid=U1, check=1)
    assert "held by uid 4343: its lease tcp6:[::]:8081 serves the other family of the port" in r.stderr, r
    assert [l["endpoint"] for l in broker.portctl("status", json=True).json] == ["tcp6:[::]:8081"]
    broker.portctl("get", "tcp4:8081", uid=U2)           # its owner may have the rest of it
    # Loopback beside loopback is localhost too; other addresses are one tenant's each.
    broker.portctl("policy", "add", "tcp:8443", "--user", U1)
    broker.portctl("policy", "add", "tcp:8443", "--user", U2)
    broker.portctl("get", "tcp:127.0.0.1:8443", uid=U1)
    r = broker.portctl("get", "tcp:[::1]:8443", uid=U2, check=1)
    assert "held by uid 4242" in r.stderr, r
    broker.portctl("get", "tcp:127.0.0.2:8443", uid=U2)


OLD_SERVER = r"""
import os, signal, sys
# portctl upgrade stops the old server with SIGQUIT: this one says so and
# exits 0 when it gets it, whatever disposition it inherited.
def on_quit(signum, frame):
    print("got SIGQUIT", flush=True)
    sys.exit(0)
signal.signal(signal.SIGQUIT, on_quit)
print("ready", os.getpid(), flush=True)
while True:
    signal.pause()
"""

NEW_SERVER = r"""
import os, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind(("::", 8080))             # the brokered socket (the shim)
s.listen()
print("bound", flush=True)
with open(sys.argv[1]) as go:    # serves (accept: the shim's report) only when the test says so
    go.read()
c, _ = s.accept()
"""


def unix_socket(name):
    """(found, bytes queued) of the abstract unix socket @name in this netns (ss -x)."""
    out = subprocess.run(["ss", "-xaH"], capture_output=True, text=True, check=True, timeout=10).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 5 and f[4] == "@" + name:
            return True, int(f[2])
    return False, 0


def test_upgrade_ignores_a_forged_readiness_report(broker, procs, scratch):
    """The watcher's abstract socket name is visible to everyone; only a
    report sent by the new server (or its children) may stop the old one.
    The new server reports only when the test lets it accept, so a forged
    report is seen (and dropped) by the watcher first, with no race."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    old = procs.spawn([sys.executable, "-c", OLD_SERVER], uid=U1, name="old")
    old.wait_ready()
    go = scratch / "go"
    os.mkfifo(go, 0o666)
    go.chmod(0o666)
    new = procs.spawn([PORTCTL, "--socket", broker.control, "upgrade", "--pid", old.pid, "--timeout", 20,
                       "8080", "--", sys.executable, "-c", NEW_SERVER, go], uid=U1, name="new")

    # Our watcher's socket: portctl names it after its own pid (setpriv execs
    # portctl, so that is new.pid), never another upgrade's on this machine.
    prefix = f"@portbroker-ready-{new.pid}-"

    def ready_name():
        for line in open("/proc/net/unix").read().splitlines():
            f = line.split()
            if len(f) >= 8 and f[7].startswith(prefix):
                return f[7][1:]
        return None

    name = wait_for(ready_name, 10, f"the upgrade watcher's socket {prefix}*")
    wait_for(lambda: "bound" in new.output() or not new.alive(), 10, "the new server to bind")
    assert "bound" in new.output(), new.stderr()
    forged = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    assert forged.sendto(b"31337", "\0" + name) == 5
    forged.close()
    # The watcher read it (nothing queued) and did not act on it.
    wait_for(lambda: unix_socket(name) == (True, 0), 10, "the watcher to read the forged report")
    assert old.alive() and "got SIGQUIT" not in old.output(), (old.output(), new.stderr())
    assert "sent SIG" not in new.stderr(), new.stderr()

    with open(go, "w") as f:                        # now the new server accepts: its report
        f.write("go\n")
    wait_for(lambda: not old.alive(), 15, "the old server to be stopped")
    assert old.popen.returncode == 0 and "got SIGQUIT" in old.output(), (old.output(), old.stderr())
    wait_for(lambda: f"pid {old.pid} exited" in new.stderr(), 10, "the watcher to see the old server exit")
    assert f"pid {new.pid} is serving (pid {new.pid} accepted first); sent SIGQUIT to pid {old.pid}" \
        in new.stderr(), new.stderr()
    with socket.create_connection(("127.0.0.1", 8080), timeout=5):
        pass


IGNORING_SERVER = r"""
import os, signal
signal.signal(signal.SIGQUIT, signal.SIG_IGN)   # SIGQUIT would never stop this one
print("ready", os.getpid(), flush=True)
while True:
    signal.pause()
"""


def test_upgrade_refuses_an_old_server_that_ignores_the_signal(broker, procs):
    """An old server that ignores the stop signal would outlive the upgrade
    until --timeout; portctl says so at once, before starting anything."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    old = procs.spawn([PYTHON, "-c", IGNORING_SERVER], uid=U1, name="old")
    old.wait_ready()
    r = broker.portctl("upgrade", "--pid", old.pid, "8080", "--", "/usr/bin/true", uid=U1, check=1)
    assert f"pid {old.pid} ignores QUIT" in r.stderr and "--signal" in r.stderr, r
    assert old.alive()
    assert broker.portctl("status", json=True).json == []  # nothing was started or asked for


# A server that binds, listens, shuts its listener down (as some do when
# they stop) and then serves one connection on it all the same.
SHUTDOWN_SERVER = r"""
import os, socket
s = socket.socket(socket.AF_INET6)
s.bind(("::", 8080))
s.listen()
s.shutdown(socket.SHUT_RDWR)
print(f"ready {os.getpid()}", flush=True)
c, _ = s.accept()
c.sendall(b"ok shut\n")
c.close()
"""


def test_shutdown_of_a_brokered_listener_is_a_no_op(broker, procs):
    """Under the shim, a server's shutdown() of the brokered listener does
    nothing: it keeps listening for every holder (brokerd never sees it stop,
    so it has nothing to repair), and the server still accepts."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    srv = procs.spawn([PORTCTL, "--socket", broker.control, "run", "8080", "--", PYTHON, "-I", "-c",
                       SHUTDOWN_SERVER], uid=U1, name="shutdown-server")
    srv.wait_ready()
    assert fetch(8080) == "ok shut\n"
    assert not broker.events("repair"), broker.log()


SECURE_PROBE = r"""
import json, os, socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind(("::", 8080))
print(json.dumps({"secure": os.getuid() != os.geteuid(), "inode": os.fstat(s.fileno()).st_ino}))
"""


def test_shim_ignores_the_environment_of_a_setuid_program(broker, workdir):
    """Loaded into a set-user-ID program (only /etc/ld.so.preload can do
    that), the shim is not steered by its caller's environment: U2 runs a
    copy of python that is set-user-ID U1, with the shim's variables set,
    and the program's bind() is its own; brokerd is never asked. The same
    program without set-user-ID, as U1, is brokered (the shim was there)."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    suid = workdir / "suid"
    suid.mkdir(mode=0o755)
    python = suid / "python3"
    shutil.copy(os.path.realpath(PYTHON), python)
    os.chown(python, U1, U1)
    python.chmod(0o4755)
    upper, work = workdir / "etc-upper", workdir / "etc-work"
    upper.mkdir()
    work.mkdir()
    (upper / "ld.so.preload").write_text(f"{PRELOAD}\n")

    def run(uid, program):
        # /etc/ld.so.preload in a mount namespace of its own: an overlay on /etc.
        setup = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc && "
                 'exec "$@"')
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh",
                *as_user(uid), program, "-c", SECURE_PROBE]
        env = child_env(PORTBROKER_PRELOAD_ENDPOINTS="8080", PORTBROKER_SOCKET=broker.control)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    out = run(U2, str(python))
    assert out["secure"], out                           # euid U1, uid U2: secure execution
    assert broker.portctl("status", json=True).json == [], "the shim asked brokerd for a set-user-ID program"
    out = run(U1, PYTHON)
    assert not out["secure"], out
    assert [l["endpoint"] for l in broker.portctl("status", json=True).json] == ["tcp:[::]:8080"]
