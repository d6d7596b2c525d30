#!/usr/bin/env bash
# The main job: build the demo image from busybox-static with podrun's own import command,
# export it as an OCI archive, fetch it back through the oci-archive: transport, list it,
# and run a pod from it.
set -euo pipefail
cd "$(dirname "$0")/.."
podrun=.venv/bin/podrun
work=$(mktemp -d /tmp/podrun-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$(bash demo/build-rootfs.sh "$work/rootfs")
echo "+ podrun image import $rootfs demo:latest"
$podrun image import "$rootfs" demo:latest
echo "+ podrun image export demo:latest oci-archive:$work/demo.tar"
$podrun image export demo:latest "oci-archive:$work/demo.tar"
echo "+ podrun fetch oci-archive:$work/demo.tar:latest"
$podrun fetch "oci-archive:$work/demo.tar:latest"
echo "+ podrun image list"
$podrun image list
echo "+ podrun run demo:latest --exec /bin/sh -- -c 'echo hello from a podrun pod; hostname; id; ip -4 -o addr show eth0'"
$podrun run demo:latest --exec /bin/sh -- -c 'echo hello from a podrun pod; hostname; id; ip -4 -o addr show eth0'
