"""Scenario ``pull``: registry → unpacked layers on disk, podrun vs podman vs skopeo + umoci.

Each tool starts from an empty store and ends with every layer of the image unpacked on local
disk: podrun in its store's layer trees, podman in containers/storage (overlay diff dirs),
skopeo + umoci as an OCI layout plus a runtime bundle's rootfs.  Runs are interleaved so drift on
the machine (page cache, disk writeback, other load) spreads evenly over the tools; before each
timed run the previous tool's dirty pages are flushed (``sync``, untimed) so no tool pays for
another's writeback.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.context import BenchContext
from bench.host import remove_tree, restore_host_paths, tree_bytes, wait_for_quiet
from bench.image import build_image
from bench.report import ScenarioResult, ToolResult
from podrun.image.reference import parse_docker_name
from tests.fixtures.registry import RunningRegistry, start_registry
from tests.fixtures.trust.gpg import GpgHome

DESCRIPTION = (
    "Pull one image from a local registry (Debian's docker-registry on 127.0.0.1, plain HTTP) into an "
    "empty store and unpack all its layers to disk. Wall time of the whole command(s), from start to exit."
)
TIMEOUT = 1800.0
DEFAULT_RUNS = 3
QUICK_RUNS = 1


class ToolFailed(Exception):
    """A tool's command failed; the message says which and why."""


def _tail(text: bytes, limit: int = 600) -> str:
    s = text.decode(errors="replace").strip()
    return s[-limit:].replace("\n", " | ")


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Run *argv* and return its wall time in seconds; raise ToolFailed if it fails."""
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolFailed(f"{argv[0]}: {exc}") from exc
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise ToolFailed(f"`{' '.join(argv[:4])} …` exited {proc.returncode}: {_tail(proc.stderr or proc.stdout)}")
    return elapsed


class Tool(Protocol):
    """One contender: how to pull into a scratch dir and how to clean up after it."""

    name: str
    notes: list[str]

    @property
    def command(self) -> str:
        """The command line as the report shows it."""
        ...

    def run_once(self, ref: str, scratch: Path) -> dict[str, float]:
        """Pull *ref* into *scratch* (empty); return each phase's wall time."""
        ...

    def clean(self, scratch: Path) -> None:
        """Remove everything the run made, including mounts (untimed)."""
        ...


@dataclass
class Podrun:
    """``podrun --dir DIR fetch docker://…`` through the venv's console script, under the
    signature policy *trust* names (``--signature-policy``, ``--registries.d``)."""

    binary: Path
    env: dict[str, str]
    trust: list[str]
    name: str = "podrun"
    command: str = "podrun --dir TMP fetch docker://HOST/bench:TAG"

    def __post_init__(self) -> None:
        self.notes: list[str] = []

    def run_once(self, ref: str, scratch: Path) -> dict[str, float]:
        """Fetch *ref* into a fresh data dir below *scratch*."""
        return {"fetch": timed([str(self.binary), "--dir", str(scratch / "data"), *self.trust, "fetch",
                                f"docker://{ref}"], self.env)}

    def clean(self, scratch: Path) -> None:
        """Delete the data dir."""
        remove_tree(scratch)


@dataclass
class Podman:
    """``podman --root … --runroot … pull``, overlay first, vfs if overlay cannot work here."""

    conf_dir: Path
    env: dict[str, str]
    name: str = "podman"
    driver: str = "overlay"

    def __post_init__(self) -> None:
        self.notes: list[str] = []
        self.succeeded = False
        # PID 1 is not systemd here: podman must not try systemd cgroups or journald events.
        # Its temp dirs go below the bench's scratch dir so nothing is left in /run or /var/tmp.
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "tmp").mkdir(exist_ok=True)
        self.conf = self.conf_dir / "containers.conf"
        self.conf.write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
            f'tmp_dir = "{self.conf_dir / "tmp"}"\n'
            f'image_copy_tmp_dir = "{self.conf_dir / "tmp"}"\n'
        )
        self.env = dict(self.env, CONTAINERS_CONF=str(self.conf))

    @property
    def command(self) -> str:
        """The command line as the report shows it."""
        return (f"podman --root TMP/root --runroot TMP/runroot --storage-driver {self.driver} "
                "pull --tls-verify=false docker://HOST/bench:TAG  (CONTAINERS_CONF: cgroupfs, no events)")

    def _base(self, scratch: Path) -> list[str]:
        return ["podman", "--root", str(scratch / "root"), "--runroot", str(scratch / "runroot"),
                "--storage-driver", self.driver]

    def run_once(self, ref: str, scratch: Path) -> dict[str, float]:
        """Pull *ref*; on the first failure of overlay before any success, fall back to vfs once."""
        argv_tail = ["pull", "--tls-verify=false", f"docker://{ref}"]
        try:
            secs = timed([*self._base(scratch), *argv_tail], self.env)
        except ToolFailed as exc:
            if self.succeeded or self.driver != "overlay":
                raise
            self.notes.append(f"overlay storage driver failed ({exc}); retried with --storage-driver vfs")
            self.clean(scratch)
            scratch.mkdir()
            self.driver = "vfs"
            secs = timed([*self._base(scratch), *argv_tail], self.env)
        if not self.succeeded:
            self.succeeded = True
            self._note_graph_status(scratch)
        return {"pull": secs}

    def _note_graph_status(self, scratch: Path) -> None:
        proc = subprocess.run([*self._base(scratch), "info", "--format", "{{json .Store.GraphStatus}}"],
                              capture_output=True, text=True, env=self.env)
        if proc.returncode == 0 and proc.stdout.strip():
            self.notes.append(f"storage driver {self.driver}, graph status {proc.stdout.strip()}")

    def clean(self, scratch: Path) -> None:
        """``podman system reset -f`` on the scratch store, then unmount and delete what is left."""
        if (scratch / "root").exists():
            subprocess.run([*self._base(scratch), "system", "reset", "-f"], capture_output=True, env=self.env,
                           timeout=300)
        remove_tree(scratch)


@dataclass
class SkopeoUmoci:
    """``skopeo copy docker://… oci:…`` then ``umoci unpack``: timed together and separately."""

    env: dict[str, str]
    name: str = "skopeo+umoci"
    command: str = ("skopeo copy --src-tls-verify=false docker://HOST/bench:TAG oci:TMP/layout:TAG && "
                    "umoci unpack --image TMP/layout:TAG TMP/bundle")

    def __post_init__(self) -> None:
        self.notes: list[str] = []

    def run_once(self, ref: str, scratch: Path) -> dict[str, float]:
        """Copy *ref* to an OCI layout, then unpack it into a bundle."""
        tag = ref.rsplit(":", 1)[1]
        layout = f"{scratch / 'layout'}:{tag}"
        copy = timed(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}"], self.env)
        unpack = timed(["umoci", "unpack", "--image", layout, str(scratch / "bundle")], self.env)
        return {"skopeo copy": copy, "umoci unpack": unpack}

    def clean(self, scratch: Path) -> None:
        """Delete the layout and the bundle."""
        remove_tree(scratch)


# The test suite's registry fixture, as a context manager: a throwaway Debian docker-registry on
# 127.0.0.1, a random port and temp storage, stopped and removed on every exit path.
running_registry = contextlib.contextmanager(start_registry)


def _push(registry: RunningRegistry, layout: Path, tag: str) -> str:
    """Push the layout's *tag* as ``bench:TAG``; return the ``HOST:PORT/bench:TAG`` reference."""
    registry.push(layout, tag, f"bench:{tag}")
    return f"{registry.host}/bench:{tag}"


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary dir for every store of the run (same filesystem for all tools), removed on exit."""
    base = Path(tempfile.mkdtemp(prefix="podrun-bench-"))
    try:
        yield base
    finally:
        remove_tree(base)


def _signed(base: Path, registry: RunningRegistry, ref: str, gpg: GpgHome) -> list[str]:
    """Sign the pushed image (simple signing, a file:// lookaside); the podrun options of a
    policy that requires that key for it."""
    from podrun.trust import openpgp, sources

    digest = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{ref}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    key = gpg.generate("podrun bench")
    (base / "key.gpg").write_bytes(gpg.export(key))
    docker = parse_docker_name(ref)
    sources.write_lookaside(f"file://{base}/sigs", docker, digest,
                            gpg.sign(openpgp.payload(digest, f"{docker.name}:{docker.tag}"), key))
    (base / "registries.d").mkdir()
    (base / "registries.d" / "bench.yaml").write_text(
        f"docker:\n  {registry.host}:\n    lookaside: file://{base}/sigs\n")
    policy = {"default": [{"type": "reject"}], "transports": {"docker": {docker.name: [
        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(base / "key.gpg")}]}}}
    (base / "signed-policy.json").write_text(json.dumps(policy))
    return ["--signature-policy", str(base / "signed-policy.json"), "--registries.d", str(base / "registries.d")]


def make_tools(ctx: BenchContext, base: Path, env: dict[str, str], signed: list[str]) -> list[Tool]:
    """The contenders, in the order they run within each round: podrun under an accept-anything
    policy and under one that requires the image's signature, podman, skopeo + umoci."""
    (base / "accept-policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    accept = ["--signature-policy", str(base / "accept-policy.json")]
    verified = Podrun(ctx.podrun_bin, env, signed, name="podrun (signed)",
                      command="podrun --dir TMP --signature-policy P --registries.d D fetch docker://HOST/bench:TAG")
    verified.notes.append("P requires a simple signature by one GPG key (signedBy); D names a file:// lookaside")
    return [Podrun(ctx.podrun_bin, env, accept), verified, Podman(base / "podman-conf", env), SkopeoUmoci(env)]


def run(ctx: BenchContext) -> ScenarioResult:
    """Run the pull scenario: build/push the image, then N interleaved rounds of every tool."""
    image = build_image(ctx.work, ctx.profile)
    runs = ctx.runs_for(DEFAULT_RUNS, QUICK_RUNS)
    with restore_host_paths(), scratch_dir() as base, running_registry(False) as registry, GpgHome() as gpg:
        (base / "tmp").mkdir()
        # Every tool gets the same TMPDIR, on the same filesystem as its store.
        env = dict(os.environ, TMPDIR=str(base / "tmp"))
        ref = _push(registry, image.layout, image.tag)
        tools = make_tools(ctx, base, env, _signed(base, registry, ref, gpg))
        results = {t.name: ToolResult(t.name, t.command) for t in tools}
        waits: list[float] = []
        probes: list[float] = []
        for round_no in range(runs):
            for tool in tools:
                res = results[tool.name]
                if res.status != "ok":
                    continue
                scratch = base / f"{tool.name}-{round_no}"
                scratch.mkdir()
                os.sync()
                waited, per_file = wait_for_quiet(base, ctx.settle)
                waits.append(waited)
                probes.append(per_file * 1e6)
                try:
                    phases = tool.run_once(ref, scratch)
                    # The sum of the timed commands: excludes a failed attempt a tool fell back from.
                    res.add_run(sum(phases.values()), phases)
                    if res.stored_bytes is None:
                        res.stored_bytes = tree_bytes(scratch)
                except ToolFailed as exc:
                    res.status = "failed" if res.totals else "skipped"
                    res.reason = str(exc)
                finally:
                    tool.clean(scratch)
                ctx.log(f"pull round {round_no + 1}/{runs}: {tool.name} (after {waited:.0f} s settling): "
                        + (f"{res.totals[-1]:.2f} s" if res.status == "ok" else f"{res.status}: {res.reason}"))
        for tool in tools:
            results[tool.name].command = tool.command
            results[tool.name].notes = tool.notes
    return ScenarioResult("pull", DESCRIPTION, image, runs, list(results.values()),
                          calibration={"µs to create one empty file, just before each run": probes,
                                       "s waited for the file system to settle before each run": waits})
