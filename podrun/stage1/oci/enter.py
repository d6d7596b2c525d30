"""stage1 entrypoint ``enter`` of the ``oci`` flavor: ``RUNTIME exec`` in the app's container.

The runtime joins the container's namespaces and gives the command the app's process
settings (user, groups, capabilities, no_new_privs, rlimits, env, cwd: the ``process`` of the
app's ``config.json``, passed as ``exec --process``) and its seccomp filter, as ``podman
exec`` does.  This process first joins the app's cgroup (the runtime
manages none for crun, podrun.pod.ociruntime), then execs the runtime: the exit code is the
command's.  With a terminal on stdin and stdout the runtime is asked for one (``--tty``): it
allocates a pty in the container and relays it; the caller's terminal itself never enters.
"""

from __future__ import annotations

import os
import sys

from podrun import abi
from podrun.isolation import cgroups
from podrun.pod import layout, ociruntime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

EXIT_SETUP_FAILED = 254
CONFIG_LIMIT = 4 << 20  # bytes of an app's config.json (a few KiB: its seccomp section is the most)


def main(argv: list[str]) -> NoReturn:
    """``enter --pod-dir DIR --app NAME -- CMD...`` (the contract: podrun.abi)."""
    from podrun.pod.state import PodFileDamage, load_manifest, open_pod_dir, read_cgroups

    args = abi.enter_argv_or_exit(argv)
    pod_dir, name, cmd = args.pod_dir, args.app, args.command
    pod = os.path.basename(os.path.normpath(pod_dir))
    try:
        fd = open_pod_dir(pod_dir)
        try:
            manifest, _ = load_manifest(fd)
            cgroup_list = read_cgroups(fd)
        except PodFileDamage as exc:
            raise LookupError(f"pod {pod}: {exc}") from None
        finally:
            os.close(fd)
        if not manifest.runtime or not cgroup_list:
            raise LookupError(f"pod {pod} has not started yet")
        cid = ociruntime.container_id(manifest.uuid, name)
        if not ociruntime.state_entries(manifest.runtime, cid):
            raise LookupError(f"app {name} is not running")
        cgroups.open_existing(layout.app_cgroup_dirs(cgroup_list, name)).join()
    except Exception as exc:
        sys.stderr.write(f"podrun: enter: {exc}\n")
        sys.exit(EXIT_SETUP_FAILED)
    try:
        process = _process(pod_dir, name, cmd or ["/bin/sh"], os.isatty(0) and os.isatty(1))
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"podrun: enter: app {name}: its bundle: {exc}\n")
        sys.exit(EXIT_SETUP_FAILED)
    tty = ["--tty"] if process["terminal"] else []
    fd = _memfd(process)
    sys.stdout.flush()
    sys.stderr.flush()
    ociruntime.exec_runtime([*ociruntime.global_argv(manifest.runtime), "exec", *tty,
                             "--process", f"/proc/self/fd/{fd}", cid])


def _process(pod_dir: str, app: str, cmd: list[str], terminal: bool) -> dict[str, Any]:
    """The app's ``process`` from the config.json its supervisor wrote (read without following
    a link, bounded), with *cmd* as args: ``exec --process`` then gives the command the app's
    user, groups, capabilities, no_new_privs, rlimits, env and cwd (crun's ``exec`` otherwise
    runs as root with its own defaults)."""
    import json

    from podrun import fsutil

    path = os.path.join(pod_dir, layout.app_dir(app), "oci", "config.json")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        data = fsutil.read_at_most(fd, CONFIG_LIMIT)
    finally:
        os.close(fd)
    process = json.loads(data)["process"]
    if not isinstance(process, dict):
        raise ValueError("no process object")
    process["args"] = list(cmd)
    process["terminal"] = terminal
    return process


def _memfd(doc: dict[str, Any]) -> int:
    """*doc* as JSON in a memfd the runtime inherits (and reads as /proc/self/fd/N)."""
    import json

    fd = os.memfd_create("podrun-exec-process", 0)  # not close-on-exec: the runtime reads it
    os.write(fd, json.dumps(doc).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
