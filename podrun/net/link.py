"""Netlink work for the default network: bridge, veth pair, addresses, route (``net.rtnl``).

Runs in stage1's network helper process (see ``podrun.net.setup``) and in gc, never in the
long-lived supervisor.
"""

from __future__ import annotations

import errno
import os

from podrun.isolation import syscalls as sc
from podrun.net.config import DefaultNet
from podrun.net.rtnl import Netlink


def _sysctl(path: str, value: str) -> None:
    with open(os.path.join("/proc/sys", path), "w") as f:
        f.write(value)


def ensure_bridge(nl: Netlink, net: DefaultNet) -> int:
    """The network's bridge, created with the gateway address if missing; its index."""
    index = nl.link_index(net.bridge)
    if index is None:
        try:
            nl.add_bridge(net.bridge, net.bridge_mac())
        except OSError as exc:
            if exc.errno != errno.EEXIST:  # another pod made it meanwhile
                raise
        index = nl.link_index(net.bridge)
        if index is None:
            raise OSError(errno.ENODEV, f"bridge {net.bridge} vanished as it was made")
    if not _own_mac(net.bridge, net.bridge_mac()):  # a bridge an older podrun made
        nl.set_link(index, mac=net.bridge_mac())
    _, prefix = net.network()
    if net.gateway() not in nl.ipv4_addresses(index):
        try:
            nl.add_ipv4_address(index, net.gateway(), prefix)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    nl.set_link(index, up=True)
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


def open_host() -> Netlink:
    """A netlink socket in this process's network namespace."""
    return Netlink()


def _index(nl: Netlink, name: str) -> int:
    index = nl.link_index(name)
    if index is None:
        raise OSError(errno.ENODEV, f"no interface {name}")
    return index


def add_veth(nl: Netlink, host_if: str, pod_if: str, pod_mac: str, netns_path: str, bridge_index: int) -> None:
    """A veth pair: *host_if* on the bridge, *pod_if* (with *pod_mac*, see config.pod_mac)
    inside the pod's network namespace."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        nl.add_veth(host_if, pod_if, pod_mac, fd)
    finally:
        os.close(fd)
    nl.set_link(_index(nl, host_if), master=bridge_index, up=True)


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
            nl = Netlink()  # a netlink socket stays in the namespace it was made in
        finally:
            sc.setns(own, sc.CLONE_NEWNET)
    finally:
        os.close(fd)
        os.close(own)
    with nl:
        nl.set_link(_index(nl, "lo"), up=True)
        index = _index(nl, pod_if)
        nl.add_ipv4_address(index, address, prefix)
        nl.set_link(index, up=True)
        nl.add_default_route(gateway)


def delete_link(name: str) -> None:
    """Remove a host interface if it still exists (gc; normally it dies with the netns)."""
    with Netlink() as nl:
        index = nl.link_index(name)
        if index is not None:
            try:
                nl.delete_link(index)
            except OSError as exc:
                if exc.errno != errno.ENODEV:
                    raise
