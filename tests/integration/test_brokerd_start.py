# SPDX-License-Identifier: MIT
"""brokerd's command line and start-up: usage errors, refusal of a corrupt
or newer database, a live broker's socket never stolen, a stale one
replaced, and `make install` laying out every file (`make uninstall`
removing them)."""

import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import read_line

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PB_BUILD", ROOT / "build"))
BROKERD = str(BUILD / "brokerd")


# These run brokerd outside the tests' network namespaces and cgroups: never
# with the bind guard, which would attach to this machine's root cgroup.
NO_GUARD = "--no-guard"


@pytest.fixture
def tmp_path():
    """A fresh 0755 directory under /tmp, in place of pytest's (under a 0700
    one): brokerd's worker runs as another uid and must reach what is in it."""
    d = Path(tempfile.mkdtemp(prefix="pb-start-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_brokerd(*args, timeout=10):
    return subprocess.run([BROKERD, NO_GUARD, *args], capture_output=True, text=True, timeout=timeout)


def read_ready(stream):
    """Reads brokerd's stderr up to its event=ready line (returned)."""
    while True:
        line = read_line(stream, 10, "brokerd's stderr")
        if "event=guard" not in line and "event=worker" not in line:
            return line


def test_help_and_usage_errors():
    r = run_brokerd("--help")
    assert r.returncode == 0
    assert "--admin-group" in r.stdout and "--max-leases-per-user" in r.stdout and "--log-level" in r.stdout
    assert "--guard-dir" in r.stdout and "--guard-cgroup" in r.stdout and "--no-guard" in r.stdout
    assert "--audit-max-age" in r.stdout and "--audit-max-rows" in r.stdout
    for bad in (["--audit-max-age", "1y"], ["--audit-max-age", "-1d"], ["--audit-max-rows", "1000000001"],
                ["--backlog", "0"], ["--idle-timeout", "x"], ["--no-such-flag"],
                ["--control", "relative.sock"], ["extra-arg"], ["--admin-group", "no-such-group-xyz"],
                ["--log-level", "loud"], ["--max-connections", "100001"], ["--guard-dir", "relative"],
                ["--guard-cgroup", "relative"]):
        r = run_brokerd("--foreground", *bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert r.stderr.strip(), bad
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr


def test_corrupt_database_is_fatal(tmp_path):
    db = tmp_path / "db" / "pb.db"
    db.parent.mkdir(mode=0o700)
    db.write_bytes(b"this is not a database" * 500)
    r = run_brokerd("--foreground", "--control", str(tmp_path / "c.sock"), "--db", str(db))
    assert r.returncode == 1
    assert "cannot use database" in r.stderr and str(db) in r.stderr
    assert not (tmp_path / "c.sock").exists()


def test_newer_schema_is_fatal(tmp_path):
    db = tmp_path / "db" / "pb.db"
    db.parent.mkdir(mode=0o700)
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA user_version = 7")
    r = run_brokerd("--foreground", "--control", str(tmp_path / "c.sock"), "--db", str(db))
    assert r.returncode == 1
    assert "newer" in r.stderr


def test_unsafe_state_directory_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    r = run_brokerd("--foreground", "--control", str(state / "c.sock"), "--db", str(tmp_path / "db" / "pb.db"))
    assert r.returncode == 1
    assert "not writable by group or others" in r.stderr


def test_created_control_directory_is_reachable(tmp_path):
    """brokerd runs with umask 077; the directory it creates for its socket is still 0755."""
    sock_path = tmp_path / "run" / "c.sock"
    p = subprocess.Popen([BROKERD, NO_GUARD, "--foreground", "--control", str(sock_path), "--db",
                          str(tmp_path / "state" / "pb.db")], stderr=subprocess.PIPE, text=True)
    try:
        line = read_ready(p.stderr)
        assert "event=ready" in line, line
        assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
        assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    finally:
        p.terminate()
        assert p.wait(timeout=10) == 0


def test_live_socket_kept_stale_socket_replaced(tmp_path):
    sock_path = tmp_path / "c.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    live.bind(str(sock_path))
    live.listen()
    r = run_brokerd("--foreground", "--control", str(sock_path), "--db", str(tmp_path / "db" / "pb.db"))
    assert r.returncode == 1 and "another brokerd is listening" in r.stderr
    live.close()                                    # now a stale socket file remains
    assert sock_path.exists()

    not_socket = tmp_path / "file.sock"
    not_socket.write_text("x")
    r = run_brokerd("--foreground", "--control", str(not_socket), "--db", str(tmp_path / "db" / "pb.db"))
    assert r.returncode == 1 and "not a socket" in r.stderr

    # The stale socket is replaced: brokerd starts and answers on it.
    env = dict(os.environ, PORTBROKER_SOCKET=str(sock_path))
    p = subprocess.Popen([BROKERD, NO_GUARD, "--foreground", "--control", str(sock_path), "--db",
                          str(tmp_path / "db" / "pb.db")], stderr=subprocess.PIPE, text=True)
    try:
        line = read_ready(p.stderr)
        assert "event=ready" in line, line
        assert oct(sock_path.stat().st_mode & 0o777) == oct(0o666)
        r = subprocess.run([str(BUILD / "portctl"), "status"], env=env, capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 0, r.stderr
    finally:
        p.terminate()
        assert p.wait(timeout=10) == 0
    assert not sock_path.exists()                   # removed at a clean stop


def detached_pid(sock_path):
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0] == BROKERD.encode() and str(sock_path).encode() in cmd:
                return int(p.name)
    return None


def test_detaches_only_when_ready(tmp_path):
    """Without --foreground brokerd detaches; the parent exits 0 only once the child serves."""
    sock_path = tmp_path / "c.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}
    # stderr to a file, not a pipe: the parent's exit is what is awaited, not the daemon's EOF.
    with open(tmp_path / "stderr", "w+") as err:
        r = subprocess.run([BROKERD, NO_GUARD, "--control", str(sock_path), "--db", str(tmp_path / "db" / "pb.db")],
                           env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=10)
        err.seek(0)
        stderr = err.read()
    pid = detached_pid(sock_path)
    try:
        assert r.returncode == 0, stderr
        assert pid, "detached brokerd not found"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(str(sock_path))                   # serving already: no wait needed
        s.close()
    finally:
        if pid:
            os.kill(pid, 15)
    # Failure to start is reported by the parent's exit status.
    bad = tmp_path / "bad" / "bad.db"
    bad.parent.mkdir(mode=0o700)
    bad.write_bytes(b"garbage" * 1000)
    r = subprocess.run([BROKERD, NO_GUARD, "--control", str(tmp_path / "d.sock"), "--db", str(bad)],
                       env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1


def make(target, dest, *variables):
    """make TARGET with this build and DESTDIR=dest. The build was made with
    the default PREFIX: installing elsewhere rebuilds what has paths compiled
    in (portctl), with the build's SANITIZE (make check passes it down; a
    sanitizer build's tests run by hand get make check's)."""
    if b"__asan_init" in (BUILD / "portctl").read_bytes() and "SANITIZE=" not in os.environ.get("MAKEFLAGS", ""):
        variables += ("SANITIZE=address,undefined",)
    r = subprocess.run(["make", "-s", "-C", str(ROOT), target, f"BUILD={BUILD}", f"DESTDIR={dest}", *variables],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr


def assert_portctl_finds_shim(dest, shim):
    """portctl looks for the shim where make install put it."""
    assert (dest / shim.lstrip("/")).is_file()
    assert b"\0" + shim.encode() + b"\0" in (dest / "usr/bin/portctl").read_bytes(), \
        f"the installed portctl does not look for the shim at {shim}"


def test_make_install(tmp_path):
    dest = tmp_path / "dest"
    make("install", dest, "PREFIX=/usr")
    for f in ("usr/sbin/brokerd", "usr/bin/portctl", "usr/lib/libportbroker.so", "usr/lib/libportbroker.a",
              "usr/lib/pkgconfig/portbroker.pc", "usr/include/portbroker.h", "usr/share/man/man1/portctl.1",
              "usr/share/man/man8/brokerd.8", "usr/lib/systemd/system/portbrokerd.service",
              "usr/lib/systemd/system/portbrokerd.socket", "usr/lib/sysusers.d/portbroker.conf"):
        assert (dest / f).exists(), f
    assert "ExecStart=/usr/sbin/brokerd" in (dest / "usr/lib/systemd/system/portbrokerd.service").read_text()
    pc = (dest / "usr/lib/pkgconfig/portbroker.pc").read_text()
    assert "-lportbroker" in pc and "includedir=/usr/include" in pc and "libdir=/usr/lib" in pc
    assert_portctl_finds_shim(dest, "/usr/lib/portbroker/libportbroker-preload.so")
    # The installed library and header build a client.
    src = tmp_path / "client.c"
    src.write_text('#include <portbroker.h>\nint main(void) { pb_error e; return pb_get("x", 0, &e) == -22 ? 0 : 1; }\n')
    r = subprocess.run(["cc", str(src), "-I", str(dest / "usr/include"), "-L", str(dest / "usr/lib"),
                        "-lportbroker", "-o", str(tmp_path / "client")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # Under SANITIZE the library pulls in the ASan runtime after the plain executable.
    env = dict(os.environ, LD_LIBRARY_PATH=str(dest / "usr/lib"), ASAN_OPTIONS="verify_asan_link_order=0")
    r = subprocess.run([str(tmp_path / "client")], env=env)
    assert r.returncode == 0


def test_make_install_multiarch_then_uninstall(tmp_path):
    """LIBDIR in the multiarch directory, as Debian's packages have it: the
    libraries, portbroker.pc and the shim (where portctl looks) go there; make
    uninstall, with the same variables, leaves no file behind, nor the
    shim's directory, but /etc/portbroker/brokerd.conf (PREFIX=/usr: /etc),
    the admin's once installed."""
    r = subprocess.run(["cc", "-print-multiarch"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        pytest.skip("cc -print-multiarch: no multiarch directory here")
    libdir = f"/usr/lib/{r.stdout.strip()}"
    dest = tmp_path / "dest"
    dirs = ("PREFIX=/usr", f"LIBDIR={libdir}")
    make("install", dest, *dirs)
    for f in ("libportbroker.so.0", "libportbroker.so", "libportbroker.a"):
        assert (dest / libdir.lstrip("/") / f).exists(), f
    assert f"libdir={libdir}\n" in (dest / libdir.lstrip("/") / "pkgconfig/portbroker.pc").read_text()
    assert_portctl_finds_shim(dest, f"{libdir}/portbroker/libportbroker-preload.so")
    assert "unix-dir = " in (dest / "etc/portbroker/brokerd.conf").read_text()
    make("uninstall", dest, *dirs)
    left = [str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir() or p.name == "portbroker"]
    assert sorted(left) == ["etc/portbroker", "etc/portbroker/brokerd.conf"], left


# --- planted state: another uid prepares what brokerd would use --------------

U1 = 4242


def plant(path, uid=U1, mode=0o644, listening_socket=False):
    """A file (or a Unix socket) at path, owned by uid: what another user
    could have put there first."""
    if listening_socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.bind(str(path))
        s.listen()
    else:
        path.write_bytes(b"")
        s = None
    os.chown(path, uid, uid)
    os.chmod(path, mode)
    return s


def test_sticky_world_writable_directories_refused(tmp_path):
    """/tmp-like directories (1777): another uid could create the database or
    the control socket there first. Refused, for --control and for --db."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    tmp_path.chmod(0o755)
    planted = plant(sticky / "c.sock", listening_socket=True)
    try:
        r = run_brokerd("--foreground", "--control", str(sticky / "c.sock"), "--db", str(tmp_path / "db" / "pb.db"))
        assert r.returncode == 1 and "not writable by group or others (sticky or not)" in r.stderr, r.stderr
    finally:
        planted.close()
    plant(sticky / "pb.db")
    r = run_brokerd("--foreground", "--control", str(tmp_path / "run" / "c.sock"), "--db", str(sticky / "pb.db"))
    assert r.returncode == 1 and "(sticky or not)" in r.stderr, r.stderr


@pytest.mark.parametrize("name,uid,mode", [("pb.db", U1, 0o600), ("pb.db-wal", U1, 0o600), ("pb.db-shm", U1, 0o600),
                                           ("pb.db", 0, 0o666)])
def test_database_files_of_another_uid_or_writable_refused(tmp_path, name, uid, mode):
    """The database and its -wal and -shm must be brokerd's and written by
    nobody else: one found otherwise is named, and brokerd does not start."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    plant(state / name, uid=uid, mode=mode)
    r = run_brokerd("--foreground", "--control", str(tmp_path / "run" / "c.sock"), "--db", str(state / "pb.db"))
    assert r.returncode == 1, r.stderr
    assert f"{state / name} is owned by uid {uid}" in r.stderr, r.stderr
    if mode & 0o022:
        assert "writable by group or others" in r.stderr, r.stderr


@pytest.mark.parametrize("live", [True, False])
def test_control_socket_of_another_uid_refused(tmp_path, live):
    """A socket at the control path owned by another uid (listening or
    stale) is named and neither used nor replaced."""
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    planted = plant(run / "c.sock", listening_socket=True)
    if not live:
        planted.close()
    try:
        r = run_brokerd("--foreground", "--control", str(run / "c.sock"), "--db", str(tmp_path / "db" / "pb.db"))
        assert r.returncode == 1, r.stderr
        assert f"{run / 'c.sock'} is a socket of uid {U1}, not brokerd's" in r.stderr, r.stderr
        assert os.stat(run / "c.sock").st_uid == U1                     # not replaced
    finally:
        if live:
            planted.close()
