"""Reading (and writing) a manifest's signatures where containers/image keeps them.

Simple-signing signatures (``docker/docker_image_src.go``, docs/signature-protocols.md):

- When the registry's ``/v2/`` answer carries ``X-Registry-Supports-Signatures: 1``, its
  extension API: ``GET /extensions/v2/REPO/signatures/DIGEST``, a JSON list whose entries with
  ``schemaVersion`` 2 and ``type`` "atomic" carry a base64 signature (other entries are skipped).
  containers/image prefers this over any lookaside; so does podrun.
- Otherwise the lookaside of registries.d (or containers/image's built-in directory):
  ``BASE/REPO-PATH@sha256=HEX/signature-N`` for N = 1, 2, … until the first missing one (a
  missing file, HTTP 404).  Any other failure fails closed.

Sigstore signatures, with ``use-sigstore-attachments``: the OCI manifest tagged
``sha256-HEX.sig`` in the same repository (no such tag: no signatures); its layers of media
type ``application/vnd.dev.cosign.simplesigning.v1+json`` are payloads (digest-verified), the
signature is their ``dev.cosignproject.cosign/signature`` annotation.  Other layers are skipped.

Bounds against a hostile or broken server ("endless signature downloads"): each signature at
most 4 MiB (as containers/image), the extension list and the attachment manifest at most 4 MiB,
at most 128 signatures.  containers/image refuses a lookaside holding 128 or more (it gives up
before asking for a 129th) and so does podrun; more than 128 from the extension API or in an
attachment manifest are refused too.

The manifest digest is validated before it becomes part of a path or URL (CVE-2024-3727), and so
is the repository path; the lookaside base is the administrator's.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import stat
import tempfile
import urllib.parse

from podrun.errors import FetchError, LimitExceededError, NotFoundError, UsageError, VerificationError
from podrun.image.digest import Digest, read_bounded
from podrun.image.reference import DockerReference
from podrun.image.registry import RegistrySource
from podrun.trust.registriesd import Entry, builtin_lookaside
from podrun.trust.signature import COSIGN, SIMPLE, FoundSignature

MAX_SIGNATURES = 128
MAX_SIGNATURE_SIZE = 4 << 20
MAX_SIGNATURE_LIST = 4 << 20
MAX_ATTACHMENT_MANIFEST = 4 << 20
EXTENSION_HEADER = "x-registry-supports-signatures"
EXTENSION_SCHEMA_VERSION = 2
EXTENSION_TYPE = "atomic"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIGSTORE_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGSTORE_ANNOTATION = "dev.cosignproject.cosign/signature"
LOOKASIDE_SCHEMES = ("file", "http", "https")

_REPO_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def _digest(text: str) -> Digest:
    """*text* as a digest, strictly (algorithm, lower-case hex of the right length)."""
    digest = Digest.parse(text)
    if str(digest) != text:  # Digest.parse's "$" lets a trailing newline through
        raise VerificationError(f"malformed digest {text!r}")
    return digest


def _repo_path(ref: DockerReference) -> str:
    """The repository path without the host (``library/busybox``), checked component by
    component so that no ``..``, empty or odd component reaches a path."""
    parts = ref.repository.split("/")
    if not all(_REPO_COMPONENT.fullmatch(p) for p in parts):
        raise VerificationError(f"repository {ref.repository!r}: not a valid repository path for a lookaside")
    return ref.repository


def _split_base(base: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(base)
    if parts.scheme.lower() not in LOOKASIDE_SCHEMES:
        raise UsageError(f"lookaside {base!r}: unsupported scheme (file://, http:// or https://)")
    if parts.scheme.lower() == "file" and parts.netloc not in ("", "localhost"):
        raise UsageError(f"lookaside {base!r}: a file:// URL names no host (file:///path)")
    return parts


def lookaside_url(base: str, ref: DockerReference, digest: str, n: int) -> str:
    """The URL of signature *n* (from 1) of the manifest *digest* of *ref* under the lookaside
    *base*: ``BASE/REPO-PATH@ALG=HEX/signature-N``, as containers/image lays it out."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"lookaside signature index {n!r}: must be a positive integer")
    d = _digest(digest)
    parts = _split_base(base)
    path = f"{parts.path}/{_repo_path(ref)}@{d.algorithm}={d.hex}/signature-{n}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _file_path(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path)


def _read_file(path: str) -> bytes | None:
    """A lookaside file's bytes, None when it does not exist.  Only a regular file is read (a
    FIFO planted in a shared lookaside must not block the fetch)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FetchError(f"signature {path}: cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FetchError(f"signature {path}: not a regular file")
        try:
            return read_bounded(f, MAX_SIGNATURE_SIZE, f"signature {path}")
        except OSError as exc:
            raise FetchError(f"signature {path}: cannot read: {exc.strerror or exc}") from None


def _read_lookaside(url: str, registry: RegistrySource) -> bytes | None:
    if urllib.parse.urlsplit(url).scheme.lower() == "file":
        return _read_file(_file_path(url))
    status, _, body = registry.get_url(url, MAX_SIGNATURE_SIZE, f"signature {url}")
    if status == 404:
        return None
    if status != 200:
        raise FetchError(f"signature {url}: HTTP {status}")
    return body


def _from_lookaside(base: str, ref: DockerReference, digest: Digest, registry: RegistrySource) -> list[FoundSignature]:
    found: list[FoundSignature] = []
    for n in range(1, MAX_SIGNATURES + 1):
        url = lookaside_url(base, ref, str(digest), n)
        blob = _read_lookaside(url, registry)
        if blob is None:
            break
        if n == MAX_SIGNATURES:  # containers/image gives up here rather than look further
            raise LimitExceededError(
                f"lookaside {base}: {MAX_SIGNATURES} or more signatures of {digest}",
                hint=f"podman and skopeo read at most {MAX_SIGNATURES - 1} signatures per manifest from a lookaside")
        found.append(FoundSignature(SIMPLE, blob, url))
    return found


def supports_extension(registry: RegistrySource) -> bool:
    """Whether the registry's ``/v2/`` answer advertises the signature extension API."""
    what = f"docker://{registry.registry}/v2/"
    status, headers, _ = registry.get_small("/v2/", 1 << 16, what)
    if status != 200:
        raise FetchError(f"{what}: registry answered HTTP {status}")
    return headers.get(EXTENSION_HEADER, "").strip() == "1"


def _from_extension(ref: DockerReference, digest: Digest, registry: RegistrySource) -> list[FoundSignature]:
    path = f"/extensions/v2/{_repo_path(ref)}/signatures/{digest}"
    what = f"docker://{ref.name}@{digest} signatures"
    status, _, body = registry.get_small(path, MAX_SIGNATURE_LIST, what)
    if status != 200:
        raise FetchError(f"{what}: registry answered HTTP {status}")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise FetchError(f"{what}: invalid signature list: {exc}") from None
    entries = doc.get("signatures") if isinstance(doc, dict) else None
    if entries is None:
        entries = []
    if not isinstance(doc, dict) or not isinstance(entries, list):
        raise FetchError(f"{what}: invalid signature list")
    found: list[FoundSignature] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise FetchError(f"{what}: invalid signature list entry")
        if entry.get("schemaVersion") != EXTENSION_SCHEMA_VERSION or entry.get("type") != EXTENSION_TYPE:
            continue
        content = entry.get("content")
        try:
            blob = base64.b64decode(content, validate=True) if isinstance(content, str) else None
        except binascii.Error:
            blob = None
        if blob is None:
            raise FetchError(f"{what}: signature {entry.get('name')!r}: content is not base64")
        if len(found) == MAX_SIGNATURES:
            raise LimitExceededError(f"{what}: more than {MAX_SIGNATURES} signatures")
        found.append(FoundSignature(SIMPLE, blob, f"registry API {path}"))
    return found


def simple_signatures(
    ref: DockerReference, manifest_digest: str, entry: Entry, registry: RegistrySource
) -> list[FoundSignature]:
    """The simple-signing signatures of manifest *manifest_digest* of *ref*: from the
    registry's extension API when it advertises it, else from the lookaside *entry* names (or
    containers/image's built-in one)."""
    digest = _digest(manifest_digest)
    if supports_extension(registry):
        return _from_extension(ref, digest, registry)
    return _from_lookaside(entry.lookaside or builtin_lookaside(), ref, digest, registry)


def attachment_layers(doc: object, what: str) -> list[tuple[Digest, int, str | None]]:
    """(digest, size, signature annotation) of the signature layers of an attachment manifest."""
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise VerificationError(f"{what}: invalid manifest (no layers)")
    chosen: list[tuple[Digest, int, str | None]] = []
    for layer in layers:
        if not isinstance(layer, dict):
            raise VerificationError(f"{what}: invalid layer descriptor")
        if layer.get("mediaType") != SIGSTORE_PAYLOAD:
            continue  # an attestation or other attachment: not a signature
        size, digest_text, annotations = layer.get("size"), layer.get("digest"), layer.get("annotations") or {}
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or not isinstance(digest_text, str) \
                or not isinstance(annotations, dict):
            raise VerificationError(f"{what}: invalid layer descriptor")
        if size > MAX_SIGNATURE_SIZE:
            raise LimitExceededError(f"{what}: signature layer {digest_text} larger than {MAX_SIGNATURE_SIZE} bytes")
        if len(chosen) == MAX_SIGNATURES:
            raise LimitExceededError(f"{what}: more than {MAX_SIGNATURES} signatures")
        signature = annotations.get(SIGSTORE_ANNOTATION)
        chosen.append((_digest(digest_text), size, signature if isinstance(signature, str) else None))
    return chosen


def attachment_tag(manifest_digest: str) -> str:
    """The tag of the sigstore attachment of *manifest_digest*: ``ALG-HEX.sig``."""
    digest = _digest(manifest_digest)
    return f"{digest.algorithm}-{digest.hex}.sig"


def read_attachment(ref: DockerReference, manifest_digest: str, registry: RegistrySource) -> object | None:
    """The parsed sigstore attachment manifest of *manifest_digest* in *ref*'s repository (an
    OCI manifest, else VerificationError); None when there is no such tag."""
    tag = attachment_tag(manifest_digest)
    what = f"docker://{ref.name}:{tag}"
    try:
        manifest = registry.manifest_by_tag(tag, MAX_ATTACHMENT_MANIFEST)
    except NotFoundError:
        return None
    if manifest.media_type != OCI_MANIFEST:
        raise VerificationError(f"{what}: sigstore attachment is {manifest.media_type!r}, not an OCI manifest")
    try:
        doc: object = json.loads(manifest.data)
    except ValueError as exc:
        raise VerificationError(f"{what}: invalid manifest: {exc}") from None
    return doc


def cosign_signatures(ref: DockerReference, manifest_digest: str, registry: RegistrySource) -> list[FoundSignature]:
    """The sigstore signatures attached to manifest *manifest_digest* of *ref* (the
    ``ALG-HEX.sig`` tag of the same repository); none when there is no such tag."""
    what = f"docker://{ref.name}:{attachment_tag(manifest_digest)}"
    doc = read_attachment(ref, manifest_digest, registry)
    if doc is None:
        return []
    found: list[FoundSignature] = []
    for layer_digest, size, signature in attachment_layers(doc, what):
        with registry.open_blob(layer_digest, size) as stream:
            payload = read_bounded(stream, MAX_SIGNATURE_SIZE, f"{what} layer {layer_digest}")
        if Digest.of_bytes(payload, layer_digest.algorithm) != layer_digest:
            raise VerificationError(f"{what}: layer {layer_digest}: content does not match its digest")
        found.append(FoundSignature(COSIGN, payload, f"sigstore attachment {what}", cosign_signature=signature))
    return found


def write_lookaside(staging_base: str, ref: DockerReference, digest: str, blob: bytes) -> str:
    """Store *blob* as the next free ``signature-N`` of *digest* under the file:// lookaside
    *staging_base* (created as needed); returns the file written.  Atomic: the file appears
    complete or not at all, and two writers never take the same N (link(2) does not replace)."""
    if urllib.parse.urlsplit(staging_base).scheme.lower() != "file":
        raise UsageError(f"lookaside {staging_base!r}: signatures can be written to file:// lookasides only")
    if len(blob) > MAX_SIGNATURE_SIZE:
        raise LimitExceededError(f"signature of {len(blob)} bytes: larger than {MAX_SIGNATURE_SIZE} bytes")
    directory = os.path.dirname(_file_path(lookaside_url(staging_base, ref, digest, 1)))
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".signature-", dir=directory)
    except OSError as exc:
        raise FetchError(f"lookaside {directory}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        for n in range(1, MAX_SIGNATURES):
            path = _file_path(lookaside_url(staging_base, ref, digest, n))
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return path
    except OSError as exc:
        raise FetchError(f"lookaside {directory}: cannot write: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    raise LimitExceededError(f"lookaside {directory}: already {MAX_SIGNATURES - 1} signatures of {digest}")
