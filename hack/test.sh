#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, fixture and process tests (the process tests
# start the real cloudcore and edgecore binaries on ephemeral loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
