# SPDX-License-Identifier: MIT
"""portctl's bash completion (client/portctl/portctl.bash-completion): sourced
into bash and called as readline calls it (COMP_LINE, COMP_POINT, COMP_WORDS
and COMP_CWORD set), against a real brokerd with leases; once in a real
interactive bash on a pty, where readline itself splits the words; and where
make install puts it."""

import os
import pty
import re
import select
import shlex
import subprocess
import time

import pytest

from conftest import BUILD, PORTCTL, ROOT, child_env, need

pytestmark = pytest.mark.usefixtures("netns")

COMPLETION = ROOT / "client" / "portctl" / "portctl.bash-completion"
BREAKS = " \t\n\"'><=;|&(:"             # bash's default COMP_WORDBREAKS
U1 = 4242

# Each command's own options (test_options.py checks its --help names these).
OWN_OPTIONS = {
    "get": {"--nonblock"}, "release": set(), "status": set(),
    "policy add": {"--user", "--group", "--unit", "--owner", "--reserve"}, "policy remove": set(),
    "policy list": set(), "policy import": {"--replace", "--check"},
    "policy test": {"--user", "--group", "--unit"}, "admin reexec": set(), "run": set(), "upgrade": {"--pid", "--signal", "--timeout"}, "why": {"--as"},
    "log": {"--since", "--until", "--endpoint", "--uid", "--event", "--limit"},
}


def comp_words(line):
    """COMP_WORDS and COMP_CWORD as readline makes them: words split at white
    space, then into runs of word-break characters and of the others."""
    breaks = re.escape(BREAKS.strip())
    words = []
    for w in line.split():
        words += re.findall(f"[{breaks}]+|[^{breaks}]+", w)
    if not line or line[-1].isspace():
        words.append("")
    return words, len(words) - 1


def complete(line, env=None):
    """What completing `line` (the cursor at its end) offers: COMPREPLY, in order."""
    need(PORTCTL)
    words, cword = comp_words(line)
    script = (f"source {shlex.quote(str(COMPLETION))}\n"
              f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}\n"
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={cword}\n"
              f"_portctl portctl {shlex.quote(words[-1])} {shlex.quote(words[-2] if cword else '')}\n"
              "printf '%s\\n' ${#COMPREPLY[@]} \"${COMPREPLY[@]}\"\n")
    env = child_env(PATH=f"{BUILD}:/usr/sbin:/usr/bin:/sbin:/bin", **(env or {}))
    cp = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                        env=env, timeout=20)
    assert cp.returncode == 0 and cp.stderr == "", cp
    lines = cp.stdout.split("\n")
    return lines[1:1 + int(lines[0])]


def help_options(*words):
    """The options `portctl WORDS --help` names."""
    out = subprocess.run([PORTCTL, *words, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", out))


def test_commands_subcommands_and_options():
    commands = ["get", "release", "status", "log", "policy", "admin", "run", "upgrade", "why", "help"]
    assert complete("portctl ") == commands
    assert complete("portctl --json ") == commands
    assert complete("portctl --socket /x ") == commands
    assert complete("portctl st") == ["status"]
    assert complete("portctl policy ") == ["add", "remove", "list", "export", "import", "test"]
    assert complete("portctl policy --json r") == ["remove"]
    assert complete("portctl admin ") == ["reexec"]
    assert complete("portctl help ") == commands
    assert complete("portctl help policy ") == ["add", "remove", "list", "export", "import", "test"]
    assert complete("portctl policy add ") == []                    # a pattern: nothing to offer
    assert set(complete("portctl --")) == {"--socket", "--json", "--help", "--version"}
    # Each command's options are those its --help names, and no other command's.
    for cmd, own in OWN_OPTIONS.items():
        got = complete(f"portctl {cmd} 8080 --")
        assert set(got) == help_options(*cmd.split()), (cmd, got)
        assert own <= set(got), (cmd, got)
        others = set().union(*OWN_OPTIONS.values()) - own
        assert not others & set(got), (cmd, got)
    assert complete("portctl get --non") == ["--nonblock"]
    assert complete("portctl --socket /x why 80 --json --a") == ["--as"]


def test_option_values(tmp_path):
    assert "root" in complete("portctl policy add 80 --user ro")
    assert "nobody" in complete("portctl policy add 80 --user no")
    assert "root" in complete("portctl policy add 80 --group ro")
    assert "root" in complete("portctl why 80 --as r")
    assert complete("portctl upgrade --pid 2 --signal QU") == ["QUIT"]
    assert complete("portctl upgrade --pid ") == []
    assert complete("portctl policy add 80 --unit ") == []
    assert "nobody" in complete("portctl log --uid no")
    assert complete("portctl log --limit ") == []
    assert complete("portctl log --since y") == ["yesterday"]
    assert complete("portctl log --until -") == ["-1h", "-1d"]
    # The kinds are those portctl log --help names (brokerd's, proto_event_kinds).
    kinds = complete("portctl log --event ")
    helptext = subprocess.run([PORTCTL, "log", "--help"], capture_output=True, text=True, check=True).stdout
    named = re.search(r"One kind: (.*?)\n  --limit", helptext, re.S).group(1)
    assert kinds == [k for k in re.findall(r"[a-z][a-z-]*", named) if k != "or"], (kinds, named)
    assert complete("portctl log --event policy-") == ["policy-add", "policy-change", "policy-remove",
                                                      "policy-dir-failed"]
    (tmp_path / "control.sock").write_text("")
    (tmp_path / "other").write_text("")
    assert complete(f"portctl --socket {tmp_path}/con") == [f"{tmp_path}/control.sock"]
    assert complete(f"portctl status --socket {tmp_path}/con") == [f"{tmp_path}/control.sock"]
    # readline replaces what follows '=' (a word-break character) only.
    assert complete(f"portctl --socket={tmp_path}/con") == [f"{tmp_path}/control.sock"]


def test_command_after_dashdash(tmp_path):
    assert "echo" in complete("portctl get 8080 -- ech")
    assert "printf" in complete("portctl run -- prin")
    assert complete("portctl get 8080 -- echo /et") == ["/etc"]
    assert complete("portctl upgrade --pid 2 8080 -- cat --socket=/et") == []   # CMD's words, not ours
    assert complete("portctl status -- ") == []


def test_endpoints_and_rules_of_a_live_brokerd(broker):
    """Endpoints of brokerd's leases (for every command that takes one), found at
    --socket, --socket=, or $PORTBROKER_SOCKET; rule ids for policy remove."""
    s = broker.control
    broker.portctl("get", "8080")
    broker.portctl("get", "udp:127.0.0.1:5353")
    rule = broker.portctl("policy", "add", "tcp:9000-9009", "--user", U1, json=True).json["id"]
    leases = ["tcp:[::]:8080", "udp:127.0.0.1:5353"]
    for cmd in ("get", "release", "status", "why", "run", "upgrade --pid 2"):
        assert complete(f"portctl --socket {s} {cmd} ") == leases, cmd
    assert complete(f"portctl --socket {s} log --endpoint ") == leases
    assert complete(f"portctl --socket {s} log ") == []              # no operand
    assert complete(f"portctl status --socket={s} ") == leases
    assert complete("portctl release ", env={"PORTBROKER_SOCKET": s}) == leases
    # After a ':' (a word-break character) readline replaces only what follows it.
    assert complete(f"portctl --socket {s} release ud") == ["udp:127.0.0.1:5353"]
    assert complete(f"portctl --socket {s} release udp:") == ["127.0.0.1:5353"]
    assert complete(f"portctl --socket {s} release tcp:[::]:80") == ["8080"]
    assert complete(f"portctl --socket {s} status 80") == ["8080"]              # 8080 is tcp:[::]:8080
    assert complete(f"portctl --socket {s} policy remove ") == [str(rule)]
    assert complete(f"portctl --socket {s} policy list ") == []
    assert complete(f"portctl --socket {s} policy test ") == leases
    assert complete(f"portctl --socket {s} policy test 8080 --group ro") == ["root"]
    # brokerd not there: nothing, and not a word on stderr (complete() checks).
    assert complete("portctl --socket /nonexistent/control.sock release ") == []
    assert complete("portctl release ", env={"PORTBROKER_SOCKET": "/nonexistent/control.sock"}) == []


def read_until(fd, pattern, timeout=10.0):
    """Reads the pty until pattern (a regex) matches what was read; returns the match."""
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, buf.decode(errors="replace"))
        if m:
            return m
        left = deadline - time.monotonic()
        assert left > 0, f"no {pattern!r} on the terminal within {timeout}s: {buf!r}"
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:             # EIO: bash exited
                chunk = b""
            assert chunk, f"the terminal closed before {pattern!r}: {buf!r}"
            buf += chunk


def typed(keys, setup, env=None):
    """Types keys at an interactive bash on a pty (after the commands setup), then
    Ctrl-A and `echo ` before them and Enter, so that bash prints the line as TAB
    made it; returns that line."""
    env = child_env(PATH=f"{BUILD}:/usr/sbin:/usr/bin:/sbin:/bin", TERM="dumb", PS1="$ ", **(env or {}))
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
    try:
        os.write(fd, f"{setup}; echo set up\n".encode())
        read_until(fd, r"\nset up\r?\n")
        os.write(fd, f"{keys}\x01echo \r".encode())
        return read_until(fd, r"\n(portctl [^\r\n]*?) ?\r?\n").group(1)
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def test_readline_completes_an_endpoint(broker):
    """In an interactive bash, TAB after `release tcp:[::]:80` (readline splits
    the word at each ':') completes the lease's endpoint whole."""
    need(PORTCTL)
    broker.portctl("get", "8080")
    setup = f"source {shlex.quote(str(COMPLETION))}"
    line = typed(f"portctl --socket {broker.control} release tcp:[::]:80\t", setup)
    assert line == f"portctl --socket {broker.control} release tcp:[::]:8080"


def make_install(dest):
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"BUILD={BUILD}", f"DESTDIR={dest}",
                        "PREFIX=/usr"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return dest / "usr/share/bash-completion/completions/portctl"


def test_make_install_puts_it_where_bash_completion_looks(tmp_path):
    installed = make_install(tmp_path / "dest")
    assert installed.read_bytes() == COMPLETION.read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o644


BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"


@pytest.mark.skipif(not os.path.exists(BASH_COMPLETION), reason="the bash-completion package is not installed")
def test_bash_completion_loads_the_installed_file(broker, tmp_path):
    """bash-completion finds the installed file on the first TAB after portctl
    (XDG_DATA_DIRS: the DESTDIR's share), and after `--` hands over to the
    command's own completion."""
    share = make_install(tmp_path / "dest").parents[2]
    broker.portctl("get", "8080")
    setup = f"source {BASH_COMPLETION}"
    env = {"XDG_DATA_DIRS": share}
    line = typed(f"portctl --socket {broker.control} release tcp:[::]:80\t", setup, env)
    assert line == f"portctl --socket {broker.control} release tcp:[::]:8080"
    assert typed("portctl get 8080 -- ls --full-t\t", setup, env) == "portctl get 8080 -- ls --full-time"
