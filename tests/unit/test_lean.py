"""podrun.lean's Record: the run path's plain records compare, hash and print by their fields."""

from __future__ import annotations

import pytest

from podrun.image.digest import Digest
from podrun.lean import Record
from podrun.model.manifest import AppSpec, Resources
from podrun.model.netspec import NetSpec


class Pair(Record):
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: str = "x") -> None:
        self.a = a
        self.b = b


class Other(Record):
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: str = "x") -> None:
        self.a = a
        self.b = b


def test_records_compare_hash_and_print_by_fields() -> None:
    assert Pair(1) == Pair(1, "x") and Pair(1) != Pair(2)
    assert Pair(1) != Other(1)  # another class is never equal, even with the same fields
    assert hash(Pair(3)) == hash(Pair(3, "x"))
    assert {Pair(1), Pair(1), Pair(2)} == {Pair(1), Pair(2)}
    assert repr(Pair(4)).endswith("Pair(a=4, b='x')")
    with pytest.raises(AttributeError):  # __slots__: no attribute outside the record's fields
        Pair(1).c = 2  # type: ignore[attr-defined]


def test_run_path_records() -> None:
    app = AppSpec("a", "sha256:" + "0" * 64, "demo", ("/l",), ("/bin/true",), ())
    assert app.resources == Resources() and app.resources is not AppSpec("b", "", "", (), (), ()).resources
    assert NetSpec("default", (("IP", "10.0.0.2"),)).arg("IP") == "10.0.0.2"
    d1, d2 = Digest("sha256", "1" * 64), Digest("sha256", "0" * 64)
    assert sorted([d1, d2]) == [d2, d1]
