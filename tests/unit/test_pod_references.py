"""Reading the pods' layer references for ``image gc`` fails safe (SECURITY-TESTS 29): every phase
directory, hidden embryos included, and every way a manifest can be unreadable is reported, so
that gc keeps every layer instead of deleting a layer a pod may use.  The same cases through
the real CLI, with a running pod, are in tests/integration/test_failsafe.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from podrun.model.manifest import AppSpec, PodManifest
from podrun.pod.layout import PHASES, PodDirs, pod_references

LAYER = "/data/store/layers/sha256/" + "ab" * 32 + "/rootfs"


def manifest(*lower: str) -> bytes:
    """A manifest as stage0 writes it (the model's own to_json), naming the layers *lower*."""
    app = AppSpec(name="a", image_id="sha256:" + "cd" * 32, image_name="demo", lower_dirs=tuple(lower),
                  exec_argv=("/bin/true",), env=())
    return PodManifest(uuid="0123abcd-0000-4000-8000-000000000001", apps=(app,)).to_json()


def _edited(p: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    doc = json.loads(manifest(LAYER))
    edit(doc)
    p.write_text(json.dumps(doc))


def _truncated(p: Path) -> None:
    p.write_bytes(manifest(LAYER)[:40])


def _directory(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _fifo(p: Path) -> None:
    p.unlink()
    os.mkfifo(p)  # a reader that opens it blocking would hang here


def _symlink(p: Path) -> None:
    decoy = p.parent.parent / "decoy.json"
    decoy.write_bytes(manifest())  # a readable manifest naming no layer, reached only by following
    p.unlink()
    p.symlink_to(decoy)


DAMAGE: dict[str, Callable[[Path], object]] = {
    "truncated": _truncated,
    "not-json": lambda p: p.write_bytes(b"\x00\xffgarbage"),
    "not-an-object": lambda p: p.write_bytes(b"[1, 2]"),
    "apps-not-a-list": lambda p: _edited(p, lambda d: d.update(apps=LAYER)),
    "lower-dirs-not-a-list": lambda p: _edited(p, lambda d: d["apps"][0].update(lower_dirs="/x")),
    "lower-dirs-a-string-of-slashes": lambda p: _edited(p, lambda d: d["apps"][0].update(lower_dirs="//")),
    "lower-dirs-relative": lambda p: _edited(p, lambda d: d["apps"][0].update(lower_dirs=["layers/x"])),
    # a field renamed by a later podrun (or a hand edit): doubt, never "this pod uses no layer"
    "lower-dirs-renamed": lambda p: _edited(p, lambda d: d["apps"][0].update(layers=d["apps"][0].pop("lower_dirs"))),
    "no-apps": lambda p: _edited(p, lambda d: d.update(apps=[])),
    "other-version": lambda p: _edited(p, lambda d: d.update(version=9)),
    "deeply-nested": lambda p: p.write_bytes(b"[" * 100_000),
    "missing": lambda p: p.unlink(),
    "directory": _directory,
    "fifo": _fifo,
    "symlink": _symlink,
}

# (phase directory, entry name): every phase, and the hidden name of an embryo being created
PLACES = [(phase, "0123abcd-0000-4000-8000-000000000001") for phase in PHASES] + [
    ("embryo", ".0123abcd-0000-4000-8000-000000000001.tmp")]


@pytest.fixture
def dirs(tmp_path: Path) -> PodDirs:
    d = PodDirs(tmp_path / "data")
    d.ensure()
    return d


def make_pod(dirs: PodDirs, phase: str, name: str, data: bytes) -> Path:
    pod = dirs.root / phase / name
    pod.mkdir()
    (pod / "pod.json").write_bytes(data)
    return pod


@pytest.mark.parametrize(("phase", "name"), PLACES, ids=lambda v: v)
def test_every_phase_counts(dirs: PodDirs, phase: str, name: str) -> None:
    make_pod(dirs, phase, name, manifest(LAYER))
    refs = pod_references(dirs)
    assert refs.lower_dirs == {LAYER} and refs.unreadable == []


@pytest.mark.parametrize(("phase", "name"), PLACES, ids=lambda v: v)
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_unreadable_references_are_reported(dirs: PodDirs, hold: Callable[[Path], None], phase: str, name: str,
                                            damage: str) -> None:
    other = make_pod(dirs, "run", "0123abcd-0000-4000-8000-00000000000f", manifest("/other/rootfs"))
    pod = make_pod(dirs, phase, name, manifest(LAYER))
    hold(pod)  # a live pod; an unlocked embryo without a manifest is the one exception (below)
    DAMAGE[damage](pod / "pod.json")
    refs = pod_references(dirs)
    assert len(refs.unreadable) == 1 and refs.unreadable[0].startswith(f"pod {name} ({phase}): pod.json ")
    assert "/other/rootfs" in refs.lower_dirs and other.is_dir()


@pytest.mark.parametrize("name", ["0123abcd-0000-4000-8000-000000000001", ".0123abcd-0000-4000-8000-000000000001.tmp"])
def test_an_aborted_embryo_without_manifest_names_nothing(dirs: PodDirs, hold: Callable[[Path], None],
                                                          name: str) -> None:
    """Its creator died before writing the manifest (the lock is free): nothing will ever run it.
    While the creator lives, a missing manifest is doubt."""
    pod = dirs.root / "embryo" / name
    pod.mkdir()
    refs = pod_references(dirs)
    assert refs.lower_dirs == set() and refs.unreadable == []
    hold(pod)
    assert pod_references(dirs).unreadable == [f"pod {name} (embryo): pod.json is missing"]


def test_a_missing_manifest_of_an_exited_pod_is_doubt(dirs: PodDirs) -> None:
    (dirs.root / "run" / "u1").mkdir()
    assert pod_references(dirs).unreadable == ["pod u1 (run): pod.json is missing"]


def test_odd_entries(dirs: PodDirs, tmp_path: Path) -> None:
    (dirs.root / "run" / "stray-file").write_bytes(b"")  # not a pod: nothing can run it
    os.mkfifo(dirs.root / "prepared" / "stray-fifo")
    elsewhere = make_pod(dirs, "run", "real", manifest(LAYER))
    (dirs.root / "exited-garbage" / "linked").symlink_to(elsewhere)
    refs = pod_references(dirs)
    assert refs.lower_dirs == {LAYER}
    assert refs.unreadable == ["pod linked (exited-garbage): the pod directory is a symlink"]


def test_a_phase_directory_that_is_not_one_is_doubt(dirs: PodDirs) -> None:
    (dirs.root / "garbage").rmdir()
    (dirs.root / "garbage").write_bytes(b"")
    assert pod_references(dirs).unreadable == ["pods/garbage: cannot be read (Not a directory)"]


def test_no_pods_dir_means_no_references(tmp_path: Path) -> None:
    refs = pod_references(PodDirs(tmp_path / "fresh"))
    assert refs.lower_dirs == set() and refs.unreadable == []


def test_the_layers_stage0_writes_are_the_layers_gc_keeps(dirs: PodDirs) -> None:
    """Writer and reader are one model: every layer of every app, in every phase, comes back."""
    apps = tuple(AppSpec(name=f"a{i}", image_id="sha256:" + "cd" * 32, image_name="demo",
                         lower_dirs=(f"/s/layers/{i}/rootfs", LAYER), exec_argv=("/bin/true",), env=())
                 for i in range(3))
    make_pod(dirs, "run", "u1", PodManifest(uuid="u1", apps=apps).to_json())
    refs = pod_references(dirs)
    assert refs.unreadable == [] and refs.lower_dirs == {LAYER, "/s/layers/0/rootfs", "/s/layers/1/rootfs",
                                                         "/s/layers/2/rootfs"}
