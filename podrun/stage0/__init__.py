"""stage0: the request becomes a decided pod manifest and a pod directory, then stage0 execs
the chosen stage1 flavor with the pod's lock held (docs/architecture.md)."""


class Globals:
    """The global options, decided: the absolute data dir, debug, the insecure words, and the
    trust configuration named by ``--signature-policy`` and ``--registries.d`` (None: the
    containers tools' default places, podrun.trust)."""

    __slots__ = ("data_dir", "debug", "insecure", "signature_policy", "registries_d")

    def __init__(self, data_dir: str, debug: bool, insecure: frozenset[str],
                 signature_policy: str | None = None, registries_d: str | None = None) -> None:
        self.data_dir = data_dir
        self.debug = debug
        self.insecure = insecure
        self.signature_policy = signature_policy
        self.registries_d = registries_d

    def __repr__(self) -> str:
        return (f"Globals({self.data_dir!r}, {self.debug!r}, {sorted(self.insecure)!r}, "
                f"{self.signature_policy!r}, {self.registries_d!r})")
