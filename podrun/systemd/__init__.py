"""podrun under systemd (and without it): the only users of python-systemd (man podrun-systemd(7)).

- ``notify``: ``sd_notify`` to the service manager (``READY=1`` when the apps have started, or
  the app's own messages forwarded with ``--notify=app``), sent by podrun itself without
  blocking (not through python-systemd); no-op without ``NOTIFY_SOCKET``.
- ``activation``: sockets passed by a ``.socket`` unit (``LISTEN_FDS``/``LISTEN_PID``), handed on
  to the pod's first app renumbered from fd 3.
- ``journal``: app output sent to the journal with ``SYSLOG_IDENTIFIER=APP`` and
  ``PODRUN_POD_UUID=…`` when podrun's own output is the journal (``JOURNAL_STREAM``).

stage1 runs without site-packages (``python -I -S``); these modules call
``podrun.lean.load_site_packages`` before importing python-systemd, so pods outside systemd never
import it.
"""
