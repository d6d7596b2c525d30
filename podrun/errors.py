"""The exception tree.  Library code raises these; only ``podrun.cli`` prints them.

Each class carries the exit code podrun uses for it (documented in ``man/podrun.1``).  Codes
from 247 to 254 are reserved for podrun's own failures so that a caller of ``podrun run`` can
tell "the app failed" from "podrun failed" (rkt reserved 254 the same way).
"""

from __future__ import annotations


class PodrunError(Exception):
    """Base class: a failure of podrun itself.  ``str(err)`` is the one-line message."""

    exit_code = 254

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(PodrunError):
    """Bad command-line input: unknown flag value, malformed reference or option."""

    exit_code = 253


class NotFoundError(PodrunError):
    """A named thing (image, tag, blob, pod) does not exist."""

    exit_code = 252


class FetchError(PodrunError):
    """A transport failed: network, registry protocol, authentication, unreadable archive."""

    exit_code = 251


class VerificationError(PodrunError):
    """Content failed verification: digest, size, media type, unsafe layer entry."""

    exit_code = 250


class LimitExceededError(VerificationError):
    """Content exceeded a configured limit (size, entry count, depth)."""

    exit_code = 249


class StoreError(PodrunError):
    """The on-disk store or state cannot be used: I/O error, disk full, read-only, corrupted."""

    exit_code = 248


class ConflictError(PodrunError):
    """The operation conflicts with the current state (in use, locked, already exists)."""

    exit_code = 247


class step:  # lower-case: used like a function, ``with step(...)``
    """``with step("writing the pod directory", path):`` turns an OSError raised inside into a
    StoreError naming the step, the path and the reason, so that a full disk or a read-only
    store says what podrun was doing and where (rather than a bare "No space left on device")."""

    def __init__(self, what: str, path: object) -> None:
        self.what = what
        self.path = path

    def __enter__(self) -> step:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, _tb: object) -> None:
        if isinstance(exc, OSError):
            where = exc.filename or self.path
            raise StoreError(f"{self.what} ({where}): {exc.strerror or exc}") from None
