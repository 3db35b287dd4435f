# SPDX-License-Identifier: MIT
"""portctl policy test ENDPOINT [--user U | --group G] [--unit UNIT] and
POLICY_TEST under it (issue 13, point 5): which rule would let a user (with
its groups from the user database), a group or a unit get an endpoint, and
the verdict a GET would get now, with nothing bound, leased, logged as a
denial or audited; exit status 0 allowed, 1 denied, 2 usage. Run by a
non-admin too. Its users and groups are in copies of /etc/passwd and
/etc/group bind-mounted in a mount namespace of the test's own (fixture
users): the machine's files are untouched. And by hand over the control
socket (proto/PROTOCOL.md §4.19): the verdicts, and malformed requests
refused with EBADMSG while brokerd serves on with no fd left behind."""

import os
import re
import sqlite3
import struct
import subprocess

import pytest

from conftest import PORTCTL, Result, as_user, check_sanitizers, child_env, need, try_bind, users_added, wait_for
from rawproto import (ERROR, POLICY_TEST, REPLY, TEST_VERSION, UID_NONE, answer, check_error_reply, endpoint,
                      msg, policy_test_body, policy_tested)

pytestmark = pytest.mark.usefixtures("netns")

U1, U2 = 4242, 4343             # pbt-alice (also in group pbt-web), pbt-bob
U_ADMIN, U_MANY = 4444, 4545    # pbt-admin (in pbt-admins), pbt-many (in 70 groups)
G1, G_ADMINS = 4300, 5000       # pbt-web, pbt-admins
PASSWD = [f"pbt-alice:x:{U1}:{U1}::/nonexistent:/usr/sbin/nologin",
          f"pbt-bob:x:{U2}:{U2}::/nonexistent:/usr/sbin/nologin",
          f"pbt-admin:x:{U_ADMIN}:{U_ADMIN}::/nonexistent:/usr/sbin/nologin",
          f"pbt-many:x:{U_MANY}:{U_MANY}::/nonexistent:/usr/sbin/nologin"]
GROUP = [f"pbt-alice:x:{U1}:", f"pbt-bob:x:{U2}:", f"pbt-admin:x:{U_ADMIN}:", f"pbt-many:x:{U_MANY}:",
         f"pbt-web:x:{G1}:pbt-alice", f"pbt-admins:x:{G_ADMINS}:pbt-admin"] + \
        [f"pbt-g{g}:x:{g}:pbt-many" for g in range(6000, 6070)]


@pytest.fixture
def users(bpffs, workdir):
    """The users and groups above, for this test's processes alone (conftest.users_added)."""
    with users_added(workdir, PASSWD, GROUP):
        yield


@pytest.fixture
def broker(users, make_broker):
    return make_broker()


def ptest(broker, *args, uid=None, json=False, socket=None):
    """`portctl [--json] policy test ARGS` (as uid): a Result, whatever the exit status."""
    need(PORTCTL)
    argv = as_user(uid) + [PORTCTL, "--socket", socket or broker.control, *(["--json"] if json else []),
                           "policy", "test", *map(str, args)]
    cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=child_env(),
                        timeout=20)
    res = Result(argv, cp)
    check_sanitizers(res.stderr, "portctl")
    return res


def verdict(broker, *args, uid=U2):
    """The JSON verdict (asked as uid, a non-admin by default), checked against the exit status."""
    r = ptest(broker, *args, uid=uid, json=True)
    v = r.json
    assert r.returncode == (0 if v["allowed"] else 1) and r.stderr == "", r
    return v


def listening(port):
    """What ss lists on port in this network namespace (TCP and UDP)."""
    return subprocess.run(["ss", "-Htuln", f"sport = :{port}"], capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()


def raw_test(broker, body, version=TEST_VERSION):
    """One POLICY_TEST over a raw connection: the reply's fields."""
    with broker.raw() as s:
        s.send(msg(POLICY_TEST, body, version=version, mid=11))
        kind, hdr, data = answer(s)
        assert kind == "reply" and hdr[2] == POLICY_TEST | REPLY and hdr[3] == 11 and hdr[1] == TEST_VERSION, \
            (kind, hdr, data)
        return policy_tested(data)


def denials_audited(broker, marker_uid):
    """The deny rows of the audit trail, once the denial of marker_uid (made
    last) is written: the rows are written in order, so none is pending."""
    def rows():
        with sqlite3.connect(broker.db, timeout=10) as db:
            r = db.execute("SELECT peer_uid, endpoint, detail FROM events WHERE event = 'deny'").fetchall()
        return r if any(uid == marker_uid for uid, _, _ in r) else None
    return wait_for(rows, 10, f"the denial of uid {marker_uid} in the audit trail")


def test_raw_verdicts(broker):
    """A group's rule lets a peer of no user in that group (user rules never
    match it); a uid outside it gets the error text a GET would; nothing of
    it is a denial of the sender, which may ask as any uid."""
    rule = broker.portctl("policy", "add", "tcp:8000-8099", "--group", G1, json=True).json["id"]
    r = raw_test(broker, policy_test_body(endpoint(8050), groups=[G1]))
    assert r["allowed"] and not r["admin"] and r["rule"]["id"] == rule and r["lease_id"] == 0, r
    assert r["rule"]["kind"] == 2 and r["rule"]["id_value"] == G1, r
    assert r["reason"] == f"allowed by rule {rule}", r
    r = raw_test(broker, policy_test_body(endpoint(8050), uid=U1))
    assert not r["allowed"] and r["rule"] is None and not r["admin"], r
    assert r["reason"] == f"permission denied: no rule lets uid {U1} get tcp:[::]:8050", r
    r = raw_test(broker, policy_test_body(endpoint(8050)))
    assert r["reason"] == "permission denied: no rule lets a peer of no user, group or unit get tcp:[::]:8050", r
    # uid 0 is an admin: no rule needed.
    r = raw_test(broker, policy_test_body(endpoint(9000), uid=0))
    assert r["allowed"] and r["admin"] and r["rule"] is None and r["reason"] == "an admin: no rule needed", r
    assert broker.portctl("status", json=True).json == []
    # No test was a denial: the only one in the log and the audit trail is a GET's, made last.
    assert not broker.events("deny")
    broker.portctl("get", "8099", uid=U2, check=1)
    assert denials_audited(broker, U2) == [(U2, "tcp:[::]:8099", "no rule")]
    assert len(broker.events("deny")) == 1


def bad_cases():
    ep = endpoint(8080)
    good = policy_test_body(ep, uid=U1, groups=[G1, 33], unit="web.service")
    return {
        "in-version-5": (msg(POLICY_TEST, good, version=5), "EPROTONOSUPPORT"),
        "65-groups": (msg(POLICY_TEST, policy_test_body(ep, groups=range(1000, 1065)), version=6), "EBADMSG"),
        "255-groups": (msg(POLICY_TEST, ep + struct.pack("!IB", U1, 255) + bytes(4 * 255 + 1), version=6),
                       "EBADMSG"),
        "group-0xffffffff": (msg(POLICY_TEST, policy_test_body(ep, groups=[G1, UID_NONE]), version=6), "EBADMSG"),
        "unit-without-dot": (msg(POLICY_TEST, policy_test_body(ep, unit="webservice"), version=6), "EBADMSG"),
        "unit-with-a-slash": (msg(POLICY_TEST, policy_test_body(ep, unit="a/b.service"), version=6), "EBADMSG"),
        "unit-control-byte": (msg(POLICY_TEST, policy_test_body(ep, unit="web\n.service"), version=6), "EBADMSG"),
        "unit-text-overrun": (msg(POLICY_TEST, ep + struct.pack("!IB", U1, 0) + b"\xffweb.service", version=6),
                              "EBADMSG"),
        "range-endpoint": (msg(POLICY_TEST, policy_test_body(struct.pack("!BBHHH", 6, 0, 8000, 8099, 0) + bytes(16)),
                               version=6), "EBADMSG"),
        "group-count-too-big": (msg(POLICY_TEST, ep + struct.pack("!IBII", U1, 3, G1, 33) + b"\x00", version=6),
                                "EBADMSG"),
        "truncated": (msg(POLICY_TEST, good[:-1], version=6), "EBADMSG"),
        "trailing-byte": (msg(POLICY_TEST, good + b"\x00", version=6), "EBADMSG"),
        "header-only": (msg(POLICY_TEST, version=6), "EBADMSG"),
        "reply-type-from-client": (msg(POLICY_TEST | REPLY, bytes(2 + 8 + 8 + 4 + 1), version=6), "EBADMSG"),
    }


BAD = bad_cases()


@pytest.mark.parametrize("case", sorted(BAD))
def test_raw_malformed_requests_are_refused(broker, case):
    """Each gets an error reply (EBADMSG; an unsupported version
    EPROTONOSUPPORT), then the connection closes; brokerd answers the next
    client and holds no fd more than before."""
    broker.portctl("status")
    broker.portctl("policy", "list")
    base = broker.quiet_fd_count()
    data, code = BAD[case]
    with broker.raw() as s:
        s.send(data)
        kind, hdr, reply = answer(s)
        assert kind == "reply" and hdr[2] == ERROR, (case, kind, hdr, reply)
        got, text = check_error_reply(hdr, reply)
        assert got == {"EBADMSG": 74, "EPROTONOSUPPORT": 93}[code], (case, got, text)
        assert answer(s)[0] == "closed", case
    assert broker.alive()
    r = raw_test(broker, policy_test_body(endpoint(8080), uid=0))     # a good one is served as before
    assert r["allowed"] and r["admin"], r
    broker.wait_fd_count(base)
    assert broker.events("bad-message") and not broker.events("deny")


# --- portctl policy test ------------------------------------------------------------


def test_user_rule_allows_and_denies(broker):
    """A user's rule decides for that user, shown as policy list shows it;
    another user is told no rule lets it (exit 1); root is an admin. Asked
    by a non-admin."""
    rid = broker.portctl("policy", "add", "tcp:8080", "--user", "pbt-alice", json=True).json["id"]
    r = ptest(broker, "8080", "--user", "pbt-alice", uid=U2)
    assert r.returncode == 0 and r.stderr == "", r
    lines = r.stdout.splitlines()
    assert lines[0] == f"allowed: user pbt-alice ({U1}) may get tcp:[::]:8080", r.stdout
    assert lines[1] == f"groups considered: pbt-alice ({U1}), pbt-web ({G1})", r.stdout
    assert lines[2] == f"why: allowed by rule {rid}", r.stdout
    listed = broker.portctl("policy", "list").stdout.splitlines()
    assert lines[3:] == listed, (lines, listed)            # the rule, as policy list shows it

    r = ptest(broker, "8080", "--user", "pbt-bob", uid=U2)
    assert r.returncode == 1 and r.stderr == "", r
    assert r.stdout.splitlines() == [f"denied: user pbt-bob ({U2}) may not get tcp:[::]:8080",
                                     f"groups considered: pbt-bob ({U2})",
                                     f"why: permission denied: no rule lets uid {U2} get tcp:[::]:8080"], r.stdout

    v = verdict(broker, "tcp:8080", "--user", str(U1))
    rule = broker.portctl("policy", "list", json=True).json[0]
    assert v == {"endpoint": "tcp:[::]:8080", "allowed": True, "admin": False, "uid": U1, "user": "pbt-alice",
                 "groups": [{"gid": U1, "name": "pbt-alice"}, {"gid": G1, "name": "pbt-web"}], "unit": None,
                 "rule": rule, "lease": None, "reason": f"allowed by rule {rid}"}, v
    v = verdict(broker, "8080", "--user", "pbt-bob")
    assert not v["allowed"] and v["rule"] is None and not v["admin"], v

    # A uid the user database does not know: no groups; root: an admin.
    r = ptest(broker, "8080", "--user", "4999")
    assert r.returncode == 1 and "groups considered: none (uid 4999 has no entry in the user database)" in r.stdout
    v = verdict(broker, "udp:9", "--user", "root")
    assert v["allowed"] and v["admin"] and v["rule"] is None and v["reason"] == "an admin: no rule needed", v
    assert "why: an admin: no rule needed" in ptest(broker, "udp:9", "--user", "0").stdout


def test_group_rule_allows_a_user_by_its_supplementary_group(broker):
    """A group's rule lets a user in it (by a supplementary group, from the
    user database): the verdict is what a real GET of that user meets."""
    rid = broker.portctl("policy", "add", "tcp:8000-8099", "--group", "pbt-web", json=True).json["id"]
    v = verdict(broker, "8050", "--user", "pbt-alice")
    assert v["allowed"] and v["rule"]["id"] == rid and v["rule"]["kind"] == "group", v
    assert {"gid": G1, "name": "pbt-web"} in v["groups"], v
    assert not verdict(broker, "8050", "--user", "pbt-bob")["allowed"]
    # The group alone, a process of no user: its only group considered.
    v = verdict(broker, "8050", "--group", "pbt-web")
    assert v["allowed"] and v["uid"] is None and v["groups"] == [{"gid": G1, "name": "pbt-web"}], v
    r = ptest(broker, "8050", "--group", str(G1))
    assert r.stdout.splitlines()[:2] == [f"allowed: group pbt-web ({G1}) (no user) may get tcp:[::]:8050",
                                         f"groups considered: pbt-web ({G1})"], r.stdout
    assert not verdict(broker, "8100", "--group", "pbt-web")["allowed"]
    # The same as a real get says (alice's process, as a login starts it, with its groups).
    broker.portctl("get", "8050", uid=U1, gid=U1, groups=[U1, G1])
    broker.portctl("get", "8051", uid=U2, gid=U2, groups=[U2], check=1)
    broker.portctl("release", "8050")


def test_unit_rule_allows_that_unit_only(broker):
    """A unit's rule lets a process in that unit: --unit alone (no user),
    or with --user or --group; the user alone, or another unit, is denied."""
    rid = broker.portctl("policy", "add", "udp:5353", "--unit", "web.service", json=True).json["id"]
    v = verdict(broker, "udp:5353", "--unit", "web.service")
    assert v["allowed"] and v["rule"]["id"] == rid and v["uid"] is None and v["groups"] == [], v
    assert v["unit"] == "web.service", v
    assert not verdict(broker, "udp:5353", "--unit", "db.service")["allowed"]
    assert not verdict(broker, "udp:5353", "--user", "pbt-alice")["allowed"]
    assert not verdict(broker, "tcp:5353", "--unit", "web.service")["allowed"]
    r = ptest(broker, "udp:5353", "--user", "pbt-alice", "--unit", "web.service")
    assert r.returncode == 0 and r.stdout.startswith(
        f"allowed: user pbt-alice ({U1}) in unit web.service may get udp:[::]:5353\n"), r
    r = ptest(broker, "udp:5353", "--unit=web.service", "--group", "pbt-web")
    assert r.returncode == 0 and r.stdout.startswith(
        f"allowed: group pbt-web ({G1}) in unit web.service (no user) may get udp:[::]:5353\n"), r
    r = ptest(broker, "udp:5353", "--unit", "web.service")
    assert r.stdout.splitlines()[:3] == ["allowed: unit web.service (no user) may get udp:[::]:5353",
                                         "groups considered: none", f"why: allowed by rule {rid}"], r.stdout
    r = ptest(broker, "udp:5353", "--unit", "db.service")
    assert "why: permission denied: no rule lets unit db.service get udp:[::]:5353" in r.stdout, r


def test_admins_need_no_rule(users, make_broker):
    """Root and --admin-group members (by a supplementary group, or the group
    itself) are admins: no rule needed; others are not."""
    b = make_broker("--admin-group", "pbt-admins")
    for args in (("--user", "root"), ("--user", "pbt-admin"), ("--group", "pbt-admins")):
        v = verdict(b, "tcp:443", *args)
        assert v["allowed"] and v["admin"] and v["rule"] is None, (args, v)
    r = ptest(b, "443", "--user", "pbt-admin", uid=U2)
    assert r.returncode == 0 and r.stdout.splitlines()[2] == "why: an admin: no rule needed", r
    assert not verdict(b, "tcp:443", "--user", "pbt-bob")["admin"]
    # A rule that names an admin decides (its socket group and mode would apply).
    rid = b.portctl("policy", "add", "tcp:443", "--user", "pbt-admin", json=True).json["id"]
    v = verdict(b, "tcp:443", "--user", "pbt-admin")
    assert v["allowed"] and not v["admin"] and v["rule"]["id"] == rid, v


def test_leases_a_get_would_meet(broker):
    """Allowed by a rule, but another uid's lease holds the endpoint, or one
    that overlaps it: denied, naming the lease and its owner. The owner is
    told a get hands out the socket again; its own lease in the way (the
    IPv4 wildcard beside [::]) is named too, as a GET's bind would fail."""
    a = broker.portctl("policy", "add", "tcp:8080-8081", "--user", "pbt-alice", json=True).json["id"]
    broker.portctl("policy", "add", "tcp:8080-8081", "--user", "pbt-bob")
    lease = broker.portctl("get", "8080", uid=U2, json=True).json[0]["id"]
    other = broker.portctl("get", "tcp4:8081", uid=U2, json=True).json[0]["id"]

    r = ptest(broker, "8080", "--user", "pbt-alice", uid=U1)
    assert r.returncode == 1, r
    assert f"why: allowed by rule {a}, but tcp:[::]:8080 is held by uid {U2}" in r.stdout.splitlines(), r.stdout
    v = verdict(broker, "8080", "--user", "pbt-alice")
    assert not v["allowed"] and v["rule"]["id"] == a, v
    assert v["lease"] == {"id": lease, "owner_uid": U2, "owner": "pbt-bob"}, v
    v = verdict(broker, "8081", "--user", "pbt-alice")
    assert v["reason"] == (f"allowed by rule {a}, but tcp:[::]:8081 is held by uid {U2}: its lease "
                           "tcp:0.0.0.0:8081 overlaps it") and v["lease"]["id"] == other, v
    v = verdict(broker, "8080", "--user", "pbt-bob")
    assert v["allowed"] and v["lease"]["id"] == lease, v
    assert v["reason"].endswith("; its lease exists: a get hands out the same socket"), v
    v = verdict(broker, "8081", "--user", "pbt-bob")
    assert not v["allowed"] and v["lease"]["id"] == other, v
    assert v["reason"].endswith(f"but tcp:[::]:8081 overlaps the lease tcp:0.0.0.0:8081 of uid {U2}"), v
    # An admin gets no other uid's lease either.
    v = verdict(broker, "8080", "--user", "root")
    assert not v["allowed"] and v["admin"] and v["reason"] == f"allowed as an admin, but tcp:[::]:8080 is held " \
                                                             f"by uid {U2}", v


def test_nothing_is_bound_leased_or_audited(broker):
    """Tests of every kind leave no socket on the ports (ss; a bind of our
    own succeeds), no lease, and no denial in the log or the audit trail."""
    broker.portctl("policy", "add", "tcp:8000-8099", "--group", "pbt-web")
    broker.portctl("policy", "add", "udp:5353", "--user", "pbt-alice")
    for args in (("8050", "--user", "pbt-alice"), ("8050", "--user", "pbt-bob"), ("udp:5353", "--user", "pbt-alice"),
                 ("udp:5353", "--group", "pbt-web"), ("80", "--user", "root"), ("8060", "--unit", "x.service")):
        for uid in (None, U2):
            ptest(broker, *args, uid=uid)
            ptest(broker, *args, uid=uid, json=True)
    assert broker.portctl("status", json=True).json == []
    for port in (8050, 5353, 80, 8060):
        assert listening(port) == "", port
    assert try_bind(8050) == 0 and try_bind(80) == 0 and try_bind(5353, proto="udp") == 0
    assert not broker.events("deny")
    broker.portctl("get", "8099", uid=U2, check=1)         # a denial of a GET, the last one
    assert denials_audited(broker, U2) == [(U2, "tcp:[::]:8099", "no rule")]
    assert len(broker.events("deny")) == 1


def test_ranges_addresses_and_unix_patterns(users, make_broker, unix_dir):
    """A range and an address in a pattern match as for a GET; a Unix
    directory pattern lets a name directly in it (in a --unix-dir), shown
    with its socket group and mode, and no socket file is made."""
    b = make_broker("--unix-dir", unix_dir)
    b.portctl("policy", "add", "tcp:[::1]:9000-9009", "--user", "pbt-alice")
    assert verdict(b, "tcp:[::1]:9005", "--user", "pbt-alice")["allowed"]
    assert verdict(b, "tcp:[::1]:9009", "--user", "pbt-alice")["allowed"]
    assert not verdict(b, "tcp:[::1]:9010", "--user", "pbt-alice")["allowed"]
    assert not verdict(b, "tcp:127.0.0.1:9005", "--user", "pbt-alice")["allowed"]
    assert not verdict(b, "udp:[::1]:9005", "--user", "pbt-alice")["allowed"]

    rid = b.portctl("policy", "add", f"unix:{unix_dir}/", "--user", "pbt-alice", "--socket-group", "pbt-web",
                    "--socket-mode", "0660", json=True).json["id"]
    r = ptest(b, f"unix:{unix_dir}/web.sock", "--user", "pbt-alice", uid=U2)
    assert r.returncode == 0, r
    row = r.stdout.splitlines()[4]
    assert re.match(rf"{rid}\s+user pbt-alice \({U1}\)\s+unix:{unix_dir}/ \(socket group pbt-web, mode 0660\)", row), \
        r.stdout
    v = verdict(b, f"unix:{unix_dir}/web.sock", "--user", "pbt-alice")
    assert v["rule"]["socket_gid"] == G1 and v["rule"]["socket_mode"] == 0o660, v
    assert not verdict(b, f"unix:{unix_dir}/sub/web.sock", "--user", "pbt-alice")["allowed"]
    assert not verdict(b, f"unix:{unix_dir}/web.sock", "--user", "pbt-bob")["allowed"]
    assert not (unix_dir / "web.sock").exists()
    # A rule for a directory brokerd does not make sockets in: allowed by it, but refused.
    rid = b.portctl("policy", "add", "unix:/run/pbt-elsewhere/", "--user", "pbt-alice", json=True).json["id"]
    v = verdict(b, "unix:/run/pbt-elsewhere/a.sock", "--user", "pbt-alice")
    assert not v["allowed"] and v["rule"]["id"] == rid, v
    assert v["reason"] == (f"allowed by rule {rid}, but unix:/run/pbt-elsewhere/a.sock is not directly in a "
                           f"directory brokerd makes sockets in (--unix-dir: {unix_dir})"), v
    assert b.portctl("status", json=True).json == []


BAD_ARGS = [
    (("8080",), "policy test: give --user, --group or --unit (and --unit with either)"),
    (("--user", "pbt-alice"), "policy test: no endpoint given"),
    (("8080", "9090", "--user", "pbt-alice"), "policy test: one endpoint at a time"),
    (("8080", "--user", "pbt-alice", "--group", "pbt-web"),
     "policy test: give --user or --group, not both (a user brings its own groups)"),
    (("8080", "--user", "no-such-user-pbt"), "policy test: no such user 'no-such-user-pbt'"),
    (("8080", "--group", "no-such-group-pbt"), "policy test: no such group 'no-such-group-pbt'"),
    (("8080", "--unit", "webservice"), "policy test: invalid unit name 'webservice': expected e.g. 'web.service'"),
    (("tcp:8000-8099", "--user", "pbt-alice"), "invalid endpoint 'tcp:8000-8099'"),
    (("tcp:80800", "--user", "pbt-alice"), "invalid endpoint 'tcp:80800'"),
    (("8080", "--user"), "policy test: --user needs a value"),
    (("8080", "--user", "pbt-alice", "--user", "pbt-bob"), "policy test: --user given twice"),
    (("8080", "--user", "pbt-alice", "--socket-mode", "0660"), "policy test: unknown option '--socket-mode'"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments_are_usage_errors(broker, args, message):
    """One clear line and exit 2 (never 1, which says denied); under --json
    a usage error object; nothing asked of brokerd."""
    r = ptest(broker, *args, uid=U2)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith(f"portctl: {message}"), r
    assert r.stderr.splitlines()[1:] == ["Try 'portctl --help'."], r
    r = ptest(broker, *args, uid=U2, json=True)
    assert r.returncode == 2 and r.json["code"] == "usage" and r.json["error"].startswith(message), r


def test_when_no_test_can_be_made(broker, workdir):
    """brokerd out of reach, or a user in more groups than a test carries:
    exit 1 with one line on stderr (and the error object under --json, where
    a verdict has "allowed"), so that a script's "denied" fails closed."""
    r = ptest(broker, "8080", "--user", "pbt-alice", socket=str(workdir / "nothing.sock"))
    assert r.returncode == 1 and r.stdout == "" and r.stderr.startswith("portctl: cannot connect to brokerd"), r
    r = ptest(broker, "8080", "--user", "pbt-alice", json=True, socket=str(workdir / "nothing.sock"))
    assert r.returncode == 1 and r.json["code"] == "connect" and "allowed" not in r.json, r
    r = ptest(broker, "8080", "--user", "pbt-many", uid=U2)
    assert r.returncode == 1 and r.stderr == ("portctl: policy test: user pbt-many is in 71 groups, more than the 64 "
                                              "a test carries; test one of them with --group\n"), r
    assert verdict(broker, "8080", "--group", "pbt-g6069")["groups"] == [{"gid": 6069, "name": "pbt-g6069"}]
