"""The pure parts of reusing stored images for local sources: reuse keys and source memos
(docs/store.md, "Reuse of local sources")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podrun.image.digest import Digest
from podrun.image.source import content_matches, reuse_key
from podrun.image.store import SourceMemo, Store

D1 = Digest("sha256", "1" * 64)
D2 = Digest("sha256", "2" * 64)


def test_reuse_key_separates_parts() -> None:
    # Length prefixes: moving bytes from one part to the next gives another key.
    assert reuse_key("ab", "c") != reuse_key("a", "bc")
    assert reuse_key("a", "") != reuse_key("a")
    assert reuse_key("x", b"y") == reuse_key("x", "y")
    assert len(reuse_key("x")) == 64 and reuse_key("x") == reuse_key("x")


def test_content_matches() -> None:
    import hashlib

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


@pytest.mark.parametrize("key", ["", "../x", "A" * 64, "0" * 63, "0" * 65, "/" + "0" * 63])
def test_memo_keys_are_hex_digests(tmp_path: Path, key: str) -> None:
    store = Store(tmp_path / "data")
    store.ensure()
    assert store.source_memo(key) is None
    with pytest.raises(ValueError):
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
