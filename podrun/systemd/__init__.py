"""podrun under systemd (and without it): the only users of python-systemd (man podrun-systemd(7)).

- ``notify``: ``sd_notify`` to the service manager (``READY=1`` when the apps have started, or
  the app's own messages forwarded with ``--notify=app``); no-op without ``NOTIFY_SOCKET``.
- ``activation``: sockets passed by a ``.socket`` unit (``LISTEN_FDS``/``LISTEN_PID``), handed on
  to the pod's first app renumbered from fd 3.
- ``journal``: app output sent to the journal with ``SYSLOG_IDENTIFIER=APP`` and
  ``PODRUN_POD_UUID=…`` when podrun's own output is the journal (``JOURNAL_STREAM``).

stage1 runs without site-packages (``python -I -S``); ``load_site`` adds stage0's site dirs
(``PODRUN_SITE_PATH``) when one of these is needed, so pods outside systemd never import it.
"""

from __future__ import annotations

import os
import sys


def load_site() -> None:
    """Make python-systemd importable in stage1 (idempotent)."""
    for p in os.environ.get("PODRUN_SITE_PATH", "").split(os.pathsep):
        if p and p not in sys.path:
            sys.path.append(p)
