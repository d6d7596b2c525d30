"""Structured output (issue 13), on real pods and images: ``status`` and ``list`` give each
network as an object (``name, ifname, ip, mask, gateway, mac``, rkt's fields) and the host
ports forwarded, for pods on the default network, on a CNI network run by Debian's plugins,
with ``--net none`` and ``--net host``; every ``--format json`` output (those two, ``image
inspect``, ``version``) matches its schema in podrun/schemas/.  What status says is compared
with what the pod's kernel says of its interfaces (read with ``podrun enter``)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_BRIDGE, TEST_SUBNET
from tests.fixtures.images import busybox_entries, tar_bytes, write_oci_layout
from tests.fixtures.schemas import validate
from tests.integration.test_net import _free_port
from tests.integration.test_run import Pods, module_pods

# A CNI network of this session's own (sessions run side by side: see tests/conftest.py): its
# bridge named after the test bridge, its subnet the test subnet's third byte + 100.
CNI_NAME = "outputtest"
CNI_BRIDGE = f"{TEST_BRIDGE}c"
_a, _b, _c, _ = TEST_SUBNET.split("/")[0].split(".")
CNI_SUBNET = f"{_a}.{_b}.{(int(_c) + 100) % 256}.0/24"
HOSTILE_LABEL = "\x1b]0;owned\x07\x1b[2Jtext"


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "output")


@pytest.fixture
def cni_net(tmp_path: Path) -> Iterator[Path]:
    """A net.d with the test default network and a bridge + host-local CNI network (no default
    route: the default network has it)."""
    subprocess.run(["ip", "link", "del", CNI_BRIDGE], capture_output=True)  # a killed session's: start afresh
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    (net_d / "default.json").write_text(json.dumps({"bridge": TEST_BRIDGE, "subnet": TEST_SUBNET}))
    (net_d / f"10-{CNI_NAME}.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": CNI_NAME,
        "plugins": [{"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": False,
                     "ipam": {"type": "host-local", "subnet": CNI_SUBNET, "dataDir": str(tmp_path / "ipam")}}],
    }))
    yield net_d
    subprocess.run(["ip", "link", "del", CNI_BRIDGE], capture_output=True)


def status(p: Pods, uuid: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(p.run("status", "--format", "json", uuid, check=True).stdout)
    validate(doc, "pod-status")
    return doc


def listed(p: Pods, uuid: str) -> dict[str, Any]:
    docs = json.loads(p.run("list", "--format", "json", check=True).stdout)
    validate(docs, "pod-list")
    (doc,) = (d for d in docs if d["uuid"] == uuid)
    return dict(doc)


def _mask(prefix: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return ".".join(str((bits >> s) & 0xFF) for s in (24, 16, 8, 0))


def seen_in_pod(p: Pods, uuid: str, ifname: str) -> dict[str, Any]:
    """What the pod's kernel says of *ifname*: address, mask and MAC (``podrun enter``)."""
    res = p.run("enter", uuid, "/bin/sh", "-c", f"ip -4 -o addr show dev {ifname}; cat /sys/class/net/{ifname}/address",
                check=True)
    match = re.search(r"inet (\S+)/(\d+) ", res.stdout)
    assert match, res.stdout
    return {"name": None, "ifname": ifname, "ip": match[1], "mask": _mask(int(match[2])), "gateway": None,
            "mac": res.stdout.splitlines()[-1].strip()}


def host_address(bridge: str) -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True,
                         check=True).stdout
    match = re.search(r"inet (\S+)/", out)
    assert match, out
    return match[1]


def stop(p: Pods, uuid: str, proc: subprocess.Popen[str]) -> None:
    p.run("stop", uuid, check=True)
    proc.wait(timeout=20)


def test_default_network_and_port_forward(pods: Pods) -> None:
    port = _free_port()
    proc, uuid, _ = pods.start("--port", f"80:{port}", "demo", "--exec", "/bin/sleep", "--", "60")
    try:
        doc = status(pods, uuid)
        expected = dict(seen_in_pod(pods, uuid, "eth0"), name="default", gateway=host_address(TEST_BRIDGE))
        assert doc["networks"] == [expected]
        assert expected["mac"] == "02:42:" + ":".join(f"{int(b):02x}" for b in expected["ip"].split("."))
        assert doc["ports"] == [{"host_ip": "", "host_port": port, "pod_port": 80, "protocol": "tcp"}]
        assert doc["state"] == "running" and doc["errors"] == []
        assert listed(pods, uuid) == doc
        text = pods.run("status", uuid, check=True).stdout.splitlines()
        assert (f"network-default=ifname=eth0 ip={expected['ip']} mask=255.255.255.0 "
                f"gateway={expected['gateway']} mac={expected['mac']}") in text
        assert f"port-tcp-{port}=pod_port=80" in text
        row = next(line for line in pods.run("list", "--full", check=True).stdout.splitlines() if uuid in line)
        assert row.split()[-1] == f"default:{expected['ip']}"
    finally:
        stop(pods, uuid, proc)
    doc = status(pods, uuid)  # exited: the networks' names only, no forward
    assert doc["networks"] == [dict.fromkeys(expected, None) | {"name": "default"}] and doc["ports"] == []
    assert "network-default=-" in pods.run("status", uuid, check=True).stdout.splitlines()


def test_cni_network_next_to_the_default_one(pods: Pods, cni_net: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODRUN_NET_DIR", str(cni_net))  # for every podrun the test runs
    proc, uuid, _ = pods.start("--net", f"default,{CNI_NAME}", "demo", "--exec", "/bin/sleep", "--", "60")
    try:
        doc = status(pods, uuid)
        default, cni = doc["networks"]
        assert default["name"] == "default" and default["ifname"] == "eth0" and default["ip"]
        assert cni == dict(seen_in_pod(pods, uuid, "eth1"), name=CNI_NAME, gateway=host_address(CNI_BRIDGE))
        assert cni["ip"].startswith(CNI_SUBNET.rsplit(".", 1)[0] + ".") and cni["mask"] == "255.255.255.0"
        assert doc["ports"] == [] and doc["errors"] == []
        assert listed(pods, uuid) == doc
        assert (f"network-{CNI_NAME}=ifname=eth1 ip={cni['ip']} mask=255.255.255.0 gateway={cni['gateway']} "
                f"mac={cni['mac']}") in pods.run("status", uuid, check=True).stdout.splitlines()
    finally:
        stop(pods, uuid, proc)


@pytest.mark.parametrize("net", ["none", "host"])
def test_none_and_host(pods: Pods, net: str) -> None:
    proc, uuid, _ = pods.start("--net", net, "demo", "--exec", "/bin/sleep", "--", "60")
    try:
        doc = status(pods, uuid)
        assert doc["networks"] == [{"name": net, "ifname": None, "ip": None, "mask": None, "gateway": None,
                                    "mac": None}]
        assert doc["ports"] == [] and listed(pods, uuid) == doc
        assert f"network-{net}=-" in pods.run("status", uuid, check=True).stdout.splitlines()
    finally:
        stop(pods, uuid, proc)


def test_a_prepared_pod(pods: Pods) -> None:
    uuid = pods.run("prepare", "--net", "default", "demo", check=True).stdout.strip()
    try:
        doc = status(pods, uuid)
        assert doc["state"] == "prepared" and doc["networks"][0]["name"] == "default"
        assert doc["networks"][0]["ip"] is None and doc["ports"] == []
    finally:
        pods.run("rm", uuid, check=True)


def test_image_inspect(pods: Pods, tmp_path: Path) -> None:
    """JSON by ``--format json``, checked against its schema; text by default, where what an
    image says reaches the terminal escaped."""
    layout = tmp_path / "layout"
    write_oci_layout(layout, [tar_bytes(busybox_entries())], config={
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "GREETING=\x1b[31mred"], "User": "nobody",
                   "Labels": {"title": HOSTILE_LABEL, "org.example.version": "1.2"}, "ExposedPorts": {"80/tcp": {}}}})
    image_id = pods.run("fetch", f"oci:{layout}:latest", check=True).stdout.strip()
    try:
        doc = json.loads(pods.run("image", "inspect", "--format", "json", image_id, check=True).stdout)
        validate(doc, "image-inspect")
        assert doc["id"] == image_id and doc["architecture"] == "amd64" and doc["os"] == "linux"
        assert doc["labels"] == {"title": HOSTILE_LABEL, "org.example.version": "1.2"}
        assert doc["config"]["config"]["User"] == "nobody" and doc["manifest"]["layers"]
        text = pods.run("image", "inspect", image_id, check=True).stdout
        assert "\x1b" not in text and "\x07" not in text
        lines = [re.sub(r"^([^:]+:) +", r"\1 ", line) for line in text.splitlines()]  # without the alignment
        assert lines[0] == f"ID: {image_id}"
        for line in ('Cmd: ["/bin/sh"]', "User: nobody", "OS/Arch: linux/amd64", "Env: PATH=/bin",
                     "Env: GREETING=\\x1b[31mred", "Exposed ports: 80/tcp",
                     "Label: title=\\x1b]0;owned\\x07\\x1b[2Jtext", "Label: org.example.version=1.2"):
            assert line in lines, text
        demo = json.loads(pods.run("image", "inspect", "--format", "json", "demo", check=True).stdout)
        validate(demo, "image-inspect")
        assert demo["names"] == ["localhost/demo:latest"] and demo["labels"] == {}
    finally:
        pods.run("image", "rm", image_id, check=True)


def test_version(pods: Pods) -> None:
    doc = json.loads(pods.run("version", "--format", "json", check=True).stdout)
    validate(doc, "version")
    assert pods.run("version", "--format", "yaml").returncode == 253
