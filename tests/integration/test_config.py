# SPDX-License-Identifier: MIT
"""brokerd.conf (--config): one `key = value` line per long option, read at
start and at each re-execution; options on the command line override it;
a mistake is a start-up error naming the file and line, and brokerd does
not serve. The file names brokerd's admins, so one that another uid could
have written is refused, and a uid cannot make itself an admin with it.
"""

import os
import subprocess

import pytest

from conftest import BROKERD, child_env
from test_reexec import REEXEC_UNDER_VALGRIND

pytestmark = pytest.mark.usefixtures("netns")

U1, U2, G_ADMIN = 4242, 4343, 4600


@pytest.fixture
def conf(workdir):
    path = workdir / "brokerd.conf"

    def write(text, mode=0o644, owner=0):
        path.write_text(text)
        os.chown(path, owner, owner)
        path.chmod(mode)
        return path
    return write


def brokerd_fails(workdir, *args):
    """brokerd run with args (and a control socket and database of its own): its exit status and stderr."""
    state = workdir / "failing"
    (state / "db").mkdir(parents=True, mode=0o700, exist_ok=True)
    state.chmod(0o755)
    r = subprocess.run([BROKERD, "--foreground", "--no-guard", "--control", state / "control.sock", "--db",
                        state / "db" / "portbroker.db", *map(str, args)],
                       capture_output=True, text=True, timeout=20, env=child_env())
    assert not (state / "control.sock").exists(), "brokerd served"
    return r.returncode, r.stderr


def test_settings_apply_and_options_override_them(make_broker, conf, workdir):
    sockdir, other = workdir / "sock", workdir / "other"
    sockdir.mkdir(mode=0o755)
    other.mkdir(mode=0o755)
    path = conf(f"""# a comment, then a blank line

max-leases-per-user = 1
  admin-group   =   {G_ADMIN}
unix-dir = {sockdir}
log-level = debug
no-guard = no
""")
    b = make_broker("--config", path)
    # admin-group: a member changes policy.
    b.portctl("policy", "add", "tcp:8000-8099", "--user", U1, uid=U2, gid=U2, groups=[G_ADMIN])
    b.portctl("policy", "add", f"unix:{sockdir}/", "--user", U1)
    b.portctl("get", "8000", uid=U1)
    b.portctl("get", "8000", uid=U1)
    r = b.portctl("get", "8001", uid=U1, check=1)
    assert "already holds 1 leases" in r.stderr, r
    assert b.log().count("event=grant endpoint=tcp:[::]:8000") == 2   # log-level = debug: the repeat too

    # The command line wins: a higher limit, and its --unix-dir replaces the file's.
    b.stop()
    b.args += ["--max-leases-per-user", "3", "--unix-dir", str(other)]
    b.start()
    b.portctl("get", "8001", uid=U1)
    r = b.portctl("get", f"unix:{sockdir}/a.sock", uid=U1, check=1)
    assert "not directly in a directory" in r.stderr and str(other) in r.stderr, r


@pytest.mark.parametrize("text,says", [
    ("backlog = 10\nfrobnicate = 1\n", ":2: unknown setting 'frobnicate'"),
    ("\n\nmax-leases = lots\n", ":3: invalid number 'lots' for --max-leases"),
    ("backlog = 10\nbacklog = 20\n", ":2: backlog given twice (line 1 too)"),
    ("check = yes\n", ":1: check is a command-line option, not a setting"),
    ("no-guard = maybe\n", ":1: no-guard takes yes or no, not 'maybe'"),
    ("admin-group\n", ":1: expected KEY = VALUE"),
    ("unix-dir = run/sockets\n", ":1: --unix-dir 'run/sockets': not an absolute"),
    ("admin-group = no-such-group-here\n", ":1: --admin-group: no such group"),
    ("x" * 2000 + "\n", ":1: line longer than 1024 bytes"),
    ("audit-max-age = soon\n", ":1: invalid duration 'soon' for --audit-max-age"),
    ("audit-max-rows = -5\n", ":1: invalid number '-5' for --audit-max-rows"),
])
def test_a_mistake_names_the_line_and_nothing_is_served(workdir, conf, text, says):
    path = conf(text)
    rc, err = brokerd_fails(workdir, "--config", path)
    assert rc == 2 and f"brokerd: {path}{says}" in err, (rc, err)


def test_a_missing_file_is_no_settings_unless_named(workdir):
    rc, err = brokerd_fails(workdir, "--config", workdir / "none.conf", "--check")
    assert rc == 2 and "cannot read" in err and "none.conf" in err, err
    # The default path (nothing there in the tests): brokerd --check is happy.
    state = workdir / "ok"
    (state / "db").mkdir(parents=True, mode=0o700)
    r = subprocess.run([BROKERD, "--check", "--db", state / "db" / "p.db"], capture_output=True, text=True,
                       timeout=20, env=child_env())
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("how", ["group-writable", "another-uids", "a-directory"])
def test_a_file_others_could_write_is_refused(workdir, conf, how):
    """An admin group another uid slipped into the file would make it an admin."""
    if how == "a-directory":
        path = workdir / "conf.d"
        path.mkdir()
    else:
        path = conf(f"admin-group = {U1}\n", mode=0o664 if how == "group-writable" else 0o644,
                    owner=U1 if how == "another-uids" else 0)
    rc, err = brokerd_fails(workdir, "--config", path)
    assert rc == 2 and "refusing to read it" in err, err


@pytest.mark.not_under_valgrind(REEXEC_UNDER_VALGRIND)
@pytest.mark.expect_log(r"event=error .*re-execution refused")
def test_reexec_reads_the_file_again_and_refuses_a_broken_one(make_broker, conf):
    """`systemctl reload` is `portctl admin reexec`: new settings take
    effect; a file with a mistake is refused before the exec, and the
    running brokerd serves on with the old ones."""
    path = conf("max-leases-per-user = 1\n")
    b = make_broker("--config", path)
    b.portctl("policy", "add", "tcp:8000-8099", "--user", U1)
    b.portctl("get", "8000", uid=U1)
    b.portctl("get", "8001", uid=U1, check=1)
    conf("max-leases-per-user = 2\n")
    b.portctl("admin", "reexec")
    b.portctl("get", "8001", uid=U1)
    conf("max-leases-per-user = 3\nmax-leases = none\n")
    r = b.portctl("admin", "reexec", check=1)
    assert "--check failed" in r.stderr and "keeps serving" in r.stderr, r.stderr
    r = b.portctl("get", "8002", uid=U1, check=1)
    assert "already holds 2 leases" in r.stderr, r
