"""The rules of podrun's start-up path (stage0's ``run`` and stage1), and the two helpers it shares.

Importing ``dataclasses`` costs ~17 ms here (it pulls in inspect, ast, dis, enum, re), ``json``
~9 ms (re, enum), ``socket`` ~8 ms, ``hashlib`` ~4 ms (OpenSSL): together more than everything
stage1 does before it forks the apps.  So, as mkosi's ``sandbox.py`` does, the modules on the
run path are written to need little: records are plain classes with ``__slots__`` and an
explicit, typed ``__init__`` (``Record`` below adds equality, hash and repr), kernel calls go
through ``os`` and ``podrun.isolation``, and a standard module that is needed (``json``,
``hashlib``, ``socket``) is imported where it is used, so only the runs that need it pay for it.
``signal`` (for its handlers) is the one such module stage1 always needs.
``tests/unit/test_hot_path.py`` lists every module the stage1 path imports.

No clone of a standard module and no private CPython module lives here: type checkers check
what runs.
"""

from __future__ import annotations


class Record:
    """Base of the run path's plain records: ``==``, ``hash`` and ``repr`` over the fields a
    subclass names in ``__slots__`` (its ``__init__`` sets them all).  Records are treated as
    immutable (their fields are ``Final`` to type checkers); equal records hash equal."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{self.__class__.__qualname__}({args})"


def load_site_packages() -> None:
    """Make stage0's site-packages importable (``PODRUN_SITE_PATH``; idempotent).  stage1 runs
    without them (``python -I -S``); the one part that needs a third-party package
    (python-systemd, for the journal) calls this first, so pods that do not need them never search there."""
    import os
    import sys

    for p in os.environ.get("PODRUN_SITE_PATH", "").split(os.pathsep):
        if p and p not in sys.path:
            sys.path.append(p)


__all__ = ["Record", "load_site_packages"]
