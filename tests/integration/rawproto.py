# SPDX-License-Identifier: MIT
"""The control protocol by hand (proto/PROTOCOL.md), for tests that talk to
brokerd over raw SOCK_SEQPACKET sockets: well-formed requests, and the
malformed ones a well-behaved client cannot send. Importable from the
scripts tests run as other uids, too (it needs nothing but the standard
library)."""

import socket
import struct

HDR = struct.Struct("!IHHII")           # length, version, type, id, reserved
VERSION = 2                             # PB_PROTO_VERSION_MIN: what every message but INFO is sent with
GET, RELEASE, STATUS, POLICY_ADD, POLICY_REMOVE, POLICY_LIST = 1, 2, 3, 4, 5, 6
POLICY_TEST, TEST_VERSION = 11, 6       # POLICY_TEST came with version 6
UID_NONE = 0xFFFFFFFF
LOG = 10
LOG_VERSION = 6                         # LOG came with version 6
REPLY, ERROR = 0x8000, 0xFFFF


def msg(mtype, body=b"", version=VERSION, mid=7, length=None, reserved=0):
    return HDR.pack(16 + len(body) if length is None else length, version, mtype, mid, reserved) + body


def endpoint(port, transport=6, family=0):
    return struct.pack("!BBHHH", transport, family, port, port, 0) + bytes(16)


def unix_endpoint(path):
    """A Unix endpoint: 24 bytes of transport 1, then the path as text."""
    return bytes([1]) + bytes(23) + bytes([len(path)]) + path.encode()


STATUS_BODY = b"\x00" + bytes(24) + struct.pack("!Q", 0)


def policy_test_body(ep, uid=UID_NONE, groups=(), unit=""):
    """A POLICY_TEST body: endpoint bytes, then the peer it describes."""
    u = unit.encode()
    return (ep + struct.pack("!IB", uid, len(groups)) + b"".join(struct.pack("!I", g) for g in groups) +
            bytes([len(u)]) + u)


def _text(data, off):
    n = data[off]
    return data[off + 1:off + 1 + n].decode(), off + 1 + n


def policy_tested(data):
    """The fields of a POLICY_TEST reply (after checking its type and length)."""
    assert HDR.unpack(data[:16])[2] == POLICY_TEST | REPLY and HDR.unpack(data[:16])[0] == len(data), data
    allowed, admin, rule_id = struct.unpack("!BBQ", data[16:26])
    off, rule = 26, None
    if rule_id:
        kind, pid = struct.unpack("!BI", data[off:off + 5])
        unit, off = _text(data, off + 5)
        transport = data[off]
        pattern = data[off:off + 24]
        off += 24
        if transport == 1:                      # a Unix pattern: its path, socket gid and mode
            path, off = _text(data, off)
            pattern += path.encode()
            off += 6
        flags, owner = struct.unpack("!BI", data[off:off + 5])     # version 6: reserve, owner, source
        source, off = _text(data, off + 5)
        created = struct.unpack("!Q", data[off:off + 8])[0]
        off += 8
        rule = {"id": rule_id, "kind": kind, "id_value": pid, "unit": unit, "pattern": pattern, "flags": flags,
                "owner": owner, "source": source, "created": created}
    lease_id, owner_uid = struct.unpack("!QI", data[off:off + 12])
    reason, off = _text(data, off + 12)
    assert off == len(data), data
    return {"allowed": bool(allowed), "admin": bool(admin), "rule": rule, "lease_id": lease_id,
            "owner_uid": owner_uid, "reason": reason}


def log_body(before=0, since=0, until=0, limit=0, uid=None, ep=None, event=b"", uid_bytes=None):
    """A LOG request's body (PROTOCOL.md 4.19); uid_bytes forces the uid field."""
    uid_field = uid_bytes if uid_bytes is not None else struct.pack("!I", uid or 0)
    return (struct.pack("!QQQBB", before, since, until, limit, uid is not None) + uid_field +
            (b"\x01" + ep if ep is not None else b"\x00" + bytes(24)) + bytes([len(event)]) + event)


def log_page(data):
    """A LOG reply's (more, next_id, [(id, time_us, uid, pid, event, endpoint, detail)])."""
    count, more, next_id = struct.unpack("!BBQ", data[16:26])
    off, entries = 26, []
    for _ in range(count):
        eid, t, uid, pid = struct.unpack("!QQII", data[off:off + 24])
        off += 24
        texts = []
        for _ in range(3):
            n = data[off]
            texts.append(data[off + 1:off + 1 + n].decode())
            off += 1 + n
        entries.append((eid, t, uid, pid, *texts))
    assert off == len(data), (off, len(data))
    return more, next_id, entries


def answer(s, timeout=5.0):
    """What the broker did with our last message: ("reply", header, data),
    ("closed", None, b"") or ("silent", None, b"") after timeout."""
    s.settimeout(timeout)
    try:
        data = s.recv(8192)
    except (ConnectionResetError, BrokenPipeError):
        return "closed", None, b""
    except socket.timeout:
        return "silent", None, b""
    if not data:
        return "closed", None, b""
    return "reply", HDR.unpack(data[:16]), data


def check_error_reply(hdr, data):
    """The code and text of an error reply, after checking its form."""
    length, version, mtype, _, reserved = hdr
    assert length == len(data) and version == VERSION and mtype == ERROR and reserved == 0, (hdr, data)
    code = struct.unpack("!i", data[16:20])[0]
    text = data[21:21 + data[20]].decode()
    assert code > 0 and text and text.isprintable(), (code, text)
    return code, text
