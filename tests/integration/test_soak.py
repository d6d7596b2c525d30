"""A bounded kill -9 storm (issue 12, "Done means"; SECURITY-TESTS 17, 18, 21): 30 ``run``s and
``fetch``es, six at a time, each killed by SIGKILL at a random moment or at a fault checkpoint
(``podrun/faults.py``), or left to finish.  Every image then fetches again, which leaves
``store/tmp`` empty and ``image fsck`` clean before any gc; then one ``gc`` and one ``image gc``
leave nothing: no pod, hidden embryo, mount, cgroup, netns, host interface, lease, port forward
or ``store/tmp`` entry.  A second ``gc`` changes nothing.

Random but reproducible: the seed is printed and in every assertion message; set
``PODRUN_SOAK_SEED`` to replay a failure's choices (the kill timing still varies).  Bounded: it
takes about 30 s on a 2-CPU machine (CI's budget for it is two minutes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from podrun.faults import CHECKPOINTS, NET_CHECKPOINTS, POD_CHECKPOINTS
from tests.conftest import NETNS_DIR, ROOT, TEST_BRIDGE, leftover_pod_interfaces
from tests.fixtures import images as img
from tests.integration.test_net import _forwards, _free_port
from tests.integration.test_run import PODRUN, Pods, module_pods

RUNS, FETCHES, PARALLEL = 18, 12, 6
RUN_FAULTS = [c for c in POD_CHECKPOINTS if c.startswith(("prepare:", "run:", "stage1:"))]


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "soak")


@dataclass
class Job:
    argv: list[str]
    fault: str | None  # PODRUN_FAULT, or
    kill_after: float | None  # SIGKILL after this many seconds (None with a fault: it kills itself)
    uuid_file: Path | None = None


def _jobs(rng: random.Random, layouts: list[Path], work: Path) -> list[Job]:
    jobs = []
    for i in range(RUNS):
        net = rng.choice(["none", "default", "default-port"])
        flags = ["--net", "none"] if net == "none" else []
        if net == "default-port":
            flags = ["--port", f"80:{_free_port()}"]
        faults = RUN_FAULTS + (list(NET_CHECKPOINTS) if net != "none" else [])
        mode = rng.choice(["fault", "kill", "kill", "finish"])
        uuid_file = work / f"uuid-{i}"
        argv = ["run", "--uuid-file-save", str(uuid_file), *flags, "demo", "--exec", "/bin/sh", "--", "-c",
                f"sleep 0.{rng.randint(1, 9)}"]
        jobs.append(Job(argv, rng.choice(faults) if mode == "fault" else None,
                        rng.uniform(0, 1.5) if mode == "kill" else None, uuid_file))
    for i in range(FETCHES):
        mode = rng.choice(["fault", "kill", "finish"])
        jobs.append(Job(["fetch", f"oci:{layouts[i % len(layouts)]}"], rng.choice(CHECKPOINTS) if mode == "fault" else None,
                        rng.uniform(0, 0.8) if mode == "kill" else None))
    rng.shuffle(jobs)
    return jobs


def _play(pods: Pods, job: Job) -> str:
    env = dict(os.environ, PODRUN_FAULT=job.fault or "")
    proc = subprocess.Popen([*PODRUN, "--dir", str(pods.data), *job.argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timer = None
    if job.kill_after is not None:
        timer = threading.Timer(job.kill_after, proc.send_signal, (signal.SIGKILL,))  # a no-op once it ended
        timer.start()
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Killed, or a clean end: 0, or a documented podrun code (a pod whose network helper died with
    # its parent still running reports a podrun failure); never a traceback.
    assert "Traceback" not in err, f"{job}: {err}"
    return f"{job.argv[0]} {job.fault or ''} -> {proc.returncode}"


def _pod_names(data: Path) -> set[str]:
    return {e.name.strip(".").removesuffix(".tmp") for e in (data / "pods").glob("*/*")} | {
        e.name.strip(".").removesuffix(".tmp") for e in (data / "pods").glob("*/.*")}


def test_kill9_storm_of_runs_and_fetches_then_gc_leaves_nothing(pods: Pods, tmp_path: Path) -> None:
    seed = int(os.environ.get("PODRUN_SOAK_SEED") or time.time_ns() % 1_000_000)
    print(f"soak seed {seed}")
    rng = random.Random(seed)
    layouts = []
    for i in range(4):  # layers of their own, so killed fetches die in real work
        layer = img.tar_bytes([img.file(f"soak{i}/f{n}", os.urandom(30_000)) for n in range(8)])
        layouts.append(img.write_oci_layout(tmp_path / f"img{i}", [layer]).layout)
    jobs = _jobs(rng, layouts, tmp_path)
    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(lambda job: _play(pods, job), jobs))
    storm = time.monotonic() - started
    what = f"seed {seed}: " + "; ".join(outcomes)
    uuids = _pod_names(pods.data) | {j.uuid_file.read_text().strip() for j in jobs
                                     if j.uuid_file is not None and j.uuid_file.exists()}
    assert uuids, what

    # Every image fetches again (what a killed fetch left is removed by the next one, before gc)
    for layout in layouts:
        res = pods.run("fetch", f"oci:{layout}")
        assert res.returncode == 0 and res.stdout.strip().startswith("sha256:"), f"{what}\n{res.stderr}"
    assert list((pods.data / "store" / "tmp").iterdir()) == [], what
    fsck = pods.run("image", "fsck")
    assert fsck.returncode == 0, f"{what}\n{fsck.stdout}"
    gc = pods.run("gc", "--grace-period", "0s", "--expire-prepared", "0s")
    assert gc.returncode == 0, f"{what}\n{gc.stdout}{gc.stderr}"
    image_gc = pods.run("image", "gc")
    assert image_gc.returncode == 0 and image_gc.stderr == "", f"{what}\n{image_gc.stderr}"
    print(f"soak: storm {storm:.1f} s, then gc and image gc {time.monotonic() - started - storm:.1f} s; "
          f"{len(uuids)} pods")

    assert pods.run("list", "--format", "json", check=True).stdout.strip() == "[]", what
    assert _pod_names(pods.data) == set(), what
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(pods.data) not in mounts and not [u for u in uuids if u in mounts], what
    assert not [u for u in uuids if os.path.lexists(NETNS_DIR / u)], what
    cgroups = [str(c) for u in uuids for c in Path("/sys/fs/cgroup").glob(f"**/pod-{u}")]
    assert cgroups == [], what
    leases = pods.data / "net" / TEST_BRIDGE / "leases"
    assert not leases.is_dir() or list(leases.iterdir()) == [], what
    assert not [u for u in uuids if u in _forwards()], what
    veths = {"pr" + u.replace("-", "")[:13] for u in uuids}
    deadline = time.monotonic() + 10  # a dead netns takes its veth end with it, asynchronously
    while set(leftover_pod_interfaces()) & veths and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(leftover_pod_interfaces()) & veths == set(), what
    assert list((pods.data / "store" / "tmp").iterdir()) == [], what
    assert pods.run("image", "fsck").returncode == 0, what
    assert pods.run("gc", "--grace-period", "0s", "--expire-prepared", "0s", check=True).stdout == "", what
    images = json.loads(pods.run("image", "list", "--format", "json", check=True).stdout)
    assert any("localhost/demo:latest" in i["names"] for i in images), what  # nothing else was lost
