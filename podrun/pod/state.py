"""Pod state derived from disk and kernel facts only (no daemon, no pid-file liveness).

A pod's state is its phase directory plus whether its lock is held (rkt's model)::

    embryo/   locked: embryo        unlocked: aborted (stage0 died while creating it)
    prepared/ prepared               run/ locked: running   unlocked: exited
    exited-garbage/ exited-garbage   garbage/ locked: deleting   unlocked: garbage

Files read (see man/podrun-state.5): pod.json (manifest), pid and ready (stage1), status/APP
(exit of each app, written by the supervisor), finished (the supervisor's exit), cgroups (the
cgroup directories, recorded before they are created), net/state.json (the network record).

One damaged pod must never break the others (issue 12).  Every pod file is read relative to
the pod directory's fd, one path component at a time and never through a symbolic link, so no
pod file makes podrun read outside its pod directory; only regular files are opened (a FIFO
would block the reader, a device such as /dev/zero never end), each within a size bound; and
every record is type-checked (``{"exit_code": "zero"}`` is damage, not an exit code).  What is
wrong is named as "FILE: what" in the pod's ``errors``, and the rest of the pod is still read.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podrun import fsutil
from podrun.errors import StoreError
from podrun.model.manifest import is_app_name
from podrun.model.netspec import NetMode
from podrun.pod.layout import (
    CGROUPS,
    FINISHED,
    MANIFEST,
    MANIFEST_LIMIT,
    NET_STATE,
    PHASES,
    PID,
    PID_FILE_RECORD,
    READY,
    PodDirs,
    app_status_path,
    decode_manifest,
    lock_held_fd,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from podrun.model.manifest import AppSpec, PodManifest

_LOCKED_STATE = {"embryo": "embryo", "prepare": "preparing", "run": "running", "garbage": "deleting"}
_UNLOCKED_STATE = {"embryo": "aborted", "prepare": "aborted", "run": "exited"}

# What podrun writes is far smaller; a larger file is damage and is never read into memory.
RECORD_LIMIT = 64 << 10  # pid, ready, finished, status/APP, cgroups
NET_STATE_LIMIT = 1 << 20  # net/state.json
PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT
SIGNAL_MAX = 64  # SIGRTMAX
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put in place between the check and the open must not block the reader.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFLNK: "a symbolic link",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


class PodFileDamage(Exception):
    """A pod file that is not what podrun writes there; ``str()`` is one line, ``FILE: what``."""


@dataclass(frozen=True)
class AppStatus:
    name: str
    image_id: str | None = None
    image_name: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    finished: float | None = None


@dataclass(frozen=True)
class NetworkStatus:
    """One network of a pod, as rkt's status gave it.  Only ``name`` is known for ``none`` and
    ``host``, before the pod is attached (prepared) and once its networks were released."""

    name: str
    ifname: str | None = None
    ip: str | None = None
    mask: str | None = None  # dotted, as rkt's status: 255.255.255.0
    gateway: str | None = None
    mac: str | None = None


@dataclass(frozen=True)
class PortForward:
    """A host port forwarded to the pod (``--port``); ``host_ip`` empty: every host address."""

    host_ip: str
    host_port: int
    pod_port: int
    protocol: str


@dataclass(frozen=True)
class PodStatus:
    uuid: str
    state: str
    phase: str
    path: str
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    pid: int | None = None
    exit_code: int | None = None
    ready: bool = False
    apps: tuple[AppStatus, ...] = ()
    networks: tuple[NetworkStatus, ...] = ()
    ports: tuple[PortForward, ...] = ()
    cgroups: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The document ``status --format json`` prints (podrun/schemas/pod-status.json)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# -- reading pod files ------------------------------------------------------------------------

def _open_dir(path: str | Path) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise PodFileDamage(f"the pod directory {_what_is(None, str(path), exc)}") from None


def open_pod_dir(path: str | Path) -> int:
    """The pod directory's fd, never opened through a symbolic link (StoreError otherwise)."""
    try:
        return _open_dir(path)
    except PodFileDamage as exc:
        raise StoreError(f"pod {Path(path).name}: {exc}") from None


def _what_is(dir_fd: int | None, name: str, exc: OSError) -> str:
    """Why *name* could not be opened, in words: its kind when it is not what was expected."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if exc.errno in (errno.ENOTDIR, errno.ELOOP) and stat.S_IFMT(mode) in _KINDS:
        return f"is {_KINDS[stat.S_IFMT(mode)]}"
    if exc.errno == errno.ENOTDIR:
        return "is not a directory"
    return f"cannot be read ({exc.strerror})"


def _parent_fd(pod_fd: int, rel: str) -> tuple[int | None, str]:
    """(fd of the directory holding *rel*, its last component); None when a directory on the
    way does not exist.  Components are opened one by one without following links."""
    *parents, name = rel.split("/")
    fd = pod_fd
    try:
        for i, part in enumerate(parents):
            try:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                return None, name
            except OSError as exc:
                raise PodFileDamage(f"{'/'.join(parents[:i + 1])}: {_what_is(fd, part, exc)}") from None
            if fd != pod_fd:
                os.close(fd)
            fd = sub
    except BaseException:
        if fd != pod_fd:
            os.close(fd)
        raise
    return fd, name


def pod_file_stat(pod_fd: int, rel: str) -> os.stat_result | None:
    """lstat of *rel* beneath the pod directory (None when absent)."""
    fd, name = _parent_fd(pod_fd, rel)
    if fd is None:
        return None
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PodFileDamage(f"{rel}: cannot be read ({exc.strerror})") from None
    finally:
        if fd != pod_fd:
            os.close(fd)


def _check_regular(rel: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise PodFileDamage(f"{rel}: is {_KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}")


def pod_file_present(pod_fd: int, rel: str) -> bool:
    """Whether the regular file *rel* exists (a marker such as ``ready``); damage if it is
    anything else."""
    st = pod_file_stat(pod_fd, rel)
    if st is not None:
        _check_regular(rel, st)
    return st is not None


def open_pod_file(pod_fd: int, rel: str) -> int | None:
    """A read-only fd of the regular file *rel* beneath the pod directory (None when absent).

    Nothing but a regular file is ever opened: its kind is checked before the open (opening a
    FIFO or a device is itself an action) and again on the open file."""
    fd, name = _parent_fd(pod_fd, rel)
    if fd is None:
        return None
    try:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            _check_regular(rel, st)
            f = os.open(name, _FILE_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PodFileDamage(f"{rel}: {_what_is(fd, name, exc)}") from None
    finally:
        if fd != pod_fd:
            os.close(fd)
    try:
        _check_regular(rel, os.fstat(f))
        os.set_blocking(f, True)
    except BaseException:
        os.close(f)
        raise
    return f


def read_pod_file(pod_fd: int, rel: str, limit: int) -> bytes | None:
    """The bytes of the regular file *rel* (None when absent), at most *limit* of them."""
    fd = open_pod_file(pod_fd, rel)
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size  # a huge file is refused before any of it is read
        data = b"" if size > limit else fsutil.read_at_most(fd, limit + 1)
    except OSError as exc:
        raise PodFileDamage(f"{rel}: cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if max(size, len(data)) > limit:
        raise PodFileDamage(f"{rel}: larger than {limit} bytes")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_pod_json(pod_fd: int, rel: str, limit: int = RECORD_LIMIT) -> Any:
    """The JSON document *rel* (None when absent); damage if it cannot be parsed."""
    data = read_pod_file(pod_fd, rel, limit)
    if data is None:
        return None
    if not data.strip():
        raise PodFileDamage(f"{rel}: empty")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past the parser's depth
        raise PodFileDamage(f"{rel}: truncated or not JSON") from None


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_time(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= 0)


def read_exit_record(pod_fd: int, rel: str) -> dict[str, Any] | None:
    """``status/APP`` or ``finished``: ``{"exit_code": 0-255, "signal": 1-64|null, "finished": T}``
    (``finished`` has no signal); None when absent."""
    doc = read_pod_json(pod_fd, rel)
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise PodFileDamage(f"{rel}: not a JSON object")
    if not _is_int(doc.get("exit_code"), 0, 255):
        raise PodFileDamage(f"{rel}: exit_code is not an exit code (0-255)")
    if doc.get("signal") is not None and not _is_int(doc["signal"], 1, SIGNAL_MAX):
        raise PodFileDamage(f"{rel}: signal is not a signal number")
    if not _is_time(doc.get("finished")):
        raise PodFileDamage(f"{rel}: finished is not a time")
    return doc


def read_pid(pod_fd: int) -> int | None:
    """The host PID in ``pid`` (None when absent, or empty: stage1 is writing it)."""
    data = read_pod_file(pod_fd, PID, RECORD_LIMIT)
    text = (data or b"").strip()
    if not text:
        return None
    if not (text.isdigit() and 1 <= int(text) <= PID_MAX):
        raise PodFileDamage("pid: not a process ID")
    return int(text)


U64_MAX = (1 << 64) - 1  # st_dev and st_ino; st_mtime_ns (since 1970) is less


def read_pid_file_record(pod_fd: int) -> tuple[int, tuple[int, int, int]] | None:
    """``pid-file``, stage0's record of ``--pid-file``: the supervisor's PID and the
    ``(st_dev, st_ino, st_mtime_ns)`` of the file it wrote; None when absent (no ``--pid-file``, or a pod of
    an older podrun) or empty (written without fsync: a power cut may empty it)."""
    st = pod_file_stat(pod_fd, PID_FILE_RECORD)
    if st is None or st.st_size == 0:
        return None
    doc = read_pod_json(pod_fd, PID_FILE_RECORD)
    if not (isinstance(doc, dict) and _is_int(doc.get("pid"), 1, PID_MAX)
            and all(_is_int(doc.get(key), 0, U64_MAX) for key in ("dev", "ino", "mtime_ns"))):
        raise PodFileDamage(f"{PID_FILE_RECORD}: not a process ID with a file's device, inode and mtime")
    return doc["pid"], (doc["dev"], doc["ino"], doc["mtime_ns"])


def read_cgroups(pod_fd: int) -> list[str] | None:
    """The cgroup directories ``cgroups`` lists (None when absent)."""
    doc = read_pod_json(pod_fd, CGROUPS)
    if doc is not None and not (isinstance(doc, list) and all(isinstance(p, str) for p in doc)):
        raise PodFileDamage("cgroups: not a list of cgroup paths")
    return doc


_IPV4 = re.compile(r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")
_NET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")  # podrun.model.netspec.NET_NAME_CHARS
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # what podrun and the CNI plugins name interfaces
# The fields of a network entry that podrun writes itself (podrun.net.setup), and their form.
_NET_FIELDS = {"ifname": _IFNAME, "ip": _IPV4, "gateway": _IPV4, "mac": _MAC}


@dataclass(frozen=True)
class NetRecord:
    """What ``net/state.json`` says of the pod's networks while they are attached: each
    network's details by name, and the host ports forwarded to the pod."""

    networks: dict[str, NetworkStatus]
    ports: tuple[PortForward, ...]


def _mask(prefix: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return ".".join(str((bits >> s) & 0xFF) for s in (24, 16, 8, 0))


def _prefix_of(cidr: Any) -> int | None:
    """The prefix length of an IPv4 ``ADDRESS/PREFIX``, None when it is not one."""
    if not isinstance(cidr, str):
        return None
    addr, _, plen = cidr.partition("/")
    if not (_IPV4.fullmatch(addr) and plen.isdigit() and int(plen) <= 32):
        return None
    return int(plen)


def _cni_details(result: Any, ip: str, ifname: str | None) -> dict[str, str]:
    """mask, gateway and mac of the address *ip* in a CNI result (layouts 0.3 to 1.0: ``ips``
    entries point at ``interfaces`` by index).  The result is the plugin's, kept as it came: what
    is missing or malformed there is left out, not counted as damage."""
    if not isinstance(result, dict):
        return {}
    ips: list[Any] = result["ips"] if isinstance(result.get("ips"), list) else []
    entry = next((i for i in ips if isinstance(i, dict) and isinstance(i.get("address"), str)
                  and i["address"].partition("/")[0] == ip), {})
    out: dict[str, str] = {}
    prefix = _prefix_of(entry.get("address"))
    if prefix is not None:
        out["mask"] = _mask(prefix)
    if isinstance(entry.get("gateway"), str) and _IPV4.fullmatch(entry["gateway"]):
        out["gateway"] = entry["gateway"]
    interfaces: list[Any] = result["interfaces"] if isinstance(result.get("interfaces"), list) else []
    index: Any = entry.get("interface")
    if _is_int(index, 0, len(interfaces) - 1):
        link = interfaces[index]
    else:  # no index: the interface of that name inside the pod
        link = next((i for i in interfaces if isinstance(i, dict) and i.get("name") == ifname and i.get("sandbox")),
                    None)
    mac = link.get("mac") if isinstance(link, dict) else None
    if isinstance(mac, str) and _MAC.fullmatch(mac):
        out["mac"] = mac.lower()
    return out


def _net_entry(entry: Any) -> NetworkStatus:
    """One entry of the record's ``networks``; PodFileDamage when a field podrun writes is not
    of its form (a value printed by ``status`` must be what podrun wrote, nothing more)."""
    if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
        raise PodFileDamage("net/state.json: not a network record")
    name = entry["name"]
    for key, form in _NET_FIELDS.items():
        value = entry.get(key)
        if value is not None and not (isinstance(value, str) and form.fullmatch(value)):
            raise PodFileDamage(f"net/state.json: network {name[:64]!r}: {key} is malformed")
    fields: dict[str, str | None] = {k: entry.get(k) for k in _NET_FIELDS}
    fields["mac"] = fields["mac"] and fields["mac"].lower()
    if entry.get("subnet") is not None:  # the default network: its subnet gives the mask
        prefix = _prefix_of(entry["subnet"])
        if prefix is None:
            raise PodFileDamage(f"net/state.json: network {name[:64]!r}: subnet is malformed")
        fields["mask"] = _mask(prefix)
    if entry.get("result") is not None and fields["ip"]:  # a CNI network: the plugin's result
        details = _cni_details(entry["result"], fields["ip"], fields["ifname"])
        fields.update({k: v for k, v in details.items() if fields.get(k) is None})
    return NetworkStatus(name, **fields)


def _port_forwards(ports: Any) -> tuple[PortForward, ...]:
    """The record's ``ports``: forwards in place once ``added`` (podrun.net.setup.attach)."""
    if ports is None:
        return ()
    forwards = ports.get("forwards") if isinstance(ports, dict) else None
    if not isinstance(forwards, list) or not all(
            isinstance(f, list) and len(f) == 4 and f[0] in ("tcp", "udp") and _is_int(f[1], 1, 65535)
            and _is_int(f[2], 1, 65535) and isinstance(f[3], str) and (f[3] == "" or _IPV4.fullmatch(f[3]))
            for f in forwards):
        raise PodFileDamage("net/state.json: ports is not a list of port forwards")
    if ports.get("added") is not True:
        return ()
    return tuple(PortForward(host_ip=hip, host_port=hp, pod_port=pp, protocol=proto) for proto, pp, hp, hip in forwards)


def read_net_record(pod_fd: int) -> NetRecord | None:
    """The pod's network record (``net/state.json``): None when absent or once the networks
    were released (``detached``); it is checked all the same, so damage is always named."""
    doc = read_pod_json(pod_fd, NET_STATE, NET_STATE_LIMIT)
    if doc is None:
        return None
    entries = doc.get("networks", []) if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise PodFileDamage("net/state.json: not a network record")
    networks = {n.name: n for n in map(_net_entry, entries)}
    ports = _port_forwards(doc.get("ports"))
    return None if doc.get("detached") else NetRecord(networks, ports)


def _manifest_apps(manifest: PodManifest) -> tuple[list[AppSpec], str | None]:
    """The apps of a manifest that name a valid app, and what was wrong."""
    good = [a for a in manifest.apps if is_app_name(a.name)
            and all(isinstance(v, (str, type(None))) for v in (a.image_id, a.image_name))]
    return good, None if len(good) == len(manifest.apps) else f"{MANIFEST}: malformed app entry"


def _status_manifest(files: _Reader) -> PodManifest | None:
    """The pod's manifest through the one typed reader (podrun.pod.layout), damage named."""
    data = files.get(read_pod_file, MANIFEST, MANIFEST_LIMIT)
    if data is None:
        if not files.errors:
            files.errors.append(f"{MANIFEST}: missing")
        return None
    try:
        return decode_manifest(data)
    except ValueError as exc:
        files.errors.append(f"{MANIFEST}: not a pod manifest ({exc})")
        return None


def load_manifest(pod_fd: int) -> tuple[PodManifest, bytes]:
    """The pod's manifest and its bytes, for the verbs that act on it (enter, logs,
    cat-manifest); PodFileDamage when it is missing or not a manifest podrun wrote."""
    from podrun.abi import STAGE1_FLAVORS

    data = read_pod_file(pod_fd, MANIFEST, MANIFEST_LIMIT)
    if data is None:
        raise PodFileDamage(f"{MANIFEST}: missing")
    try:
        manifest = decode_manifest(data)
    except ValueError as exc:
        raise PodFileDamage(f"{MANIFEST}: not a pod manifest ({exc})") from None
    if not manifest.apps or not all(is_app_name(a.name) for a in manifest.apps):
        raise PodFileDamage(f"{MANIFEST}: no apps, or an app without a valid name")
    if manifest.stage1 not in STAGE1_FLAVORS:  # a name such as "../../tmp/x" must not pick what runs
        raise PodFileDamage(f"{MANIFEST}: stage1 is not a stage1 flavor")
    return manifest, data


# -- a pod's status ---------------------------------------------------------------------------

class _Reader:
    """Reads one pod's files, collecting damage instead of raising."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.errors: list[str] = []

    def get(self, read: Callable[..., Any], *args: Any) -> Any:
        try:
            return read(self.fd, *args)
        except PodFileDamage as exc:
            if str(exc) not in self.errors:
                self.errors.append(str(exc))
            return None

    def mtime(self, name: str) -> float | None:
        st = self.get(pod_file_stat, name)
        return None if st is None else float(st.st_mtime)


def read_status(dirs: PodDirs, phase: str, uuid: str) -> PodStatus:
    """Everything known about one pod; never raises for a damaged pod (errors are listed)."""
    path = dirs.path(phase, uuid)
    try:
        fd = _open_dir(path)
    except PodFileDamage as exc:
        return PodStatus(uuid, "unknown", phase, str(path), errors=(str(exc),))
    try:
        return _status(fd, path, phase, uuid)
    finally:
        os.close(fd)


def _status(fd: int, path: Path, phase: str, uuid: str) -> PodStatus:
    held = lock_held_fd(fd)
    state = (_LOCKED_STATE if held else _UNLOCKED_STATE).get(phase, phase)
    files = _Reader(fd)
    manifest = _status_manifest(files)
    good_apps, problem = _manifest_apps(manifest) if manifest is not None else ([], None)
    if problem:
        files.errors.append(problem)
    apps = []
    for app in good_apps:
        st = files.get(read_exit_record, app_status_path(app.name)) or {}
        apps.append(AppStatus(app.name, app.image_id, app.image_name, st.get("exit_code"),
                              st.get("signal"), st.get("finished")))
    pid = files.get(read_pid)
    finished = files.get(read_exit_record, FINISHED) or {}
    cgroups = files.get(read_cgroups) or []
    ready = bool(files.get(pod_file_present, READY))
    networks, ports = _networks(manifest, files, state == "running")
    return PodStatus(
        uuid=uuid, state=state, phase=phase, path=str(path), created=files.mtime(MANIFEST),
        started=files.mtime(PID), finished=finished.get("finished"), pid=pid if held else None,
        exit_code=finished.get("exit_code"), ready=ready, apps=tuple(apps),
        networks=networks, ports=ports, cgroups=tuple(cgroups), errors=tuple(files.errors),
    )


def _networks(manifest: PodManifest | None, files: _Reader, running: bool) -> tuple[tuple[NetworkStatus, ...],
                                                                                  tuple[PortForward, ...]]:
    """The pod's networks in the order of ``--net`` (``none`` and ``host`` as one network of
    that name) and its port forwards, the details from the pod's network record.  Those are
    shown only while the pod runs: the address of a pod killed before it released it may be
    another pod's already (podrun.net.owners), but the record is read, and damage named, always."""
    if manifest is None:
        return (), ()
    nets = manifest.networks
    if not nets:
        net = manifest.net
        if net not in (NetMode.NONE, NetMode.HOST):  # NetMode.NETWORKS, yet none listed (a version 1 net text)
            files.errors.append(f"{MANIFEST}: networks lists no network")
            return (), ()
        return (NetworkStatus(net),), ()
    if not all(isinstance(n.name, str) and _NET_NAME.fullmatch(n.name) for n in nets):
        files.errors.append(f"{MANIFEST}: networks is not a list of networks")
        return (), ()
    record = files.get(read_net_record)
    if record is None or not running:
        record = NetRecord({}, ())
    return tuple(record.networks.get(n.name, NetworkStatus(n.name)) for n in nets), record.ports


def list_pods(dirs: PodDirs) -> list[PodStatus]:
    """Every pod in every phase; a pod directory that is a symbolic link is listed as damaged
    (state ``unknown``), never followed."""
    out = []
    for phase in PHASES:
        base = dirs.root / phase
        if not base.is_dir():
            continue
        with os.scandir(base) as entries:
            found = sorted(entries, key=lambda e: e.name)
        for entry in found:
            if entry.name.startswith(".") or not (entry.is_dir(follow_symlinks=False) or entry.is_symlink()):
                continue
            out.append(read_status(dirs, phase, entry.name))
    return out


def lock_held(path: Path) -> bool:
    """True when another process holds the pod's lock (a shared try-lock, released at once);
    False when *path* is not a pod directory (a symbolic link is never followed)."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return False
    try:
        return lock_held_fd(fd)
    finally:
        os.close(fd)
