"""Shared set-up of the run-time scenarios (start, pod2, memory): one busybox rootfs in every tool's store.

:func:`prepared_runtimes` builds the busybox root filesystem once (``demo/build-rootfs.sh``) and
puts it where each tool takes it from, untimed: podrun's store (``podrun image import``), OCI
bundles for crun and runc (``crun spec`` + the rootfs), a private copy for systemd-nspawn, and a
throw-away podman store (``podman import`` of a tar of the rootfs).  It also makes the host
changes the peers need (see :mod:`bench.hostprep`) and undoes all of it on exit.
:func:`run_rounds` times contenders interleaved, the shared loop of the timed scenarios.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.context import BenchContext
from bench.host import remove_tree, restore_host_paths
from bench.hostprep import hybrid_controllers_on_v1, nspawn_runtime_tmpfs, peer_cgroups_removed
from bench.pull import ToolFailed, scratch_dir, timed
from bench.report import ToolResult

ROOT = Path(__file__).resolve().parents[1]
PODRUN_IMAGE = "demo"
PODMAN_IMAGE = "localhost/bench-busybox:latest"
# podman, started as root, lowers its own RLIMIT_NPROC hard limit to this before it starts the
# runtime, so the container cannot ask for more.
PODMAN_NPROC = 32768
# podrun's stage1 flavors the run-time scenarios compare: its own, and ``oci`` on crun and on runc.
FLAVORS = ("default", "oci/crun", "oci/runc")


def flavor_name(flavor: str) -> str:
    """The contender's name of a podrun flavor: ``podrun``, ``podrun oci (crun)``."""
    return "podrun" if flavor == "default" else f"podrun oci ({flavor.partition('/')[2]})"


def flavor_command(flavor: str, rest: str) -> str:
    """The command line shown for a podrun flavor, *rest* after ``run``."""
    stage1 = "" if flavor == "default" else f"--stage1 oci --runtime {flavor.partition('/')[2]} "
    return f"podrun --dir DATA run {stage1}--net none {rest}"


@dataclass
class Runtimes:
    """Where each tool finds the busybox rootfs, and how to call it."""

    base: Path
    podrun_bin: Path
    podrun_dir: Path
    rootfs: Path
    nspawn_rootfs: Path
    bundles: Path
    podman_root: Path
    podman_runroot: Path
    env: dict[str, str]
    podman_env: dict[str, str]
    rootfs_bytes: int
    notes: list[str] = field(default_factory=list)

    def podrun(self, *args: str) -> list[str]:
        """``podrun --dir DATA ARGS…``."""
        return [str(self.podrun_bin), "--dir", str(self.podrun_dir), *args]

    def podrun_run(self, flavor: str, *args: str) -> list[str]:
        """``podrun --dir DATA run --net none [--stage1 oci --runtime R] ARGS…`` for a flavor of
        :data:`FLAVORS` ("default", or "oci/RUNTIME")."""
        stage1 = [] if flavor == "default" else ["--stage1", "oci", "--runtime", flavor.partition("/")[2]]
        return self.podrun("run", *stage1, "--net", "none", *args)

    def podman(self, *args: str) -> list[str]:
        """``podman --root … --runroot … ARGS…`` (run it with :attr:`podman_env`)."""
        return ["podman", "--root", str(self.podman_root), "--runroot", str(self.podman_runroot), *args]

    def nspawn(self, *command: str, read_only: bool = False) -> list[str]:
        """``systemd-nspawn`` on the private rootfs copy, no registration, no network, running *command*."""
        return ["systemd-nspawn", "--register=no", "--keep-unit", "-q", "--private-network",
                *(["--read-only"] if read_only else []), "-D", str(self.nspawn_rootfs), *command]

    def bundle(self, runtime: str, args: list[str]) -> Path:
        """An OCI bundle for *runtime* (crun or runc) running *args* in the shared rootfs (made once)."""
        name = f"{runtime}-{'-'.join(a.strip('/').replace('/', '_') for a in args)}"
        path = self.bundles / name
        if (path / "config.json").exists():
            return path
        path.mkdir(parents=True)
        subprocess.run([runtime, "spec"], cwd=path, check=True, capture_output=True)
        config = json.loads((path / "config.json").read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = args
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return path

    def remove_podrun_pods(self) -> None:
        """``podrun rm`` every pod in the data dir (all exited): its dir, cgroups and mounts go (untimed)."""
        pods = self.podrun_dir / "pods"
        if not pods.is_dir():
            return
        uuids = sorted({p.name for phase in pods.iterdir() if phase.is_dir() for p in phase.iterdir()})
        if uuids:
            subprocess.run(self.podrun("rm", *uuids), capture_output=True, env=self.env, timeout=300)


def build_rootfs(dest: Path) -> None:
    """The demo busybox rootfs, plus an empty /usr (systemd-nspawn refuses a tree without one)."""
    subprocess.run(["bash", str(ROOT / "demo" / "build-rootfs.sh"), str(dest)], check=True, capture_output=True)
    (dest / "usr").mkdir(exist_ok=True)


def _tree_size(path: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _s, files in os.walk(path) for f in files)


def _podman_conf(conf_dir: Path) -> Path:
    """containers.conf for podman on this host: see the README's peer quirks."""
    (conf_dir / "tmp").mkdir(parents=True, exist_ok=True)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = PODMAN_NPROC if nproc == resource.RLIM_INFINITY else min(nproc, PODMAN_NPROC)
    conf = conf_dir / "containers.conf"
    conf.write_text(
        "[containers]\n"
        # Without CAP_SYS_RESOURCE (missing here) the runtime cannot raise hard limits; podman's
        # defaults for root (nofile 1048576) are above the current ones.
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "none"\n'
        f'tmp_dir = "{conf_dir / "tmp"}"\n'
        f'image_copy_tmp_dir = "{conf_dir / "tmp"}"\n'
    )
    return conf


@contextlib.contextmanager
def prepared_runtimes(ctx: BenchContext) -> Iterator[Runtimes]:
    """Every tool ready to run the busybox rootfs, and the host prepared; all undone on exit."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(restore_host_paths())
        base = stack.enter_context(scratch_dir())
        moved = stack.enter_context(hybrid_controllers_on_v1(ctx.log))
        stack.enter_context(peer_cgroups_removed(ctx.log))
        mounted = stack.enter_context(nspawn_runtime_tmpfs())
        (base / "tmp").mkdir()
        env = dict(os.environ, TMPDIR=str(base / "tmp"))
        # With PYTHONDONTWRITEBYTECODE set (as in some dev shells), every podrun module edited since
        # its last .pyc is recompiled on every start (~15 ms here); an installed package has its
        # bytecode compiled, so let the warm-up run write it.
        dropped = env.pop("PYTHONDONTWRITEBYTECODE", None) is not None
        rt = Runtimes(base=base, podrun_bin=ctx.podrun_bin, podrun_dir=base / "podrun", rootfs=base / "rootfs",
                      nspawn_rootfs=base / "nspawn-rootfs", bundles=base / "bundles",
                      podman_root=base / "podman" / "root", podman_runroot=base / "podman" / "runroot",
                      env=env, podman_env=dict(env, CONTAINERS_CONF=str(_podman_conf(base / "podman-conf"))),
                      rootfs_bytes=0)
        if dropped:
            rt.notes.append("PYTHONDONTWRITEBYTECODE was unset for the tools, so podrun's warm-up run writes "
                            "its bytecode caches (as an installed package has them)")
        if moved:
            rt.notes.append(f"host: cgroup controller(s) {', '.join(moved)} moved from cgroup2 to v1 mounts for "
                            "the scenario (crun refuses a hybrid with controllers on cgroup2), given back after")
        if mounted:
            rt.notes.append("host: tmpfs on /run/systemd/nspawn for the scenario (PID 1 is not systemd), "
                            "unmounted after")
        build_rootfs(rt.rootfs)
        rt.rootfs_bytes = _tree_size(rt.rootfs)
        subprocess.run(["cp", "-a", str(rt.rootfs), str(rt.nspawn_rootfs)], check=True)
        for mount_point in ("run", "tmp", "var/tmp"):  # what nspawn mounts over a --read-only tree
            (rt.nspawn_rootfs / mount_point).mkdir(parents=True, exist_ok=True)
        subprocess.run(rt.podrun("image", "import", str(rt.rootfs), PODRUN_IMAGE), check=True, capture_output=True,
                       env=env)
        stack.callback(rt.remove_podrun_pods)
        tar = base / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rt.rootfs), "-cf", str(tar), "."], check=True)
        stack.callback(_podman_reset, rt)
        subprocess.run(rt.podman("import", str(tar), PODMAN_IMAGE), check=True, capture_output=True,
                       env=rt.podman_env)
        yield rt


def _podman_reset(rt: Runtimes) -> None:
    """Remove podman's containers, pods, images and store (untimed), then anything mounted below it."""
    if rt.podman_root.exists():
        subprocess.run(rt.podman("system", "reset", "-f"), capture_output=True, env=rt.podman_env, timeout=300)
    remove_tree(rt.podman_root.parent)


def unique_id(prefix: str = "podrun-bench") -> str:
    """A container/pod name no other run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Contender:
    """One tool in a timed scenario: the commands of one run and the untimed clean-up after it."""

    name: str
    command: str
    steps: Callable[[str], list[tuple[str, list[str]]]]
    env: dict[str, str]
    cleanup: Callable[[str], None] = lambda _run_id: None
    notes: list[str] = field(default_factory=list)

    def run_once(self) -> dict[str, float]:
        """Run every step of one run (timed one by one), then clean up; return each step's seconds."""
        run_id = unique_id()
        phases: dict[str, float] = {}
        try:
            for phase, argv in self.steps(run_id):
                phases[phase] = timed(argv, self.env)
        finally:
            self.cleanup(run_id)
        return phases


def harness_overhead(samples: int = 20) -> list[float]:
    """Seconds the harness needs to start and reap the host's /bin/true: included in every tool's time."""
    out = []
    for _ in range(samples):
        start = time.monotonic()
        subprocess.run(["/bin/true"], capture_output=True, stdin=subprocess.DEVNULL)
        out.append(time.monotonic() - start)
    return out


def run_rounds(ctx: BenchContext, scenario: str, contenders: list[Contender], runs: int) -> list[ToolResult]:
    """One untimed warm-up per contender, then *runs* rounds each running every contender once.

    The first contender of a round rotates, so no tool always follows the same one.  A tool that
    fails is reported (skipped if it never succeeded, failed otherwise) and left out of later rounds.
    """
    results = {c.name: ToolResult(c.name, c.command, notes=c.notes) for c in contenders}
    for c in contenders:
        try:
            c.run_once()
        except ToolFailed as exc:
            results[c.name].status, results[c.name].reason = "skipped", f"warm-up: {exc}"
            ctx.log(f"{scenario}: {c.name} skipped: {exc}")
    for round_no in range(runs):
        shift = round_no % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            res = results[c.name]
            if res.status != "ok":
                continue
            try:
                phases = c.run_once()
            except ToolFailed as exc:
                res.status = "failed" if res.totals else "skipped"
                res.reason = str(exc)
                ctx.log(f"{scenario}: {c.name} {res.status}: {exc}")
                continue
            res.add_run(sum(phases.values()), phases if len(phases) > 1 else {})
        ctx.log(f"{scenario} round {round_no + 1}/{runs}: "
                + ", ".join(f"{n} {r.totals[-1] * 1000:.0f} ms" for n, r in results.items() if r.totals))
    return [results[c.name] for c in contenders]
