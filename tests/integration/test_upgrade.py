# SPDX-License-Identifier: MIT
"""Zero-downtime upgrade of an unmodified nginx with `portctl upgrade`.

The old nginx (master + 2 workers, non-root uid with a rule) runs under
`portctl run 8080 -- nginx ...old.conf...` and answers "ok nginx-old PID".
Under a continuous bounded HTTP load, `portctl upgrade --pid OLD 8080 --
nginx ...new.conf...` starts a new nginx answering "ok nginx-new PID" on the
same brokered socket; once a new worker registers the socket with epoll the
watcher sends SIGQUIT to the old master, whose graceful shutdown finishes
what its workers accepted and exits. SLOW_REQUESTS slow responses (nginx
limit_rate) are in progress at the old nginx when the upgrade starts.
Asserted:

  * not one connection fails: no refusal, timeout, loss, error or bad reply;
  * every body is the old version's or the new one's, and both were seen;
  * every connection started after the old master exited got the new one;
  * the slow responses complete, whole, from the old version, and the old
    master exits only after them;
  * the watcher says so on stderr, in two lines naming both pids;
  * the old master and workers are gone, the new ones hold brokerd's socket,
    the only listener on the port.

The numbers go to tests/integration/results/restart-BUILD.json (and stdout
with -s).
"""

import re
import socket
import time

import pytest

from conftest import HttpLoad, http_get, save_results, wait_for
from test_thirdparty import (PORT, U1, assert_brokered_listeners, need_run, nginx_argv,
                             nginx_dir, nginx_ready, nginx_workers, portctl_argv)
from test_thirdparty import groups  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("netns")

RATE = 300              # new connections per second
DURATION = 8            # seconds of load
UPGRADE_AT = 2.0        # seconds into the load
OLD_EXIT_TIMEOUT = 30   # portctl upgrade's default --timeout
SLOW_REQUESTS = 3       # in progress at the old nginx when the upgrade starts
SLOW_RATE = "4k"        # nginx limit_rate, bytes/s: 12 KiB take 2-3 s
SLOW_SECONDS_MIN = 1.0
SLOW_BODY = "ok nginx-old slow\n" + "x" * 12 * 1024 + "\n"


def start_slow():
    """Sends GET /slow and waits for the response to begin (headers read):
    an old worker has accepted it. Returns (socket, bytes so far)."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    s.sendall(b"GET /slow HTTP/1.0\r\nHost: test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, f"no response to GET /slow: {data!r}"
        data += chunk
    return s, data


def finish_slow(conn):
    """Reads the rest of a start_slow() response; returns its body (str)."""
    s, data = conn
    with s:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body.decode()


def test_nginx_upgrade_under_load_loses_nothing(broker, groups, scratch):  # noqa: F811
    need_run()
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)
    slow = (f"    location = /slow {{ root {scratch}/www; limit_rate {SLOW_RATE}; }}\n")
    old_dir = nginx_dir(scratch, "old", "ok nginx-old $pid", server_extra=slow)
    new_dir = nginx_dir(scratch, "new", "ok nginx-new $pid")
    (scratch / "www").mkdir()
    (scratch / "www" / "slow").write_text(SLOW_BODY)

    old = groups(portctl_argv(broker, "run", PORT, "--", *nginx_argv(old_dir)), name="nginx-old")
    old_workers = nginx_ready(old, "http")
    assert http_get(PORT)[1].startswith("ok nginx-old ")

    load = HttpLoad(PORT, RATE, DURATION, records=True)
    time.sleep(max(0.0, load.t0 + UPGRADE_AT - time.monotonic()))     # a schedule
    # Requests in progress at the old nginx when the upgrade starts: its
    # graceful shutdown must finish them (each takes ~2 s at SLOW_RATE).
    slow_conns = [start_slow() for _ in range(SLOW_REQUESTS)]
    t_upgrade = time.monotonic()
    new = groups(portctl_argv(broker, "upgrade", "--pid", old.pid, PORT, "--", *nginx_argv(new_dir)),
                 name="nginx-new")
    # The old master is our child: reap it as soon as it exits (the time is
    # the end of its graceful shutdown, within our 10 ms polling).
    wait_for(lambda: old.proc.popen.poll() is not None, OLD_EXIT_TIMEOUT + 5, "the old nginx master to exit")
    t_old_exit = time.monotonic()
    lines = wait_for(lambda: [l for l in new.proc.stderr().splitlines() if l.startswith("portctl: ")]
                     if "exited" in new.proc.stderr() else None, 10, "the watcher's report")
    res = load.result()
    slow_replies = [finish_slow(c) for c in slow_conns]
    new_workers = nginx_workers(new.pid)

    records = res.pop("records")
    after = [r for r in records if r[0] > t_old_exit]
    s = {k: res[k] for k in ("attempted", "ok", "refused", "timed_out", "lost", "bad_reply", "errors",
                             "error_kinds", "reply_us")}
    s.update(rate=RATE, duration_s=DURATION,
             old_bodies=sum(n for b, n in res["bodies"].items() if b.startswith("ok nginx-old ")),
             new_bodies=sum(n for b, n in res["bodies"].items() if b.startswith("ok nginx-new ")),
             started_after_old_exit=len(after),
             new_after_old_exit=sum(1 for r in after if r[3].startswith("ok nginx-new ")),
             old_done_after_upgrade_s=round(t_old_exit - t_upgrade, 3),
             last_old_reply_after_upgrade_s=round(max((r[1] for r in records
                                                       if r[3].startswith("ok nginx-old ")),
                                                      default=t_upgrade) - t_upgrade, 3),
             slow_requests_completed=sum(r == SLOW_BODY for r in slow_replies),
             watcher=lines)
    save_results("upgrade_nginx", s)

    assert res["attempted"] == RATE * DURATION, s
    assert res["ok"] == res["attempted"], s          # not one refused, timed out, lost or bad
    for body in res["bodies"]:
        assert re.fullmatch(r"ok nginx-(old|new) \d+\n", body), s
    assert s["old_bodies"] > 0 and s["new_bodies"] > 0, s
    assert s["started_after_old_exit"] > RATE, s     # the load went on well past the old one's exit
    assert s["new_after_old_exit"] == s["started_after_old_exit"], s
    assert s["slow_requests_completed"] == SLOW_REQUESTS, [r[:80] for r in slow_replies]
    # The old master waited for them: its graceful shutdown took about as long.
    assert s["old_done_after_upgrade_s"] >= SLOW_SECONDS_MIN, s

    # The new master is named, and the process that first polled the socket (a worker here).
    m = [re.fullmatch(rf"portctl: upgrade: pid {new.pid} is serving \(pid (\d+) accepted first\); "
                      rf"sent SIGQUIT to pid {old.pid}", lines[0]),
         lines[1:] == [f"portctl: upgrade: pid {old.pid} exited"]]
    assert len(lines) == 2 and all(m), new.proc.stderr()
    assert int(m[0].group(1)) in [new.pid, *new_workers], (lines, new.pid, new_workers)
    wait_for(lambda: not old.members(), 10, "the old nginx's workers to be gone")
    assert new.alive() and len(new_workers) == 2, new.proc.stderr()
    assert_brokered_listeners(broker, [new.pid, *new_workers], 2)
    assert not set(old_workers) & set(new_workers)
    for addr in ("127.0.0.1", "::1"):
        assert http_get(PORT, addr=addr)[1].startswith("ok nginx-new "), addr
    st = {l["endpoint"]: l for l in broker.portctl("status", json=True).json}
    assert set(st) == {f"tcp:0.0.0.0:{PORT}", f"tcp6:[::]:{PORT}"}, st
    assert all(l["owner_uid"] == U1 for l in st.values()), st
