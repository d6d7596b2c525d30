"""podrun's loggers, configured on first use: the logging package costs ~10 ms to import, and a
warm ``podrun run`` never logs, so only modules that do log (the registry client, layer
unpacking) import it, through ``get``.  The CLI sets the level once with ``set_debug``."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

_state = {"debug": False, "configured": False}


def set_debug(on: bool) -> None:
    _state["debug"] = on
    if _state["configured"]:
        import logging

        logging.getLogger("podrun").setLevel(logging.DEBUG if on else logging.WARNING)


def get(name: str) -> logging.Logger:
    """The logger *name* (a ``podrun.…`` module name), with podrun's format and level."""
    import logging

    if not _state["configured"]:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("podrun: %(levelname)s: %(message)s"))
        root = logging.getLogger("podrun")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if _state["debug"] else logging.WARNING)
        root.propagate = False
        _state["configured"] = True
    return logging.getLogger(name)
