"""Input bounds and log bounds through the real CLI: out-of-range or line-breaking flag values are
refused with one line and exit code 253 before anything is fetched or written (SECURITY-TESTS
28, 30); the kernel takes the extreme values podrun accepts; app logs stay under
2 x ``--log-max-size`` and ``podrun logs`` (``-f`` too) reads them in order across a rotation."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fixtures import images as img
from tests.integration.test_run import PODRUN, Pods, module_pods


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "bounds")


def snapshot(data: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under the data dir: (mode, size, mtime)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(data):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), data)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def one_line_error(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    lines = res.stderr.splitlines()
    assert res.returncode == code, (res.returncode, res.stderr)
    assert lines and lines[0].startswith("podrun: ") and all(w in lines[0] for w in words), res.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint:")), res.stderr


def test_bad_values_are_refused_before_anything_is_fetched_or_written(pods: Pods, tmp_path: Path) -> None:
    """The image is an OCI layout not yet in the store: checking a flag after fetching it would
    change the store."""
    image = "oci:" + str(img.busybox_image(tmp_path / "layout").layout)
    nul = tmp_path / "nul.env"
    nul.write_bytes(b"A=1\0B=2\n")
    run_flags = [
        (["--hosts-entry", "10.0.0.1=db\n6.6.6.6 evil"], "--hosts-entry"),
        (["--hosts-entry", "10.0.0.1=db\tevil"], "--hosts-entry"),
        (["--dns-search", "example.com\nnameserver 6.6.6.6"], "--dns-search"),
        (["--dns-opt", "ndots:1\rnameserver 6.6.6.6"], "--dns-opt"),
        (["--hostname", "web\n6.6.6.6 evil"], "--hostname"),
        (["--hostname", "a" * 65], "--hostname"),
        (["--set-env-file", "/dev/zero"], "--set-env-file"),
        (["--set-env-file", str(nul)], "--set-env-file"),
        (["--log-max-size", "0"], "--log-max-size"),
        (["--log-max-size", "4K"], "--log-max-size"),
    ]
    app_flags = [
        (["--memory", "99999999999999999999G"], "--memory"),
        (["--memory", "16777216T"], "--memory"),  # 2^64: the kernel would read a 0-byte limit
        (["--memory", "1M"], "--memory"),
        (["--cpu", "1e400"], "--cpu"),
        (["--cpu", "9m"], "--cpu"),
        (["--pids-limit", "4194305"], "--pids-limit"),
        (["--supplementary-gids", "4294967295"], "--supplementary-gids"),
        (["--user", "-1"], "--user"),
        (["--user", "4294967295"], "--user"),
        (["--group", "2147483648"], "--group"),
    ]
    before = snapshot(pods.data)
    for flags, word in run_flags:
        for verb in ("run", "prepare"):  # run takes the click-free fast path, prepare goes through click
            one_line_error(pods.run(verb, *flags, image), 253, word)
    for flags, word in app_flags:
        one_line_error(pods.run("run", image, *flags), 253, word)
    assert snapshot(pods.data) == before


def test_image_user_out_of_range_is_refused(pods: Pods, tmp_path: Path) -> None:
    layer = img.tar_bytes(img.busybox_entries())
    built = img.write_oci_layout(tmp_path / "l", [layer], config={"config": {"Cmd": ["/bin/true"],
                                                                            "User": "4294967295"}})
    pods.run("fetch", f"oci:{built.layout}", check=True)
    pod_dirs = sorted((pods.data / "pods").glob("*/*"))
    one_line_error(pods.run("run", built.manifest_digest), 250, "4294967295", "User of image")
    assert sorted((pods.data / "pods").glob("*/*")) == pod_dirs
    assert pods.run("run", built.manifest_digest, "--user", "2147483647").returncode == 0


def test_the_kernel_takes_the_extremes_podrun_accepts(pods: Pods) -> None:
    res = pods.sh("id -u; id -g; id -G", app_flags=(
        "--memory", str((1 << 63) - 1), "--cpu", "10m", "--pids-limit", "4194304", "--user", "2147483647",
        "--group", "2147483647", "--supplementary-gids", "0,2147483647"))
    assert res.returncode == 0, res.stderr
    uid, gid, groups = res.stdout.splitlines()
    assert (uid, gid) == ("2147483647", "2147483647") and set(groups.split()) == {"0", "2147483647"}
    res = pods.sh("exit 0", "--hostname", "a" * 62 + ".b", app_flags=("--memory", "6M", "--cpu", "1000000"))
    assert res.returncode == 0, res.stderr


def _app_dir(pods: Pods, uuid: str, app: str = "demo") -> Path:
    return next((pods.data / "pods").glob(f"*/{uuid}")) / "apps" / app


def test_log_max_size_keeps_the_newest_data(pods: Pods, tmp_path: Path) -> None:
    uuid_file = tmp_path / "uuid"
    res = pods.run("run", "--uuid-file-save", str(uuid_file), "--log-max-size", "1M", "demo", "--exec", "/bin/seq",
                   "--", "1", "400000")  # 2.7 MB
    full = "".join(f"{i}\n" for i in range(1, 400001))
    assert res.returncode == 0, res.stderr
    assert res.stdout == full  # the caller gets everything
    app = _app_dir(pods, uuid_file.read_text().strip())
    older, cur = (app / "log.1").read_text(), (app / "log").read_text()
    assert len(older) == 1 << 20 and 0 < len(cur) <= 1 << 20
    assert full.endswith(older + cur)
    assert pods.run("logs", uuid_file.read_text().strip(), check=True).stdout == older + cur


def _read_until(stream: int, marker: bytes, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in {data[-200:]!r}"
        if select.select([stream], [], [], left)[0]:
            chunk = os.read(stream, 65536)
            assert chunk, f"EOF before {marker!r}"
            data += chunk
    return data


def test_logs_follow_survives_a_rotation(pods: Pods, tmp_path: Path) -> None:
    sig = tmp_path / "sig"
    sig.mkdir()
    pad = "x" * 50
    script = (f"i=0; while [ $i -lt 700 ]; do echo a-$i-{pad}; i=$((i+1)); done; echo A-END; "
              "while [ ! -e /sig/go ]; do sleep 0.05; done; "
              f"i=0; while [ $i -lt 500 ]; do echo b-$i-{pad}; i=$((i+1)); done; echo B-END")
    expected = ("".join(f"a-{i}-{pad}\n" for i in range(700)) + "A-END\n"
                + "".join(f"b-{i}-{pad}\n" for i in range(500)) + "B-END\n")
    assert 64 << 10 < len(expected) < 128 << 10  # exactly one rotation
    proc, uuid, _ = pods.start("--log-max-size", "64K", "--volume", f"sig,kind=host,source={sig}", "demo",
                               "--exec", "/bin/sh", "--mount", "volume=sig,target=/sig", "--", "-c", script,
                               stdout=subprocess.DEVNULL)
    follow = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "logs", "-f", uuid], stdout=subprocess.PIPE,
                              cwd=ROOT)
    try:
        assert follow.stdout is not None
        got = _read_until(follow.stdout.fileno(), b"A-END\n", 60)
        assert not (_app_dir(pods, uuid) / "log.1").exists()  # not rotated yet
        (sig / "go").touch()
        rest, _ = follow.communicate(timeout=60)  # -f ends with the pod
        assert proc.wait(timeout=60) == 0
    finally:
        follow.kill()
        follow.wait()
    assert (_app_dir(pods, uuid) / "log.1").exists()
    assert (got + rest).decode() == expected
