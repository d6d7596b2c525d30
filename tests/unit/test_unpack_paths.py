"""The unpacker's pure rules: entry name checks and the xattr policy (no root needed)."""

from __future__ import annotations

import pytest

from podrun.errors import LimitExceededError, VerificationError
from podrun.image.limits import DEFAULT_LIMITS, Limits
from podrun.image.unpack import entry_components, xattrs_to_apply


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("etc/passwd", ("etc", "passwd")),
        ("./etc/passwd", ("etc", "passwd")),
        ("././a//b/./c/", ("a", "b", "c")),
        (".", ()),
        ("./", ()),
        ("..foo/.wh.x", ("..foo", ".wh.x")),
        ("a\udcffb", ("a\udcffb",)),  # non-UTF-8 bytes, as tarfile decodes them
    ],
)
def test_accepted_names(name: str, parts: tuple[str, ...]) -> None:
    assert entry_components(name, DEFAULT_LIMITS, "layer") == parts


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../x", "escapes"),
        ("a/../../x", "escapes"),
        ("a/..", "escapes"),
        ("..", "escapes"),
        ("/etc/passwd", "absolute"),
        ("//x", "absolute"),
        ("a\x00b", "NUL"),
        ("", "empty"),
    ],
)
def test_refused_names(name: str, why: str) -> None:
    with pytest.raises(VerificationError) as info:
        entry_components(name, DEFAULT_LIMITS, "layer sha256:ab")
    message = str(info.value)
    assert not isinstance(info.value, LimitExceededError)
    assert message.startswith("layer sha256:ab: entry ")
    assert repr(name) in message and why in message


def test_limits() -> None:
    small = Limits(path_bytes=20, name_bytes=5, path_depth=3)
    assert entry_components("abcde/b/c", small, "l") == ("abcde", "b", "c")
    for name in ("abcdef", "a/b/c/d", "a" * 21, "é" * 3):  # é is two bytes
        with pytest.raises(LimitExceededError, match="limit exceeded"):
            entry_components(name, small, "l")


def test_role_in_message() -> None:
    with pytest.raises(VerificationError, match=r"^l: entry 'h': hardlink to '\.\./x': "):
        entry_components("../x", DEFAULT_LIMITS, "l", role="entry 'h': hardlink to")


def test_xattr_policy() -> None:
    pax = {
        "path": "f",
        "SCHILY.xattr.user.mime": "text/plain",
        "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\udcff",
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.trusted.overlay.redirect": "/x",
        "SCHILY.xattr.trusted.foo": "1",
        "SCHILY.xattr.user.overlay.opaque": "y",
        "SCHILY.xattr.security.selinux": "system_u:object_r:bin_t:s0",
        "SCHILY.xattr.": "empty name",
        "LIBARCHIVE.xattr.user.x": "eQ==",
    }
    regular = dict(xattrs_to_apply(pax, regular_file=True))
    assert regular == {
        "user.mime": b"text/plain",
        "security.capability": b"\x01\x00\x00\x02\xff",
        "security.selinux": b"system_u:object_r:bin_t:s0",
    }
    other = dict(xattrs_to_apply(pax, regular_file=False))
    assert "security.capability" not in other and set(other) == {"user.mime", "security.selinux"}
