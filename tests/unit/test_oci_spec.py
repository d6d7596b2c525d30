"""podrun.stage1.oci.spec: the runtime-spec config.json of an app, as data (no root, no runtime).

Every generated document is checked against podrun/schemas/runtime-spec-config.json; the fields
that carry confinement are compared with what the ``default`` flavor applies (the same mount
plan, masked and read-only paths, capability set, rlimits and seccomp allowlist).  The runtimes
themselves run these documents in tests/integration/test_oci_spec_crun.py.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from podrun.isolation import syscalls as sc
from podrun.isolation.seccomp import ArgCond, Filter, Rule
from podrun.model.caps import CAP_NAMES
from podrun.model.manifest import AppSpec, MountSpec, PodManifest, Resources, Volume
from podrun.pod import seccomp_policy
from podrun.pod.caps_policy import DEFAULT_CAPS, cap_numbers
from podrun.stage1.oci import spec
from podrun.stage2.app import SetupError
from podrun.stage2.confine import default_rlimits
from podrun.stage2.mountplan import DEVICES, MASKED_PATHS, READONLY_PATHS, Mount, app_plan
from tests.fixtures.ocispec import default_section
from tests.fixtures.schemas import validate

UUID = "0123456789abcdef0123456789abcdef"
POD = "/pods/run/" + UUID
NEW = {"pid": "", "ipc": "", "uts": "", "network": ""}
DEFAULT_CAP_NUMBERS = tuple(sorted(cap_numbers(DEFAULT_CAPS)))
LOW32 = 0xFFFFFFFF


def app(name: str = "web", **fields: Any) -> AppSpec:
    base: dict[str, Any] = {"capabilities": DEFAULT_CAP_NUMBERS, "seccomp_bpf": f"apps/{name}/seccomp.bpf",
                            "exec_argv": ("/bin/web", "--port", "80"), "env": ("PATH=/usr/bin:/bin", "LANG=C.UTF-8")}
    return AppSpec(name, "sha256:" + "a" * 64, "example.com/web:1", ("/store/layer",), **(base | fields))


def pod(*apps: AppSpec, **fields: Any) -> PodManifest:
    return PodManifest(UUID, apps or (app(),), **fields)


def config(a: AppSpec | None = None, manifest: PodManifest | None = None, **kw: Any) -> dict[str, Any]:
    a = a or app()
    args: dict[str, Any] = {"rootfs": f"{POD}/apps/{a.name}/rootfs", "pod_dir": POD, "namespaces": NEW,
                            "cgroups_path": f"/podrun/pod-{UUID}/app-{a.name}", "user": (0, 0, [0]), "home": "/root",
                            "seccomp": default_section(a)}
    return spec.build_config(manifest or pod(a), a, **(args | kw))


def syscall_rules(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in doc["linux"]["seccomp"]["syscalls"] if name in r["names"]]


def admits(rule: dict[str, Any], args: dict[int, int]) -> bool:
    """Whether *rule*'s conditions (ANDed, values unsigned 64-bit as libseccomp compares them) hold."""
    for c in rule.get("args", ()):
        value = args[c["index"]]
        ok = {"SCMP_CMP_MASKED_EQ": value & c["value"] == c.get("valueTwo", 0), "SCMP_CMP_EQ": value == c["value"],
              "SCMP_CMP_NE": value != c["value"], "SCMP_CMP_LT": value < c["value"],
              "SCMP_CMP_LE": value <= c["value"], "SCMP_CMP_GT": value > c["value"],
              "SCMP_CMP_GE": value >= c["value"]}[c["op"]]
        if not ok:
            return False
    return True


CASES: dict[str, tuple[AppSpec, PodManifest | None, dict[str, Any]]] = {
    "default": (app(), None, {}),
    "read-only-rootfs": (app(read_only_rootfs=True), None, {}),
    "volumes": (app(mounts=(MountSpec("data", "/data"), MountSpec("cache", "/var/cache"))),
                pod(app(), volumes=(Volume("data", "host", "/srv/data", True), Volume("cache", "empty"))), {}),
    "extra-caps": (app(capabilities=tuple(sorted(cap_numbers(DEFAULT_CAPS | {"CAP_NET_RAW", "CAP_SYS_ADMIN"})))),
                   None, {}),
    "no-caps": (app(capabilities=()), None, {}),
    "seccomp-off": (app(seccomp_bpf=None, no_new_privileges=False), None, {}),
    "terminal": (app(), pod(app(), interactive=True), {"terminal": True}),
    "user-workdir": (app(user="nobody", group="nogroup", working_dir="/srv/www", supplementary_gids=(7, 65534)),
                     None, {"user": (65534, 65534, [65534]), "home": "/nonexistent"}),
    "resources": (app(resources=Resources(256 << 20, 1500, 64)), None, {}),
    "joined-namespaces": (app(), None, {"namespaces": {"pid": "/proc/42/ns/pid", "ipc": "/proc/42/ns/ipc",
                                                       "uts": "/proc/42/ns/uts", "network": "/run/netns/pod"}}),
    "host-network": (app(), pod(app(), net="host"), {"namespaces": {"pid": "", "ipc": "", "uts": ""}}),
    "dns-none": (app(), pod(app(), dns=("none",)), {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_configs_validate_against_the_schema(case: str) -> None:
    a, manifest, kw = CASES[case]
    validate(config(a, manifest, **kw), "runtime-spec-config")


def test_multi_app_pod_configs_validate_and_differ_per_app() -> None:
    apps = (app("web", mounts=(MountSpec("shared", "/shared"),)), app("db", user="nobody", exec_argv=("/bin/db",)))
    manifest = pod(*apps, volumes=(Volume("shared", "empty"),), hostname="shop")
    docs = [config(a, manifest, user=(65534, 65534, [65534]) if a.name == "db" else (0, 0, [0])) for a in apps]
    for doc in docs:
        validate(doc, "runtime-spec-config")
        assert doc["hostname"] == "shop"
    assert [d["process"]["args"] for d in docs] == [["/bin/web", "--port", "80"], ["/bin/db"]]
    assert [d["root"]["path"] for d in docs] == [f"{POD}/apps/web/rootfs", f"{POD}/apps/db/rootfs"]
    assert [d["linux"]["cgroupsPath"] for d in docs] == [f"/podrun/pod-{UUID}/app-web", f"/podrun/pod-{UUID}/app-db"]
    assert [m["destination"] for m in docs[0]["mounts"]][-1] == "/shared"
    assert "/shared" not in [m["destination"] for m in docs[1]["mounts"]]


@pytest.mark.parametrize("bad", [
    {"extra": 1},
    {"process": {"cwd": "relative"}},
    {"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": []}}},
    {"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                           "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO"}]}}},
    {"linux": {"namespaces": [{"type": "user"}]}},
    {"mounts": [{"destination": "/x", "type": "bind", "source": "/y"}]},
])
def test_the_schema_is_not_vacuous(bad: dict[str, Any]) -> None:
    doc = config()
    for key, value in bad.items():
        doc[key] = {**doc[key], **value} if isinstance(doc.get(key), dict) else value
    with pytest.raises(jsonschema.ValidationError):
        validate(doc, "runtime-spec-config")


def test_process_of_the_default_app() -> None:
    doc = config()
    assert doc["ociVersion"] == "1.0.2"
    assert doc["root"] == {"path": f"{POD}/apps/web/rootfs", "readonly": False}
    proc = doc["process"]
    assert proc["terminal"] is False
    assert proc["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert proc["args"] == ["/bin/web", "--port", "80"]
    assert proc["env"] == ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/root"]
    assert proc["cwd"] == "/"
    assert proc["noNewPrivileges"] is True
    assert proc["rlimits"] == [{"type": n, "soft": s, "hard": h} for n, (s, h) in sorted(default_rlimits().items())]
    assert [r["type"] for r in proc["rlimits"]] == ["RLIMIT_NOFILE", "RLIMIT_NPROC"]
    assert "oomScoreAdj" not in proc  # the manifest decides none
    assert doc["hostname"] == f"podrun-{UUID[:8]}"
    assert doc["linux"]["cgroupsPath"] == f"/podrun/pod-{UUID}/app-web"


def test_capabilities_are_the_decided_set_in_every_set_but_inheritable_and_ambient() -> None:
    caps = config()["process"]["capabilities"]
    expected = sorted(DEFAULT_CAPS, key=CAP_NAMES.__getitem__)
    assert caps == {"bounding": expected, "effective": expected, "permitted": expected, "inheritable": [],
                    "ambient": []}
    extra = config(app(capabilities=(CAP_NAMES["CAP_SYS_ADMIN"], CAP_NAMES["CAP_CHOWN"], CAP_NAMES["CAP_CHOWN"])))
    assert extra["process"]["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    assert config(app(capabilities=()))["process"]["capabilities"]["effective"] == []


def test_env_home_and_extra_variables() -> None:
    a = app(env=("HOME=/home/app", "A=1=2", "NOEQUALS", "A=3"))
    assert config(a)["process"]["env"] == ["HOME=/home/app", "A=3"]
    assert config(app(env=("A=1=2",)))["process"]["env"] == ["A=1=2", "HOME=/root"]
    extra = config(a, extra_env={"NOTIFY_SOCKET": "/run/notify", "A": "4"})["process"]["env"]
    assert extra == ["HOME=/home/app", "A=4", "NOTIFY_SOCKET=/run/notify"]


def test_home_is_looked_up_in_the_root_when_not_given(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n")
    assert "HOME=/var/www" in config(app(user="web"), rootfs=str(tmp_path), home=None)["process"]["env"]
    assert "HOME=/" in config(app(user="1234"), rootfs=str(tmp_path), home=None)["process"]["env"]
    assert "HOME=/elsewhere" in config(app(user="web"), rootfs=str(tmp_path), home="/elsewhere")["process"]["env"]
    with pytest.raises(SetupError, match="group 'staff' not found"):  # the same lookup as the driver's
        config(app(user="web", group="staff"), rootfs=str(tmp_path), home=None)
    with pytest.raises(NotADirectoryError):
        config(app(user="0"), rootfs=str(tmp_path / "etc" / "passwd"), home=None)


def test_user_groups_workdir_terminal_and_read_only_root() -> None:
    a = app(user="nobody", working_dir="/srv/www", supplementary_gids=(7, 100, 7), read_only_rootfs=True)
    doc = config(a, user=(65534, 65534, [65534, 100]), terminal=True)
    assert doc["process"]["user"] == {"uid": 65534, "gid": 65534, "additionalGids": [7, 100, 65534]}
    assert doc["process"]["cwd"] == "/srv/www"
    assert doc["process"]["terminal"] is True
    assert doc["root"]["readonly"] is True
    assert config(app(working_dir=""))["process"]["cwd"] == "/"
    assert config(app(no_new_privileges=False))["process"]["noNewPrivileges"] is False


def test_masked_and_read_only_paths_are_stage2s() -> None:
    linux = config()["linux"]
    assert linux["maskedPaths"] == list(MASKED_PATHS)
    assert linux["readonlyPaths"] == list(READONLY_PATHS)
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]


def test_mounts_are_the_default_flavors_plan() -> None:
    mounts = config()["mounts"]
    assert mounts == [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "nodev", "noexec"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "nodev", "noexec", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "nodev", "noexec"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro", "nosuid", "nodev", "noexec"]},
        {"destination": "/etc/hostname", "type": "bind", "source": f"{POD}/etc/hostname", "options": ["bind"]},
        {"destination": "/etc/hosts", "type": "bind", "source": f"{POD}/etc/hosts", "options": ["bind"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": f"{POD}/etc/resolv.conf", "options": ["bind"]},
    ]
    plan = [op.target for op in app_plan(spec.pod_files(pod(), POD), []) if isinstance(op, Mount)]
    assert [m["destination"] for m in mounts] == plan


@pytest.mark.parametrize(("dns", "resolv"), [((), True), (("192.0.2.1",), True), (("host",), True),
                                             (("none",), False), (("none", "192.0.2.1"), True)])
def test_resolv_conf_is_bound_unless_dns_none(dns: tuple[str, ...], resolv: bool) -> None:
    destinations = [m["destination"] for m in config(manifest=pod(dns=dns))["mounts"]]
    assert ("/etc/resolv.conf" in destinations) is resolv
    assert "/etc/hosts" in destinations and "/etc/hostname" in destinations


def test_volumes_with_their_read_only_flags() -> None:
    a = app(mounts=(MountSpec("data", "/data"), MountSpec("cache", "/var/cache"), MountSpec("data", "/again")))
    manifest = pod(a, volumes=(Volume("data", "host", "/srv/data", True), Volume("cache", "empty")))
    assert config(a, manifest)["mounts"][-3:] == [
        {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro", "nosuid", "nodev"]},
        {"destination": "/var/cache", "type": "bind", "source": f"{POD}/volumes/cache", "options": ["rbind"]},
        {"destination": "/again", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro", "nosuid", "nodev"]},
    ]
    with pytest.raises(ValueError, match="host volume 'data' has no source"):
        config(a, pod(a, volumes=(Volume("data", "host"), Volume("cache", "empty"))))


def test_mount_options_of_plain_binds_and_file_systems() -> None:
    assert spec.mount_options(Mount("/x", None, "/y", sc.MS_BIND)) == ["bind"]
    assert spec.mount_options(Mount("/x", None, "/y", sc.MS_BIND, read_only=True)) == ["bind", "ro", "nosuid", "nodev"]
    assert spec.mount_options(Mount("/x", "tmpfs", "tmpfs", sc.MS_RDONLY | sc.MS_STRICTATIME)) == ["ro", "strictatime"]
    assert spec.mount_options(Mount("/x", "tmpfs", "tmpfs", 0, "")) == []


def test_devices_are_the_default_flavors_nodes_and_the_only_ones_allowed() -> None:
    linux = config()["linux"]
    assert linux["devices"] == [{"path": f"/dev/{n}", "type": "c", "major": ma, "minor": mi, "fileMode": 0o666,
                                 "uid": 0, "gid": 0} for n, ma, mi in DEVICES]
    assert [d["path"] for d in linux["devices"]] == ["/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                                     "/dev/urandom", "/dev/tty"]
    rules = linux["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert rules[1:] == [{"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"} for _, ma, mi in DEVICES]


def test_resources_from_the_decided_limits() -> None:
    assert set(config()["linux"]["resources"]) == {"devices"}
    res = config(app(resources=Resources(256 << 20, 1500, 64)))["linux"]["resources"]
    assert res["memory"] == {"limit": 256 << 20}
    assert res["cpu"] == {"quota": 150000, "period": 100000}
    assert res["pids"] == {"limit": 64}
    assert set(config(app(resources=Resources(cpu_millis=1)))["linux"]["resources"]) == {"devices", "cpu"}
    quota = config(app(resources=Resources(cpu_millis=1)))["linux"]["resources"]["cpu"]["quota"]
    assert quota == 100 and isinstance(quota, int)  # a JSON integer, as the schema and runtimes want


def test_namespaces_joined_new_or_shared() -> None:
    joined = {"pid": "/proc/42/ns/pid", "network": "/run/netns/p", "ipc": "/proc/42/ns/ipc", "uts": "/proc/42/ns/uts"}
    assert config(namespaces=joined)["linux"]["namespaces"] == [
        {"type": "pid", "path": "/proc/42/ns/pid"}, {"type": "ipc", "path": "/proc/42/ns/ipc"},
        {"type": "uts", "path": "/proc/42/ns/uts"}, {"type": "network", "path": "/run/netns/p"},
        {"type": "mount"}, {"type": "cgroup"}]
    assert config()["linux"]["namespaces"] == [{"type": t} for t in ("pid", "ipc", "uts", "network", "mount", "cgroup")]
    shared = config(namespaces={"pid": ""})
    assert shared["linux"]["namespaces"] == [{"type": "pid"}, {"type": "mount"}, {"type": "cgroup"}]
    assert "hostname" not in shared  # no UTS namespace of the app's: runtimes refuse a hostname
    assert config(manifest=pod(hostname="shop"))["hostname"] == "shop"
    with pytest.raises(ValueError, match=r"\['mount', 'user'\] cannot be shared"):
        config(namespaces={"user": "/proc/1/ns/user", "mount": "", "pid": ""})


def test_no_seccomp_when_the_app_has_none() -> None:
    assert "seccomp" not in config(app(seccomp_bpf=None))["linux"]


def test_an_app_with_a_filter_is_never_configured_without_one() -> None:
    with pytest.raises(ValueError, match="app web: the manifest names a seccomp filter"):
        config(seccomp=None)


def test_the_given_section_is_used_as_it_is() -> None:
    section = {"defaultAction": "SCMP_ACT_KILL", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": []}
    assert config(seccomp=section)["linux"]["seccomp"] is section


def test_seccomp_default_architectures_and_every_allowed_syscall() -> None:
    doc = config()
    sec = doc["linux"]["seccomp"]
    assert sec["defaultAction"] == "SCMP_ACT_ERRNO" and sec["defaultErrnoRet"] == errno.ENOSYS
    arches = {"x86_64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32",
              "aarch64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM"}
    assert sec["architectures"] == [arches[a] for a in seccomp_policy.default_architectures()]
    allowed = {n for r in sec["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]}
    for group in seccomp_policy.ALLOWED.values():
        assert set(group) - {"ioctl"} <= allowed
    assert "ioctl" not in allowed  # only for the requests the guard lets through
    denied = {n for r in sec["syscalls"] if r.get("errnoRet") == errno.EPERM and "args" not in r for n in r["names"]}
    assert set(seccomp_policy.DENIED) <= denied
    assert {"mount", "unshare", "ptrace"} <= denied  # gated on capabilities the default set lacks
    assert not syscall_rules(doc, "clone3")  # ENOSYS, the default: left out as podrun's compiler does
    assert syscall_rules(doc, "socketcall") == [{"names": ["socketcall"], "action": "SCMP_ACT_ERRNO",
                                                 "errnoRet": errno.EPERM}]


def test_seccomp_rules_are_the_policys_filter() -> None:
    caps = frozenset(DEFAULT_CAPS | {"CAP_SYS_ADMIN"})
    doc = config(app(capabilities=tuple(sorted(cap_numbers(caps)))))
    assert doc["linux"]["seccomp"] == seccomp_policy.runtime_spec_section(seccomp_policy.filter_for(caps))
    allowed = {n for r in doc["linux"]["seccomp"]["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert {"mount", "unshare", "clone", "clone3"} <= allowed


@pytest.mark.parametrize("request_", [seccomp_policy.TIOCSTI, seccomp_policy.TIOCLINUX])
@pytest.mark.parametrize("high", [0, 1 << 32, 0xFFFFFFFF << 32])
def test_tty_injection_is_refused_whatever_the_high_bits(request_: int, high: int) -> None:
    rules = syscall_rules(config(), "ioctl")
    args = {1: request_ | high}
    assert not any(admits(r, args) for r in rules if r["action"] == "SCMP_ACT_ALLOW")
    matching = [r for r in rules if admits(r, args)]
    assert matching and all(r["action"] == "SCMP_ACT_ERRNO" and r["errnoRet"] == errno.EPERM for r in matching)


@pytest.mark.parametrize("request_", [0, 0x5401, 0x5413, 0x541B, 0x541D, 0x5412 | 1 << 16, 0x80045430, LOW32])
def test_other_ioctls_are_allowed(request_: int) -> None:
    rules = syscall_rules(config(), "ioctl")
    assert any(admits(r, {1: request_}) for r in rules if r["action"] == "SCMP_ACT_ALLOW")
    assert not any(admits(r, {1: request_}) for r in rules if r["action"] != "SCMP_ACT_ALLOW")


def test_oci_seccomp_writes_each_rule() -> None:
    f = Filter("KILL_PROCESS", 0, ("x86_64", "s390x", "aarch64"), (
        Rule(("read", "write"), "ALLOW"),
        Rule(("kill",), "ERRNO", errno.EACCES, (ArgCond(0, "EQ", 1), ArgCond(1, "MASKED_EQ", 0xF0, 0x10))),
        Rule(("ptrace",), "LOG"),
        Rule(("uname",), "TRAP"),
        Rule(("exit",), "KILL_PROCESS"),
        Rule(("tkill",), "KILL_THREAD"),
    ))
    assert seccomp_policy.runtime_spec_section(f) == {
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_S390X", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
             "args": [{"index": 0, "value": 1, "valueTwo": 0, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 0xF0, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["ptrace"], "action": "SCMP_ACT_LOG"},
            {"names": ["uname"], "action": "SCMP_ACT_TRAP"},
            {"names": ["tkill"], "action": "SCMP_ACT_KILL_THREAD"},
        ],
    }
    errno_default = seccomp_policy.runtime_spec_section(Filter("ERRNO", errno.EPERM, ("x86",), (
        Rule(("a",), "ERRNO", errno.EPERM), Rule(("b",), "ERRNO", errno.ENOSYS), Rule(("c",), "ALLOW"))))
    assert errno_default == {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EPERM,
                             "architectures": ["SCMP_ARCH_X86"],
                             "syscalls": [{"names": ["b"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
                                          {"names": ["c"], "action": "SCMP_ACT_ALLOW"}]}
