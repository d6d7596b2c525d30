"""Cheap stand-ins for standard modules on podrun's start-up path (stage1 above all).

Importing ``dataclasses`` costs ~17 ms here (it pulls in inspect, ast, dis, enum, re), ``json``
~9 ms (re, enum), ``signal`` and ``socket`` ~5-8 ms each (enum), ``functools``/``contextlib``
~4-5 ms: together more than everything stage1 does before it forks the apps.  Modules on the
hot path take these instead (``tests/unit/test_hot_path.py`` keeps the heavy modules out):

- ``dataclass``, ``field``, ``asdict``: frozen records.  Type checkers see the standard
  ``dataclasses`` (the ``TYPE_CHECKING`` branch), so declarations are checked as dataclasses;
  at run time a small decorator provides ``__init__`` (positional or keyword, defaults,
  ``default_factory``), ``==``, ``hash``, ``repr`` and immutability.  No inheritance, no
  ``__post_init__``, no ``InitVar``: the records that use it do not need them.  ``order=True``
  compares the fields as a tuple.
- ``sha256``: the built-in hash without hashlib's OpenSSL loading.
- ``cache``: ``functools.cache`` for positional, hashable arguments (``cache_clear`` kept).
- ``signal``: the C module ``_signal`` (same functions, constants are plain ints).
- ``json_loads``: the C scanner of the standard json package without its regex-based wrapper;
  ``json_dumps``: compact output for plain data (dict, list, tuple, str, int, float, bool, None).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from dataclasses import asdict, dataclass, field
    from functools import cache
    from hashlib import sha256
    from typing import Any
else:
    try:
        from _sha256 import sha256  # hashlib loads OpenSSL first: ~3 ms more
    except ImportError:
        from hashlib import sha256

    import _signal as signal

    def cache(func):
        memo = {}

        def cached(*args):
            try:
                return memo[args]
            except KeyError:
                value = memo[args] = func(*args)
                return value

        cached.cache_clear = memo.clear
        cached.__wrapped__ = func
        cached.__name__ = func.__name__
        cached.__doc__ = func.__doc__
        return cached

    _MISSING = object()

    class FrozenInstanceError(AttributeError):
        pass

    class _Factory:
        __slots__ = ("make",)

        def __init__(self, make):
            self.make = make

    def field(*, default=_MISSING, default_factory=_MISSING):
        if default_factory is not _MISSING:
            return _Factory(default_factory)
        if default is _MISSING:
            raise TypeError("field() needs default or default_factory")
        return default

    def _build(cls, frozen, order):
        names = tuple(n for n, t in cls.__dict__.get("__annotations__", {}).items()
                      if not str(t).startswith(("ClassVar", "typing.ClassVar")))
        defaults = {}
        for n in names:
            if n in cls.__dict__:
                defaults[n] = cls.__dict__[n]
                if isinstance(defaults[n], _Factory):
                    delattr(cls, n)
        count = len(names)

        def __init__(self, *args, **kwargs):
            if len(args) > count:
                raise TypeError(f"{cls.__name__}() takes {count} arguments but {len(args)} were given")
            for i, n in enumerate(names):
                if i < len(args):
                    if n in kwargs:
                        raise TypeError(f"{cls.__name__}() got multiple values for argument {n!r}")
                    value = args[i]
                elif n in kwargs:
                    value = kwargs.pop(n)
                elif n in defaults:
                    value = defaults[n]
                    if isinstance(value, _Factory):
                        value = value.make()
                else:
                    raise TypeError(f"{cls.__name__}() missing required argument {n!r}")
                object.__setattr__(self, n, value)
            if kwargs:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")

        def _values(self):
            return tuple(getattr(self, n) for n in names)

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return _values(self) == _values(other)

        def __repr__(self):
            return f"{cls.__qualname__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"

        def _set(name, value):  # like dataclasses: what the class defines itself wins
            if name not in cls.__dict__:
                setattr(cls, name, value)

        if order:
            def _cmp(op):
                def compare(self, other):
                    if other.__class__ is not self.__class__:
                        return NotImplemented
                    return op(_values(self), _values(other))
                return compare

            _set("__lt__", _cmp(tuple.__lt__))
            _set("__le__", _cmp(tuple.__le__))
            _set("__gt__", _cmp(tuple.__gt__))
            _set("__ge__", _cmp(tuple.__ge__))
        body = dict(cls.__dict__)
        explicit_hash = "__hash__" in body and not (body["__hash__"] is None and "__eq__" in body)
        cls.__init__ = __init__
        _set("__eq__", __eq__)
        _set("__repr__", __repr__)
        cls.__record_fields__ = names
        cls.__match_args__ = names
        if not explicit_hash:
            cls.__hash__ = (lambda self: hash(_values(self))) if frozen else None
        if frozen:
            def __setattr__(self, name, value):
                raise FrozenInstanceError(f"cannot assign to field {name!r}")

            def __delattr__(self, name):
                raise FrozenInstanceError(f"cannot delete field {name!r}")

            cls.__setattr__ = __setattr__
            cls.__delattr__ = __delattr__
        return cls

    def dataclass(cls=None, /, *, frozen=False, order=False, **_ignored):
        if cls is None:
            return lambda c: _build(c, frozen, order)
        return _build(cls, frozen, order)

    def asdict(obj):
        return _asdict(obj)

    def _asdict(obj):
        names = getattr(obj.__class__, "__record_fields__", None)
        if names is not None:
            return {n: _asdict(getattr(obj, n)) for n in names}
        if isinstance(obj, (list, tuple)):
            return type(obj)(_asdict(v) for v in obj)
        if isinstance(obj, dict):
            return {k: _asdict(v) for k, v in obj.items()}
        return obj


def load_site_packages() -> None:
    """Make stage0's site-packages importable (``PODRUN_SITE_PATH``; idempotent).  stage1 runs
    without them (``python -I -S``); the few parts that need a third-party package (pyroute2,
    python-systemd) call this first, so pods that do not need them never search there."""
    import os
    import sys

    for p in os.environ.get("PODRUN_SITE_PATH", "").split(os.pathsep):
        if p and p not in sys.path:
            sys.path.append(p)


def json_loads(data: str | bytes) -> Any:
    """Parse a JSON document (str or UTF-8 bytes) as ``json.loads`` does."""
    text = data.decode() if isinstance(data, bytes) else data
    try:
        from _json import make_scanner
    except ImportError:  # another Python implementation: the standard module
        import json

        return json.loads(text)
    start, end = _skip_ws(text, 0), len(text)
    while end > start and text[end - 1] in " \t\n\r":
        end -= 1
    try:
        value, stop = make_scanner(_ScanContext)(text, start)  # type: ignore[arg-type]  # duck-typed context
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    except SystemError:
        # The C scanner reports some errors (an unterminated string or object) through
        # json.decoder, which is not loaded here: the document is invalid all the same.
        raise ValueError("invalid JSON (truncated)") from None
    if stop != end:
        raise ValueError(f"invalid JSON: extra data at offset {stop}")
    return value


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\n\r":
        i += 1
    return i


def _no_constant(name: str) -> float:
    raise ValueError(f"invalid JSON constant {name}")


class _ScanContext:
    """What _json.make_scanner reads off a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)
    memo: dict[str, str] = {}


def json_dumps(value: object) -> str:
    """Compact JSON for plain data (the same text as ``json.dumps(value, separators=(",", ":"))``)."""
    from _json import encode_basestring_ascii as quote

    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return str(quote(value))
    if isinstance(value, (int, float)):
        if value * 0 != 0:  # inf or nan (without importing math, a shared library)
            raise ValueError(f"not JSON: {value!r}")
        return int.__repr__(value) if isinstance(value, int) else float.__repr__(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"JSON keys must be strings, not {type(k).__name__}")
            items.append(f"{quote(k)}:{json_dumps(v)}")
        return "{" + ",".join(items) + "}"
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


__all__ = ["asdict", "cache", "dataclass", "field", "json_dumps", "json_loads", "load_site_packages", "sha256",
           "signal"]
