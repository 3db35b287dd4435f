# SPDX-License-Identifier: MIT
"""The problem portbroker solves, measured: a server on port 8080 under a
steady loopback load (pb-load) is killed with SIGKILL and restarted three
times, and every client connection is classified.

  * Through the broker (`portctl get 8080 -- pb-testserver`, socket
    activation): no connection is refused or times out; at most one per
    kill is lost in flight (accepted by the killed process, no reply).
    While the server is down nobody else can bind the port.
  * The contrast, the server binding [::]:8080 itself: with SO_REUSEADDR
    the restart works but clients are refused during the gap; without
    SO_REUSEADDR the restart fails with EADDRINUSE while TIME_WAIT remains.

The server takes DELAY_MS to start (simulated start-up work) in both modes,
so the comparison is fair and the refused count in the contrast is robust.
Numbers go to tests/integration/results/restart-BUILD.json (and stdout with -s).
"""

import errno
import subprocess
import time

import pytest

from conftest import TESTSERVER, Load, fetch, save_results, try_bind

pytestmark = pytest.mark.usefixtures("netns")

U1 = 4242
PORT = 8080
RATE = 500              # new connections per second
DURATION = 8            # seconds of load
KILLS = 3
DELAY_MS = 100          # server start-up time


def kill_restart_cycle(procs, start_server, check_while_down=None):
    """Runs the load, kills and restarts the server KILLS times at even
    intervals; returns (load result, per-kill details)."""
    srv = start_server()
    srv.wait_ready()
    load = Load(procs, PORT, RATE, DURATION)
    kills = []
    for k in range(1, KILLS + 1):
        at = load.t0 + k * DURATION / (KILLS + 1)
        time.sleep(max(0.0, at - time.monotonic()))          # a schedule, not a wait for a condition
        t_kill = srv.kill9()
        detail = check_while_down() if check_while_down else {}
        srv = start_server()
        srv.wait_ready()
        detail["gap_ms"] = round((time.monotonic() - t_kill) * 1000, 2)
        kills.append(detail)
    res = load.result()
    srv.kill9()
    return res, kills


def summary(res, kills):
    keys = ("attempted", "ok", "refused", "timed_out", "lost", "lost_empty", "lost_reset", "bad_reply",
            "errors", "error_kinds", "connect_us", "reply_us", "max_inflight")
    out = {k: res[k] for k in keys}
    out.update(rate=RATE, duration_s=DURATION, kills=KILLS, server_delay_ms=DELAY_MS,
               gaps_ms=[k["gap_ms"] for k in kills])
    return out


def test_broker_held_socket_survives_kill9(broker, procs):
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U1)

    def start():
        return broker.serve(procs, PORT, uid=U1, server_args=["--delay-ms", DELAY_MS])

    def while_down():
        r = broker.portctl("status", PORT, json=True).json[0]
        return {"bind_errno": try_bind(PORT, reuseaddr=True),
                "bind_errno_no_reuseaddr": try_bind(PORT, reuseaddr=False),
                "queued": r["queued"], "holders": r["holders"]}

    res, kills = kill_restart_cycle(procs, start, while_down)
    s = summary(res, kills)
    s["queued_while_down"] = [k["queued"] for k in kills]
    save_results("broker", s)

    for k in kills:
        assert k["bind_errno"] == errno.EADDRINUSE, k
        assert k["bind_errno_no_reuseaddr"] == errno.EADDRINUSE, k
    assert res["attempted"] == RATE * DURATION, res
    assert res["refused"] == 0, s
    assert res["timed_out"] == 0, s
    assert res["errors"] == 0 and res["bad_reply"] == 0 and res["aborted"] == 0, s
    assert res["lost"] <= KILLS, s                       # lost in flight: at most one per kill
    assert res["ok"] + res["lost"] == res["attempted"], s
    # Not vacuous: connections did wait in the broker's backlog while no server ran.
    assert res["reply_us"]["max"] >= DELAY_MS * 1000 * 0.8, s
    st = broker.portctl("status", PORT, json=True).json[0]
    assert st["handouts"] >= KILLS + 1 and st["owner_uid"] == U1, st


def test_self_bound_with_reuseaddr_refuses_during_restart(procs):
    def start():
        return procs.spawn([TESTSERVER, "--die-with-parent", "--bind", PORT, "--reuseaddr",
                            "--delay-ms", DELAY_MS], uid=U1, name="self-bound")

    res, kills = kill_restart_cycle(procs, start)
    s = summary(res, kills)
    save_results("self_bound_reuseaddr", s)
    # Every restart bound the port (SO_REUSEADDR on both sides), yet clients
    # arriving in the gap were refused.
    assert res["refused"] + res["errors"] > 0, s
    assert res["ok"] > 0, s


def test_self_bound_without_reuseaddr_cannot_restart(procs):
    srv = procs.spawn([TESTSERVER, "--die-with-parent", "--bind", PORT, "--no-reuseaddr"], uid=U1,
                      name="self-bound-no-reuseaddr")
    pid = srv.wait_ready()
    for _ in range(20):                                  # server-side TIME_WAIT entries
        assert fetch(PORT) == f"ok {pid}\n"
    srv.kill9()
    tw = subprocess.run(["ss", "-Htan", "state", "time-wait", f"( sport = :{PORT} )"],
                        capture_output=True, text=True, timeout=10).stdout.splitlines()
    assert len(tw) >= 1, "expected TIME_WAIT entries after the kill"

    results = {}
    for flag in ("--no-reuseaddr", "--reuseaddr"):
        again = procs.spawn([TESTSERVER, "--die-with-parent", "--bind", PORT, flag], uid=U1,
                            name="restart" + flag)
        rc = again.wait(10)
        results[flag] = {"exit": rc, "stderr": again.stderr().strip()}
        assert rc == 3 and "EADDRINUSE" in again.stderr(), results
    # Meanwhile every client is refused.
    load = Load(procs, PORT, 200, 1)
    res = load.result()
    assert res["refused"] == res["attempted"], res
    save_results("self_bound_no_reuseaddr", {"time_wait_entries": len(tw), "restarts": results,
                                             "refused_1s_at_200_per_s": res["refused"]})
