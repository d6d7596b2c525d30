"""Host side of the benchmark: peer packages, machine facts, and undoing what the peers leave behind."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# Debian packages of the peers and of the registry the pull scenario serves from.  catatonit is
# podman's pause binary: ``podman pod create`` builds its infra image from it.
PEER_PACKAGES = ("podman", "skopeo", "umoci", "docker-registry", "crun", "runc", "systemd-container", "catatonit",
                 # the start-net scenario: podrun's NAT table, podman's bridge (CNI plugins)
                 "nftables", "containernetworking-plugins")

# Paths the peers create on first use outside the directories the bench gives them:
# containers/image keeps a blob-info cache in /var/lib/containers/cache even for ``oci:`` and
# ``--root`` runs; podman may create its volatile dirs.  Any of these that did not exist before
# the bench is removed after it.
PEER_HOST_PATHS = (
    Path("/var/lib/containers"),
    Path("/run/containers"),
    Path("/run/libpod"),
    Path("/var/tmp/containers"),
    # crun's and runc's state roots (one dir per container, each removed by ``delete``).
    Path("/run/crun"),
    Path("/run/runc"),
)


def missing_packages(packages: tuple[str, ...]) -> list[str]:
    """The Debian packages of *packages* that dpkg does not report as installed."""
    missing = []
    for pkg in packages:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if proc.returncode != 0 or "install ok installed" not in proc.stdout:
            missing.append(pkg)
    return missing


def ensure_packages(packages: tuple[str, ...] = PEER_PACKAGES) -> list[str]:
    """Install the missing ones of *packages* with apt-get; return what was installed."""
    missing = missing_packages(packages)
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env)
    return missing


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0] if out else f"unavailable (exit {proc.returncode})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    """Kernel, CPUs and memory of this machine, and today's date."""
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "pid1": Path("/proc/1/comm").read_text().strip() if Path("/proc/1/comm").exists() else "unknown",
    }


def tool_versions(podrun_bin: Path) -> dict[str, str]:
    """The version line of every program the bench runs.

    Even ``crun --version`` makes crun's state root (/run/crun) on its first use, so the peers'
    side files that were not there before are removed after, as after every scenario.
    """
    with restore_host_paths():
        return _version_lines(podrun_bin)


def _version_lines(podrun_bin: Path) -> dict[str, str]:
    return {
        "podrun": _first_line([str(podrun_bin), "--version"]),
        "podman": _first_line(["podman", "--version"]),
        "skopeo": _first_line(["skopeo", "--version"]),
        "umoci": _first_line(["umoci", "--version"]),
        "docker-registry": _first_line(["docker-registry", "--version"]),
        "crun": _first_line(["crun", "--version"]),
        "runc": _first_line(["runc", "--version"]),
        "systemd-nspawn": _first_line(["systemd-nspawn", "--version"]),
        "conmon": _first_line(["conmon", "--version"]),
        "python": f"Python {platform.python_version()} ({sys.executable})",
    }


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below *path*, deepest first (the order to unmount them in)."""
    prefix = str(path.resolve())
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            # Field 5 is the mount point, with spaces etc. octal-escaped.
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def remove_tree(path: Path) -> None:
    """Unmount everything below *path*, then delete it; never crosses a mount it cannot undo."""
    if not path.exists():
        return
    for point in mounts_below(path):
        subprocess.run(["umount", point], capture_output=True)
    left = mounts_below(path)
    for point in left:
        # A busy mount: detach it lazily so rmtree below cannot walk into it.
        subprocess.run(["umount", "-l", point], capture_output=True)
    if mounts_below(path):
        raise RuntimeError(f"cannot unmount {mounts_below(path)}: not removing {path}")
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def restore_host_paths(paths: tuple[Path, ...] = PEER_HOST_PATHS) -> Iterator[None]:
    """Remove, on exit, each of *paths* that did not exist on entry (the peers' side files)."""
    absent = [p for p in paths if not p.exists() and not p.is_symlink()]
    try:
        yield
    finally:
        for p in absent:
            remove_tree(p)


def tree_bytes(path: Path) -> int:
    """Total size of the regular files below *path* (to check every tool really unpacked)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def file_create_probe(parent: Path, count: int = 2000) -> float:
    """Seconds to create and close *count* empty files in a new dir below *parent* (then removed).

    A calibration figure: on some VMs the kernel's per-file cost swings tenfold from minute to
    minute, and small-file unpacking is dominated by it.
    """
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=parent))
    try:
        start = time.monotonic()
        for i in range(count):
            os.close(os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        return time.monotonic() - start
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def wait_for_quiet(parent: Path, timeout: float, per_file_limit: float = 100e-6) -> tuple[float, float]:
    """Wait until creating files below *parent* costs under *per_file_limit* s each, or *timeout*.

    On this project's VMs the kernel's file-creation cost stays ~10x higher for half a minute
    after heavy file-system work (a previous tool's unpack and delete); starting every timed run
    in the quiet state keeps one tool from paying for another's aftermath.  Probes are small and
    5 s apart because probing is itself file-system work.  With *timeout* 0 this is one probe, a
    calibration figure only.  Returns (seconds waited, seconds per file at the last probe).
    """
    count = 200
    start = time.monotonic()
    while True:
        per_file = file_create_probe(parent, count) / count
        waited = time.monotonic() - start
        if per_file <= per_file_limit or waited >= timeout:
            return waited, per_file
        time.sleep(5.0)
