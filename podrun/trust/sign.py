"""``podrun image sign``: a simple signature (OpenPGP, as ``skopeo copy --sign-by`` and
``podman image sign`` make it) for a stored image, written into a file:// lookaside; or a
sigstore signature (a PEM private key, as ``skopeo copy --sign-by-sigstore-private-key``
signs), pushed to the registry as the image's ``sha256-HEX.sig`` attachment (podrun.trust.attach).

The signature vouches for the image's manifest digest (its ID: the exact bytes a registry will
serve after ``skopeo copy`` of ``podrun image export``'s archive) under *identity*, the docker
reference it will be fetched as.  Where it goes: ``--lookaside DIR`` (a directory or file:// URL),
else the ``lookaside-staging`` (or ``lookaside``) registries.d gives for *identity*.
"""

from __future__ import annotations

import os
import urllib.parse

from podrun.errors import UsageError
from podrun.image.reference import DockerReference, parse_docker_name
from podrun.image.store import Store
from podrun.trust import openpgp, registriesd, sources


def lookaside_base(lookaside: str | None, identity: str, registries_d: str | None) -> str:
    """The file:// base to write into: *lookaside* (a path or URL), else registries.d's;
    UsageError when there is none or it is not a file:// URL."""
    if lookaside:
        base = lookaside if "://" in lookaside else "file://" + os.path.abspath(lookaside)
    else:
        ref = parse_docker_name(identity)
        entry = registriesd.load(registriesd.registries_d_dir(registries_d)).for_image(ref)
        if entry.lookaside_staging is None:
            raise UsageError(f"no lookaside for {identity} in registries.d",
                             hint="give --lookaside DIR, or set lookaside-staging for it in registries.d")
        base = entry.lookaside_staging
    if urllib.parse.urlsplit(base).scheme.lower() != "file":
        raise UsageError(f"lookaside {base!r}: signatures can be written to file:// lookasides only")
    return base


def _identity(name: str) -> tuple[DockerReference, str]:
    """The parsed identity *name* and the docker reference a signature vouches for (a name
    without a tag vouches for ``:latest``, as skopeo signs it)."""
    try:
        ref = parse_docker_name(name)
    except (UsageError, ValueError) as exc:
        raise UsageError(f"invalid --identity {name!r}: {exc}") from None
    return ref, f"{ref.name}:{ref.tag}" if ref.tag else str(ref)


def sign_image(store: Store, image: str, identity: str | None, sign_by: str, lookaside: str | None,
               registries_d: str | None, passphrase_file: str | None = None) -> str:
    """Sign the stored *image* as *identity* (default: *image* as a name) with the gpg key
    *sign_by*; returns the signature file written."""
    record = store.image(store.resolve(image))
    name = identity or image
    ref, reference = _identity(name)
    base = lookaside_base(lookaside, name, registries_d)  # known before gpg is asked to sign
    blob = openpgp.sign(openpgp.payload(str(record.id), reference), sign_by, passphrase_file=passphrase_file)
    return sources.write_lookaside(base, ref, str(record.id), blob)


def _read_secret(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


def sign_image_sigstore(store: Store, image: str, identity: str | None, key_file: str, to: str,
                        insecure: frozenset[str], passphrase_file: str | None = None) -> str:
    """Sign the stored *image* as *identity* (default: *to* when it names a tag, else *image*)
    with the PEM private key in *key_file* and push the signature to the sigstore attachment
    of the image in *to*'s repository (``docker://HOST/REPO``, where the image must already
    be); returns the attachment's reference."""
    from podrun.image.reference import parse_reference
    from podrun.image.registry import RegistrySource
    from podrun.trust import attach, cosign

    target = parse_reference(to)
    if target.transport != "docker" or target.docker is None or not to.startswith("docker://"):
        raise UsageError(f"--to {to!r}: name the registry repository as docker://HOST/REPO")
    record = store.image(store.resolve(image))
    digest = str(record.id)
    _, reference = _identity(identity or (to[len("docker://"):] if target.docker.tag else image))
    password = None
    if passphrase_file is not None:  # its first line, as containers/common reads passphrase files
        password = _read_secret(passphrase_file, "passphrase file").split(b"\n", 1)[0].rstrip(b"\r")
    signature = cosign.sign(payload := cosign.payload(digest, reference),
                            _read_secret(key_file, "sigstore private key"), password)
    registry = RegistrySource(target.docker, insecure=insecure)
    try:
        registry.manifest_by_digest(record.id, sources.MAX_ATTACHMENT_MANIFEST)  # NotFoundError: not pushed
        return attach.attach_cosign_signature(registry, target.docker, digest, payload, signature)
    finally:
        registry.close()
