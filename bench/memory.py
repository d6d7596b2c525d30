"""Scenario ``memory``: host memory a running pod costs, podrun vs conmon (podman), crun, systemd-nspawn.

Each tool starts ``sleep 30`` from the busybox rootfs; once the app runs, the bench sums the PSS
(``/proc/PID/smaps_rollup``) of the tool's processes that stay on the host beside the app, without
the app itself: podrun's supervisor (the PID ``podrun run`` started, after stage0 exec'd stage1)
and the pod's pid 1; podman's conmon (podman itself exits after ``run -d``); systemd-nspawn's
process; crun nothing with ``run -d`` (it has no monitor: the app is re-parented to the host's
init), and the waiting ``crun run`` process when run in the foreground.  PSS splits shared pages
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
from bench.runtimes import PODMAN_IMAGE, PODRUN_IMAGE, Runtimes, prepared_runtimes, unique_id

DEFAULT_RUNS = 5
QUICK_RUNS = 2
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


@dataclass
class Foreground:
    """A tool whose command stays in the foreground for the pod's life: measure its process tree."""

    name: str
    command: str
    argv: Callable[[str], list[str]]
    env: dict[str, str]
    cleanup: Callable[[str], None] = lambda _id: None
    notes: list[str] = field(default_factory=list)

    def measure(self) -> dict[str, float]:
        """Start the pod, wait for the app, measure the host side, stop and clean up."""
        run_id = unique_id()
        proc = subprocess.Popen(self.argv(run_id), env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        app = None
        try:
            app = _wait_for_app(proc.pid, proc)
            time.sleep(0.3)  # let the supervisor finish its start-up work before measuring
            return _host_side(proc.pid)
        except ToolFailed as exc:
            err = proc.stderr.read().decode(errors="replace")[-300:] if proc.poll() is not None and proc.stderr \
                else ""
            raise ToolFailed(f"{exc}: {err.strip()}") from exc
        finally:
            if app is not None:
                _kill(app)
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

    def measure(self) -> dict[str, float]:
        """Start the pod detached, measure its monitor (if any), stop and clean up."""
        run_id = unique_id()
        try:
            monitor, _app = self.start(run_id)
            time.sleep(0.3)
            if monitor is None:
                return {}
            return _host_side(monitor)
        finally:
            self.cleanup(run_id)


def contenders(rt: Runtimes) -> list[Foreground | Detached]:
    """podrun and its peers."""
    podrun = Foreground(
        "podrun", f"podrun --dir DATA run --net none {PODRUN_IMAGE} --exec /bin/sleep -- 30",
        lambda _id: rt.podrun("run", "--net", "none", PODRUN_IMAGE, "--exec", APP_ARGS[0], "--", *APP_ARGS[1:]),
        rt.env, lambda _id: rt.remove_podrun_pods(),
        notes=["main process = the supervisor (the PID `podrun run` started; stage0 exec'd stage1), "
               "child = the pod's pid 1"])

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
        "systemd-nspawn", "systemd-nspawn --register=no --keep-unit -q --private-network -D ROOTFS /bin/sleep 30",
        lambda _id: rt.nspawn(*APP_ARGS), rt.env, notes=["the systemd-nspawn process (and any helper it keeps)"])
    return [podrun, podman, crun_detached, crun_fg, nspawn]


def _crun_pid(cid: str, env: dict[str, str]) -> int:
    state = json.loads(_check(["crun", "state", cid], env))
    return int(state["pid"])


def run(ctx: BenchContext) -> ScenarioResult:
    """Run the memory scenario: interleaved rounds, one pod per tool per round."""
    runs = ctx.runs_for(DEFAULT_RUNS, QUICK_RUNS)
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
                    parts = tool.measure()
                except ToolFailed as exc:
                    res.status = "failed" if res.totals else "skipped"
                    res.reason = str(exc)
                    ctx.log(f"memory: {tool.name} {res.status}: {exc}")
                    continue
                res.add_run(sum(parts.values()), parts)
            ctx.log(f"memory round {round_no + 1}/{runs}: "
                    + ", ".join(f"{n} {r.totals[-1]:.1f} MB" for n, r in results.items() if r.totals))
        notes = list(rt.notes)
    ordered = [results[t.name] for t in tools]
    return ScenarioResult("memory", DESCRIPTION, None, runs, ordered, notes=notes, kind=MEMORY,
                          subject=f"App: `{' '.join(APP_ARGS)}` from the busybox rootfs of scenario `start`.")
