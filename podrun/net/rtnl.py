"""A minimal rtnetlink client: the nine requests the default network makes (rtnetlink(7)).

Why not pyroute2: importing it costs ~0.15 s (its package ``__init__`` loads every module of the
library), the largest part of a networked pod's start; skipping its ``__init__`` takes stub
modules planted in ``sys.modules``, which podrun does not do.  The requests below are plain
``struct`` packing over one ``AF_NETLINK`` socket, as iproute2 sends them; errors are the
kernel's errno as ``OSError``.

Message layout (netlink(7)): a 16-byte ``nlmsghdr``, a fixed family header (``ifinfomsg``,
``ifaddrmsg``, ``rtmsg``), then attributes: 4-byte header (length, type), payload, padding to 4.
Pure encoding and decoding (``attr``, ``message``, ``parse_*``) is unit-tested without root
(tests/unit/test_rtnl.py); the requests run against the real kernel in the network tests.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

# netlink(7)
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
# rtnetlink(7)
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_GATEWAY = 5
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst/src len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute: its header, *payload*, zero padding to a multiple of 4."""
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def name_attr(kind: int, name: str) -> bytes:
    """A NUL-terminated string attribute (interface names)."""
    return attr(kind, name.encode() + b"\0")


def u32_attr(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def mac_bytes(mac: str) -> bytes:
    """``"02:42:ac:10:00:02"`` as its six bytes."""
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One netlink message: header (length including itself) and *body*."""
    return _HDR.pack(_HDR.size + len(body), kind, flags, seq, 0) + body


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes in *data* from *offset*, by type (the nested flag bits cleared); a
    truncated or overlong attribute ends the list."""
    found: dict[int, bytes] = {}
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size or offset + length > len(data):
            break
        found[kind & 0x3FFF] = data[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return found


def split_messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """The messages of one datagram as (type, sequence, body)."""
    out: list[tuple[int, int, bytes]] = []
    offset = 0
    while offset + _HDR.size <= len(data):
        length, kind, _flags, seq, _port = _HDR.unpack_from(data, offset)
        if length < _HDR.size or offset + length > len(data):
            raise OSError(errno.EBADMSG, f"netlink: truncated message ({length} bytes at {offset} of {len(data)})")
        out.append((kind, seq, data[offset + _HDR.size:offset + length]))
        offset += (length + 3) & ~3
    return out


def error_code(body: bytes) -> int:
    """The errno an ``NLMSG_ERROR`` body carries (0: an acknowledgement)."""
    return -int(struct.unpack_from("=i", body)[0])


def parse_link_index(body: bytes) -> int:
    return int(_IFINFO.unpack_from(body)[2])


def parse_ipv4_addresses(bodies: list[bytes], index: int) -> set[str]:
    """The IPv4 addresses (``IFA_ADDRESS``) of interface *index* in an ``RTM_GETADDR`` dump."""
    found = set()
    for body in bodies:
        family, _prefix, _flags, _scope, ifindex = _IFADDR.unpack_from(body)
        if family != socket.AF_INET or ifindex != index:
            continue
        value = parse_attrs(body, _IFADDR.size).get(IFA_ADDRESS)
        if value is not None and len(value) == 4:
            found.add(socket.inet_ntoa(value))
    return found


class Netlink:
    """One ``NETLINK_ROUTE`` socket, bound in the network namespace the calling thread is in
    when it is made (and staying there).  A context manager; not thread-safe."""

    __slots__ = ("sock", "seq")

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
        """Send one request and read its answer: the bodies of the reply messages (a dump's
        entries, a get's answer).  A negative acknowledgement raises ``OSError`` with the errno
        and *what* in its message."""
        self.seq += 1
        seq = self.seq
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        self.sock.send(message(kind, flags | NLM_F_REQUEST | (0 if dump else NLM_F_ACK), seq, body))
        replies: list[bytes] = []
        while True:
            for mkind, mseq, mbody in split_messages(self.sock.recv(65536)):
                if mseq != seq:
                    continue  # an answer to an earlier request (none is left unread, but be strict)
                if mkind == NLMSG_ERROR:
                    code = error_code(mbody)
                    if code:
                        raise OSError(code, f"{what}: {os.strerror(code)}")
                    return replies
                if mkind == NLMSG_DONE:
                    return replies
                replies.append(mbody)

    # -- links ----------------------------------------------------------------------------------
    def link_index(self, name: str) -> int | None:
        """The index of interface *name* in this socket's namespace, None when there is none."""
        try:
            replies = self.request(RTM_GETLINK, 0, ifinfo() + name_attr(IFLA_IFNAME, name), f"link {name}")
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return parse_link_index(replies[0]) if replies else None

    def add_bridge(self, name: str, mac: str) -> None:
        body = (ifinfo() + name_attr(IFLA_IFNAME, name) + attr(IFLA_ADDRESS, mac_bytes(mac))
                + attr(IFLA_LINKINFO, name_attr(IFLA_INFO_KIND, "bridge")))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add bridge {name}")

    def add_veth(self, name: str, peer: str, peer_mac: str, peer_netns_fd: int) -> None:
        """A veth pair: *name* here, *peer* (with *peer_mac*) in the netns *peer_netns_fd*."""
        peer_info = (ifinfo() + name_attr(IFLA_IFNAME, peer) + attr(IFLA_ADDRESS, mac_bytes(peer_mac))
                     + u32_attr(IFLA_NET_NS_FD, peer_netns_fd))
        linkinfo = name_attr(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info))
        body = ifinfo() + name_attr(IFLA_IFNAME, name) + attr(IFLA_LINKINFO, linkinfo)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add veth {name}")

    def set_link(self, index: int, *, up: bool = False, master: int | None = None,
                 mac: str | None = None) -> None:
        """Change interface *index*: its MAC, its bridge, bring it up (only what is given)."""
        body = ifinfo(index, IFF_UP if up else 0, IFF_UP if up else 0)
        if master is not None:
            body += u32_attr(IFLA_MASTER, master)
        if mac is not None:
            body += attr(IFLA_ADDRESS, mac_bytes(mac))
        self.request(RTM_NEWLINK, 0, body, f"set link {index}")

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, 0, ifinfo(index), f"delete link {index}")

    # -- addresses and routes -------------------------------------------------------------------
    def ipv4_addresses(self, index: int) -> set[str]:
        body = _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)
        return parse_ipv4_addresses(self.request(RTM_GETADDR, NLM_F_DUMP, body, "list addresses"), index)

    def add_ipv4_address(self, index: int, address: str, prefix: int) -> None:
        packed = socket.inet_aton(address)
        body = (_IFADDR.pack(socket.AF_INET, prefix, 0, RT_SCOPE_UNIVERSE, index)
                + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed))
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {address}/{prefix}")

    def add_default_route(self, gateway: str) -> None:
        body = (_RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                            RTN_UNICAST, 0)
                + attr(RTA_GATEWAY, socket.inet_aton(gateway)))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"add default route via {gateway}")
