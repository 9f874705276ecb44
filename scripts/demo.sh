#!/usr/bin/env bash
# The README's main command. Until the standalone agent exists, Capstan's main job is its
# CRI runtime: this starts a local OCI registry holding a busybox image, starts
# `capstan cri` on it, pulls and lists the image, then keeps both running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
capstan_install_deps

echo "==> building"
cargo build --release --locked -p agent -p tests --bins
bin=target/release

work=$(mktemp -d /tmp/capstan-demo.XXXXXX)
socket=$work/cri.sock
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "==> starting a local registry with demo/busybox:latest"
"$bin/testbed" registry --push-demo --ignore-stdin </dev/null >"$work/registry.out" 2>"$work/registry.log" &
pids+=($!)
for _ in $(seq 300); do grep -q '^READY' "$work/registry.out" 2>/dev/null && break; sleep 0.1; done
registry=$(awk '/^REGISTRY /{print $2}' "$work/registry.out")
image=$(awk '/^IMAGE /{print $2}' "$work/registry.out")
[ -n "$image" ] || { cat "$work/registry.log"; echo "registry did not start" >&2; exit 1; }

cat >"$work/config.yaml" <<YAML
runtime:
  root: $work/state
  socket: $socket
  registries:
    "$registry":
      insecure: true
YAML

echo "==> starting capstan cri"
"$bin/capstan" cri --config "$work/config.yaml" 2>"$work/cri.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done

export CONTAINER_RUNTIME_ENDPOINT=unix://$socket
"$bin/capstan" version --runtime-endpoint "$CONTAINER_RUNTIME_ENDPOINT"
"$bin/capstan" image pull "$image"
"$bin/capstan" image ls

cat <<TXT

Capstan's CRI runtime is serving on $socket (state in $work/state, log in $work/cri.log).
A registry with $image is at http://$registry.
Try, in another shell:
  export CONTAINER_RUNTIME_ENDPOINT=unix://$socket
  $PWD/$bin/capstan image ls
  $PWD/$bin/capstan image inspect $image
  $PWD/$bin/capstan image rm $image
Press Ctrl-C to stop both.
TXT
wait "${pids[1]}"
