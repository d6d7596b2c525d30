"""What ``run``, ``prepare`` and ``run-prepared`` do once their flags are parsed (by click in
``podrun.cli.run``, or by the fast path in ``podrun.cli.runflags``).  No click here."""

from __future__ import annotations

import fcntl
import os

from podrun.errors import PodrunError, UsageError, step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from podrun.fsutil import user_output
    from podrun.model.manifest import PodManifest
    from podrun.stage0 import Globals


def prepare_pod(g: Globals, kw: dict[str, Any], phase: str) -> tuple[PodManifest, Path, int]:
    """Fetch the images, write the pod dir in *phase* (``run`` or ``prepared``); lock held."""
    import json

    from podrun.image.api import FetchRequest, fetch
    from podrun.image.store import Store
    from podrun.pod.layout import PodDirs
    from podrun.stage0 import appflags
    from podrun.stage0.prepare import ImageInfo, RunRequest, build_pod, create_pod
    from podrun.trust.decide import PolicyGate

    store = Store(g.data_dir)
    gate = PolicyGate(g.signature_policy, g.registries_d, "image" in g.insecure)

    def resolve(image: str) -> ImageInfo:
        rec = fetch(store, FetchRequest(image, kw["pull_policy"], g.insecure, gate=gate))
        config = json.loads(store.read_blob(rec.config))
        names = store.names_of(rec.id)
        return ImageInfo(str(rec.id), names[0] if names else "app", config,
                         tuple(str(store.layer_rootfs(layer.diff_id)) for layer in rec.layers))

    req = RunRequest(
        apps=appflags.split_apps(list(kw["args"])), stage1=kw["stage1"], hostname=kw["hostname"], net=kw["net"],
        interactive=kw["interactive"], volumes=list(kw["volumes"]), set_env=list(kw["set_env"]),
        set_env_file=kw["set_env_file"], dns=list(kw["dns"]), hosts_entries=list(kw["hosts_entries"]),
        ports=list(kw["ports"]), dns_search=list(kw["dns_search"]), dns_opts=list(kw["dns_opts"]),
        notify=kw["notify"], register=kw["register"], log_max_size=kw["log_max_size"], runtime=kw["runtime"],
        pid_file=kw.get("pid_file"),
    )
    if phase == "prepared":
        if kw.get("ready_fd") is not None:
            raise UsageError("--ready-fd is a flag of run: the descriptor would be prepare's, not run-prepared's")
        open_pid_file(kw.get("pid_file")).close()  # refused now (a directory, a link), not at run-prepared
    uuid_file = None
    if kw["uuid_file_save"]:
        from podrun import fsutil

        # Opened (and a refused FILE reported) before any pod exists; fsutil.user_output says how.
        uuid_file = fsutil.user_output(kw["uuid_file_save"]).open()
    from podrun.pod import boot

    if not boot.boot_recorded():
        boot.reconcile(PodDirs(g.data_dir))
    try:
        # From resolving the images until the manifest naming their layers is on disk, `image gc`
        # must not run: it would not see this pod and delete what it is about to use.
        with store.using():
            plan = build_pod(req, resolve)
            manifest = plan.manifest
            dirs = PodDirs(g.data_dir)
            with step("writing the pod directory", dirs.data_dir / "pods"):
                pod_dir, lock_fd = create_pod(dirs, plan, phase)
        if uuid_file is not None:
            with step("writing the pod's UUID", kw["uuid_file_save"]):
                fsutil.write_all(uuid_file.fd, f"{manifest.uuid}\n".encode())
                uuid_file.commit()
    finally:
        if uuid_file is not None:
            uuid_file.close()
    return manifest, pod_dir, lock_fd


def open_pid_file(path: str | None) -> user_output:
    """``--pid-file``'s output, opened as ``--uuid-file-save``'s is (podrun.fsutil.user_output:
    a link, directory, socket or block device refused, a regular file replaced atomically by
    ``commit``); a do-nothing output without one."""
    from podrun import fsutil
    from podrun.stage0.prepare import pid_file_path

    out = fsutil.user_output(pid_file_path(path) if path else "")
    return out.open() if path else out


def write_pid(out: user_output, pod_dir: str | os.PathLike[str]) -> None:
    """Write this process's PID (the supervisor's once stage1 is exec'd) and make it the file's.
    First the pod directory records the PID and the file's device and inode numbers and mtime
    (``pid-file``), for ``podrun gc`` to remove the file after a kill -9 of the supervisor only
    while it is still this one (podrun.pod.gc); recorded before the file is in place, so no PID
    file exists without its record."""
    from podrun import fsutil
    from podrun.pod.layout import PID_FILE_RECORD

    if out.fd >= 0:
        with step("writing the PID file", out.path):
            fsutil.write_all(out.fd, f"{os.getpid()}\n".encode())
            st = os.fstat(out.fd)
        record = os.path.join(pod_dir, PID_FILE_RECORD)
        with step("recording the PID file", record):
            # Not fsynced: a power cut that empties it leaves the PID file to its readers.
            doc = fsutil.numbers_json({"pid": os.getpid(), "dev": st.st_dev, "ino": st.st_ino,
                                       "mtime_ns": st.st_mtime_ns})
            fsutil.atomic_write(record, doc, 0o644, durable=False)
        with step("writing the PID file", out.path):
            out.commit()


def check_ready_fd(text: str | None) -> int | None:
    """``--ready-fd N``: N, an open descriptor >= 3 podrun may write to, or None without the flag
    (UsageError, exit 253, before any pod exists)."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        raise UsageError(f"--ready-fd {text!r}: not a descriptor number")
    fd = int(text)
    if fd < 3:
        raise UsageError(f"--ready-fd {fd}: stdin, stdout and stderr are the apps' (give 3 or more)")
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        raise UsageError(f"--ready-fd {fd}: not an open descriptor") from None
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise UsageError(f"--ready-fd {fd}: open read-only, podrun writes the readiness newline to it")
    return fd


def run_pod(g: Globals, kw: dict[str, Any]) -> None:
    """``podrun run``: prepare, then become the pod (exec stage1); returns only on failure."""
    from podrun.abi import RUN, STAGE1_FLAVORS
    from podrun.stage0.prepare import entrypoint, exec_stage1

    ready_fd = check_ready_fd(kw.get("ready_fd"))
    if ready_fd is not None and kw["stage1"] == "fly":
        raise UsageError("--ready-fd needs a supervisor: --stage1 fly execs the app")
    # Found (and its ABI checked) before any pod exists; an unknown name is build_manifest's to refuse.
    entry = entrypoint(kw["stage1"], RUN) if kw["stage1"] in STAGE1_FLAVORS else None
    pid_out = open_pid_file(kw.get("pid_file"))
    try:
        manifest, pod_dir, lock_fd = prepare_pod(g, kw, "run")
        if ready_fd == lock_fd:  # open before the lock was taken, so only if something closed it
            raise PodrunError(f"--ready-fd {ready_fd} was closed while the pod was prepared")
        write_pid(pid_out, pod_dir)
    finally:
        pid_out.close()
    try:
        exec_stage1(entry or entrypoint(manifest.stage1, RUN), pod_dir, lock_fd, g.debug, g.data_dir, manifest,
                    ready_fd)
    except BaseException:
        _forget_pid(manifest)
        raise


def run_prepared(g: Globals, uuid: str) -> None:
    """``podrun run-prepared UUID`` (or unique prefix)."""
    from podrun.abi import RUN
    from podrun.errors import ConflictError
    from podrun.pod.layout import PodDirs, lock_pod, read_manifest
    from podrun.stage0.prepare import entrypoint, exec_stage1

    dirs = PodDirs(g.data_dir)
    phase, full = dirs.find(uuid)
    if phase != "prepared":
        raise ConflictError(f"pod {full} is {phase}, not prepared")
    lock_fd = lock_pod(dirs.path("prepared", full), blocking=False)
    try:
        manifest, _ = read_manifest(lock_fd)  # the lock is taken on the pod directory's own fd
    except (OSError, ValueError) as exc:
        raise PodrunError(f"pod {full}: unreadable manifest ({exc})") from None
    entry = entrypoint(manifest.stage1, RUN)  # a refused flavor leaves the pod prepared
    pid_out = open_pid_file(manifest.pid_file or None)  # a refused file leaves the pod prepared too
    try:
        write_pid(pid_out, dirs.path("prepared", full))
    finally:
        pid_out.close()
    try:
        pod_dir = dirs.move(full, "prepared", "run")
        exec_stage1(entry, pod_dir, lock_fd, g.debug, g.data_dir, manifest)
    except BaseException:
        _forget_pid(manifest)
        raise


def _forget_pid(manifest: PodManifest) -> None:
    """The exec failed: the PID file must not name this process, which is about to exit."""
    if manifest.pid_file:
        from podrun import fsutil

        fsutil.remove_pid_file(manifest.pid_file, os.getpid())
