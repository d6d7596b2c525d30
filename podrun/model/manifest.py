"""The pod manifest (``pod.json``): what stage0 decided and stage1 executes.

A pod manifest is stage0's *decision*: every image default and flag is already merged, names
resolved to layer paths, limits parsed, the network mode and each app's capability numbers and
seccomp program (a file stage0 compiled into the pod dir) chosen.  stage1 reads it and acts: it
parses no flag string and compiles nothing.  The schema (podrun/schemas/pod-manifest.json) is
checked by the tests, not on the warm path, to keep jsonschema's import cost out of ``podrun run``.

Version 2 (this one) replaced version 1's flag texts with decisions.  A version 1 manifest (a pod
prepared or started by podrun before it) is still read: ``_upgrade_v1`` derives the decisions the
way version 1's stage1 did (docs/architecture.md, "Pod manifest versions").
"""

from __future__ import annotations

from podrun.lean import Record
from podrun.model.netspec import NetMode, NetSpec, PortSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final


_APP_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def is_app_name(name: object) -> bool:
    """An app name: 1-63 lower-case letters, digits and '-', starting and ending with a letter
    or digit (rkt's and Kubernetes' DNS label)."""
    return (isinstance(name, str) and 0 < len(name) < 64 and set(name) <= _APP_NAME_CHARS
            and "-" not in (name[0], name[-1]))


MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 is upgraded on reading (_upgrade_v1)
MANIFEST = "pod.json"  # the pod manifest's file name in the pod directory
SECCOMP_BPF = "seccomp.bpf"  # an app's compiled seccomp program: apps/NAME/seccomp.bpf in the pod dir
SECCOMP_SPEC = "seccomp.json"  # an oci app's filter as runtime-spec linux.seccomp (its runtime compiles it)
# Each app's log file is rotated once past this many bytes (--log-max-size; -1: no limit).
LOG_MAX_SIZE = 8 << 20


def seccomp_spec_path(app_name: str) -> str:
    """Where stage0 writes the runtime-spec form (JSON) of an ``oci`` app's seccomp filter."""
    return f"apps/{app_name}/{SECCOMP_SPEC}"


def seccomp_bpf_path(app_name: str) -> str:
    """Where stage0 writes *app_name*'s seccomp program, relative to the pod dir."""
    return f"apps/{app_name}/{SECCOMP_BPF}"


class MountSpec(Record):
    volume: Final[str]
    target: Final[str]

    __slots__ = ("volume", "target")

    def __init__(self, volume: str, target: str) -> None:
        self.volume = volume
        self.target = target


class Volume(Record):
    name: Final[str]
    kind: Final[str]  # "host" | "empty"
    source: Final[str | None]  # host path for kind=host
    read_only: Final[bool]

    __slots__ = ("name", "kind", "source", "read_only")

    def __init__(self, name: str, kind: str, source: str | None = None, read_only: bool = False) -> None:
        self.name = name
        self.kind = kind
        self.source = source
        self.read_only = read_only


class Resources(Record):
    memory_max: Final[int | None]  # bytes
    cpu_millis: Final[int | None]
    pids_max: Final[int | None]

    __slots__ = ("memory_max", "cpu_millis", "pids_max")

    def __init__(
        self, memory_max: int | None = None,
        cpu_millis: int | None = None,
        pids_max: int | None = None,
    ) -> None:
        self.memory_max = memory_max
        self.cpu_millis = cpu_millis
        self.pids_max = pids_max


class AppSpec(Record):
    name: Final[str]
    image_id: Final[str]
    image_name: Final[str]
    lower_dirs: Final[tuple[str, ...]]  # overlay lowerdirs, bottom layer first
    exec_argv: Final[tuple[str, ...]]
    env: Final[tuple[str, ...]]  # "K=V", final precedence already applied
    user: Final[str]
    group: Final[str | None]
    supplementary_gids: Final[tuple[int, ...]]
    working_dir: Final[str]
    mounts: Final[tuple[MountSpec, ...]]
    read_only_rootfs: Final[bool]
    resources: Final[Resources]
    capabilities: Final[tuple[int, ...]]  # the kernel's numbers of the capabilities the app keeps, ascending
    seccomp_bpf: Final[str | None]  # the compiled program, relative to the pod dir; None: no filter (fly)
    no_new_privileges: Final[bool]
    stop_signal: Final[int]  # what a stop request (SIGTERM to the pod) sends this app: image StopSignal, --stop-signal

    __slots__ = ("name", "image_id", "image_name", "lower_dirs", "exec_argv", "env", "user", "group",
                 "supplementary_gids", "working_dir", "mounts", "read_only_rootfs", "resources", "capabilities",
                 "seccomp_bpf", "no_new_privileges", "stop_signal")

    def __init__(
        self, name: str,
        image_id: str,
        image_name: str,
        lower_dirs: tuple[str, ...],
        exec_argv: tuple[str, ...],
        env: tuple[str, ...],
        user: str = "0",
        group: str | None = None,
        supplementary_gids: tuple[int, ...] = (),
        working_dir: str = "/",
        mounts: tuple[MountSpec, ...] = (),
        read_only_rootfs: bool = False,
        resources: Resources | None = None,
        capabilities: tuple[int, ...] = (),
        seccomp_bpf: str | None = None,
        no_new_privileges: bool = True,
        stop_signal: int = 15,
    ) -> None:
        self.name = name
        self.image_id = image_id
        self.image_name = image_name
        self.lower_dirs = lower_dirs
        self.exec_argv = exec_argv
        self.env = env
        self.user = user
        self.group = group
        self.supplementary_gids = supplementary_gids
        self.working_dir = working_dir
        self.mounts = mounts
        self.read_only_rootfs = read_only_rootfs
        self.resources = Resources() if resources is None else resources
        self.capabilities = capabilities
        self.seccomp_bpf = seccomp_bpf
        self.no_new_privileges = no_new_privileges
        self.stop_signal = stop_signal


class PodManifest(Record):
    uuid: Final[str]
    apps: Final[tuple[AppSpec, ...]]
    volumes: Final[tuple[Volume, ...]]
    hostname: Final[str]
    net: Final[str]  # a NetMode: "none", "host" or "networks" (then ``networks`` lists them)
    stage1: Final[str]
    interactive: Final[bool]
    dns: Final[tuple[str, ...]]
    hosts_entries: Final[tuple[str, ...]]
    networks: Final[tuple[NetSpec, ...]]  # empty for net none/host
    ports: Final[tuple[PortSpec, ...]]
    dns_search: Final[tuple[str, ...]]
    dns_opts: Final[tuple[str, ...]]
    notify: Final[str]  # "ready": READY=1 once the apps run; "app": the app notifies (--notify)
    register: Final[bool]  # run in a transient systemd scope podrun-UUID.scope (--register)
    log_max_size: Final[int]  # bytes per app log file before rotation; -1: no limit
    runtime: Final[str]  # the OCI runtime's absolute path (stage1 oci); "" for other flavors
    pid_file: Final[str]  # where the supervisor's PID goes (--pid-file), absolute; "" for none
    version: Final[int]

    __slots__ = ("uuid", "apps", "volumes", "hostname", "net", "stage1", "interactive", "dns", "hosts_entries",
                 "networks", "ports", "dns_search", "dns_opts", "notify", "register", "log_max_size", "runtime",
                 "pid_file", "version")

    def __init__(
        self, uuid: str,
        apps: tuple[AppSpec, ...],
        volumes: tuple[Volume, ...] = (),
        hostname: str = "",
        net: str = NetMode.NONE,
        stage1: str = "default",
        interactive: bool = False,
        dns: tuple[str, ...] = (),
        hosts_entries: tuple[str, ...] = (),
        networks: tuple[NetSpec, ...] = (),
        ports: tuple[PortSpec, ...] = (),
        dns_search: tuple[str, ...] = (),
        dns_opts: tuple[str, ...] = (),
        notify: str = "ready",
        register: bool = False,
        log_max_size: int = LOG_MAX_SIZE,
        runtime: str = "",
        pid_file: str = "",
        version: int = MANIFEST_VERSION,
    ) -> None:
        self.uuid = uuid
        self.apps = apps
        self.volumes = volumes
        self.hostname = hostname
        self.net = net
        self.stage1 = stage1
        self.interactive = interactive
        self.dns = dns
        self.hosts_entries = hosts_entries
        self.networks = networks
        self.ports = ports
        self.dns_search = dns_search
        self.dns_opts = dns_opts
        self.notify = notify
        self.register = register
        self.log_max_size = log_max_size
        self.runtime = runtime
        self.pid_file = pid_file
        self.version = version

    def to_json(self) -> bytes:
        """The manifest as stage0 writes it (indented, sorted keys)."""
        import json

        return json.dumps(self.to_doc(), indent=1, sort_keys=True).encode()

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": self.version, "uuid": self.uuid, "apps": [_app_doc(a) for a in self.apps],
            "volumes": [{"name": v.name, "kind": v.kind, "source": v.source, "read_only": v.read_only}
                        for v in self.volumes],
            "hostname": self.hostname, "net": self.net, "stage1": self.stage1, "interactive": self.interactive,
            "dns": list(self.dns), "hosts_entries": list(self.hosts_entries),
            "networks": [{"name": n.name, "args": [list(kv) for kv in n.args]} for n in self.networks],
            "ports": [{"proto": p.proto, "pod_port": p.pod_port, "host_port": p.host_port, "host_ip": p.host_ip}
                      for p in self.ports],
            "dns_search": list(self.dns_search), "dns_opts": list(self.dns_opts), "notify": self.notify,
            "register": self.register, "log_max_size": self.log_max_size,
            **({"runtime": self.runtime} if self.runtime else {}),
            **({"pid_file": self.pid_file} if self.pid_file else {}),
        }

    @classmethod
    def from_json(cls, data: bytes) -> PodManifest:
        """Read a manifest of a readable version (ValueError, KeyError or TypeError if it is not one)."""
        import json

        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") not in READABLE_VERSIONS:
            version = doc.get("version") if isinstance(doc, dict) else None
            raise ValueError(f"unsupported pod manifest version {version!r}")
        if doc["version"] == 1:
            doc = _upgrade_v1(doc)
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> PodManifest:
        net = doc.get("net", NetMode.NONE)
        if net not in NetMode.ALL:
            raise ValueError(f"unknown network mode {net!r}")
        return cls(
            uuid=doc["uuid"], apps=tuple(_app(a) for a in doc["apps"]),
            volumes=tuple(Volume(v["name"], v["kind"], v.get("source"), bool(v.get("read_only", False)))
                          for v in doc.get("volumes", ())),
            hostname=doc.get("hostname", ""), net=net, stage1=doc.get("stage1", "default"),
            interactive=bool(doc.get("interactive", False)), dns=tuple(doc.get("dns", ())),
            hosts_entries=tuple(doc.get("hosts_entries", ())), version=MANIFEST_VERSION,
            networks=tuple(NetSpec(n["name"], tuple((str(k), str(v)) for k, v in n.get("args", ())))
                           for n in doc.get("networks", ())),
            ports=tuple(PortSpec(p["proto"], int(p["pod_port"]), int(p["host_port"]), p.get("host_ip", ""))
                        for p in doc.get("ports", ())),
            dns_search=tuple(doc.get("dns_search", ())), dns_opts=tuple(doc.get("dns_opts", ())),
            notify=str(doc.get("notify", "ready")), register=bool(doc.get("register", False)),
            log_max_size=int(doc.get("log_max_size", LOG_MAX_SIZE)), runtime=str(doc.get("runtime", "")),
            pid_file=str(doc.get("pid_file", "")),
        )


def _app_doc(a: AppSpec) -> dict[str, Any]:
    r = a.resources
    return {
        "name": a.name, "image_id": a.image_id, "image_name": a.image_name, "lower_dirs": list(a.lower_dirs),
        "exec_argv": list(a.exec_argv), "env": list(a.env), "user": a.user, "group": a.group,
        "supplementary_gids": list(a.supplementary_gids), "working_dir": a.working_dir,
        "mounts": [{"volume": m.volume, "target": m.target} for m in a.mounts],
        "read_only_rootfs": a.read_only_rootfs,
        "resources": {"memory_max": r.memory_max, "cpu_millis": r.cpu_millis, "pids_max": r.pids_max},
        "capabilities": list(a.capabilities), "seccomp_bpf": a.seccomp_bpf,
        "no_new_privileges": a.no_new_privileges, "stop_signal": a.stop_signal,
    }


def _app(a: dict[str, Any]) -> AppSpec:
    res = a.get("resources", {})
    caps = tuple(a.get("capabilities", ()))
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in caps):
        raise ValueError("capabilities are not capability numbers")
    return AppSpec(
        name=a["name"], image_id=a["image_id"], image_name=a["image_name"],
        lower_dirs=_paths(a["lower_dirs"]), exec_argv=tuple(a["exec_argv"]), env=tuple(a["env"]),
        user=a.get("user", "0"), group=a.get("group"),
        supplementary_gids=tuple(a.get("supplementary_gids", ())),
        working_dir=a.get("working_dir", "/"),
        mounts=tuple(MountSpec(m["volume"], m["target"]) for m in a.get("mounts", ())),
        read_only_rootfs=bool(a.get("read_only_rootfs", False)),
        resources=Resources(res.get("memory_max"), res.get("cpu_millis"), res.get("pids_max")),
        capabilities=caps, seccomp_bpf=a.get("seccomp_bpf"),
        no_new_privileges=bool(a.get("no_new_privileges", True)),
        stop_signal=int(a.get("stop_signal", 15)),
    )


def _paths(value: Any) -> tuple[str, ...]:
    """A list of absolute paths, never coerced (``tuple("/x")`` would be two "paths")."""
    if not isinstance(value, list) or not all(isinstance(p, str) and p.startswith("/") for p in value):
        raise TypeError("lower_dirs is not a list of absolute paths")
    return tuple(value)


def _upgrade_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """A version 1 manifest as version 2 records it.  Version 1 kept flag texts; its stage0
    had already compiled each default-flavor app's program into the pod dir (``seccomp.bpf``,
    the file version 2 names), and its stage1 looked the capability names up and tested the
    ``--net`` text against none/host, as done here.  A program missing from such a pod is
    not rebuilt: stage1 refuses the pod (prepare it again)."""
    # The capability table (linux/capability.h), read only for version 1 documents
    # (docs/architecture.md, "Pod manifest versions").
    from podrun.model.caps import CAP_NAMES

    net = doc.get("net", NetMode.NONE)
    flavor = doc.get("stage1", "default")
    apps = []
    for a in doc["apps"]:
        names = a.get("capabilities", ())
        if not all(isinstance(n, str) and n in CAP_NAMES for n in names):
            raise ValueError("version 1 manifest: unknown capability name")
        apps.append({**a, "capabilities": sorted(CAP_NAMES[n] for n in names),
                     "seccomp_bpf": seccomp_bpf_path(a["name"]) if flavor == "default" else None})
    return {**doc, "version": 2, "apps": apps, "net": net if net in (NetMode.NONE, NetMode.HOST) else NetMode.NETWORKS}
