"""``podrun image sign``: a simple signature (OpenPGP, as ``skopeo copy --sign-by`` and
``podman image sign`` make it) for a stored image, written into a file:// lookaside.

The signature vouches for the image's manifest digest (its ID: the exact bytes a registry will
serve after ``skopeo copy`` of ``podrun image export``'s archive) under *identity*, the docker
reference it will be fetched as.  Where it goes: ``--lookaside DIR`` (a directory or file:// URL),
else the ``lookaside-staging`` (or ``lookaside``) registries.d gives for *identity*.
"""

from __future__ import annotations

import os
import urllib.parse

from podrun.errors import UsageError
from podrun.image.reference import parse_docker_name
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


def sign_image(store: Store, image: str, identity: str | None, sign_by: str, lookaside: str | None,
               registries_d: str | None, passphrase_file: str | None = None) -> str:
    """Sign the stored *image* as *identity* (default: *image* as a name) with the gpg key
    *sign_by*; returns the signature file written."""
    record = store.image(store.resolve(image))
    name = identity or image
    try:
        ref = parse_docker_name(name)
    except (UsageError, ValueError) as exc:
        raise UsageError(f"invalid --identity {name!r}: {exc}") from None
    if ref.tag is None and ref.digest is None:
        raise UsageError(f"identity {name!r}: name a tag (HOST/REPO:TAG), as the signature vouches for one")
    reference = f"{ref.name}:{ref.tag}" if ref.tag else str(ref)
    base = lookaside_base(lookaside, name, registries_d)  # known before gpg is asked to sign
    blob = openpgp.sign(openpgp.payload(str(record.id), reference), sign_by, passphrase_file=passphrase_file)
    return sources.write_lookaside(base, ref, str(record.id), blob)
