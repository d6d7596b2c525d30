"""podrun's nftables table (``ip`` family, one per default network; ``nft`` from Debian's
nftables package, fed with ``nft -f -``).

    masquerade   pods' traffic leaving the subnet; host-local traffic (127.0.0.0/8) DNATed to pods
    fwd_any      map  proto . host port          -> pod ip . pod port   (--port without HOSTIP)
    fwd_ip       map  host ip . proto . host port -> pod ip . pod port   (--port with HOSTIP)

Port forwards are map *elements*: adding one that exists fails atomically (a host port is
forwarded to one pod at most), and removing a pod's forwards touches nothing else.  The table
is created once (under the network's lock) and left in place, like the bridge.
"""

from __future__ import annotations

import subprocess

from podrun.errors import ConflictError, PodrunError
from podrun.net.spec import PortSpec

NFT = "nft"


def _nft(script: str, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([NFT, "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise PodrunError(f"{what}: the nft command is missing", hint="install Debian's nftables package") from None


def probe_table(table: str) -> subprocess.Popen[bytes] | None:
    """Start ``nft list table`` (its answer is read by ``ensure_table``), or None without nft."""
    try:
        return subprocess.Popen([NFT, "list", "table", "ip", table], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        return None


def ensure_table(table: str, subnet: str, probe: subprocess.Popen[bytes] | None) -> None:
    """Create the table if missing (callers hold the network's lock); *probe*: the
    ``probe_table`` started earlier (None when nft is missing: creating then says so)."""
    if probe is not None and probe.wait(timeout=30) == 0:
        return
    dnat = ("fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @fwd_ip\n"
            "    fib daddr type local dnat ip to meta l4proto . th dport map @fwd_any")
    script = f"""table ip {table} {{
  map fwd_any {{ type inet_proto . inet_service : ipv4_addr . inet_service ; }}
  map fwd_ip {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service ; }}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;
    {dnat}
  }}
  chain output {{ type nat hook output priority -100; policy accept;
    {dnat}
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} ip daddr != {subnet} masquerade
    ip saddr 127.0.0.0/8 ip daddr {subnet} masquerade
  }}
}}
"""
    res = _nft(script, "setting up the default network's nftables table")
    if res.returncode != 0:
        raise PodrunError(f"nft: creating table ip {table}: {res.stderr.strip()}")


def _element(p: PortSpec, pod_ip: str | None) -> tuple[str, str]:
    key = f"{p.host_ip} . {p.proto} . {p.host_port}" if p.host_ip else f"{p.proto} . {p.host_port}"
    mapname = "fwd_ip" if p.host_ip else "fwd_any"
    return mapname, key if pod_ip is None else f"{key} : {pod_ip} . {p.pod_port}"


def add_ports(table: str, ports: list[PortSpec], pod_ip: str) -> None:
    """Forward every port to *pod_ip*, all or none (one nft transaction)."""
    if not ports:
        return
    script = "".join(f"add element ip {table} {m} {{ {e} }}\n" for m, e in (_element(p, pod_ip) for p in ports))
    res = _nft(script, "forwarding ports")
    if res.returncode != 0:
        if "File exists" in res.stderr:
            busy = ", ".join(f"{p.host_ip + ':' if p.host_ip else ''}{p.host_port}/{p.proto}" for p in ports)
            raise ConflictError(f"--port: host port already forwarded to another pod (one of {busy})")
        raise PodrunError(f"nft: adding port forwards: {res.stderr.strip()}")


def remove_ports(table: str, ports: list[PortSpec]) -> None:
    """Remove the forwards (each on its own: one already gone does not keep the others)."""
    for p in ports:
        m, e = _element(p, None)
        _nft(f"delete element ip {table} {m} {{ {e} }}\n", "removing a port forward")
