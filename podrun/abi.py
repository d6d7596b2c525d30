"""The stage contract (ABI 1, man/podrun-stage1.7): every name stage0 and a stage1 flavor share.

rkt keeps these in ``common/common.go`` (``EnvLockFd``, the stage1 manifest and its entrypoint
names); here it is this module.  stage0 builds the entrypoint's argv and environment with
:func:`run_argv`, :func:`enter_argv` and :func:`stage1_env`; stage1 parses them with
:func:`parse_run_argv`, :func:`parse_enter_argv`, :func:`take_lock_fd`, :func:`take_manifest_doc` and
:func:`data_dir`;
:func:`entrypoint` finds a flavor's executable and refuses a flavor of another ABI.

stage1 imports this module on the warm path: ``os`` and ``sys`` only (tests/unit/test_hot_path.py).
"""

from __future__ import annotations

import os
import sys

from podrun.errors import NotFoundError, PodrunError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

ABI = 1  # the "abi" a flavor's manifest.json must name
STAGE1_FLAVORS = ("default", "fly", "oci")
FLAVOR_MANIFEST = "manifest.json"  # in STAGES/FLAVOR/: {"name", "abi", "entrypoints"}
RUN, ENTER = "run", "enter"  # the entrypoints of ABI 1

# The environment stage0 hands to an entrypoint.
ENV_LOCK_FD = "PODRUN_LOCK_FD"  # the pod lock's fd (run): held for the pod's whole life
ENV_PYTHONPATH = "PODRUN_PYTHONPATH"  # podrun's import root (the entrypoint runs as python -I -S)
ENV_SITE_PATH = "PODRUN_SITE_PATH"  # stage0's site-packages (python-systemd, for the journal)
ENV_DIR = "PODRUN_DIR"  # the data dir (--dir), absolute
ENV_RUNTIME_DIR = "PODRUN_RUNTIME_DIR"  # /run/podrun unless set (netns files, boot id)
ENV_STAGES_DIR = "PODRUN_STAGES_DIR"  # where the flavors are (stage0 only)
# ``run --ready-fd N``: the descriptor (s6's notification-fd) stage1 writes "\n" to once the pod
# is ready, then closes.  An fd of this process's caller, so never part of the (durable) manifest.
ENV_READY_FD = "PODRUN_READY_FD"
# The decided manifest (pod.json's document) as marshal data in a memfd, so that stage1 needs
# no json (whose import, through re, costs ~13 ms of every start); podrun's own flavors only
# (an other flavor reads pod.json).  Optional: without it stage1 reads pod.json.
ENV_MANIFEST_FD = "PODRUN_MANIFEST_FD"
MANIFEST_FD_LIMIT = 16 << 20  # bytes; pod.json is bounded by stage0's own checks far below this

POD_DIR, DEBUG, APP = "--pod-dir", "--debug", "--app"


class AbiError(PodrunError):
    """A flavor that does not speak this podrun's ABI, or an argv not of the contract
    (exit code 254: an installation fault, not the user's input)."""


class RunArgs:
    """``ENTRYPOINT --pod-dir DIR [--debug]``."""

    __slots__ = ("debug", "pod_dir")

    def __init__(self, pod_dir: str, debug: bool = False) -> None:
        self.pod_dir = pod_dir
        self.debug = debug


class EnterArgs:
    """``ENTRYPOINT --pod-dir DIR --app NAME -- CMD...``."""

    __slots__ = ("app", "command", "pod_dir")

    def __init__(self, pod_dir: str, app: str, command: list[str]) -> None:
        self.pod_dir = pod_dir
        self.app = app
        self.command = command


def _interpreter(entry: Path) -> list[str]:
    # -I -S: no site-packages (stage1 needs only podrun; skipping site saves ~20 ms a start)
    return [sys.executable, "-I", "-S", str(entry)]


def run_argv(entry: Path, args: RunArgs) -> list[str]:
    """The argv that execs the ``run`` entrypoint *entry*."""
    return [*_interpreter(entry), POD_DIR, args.pod_dir, *([DEBUG] if args.debug else [])]


def enter_argv(entry: Path, args: EnterArgs) -> list[str]:
    """The argv that execs the ``enter`` entrypoint *entry*."""
    return [*_interpreter(entry), POD_DIR, args.pod_dir, APP, args.app, "--", *args.command]


def parse_run_argv(argv: list[str]) -> RunArgs:
    """The ``run`` entrypoint's arguments (``sys.argv[1:]``); AbiError for anything else."""
    if len(argv) in (2, 3) and argv[0] == POD_DIR and argv[1] and argv[2:] in ([], [DEBUG]):
        return RunArgs(argv[1], debug=len(argv) == 3)
    raise AbiError(f"stage1 run: arguments {argv!r} are not `{POD_DIR} DIR [{DEBUG}]` (ABI {ABI})")


def enter_argv_or_exit(argv: list[str]) -> EnterArgs:
    """:func:`parse_enter_argv` for an ``enter`` entrypoint: anything else is said in one line
    and ends it with 254."""
    try:
        return parse_enter_argv(argv)
    except AbiError as exc:
        sys.stderr.write(f"podrun: enter: {exc}\n")
        sys.exit(AbiError.exit_code)


def parse_enter_argv(argv: list[str]) -> EnterArgs:
    """The ``enter`` entrypoint's arguments (``sys.argv[1:]``); AbiError for anything else."""
    if len(argv) >= 5 and argv[0] == POD_DIR and argv[1] and argv[2] == APP and argv[3] and argv[4] == "--":
        return EnterArgs(argv[1], argv[3], argv[5:])
    raise AbiError(f"stage1 enter: arguments {argv[:6]!r} are not `{POD_DIR} DIR {APP} NAME -- CMD...` (ABI {ABI})")


def stage1_env(data_dir: str, lock_fd: int | None = None, manifest_fd: int | None = None,
               ready_fd: int | None = None) -> dict[str, str]:
    """stage0's environment for an entrypoint: its own, plus podrun's import root, the
    site-packages, the data dir (absolute) and the lock fd, the manifest's memfd and the
    readiness fd when they are handed over."""
    import podrun

    site = os.pathsep.join(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    root = os.path.dirname(os.path.dirname(os.path.abspath(podrun.__file__)))
    env = dict(os.environ)
    env.update({ENV_PYTHONPATH: root, ENV_SITE_PATH: site, ENV_DIR: os.path.abspath(data_dir)})
    env.pop(ENV_LOCK_FD, None)
    env.pop(ENV_MANIFEST_FD, None)
    env.pop(ENV_READY_FD, None)
    if ready_fd is not None:
        env[ENV_READY_FD] = str(ready_fd)
    if lock_fd is not None:
        env[ENV_LOCK_FD] = str(lock_fd)
    if manifest_fd is not None:
        env[ENV_MANIFEST_FD] = str(manifest_fd)
    return env


def manifest_memfd(doc: dict[str, object]) -> int:
    """stage0: an inheritable memfd holding *doc* (a manifest's ``to_doc()``) as marshal data,
    at offset 0, for ``PODRUN_MANIFEST_FD``.  marshal needs no import in stage1, and the data
    never leaves this process and the one it execs (no file a third party could write)."""
    import marshal

    data = marshal.dumps(doc)
    if len(data) > MANIFEST_FD_LIMIT:
        raise AbiError(f"the pod manifest is too large to hand over ({len(data)} bytes)")
    fd = os.memfd_create("podrun-manifest", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    return fd


def take_manifest_doc() -> dict[str, object] | None:
    """stage1: the manifest document stage0 handed over in ``PODRUN_MANIFEST_FD`` (the fd closed,
    the variable removed: apps never see either), or None when it handed none over."""
    import marshal

    text = os.environ.pop(ENV_MANIFEST_FD, "")
    if not text:
        return None
    try:
        fd = int(text)
        chunks = []
        size = 0
        try:
            while size <= MANIFEST_FD_LIMIT and (chunk := os.read(fd, 1 << 16)):
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except (ValueError, OSError):
        raise AbiError(f"stage1: {ENV_MANIFEST_FD}={text!r} is not an open descriptor of the manifest") from None
    if size > MANIFEST_FD_LIMIT:
        raise AbiError(f"stage1: the manifest in {ENV_MANIFEST_FD} is larger than {MANIFEST_FD_LIMIT} bytes")
    try:
        doc = marshal.loads(b"".join(chunks))  # noqa: S302 (written by stage0, the process that exec'd us)
    except (ValueError, EOFError, TypeError):
        doc = None
    if not isinstance(doc, dict):
        raise AbiError(f"stage1: {ENV_MANIFEST_FD} holds no manifest document")
    return doc


def _take_fd(name: str, what: str) -> int:
    """The descriptor stage0 named in $*name*, removed from the environment and made
    close-on-exec; -1 when absent."""
    text = os.environ.pop(name, "")
    if not text:
        return -1
    try:
        fd = int(text)
        os.set_inheritable(fd, False)
    except (ValueError, OSError):
        raise AbiError(f"stage1: {name}={text!r} is not {what}") from None
    return fd


def take_lock_fd() -> int:
    """stage1: the pod lock's fd, removed from the environment (apps never see it) and not
    inherited by default (a flavor whose app is the pod re-enables that); -1 when absent."""
    return _take_fd(ENV_LOCK_FD, "the pod lock's open descriptor")


def take_ready_fd() -> int:
    """stage1: the ``--ready-fd`` descriptor, removed from the environment and made
    close-on-exec (apps never get it); -1 when none was handed over."""
    return _take_fd(ENV_READY_FD, "an open descriptor")


def data_dir() -> str:
    """stage1: the data dir stage0 named in PODRUN_DIR (AbiError when it did not)."""
    path = os.environ.get(ENV_DIR, "")
    if not os.path.isabs(path):
        raise AbiError(f"stage1: {ENV_DIR} is not set to an absolute data dir (stage0 sets it; ABI {ABI})")
    return path


def entrypoint(stages: Path, flavor: str, name: str) -> Path:
    """The executable for entrypoint *name* of *flavor* in the stages dir *stages*, after checking
    the flavor's manifest names this ABI (a flavor of another podrun would misread pod.json)."""
    import json

    # A flavor and its entrypoints are plain names inside the stages dir: a pod.json (or a
    # flavor manifest) naming "../x" must never make podrun exec something else as root.
    if not _plain_name(flavor):
        raise UsageError(f"invalid stage1 flavor {flavor!r}")
    flavor_dir = stages / flavor
    path = flavor_dir / FLAVOR_MANIFEST
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise NotFoundError(f"stage1 flavor {flavor!r} is not installed in {flavor_dir} ({exc})") from None
    if not isinstance(doc, dict):
        raise AbiError(f"{path}: not a stage1 flavor manifest (a JSON object)")
    abi = doc.get("abi")
    if type(abi) is not int or abi != ABI:
        raise AbiError(f"{path}: stage1 flavor {flavor!r} has ABI {abi!r}; this podrun speaks ABI {ABI}")
    entries = doc.get("entrypoints")
    if not isinstance(entries, dict) or name not in entries:
        raise UsageError(f"stage1 flavor {flavor!r} has no {name!r} entrypoint")
    file = entries[name]
    if not isinstance(file, str) or not _plain_name(file):
        raise UsageError(f"stage1 flavor {flavor!r}: entrypoint {name!r} is not a file name in {flavor_dir}")
    return flavor_dir / file


def _plain_name(text: str) -> bool:
    return bool(text) and text not in (".", "..") and "/" not in text and "\0" not in text and text.isprintable()
