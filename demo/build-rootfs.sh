#!/usr/bin/env bash
# Builds the demo root filesystem from Debian's busybox-static into DIR (default demo/rootfs):
# /bin/busybox with a symlink per applet, /etc/passwd, /etc/group and empty mount points.
set -euo pipefail
dest=${1:-"$(dirname "$0")/rootfs"}
bb=/bin/busybox
[ -x "$bb" ] || { echo "build-rootfs: $bb missing (apt-get install busybox-static)" >&2; exit 1; }
rm -rf "$dest"
mkdir -p "$dest"/{bin,etc,proc,sys,dev,tmp,root,var/www}
chmod 1777 "$dest/tmp"
chmod 0700 "$dest/root"
cp "$bb" "$dest/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$dest/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dest/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$dest/etc/group"
printf 'hello from a podrun pod\n' >"$dest/var/www/index.html"
echo "$dest"
