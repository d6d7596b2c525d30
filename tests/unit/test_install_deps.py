"""scripts/install-deps.sh installs up front every Debian package the suite runs.

The bench installs peers it misses with apt-get; run by the smoke test in the middle of the suite,
that made a fresh machine's first run differ from every later one (issue 13).
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.host import PEER_PACKAGES

ROOT = Path(__file__).resolve().parents[2]


def apt_packages() -> set[str]:
    """The names in the APT_PACKAGES array of scripts/install-deps.sh (comments dropped)."""
    text = (ROOT / "scripts" / "install-deps.sh").read_text()
    match = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.S | re.M)
    assert match, "no APT_PACKAGES=( … ) array in scripts/install-deps.sh"
    return {name for line in match.group(1).splitlines() for name in line.split("#", 1)[0].split()}


def test_install_deps_installs_every_bench_peer() -> None:
    assert set(PEER_PACKAGES) - apt_packages() == set()


def test_install_deps_lists_real_package_names() -> None:
    names = apt_packages()
    assert {"podman", "crun", "runc", "catatonit", "runsc", "libc6-dev", "debootstrap", "openssl", "libseccomp2"} <= names
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", n) for n in names), sorted(names)


def test_install_deps_installs_the_init_systems_the_tests_drive() -> None:
    # tests/integration/test_init_systems.py (start-stop-daemon comes with dpkg)
    assert {"s6", "runit", "supervisor"} <= apt_packages()
