"""Pure parts of pod networking: flag parsing, leases, resolv.conf and hosts rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from podrun.errors import ConflictError, LimitExceededError, UsageError
from podrun.model.manifest import AppSpec, PodManifest
from podrun.model.netspec import (
    NetSpec,
    PortSpec,
    check_dns,
    check_domain,
    check_hosts_entry,
    check_resolv_option,
    check_resolv_words,
    exposed_port_names,
    parse_net,
    parse_port,
)
from podrun.net import ipam
from podrun.net.config import DefaultNet, pod_mac
from podrun.pod.podfiles import hosts_file, resolv_conf

EXPOSED = exposed_port_names({"config": {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8443": {}, "x/tcp": {}}}})


def test_exposed_ports_are_named_like_rkt() -> None:
    assert EXPOSED == {"80-tcp": ("tcp", 80), "53-udp": ("udp", 53), "8443-tcp": ("tcp", 8443)}
    assert exposed_port_names({}) == {}


@pytest.mark.parametrize(("text", "want"), [
    ("80:8080", PortSpec("tcp", 80, 8080)),
    ("53:5353/udp", PortSpec("udp", 53, 5353)),
    ("80:127.0.0.1:8080", PortSpec("tcp", 80, 8080, "127.0.0.1")),
    ("80-tcp:8081", PortSpec("tcp", 80, 8081)),
    ("53-udp:10.0.0.1:53", PortSpec("udp", 53, 53, "10.0.0.1")),
])
def test_parse_port(text: str, want: PortSpec) -> None:
    assert parse_port(text, EXPOSED) == want


@pytest.mark.parametrize("text", ["80", "80:0", "80:70000", "http:80", "80:8080/sctp", "80:1.2.3:8080",
                                  "53-udp:53/tcp", "a:b:c:d"])
def test_parse_port_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_port(text, EXPOSED)


def test_parse_net() -> None:
    assert parse_net("none") == () and parse_net("host") == ()
    assert parse_net("default") == (NetSpec("default"),)
    nets = parse_net("default:IP=172.16.28.9,mynet:IP=10.1.2.3;FOO=bar")
    assert [n.name for n in nets] == ["default", "mynet"]
    assert nets[1].arg("IP") == "10.1.2.3" and nets[1].arg("FOO") == "bar" and nets[0].arg("FOO") is None
    for bad in ("", "a/b", "default,default", "x:IP=300.1.1.1", "x:novalue", "none,default"):
        with pytest.raises(UsageError):
            parse_net(bad)


def test_dns_and_hosts_entries() -> None:
    check_dns(["1.1.1.1", "8.8.8.8"])
    check_dns(["host"])
    for bad in (["host", "1.1.1.1"], ["none", "host"], ["dns.example"]):
        with pytest.raises(UsageError):
            check_dns(bad)
    check_hosts_entry("10.0.0.1=db")
    check_hosts_entry("host")
    for entry in ("db", "=db", "10.0.0.1=", "db=10.0.0.1"):
        with pytest.raises(UsageError):
            check_hosts_entry(entry)


def _manifest(**kw: object) -> PodManifest:
    app = AppSpec("a", "sha256:x", "img", (), ("/bin/true",), ())
    base: dict[str, object] = {"uuid": "0123abcd-0000-4000-8000-000000000000", "apps": (app,), "net": "default",
                               "networks": (NetSpec("default"),)}
    base.update(kw)
    return PodManifest(**base)  # type: ignore[arg-type]


def test_resolv_conf_precedence(tmp_path: Path) -> None:
    flags = _manifest(dns=("10.0.0.53",), dns_search=("example",), dns_opts=("ndots:2",))
    assert resolv_conf(flags, {"nameservers": ["9.9.9.9"]}) == "nameserver 10.0.0.53\nsearch example\noptions ndots:2\n"
    assert resolv_conf(_manifest(dns=("none",)), {}) is None
    cni = resolv_conf(_manifest(), {"nameservers": ["10.1.0.1"], "search": ["cni.local"]})
    assert cni == "nameserver 10.1.0.1\nsearch cni.local\n"
    assert resolv_conf(_manifest(net="none", networks=()), {}) == ""


def test_hosts_file() -> None:
    m = _manifest(hostname="web.example", hosts_entries=("10.9.9.9=db",))
    text = hosts_file(m, ["172.16.28.5"])
    assert "127.0.0.1\tlocalhost\n" in text and "172.16.28.5\tweb.example web\n" in text and "10.9.9.9\tdb\n" in text
    assert "127.0.1.1\tpodrun-0123abcd" in hosts_file(_manifest(net="none", networks=()), [])


def test_leases(tmp_path: Path) -> None:
    """Lowest never-leased address first, then the lowest whose pod the judge finds dead (it is
    asked only about the lease that would be taken); a running pod's address is refused."""
    net = DefaultNet("prunit0", "10.77.0.0/29")  # .1 bridge, .2-.6 pods
    data = str(tmp_path)
    live = {"pod-b", "pod-d"}
    asked: list[str] = []

    def running(pod: str) -> bool:
        asked.append(pod)
        return pod in live

    def allocate(uuid: str, wanted: str | None = None, boot: str = "boot1") -> str:
        return ipam.allocate(data, net, uuid, boot, wanted, running)

    assert [allocate("pod-a"), allocate("pod-b")] == ["10.77.0.2", "10.77.0.3"] and asked == []
    assert allocate("pod-c", "10.77.0.2") == "10.77.0.2" and asked == ["pod-a"]  # pod-a is dead
    assert allocate("pod-d", "10.77.0.6") == "10.77.0.6"
    with pytest.raises(ConflictError, match="already leased to running pod pod-d"):
        allocate("pod-e", "10.77.0.6")
    with pytest.raises(UsageError, match="not a pod address"):
        allocate("pod-e", "10.77.0.1")  # the bridge's
    asked.clear()
    assert [allocate("pod-f"), allocate("pod-g")] == ["10.77.0.4", "10.77.0.5"] and asked == []
    live.discard("pod-b")  # pod-c runs, pod-b died: the lowest lease of a dead pod
    live.add("pod-c")
    assert allocate("pod-h") == "10.77.0.3" and asked == ["pod-c", "pod-b"]
    live.update({"pod-f", "pod-g", "pod-h"})
    with pytest.raises(LimitExceededError, match="no free address"):
        allocate("pod-i")
    asked.clear()
    assert allocate("pod-j", "10.77.0.6", boot="boot2") == "10.77.0.6" and asked == []  # after a reboot
    assert ipam.release(data, "prunit0", "pod-j") == ["10.77.0.6"]
    assert ipam.release(data, "prunit0", "pod-j") == []
    leases = ipam.leases(data, net)
    assert {ip: doc["pod"] for ip, doc in leases.items()} == {
        "10.77.0.2": "pod-c", "10.77.0.3": "pod-h", "10.77.0.4": "pod-f", "10.77.0.5": "pod-g"}
    assert json.loads((tmp_path / "net" / "prunit0" / "leases" / "10.77.0.4").read_text())["boot_id"] == "boot1"


def test_pod_mac_is_derived_from_the_address() -> None:
    assert pod_mac("172.16.28.2") == "02:42:ac:10:1c:02"
    assert DefaultNet("prunit0", "10.77.0.0/29").bridge_mac() == "02:42:0a:4d:00:01"


def test_network_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from podrun.errors import NotFoundError
    from podrun.net import config

    monkeypatch.setenv("PODRUN_NET_DIR", str(tmp_path))
    assert config.default_net() == DefaultNet()  # no default.json: rkt's subnet on podrun0
    assert DefaultNet().table == "podrun" and DefaultNet("br1").table == "podrun-br1"
    assert DefaultNet("b", "10.1.2.130/25").gateway() == "10.1.2.129"
    (tmp_path / "default.json").write_text('{"bridge": "br9", "subnet": "10.9.0.0/16"}')
    assert config.default_net() == DefaultNet("br9", "10.9.0.0/16")
    for bad in ('{"bridge": "x", "mtu": 1}', '{"subnet": "10.0.0.0/31"}', '{"subnet": "10.0.0/24"}',
                '{"bridge": "a-very-long-bridge-name"}', "[", "[]"):
        (tmp_path / "default.json").write_text(bad)
        with pytest.raises(UsageError, match="default.json"):
            config.default_net()
    (tmp_path / "default.json").unlink()
    (tmp_path / "10-one.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "one", "type": "bridge"}))
    (tmp_path / "20-two.conflist").write_text(json.dumps({"cniVersion": "0.4.0", "name": "two",
                                                          "plugins": [{"type": "bridge"}, {"type": "portmap"}]}))
    one = config.load_cni("one")
    assert one["plugins"] == [{"cniVersion": "1.0.0", "name": "one", "type": "bridge"}]
    two: Any = config.load_cni("two")
    assert [p["type"] for p in two["plugins"]] == ["bridge", "portmap"]
    with pytest.raises(NotFoundError):
        config.load_cni("three")
    (tmp_path / "30-bad.conflist").write_text(json.dumps({"cniVersion": "0.4.0", "name": "bad",
                                                          "plugins": [{"type": "../../bin/sh"}]}))
    with pytest.raises(UsageError, match="plugin"):
        config.load_cni("bad")


@pytest.mark.parametrize(("report", "status", "code"), [
    (b"247 address 10.0.0.2 of the default network is already leased to running pod P", 1, 247),
    (b"254 nft: something", 1, 254),
    (b"", 1, None),  # died without a word: OSError, as before
])
def test_the_network_helpers_report_carries_the_exit_status(report: bytes, status: int, code: int | None) -> None:
    import os

    from podrun.errors import PodrunError
    from podrun.net import helper

    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(res_r)
        os.write(res_w, report)
        os._exit(status)
    os.close(res_w)
    with pytest.raises((PodrunError, OSError)) as caught:
        helper.wait((pid, res_r))
    if code is None:
        assert isinstance(caught.value, OSError) and "the network helper died" in str(caught.value)
    else:
        assert isinstance(caught.value, PodrunError) and caught.value.exit_code == code
        assert str(caught.value) == "network: " + report.decode().split(" ", 1)[1]


@pytest.mark.parametrize("name", ["a", "example.com", "example.com.", "_srv.x-1.Example", "a" * 63,
                                  ".".join(["b" * 63] * 3 + ["c" * 61])])
def test_domain_names_accepted(name: str) -> None:
    assert check_domain("--dns-search", name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a..b", ".a", "a.b..", "a" * 64, "a b", "a/b", "a:b", "é.com",
                                  "a\nnameserver", ".".join(["b" * 63] * 3 + ["c" * 62]), "*.example"])
def test_domain_names_refused(name: str) -> None:
    with pytest.raises(UsageError, match=r"invalid --dns-search .*expected a domain name"):
        check_domain("--dns-search", name)


def test_domain_length_limit_is_the_callers() -> None:
    assert check_domain("x", "a" * 10, max_len=10)
    with pytest.raises(UsageError, match="at most 9 in all"):
        check_domain("x", "a" * 10, max_len=9)


@pytest.mark.parametrize("opt", ["ndots:2", "rotate", "edns0", "single-request-reopen", "timeout:30", "a",
                                 "attempts:99999", "no-aaaa"])
def test_resolv_options_accepted(opt: str) -> None:
    assert check_resolv_option(opt) == opt


@pytest.mark.parametrize("opt", ["", ":2", "ndots:", "ndots:x", "ndots:2:3", "Ndots:2", "2ndots", "nd_ots",
                                 "ndots:123456", "ndots:²", "a" * 65, "ndots:2 rotate", "ndots:1\nnameserver"])
def test_resolv_options_refused(opt: str) -> None:
    with pytest.raises(UsageError, match=r"invalid --dns-opt .*NAME or NAME:NUMBER"):
        check_resolv_option(opt)


def test_search_dot_means_none_and_stands_alone() -> None:
    check_resolv_words(["."], [])
    check_resolv_words(["a.example", "b"], ["ndots:1", "rotate"])
    with pytest.raises(UsageError, match="cannot be combined"):
        check_resolv_words([".", "a.example"], [])
    assert resolv_conf(_manifest(dns=("10.0.0.53",), dns_search=(".",)), {}) == "nameserver 10.0.0.53\n"


@pytest.mark.parametrize("entry", ["10.0.0.1=a..b", "10.0.0.1=" + "d" * 64, "10.0.0.1=a/b", "10.0.0.1=.",
                                   "10.0.0.1=" + ".".join(["d" * 61, "d" * 60, "d" * 60, "d" * 61])])
def test_hosts_entry_names_are_domain_names(entry: str) -> None:
    with pytest.raises(UsageError, match="--hosts-entry"):
        check_hosts_entry(entry)
    check_hosts_entry("10.0.0.1=" + ".".join(["d" * 61, "d" * 60, "d" * 60, "d" * 60]))


DOMAIN_RULE = "expected a domain name (labels of letters, digits, '-' and '_', 1-63 characters each, at most {} in all)"


@pytest.mark.parametrize(("entry", "message"), [
    ("10.0.0.1=", "invalid --hosts-entry '10.0.0.1=': expected IP=NAME or host"),
    ("10.0.0.1", "invalid --hosts-entry '10.0.0.1': expected IP=NAME or host"),
    ("10.0.0.300=db", "invalid --hosts-entry address '10.0.0.300': expected an IPv4 address"),
    ("10.0.0.1=a b", "invalid --hosts-entry '10.0.0.1=a b': expected one word of printable ASCII, at most 253 "
                     "characters"),
    # the name is all after the first '=', and may be as long as the line's 253 characters leave it
    ("10.0.0.1=a=b", "invalid --hosts-entry name 'a=b': " + DOMAIN_RULE.format(244)),
    ("10.0.0.1=a..b", "invalid --hosts-entry name 'a..b': " + DOMAIN_RULE.format(244)),
    ("192.168.100.200=a..b", "invalid --hosts-entry name 'a..b': " + DOMAIN_RULE.format(237)),
])
def test_hosts_entry_messages(entry: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        check_hosts_entry(entry)
    assert str(info.value) == message


@pytest.mark.parametrize("opt", ["a" * 64, "abcdefghijklmnopqrstuvwxyz0123456789-"])
def test_resolv_options_at_the_limits(opt: str) -> None:
    """64 characters in all, and a name may use every allowed character."""
    assert check_resolv_option(opt) == opt


def test_resolv_word_messages() -> None:
    with pytest.raises(UsageError) as info:
        check_resolv_option("Ndots:2")
    assert str(info.value) == ("invalid --dns-opt 'Ndots:2': expected a resolv.conf option, NAME or NAME:NUMBER "
                               "(lower-case letters, digits and '-')")
    with pytest.raises(UsageError) as info:
        check_resolv_words([".", "a.example"], [])
    assert str(info.value) == "--dns-search . (no search list) cannot be combined with other domains"
    with pytest.raises(UsageError) as info:
        check_resolv_words(["a..b"], [])
    assert str(info.value) == "invalid --dns-search 'a..b': " + DOMAIN_RULE.format(253)
