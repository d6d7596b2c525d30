"""Structured pod status (issue 13): the networks and port forwards ``status`` and ``list`` give,
read from the pod's network record (``net/state.json``, as podrun.net.setup writes it) through
podrun.pod.state's safe readers, and the JSON Schemas of every ``--format json`` output.  Real
pods on every kind of network are in tests/integration/test_structured_output.py."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from podrun.cli.pods import _network_lines
from podrun.pod.layout import PodDirs
from podrun.pod.state import NetRecord, NetworkStatus, PodFileDamage, PortForward, read_net_record, read_status
from tests.conftest import ROOT
from tests.fixtures.schemas import SCHEMAS, validate

UUID = "0123abcd-0000-4000-8000-000000000001"
NETNS = f"/run/podrun/netns/{UUID}"
DEFAULT_ENTRY = {
    "kind": "default", "name": "default", "ifname": "eth0", "bridge": "podrun0", "table": "podrun",
    "subnet": "172.16.28.0/24", "host_if": "pr0123abcd0000", "ip": "172.16.28.7", "gateway": "172.16.28.1",
    "mac": "02:42:ac:10:1c:07", "filter": True,
}
CNI_ENTRY = {  # the bridge plugin's 0.4.0 result: ips point at interfaces by index
    "kind": "cni", "name": "cnitest", "ifname": "eth1", "args": [], "conflist": "/x/net/cni-cnitest.json",
    "result": {"cniVersion": "0.4.0",
               "interfaces": [{"name": "cnitest0", "mac": "5e:00:00:00:00:01"},
                              {"name": "veth0a1b2c3d", "mac": "5e:00:00:00:00:02"},
                              {"name": "eth1", "mac": "5E:00:00:00:00:03", "sandbox": NETNS}],
               "ips": [{"version": "4", "address": "172.16.30.9/25", "gateway": "172.16.30.1", "interface": 2}],
               "dns": {}},
    "ip": "172.16.30.9",
}
RECORD = {"netns": NETNS, "uuid": UUID, "data_dir": "/var/lib/podrun",
          "networks": [DEFAULT_ENTRY, CNI_ENTRY],
          "ports": {"table": "podrun", "ip": "172.16.28.7", "forwards": [["tcp", 80, 8080, ""],
                                                                          ["udp", 53, 5353, "127.0.0.1"]],
                    "added": True}}
DEFAULT = NetworkStatus("default", "eth0", "172.16.28.7", "255.255.255.0", "172.16.28.1", "02:42:ac:10:1c:07")
CNI = NetworkStatus("cnitest", "eth1", "172.16.30.9", "255.255.255.128", "172.16.30.1", "5e:00:00:00:00:03")


@pytest.fixture
def dirs(tmp_path: Path) -> PodDirs:
    return PodDirs(tmp_path / "data")


def make_pod(dirs: PodDirs, record: Any, net: str = "default,cnitest", phase: str = "run") -> Path:
    pod = dirs.path(phase, UUID)
    (pod / "net").mkdir(parents=True)
    networks = [{"name": n, "args": []} for n in net.split(",")] if net not in ("none", "host") else []
    app = {"name": "web", "image_id": None, "image_name": "demo", "lower_dirs": [], "exec_argv": ["/bin/true"], "env": []}
    (pod / "pod.json").write_text(json.dumps({"version": 1, "uuid": UUID, "net": net, "networks": networks,
                                              "apps": [app]}))
    if record is not None:
        (pod / "net" / "state.json").write_text(json.dumps(record))
    return pod


def record_of(pod: Path) -> Any:
    fd = os.open(pod, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return read_net_record(fd)
    finally:
        os.close(fd)


def test_a_running_pod_shows_its_networks_and_forwards(dirs: PodDirs, hold: Callable[[Path], None]) -> None:
    hold(make_pod(dirs, RECORD))
    st = read_status(dirs, "run", UUID)
    assert st.state == "running" and st.errors == ()
    assert st.networks == (DEFAULT, CNI)
    doc = st.to_json()
    validate(doc, "pod-status")
    validate([doc], "pod-list")
    assert doc["networks"][0] == {"name": "default", "ifname": "eth0", "ip": "172.16.28.7", "mask": "255.255.255.0",
                                  "gateway": "172.16.28.1", "mac": "02:42:ac:10:1c:07"}
    assert doc["ports"] == [{"host_ip": "", "host_port": 8080, "pod_port": 80, "protocol": "tcp"},
                            {"host_ip": "127.0.0.1", "host_port": 5353, "pod_port": 53, "protocol": "udp"}]
    assert _network_lines(st) == [
        "network-default=ifname=eth0 ip=172.16.28.7 mask=255.255.255.0 gateway=172.16.28.1 mac=02:42:ac:10:1c:07",
        "network-cnitest=ifname=eth1 ip=172.16.30.9 mask=255.255.255.128 gateway=172.16.30.1 mac=5e:00:00:00:00:03",
        "port-tcp-8080=pod_port=80",
        "port-udp-5353=pod_port=53 host_ip=127.0.0.1",
    ]


def test_an_exited_or_prepared_pod_shows_the_names_only(dirs: PodDirs) -> None:
    """A pod killed before it released its address: the record still names it, but the
    address may be another pod's now."""
    make_pod(dirs, RECORD)
    st = read_status(dirs, "run", UUID)
    assert st.state == "exited" and st.errors == ()
    assert st.networks == (NetworkStatus("default"), NetworkStatus("cnitest")) and st.ports == ()
    assert _network_lines(st) == ["network-default=-", "network-cnitest=-"]
    validate(st.to_json(), "pod-status")


@pytest.mark.parametrize("net", ["none", "host"])
def test_none_and_host_are_one_network_of_that_name(dirs: PodDirs, hold: Callable[[Path], None], net: str) -> None:
    hold(make_pod(dirs, None, net=net))
    st = read_status(dirs, "run", UUID)
    assert st.networks == (NetworkStatus(net),) and st.ports == () and st.errors == ()
    validate(st.to_json(), "pod-status")


def test_released_and_half_written_records(dirs: PodDirs, hold: Callable[[Path], None]) -> None:
    pod = make_pod(dirs, dict(RECORD, detached=True))
    hold(pod)
    assert record_of(pod) is None
    # ports not yet added; the default network before its lease; a CNI network before its result
    half = {"networks": [{k: v for k, v in DEFAULT_ENTRY.items() if k not in ("ip", "gateway", "mac")},
                         {k: v for k, v in CNI_ENTRY.items() if k not in ("ip", "result")}],
            "ports": dict(RECORD["ports"], added=False)}  # type: ignore[arg-type]
    (pod / "net" / "state.json").write_text(json.dumps(half))
    st = read_status(dirs, "run", UUID)
    assert st.networks == (NetworkStatus("default", "eth0", mask="255.255.255.0"), NetworkStatus("cnitest", "eth1"))
    assert st.ports == () and st.errors == ()
    validate(st.to_json(), "pod-status")


def _cni(result: Any) -> dict[str, Any]:
    return dict(RECORD, networks=[dict(CNI_ENTRY, result=result)])


@pytest.mark.parametrize(("result", "expected"), [
    # CNI 1.0: no "version"; no interface index: the interface of that name inside the pod
    ({"cniVersion": "1.0.0", "interfaces": CNI_ENTRY["result"]["interfaces"],  # type: ignore[index]
      "ips": [{"address": "172.16.30.9/24"}]},
     NetworkStatus("cnitest", "eth1", "172.16.30.9", "255.255.255.0", None, "5e:00:00:00:00:03")),
    # the address is found among several; an index out of range gives no MAC
    ({"ips": [{"address": "fd00::9/64", "interface": 0}, {"address": "172.16.30.9/16", "interface": 7}]},
     NetworkStatus("cnitest", "eth1", "172.16.30.9", "255.255.0.0")),
    # what a plugin made up is left out, never printed
    ({"ips": [{"address": "172.16.30.9/33", "gateway": "evil\n", "interface": 0}],
      "interfaces": [{"mac": "\x1b[31m"}]}, NetworkStatus("cnitest", "eth1", "172.16.30.9")),
    ({"ips": "many", "interfaces": {}}, NetworkStatus("cnitest", "eth1", "172.16.30.9")),
    ("not an object", NetworkStatus("cnitest", "eth1", "172.16.30.9")),
])
def test_cni_results_of_every_layout(dirs: PodDirs, result: Any, expected: NetworkStatus) -> None:
    record = record_of(make_pod(dirs, _cni(result), net="cnitest"))
    assert record.networks == {"cnitest": expected}


def _with(entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return dict(copy.deepcopy(RECORD), networks=[dict(entry, **changes)])


@pytest.mark.parametrize(("record", "error"), [
    ({"networks": {"default": {}}}, "net/state.json: not a network record"),
    ({"networks": [{"ip": "172.16.28.7"}]}, "net/state.json: not a network record"),
    (_with(DEFAULT_ENTRY, ip=167772161), "net/state.json: network 'default': ip is malformed"),
    (_with(DEFAULT_ENTRY, ip="172.16.28.7\nnameserver 6.6.6.6"), "net/state.json: network 'default': ip is malformed"),
    (_with(DEFAULT_ENTRY, ip="172.16.28.256"), "net/state.json: network 'default': ip is malformed"),
    (_with(DEFAULT_ENTRY, mac="02:42:ac:10:1c"), "net/state.json: network 'default': mac is malformed"),
    (_with(DEFAULT_ENTRY, gateway=["172.16.28.1"]), "net/state.json: network 'default': gateway is malformed"),
    (_with(DEFAULT_ENTRY, ifname="eth0\x1b[2J"), "net/state.json: network 'default': ifname is malformed"),
    (_with(DEFAULT_ENTRY, subnet="172.16.28.0/40"), "net/state.json: network 'default': subnet is malformed"),
    (_with(CNI_ENTRY, ip="fd00::9"), "net/state.json: network 'cnitest': ip is malformed"),
    (dict(RECORD, ports={"forwards": [["tcp", 80, 70000, ""]], "added": True}),
     "net/state.json: ports is not a list of port forwards"),
    (dict(RECORD, ports={"forwards": [["sctp", 80, 8080, ""]], "added": True}),
     "net/state.json: ports is not a list of port forwards"),
    (dict(RECORD, ports={"forwards": [["tcp", 80, 8080, "0.0.0.0\n"]], "added": True}),
     "net/state.json: ports is not a list of port forwards"),
    (dict(RECORD, ports=[["tcp", 80, 8080, ""]]), "net/state.json: ports is not a list of port forwards"),
])
def test_a_damaged_record_is_named_never_shown(dirs: PodDirs, hold: Callable[[Path], None], record: Any, error: str) -> None:
    pod = make_pod(dirs, record)
    with pytest.raises(PodFileDamage, match=f"^{error}$"):
        record_of(pod)
    hold(pod)
    st = read_status(dirs, "run", UUID)  # reported, never raised: the pod's names only
    assert st.errors == (error,) and st.ports == ()
    assert st.networks == (NetworkStatus("default"), NetworkStatus("cnitest"))
    validate(st.to_json(), "pod-status")
    # damage is named even once the networks were released (the pod's exit path)
    (pod / "net" / "state.json").write_text(json.dumps(dict(record, detached=True)))
    assert read_status(dirs, "run", UUID).errors == (error,)


@pytest.mark.parametrize("networks", [[{"name": "default\nx", "args": []}], [{"name": "", "args": []}], "default"])
def test_a_damaged_network_list_in_the_manifest(dirs: PodDirs, networks: Any) -> None:
    pod = make_pod(dirs, RECORD)
    manifest = json.loads((pod / "pod.json").read_text())
    (pod / "pod.json").write_text(json.dumps(dict(manifest, networks=networks)))
    st = read_status(dirs, "run", UUID)
    # a list of bad names is named as such; a string is no list of networks for the typed reader at all
    expected = "networks is not a list of networks" if isinstance(networks, list) else "not a pod manifest (TypeError"
    assert st.networks == () and len(st.errors) == 1 and st.errors[0].startswith(f"pod.json: {expected}"), st.errors
    validate(st.to_json(), "pod-status")


def test_the_schemas_are_valid_and_not_vacuous(dirs: PodDirs) -> None:
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"].startswith(f"https://podrun.dev/schemas/{path.stem}")
    make_pod(dirs, RECORD)
    doc = read_status(dirs, "run", UUID).to_json()
    for bad in (dict(doc, networks=["default:172.16.28.7"]),  # the strings of before
                dict(doc, networks=[dict(asdict(DEFAULT), ip="172.16.28.7/24")]),
                dict(doc, ports=[{"host_port": 8080, "pod_port": 80, "protocol": "tcp"}]),
                dict(doc, extra=1)):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "pod-status")
    with pytest.raises(jsonschema.ValidationError):
        validate([dict(doc, state="sleeping")], "pod-list")


def test_version(tmp_path: Path) -> None:
    def version(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "podrun", "version", *args], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout

    doc = json.loads(version("--format", "json"))
    validate(doc, "version")
    from podrun import __version__

    assert doc["version"] == __version__ and doc["stage1_flavors"] == ["default", "fly", "oci"]
    assert (Path(doc["stages_dir"]) / "default" / "manifest.json").is_file()
    lines = version().splitlines()
    assert lines[0].split() == ["Version:", __version__]
    assert f"Stages dir:     {doc['stages_dir']}" in lines and "Stage1 flavors: default, fly, oci" in lines


POD_MAC, OTHER_MAC = "5e:00:00:00:00:0a", "5e:00:00:00:00:0b"


@pytest.mark.parametrize(("result", "expected"), [
    # no ips at all: the interface of the record's name inside the pod still gives the MAC
    ({"interfaces": [{"name": "eth1", "mac": POD_MAC, "sandbox": NETNS}]},
     NetworkStatus("cnitest", "eth1", "172.16.30.9", mac=POD_MAC)),
    # the index is followed even to an interface without "sandbox"; its first and last index; a /32
    ({"ips": [{"address": "172.16.30.9/32", "interface": 0}], "interfaces": [{"name": "eth1", "mac": POD_MAC}]},
     NetworkStatus("cnitest", "eth1", "172.16.30.9", "255.255.255.255", None, POD_MAC)),
    # an index one past the end: the interface of the record's name inside the pod
    ({"ips": [{"address": "172.16.30.9/12", "interface": 1}],
      "interfaces": [{"name": "eth1", "mac": POD_MAC, "sandbox": NETNS}]},
     NetworkStatus("cnitest", "eth1", "172.16.30.9", "255.240.0.0", None, POD_MAC)),
    # no index and two interfaces in the pod: the one of the record's name, not the first
    ({"ips": [{"address": "172.16.30.9/9"}],
      "interfaces": [{"name": "net1", "mac": OTHER_MAC, "sandbox": NETNS}, {"name": "eth1", "mac": POD_MAC},
                     {"name": "eth1", "mac": POD_MAC.upper(), "sandbox": NETNS}]},
     NetworkStatus("cnitest", "eth1", "172.16.30.9", "255.128.0.0", None, POD_MAC)),
    # a malformed address of ours: its prefix left out, its gateway taken
    ({"ips": [{"address": "172.16.30.9/24/8", "gateway": "172.16.30.1"}]},
     NetworkStatus("cnitest", "eth1", "172.16.30.9", None, "172.16.30.1")),
])
def test_cni_results_interfaces_and_masks(dirs: PodDirs, result: Any, expected: NetworkStatus) -> None:
    record = record_of(make_pod(dirs, _cni(result), net="cnitest"))
    assert record.networks == {"cnitest": expected}


def test_what_podrun_recorded_wins_over_the_plugins_result(dirs: PodDirs) -> None:
    entry = dict(CNI_ENTRY, gateway="172.16.30.254", mac=OTHER_MAC.upper())
    record = record_of(make_pod(dirs, dict(RECORD, networks=[entry]), net="cnitest"))
    assert record.networks == {"cnitest": NetworkStatus("cnitest", "eth1", "172.16.30.9", "255.255.255.128",
                                                        "172.16.30.254", OTHER_MAC)}


@pytest.mark.parametrize(("subnet", "mask"), [("0.0.0.0/0", "0.0.0.0"), ("10.0.0.0/12", "255.240.0.0"),
                                              ("10.0.0.0/17", "255.255.128.0"), ("10.0.0.7/32", "255.255.255.255")])
def test_the_default_networks_mask_comes_from_its_subnet(dirs: PodDirs, subnet: str, mask: str) -> None:
    record = record_of(make_pod(dirs, _with(DEFAULT_ENTRY, subnet=subnet), net="default"))
    assert record.networks["default"].mask == mask


@pytest.mark.parametrize("changes", [{"ip": "fd00::1"}, {"subnet": "10.0.0.0/33"}])
def test_a_long_network_name_is_cut_in_messages(dirs: PodDirs, changes: dict[str, str]) -> None:
    name = "n" * 64 + "tail"
    pod = make_pod(dirs, _with(dict(DEFAULT_ENTRY, name=name), **changes), net=name)
    with pytest.raises(PodFileDamage) as info:
        record_of(pod)
    assert str(info.value) == f"net/state.json: network {'n' * 64!r}: {next(iter(changes))} is malformed"


@pytest.mark.parametrize(("forward", "good"), [
    (["tcp", 1, 1, ""], True), (["udp", 65535, 65535, "10.0.0.1"], True),
    (["tcp", 0, 8080, ""], False), (["tcp", 65536, 8080, ""], False),
    (["tcp", 80, 0, ""], False), (["tcp", 80, 65536, ""], False),
])
def test_port_forward_bounds(dirs: PodDirs, forward: list[Any], good: bool) -> None:
    pod = make_pod(dirs, dict(RECORD, ports={"forwards": [forward], "added": True}))
    if good:
        proto, pod_port, host_port, host_ip = forward
        assert record_of(pod).ports == (PortForward(host_ip, host_port, pod_port, proto),)
    else:
        with pytest.raises(PodFileDamage, match="^net/state.json: ports is not a list of port forwards$"):
            record_of(pod)


def test_record_shapes(dirs: PodDirs) -> None:
    pod = make_pod(dirs, [RECORD])
    with pytest.raises(PodFileDamage, match="^net/state.json: not a network record$"):
        record_of(pod)
    # no networks yet: only ports (podrun writes both, but an empty record is a record)
    (pod / "net" / "state.json").write_text(json.dumps({"ports": RECORD["ports"]}))
    assert record_of(pod) == NetRecord({}, (PortForward("", 8080, 80, "tcp"), PortForward("127.0.0.1", 5353, 53, "udp")))
    # a record past the 64 KiB of the other pod records: a CNI result with many routes
    routes = [{"dst": f"10.{i // 256}.{i % 256}.0/24", "gw": "172.16.30.1"} for i in range(4000)]
    big = _cni(dict(CNI_ENTRY["result"], routes=routes))  # type: ignore[arg-type]
    (pod / "net" / "state.json").write_text(json.dumps(big))
    assert len((pod / "net" / "state.json").read_bytes()) > 64 << 10
    assert record_of(pod).networks == {"cnitest": CNI}


@pytest.mark.parametrize("net", ["", "a/b", 5])
def test_a_manifest_without_networks_names_its_net(dirs: PodDirs, net: Any) -> None:
    pod = make_pod(dirs, RECORD)
    manifest = json.loads((pod / "pod.json").read_text())
    del manifest["networks"]
    manifest["net"] = net
    (pod / "pod.json").write_text(json.dumps(manifest))
    st = read_status(dirs, "run", UUID)
    assert st.networks == () and st.errors == ("pod.json: networks lists no network",)


def test_a_manifest_without_net_reads_as_the_readers_default(dirs: PodDirs) -> None:
    """The one typed reader fills a missing ``net`` with the manifest's default (no network)."""
    pod = make_pod(dirs, RECORD)
    manifest = json.loads((pod / "pod.json").read_text())
    del manifest["networks"], manifest["net"]
    (pod / "pod.json").write_text(json.dumps(manifest))
    st = read_status(dirs, "run", UUID)
    assert [n.name for n in st.networks] == ["none"] and st.errors == ()


@pytest.mark.parametrize(("edit", "why"), [
    (lambda app: app.update(layers=app.pop("lower_dirs")), "KeyError: 'lower_dirs'"),  # a renamed field
    (lambda app: app.update(lower_dirs="/"), "lower_dirs is not a list of absolute paths"),
])
def test_status_reads_the_manifest_as_every_reader_does(dirs: PodDirs, edit: Callable[[dict[str, Any]], object],
                                                        why: str) -> None:
    """The one typed reader (podrun.pod.layout): what stage1 or image gc could not read is
    damage in status too, never a pod shown as if it were whole."""
    pod = make_pod(dirs, RECORD)
    manifest = json.loads((pod / "pod.json").read_text())
    edit(manifest["apps"][0])
    (pod / "pod.json").write_text(json.dumps(manifest))
    st = read_status(dirs, "run", UUID)
    assert st.apps == () and st.networks == ()
    assert len(st.errors) == 1 and st.errors[0].startswith("pod.json: not a pod manifest (") and why in st.errors[0]
    validate(st.to_json(), "pod-status")
