# SPDX-License-Identifier: MIT
"""Policy as files: `portctl policy export` writes the rules as a policy
file, `portctl policy import FILE [--replace] [--check]` makes brokerd's
rules say what one says, in one transaction, and brokerd reads its policy
directory (--policy-dir, /etc/portbroker/policy.d) at start and at reload.
A file with a mistake changes nothing and names its line; a file another
uid could have written is never read; the rules of the policy directory
are the files' alone: neither `policy remove` nor an import changes them.
"""

import os
import pwd
import re
import socket
import struct
import subprocess

import pytest

from conftest import BROKERD, ROOT, VALGRIND, child_env, users_added, wait_for, write_file
from rawproto import HDR, REPLY, ERROR, msg

pytestmark = pytest.mark.usefixtures("netns")

U1, U2, G1 = 4242, 4343, 4300
POLICY_ADD, POLICY_BEGIN, POLICY_COMMIT = 4, 12, 13


def rules(b, uid=None):
    """brokerd's rules as (pattern, kind, id or unit, reserve, source)."""
    return sorted((r["pattern"], r["kind"], r["name"] if r["kind"] == "unit" else r["id_value"], r["reserve"],
                   r["source"]) for r in b.portctl("policy", "list", json=True, uid=uid).json)




def test_export_then_import_makes_the_same_rules(make_broker, workdir):
    """What one brokerd exports another imports to the same rules (a
    fleet's hosts); a second import adds nothing; --check changes nothing."""
    a = make_broker()
    for args in (("tcp:8000-8099", "--user", U1), ("udp:53", "--group", G1, "--reserve", "--owner", U2),
                 ("tcp:80", "--unit", "web.service", "--reserve", "--owner", U1),
                 ("unix:/run/pb-sockets/", "--user", U2, "--socket-group", G1, "--socket-mode", "0660"),
                 ("tcp:127.0.0.1:9000", "--user", U2, "--reserve")):
        a.portctl("policy", "add", *args)
    exported = a.portctl("policy", "export").stdout
    assert "udp:53 group 4300 reserve owner=4343" in exported, exported
    path = write_file(workdir / "fleet.conf", exported)
    for lease in a.portctl("status", json=True).json:  # a's reservations: another host's ports
        a.portctl("release", lease["endpoint"])

    b = make_broker()
    r = b.portctl("policy", "import", "--check", path)
    assert r.stdout.count("\n+ ") + r.stdout.startswith("+ ") == 5 and "nothing changed (--check)" in r.stdout, r
    assert b.portctl("policy", "list", json=True).json == []
    r = b.portctl("policy", "import", path, json=True).json
    assert (r["applied"], r["added"], r["changed"], r["removed"]) == (True, 5, 0, 0), r
    assert b.portctl("policy", "export").stdout == exported
    assert rules(b) == [(p, k, w, res, None) for p, k, w, res, _ in rules(a)]
    r = b.portctl("policy", "import", path)
    assert r.stdout == "0 added, 0 changed, 0 removed\n", r
    # The reservations were made at the commit, for their owners.
    leases = {l["endpoint"]: l["owner_uid"] for l in b.portctl("status", json=True).json}
    assert leases == {"udp:[::]:53": U2, "tcp:[::]:80": U1, "tcp:127.0.0.1:9000": U2}, leases
    # One audit event per rule added, each naming the import.
    assert len(b.events("policy-add")) == 5


def test_import_changes_in_place_and_replace_removes_the_rest(make_broker, workdir):
    """A rule the file says otherwise is changed, keeping its id; --replace
    removes the admin's rules the file does not name."""
    b = make_broker()
    b.portctl("policy", "add", "tcp:8000", "--user", U1)
    b.portctl("policy", "add", "tcp:8001", "--user", U1)
    path = write_file(workdir / "p.conf", "tcp:8000 user 4242 reserve   # now reserved\ntcp:8002 user 4343\n")
    r = b.portctl("policy", "import", "--check", "--replace", path)
    assert r.stdout.splitlines() == [
        "~ rule 1: tcp:8000 user 4242 reserve (was: tcp:8000 user 4242)",
        "+ tcp:8002 user 4343",
        "- rule 2: tcp:8001 user 4242",
        "1 to add, 1 to change, 1 to remove, 0 unchanged; nothing changed (--check)"], r.stdout
    b.portctl("policy", "import", path)                 # without --replace: rule 2 stays
    assert [(x["id"], x["pattern"], x["reserve"]) for x in b.portctl("policy", "list", json=True).json] == \
        [(1, "tcp:8000", True), (2, "tcp:8001", False), (3, "tcp:8002", False)]
    r = b.portctl("policy", "import", "--replace", path)
    assert r.stdout.endswith("0 added, 0 changed, 1 removed\n"), r
    assert [x["id"] for x in b.portctl("policy", "list", json=True).json] == [1, 3]
    assert [l["endpoint"] for l in b.portctl("status", json=True).json] == ["tcp:[::]:8000"]


@pytest.mark.parametrize("text,says", [
    ("tcp:80 user 4242\n\ntcp:81 usr 4242\n", ":3: expected user, group or unit"),
    ("tcp:80 user 4242\ntcp:80 user 4242 reserve\n", ":2: the rule of line 1 again"),
    ("tcp:80-81 user 4242 reserve\n", ":1: a reservation is of one endpoint"),
    ("tcp:80 group 4300 reserve\n", ":1: the reservation of a group or unit rule needs an owner"),
    ("tcp:80 user no-such-user-here\n", ":1: no such user"),
    ("tcp:80 user 4242 # fine\n" + "x" * 1100 + "\n", ":2: line longer than 1024 bytes"),
])
def test_a_file_with_a_mistake_changes_nothing(broker, workdir, text, says):
    broker.portctl("policy", "add", "tcp:9000", "--user", U2)
    before = rules(broker)
    path = write_file(workdir / "bad.conf", text)
    for flags in ((), ("--replace",), ("--check",)):
        r = broker.portctl("policy", "import", *flags, path, check=1)
        assert f"{path}{says}" in r.stderr, r
    assert rules(broker) == before
    assert broker.events("policy-add") and not broker.events("policy-remove")


def raw_v6(b):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(b.control)
    return s


def add_body(uid, port):
    """POLICY_ADD, version 6: user uid may get tcp:port (no reservation)."""
    return struct.pack("!BI", 1, uid) + b"\x00" + struct.pack("!BBHHH", 6, 0, port, port, 0) + bytes(16) + \
        b"\x00" + struct.pack("!I", 0)


def ask(s, mtype, body=b"", mid=1):
    s.send(msg(mtype, body, version=6, mid=mid))
    data = s.recv(4096)
    hdr = HDR.unpack(data[:16])
    return hdr[2], data


def test_an_import_is_one_transaction(broker):
    """Nothing an import sends counts until its commit: a connection that
    goes away takes its import with it, a second admin's import waits, and
    a commit that cannot be made changes nothing."""
    a = raw_v6(broker)
    assert ask(a, POLICY_BEGIN, b"\x00")[0] == POLICY_BEGIN | REPLY
    for port in (8000, 8001):
        t, data = ask(a, POLICY_ADD, add_body(U1, port))
        assert t == POLICY_ADD | REPLY and struct.unpack("!Q", data[16:24])[0] == 0   # numbered at the commit
    assert broker.portctl("policy", "list", json=True).json == []
    other = raw_v6(broker)
    t, data = ask(other, POLICY_BEGIN, b"\x00")
    assert t == ERROR and struct.unpack("!i", data[16:20])[0] == 16, data     # EBUSY
    r = broker.portctl("policy", "add", "tcp:7000", "--user", U2)           # single adds go on meanwhile
    a.close()                                                               # gone: no commit
    wait_for(lambda: ask(other, POLICY_BEGIN, b"\x00")[0] == POLICY_BEGIN | REPLY, 10, "the import to end")
    t, data = ask(other, POLICY_COMMIT)
    assert t == POLICY_COMMIT | REPLY and struct.unpack("!III", data[16:28]) == (0, 0, 0)
    assert [x["pattern"] for x in broker.portctl("policy", "list", json=True).json] == ["tcp:7000"], r
    t, data = ask(other, POLICY_COMMIT)                                     # none begun any more
    assert t == ERROR and struct.unpack("!i", data[16:20])[0] == 22, data
    other.close()


def test_only_admins_import_but_anyone_may_check(broker, workdir):
    """A user cannot import (not even the rules that would let it in), and
    the attempt is audited; --check only reads what `policy list` shows anyone."""
    path = write_file(workdir / "mine.conf", f"tcp:1-65535 user {U1}\n")
    r = broker.portctl("policy", "import", path, uid=U1, check=1)
    assert "permission denied" in r.stderr, r
    r = broker.portctl("policy", "import", "--check", path, uid=U1)
    assert r.stdout.startswith(f"+ tcp:1-65535 user {U1}"), r
    assert broker.portctl("policy", "list", json=True).json == []
    assert [l for l in broker.events("deny") if f"uid={U1}" in l and "may change policy" in l], broker.log()


def test_the_policy_directory_at_start_and_reload(make_broker, policy_dir, workdir):
    """brokerd's rules follow its policy directory's files at each start
    (and reload, a re-exec): added, changed in place, removed with the file
    or line; the admin's own rules are left alone; a file's rule can be
    removed only from its file, and an import cannot change it."""
    write_file(policy_dir / "10-web.conf", "# web\ntcp:8080 user 4242 reserve\ntcp:8443 user 4242\n")
    write_file(policy_dir / "20-dev.conf", "tcp:9000-9099 group 4300\n")
    write_file(policy_dir / "notes.txt", "not a rules file: skipped\n")
    b = make_broker("--policy-dir", policy_dir)
    assert rules(b) == [("tcp:8080", "user", U1, True, "10-web.conf"), ("tcp:8443", "user", U1, False, "10-web.conf"),
                        ("tcp:9000-9099", "group", G1, False, "20-dev.conf")]
    # The reservation was made before READY=1: the port is taken, for its owner.
    assert [(l["endpoint"], l["owner_uid"]) for l in b.portctl("status", json=True).json] == [("tcp:[::]:8080", U1)]
    b.portctl("policy", "add", "tcp:7000", "--user", U2)
    r = b.portctl("policy", "remove", "1", check=1)
    assert "comes from 10-web.conf" in r.stderr and "remove it there" in r.stderr, r
    conflict = write_file(workdir / "c.conf", "tcp:8443 user 4242 reserve\n")
    r = b.portctl("policy", "import", conflict, check=1)
    assert "rule 2 of the policy directory's 10-web.conf" in r.stderr, r

    write_file(policy_dir / "10-web.conf", "tcp:8443 user 4242 reserve\n")        # 8080 gone, 8443 reserved
    (policy_dir / "20-dev.conf").unlink()
    write_file(policy_dir / "30-dns.conf", "udp:53 user 4343 reserve\n")
    if not VALGRIND:
        b.portctl("admin", "reexec")
    else:
        b.restart()
    got = {x["pattern"]: (x["id"], x["source"]) for x in b.portctl("policy", "list", json=True).json}
    assert got == {"tcp:8443": (2, "10-web.conf"), "tcp:7000": (4, None), "udp:53": (5, "30-dns.conf")}, got
    leases = sorted((l["endpoint"], l["owner_uid"]) for l in b.portctl("status", json=True).json)
    # The lease a removed rule reserved stays until released, like any lease.
    assert leases == [("tcp:[::]:8080", U1), ("tcp:[::]:8443", U1), ("udp:[::]:53", U2)], leases


@pytest.mark.expect_log(r"10-bad.conf:2: .*stay as they were", r"10-bad.conf:2: unknown word",
                        *([] if VALGRIND else [r"event=error .*re-execution refused"]))
def test_a_broken_policy_directory_changes_nothing(make_broker, policy_dir):
    """A mistake in any file: brokerd serves with the rules it had (no
    file's half), says which line, and a reload is refused before the exec."""
    write_file(policy_dir / "00-good.conf", "tcp:8000 user 4242\n")
    b = make_broker("--policy-dir", policy_dir)
    write_file(policy_dir / "05-more.conf", "tcp:8001 user 4242\n")
    write_file(policy_dir / "10-bad.conf", "tcp:8002 user 4242\ntcp:8003 user 4242 frobnicate\n")
    b.restart()
    assert [x["pattern"] for x in b.portctl("policy", "list", json=True).json] == ["tcp:8000"]
    if not VALGRIND:
        r = b.portctl("admin", "reexec", check=1)
        assert "--check failed (exit status 1): " in r.stderr and "10-bad.conf:2: unknown word" in r.stderr, r
    r = brokerd_check(b, policy_dir)
    assert r.returncode == 1 and f"{policy_dir}/10-bad.conf:2: unknown word 'frobnicate'" in r.stderr, r


def brokerd_check(b, policy_dir):
    return subprocess.run([BROKERD, "--check", "--no-guard", "--control", b.control, "--db", b.db, "--config",
                           "/dev/null", "--policy-dir", str(policy_dir)], capture_output=True, text=True, timeout=20,
                          env=child_env())


@pytest.mark.parametrize("plant", ["file-of-another-uid", "group-writable-file", "world-writable-dir", "duplicate",
                                   "unreadable"])
def test_a_planted_or_doubled_policy_file_is_never_read(make_broker, policy_dir, plant, expect_log):
    """Another uid cannot give itself ports through the policy directory: a
    file it owns or could have written, or a directory it could write to,
    is refused whole (nothing of the directory is read); a rule in two files
    names both places."""
    write_file(policy_dir / "00-admin.conf", "tcp:7000 user 4343\n")
    if plant == "file-of-another-uid":
        write_file(policy_dir / "50-mine.conf", f"tcp:1-65535 user {U1}\n", owner=U1)
        says = "50-mine.conf must be a plain file owned by root"
    elif plant == "group-writable-file":
        write_file(policy_dir / "50-mine.conf", f"tcp:1-65535 user {U1}\n", mode=0o664)
        says = "50-mine.conf must be a plain file owned by root"
    elif plant == "world-writable-dir":
        write_file(policy_dir / "50-mine.conf", f"tcp:1-65535 user {U1}\n")
        policy_dir.chmod(0o777)
        says = "must be a directory owned by root"
    elif plant == "unreadable":      # root's, but the worker could not read it: said, nothing read
        write_file(policy_dir / "50-mine.conf", f"tcp:1-65535 user {U1}\n", mode=0o600)
        says = "50-mine.conf: cannot open: Permission denied \\(brokerd's unprivileged worker reads it"
    else:
        write_file(policy_dir / "50-mine.conf", "tcp:7000 user 4343 reserve\n")
        says = "50-mine.conf:1: the rule of 00-admin.conf:1 again"
    expect_log([says])
    b = make_broker("--policy-dir", policy_dir)
    assert b.portctl("policy", "list", json=True).json == []
    r = b.portctl("get", "8080", uid=U1, check=1)
    assert "no rule lets" in r.stderr, r
    if plant != "unreadable":       # brokerd --check run by hand, as root, reads it
        assert brokerd_check(b, policy_dir).returncode == 1


def documented_policy_file():
    """The policy file the README shows (and brokerd(8), the same lines)."""
    readme = (ROOT / "README.md").read_text()
    text = re.search(r"```conf\n(# /etc/portbroker/policy.d/50-host.conf\n.*?)```", readme, re.S).group(1)
    man = (ROOT / "man" / "brokerd.8").read_text().replace("\\-", "-")
    rules = [l for l in text.splitlines() if l and not l.startswith("#")]
    assert len(rules) == 10 and all(r in man for r in rules), "README and brokerd(8) show different files"
    return text


def test_the_documented_policy_file(make_broker, policy_dir, workdir):
    """The README's and brokerd(8)'s example runs as it says: nginx's and
    dnsmasq's ports reserved before READY=1, for root and dnsmasq; each
    developer has their own range and not the other's."""
    text = documented_policy_file()
    passwd = [f"{n}:x:{u}:{u}::/nonexistent:/usr/sbin/nologin" for n, u in (("alice", 4701), ("bob", 4702),
                                                                           ("dnsmasq", 4703))]
    group = [f"{n}:x:{u}:" for n, u in (("alice", 4701), ("bob", 4702), ("dnsmasq", 4703))]
    with users_added(workdir, passwd, group):
        alice, bob, dnsmasq = (pwd.getpwnam(n).pw_uid for n in ("alice", "bob", "dnsmasq"))
        write_file(policy_dir / "50-host.conf", text)
        b = make_broker("--policy-dir", policy_dir)
        log = b.log()
        assert log.count("event=reserve ") == 8 and log.index("event=reserve") < log.index("event=ready"), log
        leases = {l["endpoint"]: l["owner_uid"] for l in b.portctl("status", json=True).json}
        assert leases == {"tcp:0.0.0.0:80": 0, "tcp6:[::]:80": 0, "tcp:0.0.0.0:443": 0, "tcp6:[::]:443": 0,
                          "udp:0.0.0.0:53": dnsmasq, "udp6:[::]:53": dnsmasq, "tcp:0.0.0.0:53": dnsmasq,
                          "tcp6:[::]:53": dnsmasq}, leases
        b.portctl("get", "8000", uid=alice)
        r = b.portctl("get", "8001", uid=bob, check=1)
        assert "no rule lets" in r.stderr, r
        b.portctl("get", "8100", uid=bob)
        r = b.portctl("policy", "import", "--check", "--replace", policy_dir / "50-host.conf")
        assert r.stdout.startswith("0 to add, 0 to change, 0 to remove, 10 unchanged"), r


@pytest.mark.skipif(bool(VALGRIND), reason="re-execution under valgrind is not supported")
def test_a_reexec_never_turns_an_open_import_into_single_adds(broker):
    """The import lives in the worker that a re-exec replaces, while its
    connection is carried over: the importer's next POLICY_ADD must not be
    applied on its own (nor its commit find no import), so that connection
    is closed instead of carried; an importer's own REEXEC is refused."""
    a = raw_v6(broker)
    assert ask(a, POLICY_BEGIN, b"\x00")[0] == POLICY_BEGIN | REPLY
    assert ask(a, POLICY_ADD, add_body(U1, 8000))[0] == POLICY_ADD | REPLY
    t, data = ask(a, 7, mid=9)                                             # REEXEC on the importer's connection
    assert t == ERROR and struct.unpack("!i", data[16:20])[0] == 16, data  # EBUSY
    broker.portctl("admin", "reexec")                                      # another admin's reload
    try:
        a.send(msg(POLICY_ADD, add_body(U1, 8001), version=6, mid=2))
        got = a.recv(4096)
    except OSError:
        got = b""
    assert got == b"", got                                                  # closed: the import is gone
    a.close()
    assert broker.portctl("policy", "list", json=True).json == []
