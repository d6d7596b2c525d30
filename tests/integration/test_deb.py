"""The Debian package: built by one command (scripts/build-deb.sh, ``make deb``), installed with
dpkg on this machine, runs a pod of the demo image, then purged without leftovers."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from tests.conftest import ROOT

SITE = "lib/python3.11/site-packages"
# made by the package's postinst (tmpfiles.d/podrun.conf), not listed in the package
PACKAGE_DIRS = (Path("/var/lib/podrun"), Path("/run/podrun"))


def _installed() -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "podrun"], capture_output=True, text=True)
    return "install ok installed" in res.stdout


def test_package_installs_runs_a_pod_and_purges(podrun_deb: Path, tmp_path: Path) -> None:
    deb = podrun_deb
    assert not Path("/opt/podrun").exists()  # the build left nothing behind
    contents = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    assert contents.startswith("drwxr-xr-x root/root"), contents.splitlines()[0]  # the package's ./ is the host's /
    for path in ("./usr/bin/podrun", f"./opt/podrun/{SITE}/podrun/_stages/default/run",
                 f"./opt/podrun/{SITE}/podrun/_stages/fly/run", "./lib/systemd/system/podrun-gc.timer",
                 "./usr/share/man/man1/podrun-run.1.gz", "./usr/share/man/man7/podrun-systemd.7.gz",
                 "./usr/lib/tmpfiles.d/podrun.conf", "./usr/share/bash-completion/completions/podrun",
                 "./usr/share/zsh/vendor-completions/_podrun", "./etc/cron.d/podrun-gc",
                 "./usr/share/man/man7/podrun-init.7.gz", "./usr/share/doc/podrun/examples/init/s6/web/run"):
        assert path in contents, path
    made = [d for d in PACKAGE_DIRS if not d.exists()]
    subprocess.run(["dpkg", "-i", str(deb)], check=True, capture_output=True)
    try:
        rootfs = subprocess.run(["bash", str(ROOT / "demo" / "build-rootfs.sh"), str(tmp_path / "rootfs")],
                                check=True, capture_output=True, text=True).stdout.strip()
        data = tmp_path / "data"
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # the installed podrun, not the checkout's
        subprocess.run(["podrun", "--dir", str(data), "image", "import", rootfs, "demo"], check=True, env=env,
                       capture_output=True, cwd="/")
        res = subprocess.run(["podrun", "--dir", str(data), "--debug", "run", "--net", "none", "demo", "--exec",
                              "/bin/sh", "--", "-c", "echo hello from the package"], capture_output=True, text=True,
                             env=env, cwd="/", timeout=120)
        assert res.returncode == 0 and res.stdout == "hello from the package\n", res.stderr
        assert f" -I -S /opt/podrun/{SITE}/podrun/_stages/default/run " in res.stderr, res.stderr
        version = subprocess.run(["podrun", "--version"], capture_output=True, text=True, env=env, cwd="/")
        assert version.stdout.startswith("podrun, version ")
        subprocess.run(["podrun", "--dir", str(data), "gc", "--grace-period", "0s"], env=env, capture_output=True)
    finally:
        subprocess.run(["dpkg", "--purge", "podrun"], check=True, capture_output=True)
        for d in made:  # the postinst's data and runtime dirs outlive a purge: leave the machine as it was
            with contextlib.suppress(OSError):
                d.rmdir()
    assert not _installed()
    assert not Path("/opt/podrun").exists() and not Path("/usr/lib/podrun").exists()
    assert not Path("/usr/bin/podrun").exists()
