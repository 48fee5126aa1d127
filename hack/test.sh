#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, fixture and process tests (the process tests
# start the real cloudcore and edgecore binaries on ephemeral loopback ports). Ends with one
# line totalling all test binaries: "summary: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
