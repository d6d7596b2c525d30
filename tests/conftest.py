"""Shared fixtures: a throwaway data dir and a runner for the real ``podrun`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.registry import auth_registry, registry  # noqa: F401  (shared fixtures)

ROOT = Path(__file__).resolve().parents[1]

# Every pod the tests start on the default network uses a test bridge and subnet, never the
# host's real podrun0: set for the whole session (child processes inherit it) and removed at
# its end (pytest_sessionfinish).  Tests of other settings pass their own PODRUN_NET_DIR.
# A session holds a lock on its bridge name for its whole life, so two sessions side by side
# never share one: without PODRUN_TEST_BRIDGE the first free of prtest0 (172.16.29.0/24),
# prtest1..19 (172.16.61-79.0/24) is taken; PODRUN_TEST_BRIDGE / PODRUN_TEST_SUBNET name one
# (the bridge name must start with "prtest"), and a session whose named bridge is taken stops.
_BRIDGE_LOCKS: list[int] = []  # held until this process ends


def _claim_test_bridge() -> tuple[str, str]:
    import fcntl

    # a session inside another (a test running pytest) inherits the outer one's choice: not a name
    # given by the user, and held by the outer session
    named = None if os.environ.get("PODRUN_TEST_BRIDGE_AUTO") else os.environ.get("PODRUN_TEST_BRIDGE")
    if named:
        candidates = [(named, os.environ.get("PODRUN_TEST_SUBNET", "172.16.29.0/24"))]
    else:
        candidates = [("prtest0", "172.16.29.0/24")] + [(f"prtest{n}", f"172.16.{60 + n}.0/24") for n in range(1, 20)]
    for bridge, subnet in candidates:
        fd = os.open(f"/tmp/podrun-test-bridge.{bridge}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _BRIDGE_LOCKS.append(fd)
        return bridge, subnet
    what = f"bridge {named}" if named else "every test bridge prtest0..prtest19"
    raise SystemExit(f"tests: {what} is in use by another test session on this machine "
                     "(set PODRUN_TEST_BRIDGE and PODRUN_TEST_SUBNET to a free one)")


_AUTO = not os.environ.get("PODRUN_TEST_BRIDGE") or bool(os.environ.get("PODRUN_TEST_BRIDGE_AUTO"))
TEST_BRIDGE, TEST_SUBNET = _claim_test_bridge()
os.environ["PODRUN_TEST_BRIDGE"], os.environ["PODRUN_TEST_SUBNET"] = TEST_BRIDGE, TEST_SUBNET
if _AUTO:
    os.environ["PODRUN_TEST_BRIDGE_AUTO"] = "1"
TEST_TABLE = f"podrun-{TEST_BRIDGE}"
# A session killed before its end leaves its bridge and table; no live session holds this
# bridge name but this one (the lock above), so what the name holds now is stale: start from nothing.
for _cmd in (["ip", "link", "del", TEST_BRIDGE], ["nft", "delete", "table", "ip", TEST_TABLE],
             ["nft", "delete", "table", "bridge", TEST_TABLE]):
    subprocess.run(_cmd, capture_output=True)


def _remove_dead_sessions_dirs() -> None:
    """The net and runtime dirs of sessions whose process is gone (killed before their end); a
    runtime dir still holding a mounted netns file is left to that session's gc."""
    import shutil

    for d in [*Path("/tmp").glob("podrun-test-net.*"), *Path("/tmp").glob("podrun-test-run.*")]:
        pid = d.name.rsplit(".", 1)[1]
        if not pid.isdigit() or Path("/proc", pid).exists():
            continue
        with open("/proc/self/mountinfo") as f:
            if any(line.split()[4].startswith(f"{d}/") for line in f):
                continue
        shutil.rmtree(d, ignore_errors=True)


_remove_dead_sessions_dirs()
_NET_DIR = Path(f"/tmp/podrun-test-net.{os.getpid()}")
_NET_DIR.mkdir(exist_ok=True)
(_NET_DIR / "default.json").write_text(f'{{"bridge": "{TEST_BRIDGE}", "subnet": "{TEST_SUBNET}"}}\n')
os.environ["PODRUN_NET_DIR"] = str(_NET_DIR)
# The session's signature policy (containers-policy.json(5)) and registries.d: accept anything,
# signatures nowhere, whatever the host's /etc/containers holds; the trust tests name their own
# with --signature-policy / --registries.d.
(_NET_DIR / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
(_NET_DIR / "registries.d").mkdir(exist_ok=True)
os.environ["PODRUN_SIGNATURE_POLICY"] = str(_NET_DIR / "policy.json")
os.environ["PODRUN_REGISTRIES_D"] = str(_NET_DIR / "registries.d")
# The session's pods keep their netns files (and notify sockets, boot id) in a runtime dir of the
# session's own instead of /run/podrun, shared with every other session and podrun on the machine:
# what it holds is this session's doing.  Created by podrun as it makes /run/podrun on a fresh machine.
RUNTIME_DIR = Path(os.environ.get("PODRUN_RUNTIME_DIR") or f"/tmp/podrun-test-run.{os.getpid()}")
os.environ["PODRUN_RUNTIME_DIR"] = str(RUNTIME_DIR)
NETNS_DIR = RUNTIME_DIR / "netns"
_BASETEMP: list[str] = []  # this session's pytest temp root, once known (_session_basetemp)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")


INTEGRATION = Path(__file__).resolve().parent / "integration"
REGISTRY_FIXTURES = {"registry", "auth_registry"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The markers (registered in pyproject.toml, --strict-markers): every test in
    tests/integration/ is ``root`` (that directory holds what needs root; root-free tests live
    in tests/unit/, a few of them marked ``root`` one by one), and every test that uses a real
    registry fixture is ``registry``.  ``-m "not root"`` is the suite an unprivileged user runs."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.root)
        if REGISTRY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.registry)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None:
        require_root()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


PodrunRunner = Callable[..., Result]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    return d


@pytest.fixture
def podrun(data_dir: Path) -> PodrunRunner:
    """Run ``python -m podrun --dir DATA ARGS…`` and return its exit code and output."""

    def run(*args: str, check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 300) -> Result:
        full_env = dict(os.environ, **(env or {}))
        proc = subprocess.run(
            [sys.executable, "-m", "podrun", "--dir", str(data_dir), *args],
            capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT,
        )
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"podrun {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return res

    return run


@pytest.fixture(scope="session")
def podrun_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian package, built once per session by scripts/build-deb.sh (needs root and a
    machine without an installed podrun package)."""
    require_root()
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "podrun"], capture_output=True, text=True).stdout
    if status.endswith("install ok installed") or Path("/opt/podrun").exists():
        pytest.skip("a podrun package is installed on this machine; not building over it")
    out = tmp_path_factory.mktemp("deb")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "build-deb.sh"), str(out)], capture_output=True, text=True,
                         cwd=ROOT, timeout=1200)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session", autouse=True)
def _session_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    _BASETEMP.append(str(tmp_path_factory.getbasetemp()))


def _others(path: str) -> bool:
    """True for a path under another session's pytest temp root or runtime dir (or /run/podrun)."""
    if "/pytest-of-" in path and _BASETEMP:
        return not (path + "/").startswith(_BASETEMP[0] + "/")
    if path.startswith(("/tmp/podrun-test-run.", "/run/podrun/")):
        return not path.startswith(f"{RUNTIME_DIR}/")
    return False


def _pod_mounts() -> list[str]:
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return []
    return [p for p in points if ("pytest-of-" in p or "podrun" in p) and not _others(p)]


def own_bridge(name: str) -> bool:
    """The session's bridges: the test bridge and its CNI networks' (its name and one letter)."""
    return name == TEST_BRIDGE or (name[:-1] == TEST_BRIDGE and name[-1].isalpha())


def _pod_interfaces() -> list[str]:
    """Pod veth ends (pr<uuid>) but those attached to another session's bridge."""
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return []
    found = []
    for n in names:
        if not n.startswith("pr") or n.startswith("prtest"):
            continue
        try:
            master = os.path.basename(os.readlink(f"/sys/class/net/{n}/master"))
        except OSError:
            master = ""
        if not master or own_bridge(master):
            found.append(n)
    return sorted(found)


def _pod_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


# What the machine held before this session: pods of another session on the same machine (or
# ones a killed session left) are not this session's to judge.  Every leftover check below, and
# the tests' own machine-wide checks, count only what appeared after this point.
_BEFORE = {"mounts": set(_pod_mounts()), "interfaces": set(_pod_interfaces()), "netns": set(_pod_netns())}
if any(_BEFORE.values()):
    sys.stderr.write("note: this machine already held pod state before the tests; it is left out of their checks: "
                     + ", ".join(sorted(set().union(*_BEFORE.values()))) + "\n")


def _leftover_mounts() -> list[str]:
    return [m for m in _pod_mounts() if m not in _BEFORE["mounts"]]


def leftover_pod_interfaces() -> list[str]:
    """Host interfaces of pods (veth ends named pr<uuid>), excluding bridges and those the
    machine had before the session."""
    return [n for n in _pod_interfaces() if n not in _BEFORE["interfaces"]]


def leftover_netns() -> list[str]:
    """Files in the session's netns dir, except those it had before the session."""
    return [n for n in _pod_netns() if n not in _BEFORE["netns"]]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Report (and fail the run on) what tests left behind: every test must clean up.  Then
    remove the session's test bridge and nftables table (shared by the tests' pods)."""
    import shutil
    import time

    deadline = time.monotonic() + 5  # a dead netns takes its veth with it, asynchronously
    while leftover_pod_interfaces() and time.monotonic() < deadline:
        time.sleep(0.1)
    problems = [("mounts", _leftover_mounts()), ("pod interfaces", leftover_pod_interfaces()),
                (f"netns files in {NETNS_DIR}", leftover_netns())]
    for what, left in problems:
        if left:
            sys.stderr.write(f"\ntests left these {what} behind:\n  " + "\n  ".join(left) + "\n")
            session.exitstatus = 1
    subprocess.run(["ip", "link", "del", TEST_BRIDGE], capture_output=True)
    subprocess.run(["nft", "delete", "table", "ip", TEST_TABLE], capture_output=True)
    subprocess.run(["nft", "delete", "table", "bridge", TEST_TABLE], capture_output=True)
    shutil.rmtree(_NET_DIR, ignore_errors=True)
    if RUNTIME_DIR.name.startswith("podrun-test-run.") and not leftover_netns():
        shutil.rmtree(RUNTIME_DIR, ignore_errors=True)
