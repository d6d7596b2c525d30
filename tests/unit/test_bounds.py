"""Input bounds of ``podrun run``: every flag value is refused at its exact limits with a
UsageError naming the flag, before any image is fetched (SECURITY-TESTS 28 and 30)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from podrun.cli import runflags
from podrun.errors import PodrunError, UsageError, VerificationError
from podrun.model import netspec as spec
from podrun.model.manifest import LOG_MAX_SIZE, PodManifest
from podrun.stage0 import appflags as af
from podrun.stage0 import prepare
from tests.conftest import ROOT

INT64_MAX = (1 << 63) - 1
# characters that could end a line or split a field in /etc/hosts or /etc/resolv.conf
BAD_CHARS = ["\n", "\r", "\t", " ", "\x00", "\x0b", "\x0c", "\x1c", "\x7f", "\x85", "\u2028", "\u00e9"]


def refused(func: object, *args: object, words: tuple[str, ...] = ()) -> str:
    with pytest.raises(UsageError) as info:
        func(*args)  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


@pytest.mark.parametrize(("text", "want"), [
    ("6M", 6 << 20), ("6291456", 6 << 20), ("64Mi", 64 << 20), ("1g", 1 << 30), ("8388607T", 8388607 << 40),
    (str(INT64_MAX), INT64_MAX),
])
def test_memory_accepted(text: str, want: int) -> None:
    assert af.parse_memory("--memory", text) == want


@pytest.mark.parametrize("text", [
    "6291455", "5M", "0", "-1", "-1G", str(INT64_MAX + 1), "8388608T",
    "16777216T",  # 2^64: the kernel's u64 wraps it to a 0-byte limit
    "99999999999999999999G", "\u0663M", "1.5G", "lots", "",
])
def test_memory_refused(text: str) -> None:
    refused(af.parse_memory, "--memory", text, words=("--memory", repr(text)))


@pytest.mark.parametrize(("text", "want"), [
    ("10m", 10), ("0.01", 10), ("0.5", 500), ("1.25", 1250), ("1.5", 1500), ("2", 2000), ("500m", 500),
    ("1000000", 10**9), ("1000000000m", 10**9), ("999999.999", 10**9 - 1), (".5", 500), ("0.010", 10),
])
def test_cpu_accepted(text: str, want: int) -> None:
    assert af.parse_cpu("--cpu", text) == want


@pytest.mark.parametrize("text", [
    "9m", "0.009", "0", "0m", "-1", "1000000.001", "1000000001m", "1000001", "inf", "nan", "1e400", "1e3",
    "1.0005", "1_000", "\u0661", "1.", ".", ".0001", "", "m", "1.5m", " ",
])
def test_cpu_refused(text: str) -> None:
    refused(af.parse_cpu, "--cpu", text, words=("--cpu",))


def test_pids_limit_bounds() -> None:
    assert af.parse_pids_limit("--pids-limit", "1") == 1
    assert af.parse_pids_limit("--pids-limit", "4194304") == 4194304  # PID_MAX_LIMIT
    for text in ("0", "4194305", "-1", "99999999999999999999", "\u0663", "1.0", ""):
        refused(af.parse_pids_limit, "--pids-limit", text, words=("--pids-limit", repr(text)))


def test_supplementary_gids_bounds() -> None:
    assert af.parse_gids("--supplementary-gids", "0,2147483647") == (0, 2147483647)
    assert af.parse_gids("--supplementary-gids", "") == ()
    assert len(af.parse_gids("--supplementary-gids", ",".join(["5"] * 65536))) == 65536
    refused(af.parse_gids, "--supplementary-gids", ",".join(["5"] * 65537), words=("65536",))
    for text in ("2147483648", "4294967295", "-1", "5,-1", "x", "\u0663"):
        refused(af.parse_gids, "--supplementary-gids", text, words=("--supplementary-gids",))


@pytest.mark.parametrize("text", ["0", "2147483647", "+2147483647", "nobody", "www-data", "user name", "\u00e9mile",
                                  "a-1", "1a"])
def test_identities_accepted(text: str) -> None:
    assert af.check_identity("--user", text) == text


@pytest.mark.parametrize("text", [
    "-1", "-5", "4294967295", "4294967294", "2147483648", "+2147483648", "99999999999999999999", "--5", "+-5",
    "\u0663", "\u00b2", "1\u0663", "+\u0663",
    "", "a:b", "a\nb", "a\x00b", "a\x7fb",
])
def test_identities_refused(text: str) -> None:
    refused(af.check_identity, "--user", text, words=("--user", repr(text)))
    with pytest.raises(VerificationError):
        af.check_identity("image config", text, VerificationError)


@pytest.mark.parametrize(("text", "want"), [
    ("-1", -1), ("-5", -1), ("8K", 8192), ("8192", 8192), ("1M", 1 << 20), ("8M", LOG_MAX_SIZE),
    (str(INT64_MAX), INT64_MAX),
])
def test_log_max_size_accepted(text: str, want: int) -> None:
    assert af.parse_log_max_size("--log-max-size", text) == want


@pytest.mark.parametrize("text", ["0", "-0", "8191", "1K", "-1G", "--1", str(INT64_MAX + 1), "x", ""])
def test_log_max_size_refused(text: str) -> None:
    refused(af.parse_log_max_size, "--log-max-size", text, words=("--log-max-size", repr(text)))


def test_log_max_size_default_is_the_manifests() -> None:
    flag = next(f for f in runflags.RUN_FLAGS if f.name == "--log-max-size")
    assert af.parse_log_max_size(flag.name, flag.default) == LOG_MAX_SIZE == PodManifest("u", ()).log_max_size


@pytest.mark.parametrize("bad", [*BAD_CHARS, "#"])
def test_hosts_entry_is_one_line_of_one_name(bad: str) -> None:
    spec.check_hosts_entry("10.0.0.1=db.example-1")
    text = f"10.0.0.1=db{bad}10.6.6.6 evil"
    refused(spec.check_hosts_entry, text, words=("--hosts-entry", repr(text)))


@pytest.mark.parametrize("bad", BAD_CHARS)
def test_resolv_conf_values_are_single_words(bad: str) -> None:
    spec.check_resolv_words(["example.com"], ["ndots:2", "rotate"])
    spec.check_resolv_words(["."], [])
    refused(spec.check_resolv_words, [f"a{bad}nameserver 6.6.6.6"], [], words=("--dns-search",))
    refused(spec.check_resolv_words, [], [f"ndots:1{bad}x"], words=("--dns-opt",))
    refused(spec.check_hostname, f"web{bad}x", words=("--hostname",))


def test_word_length_limit() -> None:
    assert spec.check_word("--dns-search", "a" * 253)
    refused(spec.check_word, "--dns-search", "a" * 254)
    refused(spec.check_word, "--dns-search", "")


@pytest.mark.parametrize("name", ["web", "Web.Example", "a", "a-b.c-d", "0pod", "a" * 63, "a" * 62 + ".b"])
def test_hostname_accepted(name: str) -> None:
    assert spec.check_hostname(name) == name


@pytest.mark.parametrize("name", [
    "a" * 64, "a" * 32 + "." + "a" * 32, "-a", "a-", "a.-b", "a..b", ".a", "a.", "a_b", "a/b", "",
])
def test_hostname_refused(name: str) -> None:
    refused(spec.check_hostname, name, words=("--hostname", repr(name)))


# -- build_manifest: flags first, images after -------------------------------------------------

def _image(config: dict[str, object] | None = None) -> prepare.ImageInfo:
    return prepare.ImageInfo("sha256:" + "a" * 64, "demo:latest", {"config": {"Cmd": ["/bin/sh"], **(config or {})}},
                             ("/nonexistent/layer",))


def _build(*args: str, image: prepare.ImageInfo | None = None, **run: Any) -> tuple[PodManifest, list[str]]:
    fetched: list[str] = []

    def resolve(name: str) -> prepare.ImageInfo:
        fetched.append(name)
        return image or _image()

    req = prepare.RunRequest(apps=af.split_apps(list(args)), net="none", **run)
    try:
        return prepare.build_manifest(req, resolve), fetched
    except PodrunError as exc:
        exc.fetched = fetched  # type: ignore[attr-defined]
        raise


@pytest.mark.parametrize(("args", "run", "word"), [
    (("demo", "--memory", "99999999999999999999G"), {}, "--memory"),
    (("demo", "--cpu", "inf"), {}, "--cpu"),
    (("demo", "--pids-limit", "4194305"), {}, "--pids-limit"),
    (("demo", "--supplementary-gids", "4294967295"), {}, "--supplementary-gids"),
    (("demo", "--user", "-1"), {}, "--user"),
    (("demo", "--group", "4294967295"), {}, "--group"),
    (("demo", "--working-dir", "rel"), {}, "--working-dir"),
    (("demo", "--name", "Bad_Name"), {}, "app name"),
    (("demo", "--caps-retain", "CAP_FLY"), {}, "CAP_FLY"),
    (("demo", "---", "demo", "--mount", "volume=nope,target=/x"), {}, "nope"),
    (("demo",), {"hostname": "a.b\n1.2.3.4 c"}, "--hostname"),
    (("demo",), {"hosts_entries": ["10.0.0.1=a\n6.6.6.6 b"]}, "--hosts-entry"),
    (("demo",), {"dns_search": ["a\nnameserver 6.6.6.6"]}, "--dns-search"),
    (("demo",), {"dns_opts": ["x\ny"]}, "--dns-opt"),
    (("demo",), {"log_max_size": "0"}, "--log-max-size"),
    (("demo",), {"set_env_file": "/dev/zero"}, "--set-env-file"),
])
def test_bad_flags_are_refused_before_any_image_is_fetched(args: tuple[str, ...], run: dict[str, Any],
                                                          word: str) -> None:
    with pytest.raises(UsageError) as info:
        _build(*args, **run)
    assert word in str(info.value)
    assert info.value.fetched == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(("user", "flags"), [
    ("4294967295", ()), ("-1", ()), ("2147483648", ()), ("0:4294967295", ()), ("0:-1", ("--user", "0")),
])
def test_image_user_out_of_range_is_refused(user: str, flags: tuple[str, ...]) -> None:
    with pytest.raises(VerificationError) as info:
        _build("demo", *flags, image=_image({"User": user}))
    assert "User of image 'demo'" in str(info.value) and "\n" not in str(info.value)


def test_flags_override_a_bad_image_user() -> None:
    m, _ = _build("demo", "--user", "5", "--group", "6", image=_image({"User": "4294967295:4294967295"}))
    assert (m.apps[0].user, m.apps[0].group) == ("5", "6")
    m, _ = _build("demo", "--user", "5", image=_image({"User": "4294967295:7"}))
    assert (m.apps[0].user, m.apps[0].group) == ("5", "7")  # the image's group stays with --user alone
    m, _ = _build("demo", image=_image({"User": "2147483647:0"}))
    assert (m.apps[0].user, m.apps[0].group) == ("2147483647", "0")
    m, _ = _build("demo", image=_image({"User": ""}))
    assert (m.apps[0].user, m.apps[0].group) == ("0", None)


def test_good_flags_reach_the_manifest() -> None:
    m, fetched = _build("demo", "--memory", "6M", "--cpu", "10m", "--pids-limit", "4194304", "--supplementary-gids",
                        "0,2147483647", "--user", "2147483647", hostname="Web.example", log_max_size="-1",
                        hosts_entries=["10.0.0.1=db"], dns_search=["example.com"], dns_opts=["ndots:2"])
    app = m.apps[0]
    assert fetched == ["demo"]
    assert (app.resources.memory_max, app.resources.cpu_millis, app.resources.pids_max) == (6 << 20, 10, 4194304)
    assert app.supplementary_gids == (0, 2147483647) and app.user == "2147483647"
    assert m.log_max_size == -1 and m.hostname == "Web.example"
    assert _build("demo")[0].log_max_size == LOG_MAX_SIZE


NAME_244 = ".".join(["d" * 61, "d" * 60, "d" * 60, "d" * 60])  # the longest name an IPv4 hosts entry takes
NAME_253 = ".".join(["x" * 63, "x" * 63, "x" * 63, "x" * 61])  # the longest DNS name


def test_the_schema_records_the_bounds() -> None:
    """A manifest at every limit validates; one past any limit does not."""
    import jsonschema

    schema = json.loads((ROOT / "podrun" / "schemas" / "pod-manifest.json").read_text())
    m, _ = _build("demo", "--memory", str(INT64_MAX), "--cpu", "1000000", "--pids-limit", "4194304",
                  "--supplementary-gids", "0,2147483647", "---", "demo", "--memory", "6M", "--cpu", "10m",
                  hostname="a" * 62 + ".B", hosts_entries=["10.0.0.1=" + NAME_244, "host"], dns_search=[NAME_253],
                  dns_opts=["ndots:2"])
    doc = json.loads(m.to_json())
    jsonschema.validate(doc, schema)
    res = doc["apps"][0]["resources"]
    for bad in ({"hostname": "a" * 63 + ".b"}, {"hostname": "a\nb"}, {"hostname": "-a"},
                {"hosts_entries": ["10.0.0.1=a b"]}, {"hosts_entries": ["10.0.0.1=a#b"]},
                {"hosts_entries": ["10.0.0.1=" + NAME_244 + "d"]},
                {"hosts_entries": ["10.0.0.1=" + "d" * 64]}, {"dns_search": ["x" * 64]}, {"dns_search": [NAME_253 + "x"]},
                {"dns_opts": ["ndots:2\nx"]}, {"dns_opts": ["Ndots"]}, {"dns_search": ["a\nb"]}, {"dns_opts": [""]},
                {"apps": [dict(doc["apps"][0], resources=dict(res, memory_max=INT64_MAX + 1))]},
                {"apps": [dict(doc["apps"][0], resources=dict(res, memory_max=(6 << 20) - 1))]},
                {"apps": [dict(doc["apps"][0], resources=dict(res, cpu_millis=9))]},
                {"apps": [dict(doc["apps"][0], resources=dict(res, cpu_millis=10**9 + 1))]},
                {"apps": [dict(doc["apps"][0], resources=dict(res, pids_max=4194305))]},
                {"apps": [dict(doc["apps"][0], supplementary_gids=[2147483648])]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(dict(doc, **bad), schema)


@pytest.mark.parametrize("size", [-1, 8192, LOG_MAX_SIZE])
def test_log_max_size_in_the_manifest(size: int) -> None:
    import jsonschema

    schema = json.loads((ROOT / "podrun" / "schemas" / "pod-manifest.json").read_text())
    m, _ = _build("demo", log_max_size=str(size))
    doc = json.loads(m.to_json())
    jsonschema.validate(doc, schema)
    assert PodManifest.from_json(m.to_json()).log_max_size == size
    del doc["log_max_size"]  # a manifest written before the flag existed
    assert PodManifest.from_json(json.dumps(doc).encode()).log_max_size == LOG_MAX_SIZE
    for bad in (0, 8191, -2):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(dict(doc, log_max_size=bad), schema)


# -- --set-env-file ---------------------------------------------------------------------------

def test_env_file_regular(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_bytes("# comment\nA=1\n\n B=2 \r\nC=x\x85y\u2028z\n".encode())
    assert prepare._env_file(str(f)) == ["A=1", "B=2", "C=x\x85y\u2028z"]


def test_env_file_size_limit(tmp_path: Path) -> None:
    f = tmp_path / "env"
    line = b"A=" + b"x" * (prepare.ENV_FILE_MAX - 3) + b"\n"
    f.write_bytes(line)
    assert len(prepare._env_file(str(f))[0]) == prepare.ENV_FILE_MAX - 1
    f.write_bytes(line + b"\n")
    refused(prepare._env_file, str(f), words=("--set-env-file", "1 MiB"))


@pytest.mark.parametrize(("data", "words"), [
    (b"A=1\x00B=2\n", ("NUL",)), (b"A=\xff\n", ("UTF-8",)), (b"JUSTAKEY\n", ("line 1",)),
])
def test_env_file_content_refused(tmp_path: Path, data: bytes, words: tuple[str, ...]) -> None:
    f = tmp_path / "env"
    f.write_bytes(data)
    refused(prepare._env_file, str(f), words=("--set-env-file", *words))


def test_env_file_never_opens_devices_or_dirs(tmp_path: Path) -> None:
    for path in ("/dev/zero", "/dev/null", "/dev/tty", str(tmp_path)):
        refused(prepare._env_file, path, words=("not a regular file or a pipe",))
    refused(prepare._env_file, str(tmp_path / "missing"), words=("No such file",))


def test_env_file_pipe(tmp_path: Path) -> None:
    """A pipe (``<(cmd)`` is /dev/fd/N) is read to its end; one that never ends, or a FIFO
    without a writer, is refused after the timeout instead of hanging."""
    r, w = os.pipe()
    try:
        os.write(w, b"A=1\n")
        os.close(w)
        w = -1
        assert prepare._env_file(f"/proc/self/fd/{r}") == ["A=1"]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    r, w = os.pipe()
    try:
        os.write(w, b"A=1\n")  # the writer stays open
        refused(prepare._env_file, f"/proc/self/fd/{r}", 0.05, words=("did not end",))
    finally:
        os.close(r)
        os.close(w)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused(prepare._env_file, str(fifo), 0.05, words=("did not end",))


def test_env_file_endless_pipe_is_cut_at_the_limit() -> None:
    import subprocess

    proc = subprocess.Popen(["yes", "A=1"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        refused(prepare._env_file, f"/proc/self/fd/{proc.stdout.fileno()}", words=("1 MiB",))
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
