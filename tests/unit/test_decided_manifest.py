"""The pod manifest is stage0's decision (issue 14): the network mode, capability numbers and
the seccomp program's path, never a flag text; stage1 compiles nothing; version 1 manifests of
pods prepared or started before are read and upgraded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from podrun.model.caps import CAP_NAMES
from podrun.model.manifest import AppSpec, PodManifest, seccomp_bpf_path
from podrun.model.netspec import NetMode, NetSpec
from podrun.pod import caps_policy, seccomp_cache
from podrun.stage0 import appflags as af
from podrun.stage0 import prepare
from podrun.stage2 import confine
from tests.conftest import ROOT

SCHEMA = json.loads((ROOT / "podrun" / "schemas" / "pod-manifest.json").read_text())
UUID = "0123abcd-0000-4000-8000-000000000001"
IMAGE_ID = "sha256:" + "a" * 64


def _image(_name: str) -> prepare.ImageInfo:
    return prepare.ImageInfo(IMAGE_ID, "demo:latest", {"config": {"Cmd": ["/bin/sh"]}}, ("/nonexistent/layer",))


def _plan(*args: str, **run: Any) -> prepare.PodPlan:
    return prepare.build_pod(prepare.RunRequest(apps=af.split_apps(list(args)), **run), _image)


@pytest.mark.parametrize(("net", "mode", "networks"), [
    ("none", NetMode.NONE, ()),
    ("host", NetMode.HOST, ()),
    (" host ", NetMode.HOST, ()),
    ("default:IP=172.16.28.9", NetMode.NETWORKS, (NetSpec("default", (("IP", "172.16.28.9"),)),)),
])
def test_the_network_mode_is_decided(net: str, mode: str, networks: tuple[NetSpec, ...]) -> None:
    manifest = _plan("demo", net=net).manifest
    assert (manifest.net, manifest.networks) == (mode, networks)
    jsonschema.validate(json.loads(manifest.to_json()), SCHEMA)


def test_capabilities_are_numbers_and_the_seccomp_program_a_path() -> None:
    plan = _plan("demo", "--caps-retain", "net_raw,chown", "--seccomp", "mode=remove,chmod", "---",
                 "demo", "--name", "two", net="none")
    one, two = plan.manifest.apps
    assert one.capabilities == (CAP_NAMES["CAP_CHOWN"], CAP_NAMES["CAP_NET_RAW"])
    assert two.capabilities == tuple(sorted(caps_policy.cap_numbers(caps_policy.DEFAULT_CAPS)))
    assert (one.seccomp_bpf, two.seccomp_bpf) == (seccomp_bpf_path("demo"), "apps/two/seccomp.bpf")
    # what stage0 compiles them from stays in stage0
    assert plan.seccomp == {"demo": ("mode=remove,chmod", frozenset({"CAP_CHOWN", "CAP_NET_RAW"})),
                            "two": (None, caps_policy.DEFAULT_CAPS)}
    doc = json.loads(plan.manifest.to_json())
    jsonschema.validate(doc, SCHEMA)
    assert "mode=remove" not in plan.manifest.to_json().decode() and "seccomp" not in doc["apps"][0]
    assert PodManifest.from_json(plan.manifest.to_json()) == plan.manifest


def test_fly_apps_have_no_seccomp_program() -> None:
    plan = _plan("demo", stage1="fly", net="host")
    assert plan.manifest.apps[0].seccomp_bpf is None and plan.seccomp == {}


def _v1(**over: Any) -> bytes:
    app = {"name": "web", "image_id": IMAGE_ID, "image_name": "demo:latest", "lower_dirs": ["/l"],
           "exec_argv": ["/bin/true"], "env": ["A=1"], "user": "0", "group": None, "supplementary_gids": [],
           "working_dir": "/", "mounts": [], "read_only_rootfs": False,
           "resources": {"memory_max": None, "cpu_millis": None, "pids_max": None},
           "capabilities": ["CAP_KILL", "CAP_CHOWN"], "seccomp": "mode=remove,chmod", "no_new_privileges": True,
           "stop_signal": 15}
    doc = {"version": 1, "uuid": UUID, "apps": [app], "volumes": [], "hostname": "", "net": "default,mynet:IP=1.2.3.4",
           "stage1": "default", "interactive": False, "dns": [], "hosts_entries": [],
           "networks": [{"name": "default", "args": []}, {"name": "mynet", "args": [["IP", "1.2.3.4"]]}],
           "ports": [], "dns_search": [], "dns_opts": [], "notify": "ready", "register": False,
           "log_max_size": 8 << 20, **over}
    return json.dumps(doc, indent=1).encode()


def test_a_version_1_manifest_is_upgraded_on_reading() -> None:
    m = PodManifest.from_json(_v1())
    assert (m.version, m.net, [n.name for n in m.networks]) == (2, NetMode.NETWORKS, ["default", "mynet"])
    app = m.apps[0]
    assert app.capabilities == (CAP_NAMES["CAP_CHOWN"], CAP_NAMES["CAP_KILL"])
    assert app.seccomp_bpf == "apps/web/seccomp.bpf"  # the file version 1's stage0 wrote
    jsonschema.validate(json.loads(m.to_json()), SCHEMA)
    for net in ("none", "host"):
        assert PodManifest.from_json(_v1(net=net, networks=[])).net == net
    assert PodManifest.from_json(_v1(stage1="fly", net="host", networks=[])).apps[0].seccomp_bpf is None


@pytest.mark.parametrize("doc", [
    _v1(version=3),
    _v1(apps=[{**json.loads(_v1())["apps"][0], "capabilities": ["CAP_NOPE"]}]),
    json.dumps({**json.loads(PodManifest(UUID, ()).to_json()), "net": "default"}).encode(),
    json.dumps({**json.loads(PodManifest(UUID, ()).to_json()),
                "apps": [{**json.loads(_v1())["apps"][0], "capabilities": ["CAP_KILL"]}]}).encode(),
])
def test_undecided_or_unknown_manifests_are_refused(doc: bytes) -> None:
    with pytest.raises(ValueError):
        PodManifest.from_json(doc)


# -- stage1 reads the program stage0 compiled, and compiles nothing ---------------------------------

def _app(seccomp_bpf: str | None) -> AppSpec:
    return AppSpec("web", IMAGE_ID, "demo", ("/l",), ("/bin/true",), (), seccomp_bpf=seccomp_bpf)


def test_stage1_reads_the_program_and_never_compiles(tmp_path: Path) -> None:
    (tmp_path / "apps" / "web").mkdir(parents=True)
    program = tmp_path / "apps" / "web" / "seccomp.bpf"
    program.write_bytes(b"\x06" + b"\x00" * 7)
    assert confine.pod_program(_app("apps/web/seccomp.bpf"), str(tmp_path)) == program.read_bytes()
    assert confine.pod_program(_app(None), str(tmp_path)) is None
    code = (
        "import sys; from podrun.model.manifest import AppSpec; from podrun.stage2 import confine\n"
        f"app = AppSpec('web', 'x', 'demo', (), (), (), seccomp_bpf='apps/web/seccomp.bpf')\n"
        "for damage in (b'', b'half'):\n"
        f"    open({str(program)!r}, 'wb').write(damage)\n"
        "    try:\n"
        f"        confine.pod_program(app, {str(tmp_path)!r})\n"
        "    except OSError as exc:\n"
        "        print('refused' if 'prepare the pod again' in str(exc) else exc)\n"
        f"import os; os.unlink({str(program)!r})\n"
        "try:\n"
        f"    confine.pod_program(app, {str(tmp_path)!r})\n"
        "except OSError as exc:\n"
        "    print('refused' if 'prepare the pod again' in str(exc) else exc)\n"
        "print(any(m in sys.modules for m in ('podrun.pod.seccomp_policy', 'podrun.isolation.seccomp')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["refused", "refused", "refused", "False"], out.stdout + out.stderr


def test_stage1_refuses_a_program_path_stage0_does_not_write(tmp_path: Path) -> None:
    (tmp_path / "x.bpf").write_bytes(b"\x06" + b"\x00" * 7)
    for path in ("x.bpf", "apps/other/seccomp.bpf", "/etc/passwd"):
        with pytest.raises(OSError):
            confine.pod_program(_app(path), str(tmp_path))


def test_a_cache_entry_of_another_key_is_never_used(tmp_path: Path) -> None:
    caps = caps_policy.DEFAULT_CAPS
    program = seccomp_cache.seccomp_program(None, caps, str(tmp_path))
    (entry,) = os.listdir(tmp_path)
    assert seccomp_cache.seccomp_program(None, caps, str(tmp_path)) == program  # from the cache
    other = seccomp_cache.seccomp_program("mode=remove,chmod", caps, None)
    assert other != program
    stored = (tmp_path / entry).read_bytes()
    key = stored.partition(b"\n")[0]
    # another key under the same name (a CRC-32 collision), a damaged entry: compiled again
    for planted in (key + b"x\n" + other, key + b"\n" + other[:-3], key + b"\n"):
        (tmp_path / entry).write_bytes(planted)
        assert seccomp_cache.seccomp_program(None, caps, str(tmp_path)) == program
    (tmp_path / entry).write_bytes(key + b"\n" + other)  # the entry's own key: it is believed
    assert seccomp_cache.seccomp_program(None, caps, str(tmp_path)) == other
