#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The `make bench` driver: runs brokerd and the C measuring tools (pb-bench,
pb-load, pb-testserver) and writes bench/results/latest.{json,md} and plots.

Parts (--parts, default all): 1 hand-off latency/throughput vs a raw
SCM_RIGHTS floor; 2 restart under load (broker, naive SO_REUSEADDR,
s6-fdholderd, systemd-socket-activate); 3 scale (1..10,000 leases, 1,000
concurrent connections); 4 fsync counts on the hot path (strace -c);
5 breakdown of a repeat get beyond the floor: system calls per get by name
(strace -c, server and client side), and CPU time per phase (connection
set-up and teardown vs request) of brokerd and the raw floor server;
6 the bind guard's cost: an unrelated process's bind() in the guarded
cgroup against one beside it, and a repeat get from a guarded brokerd
against one run with --no-guard.
Every brokerd guards from a bpffs and a cgroup of the bench's own (run.py
and all it starts live in that cgroup), never the machine's root cgroup.
Must run as root inside a fresh network namespace (the Makefile uses
`unshare -n`); each restart mode gets a namespace of its own as well.
Nothing sleeps blindly: readiness is READY=1 (brokerd) or "ready PID".
"""

import argparse
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
_libc = ctypes.CDLL(None, use_errno=True)


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def env(**extra):
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    e.update({k: str(v) for k, v in extra.items()})
    return e


def new_netns():
    if _libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)


class GuardPlace:
    """A bpffs (in a mount namespace of run.py's own) and two sibling cgroup
    v2 directories: "guarded", which run.py moves into (so everything it
    starts is under the guard) and where every brokerd attaches its guard,
    and "plain" beside it, the floor of part 6."""

    def __init__(self, wd):
        self.ok, self.why, self.n = False, "", 0
        root = next((Path(l.split(" - ")[0].split()[4]) for l in open("/proc/self/mountinfo")
                     if " - cgroup2 " in l and l.split()[3] == "/"), None)
        if root is None:
            self.why = "no cgroup v2 hierarchy"
            return
        if _libc.unshare(CLONE_NEWNS) != 0:
            self.why = f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}"
            return
        subprocess.run(["mount", "--make-rprivate", "/"], check=True, timeout=10)
        self.bpffs = wd / "bpffs"
        self.bpffs.mkdir()
        if subprocess.run(["mount", "-t", "bpf", "-o", "mode=0700", "bpf", str(self.bpffs)], timeout=10).returncode:
            self.why = "cannot mount a bpffs"
            return
        own = next(l[3:] for l in open("/proc/self/cgroup") if l.startswith("0::")).strip().lstrip("/")
        self.home = root / own
        self.cgroups = {k: root / f"pb-bench-{os.getpid()}-{k}" for k in ("guarded", "plain")}
        for d in self.cgroups.values():
            d.mkdir()
        (self.cgroups["guarded"] / "cgroup.procs").write_text(str(os.getpid()))
        self.ok = True

    def args(self, args):
        """brokerd's guard options: a pin directory of its own in our cgroup."""
        if any(str(x).startswith(("--guard", "--no-guard")) for x in args):
            return []
        if not self.ok:
            return ["--no-guard"]
        self.n += 1
        return ["--guard-dir", str(self.bpffs / f"b{self.n}"), "--guard-cgroup", str(self.cgroups["guarded"])]

    def argv_in(self, cgroup, argv):
        """argv run from cgroup (guarded or plain)."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroups[cgroup] / "cgroup.procs"), *map(str, argv)]

    def close(self):
        if not self.ok:
            return
        (self.home / "cgroup.procs").write_text(str(os.getpid()))
        for d in self.cgroups.values():
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)  # the last processes of the bench are still exiting


GUARD = None                            # the GuardPlace of this run (main)


def med(xs):
    return round(statistics.median(xs), 2) if xs else None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


class Proc:
    """A child whose stdout we scan for "ready PID"."""

    def __init__(self, argv, workdir, name, **kw):
        self.name = name
        self.err = open(workdir / f"{name}.stderr", "ab")
        self.p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=self.err, env=kw.get("environ", env()), close_fds=True,
                                  pass_fds=kw.get("pass_fds", ()))
        self.pid = self.p.pid
        self.buf = b""
        os.set_blocking(self.p.stdout.fileno(), False)

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while b"ready " not in self.buf:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout}s")
            r, _, _ = select.select([self.p.stdout], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(self.p.stdout.fileno(), 4096)
                except BlockingIOError:
                    continue
                if not chunk and self.p.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.p.returncode}) before ready")
                self.buf += chunk
        return time.monotonic()

    def kill9(self):
        t = time.monotonic()
        self.p.kill()
        self.p.wait(timeout=10)
        return t

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)
        self.p.stdout.close()
        self.err.close()


class Broker:
    brokerd = None                      # --brokerd: another binary (say, a build from before a change)

    def __init__(self, build, d, args=()):
        self.build, self.dir = build, d
        self.args = [str(a) for a in [*(GUARD.args(args) if GUARD else []), *args]]
        self.control = str(d / "control.sock")
        self.db = str(d / "db" / "portbroker.db")       # the worker's directory, not the control socket's
        self.notify = str(d / "notify.sock")
        self.proc = None

    def start(self, timeout=30.0):
        """Starts brokerd; returns seconds from spawn to READY=1."""
        if os.path.exists(self.notify):
            os.unlink(self.notify)
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(self.notify)
        try:
            with open(self.dir / "brokerd.log", "ab") as lf:
                t0 = time.monotonic()
                self.proc = subprocess.Popen([self.brokerd or f"{self.build}/brokerd", "--foreground", "--control", self.control,
                                              "--db", self.db, *self.args], stdin=subprocess.DEVNULL,
                                             stdout=lf, stderr=lf, env=env(NOTIFY_SOCKET=self.notify))
            got = b""
            while b"READY=1" not in got.split(b"\n"):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"brokerd exited {self.proc.returncode}: see {self.dir}/brokerd.log")
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError("brokerd: no READY=1")
                r, _, _ = select.select([ns], [], [], 0.1)
                if r:
                    got += b"\n" + ns.recv(4096)
            return time.monotonic() - t0
        finally:
            ns.close()

    @property
    def pid(self):
        return self.proc.pid

    def pids(self):
        """brokerd's processes: the monitor and its worker (brokerd --worker)."""
        out = [self.proc.pid]
        for c in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split():
            try:
                if b"--worker" in Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0"):
                    out.append(int(c))
            except OSError:
                pass
        return out

    def rss_kib(self):
        """Resident memory of the monitor and the worker together."""
        return sum(rss_kib(p) or 0 for p in self.pids())

    def stop(self):
        """Stops brokerd. Its bind guard stays (until the bench's cgroup
        goes): it keeps its leases from everyone, the next part's brokerd
        too, so each part leases ports of its own."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def portctl(self, *args):
        return subprocess.run([f"{self.build}/portctl", "--socket", self.control, *map(str, args)],
                              capture_output=True, text=True, timeout=60, env=env(), check=True).stdout


def bench(build, *args, timeout=600, cpus=None, cgroup=None):
    """Runs pb-bench (on the given CPUs only, when cpus is a set; from
    GUARD's cgroup, when named) and returns its JSON line."""
    pin = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    argv = [*pin, f"{build}/pb-bench", *map(str, args)]
    cp = subprocess.run(GUARD.argv_in(cgroup, argv) if cgroup else argv, capture_output=True, text=True,
                        timeout=timeout, env=env())
    if cp.returncode != 0:
        raise RuntimeError(f"pb-bench {' '.join(map(str, args))} failed: {cp.stderr.strip()[-500:]}")
    return json.loads(cp.stdout.strip().splitlines()[-1])


# --- part 1: hand-off -------------------------------------------------------


def handoff_servers(a, wd):
    """brokerd and the raw floor server, both ready; the lease tcp:127.0.0.1:9000 is not created yet."""
    b = Broker(a.build, wd / "p1", ["--max-leases-per-user", 2000, "--max-leases", 2000])
    b.dir.mkdir()
    b.start()
    try:
        raw = Proc([f"{a.build}/pb-bench", "raw-server", wd / "raw.sock", 9001], wd, "raw-server")
        raw.wait_ready()
    except BaseException:
        b.stop()
        raise
    return b, raw


def handoff_cpus(a, b, raw):
    """With --pin (the default) and two CPUs or more: both servers on CPU 0,
    the clients on CPU 1, so that every run has the same (cross-CPU)
    placement instead of whatever the scheduler picked; it is the larger
    part of the run-to-run noise. Returns the clients' CPUs, or None."""
    cpus = sorted(os.sched_getaffinity(0))
    if not a.pin or len(cpus) < 2:
        return None
    for pid in (*b.pids(), raw.p.pid):
        os.sched_setaffinity(pid, {cpus[0]})
    return {cpus[1]}


def part_handoff(a, wd, b, raw):
    ep = "tcp:127.0.0.1:9000"
    runs = []
    clients = handoff_cpus(a, b, raw)
    for r in range(a.runs):
        row = {}
        for procs in (1, 2):
            rr = bench(a.build, "get", "--mode", "raw", "--socket", wd / "raw.sock", "--count", a.gets,
                       "--procs", procs, cpus=clients)
            lib = bench(a.build, "get", "--mode", "lib", "--socket", b.control, "--endpoint", ep,
                        "--count", a.gets, "--procs", procs, cpus=clients)
            row[f"raw_{procs}"], row[f"lib_{procs}"] = rr, lib
        runs.append(row)
        log(f"hand-off run {r + 1}/{a.runs}: lib p50 {row['lib_1']['p50_us']} us, raw {row['raw_1']['p50_us']} us")
    create = bench(a.build, "create", "--socket", b.control, "--first-port", 30000, "--count", a.creates)
    out = {"runs": a.runs, "gets_per_run_per_proc": a.gets, "first_get": create,
           "pinned": f"servers on CPU {min(os.sched_getaffinity(b.proc.pid))}, clients on CPU {min(clients)}"
           if clients else "no"}
    for procs in (1, 2):
        for kind in ("raw", "lib"):
            k = f"{kind}_{procs}"
            out[k] = {m: med([x[k][m] for x in runs]) for m in ("p50_us", "p99_us", "per_s")}
        out[f"ratio_p50_{procs}"] = med([x[f"lib_{procs}"]["p50_us"] / x[f"raw_{procs}"]["p50_us"] for x in runs])
        out[f"ratio_p99_{procs}"] = med([x[f"lib_{procs}"]["p99_us"] / x[f"raw_{procs}"]["p99_us"] for x in runs])
        out[f"ratio_tput_{procs}"] = med([x[f"lib_{procs}"]["per_s"] / x[f"raw_{procs}"]["per_s"] for x in runs])
    out["per_run"] = runs
    return out


# --- part 6: the bind guard's cost ----------------------------------------------


def part_guard(a, wd):
    """An unrelated bind() from the guarded cgroup (the guard's programs
    run, and miss) against the same from the plain one, while a guarded
    brokerd holds a.guard_leases leases; and repeat gets from that brokerd
    against one with --no-guard. Alternated within each run."""
    if not GUARD or not GUARD.ok:
        return {"skipped": GUARD.why if GUARD else "no guard place"}
    most = max(2000, a.guard_leases + 1)
    g = Broker(a.build, wd / "p6-guarded", ["--max-leases-per-user", most, "--max-leases", most])
    n = Broker(a.build, wd / "p6-unguarded", ["--no-guard"])
    for b in (g, n):
        b.dir.mkdir()
        b.start()
    try:
        bench(a.build, "create", "--socket", g.control, "--first-port", 40000, "--count", a.guard_leases)
        cpus = sorted(os.sched_getaffinity(0))
        clients = None
        if a.pin and len(cpus) >= 2:
            for b in (g, n):
                for pid in b.pids():
                    os.sched_setaffinity(pid, {cpus[0]})
            clients = {cpus[1]}
        runs = []
        for r in range(a.runs):
            row = {}
            for cg in ("plain", "guarded"):
                row[f"bind_{cg}"] = bench(a.build, "binds", 47000, "--count", a.binds, cpus=clients, cgroup=cg)
            for name, b, ep in (("get_unguarded", n, "tcp:127.0.0.1:9003"), ("get_guarded", g, "tcp:127.0.0.1:9002")):
                row[name] = bench(a.build, "get", "--mode", "lib", "--socket", b.control, "--endpoint", ep,
                                  "--count", a.gets, cpus=clients)
            runs.append(row)
            log(f"guard run {r + 1}/{a.runs}: bind {row['bind_guarded']['p50_ns']} ns guarded, "
                f"{row['bind_plain']['p50_ns']} ns plain; get p50 {row['get_guarded']['p50_us']} µs guarded, "
                f"{row['get_unguarded']['p50_us']} µs unguarded")
    finally:
        g.stop()
        n.stop()
    out = {"runs": a.runs, "binds_per_run": a.binds, "gets_per_run": a.gets, "leases": a.guard_leases,
           "guard": next((l.split(": ", 2)[-1] for l in (g.dir / "brokerd.log").read_text().splitlines()
                          if "event=guard" in l), "?")}
    for k in ("bind_plain", "bind_guarded"):
        out[k] = {m: med([x[k][m] for x in runs]) for m in ("p50_ns", "p99_ns")}
    for k in ("get_unguarded", "get_guarded"):
        out[k] = {m: med([x[k][m] for x in runs]) for m in ("p50_us", "p99_us", "per_s")}
    out["ratio_bind_p50"] = med([x["bind_guarded"]["p50_ns"] / x["bind_plain"]["p50_ns"] for x in runs])
    out["ratio_get_p50"] = med([x["get_guarded"]["p50_us"] / x["get_unguarded"]["p50_us"] for x in runs])
    out["per_run"] = runs
    return out


# --- part 4: fsync on the hot path ---------------------------------------------


def strace_calls(path):
    """{syscall: calls} from the summary strace -c wrote to path."""
    counts = {}
    for l in Path(path).read_text().splitlines():
        f = l.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[3].isdigit() and f[-1] != "total":
            counts[f[-1]] = int(f[3])
    return counts


def strace_attached(wd, pid, name, action, trace=None):
    """Runs action() with strace -c -f attached to pid (a list: to each);
    returns {syscall: calls} (all, or those in trace)."""
    pids = pid if isinstance(pid, (list, tuple)) else [pid]
    out = wd / f"strace-{name}.txt"
    st = subprocess.Popen(["strace", "-f", "-c", *(["-e", "trace=" + trace] if trace else []), "-o", str(out),
                           *[x for p in pids for x in ("-p", str(p))]], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # strace says "Process N attached" for each, once it is in place.
    deadline = time.monotonic() + 10
    attached = 0
    while attached < len(pids):
        if time.monotonic() > deadline or st.poll() is not None:
            st.kill()
            raise RuntimeError("strace did not attach")
        attached += "attached" in st.stderr.readline()
    try:
        action()
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(timeout=30)
    return strace_calls(out)


def strace_count(a, wd, pid, name, action):
    """Runs action() with strace -c attached to pid; returns {fsync, fdatasync, pwrite64: calls}."""
    c = strace_attached(wd, pid, name, action, "fsync,fdatasync,pwrite64")
    return {k: c.get(k, 0) for k in ("fsync", "fdatasync", "pwrite64")}


def part_fsync(a, wd, b):
    res = {}
    n = 2000
    res["repeat_get"] = dict(strace_count(a, wd, b.pids(), "repeat", lambda: bench(
        a.build, "get", "--socket", b.control, "--endpoint", "tcp:127.0.0.1:9000", "--count", n)), n=n)
    res["lease_creation"] = dict(strace_count(a, wd, b.pids(), "create", lambda: bench(
        a.build, "create", "--socket", b.control, "--first-port", 31000, "--count", 20)), n=20)

    def rules():
        for i in range(10):
            b.portctl("policy", "add", f"tcp:{32000 + i}", "--user", 4000 + i)
    res["rule_add"] = dict(strace_count(a, wd, b.pids(), "rules", rules), n=10)
    return res


# --- part 5: where a repeat get spends its time beyond the floor ---------------

# Which of brokerd's jobs a system call of a repeat get belongs to (the
# breakdown's second column): the connection, identity, the request, the
# check of the listener before the hand-out, audit, logging, the loop.
SYSCALL_PURPOSE = {
    "accept4": "connection",
    "getsockopt": "identity (SO_PEERCRED, SO_PEERPIDFD); listener check (TCP_INFO: listening, backlog)",
    "readlink": "identity: the peer's user and network namespaces",
    "poll": "identity: the peer is still the pid that was read",
    "recvmsg": "the request; the client's end",
    "ioctl": "the client's end: no message queued behind it (SIOCINQ; the kernel's EOF race)",
    "sendmsg": "the reply and its fd",
    "setsockopt": "listener check: SO_REUSEPORT off, socket filter detached (SO_DETACH_FILTER)",
    "close": "teardown: the connection, the peer's pidfd",
    "epoll_wait": "event loop",
    "epoll_ctl": "event source of a watched connection",
    "timerfd_settime": "timers (idle connections, audit batch)",
    "pwrite64": "audit rows (batched)",
    "pread64": "audit rows (batched): SQLite reading its WAL index and pages",
    "fdatasync": "audit/durable commit",
    "fcntl": "holder watch (dup of a new holder's pidfd)",
    "write": "log line",
}


def cpu_ns(pid):
    """CPU time (all threads) pid (a list: all of them together) has used so
    far: its process CPU clock."""
    if isinstance(pid, (list, tuple)):
        return sum(cpu_ns(p) for p in pid)
    return time.clock_gettime_ns(((~pid) << 3) | 2)


def wait_idle(pid, timeout=30.0):
    """Returns once pid used no CPU for 150 ms: a server may still be working
    through connections its clients queued and left (connect() returns once queued)."""
    deadline = time.monotonic() + timeout
    last, still = cpu_ns(pid), 0
    while still < 3 and time.monotonic() < deadline:
        time.sleep(0.05)                # sampling the CPU clock, bounded by deadline
        now = cpu_ns(pid)
        still = still + 1 if now == last else 0
        last = now


def per_op(counts, n):
    return {k: round(v / n, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v / n >= 0.005}


def client_calls(a, wd, name, args, n):
    """System calls per get of a pb-bench client: strace -f -c of a run of n gets minus one of 1 get."""
    c = {}
    for k in (1, n):
        out = wd / f"strace-client-{name}-{k}.txt"
        cp = subprocess.run(["strace", "-f", "-c", "-o", str(out), f"{a.build}/pb-bench", *map(str, args),
                             "--count", str(k)], capture_output=True, text=True, timeout=600, env=env())
        if cp.returncode != 0:
            raise RuntimeError(f"pb-bench under strace failed: {cp.stderr.strip()[-300:]}")
        c[k] = strace_calls(out)
    return per_op({s: c[n].get(s, 0) - c[1].get(s, 0) for s in c[n]}, n - 1)


def cpu_per_op(pid, n, action):
    """(server CPU µs per op, client CPU µs per op, the client's JSON) for action(), n ops."""
    import resource
    r0, c0 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_ns(pid)
    res = action()
    wait_idle(pid)
    c1, r1 = cpu_ns(pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e6
    return (c1 - c0) / 1000 / n, client / n, res


def part_breakdown(a, wd, b, raw):
    """System calls per get by name and CPU per phase, brokerd against the raw floor server."""
    n = a.breakdown_gets
    ep = "tcp:127.0.0.1:9000"
    raw_sock = wd / "raw.sock"
    lib_get = ["get", "--mode", "lib", "--socket", b.control, "--endpoint", ep]
    raw_get = ["get", "--mode", "raw", "--socket", raw_sock]
    bench(a.build, *lib_get, "--count", 10)                   # the lease exists: every get below repeats
    ops = {
        # name: (server pid, pb-bench arguments, ops per run: warm-up get included where there is one)
        "get": (b.pids(), [*lib_get, "--count", n], n + 1),
        "request": (b.pids(), ["concurrent", "--socket", b.control, "--endpoint", ep, "--conns", 1, "--gets", n], n),
        "raw_get": (raw.pid, [*raw_get, "--count", n], n + 1),
    }
    out = {"n": n, "server_calls": {}, "cpu_us": {}, "client_cpu_us": {}, "p50_us": {}}
    for name, (pid, args, k) in ops.items():
        def run():
            bench(a.build, *args)
            wait_idle(pid)
        out["server_calls"][name] = per_op(strace_attached(wd, pid, f"bd-{name}", run), k)
    out["client_calls"] = {"lib": client_calls(a, wd, "lib", lib_get, n),
                           "raw": client_calls(a, wd, "raw", raw_get, n)}
    runs = {name: [] for name in ops}
    for _ in range(a.runs):
        for name, (pid, args, k) in ops.items():
            runs[name].append(cpu_per_op(pid, k, lambda: bench(a.build, *args)))
    for name, rs in runs.items():
        out["cpu_us"][name] = med([x[0] for x in rs])
        out["client_cpu_us"][name] = med([x[1] for x in rs])
        out["p50_us"][name] = med([x[2]["p50_us"] for x in rs])
    # A connection's own cost (accept, identity, event source, teardown): a get on a new one minus one on an open one.
    sc = out["server_calls"]
    sc["connection"] = {k: round(sc["get"].get(k, 0) - sc["request"].get(k, 0), 3)
                        for k in sc["get"] if abs(sc["get"].get(k, 0) - sc["request"].get(k, 0)) >= 0.005}
    for m in ("cpu_us", "client_cpu_us", "p50_us"):
        out[m]["connection"] = round(out[m]["get"] - out[m]["request"], 2)
    cpu = out["cpu_us"]
    out["cpu_beyond_floor_us"] = round(cpu["get"] - cpu["raw_get"], 2)
    log(f"breakdown: brokerd {sum(out['server_calls']['get'].values()):.1f} system calls and {cpu['get']} µs CPU "
        f"per repeat get; raw floor {sum(out['server_calls']['raw_get'].values()):.1f} and {cpu['raw_get']} µs")
    return out


# --- part 3: scale ----------------------------------------------------------


def part_scale(a, wd):
    # As many leases as the scale needs: each is an fd of brokerd's processes,
    # and the fds its limit leaves beyond --max-leases are the holders it watches.
    most = max(a.scale) + 1
    b = Broker(a.build, wd / "p3", ["--max-leases-per-user", most, "--max-leases", most, "--max-connections", 1200,
                                    "--max-connections-per-user", 1200])
    b.dir.mkdir()
    b.start()
    out = {"levels": []}
    have = 0
    try:
        for n in a.scale:
            if n > have:
                c = bench(a.build, "create", "--socket", b.control, "--first-port", 20000 + have, "--count",
                          n - have)
                log(f"scale: created {n - have} leases, first get p50 {c['p50_us']} us")
                have = n
            s = bench(a.build, "spread", "--socket", b.control, "--first-port", 20000, "--count", n,
                      "--gets", a.gets)
            rss = b.rss_kib()
            b.stop()
            ready = b.start()
            after = bench(a.build, "spread", "--socket", b.control, "--first-port", 20000, "--count", n,
                          "--gets", min(a.gets, 500))
            out["levels"].append({"leases": n, "get_p50_us": s["p50_us"], "get_p99_us": s["p99_us"],
                                  "rss_kib": rss, "start_to_ready_s": round(ready, 4),
                                  "rss_after_restart_kib": b.rss_kib(), "gets_after_restart_failed": after["failed"]})
            log(f"scale {n}: p50 {s['p50_us']} us, RSS {rss} KiB, start {ready:.3f} s")
        c = bench(a.build, "concurrent", "--socket", b.control, "--endpoint", "tcp:127.0.0.1:20000", "--conns",
                  a.conns, "--gets", 20)
        out["concurrent"] = dict(c, conns=a.conns, gets_each=20)
        log(f"scale: {a.conns} concurrent connections: p99 {c['p99_us']} us")
        lv = {x["leases"]: x for x in out["levels"]}
        if 1 in lv and max(lv) > 1:
            top = lv[max(lv)]
            out["ratio_p50_top_vs_1"] = round(top["get_p50_us"] / lv[1]["get_p50_us"], 2)
        return out
    finally:
        b.stop()


# --- part 2: restart under load ----------------------------------------------


def s6_setup(wd):
    """s6-fdholderd on wd/s6.sock with rules letting root store and retrieve anything."""
    rules = wd / "s6-rules"
    (rules / "uid" / "0" / "env").mkdir(parents=True)
    (rules / "uid" / "0" / "allow").write_text("")
    for k in ("S6_FDHOLDER_STORE_REGEX", "S6_FDHOLDER_RETRIEVE_REGEX", "S6_FDHOLDER_LIST"):
        (rules / "uid" / "0" / "env" / k).write_text("^.*\n" if "REGEX" in k else "\n")
    sock = wd / "s6.sock"
    d = Proc(["s6-fdholder-daemon", "-1", "-i", rules, sock], wd, "s6-fdholderd",
             pass_fds=())
    return d, sock


def poke(port, timeout=10.0):
    """Connects once to 127.0.0.1:port as soon as something listens there."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)           # polling for the listener, bounded by deadline


def restart_mode(a, wd, mode):
    new_netns()
    port = 8080
    extra = []
    b = s6 = None
    srv_cmd = [f"{a.build}/pb-testserver", "--delay-ms", a.delay_ms]
    if mode == "broker":
        b = Broker(a.build, wd / "p2-broker")
        b.dir.mkdir()
        b.start()
        start = lambda: Proc([f"{a.build}/portctl", "--socket", b.control, "get", f"tcp:{port}", "--", *srv_cmd],
                             wd, "srv-broker")
    elif mode == "naive":
        start = lambda: Proc([*srv_cmd, "--bind", port], wd, "srv-naive")
    elif mode == "systemd-socket-activate":
        start = lambda: Proc(["systemd-socket-activate", "-l", f"[::]:{port}", *srv_cmd], wd, "srv-ssa")
    elif mode == "s6-fdholderd":
        s6d, sock = s6_setup(wd)
        s6 = s6d
        s6d.p.stdout  # -1: s6-fdholder-daemon writes a newline when ready
        deadline = time.monotonic() + 10
        while not s6d.buf:
            if time.monotonic() > deadline or s6d.p.poll() is not None:
                raise RuntimeError("s6-fdholder-daemon did not start")
            r, _, _ = select.select([s6d.p.stdout], [], [], 0.05)
            if r:
                s6d.buf += os.read(s6d.p.stdout.fileno(), 64)
        ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("::", port))
        ls.listen(4096)
        subprocess.run(["s6-fdholder-store", str(sock), f"tcp:{port}"], stdin=ls.fileno(), check=True,
                       timeout=10, env=env())
        ls.close()
        sh = 'exec 3<&0 0</dev/null; LISTEN_FDS=1 LISTEN_PID=$$ exec "$@"'
        start = lambda: Proc(["s6-fdholder-retrieve", sock, f"tcp:{port}", "sh", "-c", sh, "sh", *srv_cmd],
                             wd, "srv-s6")
    else:
        raise ValueError(mode)

    srv = start()
    if mode == "systemd-socket-activate":
        poke(port)                      # it execs the server on the first connection
    srv.wait_ready()
    recs = wd / f"records-{mode}.txt"
    load = Proc([f"{a.build}/pb-load", "--port", port, "--rate", a.rate, "--duration", a.duration,
                 "--timeout-ms", 5000, "--json", "--records", recs], wd, f"load-{mode}")
    t0 = time.monotonic()
    gaps, kill_times = [], []
    try:
        for k in range(1, a.kills + 1):
            at = t0 + k * a.duration / (a.kills + 1)
            time.sleep(max(0.0, at - time.monotonic()))     # a schedule, not a wait for a condition
            tk = srv.kill9()
            srv.stop()
            kill_times.append(round(tk - t0, 3))
            srv = start()
            tr = srv.wait_ready()
            gaps.append(round((tr - tk) * 1000, 1))
        load.p.wait(timeout=a.duration + 30)
        res = json.loads(os.read(load.p.stdout.fileno(), 65536).decode().strip().splitlines()[-1])
    finally:
        srv.stop()
        load.stop()
        if b:
            b.stop()
        if s6:
            s6.stop()
    keys = ("attempted", "ok", "refused", "timed_out", "lost", "errors", "bad_reply", "aborted",
            "error_kinds", "connect_us", "reply_us")
    out = {k: res[k] for k in keys}
    out.update(kills=a.kills, gap_ms_median=med(gaps), gap_ms_max=max(gaps) if gaps else None,
               kill_times_s=kill_times, records=str(recs))
    log(f"restart {mode}: ok {res['ok']} refused {res['refused']} timed_out {res['timed_out']} "
        f"lost {res['lost']} worst connect {res['connect_us']['max']} us")
    return out


def part_restart(a, wd):
    orig = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    out = {"rate": a.rate, "duration_s": a.duration, "kills": a.kills, "server_delay_ms": a.delay_ms}
    try:
        for mode in ("broker", "naive", "s6-fdholderd", "systemd-socket-activate"):
            try:
                out[mode] = restart_mode(a, wd, mode)
            except Exception as e:         # one peer failing must not lose the others
                out[mode] = {"error": str(e)}
                log(f"restart {mode}: FAILED: {e}")
            finally:
                _libc.setns(orig, CLONE_NEWNET)
    finally:
        os.close(orig)
    return out


# --- output -----------------------------------------------------------------


def timeline(recs, bin_ms=100):
    """{bin: [ok, refused, other failures, max total latency ms]} from pb-load --records."""
    bins = {}
    for line in Path(recs).read_text().splitlines():
        t, outcome, _c, total = line.split()
        k = int(float(t) // bin_ms)
        e = bins.setdefault(k, [0, 0, 0, 0.0])
        if outcome == "ok":
            e[0] += 1
            e[3] = max(e[3], int(total) / 1000)
        elif outcome == "refused":
            e[1] += 1
        else:
            e[2] += 1
    return bins


def plot(res, outdir, wd):
    r = res.get("restart", {})
    if "records" not in r.get("broker", {}) or "records" not in r.get("naive", {}):
        return []
    tb, tn = timeline(r["broker"]["records"]), timeline(r["naive"]["records"])
    data = outdir / "restart.dat"
    with open(data, "w") as f:
        f.write("# t_s broker_ok broker_refused broker_failed broker_maxlat_ms naive_ok naive_refused "
                "naive_failed naive_maxlat_ms\n")
        for k in sorted(set(tb) | set(tn)):
            x, y = tb.get(k, [0, 0, 0, 0]), tn.get(k, [0, 0, 0, 0])
            f.write(f"{k / 10:.1f} {x[0]} {x[1]} {x[2]} {x[3]:.1f} {y[0]} {y[1]} {y[2]} {y[3]:.1f}\n")
    png = outdir / "restart.png"
    gp = f"""set terminal pngcairo size 1000,700 font ",10"
set output '{png}'
set multiplot layout 2,1 title "{r['rate']} new connections/s, {r['kills']} SIGKILL restarts, server start-up {r['server_delay_ms']} ms"
set xlabel "time (s)"
set ylabel "connections per 100 ms"
set key inside bottom right opaque
plot '{data}' u 1:7 w impulses lw 3 lc rgb "red" t "naive: refused", \\
     '{data}' u 1:($4+$8) w impulses lw 2 lc rgb "black" t "failed (timeout/lost), both", \\
     '{data}' u 1:2 w lines lc rgb "blue" t "broker: ok", \\
     '{data}' u 1:6 w lines lc rgb "orange" t "naive: ok", \\
     '{data}' u 1:7 w impulses lw 3 lc rgb "red" notitle
set ylabel "worst ok connection (ms)"
plot '{data}' u 1:5 w lines lc rgb "blue" t "broker", '{data}' u 1:9 w lines lc rgb "orange" t "naive"
unset multiplot
"""
    (wd / "restart.gp").write_text(gp)
    cp = subprocess.run(["gnuplot", str(wd / "restart.gp")], capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        log(f"gnuplot failed: {cp.stderr.strip()}")
        return []
    return [png.name]


def verdicts(res):
    v = []

    def add(name, value, target, ok):
        v.append({"target": name, "value": value, "goal": target, "met": bool(ok)})
    h = res.get("handoff")
    if h:
        add("repeat get p50 / raw floor (1 client)", h["ratio_p50_1"], "<= 1.3", h["ratio_p50_1"] <= 1.3)
        add("repeat get p99 / raw floor (1 client)", h["ratio_p99_1"], "<= 3", h["ratio_p99_1"] <= 3)
        add("throughput / raw floor (1 client)", h["ratio_tput_1"], ">= 0.5", h["ratio_tput_1"] >= 0.5)
        add("throughput / raw floor (2 clients)", h["ratio_tput_2"], ">= 0.7", h["ratio_tput_2"] >= 0.7)
    r = res.get("restart", {}).get("broker")
    if r and "ok" in r:
        add("restart via broker: refused + timed out", r["refused"] + r["timed_out"], "0",
            r["refused"] + r["timed_out"] == 0)
        lim = res["restart"]["server_delay_ms"] + 50
        add("restart via broker: worst connect latency (ms)", round(r["connect_us"]["max"] / 1000, 1),
            f"< {lim}", r["connect_us"]["max"] / 1000 < lim)
    s = res.get("scale")
    if s and s.get("levels"):
        top = max(s["levels"], key=lambda x: x["leases"])
        if "ratio_p50_top_vs_1" in s:
            add(f"get p50 at {top['leases']} leases / at 1", s["ratio_p50_top_vs_1"], "<= 1.2",
                s["ratio_p50_top_vs_1"] <= 1.2)
        add(f"brokerd RSS at {top['leases']} leases (MiB)", round(top["rss_kib"] / 1024, 1), "<= 16",
            top["rss_kib"] <= 16 * 1024)
        add(f"start-up with {top['leases']} leases to READY=1 (s)", top["start_to_ready_s"], "<= 1",
            top["start_to_ready_s"] <= 1)
    g = res.get("guard")
    if g and "ratio_bind_p50" in g:
        add("guard: unrelated bind() p50, guarded / plain cgroup", g["ratio_bind_p50"], "<= 1.1 (noise)",
            g["ratio_bind_p50"] <= 1.1)
        add("guard: repeat get p50, guarded / unguarded brokerd", g["ratio_get_p50"], "<= 1.1 (none)",
            g["ratio_get_p50"] <= 1.1)
    f = res.get("fsync")
    if f:
        n = f["repeat_get"]["fsync"] + f["repeat_get"]["fdatasync"]
        add(f"fsync+fdatasync during {f['repeat_get']['n']} repeat gets", n, "0", n == 0)
    return v


def markdown(res, plots):
    L = [f"# portbroker benchmarks ({res['measured']}, kernel {res['kernel']}, {res['cpus']} vCPUs)", ""]
    h = res.get("handoff")
    if h:
        L += ["## Hand-off: repeat get of a held lease (connect, credentials, request, fd, close)", "",
              f"Medians over {h['runs']} runs of {h['gets_per_run_per_proc']} gets per client process; "
              f"ratios taken within each run. CPU placement: {h.get('pinned', 'no')}.", "",
              "| path | clients | p50 µs | p99 µs | gets/s |", "| --- | --- | --- | --- | --- |"]
        for procs in (1, 2):
            for kind, label in (("raw", "raw SCM_RIGHTS floor"), ("lib", "brokerd via pb_get()")):
                x = h[f"{kind}_{procs}"]
                L.append(f"| {label} | {procs} | {x['p50_us']} | {x['p99_us']} | {x['per_s']:.0f} |")
            L.append(f"| ratio broker/raw | {procs} | {h[f'ratio_p50_{procs}']}× | {h[f'ratio_p99_{procs}']}× | "
                     f"{h[f'ratio_tput_{procs}']}× |")
        c = h["first_get"]
        L += ["", f"First get (lease creation: bind + durable commit), {c['n']} leases: "
              f"p50 {c['p50_us']} µs, p99 {c['p99_us']} µs.", ""]
    g = res.get("guard")
    if g and "ratio_bind_p50" in g:
        L += ["## Bind guard: what it costs", "",
              f"Medians over {g['runs']} runs; the guarded brokerd holds {g['leases']} leases "
              f"({g['guard']}).", "",
              "| measurement | without the guard | with the guard | ratio |", "| --- | --- | --- | --- |",
              f"| unrelated socket()+bind()+close(), p50 ns (plain vs guarded cgroup) | {g['bind_plain']['p50_ns']} | "
              f"{g['bind_guarded']['p50_ns']} | {g['ratio_bind_p50']}× |",
              f"| repeat get p50 µs (--no-guard vs guarded brokerd) | {g['get_unguarded']['p50_us']} | "
              f"{g['get_guarded']['p50_us']} | {g['ratio_get_p50']}× |", ""]
    elif g:
        L += ["## Bind guard: what it costs", "", f"Skipped: {g.get('skipped')}.", ""]
    r = res.get("restart")
    if r:
        L += [f"## Restart under load: {r['rate']} connections/s for {r['duration_s']} s, {r['kills']} SIGKILL "
              f"restarts, server start-up {r['server_delay_ms']} ms", "",
              "| holder | attempted | ok | refused | timed out | lost in flight | errors | worst connect ms | "
              "worst reply ms | kill→ready ms (median) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for mode in ("broker", "naive", "s6-fdholderd", "systemd-socket-activate"):
            x = r.get(mode, {})
            if "ok" not in x:
                L.append(f"| {mode} | failed to run: {x.get('error', '?')} | | | | | | | | |")
                continue
            L.append(f"| {mode} | {x['attempted']} | {x['ok']} | {x['refused']} | {x['timed_out']} | {x['lost']} | "
                     f"{x['errors'] + x['bad_reply'] + x['aborted']} | {x['connect_us']['max'] / 1000:.1f} | "
                     f"{x['reply_us']['max'] / 1000:.1f} | {x['gap_ms_median']} |")
        L.append("")
    s = res.get("scale")
    if s:
        L += ["## Scale", "", "| leases | get p50 µs | get p99 µs | brokerd RSS MiB | start to READY=1 s |",
              "| --- | --- | --- | --- | --- |"]
        for x in s["levels"]:
            L.append(f"| {x['leases']} | {x['get_p50_us']} | {x['get_p99_us']} | {x['rss_kib'] / 1024:.1f} | "
                     f"{x['start_to_ready_s']} |")
        c = s.get("concurrent")
        if c:
            L += ["", f"{c['conns']} control connections open at once, {c['gets_each']} gets each "
                  f"(pb_conn_get): p50 {c['p50_us']} µs, p99 {c['p99_us']} µs, {c['per_s']:.0f} gets/s, "
                  f"{c['failed']} failed."]
        L.append("")
    f = res.get("fsync")
    if f:
        L += ["## Syncs (strace -f -c on brokerd)", "", "| operation | n | fsync | fdatasync | pwrite64 |",
              "| --- | --- | --- | --- | --- |"]
        for k, label in (("repeat_get", "repeat get of a held lease"), ("lease_creation", "lease creation"),
                         ("rule_add", "policy add")):
            x = f[k]
            L.append(f"| {label} | {x['n']} | {x['fsync']} | {x['fdatasync']} | {x['pwrite64']} |")
        L.append("")
    d = res.get("breakdown")
    if d:
        sc, cc = d["server_calls"], d["client_calls"]
        L += ["## Where a repeat get spends its time beyond the floor", "",
              f"System calls per get (strace -c -f, {d['n']} gets; fractions are timers and batched audit "
              "writes), the server side against `pb-bench raw-server`, the client side `pb_get()` against "
              "the raw client:", "",
              "| system call | what brokerd uses it for | brokerd | raw server | brokerd − raw | client pb_get() | raw client |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
        names = sorted(set(sc["get"]) | set(sc["raw_get"]) | set(cc["lib"]) | set(cc["raw"]),
                       key=lambda s: (-sc["get"].get(s, 0), -cc["lib"].get(s, 0), s))
        fmt = lambda v: f"{v:.2f}".rstrip("0").rstrip(".") if v else ""
        for s_ in names:
            x, y = sc["get"].get(s_, 0), sc["raw_get"].get(s_, 0)
            L.append(f"| {s_} | {SYSCALL_PURPOSE.get(s_, '') if x else ''} | {fmt(x)} | {fmt(y)} | "
                     f"{fmt(round(x - y, 3)) if x != y else ''} | {fmt(cc['lib'].get(s_, 0))} | {fmt(cc['raw'].get(s_, 0))} |")
        tot = lambda m: round(sum(m.values()), 2)
        L.append(f"| **total** | | **{tot(sc['get'])}** | **{tot(sc['raw_get'])}** | "
                 f"**{round(tot(sc['get']) - tot(sc['raw_get']), 2)}** | **{tot(cc['lib'])}** | **{tot(cc['raw'])}** |")
        cpu, ccpu, p50 = d["cpu_us"], d["client_cpu_us"], d["p50_us"]
        calls = lambda m: ", ".join(f"{k} {fmt(v)}" for k, v in m.items() if v >= 0.05)
        L += ["", "Per phase (medians of runs without strace): server CPU from its process CPU clock, client CPU "
              "from rusage, latency at the client. \"request\" = one get on a connection kept open "
              "(pb_conn_get); \"connection\" = the difference: accept, identity, event source, teardown.", "",
              "| phase | server CPU µs/op | server system calls/op | client CPU µs/op | client p50 µs |",
              "| --- | --- | --- | --- | --- |"]
        for k, label in (("get", "brokerd: repeat get, new connection (pb_get)"),
                         ("request", "brokerd: request on an open connection"),
                         ("connection", "brokerd: connection set-up and teardown (difference)"),
                         ("raw_get", "raw floor: get, new connection")):
            L.append(f"| {label} | {cpu[k]} | {tot(sc[k])}: {calls(sc[k])} | {ccpu[k]} | {p50[k]} |")
        d["server_calls"] = sc
        L += ["", f"brokerd spends {d['cpu_beyond_floor_us']} µs CPU per repeat get beyond the raw server "
              f"({cpu['get']} vs {cpu['raw_get']} µs).", ""]
    L += ["## Targets", "", "| target | value | goal | met |", "| --- | --- | --- | --- |"]
    for v in res["targets"]:
        L.append(f"| {v['target']} | {v['value']} | {v['goal']} | {'yes' if v['met'] else '**no**'} |")
    for p in plots:
        L += ["", f"![{p}]({p})"]
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(HERE.parent / "build"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--binds", type=int, default=20000, help="guard: unrelated binds per run per cgroup")
    ap.add_argument("--guard-leases", type=int, default=1000, help="guard: leases the guarded brokerd holds")
    ap.add_argument("--parts", default="1,2,3,4,5,6",
                    help="comma-separated: 1 hand-off, 2 restart, 3 scale, 4 fsync, 5 breakdown")
    ap.add_argument("--breakdown-gets", type=int, default=2000, help="breakdown: gets per measurement")
    ap.add_argument("--brokerd", help="brokerd binary to measure (default: BUILD/brokerd)")
    ap.add_argument("--runs", type=int, default=5, help="hand-off: repeated runs")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="hand-off: leave CPU placement to the scheduler (default: servers on one CPU, clients on another)")
    ap.add_argument("--gets", type=int, default=5000, help="gets per run per client process")
    ap.add_argument("--creates", type=int, default=500, help="first gets (lease creations) measured")
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--scale", default="1,100,1000,10000")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.gets, a.creates, a.duration, a.kills, a.scale, a.conns = 2, 1000, 50, 4, 3, "1,100", 50
        a.breakdown_gets = 500
        a.binds, a.guard_leases = 5000, 100
    Broker.brokerd = str(Path(a.brokerd).resolve()) if a.brokerd else None
    a.scale = [int(x) for x in a.scale.split(",")]
    a.build = str(Path(a.build).resolve())
    parts = set(a.parts.split(","))
    if os.geteuid() != 0:
        sys.exit("bench: run as root (make bench): network namespaces, brokerd, strace")
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    wd = Path(tempfile.mkdtemp(prefix="pb-bench-"))
    wd.chmod(0o755)
    res = {"measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kernel": os.uname().release,
           "cpus": os.cpu_count(), "args": {k: v for k, v in vars(a).items()}}
    t_start = time.monotonic()
    global GUARD
    GUARD = GuardPlace(wd)
    if not GUARD.ok:
        log(f"no bind guard in this run ({GUARD.why}): brokerd runs with --no-guard, part 6 is skipped")
    try:
        if parts & {"1", "4", "5"}:
            b, raw = handoff_servers(a, wd)
            try:
                if "1" in parts:
                    res["handoff"] = part_handoff(a, wd, b, raw)
                if not shutil.which("strace"):
                    log("strace missing: parts 4 and 5 skipped (apt-get install strace)")
                else:
                    if "4" in parts:
                        res["fsync"] = part_fsync(a, wd, b)
                    if "5" in parts:
                        res["breakdown"] = part_breakdown(a, wd, b, raw)
            finally:
                raw.stop()
                b.stop()
        if "3" in parts:
            res["scale"] = part_scale(a, wd)
        if "2" in parts:
            res["restart"] = part_restart(a, wd)
        if "6" in parts:
            res["guard"] = part_guard(a, wd)
        plots = plot(res, outdir, wd) if shutil.which("gnuplot") else []
        if "2" in parts and not plots:
            log("no plot: gnuplot missing (apt-get install gnuplot-nox) or it failed")
        for x in res.get("restart", {}).values():
            if isinstance(x, dict):
                x.pop("records", None)  # temporary files, gone after the run
        res["targets"] = verdicts(res)
        res["plots"] = plots
        res["elapsed_s"] = round(time.monotonic() - t_start, 1)
        (outdir / "latest.json").write_text(json.dumps(res, indent=2) + "\n")
        (outdir / "latest.md").write_text(markdown(res, plots))
        print((outdir / "latest.md").read_text())
    finally:
        GUARD.close()
        if os.environ.get("PB_BENCH_KEEP"):
            log(f"work dir kept: {wd}")
        else:
            shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    main()
