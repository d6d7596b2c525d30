"""Pod networking on the real kernel with real tools: the default network (bridge, leases,
NAT, port forwards through nftables), CNI networks with Debian's plugins, DNS/hosts files,
teardown on exit and by gc after kill -9 (issue 5).  Addresses: loopback and the test subnets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.faults import NET_CHECKPOINTS
from tests.conftest import ROOT, TEST_BRIDGE, TEST_SUBNET, TEST_TABLE, leftover_netns, leftover_pod_interfaces
from tests.integration.test_run import PODRUN, Pods, module_pods

GATEWAY = TEST_SUBNET.rsplit(".", 1)[0] + ".1"
# A CNI network of this session's own, as in test_structured_output (sessions run side by side,
# and a killed one leaves its bridge): named after the test bridge, the test subnet's third byte + 50.
CNI_BRIDGE = f"{TEST_BRIDGE}n"
_a, _b, _c, _ = TEST_SUBNET.split("/")[0].split(".")
CNI_PREFIX = f"{_a}.{_b}.{(int(_c) + 50) % 256}"
CNI_SUBNET = f"{CNI_PREFIX}.0/24"


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    for p in module_pods(tmp_path_factory, "net"):
        yield p
    assert _leases(p) == {}
    assert _forwards() == ""
    _wait_no_interfaces()


def _leases(p: Pods) -> dict[str, str]:
    d = p.data / "net" / TEST_BRIDGE / "leases"
    return {f.name: json.loads(f.read_text())["pod"] for f in d.iterdir()} if d.is_dir() else {}


def _forwards() -> str:
    """The elements of the test table's port maps ('' when none)."""
    out = subprocess.run(["nft", "list", "table", "ip", TEST_TABLE], capture_output=True, text=True).stdout
    return "\n".join(line.strip() for line in out.splitlines() if "elements" in line)


def _wait_no_interfaces(before: list[str] | None = None, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while leftover_pod_interfaces() != (before or []) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover_pod_interfaces() == (before or [])


def _netns_files() -> list[str]:
    return leftover_netns()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ip_of(p: Pods, uuid: str) -> str:
    doc = json.loads(p.run("status", "--format", "json", uuid, check=True).stdout)
    nets = [n for n in doc["networks"] if n["name"] == "default" and n["ip"]]
    assert nets, doc
    return str(nets[0]["ip"])


def test_default_network_pods_reach_each_other_and_the_host(pods: Pods) -> None:
    server, uuid, _ = pods.start("demo", "--exec", "/bin/sh", "--", "-c", "echo pong | nc -l -p 7000")
    ip = _ip_of(pods, uuid)
    assert ip.startswith(TEST_SUBNET.rsplit(".", 1)[0] + ".")
    res = pods.sh(f"nc -w 5 {ip} 7000 </dev/null")
    assert res.returncode == 0 and res.stdout.strip() == "pong", res.stderr
    assert server.wait(timeout=20) == 0
    # the host's address on the bridge
    with socket.socket() as listener:
        listener.bind((GATEWAY, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run", "demo", "--exec", "/bin/sh", "--", "-c",
                                   f"echo hello | nc -w 5 {GATEWAY} {port}"], cwd=ROOT)
        listener.settimeout(20)
        conn, addr = listener.accept()
        with conn:
            assert conn.recv(100).strip() == b"hello"
        assert addr[0].startswith(TEST_SUBNET.rsplit(".", 1)[0] + ".")
        assert client.wait(timeout=20) == 0
        # a --net=none pod has no route to it
        res = pods.sh(f"nc -w 2 {GATEWAY} {port} </dev/null && echo reached; ip -4 route", "--net", "none")
        assert res.returncode == 0 and "reached" not in res.stdout and "default" not in res.stdout, res


def test_pod_files_and_status_show_the_network(pods: Pods) -> None:
    proc, uuid, pod_dir = pods.start("--hostname", "web.example", "--hosts-entry", "10.9.9.9=db",
                                     "--dns", "10.0.0.53", "--dns-search", "example", "--dns-opt", "ndots:2",
                                     "demo", "--exec", "/bin/sleep", "--", "60")
    ip = _ip_of(pods, uuid)
    hosts = (pod_dir / "etc" / "hosts").read_text()
    assert f"{ip}\tweb.example web" in hosts and "10.9.9.9\tdb" in hosts
    assert (pod_dir / "etc" / "resolv.conf").read_text() == "nameserver 10.0.0.53\nsearch example\noptions ndots:2\n"
    listing = pods.run("list", check=True).stdout
    assert f"default:{ip}" in listing
    pods.run("stop", uuid, check=True)
    proc.wait(timeout=20)
    assert ip not in _leases(pods)
    assert pods.run("run", "--dns", "none", "--dns", "1.1.1.1", "demo").returncode == 253
    assert pods.run("run", "--net", "bad/name", "demo").returncode == 253
    assert pods.run("run", "--net", "nosuchnet", "demo").returncode == 252


def test_port_forward_from_localhost(pods: Pods, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from the pod\n")
    port = _free_port()
    proc, uuid, _ = pods.start("--port", f"80:{port}", "--volume", f"www,kind=host,source={www},readOnly=true",
                               "demo", "--mount", "volume=www,target=/www",
                               "--exec", "/bin/httpd", "--", "-f", "-p", "80", "-h", "/www")
    out = subprocess.run(["curl", "-sS", "-m", "10", f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    assert out.stdout == "hello from the pod\n", out.stderr
    assert f"tcp . {port}" in _forwards()
    # the same host port for a second pod: refused, nothing leaked
    before = sorted(_leases(pods))
    res = pods.run("run", "--port", f"80:{port}", "demo", "--exec", "/bin/true")
    assert res.returncode == 247 and "already forwarded" in res.stderr and "Traceback" not in res.stderr
    assert sorted(_leases(pods)) == before
    pods.run("stop", uuid, check=True)
    proc.wait(timeout=20)
    assert _forwards() == ""
    assert subprocess.run(["curl", "-s", "-m", "3", f"http://127.0.0.1:{port}/"]).returncode != 0


def test_static_ip_conflict_fails_cleanly(pods: Pods) -> None:
    wanted = TEST_SUBNET.rsplit(".", 1)[0] + ".77"
    interfaces = leftover_pod_interfaces()
    proc, uuid, _ = pods.start("--net", f"default:IP={wanted}", "demo", "--exec", "/bin/sleep", "--", "60")
    try:
        assert _ip_of(pods, uuid) == wanted
        netns_before = _netns_files()
        res = pods.run("run", "--net", f"default:IP={wanted}", "demo", "--exec", "/bin/true")
        assert res.returncode == 247 and f"address {wanted}" in res.stderr and uuid in res.stderr
        assert "Traceback" not in res.stderr
        assert _leases(pods) == {wanted: uuid}
        assert _netns_files() == netns_before
        assert len(leftover_pod_interfaces()) == len(interfaces) + 1
    finally:  # the pod holding the address ends even when a check failed: later tests need it gone
        pods.run("stop", uuid, check=True)
        proc.wait(timeout=20)
    _wait_no_interfaces(interfaces)
    assert pods.run("run", "--net", "default:IP=10.1.1.1", "demo").returncode == 253


def test_many_pods_return_their_leases_and_interfaces(pods: Pods) -> None:
    interfaces = leftover_pod_interfaces()
    for _ in range(50):
        res = pods.run("run", "demo", "--exec", "/bin/true")
        assert res.returncode == 0, res.stderr
    assert _leases(pods) == {}
    assert _netns_files() == []
    _wait_no_interfaces(interfaces)
    assert pods.run("gc", "--grace-period", "0s", check=True).returncode == 0


@pytest.fixture
def cni_net(tmp_path: Path) -> Iterator[Path]:
    """A temporary net.d with the test default network and a bridge + host-local CNI network."""
    subprocess.run(["ip", "link", "del", CNI_BRIDGE], capture_output=True)  # a killed session's: start afresh
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    (net_d / "default.json").write_text(json.dumps({"bridge": TEST_BRIDGE, "subnet": TEST_SUBNET}))
    (net_d / "10-cnitest.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "cnitest",
        "plugins": [{"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": False,
                     "ipam": {"type": "host-local", "subnet": CNI_SUBNET, "dataDir": str(tmp_path / "cni-ipam"),
                              "routes": [{"dst": "0.0.0.0/0"}]}}],
    }))
    yield net_d
    subprocess.run(["ip", "link", "del", CNI_BRIDGE], capture_output=True)


def test_cni_bridge_network_with_debians_plugins(pods: Pods, cni_net: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PODRUN_NET_DIR=str(cni_net))
    res = pods.run("run", "--net", "cnitest", "demo", "--exec", "/bin/sh", "--", "-c", "ip -4 addr show eth0",
                   env=env)
    assert res.returncode == 0, res.stderr
    assert f"inet {CNI_PREFIX}." in res.stdout
    ipam_dir = tmp_path / "cni-ipam" / "cnitest"
    assert [f.name for f in ipam_dir.iterdir() if f.name.startswith(f"{CNI_PREFIX}.")] == []  # DEL released it
    # two networks, CNI_ARGS asking for an address
    res = pods.run("run", "--net", f"default,cnitest:IP={CNI_PREFIX}.42", "demo", "--exec", "/bin/sh", "--", "-c",
                   "ip -4 addr", env=env)
    assert res.returncode == 0, res.stderr
    assert f"inet {CNI_PREFIX}.42/" in res.stdout and f"inet {TEST_SUBNET.rsplit('.', 1)[0]}." in res.stdout
    assert _netns_files() == []


@pytest.mark.parametrize("checkpoint", NET_CHECKPOINTS)
def test_kill9_at_each_network_checkpoint_then_gc(pods: Pods, cni_net: Path, tmp_path: Path,
                                                   checkpoint: str) -> None:
    interfaces = leftover_pod_interfaces()
    env = dict(os.environ, PODRUN_NET_DIR=str(cni_net), PODRUN_FAULT=checkpoint)
    port = _free_port()
    res = pods.run("run", "--net", "default,cnitest", "--port", f"80:{port}", "demo", "--exec", "/bin/true",
                   env=env)
    assert res.returncode == -9, res.stderr
    assert pods.run("gc", "--grace-period", "0s", env=dict(os.environ, PODRUN_NET_DIR=str(cni_net)),
                    check=True).returncode == 0
    assert pods.run("list", "--format", "json").stdout.strip() == "[]"
    assert _leases(pods) == {}
    assert _forwards() == ""
    assert _netns_files() == []
    ipam_dir = tmp_path / "cni-ipam" / "cnitest"
    if ipam_dir.is_dir():
        assert [f.name for f in ipam_dir.iterdir() if f.name.startswith(f"{CNI_PREFIX}.")] == []
    _wait_no_interfaces(interfaces)
