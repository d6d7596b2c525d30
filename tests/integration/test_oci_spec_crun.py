"""config.json from podrun.stage1.oci.spec, run by real OCI runtimes (crun, and runc where it is
installed): the in-pod probe reports the confinement the config asks for, the same the
``default`` flavor gives (tests/integration/test_run_probe.py).

The bundle's root is a plain directory holding busybox and the probe (no overlay), and every
namespace is new (no pod to join): what is tested is the document, not the flavor's driver.
Each run has its own ``--root`` state directory and cgroup, removed (``delete --force``) even
when the run fails.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podrun.model.manifest import AppSpec, MountSpec, PodManifest, Resources, Volume
from podrun.pod.caps_policy import DEFAULT_CAPS, cap_numbers
from podrun.stage1.oci.spec import build_config
from podrun.stage2.app import lookup_user
from podrun.stage2.mountplan import DEVICES
from tests.fixtures.images import busybox_entries, tar_bytes
from tests.fixtures.ocispec import default_section
from tests.fixtures.probe import parse_probe, probe_layer_entries
from tests.fixtures.schemas import validate

DEFAULT_CAPS_MASK = 0x800405FB  # podman's default set (tests/integration/test_run_probe.py)
NEW_NAMESPACES = {"pid": "", "ipc": "", "uts": "", "network": ""}
RUNTIMES = [name for name in ("crun", "runc") if shutil.which(name)]


class Bundles:
    """A root filesystem and pod dir shared by the module's runs, and a runner for one app."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.rootfs = base / "rootfs"
        self.rootfs.mkdir()
        with tarfile.open(fileobj=io.BytesIO(tar_bytes(busybox_entries() + probe_layer_entries()))) as tf:
            tf.extractall(self.rootfs)  # our own layer: busybox and the probe
        self.pod_dir = base / "pod"
        (self.pod_dir / "etc").mkdir(parents=True)
        for name, text in (("hostname", "spec-test\n"), ("hosts", "127.0.0.1\tlocalhost\n"),
                           ("resolv.conf", "nameserver 192.0.2.53\n")):
            (self.pod_dir / "etc" / name).write_text(text)
        self.volume = base / "shared"
        self.volume.mkdir()
        (self.volume / "data").write_text("from the host\n")
        (self.volume / "data").chmod(0o666)  # only the read-only mount stands in the way

    def run(self, runtime: str, app: AppSpec, manifest: PodManifest | None = None,
            namespaces: dict[str, str] | None = None) -> dict[str, Any]:
        manifest = manifest or PodManifest("0123456789abcdef0123456789abcdef", (app,), hostname="spec-test",
                                           volumes=(Volume("shared", "host", str(self.volume), True),))
        fd = os.open(self.rootfs, os.O_PATH | os.O_DIRECTORY)
        try:
            uid, gid, groups, home = lookup_user(app.user, app.group, fd)
        finally:
            os.close(fd)
        name = f"podrun-spec-{uuid.uuid4().hex[:12]}"
        config = build_config(manifest, app, rootfs=str(self.rootfs), pod_dir=str(self.pod_dir),
                              namespaces=NEW_NAMESPACES if namespaces is None else namespaces, cgroups_path=f"/{name}", user=(uid, gid, groups), home=home,
                              seccomp=default_section(app))
        validate(config, "runtime-spec-config")
        bundle = self.base / name
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(config))
        state = bundle / "state"
        run = [runtime, "--root", str(state), "run", "--bundle", str(bundle), name]
        delete = [runtime, "--root", str(state), "delete", "--force", name]
        try:
            proc = subprocess.run(runtime_command(runtime, run), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=60)
        finally:
            subprocess.run(runtime_command(runtime, delete), capture_output=True, timeout=60)
            shutil.rmtree(bundle)
        assert proc.returncode == 0, (runtime, proc.returncode, proc.stderr)
        return parse_probe(proc.stdout)


def hybrid_cgroups() -> bool:
    """A cgroup v1/v2 hybrid whose cgroup2 still holds a controller (this VM: hugetlb)."""
    controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    return controllers.exists() and bool(controllers.read_text().split())


def runtime_command(runtime: str, command: list[str]) -> list[str]:
    """*command*, as it can run here.  crun refuses a hybrid outright ("cgroups in hybrid mode not
    supported, drop all controllers from cgroupv2"; bench/hostprep.py moves the controller for the
    bench): then crun runs in a mount namespace of its own without the cgroup2 mount, so it sees
    (and cleans up) the v1 hierarchies only, and the host is left as it is."""
    if runtime != "crun" or not hybrid_cgroups():
        return command
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'umount /sys/fs/cgroup/unified && exec "$@"', "sh", *command]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundles]:
    if not RUNTIMES:
        pytest.skip("neither crun nor runc is installed")
    yield Bundles(tmp_path_factory.mktemp("oci-spec"))


def probe_app(*probe_args: str, **fields: Any) -> AppSpec:
    base: dict[str, Any] = {"capabilities": tuple(sorted(cap_numbers(DEFAULT_CAPS))),
                            "seccomp_bpf": "apps/probe/seccomp.bpf"}
    return AppSpec("probe", "sha256:" + "0" * 64, "probe", ("/unused",), ("/probe", *probe_args), ("PATH=/bin",),
                   **(base | fields))


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_identity_caps_nnp_seccomp_hostname(bundles: Bundles, runtime: str) -> None:
    r = bundles.run(runtime, probe_app("--try-keyctl", "--try-mount", "--try-socket-vsock", "--try-tiocsti", "1"))
    assert (r["uid"], r["gid"], r["groups"]) == (0, 0, [0])
    for kind in ("eff", "prm", "bnd"):
        assert int(r["caps"][kind], 16) == DEFAULT_CAPS_MASK, (kind, r["caps"])
    assert int(r["caps"]["inh"], 16) == int(r["caps"]["amb"], 16) == 0
    assert r["no_new_privs"] == 1 and r["seccomp"] == 2
    assert r["hostname"] == "spec-test"
    assert r["env"]["HOME"] == "/root" and r["env"]["PATH"] == "/bin"
    assert r["cwd"] == "/"
    assert r["rlimits"]["NOFILE"][0] > 1024
    assert r["checks"]["keyctl"]["errno"] == errno.EPERM
    assert r["checks"]["mount"]["errno"] == errno.EPERM
    vsock = next(v for k, v in r["checks"].items() if k.startswith("socket-vsock"))
    assert vsock["ok"] is False and vsock["errno"] == errno.ENOSYS, vsock  # the filter's default, as podrun's
    # stdout is a pipe: an allowed TIOCSTI would fail with ENOTTY; seccomp refuses it first
    assert r["checks"]["tiocsti:1"]["errno"] == errno.EPERM


def test_masks_sys_and_dev(bundles: Bundles, runtime: str) -> None:
    r = bundles.run(runtime, probe_app("--try-read", "/proc/keys", "--try-write", "/proc/sys/kernel/domainname",
                                       "--try-write", "/sys/kernel/uevent_helper", "--try-mknod", "/tmp/dev-null"))
    mounts = {m["mount_point"]: m for m in r["mounts"]}
    for masked in ("/proc/keys", "/proc/timer_list", "/sys/firmware"):
        assert masked in mounts, masked
    assert r["checks"]["read:/proc/keys"]["bytes"] == 0
    assert r["checks"]["write:/proc/sys/kernel/domainname"]["errno"] == errno.EROFS
    assert r["checks"]["write:/sys/kernel/uevent_helper"]["errno"] == errno.EROFS
    assert r["checks"]["mknod:/tmp/dev-null"]["ok"] is False
    assert mounts["/sys"]["options"].split(",")[0] == "ro"
    assert {"nosuid", "noexec"} <= set(mounts["/dev"]["options"].split(","))
    nodes = {d["name"]: (d["major"], d["minor"]) for d in r["dev"] if d["type"] == "char"}
    assert nodes == {name: (major, minor) for name, major, minor in DEVICES}
    links = {d["name"]: d["target"] for d in r["dev"] if d["type"] == "link"}
    assert links.pop("core", "/proc/kcore") == "/proc/kcore"  # crun adds it (masked); runc and podrun do not
    assert links == {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                     "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
    assert {d["name"] for d in r["dev"] if d["type"] == "dir"} == {"pts", "shm", "mqueue"}
    for name in ("hosts", "resolv.conf", "hostname"):
        assert mounts[f"/etc/{name}"]["root"] == str(bundles.pod_dir / "etc" / name), name


def test_user_workdir_volume_and_read_only_root(bundles: Bundles, runtime: str) -> None:
    app = probe_app("--try-write", "/shared/data", "--try-write", "/new-file", "--try-read", "/shared/data",
                    user="nobody", working_dir="/work/dir", read_only_rootfs=True, supplementary_gids=(7,),
                    mounts=(MountSpec("shared", "/shared"),), resources=Resources(pids_max=64))
    r = bundles.run(runtime, app)
    assert (r["uid"], r["gid"], sorted(r["groups"])) == (65534, 65534, [7, 65534])
    assert int(r["caps"]["eff"], 16) == 0 and int(r["caps"]["bnd"], 16) == DEFAULT_CAPS_MASK
    assert r["env"]["HOME"] == "/"
    assert r["cwd"] == "/work/dir"
    assert r["checks"]["write:/shared/data"]["errno"] == errno.EROFS
    assert r["checks"]["write:/new-file"]["errno"] == errno.EROFS
    assert r["checks"]["read:/shared/data"]["bytes"] == len("from the host\n")


def test_seccomp_off_and_extra_caps(bundles: Bundles, runtime: str) -> None:
    caps = tuple(sorted(cap_numbers(DEFAULT_CAPS | {"CAP_NET_RAW", "CAP_SYS_ADMIN"})))
    r = bundles.run(runtime, probe_app("--try-keyctl", seccomp_bpf=None, no_new_privileges=False, capabilities=caps))
    assert r["seccomp"] == 0 and r["no_new_privs"] == 0
    assert int(r["caps"]["eff"], 16) == DEFAULT_CAPS_MASK | 1 << 13 | 1 << 21
    assert r["checks"]["keyctl"]["errno"] != errno.EPERM  # no filter: the kernel answers


@pytest.fixture
def infra() -> Iterator[int]:
    """A process in new PID, IPC, UTS and network namespaces, standing for the pod's infra
    process (catatonit in the flavor); its pid.  Killed (with its namespaces) at the end."""
    holder = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--ipc", "--uts", "--net",
                               "sh", "-c", "echo ready; exec sleep 600"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        children = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
        yield int(children[0])
    finally:
        holder.kill()
        holder.wait()


def test_joins_the_pods_namespaces_by_path(bundles: Bundles, runtime: str, infra: int) -> None:
    kinds = {"pid": "pid", "ipc": "ipc", "uts": "uts", "network": "net"}
    r = bundles.run(runtime, probe_app(), namespaces={kind: f"/proc/{infra}/ns/{ns}" for kind, ns in kinds.items()})
    for ns in kinds.values():
        assert r["ns"][ns] == os.readlink(f"/proc/{infra}/ns/{ns}"), ns
    assert r["ns"]["mnt"] != os.readlink(f"/proc/{infra}/ns/mnt")
    assert r["pid"] > 1  # pid 1 of that namespace is the infra process
    assert r["hostname"] == "spec-test"  # set in the joined UTS namespace
