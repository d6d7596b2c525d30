"""``podrun generate unit`` and the shipped unit files, checked by systemd's own verifier."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from podrun.cli.generate import quote
from tests.conftest import ROOT

PODRUN = Path(sys.executable).parent / "podrun"


def test_quote() -> None:
    assert quote("plain") == "plain"
    assert quote("A=b c") == '"A=b c"'
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert quote("50%") == "50%%" and quote("$HOME") == "$$HOME"
    assert quote("") == '""'


def _generate(*args: str, trust: tuple[str, ...] = ()) -> str:
    # the session's own policy (tests/conftest.py) is not the unit's
    env = {k: v for k, v in os.environ.items() if k not in ("PODRUN_SIGNATURE_POLICY", "PODRUN_REGISTRIES_D")}
    res = subprocess.run([sys.executable, "-m", "podrun", "--dir", "/srv/pods", *trust, "generate", "unit", *args],
                         capture_output=True, text=True, cwd=ROOT, check=True, env=env)
    return res.stdout


def test_the_trust_options_reach_the_units_commands() -> None:
    lines = _generate("--podrun-path", str(PODRUN), "web",
                      trust=("--signature-policy", "/etc/pods/policy.json", "--registries.d", "/etc/pods/reg.d")).splitlines()
    trust = "--signature-policy /etc/pods/policy.json --registries.d /etc/pods/reg.d"
    assert f"ExecStartPre={PODRUN} --dir /srv/pods {trust} fetch web" in lines
    assert f"ExecStart={PODRUN} --dir /srv/pods {trust} run web" in lines


def _verify(unit: Path) -> None:
    # CI has it (package systemd, which systemd-container in scripts/install-deps.sh pulls in):
    # a machine without it fails here rather than passing unverified units.
    assert shutil.which("systemd-analyze"), "systemd-analyze is not installed (Debian package systemd)"
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_generated_unit(tmp_path: Path) -> None:
    text = _generate("--podrun-path", str(PODRUN), "--port", "80:8080", "--set-env", "GREETING=hello world",
                     "web", "--exec", "/bin/httpd", "--", "-f", "-p", "80", "---", "side", "--name", "b")
    lines = text.splitlines()
    assert "Type=notify" in lines and "KillMode=mixed" in lines and "Delegate=yes" in lines
    assert f"ExecStartPre={PODRUN} --dir /srv/pods fetch side web" in lines
    assert (f'ExecStart={PODRUN} --dir /srv/pods run --port 80:8080 --set-env "GREETING=hello world" web --exec '
            "/bin/httpd -- -f -p 80 --- side --name b") in lines
    assert f"ExecStopPost={PODRUN} --dir /srv/pods gc --mark-only" in lines
    unit = tmp_path / "web.service"
    unit.write_text(text)
    _verify(unit)


def test_generate_refuses_bad_flags() -> None:
    res = subprocess.run([sys.executable, "-m", "podrun", "generate", "unit", "--uuid-file-save", "/tmp/u", "img"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 253 and "uuid-file-save" in res.stderr


def test_shipped_units_verify(tmp_path: Path) -> None:
    for src in (ROOT / "packaging" / "systemd").iterdir():
        text = src.read_text().replace("/usr/bin/podrun", str(PODRUN))
        (tmp_path / src.name).write_text(text)
    for unit in sorted(tmp_path.iterdir()):
        target = unit
        if unit.name.endswith("@.service"):  # a template verifies as an instance
            target = tmp_path / unit.name.replace("@.", "@demo.")
            target.write_text(unit.read_text())
        _verify(target)


@pytest.mark.parametrize(("shell", "name"), [("bash", "podrun.bash"), ("zsh", "_podrun")])
def test_shipped_completion_is_current(shell: str, name: str) -> None:
    """packaging/completion is click's output for the current CLI (``make completion`` rewrites it)."""
    import os

    res = subprocess.run([sys.executable, "-m", "podrun"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, _PODRUN_COMPLETE=f"{shell}_source"))
    assert res.returncode == 0
    assert res.stdout == (ROOT / "packaging" / "completion" / name).read_text()


def test_completion_offers_commands_and_run_flags() -> None:
    import os

    def complete(words: str, cword: int) -> list[str]:
        env = dict(os.environ, _PODRUN_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(cword))
        out = subprocess.run([sys.executable, "-m", "podrun"], capture_output=True, text=True, cwd=ROOT, env=env)
        return [line.split(",", 1)[1] for line in out.stdout.splitlines()]

    assert complete("podrun ru", 1) == ["run", "run-prepared"]
    assert "--port" in complete("podrun run --", 2)


# -- generate service (man podrun-init(7)) --------------------------------------------------------

def _service(init: str, *args: str, check: bool = True, data: str = "/srv/pods") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PODRUN_SIGNATURE_POLICY", "PODRUN_REGISTRIES_D", "PODRUN_DIR")}
    return subprocess.run([sys.executable, "-m", "podrun", "--dir", data, "generate", "service", "--init", init,
                           "--podrun-path", "/usr/bin/podrun", *args], capture_output=True, text=True, cwd=ROOT,
                          check=check, env=env)


APP = ("--net", "none", "demo", "--exec", "/bin/sh", "--", "-c", "echo 'hi there'; exec sleep 9")


def _files(init: str, tmp_path: Path, *args: str) -> dict[str, str]:
    out = tmp_path / init
    written = _service(init, "--output", str(out), *args, *APP).stdout.split()
    files = {str(Path(p).relative_to(out)): Path(p).read_text() for p in written}
    for rel, text in files.items():
        assert os.access(out / rel, os.X_OK) == text.startswith("#!"), rel
        if text.startswith("#!/bin/sh"):
            assert subprocess.run(["sh", "-n", str(out / rel)]).returncode == 0, rel  # parses
    return files


def test_s6_service_dir(tmp_path: Path) -> None:
    files = _files("s6", tmp_path)
    assert sorted(files) == ["finish", "log/run", "notification-fd", "run", "type"]
    assert files["notification-fd"] == "3\n" and files["type"] == "longrun\n"
    run = files["run"].splitlines()
    assert run[0] == "#!/bin/sh" and "exec 2>&1" in run
    assert ("exec /usr/bin/podrun --dir /srv/pods run --ready-fd 3 --net none demo --exec /bin/sh -- -c "
            "'echo '\"'\"'hi there'\"'\"'; exec sleep 9'") in run
    assert "exec /usr/bin/podrun --dir /srv/pods gc --mark-only" in files["finish"]
    assert "exec s6-log T ./main" in files["log/run"]


def test_runit_service_dir(tmp_path: Path) -> None:
    files = _files("runit", tmp_path)
    assert sorted(files) == ["check", "finish", "log/run", "run"]
    assert "exec /usr/bin/podrun --dir /srv/pods run --uuid-file-save pod.uuid --net none demo" in files["run"]
    assert ("exec /usr/bin/podrun --dir /srv/pods status --uuid-file pod.uuid --wait-ready=1s >/dev/null 2>&1"
            in files["check"])
    assert "exec svlogd -tt main" in files["log/run"]


def test_sysv_init_script(tmp_path: Path) -> None:
    files = _files("sysv", tmp_path, "--name", "web")
    text = files["web"]
    assert "### BEGIN INIT INFO\n# Provides:          web\n" in text and "PIDFILE=${PIDFILE:-/run/podrun-web.pid}" in text
    assert "--start --oknodo --quiet --background --pidfile \"$PIDFILE\"" in text
    assert "--stop --oknodo --quiet --retry \"$STOP_RETRY\" --pidfile \"$PIDFILE\"" in text
    assert "run --pid-file \"$PIDFILE\" --net none demo" in text and "--make-pidfile" not in text
    assert 'LOG_COMMAND=${LOG_COMMAND:-"logger -t web -p daemon.info"}' in text


def test_openrc_script(tmp_path: Path) -> None:
    text = _files("openrc", tmp_path, "--name", "web", "--set-env", "A=50% off")["web"]
    lines = text.splitlines()
    assert lines[0] == "#!/sbin/openrc-run" and "supervisor=supervise-daemon" in lines
    assert 'retry="TERM/30/KILL/5"' in lines and "command=/usr/bin/podrun" in lines
    # openrc-run evals command_args: evaluated, the variable gives back the pod's words
    script = text.split("\ndepend()")[0] + '\neval "set -- $command_args"; printf "%s\\n" "$@"\n'
    words = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert words == ["--dir", "/srv/pods", "run", "--uuid-file-save", "/run/podrun-web.uuid", "--net", "none",
                     "--set-env", "A=50% off", "demo", "--exec", "/bin/sh", "--", "-c",
                     "echo 'hi there'; exec sleep 9"]
    assert "status --uuid-file /run/podrun-web.uuid --wait-ready=60s" in text
    # Debian 12's supervise-daemon (OpenRC 0.45) has no output_logger; no Debian service provides net
    assert "output_log=/var/log/podrun-web.log" in lines and "error_log=/var/log/podrun-web.log" in lines
    assert not [line for line in lines if line.startswith(("output_logger=", "error_logger=", "    need "))]
    # a restart waits for its own pod: the UUID file of the one before is removed first
    assert text.index("rm -f /run/podrun-web.uuid") < text.index("start_post()")
    # supervise-daemon gives up on a podrun that cannot start (and removes its pidfile)
    assert {"pidfile=/run/supervise-web.pid", "respawn_max=5", "respawn_period=60"} <= set(lines)


@pytest.mark.parametrize(("pidfile", "running"), [("", True), ("live", True), ("4194305\n", False), (None, False)])
def test_openrc_supervisor_running(tmp_path: Path, pidfile: str | None, running: bool) -> None:
    """The script's check of supervise-daemon's pidfile: there and empty (its PID not yet
    written) or naming a live process (this test's), or the supervisor has ended (a PID above
    the kernel's largest, or no file)."""
    text = _files("openrc", tmp_path, "--name", "web")["web"]
    path = tmp_path / "supervise.pid"
    if pidfile is not None:
        path.write_text(f"{os.getpid()}\n" if pidfile == "live" else pidfile)
    script = text + f'\npidfile={path}\nsupervisor_running\n'
    assert (subprocess.run(["sh", "-c", script]).returncode == 0) == running


def test_openrc_start_post_fails_without_supervisor(tmp_path: Path) -> None:
    """No supervise-daemon pidfile (it gave up) and no UUID file: start_post fails at once."""
    text = _files("openrc", tmp_path, "--name", "web")["web"]
    script = text + f'\neerror() {{ echo "$*" >&2; }}\npidfile={tmp_path}/none.pid\nstart_post\n'
    res = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "podrun failed at every start (/var/log/podrun-web.log)" in res.stderr


def test_supervisord_section(tmp_path: Path) -> None:
    import configparser
    import shlex

    text = _files("supervisord", tmp_path, "--name", "web", "--set-env", "A=50% off")["web.conf"]
    parser = configparser.ConfigParser()  # supervisord's %(…)s expansion, % doubled
    parser.read_string(text)
    section = parser["program:web"]
    assert section["stopsignal"] == "TERM" and section["exitcodes"] == "0,143" and section["stopasgroup"] == "false"
    assert shlex.split(section["command"])[:6] == ["/usr/bin/podrun", "--dir", "/srv/pods", "run",
                                                   "--uuid-file-save", "/run/podrun-web.uuid"]
    assert "A=50% off" in shlex.split(section["command"])


def test_service_printed_without_output() -> None:
    text = _service("s6", *APP).stdout
    assert text.startswith("==> run <==\n#!/bin/sh\n") and "==> notification-fd <==\n3\n" in text
    assert _service("sysv", *APP).stdout.startswith("#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          demo\n")


@pytest.mark.parametrize("args", [("--pid-file", "/run/x.pid"), ("--ready-fd", "3"), ("--uuid-file-save", "/run/u"),
                                  ("--name", "../x")])
def test_generate_service_refuses_what_it_sets_itself(args: tuple[str, ...]) -> None:
    res = _service("runit", *args, "demo", check=False)
    assert res.returncode == 253 and res.stderr.count("\n") == 1, res.stderr


def test_generate_unit_refuses_ready_fd() -> None:
    res = subprocess.run([sys.executable, "-m", "podrun", "generate", "unit", "--ready-fd", "3", "img"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 253 and "--ready-fd" in res.stderr


@pytest.mark.parametrize("init", ["runit", "s6", "sysv", "openrc", "supervisord"])
def test_shipped_service_examples_are_current(init: str, tmp_path: Path) -> None:
    """packaging/init/INIT is what the generator writes for the README's web pod."""
    shipped = ROOT / "packaging" / "init" / init
    out = tmp_path / init / ("web" if init in ("runit", "s6") else "")
    _service(init, "--name", "web", "--output", str(out), "--port", "80:8080", "demo", "--exec", "/bin/httpd",
             "--", "-f", "-p", "80", data="/var/lib/podrun")  # the default: no --dir in the scripts
    files = sorted(p.relative_to(tmp_path / init) for p in (tmp_path / init).rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    for rel in files:
        assert (shipped / rel).read_text() == (tmp_path / init / rel).read_text(), rel
        assert os.access(shipped / rel, os.X_OK) == os.access(tmp_path / init / rel, os.X_OK), rel


def test_shipped_cron_entry() -> None:
    lines = [line for line in (ROOT / "packaging" / "cron.d" / "podrun-gc").read_text().splitlines()
             if line and not line.startswith("#")]
    entry = lines[-1].split(None, 6)
    assert entry[5] == "root" and "podrun gc" in entry[6] and "/run/systemd/system" in entry[6]
    assert subprocess.run(["sh", "-n", "-c", entry[6]]).returncode == 0
