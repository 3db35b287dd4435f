# SPDX-License-Identifier: MIT
"""Unix-domain leases (`unix:/DIR/NAME`): brokerd makes the socket file, only
in a directory given with --unix-dir, for the lease's owner with the group
and mode of the rule, and holds the listener like any lease's; a restarted
server is served the connections that queued meanwhile. What others may try:

  * get a lease outside every --unix-dir, deeper than directly in one, or
    another uid's: refused;
  * connect to a 0600 socket, or a 0660 one without its group: the kernel
    refuses (the mode is the rule's);
  * have brokerd replace or remove a file it did not make (a planted file,
    a symlink to a file elsewhere, an admin's own socket at a leased path
    across a restart): never; the lease waits, and says why;
  * run brokerd with a --unix-dir that is a symlink, has one on its path, or
    is writable by others (or under a directory writable by others): it
    does not start.

Servers we did not write (nginx in front of gunicorn) are test_unix.py's.
"""

import os
import sqlite3
import socket
import stat
import subprocess

import pytest

from conftest import BROKERD, PYTHON, as_user, child_env, root_dir, wait_for
from test_reexec import REEXEC_UNDER_VALGRIND

pytestmark = pytest.mark.usefixtures("netns")

U1, U2, G_PROXY = 4242, 4343, 4500

CONNECT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
    print(s.recv(100).decode().strip())
except OSError as e:
    print(__import__("errno").errorcode.get(e.errno, e.errno))
"""


def connect_as(path, uid=None, gid=None, groups=None):
    """Connects to path as uid (and groups) and reads the server's line; the errno name on failure."""
    r = subprocess.run([*as_user(uid, gid, groups), PYTHON, "-c", CONNECT, str(path)], capture_output=True,
                       text=True, timeout=20, env=child_env())
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def sockdir(workdir):
    return root_dir(workdir / "sock")


@pytest.fixture
def ubroker(make_broker, sockdir):
    return make_broker("--unix-dir", sockdir)


def socket_inode(pid, fd):
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def test_unix_lease_made_for_its_owner_with_the_rules_group_and_mode(ubroker, sockdir, procs):
    path = sockdir / "app.sock"
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1, "--socket-group", G_PROXY,
                    "--socket-mode", "0660")
    rules = ubroker.portctl("policy", "list", json=True).json
    assert rules[0]["pattern"] == f"unix:{sockdir}/" and rules[0]["socket_gid"] == G_PROXY
    assert rules[0]["socket_mode"] == 0o660

    srv = ubroker.serve(procs, f"unix:{path}", uid=U1)
    pid = srv.wait_ready()
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and (st.st_uid, st.st_gid) == (U1, G_PROXY), st
    assert stat.S_IMODE(st.st_mode) == 0o660

    # The proxy's group connects; a uid outside it is refused by the kernel.
    assert connect_as(path, uid=U2, gid=G_PROXY) == f"ok {pid}"
    assert connect_as(path, uid=U2, gid=U2) == "EACCES"
    # The server holds brokerd's very socket.
    lease = ubroker.portctl("status", json=True).json[0]
    assert lease["endpoint"] == f"unix:{path}" and lease["owner_uid"] == U1 and lease["bound"]
    held = {socket_inode(ubroker.pid, fd) for fd in os.listdir(f"/proc/{ubroker.pid}/fd")}
    assert socket_inode(pid, 3) in held

    # Another uid may not have it, even with a rule for the directory.
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U2)
    r = ubroker.portctl("get", f"unix:{path}", uid=U2, check=1)
    assert f"held by uid {U1}" in r.stderr, r


def test_default_mode_is_0600_and_the_group_brokerds(ubroker, sockdir, procs):
    path = sockdir / "private.sock"
    ubroker.portctl("policy", "add", f"unix:{path}", "--user", U1)
    pid = ubroker.serve(procs, f"unix:{path}", uid=U1).wait_ready()
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (U1, 0, 0o600), st
    assert connect_as(path, uid=U1) == f"ok {pid}"
    assert connect_as(path, uid=U2, gid=0) == "EACCES"


def test_connections_queued_while_the_server_is_down_are_served(ubroker, sockdir, procs):
    path = sockdir / "app.sock"
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    srv = ubroker.serve(procs, f"unix:{path}", uid=U1)
    srv.wait_ready()
    srv.kill9()
    # Down: connecting still works (the backlog brokerd holds), nobody answers yet.
    waiting = []
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(path))
        waiting.append(s)
    pid = ubroker.serve(procs, f"unix:{path}", uid=U1).wait_ready()
    for s in waiting:
        assert s.recv(100) == f"ok {pid}\n".encode()
        s.close()


def test_only_directly_in_a_unix_dir(ubroker, sockdir, workdir, make_broker):
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (sockdir / "sub").mkdir(mode=0o755)
    ubroker.portctl("policy", "add", f"unix:{elsewhere}/", "--user", U1)
    r = ubroker.portctl("get", f"unix:{elsewhere}/x.sock", uid=U1, check=1)
    assert "not directly in a directory brokerd makes sockets in" in r.stderr and str(sockdir) in r.stderr, r
    # Not even an admin: the directories are brokerd's promise, not a rule's.
    r = ubroker.portctl("get", f"unix:{sockdir}/sub/x.sock", check=1)
    assert "not directly in a directory" in r.stderr, r
    # A rule for the directory is no rule for what is below it.
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    r = ubroker.portctl("get", f"unix:{sockdir}/sub/x.sock", uid=U1, check=1)
    assert "no rule lets uid" in r.stderr, r
    r = ubroker.portctl("get", f"unix:{sockdir}/../x.sock", uid=U1, check=2)
    assert not os.path.exists(workdir / "x.sock") and not os.listdir(elsewhere)
    # A brokerd with no --unix-dir makes none.
    plain = make_broker()
    plain.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    r = plain.portctl("get", f"unix:{sockdir}/y.sock", uid=U1, check=1)
    assert "(--unix-dir: none)" in r.stderr, r
    assert not os.path.exists(sockdir / "y.sock")


@pytest.mark.expect_log(r"cannot bind unix:.*/planted: File exists", r"cannot bind unix:.*/link: File exists")
def test_a_file_brokerd_did_not_make_is_never_replaced(ubroker, sockdir, workdir):
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    planted, link, target = sockdir / "planted", sockdir / "link", workdir / "target"
    planted.write_text("admin's")
    target.write_text("elsewhere")
    link.symlink_to(target)
    for p in (planted, link):
        r = ubroker.portctl("get", f"unix:{p}", uid=U1, check=1)
        assert "File exists" in r.stderr and "never replaced" in r.stderr, r
    assert planted.read_text() == "admin's" and os.path.islink(link) and target.read_text() == "elsewhere"
    assert ubroker.portctl("status", json=True).json == []
    # Once the admin removes it, the lease is made.
    planted.unlink()
    ubroker.portctl("get", f"unix:{planted}", uid=U1)
    assert stat.S_ISSOCK(os.lstat(planted).st_mode)


def test_release_removes_the_file_and_only_brokerds(ubroker, sockdir):
    path = sockdir / "app.sock"
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    ubroker.portctl("get", f"unix:{path}", uid=U1)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    ubroker.portctl("release", f"unix:{path}", uid=U1)
    assert not os.path.exists(path)

    # The admin put a socket of its own there meanwhile: a release leaves it.
    ubroker.portctl("get", f"unix:{path}", uid=U1)
    os.unlink(path)
    theirs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.bind(str(path))
    ubroker.portctl("release", f"unix:{path}", uid=U1)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    theirs.close()


@pytest.mark.expect_log(r"cannot bind lease 2 again: File exists", r"cannot bind lease 1 again: File exists")
def test_a_restart_binds_its_own_file_again_and_no_other(ubroker, sockdir, procs):
    """No fd store here: a brokerd killed outright loses its sockets, and the
    files stay. The next one replaces the file it made (its identity
    recorded) once nothing listens on it, as the lease's owner wants; one
    an admin put in its place, listening or not, stays, and so does its own
    while a server that outlived brokerd still serves on it."""
    mine, theirs_path = sockdir / "mine.sock", sockdir / "theirs.sock"
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1, "--socket-mode", "0640")
    ubroker.portctl("get", f"unix:{mine}", uid=U1)
    ubroker.portctl("get", f"unix:{theirs_path}", uid=U1)
    before = os.lstat(mine).st_ctime_ns        # (its inode number may well come back)
    ubroker.kill9()
    os.unlink(theirs_path)
    theirs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.bind(str(theirs_path))
    theirs.listen()
    ubroker.start()

    st = os.lstat(mine)
    assert st.st_ctime_ns != before and (st.st_uid, stat.S_IMODE(st.st_mode)) == (U1, 0o640)
    srv = ubroker.serve(procs, f"unix:{mine}", uid=U1)
    pid = srv.wait_ready()
    assert connect_as(mine, uid=U1) == f"ok {pid}"
    leases = {l["endpoint"]: l for l in ubroker.portctl("status", json=True).json}
    assert leases[f"unix:{mine}"]["bound"] and not leases[f"unix:{theirs_path}"]["bound"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.connect(str(theirs_path))                 # still the admin's listener

    # The server outlives brokerd: its socket, and so the file, stay its own
    # until it exits; then the next brokerd binds the file again.
    ubroker.kill9()
    live = os.lstat(mine).st_ctime_ns
    ubroker.start()
    assert os.lstat(mine).st_ctime_ns == live and connect_as(mine, uid=U1) == f"ok {pid}"
    srv.kill9()
    wait_for(lambda: {l["endpoint"]: l for l in ubroker.portctl("status", json=True).json}[f"unix:{mine}"]["bound"],
             10, "brokerd to bind its file again once the server exited")
    assert os.lstat(mine).st_ctime_ns != live
    theirs.close()


@pytest.mark.parametrize("case", ["symlink", "symlink-above", "group-writable", "under-world-writable",
                                  "relative", "dot-dot"])
def test_brokerd_refuses_an_unsafe_unix_dir(workdir, case):
    real = workdir / "real"
    real.mkdir(mode=0o755)
    if case == "symlink":
        arg = workdir / "link"
        arg.symlink_to(real)
    elif case == "symlink-above":
        (workdir / "up").symlink_to(workdir)
        arg = workdir / "up" / "real"
    elif case == "group-writable":
        real.chmod(0o775)
        arg = real
    elif case == "under-world-writable":
        open_dir = workdir / "open"
        open_dir.mkdir()
        open_dir.chmod(0o777)           # not sticky: anyone could rename "real" away
        arg = open_dir / "real"
        arg.mkdir(mode=0o755)
    elif case == "relative":
        arg = "sock"
    else:
        arg = f"{real}/../real"
    state = workdir / "state"
    (state / "db").mkdir(parents=True, mode=0o700)
    state.chmod(0o755)
    r = subprocess.run([BROKERD, "--foreground", "--control", state / "control.sock", "--db",
                        state / "db" / "portbroker.db", "--no-guard", "--unix-dir", str(arg)],
                       capture_output=True, text=True, timeout=20, env=child_env())
    assert r.returncode != 0 and "--unix-dir" in r.stderr, r
    assert not os.path.exists(state / "control.sock") and not os.listdir(real)


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
def test_reexec_keeps_the_socket_and_its_file(ubroker, sockdir, procs):
    """`portctl admin reexec` (an upgrade) carries a Unix lease's socket
    like a port's: the server keeps serving on it, the file is not made
    again, and a restarted server gets that very socket."""
    path = sockdir / "app.sock"
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    srv = ubroker.serve(procs, f"unix:{path}", uid=U1)
    pid = srv.wait_ready()
    inode, made = socket_inode(pid, 3), os.lstat(path).st_ctime_ns
    ubroker.portctl("admin", "reexec")
    assert ubroker.events("keep"), ubroker.log()
    assert connect_as(path, uid=U1) == f"ok {pid}"
    assert os.lstat(path).st_ctime_ns == made
    srv.kill9()
    again = ubroker.serve(procs, f"unix:{path}", uid=U1)
    assert socket_inode(again.wait_ready(), 3) == inode


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
@pytest.mark.expect_log(r"event=error .*re-execution refused")
def test_reexec_refused_while_a_unix_dir_is_unsafe(ubroker, sockdir):
    """--check (run before a re-exec's exec()) checks --unix-dir too: a new
    image that could not start is never executed, the running one serves on."""
    path = sockdir / "app.sock"
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    ubroker.portctl("get", f"unix:{path}", uid=U1)
    sockdir.chmod(0o775)
    r = ubroker.portctl("admin", "reexec", check=1)
    sockdir.chmod(0o755)
    assert "--check failed" in r.stderr and "keeps serving" in r.stderr, r.stderr
    assert ubroker.alive() and ubroker.portctl("status", json=True).json[0]["bound"]
    ubroker.portctl("get", f"unix:{path}", uid=U1)


def test_a_page_of_long_paths_and_ports_still_fits_a_message(make_broker, sockdir):
    """A uid's Unix leases with long paths, then leases of ports: every
    status page fits 4096 bytes (brokerd ends one early), and everybody,
    root included, still sees every lease."""
    b = make_broker("--unix-dir", sockdir, "--max-leases-per-user", "64")
    b.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    b.portctl("policy", "add", "tcp:9000-9099", "--user", U1)
    name = "n" * (100 - len(str(sockdir)))
    want = [f"unix:{sockdir}/{name}{i:02d}" for i in range(22)] + [f"tcp:[::]:{9000 + i}" for i in range(9)]
    for e in want:
        b.portctl("get", e, uid=U1)
    for uid in (U2, None):
        assert [l["endpoint"] for l in b.portctl("status", json=True, uid=uid).json] == want


@pytest.mark.expect_log(r"cannot bind lease 100 again: File exists")
def test_a_record_naming_a_live_socket_replaces_nothing(make_broker, sockdir):
    """What a lying worker could say (here: a database row naming another
    daemon's listening socket in the directory, with its very identity):
    brokerd replaces a recorded file only once nothing listens on it."""
    foreign = sockdir / "foreign.sock"
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    daemon.bind(str(foreign))
    daemon.listen()
    st = os.lstat(foreign)
    b = make_broker("--unix-dir", sockdir)
    b.stop()
    db = sqlite3.connect(b.db)
    blob = bytes([1] + [0] * 23) + bytes([len(str(foreign))]) + str(foreign).encode()
    db.execute("INSERT INTO leases (id, endpoint, endpoint_text, owner_uid, created, unix_uid, unix_gid, unix_mode, "
               "unix_dev, unix_ino, unix_born) VALUES (100, ?, ?, 4242, 1, 4242, 4242, 511, ?, ?, 0)",
               (blob, f"unix:{foreign}", st.st_dev, st.st_ino))
    db.commit()
    db.close()
    b.start()
    after = os.lstat(foreign)
    assert (after.st_ino, after.st_uid, stat.S_IMODE(after.st_mode)) == (st.st_ino, 0, stat.S_IMODE(st.st_mode))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.connect(str(foreign))
        conn, _ = daemon.accept()                       # the daemon's own, still
        conn.close()
    assert not b.portctl("status", json=True).json[0]["bound"]
    daemon.close()


@pytest.mark.expect_log(r"cannot bind unix:.*: Stale file handle")
def test_a_path_that_leads_elsewhere_now_binds_nothing(ubroker, sockdir, workdir):
    """The directory's path is walked again before each bind: one renamed
    away and replaced by a symlink (a sticky /tmp lets anyone take a name
    root gave up) makes no file where the symlink points."""
    ubroker.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    target = workdir / "target"
    target.mkdir(mode=0o755)
    sockdir.rename(workdir / "moved")
    sockdir.symlink_to(target)
    r = ubroker.portctl("get", f"unix:{sockdir}/x.sock", uid=U1, check=1)
    assert "Stale file handle" in r.stderr, r
    assert not os.listdir(target) and not os.listdir(workdir / "moved")
    sockdir.unlink()                                    # back, for the fd census at the end
    (workdir / "moved").rename(sockdir)
