# SPDX-License-Identifier: MIT
"""Rules and leases survive a broker crash (SIGKILL) or clean restart on the
same database: they are listed again, held ports are re-bound before any
client asks (nobody else can take the port in between), the owner gets its
socket and others are still refused. A holder that outlives the broker
keeps serving throughout."""

import errno

import pytest

from conftest import TESTSERVER, Load, fetch, try_bind, wait_for

pytestmark = pytest.mark.usefixtures("netns")

U1, U2 = 4242, 4343
# A lease whose port a holder kept across a broker crash stays unbound (and says so) until that holder exits.
HELD_BY_SURVIVOR = r"event=error endpoint=tcp:\[::\]:8080 .*cannot bind lease 1 again: Address already in use"


def setup_state(broker):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    broker.portctl("policy", "add", "tcp:8080", "--user", U2)
    broker.portctl("policy", "add", "udp:5353", "--group", 4300)
    broker.portctl("get", "8080", uid=U1)
    broker.portctl("get", "udp:5353", uid=U2, gid=4300)
    return (broker.portctl("policy", "list", json=True).json,
            broker.portctl("status", json=True).json)


def stable(leases):
    keep = ("id", "endpoint", "owner_uid", "since", "bound")
    return sorted(({k: l[k] for k in keep} for l in leases), key=lambda l: l["id"])


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_rules_and_leases_survive_broker_restart(broker, procs, how):
    rules, leases = setup_state(broker)
    assert len(rules) == 3 and len(leases) == 2, (rules, leases)
    assert try_bind(8080) == errno.EADDRINUSE and try_bind(5353, proto="udp") == errno.EADDRINUSE

    if how == "kill9":
        broker.kill9()
        broker.start()
    else:
        broker.restart()
    # Re-bound before any client asked: nobody can take the ports.
    assert try_bind(8080) == errno.EADDRINUSE
    assert try_bind(8080, reuseaddr=False) == errno.EADDRINUSE
    assert try_bind(5353, proto="udp") == errno.EADDRINUSE

    assert broker.portctl("policy", "list", json=True).json == rules
    after = broker.portctl("status", json=True).json
    assert stable(after) == stable(leases), (leases, after)

    # The owner gets its lease back and serves on it; another uid is refused.
    srv = broker.serve(procs, "8080", uid=U1)
    pid = srv.wait_ready()
    assert fetch(8080) == f"ok {pid}\n"
    r = broker.portctl("get", "8080", uid=U2, check=1)
    assert f"held by uid {U1}" in r.stderr
    r = broker.portctl("get", "udp:5353", uid=U1, check=1)
    assert f"no rule lets uid {U1} get udp:" in r.stderr, r          # policy first: U1 is not in group 4300
    broker.portctl("get", "udp:5353", uid=U2, gid=4300)


@pytest.mark.expect_log(HELD_BY_SURVIVOR)
def test_holder_keeps_serving_across_broker_crash(broker, procs):
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    srv = broker.serve(procs, "8080", uid=U1)
    pid = srv.wait_ready()
    load = Load(procs, 8080, 300, 3)
    broker.kill9()
    assert fetch(8080) == f"ok {pid}\n"                 # the server holds the socket: no broker needed
    broker.start()
    res = load.result()
    assert res["ok"] == res["attempted"], res
    # After the restart the lease is back; the running holder never noticed.
    st = broker.portctl("status", "8080", json=True).json
    assert len(st) == 1 and st[0]["owner_uid"] == U1, st
    assert fetch(8080) == f"ok {pid}\n"
    # When the holder dies, its restart gets a working socket again.
    srv.kill9()
    srv = broker.serve(procs, "8080", uid=U1)
    pid2 = srv.wait_ready()
    assert fetch(8080) == f"ok {pid2}\n"
    assert try_bind(8080) == errno.EADDRINUSE


@pytest.mark.expect_log(HELD_BY_SURVIVOR)
def test_port_retaken_when_surviving_holder_exits(broker, procs):
    """Guarantee 2 across a broker crash: while a holder that outlived the
    broker still listens, nobody can bind the port; once it exits, the broker
    must take the port back on its own, not leave it free for anyone to bind
    until the owner's next get. brokerd does not take the holder's socket
    from it (no pidfd_getfd() on other processes): the lease waits, unbound."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    srv = broker.serve(procs, "8080", uid=U1)
    srv.wait_ready()
    broker.kill9()
    broker.start()
    assert broker.portctl("status", "8080", json=True).json[0]["bound"] is False
    assert try_bind(8080) == errno.EADDRINUSE            # the holder's listener (and the guard)
    srv.kill9()
    assert try_bind(8080) == errno.EADDRINUSE            # at once: no window for anyone
    wait_for(lambda: try_bind(8080) == errno.EADDRINUSE, 5,
             "brokerd to re-take port 8080 after the surviving holder exited (root could bind it)")


@pytest.mark.expect_log(HELD_BY_SURVIVOR)
def test_other_uid_cannot_take_port_when_surviving_holder_exits(broker, procs):
    """The hijack the re-take must prevent: after a broker crash, a holder
    that outlived it exits; another uid (no rule at all) binds the port at
    once. It must fail: the lease's port is never free for others."""
    broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    srv = broker.serve(procs, "8080", uid=U1)
    srv.wait_ready()
    broker.kill9()
    broker.start()
    srv.kill9()
    hostile = procs.spawn([TESTSERVER, "--die-with-parent", "--bind", 8080], uid=U2, name="hostile")
    wait_for(lambda: not hostile.alive() or "ready" in hostile.output(), 10, "the other uid's bind")
    assert not hostile.alive(), \
        f"uid {U2} (no rule) bound port 8080 of uid {U1}'s lease after the surviving holder exited"
    assert hostile.popen.returncode == 3 and "EADDRINUSE" in hostile.stderr(), hostile.stderr()
    srv = broker.serve(procs, "8080", uid=U1)
    pid = srv.wait_ready()
    assert fetch(8080) == f"ok {pid}\n"
