"""Socket activation: the fds systemd passed (``sd_listen_fds``), handed to an app from fd 3.

The supervisor's side (``take``) is here; the app's side, just before its exec, is
``podrun.stage2.activation`` (stage2 imports no service-manager code).

stage0 is the process systemd started, so ``LISTEN_PID`` names it, and the fds stay open across
its exec into stage1.  The supervisor reads the variables (and removes them from its
environment); the first app gets the fds renumbered 3, 4…, with ``LISTEN_FDS``,
``LISTEN_FDNAMES`` and ``LISTEN_PID`` set to the app's own PID as it sees it.
"""

from __future__ import annotations

import os

FIRST = 3  # SD_LISTEN_FDS_START


def take() -> tuple[list[int], str]:
    """(fds, LISTEN_FDNAMES) passed to this process; the variables are removed either way."""
    pid = os.environ.pop("LISTEN_PID", "")
    count = os.environ.pop("LISTEN_FDS", "")
    names = os.environ.pop("LISTEN_FDNAMES", "")
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return [], ""
    fds = list(range(FIRST, FIRST + int(count)))
    for fd in fds:
        os.set_inheritable(fd, False)  # only the app gets them, renumbered
    return fds, names
