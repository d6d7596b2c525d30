"""The benchmark image: a deterministic, 4-layer OCI image built with the test image builder.

Layer 1 is the busybox root filesystem of the test suite; layers 2–4 hold "realistic" content:
large partly-compressible files (random bytes mixed with text and record tables, so gzip gets
roughly 2–3x, as on real binaries and data files) and thousands of small 1–20 KB files in nested
directories (as in /usr/share or a language runtime's library tree).  Everything comes from a
seeded RNG, so two builds are byte-identical; the built layout is cached under the work dir,
keyed by :data:`IMAGE_VERSION` and the profile name, so reruns skip the build.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import shutil
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.fixtures.images import Entry, busybox_entries, directory, file, symlink, tar_bytes, write_oci_layout

# Bump whenever the recipe below changes, so cached layouts of the old recipe are not reused.
IMAGE_VERSION = "1"
IMAGE_TAG = "bench"
SEED = 20260101

_SEGMENT = 16 * 1024
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_TEMPLATES = (
    "{} = {}\n",
    "    {}({}, {});\n",
    "# {} {} {} {}\n",
    '<{} name="{}">{}</{}>\n',
    "{} {} {} {} {} {} {}.\n",
)


@dataclass(frozen=True)
class LayerSpec:
    """What goes into one generated layer (layers 2–4)."""

    prefix: str
    big_files: int
    big_min: int
    big_max: int
    small_files: int
    small_min: int = 1024
    small_max: int = 20 * 1024


@dataclass(frozen=True)
class ImageProfile:
    """A named size of the benchmark image."""

    name: str
    layers: tuple[LayerSpec, LayerSpec, LayerSpec]


MB = 1_000_000

PROFILES: dict[str, ImageProfile] = {
    # ~200 MB unpacked: 80 MB of big files, ~63 MB of 6,000 small files, 25 MB + ~26 MB mixed.
    "full": ImageProfile("full", (
        LayerSpec("usr/lib/bench", big_files=8, big_min=6 * MB, big_max=14 * MB, small_files=0),
        LayerSpec("usr/share/bench", big_files=0, big_min=0, big_max=0, small_files=6000),
        LayerSpec("opt/app", big_files=4, big_min=5 * MB, big_max=8 * MB, small_files=2500),
    )),
    # ~7 MB unpacked (2 MB of it busybox): for the smoke test.
    "smoke": ImageProfile("smoke", (
        LayerSpec("usr/lib/bench", big_files=2, big_min=MB // 2, big_max=MB, small_files=0),
        LayerSpec("usr/share/bench", big_files=0, big_min=0, big_max=0, small_files=150),
        LayerSpec("opt/app", big_files=1, big_min=MB // 2, big_max=MB, small_files=100),
    )),
}


@dataclass(frozen=True)
class ImageInfo:
    """The cached layout and the sizes the report states."""

    layout: Path
    tag: str
    profile: str
    version: str
    layer_tar_sizes: list[int]
    layer_blob_sizes: list[int]
    regular_files: int

    @property
    def unpacked_bytes(self) -> int:
        """Sum of the uncompressed layer sizes: the "unpacked data" throughput is measured against."""
        return sum(self.layer_tar_sizes)

    @property
    def compressed_bytes(self) -> int:
        """Sum of the gzip layer blob sizes: what goes over the wire."""
        return sum(self.layer_blob_sizes)

    def to_json(self) -> dict[str, object]:
        """The image facts for results.json."""
        d = asdict(self)
        d["layout"] = str(self.layout)
        d["unpacked_bytes"] = self.unpacked_bytes
        d["compressed_bytes"] = self.compressed_bytes
        return d


class _Content:
    """Seeded generator of file contents."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = ["".join(self.rng.choices(_LETTERS, k=self.rng.randint(2, 9))) for _ in range(400)]
        # Zipf-like word frequencies, as in real text: a few words very common, most rare.
        self.cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(self.words))))
        self.pool = self._text(4 * MB)

    def _text(self, size: int) -> bytes:
        lines: list[str] = []
        n = 0
        while n < size:
            tpl = self.rng.choice(_TEMPLATES)
            line = tpl.format(*self.rng.choices(self.words, cum_weights=self.cum, k=tpl.count("{}")))
            lines.append(line)
            n += len(line)
        return "".join(lines).encode()

    def text(self, size: int) -> bytes:
        """Text-like bytes (source, config, docs): gzip -1 gets ~2.8x."""
        start = self.rng.randrange(len(self.pool) - size) if size < len(self.pool) else 0
        return self.pool[start:start + size]

    def _records(self, size: int) -> bytes:
        base = self.rng.randrange(1 << 20)
        word = self.rng.choice(self.words)
        rows = (f"{word}[{base + i:08x}] flags=0x{(i * 7) & 0xFF:02x} off={i * 64}\n" for i in range(size // 30 + 1))
        return "".join(rows).encode()[:size]

    def blob(self, size: int) -> bytes:
        """Binary-like bytes: 16 KiB segments, 15% random, 45% text, 40% record tables (~2.5x with gzip)."""
        out = bytearray()
        while len(out) < size:
            x = self.rng.random()
            if x < 0.15:
                out += self.rng.randbytes(_SEGMENT)
            elif x < 0.60:
                out += self.text(_SEGMENT)
            else:
                out += self._records(_SEGMENT)
        return bytes(out[:size])


def _layer_entries(spec: LayerSpec, content: _Content) -> list[Entry]:
    rng = content.rng
    entries: list[Entry] = []
    parts = spec.prefix.split("/")
    entries += [directory("/".join(parts[:i])) for i in range(1, len(parts) + 1)]
    for i in range(spec.big_files):
        size = rng.randint(spec.big_min, spec.big_max)
        entries.append(file(f"{spec.prefix}/lib{content.words[i]}-{i}.so", content.blob(size), 0o755))
    made_dirs: set[str] = set()
    for i in range(spec.small_files):
        # Nested dirs 1–3 deep, ~30 names per level: a few hundred dirs, tens of files in each.
        depth = rng.randint(1, 3)
        sub = "/".join(f"d{rng.randrange(30 if lvl == 0 else 8)}" for lvl in range(depth))
        dpath = f"{spec.prefix}/{sub}"
        segs = dpath.split("/")
        for j in range(len(parts) + 1, len(segs) + 1):
            d = "/".join(segs[:j])
            if d not in made_dirs:
                made_dirs.add(d)
                entries.append(directory(d))
        size = rng.randint(spec.small_min, spec.small_max)
        # One small file in ten is binary-like (icons, compiled bytecode), the rest text.
        data = content.blob(size) if rng.random() < 0.1 else content.text(size)
        entries.append(file(f"{dpath}/f{i}.txt", data))
        if i % 200 == 0:
            entries.append(symlink(f"{dpath}/link{i}", f"f{i}.txt"))
    return entries


def _count_files(raw: bytes) -> int:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return sum(1 for m in tf if m.isreg())


def build_image(work: Path, profile_name: str) -> ImageInfo:
    """Return the cached OCI layout of *profile_name* under *work*, building it first if missing."""
    profile = PROFILES[profile_name]
    final = work / "images" / f"{profile.name}-v{IMAGE_VERSION}"
    meta_path = final / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return ImageInfo(final / "layout", IMAGE_TAG, profile.name, IMAGE_VERSION,
                         list(meta["layer_tar_sizes"]), list(meta["layer_blob_sizes"]), int(meta["regular_files"]))
    # Build next to the final place and rename, so an interrupted build is never taken as cached.
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    content = _Content(SEED)
    raws = [tar_bytes(busybox_entries())]
    raws += [tar_bytes(_layer_entries(spec, content)) for spec in profile.layers]
    built = write_oci_layout(tmp / "layout", raws, ref=IMAGE_TAG, compression="gzip")
    blob_sizes = [(tmp / "layout" / "blobs" / "sha256" / d.split(":")[1]).stat().st_size for d in built.layer_digests]
    meta = {
        "layer_tar_sizes": [len(r) for r in raws],
        "layer_blob_sizes": blob_sizes,
        "regular_files": sum(_count_files(r) for r in raws),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return build_image(work, profile_name)
