"""stage2 launcher: turns a forked child of the pod's supervisor into one app.

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

from podrun import fsutil
from podrun.isolation import syscalls as sc
from podrun.isolation.kernel import KERNEL, Kernel
from podrun.stage2 import activation, confine
from podrun.stage2.mountplan import DEV_SYMLINKS, DEVICES, DevNodes, Mask, Mount, ReadOnly

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from podrun.model.manifest import AppSpec
    from podrun.stage2.mountplan import Op

EXIT_SETUP_FAILED = 254  # podrun could not start the app
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def ensure_in_root(root_fd: int, path: str, is_file: bool, _depth: int = 0) -> int:
    """O_PATH fd of *path* inside the root, creating it (and parents) when missing.

    Resolution never leaves the root (openat2 RESOLVE_IN_ROOT) and never follows a /proc magic
    link (RESOLVE_NO_MAGICLINKS: ``/proc/1/cwd``, ``/proc/self/root/…`` fail with ELOOP).  A
    dangling symlink on the way is followed the same way: its target is created *inside* the
    root, as if the root were /.  Directories are opened by openat2 too, never reopened through
    /proc, so this works in a root whose /proc is not (or not yet) the pod's.
    """
    try:
        return sc.open_in_root(root_fd, path)
    except FileNotFoundError:
        pass
    if _depth > 40:
        raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
    parent, _, name = path.rstrip("/").rpartition("/")
    if name in ("", ".", ".."):
        raise OSError(errno.EINVAL, "not a creatable path", path)
    dfd = _dir_in_root(root_fd, parent or "/", _depth + 1)
    link = None
    try:
        try:
            if stat.S_ISLNK(os.lstat(name, dir_fd=dfd).st_mode):
                link = os.readlink(name, dir_fd=dfd)
            else:
                _create(dfd, name, is_file)
        except FileNotFoundError:
            _create(dfd, name, is_file)
    finally:
        os.close(dfd)
    if link is not None:
        # normpath clamps leading '..' at '/', which is exactly RESOLVE_IN_ROOT's rule
        target = posixpath.normpath(link if link.startswith("/") else posixpath.join("/", parent, link))
        return ensure_in_root(root_fd, target, is_file, _depth + 1)
    return sc.open_in_root(root_fd, path)


def _dir_in_root(root_fd: int, path: str, depth: int) -> int:
    """A readable directory fd of *path* inside the root, created when missing."""
    try:
        return sc.open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        os.close(ensure_in_root(root_fd, path, False, depth))
        return sc.open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY)


def _create(dfd: int, name: str, is_file: bool) -> None:
    if is_file:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd))
    else:
        os.mkdir(name, 0o755, dir_fd=dfd)


class SetupError(Exception):
    """A refusal while setting up an app, with a message for the user as it stands."""


def _path_error(what: str, path: str, exc: OSError) -> SetupError:
    if exc.errno == errno.ELOOP:
        return SetupError(f"{what} {path!r} leads through a /proc magic link or too many symbolic links (refused)")
    reason = (exc.strerror or str(exc)).rpartition(": ")[2]  # drop the syscall's name
    return SetupError(f"{what} {path!r}: {reason}")


def enter_workdir(path: str) -> None:
    """Make *path* (from the image or ``--working-dir``) the cwd, resolved inside the current root
    with no magic link followed and created there when missing (runc CVE-2024-21626; the
    ``WorkingDir: /proc/1/cwd`` escape, SECURITY-TESTS 24).  ``fchdir`` on the opened fd, so what
    was checked is what is entered."""
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = ensure_in_root(root_fd, path or "/", False)
    except OSError as exc:
        raise _path_error("working directory", path, exc) from None
    finally:
        os.close(root_fd)
    try:
        os.fchdir(fd)
    except OSError as exc:
        raise _path_error("working directory", path, exc) from None
    finally:
        os.close(fd)


def _mount_on(kernel: Kernel, root_fd: int, target: str, source: str | None, fstype: str | None, flags: int,
              data: str | None, is_file: bool = False) -> None:
    tfd = ensure_in_root(root_fd, target, is_file)
    try:
        kernel.mount(source, sc.fd_path(tfd), fstype, flags, data)
    finally:
        os.close(tfd)


def _remount_ro(kernel: Kernel, root_fd: int, target: str, extra: int = 0) -> None:
    tfd = sc.open_in_root(root_fd, target)  # reopened: names the new mount's root
    try:
        kernel.mount(None, sc.fd_path(tfd), None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | extra)
    finally:
        os.close(tfd)


def apply_plan(root: str, plan: list[Op], kernel: Kernel = KERNEL) -> None:
    """Apply a mount plan to the app root *root* (a mount point, in this process's mount ns)."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for op in plan:
            if isinstance(op, Mount):
                if op.fstype is None and op.read_only:
                    _mount_on(kernel, root_fd, op.target, op.source, None, op.flags, None, op.is_file)
                    _remount_ro(kernel, root_fd, op.target, sc.MS_NOSUID | sc.MS_NODEV)
                else:
                    _mount_on(kernel, root_fd, op.target, op.source, op.fstype, op.flags, op.data, op.is_file)
            elif isinstance(op, Mask):
                _mask(kernel, root_fd, op.target)
            elif isinstance(op, ReadOnly):
                _read_only(kernel, root_fd, op.target)
            elif isinstance(op, DevNodes):
                _dev_nodes(kernel, root_fd)
    finally:
        os.close(root_fd)


def _mask(kernel: Kernel, root_fd: int, target: str) -> None:
    try:
        tfd = sc.open_in_root(root_fd, target)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        if stat.S_ISDIR(os.fstat(tfd).st_mode):
            kernel.mount("tmpfs", sc.fd_path(tfd), "tmpfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                         "size=0,mode=0")
        else:
            kernel.mount("/dev/null", sc.fd_path(tfd), None, sc.MS_BIND)
    finally:
        os.close(tfd)


def _read_only(kernel: Kernel, root_fd: int, target: str) -> None:
    try:
        tfd = sc.open_in_root(root_fd, target)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        kernel.mount(sc.fd_path(tfd), sc.fd_path(tfd), None, sc.MS_BIND | sc.MS_REC)
    finally:
        os.close(tfd)
    _remount_ro(kernel, root_fd, target, sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def _dev_nodes(kernel: Kernel, root_fd: int) -> None:
    dfd_path = sc.open_in_root(root_fd, "/dev")
    dfd = os.open(sc.fd_path(dfd_path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    os.close(dfd_path)
    try:
        for name, major, minor in DEVICES:
            kernel.mknod(name, 0o666 | stat.S_IFCHR, os.makedev(major, minor), dfd)
        for target, name in DEV_SYMLINKS:
            os.symlink(target, name, dir_fd=dfd)
        for sub in ("pts", "shm", "mqueue"):
            os.mkdir(sub, 0o755, dir_fd=dfd)
    finally:
        os.close(dfd)


def enter_root(root: str, kernel: Kernel = KERNEL) -> None:
    """pivot_root into *root* and detach the old root entirely."""
    kernel.chdir(root)
    kernel.pivot_root(".", ".")
    kernel.umount(".", sc.MNT_DETACH)
    kernel.chdir("/")


def set_up_root(root: str, plan: list[Op], read_only: bool, kernel: Kernel = KERNEL) -> None:
    """The app's own mount namespace, *plan* applied in its overlay root *root* (made read-only
    after when *read_only*), then that root entered: the mount steps of ``launch``."""
    kernel.unshare(sc.CLONE_NEWNS)
    kernel.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE)
    apply_plan(root, plan, kernel)
    if read_only:
        kernel.mount(None, root, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NODEV)
    enter_root(root, kernel)


MAX_ID = 2**31 - 1  # runc's limit; -1 = 4294967295 would make setresuid keep root (SECURITY-TESTS 28)
MAX_DB_BYTES = 4 << 20  # /etc/passwd and /etc/group of an image


def parse_id(text: str, what: str) -> int:
    """A uid or gid in 0..MAX_ID, or SetupError naming *what* (``-1`` included)."""
    value = text.strip()
    digits = value[1:] if value[:1] in "+-" else value
    if not digits.isdigit() or not digits.isascii():
        raise SetupError(f"{what} {text!r} is not a number")
    number = int(value)
    if not 0 <= number <= MAX_ID:
        raise SetupError(f"{what} {text!r} is out of range (0-{MAX_ID}; -1 would mean \"unchanged\")")
    return number


def _looks_numeric(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def lookup_user(user: str, group: str | None, root_fd: int) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) from the app's own /etc/passwd and /etc/group, with
    runc's rules: a numeric user is a uid (its passwd entry, if any, gives gid and home; without
    one the gid is 0); an explicit group sets the gid and the user gets no memberships from
    /etc/group; otherwise the groups listing the user's name are its supplementary groups.  The
    primary gid is always among the supplementary groups too, as containerd and podman do since
    CVE-2023-25173 / CVE-2022-2989 (else a setgid program could shed it).  Ids outside
    0..2^31-1, from the flags or the image's files, are refused.  The files are read inside
    the root open as *root_fd* (read_db)."""
    passwd = read_db(root_fd, "/etc/passwd")
    uid_arg = parse_id(user, "user id") if _looks_numeric(user) else None
    entry = None
    for fields in passwd:
        if len(fields) < 4:
            continue
        if (fields[0] == user) if uid_arg is None else (_looks_numeric(fields[2]) and int(fields[2]) == uid_arg):
            entry = fields
            break
    if entry is None and uid_arg is None:
        raise SetupError(f"user {user!r} not found in the image's /etc/passwd")
    if entry is not None:
        uid = parse_id(entry[2], f"the image's /etc/passwd: user {entry[0]!r} has uid")
        gid = parse_id(entry[3], f"the image's /etc/passwd: user {entry[0]!r} has gid")
        home = (entry[5] if len(entry) > 5 else "") or "/"
    else:
        assert uid_arg is not None
        uid, gid, home = uid_arg, 0, "/"
    found: set[int] = set()
    if group is not None:
        groups = read_db(root_fd, "/etc/group")
        if _looks_numeric(group):
            gid = parse_id(group, "group id")
        else:
            gentry = next((g for g in groups if len(g) > 2 and g[0] == group), None)
            if gentry is None:
                raise SetupError(f"group {group!r} not found in the image's /etc/group")
            gid = parse_id(gentry[2], f"the image's /etc/group: group {group!r} has gid")
    elif entry is not None:
        name = entry[0]
        for g in read_db(root_fd, "/etc/group"):
            if len(g) > 3 and name in g[3].split(","):
                found.add(parse_id(g[2], f"the image's /etc/group: group {g[0]!r} has gid"))
    return uid, gid, sorted(found | {gid}), home


# Filesystems whose "regular" files are kernel interfaces: reading /proc/kmsg consumes the
# host's kernel log, other files block or act.  An image's user database never lives there.
PSEUDO_FILESYSTEMS = frozenset({
    0x9FA0,  # proc
    0x62656572,  # sysfs
    0x64626720,  # debugfs
    0x74726163,  # tracefs
    0x73636673,  # securityfs
    0x27E0EB,  # cgroup
    0x63677270,  # cgroup2
    0xCAFE4A11,  # bpf
    0x62656570,  # configfs
    0x6165676C,  # pstore
    0xDE5E81E4,  # efivarfs
})


def read_db(root_fd: int, path: str) -> list[list[str]]:
    """The colon-separated records of *path* inside the root open as *root_fd* (an image's
    /etc/passwd or /etc/group), read as root with care (SECURITY-TESTS 27): opened inside the
    root without following magic links, non-blocking, only if it is a regular file outside
    the kernel's pseudo filesystems, at most MAX_DB_BYTES.  A missing file is an empty
    database; anything else wrong is an error naming the file."""
    try:
        fd = sc.open_in_root(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise _path_error("the image's", path, exc) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or sc.fs_type(fd) in PSEUDO_FILESYSTEMS:
            raise SetupError(f"the image's {path} is not a regular file (refused)")
        data = fsutil.read_at_most(fd, MAX_DB_BYTES + 1)
        if len(data) > MAX_DB_BYTES:
            raise SetupError(f"the image's {path} is larger than {MAX_DB_BYTES >> 20} MiB (refused)")
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace")
    return [line.split(":") for line in text.splitlines() if line and line[0] != "#"]


def launch(app: AppSpec, root: str, plan: list[Op], conf: confine.Confinement, interactive: bool,
           keep_fds: frozenset[int], cgroup_gate: int | None = None, listen: tuple[list[int], str] = ([], ""),
           extra_env: dict[str, str] | None = None, tty_report: int | None = None,
           kernel: Kernel = KERNEL) -> NoReturn:
    """Become *app* (called in a freshly forked child; never returns).

    With *cgroup_gate* (a pipe's read end), the parent moves this process into the app's
    cgroup meanwhile and writes one byte when done; the app then gets its own cgroup
    namespace, before its identity and confinement are set.  *listen*: socket-activation fds
    (and their names) to hand over from fd 3; *extra_env*: variables podrun adds (NOTIFY_SOCKET).
    *interactive*: stdin is the caller's (a pipe or file; never a terminal, see tty_report).
    *tty_report* (a pipe's write end): allocate a pty in the app's own devpts, make it the
    controlling terminal and stdio of the app, and write the master's fd number on the pipe;
    the parent takes the master (pidfd_getfd) before it opens the gate (podrun.stage2.tty)."""
    try:
        # Other processes of the pod cannot read this one's /proc files while it is still
        # podrun (runc's init does the same); execve makes the app dumpable again.
        kernel.set_dumpable(False)
        os.setsid()  # a session of its own: the caller's terminal is nobody's here (SECURITY-TESTS 25)
        # The user is looked up in the image's own files, before /proc, /sys or volumes are
        # mounted (as podman does): nothing but the image can answer.
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            uid, gid, groups, home = lookup_user(app.user, app.group, root_fd)
        finally:
            os.close(root_fd)
        set_up_root(root, plan, app.read_only_rootfs, kernel)
        if tty_report is not None:
            from podrun.stage2 import tty  # imported by the parent before the fork

            master = tty.allocate_for_session("/dev/pts/ptmx")
            os.write(tty_report, str(master).encode())
            os.close(tty_report)
        elif not interactive:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        groups = sorted(set(groups) | set(app.supplementary_gids))
        env = dict(e.split("=", 1) for e in app.env if "=" in e)
        env.setdefault("HOME", home)
        env.update(extra_env or {})
        if cgroup_gate is not None:
            if os.read(cgroup_gate, 1) != b"1":
                raise OSError("the pod's supervisor did not place the app in its cgroup")
            os.close(cgroup_gate)
            kernel.unshare(sc.CLONE_NEWCGROUP)  # the app sees its own cgroup as "/"
        sc.close_fds_from(3, keep_fds | frozenset(listen[0]))
        if listen[0]:
            activation.install(listen[0])
            env.update(activation.environment(listen[0], listen[1]))
        enter_workdir(app.working_dir)
        confine.apply(conf, uid, gid, groups, kernel)
    except Exception as exc:
        fail(app.name, f"setting up: {describe(exc)}")
    argv = list(app.exec_argv)
    try:
        exec_in_path(argv, env)
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_NOT_EXECUTABLE
        fail(app.name, f"cannot execute {argv[0]!r}: {exc.strerror}", code)


def exec_in_path(argv: list[str], env: dict[str, str]) -> NoReturn:
    """``execvpe`` without the os module's help (which imports modules, impossible once the
    host's files are out of reach): a name without a slash is searched in the app's PATH;
    raises the first error that is not "not found" (as execvp(3)), else the last one."""
    name = argv[0]
    if "/" in name:
        os.execve(name, argv, env)
    saved: OSError | None = None
    last: OSError = OSError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    for directory in env.get("PATH", "/bin:/usr/bin").split(":"):
        try:
            os.execve(posixpath.join(directory, name), argv, env)
        except OSError as exc:
            last = exc
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and saved is None:
                saved = exc
    raise saved or last


def make_targets(root_fd: int, targets: list[tuple[str, bool]], workdir: str) -> None:
    """Create what a runtime will mount on or enter, inside the root open as *root_fd*, as the
    default flavor's launcher does (:func:`ensure_in_root`: a dangling symlink's target is made
    inside the root): each (path, is a file) of *targets*, then the working directory.  So an
    app's mounts land where they land in the default flavor, whatever the runtime resolves
    by itself.  SetupError, in the launcher's words, when one cannot be made."""
    for path, is_file in targets:
        try:
            os.close(ensure_in_root(root_fd, path, is_file))
        except OSError as exc:
            raise _path_error("mount target", path, exc) from None
    try:
        os.close(ensure_in_root(root_fd, workdir or "/", False))
    except OSError as exc:
        raise _path_error("working directory", workdir, exc) from None


def check_executable(root_fd: int, argv0: str, env: dict[str, str]) -> tuple[int, str] | None:
    """What :func:`exec_in_path` would fail with for *argv0* in the root open as *root_fd*, as
    (exit code, reason), or None if it names an executable file: for a flavor whose apps are
    exec'd by another program (an OCI runtime), so that a missing or unexecutable command gets
    the same one line and code (127, 126) in every flavor.  The search is the same (PATH, or
    the name itself with a slash), resolved inside the root; the check is the file's type and
    any execute bit (the runtime's exec decides for other users' bits)."""
    if "/" in argv0:
        candidates = [argv0]
    else:
        candidates = [posixpath.join(d, argv0) for d in env.get("PATH", "/bin:/usr/bin").split(":") if d]
    denied = None
    for path in candidates:
        try:
            fd = sc.open_in_root(root_fd, path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and denied is None:
                denied = exc.strerror or str(exc)
            continue
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return None
        if denied is None:
            denied = os.strerror(errno.EACCES)
    if denied is not None:
        return EXIT_NOT_EXECUTABLE, f"cannot execute {argv0!r}: {denied}"
    return EXIT_NOT_FOUND, f"cannot execute {argv0!r}: {os.strerror(errno.ENOENT)}"


def describe(exc: Exception) -> str:
    """One line for the user: an OSError without its "[Errno N]" prefix, with its path."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc)


def fail(name: str, message: str, code: int = EXIT_SETUP_FAILED) -> NoReturn:
    try:
        sys.stderr.write(f"podrun: app {name}: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(code)

