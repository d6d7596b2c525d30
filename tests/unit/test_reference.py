"""Reference parsing (containers-transports(5) syntax) and digest validation."""

from __future__ import annotations

import io
from typing import BinaryIO, cast

import pytest

from podrun.errors import UsageError, VerificationError
from podrun.image.digest import Digest, copy_verified, read_bounded
from podrun.image.reference import parse_docker_name, parse_reference
from podrun.image.store import candidate_names, normalize_name

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("user/app:1.0", "docker.io", "user/app", "1.0", None),
        ("127.0.0.1:5000/demo", "127.0.0.1:5000", "demo", "latest", None),
        ("localhost/a/b:t", "localhost", "a/b", "t", None),
        (f"quay.io/x/y@sha256:{HEX}", "quay.io", "x/y", None, f"sha256:{HEX}"),
        (f"quay.io/x/y:v@sha256:{HEX}", "quay.io", "x/y", "v", f"sha256:{HEX}"),
        ("[::1]:5000/demo:x", "[::1]:5000", "demo", "x", None),
    ],
)
def test_docker_names(text: str, registry: str, repo: str, tag: str | None, digest: str | None) -> None:
    ref = parse_docker_name(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repo, tag)
    assert (str(ref.digest) if ref.digest else None) == digest


@pytest.mark.parametrize("bad", ["", "UPPER/case", "a//b", "x:bad tag", "x@sha256:zz", "x@md5:" + "a" * 32, "a/../b"])
def test_bad_docker_names(bad: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_docker_name(bad)
    assert repr(bad) in str(exc.value)


def test_transports() -> None:
    assert parse_reference("docker://127.0.0.1:5000/x:1").docker is not None
    r = parse_reference("oci:/tmp/layout:v1")
    assert (r.transport, r.path, r.ref) == ("oci", "/tmp/layout", "v1")
    r = parse_reference("oci-archive:/tmp/a.tar")
    assert (r.transport, r.path, r.ref) == ("oci-archive", "/tmp/a.tar", None)
    r = parse_reference("docker-archive:/tmp/a.tar:busybox:latest")
    assert (r.transport, r.path, r.ref) == ("docker-archive", "/tmp/a.tar", "busybox:latest")
    assert parse_reference("busybox").transport == "store"
    with pytest.raises(UsageError, match="unknown transport"):
        parse_reference("ftp://x/y")
    with pytest.raises(UsageError, match="missing path"):
        parse_reference("oci:")


def test_store_names() -> None:
    assert normalize_name("demo") == "localhost/demo:latest"
    assert normalize_name("demo:v1") == "localhost/demo:v1"
    assert normalize_name("127.0.0.1:5000/x:y") == "127.0.0.1:5000/x:y"
    assert candidate_names("demo") == ["docker.io/library/demo:latest", "localhost/demo:latest"]


@pytest.mark.parametrize(
    "bad",
    ["sha256:" + "A" * 64, "sha256:abc", "md5:" + "a" * 32, "sha256", ":" + HEX, "sha256:" + "g" * 64, "sha512:" + HEX],
)
def test_bad_digests(bad: str) -> None:
    with pytest.raises(VerificationError):
        Digest.parse(bad)


def test_copy_verified_checks_digest_and_size() -> None:
    data = b"hello world"
    good = Digest.of_bytes(data)
    out = io.BytesIO()
    assert copy_verified(io.BytesIO(data), out, good, len(data), "blob") == len(data)
    assert out.getvalue() == data
    with pytest.raises(VerificationError, match="does not match digest"):
        copy_verified(io.BytesIO(b"hello worle"), io.BytesIO(), good, len(data), "blob")
    with pytest.raises(VerificationError, match="more data"):
        copy_verified(io.BytesIO(data + b"x" * 100), io.BytesIO(), good, len(data), "blob")
    with pytest.raises(VerificationError, match="size"):
        copy_verified(io.BytesIO(data[:-1]), io.BytesIO(), good, len(data), "blob")


def test_copy_verified_stops_reading_at_size_plus_one() -> None:
    class Endless(io.RawIOBase):
        read_total = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            n = len(b)
            b[:n] = b"x" * n
            Endless.read_total += n
            return n

    with pytest.raises(VerificationError):
        copy_verified(cast(BinaryIO, Endless()), io.BytesIO(), Digest.of_bytes(b"x"), 10, "blob")
    assert Endless.read_total <= 11


def test_read_bounded() -> None:
    assert read_bounded(io.BytesIO(b"abc"), 3, "m") == b"abc"
    with pytest.raises(VerificationError, match="limit exceeded"):
        read_bounded(io.BytesIO(b"abcd"), 3, "m")
