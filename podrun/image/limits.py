"""Resource limits applied to untrusted image content (SECURITY-TESTS case 6)."""

from __future__ import annotations

from podrun.lean import dataclass

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Upper bounds for one image.  Exceeding any of them raises LimitExceededError."""

    manifest_bytes: int = 4 * MiB  # manifests, indexes and configs
    layer_bytes: int = 32 * GiB  # decompressed size of one layer
    layer_entries: int = 500_000  # tar entries in one layer
    path_depth: int = 128  # components in one entry's path
    path_bytes: int = 4096  # bytes in one entry's path
    name_bytes: int = 255  # bytes in one path component
    layers: int = 256  # layers in one image


DEFAULT_LIMITS = Limits()
