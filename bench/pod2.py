"""Scenario ``pod2``: a pod of two apps each running ``/bin/true``, podrun vs podman pods.

podrun runs both apps in one command (one pod, shared network/IPC/UTS namespaces, a root
filesystem per app).  podman needs four: ``pod create`` (which starts the infra container that
holds the shared namespaces), two ``run --pod``, and ``pod rm -f``; they are timed together, and
each is also reported as a phase.
"""

from __future__ import annotations

import subprocess

from bench.context import BenchContext
from bench.report import TIME, ScenarioResult
from bench.runtimes import (
    FLAVORS,
    PODMAN_IMAGE,
    PODRUN_IMAGE,
    Contender,
    Runtimes,
    flavor_command,
    flavor_name,
    prepared_runtimes,
    run_rounds,
)

DEFAULT_RUNS = 10
QUICK_RUNS = 3
DESCRIPTION = (
    "A pod of two apps, each running `/bin/true`, with no network, from the busybox rootfs already in the "
    "store: create the pod, run both apps to completion, remove the pod. Wall time of all commands together."
)


def contenders(rt: Runtimes) -> list[Contender]:
    """podrun's multi-app pod (each flavor) and podman's pod."""
    apps = (PODRUN_IMAGE, "--name", "a", "--exec", "/bin/true", "---", PODRUN_IMAGE, "--name", "b", "--exec",
            "/bin/true")

    def podrun(flavor: str) -> Contender:
        return Contender(
            flavor_name(flavor), flavor_command(flavor, " ".join(apps)),
            lambda _id: [("run", rt.podrun_run(flavor, *apps))],
            rt.env, lambda _id: rt.remove_podrun_pods(),
            notes=["the exited pod is removed (`podrun rm`) after each run, untimed; podrun's own `rm` of a pod "
                   "is not part of its time, while podman's `pod rm -f` is (podman has no pod that removes "
                   "itself)"] if flavor == "default" else [])

    def podman_steps(pod: str) -> list[tuple[str, list[str]]]:
        return [
            ("pod create", rt.podman("pod", "create", "--name", pod, "--network=none")),
            ("run a", rt.podman("run", "--rm", "--pod", pod, PODMAN_IMAGE, "/bin/true")),
            ("run b", rt.podman("run", "--rm", "--pod", pod, PODMAN_IMAGE, "/bin/true")),
            ("pod rm", rt.podman("pod", "rm", "-f", pod)),
        ]

    def podman_cleanup(pod: str) -> None:
        subprocess.run(rt.podman("pod", "rm", "-f", "--ignore", pod), capture_output=True, env=rt.podman_env)

    podman = Contender(
        "podman", f"podman pod create --name P --network=none && podman run --rm --pod P {PODMAN_IMAGE} /bin/true "
                  f"&& podman run --rm --pod P {PODMAN_IMAGE} /bin/true && podman pod rm -f P  "
                  "(each with --root R --runroot RR)",
        podman_steps, rt.podman_env, podman_cleanup,
        notes=["the infra (pause) image is built by the untimed warm-up run, from Debian's catatonit"])
    return [*(podrun(flavor) for flavor in FLAVORS), podman]


def run(ctx: BenchContext) -> ScenarioResult:
    """Run the pod2 scenario."""
    runs = ctx.runs_for(DEFAULT_RUNS, QUICK_RUNS)
    with prepared_runtimes(ctx) as rt:
        tools = run_rounds(ctx, "pod2", contenders(rt), runs)
        notes = list(rt.notes)
    return ScenarioResult("pod2", DESCRIPTION, None, runs, tools, notes=notes, kind=TIME,
                          subject="Both apps use the busybox rootfs of scenario `start`.")
