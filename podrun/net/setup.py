"""Attach a pod to its networks (stage1) and detach it (stage1's exit path, and gc).

Every host side effect is recorded in ``POD/net/state.json`` *before* it is made, so that
``detach`` — idempotent, driven only by that record — undoes it after any crash:

    netns    /run/podrun/netns/UUID, a bind mount of the pod's network namespace
    default  lease of an address (DIR/net/BRIDGE/leases), filter elements (podrun.net.nft:
             what the pod may send), veth pair on the bridge, the pod's MAC derived from its
             address (config.pod_mac)
    ports    elements of the nftables maps, named by the pod's UUID (podrun.net.nft); teardown
             removes only the elements that are still this pod's, never another pod's forward
             of the same host port (a failed ``run`` asks for a port a running pod holds)
    cni      per network: ADD (DEL on detach) with the network list copied into POD/net/

A lease or forward in the way of a new pod is taken over at once when the pod holding it is
provably dead, and refused (ConflictError, exit status 247) while it runs: podrun.net.owners.

Attaching runs in a *helper process* forked by the stage1 supervisor (``run_helper``): the
helper does the netlink, nftables and CNI work and exits when done, and its work overlaps the
supervisor's own set-up.
"""

from __future__ import annotations

import json
import os

from podrun import faults, fsutil
from podrun.errors import PodrunError
from podrun.isolation import syscalls as sc
from podrun.model.netspec import NET_STATE, cni_config_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from podrun.model.manifest import PodManifest

POD_IF = "eth"  # interfaces inside the pod: eth0, eth1… in the order of --net


def netns_dir() -> str:
    return os.path.join(os.environ.get("PODRUN_RUNTIME_DIR", "/run/podrun"), "netns")


def host_ifname(uuid: str) -> str:
    return "pr" + uuid.replace("-", "")[:13]  # 15 characters, the kernel's limit


class State:
    """POD/net/state.json, rewritten before and after each step.

    Atomic (rename) but not fsynced: what it records (netns, interfaces, nftables elements)
    does not survive a reboot either, and leases name their boot; a process crash, the case
    gc must handle, loses nothing that was written."""

    def __init__(self, pod_dir: str) -> None:
        self.path = os.path.join(pod_dir, NET_STATE)
        self.doc: dict[str, Any] = {}

    def load(self) -> State:
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
            self.doc = doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            self.doc = {}
        return self

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        fsutil.atomic_write(self.path, json.dumps(self.doc, separators=(",", ":")).encode(), 0o644, durable=False)


def _make_netns(path: str) -> None:
    """Create a network namespace pinned by a bind mount at *path* (the ``ip netns add`` way);
    the calling process returns to its own network namespace."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
        sc.unshare(sc.CLONE_NEWNET)
        try:
            sc.mount("/proc/self/ns/net", path, None, sc.MS_BIND)
        finally:
            sc.setns(own, sc.CLONE_NEWNET)
    finally:
        os.close(own)


def remove_netns(path: str) -> None:
    try:
        sc.umount(path, sc.MNT_DETACH)
    except OSError:
        pass  # not mounted (any more)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def create_netns(pod_dir: str, data_dir: str, uuid: str) -> int:
    """Record, then create, the pod's network namespace; returns an fd of it (for setns)."""
    st = State(pod_dir)
    netns = os.path.join(netns_dir(), uuid)
    st.doc = {"netns": netns, "uuid": uuid, "data_dir": data_dir, "networks": []}
    st.save()
    _make_netns(netns)
    faults.checkpoint("net:after-netns")
    return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)


def attach(pod_dir: str, data_dir: str, manifest: PodManifest, boot_id: str) -> dict[str, Any]:
    """Attach every network of the manifest to the netns ``create_netns`` made."""
    st = State(pod_dir).load()
    netns = st.doc["netns"]
    for index, net in enumerate(manifest.networks):
        ifname = f"{POD_IF}{index}"
        if net.name == "default":
            _attach_default(st, data_dir, manifest, netns, ifname, boot_id, net.arg("IP"))
        else:
            _attach_cni(st, pod_dir, manifest, netns, ifname, net.name, list(net.args))
    ip = next((n["ip"] for n in st.doc["networks"] if n.get("ip")), None)
    if manifest.ports:
        default = next((n for n in st.doc["networks"] if n["kind"] == "default"), None)
        if default is None or ip is None:
            raise PodrunError("--port needs the default network (it forwards to the pod's default-network address)")
        st.doc["ports"] = {"table": default["table"], "ip": default["ip"],
                           "forwards": [[p.proto, p.pod_port, p.host_port, p.host_ip] for p in manifest.ports]}
        st.save()
        from podrun.net import config, ipam, nft, owners

        default_net = config.DefaultNet(default["bridge"], default["subnet"])
        with fsutil.flocked(ipam.lock_path(data_dir, default_net.bridge)):
            nft.add_ports(default_net.table, list(manifest.ports), default["ip"], manifest.uuid,
                          owners.Owners(data_dir, default_net).running)
        st.doc["ports"]["added"] = True
        st.save()
        faults.checkpoint("net:after-ports", with_parent=True)
    return st.doc


def _attach_default(st: State, data_dir: str, manifest: PodManifest, netns: str, ifname: str, boot_id: str,
                    wanted: str | None) -> None:
    from podrun.net import config, ipam, nft, owners

    net = config.default_net()
    entry: dict[str, Any] = {"kind": "default", "name": "default", "ifname": ifname, "bridge": net.bridge,
                             "table": net.table, "subnet": net.subnet, "host_if": host_ifname(manifest.uuid)}
    st.doc["networks"].append(entry)
    st.save()
    lock = ipam.lock_path(data_dir, net.bridge)
    with fsutil.flocked(lock):
        entry["ip"] = ipam.allocate(data_dir, net, manifest.uuid, boot_id, wanted,
                                    owners.Owners(data_dir, net).running)
    entry["gateway"] = net.gateway()
    entry["mac"] = config.pod_mac(entry["ip"])
    entry["filter"] = True
    st.save()
    faults.checkpoint("net:after-lease", with_parent=True)
    adding = nft.start_filter(net.table, entry["host_if"], entry["mac"], entry["ip"])  # runs while we do the links
    from podrun.net import link

    with fsutil.flocked(lock):
        nft.finish_filter(adding, net.table, net.subnet, entry["host_if"], entry["mac"], entry["ip"])
    with link.open_host() as nl:
        bridge = link.ensure_bridge(nl, net)
        link.add_veth(nl, entry["host_if"], ifname, entry["mac"], netns, bridge)
    faults.checkpoint("net:after-veth", with_parent=True)
    _, prefix = net.network()
    link.configure_pod_side(netns, ifname, entry["ip"], prefix, net.gateway())


def _attach_cni(st: State, pod_dir: str, manifest: PodManifest, netns: str, ifname: str, name: str,
                args: list[tuple[str, str]]) -> None:
    from podrun.net import cni, config

    conflist_path = os.path.join(pod_dir, cni_config_path(name))
    with open(conflist_path, "rb") as f:  # copied by stage0: DEL must see the config ADD saw
        conflist = json.loads(f.read())
    entry: dict[str, Any] = {"kind": "cni", "name": name, "ifname": ifname, "args": [list(a) for a in args],
                             "conflist": conflist_path}
    st.doc["networks"].append(entry)
    st.save()
    result = cni.add(conflist, manifest.uuid, netns, ifname, args, config.cni_path())
    entry["result"] = result
    ips = cni.addresses(result)
    if ips:
        entry["ip"] = ips[0]
    st.save()
    faults.checkpoint("net:after-cni", with_parent=True)


def detach(pod_dir: str, delete_links: bool = True) -> list[str]:
    """Undo everything the record lists (idempotent); returns what could not be undone.

    Order: port forwards, CNI DEL (while the netns still exists), the netns mount, with
    *delete_links* (gc) host interfaces that outlived it, then leases — an address is free
    only once the interface holding it is gone or going (recorded as ``detached``).  Then, with
    *delete_links*, the filter elements naming the pod's interfaces (recorded as ``cleaned``).
    A pod's own exit path skips both: its veth dies with the netns, and an nft run would
    lengthen every pod's exit for elements that let nothing through once the interface is gone."""
    st = State(pod_dir).load()
    if not st.doc or st.doc.get("cleaned") or (st.doc.get("detached") and not delete_links):
        return []
    if not st.doc.get("detached"):
        problems = _release(st.doc, delete_links)
        if problems:
            return problems
        st.doc["detached"] = True
        st.save()
    if not delete_links:
        return []
    problems = _clean(st.doc)
    if not problems:
        st.doc["cleaned"] = True
        st.save()
    return problems


def _release(doc: dict[str, Any], delete_links: bool) -> list[str]:
    problems: list[str] = []
    if doc.get("ports"):
        try:
            _remove_ports(doc)
        except (OSError, PodrunError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"port forwards: {exc}")
    netns = str(doc.get("netns", ""))
    networks = list(reversed(doc.get("networks", [])))
    for entry in networks:
        try:
            if entry.get("kind") == "cni":
                _detach_cni(entry, str(doc.get("uuid", "")), netns)
        except (OSError, PodrunError, ValueError, KeyError) as exc:
            problems.append(f"network {entry.get('name')}: {exc}")
    if netns:
        remove_netns(netns)
    if delete_links:
        problems += _delete_links(doc)
    if problems:
        return problems  # keep the leases while an interface may still hold their addresses
    for entry in networks:
        if entry.get("kind") == "default" and doc.get("data_dir") and doc.get("uuid"):
            from podrun.net import ipam

            try:
                ipam.release(str(doc["data_dir"]), str(entry["bridge"]), str(doc["uuid"]))
            except (OSError, KeyError) as exc:
                problems.append(f"network {entry.get('name')}: {exc}")
    return problems


def _delete_links(doc: dict[str, Any]) -> list[str]:
    """Remove the host interfaces the record lists that are still there."""
    problems = []
    for entry in doc.get("networks", []):
        host_if = entry.get("host_if")
        if host_if and os.path.exists(f"/sys/class/net/{host_if}"):
            try:
                from podrun.net import link

                link.delete_link(host_if)
            except Exception as exc:
                problems.append(f"interface {host_if}: {exc}")
    return problems


def _clean(doc: dict[str, Any]) -> list[str]:
    """What a pod left that lets nothing through: host interfaces that outlived a pod's own
    teardown, and the filter elements naming them."""
    problems = _delete_links(doc)
    for entry in doc.get("networks", []):
        if entry.get("filter") and not problems:
            from podrun.net import nft

            try:
                nft.remove_filter(str(entry["table"]), str(entry["host_if"]), str(entry["mac"]), str(entry["ip"]))
            except (PodrunError, KeyError) as exc:
                problems.append(f"filter elements of {entry.get('host_if')}: {exc}")
    return problems


def _remove_ports(doc: dict[str, Any]) -> None:
    """Remove the forwards the record lists that are still this pod's (nft.remove_ports: by
    owner, key and value), under the default network's lock."""
    from podrun.model.netspec import PortSpec
    from podrun.net import ipam, nft

    ports = doc["ports"]
    forwards = [PortSpec(str(p), int(pp), int(hp), str(hip)) for p, pp, hp, hip in ports["forwards"]]
    bridge = next((str(n["bridge"]) for n in doc["networks"] if n.get("kind") == "default"), None)
    if bridge is None:
        raise ValueError("the record lists forwards but no default network")
    with fsutil.flocked(ipam.lock_path(str(doc["data_dir"]), bridge)):
        nft.remove_ports(str(ports["table"]), forwards, str(ports["ip"]), str(doc["uuid"]))


def _detach_cni(entry: dict[str, Any], uuid: str, netns: str) -> None:
    from podrun.net import cni, config

    with open(entry["conflist"], "rb") as f:
        conflist = json.loads(f.read())
    live = netns if netns and os.path.exists(netns) and os.path.ismount(netns) else ""
    cni.delete(conflist, uuid, live, entry["ifname"], [tuple(a) for a in entry.get("args", [])],
               config.cni_path(), entry.get("result"))


def run_helper(pod_dir: str, data_dir: str, manifest: PodManifest, boot_id: str, done_w: int) -> None:
    """Body of stage1's network helper process: attach, then report on *done_w* (``ok``, or
    ``CODE MESSAGE``: the exit status the failure calls for and one line, see helper.wait) and
    exit."""
    try:
        attach(pod_dir, data_dir, manifest, boot_id)
        os.write(done_w, b"ok")
        os._exit(0)
    except BaseException as exc:  # the supervisor prints it and cleans up
        code = exc.exit_code if isinstance(exc, PodrunError) else PodrunError.exit_code
        try:
            os.write(done_w, f"{code} {exc or 'failed'}".encode()[:4000])
        finally:
            os._exit(1)


def addresses(pod_dir: str) -> list[tuple[str, str]]:
    """(network, IPv4 address) of a pod, from its record (for status, hosts)."""
    st = State(pod_dir).load()
    return [(str(n.get("name")), str(n["ip"])) for n in st.doc.get("networks", []) if n.get("ip")]


def cni_dns(pod_dir: str) -> dict[str, Any]:
    """DNS settings the CNI results offered (first network that offers nameservers)."""
    from podrun.net import cni

    st = State(pod_dir).load()
    for n in st.doc.get("networks", []):
        d = cni.dns(n.get("result"))
        if d.get("nameservers"):
            return d
    return {}
