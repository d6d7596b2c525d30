"""Parsing of ``podrun run`` / ``prepare`` image-and-app arguments (rkt's syntax)::

    IMAGE [app flags] [-- ARGS…] [--- IMAGE [app flags] [-- ARGS…]]…

and of the value syntaxes of run flags (``--volume``, ``--mount``, sizes, CPU, ids), bounded by
what the kernel takes.  Pure policy: no I/O, every error a UsageError naming the flag and value
(``check_identity`` raises the caller's error type for values from an image).
"""

from __future__ import annotations

import re

from podrun.errors import PodrunError, UsageError
from podrun.lean import Record
from podrun.model.manifest import is_app_name

VALUE_FLAGS = (
    "--exec", "--name", "--user", "--group", "--working-dir", "--environment", "--mount", "--memory", "--cpu",
    "--pids-limit", "--caps-retain", "--caps-remove", "--seccomp", "--supplementary-gids", "--stop-signal",
)
BOOL_FLAGS = ("--readonly-rootfs", "--no-new-privileges")
REPEATED = ("--environment", "--mount")


class AppArgs(Record):
    image: str
    flags: dict[str, str]
    environment: list[str]
    mounts: list[str]
    args: list[str] | None  # after "--": replaces the image's Cmd

    __slots__ = ("image", "flags", "environment", "mounts", "args")

    def __init__(
        self, image: str,
        flags: dict[str, str] | None = None,
        environment: list[str] | None = None,
        mounts: list[str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.image = image
        self.flags = dict() if flags is None else flags
        self.environment = list() if environment is None else environment
        self.mounts = list() if mounts is None else mounts
        self.args = args


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


_SIZE_RE = re.compile(r"^([0-9]+)([KMGT]i?)?B?$", re.IGNORECASE)  # ASCII digits only: "٣M" is no size
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
KIB, MIB = 1 << 10, 1 << 20
# The kernel reads memory.max/memory.limit_in_bytes as a u64 that silently wraps past 2^64
# (16777216T became a 0-byte limit); podman's sizes are int64.
SIZE_MAX = (1 << 63) - 1
MEMORY_MIN = 6 * MIB  # Docker's minimum: below it an app does not even start
# cpu.max / cpu.cfs_quota_us: the kernel refuses a quota under 1 ms, i.e. 10m with podrun's 100 ms
# period (Docker's 0.01 CPU minimum too); the top is far beyond any machine and within the kernel's.
CPU_MIN_MILLIS, CPU_MAX_MILLIS = 10, 1_000_000 * 1000
PIDS_MAX = 1 << 22  # PID_MAX_LIMIT: pids.max refuses more (EINVAL)
# runc's maxID: setresuid/setgroups read -1 (4294967295) as "unchanged", and ids past 2^31-1
# are refused by runc and unmapped by user namespaces.
ID_MAX = (1 << 31) - 1
NGROUPS_MAX = 65536  # setgroups(2) refuses longer lists
LOG_MAX_SIZE_MIN = 8 * KIB  # conmon's read buffer: podman refuses smaller positive log_size_max
_CPU_RE = re.compile(r"^(?:([0-9]+)m|([0-9]*)(?:\.([0-9]{1,3}))?)$")


def _size_text(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def parse_size(flag: str, text: str, minimum: int = 1, maximum: int = SIZE_MAX) -> int:
    """``128M``, ``1G``, ``512Ki``, ``1048576`` -> bytes (binary units, as rkt and podman), in
    [*minimum*, *maximum*]."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise UsageError(f"invalid {flag} value {text!r}: expected a size such as 128M")
    unit = (m.group(2) or "").upper().rstrip("I")
    value = int(m.group(1)) * _UNITS[unit]
    if value <= 0:
        raise UsageError(f"invalid {flag} value {text!r}: must be positive")
    if value < minimum:
        raise UsageError(f"invalid {flag} value {text!r}: must be at least {_size_text(minimum)}")
    if value > maximum:
        raise UsageError(f"invalid {flag} value {text!r}: must be at most {maximum} bytes")
    return value


def parse_memory(flag: str, text: str) -> int:
    return parse_size(flag, text, MEMORY_MIN)


def parse_log_max_size(flag: str, text: str) -> int:
    """``--log-max-size``: a size of at least 8K, or ``-1`` (any negative number, as podman's
    ``log_size_max``) for no limit, returned as -1."""
    t = text.strip()
    if t.startswith("-") and t[1:].isascii() and t[1:].isdigit() and int(t[1:]) > 0:
        return -1
    if t == "0":
        raise UsageError(f"invalid {flag} value {text!r}: must be at least {_size_text(LOG_MAX_SIZE_MIN)}",
                         hint="-1 means no limit")
    return parse_size(flag, t, LOG_MAX_SIZE_MIN)


def parse_cpu(flag: str, text: str) -> int:
    """``500m`` (millicores) or ``1.5`` (cores, at most 3 decimals) -> millicores."""
    m = _CPU_RE.match(text.strip())
    millis, cores, fraction = m.groups() if m else (None, None, None)
    if not (millis or cores or fraction):
        raise UsageError(f"invalid {flag} value {text!r}: expected e.g. 500m or 1.5")
    value = int(millis) if millis else int(cores or "0") * 1000 + int((fraction or "").ljust(3, "0"))
    if not CPU_MIN_MILLIS <= value <= CPU_MAX_MILLIS:
        raise UsageError(f"invalid {flag} value {text!r}: must be from {CPU_MIN_MILLIS}m (0.01 CPU) to "
                         f"{CPU_MAX_MILLIS // 1000} CPUs")
    return value


def parse_int(flag: str, text: str, minimum: int, maximum: int) -> int:
    """A decimal integer (ASCII digits) in [*minimum*, *maximum*]."""
    if not (text.isascii() and text.isdigit()) or not minimum <= int(text) <= maximum:
        raise UsageError(f"invalid {flag} value {text!r}: expected an integer from {minimum} to {maximum}")
    return int(text)


def parse_pids_limit(flag: str, text: str) -> int:
    return parse_int(flag, text, 1, PIDS_MAX)


def parse_gids(flag: str, text: str) -> tuple[int, ...]:
    """``5,7`` -> (5, 7): group ids from 0 to ID_MAX, at most NGROUPS_MAX."""
    gids = tuple(parse_int(flag, g, 0, ID_MAX) for g in text.split(",") if g)
    if len(gids) > NGROUPS_MAX:
        raise UsageError(f"invalid {flag}: {len(gids)} groups, at most {NGROUPS_MAX}")
    return gids


def check_identity(what: str, text: str, error: type[PodrunError] = UsageError) -> str:
    """A user or group: a number from 0 to ID_MAX, or a name to look up in the image's
    /etc/passwd or /etc/group (stage1).  What stage1 takes for a number (signs and digits,
    podrun.stage2.app) must be one sign at most, ASCII digits and in range: -1 and 4294967295
    (-1 to setresuid: "unchanged") are refused, as is any id past ID_MAX.  Names that no passwd
    line can hold (empty, ':', control characters) are refused too."""
    if text.lstrip("+-").isdigit():
        digits = text[1:] if text[:1] in "+-" else text
        if not (digits.isascii() and digits.isdigit()) or not 0 <= int(text) <= ID_MAX:
            raise error(f"invalid {what} {text!r}: an id must be in the range 0-{ID_MAX} (-1 would mean "
                        "\"unchanged\")")
    elif not text or ":" in text or not text.isprintable():
        raise error(f"invalid {what} {text!r}: not a user or group name")
    return text


def check_app_name(name: str) -> str:
    if not is_app_name(name):
        raise UsageError(f"invalid app name {name!r}: lowercase letters, digits and '-', at most 63")
    return name


def check_abs_path(flag: str, path: str) -> str:
    if not path.startswith("/") or "\0" in path or ".." in path.split("/"):
        raise UsageError(f"invalid {flag} path {path!r}: must be absolute, without '..'")
    return path


# Linux signal numbers (the same on x86 and the generic ABI of arm64 and others), for StopSignal
# and --stop-signal, as Docker and podman name them; SIGRTMIN is glibc's (34), as in moby.
SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
    "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17,
    "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
    "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}
SIGRTMIN, SIGRTMAX = 34, 64


def parse_signal(what: str, text: str) -> int:
    """A signal from a name (``SIGQUIT``, ``quit``, ``SIGRTMIN+3``) or a number, as the image's
    StopSignal or ``--stop-signal`` give it; UsageError naming *what* otherwise."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        number = int(value)
    else:
        name = value.upper().removeprefix("SIG")
        base, plus, offset = name.partition("+")
        base_m, minus, offset_m = name.partition("-")
        if name in SIGNALS:
            number = SIGNALS[name]
        elif plus and base == "RTMIN" and offset.isascii() and offset.isdigit():
            number = SIGRTMIN + int(offset)
        elif minus and base_m == "RTMAX" and offset_m.isascii() and offset_m.isdigit():
            number = SIGRTMAX - int(offset_m)
        elif name in ("RTMIN", "RTMAX"):
            number = SIGRTMIN if name == "RTMIN" else SIGRTMAX
        else:
            raise UsageError(f"{what} {text!r} is not a signal name or number")
    if not 1 <= number <= SIGRTMAX:
        raise UsageError(f"{what} {text!r} is out of range (signals are 1-{SIGRTMAX})")
    return number
