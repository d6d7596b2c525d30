"""Parsing of ``podrun run`` / ``prepare`` image-and-app arguments (rkt's syntax)::

    IMAGE [app flags] [-- ARGS…] [--- IMAGE [app flags] [-- ARGS…]]…

and of the value syntaxes of run flags (``--volume``, ``--mount``, sizes, CPU).  Pure policy:
no I/O, every error a UsageError naming the flag and value.
"""

from __future__ import annotations

import re

from podrun.errors import UsageError
from podrun.lean import dataclass, field

VALUE_FLAGS = (
    "--exec", "--name", "--user", "--group", "--working-dir", "--environment", "--mount", "--memory", "--cpu",
    "--pids-limit", "--caps-retain", "--caps-remove", "--seccomp", "--supplementary-gids",
)
BOOL_FLAGS = ("--readonly-rootfs", "--no-new-privileges")
REPEATED = ("--environment", "--mount")
APP_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass
class AppArgs:
    image: str
    flags: dict[str, str] = field(default_factory=dict)
    environment: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    args: list[str] | None = None  # after "--": replaces the image's Cmd


def parse_bool(flag: str, text: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise UsageError(f"invalid {flag} value {text!r}: expected true or false")


def split_apps(argv: list[str]) -> list[AppArgs]:
    """Split the positional part of ``podrun run`` into per-app argument sets."""
    apps: list[AppArgs] = []
    i = 0
    while i < len(argv):
        image = argv[i]
        if image.startswith("-"):
            raise UsageError(f"expected an image, got {image!r}", hint="run flags go before the first image")
        app = AppArgs(image)
        i += 1
        while i < len(argv) and argv[i] not in ("--", "---"):
            tok = argv[i]
            name, eq, value = tok.partition("=")
            if name in BOOL_FLAGS:
                app.flags[name] = str(parse_bool(name, value)) if eq else "True"
                i += 1
                continue
            if name not in VALUE_FLAGS:
                raise UsageError(f"unknown app flag {tok!r} for image {image!r}")
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"app flag {name} needs a value")
                value = argv[i + 1]
                i += 1
            i += 1
            if name == "--environment":
                app.environment.append(value)
            elif name == "--mount":
                app.mounts.append(value)
            else:
                app.flags[name] = value
        if i < len(argv) and argv[i] == "--":
            i += 1
            app.args = []
            while i < len(argv) and argv[i] != "---":
                app.args.append(argv[i])
                i += 1
        if i < len(argv) and argv[i] == "---":
            i += 1
            if i >= len(argv):
                raise UsageError("'---' must be followed by an image")
        apps.append(app)
    if not apps:
        raise UsageError("no image given")
    return apps


def parse_kv_list(flag: str, text: str) -> tuple[str, dict[str, str]]:
    """``NAME,key=value,…`` (``--volume``) or ``key=value,…`` (``--mount``) -> (first, dict)."""
    parts = text.split(",")
    first = parts[0] if "=" not in parts[0] else ""
    pairs = parts[1:] if first else parts
    out: dict[str, str] = {}
    for p in pairs:
        k, eq, v = p.partition("=")
        if not eq or not k:
            raise UsageError(f"invalid {flag} {text!r}: {p!r} is not key=value")
        out[k] = v
    return first, out


_SIZE_RE = re.compile(r"^(\d+)([KMGT]i?)?[B]?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(flag: str, text: str) -> int:
    """``128M``, ``1G``, ``512Ki``, ``1048576`` -> bytes (binary units, as rkt and podman)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise UsageError(f"invalid {flag} value {text!r}: expected a size such as 128M")
    unit = (m.group(2) or "").upper().rstrip("I")
    value = int(m.group(1)) * _UNITS[unit]
    if value <= 0:
        raise UsageError(f"invalid {flag} value {text!r}: must be positive")
    return value


def parse_cpu(flag: str, text: str) -> int:
    """``500m`` (millicores) or ``1.5`` (cores) -> millicores."""
    t = text.strip()
    try:
        value = int(t[:-1]) if t.endswith("m") else round(float(t) * 1000)
    except ValueError:
        raise UsageError(f"invalid {flag} value {text!r}: expected e.g. 500m or 1.5") from None
    if value <= 0:
        raise UsageError(f"invalid {flag} value {text!r}: must be positive")
    return value


def parse_positive_int(flag: str, text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise UsageError(f"invalid {flag} value {text!r}: expected a positive integer")
    return int(text)


def check_app_name(name: str) -> str:
    if not APP_NAME_RE.match(name):
        raise UsageError(f"invalid app name {name!r}: lowercase letters, digits and '-', at most 63")
    return name


def check_abs_path(flag: str, path: str) -> str:
    if not path.startswith("/") or "\0" in path or ".." in path.split("/"):
        raise UsageError(f"invalid {flag} path {path!r}: must be absolute, without '..'")
    return path
