"""stage0: the request becomes a decided pod manifest and a pod directory, then stage0 execs
the chosen stage1 flavor with the pod's lock held (docs/architecture.md)."""


class Globals:
    """The global options, decided: the absolute data dir, debug, the insecure words."""

    __slots__ = ("data_dir", "debug", "insecure")

    def __init__(self, data_dir: str, debug: bool, insecure: frozenset[str]) -> None:
        self.data_dir = data_dir
        self.debug = debug
        self.insecure = insecure

    def __repr__(self) -> str:
        return f"Globals({self.data_dir!r}, {self.debug!r}, {sorted(self.insecure)!r})"
