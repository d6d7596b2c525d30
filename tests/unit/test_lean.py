"""podrun.lean's stand-ins behave like the standard modules they replace on the start-up path."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from podrun import lean


def _records(dc: Any) -> tuple[type, type]:
    @dc.dataclass(frozen=True)
    class Inner:
        a: int
        b: str = "x"

    make_inner: Any = Inner

    @dc.dataclass(frozen=True)
    class Outer:
        name: str
        inner: Inner = dc.field(default_factory=lambda: make_inner(1))
        items: tuple[Inner, ...] = ()
        tags: list[str] = dc.field(default_factory=list)

    return Inner, Outer


def test_records_match_dataclasses() -> None:
    for dc in (dataclasses, lean):
        Inner, Outer = _records(dc)
        o = Outer("n", items=(Inner(2, "y"),))
        assert o == Outer("n", Inner(1), (Inner(2, "y"),), [])
        assert o != Outer("m")
        assert hash(Inner(3)) == hash(Inner(3, "x"))
        assert dc.asdict(o) == {"name": "n", "inner": {"a": 1, "b": "x"}, "items": ({"a": 2, "b": "y"},), "tags": []}
        assert Outer("a").tags is not Outer("b").tags  # a fresh default per instance
        assert repr(Inner(4)).endswith("Inner(a=4, b='x')")
        with pytest.raises(AttributeError):
            o.name = "other"
        with pytest.raises(TypeError):
            Inner()
        with pytest.raises(TypeError):
            Inner(1, b="y", c=2)
        with pytest.raises(TypeError):
            Inner(1, a=2)


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "\\u00e9\\n", null, true, false]}', " [] ", '"s"', "-3", "1e3"])
def test_json_loads_matches_json(text: str) -> None:
    assert lean.json_loads(text) == json.loads(text)
    assert lean.json_loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "[1,]", '"\x01"'])
def test_json_loads_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        lean.json_loads(text)


def test_json_loads_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError, match="NaN"):
        lean.json_loads('{"a": NaN}')


def test_json_dumps_matches_json() -> None:
    doc = {"a": [1, 2.5, "é\n\"", None, True, False, (1, 2)], "b": {"c": -0.1}, "d": 10**20}
    assert lean.json_dumps(doc) == json.dumps(doc, separators=(",", ":"))
    for bad in (float("nan"), float("inf"), {1: 2}, object()):
        with pytest.raises((TypeError, ValueError)):
            lean.json_dumps(bad)


def test_cache_memoizes() -> None:
    calls: list[int] = []

    @lean.cache
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    assert double(2) == double(2) == 4
    assert calls == [2]
    double.cache_clear()
    assert double(2) == 4
    assert calls == [2, 2]


def test_order_and_sha256() -> None:
    import hashlib

    modules: tuple[Any, ...] = (dataclasses, lean)
    for dc in modules:
        @dc.dataclass(frozen=True, order=True)
        class Version:
            major: int
            minor: int

        v: Any = Version
        assert sorted([v(1, 2), v(0, 9), v(1, 0)]) == [v(0, 9), v(1, 0), v(1, 2)]
        assert v(1, 0) <= v(1, 0) < v(1, 1)
    assert lean.sha256(b"podrun").hexdigest() == hashlib.sha256(b"podrun").hexdigest()


def test_json_loads_refuses_truncated_documents_without_the_json_package() -> None:
    """As stage1 runs it: the standard json package not loaded (its C scanner then reports some
    errors as SystemError), every truncated manifest is a ValueError."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from podrun.lean import json_loads\n"
        "for doc in (b'{\"a\": 1', b'\"abc', b'[1, \"x', b'{\"a\":', b'', b'{\"apps\": [{\"name\": \"x\"'):\n"
        "    try:\n"
        "        json_loads(doc)\n"
        "    except ValueError:\n"
        "        print('refused')\n"
        "print('json' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["refused"] * 6 + ["False"], out.stdout + out.stderr
