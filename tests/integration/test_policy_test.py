# SPDX-License-Identifier: MIT
"""POLICY_TEST (issue 13, point 5): which rule would let a described peer
get an endpoint, and the verdict a GET would get now, with nothing bound,
leased, logged as a denial or audited. Here by hand over the control
socket (proto/PROTOCOL.md §4.19): the verdicts, and malformed requests
refused with EBADMSG while brokerd serves on with no fd left behind."""

import sqlite3
import struct

import pytest

from conftest import wait_for
from rawproto import (ERROR, POLICY_TEST, REPLY, TEST_VERSION, UID_NONE, answer, check_error_reply, endpoint,
                      msg, policy_test_body, policy_tested)

pytestmark = pytest.mark.usefixtures("netns")

U1, U2 = 4242, 4343
G1 = 4300


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
