# SPDX-License-Identifier: MIT
"""SECURITY.md stays true to the tree: every test it names as the proof of
a promise exists, and the README's security section says what it says
(the split, the user, the exposure level) and points to it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_security_md_names_exists():
    text = (ROOT / "SECURITY.md").read_text()
    named = re.findall(r"`(test_\w+\.(?:py|c))(?:::(\w+))?`", text)
    assert len(named) >= 20, named
    for file, name in named:
        path = ROOT / "tests" / ("integration" if file.endswith(".py") else "unit") / file
        assert path.exists(), file
        if name:
            assert re.search(rf"^def {name}\(", path.read_text(), re.M), f"{file}::{name}"


def test_the_readme_security_section_matches():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Security", 1)[1].split("\n### ", 1)[0]
    security = (ROOT / "SECURITY.md").read_text()
    assert "SECURITY.md" in section
    for fact in ("monitor", "worker", "portbroker", "no_new_privs", "seccomp"):
        assert fact in section and fact in security, fact
    level = re.search(r"systemd-analyze security`: (\d\.\d)", section).group(1)
    assert f"`systemd-analyze security`: {level}" in security
