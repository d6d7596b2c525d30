"""The notification backlog (podrun.systemd.notify): what waits while the service manager's queue
is full is coalesced and bounded, and goes out in datagrams systemd accepts (issue 18)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from podrun.systemd.notify import DATAGRAM_MAX, FLAGS, FORWARDED, Backlog, Notifier, filter_app_message


def _lines(backlog: Backlog) -> list[str]:
    return list(backlog.lines.values())


def test_only_the_latest_status_is_kept() -> None:
    b = Backlog()
    for i in range(100):
        b.add(f"STATUS={i}")
    assert _lines(b) == ["STATUS=99"]


def test_ready_survives_later_status_and_watchdog_lines() -> None:
    b = Backlog()
    b.add("STATUS=starting")
    b.add("READY=1")
    b.add("STATUS=serving\nWATCHDOG=1")
    b.add("WATCHDOG=trigger")
    b.add("ERRNO=5")
    b.add("ERRNO=7")
    assert _lines(b) == ["READY=1", "STATUS=serving", "WATCHDOG=1", "WATCHDOG=trigger", "ERRNO=7"]


def test_a_repeated_line_moves_to_the_end() -> None:
    b = Backlog()
    b.add("READY=1\nSTATUS=a\nSTOPPING=1")
    b.add("READY=1")
    assert _lines(b) == ["STATUS=a", "STOPPING=1", "READY=1"]


def test_unforwarded_and_empty_lines_are_ignored() -> None:
    b = Backlog()
    b.add("MAINPID=1\n\nFDSTORE=1\nX=1\nnoequals\nSTATUS")
    assert not b
    assert _lines(b) == []


def test_a_flood_of_distinct_lines_stays_bounded() -> None:
    """A hostile app's million datagrams: every field name and flag at most once."""
    b = Backlog()
    for i in range(20000):
        for prefix in FORWARDED:
            b.add(f"{prefix}{i}")
        b.add(f"READY={i}\nWATCHDOG=trigger\nSTOPPING=1")
    assert len(b.lines) <= len(FORWARDED) + len(FLAGS)
    assert "READY=19999" in _lines(b) and "STOPPING=1" in _lines(b) and "WATCHDOG=trigger" in _lines(b)


def test_next_datagram_joins_the_oldest_lines() -> None:
    b = Backlog()
    b.add("STATUS=x\nREADY=1\nERRNO=2")
    assert b.next_datagram() == (b"STATUS=x\nREADY=1\nERRNO=2", 3)
    b.drop(2)
    assert _lines(b) == ["ERRNO=2"]
    assert b.next_datagram() == (b"ERRNO=2", 1)
    b.drop(1)
    assert not b


def test_datagrams_fit_what_systemd_reads() -> None:
    status = "STATUS=" + "s" * (DATAGRAM_MAX - len("STATUS=") - len("\nREADY=1"))
    b = Backlog()
    b.add(status + "\nREADY=1\nERRNO=3")
    data, count = b.next_datagram()
    assert (data, count) == ((status + "\nREADY=1").encode(), 2)
    assert len(data) == DATAGRAM_MAX  # exactly full: allowed
    b.drop(count)
    assert b.next_datagram() == (b"ERRNO=3", 1)



def test_one_byte_over_splits_the_datagram() -> None:
    status = "STATUS=" + "s" * (DATAGRAM_MAX + 1 - len("STATUS=") - len("\nREADY=1"))
    b = Backlog()
    b.add(status + "\nREADY=1")
    assert b.next_datagram() == (status.encode(), 1)
    b.drop(1)
    assert b.next_datagram() == (b"READY=1", 1)

def test_a_line_too_long_alone_still_goes_alone() -> None:
    long = "STATUS=" + "é" * DATAGRAM_MAX  # two bytes each once encoded
    b = Backlog()
    b.add(long + "\nREADY=1")
    assert b.next_datagram() == (long.encode(), 1)
    b.drop(1)
    assert b.next_datagram() == (b"READY=1", 1)


@pytest.mark.parametrize(("data", "expected"), [
    (b"READY=1\nMAINPID=1\nSTATUS=up", "READY=1\nSTATUS=up"),
    (b"FDSTORE=1\nFDNAME=x", ""),
    (b"MAINPID=1", ""),
    (b"WATCHDOG_USEC=5\nEXTEND_TIMEOUT_USEC=9\n", "WATCHDOG_USEC=5\nEXTEND_TIMEOUT_USEC=9"),
    (b"STATUS=\xff", "STATUS=\ufffd"),
])
def test_filter_app_message_drops_what_the_supervisor_must_not_forward(data: bytes, expected: str) -> None:
    assert filter_app_message(data) == expected


# The Notifier against a real datagram socket playing the manager (no root needed).

def _manager(address: str) -> socket.socket:
    m = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    m.bind(address)
    m.setblocking(False)
    return m


def _fill(address: str) -> int:
    """Fill the manager's queue (net.unix.max_dgram_qlen) from another socket; how many it took."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        count = 0
        while True:
            try:
                s.sendto(b"FILLER=1", address)
            except BlockingIOError:
                return count
            count += 1


def _read_all(m: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(m.recv(65536))
        except BlockingIOError:
            return out


def test_a_full_manager_keeps_the_message_waiting_then_takes_it(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    m = _manager(address)
    n = Notifier(address)
    try:
        filled = _fill(address)
        assert not n.send("STATUS=1")
        assert not n.send("STATUS=2\nREADY=1")
        assert not n.flush()
        assert _read_all(m) == [b"FILLER=1"] * filled
        assert n.flush()
        assert _read_all(m) == [b"STATUS=2\nREADY=1"]
        assert n.send("WATCHDOG=1")
        assert _read_all(m) == [b"WATCHDOG=1"]
    finally:
        n.close()
        m.close()


def test_an_abstract_address(tmp_path: Path) -> None:
    name = f"podrun-test-{tmp_path.name}-{os.getpid()}"
    m = _manager("\0" + name)
    n = Notifier("@" + name)
    try:
        assert n.send("READY=1")
        assert _read_all(m) == [b"READY=1"]
    finally:
        n.close()
        m.close()


def test_a_restarted_manager_gets_the_next_message(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    m = _manager(address)
    n = Notifier(address)
    try:
        assert n.send("STATUS=a")
        m.close()
        os.unlink(address)
        m = _manager(address)
        assert n.send("STATUS=b")
        assert _read_all(m) == [b"STATUS=b"]
    finally:
        n.close()
        m.close()


@pytest.mark.parametrize("address", ["relative/path", "/nonexistent/notify", "@"])
def test_no_manager_drops_with_one_warning(address: str, capfd: pytest.CaptureFixture[str]) -> None:
    n = Notifier(address)
    assert n.send("STATUS=a\nREADY=1")
    assert n.send("STATUS=b")
    assert not n.backlog
    n.close()
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"podrun: warning: notifying the service manager at "
                                                   f"NOTIFY_SOCKET={address}: "), err


def test_lines_are_whole_lines_keyed_by_their_field() -> None:
    """Spaces and '=' belong to the value; an ignored line does not end the message."""
    b = Backlog()
    b.add("MAINPID=1\nSTATUS=a b=c\nFDSTORE=1\nERRNO=2")
    assert _lines(b) == ["STATUS=a b=c", "ERRNO=2"]
    b.add("STATUS=done")
    assert _lines(b) == ["ERRNO=2", "STATUS=done"]


def test_a_line_that_is_not_unicode_is_sent_with_a_replacement() -> None:
    b = Backlog()
    b.add("STATUS=\udcff")  # a lone surrogate: no UTF-8 for it
    assert b.next_datagram() == (b"STATUS=?", 1)
