"""stage0 hands the decided manifest to podrun's own stage1 flavors as marshal data in a memfd
(podrun.abi, PODRUN_MANIFEST_FD), so stage1 imports no json; and stage1 writes its small
records without json (podrun.fsutil.numbers_json, strings_json), byte for byte as json would."""

from __future__ import annotations

import json
import marshal
import os

import pytest

from podrun import abi, fsutil
from podrun.model.manifest import AppSpec, PodManifest
from podrun.pod import layout


def _manifest() -> PodManifest:
    app = AppSpec("web", "sha256:" + "a" * 64, "demo", ("/l",), ("/bin/true",), ("A=b",), capabilities=(0, 21),
                  seccomp_bpf="apps/web/seccomp.bpf", stop_signal=3)
    return PodManifest("0d1b2c3d-0000-4000-8000-000000000001", (app,), hostname="h", dns=("1.1.1.1",))


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("test", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def test_the_handed_over_manifest_is_the_one_stage0_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _manifest()
    fd = abi.manifest_memfd(manifest.to_doc())
    assert os.get_inheritable(fd)
    monkeypatch.setenv(abi.ENV_MANIFEST_FD, str(fd))
    taken = layout.read_manifest_at("/nonexistent")  # the pod dir is not read at all
    assert taken.to_json() == manifest.to_json()
    assert abi.ENV_MANIFEST_FD not in os.environ  # apps never see it
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: apps never inherit it


def test_without_a_hand_over_stage1_reads_pod_json(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.delenv(abi.ENV_MANIFEST_FD, raising=False)
    assert abi.take_manifest_doc() is None
    with pytest.raises(FileNotFoundError):
        layout.read_manifest_at(os.fspath(tmp_path))


@pytest.mark.parametrize("data", [b"", b"garbage", marshal.dumps([1, 2]), marshal.dumps({"uuid": 1}),
                                  marshal.dumps({"version": 2, "uuid": "u", "apps": []})])
def test_a_bad_hand_over_is_refused(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setenv(abi.ENV_MANIFEST_FD, str(_memfd(data)))
    with pytest.raises(abi.AbiError) as info:
        layout.read_manifest_at("/nonexistent")
    assert abi.ENV_MANIFEST_FD in str(info.value) or "handed over" in str(info.value)


def test_a_hand_over_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fd = os.memfd_create("test", 0)
    os.ftruncate(fd, abi.MANIFEST_FD_LIMIT + 2)
    monkeypatch.setenv(abi.ENV_MANIFEST_FD, str(fd))
    with pytest.raises(abi.AbiError, match="larger than"):
        abi.take_manifest_doc()


@pytest.mark.parametrize("text", ["x", "-1", "99999"])
def test_a_hand_over_that_is_no_fd_is_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(abi.ENV_MANIFEST_FD, text)
    with pytest.raises(abi.AbiError, match="not an open descriptor"):
        abi.take_manifest_doc()


def test_stage1_env_hands_over_only_the_given_manifest_fd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(abi.ENV_MANIFEST_FD, "7")  # never from the caller's environment
    assert abi.ENV_MANIFEST_FD not in abi.stage1_env("/d")
    assert abi.stage1_env("/d", 3, 9)[abi.ENV_MANIFEST_FD] == "9"


@pytest.mark.parametrize("fields", [
    {"exit_code": 0, "finished": 1796106985.5391378},
    {"exit_code": 137, "signal": 9, "finished": 1e-7},
    {"exit_code": -1, "signal": None, "finished": 12.0},
    {"exit_code": True},  # a bool: json's true
    {"finished": float("inf")},  # not JSON: json's Infinity, as before
    {'a"b': 1}, {"ü": 2},
])
def test_numbers_json_is_what_json_writes(fields: dict[str, int | float | None]) -> None:
    assert fsutil.numbers_json(fields) == json.dumps(fields, separators=(",", ":")).encode()


@pytest.mark.parametrize("items", [
    [], ["/sys/fs/cgroup/unified/podrun/pod-u"], ["/a b", "/sys/fs/cgroup/system.slice/x\\x2dy.scope/pod-u"],
    ['/q"uote', "/tab\there", "/é", "/\udcff"],
])
def test_strings_json_is_what_json_writes(items: list[str]) -> None:
    assert fsutil.strings_json(items) == json.dumps(items, separators=(",", ":")).encode()
