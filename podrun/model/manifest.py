"""The pod manifest: what stage0 writes into the pod directory and stage1 executes.

A pod manifest is stage0's *decision*: every image default and flag is already merged, names
resolved to layer paths, limits parsed.  stage1 trusts it (stage0 wrote it; the schema in
podrun/schemas/pod-manifest.json is checked by the tests, not on the warm path, to keep
jsonschema's import cost out of ``podrun run``).
"""

from __future__ import annotations

from podrun.lean import asdict, dataclass, field, json_loads
from podrun.model.netspec import NetSpec, PortSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


_APP_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def is_app_name(name: object) -> bool:
    """An app name: 1-63 lower-case letters, digits and '-', starting and ending with a letter
    or digit (rkt's and Kubernetes' DNS label)."""
    return (isinstance(name, str) and 0 < len(name) < 64 and set(name) <= _APP_NAME_CHARS
            and "-" not in (name[0], name[-1]))


MANIFEST_VERSION = 1
MANIFEST = "pod.json"  # the pod manifest's file name in the pod directory
# Each app's log file is rotated once past this many bytes (--log-max-size; -1: no limit).
LOG_MAX_SIZE = 8 << 20


@dataclass(frozen=True)
class MountSpec:
    volume: str
    target: str


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # "host" | "empty"
    source: str | None = None  # host path for kind=host
    read_only: bool = False


@dataclass(frozen=True)
class Resources:
    memory_max: int | None = None  # bytes
    cpu_millis: int | None = None
    pids_max: int | None = None


@dataclass(frozen=True)
class AppSpec:
    name: str
    image_id: str
    image_name: str
    lower_dirs: tuple[str, ...]  # overlay lowerdirs, bottom layer first
    exec_argv: tuple[str, ...]
    env: tuple[str, ...]  # "K=V", final precedence already applied
    user: str = "0"
    group: str | None = None
    supplementary_gids: tuple[int, ...] = ()
    working_dir: str = "/"
    mounts: tuple[MountSpec, ...] = ()
    read_only_rootfs: bool = False
    resources: Resources = field(default_factory=Resources)
    capabilities: tuple[str, ...] = ()
    seccomp: str | None = None  # the --seccomp flag text, or None for the default filter
    no_new_privileges: bool = True
    stop_signal: int = 15  # what a stop request (SIGTERM to the pod) sends this app: image StopSignal, --stop-signal


@dataclass(frozen=True)
class PodManifest:
    uuid: str
    apps: tuple[AppSpec, ...]
    volumes: tuple[Volume, ...] = ()
    hostname: str = ""
    net: str = "none"  # "none" | "host" | the --net text of networks (see ``networks``)
    stage1: str = "default"
    interactive: bool = False
    dns: tuple[str, ...] = ()
    hosts_entries: tuple[str, ...] = ()
    networks: tuple[NetSpec, ...] = ()  # empty for net none/host
    ports: tuple[PortSpec, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_opts: tuple[str, ...] = ()
    notify: str = "ready"  # "ready": READY=1 once the apps run; "app": the app notifies (--notify)
    register: bool = False  # run in a transient systemd scope podrun-UUID.scope (--register)
    log_max_size: int = LOG_MAX_SIZE  # bytes per app log file before rotation; -1: no limit
    version: int = MANIFEST_VERSION

    def to_json(self) -> bytes:
        import json  # stage0 only: stage1 reads manifests, never writes them

        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PodManifest:
        doc = json_loads(data)
        if doc.get("version") != MANIFEST_VERSION:
            raise ValueError(f"unsupported pod manifest version {doc.get('version')!r}")
        apps = tuple(_app(a) for a in doc["apps"])
        vols = tuple(Volume(**v) for v in doc.get("volumes", ()))
        return cls(
            uuid=doc["uuid"], apps=apps, volumes=vols, hostname=doc.get("hostname", ""),
            net=doc.get("net", "none"), stage1=doc.get("stage1", "default"),
            interactive=bool(doc.get("interactive", False)), dns=tuple(doc.get("dns", ())),
            hosts_entries=tuple(doc.get("hosts_entries", ())), version=doc["version"],
            networks=tuple(NetSpec(n["name"], tuple((str(k), str(v)) for k, v in n.get("args", ())))
                           for n in doc.get("networks", ())),
            ports=tuple(PortSpec(**p) for p in doc.get("ports", ())),
            dns_search=tuple(doc.get("dns_search", ())), dns_opts=tuple(doc.get("dns_opts", ())),
            notify=str(doc.get("notify", "ready")), register=bool(doc.get("register", False)),
            log_max_size=int(doc.get("log_max_size", LOG_MAX_SIZE)),
        )


def _app(a: dict[str, Any]) -> AppSpec:
    return AppSpec(
        name=a["name"], image_id=a["image_id"], image_name=a["image_name"],
        lower_dirs=_paths(a["lower_dirs"]), exec_argv=tuple(a["exec_argv"]), env=tuple(a["env"]),
        user=a.get("user", "0"), group=a.get("group"),
        supplementary_gids=tuple(a.get("supplementary_gids", ())),
        working_dir=a.get("working_dir", "/"),
        mounts=tuple(MountSpec(**m) for m in a.get("mounts", ())),
        read_only_rootfs=bool(a.get("read_only_rootfs", False)),
        resources=Resources(**a.get("resources", {})),
        capabilities=tuple(a.get("capabilities", ())), seccomp=a.get("seccomp"),
        no_new_privileges=bool(a.get("no_new_privileges", True)),
        stop_signal=int(a.get("stop_signal", 15)),
    )


def _paths(value: Any) -> tuple[str, ...]:
    """A list of absolute paths, never coerced (``tuple("/x")`` would be two "paths")."""
    if not isinstance(value, list) or not all(isinstance(p, str) and p.startswith("/") for p in value):
        raise TypeError("lower_dirs is not a list of absolute paths")
    return tuple(value)
