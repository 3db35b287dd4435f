# SPDX-License-Identifier: MIT
"""Servers we did not write, unmodified, keep their port across SIGKILL.

Each runs as a non-root uid that a rule allows its port (tcp:8080, or
udp:53 and tcp:53, ...), under a bounded loopback load (RATE new
connections or UDP queries per second for DURATION s), and is SIGKILLed as
a whole (its process group: nginx's master and both workers at once) and
restarted KILLS times. Every connection is classified; no connection may be
refused, time out, fail or get a bad reply. Connections that a killed
process had already accepted are "lost in flight" (no holder can save them),
counted apart and bounded (LOST_PER_KILL per kill). While the server is down
the port stays held (bind() gets EADDRINUSE, even with SO_REUSEADDR); while
it runs there is exactly one listener on the port, brokerd's, and every
server process holds that very socket.

  * nginx, HTTP and stream, via `portctl run 8080 -- nginx ... 'daemon off;'`
    (LD_PRELOAD shim; master_process on, worker_processes 2, `listen 8080;
    listen [::]:8080;`, which nginx binds as an IPv4 socket and an IPv6 one
    with IPV6_V6ONLY=1: two leases, tcp:0.0.0.0:8080 and tcp6:[::]:8080,
    each its own brokered socket).
    HTTP is loaded with conftest.HttpLoad (pb-load sends no request); the
    stream server answers "ok nginx PID" on connect, so pb-load loads it.
  * systemd-socket-proxyd, socket-activation aware (sd_listen_fds), via
    `portctl get 8080 -- systemd-socket-proxyd 127.0.0.1:BACKEND` in front
    of an nginx stream server; only the proxy is killed. pb-load.
  * `python3 -m http.server 8080 --bind ::` (dual-stack) and `--bind
    0.0.0.0` (an AF_INET socket, which must stay one: its log shows
    127.0.0.1, not ::ffff:127.0.0.1 or worse) via `portctl run -- ...` with
    no endpoint named (every bind is tried with the broker). It listens with
    a backlog of 5: the shim keeps the broker's (4096), which the test
    checks. HttpLoad.
  * dnsmasq in its default wildcard mode via `portctl run udp:53 tcp:53 --
    dnsmasq ...`: 0.0.0.0 and [::] IPv6-only, UDP and TCP, four leases of a
    privileged port for a non-root uid. DnsLoad (queries built by hand) over
    UDP and TCP, IPv4 and IPv6 in turn; its query log must show each client
    as it was (127.0.0.1, ::1).
  * memcached -p/-U (TCP and UDP, both wildcards each) via `portctl run
    tcp:11211 udp:11211 --`, as the uid itself. MemcachedLoad over the four
    sockets; its log must be free of the `accept4(): Resource temporarily
    unavailable` it prints when two of its listeners are one socket, and
    `stats conns` must show each client as it was.
  * apache2 with mpm_prefork (3 children), unprivileged, via `portctl run
    8080 --`: `Listen 8080` (one dual-stack socket) and `Listen
    0.0.0.0:8080` (an IPv4 one, which IPv6 clients cannot reach). HttpLoad;
    its access log must show each client as it was, its error log nothing
    but its starts.
  * socat (1.7.4: it cannot accept on an inherited fd) via `portctl run`,
    on 8080 and on 80 as a non-root uid, IPv6 only as it asks: replies
    through the broker's socket (no load).
  * what LD_PRELOAD cannot reach: `portctl run` refuses a static binary and
    a setuid one with one line, pointing to socket activation.

dnsmasq, memcached and apache2 may lose at most one in flight per kill. A
UDP query nobody answered was lost in flight only if a killed server's own
log shows that it read it; otherwise it timed out.

Numbers go to tests/integration/results/restart-BUILD.json (and stdout with -s).
"""

import errno
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (PORTCTL, PYTHON, ExchangeLoad, HttpLoad, Load, children, fetch, http_get, listeners,
                      save_results, socket_inodes, try_bind, wait_for)

pytestmark = pytest.mark.usefixtures("netns")

U1 = 4242
PORT = 8080
BACKEND = 8090
RATE = 300              # new connections per second
DURATION = 8            # seconds of load
KILLS = 3
LOST_PER_KILL = 5       # accepted by the killed processes, no reply: bound per kill
NGINX = "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
PROXYD = "/lib/systemd/systemd-socket-proxyd"
SOCAT = "/usr/bin/socat"
PRELOAD = "libportbroker-preload.so"


def need_tool(path, package):
    if not Path(path).exists():
        pytest.fail(f"{path} is missing: install the Debian package {package} (tests/setup-deps.sh)")


def need_run():
    """portctl run is there (the shim is built)."""
    need_tool(Path(PORTCTL).parent / PRELOAD, "(build: make)")


# --- servers in a process group of their own ---------------------------------


class Group:
    """A server started as the leader of its own process group (setsid), so
    that SIGKILL reaches it and every process it forked at once."""

    def __init__(self, proc):
        self.proc, self.pid = proc, proc.pid

        def leads():
            try:
                return os.getpgid(self.pid) == self.pid
            except ProcessLookupError:
                raise AssertionError(f"{proc.name} exited at once: {proc.stderr()[-2000:]}") from None
        wait_for(leads, 10, f"pid {self.pid} to lead its process group")

    def members(self):
        """Pids in the process group, zombies left out."""
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == self.pid and fields[0] != "Z":
                    out.append(int(d))
        return out

    def kill9(self):
        """SIGKILLs the whole group, waits until every member is gone; returns the time of the kill."""
        t = time.monotonic()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.popen.wait(timeout=10)
        wait_for(lambda: not self.members(), 10, f"process group {self.pid} to be gone")
        return t

    def alive(self):
        return self.proc.alive()


@pytest.fixture
def groups(broker, procs):
    """Starts `argv` (as uid) under setsid; every group is SIGKILLed at teardown,
    before the broker stops (workers outlive a killed master otherwise)."""
    started = []

    def start(argv, uid=U1, name=None):
        g = Group(procs.spawn(["setsid", *map(str, argv)], uid=uid, name=name or Path(str(argv[0])).name))
        started.append(g)
        return g

    yield start
    for g in started:
        try:
            os.killpg(g.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def portctl_argv(broker, *args):
    return [PORTCTL, "--socket", broker.control, *map(str, args)]


# --- nginx -------------------------------------------------------------------


def nginx_dir(scratch, name, body, listen=(f"{PORT}", f"[::]:{PORT}"), module="http", uid=U1, server_extra=""):
    """A prefix directory for an nginx run as uid: config, pid, logs and temp
    paths inside it. body is what every connection gets (nginx variables
    allowed, e.g. $pid: the worker's pid); for http, at location /, and
    server_extra goes into the server block. listen: the addresses (by
    default nginx's usual pair, IPv4 and IPv6: two sockets)."""
    need_tool(NGINX, "nginx")
    listen = "".join(f"        listen {a};\n" for a in ([listen] if isinstance(listen, str) else listen))
    d = scratch / name
    (d / "tmp").mkdir(parents=True)
    common = (f"worker_processes 2;\n"
              f"master_process on;\n"
              f"pid {d}/nginx.pid;\n"
              f"error_log {d}/error.log notice;\n"
              f"events {{ worker_connections 1024; }}\n")
    if module == "stream":
        need_tool(STREAM_MODULE, "libnginx-mod-stream")
        conf = (f"load_module {STREAM_MODULE};\n" + common +
                f"stream {{\n"
                f"    server {{\n"
                f"{listen}"
                f"        return \"{body}\\n\";\n"
                f"    }}\n"
                f"}}\n")
    else:
        temp = "".join(f"    {k}_temp_path {d}/tmp/{k};\n"
                       for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = (common +
                f"http {{\n"
                f"    access_log off;\n{temp}"
                f"    server {{\n"
                f"{listen}"
                f"        default_type text/plain;\n"
                f"        location / {{ return 200 \"{body}\\n\"; }}\n"
                f"{server_extra}"
                f"    }}\n"
                f"}}\n")
    (d / "nginx.conf").write_text(conf)
    for p in (d, d / "tmp", d / "nginx.conf"):
        os.chown(p, uid, uid)
    return d


def nginx_argv(d):
    # -e: the error log before the config is read (the compiled-in
    # /var/log/nginx/error.log is root's).
    return [NGINX, "-e", d / "error.log", "-p", d, "-c", d / "nginx.conf", "-g", "daemon off;"]


def nginx_workers(master):
    return [p for p in children(master) if "worker" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]


def nginx_ready(g, module, workers=2):
    """Waits until g's master has its workers and one of them answered;
    returns the worker pids."""
    wait_for(lambda: len(nginx_workers(g.pid)) == workers or not g.alive(), 10,
             f"nginx {g.pid} to start {workers} workers")
    assert g.alive(), f"nginx exited: {g.proc.stderr()[-2000:]}"

    def answered():
        try:
            body = http_get(PORT)[1] if module == "http" else fetch(PORT)
        except OSError:
            return None
        return int(body.split()[-1]) in nginx_workers(g.pid)
    wait_for(answered, 10, f"a worker of nginx {g.pid} to answer")
    return nginx_workers(g.pid)


def assert_brokered_listeners(broker, pids, n=1, port=PORT, proto="tcp"):
    """Exactly n sockets listen on port (proto="udp": are bound to it),
    brokerd holds them, and so does every pid."""
    ls = listeners(port, proto)
    assert len(ls) == n, f"expected {n} {proto} listeners on {port}, got {ls}"
    assert ls <= socket_inodes(broker.pid), "a listener is not brokerd's socket"
    for p in pids:
        assert ls <= socket_inodes(p), f"pid {p} does not hold brokerd's sockets {ls}"
    return ls


# --- the kill/restart cycle -----------------------------------------------------


def kill_restart_cycle(broker, start, ready, make_load, lease=str(PORT), port=PORT, protos=("tcp",)):
    """Starts the server, then the load; at even intervals SIGKILLs the whole
    server and restarts it, KILLS times. Returns (load result, per-kill
    details). lease: the endpoint the load reaches (its queue is recorded);
    while the server is down, each of protos must find port taken."""
    g = start()
    ready(g)
    load = make_load()
    kills = []
    for k in range(1, KILLS + 1):
        at = load.t0 + k * DURATION / (KILLS + 1)
        time.sleep(max(0.0, at - time.monotonic()))          # a schedule, not a wait for a condition
        t_kill = g.kill9()
        st = broker.portctl("status", lease, json=True).json[0]
        detail = {"bind_errno": {p: try_bind(port, p, reuseaddr=True) for p in protos},
                  "listeners": len(listeners(port)), "queued": st["queued"]}
        g = start()
        ready(g)
        detail["gap_ms"] = round((time.monotonic() - t_kill) * 1000, 2)
        kills.append(detail)
    res = load.result()
    return res, kills, g


def check_and_save(name, res, kills, listening=1, lost_per_kill=LOST_PER_KILL, **extra):
    keys = ("attempted", "ok", "refused", "timed_out", "lost", "lost_udp", "bad_reply", "errors", "error_kinds",
            "reply_us", "bodies")
    s = {k: res[k] for k in keys if k in res}
    s.update(rate=RATE, duration_s=DURATION, kills=KILLS, gaps_ms=[k["gap_ms"] for k in kills],
             queued_while_down=[k["queued"] for k in kills], **extra)
    save_results(name, s)
    for k in kills:
        assert set(k["bind_errno"].values()) == {errno.EADDRINUSE} and k["listeners"] == listening, k
    assert res["attempted"] == RATE * DURATION, s
    assert res["refused"] == 0, s
    assert res["timed_out"] == 0, s
    assert res["errors"] == 0 and res["bad_reply"] == 0 and res.get("aborted", 0) == 0, s
    assert res["lost"] <= KILLS * lost_per_kill, s
    assert res["ok"] + res["lost"] == res["attempted"], s
    # Not vacuous: clients did wait in the backlog while no server ran (a
    # reply otherwise takes well under a millisecond).
    assert res["reply_us"]["max"] >= 10_000, s
    return s


@pytest.mark.parametrize("module", ["http", "stream"])
def test_nginx_unmodified_survives_kill9_of_master_and_workers(broker, procs, groups, scratch, module):
    need_run()
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    d = nginx_dir(scratch, "nginx", "ok nginx $pid", module=module)

    def start():
        return groups(portctl_argv(broker, "run", PORT, "--", *nginx_argv(d)), name="nginx")

    def ready(g):
        workers = nginx_ready(g, module)
        assert_brokered_listeners(broker, [g.pid, *workers], 2)

    if module == "http":
        def make_load():
            return HttpLoad(PORT, RATE, DURATION)
    else:
        def make_load():
            return Load(procs, PORT, RATE, DURATION)

    res, kills, g = kill_restart_cycle(broker, start, ready, make_load, lease=f"tcp4:{PORT}")
    # IPv4 and IPv6 clients both reach it, each through the socket nginx made for them.
    for addr in ("127.0.0.1", "::1"):
        body = http_get(PORT, addr=addr)[1] if module == "http" else fetch(PORT, addr)
        assert body.startswith("ok nginx "), body
    st = {l["endpoint"]: l for l in broker.portctl("status", json=True).json}
    s = check_and_save(f"thirdparty_nginx_{module}", res, kills, listening=2, server="nginx " + module,
                       handouts=st[f"tcp:0.0.0.0:{PORT}"]["handouts"])
    assert set(st) == {f"tcp:0.0.0.0:{PORT}", f"tcp6:[::]:{PORT}"}, st
    assert all(l["owner_uid"] == U1 and l["handouts"] >= KILLS + 1 for l in st.values()), st
    assert all(b.startswith("ok nginx ") for b in s.get("bodies", {})), s
    assert "emerg" not in (d / "error.log").read_text(), (d / "error.log").read_text()[-2000:]



# --- systemd-socket-proxyd: socket activation, unmodified ------------------------


def test_systemd_socket_proxyd_survives_kill9(broker, procs, groups, scratch):
    need_tool(PROXYD, "systemd")
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    backend = groups(nginx_argv(nginx_dir(scratch, "backend", "ok nginx $pid", module="stream",
                                          listen=f"127.0.0.1:{BACKEND}")), name="nginx-backend")
    wait_for(lambda: len(nginx_workers(backend.pid)) == 2 or not backend.alive(), 10, "the backend nginx")
    assert backend.alive(), backend.proc.stderr()
    wait_for(lambda: fetch(BACKEND).startswith("ok nginx "), 10, "the backend to answer")

    def start():
        return groups(portctl_argv(broker, "get", PORT, "--", PROXYD, f"127.0.0.1:{BACKEND}"),
                      name="systemd-socket-proxyd")

    def ready(g):
        # Until `portctl get` created the lease nothing listens on PORT (a
        # connection is refused); from then on brokerd's socket queues every
        # connection, so none may be refused.
        wait_for(lambda: broker.portctl("status", PORT, check=False).returncode == 0, 10,
                 f"portctl get to create the lease of {PORT}")
        wait_for(lambda: fetch(PORT).startswith("ok nginx "), 10, "an answer through the proxy")
        assert_brokered_listeners(broker, [g.pid])

    res, kills, g = kill_restart_cycle(broker, start, ready, lambda: Load(procs, PORT, RATE, DURATION))
    assert backend.alive() and g.alive()
    check_and_save("thirdparty_systemd_socket_proxyd", res, kills, server="systemd-socket-proxyd")


# --- python3 -m http.server ---------------------------------------------------------


def listen_backlog(port):
    """The accept-queue limit of the listener on port, as ss shows it (Send-Q)."""
    out = subprocess.run(["ss", "-Hltn", f"( sport = :{port} )"], capture_output=True, text=True,
                         timeout=10, check=True).stdout.split()
    return int(out[2])


@pytest.mark.parametrize("bind,lease", [("::", f"tcp:[::]:{PORT}"), ("0.0.0.0", f"tcp:0.0.0.0:{PORT}")])
def test_python_http_server_survives_kill9(broker, groups, scratch, bind, lease):
    """--bind :: makes a dual-stack socket, --bind 0.0.0.0 an AF_INET one:
    each gets the lease of what it made, and the log shows its clients'
    addresses as it would without the broker."""
    need_run()
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    www = scratch / "www"
    www.mkdir()
    (www / "ok").write_text("ok http.server\n")
    www.chmod(0o755)

    # No endpoint named: every bind() to a non-zero port is tried with the broker.
    def start():
        return groups(portctl_argv(broker, "run", "--", PYTHON, "-m", "http.server", PORT, "--bind", bind,
                                   "--directory", www), name="http.server")

    def ready(g):
        def answered():
            try:
                return http_get(PORT, "/ok") == (200, "ok http.server\n")
            except OSError:
                return False
        wait_for(answered, 10, "http.server to answer")
        assert_brokered_listeners(broker, [g.pid])
        # socketserver listens with a backlog of 5; the broker's stays.
        assert listen_backlog(PORT) >= 4096

    res, kills, g = kill_restart_cycle(broker, start, ready,
                                       lambda: HttpLoad(PORT, RATE, DURATION, path="/ok"), lease=lease)
    if bind == "::":
        assert http_get(PORT, "/ok", addr="::1") == (200, "ok http.server\n")
    s = check_and_save(f"thirdparty_python_http_server_{'v4' if bind == '0.0.0.0' else 'dual'}", res, kills,
                       server=f"python3 -m http.server --bind {bind}")
    assert s["bodies"] == {"ok http.server\n": res["ok"]}, s
    st = broker.portctl("status", lease, json=True).json[0]
    assert st["owner_uid"] == U1 and st["handouts"] >= KILLS + 1, st
    # Its access log: one line per request, the client as the socket family gives it, no errors.
    log = [l for l in g.proc.stderr().splitlines() if '"GET /ok ' in l]
    clients = ("127.0.0.1",) if bind == "0.0.0.0" else ("::ffff:127.0.0.1", "::1")
    assert log and all(l.split(" - - ")[0] in clients for l in log), log[:5]
    assert "Traceback" not in g.proc.stderr() and "Error" not in g.proc.stderr(), g.proc.stderr()[-2000:]


def test_a_server_that_never_takes_its_socket_is_named(broker, procs):
    """`portctl get 8080 -- python3 -m http.server` (the issue's case): the
    server ignores fd 3 and serves on its own port 8000, while clients of
    8080 wait in a backlog nobody drains. portctl's watcher says so once,
    with the `portctl run` alternative, and `portctl status` shows the
    lease as having no server accepting. A connection the server accepted
    does not count, however old."""
    need_run()
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    srv = broker.serve(procs, PORT, uid=U1, name="http.server",
                       cmd=[PYTHON, "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/"])
    wait_for(lambda: http_get(8000, "/nonexistent")[0] == 404 if listeners(8000) else False, 10,
             "http.server to serve on its own port")
    client = socket.create_connection(("127.0.0.1", PORT), timeout=5)   # handshake by the kernel; then waits
    try:
        said = wait_for(lambda: "accepts no connections" in srv.stderr() and srv.stderr(), 15,
                        "portctl to name the server that does not accept")
        assert f"python3 accepts no connections on tcp:[::]:{PORT}: 1 waiting, the oldest for 3 s" in said, said
        assert f"use `portctl run {PORT} -- {PYTHON} ...`" in said and "fd 3" in said, said
        assert said.count("accepts no connections") == 1, said
        st = broker.portctl("status", PORT, json=True).json[0]
        assert st["accepting"] is False and st["oldest_wait_ms"] >= 3000 and st["queued"] == 1, st
        assert "no server accepting for" in broker.portctl("status").stdout
    finally:
        client.close()
    srv.popen.kill()

    # A connection the server accepted and holds is not waiting, however old: with one
    # accepted 3 s ago and one just queued, the lease still has a server accepting. (A
    # port of its own: the connection above still waits in 8080's queue, the lease's.)
    port = PORT + 1
    broker.portctl("policy", "add", f"tcp:{port}", "--user", U1)
    one = broker.serve(procs, port, uid=U1, name="accept-one", cmd=[PYTHON, "-c", ACCEPT_ONE])
    wait_for(lambda: broker.portctl("status", port, check=False).returncode == 0, 10, f"the lease of {port}")
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    wait_for(lambda: "accepted" in one.output(), 10, "the server to accept the first connection")
    wait_for(lambda: established_lastack_ms(port) >= 3000, 10, "the accepted connection to be 3 s old")
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    st = broker.portctl("status", port, json=True).json[0]
    assert st["queued"] == 1 and st["accepting"] is True and st["oldest_wait_ms"] < 3000, st
    said = wait_for(lambda: "accepts no connections" in one.stderr() and one.stderr(), 15,
                    "portctl to name the server that stopped accepting")
    assert "1 waiting, the oldest for 3 s" in said, said
    first.close()
    second.close()


# Accepts one connection, says so, holds it and accepts no more.
ACCEPT_ONE = r"""
import signal, socket
s = socket.socket(fileno=3)
c, _ = s.accept()
print("accepted", flush=True)
signal.pause()
"""


def established_lastack_ms(port):
    """The largest lastack (ms since the peer's last segment) of the established connections
    on local port, as ss -i shows it; 0 when there is none."""
    out = subprocess.run(["ss", "-Htin", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return max([int(w.split(":")[1]) for w in out.split() if w.startswith("lastack:")] or [0])


# --- socat ------------------------------------------------------------------------------


@pytest.mark.parametrize("port,via_exec", [(PORT, False), (80, False), (PORT, True)])
def test_socat_listen_gets_the_brokered_socket(broker, groups, port, via_exec):
    """socat binds [::]:PORT v6only itself; it gets the IPv6-only brokered
    socket (IPv4 clients are refused, as they would be without the broker).
    Port 80 too: brokerd binds it, so the non-root server needs no
    privilege (CAP_NET_BIND_SERVICE) of its own. via_exec: a shell execs
    socat (the shim survives exec)."""
    need_run()
    need_tool(SOCAT, "socat")
    broker.portctl("policy", "add", f"tcp:{port}", "--user", U1)
    socat = [SOCAT, f"TCP6-LISTEN:{port},ipv6only=1,reuseaddr,fork", "SYSTEM:echo ok socat"]
    if via_exec:
        socat = ["/bin/sh", "-c", 'exec "$@"', "sh", *socat]
    g = groups(portctl_argv(broker, "run", port, "--", *socat), name="socat")

    def answered():
        try:
            return fetch(port, "::1")
        except ConnectionRefusedError:
            return None
    assert wait_for(answered, 10, "socat to answer") == "ok socat\n"
    with pytest.raises(ConnectionRefusedError):
        fetch(port)
    ls = listeners(port)
    assert len(ls) == 1 and ls <= socket_inodes(g.pid) & socket_inodes(broker.pid), ls
    assert [l["endpoint"] for l in broker.portctl("status", json=True).json] == [f"tcp6:[::]:{port}"]


# --- servers' own logs ------------------------------------------------------------------


def unexpected_lines(text, allowed):
    """The lines of a server's log that match none of the allowed regexes
    (each matched from the line's start): its errors and warnings, and
    anything else it should not have had to say."""
    return [l for l in text.splitlines() if l.strip() and not any(re.match(p, l) for p in allowed)]


def udp_lost_in_flight(res, read):
    """Moves the UDP queries of a load (ExchangeLoad) that nobody answered
    but a killed server had read (read: their indexes, from the killed
    instances' logs) from timed_out to lost: the datagram's counterpart of
    a connection accepted and never answered. Returns their indexes; the
    others stay timed out (the kernel dropped them, or nobody read them)."""
    lost = [i for i in res.pop("udp_unanswered", []) if i in read]
    res["timed_out"] -= len(lost)
    res["lost"] += len(lost)
    res["lost_udp"] = len(lost)
    return lost


# Every transport and family a wildcard server listens on, in turn: exchange
# i of a load goes over ROUTES[i % 4], so each socket gets a quarter of it.
ROUTES = [("udp", "127.0.0.1"), ("tcp", "::1"), ("udp", "::1"), ("tcp", "127.0.0.1")]


def route_sockets(port, routes=ROUTES):
    """One client socket per route, connected to port: {route: socket}."""
    out = {}
    for transport, addr in routes:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        if transport == "tcp":
            s = socket.create_connection((addr, port), timeout=5)
        else:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.connect((addr, port))
        out[(transport, addr)] = s
    return out


def wait_serving_routes(broker, g, port, answers):
    """Waits until server g answers over every route (answers(route) is
    true), then checks its four sockets, TCP and UDP, IPv4 and IPv6-only:
    brokerd's, and held by g."""
    for route in ROUTES:
        wait_for(lambda: answers(route) or not g.alive(), 10, f"{g.proc.name} {g.pid} to answer over {route}")
        assert g.alive(), f"{g.proc.name} exited: {g.proc.stderr()[-2000:]}"
    for proto in ("tcp", "udp"):
        assert_brokered_listeners(broker, [g.pid], 2, port=port, proto=proto)


def assert_leases(broker, endpoints):
    """brokerd's leases are exactly endpoints, each owned by U1 and handed
    out at every start of the server."""
    st = {l["endpoint"]: l for l in broker.portctl("status", json=True).json}
    assert set(st) == set(endpoints), st
    assert all(l["owner_uid"] == U1 and l["handouts"] >= KILLS + 1 for l in st.values()), st


def wildcard_leases(port):
    """The leases of a server binding 0.0.0.0:port and [::]:port IPv6-only, TCP and UDP."""
    return [f"{p}:0.0.0.0:{port}" for p in ("tcp", "udp")] + [f"{p}6:[::]:{port}" for p in ("tcp", "udp")]


# --- dnsmasq: DNS over UDP and TCP, IPv4 and IPv6, on port 53 -------------------------------

DNSMASQ = "/usr/sbin/dnsmasq"
DNS_PORT = 53
DNS_ZONE = "test.example"
DNS_ANSWER = "127.0.0.9"        # what dnsmasq answers for every name in DNS_ZONE


def dnsmasq_argv():
    """dnsmasq in its default wildcard mode (0.0.0.0 and [::] IPv6-only, UDP
    and TCP), answering DNS_ZONE itself and asking nobody else; in the
    foreground, logging every query (with the client's address) to stderr.
    Run as a non-root uid it never changes user, and needs no pid file."""
    return [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--port={DNS_PORT}", f"--address=/{DNS_ZONE}/{DNS_ANSWER}", "--log-queries", "--log-facility=-",
            "--pid-file="]


DNSMASQ_LOG = [rf"dnsmasq\[\d+\]: ({p})$" for p in (
    r"started, version \S+ cachesize \d+", r"compile time options: .*",
    r"warning: no upstream servers configured",        # --no-resolv, and no --server: as meant
    r"cleared cache", r"query\[A\] \S+ from \S+", rf"config \S+ is {re.escape(DNS_ANSWER)}")]


def dns_query(name, qid):
    """A DNS query (recursion desired) for the A record of name, as bytes."""
    qname = b"".join(bytes([len(l)]) + l for l in name.encode().split(b".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)


def dns_answer(reply, qid):
    """The addresses of the A records in reply, a response to query qid
    without error; None when it is not one."""
    def skip_name(pos):
        while reply[pos] and reply[pos] < 0xc0:
            pos += 1 + reply[pos]
        return pos + (2 if reply[pos] else 1)
    try:
        rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", reply[:12])
        if rid != qid or not flags & 0x8000 or flags & 0x020f:    # QR; TC, RCODE
            return None
        pos = 12
        for _ in range(qd):
            pos = skip_name(pos) + 4
        out = []
        for _ in range(an):
            pos = skip_name(pos)
            rtype, _, _, rdlen = struct.unpack(">HHIH", reply[pos:pos + 10])
            if rtype == 1 and rdlen == 4:
                out.append(socket.inet_ntoa(reply[pos + 10:pos + 14]))
            pos += 10 + rdlen
        return out
    except (IndexError, struct.error):
        return None


def dns_frame(transport, query):
    """query as sent over transport: TCP puts its length before it."""
    return query if transport == "udp" else struct.pack(">H", len(query)) + query


def dns_unframe(transport, data):
    """The message in data received over transport, or None until it is all there."""
    if transport == "udp":
        return data or None
    return data[2:] if len(data) >= 2 + int.from_bytes(data[:2], "big") else None


def dns_ask(route, name, qid=1):
    """Asks for name's A record over route ((transport, addr)); returns the addresses or None."""
    try:
        s = route_sockets(DNS_PORT, [route])[route]
    except OSError:
        return None
    with s:
        s.settimeout(1)
        try:
            s.sendall(dns_frame(route[0], dns_query(name, qid)))
            data = b""
            while (msg := dns_unframe(route[0], data)) is None:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                data += chunk
        except OSError:
            return None
    return dns_answer(msg, qid)


class DnsLoad(ExchangeLoad):
    """ExchangeLoad for a DNS server: exchange i asks for the A record of
    dns_load_name(i) over its route and expects DNS_ANSWER."""

    def request(self, i, transport):
        return dns_frame(transport, dns_query(dns_load_name(i), i & 0xffff))

    def reply(self, i, transport, data, eof):
        msg = dns_unframe(transport, data)
        if msg is None:
            return (False, data[:40].hex()) if eof else None
        got = dns_answer(msg, i & 0xffff)
        return got == [DNS_ANSWER], " ".join(got) if got is not None else msg[:40].hex()


def dns_load_name(i):
    return f"q{i}.{DNS_ZONE}"


def test_dnsmasq_udp_and_tcp_survive_kill9(broker, groups):
    """dnsmasq in its default wildcard mode binds 0.0.0.0:53 and [::]:53
    (IPv6-only), UDP and TCP: four brokered sockets of port 53, which the
    non-root uid gets by its two rules, udp:53 and tcp:53. It answers
    queries over each of them, IPv4 ones through the IPv4 socket (where it
    finds the IP_PKTINFO it asked for) and logs each client as it is,
    127.0.0.1 or ::1, across SIGKILLs of dnsmasq and its TCP children."""
    need_run()
    need_tool(DNSMASQ, "dnsmasq-base")
    for proto in ("udp", "tcp"):
        broker.portctl("policy", "add", f"{proto}:{DNS_PORT}", "--user", U1)
    started, asked = [], {}         # the groups; {name: the client address dnsmasq must log}

    def start():
        g = groups(portctl_argv(broker, "run", f"udp:{DNS_PORT}", f"tcp:{DNS_PORT}", "--", *dnsmasq_argv()),
                   name="dnsmasq")
        started.append(g)
        return g

    def answers(route):
        name = f"p{len(asked)}.{DNS_ZONE}"
        asked[name] = route[1]
        return dns_ask(route, name) == [DNS_ANSWER]

    def ready(g):
        wait_serving_routes(broker, g, DNS_PORT, answers)

    res, kills, g = kill_restart_cycle(broker, start, ready, lambda: DnsLoad(DNS_PORT, RATE, DURATION, ROUTES),
                                       lease=f"tcp4:{DNS_PORT}", port=DNS_PORT, protos=("tcp", "udp"))
    logs = [x.proc.stderr() for x in started]
    queries = [m.groups() for text in logs for m in re.finditer(r"query\[A\] (\S+) from (\S+)$", text, re.M)]
    udp_lost_in_flight(res, {int(i) for text in logs[:-1]
                             for i in re.findall(rf"query\[A\] q(\d+)\.{re.escape(DNS_ZONE)} from", text)})
    s = check_and_save("thirdparty_dnsmasq", res, kills, listening=2, lost_per_kill=1, server="dnsmasq",
                       queries_logged=len(queries))
    assert s["bodies"] == {DNS_ANSWER: res["ok"]}, s
    # dnsmasq's own view: every query, from the load or a probe, came from
    # the address its client used, as it used it (no ::ffff:127.0.0.1).
    asked.update({dns_load_name(i): ROUTES[i % len(ROUTES)][1] for i in range(res["attempted"])})
    wrong = [(n, a) for n, a in queries if asked.get(n) != a]
    assert not wrong, wrong[:10]
    assert {a for _, a in queries} == {"127.0.0.1", "::1"}, queries[:10]
    bad = [l for text in logs for l in unexpected_lines(text, DNSMASQ_LOG)]
    assert not bad, bad[:20]
    assert_leases(broker, wildcard_leases(DNS_PORT))


# --- memcached: TCP and UDP, IPv4 and IPv6 -------------------------------------------------

MEMCACHED = "/usr/bin/memcached"
MC_PORT = 11211

MEMCACHED_LOG = [                # what memcached -vv says of the load's requests, and nothing else
    r"slab class +\d+: chunk size +\d+ perslab +\d+$", r"<\d+ server listening \((auto-negotiate|udp)\)$",
    r"<\d+ send buffer was \d+, now \d+$", r"<\d+ new auto-negotiating client connection$",
    r"\d+: Client using the ascii protocol$", r"<\d+ get k\d*$", r">\d+ END$", r"<\d+ connection closed\.$"]


def memcached_frame(transport, i, command):
    """command as sent over transport: UDP puts memcached's frame header
    before it (request id i, datagram 0 of 1)."""
    return command if transport == "tcp" else struct.pack(">HHHH", i & 0xffff, 0, 1, 0) + command


class MemcachedLoad(ExchangeLoad):
    """ExchangeLoad for memcached: exchange i asks `get k{i}` (a miss) over
    its route and expects END."""

    def request(self, i, transport):
        return memcached_frame(transport, i, f"get k{i}\r\n".encode())

    def reply(self, i, transport, data, eof):
        if transport == "udp":
            if data[:6] != struct.pack(">HHH", i & 0xffff, 0, 1):
                return False, data[:40].hex()
            data = data[8:]
        if not eof and not data.endswith(b"\r\n"):
            return None
        return data == b"END\r\n", data.decode(errors="replace").strip()


def memcached_clients(port):
    """memcached's own view of a client over each route: the `addr`s that
    `stats conns` shows with the port of the very connection (or UDP
    socket) asking, and that client's address as memcached would write it
    for a socket of the client's own family. {route: (seen, expected)}."""
    out = {}
    for (transport, addr), s in route_sockets(port).items():
        with s:
            s.send(memcached_frame(transport, 1, b"stats conns\r\n"))
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                assert chunk, f"memcached closed {transport} {addr} before END: {data!r}"
                data += chunk[8:] if transport == "udp" else chunk
            me = s.getsockname()[1]
            seen = [l.split()[2] for l in data.decode().split("\r\n") if ":addr " in l and l.endswith(f":{me}")]
            expected = f"{transport}:{addr}:{me}" if ":" not in addr else f"{transport}6:[{addr}]:{me}"
            out[(transport, addr)] = (seen, expected)
    return out


def test_memcached_tcp_and_udp_survive_kill9(broker, groups):
    """memcached -p and -U the same port, run as the non-root uid itself
    (it refuses to run as root without -u), binds 0.0.0.0 and [::] IPv6-only
    for each: four brokered sockets, two rules. Its two TCP listeners must be
    two sockets: were they one, each connection would wake both and one
    accept4() would fail, which memcached reports on stderr every time
    (`accept4(): Resource temporarily unavailable`). Its log (-vv) may hold
    nothing but its requests; `stats conns` shows each client as it is."""
    need_run()
    need_tool(MEMCACHED, "memcached")
    for proto in ("tcp", "udp"):
        broker.portctl("policy", "add", f"{proto}:{MC_PORT}", "--user", U1)
    started = []

    def start():
        g = groups(portctl_argv(broker, "run", f"tcp:{MC_PORT}", f"udp:{MC_PORT}", "--", MEMCACHED, "-vv",
                                "-p", MC_PORT, "-U", MC_PORT), name="memcached")
        started.append(g)
        return g

    def answers(route):
        try:
            with route_sockets(MC_PORT, [route])[route] as s:
                s.settimeout(1)
                s.send(memcached_frame(route[0], 7, b"get k\r\n"))
                return s.recv(64).endswith(b"END\r\n")
        except OSError:
            return False

    def ready(g):
        wait_serving_routes(broker, g, MC_PORT, answers)

    res, kills, g = kill_restart_cycle(broker, start, ready,
                                       lambda: MemcachedLoad(MC_PORT, RATE, DURATION, ROUTES),
                                       lease=f"tcp4:{MC_PORT}", port=MC_PORT, protos=("tcp", "udp"))
    logs = [x.proc.stderr() for x in started]
    udp_lost_in_flight(res, {int(n) for text in logs[:-1] for n in re.findall(r"^<\d+ get k(\d+)$", text, re.M)})
    s = check_and_save("thirdparty_memcached", res, kills, listening=2, lost_per_kill=1, server="memcached")
    assert s["bodies"] == {"END": res["ok"]}, s
    spam = [l for text in logs for l in text.splitlines() if "accept" in l]
    assert not spam, f"{len(spam)} lines like {spam[:3]}"
    bad = [l for text in logs for l in unexpected_lines(text, MEMCACHED_LOG)]
    assert not bad, bad[:20]
    clients = memcached_clients(MC_PORT)
    assert all(seen == [expected] for seen, expected in clients.values()), clients
    assert_leases(broker, wildcard_leases(MC_PORT))


# --- apache2, prefork ------------------------------------------------------------------------

APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
APACHE_CHILDREN = 3

APACHE_ERROR_LOG = [rf"\[[^]]+\] \[[\w:]+\] \[pid \d+(:tid \d+)?\] {p}" for p in (
    r"AH00163: Apache/\S+ \(Debian\) configured -- resuming normal operations$",
    r"AH00094: Command line: ",
    r"AH00098: pid file \S+ overwritten -- Unclean shutdown of previous Apache run\?$")]  # after a SIGKILL


def apache_dir(scratch, listen, uid=U1):
    """A ServerRoot for an unprivileged apache2 (prefork, APACHE_CHILDREN
    children): config, pid file, logs and runtime directory inside it; GET
    /ok answers "ok apache". Its access log has one line per request: the
    client's address (%a), the child's pid, the request, the status."""
    need_tool(APACHE, "apache2")
    d = scratch / "apache"
    for sub in ("www", "run", "logs"):
        (d / sub).mkdir(parents=True)
    (d / "www" / "ok").write_text("ok apache\n")
    (d / "httpd.conf").write_text(
        f"ServerRoot {d}\n"
        f"ServerName test\n"
        f"DefaultRuntimeDir {d}/run\n"
        f"PidFile {d}/run/apache2.pid\n"
        f"ErrorLog {d}/logs/error.log\n"
        f"LogLevel warn\n"
        f"LoadModule mpm_prefork_module {APACHE_MODULES}/mod_mpm_prefork.so\n"
        f"LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so\n"
        f"StartServers {APACHE_CHILDREN}\n"
        f"MinSpareServers {APACHE_CHILDREN}\n"
        f"MaxSpareServers {APACHE_CHILDREN + 2}\n"
        f"Listen {listen}\n"
        f"DocumentRoot {d}/www\n"
        f"<Directory {d}/www>\n"
        f"    Require all granted\n"
        f"</Directory>\n"
        f"LogFormat \"%a %P \\\"%r\\\" %>s\" brokered\n"
        f"CustomLog {d}/logs/access.log brokered\n")
    for p in (d, *d.rglob("*")):
        os.chown(p, uid, uid)
    return d


def apache_argv(d):
    return [APACHE, "-d", d, "-f", d / "httpd.conf", "-DFOREGROUND"]


@pytest.mark.parametrize("listen,lease", [(f"{PORT}", f"tcp:[::]:{PORT}"),
                                          (f"0.0.0.0:{PORT}", f"tcp:0.0.0.0:{PORT}")])
def test_apache_prefork_survives_kill9(broker, groups, scratch, listen, lease):
    """apache2 with mpm_prefork, unprivileged, its parent and children
    SIGKILLed at once. `Listen 8080` makes one dual-stack [::] socket (Debian
    builds apache with IPv4-mapped addresses: it would not make a second one
    for `Listen 0.0.0.0:8080` beside `Listen [::]:8080` either), whose lease is
    the dual-stack tcp:[::]:8080; `Listen 0.0.0.0:8080` an AF_INET one,
    tcp:0.0.0.0:8080, that IPv6 clients cannot reach. Its access log shows
    each client's address; its error log says nothing but that it started
    (and, after a SIGKILL, that it found its old pid file)."""
    need_run()
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    d = apache_dir(scratch, listen)
    dual = lease.startswith("tcp:[::]")
    started = []

    def start():
        g = groups(portctl_argv(broker, "run", PORT, "--", *apache_argv(d)), name="apache2")
        started.append(g)
        return g

    def ready(g):
        wait_for(lambda: len(children(g.pid)) >= APACHE_CHILDREN or not g.alive(), 10,
                 f"apache2 {g.pid} to start {APACHE_CHILDREN} children")
        assert g.alive(), f"apache2 exited: {g.proc.stderr()[-2000:]}"

        def answered():
            try:
                return http_get(PORT, "/ok") == (200, "ok apache\n")
            except OSError:
                return False
        wait_for(answered, 10, f"apache2 {g.pid} to answer")
        assert_brokered_listeners(broker, [g.pid, *children(g.pid)])

    res, kills, g = kill_restart_cycle(broker, start, ready,
                                       lambda: HttpLoad(PORT, RATE, DURATION, path="/ok"), lease=lease)
    if dual:
        assert http_get(PORT, "/ok", addr="::1") == (200, "ok apache\n")
    else:
        with pytest.raises(ConnectionRefusedError):
            http_get(PORT, "/ok", addr="::1")
    s = check_and_save(f"thirdparty_apache_prefork_{'dual' if dual else 'v4'}", res, kills, lost_per_kill=1,
                       server=f"apache2 prefork, Listen {listen}")
    assert s["bodies"] == {"ok apache\n": res["ok"]}, s
    assert_leases(broker, [lease])
    # apache's own view: the load's clients (and the IPv6 one) as they are,
    # each request answered by one of the children, which took turns.
    log = [l.split() for l in (d / "logs" / "access.log").read_text().splitlines()]
    want = {"127.0.0.1", "::1"} if dual else {"127.0.0.1"}
    assert {l[0] for l in log} == want, log[:5]
    assert all(l[2:] == ['"GET', "/ok", 'HTTP/1.0"', "200"] for l in log), log[:5]
    assert sum(1 for l in log if l[0] == "127.0.0.1") >= res["ok"], (len(log), res["ok"])
    last = set(children(g.pid))
    assert len({l[1] for l in log if int(l[1]) in last}) >= 2, "one child of apache took every request"
    bad = unexpected_lines((d / "logs" / "error.log").read_text(), APACHE_ERROR_LOG)
    assert not bad, bad[:20]
    assert not any(x.proc.stderr().strip() for x in started), [x.proc.stderr()[-500:] for x in started]


# --- what LD_PRELOAD cannot reach -----------------------------------------------


def unpreloadable(kind, scratch):
    """A program LD_PRELOAD cannot reach, and the word portctl's refusal names."""
    prog = scratch / kind
    if kind == "static":
        src = scratch / "static.c"
        src.write_text("int main(void) { return 0; }\n")
        cp = subprocess.run(["gcc", "-static", "-o", prog, src], capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        return prog, "statically linked"
    if kind == "go":
        # What portctl looks for in a (cgo, dynamically linked) Go binary: Go's
        # build-info section. Its runtime makes the bind system call itself.
        src = scratch / "go.c"
        src.write_text('__attribute__((section(".go.buildinfo"), used)) static const char info[32] = '
                       '"\\xff Go buildinf:";\nint main(void) { return 0; }\n')
        cp = subprocess.run(["gcc", "-o", prog, src], capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        return prog, "Go program"
    shutil.copy("/usr/bin/true", prog)
    if kind == "foreign":
        # The same program marked as built for 32-bit x86 (e_machine EM_386):
        # the loader would skip a 64-bit shim for it.
        data = bytearray(prog.read_bytes())
        data[18:20] = (3).to_bytes(2, "little")
        prog.write_bytes(bytes(data))
        return prog, "another architecture"
    if kind == "setuid":
        prog.chmod(0o4755)              # root's, setuid
        return prog, "setuid"
    # File capabilities put the loader in secure mode too (AT_SECURE).
    subprocess.run(["setcap", "cap_net_bind_service+ep", prog], check=True, timeout=10)
    return prog, "capabilit"


@pytest.mark.parametrize("kind", [
    "static", "setuid", "filecaps", "go", "foreign",
])
def test_run_refuses_what_ld_preload_cannot_reach(broker, scratch, kind):
    """A static binary has no dynamic loader to preload into, and the loader
    ignores LD_PRELOAD for setuid/setgid programs and ones with file
    capabilities: portctl run says so in one line (pointing to socket
    activation) instead of running a server whose bind() would bypass the
    broker."""
    need_run()
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    prog, why = unpreloadable(kind, scratch)
    for endpoints in ([PORT], []):
        r = broker.portctl("run", *endpoints, "--", prog, uid=U1, check=False)
        assert r.returncode == 1 and why in r.stderr and str(prog) in r.stderr, r
        assert r.stderr.startswith("portctl: ") and r.stderr.count("\n") == 1, r
    # The same program is fine under socket activation (portctl get); the
    # relabelled one cannot run here at all.
    if kind != "foreign":
        broker.portctl("get", PORT, "--", prog, uid=U1)
