"""Pod-level files stage1 writes into the pod directory and binds into every app:
/etc/hostname, /etc/hosts and /etc/resolv.conf (rkt's precedence: flags, then host)."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from podrun.pod.manifest import PodManifest


def default_hostname(manifest: PodManifest) -> str:
    return manifest.hostname or f"podrun-{manifest.uuid[:8]}"


def write_pod_files(pod_dir: str, manifest: PodManifest) -> dict[str, str]:
    """Write the files; return {in-pod path: host path} for the mount plan."""
    etc = os.path.join(pod_dir, "etc")
    os.makedirs(etc, mode=0o755, exist_ok=True)
    hostname = default_hostname(manifest)
    hosts = [f"127.0.0.1\tlocalhost {hostname}", "::1\tlocalhost ip6-localhost ip6-loopback"]
    hosts += [f"{ip}\t{name}" for ip, _, name in (e.partition("=") for e in manifest.hosts_entries)]
    if manifest.dns:
        resolv = "".join(f"nameserver {ip}\n" for ip in manifest.dns)
    elif manifest.net == "host":
        try:
            with open("/etc/resolv.conf") as f:
                resolv = f.read()
        except OSError:
            resolv = ""
    else:
        resolv = ""
    files = {"hostname": hostname + "\n", "hosts": "\n".join(hosts) + "\n", "resolv.conf": resolv}
    for name, text in files.items():
        # Regenerated at every start, so no fsync: durability buys nothing here.
        with open(os.path.join(etc, name), "w") as f:
            f.write(text)
    return {f"/etc/{name}": os.path.join(etc, name) for name in files}
