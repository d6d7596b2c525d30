"""No path from a pod to the host's loopback (issue 18, item 1; the CVE-2020-8558 class).

The default network's bridge has ``route_localnet=1`` so that ``--port 127.0.0.1:…`` forwards
work; without a filter, a pod able to send raw frames (an app with CAP_NET_RAW) reaches host
services bound to 127.0.0.1 by addressing them through the gateway's MAC.  The frames are
forged inside the pod's network namespace with a raw socket (nsenter + the host's Python), as
such an app could.  Then: the host's forwards from 127.0.0.1 still work, and a bridge table an
older podrun made (no loopback set) is brought up to date by the next pod.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_BRIDGE, TEST_TABLE
from tests.integration.test_net import GATEWAY, _free_port, _ip_of
from tests.integration.test_net_ownership import _filter_elements, _mac_in_pod, _netns, _stop
from tests.integration.test_run import Pods, module_pods

# Two UDP datagrams from the pod's own address and MAC to the gateway's MAC: one to 127.0.0.1
# (what the filter must drop), then one to the gateway's address that ends the test's wait.
FORGE = r"""
import socket, struct, sys
own_ip, own_mac, gw_ip, gw_mac, lo_port, gw_port = sys.argv[1:7]
mac = lambda text: bytes.fromhex(text.replace(":", ""))

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

def udp(dst_ip, port, payload):
    body = struct.pack("!HHHH", 40000, int(port), 8 + len(payload), 0) + payload
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, 17, 0, socket.inet_aton(own_ip),
                       socket.inet_aton(dst_ip))
    head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return mac(gw_mac) + mac(own_mac) + b"\x08\x00" + head + body

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for dst, port, payload in (("127.0.0.1", lo_port, b"to-loopback"), ("127.1.2.3", lo_port, b"to-loopback"),
                           (gw_ip, gw_port, b"honest")):
    s.send(udp(dst, port, payload))
"""


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "netlo")


def _forge_from(pods: Pods, uuid: str) -> list[bytes]:
    """Send FORGE's frames from the pod; return what a host service on 127.0.0.0/8 received."""
    bridge_mac = Path("/sys/class/net", TEST_BRIDGE, "address").read_text().strip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as lo, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gw:
        lo.bind(("0.0.0.0", 0))  # every host address, 127.0.0.0/8 included
        gw.bind((GATEWAY, 0))
        gw.settimeout(5)
        argv = ["nsenter", f"--net={_netns(uuid)}", sys.executable, "-c", FORGE, _ip_of(pods, uuid),
                _mac_in_pod(uuid), GATEWAY, bridge_mac, str(lo.getsockname()[1]), str(gw.getsockname()[1])]
        for attempt in range(3):  # a frame lost on a busy machine: send all three again
            subprocess.run(argv, check=True, timeout=60)
            try:
                assert gw.recv(100) == b"honest"
                break
            except TimeoutError:
                assert attempt < 2, "the honest datagram never reached the gateway address"
        lo.setblocking(False)
        got = []
        while True:
            try:
                got.append(lo.recv(100))
            except BlockingIOError:
                return got


def test_a_pod_cannot_reach_the_hosts_loopback(pods: Pods) -> None:
    proc, uuid, _ = pods.start("demo", "--exec", "/bin/sleep", "--", "600")
    try:
        assert _forge_from(pods, uuid) == []
        assert Path(f"/proc/sys/net/ipv4/conf/{TEST_BRIDGE}/route_localnet").read_text().strip() == "1"
    finally:
        _stop(pods, uuid, proc)
    pods.run("gc", "--grace-period", "0s", check=True)


def test_forwards_from_the_hosts_loopback_still_work(pods: Pods) -> None:
    port = _free_port()
    proc, uuid, _ = pods.start("--port", f"8080:127.0.0.1:{port}", "demo", "--exec", "/bin/httpd", "--", "-f",
                               "-p", "8080", "-h", "/etc")
    try:
        deadline = time.monotonic() + 20
        while True:  # httpd may not listen yet when the pod is ready
            out = subprocess.run(["curl", "-sS", "-m", "5", f"http://127.0.0.1:{port}/hostname"], capture_output=True,
                                 text=True)
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert out.returncode == 0 and out.stdout.strip(), out.stderr
    finally:
        _stop(pods, uuid, proc)
    pods.run("gc", "--grace-period", "0s", check=True)


# The bridge table as podrun made it before the loopback set (what an upgraded host has).
OLD_TABLE = """table bridge {table} {{
  set ports {{ type ifname ; }}
  set pods {{ type ifname . ether_addr . ipv4_addr ; }}
  chain prerouting {{ type filter hook prerouting priority filter; policy accept;
    iifname @ports jump from_pod
  }}
  chain from_pod {{
    ether type arp iifname . ether saddr . arp saddr ip @pods iifname . arp saddr ether . arp saddr ip @pods accept
    ether type ip iifname . ether saddr . ip saddr @pods accept
    drop
  }}
}}
"""


def test_an_older_bridge_table_is_brought_up_to_date(pods: Pods) -> None:
    subprocess.run(["nft", "delete", "table", "bridge", TEST_TABLE], capture_output=True)
    subprocess.run(["nft", "-f", "-"], input=OLD_TABLE.format(table=TEST_TABLE), text=True, check=True)
    assert "loopback" not in _filter_elements()
    proc, uuid, _ = pods.start("demo", "--exec", "/bin/sleep", "--", "600")
    try:
        chain = _filter_elements().split("chain from_pod {", 1)[1]
        assert chain.split("\n", 2)[1].strip() == "ip daddr @loopback drop"  # the chain's first rule
        assert chain.count("@loopback") == 1
        assert _forge_from(pods, uuid) == []
    finally:
        _stop(pods, uuid, proc)
    pods.run("gc", "--grace-period", "0s", check=True)
    proc, uuid, _ = pods.start("demo", "--exec", "/bin/true")  # the next pod adds nothing more
    proc.wait(timeout=30)
    assert _filter_elements().count("@loopback") == 1
    pods.run("gc", "--grace-period", "0s", check=True)
