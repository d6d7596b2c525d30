"""Who holds the default network's addresses, ports and frames (issue 12, "Networking
ownership"; SECURITY-TESTS 29 and 30), on the real kernel with real pods, nft and the CLI.

- After ``kill -9`` of a pod's supervisor, the next ``run`` takes over its port and address at
  once (no gc in between), removing the dead pod's forward, veth and netns first; the dead
  pod's later gc leaves what the new pod holds.  A running pod's port or address is never
  taken: the new pod fails with 247 and the running pod keeps both.  A storm of kill -9s on
  one port, then runs racing for it, then gc: one winner, nothing left.
- A pod that gets the address of a pod that is gone answers at once, from the host and from
  pods that talked to the old one (its MAC is derived from the address); the bridge's MAC does
  not change with its ports.
- A pod cannot send with another pod's address or MAC: not ARP (the host's neighbour entry
  stays right), not IPv4 (the host never sees the forged source), not Ethernet (the bridge
  never learns the forged MAC on the pod's port).  The forged frames are sent from inside the
  pod's network namespace with a raw socket, as an app with CAP_NET_RAW could.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.faults import NET_CHECKPOINTS
from tests.conftest import NETNS_DIR, ROOT, TEST_BRIDGE, TEST_SUBNET, TEST_TABLE
from tests.integration.test_failsafe import _reachable, _web
from tests.integration.test_net import GATEWAY, _forwards, _free_port, _ip_of, _leases
from tests.integration.test_run import PODRUN, Pods, module_pods

PREFIX = TEST_SUBNET.rsplit(".", 1)[0]


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    for p in module_pods(tmp_path_factory, "netown"):
        yield p
    assert _forwards() == "" and _leases(p) == {}
    assert _pod_elements() == ""  # gc removed every pod's filter elements


@pytest.fixture(autouse=True)
def no_pods(pods: Pods) -> None:
    pods.cleanup()


def _host_if(uuid: str) -> str:
    return "pr" + uuid.replace("-", "")[:13]


def _netns(uuid: str) -> Path:
    return NETNS_DIR / uuid


def _has_link(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _filter_elements() -> str:
    res = subprocess.run(["nft", "list", "table", "bridge", TEST_TABLE], capture_output=True, text=True)
    return res.stdout


def _pod_elements() -> str:
    """The elements of the bridge table's per-pod sets (ports, pods): '' when none."""
    out = []
    for name in ("ports", "pods"):
        res = subprocess.run(["nft", "list", "set", "bridge", TEST_TABLE, name], capture_output=True, text=True)
        out += [line.strip() for line in res.stdout.splitlines() if "elements" in line]
    return "\n".join(out)


def _kill9(proc: subprocess.Popen[str]) -> None:
    """kill -9 of the pod's supervisor (``podrun run`` exec'd it)."""
    proc.kill()
    proc.wait(timeout=30)


def _stop(pods: Pods, uuid: str, proc: subprocess.Popen[str]) -> None:
    pods.run("stop", uuid, check=True)
    proc.wait(timeout=30)


# -- a dead pod's port, address and interface are taken over at once ---------------------------

def test_run_takes_over_a_dead_pods_port_address_and_interface_at_once(pods: Pods, tmp_path: Path) -> None:
    port = _free_port()
    dead, dead_uuid, _ = pods.start("--port", f"80:{port}", "demo", "--exec", "/bin/sleep", "--", "600")
    ip = _ip_of(pods, dead_uuid)
    _kill9(dead)
    assert _leases(pods) == {ip: dead_uuid} and f'comment "{dead_uuid}"' in _forwards()
    assert _has_link(_host_if(dead_uuid)) and _netns(dead_uuid).exists()  # all still there
    # the same port and the same address, no gc in between
    proc, uuid = _web(pods, tmp_path, port, "--net", f"default:IP={ip}")
    try:
        assert _ip_of(pods, uuid) == ip and _reachable(port)
        assert _leases(pods) == {ip: uuid} and dead_uuid not in _forwards() and f'comment "{uuid}"' in _forwards()
        # no interface of the dead pod answers for the address any more
        assert not _has_link(_host_if(dead_uuid)) and not _netns(dead_uuid).exists()
        # the dead pod's gc removes nothing the new pod holds
        out = pods.run("gc", "--grace-period", "0s", check=True).stdout
        assert f"removed pod {dead_uuid}" in out, out
        assert _reachable(port) and _leases(pods) == {ip: uuid} and f'comment "{uuid}"' in _forwards()
        assert _has_link(_host_if(uuid)) and _netns(uuid).exists()
    finally:
        _stop(pods, uuid, proc)
    assert _forwards() == "" and _leases(pods) == {}


def test_run_takes_over_a_dead_pods_port_with_another_address(pods: Pods, tmp_path: Path) -> None:
    """The new pod gets a fresh address, and the dead pod's lease goes with its forward."""
    port = _free_port()
    dead, dead_uuid, _ = pods.start("--port", f"80:{port}", "demo", "--exec", "/bin/sleep", "--", "600")
    _kill9(dead)
    proc, uuid = _web(pods, tmp_path, port)
    try:
        assert _reachable(port) and list(_leases(pods).values()) == [uuid]
        assert not _has_link(_host_if(dead_uuid)) and not _netns(dead_uuid).exists()
        assert pods.run("gc", "--grace-period", "0s", check=True).returncode == 0
        assert _reachable(port) and list(_leases(pods).values()) == [uuid]
    finally:
        _stop(pods, uuid, proc)


def test_a_running_pods_port_and_address_are_refused_with_247(pods: Pods, tmp_path: Path) -> None:
    port = _free_port()
    proc, uuid = _web(pods, tmp_path, port)
    try:
        ip = _ip_of(pods, uuid)
        forwards, leases = _forwards(), _leases(pods)
        for flags in (("--port", f"80:{port}"), ("--net", f"default:IP={ip}")):
            res = pods.run("run", *flags, "demo", "--exec", "/bin/true")
            assert res.returncode == 247 and uuid in res.stderr and "running pod" in res.stderr, res.stderr
            assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
            assert _forwards() == forwards and _leases(pods) == leases and _reachable(port)
            assert _has_link(_host_if(uuid)) and _netns(uuid).exists()
    finally:
        _stop(pods, uuid, proc)


def test_a_kill9_storm_on_one_port_then_racing_runs_then_gc_leave_nothing(pods: Pods) -> None:
    """Each pod takes over the port of the one killed before it; three runs racing for the last
    dead pod's port: exactly one gets it, the others exit 247 naming it; gc leaves nothing."""
    port = _free_port()
    killed = []
    for _ in range(8):
        proc, uuid, _ = pods.start("--port", f"80:{port}", "demo", "--exec", "/bin/sleep", "--", "600")
        assert f'comment "{uuid}"' in _forwards() and list(_leases(pods).values()) == [uuid]
        _kill9(proc)
        killed.append(uuid)
    racers = [subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run", "--port", f"80:{port}", "demo", "--exec",
                                "/bin/sh", "--", "-c", "sleep 5"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
    results = [(r.wait(timeout=120), r.stderr.read() if r.stderr else "") for r in racers]
    assert sorted(code for code, _ in results) == [0, 247, 247], results
    assert all("already forwarded to running pod" in err for code, err in results if code), results
    assert not [u for u in killed if _has_link(_host_if(u)) or _netns(u).exists()]
    out = pods.run("gc", "--grace-period", "0s", check=True).stdout
    assert all(f"removed pod {u}" in out for u in killed), out
    assert _forwards() == "" and _leases(pods) == {} and _pod_elements() == ""


# -- a reused address answers at once ----------------------------------------------------------

def _answers(ip: str) -> bool:
    """Whether *ip* answers the host within 2 s: a TCP connection to a closed port, refused
    (RST) by a live address; a stale neighbour entry sends it to a MAC nobody has."""
    try:
        socket.create_connection((ip, 9), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return True


def _answers_pod(pods: Pods, uuid: str, ip: str) -> bool:
    """``_answers`` from inside a running pod (busybox nc says why it could not connect)."""
    res = pods.run("enter", uuid, "/bin/nc", "-w", "2", ip, "9")
    return "Connection refused" in res.stderr


def test_a_reused_address_answers_at_once_from_the_host_and_other_pods(pods: Pods) -> None:
    ip = f"{PREFIX}.201"
    watcher, watcher_uuid, _ = pods.start("demo", "--exec", "/bin/sleep", "--", "600")
    old, old_uuid, _ = pods.start("--net", f"default:IP={ip}", "demo", "--exec", "/bin/sleep", "--", "600")
    try:
        # the host and the watcher talk to the old pod: both now hold a neighbour entry for it
        assert _answers(ip)
        assert _answers_pod(pods, watcher_uuid, ip)
        _kill9(old)
        assert f"removed pod {old_uuid}" in pods.run("gc", "--grace-period", "0s", check=True).stdout
        new, new_uuid, _ = pods.start("--net", f"default:IP={ip}", "demo", "--exec", "/bin/sleep", "--", "600")
        try:
            assert _answers(ip)
            assert _answers_pod(pods, watcher_uuid, ip)
        finally:
            _stop(pods, new_uuid, new)
    finally:
        _stop(pods, watcher_uuid, watcher)


def test_the_bridge_keeps_its_mac_as_ports_come_and_go(pods: Pods) -> None:
    """A bridge without a MAC of its own takes its lowest port's: the gateway's MAC that pods
    cached would change whenever a pod leaves."""
    proc, uuid, _ = pods.start("demo", "--exec", "/bin/sleep", "--", "600")
    try:
        base = Path("/sys/class/net", TEST_BRIDGE)
        assert (base / "addr_assign_type").read_text().strip() == "3"  # NET_ADDR_SET
        gateway = [int(b) for b in GATEWAY.split(".")]
        assert (base / "address").read_text().strip() == "02:42:" + ":".join(f"{b:02x}" for b in gateway)
    finally:
        _stop(pods, uuid, proc)


# -- a pod cannot send with another pod's address or MAC ---------------------------------------

# Run with the host's Python inside the spoofing pod's network namespace (nsenter): forged
# frames through a raw socket on eth0, then one honest datagram that ends the test's wait.
FORGE = r"""
import socket, struct, sys
victim_ip, victim_mac, own_ip, own_mac, gw_ip, gw_mac, port = sys.argv[1:8]
mac = lambda text: bytes.fromhex(text.replace(":", ""))
ip4 = socket.inet_aton

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

def udp(src_mac, src_ip, payload):
    body = struct.pack("!HHHH", 40000, int(port), 8 + len(payload), 0) + payload
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, 17, 0, ip4(src_ip), ip4(gw_ip))
    head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return mac(gw_mac) + mac(src_mac) + b"\x08\x00" + head + body

# gratuitous ARP: "victim_ip is at own_mac"
garp = (b"\xff" * 6 + mac(own_mac) + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
        + mac(own_mac) + ip4(victim_ip) + b"\x00" * 6 + ip4(victim_ip))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for frame in (garp, udp(own_mac, victim_ip, b"forged-ip"), udp(victim_mac, own_ip, b"forged-mac"),
              udp(own_mac, own_ip, b"honest")):
    s.send(frame)
"""


def _mac_in_pod(uuid: str) -> str:
    res = subprocess.run(["nsenter", f"--net={_netns(uuid)}", "ip", "-br", "link", "show", "dev", "eth0"],
                         capture_output=True, text=True, check=True)
    return res.stdout.split()[2]


def _neighbour(ip: str) -> str:
    return subprocess.run(["ip", "neigh", "show", ip, "dev", TEST_BRIDGE], capture_output=True, text=True).stdout


def _fdb_port(mac: str) -> str:
    """The bridge port the bridge learned *mac* on ('' if none)."""
    out = subprocess.run(["bridge", "fdb", "show", "br", TEST_BRIDGE], capture_output=True, text=True).stdout
    return next((line.split()[2] for line in out.splitlines() if line.startswith(mac + " dev ")), "")


def test_a_pod_cannot_send_with_another_pods_address_or_mac(pods: Pods) -> None:
    victim, victim_uuid, _ = pods.start("demo", "--exec", "/bin/sleep", "--", "600")
    spoofer, spoofer_uuid, _ = pods.start("demo", "--exec", "/bin/sleep", "--", "600")
    try:
        victim_ip, spoofer_ip = _ip_of(pods, victim_uuid), _ip_of(pods, spoofer_uuid)
        victim_mac, spoofer_mac = _mac_in_pod(victim_uuid), _mac_in_pod(spoofer_uuid)
        assert _answers(victim_ip) and victim_mac in _neighbour(victim_ip)
        bridge_mac = Path("/sys/class/net", TEST_BRIDGE, "address").read_text().strip()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            listener.bind((GATEWAY, 0))
            listener.settimeout(20)
            port = listener.getsockname()[1]
            subprocess.run(["nsenter", f"--net={_netns(spoofer_uuid)}", sys.executable, "-c", FORGE, victim_ip,
                            victim_mac, spoofer_ip, spoofer_mac, GATEWAY, bridge_mac, str(port)],
                           check=True, timeout=60)
            received: list[tuple[bytes, str]] = []
            while not received or received[-1][0] != b"honest":
                data, (source, _) = listener.recvfrom(100)
                received.append((data, source))
        # what the host saw: the honest datagram only, from the spoofer's own address
        assert received == [(b"honest", spoofer_ip)], received
        # the host's neighbour entry for the victim still names the victim's MAC
        assert victim_mac in _neighbour(victim_ip) and spoofer_mac not in _neighbour(victim_ip)
        # the bridge did not learn the victim's MAC on the spoofer's port
        assert _fdb_port(victim_mac) != _host_if(spoofer_uuid)
        # and the victim is still reachable
        assert _answers(victim_ip)
    finally:
        _stop(pods, spoofer_uuid, spoofer)
        _stop(pods, victim_uuid, victim)


def test_filter_elements_exist_while_the_pod_runs_and_go_with_gc(pods: Pods) -> None:
    proc, uuid, _ = pods.start("demo", "--exec", "/bin/sleep", "--", "600")
    ip = _ip_of(pods, uuid)
    try:
        assert f'"{_host_if(uuid)}" . ' in _filter_elements() and ip in _filter_elements()
    finally:
        _stop(pods, uuid, proc)
    assert pods.run("gc", "--grace-period", "0s", check=True).returncode == 0
    assert _host_if(uuid) not in _filter_elements()
    assert os.path.exists(f"/sys/class/net/{TEST_BRIDGE}")


# -- 50 runs with --port killed at random points: every forward points at its own pod ----------

def _forward_elements() -> list[tuple[str, str, str]]:
    """(host port, owner UUID, pod address) of every forward in the test table."""
    return re.findall(r"(\d+) comment \"([0-9a-f-]+)\" : ([\d.]+) \. \d+", _forwards())


def _check_forwards_are_their_owners(pods: Pods, what: str) -> None:
    leases = _leases(pods)
    for host_port, owner, ip in _forward_elements():
        assert leases.get(ip) == owner, f"{what}: port {host_port} forwards to {ip} for {owner}, leased to " \
                                        f"{leases.get(ip)}"


def test_fifty_runs_with_ports_killed_at_random_points_never_forward_to_another_pod(pods: Pods) -> None:
    """Runs with --port on three host ports, half of them asking for one of three addresses,
    each killed (kill -9 of podrun, or a fault checkpoint of the network set-up) at a random
    point or left to finish: after each, every forward names the pod that holds its address's
    lease; then gc leaves nothing."""
    seed = int(os.environ.get("PODRUN_SOAK_SEED") or random.randrange(1 << 30))
    rnd = random.Random(seed)
    ports = [_free_port() for _ in range(3)]
    addresses = [f"{PREFIX}.{n}" for n in (210, 211, 212)]
    for i in range(50):
        net = ["--net", f"default:IP={rnd.choice(addresses)}"] if rnd.random() < 0.5 else []
        env = dict(os.environ)
        how = rnd.choice(["kill", "kill", "fault", "finish"])
        if how == "fault":
            env["PODRUN_FAULT"] = rnd.choice([c for c in NET_CHECKPOINTS if c != "net:after-cni"])
        proc = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run", *net, "--port",
                                 f"80:{rnd.choice(ports)}", "demo", "--exec", "/bin/sleep", "--", "600"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        if how == "kill":
            time.sleep(rnd.uniform(0, 0.6))
            with contextlib.suppress(ProcessLookupError):  # it may have ended (247) already
                if rnd.random() < 0.5:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: helper, apps
                else:
                    proc.kill()
        elif how == "finish":
            time.sleep(rnd.uniform(0.3, 1))
            proc.terminate()  # SIGTERM to the supervisor (or to stage0 before the exec)
        try:
            code = proc.wait(timeout=60)
        finally:
            err = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in err, (seed, i, err)
        assert code in (0, 143, 247, -9, -15, 137), (seed, i, code, err)
        _check_forwards_are_their_owners(pods, f"seed {seed}, run {i} ({how})")
    pods.run("gc", "--grace-period", "0s", check=True)
    assert _forwards() == "" and _leases(pods) == {} and _pod_elements() == ""
