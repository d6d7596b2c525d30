"""Scenarios ``memory`` and ``memory-20``: host memory a running pod costs, podrun (both stage1 flavors)
vs conmon (podman), crun, runc, systemd-nspawn; with one pod, and with twenty pods of a tool at once.

Each tool starts ``sleep 30`` from the busybox rootfs; once the app runs, the bench sums the PSS
(``/proc/PID/smaps_rollup``) of the tool's processes that stay on the host beside the app, without
the app itself: podrun's supervisor (the PID ``podrun run`` started, after stage0 exec'd stage1)
and the pod's pid 1 (catatonit in both flavors; in flavor ``oci`` the runtime has exited by
then); podman's conmon (podman itself exits after ``run -d``); systemd-nspawn's process; crun
nothing with ``run -d`` (it has no monitor: the app is re-parented to the host's init), and the
waiting ``crun run`` (``runc run``) process when run in the foreground.  PSS splits shared pages
between the processes sharing them, so a sum over processes counts each page once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.context import BenchContext
from bench.pull import ToolFailed
from bench.report import MEMORY, ScenarioResult, ToolResult
from bench.runtimes import (
    FLAVORS,
    PODMAN_IMAGE,
    PODRUN_IMAGE,
    Runtimes,
    flavor_command,
    flavor_name,
    prepared_runtimes,
    unique_id,
)

DEFAULT_RUNS = 5
QUICK_RUNS = 2
MANY_PODS = 20  # scenario memory-20 (the smoke run starts 2)
MANY_RUNS = 3
APP = "sleep"
APP_ARGS = ["/bin/sleep", "30"]
START_TIMEOUT = 30.0
DESCRIPTION = (
    "Host memory per running pod: the app `sleep 30` runs from the busybox rootfs; once it runs, the PSS of "
    "the runtime's host-side processes (not the app) is summed."
)
_DEPTH_NAMES = ("main process", "child", "grandchild")


def _processes() -> dict[int, tuple[int, str]]:
    """pid → (ppid, comm) of every process now."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # comm is in parentheses and may hold spaces or parentheses: split at the last ')'.
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        table[int(entry.name)] = (ppid, comm)
    return table


def _tree(root: int) -> list[tuple[int, int, str]]:
    """(pid, depth, comm) of *root* and all its descendants."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _comm) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: list[tuple[int, int, str]] = []
    todo = [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        if pid in table:
            out.append((pid, depth, table[pid][1]))
            todo += [(c, depth + 1) for c in children.get(pid, [])]
    return out


def pss_mb(pid: int) -> float:
    """PSS of *pid* in MB (10^6 bytes), from /proc/PID/smaps_rollup."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise ToolFailed(f"/proc/{pid}/smaps_rollup: no Pss line")


def _wait_for_app(root: int, proc: subprocess.Popen[bytes] | None) -> int:
    """The pid of the app below *root*, waiting up to START_TIMEOUT for it to exec."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        apps = [pid for pid, depth, comm in _tree(root) if comm == APP and depth > 0]
        if apps:
            return apps[0]
        if proc is not None and proc.poll() is not None:
            raise ToolFailed(f"exited {proc.returncode} before the app ran")
        time.sleep(0.02)
    raise ToolFailed(f"the app did not start within {START_TIMEOUT:.0f} s")


def _host_side(root: int) -> dict[str, float]:
    """PSS (MB) of *root* and its descendants except the app, keyed by a label per process."""
    out: dict[str, float] = {}
    for pid, depth, comm in sorted(_tree(root), key=lambda t: t[1]):
        if comm == APP and depth > 0:
            continue
        label = f"{_DEPTH_NAMES[min(depth, len(_DEPTH_NAMES) - 1)]} ({comm})"
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            out[label] = out.get(label, 0.0) + pss_mb(pid)
    return out


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _check(argv: list[str], env: dict[str, str]) -> str:
    """Run *argv*, return its stdout; raise ToolFailed if it fails.

    Output goes through temp files, not pipes: a detached container inherits them, and reading a
    pipe to EOF would wait for the app to exit.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(argv, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL, timeout=120)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise ToolFailed(f"`{' '.join(argv[:4])} …` exited {proc.returncode}: "
                             f"{err.read().decode(errors='replace').strip()[-300:]}")
        return out.read().decode(errors="replace").strip()


def _merge(parts: list[dict[str, float]], pods: int) -> dict[str, float]:
    """Per-pod PSS by label: the sum over *pods* pods' host-side processes, divided by *pods*."""
    out: dict[str, float] = {}
    for part in parts:
        for label, mb in part.items():
            out[label] = out.get(label, 0.0) + mb
    return {label: mb / pods for label, mb in out.items()}


@dataclass
class Foreground:
    """A tool whose command stays in the foreground for the pod's life: measure its process tree."""

    name: str
    command: str
    argv: Callable[[str], list[str]]
    env: dict[str, str]
    cleanup: Callable[[str], None] = lambda _id: None
    notes: list[str] = field(default_factory=list)

    def measure(self, pods: int = 1) -> dict[str, float]:
        """Start *pods* pods side by side, wait for every app, measure the host side of all of them
        at once (PSS shares pages between the pods), stop and clean up; the per-pod mean."""
        started: list[tuple[str, subprocess.Popen[bytes]]] = []
        apps: list[int] = []
        try:
            for _ in range(pods):
                run_id = unique_id()
                started.append((run_id, subprocess.Popen(self.argv(run_id), env=self.env, stdin=subprocess.DEVNULL,
                                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
            for _run_id, proc in started:
                try:
                    apps.append(_wait_for_app(proc.pid, proc))
                except ToolFailed as exc:
                    err = proc.stderr.read().decode(errors="replace")[-300:] \
                        if proc.poll() is not None and proc.stderr else ""
                    raise ToolFailed(f"{exc}: {err.strip()}") from exc
            time.sleep(0.3 + 0.05 * pods)  # let the supervisors finish their start-up work before measuring
            return _merge([_host_side(proc.pid) for _id, proc in started], pods)
        finally:
            for app in apps:
                _kill(app)
            for run_id, proc in started:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if proc.stderr:
                    proc.stderr.close()
                self.cleanup(run_id)


@dataclass
class Detached:
    """A tool that returns once the app runs: *monitor* names the host-side process left (if any)."""

    name: str
    command: str
    start: Callable[[str], tuple[int | None, int]]  # run id → (monitor pid or None, app pid)
    cleanup: Callable[[str], None]
    notes: list[str] = field(default_factory=list)

    def measure(self, pods: int = 1) -> dict[str, float]:
        """Start *pods* pods detached, one after the other, measure their monitors (if any) at once,
        stop and clean up; the per-pod mean."""
        ids: list[str] = []
        monitors: list[int] = []
        try:
            for _ in range(pods):
                ids.append(unique_id())
                monitor, _app = self.start(ids[-1])
                if monitor is not None:
                    monitors.append(monitor)
            time.sleep(0.3 + 0.05 * pods)
            return _merge([_host_side(m) for m in monitors], pods)
        finally:
            for run_id in ids:
                self.cleanup(run_id)


def contenders(rt: Runtimes) -> list[Foreground | Detached]:
    """podrun (each flavor) and its peers."""
    def podrun(flavor: str) -> Foreground:
        return Foreground(
            flavor_name(flavor), flavor_command(flavor, f"{PODRUN_IMAGE} --exec /bin/sleep -- 30"),
            lambda _id: rt.podrun_run(flavor, PODRUN_IMAGE, "--exec", APP_ARGS[0], "--", *APP_ARGS[1:]),
            rt.env, lambda _id: rt.remove_podrun_pods(),
            notes=["main process = the supervisor (the PID `podrun run` started; stage0 exec'd stage1), "
                   + ("child (catatonit) = the pod's pid 1" if flavor == "default" else
                      "child (catatonit) = the pod's pid 1; the runtime has exited once the app runs")])

    podruns = [podrun(flavor) for flavor in FLAVORS]

    def podman_start(name: str) -> tuple[int | None, int]:
        _check(rt.podman("run", "-d", "--name", name, "--network=none", PODMAN_IMAGE, *APP_ARGS), rt.podman_env)
        pids = _check(rt.podman("inspect", "--format", "{{.State.ConmonPid}} {{.State.Pid}}", name), rt.podman_env)
        conmon, app = (int(x) for x in pids.split())
        return conmon, app

    def podman_rm(name: str) -> None:
        subprocess.run(rt.podman("rm", "-f", "-t", "0", name), capture_output=True, env=rt.podman_env)

    podman = Detached(
        "podman (conmon)", f"podman --root R --runroot RR run -d --network=none {PODMAN_IMAGE} /bin/sleep 30",
        podman_start, podman_rm,
        notes=["measured: conmon (podman itself exits once the container runs)"])

    bundle = rt.bundle("crun", APP_ARGS)

    def crun_start(cid: str) -> tuple[int | None, int]:
        _check(["crun", "run", "-d", "--bundle", str(bundle), cid], rt.env)
        return None, _crun_pid(cid, rt.env)

    def crun_cleanup(cid: str) -> None:
        subprocess.run(["crun", "kill", cid, "KILL"], capture_output=True)
        subprocess.run(["crun", "delete", "-f", cid], capture_output=True)

    def crun_delete(cid: str) -> None:
        subprocess.run(["crun", "delete", "-f", cid], capture_output=True)

    crun_detached = Detached(
        "crun -d", "crun run -d --bundle BUNDLE ID  (args /bin/sleep 30)", crun_start, crun_cleanup,
        notes=["crun has no monitor process: after `run -d` nothing of crun stays on the host (the app is "
               "re-parented to the host's init), so its host-side memory is 0"])
    crun_fg = Foreground(
        "crun (foreground)", "crun run --bundle BUNDLE ID  (args /bin/sleep 30; crun waits for the app)",
        lambda cid: ["crun", "run", "--bundle", str(bundle), cid], rt.env,
        crun_delete,
        notes=["the `crun run` process that waits in the foreground for the app"])
    nspawn = Foreground(
        "systemd-nspawn",
        "systemd-nspawn --register=no --keep-unit -q --private-network --read-only -D ROOTFS /bin/sleep 30",
        lambda _id: rt.nspawn(*APP_ARGS, read_only=True), rt.env,
        notes=["the systemd-nspawn process (and any helper it keeps); `--read-only`, so that pods side by side "
               "may share the tree (nspawn locks a writable one)"])
    runc_bundle = rt.bundle("runc", APP_ARGS)

    def runc_delete(cid: str) -> None:
        subprocess.run(["runc", "delete", "-f", cid], capture_output=True)

    runc_fg = Foreground(
        "runc (foreground)", "runc run --bundle BUNDLE ID  (args /bin/sleep 30; runc waits for the app)",
        lambda cid: ["runc", "run", "--bundle", str(runc_bundle), cid], rt.env, runc_delete,
        notes=["the `runc run` process that waits in the foreground for the app"])
    return [*podruns, podman, crun_detached, crun_fg, runc_fg, nspawn]


def _crun_pid(cid: str, env: dict[str, str]) -> int:
    state = json.loads(_check(["crun", "state", cid], env))
    return int(state["pid"])


def run(ctx: BenchContext) -> ScenarioResult:
    """The ``memory`` scenario: one pod per tool at a time."""
    return _scenario(ctx, "memory", 1, ctx.runs_for(DEFAULT_RUNS, QUICK_RUNS))


def run_many(ctx: BenchContext) -> ScenarioResult:
    """The ``memory-20`` scenario: twenty pods per tool running side by side, PSS per pod."""
    return _scenario(ctx, "memory-20", MANY_PODS if not ctx.smoke else 2, ctx.runs_for(MANY_RUNS, 1))


def _scenario(ctx: BenchContext, name: str, pods: int, runs: int) -> ScenarioResult:
    """Interleaved rounds; in each, every tool runs *pods* pods at once and is measured."""
    with prepared_runtimes(ctx) as rt:
        tools = contenders(rt)
        results = {t.name: ToolResult(t.name, t.command, notes=t.notes) for t in tools}
        for round_no in range(runs):
            shift = round_no % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                res = results[tool.name]
                if res.status != "ok":
                    continue
                try:
                    parts = tool.measure(pods)
                except ToolFailed as exc:
                    res.status = "failed" if res.totals else "skipped"
                    res.reason = str(exc)
                    ctx.log(f"{name}: {tool.name} {res.status}: {exc}")
                    continue
                res.add_run(sum(parts.values()), parts)
            ctx.log(f"{name} round {round_no + 1}/{runs}: "
                    + ", ".join(f"{n} {r.totals[-1]:.1f} MB" for n, r in results.items() if r.totals))
        notes = list(rt.notes)
    ordered = [results[t.name] for t in tools]
    description = DESCRIPTION if pods == 1 else (
        f"Host memory per running pod with {pods} pods of a tool running at once (the sum of the PSS of every "
        "pod's host-side processes, divided by the pods); otherwise as scenario `memory`.")
    return ScenarioResult(name, description, None, runs, ordered, notes=notes, kind=MEMORY,
                          subject=f"App: `{' '.join(APP_ARGS)}` from the busybox rootfs of scenario `start`.")
