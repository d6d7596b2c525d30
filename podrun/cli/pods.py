"""Pod lifecycle verbs: list, status, stop, rm, gc, cat-manifest (rkt's names and semantics)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from podrun.cli.output import FORMAT_OPTION, NO_LEGEND_OPTION, human_time, print_json, print_table, warn_damage
from podrun.errors import PodrunError, StoreError, UsageError
from podrun.pod import layout
from podrun.pod.state import PodFileDamage, PodStatus
from podrun.stage0 import Globals

if TYPE_CHECKING:
    from collections.abc import Iterator

    from podrun.pod.layout import PodDirs


def parse_duration(text: str, flag: str) -> float:
    """``30s``, ``5m``, ``2h``, ``1d``, ``1h30m`` or plain seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f"invalid {flag} {text!r}: expected e.g. 30s, 10m, 24h")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * scale[u] for n, u in parts)


def _uuids(args: tuple[str, ...], uuid_file: str | None) -> list[str]:
    out = list(args)
    if uuid_file:
        try:
            out.append(Path(uuid_file).read_text().strip())
        except OSError as exc:
            raise UsageError(f"cannot read --uuid-file {uuid_file!r}: {exc.strerror}") from None
    if not out:
        raise UsageError("no pod UUID given")
    return out


UUID_FILE = click.option("--uuid-file", type=click.Path(dir_okay=False), help="Read the pod UUID from FILE.")


@click.command("list")
@FORMAT_OPTION
@NO_LEGEND_OPTION
@click.option("--full", is_flag=True, help="Full UUIDs and image IDs.")
@click.pass_obj
def list_cmd(g: Globals, fmt: str, no_legend: bool, full: bool) -> None:
    """List pods and their states."""
    from podrun.pod.boot import reconcile
    from podrun.pod.layout import PodDirs
    from podrun.pod.state import list_pods

    dirs = PodDirs(g.data_dir)
    reconcile(dirs)
    pods = list_pods(dirs)
    for p in pods:
        warn_damage(p.uuid, p.errors)
    if fmt == "json":
        print_json([p.to_json() for p in pods])
        return
    rows = []
    for p in sorted(pods, key=lambda p: p.created or 0):
        apps = ",".join(a.name for a in p.apps) or "-"
        image = ",".join((a.image_name or a.image_id or "-") for a in p.apps) or "-"
        uuid = p.uuid if full else p.uuid[:8]
        networks = ",".join(f"{n.name}:{n.ip}" if n.ip else n.name for n in p.networks)
        rows.append([uuid, apps, image, p.state, human_time(p.created), human_time(p.started), networks or "-"])
    print_table(["UUID", "APP", "IMAGE", "STATE", "CREATED", "STARTED", "NETWORKS"], rows, legend=not no_legend)


@click.command("status")
@click.argument("uuid", required=False)
@UUID_FILE
@click.option("--wait", "wait", is_flag=False, flag_value="forever", default=None, metavar="[DURATION]",
              help="Wait until the pod exits (optionally at most DURATION).")
@click.option("--wait-ready", "wait_ready", is_flag=False, flag_value="forever", default=None,
              metavar="[DURATION]", help="Wait until all apps have started.")
@FORMAT_OPTION
@click.pass_obj
def status_cmd(g: Globals, uuid: str | None, uuid_file: str | None, wait: str | None, wait_ready: str | None,
               fmt: str) -> None:
    """Show a pod's state, pid, apps, exit codes, networks and port forwards."""
    from podrun.pod.layout import PodDirs
    from podrun.pod.state import read_status
    from podrun.pod.stop import wait_unlocked

    dirs = PodDirs(g.data_dir)
    phase, full = dirs.find(_uuids((uuid,) if uuid else (), uuid_file)[0])
    if wait_ready is not None:
        limit = None if wait_ready == "forever" else parse_duration(wait_ready, "--wait-ready")
        phase = _wait_ready(dirs, phase, full, None if limit is None else time.monotonic() + limit, wait_ready)
    if wait is not None and phase == "run":
        limit = None if wait == "forever" else parse_duration(wait, "--wait")
        with _pod_files(dirs.path(phase, full)) as fd:
            if not wait_unlocked(fd, limit):
                raise PodrunError(f"pod {full} still running after {wait}")
    st = read_status(dirs, *dirs.find(full))
    if fmt == "json":
        print_json(st.to_json())
    else:
        click.echo(f"state={st.state}")
        click.echo(f"created={human_time(st.created)}")
        click.echo(f"started={human_time(st.started)}")
        if st.pid:
            click.echo(f"pid={st.pid}")
        if st.finished is not None or st.state in ("exited", "exited-garbage"):
            click.echo("exited=true")
            click.echo(f"exit-code={st.exit_code if st.exit_code is not None else 'unknown'}")
        for app in st.apps:
            code = "" if app.exit_code is None else str(app.exit_code)
            click.echo(f"app-{app.name}={code or ('running' if st.state == 'running' else 'unknown')}")
        for line in _network_lines(st):
            click.echo(line)
    warn_damage(full, st.errors)


def _network_lines(st: PodStatus) -> list[str]:
    """``network-NAME=KEY=VALUE …`` (the fields known, ``-`` when none is) and
    ``port-PROTOCOL-HOSTPORT=pod_port=N [host_ip=IP]``, as ``status`` prints them."""
    lines = []
    for net in st.networks:
        known = " ".join(f"{k}={v}" for k, v in asdict(net).items() if k != "name" and v is not None)
        lines.append(f"network-{net.name}={known or '-'}")
    for port in st.ports:
        where = f" host_ip={port.host_ip}" if port.host_ip else ""
        lines.append(f"port-{port.protocol}-{port.host_port}=pod_port={port.pod_port}{where}")
    return lines


def _wait_ready(dirs: PodDirs, phase: str, uuid: str, deadline: float | None, text: str) -> str:
    """Wait until the pod's apps have all started, or it ended without that; returns its phase.
    A pod still prepared is waited for through ``run-prepared`` (it moves to run/)."""
    from podrun.pod.layout import lock_held_fd
    from podrun.pod.state import pod_file_present

    while True:
        if not os.path.lexists(dirs.path(phase, uuid)):
            phase, _ = dirs.find(uuid)
        with _pod_files(dirs.path(phase, uuid)) as fd:
            if pod_file_present(fd, layout.READY) or phase in ("exited-garbage", "garbage") or (
                    phase != "prepared" and not lock_held_fd(fd)):  # exited or aborted: never ready
                return phase
        if deadline is not None and time.monotonic() > deadline:
            raise PodrunError(f"pod {uuid} not ready after {text}")
        time.sleep(0.02)


@click.command("stop")
@click.argument("uuids", nargs=-1)
@UUID_FILE
@click.option("--force", is_flag=True, help="SIGKILL at once.")
@click.option("--timeout", default="10s", show_default=True, help="SIGKILL after this long.")
@click.pass_obj
def stop_cmd(g: Globals, uuids: tuple[str, ...], uuid_file: str | None, force: bool, timeout: str) -> None:
    """Stop running pods: SIGTERM to the apps, SIGKILL after --timeout."""
    from podrun.pod.layout import PodDirs
    from podrun.pod.stop import stop_pod

    dirs = PodDirs(g.data_dir)
    limit = parse_duration(timeout, "--timeout")
    for text in _uuids(uuids, uuid_file):
        phase, full = dirs.find(text)
        if phase != "run":
            click.echo(f"{full} was not running")
            continue
        with _pod_files(dirs.path(phase, full)) as fd:
            click.echo(stop_pod(fd, full, force, limit))


@click.command("rm")
@click.argument("uuids", nargs=-1)
@UUID_FILE
@click.pass_obj
def rm_cmd(g: Globals, uuids: tuple[str, ...], uuid_file: str | None) -> None:
    """Remove pods that are not running (their dirs, cgroups, mounts)."""
    from podrun.pod.gc import remove_pod
    from podrun.pod.layout import PodDirs

    dirs = PodDirs(g.data_dir)
    failed = 0
    for text in _uuids(uuids, uuid_file):
        try:
            phase, full = dirs.find(text)
            for line in remove_pod(dirs, phase, full):
                click.echo(line)
        except PodrunError as exc:
            failed += 1
            click.echo(f"podrun: {exc}", err=True)
            last = exc
    if failed:
        sys.exit(last.exit_code)


@click.command("gc")
@click.option("--grace-period", default="30m", show_default=True, help="Keep exited pods this long.")
@click.option("--expire-prepared", default="24h", show_default=True, help="Remove prepared pods older than this.")
@click.option("--mark-only", is_flag=True, help="Only mark exited pods as garbage.")
@click.pass_obj
def gc_cmd(g: Globals, grace_period: str, expire_prepared: str, mark_only: bool) -> None:
    """Garbage-collect pods: mark exited ones, remove them after the grace period.

    The --pid-file a killed supervisor left goes when its pod is marked, only while it still
    is that pod's file holding that supervisor's PID (man podrun-gc)."""
    from podrun.pod.boot import reconcile
    from podrun.pod.gc import gc
    from podrun.pod.layout import PodDirs

    dirs = PodDirs(g.data_dir)
    lines = reconcile(dirs)
    lines += gc(dirs, parse_duration(grace_period, "--grace-period"),
                parse_duration(expire_prepared, "--expire-prepared"), mark_only)
    for line in lines:
        click.echo(line)
    if any(line.startswith("failed:") for line in lines):
        raise StoreError("gc could not remove every pod")


@click.command("cat-manifest")
@click.argument("uuid", required=False)
@UUID_FILE
@click.pass_obj
def cat_manifest_cmd(g: Globals, uuid: str | None, uuid_file: str | None) -> None:
    """Print a pod's manifest."""
    from podrun.pod.layout import PodDirs
    from podrun.pod.state import load_manifest

    dirs = PodDirs(g.data_dir)
    phase, full = dirs.find(_uuids((uuid,) if uuid else (), uuid_file)[0])
    with _pod_files(dirs.path(phase, full)) as fd:
        _, data = load_manifest(fd)
    sys.stdout.buffer.write(data)


@contextlib.contextmanager
def _pod_files(path: Path) -> Iterator[int]:
    """The pod directory's fd, for reading its files; damage to them becomes a StoreError (248)."""
    from podrun.pod.state import open_pod_dir

    fd = open_pod_dir(path)
    try:
        yield fd
    except PodFileDamage as exc:
        raise StoreError(f"pod {path.name}: {exc}") from None
    finally:
        os.close(fd)


def _check_app(uuid: str, app: str, names: list[str]) -> None:
    if app not in names:
        raise UsageError(f"pod {uuid} has no app {app!r} (apps: {', '.join(names)})")


@click.command("enter", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--app", "app", help="The app to enter (needed when the pod has several).")
@UUID_FILE
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def enter_cmd(g: Globals, app: str | None, uuid_file: str | None, args: tuple[str, ...]) -> None:
    """Run CMD (default /bin/sh) in a running app with the app's namespaces, root, cgroup,
    user, capabilities and seccomp filter:  podrun enter [--app NAME] UUID [CMD...]"""
    from podrun import abi
    from podrun.pod.layout import PodDirs, lock_held_fd
    from podrun.pod.state import load_manifest, read_cgroups, read_pid
    from podrun.stage0.prepare import entrypoint

    rest = list(args)
    if not uuid_file:
        if not rest:
            raise UsageError("no pod UUID given")
        text = rest.pop(0)
    else:
        text = _uuids((), uuid_file)[0]
    dirs = PodDirs(g.data_dir)
    phase, full = dirs.find(text)
    path = dirs.path(phase, full)
    with _pod_files(path) as fd:
        if phase != "run" or not lock_held_fd(fd):
            raise PodrunError(f"pod {full} is not running")
        manifest, _ = load_manifest(fd)
        read_pid(fd)  # what stage1's enter reads: damage is named here, before the exec
        read_cgroups(fd)
    names = [a.name for a in manifest.apps]
    if app is None:
        if len(names) != 1:
            raise UsageError(f"pod {full} has several apps ({', '.join(names)}): choose one with --app")
        app = names[0]
    _check_app(full, app, names)
    argv = abi.enter_argv(entrypoint(manifest.stage1, abi.ENTER), abi.EnterArgs(str(path), app, rest))
    sys.stdout.flush()
    os.execve(sys.executable, argv, abi.stage1_env(g.data_dir))


class AppLog:
    """One app's output as ``podrun.pod.logrelay`` keeps it: ``log.1`` (older, once the log
    was rotated) then ``log``, read beneath the directory *base_fd* as ``PREFIX + log`` with the
    pod files' rules (no symbolic link followed, regular files only; PodFileDamage otherwise).
    ``chunks`` yields what is new since the last call, across rotations, in pieces of at most
    CHUNK bytes (a log may be large): once ``log`` names another file, the old one (now
    ``log.1``) is read to its end first; a whole file rotated away between two calls is lost
    with it."""

    LOG, OLDER = layout.LOG, layout.LOG_OLDER
    CHUNK = 1 << 20

    def __init__(self, base_fd: int, prefix: str) -> None:
        self.base_fd = base_fd
        self.prefix = prefix
        self.cur = self._open(self.LOG)  # first log, then log.1: a rotation in between shows as the same file
        older = self._open(self.OLDER)
        self.pending = [older] if older is not None and _ino(older) != _ino(self.cur) else []
        if older is not None and not self.pending:
            older.close()

    def _open(self, name: str) -> BinaryIO | None:
        from podrun.pod.state import open_pod_file

        fd = open_pod_file(self.base_fd, self.prefix + name)
        return None if fd is None else os.fdopen(fd, "rb")

    def _drain(self, f: BinaryIO) -> Iterator[bytes]:
        while chunk := f.read(self.CHUNK):
            yield chunk

    def chunks(self) -> Iterator[bytes]:
        from podrun.pod.state import pod_file_stat

        for f in self.pending:
            yield from self._drain(f)
        self.close_pending()
        if self.cur is None:
            self.cur = self._open(self.LOG)
            if self.cur is None:
                return
        if os.fstat(self.cur.fileno()).st_size < self.cur.tell():  # started over (logrelay's fallback)
            self.cur.seek(0)
        yield from self._drain(self.cur)
        now = pod_file_stat(self.base_fd, self.prefix + self.LOG)
        if now is None:  # between the rename and the new log: look again next time
            return
        old = _ino(self.cur)
        if now.st_ino == old:
            return
        yield from self._drain(self.cur)  # rotated: its last bytes were written before the rename
        self.cur.close()
        self.cur = self._open(self.LOG)
        middle = self._open(self.OLDER)
        if middle is not None:
            if _ino(middle) not in (old, _ino(self.cur)):  # a whole rotation since the last look
                yield from self._drain(middle)
            middle.close()
        if self.cur is not None:
            yield from self._drain(self.cur)

    def close_pending(self) -> None:
        for f in self.pending:
            f.close()
        self.pending = []

    def close(self) -> None:
        self.close_pending()
        if self.cur is not None:
            self.cur.close()


def _ino(f: BinaryIO | None) -> int | None:
    return None if f is None else os.fstat(f.fileno()).st_ino


@click.command("logs")
@click.option("--app", "app", help="Only this app's output.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the pod ends.")
@UUID_FILE
@click.argument("uuid", required=False)
@click.pass_obj
def logs_cmd(g: Globals, app: str | None, follow: bool, uuid_file: str | None, uuid: str | None) -> None:
    """Print the apps' output (stdout and stderr), kept in the pod dir until gc."""
    from podrun.pod.layout import PodDirs, lock_held_fd
    from podrun.pod.logrelay import LineTagger
    from podrun.pod.state import load_manifest

    dirs = PodDirs(g.data_dir)
    phase, full = dirs.find(_uuids((uuid,) if uuid else (), uuid_file)[0])
    out = sys.stdout.buffer
    with _pod_files(dirs.path(phase, full)) as fd:
        names = [a.name for a in load_manifest(fd)[0].apps]
        if app is not None:
            _check_app(full, app, names)
        wanted = [app] if app else names
        logs = {name: AppLog(fd, layout.app_dir(name) + "/") for name in wanted}
        taggers = {name: LineTagger(name) for name in wanted} if len(wanted) > 1 else {}
        try:
            while True:
                alive = follow and lock_held_fd(fd)
                for name, log in logs.items():
                    tagger = taggers.get(name)
                    for chunk in log.chunks():
                        out.write(tagger.feed(chunk) if tagger else chunk)
                    if tagger and not alive:
                        out.write(tagger.flush())
                out.flush()
                if not alive:
                    return
                time.sleep(0.2)
        finally:
            for log in logs.values():
                log.close()
