#!/usr/bin/env bash
# Installs what the tests need and runs every check and test (the README's second command;
# .ci/run calls exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

bash scripts/install-test-deps.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build binaries (the integration tests run them as real processes)"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace --no-fail-fast
echo "== all checks passed in $(( $(date +%s) - started ))s"
