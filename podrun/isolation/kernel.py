"""The kernel interface of the stages: every call that needs privilege or changes the process
while a pod's process is set up (youki's ``Syscall`` trait).

Code that builds an app's root and confines it (``podrun.stage2``), the ``fly`` flavor, the pod's
pid 1 and ``enter`` (``podrun.stage1``) call these methods on a ``Kernel`` they are handed
(``KERNEL`` by default) instead of the syscall functions, so a test can pass a subclass that
records the calls (tests/unit/recording_kernel.py) and check the mount plan, the confinement
order and the namespaces joined without root; the integration tests apply the same code for real.
Unprivileged path work (``syscalls.open_in_root``, mkdir inside the app's root) stays real in
both: it works on any directory.

Kernel layer: no policy.  ``apply_app_identity`` is the one sequence here, because its order is
the kernel's rule, not podrun's choice (capabilities(7); runc applies the same order).
"""

from __future__ import annotations

import errno
import os

from podrun.isolation import caps, cgroups
from podrun.isolation import syscalls as sc
from podrun.isolation.libc import oserror


class Kernel:
    """The real kernel: each method is one call (or one kernel-level step) of podrun.isolation."""

    __slots__ = ()

    # -- namespaces and mounts ------------------------------------------------------------------
    def unshare(self, flags: int) -> None:
        sc.unshare(flags)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        sc.mount(source, target, fstype, flags, data)

    def setns(self, fd: int, nstype: int) -> None:
        sc.setns(fd, nstype)

    def umount(self, target: str, flags: int = 0) -> None:
        sc.umount(target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        sc.pivot_root(new_root, put_old)

    def chdir(self, path: str) -> None:
        os.chdir(path)

    def fchdir(self, fd: int) -> None:
        os.fchdir(fd)

    def chroot(self, path: str) -> None:
        os.chroot(path)

    def mknod(self, name: str, mode: int, device: int, dir_fd: int) -> None:
        """A device node with exactly *mode* (mknod honours the umask: chmod follows)."""
        os.mknod(name, mode, device, dir_fd=dir_fd)
        os.chmod(name, mode & 0o7777, dir_fd=dir_fd)

    def join_cgroup(self, dirs: list[str]) -> None:
        """Move the calling process into the existing cgroup *dirs* (one per hierarchy)."""
        cgroups.open_existing(dirs).join()

    # -- confinement ----------------------------------------------------------------------------
    def set_dumpable(self, on: bool) -> None:
        """PR_SET_DUMPABLE: off, no process of lesser privilege can ptrace this one or read its memory."""
        sc.prctl(sc.PR_SET_DUMPABLE, int(on))

    def set_rlimits(self, limits: dict[str, tuple[int, int]]) -> None:
        caps.set_rlimits(limits)

    def drop_bounding(self, keep: frozenset[int]) -> None:
        caps.drop_bounding(keep)

    def keep_caps(self, on: bool) -> None:
        caps.keep_caps(on)

    def setgroups(self, groups: list[int]) -> None:
        try:
            os.setgroups(groups)
        except OSError as exc:
            raise oserror(f"setgroups({groups})", err=exc.errno) from exc

    def setresgid(self, gid: int) -> None:
        try:
            os.setresgid(gid, gid, gid)
        except OSError as exc:
            raise oserror(f"setresgid({gid})", err=exc.errno) from exc

    def set_gids(self, real: int, effective: int) -> None:
        """Real gid *real*, effective and saved gid *effective* (setresgid(2)): with the two
        apart, the next execve leaves the process non-dumpable (podrun.pod.init)."""
        try:
            os.setresgid(real, effective, effective)
        except OSError as exc:
            raise oserror(f"setresgid({real}, {effective}, {effective})", err=exc.errno) from exc

    def setresuid(self, uid: int) -> None:
        try:
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            raise oserror(f"setresuid({uid})", err=exc.errno) from exc

    def set_caps(self, effective: frozenset[int], permitted: frozenset[int], inheritable: frozenset[int]) -> None:
        caps.set_caps(effective, permitted, inheritable)

    def clear_ambient(self) -> None:
        caps.clear_ambient()

    def raise_ambient(self, ambient: frozenset[int]) -> None:
        caps.raise_ambient(ambient)

    def set_no_new_privs(self) -> None:
        caps.set_no_new_privs()

    def load_seccomp(self, bpf: bytes) -> None:
        sc.load_seccomp(bpf)

    def apply_app_identity(self, uid: int, gid: int, groups: list[int], keep: frozenset[int],
                           ambient: frozenset[int] = frozenset()) -> None:
        """Give the calling (single-threaded, about to execve) process the app's ids and capabilities.

        Result: bounding = ``keep``; effective = permitted = ``keep``; inheritable = ambient =
        ``ambient`` (empty by default).  What survives the execve that follows is the kernel's rule
        (capabilities(7)):
        - uid 0: a file without capabilities counts as having all of them, so the new permitted and
          effective sets are exactly the bounding set = ``keep``.
        - non-root uid: the new permitted/effective sets are the *ambient* set only.  podrun follows
          rkt here (Documentation/capabilities-guide.md, "Capabilities when running as non-root"):
          the retain/remove sets limit the bounding set, a non-root app starts with no effective
          caps and can only gain them through file capabilities (which no_new_privs blocks).  podman
          instead gives a non-root user the caps named with --cap-add through ambient
          (pkg/specgen/generate/security_linux.go); ``ambient`` lets a policy do that, and runc
          applies the sets in the same order as below (bounding, keepcaps, user, capset, ambient).

        Order matters:
        1. bounding drop first: PR_CAPBSET_DROP needs CAP_SETPCAP in effective, which we lose later;
        2. the user switch with KEEPCAPS on, so permitted survives setresuid to non-root; groups
           first, as setgroups and setresgid need CAP_SETGID, which the process keeps while uid 0;
        3. capset: re-raises effective (the kernel cleared it when the euid left 0) and shrinks
           permitted to ``keep``; inheritable must hold a cap before it can be raised into ambient;
        4. ambient last: clear, then raise the requested ones (each needs permitted and inheritable).
        """
        if not ambient <= keep:
            raise OSError(errno.EINVAL, "ambient capabilities must be a subset of the retained set",
                          f"{caps.cap_mask(ambient):#x} not within {caps.cap_mask(keep):#x}")
        self.drop_bounding(keep)
        self.keep_caps(True)
        self.setgroups(groups)
        self.setresgid(gid)
        self.setresuid(uid)
        self.keep_caps(False)
        self.set_caps(keep, keep, ambient)
        self.clear_ambient()
        if ambient:
            self.raise_ambient(ambient)


KERNEL = Kernel()
