# SPDX-License-Identifier: MIT
"""brokerd's tuning options seen from clients (--backlog,
--max-leases-per-user, --max-leases, --log-level), portctl's human output,
its options and help, and a clean stop."""

import re
import subprocess

import pytest

from conftest import PORTCTL, Result, check_sanitizers, child_env, fetch

pytestmark = pytest.mark.usefixtures("netns")

U1 = 4242


def test_backlog_option(make_broker):
    b = make_broker("--backlog", "64")
    b.portctl("get", "8080")
    b.portctl("get", "udp:8080")
    st = {x["endpoint"]: x for x in b.portctl("status", json=True).json}
    assert st["tcp:[::]:8080"]["backlog"] == 64, st
    assert st["udp:[::]:8080"]["backlog"] == 0, st


def test_default_backlog_is_somaxconn(broker):
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    broker.portctl("get", "8080")
    assert broker.portctl("status", "8080", json=True).json[0]["backlog"] == somaxconn


def test_log_level(make_broker):
    """At the default level a repeat get writes no log line (the audit trail
    keeps it); --log-level debug logs every grant; a bad level is a usage error."""
    quiet = make_broker()
    for _ in range(3):
        quiet.portctl("get", "8080")
    assert len(quiet.events("grant")) == 1, quiet.log()         # the creating get only
    loud = make_broker("--log-level", "debug")
    for _ in range(3):
        loud.portctl("get", "8081")
    assert len(loud.events("grant")) == 3, loud.log()


def test_max_leases_per_user(make_broker):
    b = make_broker("--max-leases-per-user", "2")
    b.portctl("policy", "add", "tcp:9000-9009", "--user", U1)
    b.portctl("get", "9000", uid=U1)
    b.portctl("get", "9001", uid=U1)
    b.portctl("get", "9001", uid=U1)                        # an existing lease is no new one
    r = b.portctl("get", "9002", uid=U1, check=1)
    assert r.stderr.startswith("portctl: ")
    assert len(b.portctl("status", json=True).json) == 2
    b.portctl("release", "9000", uid=U1)
    b.portctl("get", "9002", uid=U1)


def test_max_leases_in_all(make_broker):
    """Two uids cannot together hold more than --max-leases sockets; a repeat
    get of a held lease still works at the limit, and a release frees a slot."""
    b = make_broker("--max-leases", "2")
    b.portctl("policy", "add", "tcp:9000-9009", "--user", U1)
    b.portctl("policy", "add", "tcp:9000-9009", "--user", U1 + 1)
    b.portctl("get", "9000", uid=U1)
    b.portctl("get", "9001", uid=U1 + 1)
    r = b.portctl("get", "9002", uid=U1, check=1)
    assert "--max-leases" in r.stderr, r.stderr
    b.portctl("get", "9000", uid=U1)
    b.portctl("release", "9001", uid=U1 + 1)
    b.portctl("get", "9002", uid=U1)


def test_human_output(broker, procs):
    rule = broker.portctl("policy", "add", "tcp:8080", "--user", U1)
    assert rule.stdout.strip()
    lst = broker.portctl("policy", "list").stdout
    assert "8080" in lst and str(U1) in lst, lst
    broker.portctl("get", "8080", uid=U1)
    st = broker.portctl("status").stdout
    assert "tcp:[::]:8080" in st and str(U1) in st, st
    srv = broker.serve(procs, "8080", uid=U1)
    pid = srv.wait_ready()
    assert fetch(8080) == f"ok {pid}\n"


def test_clean_stop_and_restart(broker):
    broker.portctl("get", "8080")
    broker.restart()                                        # asserts exit 0 on SIGTERM
    assert broker.events("stop")
    assert len(broker.events("ready")) == 2
    assert broker.portctl("status", "8080", json=True).json[0]["bound"] is True


def test_run_and_upgrade_refuse_json(broker):
    """run and upgrade print nothing of their own to format: --json is a usage error, not ignored
    (said in JSON, as every failure under --json)."""
    for argv, json in ((("run", "--json", "8080", "--", "/bin/true"), False),
                       (("run", "8080", "--", "/bin/true"), True),
                       (("upgrade", "--pid", "2", "--json", "--", "/bin/true"), False)):
        r = broker.portctl(*argv, json=json, check=2)
        assert "--json is not supported" in json_failure(r, 2, "usage"), r
    assert broker.portctl("status", json=True).json == []   # nothing was got


# Each command's own options; every command also takes --socket and --help, and all but run and
# upgrade --json. (test_completion.py completes the same.)
OWN_OPTIONS = {
    "get": {"--nonblock"}, "release": set(), "status": set(),
    "policy add": {"--user", "--group", "--unit", "--socket-group", "--socket-mode", "--reserve", "--owner"},
    "policy remove": set(), "policy list": set(), "policy export": set(), "policy import": {"--replace", "--check"},
    "policy test": {"--user", "--group", "--unit"},
    "admin reexec": set(), "run": set(), "upgrade": {"--pid", "--signal", "--timeout"}, "why": {"--as"},
    "log": {"--since", "--until", "--endpoint", "--uid", "--event", "--limit"},
}
NO_JSON = {"run", "upgrade", "policy export"}


def help_options(text):
    """The options a help text names."""
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))


def test_command_help(broker):
    """`portctl CMD [SUBCOMMAND] --help` and `portctl help CMD [SUBCOMMAND]` print that command's
    usage with its options and no other command's; a group (policy, admin) shows all of its
    subcommands; exit 0."""
    full = broker.portctl("--help").stdout
    groups = {}
    for cmd, own in OWN_OPTIONS.items():
        words = cmd.split()
        groups.setdefault(words[0], []).append(cmd)
        shared = {"--socket", "--help"} | (set() if cmd in NO_JSON else {"--json"})
        for argv in ((*words, "--help"), ("help", *words), (*words, "--json", "-h")):
            out = broker.portctl(*argv).stdout
            assert out.startswith(f"Usage: portctl [OPTIONS] {cmd}") and "\n       portctl" not in out, out
            assert help_options(out) == own | shared, (argv, out)
            assert len(out) < len(full), out
    for group, cmds in groups.items():
        out = broker.portctl(group, "--help").stdout
        usages = re.findall(r"^(?:Usage:|      ) portctl \[OPTIONS\] (.*)$", out, re.M)
        assert [u[:len(c)] for u, c in zip(usages, cmds)] == cmds and len(usages) == len(cmds), out
        want = {"--socket", "--help"} | set().union(*(OWN_OPTIONS[c] for c in cmds))
        assert help_options(out) - {"--json"} == want, out
    assert broker.portctl("get", "--", "cat", "--help", check=False).stdout != full
    assert broker.portctl("frob", "--help").stdout == full


def run_portctl(*args):
    """portctl ARGS as root, without the --socket the harness puts first."""
    argv = [PORTCTL, *map(str, args)]
    cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=child_env(),
                        timeout=20)
    res = Result(argv, cp)
    check_sanitizers(res.stderr, "portctl")
    return res


def test_shared_options_after_the_command(broker):
    """--socket and --json go before or after the command's name (the last --socket wins);
    after `--` they are CMD's."""
    s = broker.control
    broker.portctl("get", "8080")
    for argv in (("status", "--socket", s, "--json"), ("status", "--json", f"--socket={s}"),
                 ("--json", "status", "--socket", s), ("--socket", "/nonexistent", "status", "--json", "--socket", s)):
        r = run_portctl(*argv)
        assert r.returncode == 0 and [x["endpoint"] for x in r.json] == ["tcp:[::]:8080"], r
    assert run_portctl("policy", "list", "--socket", s, "--json").json == []
    assert run_portctl("why", "8080", "--json", "--socket", s).json["lease"]["endpoint"] == "tcp:[::]:8080"
    r = run_portctl("get", "8080", "--socket", s, "--", "echo", "--socket", "x", "--json")
    assert (r.returncode, r.stdout) == (0, "--socket x --json\n"), r
    r = run_portctl("status", "--socket")
    assert r.returncode == 2 and "--socket needs a path" in r.stderr, r


def json_failure(res, status, code):
    """Checks that res failed with status, saying so in one line on stderr and in one JSON error
    object on stdout with code; returns its message."""
    assert res.returncode == status, res
    err = res.json
    assert set(err) == {"error", "code"} and err["code"] == code, res
    assert res.stdout.count("\n") == 1 and res.stderr.splitlines()[0] == f"portctl: {err['error']}", res
    return err["error"]


def test_json_failures(broker):
    """Under --json (before or after the command) a failure also prints {"error": MESSAGE,
    "code": CODE} on stdout: brokerd's errno by name, "usage", or "connect"; exit statuses as
    without it."""
    p = broker.portctl
    assert "uid 4242" in json_failure(p("get", "8080", uid=U1, json=True, check=1), 1, "EACCES")
    p("policy", "add", "tcp:8080", "--user", U1)
    p("get", "8080")
    json_failure(p("get", "8080", "--json", uid=U1, check=1), 1, "EBUSY")
    p("policy", "add", "unix:/run/pb-sockets/", "--user", U1)
    json_failure(p("policy", "add", "unix:/run/pb-sockets/", "--user", U1, "--socket-mode", "0660", json=True,
                   check=1), 1, "EEXIST")
    json_failure(p("policy", "remove", "1", "--json", uid=U1, check=1), 1, "EPERM")
    json_failure(p("release", "9999", json=True, check=1), 1, "ENOENT")
    json_failure(p("status", "9999", json=True, check=1), 1, "ENOENT")
    json_failure(p("policy", "add", "9000", "--user", "no-such-user-pb", json=True, check=1), 1, "ENOENT")
    assert "8080\"\\\x01" in json_failure(p("get", "8080\"\\\x01", json=True, check=2), 2, "usage")
    json_failure(p("frob", json=True, check=2), 2, "usage")
    json_failure(p("status", "--bogus", "--json", check=2), 2, "usage")
    json_failure(p("get", "8081", "--json", "--", "/nonexistent/cmd", check=127), 127, "ENOENT")
    json_failure(run_portctl("--socket", "/nonexistent/control.sock", "status", "--json"), 1, "connect")
    r = p("get", "8080", uid=U1 + 1, check=1)                # no --json: stdout stays empty
    assert r.stdout == "", r


def test_policy_add_of_a_rule_that_exists_succeeds_and_says_so(broker):
    """A script may run `portctl policy add` twice: the second adds nothing,
    says which rule it is, and exits 0; a rule of the same principal and
    pattern that differs (a Unix rule's socket group or mode) is an error."""
    p = broker.portctl
    assert p("policy", "add", "tcp:8080", "--user", U1, json=True).json == {"id": 1, "added": True}
    r = p("policy", "add", "8080", "--user", str(U1))
    assert r.stdout == f"rule 1 already lets user {U1} get tcp:8080: nothing to add\n", r.stdout
    assert p("policy", "add", "tcp:8080", "--user", U1, json=True).json == {"id": 1, "added": False}
    p("policy", "add", "unix:/run/pb-sockets/", "--user", U1, "--socket-mode", "0660")
    r = p("policy", "add", "unix:/run/pb-sockets/", "--user", U1, "--socket-mode", "0660")
    assert "rule 2 already lets" in r.stdout and "mode 0660" in r.stdout, r.stdout
    r = p("policy", "add", "unix:/run/pb-sockets/", "--user", U1, check=1)
    assert "rule 2 already lets" in r.stderr and "remove it first" in r.stderr, r.stderr
    assert [x["id"] for x in p("policy", "list", json=True).json] == [1, 2]
    assert len(broker.events("policy-add")) == 2


def test_policy_export_is_a_file_in_an_order_of_the_rules_alone(broker):
    """One line per rule, names where this host knows them, sorted by the
    line: the same rules added in another order export the same."""
    p = broker.portctl
    rules = [("tcp:8000-8099", "--group", "4300"), ("udp:53", "--user", "root"), ("tcp:80", "--unit", "web.service"),
             ("unix:/run/pb-sockets/", "--user", str(U1), "--socket-group", "root", "--socket-mode", "0660")]
    for r in rules:
        p("policy", "add", r[0], *r[1:])
    first = p("policy", "export").stdout
    assert first.splitlines() == [
        "# portbroker policy: PATTERN user|group|unit WHO [socket-group=GROUP] [socket-mode=MODE] [reserve] "
        "[owner=USER]",
        "tcp:80 unit web.service",
        "tcp:8000-8099 group 4300",
        "udp:53 user root",
        f"unix:/run/pb-sockets/ user {U1} socket-group=root socket-mode=0660",
    ], first
    for i in (1, 2, 3, 4):
        p("policy", "remove", str(i))
    for r in reversed(rules):
        p("policy", "add", r[0], *r[1:])
    assert p("policy", "export").stdout == first
