"""registries.d parsing and scope resolution (podrun.trust.registriesd), and the lookaside
layout of podrun.trust.sources, without a registry."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from podrun.errors import UsageError, VerificationError
from podrun.image.digest import Digest
from podrun.image.reference import DockerReference, parse_docker_name
from podrun.trust import registriesd, sources
from podrun.trust.registriesd import Entry, docker_scopes, load, registries_d_dir

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_missing_directory_is_empty(tmp_path: Path) -> None:
    config = load(str(tmp_path / "nope"))
    assert config.for_image(parse_docker_name("example.com/a:1")) == Entry(None, None, False)


def test_files_are_merged_and_others_ignored(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "docker:\n  example.com:\n    lookaside: https://sigs.example.com\n")
    write(tmp_path, "b.yaml", "default-docker:\n  sigstore: file:///var/sigs\n")
    write(tmp_path, "c.yml", "docker:\n  other.org:\n    lookaside: file:///never\n")  # not *.yaml
    config = load(str(tmp_path))
    assert config.for_image(parse_docker_name("example.com/ns/app:1")).lookaside == "https://sigs.example.com"
    assert config.for_image(parse_docker_name("other.org/x")).lookaside == "file:///var/sigs"


def test_debian_default_file_with_an_empty_default_docker(tmp_path: Path) -> None:
    # Debian's default.yaml: "default-docker:" with every key commented out is no section at
    # all, so another file may still define default-docker.
    write(tmp_path, "default.yaml", "# comment\ndefault-docker:\n#  lookaside: https://x\n")
    write(tmp_path, "mine.yaml", "default-docker:\n  lookaside: file:///srv/sigs\n")
    assert load(str(tmp_path)).for_image(parse_docker_name("a.io/b")).lookaside == "file:///srv/sigs"


def test_default_docker_twice_names_both_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "default-docker:\n  lookaside: file:///a\n")
    write(tmp_path, "b.yaml", "default-docker:\n  use-sigstore-attachments: true\n")
    with pytest.raises(UsageError) as exc:
        load(str(tmp_path))
    assert "default-docker" in str(exc.value)
    assert str(tmp_path / "a.yaml") in str(exc.value) and str(tmp_path / "b.yaml") in str(exc.value)


def test_scope_in_two_files_names_both_even_without_conflict(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "docker:\n  example.com/ns:\n    lookaside: file:///a\n")
    write(tmp_path, "b.yaml", "docker:\n  example.com/ns:\n    use-sigstore-attachments: true\n")
    with pytest.raises(UsageError) as exc:
        load(str(tmp_path))
    message = str(exc.value)
    assert '"example.com/ns"' in message
    assert str(tmp_path / "a.yaml") in message and str(tmp_path / "b.yaml") in message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("docker:\n  a.io:\n    lookaside: file:///a\n  a.io:\n    lookaside: file:///b\n", "'a.io' defined twice"),
        ("docker:\n  a.io:\n    lookaside: [x]\n", "docker.a.io.lookaside"),
        ("docker:\n  a.io:\n    use-sigstore-attachments: sometimes\n", "use-sigstore-attachments"),
        ("docker: [a, b]\n", "docker must be a mapping"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("docker: {a.io: {lookaside: x}\n", "invalid YAML"),
    ],
)
def test_strict_errors_name_file_and_key(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, "conf.yaml", text)
    with pytest.raises(UsageError) as exc:
        load(str(tmp_path))
    assert str(path) in str(exc.value)
    assert named in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("docker:\n  example.com:\n    lookside: file:///a\n", "'lookside'"),  # misspelt
        ("default-docker:\n  use-cosign-attachments: true\n", "'use-cosign-attachments'"),
        ("dockers:\n  example.com: {}\n", "'dockers'"),
    ],
)
def test_unknown_keys_are_ignored_with_a_warning_as_containers_image_does(
        tmp_path: Path, text: str, named: str, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "conf.yaml", text)
    podrun_logger = logging.getLogger("podrun")  # does not propagate to the root logger caplog watches
    podrun_logger.addHandler(caplog.handler)
    try:
        config = load(str(tmp_path))
    finally:
        podrun_logger.removeHandler(caplog.handler)
    assert config.for_image(parse_docker_name("example.com/a/b:1")).lookaside != "file:///a"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(path) in warnings[0] and named in warnings[0]


def test_old_and_new_names(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """\
docker:
  old.io:
    sigstore: https://old/read
    sigstore-staging: file:///old/write
  new.io:
    lookaside: https://new/read
    sigstore: https://ignored
  read.io:
    lookaside: file:///shared
""")
    config = load(str(tmp_path))
    assert config.for_image(parse_docker_name("old.io/a")) == Entry("https://old/read", "file:///old/write", False)
    assert config.for_image(parse_docker_name("new.io/a")).lookaside == "https://new/read"
    # without a staging URL, signatures are written where they are read
    assert config.for_image(parse_docker_name("read.io/a")).lookaside_staging == "file:///shared"


def test_scope_precedence(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """\
default-docker:
  lookaside: file:///default
  use-sigstore-attachments: true
docker:
  reg.example.com:
    lookaside: file:///host
  reg.example.com:5000:
    lookaside: file:///host-port
  reg.example.com/team:
    lookaside: file:///team
  reg.example.com/team/app:
    use-sigstore-attachments: false
  reg.example.com/team/app:v1:
    lookaside: file:///tag
  "*.example.com":
    lookaside: file:///wildcard
  "*.com":
    lookaside: file:///com
""")
    config = load(str(tmp_path))

    def where(name: str) -> Entry:
        return config.for_image(parse_docker_name(name))

    assert where("reg.example.com/team/app:v1") == Entry("file:///tag", "file:///tag", False)
    # the repository scope sets only use-sigstore-attachments: the lookaside falls through to team
    assert where("reg.example.com/team/app:v2") == Entry("file:///team", "file:///team", False)
    assert where("reg.example.com/team/other") == Entry("file:///team", "file:///team", True)
    assert where("reg.example.com/solo").lookaside == "file:///host"
    # a port is part of the host scope; the port-less host is not a parent of it
    assert where("reg.example.com:5000/solo").lookaside == "file:///host-port"
    assert where("reg.example.com:6000/solo").lookaside == "file:///wildcard"
    assert where("a.b.example.com/x").lookaside == "file:///wildcard"
    assert where("example.com/x").lookaside == "file:///com"  # *.example.com never matches example.com
    assert where("example.org/x") == Entry("file:///default", "file:///default", True)
    digest_ref = parse_docker_name(f"reg.example.com/team/app@{DIGEST}")
    assert config.for_image(digest_ref).lookaside == "file:///team"


def test_docker_scopes_order() -> None:
    ref = parse_docker_name("a.example.com:5000/ns/app:1")
    assert docker_scopes(ref) == [
        "a.example.com:5000/ns/app:1", "a.example.com:5000/ns/app", "a.example.com:5000/ns",
        "a.example.com:5000", "*.example.com", "*.com",
    ]
    assert docker_scopes(parse_docker_name("busybox"))[:3] == [
        "docker.io/library/busybox:latest", "docker.io/library/busybox", "docker.io/library"]


def test_registries_d_dir(tmp_path: Path) -> None:
    assert registries_d_dir("/given", {"HOME": str(tmp_path)}) == "/given"
    assert registries_d_dir(None, {"HOME": str(tmp_path)}) == registriesd.SYSTEM_DIR
    user = tmp_path / ".config/containers/registries.d"
    user.mkdir(parents=True)
    assert registries_d_dir(None, {"HOME": str(tmp_path)}) == str(user)


def test_builtin_lookaside_is_containers_image_one(tmp_path: Path) -> None:
    expected = registriesd.BUILTIN_LOOKASIDE_ROOT if os.geteuid() == 0 else \
        f"file://{tmp_path}/.local/share/containers/sigstore"
    assert registriesd.builtin_lookaside({"HOME": str(tmp_path)}) == expected


# -- lookaside layout ----------------------------------------------------------------------------


def test_lookaside_url_layout() -> None:
    ref = parse_docker_name("reg.example.com:5000/ns/app:1")
    assert sources.lookaside_url("file:///srv/sigs", ref, DIGEST, 1) == \
        f"file:///srv/sigs/ns/app@sha256={HEX}/signature-1"
    assert sources.lookaside_url("https://sigs.example.com/base?x=1", ref, DIGEST, 12) == \
        f"https://sigs.example.com/base/ns/app@sha256={HEX}/signature-12?x=1"
    hub = parse_docker_name("busybox")
    assert sources.lookaside_url("http://h", hub, DIGEST, 2) == f"http://h/library/busybox@sha256={HEX}/signature-2"


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../x",
        f"sha256:{HEX.upper()}",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha256:{HEX[:-2]}/.",
        f"sha256:{HEX}/../../etc",
        f"sha256:{HEX}\n",
        f"md5:{HEX[:32]}",
        f"../sha256:{HEX}",
        "",
    ],
)
def test_lookaside_url_refuses_hostile_digests(digest: str) -> None:
    # CVE-2024-3727: a digest that reaches a path unvalidated can climb out of the lookaside.
    with pytest.raises(VerificationError):
        sources.lookaside_url("file:///srv/sigs", parse_docker_name("a.io/b"), digest, 1)


@pytest.mark.parametrize("repository", ["../etc", "a/../../b", "a//b", "/abs", "A", "a/.", ""])
def test_lookaside_url_refuses_hostile_repositories(repository: str) -> None:
    ref = DockerReference("a.io", repository, "t", None)  # not through the parser
    with pytest.raises(VerificationError):
        sources.lookaside_url("file:///srv/sigs", ref, DIGEST, 1)


@pytest.mark.parametrize("base", ["/srv/sigs", "ftp://h/x", "file://host/srv", "docker://x"])
def test_lookaside_url_refuses_bad_bases(base: str) -> None:
    with pytest.raises(UsageError) as exc:
        sources.lookaside_url(base, parse_docker_name("a.io/b"), DIGEST, 1)
    assert repr(base) in str(exc.value)


@pytest.mark.parametrize("n", [0, -1, True])
def test_lookaside_url_refuses_bad_indexes(n: int) -> None:
    with pytest.raises(UsageError):
        sources.lookaside_url("file:///s", parse_docker_name("a.io/b"), DIGEST, n)


def test_lookaside_url_stays_under_base() -> None:
    base = "/srv/sigs"
    for ref in (parse_docker_name("a.io/b/c:1"), parse_docker_name("busybox")):
        url = sources.lookaside_url("file://" + base, ref, DIGEST, 3)
        path = url[len("file://"):]
        assert os.path.normpath(path) == path and path.startswith(base + "/")


def test_write_lookaside_takes_the_next_free_number(tmp_path: Path) -> None:
    ref = parse_docker_name("a.io/ns/b:1")
    base = f"file://{tmp_path}"
    first = sources.write_lookaside(base, ref, DIGEST, b"one")
    second = sources.write_lookaside(base, ref, DIGEST, b"two")
    assert first == f"{tmp_path}/ns/b@sha256={HEX}/signature-1"
    assert second.endswith("/signature-2")
    assert Path(first).read_bytes() == b"one" and Path(second).read_bytes() == b"two"
    assert sorted(os.listdir(os.path.dirname(first))) == ["signature-1", "signature-2"]  # no temporary left
    with pytest.raises(UsageError):
        sources.write_lookaside("https://h/x", ref, DIGEST, b"x")
    with pytest.raises(VerificationError):
        sources.write_lookaside(base, ref, "sha256:../../x", b"x")


def test_digest_validation_is_the_image_one() -> None:
    assert str(Digest.parse(DIGEST)) == DIGEST


# -- every branch of the reader, with its exact message ------------------------------------------


def test_docker_scopes_of_a_digest_an_untagged_name_and_ipv6() -> None:
    assert docker_scopes(parse_docker_name(f"a.io/ns/app@{DIGEST}")) == [
        f"a.io/ns/app@{DIGEST}", "a.io/ns/app", "a.io/ns", "a.io", "*.io"]
    untagged = DockerReference(registry="b.io", repository="app", tag=None, digest=None)
    assert docker_scopes(untagged) == ["b.io/app:latest", "b.io/app", "b.io", "*.io"]
    # an IPv6 literal gets no wildcards, even with dots in it (containers/image cuts at the first ":")
    assert docker_scopes(parse_docker_name("[::ffff:10.0.0.1]:5000/app")) == [
        "[::ffff:10.0.0.1]:5000/app:latest", "[::ffff:10.0.0.1]:5000/app", "[::ffff:10.0.0.1]:5000"]


def test_registries_d_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert registries_d_dir(None) == registriesd.SYSTEM_DIR
    (tmp_path / registriesd.USER_DIR).mkdir(parents=True)
    assert registries_d_dir(None) == str(tmp_path / registriesd.USER_DIR)
    assert registries_d_dir(None, {}) == registriesd.SYSTEM_DIR
    assert registries_d_dir("", {"HOME": str(tmp_path)}) == str(tmp_path / registriesd.USER_DIR)


def builtin_lookaside_as_a_user(env: dict[str, str] | None, environ_home: str) -> str:
    """builtin_lookaside(*env*) in a forked child that is not root (nobody, when the tests run
    as root), with $HOME = *environ_home*."""
    read, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the answer or the error, never return into pytest
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            os.environ["HOME"] = environ_home
            answer = registriesd.builtin_lookaside(env)
        except BaseException as e:  # reported to the parent
            answer = f"error: {e!r}"
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read, "rb") as f:
        answer = f.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    return answer


def test_builtin_lookaside_for_a_user() -> None:
    if os.geteuid() == 0:
        assert registriesd.builtin_lookaside({"HOME": "/home/u"}) == "file:///var/lib/containers/sigstore"
    assert builtin_lookaside_as_a_user({"HOME": "/home/u"}, "/from/environ") == \
        "file:///home/u/.local/share/containers/sigstore"
    assert builtin_lookaside_as_a_user(None, "/from/environ") == \
        "file:///from/environ/.local/share/containers/sigstore"
    # an empty $HOME in env: the home directory as Python finds it (~ from the environment)
    assert builtin_lookaside_as_a_user({"HOME": ""}, "/from/environ") == \
        "file:///from/environ/.local/share/containers/sigstore"
    assert builtin_lookaside_as_a_user({}, "/from/environ") == "file:///from/environ/.local/share/containers/sigstore"


def test_a_key_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "docker:\n  a.io:\n    lookaside: file:///a\n    lookaside: file:///b\n")
    with pytest.raises(UsageError) as exc:
        load(str(tmp_path))
    assert str(exc.value) == (f"registries.d file {path}: invalid YAML: key 'lookaside' defined twice "
                              f'in "<byte string>", line 4, column 5: lookaside: file:///b ^')


def test_repeated_keys_in_different_mappings_are_fine(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "docker:\n  a.io:\n    lookaside: file:///a\n  b.io:\n    lookaside: file:///b\n"
                              "default-docker:\n  lookaside: file:///d\n")
    config = load(str(tmp_path))
    assert config.docker == {"a.io": registriesd.Section(lookaside="file:///a"),
                             "b.io": registriesd.Section(lookaside="file:///b")}
    assert config.default_docker == registriesd.Section(lookaside="file:///d")


def refusal(directory: Path) -> str:
    with pytest.raises(UsageError) as exc:
        load(str(directory))
    return str(exc.value)


@pytest.mark.parametrize(("text", "reason"), [
    ("- a\n", "must be a YAML mapping, not list"),
    ("just text\n", "must be a YAML mapping, not str"),
    ("1: x\n", "key 1 is not a string"),
    ("docker:\n  a.io:\n    2: x\n", "docker.a.io.key 2 is not a string"),
    ("default-docker:\n  true: y\n", "default-docker.key True is not a string"),
    ("docker:\n  a.io: [x]\n", "docker.a.io must be a mapping"),
    ("docker:\n  X: [x]\n", "docker.X must be a mapping"),
    ("default-docker: 5\n", "default-docker must be a mapping"),
    ("docker:\n  a.io:\n    sigstore-staging: 5\n", "docker.a.io.sigstore-staging must be a URL string"),
    ("default-docker:\n  use-sigstore-attachments: 1\n", "default-docker.use-sigstore-attachments must be true or false"),
    ("docker:\n  '': {}\n", "docker scope '' is not a non-empty string"),
    ("docker:\n  1: {}\n", "docker scope 1 is not a non-empty string"),
    ("docker: x\n", "docker must be a mapping of scopes"),
    (b"docker: \xff\xfe\n", "invalid YAML: unacceptable character #x00ff: invalid start byte "
                            'in "<byte string>", position 8'),
])
def test_each_refusal_names_file_and_reason(tmp_path: Path, text: str | bytes, reason: str) -> None:
    path = tmp_path / "conf.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert refusal(tmp_path) == f"registries.d file {path}: {reason}"


def test_the_size_bound(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    header = b"docker:\n  a.io:\n    lookaside: file:///a\n#"
    path.write_bytes(header + b"x" * (registriesd.MAX_FILE - len(header)))
    assert load(str(tmp_path)).docker["a.io"].lookaside == "file:///a"
    path.write_bytes(header + b"x" * (registriesd.MAX_FILE + 1 - len(header)))
    assert refusal(tmp_path) == f"registries.d file {path}: larger than 1048576 bytes"


def test_unreadable_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert refusal(tmp_path) == f"registries.d file {tmp_path / 'dir.yaml'}: is a directory"
    (tmp_path / "dir.yaml").rmdir()
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "absent")
    assert refusal(tmp_path) == f"registries.d file {tmp_path / 'dangling.yaml'}: cannot read: No such file or directory"
    not_a_dir = write(tmp_path, "file", "")
    assert refusal(not_a_dir) == f"registries.d directory {not_a_dir}: Not a directory"


def test_the_warning_for_an_unknown_key_names_where_and_the_known_keys(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "conf.yaml", "dockers: {}\ndefault-docker:\n  lookside: x\ndocker:\n  a.io:\n    sigstor: y\n")
    podrun_logger = logging.getLogger("podrun")  # does not propagate to the root logger caplog watches
    podrun_logger.addHandler(caplog.handler)
    try:
        load(str(tmp_path))
    finally:
        podrun_logger.removeHandler(caplog.handler)
    section = "lookaside, lookaside-staging, sigstore, sigstore-staging, use-sigstore-attachments"
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("podrun.trust.registriesd",
         f"registries.d file {path}: unknown key 'dockers' ignored (known keys: default-docker, docker)"),
        ("podrun.trust.registriesd",
         f"registries.d file {path}: unknown key default-docker.'lookside' ignored (known keys: {section})"),
        ("podrun.trust.registriesd",
         f"registries.d file {path}: unknown key docker.a.io.'sigstor' ignored (known keys: {section})"),
    ]


def test_empty_values_are_not_set(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "docker:\n  a.io:\n  b.io:\n    lookaside: ''\n    sigstore: ~\n")
    write(tmp_path, "b.yaml", "")
    config = load(str(tmp_path))
    assert config.docker == {"a.io": registriesd.Section(), "b.io": registriesd.Section()}
    assert config.default_docker is None
