"""Entries whose liveness is their writer's lock (``store/tmp``, hidden embryos): a cleaner
removes one only after taking its lock itself, so never a live writer's, and a writer whose
fresh entry a cleaner took first makes it again.  No root needed: flock conflicts between two
open files of one process as between two processes."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from podrun import fsutil
from podrun.image.store import Store


@pytest.mark.parametrize("directory", [False, True], ids=["file", "directory"])
def test_a_live_writers_entry_is_kept_and_a_dead_ones_removed(tmp_path: Path, directory: bool) -> None:
    entry = tmp_path / "entry"
    fd = fsutil.create_locked(entry, directory)
    if directory:
        (entry / "inside").write_text("x")
    assert fsutil.writer_alive(entry)
    assert not fsutil.remove_if_abandoned(entry) and entry.exists()
    os.close(fd)  # what a kill -9 does to it
    assert not fsutil.writer_alive(entry)
    assert fsutil.remove_if_abandoned(entry) and not os.path.lexists(entry)
    assert not fsutil.remove_if_abandoned(entry)  # gone: nothing to do


def test_a_writer_whose_new_entry_a_cleaner_took_makes_it_again(tmp_path: Path) -> None:
    """The cleaner holds the entry's lock (it judged the entry abandoned in the instant between
    the writer's mkdir and flock) and deletes it: the writer waits, then makes a new one."""
    entry = tmp_path / ".uuid.tmp"
    entry.mkdir()
    cleaner = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(cleaner, fcntl.LOCK_EX)

    def clean() -> None:
        time.sleep(0.2)
        entry.rmdir()
        os.close(cleaner)

    thread = threading.Thread(target=clean)
    thread.start()
    fd = fsutil.create_locked(entry, directory=True)
    thread.join()
    try:
        # the old directory was deleted under the writer, so the one it holds is a new one
        assert os.path.samestat(os.fstat(fd), entry.stat()) and fsutil.writer_alive(entry)
    finally:
        os.close(fd)


def test_an_entry_renamed_away_is_not_removed(tmp_path: Path) -> None:
    entry, final = tmp_path / "entry", tmp_path / "final"
    fd = fsutil.create_locked(entry)
    os.rename(entry, final)
    os.close(fd)
    assert not fsutil.remove_if_abandoned(entry) and final.exists()


def test_a_symlink_in_place_of_an_entry_is_removed_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    link = tmp_path / "entry"
    link.symlink_to(target)
    assert not fsutil.writer_alive(link)
    assert fsutil.remove_if_abandoned(link) and not os.path.lexists(link)
    assert target.read_text() == "keep"


def test_store_temp_entries_survive_clean_temp_and_fsck_while_their_writer_lives(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.ensure()
    dead = store.tmp / "blob-dead.123"
    dead.write_bytes(b"partial")  # a killed writer's (or an older podrun's) leftover
    with store.temp_entry("layer-abc", directory=True) as (work, _):
        assert work.parent == store.tmp and work.is_dir()
        assert store.fsck(verify_content=False) == [
            "temporary leftover blob-dead.123 (the next fetch or podrun image gc removes it)"]
        assert store.clean_temp() == ["blob-dead.123"]
        assert os.listdir(store.tmp) == [work.name]
        assert store.fsck(verify_content=False) == []
    assert os.listdir(store.tmp) == []  # removed at the end of the block


def test_store_temp_entry_renamed_into_place_stays(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.ensure()
    final = tmp_path / "data" / "store" / "blobs" / "sha256" / "x"
    with store.temp_entry("blob-x") as (path, fd):
        os.write(fd, b"content")
        os.rename(path, final)
    assert final.read_bytes() == b"content" and os.listdir(store.tmp) == []
