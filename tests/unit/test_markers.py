"""The pytest markers are real: ``-m "not root"`` leaves out every test that needs root (all of
tests/integration/, the few marked ones in tests/unit/), and the registry tests are marked."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def collect(*args: str) -> list[str]:
    # a session of its own: not the bridge this session holds (tests/conftest.py)
    env = {k: v for k, v in os.environ.items() if k not in ("PODRUN_TEST_BRIDGE", "PODRUN_TEST_SUBNET")}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", *args],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode in (0, 5), res.stdout + res.stderr  # 5: nothing collected
    return [line for line in res.stdout.splitlines() if "::" in line]


def test_not_root_leaves_out_integration_and_marked_unit_tests() -> None:
    assert collect("-m", "not root", "tests/integration") == []
    assert len(collect("tests/integration/test_run.py")) > 10
    marked = collect("-m", "root", "tests/unit")
    assert "tests/unit/test_seccomp.py::test_kept_capabilities_keep_their_syscalls" in marked
    assert not [t for t in marked if t.startswith("tests/unit/test_markers.py")]


def test_registry_tests_are_marked() -> None:
    marked = collect("-m", "registry", "tests/integration/test_registry.py")
    assert "tests/integration/test_registry.py::test_anonymous_pull_manifest_and_blobs" in marked
    assert collect("-m", "registry", "tests/unit/test_registry_client.py") == []  # the fake registry
    assert len(collect("tests/unit/test_registry_client.py")) > 10
