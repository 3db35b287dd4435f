# SPDX-License-Identifier: MIT
"""Authorization and leases, driven through portctl as other uids: default
deny ("no rule"), ownership ("held by uid N"), admin-only policy changes and
releases, rules by user, group and port range, the admin group, a non-root
uid serving on port 80, one shared socket per lease (same inode, handouts
counted), the socket options the broker sets, and portctl's --json shapes."""

import os
import socket

import pytest

from conftest import PYTHON, TESTSERVER, fetch, try_bind, wait_for
from rawproto import POLICY_LIST, REPLY, STATUS, STATUS_BODY, answer, msg

pytestmark = pytest.mark.usefixtures("netns")

U1, U2, U3 = 4242, 4343, 4444

# Prints, for fd 3 of a `portctl get ... --` command: inode, SO_REUSEADDR,
# SO_REUSEPORT, SO_TYPE, listening?, and the environment systemd would set.
SOCKINFO = r"""
import os, socket
st = os.fstat(3)
s = socket.socket(fileno=3)
print(st.st_ino,
      s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR),
      s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
      s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
      s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
      os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID") == str(os.getpid()),
      os.environ.get("LISTEN_FDNAMES"), os.getuid())
s.detach()
"""


def sockinfo(broker, endpoint, uid=None):
    r = broker.portctl("get", endpoint, "--", PYTHON, "-I", "-c", SOCKINFO, uid=uid)
    f = r.stdout.split()
    return {"ino": int(f[0]), "reuseaddr": int(f[1]), "reuseport": int(f[2]), "type": int(f[3]),
            "listening": int(f[4]), "listen_fds": f[5], "listen_pid_ok": f[6] == "True",
            "fdnames": f[7], "uid": int(f[8])}


def test_no_rule_is_denied(broker):
    r = broker.portctl("get", "8080", uid=U1, check=1)
    assert "no rule" in r.stderr
    assert broker.events("deny"), "a denial must be logged (event=deny)"
    # Nothing was bound for the denied request.
    assert try_bind(8080) == 0
    st = broker.portctl("status", json=True).json
    assert st == [], st


def test_owner_and_other_uid(broker):
    rule = broker.portctl("policy", "add", "tcp:8080", "--user", U1, json=True).json
    assert isinstance(rule["id"], int) and rule["id"] >= 1
    broker.portctl("policy", "add", "tcp:8080", "--user", U2)

    got = broker.portctl("get", "8080", uid=U1, json=True).json
    assert isinstance(got, list) and len(got) == 1, got
    assert set(got[0]) >= {"id", "endpoint", "created"}, got
    assert got[0]["created"] is True and got[0]["endpoint"] == "tcp:[::]:8080", got
    assert broker.events("grant") and broker.events("create")

    # U2 has a rule too, but U1 holds the lease.
    r = broker.portctl("get", "8080", uid=U2, check=1)
    assert f"held by uid {U1}" in r.stderr
    # ... and cannot release it; nor can an unprivileged uid without a rule.
    r = broker.portctl("release", "8080", uid=U2, check=1)
    assert f"held by uid {U1}" in r.stderr
    r = broker.portctl("release", "8080", uid=U3, check=1)
    assert "held by uid" in r.stderr
    # The owner gets it again: not created this time.
    again = broker.portctl("get", "8080", uid=U1, json=True).json
    assert again[0]["created"] is False and again[0]["id"] == got[0]["id"], again

    st = broker.portctl("status", "8080", json=True).json
    assert len(st) == 1, st
    assert set(st[0]) >= {"id", "endpoint", "owner_uid", "owner", "since", "handouts", "holders",
                          "queued", "backlog", "bound"}, st
    assert st[0]["owner_uid"] == U1 and st[0]["bound"] is True and st[0]["handouts"] >= 2, st
    assert st[0]["backlog"] >= 128, st

    # Nobody else binds the held port, with or without SO_REUSEADDR / SO_REUSEPORT.
    for opts in ({"reuseaddr": True}, {"reuseaddr": False}, {"reuseaddr": True, "reuseport": True}):
        assert try_bind(8080, **opts) == 98, opts
        assert try_bind(8080, addr="127.0.0.1", **opts) == 98, opts

    # The owner releases; then U2 may have it.
    broker.portctl("release", "8080", uid=U1)
    assert broker.events("release")
    r = broker.portctl("release", "8080", uid=U1, check=1)
    assert "no lease for" in r.stderr
    got2 = broker.portctl("get", "8080", uid=U2, json=True).json
    assert got2[0]["created"] is True
    assert broker.portctl("status", "8080", json=True).json[0]["owner_uid"] == U2


# Prints, for fd 3: family, IPV6_V6ONLY (-1 for IPv4), the bound address, LISTEN_FDNAMES.
FAMILYINFO = r"""
import os, socket
s = socket.socket(fileno=3)
v6only = s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) if s.family == socket.AF_INET6 else -1
print(int(s.family), v6only, s.getsockname()[0], os.environ.get("LISTEN_FDNAMES"))
s.detach()
"""


def familyinfo(broker, endpoint, uid):
    f = broker.portctl("get", endpoint, "--", PYTHON, "-I", "-c", FAMILYINFO, uid=uid).stdout.split()
    return int(f[0]), int(f[1]), f[2], f[3]


@pytest.mark.expect_log(r"event=error endpoint=tcp:\[::\]:8080 .*the lease tcp6:\[::\]:8080 of uid 4242")
def test_ipv4_and_ipv6_only_wildcards_are_leases_of_their_own(broker):
    """tcp6:P is [::] with IPV6_V6ONLY=1, tcp4:P (tcp:0.0.0.0:P) IPv4: one
    uid holds both, each a socket of its family (nginx's `listen P; listen
    [::]:P;`, dnsmasq's wildcard mode); the dual-stack [::]:P overlaps them
    and is refused, naming the lease in the way. Nobody else binds any
    address of P; released, the IPv4 lease frees IPv4 alone."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    assert familyinfo(broker, "tcp6:8080", U1) == (socket.AF_INET6, 1, "::", "tcp6-8080")
    assert familyinfo(broker, "tcp4:8080", U1) == (socket.AF_INET, -1, "0.0.0.0", "tcp-0.0.0.0-8080")
    st = {l["endpoint"]: l for l in broker.portctl("status", json=True).json}
    assert set(st) == {"tcp6:[::]:8080", "tcp:0.0.0.0:8080"}, st
    assert all(l["owner_uid"] == U1 and l["bound"] for l in st.values()), st
    # The same leases by their canonical names (the same sockets), and a second get.
    assert familyinfo(broker, "tcp6:[::]:8080", U1)[:2] == (socket.AF_INET6, 1)
    r = broker.portctl("get", "8080", uid=U1, check=1)
    assert "the lease tcp6:[::]:8080 of uid 4242 holds the port" in r.stderr, r.stderr
    # The port named as a whole: status shows its leases; release asks for them by name.
    assert {l["endpoint"] for l in broker.portctl("status", "8080", json=True).json} == set(st)
    r = broker.portctl("release", "8080", uid=U1, check=1)
    assert "no lease for tcp:[::]:8080; the port's leases are tcp6:[::]:8080, tcp:0.0.0.0:8080: release " \
           "them by name" in r.stderr, r.stderr
    r = broker.portctl("status", "8081", check=1)
    assert "no lease for tcp:[::]:8081" in r.stderr, r.stderr
    r = broker.portctl("status", "tcp:[::]:8080", check=1)         # the dual-stack lease by name: none
    assert "no lease for tcp:[::]:8080" in r.stderr, r.stderr

    for addr, v6only in (("::", True), ("::", False), ("::1", True), ("127.0.0.1", False), ("0.0.0.0", False)):
        assert try_bind(8080, addr=addr, v6only=v6only) == 98, addr
        assert try_bind(8080, addr=addr, v6only=v6only, reuseport=True) == 98, addr
    broker.portctl("release", "tcp4:8080", uid=U1)
    assert try_bind(8080, addr="127.0.0.1") == 0      # IPv4 is free for anyone now
    assert try_bind(8080, addr="0.0.0.0") == 0
    assert try_bind(8080, addr="::1", v6only=True) == 98
    assert try_bind(8080, addr="::", v6only=True) == 98


def test_an_older_client_lists_what_its_version_can_say(broker):
    """A client of protocol version 2 or 3 cannot decode an IPv6-only
    wildcard: brokerd leaves those out of its STATUS and POLICY_LIST
    replies (in its version) rather than answer in 4, which would make the
    whole list unreadable to it. A version 4 client sees them all."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    broker.portctl("policy", "add", "tcp6:8081", "--user", U1)
    broker.portctl("get", "tcp6:8080", uid=U1)
    broker.portctl("get", "tcp4:8080", uid=U1)
    with broker.raw() as s:
        for version, leases, rules in ((2, 1, 1), (3, 1, 1), (4, 2, 2)):
            s.send(msg(STATUS, STATUS_BODY, version=version, mid=version))
            kind, hdr, data = answer(s)
            assert kind == "reply" and hdr[1] == version and hdr[2] == STATUS | REPLY, (version, hdr)
            assert data[16] == leases, (version, data[16:18])
            s.send(msg(POLICY_LIST, bytes(8), version=version, mid=version))
            kind, hdr, data = answer(s)
            assert kind == "reply" and hdr[1] == version and hdr[2] == POLICY_LIST | REPLY, (version, hdr)
            assert data[16] == rules, (version, data[16:18])
    # The library asks in version 4: portctl lists both.
    assert len(broker.portctl("status", json=True).json) == 2
    assert len(broker.portctl("policy", "list", json=True).json) == 2


def test_policy_changes_need_admin(broker):
    rid = broker.portctl("policy", "add", "tcp:9000", "--user", U1, json=True).json["id"]
    for args in (["policy", "add", "tcp:9001", "--user", U1],
                 ["policy", "add", "tcp:1-65535", "--group", U1],
                 ["policy", "remove", rid]):
        r = broker.portctl(*args, uid=U1, check=1)
        assert "only root or" in r.stderr, r
    rules = broker.portctl("policy", "list", json=True).json
    assert [x["id"] for x in rules] == [rid], rules
    assert set(rules[0]) >= {"id", "kind", "id_value", "name", "pattern", "created"}, rules
    assert rules[0]["id_value"] == U1 and rules[0]["pattern"] == "tcp:9000", rules
    # Non-admins may read the policy and status.
    assert broker.portctl("policy", "list", uid=U1, json=True).json == rules

    # An admin may release anyone's lease.
    broker.portctl("get", "9000", uid=U1)
    broker.portctl("release", "9000")
    assert broker.portctl("status", json=True).json == []
    broker.portctl("policy", "remove", rid)
    assert broker.portctl("policy", "list", json=True).json == []
    assert broker.events("policy-add") and broker.events("policy-remove")
    r = broker.portctl("get", "9000", uid=U1, check=1)
    assert "no rule" in r.stderr


def test_admin_group(make_broker):
    b = make_broker("--admin-group", "5000")
    # A member of the admin group (supplementary) may change rules and get anything.
    b.portctl("policy", "add", "tcp:7000", "--user", U2, uid=U1, groups=[5000])
    b.portctl("get", "7100", uid=U1, groups=[5000])
    # Its primary group counts too.
    b.portctl("get", "7200", uid=U3, gid=5000)
    r = b.portctl("policy", "add", "tcp:7000", "--user", U3, uid=U2, check=1)
    assert "only root or" in r.stderr
    # Only the admin-group member's lease; the admin may release another's.
    b.portctl("get", "7000", uid=U2)
    b.portctl("release", "7000", uid=U1, groups=[5000])


def test_group_and_range_rules(broker):
    broker.portctl("policy", "add", "tcp:8000-8099", "--group", 4300)
    broker.portctl("policy", "add", "udp:127.0.0.1:5300-5310", "--user", U2)
    broker.portctl("get", "8050", uid=U1, gid=4300)                # primary group
    broker.portctl("get", "tcp:127.0.0.1:8051", uid=U2, groups=[4300])   # supplementary
    assert "no rule" in broker.portctl("get", "8100", uid=U1, gid=4300, check=1).stderr
    assert "no rule" in broker.portctl("get", "8052", uid=U1, check=1).stderr
    broker.portctl("get", "udp:127.0.0.1:5305", uid=U2)
    assert "no rule" in broker.portctl("get", "udp:5305", uid=U2, check=1).stderr   # other address
    assert "no rule" in broker.portctl("get", "tcp:127.0.0.1:5305", uid=U2, check=1).stderr


def test_unprivileged_uid_serves_port_80(broker, procs):
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        assert int(f.read()) == 1024        # a fresh netns: binding 80 needs privilege
    broker.portctl("policy", "add", "tcp:80", "--user", U1)
    # On its own, U1 cannot bind port 80 ...
    own = procs.spawn([TESTSERVER, "--bind", 80], uid=U1, name="own-bind")
    assert own.wait(10) == 3 and "EACCES" in own.stderr()
    # ... through the broker it serves there.
    srv = broker.serve(procs, "80", uid=U1)
    pid = srv.wait_ready()
    assert fetch(80) == f"ok {pid}\n"
    assert fetch(80, addr="::1") == f"ok {pid}\n"
    with open(f"/proc/{pid}/status") as f:
        assert any(l.split()[:2] == ["Uid:", str(U1)] for l in f), "server must run as the unprivileged uid"


def test_same_uid_gets_the_same_socket(broker):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    a = sockinfo(broker, "8080", uid=U1)
    b = sockinfo(broker, "8080", uid=U1)
    assert a["ino"] == b["ino"], (a, b)
    assert a["uid"] == U1
    # Socket activation environment, as systemd sets it.
    assert a["listen_fds"] == "1" and a["listen_pid_ok"], a
    assert a["fdnames"] not in (None, "None", ""), a
    # TCP: a listening stream socket with SO_REUSEADDR and never SO_REUSEPORT.
    assert a["type"] == socket.SOCK_STREAM and a["listening"] == 1, a
    assert a["reuseaddr"] == 1 and a["reuseport"] == 0, a
    st = broker.portctl("status", "8080", json=True).json[0]
    assert st["handouts"] >= 2, st
    # A lease is its owner's: even root (an admin) is refused a copy.
    r = broker.portctl("get", "8080", check=1)
    assert f"held by uid {U1}" in r.stderr


def test_udp_socket_options(broker):
    u = sockinfo(broker, "udp:5353")
    assert u["type"] == socket.SOCK_DGRAM and u["reuseaddr"] == 0 and u["reuseport"] == 0, u
    for opts in ({"reuseaddr": True}, {"reuseaddr": False}, {"reuseaddr": True, "reuseport": True}):
        assert try_bind(5353, proto="udp", **opts) == 98, opts
        assert try_bind(5353, proto="udp", addr="127.0.0.1", **opts) == 98, opts


def test_two_endpoints_in_one_get(broker):
    script = ("import os, socket\n"
              "for fd in (3, 4):\n"
              "    s = socket.socket(fileno=fd); print(s.getsockname()[1], s.type == socket.SOCK_DGRAM); s.detach()\n"
              "print(os.environ['LISTEN_FDS'])\n")
    r = broker.portctl("get", "8081", "udp:8082", "--", PYTHON, "-I", "-c", script)
    assert r.stdout.split() == ["8081", "False", "8082", "True", "2"], r


def test_socket_from_environment(broker):
    """$PORTBROKER_SOCKET selects the broker when --socket is absent: the
    rule only this broker has is what it lists (another brokerd at the
    default path would not know it)."""
    r = broker.portctl("status", env_socket=True, json=True)
    assert r.json == []
    broker.portctl("policy", "add", "tcp:8089", "--user", U1)
    rules = broker.portctl("policy", "list", env_socket=True, uid=U1, json=True).json
    assert [(x["kind"], x["id_value"], x["pattern"]) for x in rules] == [("user", U1, "tcp:8089")], rules


def test_usage_errors(broker):
    for args in (["get"], ["frobnicate"], ["policy", "add", "tcp:80"], ["policy", "remove"],
                 ["policy", "add", "tcp:80", "--user"]):
        r = broker.portctl(*args, check=2)
        assert r.stderr.strip(), args
    r = broker.portctl("get", "tcp:99999", check=2)        # a usage error, found before any request
    assert r.stderr.startswith("portctl: invalid endpoint 'tcp:99999'"), r
    # None of it reached brokerd: no request, no lease, still serving.
    assert broker.alive() and os.path.exists(broker.control)
    assert broker.portctl("status", json=True).json == []
    assert broker.events("deny") == [] and broker.events("bad-message") == [], broker.log()


def test_peer_in_another_network_namespace_is_refused(broker):
    """Sockets live in the broker's netns: a peer elsewhere gets none, even root."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    other_net = ["unshare", "--net"]
    r = broker.portctl("get", "8080", uid=U1, prefix=other_net, check=1)
    assert "network namespace" in r.stderr, r
    r = broker.portctl("get", "8080", prefix=other_net, check=1)
    assert "network namespace" in r.stderr, r
    assert broker.events("deny")
    assert broker.portctl("status", json=True).json == []
    broker.portctl("get", "8080", uid=U1)                   # from our namespace: fine


def test_peer_in_another_user_namespace_is_refused(broker):
    """Root of a user namespace of its own maps to uid 0 outside, yet is refused."""
    r = broker.portctl("get", "8080", prefix=["unshare", "--user", "--map-root-user"], check=1)
    assert "user namespace" in r.stderr, r
    r = broker.portctl("policy", "add", "tcp:1-65535", "--user", U1,
                       prefix=["unshare", "--user", "--map-root-user"], check=1)
    assert broker.portctl("policy", "list", json=True).json == []
