"""The pure parts of reusing stored images for local sources: reuse keys and source memos
(docs/store.md, "Reuse of local sources")."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from podrun.errors import StoreError
from podrun.image.digest import Digest
from podrun.image.source import content_matches, reuse_key
from podrun.image.store import ImageRecord, SourceMemo, Store

D1 = Digest("sha256", "1" * 64)
D2 = Digest("sha256", "2" * 64)


def test_reuse_key_separates_parts() -> None:
    # Length prefixes: moving bytes from one part to the next gives another key.
    assert reuse_key("ab", "c") != reuse_key("a", "bc")
    assert reuse_key("a", "") != reuse_key("a")
    assert reuse_key("x", b"y") == reuse_key("x", "y")
    assert len(reuse_key("x")) == 64 and reuse_key("x") == reuse_key("x")
    # each part as LENGTH:BYTES, the length in decimal (keys of memos already stored stay valid)
    assert reuse_key("ab", b"", "c" * 10) == hashlib.sha256(b"2:ab0:10:" + b"c" * 10).hexdigest()


def test_content_matches() -> None:
    data = b"manifest"
    assert not content_matches(data, D1)

    real = Digest("sha256", hashlib.sha256(data).hexdigest())
    assert content_matches(data, real)
    assert content_matches(data, Digest("sha512", hashlib.sha512(data).hexdigest()))
    assert not content_matches(data + b" ", real)


def test_memo_round_trip_and_damage(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.ensure()
    key = reuse_key("k")
    assert store.source_memo(key) is None
    memo = SourceMemo(D1, ((D1, 10), (D2, 20)), "docker.io/library/demo:v1")
    store.remember_source(key, memo)
    assert store.source_memo(key) == memo
    path = tmp_path / "data" / "store" / "sources" / key
    assert path.stat().st_mode & 0o777 == 0o600
    for bad in (b"", b"{", b"[]", b'{"image": "x", "checks": [], "name": null}',
                json.dumps({"image": str(D1), "checks": [[str(D2), -1]], "name": None}).encode(),
                json.dumps({"image": str(D1), "checks": [[str(D2), True]], "name": None}).encode(),
                json.dumps({"image": str(D1), "checks": [], "name": 5}).encode(),
                b"x" * (1 << 17)):
        path.write_bytes(bad)
        assert store.source_memo(key) is None, bad[:40]


@pytest.mark.parametrize("key", ["", "../x", "A" * 64, "X" * 64, "g" * 64, "0" * 63, "0" * 65, "/" + "0" * 63])
def test_memo_keys_are_hex_digests(tmp_path: Path, key: str) -> None:
    store = Store(tmp_path / "data")
    store.ensure()
    assert store.source_memo(key) is None
    with pytest.raises(ValueError, match="^" + re.escape(f"invalid source key {key!r}") + "$"):
        store.remember_source(key, SourceMemo(D1, (), None))


def test_gc_drops_stale_and_damaged_memos(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.ensure()
    store.remember_source(reuse_key("gone"), SourceMemo(D1, (), None))
    damaged = tmp_path / "data" / "store" / "sources" / reuse_key("damaged")
    damaged.write_bytes(b"{")
    leftover = tmp_path / "data" / "store" / "sources" / ".x.tmp"
    leftover.write_bytes(b"")
    removed = store.gc()
    assert sorted(r for r in removed if r.startswith("source memo")) == sorted(
        f"source memo {name}" for name in (".x.tmp", reuse_key("damaged"), reuse_key("gone")))
    assert list((tmp_path / "data" / "store" / "sources").iterdir()) == []


def test_memo_fields() -> None:
    """Sizes of 0 are sizes; a negative or non-integer size, or a name that is not a string, is damage."""
    memo = SourceMemo(D1, ((D2, 0),), None)
    assert SourceMemo.from_json(memo.to_json()) == memo
    for checks in ([[str(D2), -1]], [[str(D2), 1.0]], [[str(D2), True]]):
        with pytest.raises(ValueError, match="^bad size$"):
            SourceMemo.from_json({"image": str(D1), "checks": checks, "name": None})
    with pytest.raises(ValueError, match="^bad name$"):
        SourceMemo.from_json({"image": str(D1), "checks": [], "name": ["demo"]})


def _memo_of_size(size: int, raw: str = "n") -> bytes:
    """A valid memo document of exactly *size* bytes, its name made of *raw* characters."""
    data = json.dumps({"image": str(D1), "checks": [], "name": ""}, ensure_ascii=False).encode()
    count, rest = divmod(size - len(data), len(raw.encode()))
    assert rest == 0
    return json.dumps({"image": str(D1), "checks": [], "name": raw * count}, ensure_ascii=False).encode()


def test_memo_read_is_bounded_in_bytes(tmp_path: Path) -> None:
    """A memo is read up to a bound (64 KiB and a byte) counted in bytes: a longer one is cut and
    reads as damage, however few characters it holds."""
    store = Store(tmp_path / "data")
    store.ensure()
    key = reuse_key("k")
    store.remember_source(key, SourceMemo(D1, (), None))
    path = tmp_path / "data" / "store" / "sources" / key
    limit = 1 << 16
    path.write_bytes(_memo_of_size(limit))
    memo = store.source_memo(key)
    assert memo is not None and memo.name == "n" * (limit - len(_memo_of_size(0)))
    for size, raw in ((limit + 2, "n"), (limit + 2, "é"), (1 << 20, "n")):
        path.write_bytes(_memo_of_size(size, raw))
        assert store.source_memo(key) is None, (size, raw)


def test_memos_share_one_private_directory(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.ensure()
    for name in ("a", "b"):
        store.remember_source(reuse_key(name), SourceMemo(D1, (), name))
    assert [store.source_memo(reuse_key(name)) for name in ("a", "b")] == [
        SourceMemo(D1, (), "a"), SourceMemo(D1, (), "b")]
    assert (tmp_path / "data" / "store" / "sources").stat().st_mode & 0o777 == 0o700


def test_memos_are_not_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A memo is a cache: losing it in a power cut costs one full read, so no fsync is paid for it."""
    store = Store(tmp_path / "data")
    store.ensure()

    def no_fsync(fd: int) -> None:
        raise AssertionError("fsync of a source memo")

    monkeypatch.setattr(os, "fsync", no_fsync)
    store.remember_source(reuse_key("k"), SourceMemo(D1, (), None))
    assert store.source_memo(reuse_key("k")) == SourceMemo(D1, (), None)


def test_a_memo_that_cannot_be_recorded_is_a_store_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.ensure()
    (tmp_path / "data" / "store" / "sources").write_bytes(b"")  # not a directory
    with pytest.raises(StoreError, match="^recording a local source: File exists"):
        store.remember_source(reuse_key("k"), SourceMemo(D1, (), None))


def test_gc_keeps_the_memos_of_stored_images(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.ensure()
    store.write_image(ImageRecord(D2, "application/vnd.oci.image.manifest.v1+json", 2, D2, 2, (), None, 0.0, "", 0))
    store.remember_source(reuse_key("kept"), SourceMemo(D2, ((D2, 2),), "demo:v1"))
    store.remember_source(reuse_key("gone"), SourceMemo(D1, (), None))
    assert [r for r in store.gc() if r.startswith("source memo")] == [f"source memo {reuse_key('gone')}"]
    assert store.source_memo(reuse_key("kept")) == SourceMemo(D2, ((D2, 2),), "demo:v1")
