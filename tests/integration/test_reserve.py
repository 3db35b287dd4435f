# SPDX-License-Identifier: MIT
"""Reservation: a rule that says `reserve` has brokerd lease its endpoint
itself, for the rule's user (or the owner a group or unit rule names), at
start before READY=1 and as soon as such a rule is added. From then on
nothing else can take the port (another uid's bind, an outgoing
connection), clients queue on it before any server runs, and its owner's
first `get` is handed that very socket.
"""

import socket
import subprocess
import sys

import pytest

from conftest import as_user, fetch, try_bind, wait_for, write_file

pytestmark = pytest.mark.usefixtures("netns")

U1, U2, G1 = 4242, 4343, 4300
PORT = 8080

# Binds [::]:PORT (and 0.0.0.0:PORT) as the uid it runs as, with
# SO_REUSEADDR; prints the errnos (0: bound).
BIND = r"""
import socket, sys
port, out = int(sys.argv[1]), []
for fam, addr in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, port)); s.listen(1); out.append(0)
    except OSError as e:
        out.append(e.errno)
    s.close()
print(*out)
"""


def bind_as(uid, port):
    r = subprocess.run(as_user(uid) + [sys.executable, "-c", BIND, str(port)], capture_output=True, text=True,
                       timeout=20, check=True)
    return [int(x) for x in r.stdout.split()]


def leases(b):
    return {l["endpoint"]: (l["owner_uid"], l["handouts"]) for l in b.portctl("status", json=True).json}




def test_reserved_at_start_for_its_owner_alone(make_broker, policy_dir, procs):
    """Ready means reserved: the port is taken before any server asks, nobody
    else binds it, a client's connection waits in its queue, and the owner's
    server gets that very socket and serves the waiting client."""
    write_file(policy_dir / "web.conf", f"tcp:{PORT} user {U1} reserve\nudp:53 group {G1} reserve owner={U2}\n")
    b = make_broker("--policy-dir", policy_dir)
    assert leases(b) == {f"tcp:[::]:{PORT}": (U1, 0), "udp:[::]:53": (U2, 0)}
    log = b.log()
    assert log.index("event=reserve") < log.index("event=ready"), log
    # Nobody else may bind it: not another uid, not root outside brokerd.
    assert 0 not in bind_as(U2, PORT)
    assert try_bind(PORT) != 0
    # A client connects before any server runs: it waits in the queue.
    early = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    # The group rule's reservation is its owner's: another member is refused.
    r = b.portctl("get", "udp:53", uid=U1, groups=[G1], check=1)
    assert f"held by uid {U2}" in r.stderr, r
    server = b.serve(procs, PORT, uid=U1)
    pid = server.wait_ready()
    early.settimeout(5)
    assert early.recv(64).decode() == f"ok {pid}\n"
    early.close()
    assert fetch(PORT) == f"ok {pid}\n"
    assert leases(b)[f"tcp:[::]:{PORT}"] == (U1, 1)      # the same lease, handed out once


@pytest.mark.expect_log(r"event=reserve .*cannot reserve tcp:\[::\]:8080 for uid 4242: cannot bind")
def test_a_busy_port_is_reserved_once_it_is_free(make_broker, policy_dir):
    """A port another socket holds at start is taken as soon as it lets go."""
    write_file(policy_dir / "web.conf", f"tcp:{PORT} user {U1} reserve\n")
    squatter = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    squatter.bind(("::", PORT))
    squatter.listen(1)
    b = make_broker("--policy-dir", policy_dir, "--no-guard")
    assert leases(b) == {}
    squatter.close()
    wait_for(lambda: leases(b) == {f"tcp:[::]:{PORT}": (U1, 0)}, 10, "the reservation once the port is free")
    assert try_bind(PORT) != 0


def test_a_released_reservation_stays_released_while_another_is_retried(make_broker, policy_dir):
    """Only a reservation whose port was busy is tried again: one its owner
    released is not made again by that retry (only at the next start)."""
    write_file(policy_dir / "web.conf", f"tcp:{PORT} user {U1} reserve\ntcp:9090 user {U2} reserve\n")
    squatter = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    squatter.bind(("::", 9090))
    squatter.listen(1)
    b = make_broker("--policy-dir", policy_dir, "--no-guard")
    assert leases(b) == {f"tcp:[::]:{PORT}": (U1, 0)}
    b.portctl("release", str(PORT), uid=U1)
    b.wait_event("release")
    squatter.close()
    wait_for(lambda: leases(b) == {"tcp:[::]:9090": (U2, 0)}, 10, "the busy reservation once its port is free")
    assert leases(b) == {"tcp:[::]:9090": (U2, 0)}


def test_a_reservation_added_is_made_at_once_and_again_at_start(broker):
    """`policy add --reserve` takes the port now; a reservation released by
    an admin is made again at the next start."""
    r = broker.portctl("policy", "add", f"tcp:127.0.0.1:{PORT}", "--user", U1, "--reserve")
    assert r.stdout == f"rule 1 added: user {U1} may get tcp:127.0.0.1:{PORT}, reserved for uid {U1}\n", r
    assert leases(broker) == {f"tcp:127.0.0.1:{PORT}": (U1, 0)}
    assert 0 not in bind_as(U2, PORT)[1:]
    broker.portctl("release", f"tcp:127.0.0.1:{PORT}")
    assert leases(broker) == {}
    broker.restart()
    assert leases(broker) == {f"tcp:127.0.0.1:{PORT}": (U1, 0)}


@pytest.mark.expect_log(r"event=reserve .*cannot reserve tcp:\[::\]:8080 for uid 4242: uid 4343 holds")
def test_a_reservation_never_takes_another_uids_lease(broker):
    """A port another uid already leases stays its: the reservation waits,
    logged and audited, and the owner of the reserve rule is refused."""
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U2)
    broker.portctl("get", str(PORT), uid=U2)
    broker.portctl("policy", "add", f"tcp:{PORT}", "--group", G1, "--reserve", "--owner", U1)
    assert leases(broker) == {f"tcp:[::]:{PORT}": (U2, 1)}
    r = broker.portctl("get", str(PORT), uid=U1, groups=[G1], check=1)
    assert f"held by uid {U2}" in r.stderr, r


@pytest.mark.expect_log(r"event=reserve .*cannot reserve tcp:\[::\]:8080 for uid 4242: uid 4343 holds")
def test_a_reservation_kept_out_by_another_uids_lease_is_made_once_it_goes(broker):
    """The waiting reservation is made when that lease is released, before
    its old owner (or anyone) takes the port again; an owner releasing its
    own reservation is not given it back."""
    broker.portctl("policy", "add", f"tcp:{PORT}", "--user", U2)
    broker.portctl("get", str(PORT), uid=U2)
    broker.portctl("policy", "add", f"tcp:{PORT}", "--group", G1, "--reserve", "--owner", U1)
    assert leases(broker) == {f"tcp:[::]:{PORT}": (U2, 1)}
    broker.portctl("release", str(PORT), uid=U2)
    assert leases(broker) == {f"tcp:[::]:{PORT}": (U1, 0)}
    r = broker.portctl("get", str(PORT), uid=U2, check=1)
    assert f"held by uid {U1}" in r.stderr, r
    broker.portctl("release", str(PORT), uid=U1)
    assert leases(broker) == {}


@pytest.mark.parametrize("args,says", [
    (("tcp:8000-8099", "--user", U1, "--reserve"), "a reservation is of one endpoint"),
    (("tcp:80", "--group", G1, "--reserve"), "needs --owner USER"),
    (("tcp:80", "--user", U1, "--owner", U2, "--reserve"), "its user's: no --owner"),
    (("tcp:80", "--group", G1, "--owner", U2), "give --reserve too"),
])
def test_what_cannot_be_reserved(broker, args, says):
    r = broker.portctl("policy", "add", *args, check=False)
    assert r.returncode in (1, 2) and says in r.stderr, r
    assert broker.portctl("policy", "list", json=True).json == []


@pytest.mark.expect_log(r"event=reserve .*its own lease tcp:\[::\]:8080 holds the port")
def test_two_reservations_of_one_port_for_one_owner(make_broker, policy_dir):
    """Two reservations that overlap (the dual-stack wildcard and 0.0.0.0)
    for one owner: the first is made, the second says which lease is in
    its way and is not retried (no bind could succeed)."""
    write_file(policy_dir / "web.conf", f"tcp:{PORT} user {U1} reserve\ntcp:0.0.0.0:{PORT} user {U1} reserve\n")
    b = make_broker("--policy-dir", policy_dir)
    assert leases(b) == {f"tcp:[::]:{PORT}": (U1, 0)}
    assert len([l for l in b.events("reserve") if "its own lease" in l]) == 1
