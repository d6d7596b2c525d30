"""Address leases of podrun's default network: ``DIR/net/<bridge>/leases/<ip>`` files holding
``{"pod": UUID, "boot_id": ID}``, created and removed only under ``flock`` of
``DIR/net/<bridge>/lock``.

A lease is live while its pod may run: in this boot, and as long as the caller's judge
(``podrun.net.owners``: the pod's lock) does not prove the pod dead.  Allocation takes the
lowest address never leased, else the lowest whose pod is dead; the judge reclaims what a dead
pod held before its address is handed out.  An address is thus never handed to two live pods,
nor to a new pod while a dead pod's interface still holds it.  ``release`` removes every lease
of a pod (exit path and gc); it is idempotent.
"""

from __future__ import annotations

import errno
import json
import os

from podrun import fsutil
from podrun.errors import ConflictError, LimitExceededError, UsageError
from podrun.net.config import DefaultNet, int_to_ip, ip_to_int

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def _dir(data_dir: str, bridge: str) -> str:
    return os.path.join(data_dir, "net", bridge)


def _read(path: str) -> dict[str, str] | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def leases(data_dir: str, net: DefaultNet) -> dict[str, dict[str, str]]:
    """{ip: lease} as on disk (for tests and status)."""
    d = os.path.join(_dir(data_dir, net.bridge), "leases")
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return {}
    return {n: doc for n in names if not n.startswith(".") and (doc := _read(os.path.join(d, n))) is not None}


def lock_path(data_dir: str, bridge: str) -> str:
    """The network's lock file (its directory is created if missing)."""
    os.makedirs(_dir(data_dir, bridge), mode=0o700, exist_ok=True)
    return os.path.join(_dir(data_dir, bridge), "lock")


def allocate(data_dir: str, net: DefaultNet, uuid: str, boot_id: str, wanted: str | None,
             running: Callable[[str], bool]) -> str:
    """Lease an address of the default network to pod *uuid* (``wanted``: that one, or fail).

    ``running(pod)`` judges the pod of a lease of this boot: True leaves the lease alone; False
    means the pod is dead and what it held is reclaimed (``owners.Owners.running``).  It is
    asked only about the lease that would be taken.  Callers hold the network's lock."""
    lease_dir = os.path.join(_dir(data_dir, net.bridge), "leases")
    os.makedirs(lease_dir, mode=0o700, exist_ok=True)
    network, prefix = net.network()
    first, last = network + 2, network + (1 << (32 - prefix)) - 2  # .1 is the bridge

    def free(ip: str) -> bool:
        doc = _read(os.path.join(lease_dir, ip))
        if doc is None:  # missing, or cut short by a crash: nobody holds it
            return True
        pod = str(doc.get("pod"))
        return pod == uuid or doc.get("boot_id") != boot_id or not running(pod)

    if wanted is not None:
        value = ip_to_int(wanted)
        if not first <= value <= last:
            raise UsageError(f"--net default:IP={wanted}: not a pod address of the default network {net.subnet}")
        if not free(wanted):
            owner = (_read(os.path.join(lease_dir, wanted)) or {}).get("pod")
            raise ConflictError(f"address {wanted} of the default network is already leased to running pod {owner}")
        ip = wanted
    else:
        taken = {v for n in os.listdir(lease_dir) if (v := _address(n)) is not None and first <= v <= last}
        never = (v for v in range(first, last + 1) if v not in taken)
        stale = (v for v in sorted(taken) if free(int_to_ip(v)))
        found = next(never, None) or next(stale, None)
        if found is None:
            raise LimitExceededError(f"the default network {net.subnet} has no free address",
                                     hint="every address is leased to a running pod")
        ip = int_to_ip(found)
    # not fsynced: after a power cut the lease names a boot that is over, so it is stale anyway
    lease = json.dumps({"pod": uuid, "boot_id": boot_id}, separators=(",", ":")).encode()
    fsutil.atomic_write(os.path.join(lease_dir, ip), lease, 0o600, durable=False)
    return ip


def _address(name: str) -> int | None:
    """The address a lease file is named after (None: not a lease, e.g. a temporary)."""
    parts = name.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) <= 255 and str(int(p)) == p for p in parts):
        return None
    return ip_to_int(name)


def release(data_dir: str, net_bridge: str, uuid: str) -> list[str]:
    """Remove every lease of pod *uuid*; returns the addresses released."""
    if not os.path.isdir(os.path.join(_dir(data_dir, net_bridge), "leases")):
        return []
    with fsutil.flocked(lock_path(data_dir, net_bridge)):
        return release_locked(data_dir, net_bridge, uuid)


def release_locked(data_dir: str, net_bridge: str, uuid: str) -> list[str]:
    """``release`` for callers that hold the network's lock."""
    lease_dir = os.path.join(_dir(data_dir, net_bridge), "leases")
    out = []
    for ip in os.listdir(lease_dir) if os.path.isdir(lease_dir) else ():
        doc = _read(os.path.join(lease_dir, ip))
        if doc is not None and doc.get("pod") == uuid:
            try:
                os.unlink(os.path.join(lease_dir, ip))
                out.append(ip)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
    return out
