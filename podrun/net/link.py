"""Netlink work for the default network, through pyroute2 (imported here only: ~0.25 s).

Runs in stage1's network helper process (see ``podrun.net.setup``), never in the long-lived
supervisor, so a pod does not carry pyroute2 in its memory for its whole life.
"""

from __future__ import annotations

import errno
import os
import sys

from podrun.isolation import syscalls as sc
from podrun.net.config import DefaultNet


def _load_pyroute2_parts() -> None:
    """Import only the parts of pyroute2 podrun uses.

    ``pyroute2/__init__.py`` (and ``pyroute2/iproute/__init__.py``) import every module of the
    library: ~0.25 s here, the largest part of a networked pod's start.  Registering the two
    packages as empty modules first (their ``__path__`` set, their ``__init__`` not run) lets
    ``pyroute2.iproute.linux`` load with just its own imports (~0.1 s).  Version-specific, so
    pyroute2 is pinned and this falls back to the plain import if the layout changes."""
    if "pyroute2" in sys.modules:
        return
    import importlib.util

    try:
        for name in ("pyroute2", "pyroute2.iproute"):
            spec = importlib.util.find_spec(name)
            if spec is None or spec.submodule_search_locations is None:
                raise ImportError(name)
            sys.modules[name] = importlib.util.module_from_spec(spec)
        import pyroute2.iproute.linux
    except Exception:
        for name in [m for m in sys.modules if m == "pyroute2" or m.startswith("pyroute2.")]:
            del sys.modules[name]
        import pyroute2  # noqa: F401


_load_pyroute2_parts()
from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402


def _sysctl(path: str, value: str) -> None:
    with open(os.path.join("/proc/sys", path), "w") as f:
        f.write(value)


def ensure_bridge(ipr: IPRoute, net: DefaultNet) -> int:
    """The network's bridge, created with the gateway address if missing; its index."""
    found = ipr.link_lookup(ifname=net.bridge)
    if not found:
        try:
            ipr.link("add", ifname=net.bridge, kind="bridge", address=net.bridge_mac())
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:  # another pod made it meanwhile
                raise
        found = ipr.link_lookup(ifname=net.bridge)
    index = int(found[0])
    if not _own_mac(net.bridge, net.bridge_mac()):  # a bridge an older podrun made
        ipr.link("set", index=index, address=net.bridge_mac())
    _, prefix = net.network()
    addrs = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
    if net.gateway() not in addrs:
        try:
            ipr.addr("add", index=index, address=net.gateway(), prefixlen=prefix)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    ipr.link("set", index=index, state="up")
    _sysctl("net/ipv4/ip_forward", "1")
    _sysctl(f"net/ipv4/conf/{net.bridge}/route_localnet", "1")  # --port from 127.0.0.1
    return index


def _own_mac(ifname: str, mac: str) -> bool:
    """True when *ifname* has *mac*, set explicitly (``addr_assign_type`` 3, NET_ADDR_SET: a
    bridge keeps it whatever ports come and go)."""
    try:
        with open(f"/sys/class/net/{ifname}/address") as f:
            address = f.read().strip()
        with open(f"/sys/class/net/{ifname}/addr_assign_type") as f:
            kind = f.read().strip()
    except OSError:
        return False
    return address == mac and kind == "3"


def open_host() -> IPRoute:
    """A netlink socket in this process's network namespace."""
    return IPRoute()


def add_veth(ipr: IPRoute, host_if: str, pod_if: str, pod_mac: str, netns_path: str, bridge_index: int) -> None:
    """A veth pair: *host_if* on the bridge, *pod_if* (with *pod_mac*, see config.pod_mac)
    inside the pod's network namespace."""
    ipr.link("add", ifname=host_if, kind="veth",
             peer={"ifname": pod_if, "net_ns_fd": netns_path, "address": pod_mac})
    index = int(ipr.link_lookup(ifname=host_if)[0])
    ipr.link("set", index=index, master=bridge_index, state="up")


def configure_pod_side(netns_path: str, pod_if: str, address: str, prefix: int, gateway: str) -> None:
    """Address, route and sysctls inside the pod's netns.  The calling thread enters it for the
    socket and the sysctl and returns to its own network namespace."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(fd, sc.CLONE_NEWNET)
        try:
            # as podman: root in the pod may ping (ICMP datagram sockets) without CAP_NET_RAW
            _sysctl("net/ipv4/ping_group_range", "0 0")
            ipr = IPRoute()  # a netlink socket stays in the namespace it was made in
        finally:
            sc.setns(own, sc.CLONE_NEWNET)
    finally:
        os.close(fd)
        os.close(own)
    with ipr:
        lo = int(ipr.link_lookup(ifname="lo")[0])
        ipr.link("set", index=lo, state="up")
        index = int(ipr.link_lookup(ifname=pod_if)[0])
        ipr.addr("add", index=index, address=address, prefixlen=prefix)
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


def delete_link(name: str) -> None:
    """Remove a host interface if it still exists (gc; normally it dies with the netns)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            try:
                ipr.link("del", index=found[0])
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
