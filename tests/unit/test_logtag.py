"""App lines tagged with the app's name in a pod of several apps (podrun.pod.logrelay):
``LineTagger`` alone, and the Relay forwarding real pipes to fds 1 and 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podrun.pod.logrelay import CHUNK, Lines, LineTagger, Relay


def test_whole_lines_only_across_pieces() -> None:
    tag = LineTagger("web")
    assert tag.feed(b"a") == b""
    assert tag.feed(b"b\nc") == b"web | ab\n"
    assert tag.feed(b"\r") == b""  # a carriage return does not end a line
    assert tag.feed(b"d\n\n") == b"web | c\rd\nweb | \n"
    assert tag.flush() == b""


def test_several_lines_in_one_piece() -> None:
    assert LineTagger("db").feed(b"1\n2\n3\n") == b"db | 1\ndb | 2\ndb | 3\n"


def test_flush_ends_a_last_line_once() -> None:
    tag = LineTagger("x")
    tag.feed(b"no newline")
    assert tag.flush() == b"x | no newline\n"
    assert tag.flush() == b""
    assert tag.feed(b"next\n") == b"x | next\n"


def test_a_long_line_is_cut_at_chunk() -> None:
    tag = LineTagger("x")
    assert tag.feed(b"a" * (CHUNK - 1)) == b""
    out = tag.feed(b"bc")
    assert out == b"x | " + b"a" * (CHUNK - 1) + b"bc\n"
    assert tag.pending == b""
    assert tag.feed(b"d\n") == b"x | d\n"


def test_cut_keeps_complete_lines_first() -> None:
    tag = LineTagger("x")
    out = tag.feed(b"one\n" + b"z" * CHUNK)
    assert out == b"x | one\nx | " + b"z" * CHUNK + b"\n"


def _relay_two_apps(tmp_path: Path, tag_apps: bool) -> Relay:
    relay = Relay(None, -1, tag_apps=tag_apps)
    for name, lines in (("web", [b"w1\nw", b"2\n"]), ("db", [b"d1", b""])):
        (tmp_path / name).mkdir()
        out, err = relay.add_app(str(tmp_path / name / "log"))
        for piece in lines:
            if piece:
                os.write(out, piece)
        os.write(err, name.encode() + b" err\n")
        os.close(out)
        os.close(err)
    relay.drain(5)
    return relay


def test_relay_tags_each_app_on_its_stream(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    _relay_two_apps(tmp_path, tag_apps=True)
    out, err = capfdbinary.readouterr()
    assert sorted(out.splitlines(keepends=True)) == [b"db | d1\n", b"web | w1\n", b"web | w2\n"]
    assert sorted(err.splitlines(keepends=True)) == [b"db | db err\n", b"web | web err\n"]
    # the log files keep the app's own bytes, untagged
    assert (tmp_path / "db" / "log").read_bytes() in (b"d1db err\n", b"db err\nd1")
    assert b" | " not in (tmp_path / "web" / "log").read_bytes()


def test_relay_without_tags_forwards_bytes_as_they_are(tmp_path: Path,
                                                       capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    _relay_two_apps(tmp_path, tag_apps=False)
    out, _err = capfdbinary.readouterr()
    assert out in (b"w1\nw2\nd1", b"d1w1\nw2\n")  # each pipe's bytes were all written before the relay read


def test_journal_output_is_never_tagged() -> None:
    assert Relay("0" * 32, -1, tag_apps=True).tag_apps is False
    assert Relay(None, -1, tag_apps=True).tag_apps is True


def test_lines_without_a_limit_keep_a_long_partial_line() -> None:
    lines = Lines()  # the journal's: a line is sent whole, however long
    assert lines.feed(b"a" * (2 * CHUNK)) == []
    assert lines.feed(b"\nb") == [b"a" * (2 * CHUNK)]
    assert lines.flush() == [b"b"] and lines.flush() == []


def test_lines_cut_at_exactly_the_limit() -> None:
    lines = Lines(3)
    assert lines.feed(b"ab") == []
    assert lines.feed(b"c") == [b"abc"]
    assert lines.feed(b"x\n\n") == [b"x", b""]
