"""The first pods of a boot are this boot's: ``run`` records the boot when the runtime dir does
not yet (a fresh machine, or a new ``/run/podrun``), so a later ``list`` does not take a pod that
exited a moment ago for one of the boot before and mark it for collection."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_run import Pods, module_pods


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "bootrec")


def test_a_pod_run_in_a_fresh_runtime_dir_is_listed_as_this_boots(pods: Pods, tmp_path: Path) -> None:
    env = dict(os.environ, PODRUN_RUNTIME_DIR=str(tmp_path / "run"))
    res = pods.run("run", "--net", "none", "demo", "--exec", "/bin/true", env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "run" / "boot_id").read_text().strip() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    listed = json.loads(pods.run("list", "--format", "json", env=env, check=True).stdout)
    assert [p["state"] for p in listed] == ["exited"], listed
    # a new boot still marks it for collection
    other = dict(env, PODRUN_BOOT_ID="00000000-0000-0000-0000-000000000000")
    listed = json.loads(pods.run("list", "--format", "json", env=other, check=True).stdout)
    assert [p["state"] for p in listed] == ["exited-garbage"], listed
    pods.run("gc", "--grace-period", "0s", env=other, check=True)
