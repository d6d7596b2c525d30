"""What an app sees, asserted on the in-pod probe's JSON report (SECURITY-TESTS 12, 13), for
every stage1 flavor that confines apps: ``default``, and ``oci`` on each OCI runtime installed
here (issue 16: where the flavors differ in what an app sees, one of them has a defect)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, require_root
from tests.fixtures.probe import parse_probe, probe_image

DEFAULT_CAPS = "00000000800405fb"
# flavor id -> the run flags that choose it; an OCI runtime that is not installed is skipped
FLAVORS = {"default": (), "oci-crun": ("--stage1", "oci", "--runtime", "crun"),
           "oci-runc": ("--stage1", "oci", "--runtime", "runc")}


@pytest.fixture(scope="module", params=list(FLAVORS))
def probe_pod(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_root()
    flavor_flags = FLAVORS[request.param]
    if flavor_flags and not (shutil.which(flavor_flags[-1]) or os.path.exists(f"/usr/sbin/{flavor_flags[-1]}")):
        pytest.fail(f"{flavor_flags[-1]} is not installed (scripts/install-deps.sh installs it)")
    base = tmp_path_factory.mktemp("probe")
    data = base / "data"
    built = probe_image(base / "layout")
    subprocess.run([sys.executable, "-m", "podrun", "--dir", str(data), "fetch", f"oci:{built.layout}"],
                   check=True, capture_output=True, cwd=ROOT)

    def run(*probe_args: str, run_flags: tuple[str, ...] = (), app_flags: tuple[str, ...] = ()) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "podrun", "--dir", str(data), "run", *flavor_flags, *run_flags, built.manifest_digest,
             "--exec", "/probe", *app_flags, "--", *probe_args],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return parse_probe(proc.stdout)

    yield run


def test_identity_caps_and_filters(probe_pod: Any) -> None:
    r = probe_pod()
    assert (r["uid"], r["gid"], r["pid"]) == (0, 0, 2)  # pid 1 is the pod's init
    assert r["caps"]["eff"].endswith(DEFAULT_CAPS[-8:]) and int(r["caps"]["eff"], 16) == int(DEFAULT_CAPS, 16)
    assert int(r["caps"]["bnd"], 16) == int(r["caps"]["prm"], 16) == int(DEFAULT_CAPS, 16)
    assert int(r["caps"]["inh"], 16) == int(r["caps"]["amb"], 16) == 0
    assert r["no_new_privs"] == 1 and r["seccomp"] == 2
    assert [f["fd"] for f in r["fds"]] == [0, 1, 2]
    assert r["cwd"] == "/"
    assert r["rlimits"]["NOFILE"][0] > 1024


def test_namespaces_differ_from_host(probe_pod: Any) -> None:
    r = probe_pod()
    for ns in ("mnt", "pid", "net", "ipc", "uts"):
        assert r["ns"][ns] != os.readlink(f"/proc/self/ns/{ns}"), ns


def test_mounts_dev_and_masks(probe_pod: Any) -> None:
    r = probe_pod("--try-read", "/proc/keys", "--try-write", "/proc/sys/kernel/domainname",
                  "--try-write", "/sys/kernel/uevent_helper", "--try-mknod", "/tmp/dev-null")
    mounts = {m["mount_point"]: m for m in r["mounts"]}
    assert "nodev" in mounts["/"]["options"].split(",")
    assert mounts["/sys"]["options"].split(",")[0] == "ro"
    assert mounts["/proc/sys"]["options"].split(",")[0] == "ro"
    for masked in ("/proc/keys", "/proc/timer_list", "/sys/firmware"):
        assert masked in mounts, masked
    assert r["checks"]["read:/proc/keys"]["bytes"] == 0
    assert r["checks"]["write:/proc/sys/kernel/domainname"]["errno"] == errno.EROFS
    assert r["checks"]["write:/sys/kernel/uevent_helper"]["errno"] == errno.EROFS
    assert r["checks"]["mknod:/tmp/dev-null"]["ok"] is False
    names = sorted(d["name"] if isinstance(d, dict) else d for d in r["dev"])
    assert names == sorted(["fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
                            "stdin", "stdout", "tty", "urandom", "zero"])


@pytest.mark.parametrize(
    ("flag", "key"),
    [("--try-mount", "mount"), ("--try-unshare", "unshare"), ("--try-keyctl", "keyctl"), ("--try-bpf", "bpf"),
     ("--try-socket-vsock", "socket-vsock"), ("--try-clone-newuser", "clone-newuser")],
)
def test_seccomp_denials(probe_pod: Any, flag: str, key: str) -> None:
    r = probe_pod(flag)
    check = next(v for k, v in r["checks"].items() if k.startswith(key))
    assert check["ok"] is False and check["errno"] in (errno.EPERM, errno.ENOSYS), check


def test_seccomp_remove_and_user(probe_pod: Any) -> None:
    r = probe_pod("--try-keyctl", app_flags=("--user", "nobody"))
    assert (r["uid"], r["gid"]) == (65534, 65534)
    assert int(r["caps"]["eff"], 16) == 0 and int(r["caps"]["bnd"], 16) == int(DEFAULT_CAPS, 16)
    assert r["env"]["HOME"] == "/"


@pytest.mark.parametrize("net", ["none", "default"])
def test_root_in_the_pod_may_ping(probe_pod: Any, net: str) -> None:
    """ICMP echo sockets for group 0 in the pod's own network namespace, as podman sets it."""
    assert probe_pod("--try-icmp-socket", run_flags=("--net", net))["checks"]["icmp-socket"]["ok"] is True
    nobody = probe_pod("--try-icmp-socket", run_flags=("--net", net), app_flags=("--user", "nobody"))
    assert nobody["checks"]["icmp-socket"]["errno"] == errno.EACCES
