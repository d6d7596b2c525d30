"""Pushing a sigstore (cosign) signature to a registry, as ``cosign sign`` stores it.

The signatures of manifest ``sha256:HEX`` live in the same repository as the OCI image manifest
tagged ``sha256-HEX.sig`` (read by ``podrun.trust.sources.cosign_signatures`` and by
containers/image with ``use-sigstore-attachments: true``).  Each signature is one layer: the
payload as the blob, media type ``application/vnd.dev.cosign.simplesigning.v1+json``, the
base64 signature in its ``dev.cosignproject.cosign/signature`` annotation.  Adding one appends a
layer to the existing attachment (its layers are kept as they are, other attachments' too) and
rewrites the tag, as cosign's ``mutate.AppendSignatures`` does; a layer identical to one already
there (same payload digest and signature) is not added twice.

The config is the one go-containerregistry's empty image grows into when layers are appended
(what cosign pushes): empty architecture and os, ``created`` the time of signing, one history
entry (zero time) and one diff_id (the payload's digest: the layers are not compressed) per
layer.  It is rebuilt from the layers rather than read back from the old attachment.

Two signers updating one attachment at the same time can lose one signature: the tag is read,
then replaced (cosign has the same race).
"""

from __future__ import annotations

import json
import time

from podrun.errors import LimitExceededError
from podrun.image.digest import Digest
from podrun.image.reference import DockerReference
from podrun.image.registry import RegistrySource
from podrun.trust import sources

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as go-containerregistry writes history


def _json(doc: object) -> bytes:
    """Compact JSON in the given key order (Go's encoding/json of a struct)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def signature_layer(payload: bytes, signature_b64: str) -> dict[str, object]:
    """The layer descriptor of one signature."""
    return {
        "mediaType": sources.SIGSTORE_PAYLOAD,
        "size": len(payload),
        "digest": str(Digest.of_bytes(payload)),
        "annotations": {sources.SIGSTORE_ANNOTATION: signature_b64},
    }


def build_attachment(existing: object | None, payload: bytes, signature_b64: str,
                     created: str) -> tuple[bytes, bytes] | None:
    """(config, manifest) of the attachment *existing* (a parsed manifest, None for none) with
    the signature appended; None when an identical signature layer is already there.
    VerificationError for an *existing* document that is not an attachment manifest,
    LimitExceededError when the result would hold more signatures than a verifier reads."""
    what = "sigstore attachment"
    layer = signature_layer(payload, signature_b64)
    layers: list[object] = []
    if existing is not None:
        present = sources.attachment_layers(existing, what)  # checks every signature layer
        if (Digest.of_bytes(payload), len(payload), signature_b64) in present:
            return None
        if len(present) >= sources.MAX_SIGNATURES:
            raise LimitExceededError(f"{what}: already {len(present)} signatures")
        assert isinstance(existing, dict)  # attachment_layers refuses anything else
        layers = list(existing["layers"])
    layers.append(layer)
    diff_ids = [d.get("digest") if isinstance(d, dict) else None for d in layers]
    config = _json({
        "architecture": "",
        "created": created,
        "history": [{"created": ZERO_TIME} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": sources.OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": str(Digest.of_bytes(config))},
        "layers": layers,
    })
    if len(manifest) > sources.MAX_ATTACHMENT_MANIFEST:
        raise LimitExceededError(f"{what}: manifest larger than {sources.MAX_ATTACHMENT_MANIFEST} bytes")
    return config, manifest


def attach_cosign_signature(registry: RegistrySource, ref: DockerReference, manifest_digest: str,
                            payload: bytes, signature_b64: str) -> str:
    """Add the signature *signature_b64* of *payload* to the sigstore attachment of manifest
    *manifest_digest* in *ref*'s repository on *registry* (blobs first, then the manifest);
    returns the attachment's reference ``HOST/REPO:sha256-HEX.sig``."""
    tag = sources.attachment_tag(manifest_digest)
    existing = sources.read_attachment(ref, manifest_digest, registry)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    built = build_attachment(existing, payload, signature_b64, created)
    if built is not None:
        config, manifest = built
        registry.put_blob(config, Digest.of_bytes(config))
        registry.put_blob(payload, Digest.of_bytes(payload))
        registry.put_manifest(tag, manifest, sources.OCI_MANIFEST)
    return f"{ref.name}:{tag}"
