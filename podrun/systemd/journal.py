"""App output to the journal, with fields naming the pod and the app.

Used by the pod's supervisor when podrun's own stdout or stderr is a journal stream (systemd sets
``JOURNAL_STREAM`` to its ``DEVICE:INODE``): each line becomes an entry with
``SYSLOG_IDENTIFIER=APP`` (``journalctl -t APP``), ``PODRUN_POD_UUID``, ``PODRUN_APP`` and a
priority of 6 (stdout) or 3 (stderr), instead of an untagged line of the unit's.
"""

from __future__ import annotations

import os

from podrun.lean import load_site_packages


def to_journal() -> bool:
    """Whether our stdout or stderr is the journal (systemd's JOURNAL_STREAM)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_dev == int(dev) and st.st_ino == int(ino):
            return True
    return False


class Sender:
    """Sends whole lines of one app's output, one entry each (the caller splits them:
    podrun.pod.logrelay)."""

    def __init__(self, uuid: str, app: str, stderr: bool) -> None:
        load_site_packages()
        from systemd import journal

        self._send = journal.send
        self.fallback = 2 if stderr else 1  # where lines go if the journal refuses them
        self.fields = {"SYSLOG_IDENTIFIER": app, "PODRUN_POD_UUID": uuid, "PODRUN_APP": app,
                       "PRIORITY": "3" if stderr else "6"}

    def emit(self, line: bytes) -> None:
        try:
            self._send(line.decode("utf-8", errors="replace"), **self.fields)
        except OSError:
            try:
                os.write(self.fallback, line + b"\n")
            except OSError:
                pass
