#!/usr/bin/env bash
# The test command (README, CI): set up, lint, build, run every test including the multi-rank ones.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
bash ops/setup.sh
source ops/env.sh
step() { printf '\n==== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (warnings denied)"
cargo clippy --all-targets --quiet -- -D warnings
step "cargo build"
cargo build --all-targets --quiet
step "MPI smoke test: mpirun -np 2 ithn-dist world"
mpirun -np 2 "$ITHN_BIN" world
step "cargo test (unit + integration; multi-rank tests run mpirun -np 2 themselves)"
cargo test --no-fail-fast -- --test-threads=2
step "done in $(( $(date +%s) - start ))s"
