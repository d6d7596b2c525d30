"""Scenario ``start``: warm start of ``/bin/true`` without network, podrun vs crun, runc, nspawn, podman.

podrun runs twice over: the editable install the bench itself runs from, and a wheel install
(``pip install .`` into a fresh virtualenv, bench/wheel.py), the way a pip user gets it.

The busybox rootfs is already in each tool's store or bundle; a run is the whole command from
exec to exit (create the container/pod, run /bin/true, tear down), timed by the harness.
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

from bench.context import BenchContext
from bench.pull import ToolFailed
from bench.report import TIME, ScenarioResult
from bench.runtimes import (
    FLAVORS,
    PODMAN_IMAGE,
    PODRUN_IMAGE,
    Contender,
    Runtimes,
    flavor_command,
    flavor_name,
    harness_overhead,
    prepared_runtimes,
    run_rounds,
)
from bench.wheel import WheelInstallFailed, install_wheel

DEFAULT_RUNS = 20
QUICK_RUNS = 5
DESCRIPTION = (
    "Warm start of `/bin/true` with no network (own network namespace, loopback only) from the same busybox "
    "root filesystem, already in each tool's store or bundle. Wall time of the whole command, exec to exit, "
    "including the tool's set-up and tear-down of the container."
)


def _oci_runtime(rt: Runtimes, runtime: str) -> Contender:
    bundle = rt.bundle(runtime, ["/bin/true"])

    def delete(run_id: str) -> None:
        # `run` in the foreground deletes the container when it exits; this only catches a failed run.
        subprocess.run([runtime, "delete", "-f", run_id], capture_output=True)

    return Contender(runtime, f"{runtime} run --bundle BUNDLE ID  ({runtime} spec, terminal false, "
                              "args [/bin/true], read-only busybox rootfs; unique ID per run)",
                     lambda run_id: [("run", [runtime, "run", "--bundle", str(bundle), run_id])], rt.env, delete)


WHEEL = "podrun (wheel)"


def _wheel_podrun(rt: Runtimes, wheel: Path | WheelInstallFailed) -> Contender:
    """The same run by the ``podrun`` of a wheel install (bench/wheel.py), on the same store; when
    the install failed, every run fails with its reason (the report shows it)."""

    def steps(_id: str) -> list[tuple[str, list[str]]]:
        if isinstance(wheel, WheelInstallFailed):
            raise ToolFailed(str(wheel))
        return [("run", [str(wheel), "--dir", str(rt.podrun_dir), "run", "--net", "none", PODRUN_IMAGE, "--exec",
                         "/bin/true"])]

    return Contender(
        WHEEL, f"VENV/bin/podrun --dir DATA run --net none {PODRUN_IMAGE} --exec /bin/true", steps, rt.env,
        lambda _id: rt.remove_podrun_pods(),
        notes=["podrun installed by `pip install .` (the wheel pip builds, its dependencies, bytecode compiled "
               "at install) into a fresh virtualenv; the same data dir as `podrun`, the editable install"])


def _podrun(rt: Runtimes, flavor: str) -> Contender:
    notes = ["the exited pod is removed (`podrun rm`) after each run, untimed; `podrun` is the editable "
             "install (scripts/install-deps.sh)"]
    if flavor != "default":
        notes = [f"stage1 flavor `oci`: catatonit as the pod's pid 1, the app a runtime-spec bundle run by "
                 f"`{flavor.partition('/')[2]} run --detach`; the same data dir and pod removal as `podrun`"]
    return Contender(
        flavor_name(flavor), flavor_command(flavor, f"{PODRUN_IMAGE} --exec /bin/true"),
        lambda _id: [("run", rt.podrun_run(flavor, PODRUN_IMAGE, "--exec", "/bin/true"))],
        rt.env, lambda _id: rt.remove_podrun_pods(), notes=notes)


def contenders(rt: Runtimes, wheel: Path | WheelInstallFailed) -> list[Contender]:
    """podrun (each flavor), the wheel-installed podrun and the peers, in their order within the first round."""
    podruns = [_podrun(rt, flavor) for flavor in FLAVORS]
    nspawn = Contender(
        "systemd-nspawn", "systemd-nspawn --register=no --keep-unit -q --private-network -D ROOTFS /bin/true",
        lambda _id: [("run", rt.nspawn("/bin/true"))], rt.env)
    podman = Contender(
        "podman", f"podman --root R --runroot RR run --rm --network=none {PODMAN_IMAGE} /bin/true",
        lambda _id: [("run", rt.podman("run", "--rm", "--network=none", PODMAN_IMAGE, "/bin/true"))],
        rt.podman_env)
    return [podruns[0], _wheel_podrun(rt, wheel), *podruns[1:], _oci_runtime(rt, "crun"), _oci_runtime(rt, "runc"),
            nspawn, podman]


def run(ctx: BenchContext) -> ScenarioResult:
    """Run the start scenario: prepare every tool, then interleaved rounds."""
    runs = ctx.runs_for(DEFAULT_RUNS, QUICK_RUNS)
    with prepared_runtimes(ctx) as rt:
        ctx.log("start: installing podrun from a wheel into a fresh virtualenv (pip install .)")
        wheel: Path | WheelInstallFailed
        try:
            wheel = install_wheel(rt.base)
        except WheelInstallFailed as exc:
            wheel = exc
        tools = run_rounds(ctx, "start", contenders(rt, wheel), runs)
        overhead = harness_overhead()
        notes = list(rt.notes)
    notes.append(f"harness overhead included in every time: starting and reaping the host's /bin/true from the "
                 f"bench's Python takes {statistics.median(overhead) * 1000:.1f} ms (median)")
    subject = (f"Root filesystem: `demo/build-rootfs.sh` (Debian's busybox-static with its applet links, "
               f"/etc/passwd, /etc/group, empty /usr for nspawn), {rt.rootfs_bytes / 1e6:.1f} MB.")
    return ScenarioResult("start", DESCRIPTION, None, runs, tools, notes=notes, kind=TIME, subject=subject,
                          calibration={"ms to spawn the host's /bin/true from the harness": [
                              v * 1000 for v in overhead]})
