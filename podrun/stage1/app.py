"""stage2 launcher: turns a forked child of the pod's pid 1 into one app.

Everything this code needs must be imported (and every ctypes library loaded) *before*
``pivot_root``: afterwards the host's files, podrun's own modules included, are out of reach.

In order: own mount namespace; the mount plan applied inside the app's overlay root; root made
read-only if asked; ``pivot_root`` and the old root detached; stdin; user and groups resolved
from the image's own /etc/passwd and /etc/group; every other fd closed *before* the working
directory is entered (so ``/proc/self/fd/N`` cannot name a host directory, runc
CVE-2024-21626); identity, capabilities, no_new_privs and seccomp; ``execve``.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import sys

from podrun.isolation import syscalls as sc
from podrun.stage1 import confine
from podrun.stage1.mountplan import DEV_SYMLINKS, DEVICES, DevNodes, Mask, Mount, ReadOnly

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from podrun.pod.manifest import AppSpec
    from podrun.stage1.mountplan import Op

EXIT_SETUP_FAILED = 254  # podrun could not start the app
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def ensure_in_root(root_fd: int, path: str, is_file: bool, _depth: int = 0) -> int:
    """O_PATH fd of *path* inside the root, creating it (and parents) when missing.

    Resolution never leaves the root (openat2 RESOLVE_IN_ROOT).  A dangling symlink on the way
    is followed the same way: its target is created *inside* the root, as if the root were /.
    """
    try:
        return sc.open_in_root(root_fd, path)
    except FileNotFoundError:
        pass
    if _depth > 40:
        raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
    parent, _, name = path.rstrip("/").rpartition("/")
    pfd = ensure_in_root(root_fd, parent or "/", False, _depth + 1)
    try:
        dfd = os.open(sc.fd_path(pfd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.close(pfd)
    link = None
    try:
        if stat.S_ISLNK(os.lstat(name, dir_fd=dfd).st_mode):
            link = os.readlink(name, dir_fd=dfd)
        elif is_file:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd))
        else:
            os.mkdir(name, 0o755, dir_fd=dfd)
    except FileNotFoundError:
        if is_file:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd))
        else:
            os.mkdir(name, 0o755, dir_fd=dfd)
    finally:
        os.close(dfd)
    if link is not None:
        # normpath clamps leading '..' at '/', which is exactly RESOLVE_IN_ROOT's rule
        target = posixpath.normpath(link if link.startswith("/") else posixpath.join("/", parent, link))
        return ensure_in_root(root_fd, target, is_file, _depth + 1)
    return sc.open_in_root(root_fd, path)


def _mount_on(root_fd: int, target: str, source: str | None, fstype: str | None, flags: int, data: str | None,
              is_file: bool = False) -> None:
    tfd = ensure_in_root(root_fd, target, is_file)
    try:
        sc.mount(source, sc.fd_path(tfd), fstype, flags, data)
    finally:
        os.close(tfd)


def _remount_ro(root_fd: int, target: str, extra: int = 0) -> None:
    tfd = sc.open_in_root(root_fd, target)  # reopened: names the new mount's root
    try:
        sc.mount(None, sc.fd_path(tfd), None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | extra)
    finally:
        os.close(tfd)


def apply_plan(root: str, plan: list[Op]) -> None:
    """Apply a mount plan to the app root *root* (a mount point, in this process's mount ns)."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for op in plan:
            if isinstance(op, Mount):
                if op.fstype is None and op.read_only:
                    _mount_on(root_fd, op.target, op.source, None, op.flags, None, op.is_file)
                    _remount_ro(root_fd, op.target, sc.MS_NOSUID | sc.MS_NODEV)
                else:
                    _mount_on(root_fd, op.target, op.source, op.fstype, op.flags, op.data, op.is_file)
            elif isinstance(op, Mask):
                _mask(root_fd, op.target)
            elif isinstance(op, ReadOnly):
                _read_only(root_fd, op.target)
            elif isinstance(op, DevNodes):
                _dev_nodes(root_fd)
    finally:
        os.close(root_fd)


def _mask(root_fd: int, target: str) -> None:
    try:
        tfd = sc.open_in_root(root_fd, target)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        if stat.S_ISDIR(os.fstat(tfd).st_mode):
            sc.mount("tmpfs", sc.fd_path(tfd), "tmpfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                     "size=0,mode=0")
        else:
            sc.mount("/dev/null", sc.fd_path(tfd), None, sc.MS_BIND)
    finally:
        os.close(tfd)


def _read_only(root_fd: int, target: str) -> None:
    try:
        tfd = sc.open_in_root(root_fd, target)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        sc.mount(sc.fd_path(tfd), sc.fd_path(tfd), None, sc.MS_BIND | sc.MS_REC)
    finally:
        os.close(tfd)
    _remount_ro(root_fd, target, sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def _dev_nodes(root_fd: int) -> None:
    dfd_path = sc.open_in_root(root_fd, "/dev")
    dfd = os.open(sc.fd_path(dfd_path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    os.close(dfd_path)
    try:
        for name, major, minor in DEVICES:
            os.mknod(name, 0o666 | stat.S_IFCHR, os.makedev(major, minor), dir_fd=dfd)
            os.chmod(name, 0o666, dir_fd=dfd)  # mknod honours the umask
        for target, name in DEV_SYMLINKS:
            os.symlink(target, name, dir_fd=dfd)
        for sub in ("pts", "shm", "mqueue"):
            os.mkdir(sub, 0o755, dir_fd=dfd)
    finally:
        os.close(dfd)


def enter_root(root: str) -> None:
    """pivot_root into *root* and detach the old root entirely."""
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount(".", sc.MNT_DETACH)
    os.chdir("/")


def lookup_user(user: str, group: str | None) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) from the app's own /etc/passwd and /etc/group."""
    passwd = _read_db("/etc/passwd")
    groups = _read_db("/etc/group")
    home = "/"
    if user.isdigit():
        uid = int(user)
        entry = next((p for p in passwd if len(p) > 5 and p[2] == user), None)
    else:
        entry = next((p for p in passwd if p[0] == user and len(p) > 5), None)
        if entry is None:
            raise LookupError(f"user {user!r} not found in the image's /etc/passwd")
        uid = int(entry[2])
    gid = int(entry[3]) if entry else uid
    if entry:
        home = entry[5] or "/"
    if group is not None:
        if group.isdigit():
            gid = int(group)
        else:
            gentry = next((g for g in groups if g[0] == group and len(g) > 2), None)
            if gentry is None:
                raise LookupError(f"group {group!r} not found in the image's /etc/group")
            gid = int(gentry[2])
    name = entry[0] if entry else None
    supplementary = sorted(
        {int(g[2]) for g in groups if len(g) > 3 and name and name in g[3].split(",") and g[2].isdigit()}
    )
    return uid, gid, supplementary, home


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f.read(1 << 20).splitlines() if line and line[0] != "#"]
    except OSError:
        return []


def launch(app: AppSpec, root: str, plan: list[Op], conf: confine.Confinement, interactive: bool,
           keep_fds: frozenset[int], cgroup_gate: int | None = None, listen: tuple[list[int], str] = ([], ""),
           extra_env: dict[str, str] | None = None) -> NoReturn:
    """Become *app* (called in a freshly forked child; never returns).

    With *cgroup_gate* (a pipe's read end), the parent moves this process into the app's
    cgroup meanwhile and writes one byte when done; the app then gets its own cgroup
    namespace, before its identity and confinement are set.  *listen*: socket-activation fds
    (and their names) to hand over from fd 3; *extra_env*: variables podrun adds (NOTIFY_SOCKET)."""
    try:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE)
        apply_plan(root, plan)
        if app.read_only_rootfs:
            sc.mount(None, root, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NODEV)
        enter_root(root)
        if not interactive:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        uid, gid, groups, home = lookup_user(app.user, app.group)
        groups = sorted(set(groups) | set(app.supplementary_gids))
        env = dict(e.split("=", 1) for e in app.env if "=" in e)
        env.setdefault("HOME", home)
        env.update(extra_env or {})
        if cgroup_gate is not None:
            if os.read(cgroup_gate, 1) != b"1":
                raise OSError("pod pid 1 did not place the app in its cgroup")
            os.close(cgroup_gate)
            sc.unshare(sc.CLONE_NEWCGROUP)  # the app sees its own cgroup as "/"
        sc.close_fds_from(3, keep_fds | frozenset(listen[0]))
        if listen[0]:
            from podrun.systemd import activation

            activation.install(listen[0])
            env.update(activation.environment(listen[0], listen[1]))
        workdir = app.working_dir or "/"
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
        confine.apply(conf, uid, gid, groups)
    except Exception as exc:
        fail(app.name, f"setting up: {exc}")
    argv = list(app.exec_argv)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_NOT_EXECUTABLE
        fail(app.name, f"cannot execute {argv[0]!r}: {exc.strerror}", code)


def fail(name: str, message: str, code: int = EXIT_SETUP_FAILED) -> NoReturn:
    try:
        sys.stderr.write(f"podrun: app {name}: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(code)

