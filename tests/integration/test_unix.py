# SPDX-License-Identifier: MIT
"""A Unix-socket backend behind nginx, SIGKILLed under load.

nginx (master + 2 workers, uid NGINX_UID, listening on 127.0.0.1:PORT
itself) proxies `location /app` to `http://unix:SOCKET:`, where gunicorn
(sync worker class, WORKERS workers, uid U1) runs a WSGI app answering "ok
gunicorn PID". Under a bounded loopback HTTP load (RATE requests/s for
DURATION s) gunicorn's whole process group is SIGKILLed and restarted KILLS
times. Every response nginx gives is classified, and so is every line of
nginx's error log: `connect() to unix:... failed` (nobody listening, no
file, a full backlog) is an error nginx makes of a gap; "upstream
prematurely closed connection" (or reset) one it makes of a connection that
died unanswered: with brokerd's socket, one a killed worker had taken ("lost
in flight": no holder of the socket can save those); without it, also those
waiting in the backlog of the socket that died with gunicorn.

  * `portctl get unix:DIR/app.sock -- gunicorn ...` (socket activation:
    gunicorn takes fd 3 from LISTEN_FDS) and `portctl run unix:DIR/app.sock
    -- gunicorn --bind unix:DIR/app.sock ...` (the shim: gunicorn's unlink()
    of the path before bind() and at exit is kept from brokerd's file, its
    bind() gets brokerd's socket). brokerd runs with `--unix-dir DIR`, a
    root-owned 0755 directory, and a rule `unix:DIR/ --user U1
    --socket-group NGINX_UID --socket-mode 0660`. nginx never fails to
    connect: while gunicorn is down its connections wait in brokerd's
    socket (the test sees them queue), and the restarted gunicorn serves
    them. The socket file is brokerd's throughout, one inode with the rule's
    owner, group and mode, and outlives a graceful stop (SIGTERM) too.
  * gunicorn binding its socket itself (`--bind unix:PATH`, in a directory
    of its own): the contrast. Each restart leaves a gap in which nginx's
    connect() fails (ECONNREFUSED on the dead socket's file, ENOENT once
    gunicorn unlinked it to bind again) and answers 502.
  * the shim's rules for Unix paths: only a named path is brokered; the
    server's unlink(), chmod() and chown() of it succeed and change nothing;
    other paths, and every path when none is named, are the server's own.

Numbers go to tests/integration/results/restart-BUILD.json (and stdout with -s).
"""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import PYTHON, HttpLoad, children, http_get, save_results, socket_inodes, wait_for
from test_thirdparty import groups  # noqa: F401  (the fixture)
from test_thirdparty import need_run, need_tool, nginx_argv, nginx_dir, nginx_ready, nginx_workers, portctl_argv

pytestmark = pytest.mark.usefixtures("netns")

U1 = 4242               # gunicorn's uid
NGINX_UID = 4343        # nginx's uid and gid
PORT = 8080             # nginx's
RATE = 300              # requests per second
DURATION = 8            # seconds of load
KILLS = 3
WORKERS = 2
LOST_PER_KILL = WORKERS  # a sync worker has one request at a time: a kill loses at most one per worker
SOCKET_MODE = 0o660
GUNICORN = "/usr/bin/gunicorn"

APP = '''\
import os


def application(environ, start_response):
    body = ("ok gunicorn %d\\n" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture
def broker(make_broker, unix_dir):
    """brokerd with --unix-dir unix_dir (groups, the fixture, starts servers under it)."""
    return make_broker("--unix-dir", unix_dir)


# --- Unix sockets, as the kernel shows them ---------------------------------------


def unix_listener(path):
    """The inode of the socket listening at path in this network namespace
    (/proc/net/unix: flag __SO_ACCEPTCON), or None."""
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        f = line.split()
        if len(f) >= 8 and f[7] == str(path) and int(f[3], 16) & 0x10000:
            return int(f[6])
    return None


def unix_accept_queue(path):
    """(connections waiting, backlog) of the listener at path, as ss shows
    them (Recv-Q, Send-Q), or None."""
    out = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True, timeout=10, check=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 5 and f[4] == str(path):
            return int(f[2]), int(f[3])
    return None


def unix_queue(path):
    """How many connections wait in the accept queue of the listener at path."""
    q = unix_accept_queue(path)
    return q and q[0]


def brokerd_sockets(broker):
    return set().union(*(socket_inodes(p) for p in broker.pids()))


def socket_file(path):
    """(inode, uid, gid, mode) of the file at path (not followed)."""
    st = os.lstat(path)
    return st.st_ino, st.st_uid, st.st_gid, st.st_mode


# --- gunicorn -------------------------------------------------------------------


def app_dir(scratch):
    """A directory with the WSGI app (app:application), readable by everyone."""
    d = scratch / "app"
    d.mkdir()
    (d / "app.py").write_text(APP)
    d.chmod(0o755)
    (d / "app.py").chmod(0o644)
    return d


def gunicorn_argv(app, *bind):
    """gunicorn with WORKERS sync workers running app:application from app;
    bind: its --bind options (none: the sockets from LISTEN_FDS). Started in
    app (env -C, which execs it: same pid): gunicorn 20.1 chdir()s to the
    directory it was started in before it reads --chdir, and the tests' may
    be one its uid cannot enter (a clone under /root)."""
    need_tool(GUNICORN, "gunicorn")
    return ["env", "-C", app, GUNICORN, "--chdir", app, "--workers", WORKERS, "--worker-class", "sync", *bind,
            "app:application"]


def gunicorn_workers(master):
    """The pids of master's gunicorn workers (not portctl's watcher, if any)."""
    out = []
    for p in children(master):
        try:
            if GUNICORN.encode() in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0"):
                out.append(p)
        except OSError:
            continue
    return out


def gunicorn_ready(g):
    """Waits until g's master has its WORKERS workers and one of them answered
    through nginx; returns the worker pids."""
    wait_for(lambda: len(gunicorn_workers(g.pid)) == WORKERS or not g.alive(), 20,
             f"gunicorn {g.pid} to start {WORKERS} workers")
    assert g.alive(), f"gunicorn exited: {g.proc.stderr()[-2000:]}"

    def answered():
        try:
            status, body = http_get(PORT, "/app")
        except OSError:
            return False
        return status == 200 and int(body.split()[-1]) in gunicorn_workers(g.pid)
    wait_for(answered, 20, f"a worker of gunicorn {g.pid} to answer through nginx")
    return gunicorn_workers(g.pid)


# --- nginx in front -----------------------------------------------------------------


def start_nginx(groups, scratch, sock):
    """nginx as NGINX_UID on 127.0.0.1:PORT, /app proxied to the Unix socket
    sock; returns (its group, its prefix directory)."""
    d = nginx_dir(scratch, "nginx", "ok nginx $pid", listen=f"127.0.0.1:{PORT}", uid=NGINX_UID,
                  server_extra=f"        location /app {{ proxy_pass http://unix:{sock}:; }}\n")
    g = groups(nginx_argv(d), uid=NGINX_UID, name="nginx")
    nginx_ready(g, "http")
    return g, d


# What nginx's error log says of its upstream: a failed connect() (with the
# errno; ENOENT is logged as crit), a connection the upstream closed or reset before it answered
# whole ("unanswered": a 502, or the headers passed on and the body cut
# short), a timeout. Any other line but nginx's own notices is
# unexpected.
NGINX_CONNECT_FAILED = re.compile(r"\[(error|crit)\] .* connect\(\) to unix:\S+ failed \((\d+): [^)]*\) while connecting")
NGINX_UNANSWERED = re.compile(r"\[error\] .* (upstream prematurely closed connection|recv\(\) failed \(104: "
                              r"Connection reset by peer\)) while reading (response header from )?upstream")
NGINX_TIMEOUT = re.compile(r"\[error\] .* upstream timed out")
NGINX_NOTICE = re.compile(r"\S+ \S+ \[notice\] ")


def nginx_upstream_errors(d):
    """nginx's error log, counted: {"connect_failed": {errno: n}, "unanswered": n,
    "timed_out": n, "other": [lines]}."""
    out = {"connect_failed": {}, "unanswered": 0, "timed_out": 0, "other": []}
    for line in (d / "error.log").read_text(errors="replace").splitlines():
        if m := NGINX_CONNECT_FAILED.search(line):
            e = int(m.group(2))
            out["connect_failed"][e] = out["connect_failed"].get(e, 0) + 1
        elif NGINX_UNANSWERED.search(line):
            out["unanswered"] += 1
        elif NGINX_TIMEOUT.search(line):
            out["timed_out"] += 1
        elif not NGINX_NOTICE.match(line):
            out["other"].append(line)
    return out


# --- the kill/restart cycle --------------------------------------------------------


def kill_restart_cycle(start, ready, while_down=lambda: {}):
    """Starts gunicorn, then the load through nginx; at even intervals
    SIGKILLs gunicorn's whole process group and restarts it, KILLS times.
    while_down() returns what to record of each gap. Returns (load result,
    per-kill details, the last group)."""
    g = start()
    ready(g)
    load = HttpLoad(PORT, RATE, DURATION, path="/app")
    kills = []
    for k in range(1, KILLS + 1):
        at = load.t0 + k * DURATION / (KILLS + 1)
        time.sleep(max(0.0, at - time.monotonic()))          # a schedule, not a wait for a condition
        t_kill = g.kill9()
        detail = while_down()
        g = start()
        ready(g)
        detail["gap_ms"] = round((time.monotonic() - t_kill) * 1000, 2)
        kills.append(detail)
    return load.result(), kills, g


def unexpected_bodies(bodies):
    """The bodies (as summary() shows them) that are neither the app's, nor
    nginx's 502 page, nor the start of the app's (a response cut short)."""
    return [b for b in bodies if b != "ok gunicorn PID" and "502 Bad Gateway" not in b and
            not "ok gunicorn ".startswith(b)]


def summary(name, res, kills, nginx_log, **extra):
    """The numbers of a cycle, saved under name; returns them."""
    keys = ("attempted", "ok", "refused", "timed_out", "lost", "bad_reply", "errors", "error_kinds", "reply_us",
            "bodies")
    s = {k: res[k] for k in keys if k in res}
    s["bodies"] = {("ok gunicorn PID" if b.startswith("ok gunicorn ") else b[:60]): 0 for b in res["bodies"]}
    for b, n in res["bodies"].items():
        s["bodies"]["ok gunicorn PID" if b.startswith("ok gunicorn ") else b[:60]] += n
    s.update(rate=RATE, duration_s=DURATION, kills=KILLS, gaps_ms=[k["gap_ms"] for k in kills],
             nginx_errors={"connect_failed": {os.strerror(e): n for e, n in nginx_log["connect_failed"].items()},
                           "unanswered": nginx_log["unanswered"], "timed_out": nginx_log["timed_out"]},
             **extra)
    save_results(name, s)
    return s


def test_gunicorn_binding_itself_leaves_a_gap_nginx_reports(groups, scratch):
    """The contrast: gunicorn binds its own socket (`--bind unix:PATH`, in a
    directory of its uid's), SIGKILLed and restarted under load. Between
    the kill and its new bind() nginx's connect() finds the dead socket's
    file (ECONNREFUSED) or, once the new gunicorn unlinked it, none
    (ENOENT): nginx answers 502, and says so in its error log."""
    own = scratch / "own"
    own.mkdir()
    os.chown(own, U1, U1)
    sock = own / "app.sock"
    app = app_dir(scratch)
    _, nd = start_nginx(groups, scratch, sock)

    def start():
        return groups(gunicorn_argv(app, "--bind", f"unix:{sock}"), uid=U1, name="gunicorn")

    res, kills, g = kill_restart_cycle(start, gunicorn_ready)
    errs = nginx_upstream_errors(nd)
    s = summary("unix_gunicorn_binds_itself", res, kills, errs, server="gunicorn --bind unix:PATH, no broker")
    assert res["attempted"] == RATE * DURATION, s
    assert res["refused"] == 0 and res["timed_out"] == 0 and res["errors"] == 0 and res["lost"] == 0, s
    assert not errs["other"], errs["other"][:10]
    # Every request nginx could not pass on is a 502, and each one is a line of its log.
    failed = sum(errs["connect_failed"].values())
    assert failed > 0 and set(errs["connect_failed"]) <= {2, 111}, errs
    assert res["bad_reply"] == failed + errs["unanswered"], s
    assert res["ok"] + res["bad_reply"] == res["attempted"], s
    assert unexpected_bodies(s["bodies"]) == [], s
    # A graceful stop removes the file: gunicorn unlinks what it bound.
    os.kill(g.pid, signal.SIGTERM)
    g.proc.popen.wait(timeout=30)
    assert not sock.exists()


# --- brokered: portctl get and portctl run ------------------------------------------


def gunicorn_under_portctl(broker, how, app, sock):
    """argv of gunicorn under portctl: `get` (its socket from LISTEN_FDS: no
    --bind, since gunicorn 20.1 given `--bind fd://3` as well takes fd 3
    twice and fails, EBADF) or `run` (the shim: it binds the path itself)."""
    if how == "get":
        return portctl_argv(broker, "get", f"unix:{sock}", "--", *gunicorn_argv(app))
    need_run()
    return portctl_argv(broker, "run", f"unix:{sock}", "--", *gunicorn_argv(app, "--bind", f"unix:{sock}"))


def assert_brokered_socket(broker, sock, pids, want):
    """The file at sock is want ((inode, uid, gid, mode)); the one socket
    listening there is brokerd's, and every pid holds it. Returns its inode."""
    assert socket_file(sock) == want, (socket_file(sock), want)
    ino = unix_listener(sock)
    assert ino is not None and ino in brokerd_sockets(broker), f"{sock}: listener {ino} is not brokerd's"
    for p in pids:
        assert ino in socket_inodes(p), f"pid {p} does not hold brokerd's socket {ino}"
    return ino


@pytest.mark.parametrize("how", ["get", "run"])
def test_gunicorn_behind_nginx_survives_kill9_on_a_brokered_unix_socket(broker, groups, scratch, unix_dir, how):
    """gunicorn (2 sync workers, uid U1) on brokerd's Unix socket, nginx
    (uid NGINX_UID, the socket's group) in front; gunicorn's process group
    SIGKILLed and restarted KILLS times under load. nginx never fails to
    connect; the only requests it cannot answer are those a killed worker
    had taken (lost in flight, each one a 502 and a line of its log). While
    gunicorn is down connections queue in brokerd's socket, which stays the
    one file, with the rule's owner, group and mode; it outlives a graceful
    stop, and a request made meanwhile is served by the next gunicorn."""
    sock = unix_dir / "app.sock"
    broker.portctl("policy", "add", f"unix:{unix_dir}/", "--user", U1, "--socket-group", NGINX_UID,
                   "--socket-mode", f"{SOCKET_MODE:04o}")
    app = app_dir(scratch)
    _, nd = start_nginx(groups, scratch, sock)
    started, seen = [], {}              # seen: the socket's file and listener at the first start

    def start():
        g = groups(gunicorn_under_portctl(broker, how, app, sock), uid=U1, name="gunicorn")
        started.append(g)
        return g

    def ready(g):
        workers = gunicorn_ready(g)
        seen.setdefault("file", socket_file(sock))      # as the first hand-out made it
        assert seen["file"][1:] == (U1, NGINX_UID, stat.S_IFSOCK | SOCKET_MODE), seen
        seen.setdefault("listener", assert_brokered_socket(broker, sock, [g.pid, *workers], seen["file"]))

    def while_down():
        ino = assert_brokered_socket(broker, sock, [], seen["file"])
        queued = wait_for(lambda: unix_queue(sock), 5, "a connection to queue while gunicorn is down")
        return {"listener": ino, "queued": queued}

    res, kills, g = kill_restart_cycle(start, ready, while_down)
    errs = nginx_upstream_errors(nd)
    st = broker.portctl("status", f"unix:{sock}", json=True).json[0]
    backlog = unix_accept_queue(sock)[1]
    s = summary(f"unix_gunicorn_{how}", res, kills, errs, server=f"gunicorn 20.1, 2 sync workers, portctl {how}",
                lost_in_flight=errs["unanswered"], queued_while_down=[k["queued"] for k in kills],
                handouts=st["handouts"], backlog=backlog)
    assert res["attempted"] == RATE * DURATION, s
    assert res["refused"] == 0 and res["timed_out"] == 0 and res["errors"] == 0 and res["lost"] == 0, s
    # nginx never failed to connect, nor timed out; every 502 is a request a killed worker had taken.
    assert errs["connect_failed"] == {} and errs["timed_out"] == 0 and not errs["other"], errs
    assert res["bad_reply"] == errs["unanswered"] <= KILLS * LOST_PER_KILL, s
    assert res["ok"] + res["bad_reply"] == res["attempted"], s
    assert unexpected_bodies(s["bodies"]) == [], s
    # Clients did wait in brokerd's socket while no gunicorn ran, and were served.
    assert all(k["queued"] >= 1 for k in kills) and res["reply_us"]["max"] >= 10_000, s
    # One socket throughout: brokerd's, at one file.
    assert {k["listener"] for k in kills} == {seen["listener"]}, (kills, seen)
    assert st["owner_uid"] == U1 and st["handouts"] >= KILLS + 1, st
    # The shim keeps brokerd's backlog (4096) from gunicorn's listen(2048);
    # a socket-activated gunicorn sets its own on the shared socket.
    assert backlog == (4096 if how == "run" else 2048), backlog
    for x in started:
        log = x.proc.stderr()
        assert f"Listening at: unix:{sock} " in log and "Traceback" not in log and "Retrying" not in log, log[-2000:]

    # A graceful stop (SIGTERM: gunicorn unlinks its socket's path, unless it
    # came from LISTEN_FDS) leaves brokerd's file; a request made while
    # gunicorn is stopped waits, and the next one serves it.
    os.kill(g.pid, signal.SIGTERM)
    assert g.proc.popen.wait(timeout=30) == 0, g.proc.stderr()[-2000:]
    wait_for(lambda: not g.members(), 10, "gunicorn's workers to exit")
    assert_brokered_socket(broker, sock, [], seen["file"])
    got = []
    waiting = threading.Thread(target=lambda: got.append(http_get(PORT, "/app", timeout=30)))
    waiting.start()
    wait_for(lambda: unix_queue(sock), 10, "the request to wait in brokerd's socket")
    g = start()
    workers = gunicorn_ready(g)
    waiting.join(30)
    assert got and got[0][0] == 200 and int(got[0][1].split()[-1]) in workers, got
    assert assert_brokered_socket(broker, sock, [g.pid, *workers], seen["file"]) == seen["listener"]
    assert [l for l in g.proc.stderr().splitlines() if "[ERROR]" in l or "Traceback" in l] == []
    assert started[-2].proc.stderr().count("Shutting down: Master") == 1, started[-2].proc.stderr()[-2000:]


# --- the shim's rules for Unix paths ---------------------------------------------------

# Binds each path given (a Unix stream socket, listening), shuts the socket
# down and connects to it, then tries to change the file's mode and remove
# it; prints JSON: per path the socket's inode, its getsockname(), the
# connect's outcome, and what the file was after each step (or why bind()
# failed).
UNIX_BINDER = r"""
import json, os, socket, sys
out = {}
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
    except OSError as e:
        out[path] = {"bind": e.strerror}
        continue
    s.listen()
    r = {"name": s.getsockname(), "ino": os.fstat(s.fileno()).st_ino}
    s.shutdown(socket.SHUT_RDWR)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        c.connect(s.getsockname())
        r["connect"] = "ok"
    except OSError as e:
        r["connect"] = e.strerror
    for step, call in (("chmod", lambda: os.chmod(path, 0o666)), ("unlink", lambda: os.unlink(path))):
        try:
            call()
            r[step] = "ok"
        except OSError as e:
            r[step] = e.strerror
        r[step + "_after"] = oct(os.lstat(path).st_mode) if os.path.lexists(path) else None
    out[path] = r
print(json.dumps(out))
"""


def test_shim_brokers_only_named_unix_paths(broker, procs, scratch, unix_dir):
    """Under `portctl run unix:DIR/a.sock`: a bind() to DIR/a.sock gets
    brokerd's socket (its name the path), and the server's chmod() and
    unlink() of it succeed without touching brokerd's file; a bind() to
    another path (the server's own directory) makes the server's own socket,
    which it may chmod and remove. With no endpoint named, no Unix bind is
    brokered, a named path's neither: it reaches the kernel (EADDRINUSE on
    brokerd's file). A server's shutdown() of brokerd's socket does nothing
    (the kernel would refuse every later connection to it, for good)."""
    need_run()
    broker.portctl("policy", "add", f"unix:{unix_dir}/", "--user", U1)
    own = scratch / "own"
    own.mkdir()
    os.chown(own, U1, U1)
    named, other = unix_dir / "a.sock", own / "b.sock"
    p = procs.spawn(portctl_argv(broker, "run", f"unix:{named}", "--", PYTHON, "-c", UNIX_BINDER, named, other),
                    uid=U1, name="binder")
    assert p.wait(30) == 0, p.stderr()
    out = json.loads(p.output())
    a, b = out[str(named)], out[str(other)]
    mode = oct(stat.S_IFSOCK | 0o600)                   # the rule's default mode
    assert a == {"name": str(named), "ino": a["ino"], "chmod": "ok", "chmod_after": mode, "unlink": "ok",
                 "unlink_after": mode, "connect": "ok"}, a
    assert a["ino"] == unix_listener(named) and a["ino"] in brokerd_sockets(broker), a
    assert b["name"] == str(other) and b["chmod"] == "ok" and b["chmod_after"] == oct(stat.S_IFSOCK | 0o666), b
    assert b["unlink"] == "ok" and b["unlink_after"] is None and b["connect"] == "Connection refused", b
    assert socket_file(named)[1:] == (U1, 0, stat.S_IFSOCK | 0o600), socket_file(named)
    # No endpoint named: the bind of the leased path is the server's own, and the kernel refuses it.
    p = procs.spawn(portctl_argv(broker, "run", "--", PYTHON, "-c", UNIX_BINDER, named), uid=U1, name="binder")
    assert p.wait(30) == 0, p.stderr()
    assert json.loads(p.output()) == {str(named): {"bind": "Address already in use"}}
    assert unix_listener(named) == a["ino"]


def unix_http_get(path, timeout=5.0):
    """One HTTP/1.0 GET / over the Unix socket at path; returns the body (str)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace")


def test_nginx_listening_on_a_named_unix_path_keeps_brokerds_file(broker, groups, scratch, unix_dir):
    """nginx `listen unix:PATH` (master + 2 workers, uid U1) under `portctl
    run unix:PATH`: its bind() gets brokerd's socket, its chmod() of the
    file to 0666 leaves the rule's mode, and its unlink() of it at a
    graceful stop (SIGQUIT) leaves the file, where connections still queue."""
    need_run()
    sock = unix_dir / "nginx.sock"
    broker.portctl("policy", "add", f"unix:{unix_dir}/", "--user", U1)
    d = nginx_dir(scratch, "nginx", "ok nginx $pid", listen=f"unix:{sock}")
    g = groups(portctl_argv(broker, "run", f"unix:{sock}", "--", *nginx_argv(d)), name="nginx")
    wait_for(lambda: len(nginx_workers(g.pid)) == 2 or not g.alive(), 10, "nginx's workers")
    assert g.alive(), g.proc.stderr()[-2000:]
    body = wait_for(lambda: os.path.exists(sock) and unix_http_get(sock), 10, "nginx to answer")
    assert int(body.split()[-1]) in nginx_workers(g.pid), body
    file = socket_file(sock)
    assert file[1:] == (U1, 0, stat.S_IFSOCK | 0o600), file      # the rule's default owner, group and mode
    ino = assert_brokered_socket(broker, sock, [g.pid, *nginx_workers(g.pid)], file)
    os.kill(g.pid, signal.SIGQUIT)
    assert g.proc.popen.wait(timeout=30) == 0, g.proc.stderr()[-2000:]
    assert assert_brokered_socket(broker, sock, [], file) == ino
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(str(sock))
        assert unix_queue(sock) == 1
    log = (d / "error.log").read_text()
    assert "[emerg]" not in log and "[alert]" not in log and "[crit]" not in log, log[-2000:]
