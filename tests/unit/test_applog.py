"""App log files are bounded (``--log-max-size``): stage1's LogFile rotates once, keeping the
newest data in order across log.1 and log, and ``podrun logs`` (AppLog) reads them back in
order, following across rotations."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podrun.cli.pods import AppLog
from podrun.pod.logrelay import LogFile


def _files(d: Path) -> tuple[bytes, bytes]:
    older = d / "log.1"
    return (older.read_bytes() if older.exists() else b""), (d / "log").read_bytes()


def test_fills_up_to_the_limit_then_rotates(tmp_path: Path) -> None:
    log = LogFile(str(tmp_path / "log"), 10)
    log.write(b"0123456789")
    assert _files(tmp_path) == (b"", b"0123456789")  # exactly full: no rotation yet
    log.write(b"a")
    assert _files(tmp_path) == (b"0123456789", b"a")
    log.write(b"bcdefghijklmnopq")  # fills log, rotates, goes on: the older log.1 is replaced
    assert _files(tmp_path) == (b"abcdefghij", b"klmnopq")


def test_a_write_larger_than_twice_the_limit_keeps_its_end(tmp_path: Path) -> None:
    log = LogFile(str(tmp_path / "log"), 4)
    log.write(b"x" * 3 + bytes(range(65, 91)))  # 29 bytes
    assert _files(tmp_path) == (b"VWXY", b"Z")


def test_existing_log_counts(tmp_path: Path) -> None:
    (tmp_path / "log").write_bytes(b"12345678")
    log = LogFile(str(tmp_path / "log"), 10)
    log.write(b"abcde")
    assert _files(tmp_path) == (b"12345678ab", b"cde")


def test_no_limit(tmp_path: Path) -> None:
    log = LogFile(str(tmp_path / "log"), -1)
    for _ in range(100):
        log.write(b"y" * 1000)
    assert _files(tmp_path) == (b"", b"y" * 100_000)


@pytest.mark.parametrize("seed", range(20))
def test_newest_data_kept_in_order(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    limit = rnd.randint(1, 50)
    log = LogFile(str(tmp_path / "log"), limit)
    stream = b""
    for _ in range(rnd.randint(1, 25)):
        chunk = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 120)))
        log.write(chunk)
        stream += chunk
        older, cur = _files(tmp_path)
        assert len(cur) <= limit and len(older) in (0, limit)
        assert stream.endswith(older + cur) and len(older + cur) >= min(len(stream), limit)


def test_rotation_failure_keeps_the_bound(tmp_path: Path) -> None:
    """If log cannot become log.1 (here a non-empty directory is in the way), the log starts over."""
    (tmp_path / "log.1").mkdir()
    (tmp_path / "log.1" / "x").touch()
    log = LogFile(str(tmp_path / "log"), 4)
    log.write(b"abcdefghij")
    assert (tmp_path / "log").read_bytes() == b"ij"


def test_log_is_not_opened_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    (tmp_path / "log").symlink_to(target)
    with pytest.raises(OSError):
        LogFile(str(tmp_path / "log"), 4)


# -- podrun logs ------------------------------------------------------------------------------

@pytest.fixture
def base_fd(tmp_path: Path) -> Iterator[int]:
    """The directory the logs are read beneath (a pod directory in ``podrun logs``)."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def _read(reader: AppLog) -> bytes:
    return b"".join(reader.chunks())

def test_reads_log_1_then_log(tmp_path: Path, base_fd: int) -> None:
    assert _read(AppLog(base_fd, "")) == b""  # the app has not started: no file yet
    (tmp_path / "log.1").write_bytes(b"old\n")
    (tmp_path / "log").write_bytes(b"new\n")
    reader = AppLog(base_fd, "")
    assert _read(reader) == b"old\nnew\n"
    assert _read(reader) == b""
    reader.close()


def test_follows_across_rotations(tmp_path: Path, base_fd: int) -> None:
    """Whatever is written between two reads is read in order, with up to two rotations
    in between (the reader ends the file it had open, then takes what was rotated since)."""
    rnd = random.Random(7)
    log = LogFile(str(tmp_path / "log"), 100)
    reader = AppLog(base_fd, "")
    stream = got = b""
    for i in range(300):
        for _ in range(rnd.randint(0, 3)):  # 0-3 writes of up to 60 bytes: at most 2 rotations
            chunk = f"{i}:".encode() + b"z" * rnd.randint(0, 56)
            log.write(chunk)
            stream += chunk
        got += _read(reader)
        assert got == stream
    reader.close()


def test_bytes_written_just_before_a_rotation_are_read(tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader read log to its end, then the writer appended and rotated before the reader
    looked at the name again: the old file's last bytes come before the new file's."""
    log = LogFile(str(tmp_path / "log"), 4)
    log.write(b"ab")
    reader = AppLog(base_fd, "")
    real_stat = os.stat

    def stat_after_a_write(*args: Any, **kw: Any) -> os.stat_result:
        monkeypatch.setattr(os, "stat", real_stat)
        log.write(b"cdef")  # "cd" ends the old log, now log.1; "ef" starts the new one
        return real_stat(*args, **kw)

    monkeypatch.setattr(os, "stat", stat_after_a_write)
    assert _read(reader) == b"abcdef"
    reader.close()


def test_a_rotation_between_opening_log_and_log_1(tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader opens log first: if it is rotated before log.1 is opened, log.1 is that same
    file and is read once."""
    (tmp_path / "log").write_bytes(b"A")
    real_open = AppLog._open

    def rotating_open(self: AppLog, name: str) -> object:
        if name == AppLog.OLDER:
            os.rename(tmp_path / "log", tmp_path / "log.1")
            (tmp_path / "log").write_bytes(b"B")
        return real_open(self, name)

    with monkeypatch.context() as mp:
        mp.setattr(AppLog, "_open", rotating_open)
        reader = AppLog(base_fd, "")
    assert _read(reader) == b"AB"
    reader.close()


def test_a_log_started_over_is_read_from_its_start(tmp_path: Path, base_fd: int) -> None:
    (tmp_path / "log").write_bytes(b"abcdef")
    reader = AppLog(base_fd, "")
    assert _read(reader) == b"abcdef"
    (tmp_path / "log").write_bytes(b"xy")  # the same file, truncated and written again
    assert _read(reader) == b"xy"
    reader.close()
