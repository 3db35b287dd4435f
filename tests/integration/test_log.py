# SPDX-License-Identifier: MIT
"""portctl log (issue 13, point 4): brokerd's audit trail read over the
control protocol, newest first. An admin sees every kind of event brokerd
records; a user only their own uid's, whatever they ask for (by portctl or
by hand on the wire); the filters (time, endpoint, uid, kind, limit) narrow
it; pages walk a long trail, each event exactly once, in bounded requests;
mistakes are usage errors; malformed LOG requests are refused and brokerd
serves on. Retention (--audit-max-age, --audit-max-rows) prunes in the idle
checkpoint, never a newer event.

Conditions are polled (wait_for), never slept for; the database is read
directly (sqlite3, as root) only to check what portctl says against it."""

import json
import os
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import threading
import time

import pytest

from conftest import PYTHON, as_user, child_env, wait_for
from test_reexec import REEXEC_UNDER_VALGRIND
from rawproto import (ERROR, LOG, LOG_VERSION, REPLY, STATUS, STATUS_BODY, answer, check_error_reply, endpoint,
                      log_body, log_page, msg)

pytestmark = pytest.mark.usefixtures("netns")

U1, U2 = 4242, 4343
HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ["grant", "deny", "create", "release", "replace", "rebind-failed", "policy-add", "policy-change",
         "policy-remove", "policy-dir-failed", "reserve", "reserve-failed", "reexec", "bad-message"]


def log(broker, *args, uid=None, check=True):
    """portctl log ARGS --json (as uid): the events, newest first."""
    return broker.portctl("log", *args, uid=uid, check=check, json=True).json


def ids_in_db(broker, where="1"):
    """The event ids the database holds, newest first (WHERE where)."""
    db = sqlite3.connect(broker.db, timeout=10)
    try:
        return [r[0] for r in db.execute(f"SELECT id FROM events WHERE {where} ORDER BY id DESC")]
    finally:
        db.close()


def assert_newest_first(events):
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids), ids
    assert all(e["time"] == e["time_us"] // 1000000 for e in events), events


def busy_trail(broker):
    """Events of every kind a test can make brokerd record, by root, U1 and U2."""
    broker.portctl("policy", "add", "tcp:8000-8099", "--user", U1)                  # policy-add
    broker.portctl("get", "8000", uid=U1)                                            # create, grant
    broker.portctl("get", "8000", uid=U1)                                            # grant
    broker.portctl("get", "8001", uid=U2, check=1)                                   # deny: no rule
    broker.portctl("get", "8000", uid=U2, check=1)                                   # deny: no rule
    broker.portctl("release", "8000", uid=U1)                                        # release
    broker.portctl("get", "udp:127.0.0.1:5353")                                      # root: create, grant
    rule = broker.portctl("policy", "list", json=True).json[0]["id"]
    broker.portctl("policy", "remove", rule)                                         # policy-remove
    with broker.raw() as s:                                                          # bad-message
        s.send(b"\x00" * 20)
        answer(s)


@pytest.fixture
def libdir(workdir):
    """rawproto.py where the other uids' scripts can import it (the tree may be under a 0700 /root)."""
    d = workdir / "lib"
    d.mkdir(mode=0o755, exist_ok=True)
    shutil.copy(os.path.join(HERE, "rawproto.py"), d)
    (d / "rawproto.py").chmod(0o644)
    return str(d)


# --- who sees what ------------------------------------------------------------


def test_an_admin_sees_every_kind_newest_first(broker):
    t0 = time.time()
    busy_trail(broker)
    events = log(broker, "--limit", "0")
    assert_newest_first(events)
    assert events == log(broker, "--limit", "0", uid=None)          # the same twice: nothing new came
    kinds = {e["event"] for e in events}
    assert {"policy-add", "create", "grant", "deny", "release", "policy-remove", "bad-message"} <= kinds, kinds
    assert kinds <= set(KINDS), kinds
    assert all(t0 - 1 <= e["time"] <= time.time() + 1 for e in events), events
    # Each as brokerd saw it: who (uid, name, pid), what, and why.
    adds = [e for e in events if e["event"] == "policy-add"]
    assert adds[0]["uid"] == 0 and adds[0]["user"] == "root" and adds[0]["endpoint"] == "tcp:8000-8099"
    assert adds[0]["detail"] == f"rule 1: user {U1} may get tcp:8000-8099" and adds[0]["pid"] > 0
    removes = [e for e in events if e["event"] == "policy-remove"]
    assert removes[0]["endpoint"] == "tcp:8000-8099" and removes[0]["detail"] == f"rule 1: user {U1} may get " \
        "tcp:8000-8099", removes
    denies = [e for e in events if e["event"] == "deny"]
    assert [(d["uid"], d["endpoint"], d["detail"]) for d in denies] == \
        [(U2, "tcp:[::]:8000", "no rule"), (U2, "tcp:[::]:8001", "no rule")], denies
    grants = [e for e in events if e["event"] == "grant" and e["uid"] == U1]
    assert [g["detail"] for g in grants] == [None, "created"], grants                # the repeat, then the first
    assert events[0]["event"] == "bad-message"                                       # the newest first
    assert ids_in_db(broker) == [e["id"] for e in events]                            # all of it, once each

    # The text: a table, newest first, the same events.
    text = broker.portctl("log", "--limit", "0").stdout.splitlines()
    assert text[0].split() == ["TIME", "EVENT", "USER", "PID", "ENDPOINT", "DETAIL"], text
    assert len(text) == 1 + len(events) and "bad-message" in text[1] and "policy-add" in text[-1], text
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d  ", text[1]), text
    row = next(l for l in text if " deny " in l and "8001" in l)
    assert f"uid {U2}" in row and "tcp:[::]:8001" in row and row.endswith("no rule"), row


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
def test_a_reexec_is_there_and_so_is_what_came_before(broker):
    """An admin change brokerd itself goes through: the re-execution is
    recorded (the binary in the detail), and the trail reads the same
    across it."""
    busy_trail(broker)
    before = log(broker, "--limit", "0")
    broker.portctl("admin", "reexec")
    after = log(broker, "--limit", "0")
    assert after[1:] == before and after[0]["event"] == "reexec", after[:2]
    assert after[0]["uid"] == 0 and after[0]["detail"] == broker.binary and after[0]["endpoint"] is None, after[0]
    assert log(broker, "--event", "reexec", uid=U1) == []


def test_a_just_written_event_is_there_at_once(broker):
    """brokerd writes its queued events before it reads: a grant is in the
    very next LOG on the same connection, inside the batch window."""
    with broker.raw() as s:
        for k in range(3):
            s.send(msg(1, endpoint(8050 + k), mid=10 + k))
            kind, hdr, data = answer(s)
            assert kind == "reply" and hdr[2] == 1 | REPLY, (hdr, data)
            s.send(msg(LOG, log_body(limit=1, event=b"grant"), version=LOG_VERSION, mid=20 + k))
            kind, hdr, data = answer(s)
            more, next_id, events = log_page(data)
            assert events[0][5] == f"tcp:[::]:{8050 + k}", events


def test_a_user_sees_only_their_own_events(broker, libdir):
    busy_trail(broker)
    mine = log(broker, "--limit", "0", uid=U1)
    assert mine and all(e["uid"] == U1 for e in mine), mine
    assert {e["event"] for e in mine} == {"create", "grant", "release"}, mine
    assert [e["id"] for e in mine] == ids_in_db(broker, f"peer_uid = {U1}")
    assert log(broker, "--uid", U1, uid=U1) == mine[:100]                           # naming oneself is fine
    theirs = log(broker, "--limit", "0", uid=U2)
    assert theirs and all(e["uid"] == U2 and e["event"] == "deny" for e in theirs), theirs

    # Another uid's, even by name: refused, and that is a denial brokerd records.
    for other in (U2, 0, "root"):
        r = broker.portctl("log", "--uid", other, uid=U1, check=1)
        assert "permission denied" in r.stderr and "may read its own events only" in r.stderr, r
    r = broker.portctl("log", "--uid", U2, uid=U1, check=1, json=True)
    assert r.json["code"] == "EPERM", r
    tries = [e for e in log(broker, "--event", "deny", "--uid", U1) if e["detail"] == "log of another uid"]
    assert len(tries) == 4 and all(e["uid"] == U1 for e in tries), tries
    # Filters narrow one's own events; they never widen them.
    assert log(broker, "--event", "policy-add", uid=U1) == []
    assert log(broker, "--endpoint", "tcp:8000-8099", uid=U1) == []
    assert all(e["uid"] == U1 for e in log(broker, "--endpoint", "8000", uid=U1))

    # By hand on the wire: no uid asked is one's own; another uid is EPERM, the connection kept.
    script = r"""
import json, socket, struct, sys
sys.path.insert(0, sys.argv[2])
from rawproto import LOG, LOG_VERSION, answer, check_error_reply, log_body, log_page, msg
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
out = {}
s.send(msg(LOG, log_body(), version=LOG_VERSION, mid=1))
kind, hdr, data = answer(s)
out["own"] = [e[2] for e in log_page(data)[2]]
for n, uid in enumerate((0, 4343, 0xFFFFFFFE)):
    s.send(msg(LOG, log_body(uid=uid), version=LOG_VERSION, mid=2 + n))
    kind, hdr, data = answer(s)
    out[str(uid)] = check_error_reply(hdr, data)[0] if hdr[2] == 0xFFFF else "page"
print(json.dumps(out))
"""
    r = subprocess.run(as_user(U1) + [PYTHON, "-c", script, broker.control, libdir], capture_output=True,
                       text=True, timeout=20, env=child_env())
    assert r.returncode == 0, r
    out = json.loads(r.stdout)
    assert out["own"] and set(out["own"]) == {U1}, out
    assert out["0"] == out["4343"] == out[str(0xFFFFFFFE)] == 1, out              # EPERM (1)


# --- filters --------------------------------------------------------------------


def test_filters(broker):
    broker.portctl("policy", "add", "tcp:8000-8099", "--user", U1)
    broker.portctl("get", "8000", uid=U1)
    broker.portctl("get", "8001", uid=U2, check=1)
    first = log(broker, "--limit", "0")
    # A new second for the second batch: --since/--until take whole seconds.
    split = wait_for(lambda: int(time.time()) > first[0]["time"] and int(time.time()), 3, "the next second")
    broker.portctl("get", "8001", uid=U1)
    broker.portctl("get", "8002", uid=U2, check=1)
    broker.portctl("release", "8000", uid=U1)
    every = log(broker, "--limit", "0")
    second = every[:len(every) - len(first)]
    assert every[len(second):] == first and len(second) == 4, every     # create and grant, deny, release

    # Time: inclusive bounds (--until to the end of its second), in every form.
    assert log(broker, "--since", f"@{split}", "--limit", "0") == second
    assert log(broker, "--until", f"@{split - 1}", "--limit", "0") == first
    assert log(broker, "--since", f"@{first[-1]['time']}", "--until", f"@{first[0]['time']}", "--limit", "0") == first
    iso = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(split))
    assert log(broker, "--since", iso, "--limit", "0") == second
    assert log(broker, "--since", iso.replace(" ", "T") + time.strftime("%z")[:3] + ":" + time.strftime("%z")[3:],
               "--limit", "0") == second
    assert log(broker, "--since", "-1h", "--limit", "0") == every
    assert log(broker, "--since", "yesterday", "--until", "now", "--limit", "0") == every
    assert log(broker, "--until", "-1h") == [] and log(broker, "--until", "yesterday") == []
    assert log(broker, "--since", "@0", "--limit", "0") == every

    # Endpoint: any form of it; a pattern finds its rule.
    on_8000 = log(broker, "--endpoint", "8000", "--limit", "0")
    assert on_8000 and all(e["endpoint"] == "tcp:[::]:8000" for e in on_8000), on_8000
    assert {e["event"] for e in on_8000} == {"create", "grant", "release"}, on_8000
    assert log(broker, "--endpoint", "tcp:[::]:8000", "--limit", "0") == on_8000
    assert [e["event"] for e in log(broker, "--endpoint", "tcp:8000-8099")] == ["policy-add"]
    assert log(broker, "--endpoint", "udp:8000") == [] and log(broker, "--endpoint", "tcp:127.0.0.1:8000") == []

    # Uid, kind, and all of them together.
    assert [e["uid"] for e in log(broker, "--uid", U2, "--limit", "0")] == [U2, U2]
    assert [e["endpoint"] for e in log(broker, "--event", "deny")] == ["tcp:[::]:8002", "tcp:[::]:8001"]
    both = log(broker, "--event", "grant", "--uid", U1, "--endpoint", "8001", "--since", f"@{split}")
    assert len(both) == 1 and both[0]["endpoint"] == "tcp:[::]:8001" and both[0]["uid"] == U1, both
    assert log(broker, "--event", "reexec") == []

    # Limit: the newest N, and the text says when there were more.
    assert log(broker, "--limit", "2") == every[:2]
    assert log(broker, "--limit", str(len(every))) == every
    text = broker.portctl("log", "--limit", "2").stdout.splitlines()
    assert len(text) == 4 and text[-1] == "(the newest 2 events; --limit N for more, --limit 0 for all)", text
    text = broker.portctl("log", "--limit", str(len(every))).stdout.splitlines()
    assert len(text) == 1 + len(every), text


def test_default_limit_is_100(make_broker):
    b = make_broker("--max-leases-per-user", "200")
    b.portctl("get", *[str(8000 + k) for k in range(60)])          # 120 events: create and grant each
    assert len(log(b)) == 100
    assert len(log(b, "--limit", "0")) == 120
    assert b.portctl("log").stdout.splitlines()[-1].startswith("(the newest 100 events;")


# --- paging ---------------------------------------------------------------------


def test_pages_return_every_event_once_newest_first(make_broker):
    """Hundreds of events through 16-event pages; then a long trail (40,000
    rows, more than one bounded window of brokerd's, with a rare kind at the
    far end): every event once, newest first, as the database has them."""
    b = make_broker("--max-leases-per-user", "200")
    b.portctl("get", *[str(8000 + k) for k in range(100)])         # 200 events in one command
    events = log(b, "--limit", "0")
    assert len(events) == 200 and [e["id"] for e in events] == ids_in_db(b), len(events)
    assert_newest_first(events)
    assert [e["id"] for e in log(b, "--limit", "0", "--event", "create")] == ids_in_db(b, "event = 'create'")

    db = sqlite3.connect(b.db, timeout=10)
    now = int(time.time() * 1000000)                # recent: nothing for the idle prune (90 days)
    with db:
        db.execute("INSERT INTO events (time_us, event, peer_uid, peer_pid, endpoint, detail) "
                   "VALUES (?, 'rebind-failed', NULL, NULL, 'tcp:[::]:9999', 'Address already in use')", (now,))
        db.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000) "
                   "INSERT INTO events (time_us, event, peer_uid, peer_pid, endpoint, detail) "
                   "SELECT ? + i, 'grant', 4242 + i % 3, i, 'tcp:[::]:' || (9000 + i % 100), NULL FROM n", (now,))
    db.close()
    rare = log(b, "--event", "rebind-failed")
    assert [(e["uid"], e["pid"], e["endpoint"], e["detail"]) for e in rare] == \
        [(None, None, "tcp:[::]:9999", "Address already in use")], rare
    events = log(b, "--limit", "0")
    assert len(events) == 40201 and [e["id"] for e in events] == ids_in_db(b)
    mine = log(b, "--limit", "0", uid=U1)
    assert [e["id"] for e in mine] == ids_in_db(b, f"peer_uid = {U1}") and len(mine) == 13333


@pytest.mark.not_under_valgrind("it measures how long brokerd takes")
def test_a_request_is_bounded_at_100000_events(make_broker):
    """With 100,000 events, each LOG request answers within a few ms, the
    worst (a kind none of them is: a whole window examined for nothing) as
    the usual (the newest page), and a get of another client meanwhile waits
    no longer than one such request."""
    b = make_broker()
    db = sqlite3.connect(b.db, timeout=10)
    with db:                                        # the last 100 s: nothing for the idle prune (90 days)
        db.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) "
                   "INSERT INTO events (time_us, event, peer_uid, peer_pid, endpoint, detail) "
                   "SELECT ? + i * 1000, CASE WHEN i % 10 THEN 'grant' ELSE 'deny' END, 4242 + i % 3, i, "
                   "'tcp:[::]:' || (8000 + i % 100), CASE WHEN i % 10 THEN NULL ELSE 'no rule' END FROM n",
                   (int(time.time() * 1000000) - 100000 * 1000,))
    db.close()

    def timed(body, n=30):
        """(median, max) ms of n LOG requests, and the last reply's (more, next_id, entries)."""
        times = []
        with b.raw() as s:
            for k in range(n):
                t = time.perf_counter()
                s.send(msg(LOG, body, version=LOG_VERSION, mid=k + 1))
                kind, hdr, data = answer(s)
                times.append((time.perf_counter() - t) * 1000)
                assert hdr[2] == LOG | REPLY, data
        times.sort()
        return times[len(times) // 2], times[-1], log_page(data)

    newest = timed(log_body())
    nothing = timed(log_body(event=b"reexec"))
    mine = timed(log_body(uid=4243, ep=endpoint(8001)))
    assert len(newest[2][2]) == 16 and newest[2][0] == 1
    assert nothing[2][2] == [] and nothing[2][:2] == (1, 100001 - 32768), nothing[2]
    print(f"\n[log at 100000 events] round trip ms, median/max: newest page {newest[0]:.2f}/{newest[1]:.2f}, "
          f"a window where nothing matches {nothing[0]:.2f}/{nothing[1]:.2f}, "
          f"one uid's one endpoint {mine[0]:.2f}/{mine[1]:.2f}")
    assert nothing[0] < 50 and newest[0] < 10, (newest, nothing)

    # A whole walk for a kind that is not there (4 requests).
    t = time.perf_counter()
    assert log(b, "--event", "reexec", "--limit", "0") == []
    walk = (time.perf_counter() - t) * 1000

    # Another client's requests while one walks the trail over and over: each
    # waits at most about one LOG request (the loop serves between them).
    stop = threading.Event()

    def walker():
        with b.raw() as s:
            before, k = 0, 0
            while not stop.is_set():
                k += 1
                s.send(msg(LOG, log_body(before=before, event=b"reexec"), version=LOG_VERSION, mid=k))
                more, next_id, _ = log_page(answer(s)[2])
                before = next_id if more else 0
    th = threading.Thread(target=walker)
    th.start()
    waits = []
    try:
        with b.raw() as s:
            for k in range(200):
                t = time.perf_counter()
                s.send(msg(STATUS, STATUS_BODY, mid=k + 1))
                assert answer(s)[1][2] == STATUS | REPLY
                waits.append((time.perf_counter() - t) * 1000)
    finally:
        stop.set()
        th.join(10)
    waits.sort()
    print(f"[log at 100000 events] portctl log walking all of them for nothing: {walk:.0f} ms; another client's "
          f"status meanwhile, ms: median {waits[100]:.2f}, p99 {waits[198]:.2f}, max {waits[-1]:.2f}")
    assert waits[100] < 20, waits


# --- mistakes -------------------------------------------------------------------


@pytest.mark.parametrize("args,says", [
    (("--since", "yesterdayish"), "invalid time 'yesterdayish' for --since: expected YYYY-MM-DD"),
    (("--until", "2025-02-30"), "invalid time '2025-02-30' for --until"),
    (("--since", "-1y"), "invalid time '-1y'"),
    (("--since", "2025-01-31", "14:00"), "unexpected argument '14:00' (quote a date and time"),
    (("--since", "now", "--until", "yesterday"), "--since now is after --until yesterday"),
    (("--event", "grants"), "unknown event kind 'grants' (one of grant, deny,"),
    (("--endpoint", "tcp:"), "invalid endpoint pattern 'tcp:'"),
    (("--limit", "-1"), "invalid --limit '-1'"),
    (("--limit",), "--limit needs a value"),
    (("--frobnicate",), "unknown option '--frobnicate'"),
    (("8080",), "unexpected argument '8080'"),
])
def test_mistakes_are_usage_errors(broker, args, says):
    r = broker.portctl("log", *args, check=2)
    assert r.stderr.startswith("portctl: ") and says in r.stderr, r
    r = broker.portctl("log", *args, check=2, json=True)
    assert r.json["code"] == "usage" and says in r.json["error"], r


def test_the_kinds_are_brokerds(broker):
    """The kinds portctl accepts, names in its help and offers are those brokerd records."""
    said = broker.portctl("log", "--event", "x", check=2).stderr
    assert re.search(r"\(one of (.*)\)", said).group(1).split(", ") == KINDS, said
    helptext = broker.portctl("log", "--help").stdout
    named = re.search(r"One kind: (.*?)\n  --limit", helptext, re.S).group(1)
    assert [k for k in re.findall(r"[a-z][a-z-]*", named) if k != "or"] == KINDS, helptext
    for kind in KINDS:
        assert log(broker, "--event", kind) == []
    r = broker.portctl("log", "--uid", "no-such-user-xyz", check=1)
    assert "no such user 'no-such-user-xyz'" in r.stderr, r


# --- hostile requests ---------------------------------------------------------------


def test_malformed_log_requests_are_refused(broker):
    """Broken LOG requests get EBADMSG and a closed connection, never a page;
    a request for an unknown kind is EINVAL and the connection stays;
    brokerd serves on with its fds back where they were."""
    broker.portctl("get", "8080")
    broker.portctl("log")
    base = broker.quiet_fd_count()
    good = log_body(uid=0, ep=endpoint(8080), event=b"grant")
    bad = [
        msg(LOG, good, version=5),                                       # before version 6
        msg(LOG, good[:-1], version=LOG_VERSION),                        # short
        msg(LOG, good + b"x", version=LOG_VERSION),                      # long
        msg(LOG, log_body(limit=200), version=LOG_VERSION),
        msg(LOG, log_body(before=1 << 63), version=LOG_VERSION),
        msg(LOG, log_body(until=(1 << 64) - 1), version=LOG_VERSION),
        msg(LOG, log_body(uid_bytes=b"\xff\xff\xff\xff"), version=LOG_VERSION),    # a uid without has_uid
        msg(LOG, log_body(uid=0xFFFFFFFF), version=LOG_VERSION),
        msg(LOG, good[:25] + b"\x02" + good[26:], version=LOG_VERSION),            # has_uid 2
        msg(LOG, log_body(ep=endpoint(0)), version=LOG_VERSION),                     # port 0
        msg(LOG, log_body()[:31] + b"\x06" + log_body()[32:], version=LOG_VERSION),  # endpoint bytes, none said
        msg(LOG, log_body(event=b"\x7fgrant"), version=LOG_VERSION),
        msg(LOG, log_body()[:-1] + b"\x05", version=LOG_VERSION),                   # a kind's length, no kind
        msg(LOG | REPLY, struct.pack("!BBQ", 0, 0, 0), version=LOG_VERSION),        # a reply, from a client
    ]
    rng = random.Random(13)
    for _ in range(60):                                                  # and random damage to a good one
        m = bytearray(msg(LOG, good, version=LOG_VERSION))
        m[rng.randrange(16, len(m))] ^= 1 << rng.randrange(8)
        bad.append(bytes(m))
    refused = 0
    for m in bad:
        with broker.raw() as s:
            s.send(m)
            kind, hdr, data = answer(s)
            assert kind == "reply", (m, kind)
            if hdr[2] == ERROR:
                code, text = check_error_reply(hdr, data)
                assert code in (74, 93, 22), (m, code, text)             # EBADMSG, EPROTONOSUPPORT, EINVAL
                refused += 1
                if code != 22:
                    assert answer(s)[0] == "closed", m
            else:                                                       # a flip that left it valid
                assert hdr[2] == LOG | REPLY and m[16:] != good, m
                log_page(data)
    assert refused >= 14 + 10, refused
    assert broker.alive()
    with broker.raw() as s:
        s.send(msg(LOG, log_body(event=b"grants"), version=LOG_VERSION, mid=5))
        kind, hdr, data = answer(s)
        code, text = check_error_reply(hdr, data)
        assert code == 22 and "unknown event kind 'grants'" in text and "rebind-failed" in text, text
        s.send(msg(LOG, good, version=LOG_VERSION, mid=6))                # still served
        kind, hdr, data = answer(s)
        assert hdr[2] == LOG | REPLY and log_page(data)[2][0][4] == "grant", data
    assert [e["event"] for e in log(broker, "--event", "bad-message", "--limit", "0")].count("bad-message") >= 14
    broker.wait_fd_count(base)


# --- retention --------------------------------------------------------------------


def test_retention_by_count_in_the_idle_checkpoint(make_broker, workdir):
    """audit-max-rows (here from brokerd.conf): once writes pause, the
    oldest go and the newest N stay, for portctl log as for the database."""
    conf = workdir / "brokerd.conf"
    conf.write_text("audit-max-rows = 50\naudit-max-age = 90d\nmax-leases-per-user = 200\n")
    conf.chmod(0o644)
    b = make_broker("--config", conf)
    b.portctl("get", *[str(8000 + k) for k in range(60)])          # 120 events
    before = [e["id"] for e in log(b, "--limit", "0")]             # (written: brokerd writes before it reads)
    assert len(before) == 120 and ids_in_db(b) == before
    wait_for(lambda: len(ids_in_db(b)) == 50, 30, "the idle checkpoint to keep 50 events")
    assert ids_in_db(b) == before[:50]                              # the newest
    assert [e["id"] for e in log(b, "--limit", "0")] == before[:50]


def test_retention_by_age_never_a_newer_event(make_broker):
    """audit-max-age: what is older goes, in bounded steps (2,500 events, 1,000
    a step), whatever its id; younger events stay, also with older ids."""
    b = make_broker("--audit-max-age", "1h")
    b.portctl("get", "8000")
    now = int(time.time() * 1000000)
    db = sqlite3.connect(b.db, timeout=10)
    with db:
        db.execute("INSERT INTO events (time_us, event, peer_uid, endpoint) VALUES (?, 'grant', 4242, 'tcp:[::]:7')",
                   (now - 1800 * 1000000,))                         # half an hour ago: kept
        db.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) "
                   "INSERT INTO events (time_us, event, peer_uid) SELECT ? + i, 'deny', 4343 FROM n",
                   (now - 7200 * 1000000,))                         # two hours ago, newer ids: gone
    db.close()
    b.portctl("get", "8001")                                        # writes again: idle 5 s from now
    log(b)                                                          # every event written
    young = ids_in_db(b, f"time_us >= {now - 3600 * 1000000}")
    assert len(young) == 5, young                                   # two gets (create, grant), the half hour
    wait_for(lambda: ids_in_db(b) == young, 60, "the idle checkpoint to prune what is older than 1h")
    assert [e["id"] for e in log(b, "--limit", "0")] == young
    assert log(b, "--uid", U2) == []
    b.portctl("get", "8002")                                        # a fresh event, written at once
    assert log(b, "--limit", "1")[0]["endpoint"] == "tcp:[::]:8002"

