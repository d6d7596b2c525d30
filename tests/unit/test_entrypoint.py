"""stage1 flavors and entrypoints are plain names inside the stages dir: a pod.json naming
``../x`` (or a flavor manifest naming ``/bin/sh``) never makes podrun exec something else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podrun.errors import NotFoundError, UsageError
from podrun.stage0.prepare import entrypoint


@pytest.fixture
def stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PODRUN_STAGES_DIR", str(tmp_path / "stages"))
    (tmp_path / "stages" / "good").mkdir(parents=True)
    (tmp_path / "stages" / "good" / "manifest.json").write_text(json.dumps(
        {"abi": 1, "entrypoints": {"run": "run", "enter": "../../../bin/sh", "gc": "/bin/sh", "stop": 7}}))
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "manifest.json").write_text(json.dumps({"abi": 1, "entrypoints": {"run": "run"}}))
    return tmp_path / "stages"


def test_a_plain_flavor_and_entrypoint(stages: Path) -> None:
    assert entrypoint("good", "run") == stages / "good" / "run"


@pytest.mark.parametrize("flavor", ["../evil", "..", ".", "", "good/../../evil", "/tmp", "a\0b", "good\n"])
def test_flavor_names_that_lead_out_are_refused(stages: Path, flavor: str) -> None:
    with pytest.raises(UsageError, match="invalid stage1 flavor"):
        entrypoint(flavor, "run")


@pytest.mark.parametrize("name", ["enter", "gc", "stop"])
def test_entrypoints_that_are_not_file_names_are_refused(stages: Path, name: str) -> None:
    with pytest.raises(UsageError, match=f"entrypoint '{name}' is not a file name"):
        entrypoint("good", name)


def test_missing_flavor_and_entrypoint(stages: Path) -> None:
    with pytest.raises(NotFoundError, match="is not installed"):
        entrypoint("absent", "run")
    with pytest.raises(UsageError, match="has no 'app-add' entrypoint"):
        entrypoint("good", "app-add")
    (stages / "good" / "manifest.json").write_text('{"abi": 1, "entrypoints": ["run"]}')
    with pytest.raises(UsageError, match="has no 'run' entrypoint"):
        entrypoint("good", "run")
