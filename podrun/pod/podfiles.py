"""Pod-level files stage1 writes into the pod directory and binds into every app:
/etc/hostname, /etc/hosts and /etc/resolv.conf.

resolv.conf (rkt's precedence): ``--dns IP…`` → those nameservers; ``--dns host`` → the host's
file; ``--dns none`` → none bound (the image's own file stays); otherwise the DNS a CNI network
returned, else the host's file (nameservers on loopback dropped unless ``--net host``: they do not
answer inside the pod), else an empty file (``--net none``).  ``--dns-search``/``--dns-opt``
replace the search and options lines.  hosts: localhost, the pod's hostname on its first address,
``--hosts-entry IP=NAME`` lines and, with ``--hosts-entry host``, the host's entries.
"""

from __future__ import annotations

import os

from podrun.pod import layout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from podrun.model.manifest import PodManifest


def default_hostname(manifest: PodManifest) -> str:
    return manifest.hostname or f"podrun-{manifest.uuid[:8]}"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def resolv_conf(manifest: PodManifest, cni_dns: dict[str, object]) -> str | None:
    """The pod's resolv.conf text, or None to keep the image's file."""
    dns = list(manifest.dns)
    search: list[str] = []
    options: list[str] = []
    if dns == ["none"]:
        return None
    if dns and dns != ["host"]:
        nameservers = dns
    elif dns == ["host"] or (not cni_dns.get("nameservers") and manifest.net != "none"):
        nameservers = []
        for line in _read("/etc/resolv.conf").splitlines():
            words = line.split()
            if not words or words[0].startswith(("#", ";")):
                continue
            if words[0] == "nameserver" and len(words) > 1:
                loopback = words[1].startswith("127.") or words[1] == "::1"
                if not loopback or manifest.net == "host" or dns == ["host"]:
                    nameservers.append(words[1])
            elif words[0] in ("search", "domain"):
                search = words[1:]
            elif words[0] == "options":
                options = words[1:]
    elif cni_dns.get("nameservers"):
        nameservers, search, options = (_strings(cni_dns.get(k)) for k in ("nameservers", "search", "options"))
    else:
        nameservers = []
    if manifest.dns_search:
        search = [] if manifest.dns_search == (".",) else list(manifest.dns_search)  # '.': none, as podman
    if manifest.dns_opts:
        options = list(manifest.dns_opts)
    lines = [f"nameserver {n}" for n in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "".join(line + "\n" for line in lines)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def hosts_file(manifest: PodManifest, addresses: list[str]) -> str:
    hostname = default_hostname(manifest)
    short = hostname.split(".")[0]
    names = hostname if short == hostname else f"{hostname} {short}"
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.append(f"{addresses[0]}\t{names}" if addresses else f"127.0.1.1\t{names}")
    for entry in manifest.hosts_entries:
        if entry == "host":
            lines += [line for line in _read("/etc/hosts").splitlines() if line.strip() and not line.startswith("#")]
        else:
            ip, _, name = entry.partition("=")
            lines.append(f"{ip}\t{name}")
    return "\n".join(lines) + "\n"


def write_pod_files(pod_dir: str, manifest: PodManifest) -> dict[str, str]:
    """Write the files; return {in-pod path: host path} for the mount plan."""
    etc = os.path.join(pod_dir, layout.ETC_DIR)
    os.makedirs(etc, mode=0o755, exist_ok=True)
    addresses: list[str] = []
    cni_dns: dict[str, object] = {}
    if manifest.networks:
        from podrun.net import setup

        addresses = [ip for _, ip in setup.addresses(pod_dir)]
        cni_dns = setup.cni_dns(pod_dir)
    files = {"hostname": default_hostname(manifest) + "\n", "hosts": hosts_file(manifest, addresses)}
    resolv = resolv_conf(manifest, cni_dns)
    if resolv is not None:
        files["resolv.conf"] = resolv
    for name, text in files.items():
        # Regenerated at every start, so no fsync: durability buys nothing here.
        with open(os.path.join(etc, name), "w") as f:
            f.write(text)
    return {f"/etc/{name}": os.path.join(etc, name) for name in files}
