# SPDX-License-Identifier: MIT
"""The Debian packages (debian/), as an admin gets them: built by
dpkg-buildpackage, checked by lintian, installed by dpkg, run, upgraded and
purged. `make check-deb` runs this, as root, once per `make check`.

How it keeps off the machine it runs on:
  * The build runs in a copy of the source tree (the files git tracks or
    would track, as they are in the working tree) in a temporary directory:
    dpkg-buildpackage writes the .deb files beside the tree it builds, so
    never beside the clone.
  * The packages are installed into an overlay of this machine's root: its
    packages satisfy the dependencies, and its dpkg database, /etc and the
    rest are the lower layer, never written. Each command in that root runs
    in a mount and network namespace of its own (unshare) that mounts the
    overlay, with its upper layer in the temporary directory (so what dpkg
    wrote carries over to the next command), a fresh /run (no systemd is
    reached: the maintainer scripts see none running, as in a chroot), /proc
    and /dev, and chroots there. The maintainer scripts run for real:
    systemd-sysusers creates user portbroker (removed from the overlay
    first, where this machine has it), deb-systemd-helper enables the socket.
"""

import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("portbroker", "libportbroker0", "libportbroker-dev")

# Mounts the overlay root in $1 (see Root) and runs the rest of the arguments
# chrooted in it.
IN_ROOT = r"""set -e
base=$1; shift
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
mount -t tmpfs -o mode=0755 tmpfs "$base/root/run"
mount -t proc proc "$base/root/proc"
mount --rbind /dev "$base/root/dev"
ip link set lo up
exec chroot "$base/root" "$@"
"""


def run(cmd, timeout=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def makefile_version():
    return re.search(r"^VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)


@pytest.fixture(scope="module")
def multiarch():
    r = run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def beside_clone():
    """Package files in the clone's parent directory: the build writes none."""
    return set(REPO.parent.glob("*portbroker*_*"))


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """dpkg-buildpackage -us -uc -b in a copy of the tree; the directory with
    the .changes and .deb files."""
    if os.geteuid() != 0:
        pytest.skip("the package test installs into a private mount namespace: run it as root")
    for tool in ("dpkg-buildpackage", "lintian", "unshare"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: make check-deps installs what the package test needs")
    before = beside_clone()
    out = tmp_path_factory.mktemp("deb")
    src = out / "portbroker"
    files = run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
    assert files.returncode == 0, f"the package is built from the files git knows: {files.stderr}"
    for name in filter(None, files.stdout.split("\0")):
        f = REPO / name
        if f.is_file() or f.is_symlink():          # not one deleted in the working tree
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, src / name, follow_symlinks=False)
    env = dict(os.environ, DEB_BUILD_OPTIONS=f"nocheck parallel={os.cpu_count() or 1}")
    env.pop("MAKEFLAGS", None)                      # not `make check`'s variables (BUILD=, SANITIZE=)
    env.pop("MFLAGS", None)
    env.pop("MAKELEVEL", None)
    r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env, timeout=300)
    assert r.returncode == 0, f"dpkg-buildpackage failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    assert beside_clone() == before, f"the build wrote beside the clone: {sorted(beside_clone() - before)}"
    return out


def changes(build):
    (c,) = build.glob("portbroker_*.changes")
    return c


def deb(build, package):
    (d,) = build.glob(f"{package}_*.deb")
    return d


def test_version_is_the_makefiles(build):
    assert changes(build).name.split("_")[1] == makefile_version(), \
        "debian/changelog's version is not the Makefile's VERSION: add a changelog entry (dch -v)"


def test_lintian_reports_no_error(build):
    """Warnings and pedantic notes are shown (pytest -s), errors fail."""
    r = run(["lintian", "--fail-on", "error", "--display-info", "--pedantic", "--info", str(changes(build))], timeout=120)
    print(r.stdout)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert not errors and r.returncode == 0, f"lintian (exit status {r.returncode}):\n{r.stdout}{r.stderr}"


def deb_files(path):
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, timeout=60, check=True)
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
        return {m.name.removeprefix("./") for m in t.getmembers()}


def test_each_file_in_its_package(build, multiarch):
    lib = f"usr/lib/{multiarch}"
    want = {
        "portbroker": {"usr/sbin/brokerd", "usr/bin/portctl", f"{lib}/portbroker/libportbroker-preload.so",
                       "usr/share/man/man1/portctl.1.gz", "usr/share/man/man8/brokerd.8.gz",
                       "lib/systemd/system/portbrokerd.service", "lib/systemd/system/portbrokerd.socket",
                       "usr/lib/sysusers.d/portbroker.conf", "usr/share/doc/portbroker/copyright",
                       "usr/share/bash-completion/completions/portctl"},
        "libportbroker0": {f"{lib}/libportbroker.so.0", f"{lib}/libportbroker.so.{makefile_version()}"},
        "libportbroker-dev": {"usr/include/portbroker.h", f"{lib}/libportbroker.a", f"{lib}/libportbroker.so",
                              f"{lib}/pkgconfig/portbroker.pc"},
    }
    for package, files in want.items():
        have = deb_files(deb(build, package))
        assert files <= have, f"{package} lacks {sorted(files - have)}"


class Root:
    """A root to install into: an overlay of this machine's, whose changes
    are kept in base/upper from one command to the next."""

    def __init__(self, base):
        self.base = base
        for d in ("upper", "work", "root"):
            (base / d).mkdir()

    def run(self, *cmd, check=True, timeout=120):
        """Runs cmd chrooted in the root, in namespaces of its own."""
        r = run(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", IN_ROOT, "sh",
                 str(self.base), *cmd], timeout=timeout)
        if check:
            assert r.returncode == 0, f"{' '.join(cmd)}: exit status {r.returncode}\n{r.stdout}{r.stderr}"
        return r

    def installed(self, path):
        """A file the packages installed, seen from outside: new files are
        in the upper layer."""
        return self.base / "upper" / path.lstrip("/")

    def add(self, src, dest):
        """Copies src to dest in the root (in a directory of the upper
        layer's own: one the lower has would lose its mode)."""
        (self.base / "upper" / dest.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, self.base / "upper" / dest.lstrip("/"))


@pytest.fixture(scope="module")
def root(build, tmp_path_factory):
    """The three packages installed by dpkg -i into a Root, their
    maintainer scripts run: what an admin's machine has after installing."""
    root = Root(tmp_path_factory.mktemp("root"))
    # A clean slate where this machine has any of it: no package, no user.
    root.run("dpkg", "--purge", *PACKAGES)
    root.run("sh", "-c", "if getent passwd portbroker >/dev/null; then userdel portbroker; fi;"
             "if getent group portbroker >/dev/null; then groupdel portbroker; fi")
    # man-db's trigger would index every manual page of the machine.
    root.run("rm", "-f", "/var/lib/man-db/auto-update")
    for package in PACKAGES:
        root.add(deb(build, package), f"/portbroker-debs/{deb(build, package).name}")
    root.run("sh", "-c", "dpkg -i /portbroker-debs/*.deb")
    return root


def test_installed_tree(root, multiarch):
    lib = f"/usr/lib/{multiarch}"
    version = makefile_version()
    files = ["/usr/sbin/brokerd", "/usr/bin/portctl", f"{lib}/portbroker/libportbroker-preload.so",
             f"{lib}/libportbroker.so.{version}", f"{lib}/libportbroker.a", "/usr/include/portbroker.h",
             "/usr/share/man/man1/portctl.1.gz", "/usr/share/man/man8/brokerd.8.gz",
             "/lib/systemd/system/portbrokerd.service", "/lib/systemd/system/portbrokerd.socket",
             "/usr/lib/sysusers.d/portbroker.conf", "/usr/share/bash-completion/completions/portctl"]
    r = root.run("sh", "-c", 'for f; do [ -f "$f" ] || echo "missing: $f"; done', "sh", *files)
    assert not r.stdout, r.stdout
    # The SONAME's link (libportbroker0), the link for -lportbroker (-dev).
    assert root.run("readlink", f"{lib}/libportbroker.so.0").stdout.strip() == f"libportbroker.so.{version}"
    assert root.run("readlink", f"{lib}/libportbroker.so").stdout.strip() == "libportbroker.so.0"
    pc = root.run("pkg-config", "--variable=libdir", "portbroker")
    assert pc.stdout.strip() == lib
    svc = root.run("cat", "/lib/systemd/system/portbrokerd.service").stdout
    assert "ExecStart=/usr/sbin/brokerd " in svc and "ExecReload=/usr/bin/portctl admin reexec" in svc
    r = root.run("systemd-analyze", "verify", "portbrokerd.socket", "portbrokerd.service", check=False)
    assert r.returncode == 0 and "portbrokerd" not in r.stdout + r.stderr, r.stdout + r.stderr
    # brokerd's settings: a conffile at the path the installed brokerd reads.
    assert b"\0/etc/portbroker/brokerd.conf\0" in root.installed("/usr/sbin/brokerd").read_bytes()
    conffiles = root.run("cat", "/var/lib/dpkg/info/portbroker.conffiles").stdout.split()
    assert "/etc/portbroker/brokerd.conf" in conffiles, conffiles
    assert "unix-dir = /run/portbroker-sockets" in root.run("cat", "/etc/portbroker/brokerd.conf").stdout


def test_postinst_made_the_user_and_enabled_the_socket(root):
    user = root.run("getent", "passwd", "portbroker").stdout.split(":")
    assert user[5] == "/var/lib/portbroker" and int(user[2]) < 1000, user
    # dh_installsystemd's snippet: the socket is enabled (the service starts
    # on the first request, so it is not).
    assert root.run("systemctl", "is-enabled", "portbrokerd.socket", check=False).stdout.strip() == "enabled"
    assert root.run("systemctl", "is-enabled", "portbrokerd.service", check=False).stdout.strip() == "disabled"
    postinst = root.run("cat", "/var/lib/dpkg/info/portbroker.postinst").stdout
    assert "deb-systemd-helper enable 'portbrokerd.socket'" in postinst
    assert "systemd-sysusers" in postinst


def test_installed_portctl_runs_servers_with_the_installed_shim(root, multiarch):
    """portctl's compiled-in path is where the package put the shim: the
    installed brokerd serves, and `portctl run` execs a command with it."""
    shim = f"/usr/lib/{multiarch}/portbroker/libportbroker-preload.so"
    assert b"\0" + shim.encode() + b"\0" in root.installed("/usr/bin/portctl").read_bytes()
    smoke = r"""
brokerd --foreground --no-guard 2>/run/brokerd.log &
pid=$!
i=0
until portctl status >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then cat /run/brokerd.log >&2; exit 1; fi
	sleep 0.1
done
portctl run -- sh -c 'echo "LD_PRELOAD=$LD_PRELOAD"'
echo "worker=$(ps -o user= --ppid $pid)"
kill $pid
wait $pid || true
"""
    r = root.run("sh", "-c", smoke, timeout=60)
    assert f"LD_PRELOAD={shim}" in r.stdout.splitlines(), r.stdout + r.stderr
    # Started as root, brokerd runs its worker as the user postinst made.
    assert "worker=portbroker" in r.stdout.splitlines(), r.stdout + r.stderr


def test_a_client_builds_with_the_dev_package(root):
    client = ('#include <portbroker.h>\n'
              'int main(void) { pb_error e; return pb_get("x", 0, &e) == -22 ? 0 : 1; }\n')
    r = root.run("sh", "-c", 'printf "%s" "$1" > /run/client.c && cc /run/client.c $(pkg-config --cflags --libs'
                 ' portbroker) -o /run/client && /run/client', "sh", client)
    assert r.returncode == 0


def test_reinstall_then_purge(root, multiarch):
    """The upgrade path of the maintainer scripts (configure with the old
    version), then a purge: nothing of the package is left, state included."""
    root.run("sh", "-c", "dpkg -i /portbroker-debs/*.deb")
    root.run("sh", "-c", "mkdir -p /var/lib/portbroker && touch /var/lib/portbroker/portbroker.db")
    root.run("dpkg", "--purge", *PACKAGES)
    left = ["/usr/sbin/brokerd", "/usr/bin/portctl", f"/usr/lib/{multiarch}/portbroker",
            f"/usr/lib/{multiarch}/libportbroker.so.0", "/lib/systemd/system/portbrokerd.socket",
            "/etc/systemd/system/sockets.target.wants/portbrokerd.socket", "/var/lib/portbroker",
            "/etc/portbroker/brokerd.conf"]
    r = root.run("sh", "-c", 'for f; do [ ! -e "$f" ] && [ ! -L "$f" ] || echo "left: $f"; done', "sh", *left)
    assert not r.stdout, r.stdout
