# SPDX-License-Identifier: MIT
"""The systemd units as `make install` writes them: `systemd-analyze verify`
accepts them, and a real systemd, run as PID 1 of private PID, mount,
network, UTS, IPC and cgroup namespaces, socket-activates brokerd through
them, sees it become ready (Type=notify), restarts it after a crash and stops
it cleanly at poweroff; ports survive brokerd; and a unit rule lets the
service of that unit alone, not its uid elsewhere, get its port.

How the PID-1 harness works (the host's PID 1 need not be systemd):
  * `unshare --pid --fork --mount-proc --mount --net --uts --ipc --cgroup`,
    started from a fresh cgroup of the host's cgroup2 hierarchy, so the cgroup
    namespace (and all systemd creates) is rooted there and removed afterwards.
  * `make install` (default PREFIX=/usr/local) into a DESTDIR first; inside,
    a tmpfs on /usr/local receives that tree, so the units run exactly what
    make install wrote: /usr/local/sbin/brokerd, its units under
    /usr/local/lib/systemd/system.
  * Inside, before exec'ing /lib/systemd/systemd: tmpfs on /run, /var/lib,
    /tmp and /var/tmp (the test helpers are copied to /run first), a fresh
    read-only sysfs, cgroup2 on /sys/fs/cgroup, /proc/sys read-only (PID 1
    writes global sysctls such as kernel.core_pattern otherwise), a pty
    of ours bind-mounted over /dev/console, which carries systemd's log, and
    copies of /etc/passwd and /etc/group naming uid U1 (User= wants a name).
  * `container=` in the environment makes systemd behave as in a container;
    SYSTEMD_UNIT_PATH holds only our units plus minimal targets (a test
    adds its own with Pid1.add_unit), and the generator paths point at an
    empty directory.
  * The test talks to it with `nsenter -t PID -a systemctl ...` (private bus
    /run/systemd/private) and runs portctl the same way; it powers off with
    SIGRTMIN+4. Everything is bounded by timeouts; cleanup kills the cgroup.
"""

import json
import os
import pwd
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
import tty
from pathlib import Path

import pytest

from conftest import BINDER, need, tcp_listener_inode, wait_for

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PB_BUILD", REPO / "build"))
SYSTEMD = Path("/lib/systemd/systemd")
CONTROL = "/run/portbroker/control.sock"
PREFIX = "/usr/local"                   # make install's default
UNIT_DIR = f"{PREFIX}/lib/systemd/system"
PORTCTL = f"{PREFIX}/bin/portctl"
# Test helpers inside the namespace (out of reach of PrivateTmp=, wherever
# the build tree is), and the namespace's own units.
NS_TESTDIR = "/run/portbroker-test"
U1, U2 = 4242, 4343                     # test uids; U1 is user pb-test inside


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A DESTDIR holding what `make install` writes."""
    need(BUILD / "brokerd")
    dest = tmp_path_factory.mktemp("install")
    r = subprocess.run(["make", "-s", "-C", str(REPO), "install", f"BUILD={BUILD}", f"DESTDIR={dest}"],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return dest


def installed_unit(installed, name):
    return (installed / UNIT_DIR.lstrip("/") / name).read_text()


def unit_settings(text):
    """(section, key) -> [values] of a unit file; no continuation lines."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


# --- static checks ------------------------------------------------------------


def test_units_match_the_contract(installed):
    sock = unit_settings(installed_unit(installed, "portbrokerd.socket"))
    svc = unit_settings(installed_unit(installed, "portbrokerd.service"))
    assert sock[("Socket", "ListenSequentialPacket")] == [CONTROL]
    assert sock[("Socket", "Accept")] == ["no"]
    assert svc[("Service", "Type")] == ["notify"]
    assert svc[("Service", "ExecStart")] == [f"{PREFIX}/sbin/brokerd --guard-dir /run/portbroker-guard"]
    # Unix leases' directory: brokerd's (user portbroker), kept with the sockets in the fd store,
    # and named in the settings make install writes (once: never over an admin's).
    assert svc[("Service", "RuntimeDirectory")] == ["portbroker-sockets"]
    conf = (installed / PREFIX.lstrip("/") / "etc/portbroker/brokerd.conf").read_text()
    assert "\nunix-dir = /run/portbroker-sockets\n" in conf
    # Not root: the monitor has the unit's few capabilities, the worker none.
    assert svc[("Service", "User")] == ["portbroker"]
    assert svc[("Service", "ExecReload")] == [f"{PORTCTL} admin reexec"]
    # The fd store holds every lease's socket: as many as brokerd's default --max-leases.
    assert svc[("Service", "FileDescriptorStoreMax")] == ["4096"]
    assert svc[("Service", "WatchdogSec")]
    # A service RuntimeDirectory= would be removed, control socket and all,
    # whenever brokerd stops, unless preserved.
    if ("Service", "RuntimeDirectory") in svc:
        assert svc.get(("Service", "RuntimeDirectoryPreserve")) == ["yes"]
    caps = " ".join(svc[("Service", "CapabilityBoundingSet")]).split()
    assert "CAP_NET_BIND_SERVICE" in caps
    # The bind guard: loading and attaching cgroup programs, pinning them.
    assert {"CAP_BPF", "CAP_NET_ADMIN"} <= set(caps)
    # Unix leases' files are given to their owners.
    assert "CAP_CHOWN" in caps
    assert "bpf" in " ".join(svc[("Service", "SystemCallFilter")]).split()


def test_systemd_analyze_verify(tmp_path, installed):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    shutil.copy(installed / UNIT_DIR.lstrip("/") / "portbrokerd.socket", tmp_path)
    # Exec*= must name existing binaries: the installed ones, under DESTDIR.
    (tmp_path / "portbrokerd.service").write_text(installed_unit(installed, "portbrokerd.service").replace(
        f"={PREFIX}/", f"={installed}{PREFIX}/"))
    # --man=no: the man pages named in Documentation= are not installed here.
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "./portbrokerd.socket", "./portbrokerd.service"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    ours = [l for l in (r.stdout + r.stderr).splitlines() if "portbrokerd" in l]
    assert r.returncode == 0 and not ours, f"rc={r.returncode}\n{r.stdout}{r.stderr}"


def test_systemd_analyze_security_exposure(tmp_path, installed):
    """The installed unit's exposure, as `systemd-analyze security` rates it:
    no worse than 2.4, what it was before brokerd split in two."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    (tmp_path / "portbrokerd.service").write_text(installed_unit(installed, "portbrokerd.service"))
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", "./portbrokerd.service"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    level = re.search(r"Overall exposure level for portbrokerd.service: (\d+\.\d+)", r.stdout)
    assert level, f"rc={r.returncode}\n{r.stdout}{r.stderr}"
    assert float(level.group(1)) <= 2.4, r.stdout


# --- systemd as PID 1 -----------------------------------------------------------

# Just enough of the boot and shutdown transaction for our two units.
MINIMAL_UNITS = {
    "default.target": "[Unit]\nRequires=sysinit.target sockets.target\nAfter=sysinit.target sockets.target\n",
    "sysinit.target": "[Unit]\nDefaultDependencies=no\n",
    "basic.target": "[Unit]\nRequires=sysinit.target\nAfter=sysinit.target sockets.target\n",
    "sockets.target": "[Unit]\nWants=portbrokerd.socket\n",
    "multi-user.target": "[Unit]\nRequires=basic.target\nAfter=basic.target\n",
    "system.slice": "[Unit]\nDefaultDependencies=no\n",
    "shutdown.target": "[Unit]\nDefaultDependencies=no\nRefuseManualStart=yes\n",
    "umount.target": "[Unit]\nDefaultDependencies=no\nRefuseManualStart=yes\n",
    "final.target": "[Unit]\nDefaultDependencies=no\nRefuseManualStart=yes\nAfter=shutdown.target umount.target\n",
    "poweroff.target": (
        "[Unit]\nDefaultDependencies=no\nRequires=systemd-poweroff.service\n"
        "After=systemd-poweroff.service\nAllowIsolate=yes\n"
        "JobTimeoutSec=30s\nJobTimeoutAction=poweroff-force\n"
    ),
    "systemd-poweroff.service": (
        "[Unit]\nDefaultDependencies=no\nRequires=shutdown.target umount.target final.target\n"
        "After=shutdown.target umount.target final.target\nSuccessAction=poweroff-force\n"
    ),
}

INNER = r"""
set -eu
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /var/lib
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
# As systemd mounts it at boot on a host (not in a container): brokerd's bind
# guard pins its programs there. Its own instance: the pins go with the test.
mount -t bpf -o mode=0700,nosuid,nodev,noexec bpf /sys/fs/bpf
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
    mount -o remount,bind,ro /proc/sysrq-trigger
fi
mount --bind {console} /dev/console
mkdir -p {testdir}/empty
cp -r {units} {testdir}/units
cp {helpers} {testdir}/
# A name for uid U1 (User= of a service wants one), in here alone.
cp /etc/passwd /etc/group {testdir}/
echo "pb-test:x:{u1}:{u1}:portbroker test:/nonexistent:/usr/sbin/nologin" >> {testdir}/passwd
echo "pb-test:x:{u1}:" >> {testdir}/group
mount --bind {testdir}/passwd /etc/passwd
mount --bind {testdir}/group /etc/group
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs {prefix}
cp -a {installed}{prefix}/. {prefix}/
# After the copies: the build tree may be under /tmp. PrivateTmp= dirs stay in here.
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
export container=portbroker-test SYSTEMD_COLORS=0
export SYSTEMD_UNIT_PATH={testdir}/units:{unitdir}
export SYSTEMD_GENERATOR_PATH={testdir}/empty SYSTEMD_ENVIRONMENT_GENERATOR_PATH={testdir}/empty
exec {systemd} --system --log-target=console --log-level=debug --show-status=no \
    --default-standard-output=tty --default-standard-error=tty
"""


def cgroup2_root():
    for d in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(os.path.join(d, "cgroup.controllers")):
            return Path(d)
    return None


HELPERS = ("pb-testserver", "pb-load")


class Pid1:
    """A systemd running as PID 1 of fresh namespaces, with our units."""

    def __init__(self, tmp_path, build, installed):
        self.tmp = tmp_path
        self.build = build
        self.installed = installed
        self.proc = None  # the unshare process
        self.pid = None  # host pid of the namespace's PID 1
        self.cgroup = None
        self.master_fd = self.slave_fd = -1
        self.console = bytearray()
        self.lock = threading.Lock()
        self.stop_reader = threading.Event()
        self.reader = None

    # - start and stop -

    def start(self):
        root = cgroup2_root()
        if root is None:
            pytest.skip("no cgroup2 hierarchy to run systemd in")
        units = self.tmp / "units"
        units.mkdir()
        for name, text in MINIMAL_UNITS.items():
            (units / name).write_text(text)
        dropin = units / "portbrokerd.service.d"
        dropin.mkdir()
        # LeakSanitizer needs ptrace(), which SystemCallFilter= forbids; leaks
        # are checked by the tests that run brokerd directly.
        (dropin / "sanitizer.conf").write_text(
            "[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n")

        self.master_fd, self.slave_fd = pty.openpty()
        tty.setraw(self.slave_fd)
        self.reader = threading.Thread(target=self._read_console, daemon=True)
        self.reader.start()

        inner = self.tmp / "inner.sh"
        inner.write_text(INNER.format(
            console=shlex.quote(os.ttyname(self.slave_fd)), testdir=NS_TESTDIR,
            units=shlex.quote(str(units)), installed=shlex.quote(str(self.installed)), prefix=PREFIX,
            unitdir=UNIT_DIR, helpers=" ".join(shlex.quote(str(self.build / h)) for h in HELPERS),
            systemd=SYSTEMD, u1=U1))
        self.cgroup = root / f"portbroker-test-{os.getpid()}-{time.monotonic_ns()}"
        self.cgroup.mkdir()
        launch = (f"echo $$ > {shlex.quote(str(self.cgroup / 'cgroup.procs'))} && exec unshare "
                  f"--pid --fork --mount-proc --mount --net --uts --ipc --cgroup -- /bin/sh {shlex.quote(str(inner))}")
        self.out = open(self.tmp / "unshare.log", "wb")
        self.proc = subprocess.Popen(["/bin/sh", "-c", launch], stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        self.pid = wait_for(self._ns_init, 10, "the namespace's PID 1")
        wait_for(lambda: self._exe_is_systemd() or self.proc.poll() is not None, 20,
                 "systemd to be exec'd")
        assert self.proc.poll() is None, f"namespace setup failed\n{self.diagnostics()}"

    def _ns_init(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"unshare exited with {self.proc.returncode}\n{self.diagnostics()}")
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def _exe_is_systemd(self):
        try:
            return os.readlink(f"/proc/{self.pid}/exe") == str(SYSTEMD.resolve())
        except OSError:
            return False

    def _read_console(self):
        while not self.stop_reader.is_set():
            r, _, _ = select.select([self.master_fd], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self.master_fd, 65536)
            except OSError:
                return
            with self.lock:
                self.console += data

    def log(self):
        with self.lock:
            return self.console.decode(errors="replace").replace("\r", "")

    def diagnostics(self, lines=120):
        self.out.flush()
        tail = "\n".join(self.log().splitlines()[-lines:])
        return (f"--- unshare output\n{(self.tmp / 'unshare.log').read_text(errors='replace')}"
                f"--- systemd console (last {lines} lines)\n{tail}")

    def poweroff(self, timeout=30):
        """SIGRTMIN+4 to PID 1; returns once the namespace is gone."""
        os.kill(self.pid, signal.SIGRTMIN + 4)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"systemd did not power off in {timeout}s\n{self.diagnostics()}")

    def cleanup(self):
        """Kills whatever is left, removes the cgroup tree, stops the reader."""
        if self.proc is not None and self.proc.poll() is None:
            self._kill_cgroup()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.cgroup is not None and self.cgroup.exists():
            self._kill_cgroup()
            wait_for(lambda: "populated 0" in (self.cgroup / "cgroup.events").read_text(), 10,
                     "the test cgroup to empty")
            for d in sorted((p for p in self.cgroup.rglob("*") if p.is_dir()),
                            key=lambda p: len(p.parts), reverse=True):
                d.rmdir()
            self.cgroup.rmdir()
        self.stop_reader.set()
        if self.reader is not None:
            self.reader.join(5)
        for fd in (self.master_fd, self.slave_fd):
            if fd >= 0:
                os.close(fd)
        self.master_fd = self.slave_fd = -1
        if getattr(self, "out", None):
            self.out.close()

    def _kill_cgroup(self):
        kill = self.cgroup / "cgroup.kill"
        if kill.exists():
            kill.write_text("1")
        elif self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)  # the kernel kills the rest of the PID namespace
            except ProcessLookupError:
                pass

    # - inside the namespaces -

    def run(self, *argv, timeout=20, check=True):
        env = {k: v for k, v in os.environ.items() if k != "PORTBROKER_SOCKET"}
        try:
            r = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "--", *map(str, argv)],
                               capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL, env=env)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{' '.join(map(str, argv))}: no exit in {timeout}s\n"
                                 f"{self.diagnostics()}") from None
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))}: exit {r.returncode}\n"
                                 f"{r.stdout}{r.stderr}\n{self.diagnostics()}")
        return r

    def systemctl(self, *args, check=False):
        return self.run("systemctl", "--no-pager", *args, check=check)

    def add_unit(self, name, text):
        """Writes a unit file where this systemd finds units, and reloads it."""
        Path(f"/proc/{self.pid}/root{NS_TESTDIR}/units/{name}").write_text(text)
        self.systemctl("daemon-reload", check=True)

    def prop(self, unit, name):
        return self.systemctl("show", "--value", "-p", name, unit).stdout.strip()

    def wait_state(self, unit, state, timeout=20):
        try:
            wait_for(lambda: self.prop(unit, "ActiveState") == state, timeout,
                     f"{unit} to be {state}", interval=0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.systemctl('status', unit).stdout}\n{self.diagnostics()}")


@pytest.fixture
def pid1(tmp_path, installed):
    if os.geteuid() != 0:
        pytest.skip("running systemd as PID 1 of new namespaces needs root")
    if not SYSTEMD.exists() or not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("needs /lib/systemd/systemd, unshare and nsenter")
    for h in HELPERS:
        need(BUILD / h)
    p = Pid1(tmp_path, BUILD, installed)
    try:
        p.start()
        yield p
    finally:
        p.cleanup()


def lease_of(pid1, portctl, endpoint):
    """(id, since) of the one lease `portctl status ENDPOINT --json` shows."""
    leases = json.loads(pid1.run(portctl, "status", endpoint, "--json").stdout)
    assert len(leases) == 1, leases
    return leases[0]["id"], leases[0]["since"]


def test_socket_activation_under_systemd_pid1(pid1):
    host_core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    host_run_existed = Path("/run/portbroker").exists()
    portctl = PORTCTL

    # Boot: the socket listens, brokerd is not started yet.
    pid1.wait_state("portbrokerd.socket", "active")
    assert pid1.prop("portbrokerd.service", "ActiveState") == "inactive"
    assert Path(f"/proc/{pid1.pid}/root{CONTROL}").is_socket()

    # The first client activates brokerd, which reports READY=1.
    pid1.run(portctl, "policy", "add", "tcp:8080", "--user", "root")
    pid1.wait_state("portbrokerd.service", "active")
    assert pid1.prop("portbrokerd.service", "Type") == "notify"
    pid1.run(portctl, "get", "tcp:8080", "--", "/bin/sh", "-c",
             'test "$LISTEN_FDS" = 1 && test "$LISTEN_PID" = $$')
    assert tcp_listener_inode(8080, pid1.pid)
    assert pid1.prop("portbrokerd.service", "NRestarts") == "0"
    lease = lease_of(pid1, portctl, "tcp:8080")

    # Hardening left brokerd what it needs and nothing else.
    main = pid1.prop("portbrokerd.service", "MainPID")
    status = pid1.run("cat", f"/proc/{main}/status").stdout
    capbnd = int(next(l for l in status.splitlines() if l.startswith("CapBnd:")).split()[1], 16)
    # CAP_CHOWN, CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_BPF
    assert capbnd == (1 << 0) | (1 << 10) | (1 << 12) | (1 << 19) | (1 << 39), hex(capbnd)
    assert "NoNewPrivs:\t1" in status
    # /sys and /proc/sys read-only (ProtectKernelTunables= spelled out), but
    # the bind guard's own directory of bpffs, bind-mounted where user
    # portbroker reaches it; and the guard works.
    mounts = {l.split()[4]: l.split()[5].split(",") for l in
              pid1.run("cat", f"/proc/{main}/mountinfo").stdout.splitlines()}
    assert "ro" in mounts["/sys"] and "ro" in mounts["/proc/sys"] and "rw" in mounts["/run/portbroker-guard"], mounts
    assert "rw" in mounts["/proc/sys/net/ipv4/ip_local_reserved_ports"], mounts
    assert "cannot keep leased ports" not in pid1.log(), pid1.diagnostics()
    assert "8080" in pid1.run("cat", "/proc/sys/net/ipv4/ip_local_reserved_ports").stdout, pid1.diagnostics()
    assert "bind guard on: cgroup /sys/fs/cgroup, pinned in /run/portbroker-guard" in pid1.log(), \
        pid1.diagnostics()
    assert pid1.run("stat", "-c", "%U", "/sys/fs/bpf/portbroker/bind4").stdout.strip() == "portbroker"
    # Armed, the pins' directory is read-only, even to its owner: a process
    # of uid portbroker (the worker's uid, the worker's view) cannot remove a
    # pin; it would have to chmod first, which the worker's seccomp refuses.
    assert pid1.run("stat", "-c", "%a", "/sys/fs/bpf/portbroker").stdout.strip() == "500"
    rm = pid1.run("nsenter", "-t", str(worker_of(pid1, main)), "-m", "setpriv", "--reuid", "portbroker",
                  "--regid", "portbroker", "--clear-groups", "--inh-caps", "-all", "rm", "/run/portbroker-guard/bind4",
                  check=False)
    assert rm.returncode != 0 and "Permission denied" in rm.stderr, rm
    # The monitor runs as portbroker with the unit's capabilities; its worker
    # as portbroker with none, no_new_privs, a seccomp filter, not dumpable.
    uid = str(pwd.getpwnam("portbroker").pw_uid)
    assert status.split("Uid:\t")[1].split()[:2] == [uid, uid], status
    worker = pid1.run("cat", f"/proc/{worker_of(pid1, main)}/status").stdout
    assert all(f"{c}:\t0000000000000000" in worker for c in ("CapInh", "CapPrm", "CapEff", "CapAmb")), worker
    assert "NoNewPrivs:\t1" in worker and "Seccomp:\t2" in worker, worker

    # A Unix lease in the unit's own directory: brokerd (user portbroker,
    # CAP_CHOWN) makes the file for its owner with the rule's mode.
    sock = "/run/portbroker-sockets/app.sock"
    pid1.run(portctl, "policy", "add", "unix:/run/portbroker-sockets/", "--user", "4242", "--socket-mode", "0660")
    pid1.run("setpriv", "--reuid", "4242", "--regid", "4242", "--clear-groups", portctl, "get", f"unix:{sock}",
             "--", "/bin/true")
    assert pid1.run("stat", "-c", "%u %a %F", sock).stdout.split() == ["4242", "660", "socket"], pid1.diagnostics()
    sock_ino = pid1.run("stat", "-c", "%i", sock).stdout
    unix_lease = lease_of(pid1, portctl, f"unix:{sock}")

    # A crash: systemd restarts brokerd on the same control socket, and the
    # rule and leases are still there, the Unix one's socket and file kept.
    pid1.run("/bin/sh", "-c", f"kill -KILL {main}")
    wait_for(lambda: pid1.prop("portbrokerd.service", "NRestarts") == "1", 20, "a restart")
    pid1.wait_state("portbrokerd.service", "active")
    assert lease_of(pid1, portctl, "tcp:8080") == lease
    assert lease_of(pid1, portctl, f"unix:{sock}") == unix_lease
    assert pid1.run("stat", "-c", "%i", sock).stdout == sock_ino, pid1.diagnostics()
    pid1.run(portctl, "get", "tcp:8080", "--", "/bin/true")
    assert tcp_listener_inode(8080, pid1.pid)

    # Poweroff stops brokerd cleanly and the namespaces go away.
    before = len(pid1.log())
    pid1.poweroff()
    log = pid1.log()[before:]
    if ("portbrokerd.service: Deactivated successfully" not in log
            or "portbrokerd.service: Failed with result" in log):
        pytest.fail(f"brokerd did not stop cleanly\n{pid1.diagnostics()}")
    wait_for(lambda: "populated 0" in (pid1.cgroup / "cgroup.events").read_text(), 10,
             "every process of the test to exit")

    # Nothing leaked to the host.
    assert Path("/proc/sys/kernel/core_pattern").read_text() == host_core_pattern
    assert Path("/run/portbroker").exists() == host_run_existed


def worker_of(pid1, main):
    """The pid (in the namespace) of brokerd's worker, the child of main."""
    return pid1.run("cat", f"/proc/{main}/task/{main}/children").stdout.split()[0]


# --- ports survive brokerd itself ------------------------------------------------

PORT = 8080


class NsProc:
    """A process started in the namespaces of pid1 by nsenter (-a: all of
    them; -n: the network only, the host's files), optionally as uid."""

    def __init__(self, pid1, argv, name, uid=None, ns="-a"):
        self.pid1, self.name = pid1, name
        ids = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups"] if uid else []
        self.out = open(pid1.tmp / f"{name}.out", "w+b")
        self.proc = subprocess.Popen(["nsenter", "-t", str(pid1.pid), ns, "--", *ids, *map(str, argv)],
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT)

    def result(self, timeout):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.name}: no exit in {timeout}s\n{self.pid1.diagnostics()}")
        self.out.seek(0)
        text = self.out.read().decode(errors="replace")
        assert rc == 0, f"{self.name} exited {rc}: {text}"
        return json.loads(text.strip().splitlines()[-1])


class NsServer(NsProc):
    """`portctl get tcp:PORT -- pb-testserver` as uid, inside the namespaces."""
    count = 0

    def __init__(self, pid1, uid):
        NsServer.count += 1
        self.ready_file = f"/tmp/server-{NsServer.count}.pid"
        super().__init__(pid1, [PORTCTL, "get", f"tcp:{PORT}", "--", f"{NS_TESTDIR}/pb-testserver",
                                "--ready-file", self.ready_file], f"server-{NsServer.count}", uid=uid)

    def wait_ready(self):
        path = Path(f"/proc/{self.pid1.pid}/root{self.ready_file}")

        def ready():
            if self.proc.poll() is not None:
                self.out.seek(0)
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.out.read()!r}")
            try:
                return int(path.read_text())
            except (OSError, ValueError):
                return None
        self.ns_pid = wait_for(ready, 20, f"{self.name} to serve")

    def kill9(self):
        self.pid1.run("kill", "-KILL", self.ns_pid)
        self.proc.wait(10)


class Survival:
    """A server of uid U1 on PORT under a bounded loopback load, and uid U2
    trying to bind PORT all the while; .check() asserts nobody was refused
    or timed out, U2 never bound it, and it is the same listening socket."""

    def __init__(self, pid1, rate, duration, timeout_ms=5000):
        self.pid1 = pid1
        pid1.wait_state("portbrokerd.socket", "active")
        pid1.run(PORTCTL, "policy", "add", f"tcp:{PORT}", "--user", U1)
        self.server = NsServer(pid1, U1)
        self.server.wait_ready()
        self.inode = tcp_listener_inode(PORT, pid1.pid)
        self.duration, self.timeout_ms = duration, timeout_ms
        self.t0 = time.monotonic()
        self.load = NsProc(pid1, [BUILD / "pb-load", "--port", PORT, "--rate", rate, "--duration", duration,
                                  "--timeout-ms", timeout_ms, "--json"], "pb-load", ns="-n")
        self.binder = NsProc(pid1, ["/usr/bin/python3", "-c", BINDER, PORT, duration], "binder", uid=U2, ns="-n")
        self.cycles = 0

    def at(self, seconds):
        """Sleeps until `seconds` into the load: a schedule, not a wait for a condition."""
        time.sleep(max(0.0, self.t0 + seconds - time.monotonic()))

    def restart_server(self):
        self.server = NsServer(self.pid1, U1)
        self.server.wait_ready()
        self.cycles += 1
        assert tcp_listener_inode(PORT, self.pid1.pid) == self.inode, "the listening socket was replaced"

    def wait_restarted(self, n, timeout=20):
        wait_for(lambda: self.pid1.prop("portbrokerd.service", "NRestarts") == str(n), timeout,
                 f"brokerd's restart #{n}", interval=0.05)
        self.pid1.wait_state("portbrokerd.service", "active")

    def check(self):
        res = self.load.result(self.duration + self.timeout_ms / 1000 + 30)
        bind = self.binder.result(self.duration + 30)
        self.server.kill9()
        print(f"\nload: {res['attempted']} attempted, {res['ok']} ok, {res['refused']} refused, "
              f"{res['timed_out']} timed out, {res['lost']} lost in flight; {self.cycles} server restarts; "
              f"uid {U2}: {bind['wins']} of {bind['tries']} binds")
        assert res["refused"] == 0 and res["timed_out"] == 0 and res["errors"] == 0, res
        assert res["lost"] <= self.cycles, res          # accepted by a server as it was killed
        assert res["ok"] > 0
        assert bind["tries"] > 0 and bind["wins"] == 0, bind
        assert tcp_listener_inode(PORT, self.pid1.pid) == self.inode
        return res


def test_ports_survive_brokerd_killed_restarted_and_reloaded(pid1):
    """systemctl kill -s KILL (three times), systemctl restart and systemctl
    reload, the server killed each time too: the fd store (and the re-exec)
    keep the socket, so clients queue instead of being refused, and no
    other uid can bind the port."""
    s = Survival(pid1, rate=300, duration=17)
    for k in (1, 2, 3):
        s.at(3 * k - 1)
        pid1.systemctl("kill", "-s", "KILL", "portbrokerd.service", check=True)
        s.server.kill9()
        s.wait_restarted(k)
        s.restart_server()
    s.at(11)
    s.server.kill9()
    pid1.systemctl("restart", "portbrokerd.service", check=True)
    s.restart_server()
    s.at(14)
    main, restarts = (pid1.prop("portbrokerd.service", p) for p in ("MainPID", "NRestarts"))
    s.server.kill9()
    pid1.systemctl("reload", "portbrokerd.service", check=True)
    assert pid1.prop("portbrokerd.service", "MainPID") == main
    assert pid1.prop("portbrokerd.service", "NRestarts") == restarts
    assert "re-executed: 1 lease sockets" in pid1.log(), pid1.diagnostics()
    s.restart_server()
    s.check()
    assert pid1.log().count("its socket was kept while brokerd was away") == 5, pid1.diagnostics()


def test_ports_survive_a_hung_brokerd_killed_by_the_watchdog(pid1):
    """A brokerd that stops answering (SIGSTOP) is killed by the watchdog
    and restarted with its sockets; the server, killed meanwhile, comes back
    to the same socket and its queued clients."""
    watchdog = int(unit_settings(installed_unit(pid1.installed, "portbrokerd.service"))[
        ("Service", "WatchdogSec")][0].rstrip("s"))
    s = Survival(pid1, rate=150, duration=watchdog + 10, timeout_ms=(watchdog + 8) * 1000)
    s.at(1)
    main = pid1.prop("portbrokerd.service", "MainPID")
    pid1.run("kill", "-STOP", main)
    s.server.kill9()
    s.wait_restarted(1, timeout=watchdog + 15)
    assert "portbrokerd.service: Watchdog timeout" in pid1.log(), pid1.diagnostics()
    s.restart_server()
    s.check()


# Run inside the namespaces (sqlite3 resolves /proc/PID/root by itself).
READ_BLOB = r"""
import sqlite3, sys
db = sqlite3.connect("/var/lib/portbroker/portbroker.db", timeout=10)
print(db.execute("SELECT endpoint FROM leases WHERE id = ?", (int(sys.argv[1]),)).fetchone()[0].hex())
"""
EDIT_DB = r"""
import sqlite3, sys
gone, moved, blob = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
db = sqlite3.connect("/var/lib/portbroker/portbroker.db", timeout=10)
with db:
    db.execute("DELETE FROM leases WHERE id = ?", (gone,))
    db.execute("UPDATE leases SET endpoint = ?, endpoint_text = 'tcp:[::]:8082' WHERE id = ?", (blob, moved))
"""


def test_fd_store_is_reconciled_with_the_database(pid1):
    """At start, a stored socket whose lease is gone is closed and leaves the
    store; one that is not the socket its lease names is never handed out
    (closed, dropped, the lease bound anew); a released lease's socket leaves
    the store. The database is edited behind brokerd's back to get there."""
    import sqlite3

    pid1.wait_state("portbrokerd.socket", "active")
    pid1.run(PORTCTL, "policy", "add", "tcp:8080-8082", "--user", U1)
    ids = {}
    for port in (8080, 8081, 8082):
        pid1.run("setpriv", "--reuid", U1, "--regid", U1, "--clear-groups", PORTCTL, "get", f"tcp:{port}", "--",
                 "/bin/true")
        ids[port] = lease_of(pid1, PORTCTL, f"tcp:{port}")[0]
    blob_8082 = pid1.run("/usr/bin/python3", "-c", READ_BLOB, ids[8082]).stdout.strip()
    pid1.run("setpriv", "--reuid", U1, "--regid", U1, "--clear-groups", PORTCTL, "release", "tcp:8082")
    # Lease 8081 vanishes; lease 8080 now names 8082.
    pid1.run("/usr/bin/python3", "-c", EDIT_DB, ids[8081], ids[8080], blob_8082)

    def crash(n):
        before = len(pid1.log())
        pid1.systemctl("kill", "-s", "KILL", "portbrokerd.service", check=True)
        wait_for(lambda: pid1.prop("portbrokerd.service", "NRestarts") == str(n), 20, f"restart #{n}")
        pid1.wait_state("portbrokerd.service", "active")
        return pid1.log()[before:]

    log = crash(1)
    assert f'closing the passed socket "lease-{ids[8081]}": no such lease' in log, log
    assert f"lease {ids[8080]}: the socket passed at start is not one for tcp:[::]:8082" in log, log
    assert f'"lease-{ids[8082]}"' not in log, log         # released: it had left the store
    inode_8082 = tcp_listener_inode(8082, pid1.pid)
    assert not tcp_listener_inode(8080, pid1.pid) and not tcp_listener_inode(8081, pid1.pid) and inode_8082

    # What was closed left the store; lease 1's new socket is in it.
    log = crash(2)
    assert "no such lease" not in log and "is not one for" not in log, log
    assert f"lease {ids[8080]}: its socket was kept" in log, log
    assert tcp_listener_inode(8082, pid1.pid) == inode_8082


# --- unit rules: the unit systemd put a process in, not a name its user chose ---

# A service of uid U1 that gets PORT from brokerd and serves it, ready
# (READY=1) once it does; as an instance of a template, the same.
WEB_UNIT = f"""[Unit]
After=portbrokerd.socket

[Service]
Type=notify
User={U1}
Group={U1}
ExecStart={PORTCTL} get tcp:{PORT} -- {NS_TESTDIR}/pb-testserver --notify
"""
DENIED = f"permission denied: no rule lets uid {U1}"

# sh MOVE_AND_RUN CGROUP ARGV...: moves itself into the sub-cgroup CGROUP of
# its own (delegated) cgroup, made if need be, says where it is now, and
# execs ARGV.
MOVE_AND_RUN = r"""
cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/$1; shift
mkdir -p "$cg" && echo $$ > "$cg/cgroup.procs" && grep ^0:: /proc/self/cgroup && exec "$@"
"""


def run_in_service(pid1, unit, *argv, settings=""):
    """argv as uid U1, the command of the oneshot service `unit` (its unit
    file written anew); returns (exit status, stdout, stderr) once it ended."""
    out = f"{NS_TESTDIR}/{unit}"
    pid1.add_unit(unit, f"[Service]\nType=oneshot\nUser={U1}\nGroup={U1}\n{settings}"
                  f"StandardOutput=truncate:{out}.out\nStandardError=truncate:{out}.err\n"
                  f"ExecStart={' '.join(map(str, argv))}\n")
    pid1.systemctl("start", unit)                       # a oneshot: returns once it has exited
    return (int(pid1.prop(unit, "ExecMainStatus")),
            *(Path(f"/proc/{pid1.pid}/root{out}.{s}").read_text() for s in ("out", "err")))


def serves(pid1, port):
    """What a TCP connection to port inside the namespaces reads: "ok PID\\n" from pb-testserver."""
    return pid1.run("/bin/bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port} && cat <&3").stdout


def test_a_unit_rule_lets_that_unit_alone_get_the_port(pid1):
    """A rule for web-test.service lets that unit's service, run from its
    unit file as uid U1, get PORT and serve it. U1 anywhere else is denied,
    the lease it owns notwithstanding: from a shell outside any unit
    (nsenter, setpriv), from another service, and from a service with a delegated cgroup (Delegate=yes) in
    which it made sub-cgroups named like the unit (web-test.service,
    system.slice/web-test.service) and moved in: brokerd trusts the cgroup
    path systemd made (/system.slice/web-test.service), never a name."""
    pid1.wait_state("portbrokerd.socket", "active")
    pid1.run(PORTCTL, "policy", "add", f"tcp:{PORT}", "--unit", "web-test.service")
    pid1.add_unit("web-test.service", WEB_UNIT)
    pid1.systemctl("start", "web-test.service", check=True)      # returns once READY=1 (or failed)
    main = pid1.prop("web-test.service", "MainPID")
    leases = json.loads(pid1.run(PORTCTL, "status", f"tcp:{PORT}", "--json").stdout)
    assert [(l["owner_uid"], l["holders"]) for l in leases] == [(U1, 1)], leases
    assert serves(pid1, PORT) == f"ok {main}\n"

    get = (PORTCTL, "get", f"tcp:{PORT}", "--", "/bin/true")
    r = pid1.run("setpriv", "--reuid", U1, "--regid", U1, "--clear-groups", *get, check=False)
    assert r.returncode == 1 and DENIED in r.stderr, r
    status, _, err = run_in_service(pid1, "other-test.service", *get)
    assert status == 1 and f"{DENIED} in unit other-test.service get" in err, err
    Path(f"/proc/{pid1.pid}/root{NS_TESTDIR}/move-and-run").write_text(MOVE_AND_RUN)
    for fake in ("web-test.service", "system.slice/web-test.service"):
        status, out, err = run_in_service(pid1, "deleg-test.service", "/bin/sh", f"{NS_TESTDIR}/move-and-run",
                                          fake, *get, settings="Delegate=yes\n")
        assert out == f"0::/system.slice/deleg-test.service/{fake}\n", (out, err)
        assert status == 1 and f"{DENIED} in unit deleg-test.service get" in err, err
    assert serves(pid1, PORT) == f"ok {main}\n"


def test_a_unit_rule_for_a_template_instance_is_for_that_instance_alone(pid1):
    """A rule for web-test@1.service lets that instance of the template
    web-test@.service get PORT; web-test@2.service, the same command as the
    same uid, is denied, and brokerd's log names the unit it saw."""
    pid1.wait_state("portbrokerd.socket", "active")
    pid1.run(PORTCTL, "policy", "add", f"tcp:{PORT}", "--unit", "web-test@1.service")
    pid1.add_unit("web-test@.service", WEB_UNIT)
    pid1.systemctl("start", "web-test@1.service", check=True)
    assert serves(pid1, PORT) == f"ok {pid1.prop('web-test@1.service', 'MainPID')}\n"
    assert pid1.systemctl("start", "web-test@2.service").returncode != 0
    assert pid1.prop("web-test@2.service", "ExecMainStatus") == "1"
    pid = pid1.prop("web-test@2.service", "ExecMainPID")
    assert f"pid={pid}: {DENIED} in unit web-test@2.service get tcp:[::]:{PORT}" in pid1.log(), pid1.diagnostics()


def test_the_policy_directory_under_systemd(pid1):
    """The unit as installed reads the policy directory make install made
    (SYSCONFDIR/portbroker/policy.d): a reservation is made before READY=1,
    whoever asks first; `systemctl reload` applies the files' changes; a
    file with a mistake makes the reload fail and changes nothing, the
    running brokerd serving on."""
    d = Path(f"/proc/{pid1.pid}/root{PREFIX}/etc/portbroker/policy.d")
    assert d.is_dir() and not any(d.iterdir())        # made empty, the admin's to fill
    (d / "50-test.conf").write_text(f"tcp:0.0.0.0:{PORT} user {U1} reserve\n")
    pid1.wait_state("portbrokerd.socket", "active")
    pid1.systemctl("start", "portbrokerd.service", check=True)      # Type=notify: returns at READY=1
    leases = json.loads(pid1.run(PORTCTL, "status", "--json").stdout)
    assert [(l["endpoint"], l["owner_uid"], l["handouts"]) for l in leases] == [(f"tcp:0.0.0.0:{PORT}", U1, 0)]
    main = pid1.prop("portbrokerd.service", "MainPID")

    (d / "50-test.conf").write_text(f"tcp:0.0.0.0:{PORT + 1} user {U1} reserve\n")
    pid1.systemctl("reload", "portbrokerd.service", check=True)
    rules = json.loads(pid1.run(PORTCTL, "policy", "list", "--json").stdout)
    assert [(r["pattern"], r["source"]) for r in rules] == [(f"tcp:0.0.0.0:{PORT + 1}", "50-test.conf")], rules
    leases = json.loads(pid1.run(PORTCTL, "status", "--json").stdout)
    assert sorted(l["endpoint"] for l in leases) == [f"tcp:0.0.0.0:{PORT}", f"tcp:0.0.0.0:{PORT + 1}"]

    (d / "60-typo.conf").write_text(f"tcp:{PORT + 2} usr {U1}\n")
    assert pid1.systemctl("reload", "portbrokerd.service").returncode != 0
    assert pid1.prop("portbrokerd.service", "MainPID") == main
    assert pid1.prop("portbrokerd.service", "ActiveState") == "active"
    assert json.loads(pid1.run(PORTCTL, "policy", "list", "--json").stdout) == rules
    assert "60-typo.conf:1: expected user, group or unit" in pid1.log(), pid1.diagnostics()
