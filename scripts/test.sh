#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds the workspace once and
# runs every test (unit, root integration against a real registry, end-to-end via the
# `capstan` binary). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
capstan_install_deps

echo "==> cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> build"
cargo build --workspace --all-targets --locked

echo "==> test"
cargo test --workspace --locked "$@"
