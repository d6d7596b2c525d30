"""A crashed or failed pod never removes what another pod owns, and collection fails safe
(SECURITY-TESTS 29; issue 12, "Collection must fail safe" and "Networking ownership").

- ``image gc`` keeps every layer while any pod's references cannot be read, in every phase
  directory and for every kind of damage, and names the pod; a running pod keeps its root.
- ``run`` holds the store lock from resolving its image until its manifest is on disk: pinned
  at that step (fanotify), ``image rm`` + ``image gc`` wait; a soak of gc loops against pod
  creation never starts a pod without its layers.
- A failed ``run`` leaves a running pod's port forward and lease alone; the gc of a dead pod
  leaves the forward a new pod made for the same port and address.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_TABLE
from tests.fixtures.fanotify import HoldOpens
from tests.integration.test_net import _forwards, _free_port, _ip_of, _leases
from tests.integration.test_run import PODRUN, Pods, module_pods

ROOT_CHECK = "test -x /bin/busybox && echo ROOT-OK"  # the demo image's root is there


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    for p in module_pods(tmp_path_factory, "failsafe"):
        yield p
    assert _forwards() == "" and _leases(p) == {}


@pytest.fixture(autouse=True)
def empty(pods: Pods) -> Iterator[None]:
    """Each test starts without pods or images and imports what it uses: a pod left by a failed
    test, or an older record of an image (imported in another second, so with another ID),
    would keep layers alive."""
    pods.cleanup()
    images = [i["id"] for i in json.loads(pods.run("image", "list", "--format", "json", check=True).stdout)]
    if images:
        pods.run("image", "rm", *images, check=True)
    pods.run("image", "gc", check=True)
    yield


def import_image(p: Pods, source: Path, name: str) -> list[Path]:
    """Import *source* as *name*; returns the image's layer directories in the store."""
    p.run("image", "import", str(source), name, check=True)
    doc = json.loads(p.run("image", "inspect", "--format", "json", name, check=True).stdout)
    return [p.data / "store" / "layers" / "sha256" / d.split(":", 1)[1] for d in doc["config"]["rootfs"]["diff_ids"]]


def demo_rootfs(p: Pods) -> Path:
    return p.data.parent / "rootfs"  # built by demo_pods


def other_rootfs(tmp_path: Path) -> Path:
    d = tmp_path / "other-rootfs"
    d.mkdir()
    (d / "hello").write_text("an image no pod uses\n")
    return d


# -- image gc never deletes on doubt ----------------------------------------------------------

def _truncate(m: Path) -> None:
    m.write_bytes(m.read_bytes()[:100])


def _directory(m: Path) -> None:
    m.unlink()
    m.mkdir()


def _fifo(m: Path) -> None:
    m.unlink()
    os.mkfifo(m)  # gc must not hang on it


def _symlink(m: Path) -> None:
    decoy = m.parent.parent.parent / "decoy.json"  # a readable manifest naming no layer
    decoy.write_text(json.dumps({"version": 1, "uuid": "x", "apps": [{"name": "x", "lower_dirs": []}]}))
    m.unlink()
    m.symlink_to(decoy)


def _no_read(m: Path) -> None:
    m.chmod(0)


def _no_pod_dir(m: Path) -> None:
    m.parent.chmod(0)


def _no_phase_dir(m: Path) -> None:
    m.parent.parent.chmod(0)


DAMAGE: dict[str, Callable[[Path], object]] = {
    "truncated": _truncate,
    "not-json": lambda m: m.write_bytes(b"\x00garbage"),
    "no-layer-list": lambda m: m.write_text('{"version": 1, "apps": [{"name": "a", "lower_dirs": "/"}]}'),
    "missing": lambda m: m.unlink(),
    "directory": _directory,
    "fifo": _fifo,
    "symlink": _symlink,
    # EACCES: image gc runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (an I/O error's stand-in)
    "unreadable-file": _no_read,
    "unreadable-pod-dir": _no_pod_dir,
    "unreadable-phase-dir": _no_phase_dir,
}
NEEDS_NO_DAC = ("unreadable-file", "unreadable-pod-dir", "unreadable-phase-dir")

# every phase directory (and the hidden name of an embryo being created) with a truncated
# manifest; every kind of damage in prepared/
CASES = [(phase, False, "truncated") for phase in ("embryo", "prepare", "run", "exited-garbage", "garbage")]
CASES += [("embryo", True, "truncated")] + [("prepared", False, d) for d in DAMAGE]


def _restore(manifest: Path, original: bytes) -> None:
    manifest.parent.parent.chmod(0o700)
    manifest.parent.chmod(0o700)
    if manifest.is_dir() and not manifest.is_symlink():
        manifest.rmdir()
    elif manifest.exists() or manifest.is_symlink():
        manifest.unlink()
    manifest.write_bytes(original)
    manifest.chmod(0o600)


@pytest.mark.parametrize(("phase", "hidden", "damage"), CASES,
                         ids=[f"{'hidden-' if h else ''}{p}-{d}" for p, h, d in CASES])
def test_a_pod_whose_references_cannot_be_read_keeps_every_layer(pods: Pods, tmp_path: Path, phase: str,
                                                                 hidden: bool, damage: str) -> None:
    demo = import_image(pods, demo_rootfs(pods), "demo")
    unused = import_image(pods, other_rootfs(tmp_path), "other")
    uuid = pods.run("prepare", "--net", "none", "demo", "--exec", "/bin/sh", "--", "-c", ROOT_CHECK,
                    check=True).stdout.strip()
    home = pods.data / "pods" / "prepared" / uuid
    name = f".{uuid}.tmp" if hidden else uuid
    pod = pods.data / "pods" / phase / name
    os.rename(home, pod)
    manifest = pod / "pod.json"
    original = manifest.read_bytes()
    pods.run("image", "rm", "demo", "other", check=True)
    DAMAGE[damage](manifest)
    try:
        no_dac = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if damage in NEEDS_NO_DAC else []
        gc = subprocess.run([*no_dac, *PODRUN, "--dir", str(pods.data), "image", "gc"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
        assert gc.returncode == 0, gc.stderr
        assert all(d.is_dir() for d in demo + unused), gc.stdout  # never delete on doubt
        what = f"pods/{phase}" if damage == "unreadable-phase-dir" else f"pod {name} ({phase})"
        assert f"podrun: warning: {what}" in gc.stderr and "keeping every layer tree" in gc.stderr, gc.stderr
        assert "Traceback" not in gc.stderr
        assert "removed blob" in gc.stdout  # the rest of the collection went on
    finally:
        _restore(manifest, original)
        os.rename(pod, home)
    res = pods.run("run-prepared", uuid)  # the pod still has its root
    assert res.returncode == 0 and "ROOT-OK" in res.stdout, res.stderr
    pods.run("rm", uuid, check=True)
    gc = pods.run("image", "gc", check=True)  # no doubt left: what nothing uses goes
    assert gc.stderr == "" and not any(d.exists() for d in demo + unused), gc.stdout


def test_image_gc_keeps_the_root_of_a_running_pod_whose_manifest_is_truncated(pods: Pods, tmp_path: Path) -> None:
    """The issue's reproduction: before, the app saw an empty / while status said running."""
    demo = import_image(pods, demo_rootfs(pods), "demo")
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    proc, uuid, pod = pods.start("--net", "none", "--volume", f"ctl,kind=host,source={ctl}", "demo",
                                 "--mount", "volume=ctl,target=/ctl", "--exec", "/bin/sh", "--", "-c",
                                 f"while [ ! -e /ctl/go ]; do sleep 0.05; done; {ROOT_CHECK}",
                                 stdout=subprocess.PIPE)
    manifest = pod / "pod.json"
    original = manifest.read_bytes()
    _truncate(manifest)
    try:
        pods.run("image", "rm", "demo", check=True)
        gc = pods.run("image", "gc")
        assert gc.returncode == 0 and all(d.is_dir() for d in demo), gc.stdout
        assert f"pod {uuid} (run): pod.json is damaged" in gc.stderr, gc.stderr
        (ctl / "go").touch()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "ROOT-OK" in out, err
    finally:
        (ctl / "go").touch()
        proc.wait(timeout=60)
        manifest.write_bytes(original)
        pods.run("rm", uuid, check=True)


# -- run pins its images until the pod's references are on disk -------------------------------

def _waiting_for_lock(lock: Path) -> bool:
    """True when some process waits for a flock on *lock* (a "->" line of /proc/locks)."""
    inode = str(os.stat(lock).st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) > 6 and parts[1] == "->" and parts[6].rsplit(":", 1)[-1] == inode:
            return True
    return False


def test_image_rm_and_gc_wait_while_run_is_between_resolving_and_writing_its_manifest(pods: Pods) -> None:
    demo = import_image(pods, demo_rootfs(pods), "demo")
    assert pods.run("run", "--net", "none", "demo", "--exec", "/bin/true").returncode == 0  # caches seccomp
    pods.run("gc", "--grace-period", "0s", check=True)  # that pod would keep the layer alive
    try:
        hold = HoldOpens(pods.data / "cache" / "seccomp")
    except OSError as exc:
        pytest.skip(f"no fanotify permission events on this kernel ({exc})")
    podrun = [*PODRUN, "--dir", str(pods.data)]
    with hold:
        run = subprocess.Popen([*podrun, "run", "--net", "none", "demo", "--exec", "/bin/sh", "--", "-c", ROOT_CHECK],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # run has resolved demo and now reads the app's seccomp program: no manifest on disk yet
        event = hold.next()
        assert event.pid == run.pid and event.path.endswith(".bpf")
        collect = subprocess.Popen(["sh", "-c", '"$@" image rm demo && "$@" image gc', "sh", *podrun], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while collect.poll() is None and not _waiting_for_lock(pods.data / "locks" / "store.lock"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        hold.allow(event)
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0 and "ROOT-OK" in out, err
    assert collect.wait(timeout=60) == 0, collect.stderr.read() if collect.stderr else ""
    assert all(d.is_dir() for d in demo)  # the (exited) pod still names its layer
    pods.run("gc", "--grace-period", "0s", check=True)
    pods.run("image", "gc", check=True)
    assert not any(d.exists() for d in demo)


def test_image_gc_loops_never_start_a_pod_without_its_layers(pods: Pods) -> None:
    """Pods are created from an image that is imported, removed and collected over and over:
    each run either finds the image and its whole root, or fails cleanly because the image is
    gone; never a pod with a missing layer."""
    stop = threading.Event()
    outcomes: list[str] = []
    bad: list[str] = []

    def churn() -> None:
        while not stop.is_set():
            pods.run("image", "import", str(demo_rootfs(pods)), "demo")
            stop.wait(0.2)  # a window where runs find the image, however slow the machine is
            pods.run("image", "rm", "demo")
            pods.run("image", "gc")

    def create() -> None:
        for _ in range(12):
            res = pods.run("run", "--pull-policy", "never", "--net", "none", "demo", "--exec", "/bin/sh", "--", "-c",
                           ROOT_CHECK)
            if res.returncode == 0 and "ROOT-OK" in res.stdout:
                outcomes.append("ran")
            elif res.returncode == 252 and "not in the store" in res.stderr:
                outcomes.append("image gone")
            else:
                bad.append(f"{res.returncode}: {res.stdout} {res.stderr}")

    churner = threading.Thread(target=churn)
    creators = [threading.Thread(target=create) for _ in range(2)]
    churner.start()
    for t in creators:
        t.start()
    for t in creators:
        t.join(timeout=600)
    stop.set()
    churner.join(timeout=120)
    pods.run("gc", "--grace-period", "0s", check=True)
    assert bad == []
    assert "ran" in outcomes, outcomes


# -- a failed or dead pod never removes another pod's forward or lease ------------------------

def _web(pods: Pods, tmp_path: Path, port: int, *run_flags: str) -> tuple[subprocess.Popen[str], str]:
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("hello from the pod\n")
    proc, uuid, _ = pods.start("--port", f"80:{port}", *run_flags, "--volume", f"www,kind=host,source={www}",
                               "demo", "--mount", "volume=www,target=/www",
                               "--exec", "/bin/httpd", "--", "-f", "-p", "80", "-h", "/www")
    return proc, uuid


def _reachable(port: int) -> bool:
    res = subprocess.run(["curl", "-sS", "-m", "10", f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    return res.stdout == "hello from the pod\n"


def test_a_failed_run_leaves_the_running_pods_forward_and_lease(pods: Pods, tmp_path: Path) -> None:
    import_image(pods, demo_rootfs(pods), "demo")
    port = _free_port()
    proc, uuid = _web(pods, tmp_path, port)
    try:
        ip = _ip_of(pods, uuid)
        assert _reachable(port)
        forwards, leases = _forwards(), _leases(pods)
        assert f"tcp . {port}" in forwards and leases == {ip: uuid}
        # the same host port: the new pod fails, and its teardown leaves the running pod's forward
        res = pods.run("run", "--port", f"80:{port}", "demo", "--exec", "/bin/true")
        assert res.returncode != 0 and "already forwarded" in res.stderr, res.stderr
        assert _forwards() == forwards and _leases(pods) == leases and _reachable(port)
        # the running pod's address: refused, the lease stays the running pod's
        res = pods.run("run", "--net", f"default:IP={ip}", "demo", "--exec", "/bin/true")
        assert res.returncode != 0 and uuid in res.stderr, res.stderr
        assert _leases(pods) == leases and _reachable(port)
        # collecting the failed pods changes nothing either
        pods.run("gc", "--grace-period", "0s", check=True)
        assert _forwards() == forwards and _leases(pods) == leases and _reachable(port)
        assert f'tcp . {port} comment "{uuid}"' in forwards  # the forward names its owner
    finally:
        pods.run("stop", uuid, check=True)
        proc.wait(timeout=30)
    assert _forwards() == "" and _leases(pods) == {}


def test_gc_of_a_dead_pod_leaves_the_forward_a_new_pod_made(pods: Pods, tmp_path: Path) -> None:
    """Same host port, same pod address, same pod port: only the owner named in the element
    tells the dead pod's forward from the new pod's."""
    import_image(pods, demo_rootfs(pods), "demo")
    port = _free_port()
    dead, dead_uuid, _ = pods.start("--port", f"80:{port}", "demo", "--exec", "/bin/sleep", "--", "600")
    ip = _ip_of(pods, dead_uuid)
    dead.kill()  # kill -9 of the supervisor (stage0 exec'd it): its forward and lease stay behind
    dead.wait(timeout=30)
    # what an operator (or an allocator reclaiming a dead pod's resources) does to free the port
    subprocess.run(["nft", "delete", "element", "ip", TEST_TABLE, "fwd_any", f"{{ tcp . {port} }}"], check=True)
    proc, uuid = _web(pods, tmp_path, port, "--net", f"default:IP={ip}")
    try:
        assert _ip_of(pods, uuid) == ip and _reachable(port)
        out = pods.run("gc", "--grace-period", "0s", check=True).stdout
        assert f"marked pod {dead_uuid}" in out and f"removed pod {dead_uuid}" in out
        assert _reachable(port) and _leases(pods) == {ip: uuid} and f'comment "{uuid}"' in _forwards()
    finally:
        pods.run("stop", uuid, check=True)
        proc.wait(timeout=30)
    assert _forwards() == "" and _leases(pods) == {}


def test_gc_of_a_pod_whose_cgroup_record_names_another_pods_cgroup_leaves_that_pod_running(
        pods: Pods, tmp_path: Path) -> None:
    """gc kills every process in the cgroups it removes: a damaged record must not lead it to
    another pod's (or the host's) cgroup."""
    import_image(pods, demo_rootfs(pods), "demo")
    proc, running, running_dir = pods.start("--net", "none", "demo", "--exec", "/bin/sleep", "--", "600")
    try:
        uuid_file = tmp_path / "uuid"
        assert pods.run("run", "--net", "none", "--uuid-file-save", str(uuid_file), "demo",
                        "--exec", "/bin/true").returncode == 0
        exited = uuid_file.read_text().strip()
        record = pods.data / "pods" / "run" / exited / "cgroups"
        own = json.loads(record.read_text())
        record.write_text((running_dir / "cgroups").read_text())
        out = pods.run("gc", "--grace-period", "0s", check=True).stdout
        assert f"removed pod {exited}" in out
        assert proc.poll() is None
        assert json.loads(pods.run("status", "--format", "json", running, check=True).stdout)["state"] == "running"
        assert f"warning: pod {exited}: its cgroup record names" in out and "left alone" in out
        assert own and not [p for p in own if Path(p).exists()]  # removed by its own pod's exit
    finally:
        pods.run("stop", running, check=True)
        proc.wait(timeout=30)
