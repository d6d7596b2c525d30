"""Parsing of the pod's network flags (pure; stage0).  Precedence and syntax follow rkt:

- ``--net none|host|NAME[:K=V;K=V][,NAME…]``: ``default`` is podrun's bridge network, other names
  are CNI networks from the network config dir; ``NAME:IP=10.1.2.3`` asks for an address
  (CNI_ARGS for CNI networks).
- ``--port PODPORT:[HOSTIP:]HOSTPORT[/tcp|udp]`` or ``NAME:[HOSTIP:]HOSTPORT`` where NAME is a
  port the image exposes, named like ``80-tcp`` (rkt's names for OCI ``ExposedPorts``).
- ``--dns IP|host|none``, ``--dns-search``, ``--dns-opt``, ``--hosts-entry IP=NAME|host``.
"""

from __future__ import annotations

from podrun.errors import UsageError
from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# The network's files in a pod directory (pod.layout re-exports them: net never imports pod).
NET_DIR = "net"  # the network record and CNI configs: kept until the network is released
NET_STATE = NET_DIR + "/state.json"  # every host side effect, recorded before it is made


def cni_config_path(network: str) -> str:
    """The CNI configuration a pod's network *network* was added with (DEL must see the same)."""
    return f"{NET_DIR}/cni-{network}.json"


NET_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class NetMode:
    """The pod's network mode as the manifest records it (a plain class: enum costs ~5 ms)."""

    NONE = "none"  # a network namespace with loopback only
    HOST = "host"  # the host's network namespace
    NETWORKS = "networks"  # its own namespace, attached to the manifest's ``networks``
    ALL = (NONE, HOST, NETWORKS)


def net_mode(text: str) -> str:
    """The NetMode of a ``--net`` text (already checked by ``parse_net``)."""
    text = text.strip()
    return text if text in (NetMode.NONE, NetMode.HOST) else NetMode.NETWORKS


class NetSpec(Record):
    name: Final[str]
    args: Final[tuple[tuple[str, str], ...]]  # (K, V) pairs, in the order given

    __slots__ = ("name", "args")

    def __init__(self, name: str, args: tuple[tuple[str, str], ...] = ()) -> None:
        self.name = name
        self.args = args

    def arg(self, key: str) -> str | None:
        return next((v for k, v in self.args if k == key), None)


class PortSpec(Record):
    proto: Final[str]  # "tcp" | "udp"
    pod_port: Final[int]
    host_port: Final[int]
    host_ip: Final[str]  # "" = every host address

    __slots__ = ("proto", "pod_port", "host_port", "host_ip")

    def __init__(self, proto: str, pod_port: int, host_port: int, host_ip: str = "") -> None:
        self.proto = proto
        self.pod_port = pod_port
        self.host_port = host_port
        self.host_ip = host_ip


def parse_net(text: str) -> tuple[NetSpec, ...]:
    """() for ``none`` and ``host`` (the callers keep the mode), else the networks in order."""
    text = text.strip()
    if text in ("none", "host"):
        return ()
    out: list[NetSpec] = []
    for part in text.split(","):
        name, _, argtext = part.strip().partition(":")
        if not name or not set(name) <= NET_NAME_CHARS or name in ("none", "host"):
            raise UsageError(f"invalid --net {text!r}: bad network name {name!r}",
                             hint="use none, host, default or the name of a network in the network config dir")
        args: list[tuple[str, str]] = []
        for item in filter(None, argtext.split(";")):
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise UsageError(f"invalid --net {text!r}: expected NAME:KEY=VALUE[;KEY=VALUE]")
            args.append((k, v))
        if any(n.name == name for n in out):
            raise UsageError(f"invalid --net {text!r}: network {name!r} given twice")
        out.append(NetSpec(name, tuple(args)))
        ip = out[-1].arg("IP")
        if ip is not None:
            check_ipv4(f"--net {name}:IP", ip)
    return tuple(out)


def check_ipv4(what: str, text: str) -> str:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and 0 <= int(p) <= 255 and str(int(p)) == p for p in parts):
        raise UsageError(f"invalid {what} {text!r}: expected an IPv4 address")
    return text


def _port(what: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"invalid {what} {text!r}: expected a port number 1-65535")
    return int(text)


def exposed_port_names(image_config: dict[str, object]) -> dict[str, tuple[str, int]]:
    """``{"80-tcp": ("tcp", 80)}`` from an image config's ExposedPorts (``"80/tcp": {}``)."""
    cfg = image_config.get("config")
    exposed = cfg.get("ExposedPorts") if isinstance(cfg, dict) else None
    out: dict[str, tuple[str, int]] = {}
    for key in exposed or {}:
        port, _, proto = str(key).partition("/")
        proto = proto or "tcp"
        if port.isdigit() and proto in ("tcp", "udp"):
            out[f"{port}-{proto}"] = (proto, int(port))
    return out


def parse_port(text: str, exposed: dict[str, tuple[str, int]]) -> PortSpec:
    """One ``--port``: PODPORT:[HOSTIP:]HOSTPORT[/tcp|udp] or NAME:[HOSTIP:]HOSTPORT."""
    body, slash, proto = text.partition("/")
    if slash and proto not in ("tcp", "udp"):
        raise UsageError(f"invalid --port {text!r}: protocol must be tcp or udp")
    parts = body.split(":")
    if len(parts) not in (2, 3):
        raise UsageError(f"invalid --port {text!r}: expected PODPORT:[HOSTIP:]HOSTPORT[/tcp|udp] or NAME:HOSTPORT")
    pod, host_port = parts[0], parts[-1]
    host_ip = check_ipv4("--port host address", parts[1]) if len(parts) == 3 else ""
    if pod.isdigit():
        pod_proto, pod_port = (proto or "tcp"), _port("--port pod port", pod)
    elif pod in exposed:
        pod_proto, pod_port = exposed[pod]
        if slash and proto != pod_proto:
            raise UsageError(f"invalid --port {text!r}: port {pod!r} is {pod_proto}")
    else:
        names = ", ".join(sorted(exposed)) or "none"
        raise UsageError(f"invalid --port {text!r}: the image exposes no port named {pod!r} (exposed: {names})")
    return PortSpec(pod_proto, pod_port, _port("--port host port", host_port), host_ip)


def check_dns(values: tuple[str, ...] | list[str]) -> None:
    special = [v for v in values if v in ("host", "none")]
    if special and len(values) > 1:
        raise UsageError(f"--dns {special[0]} cannot be combined with other --dns values")
    for v in values:
        if v not in ("host", "none"):
            check_ipv4("--dns", v)


# Values written into /etc/hosts, /etc/resolv.conf and /etc/hostname are single words of
# printable ASCII: no newline or other control character can add a line, no space a field
# (SECURITY-TESTS 30).  253 is the longest DNS name.
def check_word(what: str, text: str, max_len: int = 253) -> str:
    if not text or len(text) > max_len or not all("!" <= c <= "~" for c in text):
        raise UsageError(f"invalid {what} {text!r}: expected one word of printable ASCII, at most {max_len} "
                         "characters")
    return text


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_OPT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def check_domain(what: str, text: str, max_len: int = 253) -> str:
    """A DNS name as resolv.conf and /etc/hosts take it: dot-separated labels of 1-63 letters,
    digits, '-' and '_', an optional final dot, at most *max_len* characters."""
    labels = (text[:-1] if text.endswith(".") else text).split(".")
    if len(text) > max_len or not all(0 < len(label) < 64 and set(label) <= _NAME_CHARS for label in labels):
        raise UsageError(f"invalid {what} {text!r}: expected a domain name (labels of letters, digits, '-' and "
                         f"'_', 1-63 characters each, at most {max_len} in all)")
    return text


def check_resolv_option(text: str) -> str:
    """``--dns-opt``: a resolv.conf option, ``NAME`` or ``NAME:NUMBER`` (``ndots:2``, ``rotate``,
    ``edns0``, ``single-request-reopen``…); resolv.conf(5) has the names."""
    name, colon, value = text.partition(":")
    if not (name and name[0].isalpha() and set(name) <= _OPT_CHARS and len(text) <= 64
            and (not colon or (value.isdigit() and value.isascii() and len(value) <= 5))):
        raise UsageError(f"invalid --dns-opt {text!r}: expected a resolv.conf option, NAME or NAME:NUMBER "
                         "(lower-case letters, digits and '-')")
    return text


def check_resolv_words(search: tuple[str, ...] | list[str], opts: tuple[str, ...] | list[str]) -> None:
    """``--dns-search`` domains (``.`` alone: no search list, as podman) and ``--dns-opt`` options."""
    if "." in search and len(search) > 1:
        raise UsageError("--dns-search . (no search list) cannot be combined with other domains")
    for v in search:
        if v != ".":
            check_domain("--dns-search", v)
    for v in opts:
        check_resolv_option(v)


def check_hosts_entry(text: str) -> None:
    if text == "host":
        return
    ip, eq, name = text.partition("=")
    if not eq or not name:
        raise UsageError(f"invalid --hosts-entry {text!r}: expected IP=NAME or host")
    check_ipv4("--hosts-entry address", ip)
    check_word("--hosts-entry", text)
    check_domain("--hosts-entry name", name, 253 - len(ip) - 1)


HOST_NAME_MAX = 64  # the kernel's (sethostname(2) refuses longer names)
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def check_hostname(text: str) -> str:
    """``--hostname``: dot-separated labels of 1-63 letters, digits and '-' (RFC 1123), not
    starting or ending with '-', at most HOST_NAME_MAX characters in all."""
    labels = text.split(".")
    if len(text) > HOST_NAME_MAX or not all(
            0 < len(label) < 64 and set(label) <= _LABEL_CHARS and "-" not in (label[0], label[-1])
            for label in labels):
        raise UsageError(f"invalid --hostname {text!r}: expected letters, digits, '-' and '.' (RFC 1123), "
                         f"at most {HOST_NAME_MAX} characters")
    return text
