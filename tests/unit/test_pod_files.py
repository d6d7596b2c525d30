"""Reading a pod's files (podrun.pod.state): relative to the pod directory, never through a
symbolic link, regular files only, bounded, and records type-checked; damage is one line naming
the file (issue 12, "One damaged pod must not break the others").  The CLI on real pods is
covered by tests/integration/test_damaged_pods.py."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podrun.cli.pods import AppLog
from podrun.pod.state import (
    RECORD_LIMIT,
    PodFileDamage,
    pod_file_present,
    read_cgroups,
    read_exit_record,
    read_pid,
    read_pod_file,
    read_pod_json,
)


@pytest.fixture
def pod(tmp_path: Path) -> Path:
    d = tmp_path / "pod"
    (d / "status").mkdir(parents=True)
    return d


@pytest.fixture
def pod_fd(pod: Path) -> Iterator[int]:
    fd = os.open(pod, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def damage_of(call: Any, *args: Any) -> str:
    with pytest.raises(PodFileDamage) as info:
        call(*args)
    return str(info.value)


def test_absent_files_are_none(pod_fd: int) -> None:
    assert read_pod_file(pod_fd, "pid", 10) is None
    assert read_pod_file(pod_fd, "net/state.json", 10) is None  # a missing directory on the way
    assert not pod_file_present(pod_fd, "ready")


@pytest.mark.parametrize(("make", "kind"), [
    (lambda p: p.mkdir(), "a directory"),
    (lambda p: os.mkfifo(p), "a FIFO"),
    (lambda p: p.symlink_to("/dev/zero"), "a symbolic link"),
    (lambda p: p.symlink_to(p.parent / "elsewhere"), "a symbolic link"),
])
def test_only_regular_files_are_read(pod: Path, pod_fd: int, make: Any, kind: str) -> None:
    (pod / "elsewhere").write_text('{"exit_code": 0, "finished": 1}')
    make(pod / "finished")
    assert damage_of(read_exit_record, pod_fd, "finished") == f"finished: is {kind}"
    make(pod / "ready")
    assert damage_of(pod_file_present, pod_fd, "ready") == f"ready: is {kind}"


def test_no_directory_on_the_way_is_followed(pod: Path, pod_fd: int, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "web").write_text('{"exit_code": 42, "finished": 1}')
    (pod / "status").rmdir()
    (pod / "status").symlink_to(outside)
    assert damage_of(read_exit_record, pod_fd, "status/web") == "status: is a symbolic link"
    (pod / "status").unlink()
    (pod / "status").write_text("")
    assert damage_of(read_exit_record, pod_fd, "status/web") == "status: is not a directory"


def test_size_is_bounded(pod: Path, pod_fd: int) -> None:
    with open(pod / "cgroups", "wb") as f:
        f.truncate(1 << 40)  # sparse: a read of it would never end in time
    assert damage_of(read_cgroups, pod_fd) == f"cgroups: larger than {RECORD_LIMIT} bytes"


@pytest.mark.parametrize(("content", "damage"), [
    (b"", "empty"),
    (b'{"exit_code": 3, "fin', "truncated or not JSON"),
    (b"[" * 50_000, "truncated or not JSON"),  # nested past the parser's recursion limit
    (b"\xff\xfe", "truncated or not JSON"),
    (b"[3]", "not a JSON object"),
    (b'{"exit_code": "zero", "finished": 1}', "exit_code is not an exit code (0-255)"),
    (b'{"exit_code": true, "finished": 1}', "exit_code is not an exit code (0-255)"),
    (b'{"exit_code": 256, "finished": 1}', "exit_code is not an exit code (0-255)"),
    (b'{"exit_code": null, "finished": 1}', "exit_code is not an exit code (0-255)"),
    (b'{"exit_code": 1, "signal": 0, "finished": 1}', "signal is not a signal number"),
    (b'{"exit_code": 1, "signal": "KILL", "finished": 1}', "signal is not a signal number"),
    (b'{"exit_code": 1, "finished": NaN}', "truncated or not JSON"),
    (b'{"exit_code": 1, "finished": -1}', "finished is not a time"),
    (b'{"exit_code": 1}', "finished is not a time"),
], ids=lambda v: v[:40].decode(errors="replace") if isinstance(v, bytes) else None)
def test_exit_records_are_type_checked(pod: Path, pod_fd: int, content: bytes, damage: str) -> None:
    (pod / "status" / "web").write_bytes(content)
    assert damage_of(read_exit_record, pod_fd, "status/web") == f"status/web: {damage}"


def test_a_good_exit_record(pod: Path, pod_fd: int) -> None:
    doc = {"exit_code": 137, "signal": 9, "finished": 1796092354.6}
    (pod / "status" / "web").write_text(json.dumps(doc))
    assert read_exit_record(pod_fd, "status/web") == doc


@pytest.mark.parametrize("content", [b"0\n", b"-5\n", b"12ab\n", b"4194305\n", b"\xd9\xa3\n", b"1 2\n"])
def test_pid_must_be_a_process_id(pod: Path, pod_fd: int, content: bytes) -> None:
    (pod / "pid").write_bytes(content)
    assert damage_of(read_pid, pod_fd) == "pid: not a process ID"


def test_pid_being_written_is_unknown(pod: Path, pod_fd: int) -> None:
    (pod / "pid").write_bytes(b"")
    assert read_pid(pod_fd) is None
    (pod / "pid").write_bytes(b"20204\n")
    assert read_pid(pod_fd) == 20204


@pytest.mark.parametrize("doc", [{"a": 1}, ["/sys/fs/cgroup/x", 5], "/sys/fs/cgroup/x"])
def test_cgroups_must_be_a_list_of_paths(pod: Path, pod_fd: int, doc: Any) -> None:
    (pod / "cgroups").write_text(json.dumps(doc))
    assert damage_of(read_cgroups, pod_fd) == "cgroups: not a list of cgroup paths"


def test_json_reader_names_the_file(pod: Path, pod_fd: int) -> None:
    (pod / "net").mkdir()
    (pod / "net" / "state.json").write_text("{")
    assert damage_of(read_pod_json, pod_fd, "net/state.json") == "net/state.json: truncated or not JSON"


# -- podrun logs: AppLog reads with the same rules, in bounded pieces ----------------------------

def test_app_log_refuses_what_is_not_a_regular_file(pod: Path, pod_fd: int, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("SECRET\n")
    (pod / "apps" / "web").mkdir(parents=True)
    (pod / "apps" / "web" / "log").symlink_to(tmp_path / "secret")
    assert damage_of(AppLog, pod_fd, "apps/web/") == "apps/web/log: is a symbolic link"
    (pod / "apps" / "web" / "log").unlink()
    os.mkfifo(pod / "apps" / "web" / "log")
    assert damage_of(AppLog, pod_fd, "apps/web/") == "apps/web/log: is a FIFO"


def test_app_log_reads_in_pieces(pod: Path, pod_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AppLog, "CHUNK", 4)
    (pod / "apps" / "web").mkdir(parents=True)
    (pod / "apps" / "web" / "log").write_bytes(b"0123456789")
    reader = AppLog(pod_fd, "apps/web/")
    assert list(reader.chunks()) == [b"0123", b"4567", b"89"]
    reader.close()

