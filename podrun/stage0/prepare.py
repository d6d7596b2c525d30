"""stage0's pod preparation: image configs merged with flags into a PodManifest, then the pod
directory written (embryo -> prepared/run) and the flavor's ``run`` entrypoint exec'd.

Precedence (rkt's, and the issue's): image env < ``--set-env-file`` < ``--set-env`` <
``--environment``; ``--exec`` replaces the image's Entrypoint+Cmd, ``-- ARGS`` replace Cmd.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from podrun import faults
from podrun.abi import STAGE1_FLAVORS
from podrun.errors import NotFoundError, UsageError, VerificationError
from podrun.lean import Record
from podrun.model.manifest import (
    LOG_MAX_SIZE,
    AppSpec,
    MountSpec,
    PodManifest,
    Resources,
    Volume,
    seccomp_bpf_path,
    seccomp_spec_path,
)
from podrun.pod import layout
from podrun.pod.layout import PodDirs
from podrun.stage0 import appflags as af

TYPE_CHECKING = False  # typing costs ~4 ms at start-up; annotations only (podrun.lean)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final, NoReturn

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageInfo(Record):
    """What preparation needs from the store about one image."""

    id: Final[str]
    name: Final[str]
    config: Final[dict[str, Any]]
    lower_dirs: Final[tuple[str, ...]]  # bottom layer first

    __slots__ = ("id", "name", "config", "lower_dirs")

    def __init__(self, id: str, name: str, config: dict[str, Any], lower_dirs: tuple[str, ...]) -> None:
        self.id = id
        self.name = name
        self.config = config
        self.lower_dirs = lower_dirs


class RunRequest(Record):
    apps: list[af.AppArgs]
    stage1: str
    hostname: str
    net: str
    interactive: bool
    volumes: list[str]
    set_env: list[str]
    set_env_file: str | None
    dns: list[str]
    hosts_entries: list[str]
    ports: list[str]
    dns_search: list[str]
    dns_opts: list[str]
    notify: str | None
    register: bool
    log_max_size: str | None  # the flag's text; None: the manifest's default
    runtime: str | None  # --runtime (stage1 oci): a name looked up in PATH, or a path
    pid_file: str | None  # --pid-file, as given

    __slots__ = ("apps", "stage1", "hostname", "net", "interactive", "volumes", "set_env", "set_env_file", "dns",
                 "hosts_entries", "ports", "dns_search", "dns_opts", "notify", "register", "log_max_size", "runtime",
                 "pid_file")

    def __init__(
        self, apps: list[af.AppArgs],
        stage1: str = "default",
        hostname: str = "",
        net: str = "default",
        interactive: bool = False,
        volumes: list[str] | None = None,
        set_env: list[str] | None = None,
        set_env_file: str | None = None,
        dns: list[str] | None = None,
        hosts_entries: list[str] | None = None,
        ports: list[str] | None = None,
        dns_search: list[str] | None = None,
        dns_opts: list[str] | None = None,
        notify: str | None = None,
        register: bool = False,
        log_max_size: str | None = None,
        runtime: str | None = None,
        pid_file: str | None = None,
    ) -> None:
        self.apps = apps
        self.stage1 = stage1
        self.hostname = hostname
        self.net = net
        self.interactive = interactive
        self.volumes = list() if volumes is None else volumes
        self.set_env = list() if set_env is None else set_env
        self.set_env_file = set_env_file
        self.dns = list() if dns is None else dns
        self.hosts_entries = list() if hosts_entries is None else hosts_entries
        self.ports = list() if ports is None else ports
        self.dns_search = list() if dns_search is None else dns_search
        self.dns_opts = list() if dns_opts is None else dns_opts
        self.notify = notify
        self.register = register
        self.log_max_size = log_max_size
        self.runtime = runtime
        self.pid_file = pid_file


ENV_FILE_MAX = 1 << 20  # --set-env-file: at most 1 MiB
ENV_FILE_TIMEOUT = 30.0  # seconds a pipe (``<(cmd)``, a FIFO) may take to reach its end


def _read_env_file(path: str, timeout: float) -> bytes:
    """The bytes of a regular file or a pipe, never of a device (``/dev/zero`` reads forever,
    a tty or tape may act on open): the path is opened O_PATH, checked, then the same inode
    reopened through /proc.  At most ENV_FILE_MAX bytes; a pipe must end within *timeout*."""
    import stat

    try:
        path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read --set-env-file {path!r}: {exc.strerror}") from None
    try:
        mode = os.fstat(path_fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise UsageError(f"invalid --set-env-file {path!r}: not a regular file or a pipe")
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read --set-env-file {path!r}: {exc.strerror}") from None
    finally:
        os.close(path_fd)
    try:
        return _read_bounded(fd, path, None if stat.S_ISREG(mode) else timeout)
    finally:
        os.close(fd)


def _read_bounded(fd: int, path: str, timeout: float | None) -> bytes:
    """Read *fd* to its end; with a *timeout*, *fd* is a non-blocking pipe waited on with poll
    (a FIFO's poll waits for a writer, where its read would say end-of-file at once)."""
    import select

    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = bytearray()
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise UsageError(f"invalid --set-env-file {path!r}: the pipe did not end within {timeout:g} seconds")
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise UsageError(f"cannot read --set-env-file {path!r}: {exc.strerror}") from None
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > ENV_FILE_MAX:
            raise UsageError(f"invalid --set-env-file {path!r}: larger than {ENV_FILE_MAX >> 20} MiB")


def _env_file(path: str, timeout: float = ENV_FILE_TIMEOUT) -> list[str]:
    data = _read_env_file(path, timeout)
    if b"\0" in data:
        raise UsageError(f"invalid --set-env-file {path!r}: contains a NUL byte")
    try:
        lines = data.decode().split("\n")  # not splitlines: \x1c, \x85, \u2028... belong to values
    except UnicodeDecodeError:
        raise UsageError(f"invalid --set-env-file {path!r}: not UTF-8 text") from None
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise UsageError(f"--set-env-file {path!r} line {n}: expected KEY=VALUE")
        out.append(line)
    return out


def _merge_env(*layers: list[str]) -> tuple[str, ...]:
    env: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise UsageError(f"invalid environment entry {item!r}: expected KEY=VALUE")
            env[k] = v
    if "PATH" not in env:
        env["PATH"] = DEFAULT_PATH.split("=", 1)[1]
    # systemd-detect-virt and others read it; podman sets container=podman the same way
    env.setdefault("container", "podrun")
    return tuple(f"{k}={v}" for k, v in env.items())


def _volumes(specs: list[str]) -> dict[str, Volume]:
    out: dict[str, Volume] = {}
    for spec in specs:
        name, kv = af.parse_kv_list("--volume", spec)
        if not name:
            raise UsageError(f"invalid --volume {spec!r}: expected NAME,kind=host|empty,…")
        af.check_app_name(name)
        kind = kv.pop("kind", "")
        read_only = af.parse_bool("--volume readOnly", kv.pop("readOnly", "false"))
        if kind == "host":
            source = kv.pop("source", "")
            if not source.startswith("/"):
                raise UsageError(f"invalid --volume {spec!r}: kind=host needs an absolute source=PATH")
            if not os.path.isdir(source) and not os.path.isfile(source):
                raise NotFoundError(f"--volume {name}: source {source!r} does not exist")
            vol = Volume(name, "host", os.path.realpath(source), read_only)
        elif kind == "empty":
            vol = Volume(name, "empty", None, read_only)
        else:
            raise UsageError(f"invalid --volume {spec!r}: kind must be host or empty")
        if kv:
            raise UsageError(f"invalid --volume {spec!r}: unknown key(s) {', '.join(sorted(kv))}")
        if name in out:
            raise UsageError(f"--volume {name} given twice")
        out[name] = vol
    return out


class AppFlags(Record):
    """One app's flags, parsed and checked before any image is fetched: bad input changes
    neither the store nor the pods."""

    user: Final[str | None]
    group: Final[str | None]
    supplementary_gids: Final[tuple[int, ...]]
    working_dir: Final[str | None]
    mounts: Final[tuple[MountSpec, ...]]
    resources: Final[Resources]
    capabilities: Final[tuple[str, ...]]  # names, as the seccomp policy takes them

    __slots__ = ("user", "group", "supplementary_gids", "working_dir", "mounts", "resources", "capabilities")

    def __init__(
        self, user: str | None,
        group: str | None,
        supplementary_gids: tuple[int, ...],
        working_dir: str | None,
        mounts: tuple[MountSpec, ...],
        resources: Resources,
        capabilities: tuple[str, ...],
    ) -> None:
        self.user = user
        self.group = group
        self.supplementary_gids = supplementary_gids
        self.working_dir = working_dir
        self.mounts = mounts
        self.resources = resources
        self.capabilities = capabilities


def parse_app_flags(args: af.AppArgs, vols: dict[str, Volume]) -> AppFlags:
    flags = args.flags
    if "--name" in flags:
        af.check_app_name(flags["--name"][:63].lower())
    mounts = []
    for m in args.mounts:
        _, kv = af.parse_kv_list("--mount", m)
        vol, target = kv.pop("volume", ""), kv.pop("target", "")
        if vol not in vols:
            raise UsageError(f"--mount {m!r}: no volume named {vol!r}", hint="declare it with --volume")
        if kv:
            raise UsageError(f"invalid --mount {m!r}: unknown key(s) {', '.join(sorted(kv))}")
        mounts.append(MountSpec(vol, af.check_abs_path("--mount target", target)))
    res = Resources(
        memory_max=af.parse_memory("--memory", flags["--memory"]) if "--memory" in flags else None,
        cpu_millis=af.parse_cpu("--cpu", flags["--cpu"]) if "--cpu" in flags else None,
        pids_max=af.parse_pids_limit("--pids-limit", flags["--pids-limit"]) if "--pids-limit" in flags else None,
    )
    from podrun.pod import caps_policy

    caps = caps_policy.resolve_caps(flags.get("--caps-retain"), flags.get("--caps-remove"))
    if "--seccomp" in flags:
        from podrun.pod import seccomp_policy

        seccomp_policy.parse_seccomp_flag(flags["--seccomp"], caps)
    workdir = flags.get("--working-dir") or None  # empty: the image's, as before
    return AppFlags(
        user=af.check_identity("--user", flags["--user"]) if "--user" in flags else None,
        group=af.check_identity("--group", flags["--group"]) if "--group" in flags else None,
        supplementary_gids=af.parse_gids("--supplementary-gids", flags.get("--supplementary-gids", "")),
        working_dir=None if workdir is None else af.check_abs_path("--working-dir", workdir),
        mounts=tuple(mounts),
        resources=res,
        capabilities=tuple(sorted(caps)),
    )


def build_app(
    args: af.AppArgs, parsed: AppFlags, image: ImageInfo, req: RunRequest, base_env: list[str], used: set[str]
) -> AppSpec:
    cfg = image.config.get("config") or {}
    flags = args.flags
    name = flags.get("--name") or image.name.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    name = af.check_app_name(name[:63].lower())
    if name in used:
        if "--name" in flags:
            raise UsageError(f"app name {name!r} is used twice", hint="give each app a distinct --name")
        n = 2
        while f"{name}-{n}" in used:
            n += 1
        name = f"{name}-{n}"
    used.add(name)
    entrypoint = list(cfg.get("Entrypoint") or [])
    cmd = list(cfg.get("Cmd") or [])
    if "--exec" in flags:
        argv = [flags["--exec"], *(args.args or [])]
    else:
        argv = entrypoint + (args.args if args.args is not None else cmd)
    if not argv:
        raise UsageError(f"image {args.image!r} has no command", hint="use --exec PATH")
    # the image's User (user[:group]) is checked as the flags are (hostile images: SECURITY-TESTS 28)
    cfg_user, _, cfg_group = (cfg.get("User") or "").partition(":")
    what = f"User of image {args.image!r}:"
    user = parsed.user or af.check_identity(f"{what} user", cfg_user or "0", VerificationError)
    group = parsed.group or (af.check_identity(f"{what} group", cfg_group, VerificationError) if cfg_group else None)
    from podrun.pod import caps_policy

    return AppSpec(
        name=name,
        image_id=image.id,
        image_name=image.name,
        lower_dirs=image.lower_dirs,
        exec_argv=tuple(argv),
        env=_merge_env(list(cfg.get("Env") or []), base_env, req.set_env, args.environment),
        user=user,
        group=group,
        supplementary_gids=parsed.supplementary_gids,
        working_dir=parsed.working_dir or af.check_abs_path("the image's WorkingDir", cfg.get("WorkingDir") or "/"),
        mounts=parsed.mounts,
        read_only_rootfs=flags.get("--readonly-rootfs") == "True",
        resources=parsed.resources,
        capabilities=tuple(sorted(caps_policy.cap_numbers(frozenset(parsed.capabilities)))),
        # the filter stage0 writes for stage1: default's compiled, oci's in runtime-spec form
        # (its runtime compiles it); fly confines nothing
        seccomp_bpf={"default": seccomp_bpf_path(name), "oci": seccomp_spec_path(name)}.get(req.stage1),
        no_new_privileges=flags.get("--no-new-privileges", "True") == "True",
        stop_signal=_stop_signal(flags, cfg),
    )


def _stop_signal(flags: dict[str, str], cfg: dict[str, Any]) -> int:
    """``--stop-signal``, else the image's StopSignal, else SIGTERM (Docker's and podman's rule)."""
    if "--stop-signal" in flags:
        return af.parse_signal("--stop-signal", flags["--stop-signal"])
    image_signal = cfg.get("StopSignal")
    if image_signal in (None, ""):
        return 15
    if not isinstance(image_signal, str):
        raise VerificationError(f"the image's StopSignal {image_signal!r} is not a string")
    try:
        return af.parse_signal("the image's StopSignal", image_signal)
    except UsageError as exc:
        raise VerificationError(str(exc)) from None


class PodPlan(Record):
    """What stage0 decided: the manifest, and what each app's seccomp program (named by the
    manifest) is compiled from: the ``--seccomp`` text (None: the default filter) and the
    capability names the app keeps."""

    manifest: Final[PodManifest]
    seccomp: Final[dict[str, tuple[str | None, frozenset[str]]]]  # app name -> program source

    __slots__ = ("manifest", "seccomp")

    def __init__(self, manifest: PodManifest, seccomp: dict[str, tuple[str | None, frozenset[str]]]) -> None:
        self.manifest = manifest
        self.seccomp = seccomp


def build_manifest(req: RunRequest, resolve: Callable[[str], ImageInfo]) -> PodManifest:
    """The pod manifest of *req* (``build_pod``)."""
    return build_pod(req, resolve).manifest


def build_pod(req: RunRequest, resolve: Callable[[str], ImageInfo]) -> PodPlan:
    """Every flag is parsed and checked first, then the images are resolved (fetched)."""
    if req.stage1 not in STAGE1_FLAVORS:
        raise UsageError(f"unknown --stage1 {req.stage1!r} (choose from {', '.join(STAGE1_FLAVORS)})")
    from podrun.model import netspec as spec

    net = req.net.strip()
    if req.stage1 == "fly":  # fly runs in the host's namespaces
        if net not in ("default", "host"):
            raise UsageError(f"--stage1 fly runs in the host's network: --net {net!r} is not possible")
        net = "host"
    networks = spec.parse_net(net)
    if any(n.name == "default" for n in networks):
        from podrun.net import config

        config.default_net()  # a bad default.json fails here, before the pod exists
    spec.check_dns(req.dns)
    spec.check_resolv_words(req.dns_search, req.dns_opts)
    for entry in req.hosts_entries:
        spec.check_hosts_entry(entry)
    if req.hostname:
        spec.check_hostname(req.hostname)
    if req.ports and not any(n.name == "default" for n in networks):
        raise UsageError("--port needs the default network (--net=default, possibly among others)")
    if req.register:
        from podrun.systemd import scope

        if not scope.available():
            raise UsageError("--register needs systemd as the host's service manager (/run/systemd/system)")
        if req.stage1 != "default":
            raise UsageError("--register works with --stage1 default")
    if req.interactive and len(req.apps) != 1:
        raise UsageError("--interactive needs exactly one app")
    if req.stage1 == "fly" and len(req.apps) != 1:
        raise UsageError("--stage1 fly runs exactly one app")
    if req.stage1 == "fly" and req.pid_file:
        raise UsageError("--pid-file needs a supervisor to remove it: --stage1 fly execs the app")
    runtime = ""
    if req.stage1 == "oci":
        from podrun.stage0 import runtime as oci_runtime

        runtime = oci_runtime.resolve(req.runtime or oci_runtime.DEFAULT)
        oci_runtime.check_network(runtime, net)
    elif req.runtime is not None:
        raise UsageError(f"--runtime {req.runtime!r} needs --stage1 oci")
    log_max_size = LOG_MAX_SIZE if req.log_max_size is None else af.parse_log_max_size("--log-max-size",
                                                                                         req.log_max_size)
    base_env = _env_file(req.set_env_file) if req.set_env_file else []
    vols = _volumes(req.volumes)
    parsed = [parse_app_flags(a, vols) for a in req.apps]
    used: set[str] = set()
    images = [resolve(a.image) for a in req.apps]
    apps = tuple(build_app(a, p, image, req, base_env, used) for a, p, image in zip(req.apps, parsed, images,
                                                                                   strict=True))
    exposed: dict[str, tuple[str, int]] = {}
    for image in images:
        exposed.update(spec.exposed_port_names(image.config))
    ports = tuple(spec.parse_port(p, exposed) for p in req.ports)
    seen = set()
    for p in ports:
        key = (p.proto, p.host_port, p.host_ip)
        if key in seen:
            raise UsageError(f"--port: host port {p.host_port}/{p.proto} given twice")
        seen.add(key)
    manifest = PodManifest(
        uuid=new_uuid(), apps=apps, volumes=tuple(vols.values()), hostname=req.hostname, net=spec.net_mode(net),
        stage1=req.stage1, interactive=req.interactive, dns=tuple(req.dns), hosts_entries=tuple(req.hosts_entries),
        networks=networks, ports=ports, dns_search=tuple(req.dns_search), dns_opts=tuple(req.dns_opts),
        notify=req.notify or _notify_label(images), register=req.register, log_max_size=log_max_size,
        runtime=runtime, pid_file=pid_file_path(req.pid_file),
    )
    sources = {app.name: (a.flags.get("--seccomp"), frozenset(p.capabilities))
               for a, p, app in zip(req.apps, parsed, apps, strict=True) if app.seccomp_bpf is not None}
    return PodPlan(manifest, sources)


def pid_file_path(path: str | None) -> str:
    """``--pid-file``'s absolute path for the manifest (stage1 removes the file at the pod's end,
    whatever its working directory), or "" without one.  A name of an open descriptor is
    refused: a PID file is a file that can be read and removed by name."""
    if not path:
        return ""
    from podrun import fsutil

    if fsutil.fd_alias(path) is not None:
        raise UsageError(f"--pid-file {path!r}: name a file, not a descriptor")
    if "\0" in path:
        raise UsageError("--pid-file: the path holds a NUL byte")
    return os.path.normpath(os.path.abspath(path))


def _notify_label(images: list[ImageInfo]) -> str:
    """``app`` if an image asks for it (label ``io.podrun.notify=app``), else ``ready``."""
    for image in images:
        labels = (image.config.get("config") or {}).get("Labels") or {}
        if isinstance(labels, dict) and labels.get("io.podrun.notify") == "app":
            return "app"
    return "ready"


def new_uuid() -> str:
    """A random (version 4) UUID; the uuid module costs ~10 ms to import (it loads platform)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stages_dir() -> Path:
    """Where the stage1 flavors are: ``$PODRUN_STAGES_DIR`` if set; else the package's own
    ``podrun/_stages`` (an installed wheel, ``pip install .``, pipx, the .deb: setup.py maps the
    repository's ``stages/`` there); else the source tree's ``stages/`` beside the package (a
    checkout, an editable install).  docs/packaging.md has the table."""
    env = os.environ.get("PODRUN_STAGES_DIR")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    installed = package / "_stages"
    if installed.is_dir():
        return installed
    return package.parent / "stages"


def entrypoint(flavor: str, name: str) -> Path:
    """The flavor's executable for entrypoint *name* (``run``, ``enter``…), refused when the
    flavor is not of this podrun's ABI (podrun.abi)."""
    from podrun import abi

    return abi.entrypoint(stages_dir(), flavor, name)


def exec_stage1(entry: Path, pod_dir: Path, lock_fd: int, debug: bool, data_dir: str,
                manifest: PodManifest, ready_fd: int | None = None) -> NoReturn:
    """Replace this process with the flavor's ``run`` entrypoint *entry* (found, and its ABI
    checked, before the pod was written), handing over the pod lock, the ``--ready-fd``
    descriptor and, to podrun's own flavors, the decided *manifest* (the contract: podrun.abi,
    man/podrun-stage1.7)."""
    from podrun import abi

    argv = abi.run_argv(entry, abi.RunArgs(str(pod_dir), debug))
    os.set_inheritable(lock_fd, True)
    if ready_fd is not None:
        os.set_inheritable(ready_fd, True)  # kept open across the exec (an inherited fd already is)
    manifest_fd = abi.manifest_memfd(manifest.to_doc()) if manifest.stage1 in abi.STAGE1_FLAVORS else None
    env = abi.stage1_env(data_dir, lock_fd, manifest_fd, ready_fd)
    if debug:
        sys.stderr.write("podrun: exec " + " ".join(argv) + f"  ({abi.ENV_LOCK_FD}={lock_fd})\n")
    sys.stdout.flush()
    sys.stderr.flush()
    faults.checkpoint("run:before-exec")
    os.execve(sys.executable, argv, env)


def create_pod(dirs: PodDirs, plan: PodPlan, phase: str) -> tuple[Path, int]:
    """Write the pod dir in embryo/ and move it to *phase* (``prepared`` or ``run``), lock held."""
    manifest = plan.manifest
    files = {}
    if plan.seccomp:
        from podrun.pod.seccomp_cache import seccomp_program

        cache = os.path.join(dirs.data_dir, "cache", "seccomp")
        if manifest.stage1 == "oci":
            from podrun.pod.seccomp_cache import seccomp_section

            files = {seccomp_spec_path(name): seccomp_section(flag, caps)
                     for name, (flag, caps) in plan.seccomp.items()}
        else:
            files = {seccomp_bpf_path(name): seccomp_program(flag, caps, cache)
                     for name, (flag, caps) in plan.seccomp.items()}
    for net in manifest.networks:
        if net.name != "default":
            import json

            from podrun.net import config

            # CNI DEL must see the configuration ADD saw, even if net.d changes meanwhile
            cni = json.dumps(config.load_cni(net.name), separators=(",", ":"))
            files[layout.cni_config_path(net.name)] = cni.encode()
    _, fd = dirs.create_embryo(manifest.uuid, manifest.to_json(), files, durable_files=phase == "prepared")
    faults.checkpoint("prepare:embryo-created")
    return dirs.move(manifest.uuid, "embryo", phase), fd
