"""The stage contract through the real CLI (man/podrun-stage1.7): a flavor of another ABI is
refused before any pod exists (``run``) or leaving the pod prepared (``run-prepared``), with
one line and exit code 254."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_run import Pods, module_pods


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "abi")


def _stages_of_abi(tmp_path: Path, value: object) -> dict[str, str]:
    from podrun.stage0.prepare import stages_dir

    stages = tmp_path / "stages"
    shutil.copytree(stages_dir(), stages)
    for manifest in stages.glob("*/manifest.json"):
        manifest.write_text(json.dumps(dict(json.loads(manifest.read_text()), abi=value)))
    return {"PODRUN_STAGES_DIR": str(stages)}


def _pods_on_disk(pods: Pods) -> list[str]:
    root = pods.data / "pods"
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*")) if root.is_dir() else []


@pytest.mark.parametrize("flavor", ["default", "fly", "oci"])
def test_run_refuses_a_flavor_of_another_abi(pods: Pods, tmp_path: Path, flavor: str) -> None:
    import os

    before = _pods_on_disk(pods)
    env = dict(os.environ, **_stages_of_abi(tmp_path, 2))
    res = pods.run("run", "--stage1", flavor, "--net", "none", "demo", "--exec", "/bin/true", env=env)
    assert res.returncode == 254, res
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"stage1 flavor '{flavor}' has ABI 2; this podrun speaks ABI 1" in res.stderr
    assert _pods_on_disk(pods) == before  # refused before the pod was written


def test_run_prepared_refuses_a_flavor_of_another_abi_and_keeps_the_pod(pods: Pods, tmp_path: Path) -> None:
    import os

    uuid = pods.run("prepare", "--net", "none", "demo", "--exec", "/bin/true", check=True).stdout.strip()
    try:
        env = dict(os.environ, **_stages_of_abi(tmp_path, "1"))
        res = pods.run("run-prepared", uuid, env=env)
        assert res.returncode == 254 and "has ABI '1'; this podrun speaks ABI 1" in res.stderr, res
        assert res.stderr.count("\n") == 1, res.stderr
        assert (pods.data / "pods" / "prepared" / uuid).is_dir()  # still prepared: it can run later
        assert pods.run("run-prepared", uuid).returncode == 0
    finally:
        pods.cleanup()

