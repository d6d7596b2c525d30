"""Network configurations: the network config dir (``/etc/podrun/net.d``, or
``$PODRUN_NET_DIR``) holds CNI network lists (``*.conflist``, or single ``*.conf``) and, optionally,
``default.json`` overriding podrun's default network (man podrun-net(5)):

    {"bridge": "podrun0", "subnet": "172.16.28.0/24"}

CNI plugins are searched in ``$PODRUN_CNI_PATH`` (colon-separated; default ``/usr/lib/cni``, where
Debian's containernetworking-plugins installs them, then ``/opt/cni/bin``).
"""

from __future__ import annotations

import json
import os

from podrun.errors import NotFoundError, UsageError
from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

DEFAULT_NET_DIR = "/etc/podrun/net.d"
DEFAULT_CNI_PATH = "/usr/lib/cni:/opt/cni/bin"
DEFAULT_BRIDGE = "podrun0"
DEFAULT_SUBNET = "172.16.28.0/24"  # rkt's default network


class DefaultNet(Record):
    bridge: Final[str]
    subnet: Final[str]  # IPv4 CIDR; the bridge (gateway) takes the first host address

    __slots__ = ("bridge", "subnet")

    def __init__(self, bridge: str = DEFAULT_BRIDGE, subnet: str = DEFAULT_SUBNET) -> None:
        self.bridge = bridge
        self.subnet = subnet

    @property
    def table(self) -> str:
        """podrun's nftables table for this network (``ip`` family)."""
        return "podrun" if self.bridge == DEFAULT_BRIDGE else f"podrun-{self.bridge}"

    def network(self) -> tuple[int, int]:
        """(network address as int, prefix length)."""
        addr, _, plen = self.subnet.partition("/")
        a, b, c, d = (int(x) for x in addr.split("."))
        prefix = int(plen)
        value = (a << 24) | (b << 16) | (c << 8) | d
        return value & (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF, prefix

    def gateway(self) -> str:
        net, _ = self.network()
        return int_to_ip(net + 1)

    def bridge_mac(self) -> str:
        """The bridge's MAC, fixed (derived from the gateway address): a bridge without one of
        its own takes the lowest MAC of its ports, so the gateway's MAC that pods have cached
        would change whenever a pod leaves."""
        return pod_mac(self.gateway())


def pod_mac(ip: str) -> str:
    """The MAC of the interface holding *ip*: ``02:42`` (locally administered, unicast) and the
    address's four bytes, as Docker derives it.  A pod that gets an address a dead pod had
    thus gets its MAC too: the neighbour entries the host and other pods hold for the address
    stay right, so the new pod answers at once (with a random MAC it was unreachable until
    they expired, 15-45 s)."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


def int_to_ip(value: int) -> str:
    return ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))


def ip_to_int(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def net_dir() -> str:
    return os.environ.get("PODRUN_NET_DIR") or DEFAULT_NET_DIR


def cni_path() -> list[str]:
    return [p for p in (os.environ.get("PODRUN_CNI_PATH") or DEFAULT_CNI_PATH).split(":") if p]


def _check_subnet(text: str) -> None:
    addr, slash, plen = text.partition("/")
    parts = addr.split(".")
    ok = (slash and plen.isdigit() and 8 <= int(plen) <= 30 and len(parts) == 4
          and all(p.isdigit() and int(p) <= 255 for p in parts))
    if not ok:
        raise UsageError(f"{net_dir()}/default.json: invalid subnet {text!r} (expected an IPv4 CIDR, /8 to /30)")


def default_net() -> DefaultNet:
    path = os.path.join(net_dir(), "default.json")
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        return DefaultNet()
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable network config ({exc})") from None
    if not isinstance(doc, dict) or set(doc) - {"bridge", "subnet"}:
        raise UsageError(f"{path}: expected an object with only the keys bridge and subnet")
    bridge = doc.get("bridge", DEFAULT_BRIDGE)
    if not isinstance(bridge, str) or not 1 <= len(bridge) <= 15 or "/" in bridge or " " in bridge:
        raise UsageError(f"{path}: invalid bridge name {bridge!r} (1-15 characters)")
    subnet = doc.get("subnet", DEFAULT_SUBNET)
    if not isinstance(subnet, str):
        raise UsageError(f"{path}: subnet must be a string")
    _check_subnet(subnet)
    return DefaultNet(bridge, subnet)


def load_cni(name: str) -> dict[str, object]:
    """The CNI network list named *name* (a single-plugin ``.conf`` is turned into a list)."""
    directory = net_dir()
    try:
        files = sorted(f for f in os.listdir(directory) if f.endswith((".conflist", ".conf", ".json")))
    except FileNotFoundError:
        files = []
    for fname in files:
        if fname == "default.json":
            continue
        path = os.path.join(directory, fname)
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: unreadable network config ({exc})") from None
        if not isinstance(doc, dict) or doc.get("name") != name:
            continue
        if "plugins" not in doc:  # a single .conf
            doc = {"cniVersion": doc.get("cniVersion", "0.4.0"), "name": name, "plugins": [doc]}
        _check_conflist(path, doc)
        return doc
    raise NotFoundError(f"no network named {name!r} in {directory}",
                        hint="add a CNI .conflist there, or use --net=default, none or host")


def _check_conflist(path: str, doc: dict[str, object]) -> None:
    plugins = doc.get("plugins")
    if not isinstance(doc.get("cniVersion"), str):
        raise UsageError(f"{path}: cniVersion must be a string")
    if not isinstance(plugins, list) or not plugins:
        raise UsageError(f"{path}: plugins must be a non-empty list")
    for p in plugins:
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or "/" in p["type"]:
            raise UsageError(f"{path}: every plugin needs a type naming a plugin binary")
