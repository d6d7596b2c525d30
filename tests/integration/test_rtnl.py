"""podrun's rtnetlink client against the real kernel (podrun.net.rtnl; the encoding has its
unit tests in tests/unit/test_rtnl.py).  Each test runs in a network namespace of its own
(``unshare --net``), so whatever it makes dies with that process; the results are read back
with iproute2's ``ip -j``, a client that is not podrun's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _in_netns(code: str) -> Any:
    """Run *code* (with ``nl``, a Netlink in a fresh netns) and return ``ip -j`` views of it."""
    script = textwrap.dedent("""
        import errno, json, os, subprocess, sys
        from podrun.net.rtnl import Netlink
        out = {}
        with Netlink() as nl:
        %s
        for what in ("link", "addr", "route"):
            out[what] = json.loads(subprocess.run(["ip", "-j", what, "show"], capture_output=True,
                                                  text=True, check=True).stdout)
        print(json.dumps(out))
    """) % textwrap.indent(textwrap.dedent(code), "    ")
    res = subprocess.run(["unshare", "--net", sys.executable, "-c", script], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _links(out: Any) -> dict[str, Any]:
    return {link["ifname"]: link for link in out["link"]}


def test_bridge_veth_address_and_route_as_iproute2_sees_them() -> None:
    out = _in_netns("""
        nl.add_bridge("rtbr0", "02:42:0a:63:00:01")
        br = nl.link_index("rtbr0")
        out["indexes"] = [br, nl.link_index("lo"), nl.link_index("nope")]
        nl.add_ipv4_address(br, "10.99.0.1", 24)
        out["addrs"] = sorted(nl.ipv4_addresses(br))
        nl.set_link(br, up=True)
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        nl.add_veth("rtvh0", "rtpeer0", "02:42:0a:63:00:02", fd)
        os.close(fd)
        nl.set_link(nl.link_index("rtvh0"), master=br, up=True)
        peer = nl.link_index("rtpeer0")
        nl.add_ipv4_address(peer, "10.99.0.2", 24)
        nl.set_link(peer, up=True)
        nl.set_link(nl.link_index("lo"), up=True)
        out["lo_addrs"] = sorted(nl.ipv4_addresses(nl.link_index("lo")))
    """)
    br_index, lo_index, missing = out["indexes"]
    links = _links(out)
    assert links["rtbr0"]["ifindex"] == br_index and links["lo"]["ifindex"] == lo_index and missing is None
    assert links["rtbr0"]["address"] == "02:42:0a:63:00:01"
    assert links["rtpeer0"]["address"] == "02:42:0a:63:00:02"
    assert links["rtvh0"]["master"] == "rtbr0"
    assert "UP" in links["rtbr0"]["flags"] and "UP" in links["rtvh0"]["flags"]
    assert out["addrs"] == ["10.99.0.1"] and out["lo_addrs"] == ["127.0.0.1"]
    addrs = {(a["ifname"], i["local"], i["prefixlen"]) for a in out["addr"]
             for i in a["addr_info"] if i["family"] == "inet"}
    assert {("rtbr0", "10.99.0.1", 24), ("rtpeer0", "10.99.0.2", 24)} <= addrs


def test_default_route_mac_change_and_delete() -> None:
    out = _in_netns("""
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        nl.add_veth("rta", "rtb", "02:00:00:00:00:0b", fd)
        os.close(fd)
        a = nl.link_index("rta")
        nl.set_link(a, mac="02:00:00:00:00:0a", up=True)
        nl.add_ipv4_address(a, "10.98.0.2", 24)
        nl.set_link(nl.link_index("rtb"), up=True)
        nl.add_default_route("10.98.0.1")
        try:
            nl.add_default_route("10.98.0.1")
        except OSError as exc:
            out["again"] = exc.errno
        try:
            nl.add_ipv4_address(a, "10.98.0.2", 24)
        except OSError as exc:
            out["addr_again"] = exc.errno
        nl.delete_link(nl.link_index("rtb"))  # takes its peer along
        out["after"] = [nl.link_index("rta"), nl.link_index("rtb")]
        try:
            nl.delete_link(a)
        except OSError as exc:
            out["gone"] = exc.errno
    """)
    import errno

    assert out["again"] == errno.EEXIST and out["addr_again"] == errno.EEXIST
    assert out["after"] == [None, None] and out["gone"] == errno.ENODEV
    assert set(_links(out)) == {"lo"}


def test_a_route_and_mac_are_what_the_kernel_keeps() -> None:
    out = _in_netns("""
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        nl.add_veth("rtc", "rtd", "02:00:00:00:00:0d", fd)
        os.close(fd)
        c = nl.link_index("rtc")
        nl.set_link(c, mac="02:00:00:00:00:0c", up=True)
        nl.add_ipv4_address(c, "10.97.0.2", 16)
        nl.set_link(nl.link_index("rtd"), up=True)
        nl.add_default_route("10.97.0.1")
        try:
            nl.add_bridge("rtc", "02:00:00:00:00:0e")
        except OSError as exc:
            out["clash"] = exc.errno
    """)
    import errno

    assert out["clash"] == errno.EEXIST
    assert _links(out)["rtc"]["address"] == "02:00:00:00:00:0c"
    defaults = [r for r in out["route"] if r["dst"] == "default"]
    assert [(r["gateway"], r["dev"]) for r in defaults] == [("10.97.0.1", "rtc")]
