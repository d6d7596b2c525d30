"""Resource limits applied to untrusted image content (SECURITY-TESTS case 6)."""

from __future__ import annotations

from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

MiB = 1 << 20
GiB = 1 << 30


class Limits(Record):
    """Upper bounds for one image.  Exceeding any of them raises LimitExceededError."""

    manifest_bytes: Final[int]  # manifests, indexes and configs
    layer_bytes: Final[int]  # decompressed size of one layer
    layer_entries: Final[int]  # tar entries in one layer
    path_depth: Final[int]  # components in one entry's path
    path_bytes: Final[int]  # bytes in one entry's path
    name_bytes: Final[int]  # bytes in one path component
    layers: Final[int]  # layers in one image

    __slots__ = ("manifest_bytes", "layer_bytes", "layer_entries", "path_depth", "path_bytes", "name_bytes", "layers")

    def __init__(
        self, manifest_bytes: int = 4 * MiB,
        layer_bytes: int = 32 * GiB,
        layer_entries: int = 500_000,
        path_depth: int = 128,
        path_bytes: int = 4096,
        name_bytes: int = 255,
        layers: int = 256,
    ) -> None:
        self.manifest_bytes = manifest_bytes
        self.layer_bytes = layer_bytes
        self.layer_entries = layer_entries
        self.path_depth = path_depth
        self.path_bytes = path_bytes
        self.name_bytes = name_bytes
        self.layers = layers


DEFAULT_LIMITS = Limits()
