#!/usr/bin/env bash
# Installs everything podrun needs on a Debian 12 machine (run as root): system packages with
# apt-get, then a virtualenv in .venv with podrun and its pinned Python dependencies.
# Shared by the README's set-up commands and by .ci/run.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # build and run podrun; gcc and libc6-dev also build the tests' static in-pod probe
  python3 python3-venv python3-dev gcc libc6-dev pkg-config libsystemd-dev
  # the demo image and the test images are built from Debian's busybox-static
  busybox-static
  # tests: a real registry, skopeo/umoci/podman for interop, htpasswd for registry auth, zstd
  docker-registry skopeo umoci podman apache2-utils zstd ca-certificates
  # the signature-policy interop tests make and revoke OpenPGP keys with gpg
  gnupg
  # openssl makes the fake registries' TLS certificates; libseccomp2 is loaded by podrun (ctypes)
  openssl libseccomp2
  # the bench's peers (bench/host.py PEER_PACKAGES), which its smoke test runs: installed here,
  # never by the bench in the middle of the suite
  crun runc catatonit
  # gVisor's OCI runtime: the oci flavor's tests run pods on it too
  runsc
  # tools the tests and bench call
  util-linux procps iproute2 git groff-base time
  # networking: nft for podrun's NAT table, Debian's CNI plugins, curl for the port-forward tests
  nftables containernetworking-plugins curl
  # the systemd end-to-end test boots a Debian root made by debootstrap with systemd-nspawn
  debootstrap systemd-container
  # the init-system tests supervise pods with s6 (s6-supervise, s6-svscan, s6-log), runit
  # (runsv, sv, svlogd) and supervisord (with a config of their own); start-stop-daemon comes
  # with dpkg
  s6 runit supervisor
)

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# docker-registry's Debian package starts a system registry on :5000; podrun's tests start
# their own on random ports, so keep the packaged one out of the way.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
  # likewise the system supervisord the supervisor package starts: the tests run their own
  systemctl disable --now supervisor.service >/dev/null 2>&1 || true
fi

PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip==24.2"
# compat mode: a plain path entry in a .pth file; the default "finder" costs ~15 ms per start
.venv/bin/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e ".[test]"
# our launcher instead of pip's console script (see packaging/bin/podrun)
sed "1s|.*|#!$PWD/.venv/bin/python|" packaging/bin/podrun > .venv/bin/podrun.new
chmod 755 .venv/bin/podrun.new && mv .venv/bin/podrun.new .venv/bin/podrun
