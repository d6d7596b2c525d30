"""Where signatures are found (podrun.trust.sources), against real tools: images pushed and
signed by skopeo into a lookaside that a registries.d directory names, Debian's docker-registry,
a sigstore attachment pushed with skopeo, an http(s) lookaside served by a local http.server and,
for the registry signature extension API (which docker-registry lacks), a small local server."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from podrun.errors import FetchError, LimitExceededError, VerificationError
from podrun.image.digest import Digest
from podrun.image.reference import DockerReference, parse_docker_name
from podrun.image.registry import RegistrySource
from podrun.trust import registriesd, sources
from podrun.trust.registriesd import Entry
from podrun.trust.signature import COSIGN, SIMPLE
from tests.fixtures import images as img
from tests.fixtures.registry import RunningRegistry, registry
from tests.fixtures.registry_client import LIMIT, busybox
from tests.fixtures.trust.servers import serving, sig_layout

__all__ = ["busybox", "registry"]  # fixtures, imported for pytest to find

SIGNER = "podrun trust test <trust@example.invalid>"
TIMEOUT = 120


# -- helpers -------------------------------------------------------------------------------------

@dataclass
class Key:
    home: Path
    fingerprint: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


@pytest.fixture(scope="module")
def key() -> Iterator[Key]:
    """A passphrase-less signing key in a throwaway GNUPGHOME; its gpg-agent is stopped after."""
    if shutil.which("gpg") is None:
        pytest.skip("needs gpg")
    home = Path(tempfile.mkdtemp(prefix="podrun-gnupg-"))
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", SIGNER, "ed25519", "sign", "never"], env)
        listing = run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env)
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        yield Key(home, fingerprint)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=TIMEOUT)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Signed:
    ref: DockerReference
    digest: str  # of the manifest as the registry serves it
    registries_d: Path
    lookaside: Path


def manifest_digest(ref: DockerReference) -> str:
    src = RegistrySource(ref, env={"HOME": "/nonexistent"})
    try:
        return str(Digest.of_bytes(src.top_manifest(LIMIT).data))
    finally:
        src.close()


@pytest.fixture(scope="module")
def signed(registry: RunningRegistry, busybox: img.BuiltImage, key: Key,
           tmp_path_factory: pytest.TempPathFactory) -> Signed:
    """busybox pushed and signed by skopeo, the signature written to the file:// lookaside that
    a registries.d directory (written here) names for the registry."""
    base = tmp_path_factory.mktemp("signed")
    lookaside, registries_d = base / "lookaside", base / "registries.d"
    registries_d.mkdir()
    (registries_d / "test.yaml").write_text(f"docker:\n  {registry.host}:\n    lookaside: file://{lookaside}\n")
    target = f"{registry.host}/test/signed:latest"
    run(["skopeo", "--insecure-policy", "--registries.d", str(registries_d), "copy", "--quiet",
         "--dest-tls-verify=false", "--sign-by", key.fingerprint,
         f"oci:{busybox.layout}:latest", f"docker://{target}"], key.env())
    ref = parse_docker_name(target)
    return Signed(ref, manifest_digest(ref), registries_d, lookaside)


def lookaside_dir(base: Path, ref: DockerReference, digest: str) -> Path:
    return base / f"{ref.repository}@{digest.replace(':', '=')}"


@contextmanager
def opened(ref: DockerReference) -> Iterator[RegistrySource]:
    src = RegistrySource(ref, env={"HOME": "/nonexistent"})
    try:
        yield src
    finally:
        src.close()


# -- lookaside (file://) ---------------------------------------------------------------------------

def test_skopeo_signature_is_found_through_registries_d(signed: Signed, key: Key, tmp_path: Path) -> None:
    entry = registriesd.load(str(signed.registries_d)).for_image(signed.ref)
    assert entry.lookaside == f"file://{signed.lookaside}"
    written = lookaside_dir(signed.lookaside, signed.ref, signed.digest) / "signature-1"
    assert written.is_file(), "skopeo wrote its signature elsewhere than the layout podrun reads"
    with opened(signed.ref) as src:
        found = sources.simple_signatures(signed.ref, signed.digest, entry, src)
    assert [(s.kind, s.blob, s.origin) for s in found] == [(SIMPLE, written.read_bytes(), f"file://{written}")]
    # and it is skopeo's signature of that manifest by that key
    manifest = tmp_path / "manifest.json"
    with opened(signed.ref) as src:
        manifest.write_bytes(src.top_manifest(LIMIT).data)
    (tmp_path / "found.sig").write_bytes(found[0].blob)
    run(["skopeo", "standalone-verify", str(manifest), str(signed.ref), key.fingerprint, str(tmp_path / "found.sig")],
        key.env())


def test_a_second_signature_added_with_write_lookaside(signed: Signed, key: Key, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    with opened(signed.ref) as src:
        manifest.write_bytes(src.top_manifest(LIMIT).data)
    extra = tmp_path / "extra.sig"
    run(["skopeo", "standalone-sign", "-o", str(extra), str(manifest), str(signed.ref), key.fingerprint], key.env())
    base = tmp_path / "copy"
    shutil.copytree(signed.lookaside, base)
    path = sources.write_lookaside(f"file://{base}", signed.ref, signed.digest, extra.read_bytes())
    assert path.endswith("/signature-2")
    # skopeo itself verifies what podrun wrote: same layout, same bytes
    run(["skopeo", "standalone-verify", str(manifest), str(signed.ref), key.fingerprint, path], key.env())
    with opened(signed.ref) as src:
        found = sources.simple_signatures(signed.ref, signed.digest, Entry(f"file://{base}", None, False), src)
    first = lookaside_dir(signed.lookaside, signed.ref, signed.digest) / "signature-1"
    assert [s.blob for s in found] == [first.read_bytes(), extra.read_bytes()]


def fill(base: Path, ref: DockerReference, digest: str, numbers: list[int], size: int = 10) -> Path:
    where = lookaside_dir(base, ref, digest)
    where.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        (where / f"signature-{n}").write_bytes(f"{n}".encode().ljust(size, b"."))
    return where


def test_a_gap_ends_the_signatures(signed: Signed, tmp_path: Path) -> None:
    fill(tmp_path, signed.ref, signed.digest, [1, 3])
    with opened(signed.ref) as src:
        found = sources.simple_signatures(signed.ref, signed.digest, Entry(f"file://{tmp_path}", None, False), src)
    assert [s.blob for s in found] == [b"1........."]


def test_signatures_of_another_digest_are_not_read(signed: Signed, tmp_path: Path) -> None:
    fill(tmp_path, signed.ref, "sha256:" + "0" * 64, [1])
    with opened(signed.ref) as src:
        assert sources.simple_signatures(signed.ref, signed.digest, Entry(f"file://{tmp_path}", None, False), src) == []


def test_at_most_127_signatures_as_containers_image(signed: Signed, tmp_path: Path) -> None:
    where = fill(tmp_path, signed.ref, signed.digest, list(range(1, 128)))
    entry = Entry(f"file://{tmp_path}", None, False)
    with opened(signed.ref) as src:
        assert len(sources.simple_signatures(signed.ref, signed.digest, entry, src)) == 127
        fill(tmp_path, signed.ref, signed.digest, [128, 129, 500])
        with pytest.raises(LimitExceededError) as exc:
            sources.simple_signatures(signed.ref, signed.digest, entry, src)
    assert "128" in str(exc.value)
    assert sorted(os.listdir(where))[:2] == ["signature-1", "signature-10"]


def test_oversized_signature_is_refused(signed: Signed, tmp_path: Path) -> None:
    where = fill(tmp_path, signed.ref, signed.digest, [1], size=sources.MAX_SIGNATURE_SIZE)
    entry = Entry(f"file://{tmp_path}", None, False)
    with opened(signed.ref) as src:
        assert len(sources.simple_signatures(signed.ref, signed.digest, entry, src)[0].blob) == 4 << 20
        (where / "signature-1").write_bytes(b"x" * ((4 << 20) + 1))
        with pytest.raises(LimitExceededError):
            sources.simple_signatures(signed.ref, signed.digest, entry, src)


def test_a_fifo_in_the_lookaside_does_not_block(signed: Signed, tmp_path: Path) -> None:
    where = fill(tmp_path, signed.ref, signed.digest, [1])
    os.mkfifo(where / "signature-2")
    with opened(signed.ref) as src, pytest.raises(FetchError) as exc:
        sources.simple_signatures(signed.ref, signed.digest, Entry(f"file://{tmp_path}", None, False), src)
    assert "not a regular file" in str(exc.value)


def test_unreadable_lookaside_fails_closed(signed: Signed, tmp_path: Path) -> None:
    (tmp_path / signed.ref.repository.split("/")[0]).write_text("a file where a directory belongs")
    with opened(signed.ref) as src, pytest.raises(FetchError):
        sources.simple_signatures(signed.ref, signed.digest, Entry(f"file://{tmp_path}", None, False), src)


# -- lookaside (http://) --------------------------------------------------------------------------

class LookasideHandler(SimpleHTTPRequestHandler):
    fail_path: str | None = None

    def do_GET(self) -> None:
        if self.fail_path and self.path.endswith(self.fail_path):
            self.send_error(500)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_lookaside(signed: Signed, tmp_path: Path) -> None:
    shutil.copytree(signed.lookaside, tmp_path / "sigs")
    fill(tmp_path / "sigs", signed.ref, signed.digest, [2, 4])  # signature-3 missing: 404 ends it
    skopeo_sig = (lookaside_dir(signed.lookaside, signed.ref, signed.digest) / "signature-1").read_bytes()
    handler: type[LookasideHandler] = type("H", (LookasideHandler,), {})
    with serving(partial(handler, directory=str(tmp_path))) as host, opened(signed.ref) as src:
        entry = Entry(f"http://{host}/sigs", None, False)
        found = sources.simple_signatures(signed.ref, signed.digest, entry, src)
        assert [s.blob for s in found] == [skopeo_sig, b"2........."]
        assert found[0].origin == f"http://{host}/sigs/test/signed@{signed.digest.replace(':', '=')}/signature-1"
        handler.fail_path = "/signature-2"  # any answer but 200 and 404 fails closed
        with pytest.raises(FetchError) as exc:
            sources.simple_signatures(signed.ref, signed.digest, entry, src)
        assert "HTTP 500" in str(exc.value)
        handler.fail_path = None
        where = lookaside_dir(tmp_path / "sigs", signed.ref, signed.digest)
        (where / "signature-2").write_bytes(b"y" * ((4 << 20) + 1))
        with pytest.raises(LimitExceededError):
            sources.simple_signatures(signed.ref, signed.digest, entry, src)


# -- the registry's signature extension API ------------------------------------------------------

EXT_DIGEST = "sha256:" + hashlib.sha256(b"some manifest").hexdigest()


def extension_handler(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = routes.get(self.path, (404, {}, b'{"errors":[{"code":"NOT_FOUND"}]}'))
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def test_extension_api_is_preferred_to_the_lookaside(tmp_path: Path) -> None:
    listing = {"signatures": [
        {"schemaVersion": 2, "type": "atomic", "name": f"{EXT_DIGEST}@one", "content": base64.b64encode(b"one").decode()},
        {"schemaVersion": 1, "type": "atomic", "name": "old", "content": base64.b64encode(b"old").decode()},
        {"schemaVersion": 2, "type": "other", "name": "x", "content": base64.b64encode(b"other").decode()},
        {"schemaVersion": 2, "type": "atomic", "name": f"{EXT_DIGEST}@two", "content": base64.b64encode(b"two").decode()},
    ]}
    routes = {
        "/v2/": (200, {"X-Registry-Supports-Signatures": "1"}, b"{}"),
        f"/extensions/v2/test/app/signatures/{EXT_DIGEST}": (200, {}, json.dumps(listing).encode()),
    }
    with serving(extension_handler(routes)) as host:
        ref = parse_docker_name(f"{host}/test/app:1")
        fill(tmp_path, ref, EXT_DIGEST, [1])  # a lookaside is configured, yet the API wins
        entry = Entry(f"file://{tmp_path}", None, False)
        with opened(ref) as src:
            found = sources.simple_signatures(ref, EXT_DIGEST, entry, src)
            assert [(s.kind, s.blob) for s in found] == [(SIMPLE, b"one"), (SIMPLE, b"two")]
            routes[f"/extensions/v2/test/app/signatures/{EXT_DIGEST}"] = (200, {}, b'{"signatures": [{"schemaVersion": 2, "type": "atomic", "content": "%%%"}]}')
            with pytest.raises(FetchError):
                sources.simple_signatures(ref, EXT_DIGEST, entry, src)
            del routes[f"/extensions/v2/test/app/signatures/{EXT_DIGEST}"]  # 404: fails closed as c/image
            with pytest.raises(FetchError):
                sources.simple_signatures(ref, EXT_DIGEST, entry, src)
            many = {"signatures": [{"schemaVersion": 2, "type": "atomic", "content": "eA=="}] * 129}
            routes[f"/extensions/v2/test/app/signatures/{EXT_DIGEST}"] = (200, {}, json.dumps(many).encode())
            with pytest.raises(LimitExceededError):
                sources.simple_signatures(ref, EXT_DIGEST, entry, src)
        routes["/v2/"] = (200, {}, b"{}")  # not advertised: the lookaside
        with opened(ref) as src:
            assert [s.blob for s in sources.simple_signatures(ref, EXT_DIGEST, entry, src)] == [b"1........."]


# -- sigstore attachments --------------------------------------------------------------------------

def test_sigstore_attachment_pushed_with_skopeo(registry: RunningRegistry, busybox: img.BuiltImage,
                                               tmp_path: Path) -> None:
    registry.push(busybox.layout, "latest", "test/cosigned:latest")
    ref = parse_docker_name(f"{registry.host}/test/cosigned:latest")
    digest = manifest_digest(ref)
    with opened(ref) as src:
        assert sources.cosign_signatures(ref, digest, src) == []  # no .sig tag: none
    payload = json.dumps({"critical": {"identity": {"docker-reference": str(ref)},
                                       "image": {"docker-manifest-digest": digest},
                                       "type": "cosign container image signature"}, "optional": None}).encode()
    signature = base64.b64encode(b"not checked here").decode()
    sources_layers = [
        (sources.SIGSTORE_PAYLOAD, payload, {sources.SIGSTORE_ANNOTATION: signature}),
        ("application/vnd.dsse.envelope.v1+json", b'{"payloadType": "attestation"}', {}),  # skipped
        (sources.SIGSTORE_PAYLOAD, payload + b" ", {}),  # no signature annotation: found, unsigned
    ]
    sig_layout(tmp_path / "sig", sources_layers)
    registry.push(tmp_path / "sig", "sig", f"test/cosigned:{digest.replace(':', '-')}.sig")
    with opened(ref) as src:
        found = sources.cosign_signatures(ref, digest, src)
    assert [(s.kind, s.blob, s.cosign_signature) for s in found] == [
        (COSIGN, payload, signature), (COSIGN, payload + b" ", None)]
    assert found[0].origin.startswith("sigstore attachment")


def test_sigstore_attachment_checks(tmp_path: Path) -> None:
    payload = b'{"critical": {}}'
    good = hashlib.sha256(payload).hexdigest()
    tag = EXT_DIGEST.replace(":", "-") + ".sig"

    def manifest(size: int, media_type: str = sources.SIGSTORE_PAYLOAD) -> bytes:
        return json.dumps({"schemaVersion": 2, "mediaType": img.OCI_MANIFEST, "config": {},
                           "layers": [{"mediaType": media_type, "digest": f"sha256:{good}", "size": size,
                                       "annotations": {sources.SIGSTORE_ANNOTATION: "c2ln"}}]}).encode()

    routes = {
        "/v2/": (200, {}, b"{}"),
        f"/v2/test/app/manifests/{tag}": (200, {"Content-Type": img.OCI_MANIFEST}, manifest(len(payload))),
        f"/v2/test/app/blobs/sha256:{good}": (200, {}, b'{"critical": {"x"}}'),  # not what the digest says
    }
    with serving(extension_handler(routes)) as host:
        ref = parse_docker_name(f"{host}/test/app:1")
        with opened(ref) as src:
            with pytest.raises(VerificationError) as exc:
                sources.cosign_signatures(ref, EXT_DIGEST, src)
            assert "does not match" in str(exc.value)
            routes[f"/v2/test/app/blobs/sha256:{good}"] = (200, {}, payload)
            assert [s.blob for s in sources.cosign_signatures(ref, EXT_DIGEST, src)] == [payload]
            routes[f"/v2/test/app/manifests/{tag}"] = (200, {"Content-Type": img.OCI_MANIFEST},
                                                       manifest((4 << 20) + 1))
            with pytest.raises(LimitExceededError):
                sources.cosign_signatures(ref, EXT_DIGEST, src)
            routes[f"/v2/test/app/manifests/{tag}"] = (
                200, {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}, manifest(len(payload)))
            with pytest.raises(VerificationError):
                sources.cosign_signatures(ref, EXT_DIGEST, src)
            routes[f"/v2/test/app/manifests/{tag}"] = (500, {}, b"{}")
            with pytest.raises(FetchError):
                sources.cosign_signatures(ref, EXT_DIGEST, src)
