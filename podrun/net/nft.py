"""podrun's nftables tables, one pair per default network (``nft`` from Debian's nftables
package, fed with ``nft -f -``).

``ip`` table (NAT)::

    masquerade   pods' traffic leaving the subnet; host-local traffic (127.0.0.0/8) DNATed to pods
    fwd_any      map  proto . host port          -> pod ip . pod port   (--port without HOSTIP)
    fwd_ip       map  host ip . proto . host port -> pod ip . pod port   (--port with HOSTIP)

``bridge`` table of the same name (what pods may send, SECURITY-TESTS 30)::

    ports        set  host ends of the pods' veth pairs
    pods         set  host end . MAC . IPv4 address of each pod
    loopback     set  127.0.0.0/8
    from_pod     frames entering the bridge from a pod's port: IPv4 addressed to 127.0.0.0/8 is
                 dropped (the bridge has route_localnet=1 for --port 127.0.0.1:…, so the host
                 would otherwise route it to its loopback services: CVE-2020-8558); ARP and IPv4
                 whose Ethernet source, ARP sender and IPv4 source are that pod's own MAC and
                 address pass; everything else (another pod's or an invented address or MAC,
                 IPv6, other protocols) is dropped before the bridge learns from it or the host
                 sees it

Forwards from the host's 127.0.0.1 keep working: they leave through the ``output`` hook and
come back from the pod as replies to the bridge's own address, never to 127.0.0.0/8.

A bridge table an older podrun made (no ``loopback`` set) is brought up to date when the next
pod starts: the set and the drop rule are added in one transaction, under the network's lock.

A pod's filter elements are added before its veth pair exists (so there is no moment without
the filter) and removed by gc, when its pod dir is collected: they name the pod's own
interface, which dies with the pod, so a dead pod's elements let nothing through.

Port forwards are map *elements*: adding one that exists fails atomically (a host port is
forwarded to one pod at most).  Each element names its pod in its comment, and a pod's
teardown removes only elements that name it and point at its address (key *and* value), so a
failed or dead pod never removes another pod's forward.  A forward in the way of a new pod is
taken over only when the pod it names is dead (``podrun.net.owners``).  The tables are created
once (under the network's lock) and left in place, like the bridge.
"""

from __future__ import annotations

import subprocess

from podrun.errors import ConflictError, PodrunError
from podrun.model.netspec import PortSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

NFT = "nft"
LOOPBACK = "127.0.0.0/8"
_LOOPBACK_SET = f"  set loopback {{ type ipv4_addr ; flags interval ; elements = {{ {LOOPBACK} }} ; }}"
_LOOPBACK_RULE = "ip daddr @loopback drop"
_FWD_ANY_TYPE = "type inet_proto . inet_service : ipv4_addr . inet_service ;"


def _nft(script: str, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([NFT, "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise PodrunError(f"{what}: the nft command is missing", hint="install Debian's nftables package") from None


def _tables_script(table: str, subnet: str, missing: set[str]) -> str:
    dnat = ("fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @fwd_ip\n"
            "    fib daddr type local dnat ip to meta l4proto . th dport map @fwd_any")
    ip = f"""table ip {table} {{
  map fwd_any {{ {_FWD_ANY_TYPE} }}
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
    # priority filter (-200): before br_netfilter (0) hands bridged IPv4 to the ip hooks
    bridge = f"""table bridge {table} {{
  set ports {{ type ifname ; }}
  set pods {{ type ifname . ether_addr . ipv4_addr ; }}
{_LOOPBACK_SET}
  chain prerouting {{ type filter hook prerouting priority filter; policy accept;
    iifname @ports jump from_pod
  }}
  chain from_pod {{
    {_LOOPBACK_RULE}
    ether type arp iifname . ether saddr . arp saddr ip @pods iifname . arp saddr ether . arp saddr ip @pods accept
    ether type ip iifname . ether saddr . ip saddr @pods accept
    drop
  }}
}}
"""
    return (ip if "ip" in missing else "") + (bridge if "bridge" in missing else "")


def _filter_script(table: str, host_if: str, mac: str, ip: str) -> str:
    # The last two lines add nothing (the set and map exist) but fail while the loopback set (a
    # table of an older podrun) or the ip table is missing; they cost nothing more, where "add
    # chain" would make nft read the whole ruleset (~7 ms).
    return (f'add element bridge {table} ports {{ "{host_if}" }}\n'
            f'add element bridge {table} pods {{ "{host_if}" . {mac} . {ip} }}\n'
            f"add element bridge {table} loopback {{ {LOOPBACK} }}\n"
            f"add map ip {table} fwd_any {{ {_FWD_ANY_TYPE} }}\n")


def _upgrade_script(table: str) -> str:
    """What a bridge table of an older podrun lacks: the loopback set and its drop rule, first
    in from_pod."""
    return (f"add set bridge {table} loopback {{ type ipv4_addr ; flags interval ; elements = {{ {LOOPBACK} }} ; }}\n"
            f"insert rule bridge {table} from_pod {_LOOPBACK_RULE}\n")


def _has_loopback_set(table: str) -> bool:
    res = _nft(f"list set bridge {table} loopback\n", "reading the default network's bridge table")
    return res.returncode == 0


def start_filter(table: str, host_if: str, mac: str, ip: str) -> subprocess.Popen[str] | None:
    """Start adding a pod's filter elements (its answer is read by ``finish_filter``, so the
    nft run overlaps other work); None without nft (``finish_filter`` then says so)."""
    try:
        proc = subprocess.Popen([NFT, "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        return None
    assert proc.stdin is not None and proc.stderr is not None
    try:
        proc.stdin.write(_filter_script(table, host_if, mac, ip))
        proc.stdin.close()
    except BrokenPipeError:
        pass  # nft failed at once: its stderr says why
    return proc


def finish_filter(proc: subprocess.Popen[str] | None, table: str, subnet: str, host_if: str, mac: str,
                  ip: str) -> None:
    """Wait for ``start_filter``; when a table is missing (the network's first pod, or a table
    deleted by hand) create the missing tables and add the elements again.  Callers hold the
    network's lock."""
    if proc is not None:
        assert proc.stderr is not None
        error = proc.stderr.read()
        if proc.wait(timeout=30) == 0:
            return
        if "No such file or directory" not in error:
            raise PodrunError(f"nft: adding the pod's filter elements: {error.strip()}")
    res = _nft("list tables\n", "setting up the default network's nftables tables")
    have = {tuple(line.split()[1:3]) for line in res.stdout.splitlines() if line.startswith("table ")}
    missing = {family for family in ("ip", "bridge") if (family, table) not in have}
    script = _tables_script(table, subnet, missing)
    if "bridge" not in missing and not _has_loopback_set(table):
        script += _upgrade_script(table)
    script += _filter_script(table, host_if, mac, ip)
    res = _nft(script, "setting up the default network's nftables tables")
    if res.returncode != 0:
        raise PodrunError(f"nft: creating the tables of the default network ({table}): {res.stderr.strip()}")


def remove_filter(table: str, host_if: str, mac: str, ip: str) -> None:
    """Remove a pod's filter elements (gc); elements already gone, or a table that is gone,
    are not an error."""
    script = (f'delete element bridge {table} pods {{ "{host_if}" . {mac} . {ip} }}\n'
              f'delete element bridge {table} ports {{ "{host_if}" }}\n')
    res = _nft(script, "removing the pod's filter elements")
    if res.returncode != 0 and "No such file or directory" not in res.stderr:
        raise PodrunError(f"nft: removing the pod's filter elements: {res.stderr.strip()}")


def _key(p: PortSpec) -> tuple[str, str]:
    """(map, key) of a forward in nft syntax."""
    if p.host_ip:
        return "fwd_ip", f"{p.host_ip} . {p.proto} . {p.host_port}"
    return "fwd_any", f"{p.proto} . {p.host_port}"


def _port_text(p: PortSpec) -> str:
    return f"{p.host_ip + ':' if p.host_ip else ''}{p.host_port}/{p.proto}"


def add_ports(table: str, ports: list[PortSpec], pod_ip: str, owner: str, running: Callable[[str], bool]) -> None:
    """Forward every port to *pod_ip*, all or none (one nft transaction); each element carries
    the pod's UUID *owner* as its comment, so that only that pod's teardown removes it.

    A host port that is forwarded already belongs to the pod its element names: when
    ``running`` (podrun.net.owners) says that pod is dead, it has removed the dead pod's
    forwards, and the ports are added again; a running pod's forward, or one naming no pod,
    makes this fail with a ConflictError naming it.  Callers hold the network's lock."""
    if not ports:
        return
    # create, not add: add accepts an identical element (a dead pod's forward to the same address
    # and port) silently, leaving it in the dead pod's name
    script = "".join(f'create element ip {table} {m} {{ {k} comment "{owner}" : {pod_ip} . {p.pod_port} }}\n'
                     for p in ports for m, k in [_key(p)])
    res = _nft(script, "forwarding ports")
    if res.returncode != 0 and "File exists" in res.stderr:
        current = _elements(table)
        for p in ports:
            m, key = _key(p)
            _, holder = current.get((m, tuple(key.split(" . "))), ((), ""))
            if holder is None or holder == owner or (holder and running(holder)):
                whom = f"running pod {holder}" if holder else "a pod podrun cannot name (no owner recorded)"
                raise ConflictError(f"--port: host port {_port_text(p)} is already forwarded to {whom}")
        res = _nft(script, "forwarding ports")
    if res.returncode != 0:
        if "File exists" in res.stderr:
            busy = ", ".join(map(_port_text, ports))
            raise ConflictError(f"--port: host port already forwarded to another pod (one of {busy})")
        raise PodrunError(f"nft: adding port forwards: {res.stderr.strip()}")


def _list(family: str, table: str) -> list[dict[str, Any]]:
    """The objects of ``nft -j list table`` ([] when the table is gone)."""
    res = subprocess.run([NFT, "-j", "list", "table", family, table], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        if "No such file or directory" in res.stderr:
            return []
        raise PodrunError(f"nft: listing table {family} {table}: {res.stderr.strip()}")
    import json

    objects = json.loads(res.stdout).get("nftables", [])
    return [o for o in objects if isinstance(o, dict)]


def _elements(table: str) -> dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], str | None]]:
    """{(map, key): (value, comment)} of the table's port maps ({} when the table is gone)."""
    out: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], str | None]] = {}
    for obj in _list("ip", table):
        m = obj.get("map")
        if not isinstance(m, dict) or m.get("name") not in ("fwd_any", "fwd_ip"):
            continue
        for key, value in m.get("elem", []):
            comment = None
            if "elem" in key:  # an element with a comment: {"elem": {"val": KEY, "comment": …}}
                key, comment = key["elem"]["val"], key["elem"].get("comment")
            out[(m["name"], _words(key))] = (_words(value), comment)
    return out


def remove_pod(table: str, owner: str, host_if: str) -> None:
    """Remove every forward whose comment names *owner* and the filter elements of its
    interface *host_if*: what a dead pod holds (podrun.net.owners).  Callers hold the
    network's lock."""
    script = "".join(f"delete element ip {table} {m} {{ {' . '.join(key)} }}\n"
                     for (m, key), (_, comment) in _elements(table).items() if comment == owner)
    for obj in _list("bridge", table):
        s = obj.get("set")
        if not isinstance(s, dict) or s.get("name") not in ("ports", "pods"):
            continue
        for elem in s.get("elem", []):
            words = _words(elem)
            if words[0] == host_if:
                key = " . ".join([f'"{host_if}"', *words[1:]])
                script += f"delete element bridge {table} {s['name']} {{ {key} }}\n"
    if script:
        res = _nft(script, "removing a dead pod's forwards and filter elements")
        if res.returncode != 0:
            raise PodrunError(f"nft: removing the forwards and filter elements of dead pod {owner}: "
                              f"{res.stderr.strip()}")


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
