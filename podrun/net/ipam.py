"""Address leases of podrun's default network: ``DIR/net/<bridge>/leases/<ip>`` files holding
``{"pod": UUID, "boot_id": ID}``, created and removed only under ``flock`` of
``DIR/net/<bridge>/lock``.

A lease is live while its pod runs (the pod's lock is held) in this boot.  Allocation takes the
lowest free address; a stale lease (old boot, pod gone or not running) is reclaimed.  An address
is thus never handed to two live pods.  ``release`` removes every lease of a pod (exit path and
gc); it is idempotent.
"""

from __future__ import annotations

import errno
import fcntl
import os

from podrun import fsutil
from podrun.errors import ConflictError, LimitExceededError
from podrun.lean import json_dumps, json_loads
from podrun.net.config import DefaultNet, int_to_ip, ip_to_int


def _dir(data_dir: str, net: DefaultNet) -> str:
    return os.path.join(data_dir, "net", net.bridge)


def _pod_running(data_dir: str, uuid: str) -> bool:
    path = os.path.join(data_dir, "pods", "run", uuid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # its supervisor holds the lock
    finally:
        os.close(fd)
    return False


def _read(path: str) -> dict[str, str] | None:
    try:
        with open(path, "rb") as f:
            doc = json_loads(f.read())
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def leases(data_dir: str, net: DefaultNet) -> dict[str, dict[str, str]]:
    """{ip: lease} as on disk (for tests and status)."""
    d = os.path.join(_dir(data_dir, net), "leases")
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return {}
    return {n: doc for n in names if not n.startswith(".") and (doc := _read(os.path.join(d, n))) is not None}


def allocate(data_dir: str, net: DefaultNet, uuid: str, boot_id: str, wanted: str | None = None) -> str:
    """Lease an address of the default network to pod *uuid* (``wanted``: that one, or fail)."""
    base = _dir(data_dir, net)
    lease_dir = os.path.join(base, "leases")
    os.makedirs(lease_dir, mode=0o700, exist_ok=True)
    network, prefix = net.network()
    first, last = network + 2, network + (1 << (32 - prefix)) - 2  # .1 is the bridge
    with fsutil.flocked(os.path.join(base, "lock")):
        def free(ip: str) -> bool:
            doc = _read(os.path.join(lease_dir, ip))
            if doc is None:  # missing, or cut short by a crash: nobody holds it
                return True
            if doc.get("pod") == uuid:
                return True
            return doc.get("boot_id") != boot_id or not _pod_running(data_dir, str(doc.get("pod")))

        if wanted is not None:
            value = ip_to_int(wanted)
            if not first <= value <= last:
                raise ConflictError(f"address {wanted} is not a pod address of the default network {net.subnet}")
            if not free(wanted):
                owner = (_read(os.path.join(lease_dir, wanted)) or {}).get("pod")
                raise ConflictError(f"address {wanted} of the default network is already leased to running pod {owner}")
            candidates = [wanted]
        else:
            taken = set(os.listdir(lease_dir))
            candidates = [int_to_ip(v) for v in range(first, last + 1) if int_to_ip(v) not in taken]
            candidates += sorted((ip for ip in taken if not ip.startswith(".") and free(ip)), key=ip_to_int)
        if not candidates:
            raise LimitExceededError(f"the default network {net.subnet} has no free address",
                                     hint="podrun gc releases the addresses of pods that are gone")
        ip = candidates[0]
        # not fsynced: after a power cut the lease names a boot that is over, so it is stale anyway
        fsutil.atomic_write(os.path.join(lease_dir, ip), json_dumps({"pod": uuid, "boot_id": boot_id}).encode(),
                            0o600, durable=False)
        return ip


def release(data_dir: str, net_bridge: str, uuid: str) -> list[str]:
    """Remove every lease of pod *uuid*; returns the addresses released."""
    base = os.path.join(data_dir, "net", net_bridge)
    lease_dir = os.path.join(base, "leases")
    if not os.path.isdir(lease_dir):
        return []
    out = []
    with fsutil.flocked(os.path.join(base, "lock")):
        for ip in os.listdir(lease_dir):
            doc = _read(os.path.join(lease_dir, ip))
            if doc is not None and doc.get("pod") == uuid:
                try:
                    os.unlink(os.path.join(lease_dir, ip))
                    out.append(ip)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
    return out
