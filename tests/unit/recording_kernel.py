"""A test double of podrun.isolation.kernel.Kernel that records the calls instead of making
them (youki's TestHelperSyscall), so stage2's mount plan and confinement order are checked
without root.  Paths the calls name through ``/proc/self/fd/N`` are recorded as the path the fd
resolves to, relative to *root* (``/etc/hosts``), so a test reads where a mount would land."""

from __future__ import annotations

import os

from podrun.isolation.kernel import Kernel

Call = tuple[object, ...]


class RecordingKernel(Kernel):
    __slots__ = ("calls", "root")

    def __init__(self, root: str = "/") -> None:
        self.calls: list[Call] = []
        self.root = os.path.realpath(root)

    def in_root(self, path: str | None) -> str | None:
        """*path* as the app would see it: an fd's path resolved, then made relative to the root
        (a path outside the root stays absolute and starts with ``!``, so no test mistakes it)."""
        if path is None or not path.startswith("/proc/self/fd/"):
            return path
        real = os.readlink(path)
        if real == self.root:
            return "/"
        if real.startswith(self.root.rstrip("/") + "/"):
            return real[len(self.root.rstrip("/")):]
        return "!" + real

    def names(self) -> list[str]:
        """The recorded calls' names, in order."""
        return [str(call[0]) for call in self.calls]

    def unshare(self, flags: int) -> None:
        self.calls.append(("unshare", flags))

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        self.calls.append(("mount", self.in_root(source), self.in_root(target), fstype, flags, data))

    def umount(self, target: str, flags: int = 0) -> None:
        self.calls.append(("umount", target, flags))

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self.calls.append(("pivot_root", new_root, put_old))

    def chdir(self, path: str) -> None:
        self.calls.append(("chdir", path))

    def mknod(self, name: str, mode: int, device: int, dir_fd: int) -> None:
        self.calls.append(("mknod", name, mode, os.major(device), os.minor(device)))

    def set_rlimits(self, limits: dict[str, tuple[int, int]]) -> None:
        self.calls.append(("set_rlimits", dict(limits)))

    def drop_bounding(self, keep: frozenset[int]) -> None:
        self.calls.append(("drop_bounding", keep))

    def keep_caps(self, on: bool) -> None:
        self.calls.append(("keep_caps", on))

    def setgroups(self, groups: list[int]) -> None:
        self.calls.append(("setgroups", list(groups)))

    def setresgid(self, gid: int) -> None:
        self.calls.append(("setresgid", gid))

    def setresuid(self, uid: int) -> None:
        self.calls.append(("setresuid", uid))

    def set_caps(self, effective: frozenset[int], permitted: frozenset[int], inheritable: frozenset[int]) -> None:
        self.calls.append(("set_caps", effective, permitted, inheritable))

    def clear_ambient(self) -> None:
        self.calls.append(("clear_ambient",))

    def raise_ambient(self, ambient: frozenset[int]) -> None:
        self.calls.append(("raise_ambient", ambient))

    def set_no_new_privs(self) -> None:
        self.calls.append(("set_no_new_privs",))

    def load_seccomp(self, bpf: bytes) -> None:
        self.calls.append(("load_seccomp", bpf))

    def setns(self, fd: int, nstype: int) -> None:
        """Recorded with the namespace the fd is (``net:[4026531840]``), so a test sees which one."""
        self.calls.append(("setns", nstype, os.readlink(f"/proc/self/fd/{fd}")))

    def fchdir(self, fd: int) -> None:
        self.calls.append(("fchdir", self.in_root(f"/proc/self/fd/{fd}")))

    def chroot(self, path: str) -> None:
        self.calls.append(("chroot", path))

    def join_cgroup(self, dirs: list[str]) -> None:
        self.calls.append(("join_cgroup", list(dirs)))

    def set_dumpable(self, on: bool) -> None:
        self.calls.append(("set_dumpable", on))

    def set_gids(self, real: int, effective: int) -> None:
        self.calls.append(("set_gids", real, effective))
