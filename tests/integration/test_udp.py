# SPDX-License-Identifier: MIT
"""UDP through the broker: datagrams sent while the server is dead wait in
the broker-held socket's receive buffer and are read by the restarted
server; with a server that binds its own socket they are lost."""

import socket

import pytest

from conftest import TESTSERVER, wait_for

pytestmark = pytest.mark.usefixtures("netns")

U1 = 4242
PORT = 5353


def send(lines, addr="::1"):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for line in lines:
            s.sendto(line.encode(), (addr, PORT))


def read_lines(path):
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_datagrams_survive_server_restart(broker, procs, scratch):
    broker.portctl("policy", "add", f"udp:{PORT}", "--user", U1)
    out = scratch / "udp.out"

    def start():
        srv = broker.serve(procs, f"udp:{PORT}", uid=U1, server_args=["--out", out])
        srv.wait_ready()
        return srv

    srv = start()
    send(["before-1", "before-2"])
    wait_for(lambda: read_lines(out) == ["before-1", "before-2"], 5, "first datagrams read")

    srv.kill9()
    dead = [f"while-dead-{i}" for i in range(20)]
    send(dead[:10])
    send(dead[10:], addr="127.0.0.1")                    # dual-stack: v4 too
    st = broker.portctl("status", f"udp:{PORT}", json=True).json[0]
    assert st["bound"] is True and st["owner_uid"] == U1, st

    srv = start()
    wait_for(lambda: len(read_lines(out)) >= 22, 5, "datagrams sent while dead")
    got = read_lines(out)
    assert got[:2] == ["before-1", "before-2"]
    assert sorted(got[2:]) == sorted(dead), got
    send(["after"])
    wait_for(lambda: read_lines(out)[-1:] == ["after"], 5, "datagram after restart")


def test_self_bound_udp_loses_datagrams(procs, scratch):
    """The contrast: a server with its own socket loses what arrives while it is down."""
    out = scratch / "udp-self.out"

    def start():
        srv = procs.spawn([TESTSERVER, "--die-with-parent", "--bind", PORT, "--udp", "--no-reuseaddr",
                           "--out", out], uid=U1, name="udp-self")
        srv.wait_ready()
        return srv

    srv = start()
    send(["before"])
    wait_for(lambda: read_lines(out) == ["before"], 5, "first datagram read")
    srv.kill9()
    send([f"while-dead-{i}" for i in range(5)])
    start()
    send(["after"])
    wait_for(lambda: read_lines(out)[-1:] == ["after"], 5, "datagram after restart")
    assert read_lines(out) == ["before", "after"]
