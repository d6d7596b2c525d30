#!/usr/bin/env bash
# The main job: build the demo image from busybox-static with podrun's own import command,
# export it as an OCI archive, push it to a local registry (Debian's docker-registry), sign it
# with a key made here, fetch it under a signature policy that requires that key, show an
# unsigned image and a tampered signature being refused, and run a pod from the verified image.
set -euo pipefail
cd "$(dirname "$0")/.."
podrun=.venv/bin/podrun
work=$(mktemp -d /tmp/podrun-demo.XXXXXX)
registry_pid=
cleanup() {  # every step runs whatever the one before did (set -e would stop at a failed wait)
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  if [ -d "$work/gnupg" ]; then gpgconf --homedir "$work/gnupg" --kill all 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n+ %s\n' "$*"; }

rootfs=$(bash demo/build-rootfs.sh "$work/rootfs")
step "podrun image import $rootfs demo:latest"
$podrun image import "$rootfs" demo:latest
step "podrun image export demo:latest oci-archive:$work/demo.tar"
$podrun image export demo:latest "oci-archive:$work/demo.tar"
step "podrun fetch oci-archive:$work/demo.tar:latest"
$podrun fetch "oci-archive:$work/demo.tar:latest"
step "podrun image list"
$podrun image list

# A registry of our own on 127.0.0.1 (plain HTTP: loopback), storage under $work.
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry=127.0.0.1:$port
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $registry
  secret: podrun-demo
EOF
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://$registry/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done
step "skopeo copy oci-archive:$work/demo.tar:latest docker://$registry/demo:latest"
skopeo copy -q --dest-tls-verify=false "oci-archive:$work/demo.tar:latest" "docker://$registry/demo:latest"

# A signing key, the signature, where signatures live (registries.d) and the policy.
export GNUPGHOME=$work/gnupg
mkdir -m 0700 "$GNUPGHOME"
gpg --batch -q --passphrase '' --quick-gen-key "podrun demo <demo@example.invalid>" ed25519 sign 1d 2>/dev/null
fpr=$(gpg --with-colons --list-keys 2>/dev/null | awk -F: '/^fpr/ {print $10; exit}')
gpg --export "$fpr" >"$work/demo-key.gpg"
step "podrun image sign --sign-by $fpr --identity $registry/demo:latest --lookaside $work/sigs demo:latest"
$podrun image sign --sign-by "$fpr" --identity "$registry/demo:latest" --lookaside "$work/sigs" demo:latest
mkdir "$work/registries.d"
printf 'docker:\n  %s:\n    lookaside: file://%s/sigs\n' "$registry" "$work" >"$work/registries.d/demo.yaml"
trusted=("$podrun" --signature-policy "$work/policy.json" --registries.d "$work/registries.d"
         --dir "$work/store")
step "podrun trust set --type signedBy --pubkeysfile $work/demo-key.gpg $registry/demo   (default: reject)"
"${trusted[@]}" trust set --type signedBy --pubkeysfile "$work/demo-key.gpg" "$registry/demo"
"${trusted[@]}" trust show

step "podrun fetch docker://$registry/demo:latest   (signed by the trusted key: admitted)"
"${trusted[@]}" fetch "docker://$registry/demo:latest"
"${trusted[@]}" image inspect "$registry/demo:latest" | grep '^Admitted by'

refused() {  # the command must fail with podrun's verification status, 250
  set +e
  "$@"
  rc=$?
  set -e
  if [ "$rc" -ne 250 ]; then
    echo "demo: expected a refusal (exit status 250), got $rc" >&2
    exit 1
  fi
  echo "(refused, exit status 250, as it should be)"
}
step "an unsigned image: podrun fetch docker://$registry/demo:unsigned"
$podrun image import --cmd /bin/true "$rootfs" unsigned:latest >/dev/null
$podrun image export unsigned:latest "oci-archive:$work/unsigned.tar"
skopeo copy -q --dest-tls-verify=false "oci-archive:$work/unsigned.tar:latest" "docker://$registry/demo:unsigned"
$podrun image rm unsigned:latest >/dev/null
refused "${trusted[@]}" fetch "docker://$registry/demo:unsigned"
step "a tampered signature: podrun fetch docker://$registry/demo:latest"
sig=$(find "$work/sigs" -name signature-1)
cp "$sig" "$work/signature.good"
printf 'x' | dd of="$sig" bs=1 seek=40 conv=notrunc status=none
refused "${trusted[@]}" fetch "docker://$registry/demo:latest"
cp "$work/signature.good" "$sig"

step "podrun run $registry/demo:latest (the verified image) --exec /bin/sh -- -c 'echo hello from a podrun pod; hostname; id; ip -4 -o addr show eth0'"
"${trusted[@]}" run "$registry/demo:latest" --exec /bin/sh -- -c 'echo hello from a podrun pod; hostname; id; ip -4 -o addr show eth0'
"${trusted[@]}" gc --grace-period 0s >/dev/null
