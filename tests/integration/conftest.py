# SPDX-License-Identifier: MIT
"""Harness of the integration tests: the real brokerd in a temp dir and a
private network namespace, portctl run as other uids, and the C helpers
pb-testserver and pb-load.

Fixtures:
  netns        a fresh network namespace (loopback up) for the test; the
               pytest process enters it, so every process it starts inherits
               it; restored afterwards. Skips the test when not root.
  procs        spawns processes (servers, load) that are killed at teardown.
  make_broker  factory: make_broker(*extra_args) -> a started Broker.
  broker       a Broker with the default options.
  portctl      broker.portctl: portctl(*args, uid=None, check=True, json=False).
  scratch      a directory every uid may write (server output files).
  unix_dir     a directory for brokerd's --unix-dir: root's, 0755.
  guard        the bind guard's place for the test: a cgroup v2 directory the
               pytest process moves into for the test (so every process it
               starts is under the guard), and a bpffs private to the run.
               Every broker guards from there (--guard-cgroup, --guard-dir),
               never the whole machine. None where cgroup v2 is missing.

Every broker is checked at teardown (Broker.finish): its fds are what its
state explains (the fds it had once ready and quiet, plus one socket per
bound lease and one pidfd per live holder; no pidfd of a process that has
exited), and its log holds no error line (event=error, or a LOG_ERR line)
and no sanitizer report. A test that provokes errors on purpose declares
them: @pytest.mark.expect_log(r"regex", ...) or the expect_log fixture
(expect_log(r"regex")); each declared pattern must then match at least one
line, and only lines matching one of them are forgiven.

Nothing sleeps blindly: readiness comes from NOTIFY_SOCKET (brokerd) or the
"ready PID" line (pb-testserver), and conditions are polled with timeouts.
Helpers other modules import: wait_for, try_bind, Load, PYTHON, TESTSERVER...
"""

import contextlib
import ctypes
import errno
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PB_BUILD", ROOT / "build"))
BROKERD = str(BUILD / "brokerd")
PORTCTL = str(BUILD / "portctl")
TESTSERVER = str(BUILD / "pb-testserver")
LOAD = str(BUILD / "pb-load")
PRELOAD = str(BUILD / "libportbroker-preload.so")
PYTHON = "/usr/bin/python3"
RESULTS = Path(__file__).resolve().parent / "results"

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
BPFFS = Path("/sys/fs/bpf")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ERROR: UndefinedBehaviorSanitizer")
NOBODY = 65534

# Signal dispositions set to SIG_IGN survive fork and exec. A shell runs an
# asynchronous command (`make check &`, `CI=... .ci/run > log &`) with SIGINT
# and SIGQUIT ignored, and every process the tests start would inherit that:
# `portctl upgrade` stops the old server with SIGQUIT, which such a server
# would never see. The processes under test get SIGQUIT's default action.
if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)

# What brokerd's log may not contain (see brokerd/log.c): event=error lines,
# the LOG_ERR-level event lines, and any plain "brokerd: text" line (log_msg)
# but the one that reports a stop signal.
LOG_ERROR_LINE = re.compile(
    r"(^|\s)event=error(?![\w-])"
    r"|event=repair\b.*cannot be repaired"
    r"|^brokerd: (?!event=)(?!received .*; stopping$)")

_libc = ctypes.CDLL(None, use_errno=True)


def need(path):
    if not Path(path).exists():
        pytest.fail(f"{path} is missing: run `make all helpers` first (PB_BUILD={BUILD})")


def wait_for(cond, timeout, what, interval=0.01):
    """Polls cond() until it returns a true value, which is returned; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def child_env(**extra):
    """A small, predictable environment for the processes we start."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def as_user(uid, gid=None, groups=None):
    """argv prefix running a command as uid (no passwd entry needed); [] for None."""
    if uid is None:
        return []
    prefix = ["setpriv", "--reuid", str(uid), "--regid", str(uid if gid is None else gid)]
    if groups:
        prefix += ["--groups", ",".join(str(g) for g in groups)]
    else:
        prefix += ["--clear-groups"]
    return prefix


def check_sanitizers(text, who):
    for mark in SANITIZER_MARKS:
        assert mark not in text, f"{who} reported a sanitizer error:\n{text[-4000:]}"


def read_line(stream, timeout, what):
    """One line from a child's pipe (a file object from Popen), waiting at
    most timeout seconds: select() and os.read(), never a blocking
    readline(). Returns the line (str, without the newline); fails naming
    what on timeout or EOF."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line from {what} within {timeout}s (so far: {buf!r})")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 1)          # byte by byte: nothing after the line is consumed
            if not chunk:
                raise AssertionError(f"{what} closed its output before a whole line: {buf!r}")
            buf += chunk
    return buf[:-1].decode(errors="replace")


def fd_kind(link):
    """What an fd's /proc link is, for counting: "socket", "pidfd" or the link."""
    if link.startswith("socket:"):
        return "socket"
    if "pidfd" in link:
        return "pidfd"
    return link


def try_bind(port, proto="tcp", addr="::", reuseaddr=True, reuseport=False, v6only=False):
    """Binds addr:port in this process (root) and closes it; returns 0 or the errno."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        if reuseaddr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((addr, port))
            if proto == "tcp":
                s.listen(1)
        except OSError as e:
            return e.errno
        return 0
    finally:
        s.close()


def fetch(port, addr="127.0.0.1", timeout=5.0):
    """Connects to addr:port and returns the server's whole reply (str)."""
    with socket.create_connection((addr, port), timeout=timeout) as s:
        data = b""
        while True:
            chunk = s.recv(256)
            if not chunk:
                return data.decode()
            data += chunk


def save_results(name, data):
    """Merges data under key name into results/restart-<build dir>.json (one
    file per build, so a sanitizer run does not overwrite plain numbers) and
    prints it (visible with pytest -s)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"restart-{BUILD.name}.json"
    data = dict(data, kernel=os.uname().release, build=str(BUILD),
                measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        allr = json.loads(path.read_text())
    except (OSError, ValueError):
        allr = {}
    allr[name] = data
    path.write_text(json.dumps(allr, indent=2, sort_keys=True) + "\n")
    print(f"\n[{name}] {json.dumps(data, sort_keys=True)}")


class Result:
    """What a finished command left: returncode, stdout, stderr, and .json of stdout."""

    def __init__(self, argv, cp):
        self.argv, self.returncode, self.stdout, self.stderr = argv, cp.returncode, cp.stdout, cp.stderr

    @property
    def json(self):
        try:
            return json.loads(self.stdout)
        except ValueError as e:
            raise AssertionError(f"{self.argv}: stdout is not JSON ({e}): {self.stdout!r}") from None

    def __repr__(self):
        return (f"<{' '.join(self.argv)}: rc={self.returncode} stdout={self.stdout!r} "
                f"stderr={self.stderr!r}>")


class Proc:
    """A long-running child; stdout is a pipe we scan for "ready PID"."""

    def __init__(self, argv, env, stderr_path, name):
        self.argv, self.name, self.stderr_path = argv, name, stderr_path
        self._buf = b""
        with open(stderr_path, "ab") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=err, env=env, close_fds=True)
        self.pid = self.popen.pid
        os.set_blocking(self.popen.stdout.fileno(), False)

    def _read_some(self, timeout):
        r, _, _ = select.select([self.popen.stdout], [], [], timeout)
        if not r:
            return False
        try:
            chunk = os.read(self.popen.stdout.fileno(), 65536)
        except BlockingIOError:
            return False
        self._buf += chunk
        return bool(chunk)

    def output(self):
        """stdout so far (non-blocking)."""
        while self._read_some(0):
            pass
        return self._buf.decode(errors="replace")

    def stderr(self):
        return Path(self.stderr_path).read_text(errors="replace")

    def wait_ready(self, timeout=10.0):
        """Waits for the "ready PID" line; returns the pid it names."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self._buf.decode(errors="replace").splitlines():
                if line.startswith("ready "):
                    return int(line.split()[1])
            left = deadline - time.monotonic()
            if self.popen.poll() is not None and not self._read_some(0):
                raise AssertionError(f"{self.name} exited with {self.popen.returncode} before ready: "
                                     f"{self.stderr()[-2000:]}")
            if left <= 0:
                raise AssertionError(f"{self.name} not ready after {timeout}s: {self.stderr()[-2000:]}")
            self._read_some(min(left, 0.1))

    def kill9(self):
        """SIGKILL and reap; returns the time of the kill (monotonic)."""
        t = time.monotonic()
        self.popen.kill()
        self.popen.wait(timeout=10)
        return t

    def wait(self, timeout):
        return self.popen.wait(timeout=timeout)

    def alive(self):
        return self.popen.poll() is None


class Procs:
    def __init__(self, workdir):
        self.workdir = workdir
        self.all = []

    def spawn(self, argv, uid=None, gid=None, groups=None, env=None, name=None):
        name = name or Path(argv[0]).name
        full = as_user(uid, gid, groups) + [str(a) for a in argv]
        p = Proc(full, env or child_env(), self.workdir / f"{name}-{len(self.all)}.stderr", name)
        self.all.append(p)
        return p

    def cleanup(self):
        for p in self.all:
            if p.popen.poll() is None:
                p.popen.kill()
        for p in self.all:
            try:
                p.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            p.popen.stdout.close()
        for p in self.all:
            check_sanitizers(p.stderr(), p.name)


VALGRIND = bool(os.environ.get("PB_VALGRIND"))   # make check-valgrind: brokerd runs under memcheck
# The first line of each kind of memcheck error report.
VALGRIND_ERROR = re.compile(r"==\d+== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|"
                            r"Syscall param|Mismatched free|Source and destination overlap|Argument .* of function|"
                            r"Process terminating|.* bytes in .* blocks are (definitely|indirectly|possibly) lost)")


def is_valgrinds(link):
    """Whether an fd of a process under valgrind is valgrind's own (its
    report, its copies of /proc files, the client's binary, its pipe)."""
    return "valgrind" in link or link.startswith("pipe:") or link == BROKERD


def valgrind_prefix(d, run):
    """argv prefix running brokerd (the monitor, and its worker: children are
    traced) under valgrind's memcheck (PB_VALGRIND=1), the reports in
    d/valgrind; [] otherwise. Errors and leaks (definite, indirect, possible)
    fail the test at teardown (Broker.check_valgrind)."""
    if not VALGRIND:
        return []
    d = d / "valgrind"
    d.mkdir(exist_ok=True)
    d.chmod(0o1777)                     # the worker writes its report as user portbroker
    supp = d / "valgrind.supp"          # and reads the suppressions, wherever the tree is (/root: 0700)
    shutil.copy(ROOT / "tests" / "valgrind.supp", supp)
    supp.chmod(0o644)
    return ["valgrind", "--trace-children=yes", "--vgdb=no", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible", "--gen-suppressions=all",
            f"--suppressions={supp}", f"--log-file={d}/valgrind.{run}.%p.%n.log"]


class Broker:
    """One brokerd process (restartable) over a control socket and database in dir."""

    def __init__(self, path, args, wrapper=(), binary=None, guard=None):
        self.binary = binary or BROKERD  # a copy elsewhere, for tests that replace it
        self.guard_dir = None           # where this broker pins its bind guard, when it has one
        if guard is not None and not any(str(a).startswith(("--guard", "--no-guard")) for a in args):
            self.guard_dir = guard.new_dir()
            args = ["--guard-dir", self.guard_dir, "--guard-cgroup", guard.cgroup, *args]
        if not any(str(a).startswith("--policy-dir") for a in args):
            args = [*args, "--policy-dir", "/dev/null"]  # nor its policy directory
        if not any(str(a).startswith("--config") for a in args):
            args = [*args, "--config", "/dev/null"]     # not this machine's brokerd.conf (last: tests index args)
        self.dir = path                 # 0755, root's: brokerd refuses group/other-writable dirs
        self.control = str(self.dir / "control.sock")
        self.db = str(self.dir / "db" / "portbroker.db")   # the worker's directory, not the control socket's
        self.logpath = self.dir / "brokerd.log"
        self.notify_path = str(self.dir / "notify.sock")
        self.args = [str(a) for a in args]
        self.wrapper = list(wrapper)    # e.g. setpriv with a smaller capability bounding set
        self.proc = None
        self.pid = None
        self.runs = 0
        self.fd_base = None             # set by start(): see fd_baseline()
        self.expected_log = []          # regexes: error lines the test provokes on purpose
        self.env = {}                   # extra environment of brokerd

    # --- life cycle -----------------------------------------------------

    def start(self, timeout=10.0):
        need(BROKERD)
        assert self.proc is None or self.proc.poll() is not None
        if os.path.exists(self.notify_path):
            os.unlink(self.notify_path)
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            ns.bind(self.notify_path)
            os.chmod(self.notify_path, 0o666)   # a brokerd run as another uid notifies too
            argv = [*self.wrapper, *valgrind_prefix(self.dir, self.runs), self.binary, "--foreground",
                    "--control", self.control, "--db", self.db, *self.args]
            with open(self.logpath, "ab") as log:
                log.write(f"--- run {self.runs}: {' '.join(argv)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             env=child_env(NOTIFY_SOCKET=self.notify_path, **self.env),
                                             close_fds=True)
            self.runs += 1
            self.pid = self.proc.pid
            deadline = time.monotonic() + timeout
            got = b""
            while b"READY=1" not in got.split(b"\n"):
                if self.proc.poll() is not None:
                    raise AssertionError(f"brokerd exited with {self.proc.returncode} before READY=1:\n"
                                         f"{self.log()[-3000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"brokerd sent no READY=1 within {timeout}s:\n{self.log()[-3000:]}")
                r, _, _ = select.select([ns], [], [], min(left, 0.1))
                if r:
                    got += b"\n" + ns.recv(4096)
        finally:
            ns.close()
        self.fd_base = self.fd_baseline()
        return self

    def stop(self, timeout=10.0):
        """SIGTERM, wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"brokerd did not stop within {timeout}s of SIGTERM:\n{self.log()[-3000:]}")

    def restart(self):
        rc = self.stop()
        assert rc == 0, f"brokerd exited with {rc} on SIGTERM:\n{self.log()[-3000:]}"
        return self.start()

    def kill9(self):
        """SIGKILL to the monitor; its worker dies with it (PR_SET_PDEATHSIG):
        waits for both."""
        worker = self.worker_pid()
        self.proc.kill()
        self.proc.wait(timeout=10)
        if worker:
            wait_for(lambda: not _alive(worker), 10, "brokerd's worker to die with its monitor")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # --- observation ----------------------------------------------------

    def log(self):
        return self.logpath.read_text(errors="replace")

    def events(self, name):
        """Log lines of event=name."""
        pat = re.compile(rf"(^|\s)event={re.escape(name)}(?![\w-])")
        return [l for l in self.log().splitlines() if pat.search(l)]

    def wait_event(self, name, count=1, timeout=10.0):
        return wait_for(lambda: len(self.events(name)) >= count and self.events(name), timeout,
                        f"{count}x event={name} in brokerd's log")

    def worker_pid(self):
        """The pid of brokerd's worker (its unprivileged process), or None."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return None
        for c in children:
            try:
                if b"--worker" in Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0"):
                    return int(c)
            except OSError:
                continue
        return None

    def pids(self):
        """brokerd's processes: the monitor, and its worker when it has one."""
        w = self.worker_pid()
        return [self.pid] + ([w] if w else [])

    def _fd_links(self):
        """(pid, fd, link) of every fd of brokerd's processes."""
        out = []
        for pid in self.pids():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if not (VALGRIND and is_valgrinds(link)):
                    out.append((pid, fd, link))
        return out

    def fds(self):
        return [link for _, _, link in self._fd_links()]

    def fd_count(self):
        """fds of the monitor and the worker together."""
        return len(self._fd_links())

    def connections(self):
        """Control connections the broker has open: its accepted sockets, which
        /proc/net/unix lists, connected (St 03), under the path the listener
        was bound to (the control path, or a temporary name renamed to it)."""
        n = 0
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[5] == "03" and \
                        (fields[7] == self.control or fields[7].startswith(self.control + ".")):
                    n += 1
        return n

    def quiet_fd_count(self, timeout=10.0):
        """The fd count once no control connection is open and it is steady
        (a client that just exited may still be in the broker's hands)."""
        def steady():
            if self.connections() != 0:
                return None
            a = self.fd_count()
            time.sleep(0.02)
            return a if self.connections() == 0 and self.fd_count() == a else None
        return wait_for(steady, timeout, "brokerd to close every control connection")

    def fd_census(self):
        """{kind: count} of the fds of brokerd's processes (fd_kind), and
        the pids their pidfds name (-1: the process is gone)."""
        kinds, pids = {}, []
        for pid, fd, link in self._fd_links():
            k = fd_kind(link)
            kinds[k] = kinds.get(k, 0) + 1
            if k == "pidfd":
                try:
                    info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                    pids.append(int(re.search(r"^Pid:\s*(-?\d+)", info, re.M).group(1)))
                except (OSError, AttributeError):
                    pass
        return kinds, pids

    def _leases_now(self):
        """(bound leases, live holders) as brokerd reports them, once the
        status connection itself is closed again."""
        st = self.portctl("status", json=True).json
        wait_for(lambda: self.connections() == 0, 10, "brokerd to close every control connection")
        return sum(1 for l in st if l["bound"]), sum(l["holders"] for l in st)

    def fd_baseline(self):
        """The fds brokerd has once ready, after one round trip (lazily
        opened fds included) and with no client connected, less those its
        leases explain (two sockets per bound lease, the monitor's and the
        worker's; the holders' pidfds). What teardown compares with
        (check_fds)."""
        def steady():
            bound, holders = self._leases_now()
            a = self.fd_census()
            b = self.fd_census()
            return (a, bound) if a == b and self.connections() == 0 else None
        (kinds, pids), bound = wait_for(steady, 10, "brokerd's fds to settle after start")
        base = dict(kinds)
        base["socket"] = base.get("socket", 0) - 2 * bound
        base["pidfd"] = base.get("pidfd", 0) - len(self.holder_pids(pids))
        assert base["socket"] >= 1, f"brokerd's fds after start do not match its {bound} bound leases: {kinds}"
        return base

    def holder_pids(self, pids):
        """The pids of the holders' pidfds: every pidfd but the monitor's on its worker."""
        worker = self.worker_pid()
        return [p for p in pids if p != worker]

    def fds_explained(self):
        """None when the fds are what fd_base and the leases explain, else
        why not. A holder is one pidfd however many leases it holds: one
        per live process, no more than the leases count holders."""
        bound, holders = self._leases_now()
        kinds, pids = self.fd_census()
        held = self.holder_pids(pids)
        want = dict(self.fd_base)
        want["socket"] += 2 * bound
        want["pidfd"] += len(held)
        gone = [p for p in pids if p <= 0 or not _alive(p)]
        twice = sorted({p for p in held if held.count(p) > 1})
        if ({k: v for k, v in kinds.items() if v} == {k: v for k, v in want.items() if v} and not gone
                and not twice and len(held) <= holders and (holders == 0) == (not held)):
            return None
        return (f"brokerd holds {kinds}, expected {want} ({bound} bound leases, {holders} live holders, "
                f"pidfds of {len(held)} holders); pidfds of exited processes: {gone}; more than one pidfd "
                f"for: {twice}; fds: {sorted(self.fds())}")

    def check_fds(self, timeout=10.0):
        """Waits (holders' pidfds are closed when brokerd sees their exit)
        until the fds match fd_baseline plus the current leases; fails with
        the difference otherwise."""
        if not self.alive() or self.fd_base is None:
            return
        why = []

        def ok():
            why[:] = [self.fds_explained()]
            return why[0] is None
        try:
            wait_for(ok, timeout, "brokerd's fds to match its leases")
        except AssertionError:
            raise AssertionError(f"fd leak: {why[0]}") from None

    def log_errors(self):
        """Error lines of the log (LOG_ERROR_LINE) the test did not declare."""
        return [l for l in self.log().splitlines()
                if LOG_ERROR_LINE.search(l) and not any(re.search(p, l) for p in self.expected_log)]

    def check_log(self):
        check_sanitizers(self.log(), "brokerd")
        bad = self.log_errors()
        assert not bad, ("unexpected error lines in brokerd's log (declare provoked ones with "
                         "@pytest.mark.expect_log):\n" + "\n".join(bad))

    def wait_fd_count(self, expected, timeout=10.0):
        try:
            wait_for(lambda: self.fd_count() == expected, timeout, f"brokerd fd count == {expected}")
        except AssertionError:
            raise AssertionError(f"brokerd holds {self.fd_count()} fds, expected {expected}: "
                                 f"{sorted(self.fds())}") from None

    # --- clients ---------------------------------------------------------

    def portctl(self, *args, uid=None, gid=None, groups=None, check=True, json=False, timeout=20,
                env_socket=False, prefix=()):
        """Runs portctl (as uid, when given; after the argv prefix, e.g.
        unshare) against this broker. check: True (exit 0), an int (that exit
        status) or False. Returns a Result."""
        need(PORTCTL)
        opts = ["--json"] if json else []
        head = list(prefix) + as_user(uid, gid, groups)
        if env_socket:
            argv = head + [PORTCTL, *opts, *map(str, args)]
            env = child_env(PORTBROKER_SOCKET=self.control)
        else:
            argv = head + [PORTCTL, "--socket", self.control, *opts, *map(str, args)]
            env = child_env()
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                            timeout=timeout)
        res = Result(argv, cp)
        check_sanitizers(res.stderr, "portctl")
        want = 0 if check is True else check
        if check is not False and res.returncode != want:
            raise AssertionError(f"expected exit {want}: {res!r}\nbrokerd log tail:\n{self.log()[-2000:]}")
        if res.returncode == 1:
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("portctl: "), \
                f"failure must be one 'portctl: ...' line on stderr: {res!r}"
        return res

    def serve(self, procs, endpoints, uid=None, gid=None, groups=None, server_args=(), cmd=None,
              name="server"):
        """Starts `portctl get ENDPOINTS -- pb-testserver ARGS` (or -- CMD) as uid."""
        need(PORTCTL)
        need(TESTSERVER)
        if isinstance(endpoints, (str, int)):
            endpoints = [endpoints]
        cmd = cmd or [TESTSERVER, "--die-with-parent", *server_args]
        argv = [PORTCTL, "--socket", self.control, "get", *map(str, endpoints), "--", *cmd]
        return procs.spawn(argv, uid=uid, gid=gid, groups=groups, name=name)

    def raw(self, timeout=5.0):
        """A raw SOCK_SEQPACKET connection to the control socket."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(timeout)
        s.connect(self.control)
        return s

    # --- teardown --------------------------------------------------------

    def finish(self):
        """Teardown: fds (check_fds), then SIGTERM and exit 0, then the log
        (check_log) and valgrind's reports (check_valgrind)."""
        try:
            self.check_fds()
        finally:
            rc = self.stop()
        text = self.log()
        check_sanitizers(text, "brokerd")
        assert rc == 0, f"brokerd exited with {rc} (expected 0 on SIGTERM):\n{text[-3000:]}"
        self.check_log()
        self.check_valgrind()

    def check_valgrind(self):
        """Under PB_VALGRIND: no error and no leak in any run's report: its
        ERROR SUMMARY says 0 (leaks count as errors), and, for a run killed
        before it could sum up, no error report at all."""
        reports = sorted(self.dir.glob("valgrind/valgrind.*.log"))
        assert reports or not VALGRIND, "PB_VALGRIND is set, yet brokerd left no valgrind report"
        for path in reports:
            text = path.read_text(errors="replace")
            summary = re.findall(r"ERROR SUMMARY: (\d+) errors", text)
            errors = [l for l in text.splitlines() if VALGRIND_ERROR.match(l)]
            assert not errors and summary in ([], ["0"]), \
                f"valgrind found errors or leaks in brokerd ({path.name}):\n{text[-6000:]}"


def _alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# Another uid trying to take a port all along: binds [::] and 0.0.0.0 with
# SO_REUSEADDR (what a server restarting in a gap would do), for a bounded
# time; prints {"tries", "wins", "errnos"}. Run it with `python3 -c`.
BINDER = r"""
import json, socket, sys, time
port, until = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
tries, wins, errnos = 0, 0, {}
while time.monotonic() < until:
    for family, addr in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tries += 1
        try:
            s.bind((addr, port))
            s.listen()
            wins += 1
        except OSError as e:
            errnos[e.errno] = errnos.get(e.errno, 0) + 1
        s.close()
    time.sleep(0.002)
print(json.dumps({"tries": tries, "wins": wins, "errnos": errnos}))
"""


def tcp_listener_inode(port, pid="self"):
    """Inode of the TCP socket in LISTEN on port in the network namespace of pid, or None."""
    for f in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{f}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[9])
    return None


class Binder:
    """BINDER as uid in the background; .result() waits for its JSON."""

    def __init__(self, procs, uid, port, duration):
        self.duration = duration
        self.proc = procs.spawn([PYTHON, "-c", BINDER, port, duration], uid=uid, name="binder")

    def result(self):
        rc = self.proc.wait(timeout=self.duration + 30)
        assert rc == 0, f"binder failed ({rc}): {self.proc.stderr()}"
        return json.loads(self.proc.output().strip().splitlines()[-1])


class Load:
    """pb-load running in the background; .result() waits for its JSON."""

    def __init__(self, procs, port, rate, duration, addr="127.0.0.1", timeout_ms=5000):
        need(LOAD)
        self.duration, self.timeout_ms = duration, timeout_ms
        self.proc = procs.spawn([LOAD, "--port", port, "--addr", addr, "--rate", rate, "--duration",
                                 duration, "--timeout-ms", timeout_ms, "--json"], name="pb-load")
        self.t0 = time.monotonic()

    def result(self):
        rc = self.proc.wait(timeout=self.duration + self.timeout_ms / 1000 + 30)
        out = self.proc.output()
        assert rc == 0, f"pb-load failed ({rc}): {self.proc.stderr()}"
        return json.loads(out.strip().splitlines()[-1])


# --- fixtures ---------------------------------------------------------------


@pytest.fixture
def netns():
    """Runs the test in a fresh network namespace with loopback up."""
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (network namespaces, sockets handed to other uids)")
    orig = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"unshare(CLONE_NEWNET): {os.strerror(e)}")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
        yield
    finally:
        if _libc.setns(orig, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns back to the original netns: {os.strerror(e)}")
        os.close(orig)


@pytest.fixture
def workdir(netns):
    d = Path(tempfile.mkdtemp(prefix="pb-it-"))
    d.chmod(0o755)
    scratch = d / "scratch"
    scratch.mkdir()
    scratch.chmod(0o1777)               # other uids write server output here
    yield d
    if not os.environ.get("PB_KEEP"):  # PB_KEEP=1: left for a look (brokerd's log, valgrind's reports)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def procs(workdir):
    p = Procs(workdir / "scratch")
    yield p
    p.cleanup()


def pytest_collection_modifyitems(config, items):
    if not VALGRIND:
        return
    for item in items:
        for m in item.iter_markers("not_under_valgrind"):
            item.add_marker(pytest.mark.skip(reason=f"under valgrind: {m.args[0]}"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "not_under_valgrind(reason): skipped under PB_VALGRIND, saying why")
    config.addinivalue_line(
        "markers", "expect_log(*regexes): brokerd error lines this test provokes on purpose; "
                   "each must appear, and only matching error lines are allowed")


@pytest.fixture
def expected_log(request):
    """The expect_log marker's regexes, plus any added with the expect_log fixture."""
    pats = []
    for m in request.node.iter_markers("expect_log"):
        pats.extend(m.args)
    return pats


@pytest.fixture
def expect_log(expected_log):
    """expect_log(regex, ...): declares error lines the test provokes (at run time)."""
    return expected_log.extend


def cgroup2_root():
    """Where the cgroup v2 hierarchy is mounted (alone, or beside v1), or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if right.split()[:1] == ["cgroup2"] and fields[3] == "/":
                return Path(fields[4])
    return None


def own_cgroup(root):
    """The cgroup v2 directory this process is in."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return root / line[3:].lstrip("/")
    return root


@pytest.fixture(scope="session")
def bpffs():
    """A private mount namespace for the whole run with a bpffs of its own:
    whatever the brokers pin there goes away with the run. None when it
    cannot be had (the guard tests then skip)."""
    if os.geteuid() != 0:
        return None
    if _libc.unshare(CLONE_NEWNS) != 0:
        return None
    subprocess.run(["mount", "--make-rprivate", "/"], check=True, timeout=10)
    r = subprocess.run(["mount", "-t", "bpf", "-o", "mode=0700", "bpf", str(BPFFS)], timeout=10)
    return BPFFS if r.returncode == 0 else None


class Guard:
    """The test's cgroup (this process is in it for the test) and bpffs."""

    _serial = 0

    def __init__(self, fs, root):
        Guard._serial += 1
        self.fs = fs
        self.root = root
        self.home = own_cgroup(root)
        self.cgroup = str(root / f"pb-it-{os.getpid()}-{Guard._serial}")
        self.dirs = 0
        os.mkdir(self.cgroup)
        Path(self.cgroup, "cgroup.procs").write_text(str(os.getpid()))

    def new_dir(self):
        self.dirs += 1
        return str(self.fs / f"{Path(self.cgroup).name}-{self.dirs}")

    def close(self):
        Path(self.home, "cgroup.procs").write_text(str(os.getpid()))

        def removed():
            try:
                os.rmdir(self.cgroup)
                return True
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                return False
        wait_for(removed, 10, f"the test's processes to leave {self.cgroup}")


@pytest.fixture
def guard(bpffs, netns):
    """The test's bind-guard place (see the module doc), or None."""
    root = cgroup2_root()
    if bpffs is None or root is None:
        yield None
        return
    g = Guard(bpffs, root)
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
def make_broker(guard, workdir, procs, expected_log):
    brokers = []

    def make(*args, start=True, wrapper=(), binary=None):
        d = workdir / f"broker{len(brokers)}"
        d.mkdir()
        d.chmod(0o755)
        b = Broker(d, args, wrapper, binary, guard)
        b.expected_log = expected_log      # shared: every broker of the test
        brokers.append(b)
        return b.start() if start else b

    yield make
    procs.cleanup()                     # holders first: the broker outlives its clients
    failures = []
    for b in brokers:                   # stop every broker, then report the first failure
        try:
            b.finish()
        except AssertionError as e:
            failures.append(e)
    if failures:
        raise failures[0]
    logs = [l for b in brokers if b.logpath.exists() for l in b.log().splitlines()]
    missing = [p for p in expected_log if not any(re.search(p, l) for l in logs)]
    assert not missing, f"declared (expect_log) but never logged: {missing}"


@pytest.fixture
def broker(make_broker):
    return make_broker()


@pytest.fixture
def portctl(broker):
    """portctl(*args, uid=None, check=True, json=False, ...) against the default broker."""
    return broker.portctl


def _ns_call(fn, *args):
    if fn(*args) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{fn.__name__}: {os.strerror(e)}")


@contextlib.contextmanager
def users_added(workdir, passwd, group):
    """Users and groups (passwd and group lines) for this test's processes
    alone: copies of /etc/passwd and /etc/group with them added,
    bind-mounted over the originals in a mount namespace the test enters
    (after the run's own, bpffs', which it returns to)."""
    orig = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    cwd = os.getcwd()
    try:
        _ns_call(_libc.unshare, CLONE_NEWNS)
        subprocess.run(["mount", "--make-rprivate", "/"], check=True, timeout=10)
        for name, extra in (("passwd", passwd), ("group", group)):
            copy = workdir / name
            copy.write_text(open(f"/etc/{name}").read().rstrip("\n") + "\n" + "\n".join(extra) + "\n")
            copy.chmod(0o644)
            subprocess.run(["mount", "--bind", str(copy), f"/etc/{name}"], check=True, timeout=10)
        yield
    finally:
        _ns_call(_libc.setns, orig, CLONE_NEWNS)
        os.close(orig)
        os.chdir(cwd)


def root_dir(path):
    """Makes directory path, root's and 0755 whatever the umask: as brokerd wants the directories it
    trusts (nobody else may write them). Returns path."""
    path.mkdir()
    path.chmod(0o755)
    return path


@pytest.fixture
def policy_dir(workdir):
    """An empty policy directory for --policy-dir."""
    return root_dir(workdir / "policy.d")


def write_file(path, text, mode=0o644, owner=0):
    """Writes text to path, owned by owner with mode; returns path."""
    path.write_text(text)
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


@pytest.fixture
def scratch(workdir):
    return workdir / "scratch"


@pytest.fixture
def unix_dir(workdir):
    """A directory for brokerd's --unix-dir (where it makes Unix sockets)."""
    return root_dir(workdir / "run")


def errno_name(e):
    return errno.errorcode.get(e, str(e))


# --- HTTP servers: fetch and load (third-party servers, issue 3) ------------


def http_get(port, path="/", addr="127.0.0.1", timeout=5.0):
    """One HTTP/1.0 GET; returns (status, body str). Raises OSError as fetch does."""
    with socket.create_connection((addr, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: test\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body.decode(errors="replace")


class ExchangeLoad:
    """pb-load's counterpart for servers that must be asked something (pb-load
    sends nothing and expects "ok ..."): RATE exchanges per second for DURATION
    seconds from a thread of ours, each over a TCP connection or UDP socket of
    its own. Exchange i goes over routes[i % len(routes)], a (transport, addr)
    pair ("tcp" or "udp", "127.0.0.1" or "::1"); subclasses say what it sends
    (request(i, transport)) and what a good reply is (reply(i, transport,
    data, eof): None while more is to come, else (ok, body)). Each exchange
    ends in one class, as pb-load counts: ok, refused (TCP, or an ICMP port
    unreachable on UDP), timed_out (connect or reply), lost (TCP: connected,
    then EOF or reset with no byte: accepted by a process that was killed),
    bad_reply (anything else received), error. A UDP query nobody answered is
    timed_out: whether the killed server had read it only its log can say, so
    their indexes are in udp_unanswered. .result() waits and returns the
    counts, the bodies seen ({body: count}), reply latencies, and with
    records=True one [start, end, outcome, body] per exchange (times:
    time.monotonic(), the system-wide CLOCK_MONOTONIC). Bounded: rate <= 1000,
    duration <= 60 s, loopback only, at most max_inflight open at once (later
    starts wait)."""

    def __init__(self, port, rate, duration, routes=(("tcp", "127.0.0.1"),), timeout_ms=5000,
                 records=False, max_inflight=800):
        assert 0 < rate <= 1000 and 0 < duration <= 60 and routes
        assert all(t in ("tcp", "udp") and a in ("127.0.0.1", "::1") for t, a in routes), routes
        self.port, self.rate, self.duration, self.routes = port, rate, duration, list(routes)
        self.timeout = timeout_ms / 1000
        self.keep_records, self.max_inflight = records, max_inflight
        self._res = None
        self._exc = None
        self.t0 = time.monotonic()
        import threading
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()

    def request(self, i, transport):
        raise NotImplementedError

    def reply(self, i, transport, data, eof):
        raise NotImplementedError

    def _run(self):
        import asyncio
        try:
            self._res = asyncio.run(self._main())
        except BaseException as e:      # reported by result()
            self._exc = e

    async def _tcp(self, i, addr, deadline):
        """One exchange over TCP: returns (outcome or None, data, connected)."""
        import asyncio
        connected, data, w = False, b"", None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(addr, self.port), self.timeout)
            connected = True
            w.write(self.request(i, "tcp"))
            while True:
                chunk = await asyncio.wait_for(r.read(65536), max(0.001, deadline - time.monotonic()))
                data += chunk
                if not chunk or self.reply(i, "tcp", data, False) is not None:
                    return (None if data else "lost"), data, connected
        except (ConnectionResetError, BrokenPipeError):
            return (None if data else "lost"), data, connected
        finally:
            if w is not None:
                w.close()

    async def _udp(self, i, addr, deadline):
        """One exchange over UDP, a connected socket of its own (so an ICMP
        port unreachable is ECONNREFUSED): returns (None, data, True)."""
        import asyncio
        with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.connect((addr, self.port))
            s.send(self.request(i, "udp"))
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(s, 65536),
                                          max(0.001, deadline - time.monotonic()))
            return None, data, True

    async def _one(self, sem, i, rec):
        import asyncio
        transport, addr = self.routes[i % len(self.routes)]
        async with sem:
            start = time.monotonic()
            connected, data, outcome, body = transport == "udp", b"", None, ""
            try:
                run = self._udp if transport == "udp" else self._tcp
                outcome, data, connected = await run(i, addr, start + self.timeout)
            except ConnectionRefusedError:
                outcome = "refused"
            except asyncio.TimeoutError:
                outcome = "timed_out"
            except OSError as e:
                outcome = "error"
                rec["error_kind"] = errno.errorcode.get(e.errno, str(e.errno))
            if outcome is None:
                ok, body = self.reply(i, transport, data, True)
                outcome = "ok" if ok else "bad_reply"
            rec.update(start=start, end=time.monotonic(), outcome=outcome, body=body, connected=connected,
                       transport=transport)

    async def _main(self):
        import asyncio
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need_fds = self.max_inflight + 256
        if soft < need_fds <= hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need_fds, hard))
        sem = asyncio.Semaphore(self.max_inflight)
        total = int(self.rate * self.duration)
        recs = [{} for _ in range(total)]
        tasks = []
        self.t0 = time.monotonic()
        for i in range(total):
            delay = self.t0 + i / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(self._one(sem, i, recs[i])))
        await asyncio.gather(*tasks)
        return self._summary(recs, time.monotonic() - self.t0)

    def _summary(self, recs, elapsed):
        classes = ("ok", "refused", "timed_out", "lost", "bad_reply", "error")
        out = {k: 0 for k in classes}
        bodies, kinds, lat = {}, {}, []
        for r in recs:
            out[r["outcome"]] += 1
            if r["outcome"] in ("ok", "bad_reply"):
                bodies[r["body"][:80]] = bodies.get(r["body"][:80], 0) + 1
            if r["outcome"] == "ok":
                lat.append((r["end"] - r["start"]) * 1e6)
            if "error_kind" in r:
                kinds[r["error_kind"]] = kinds.get(r["error_kind"], 0) + 1
        lat.sort()
        pick = (lambda q: int(lat[int((len(lat) - 1) * q)])) if lat else (lambda q: 0)
        out.update(attempted=len(recs), errors=out.pop("error"), error_kinds=kinds, bodies=bodies,
                   reply_us={"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
                   rate=self.rate, duration_s=self.duration, elapsed_s=round(elapsed, 3))
        unanswered = [i for i, r in enumerate(recs) if r["outcome"] == "timed_out" and r["transport"] == "udp"]
        if unanswered:
            out["udp_unanswered"] = unanswered
        if self.keep_records:
            out["records"] = [[r["start"], r["end"], r["outcome"], r["body"]] for r in recs]
        return out

    def result(self):
        self._thread.join(self.duration + self.timeout + 60)
        assert not self._thread.is_alive(), f"the {type(self).__name__} did not finish"
        if self._exc is not None:
            raise self._exc
        return self._res


class HttpLoad(ExchangeLoad):
    """ExchangeLoad for HTTP servers: each connection sends one HTTP/1.0 GET
    of path and reads to EOF; ok is status 200 with the whole body."""

    def __init__(self, port, rate, duration, path="/", addr="127.0.0.1", **kwargs):
        self.path = path
        self._request = f"GET {path} HTTP/1.0\r\nHost: test\r\n\r\n".encode()
        super().__init__(port, rate, duration, routes=[("tcp", addr)], **kwargs)

    def request(self, i, transport):
        return self._request

    def reply(self, i, transport, data, eof):
        if not eof:
            return None
        head, sep, raw = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        ok = bool(sep and re.match(rb"HTTP/1\.[01] 200 ", head) and
                  (length is None or int(length.group(1)) == len(raw)))
        return ok, raw.decode(errors="replace")


def listeners(port, proto="tcp"):
    """Inodes of the TCP sockets in LISTEN on port (any address) in this netns;
    proto="udp": of the UDP sockets bound to it."""
    out = set()
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == ("0A" if proto == "tcp" else "07") and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    out.add(int(fields[9]))
    return out


def socket_inodes(pid):
    """Inodes of the sockets process pid has open (empty if it is gone)."""
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(int(link[8:-1]))
    except OSError:
        pass
    return out


def children(pid):
    """Pids whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out
