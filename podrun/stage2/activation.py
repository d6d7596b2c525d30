"""The app's side of socket activation (``podrun.systemd.activation`` is the supervisor's): in
the app's process, just before its exec, the fds move to 3, 4… and ``LISTEN_*`` name them."""

from __future__ import annotations

import os

FIRST = 3  # SD_LISTEN_FDS_START


def install(fds: list[int]) -> None:
    """In the app's process, just before exec: move *fds* to 3, 4… (inheritable)."""
    if not fds:
        return
    top = max([*fds, FIRST + len(fds)]) + 1
    moved = [os.dup2(fd, top + i, inheritable=False) for i, fd in enumerate(fds)]
    for i, fd in enumerate(moved):
        os.dup2(fd, FIRST + i, inheritable=True)
    for fd in moved:
        if fd >= FIRST + len(fds):
            os.close(fd)


def environment(fds: list[int], names: str) -> dict[str, str]:
    if not fds:
        return {}
    env = {"LISTEN_FDS": str(len(fds)), "LISTEN_PID": str(os.getpid())}
    if names:
        env["LISTEN_FDNAMES"] = names
    return env
