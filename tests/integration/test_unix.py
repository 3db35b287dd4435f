# SPDX-License-Identifier: MIT
"""A Unix-socket backend behind nginx, SIGKILLed under load.

nginx (master + 2 workers, uid NGINX_UID, listening on 127.0.0.1:PORT
itself) proxies `location /app` to `http://unix:SOCKET:`, where gunicorn
(sync worker class, WORKERS workers, uid U1) runs a WSGI app answering "ok
gunicorn PID". Under a bounded loopback HTTP load (RATE requests/s for
DURATION s) gunicorn's whole process group is SIGKILLed and restarted KILLS
times. Every response nginx gives is classified, and so is every line of
nginx's error log: `connect() to unix:... failed` (nobody listening, no
file, a full backlog) is an error nginx makes of a gap, "upstream
prematurely closed connection" one it makes of a request a killed worker had
taken ("lost in flight": no holder of the socket can save those).

  * gunicorn binding its socket itself (`--bind unix:PATH`, in a directory
    of its own): the contrast. Each restart leaves a gap in which nginx's
    connect() fails (ECONNREFUSED on the dead socket's file, ENOENT once
    gunicorn unlinked it to bind again) and answers 502.

Numbers go to tests/integration/results/restart-BUILD.json (and stdout with -s).
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HttpLoad, children, http_get, save_results, wait_for
from test_thirdparty import groups  # noqa: F401  (the fixture)
from test_thirdparty import need_tool, nginx_argv, nginx_dir, nginx_ready

pytestmark = pytest.mark.usefixtures("netns")

U1 = 4242               # gunicorn's uid
NGINX_UID = 4343        # nginx's uid and gid
PORT = 8080             # nginx's
RATE = 150              # requests per second
DURATION = 8            # seconds of load
KILLS = 3
WORKERS = 2
GUNICORN = "/usr/bin/gunicorn"

APP = '''\
import os


def application(environ, start_response):
    body = ("ok gunicorn %d\\n" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


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
    bind: its --bind options (none: the sockets from LISTEN_FDS)."""
    need_tool(GUNICORN, "gunicorn")
    return [GUNICORN, "--chdir", app, "--workers", WORKERS, "--worker-class", "sync", *bind, "app:application"]


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
# errno), a request the upstream closed or reset before it answered (lost in
# flight), a timeout. Any other line but nginx's own notices is unexpected.
NGINX_CONNECT_FAILED = re.compile(r"\[error\] .* connect\(\) to unix:\S+ failed \((\d+): [^)]*\) while connecting")
NGINX_LOST = re.compile(r"\[error\] .* (upstream prematurely closed connection|recv\(\) failed \(104: "
                        r"Connection reset by peer\)) while reading response header from upstream")
NGINX_TIMEOUT = re.compile(r"\[error\] .* upstream timed out")
NGINX_NOTICE = re.compile(r"\S+ \S+ \[notice\] ")


def nginx_upstream_errors(d):
    """nginx's error log, counted: {"connect_failed": {errno: n}, "lost": n,
    "timed_out": n, "other": [lines]}."""
    out = {"connect_failed": {}, "lost": 0, "timed_out": 0, "other": []}
    for line in (d / "error.log").read_text(errors="replace").splitlines():
        if m := NGINX_CONNECT_FAILED.search(line):
            e = int(m.group(1))
            out["connect_failed"][e] = out["connect_failed"].get(e, 0) + 1
        elif NGINX_LOST.search(line):
            out["lost"] += 1
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
                           "lost_in_flight": nginx_log["lost"], "timed_out": nginx_log["timed_out"]},
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
    assert res["bad_reply"] == failed + errs["lost"], s
    assert res["ok"] + res["bad_reply"] == res["attempted"], s
    assert [b for b in s["bodies"] if b != "ok gunicorn PID" and "502 Bad Gateway" not in b] == [], s
    # A graceful stop removes the file: gunicorn unlinks what it bound.
    os.kill(g.pid, signal.SIGTERM)
    g.proc.popen.wait(timeout=30)
    assert not sock.exists()
