"""podrun's nftables table (``ip`` family, one per default network; ``nft`` from Debian's
nftables package, fed with ``nft -f -``).

    masquerade   pods' traffic leaving the subnet; host-local traffic (127.0.0.0/8) DNATed to pods
    fwd_any      map  proto . host port          -> pod ip . pod port   (--port without HOSTIP)
    fwd_ip       map  host ip . proto . host port -> pod ip . pod port   (--port with HOSTIP)

Port forwards are map *elements*: adding one that exists fails atomically (a host port is
forwarded to one pod at most).  Each element names its pod in its comment, and a pod's
teardown removes only elements that name it and point at its address (key *and* value), so a
failed or dead pod never removes another pod's forward.  The table is created once (under the
network's lock) and left in place, like the bridge.
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


def _key(p: PortSpec) -> tuple[str, str]:
    """(map, key) of a forward in nft syntax."""
    if p.host_ip:
        return "fwd_ip", f"{p.host_ip} . {p.proto} . {p.host_port}"
    return "fwd_any", f"{p.proto} . {p.host_port}"


def add_ports(table: str, ports: list[PortSpec], pod_ip: str, owner: str) -> None:
    """Forward every port to *pod_ip*, all or none (one nft transaction); each element carries
    the pod's UUID *owner* as its comment, so that only that pod's teardown removes it."""
    if not ports:
        return
    script = "".join(f'add element ip {table} {m} {{ {k} comment "{owner}" : {pod_ip} . {p.pod_port} }}\n'
                     for p in ports for m, k in [_key(p)])
    res = _nft(script, "forwarding ports")
    if res.returncode != 0:
        if "File exists" in res.stderr:
            busy = ", ".join(f"{p.host_ip + ':' if p.host_ip else ''}{p.host_port}/{p.proto}" for p in ports)
            raise ConflictError(f"--port: host port already forwarded to another pod (one of {busy})")
        raise PodrunError(f"nft: adding port forwards: {res.stderr.strip()}")


def _elements(table: str) -> dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], str | None]]:
    """{(map, key): (value, comment)} of the table's port maps ({} when the table is gone)."""
    res = subprocess.run([NFT, "-j", "list", "table", "ip", table], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        if "No such file or directory" in res.stderr:
            return {}
        raise PodrunError(f"nft: listing table ip {table}: {res.stderr.strip()}")
    from podrun.lean import json_loads

    out: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], str | None]] = {}
    for obj in json_loads(res.stdout).get("nftables", []):
        m = obj.get("map") if isinstance(obj, dict) else None
        if not isinstance(m, dict) or m.get("name") not in ("fwd_any", "fwd_ip"):
            continue
        for key, value in m.get("elem", []):
            comment = None
            if "elem" in key:  # an element with a comment: {"elem": {"val": KEY, "comment": …}}
                key, comment = key["elem"]["val"], key["elem"].get("comment")
            out[(m["name"], _words(key))] = (_words(value), comment)
    return out


def _words(expr: object) -> tuple[str, ...]:
    parts = expr.get("concat", [expr]) if isinstance(expr, dict) else [expr]
    return tuple(str(x) for x in parts)


def remove_ports(table: str, ports: list[PortSpec], pod_ip: str, owner: str) -> None:
    """Remove those of *ports* that are this pod's: the element under the port's key must map
    to *pod_ip* . pod port and carry *owner* as its comment (or none, as podrun before owners
    wrote them).  Another pod's forward of the same host port — one that this pod failed to
    add, or one a later pod made after this pod's death — is left alone.  Callers hold the
    network's lock, which anything that replaces an element must hold too."""
    current = _elements(table)
    mine = []
    for p in ports:
        m, key = _key(p)
        value, comment = current.get((m, tuple(key.split(" . "))), ((), None))
        if value == (pod_ip, str(p.pod_port)) and comment in (owner, None):
            mine.append(p)
    if mine:
        script = "".join(f"delete element ip {table} {m} {{ {k} }}\n" for m, k in map(_key, mine))
        res = _nft(script, "removing port forwards")
        if res.returncode != 0:
            raise PodrunError(f"nft: removing port forwards: {res.stderr.strip()}")
