#!/usr/bin/env bash
# Builds the Debian package of podrun (make deb): dist/podrun_VERSION-1_ARCH.deb.
#
# Layout: a private virtualenv with podrun and its pinned dependencies in /opt/podrun (built at
# that path, as virtualenvs are not relocatable, then moved into the package), installed from a
# clean copy of the source (packaging/copy-source.sh) as any wheel is: the stage1 flavors inside
# the package (podrun/_stages, see docs/packaging.md), the command in /opt/podrun/bin/podrun
# (packaging/bin/podrun) and /usr/bin/podrun a link to it; systemd units, tmpfiles.d, man pages
# and bash/zsh completion.  Run as root on Debian 12 with the packages of
# scripts/install-deps.sh; /opt/podrun must not exist (an installed podrun package: remove it).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
prefix=/opt/podrun
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
arch=$(dpkg --print-architecture)
if [ -e "$prefix" ]; then
  echo "build-deb: $prefix exists (is the podrun package installed?); remove it first" >&2
  exit 1
fi
stage=$(mktemp -d /tmp/podrun-deb.XXXXXX)
chmod 755 "$stage"  # the package's ./ : dpkg-deb records its mode
trap 'rm -rf "$stage" "$prefix"' EXIT

bash packaging/copy-source.sh "$stage/src"
/usr/bin/python3 -m venv "$prefix"
"$prefix/bin/python" -m pip install -q --disable-pip-version-check "pip==24.2"
"$prefix/bin/python" -m pip install -q --disable-pip-version-check "$stage/src"
rm -rf "$stage/src"
"$prefix/bin/python" -m compileall -q "$prefix/lib" >/dev/null
rm -rf "$prefix/bin/pip"* "$prefix/bin/activate"* "$prefix/bin/Activate.ps1"
mkdir -p "$stage/opt" && cp -a "$prefix" "$stage/opt/"

install -d "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/usr/lib/tmpfiles.d" \
  "$stage/usr/share/doc/podrun/examples" "$stage/usr/share/bash-completion/completions" \
  "$stage/usr/share/zsh/vendor-completions" "$stage/DEBIAN"
ln -s "$prefix/bin/podrun" "$stage/usr/bin/podrun"
install -m 644 packaging/systemd/podrun-gc.service packaging/systemd/podrun-gc.timer "$stage/lib/systemd/system/"
install -m 644 packaging/systemd/podrun-example* "$stage/usr/share/doc/podrun/examples/"
install -m 644 packaging/tmpfiles.d/podrun.conf "$stage/usr/lib/tmpfiles.d/"
# hosts without systemd: gc from cron (the entry does nothing under systemd, whose timer does
# it), and the service files of podrun generate service as examples (man podrun-init(7))
install -D -m 644 packaging/cron.d/podrun-gc "$stage/etc/cron.d/podrun-gc"
cp -a packaging/init "$stage/usr/share/doc/podrun/examples/"
install -m 644 packaging/completion/podrun.bash "$stage/usr/share/bash-completion/completions/podrun"
install -m 644 packaging/completion/_podrun "$stage/usr/share/zsh/vendor-completions/_podrun"
install -m 644 README.md "$stage/usr/share/doc/podrun/"
for page in man/*.[1-8]; do
  section=${page##*.}
  install -d "$stage/usr/share/man/man$section"
  gzip -9n < "$page" > "$stage/usr/share/man/man$section/$(basename "$page").gz"
done

cat > "$stage/DEBIAN/control" <<CONTROL
Package: podrun
Version: $version-1
Architecture: $arch
Maintainer: podrun developers <podrun@localhost>
Depends: python3 (>= 3.11), python3 (<< 3.12), libseccomp2, nftables, containernetworking-plugins, iproute2, util-linux, catatonit
Recommends: systemd, crun
Suggests: runc
Section: admin
Priority: optional
Homepage: https://podrun.dev/
Description: daemonless pod runner for Linux
 podrun runs pods of OCI images without a daemon, in the spirit of CoreOS rkt: the
 process a shell or a systemd unit starts becomes the pod's supervisor. Namespaces,
 overlayfs, cgroup v1/v2, seccomp, a bridge network with NAT or CNI networks, readiness
 notification, socket activation and journal logging.
CONTROL
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  systemd-tmpfiles --create podrun.conf >/dev/null 2>&1 || install -d -m 0711 /var/lib/podrun /run/podrun
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    systemctl enable --now podrun-gc.timer >/dev/null 2>&1 || true
  fi
fi
POSTINST
cat > "$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl disable --now podrun-gc.timer >/dev/null 2>&1 || true
fi
# bytecode the interpreter wrote at run time is not in the package's file list
find /opt/podrun -name __pycache__ -path '*/_stages/*' -prune -exec rm -rf {} + 2>/dev/null || true
PRERM
echo /etc/cron.d/podrun-gc > "$stage/DEBIAN/conffiles"
chmod 755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm"
mkdir -p "$out"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/podrun_${version}-1_${arch}.deb" >/dev/null
echo "$out/podrun_${version}-1_${arch}.deb"
