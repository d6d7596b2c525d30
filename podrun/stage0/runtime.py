"""The OCI runtime of a ``--stage1 oci`` pod: stage0 decides which binary runs the apps and
records its absolute path in the pod manifest (``runtime``); stage1, ``enter``, ``stop`` and
gc use that path, never a new PATH lookup.

An app's seccomp filter (the default allowlist, or its own ``--seccomp``) is decided here too:
stage0 writes it in runtime-spec form into the pod dir (podrun.pod.seccomp_cache.seccomp_section),
where the manifest names it; the runtime compiles it.
"""

from __future__ import annotations

import os

from podrun.errors import NotFoundError, UsageError

DEFAULT = "crun"
# runtime name -> the Debian package that installs it
PACKAGES = {"crun": "crun", "runc": "runc", "runsc": "runsc"}
# Where runtimes live beyond PATH (runc is in /usr/sbin, which a user's PATH may lack).
EXTRA_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def check_network(runtime: str, net: str) -> None:
    """gVisor's runsc runs a pod with ``--net none`` only here: it refuses to take over the
    interfaces of a network namespace its caller is in, and the pod's namespaces are joined by
    path (UsageError otherwise)."""
    if os.path.basename(runtime) == "runsc" and net != "none":
        raise UsageError(f"--runtime runsc runs pods with --net none only (not --net {net})")


def resolve(runtime: str) -> str:
    """The absolute path of *runtime*: a name (looked up in PATH, then the sbin/bin dirs) or a
    path.  NotFoundError, naming the package, when there is none."""
    if not runtime or "\0" in runtime:
        raise UsageError(f"--runtime {runtime!r}: not a runtime name or path")
    if "/" in runtime:
        path = os.path.abspath(runtime)
        if not _executable(path):
            raise NotFoundError(f"--runtime {runtime}: no executable file there")
        return path
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d.startswith("/")]
    for d in (*dirs, *EXTRA_DIRS):
        path = os.path.join(d, runtime)
        if _executable(path):
            return path
    package = PACKAGES.get(runtime)
    hint = f" (install the Debian package {package!r})" if package else " (give its path)"
    raise NotFoundError(f"--runtime {runtime}: the OCI runtime is not installed{hint}")
