"""The rtnetlink client's encoding and decoding (podrun.net.rtnl), without root or a kernel:
byte-exact messages as rtnetlink(7) lays them out, and the request loop against a scripted
socket.  tests/integration/test_rtnl.py runs the same requests against the real kernel."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable

import pytest

from podrun.net import rtnl
from podrun.net.rtnl import Netlink


def test_an_attribute_is_its_length_type_payload_and_padding() -> None:
    assert rtnl.attr(3, b"ab") == struct.pack("=HH", 6, 3) + b"ab\0\0"
    assert rtnl.attr(1, b"abcd") == struct.pack("=HH", 8, 1) + b"abcd"
    assert rtnl.attr(7, b"") == struct.pack("=HH", 4, 7)
    assert rtnl.attr(2, b"abcde") == struct.pack("=HH", 9, 2) + b"abcde\0\0\0"


def test_names_are_nul_terminated_and_numbers_native_u32() -> None:
    assert rtnl.name_attr(3, "eth0") == struct.pack("=HH", 9, 3) + b"eth0\0" + b"\0\0\0"
    assert rtnl.u32_attr(10, 0x01020304) == struct.pack("=HHI", 8, 10, 0x01020304)


def test_mac_addresses() -> None:
    assert rtnl.mac_bytes("02:42:ac:10:00:ff") == bytes([2, 0x42, 0xAC, 0x10, 0, 0xFF])
    for bad in ("02:42:ac:10:00", "02:42:ac:10:00:ff:01", ""):
        with pytest.raises(ValueError, match="not a MAC address"):
            rtnl.mac_bytes(bad)


def test_ifinfomsg_layout() -> None:
    assert rtnl.ifinfo() == bytes(16)
    assert rtnl.ifinfo(7, 1, 1) == struct.pack("=BxHiII", 0, 0, 7, 1, 1)
    assert len(rtnl.ifinfo(7, 1, 1)) == 16


def test_a_message_counts_its_header() -> None:
    msg = rtnl.message(16, 0x405, 9, b"xyzw")
    assert msg == struct.pack("=IHHII", 20, 16, 0x405, 9, 0) + b"xyzw"


def test_attributes_parse_back_and_stop_at_bad_lengths() -> None:
    data = rtnl.attr(1, b"abcd") + rtnl.name_attr(3, "br0") + rtnl.attr(0x8000 | 18, b"nest")
    assert rtnl.parse_attrs(data) == {1: b"abcd", 3: b"br0\0", 18: b"nest"}
    assert rtnl.parse_attrs(b"pad!" + rtnl.attr(5, b"x"), 4) == {5: b"x"}
    # a length past the end, or below the header's own size, ends the list
    assert rtnl.parse_attrs(rtnl.attr(1, b"ok") + struct.pack("=HH", 40, 2) + b"short") == {1: b"ok"}
    assert rtnl.parse_attrs(struct.pack("=HH", 3, 2) + b"abcd") == {}
    assert rtnl.parse_attrs(b"\x08\x00") == {}  # shorter than a header
    # exactly filling the data is fine
    assert rtnl.parse_attrs(struct.pack("=HH", 4, 9)) == {9: b""}


def test_a_datagram_splits_into_aligned_messages() -> None:
    one = rtnl.message(16, 2, 5, b"abcde")  # 21 bytes: the next starts at 24
    two = rtnl.message(3, 2, 5, b"")
    data = one + b"\0\0\0" + two
    assert rtnl.split_messages(data) == [(16, 5, b"abcde"), (3, 5, b"")]
    assert rtnl.split_messages(b"") == []
    with pytest.raises(OSError, match="truncated message"):
        rtnl.split_messages(struct.pack("=IHHII", 40, 16, 0, 1, 0) + b"x")
    with pytest.raises(OSError, match="truncated message"):
        rtnl.split_messages(struct.pack("=IHHII", 8, 16, 0, 1, 0))


def test_error_bodies_give_a_positive_errno() -> None:
    assert rtnl.error_code(struct.pack("=i", -errno.EEXIST) + bytes(16)) == errno.EEXIST
    assert rtnl.error_code(struct.pack("=i", 0)) == 0


def _ifaddr(family: int, index: int, *attrs: bytes) -> bytes:
    return struct.pack("=BBBBI", family, 24, 0, 0, index) + b"".join(attrs)


def test_addresses_of_one_interface_from_a_dump() -> None:
    a = socket.inet_aton
    bodies = [
        _ifaddr(socket.AF_INET, 4, rtnl.attr(rtnl.IFA_LOCAL, a("10.0.0.9")), rtnl.attr(rtnl.IFA_ADDRESS, a("10.0.0.1"))),
        _ifaddr(socket.AF_INET, 5, rtnl.attr(rtnl.IFA_ADDRESS, a("10.0.1.1"))),  # another interface
        _ifaddr(socket.AF_INET6, 4, rtnl.attr(rtnl.IFA_ADDRESS, bytes(16))),  # another family
        _ifaddr(socket.AF_INET, 4, rtnl.attr(rtnl.IFA_ADDRESS, a("10.0.2.1"))),
        _ifaddr(socket.AF_INET, 4),  # no address attribute
        _ifaddr(socket.AF_INET, 4, rtnl.attr(rtnl.IFA_ADDRESS, b"\1\2\3")),  # malformed
    ]
    assert rtnl.parse_ipv4_addresses(bodies, 4) == {"10.0.0.1", "10.0.2.1"}
    assert rtnl.parse_ipv4_addresses(bodies, 5) == {"10.0.1.1"}
    assert rtnl.parse_ipv4_addresses(bodies, 6) == set()


class ScriptedSocket:
    """Records what is sent; answers each recv with the next scripted datagram."""

    def __init__(self, *datagrams: bytes) -> None:
        self.sent: list[bytes] = []
        self.datagrams = list(datagrams)

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        assert size >= 32768  # a dump's datagrams reach 32 KiB (a page, or 8 KiB at least)
        return self.datagrams.pop(0)


def _netlink(*datagrams: bytes) -> tuple[Netlink, ScriptedSocket]:
    nl = Netlink.__new__(Netlink)
    sock = ScriptedSocket(*datagrams)
    nl.sock = sock  # type: ignore[assignment]
    nl.seq = 0
    return nl, sock


def _ack(seq: int, code: int = 0) -> bytes:
    return rtnl.message(rtnl.NLMSG_ERROR, 0, seq, struct.pack("=i", -code) + bytes(16))


def test_a_request_asks_for_an_ack_and_returns_the_replies_before_it() -> None:
    reply = rtnl.ifinfo(12)
    nl, sock = _netlink(rtnl.message(rtnl.RTM_NEWLINK, 0, 1, reply) + _ack(1))
    assert nl.link_index("br0") == 12
    kind, flags, seq = struct.unpack_from("=xxxxHHI", sock.sent[0])
    assert (kind, flags, seq) == (rtnl.RTM_GETLINK, rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK, 1)
    assert sock.sent[0][16:] == rtnl.ifinfo() + rtnl.name_attr(rtnl.IFLA_IFNAME, "br0")


def test_answers_to_other_sequence_numbers_are_skipped() -> None:
    nl, _ = _netlink(_ack(7, errno.EPERM) + rtnl.message(rtnl.RTM_NEWLINK, 0, 1, rtnl.ifinfo(3)), _ack(1))
    assert nl.link_index("x") == 3


def test_a_negative_ack_is_an_oserror_naming_the_request() -> None:
    nl, _ = _netlink(_ack(1, errno.EEXIST))
    with pytest.raises(OSError, match=r"add bridge br0: File exists") as caught:
        nl.add_bridge("br0", "02:00:00:00:00:01")
    assert caught.value.errno == errno.EEXIST


def test_a_missing_link_is_none_and_other_errors_raise() -> None:
    nl, _ = _netlink(_ack(1, errno.ENODEV))
    assert nl.link_index("nope") is None
    nl, _ = _netlink(_ack(1, errno.EPERM))
    with pytest.raises(OSError) as caught:
        nl.link_index("nope")
    assert caught.value.errno == errno.EPERM
    nl, _ = _netlink(_ack(1))  # an ack without a reply
    assert nl.link_index("nope") is None


def test_a_dump_reads_until_done_across_datagrams_and_asks_for_no_ack() -> None:
    a = socket.inet_aton
    first = rtnl.message(rtnl.RTM_NEWADDR, 2, 1, _ifaddr(socket.AF_INET, 2, rtnl.attr(rtnl.IFA_ADDRESS, a("10.1.0.1"))))
    second = rtnl.message(rtnl.RTM_NEWADDR, 2, 1, _ifaddr(socket.AF_INET, 2, rtnl.attr(rtnl.IFA_ADDRESS, a("10.2.0.1"))))
    done = rtnl.message(rtnl.NLMSG_DONE, 2, 1, struct.pack("=i", 0))
    nl, sock = _netlink(first, second + done)
    assert nl.ipv4_addresses(2) == {"10.1.0.1", "10.2.0.1"}
    _, flags = struct.unpack_from("=xxxxHH", sock.sent[0])
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP
    assert sock.sent[0][16:] == struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)


def test_sequence_numbers_increase_per_request() -> None:
    nl, sock = _netlink(_ack(1), _ack(2))
    nl.set_link(4, up=True)
    nl.delete_link(4)
    assert [struct.unpack_from("=I", m, 8)[0] for m in sock.sent] == [1, 2]


def _sent_body(sock: ScriptedSocket) -> tuple[int, int, bytes]:
    kind, flags = struct.unpack_from("=xxxxHH", sock.sent[-1])
    return kind, flags, sock.sent[-1][16:]


def test_bridge_and_veth_requests() -> None:
    nl, sock = _netlink(_ack(1), _ack(2))
    nl.add_bridge("br9", "02:42:0a:00:00:01")
    kind, flags, body = _sent_body(sock)
    create = rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    assert (kind, flags) == (rtnl.RTM_NEWLINK, create)
    assert body == (rtnl.ifinfo() + rtnl.name_attr(rtnl.IFLA_IFNAME, "br9")
                    + rtnl.attr(rtnl.IFLA_ADDRESS, bytes([2, 0x42, 10, 0, 0, 1]))
                    + rtnl.attr(rtnl.IFLA_LINKINFO, rtnl.name_attr(rtnl.IFLA_INFO_KIND, "bridge")))
    nl.add_veth("vh0", "eth0", "02:42:0a:00:00:02", 33)
    kind, flags, body = _sent_body(sock)
    assert (kind, flags) == (rtnl.RTM_NEWLINK, create)
    attrs = rtnl.parse_attrs(body, 16)
    assert attrs[rtnl.IFLA_IFNAME] == b"vh0\0"
    info = rtnl.parse_attrs(attrs[rtnl.IFLA_LINKINFO])
    assert info[rtnl.IFLA_INFO_KIND] == b"veth\0"
    peer = rtnl.parse_attrs(info[rtnl.IFLA_INFO_DATA])[rtnl.VETH_INFO_PEER]
    assert peer[:16] == rtnl.ifinfo()
    assert rtnl.parse_attrs(peer, 16) == {rtnl.IFLA_IFNAME: b"eth0\0",
                                          rtnl.IFLA_ADDRESS: bytes([2, 0x42, 10, 0, 0, 2]),
                                          rtnl.IFLA_NET_NS_FD: struct.pack("=I", 33)}


def test_set_link_sends_only_what_is_asked() -> None:
    nl, sock = _netlink(_ack(1), _ack(2), _ack(3))
    nl.set_link(6, up=True)
    kind, flags, body = _sent_body(sock)
    assert (kind, flags) == (rtnl.RTM_NEWLINK, rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK)
    assert body == rtnl.ifinfo(6, rtnl.IFF_UP, rtnl.IFF_UP)
    nl.set_link(6, master=2)
    assert _sent_body(sock)[2] == rtnl.ifinfo(6) + rtnl.u32_attr(rtnl.IFLA_MASTER, 2)
    nl.set_link(6, mac="02:00:00:00:00:0a", up=True, master=3)
    assert _sent_body(sock)[2] == (rtnl.ifinfo(6, 1, 1) + rtnl.u32_attr(rtnl.IFLA_MASTER, 3)
                                   + rtnl.attr(rtnl.IFLA_ADDRESS, bytes([2, 0, 0, 0, 0, 10])))


def test_address_route_and_delete_requests() -> None:
    nl, sock = _netlink(_ack(1), _ack(2), _ack(3))
    nl.add_ipv4_address(5, "10.9.8.7", 24)
    kind, flags, body = _sent_body(sock)
    assert (kind, flags & rtnl.NLM_F_CREATE, flags & rtnl.NLM_F_EXCL) == (rtnl.RTM_NEWADDR, rtnl.NLM_F_CREATE, rtnl.NLM_F_EXCL)
    packed = socket.inet_aton("10.9.8.7")
    assert body == (struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 5)
                    + rtnl.attr(rtnl.IFA_LOCAL, packed) + rtnl.attr(rtnl.IFA_ADDRESS, packed))
    nl.add_default_route("10.9.8.1")
    kind, _, body = _sent_body(sock)
    assert kind == rtnl.RTM_NEWROUTE
    assert body == (struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
                    + rtnl.attr(rtnl.RTA_GATEWAY, socket.inet_aton("10.9.8.1")))
    nl.delete_link(5)
    kind, flags, body = _sent_body(sock)
    assert (kind, flags, body) == (rtnl.RTM_DELLINK, rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK, rtnl.ifinfo(5))


@pytest.mark.parametrize(("call", "what"), [
    (lambda nl: nl.link_index("br7"), "link br7"),
    (lambda nl: nl.add_bridge("br7", "02:00:00:00:00:01"), "add bridge br7"),
    (lambda nl: nl.add_veth("vx", "eth0", "02:00:00:00:00:02", 3), "add veth vx"),
    (lambda nl: nl.set_link(9, up=True), "set link 9"),
    (lambda nl: nl.delete_link(9), "delete link 9"),
    (lambda nl: nl.ipv4_addresses(9), "list addresses"),
    (lambda nl: nl.add_ipv4_address(9, "10.0.0.2", 24), "add address 10.0.0.2/24"),
    (lambda nl: nl.add_default_route("10.0.0.1"), "add default route via 10.0.0.1"),
])
def test_every_request_names_itself_in_its_error(call: Callable[[Netlink], object], what: str) -> None:
    nl, _ = _netlink(_ack(1, errno.EPERM))
    with pytest.raises(OSError) as caught:
        call(nl)
    assert caught.value.errno == errno.EPERM
    assert str(caught.value) == f"[Errno {errno.EPERM}] {what}: {os.strerror(errno.EPERM)}"


def test_a_truncated_answer_is_ebadmsg() -> None:
    with pytest.raises(OSError) as caught:
        rtnl.split_messages(struct.pack("=IHHII", 17, 16, 0, 1, 0))
    assert caught.value.errno == errno.EBADMSG
    assert "17 bytes at 0 of 16" in str(caught.value)
