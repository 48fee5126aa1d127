#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, fixture and process tests (the process tests
# start the real cloudcore and edgecore binaries on free loopback ports each test picks), then a short run
# of every fuzz target. Ends with one line totalling all test binaries and fuzz targets:
# "summary: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# Then, for a whole-suite run (no arguments), every fuzz target in fuzz/ for
# KUBEEDGE_FUZZ_SECONDS each (default 15; 0 skips): hack/fuzz.sh without a sanitizer, so the
# stable toolchain and cargo-fuzz (hack/install-deps.sh) suffice. Each target counts as one
# test in the summary; a crash fails the run. Without cargo-fuzz the fuzz run is skipped,
# unless KUBEEDGE_REQUIRE_TOOLS is set (CI), which makes it a failure.
fuzz_secs=${KUBEEDGE_FUZZ_SECONDS:-15}
if [ $# -eq 0 ] && [ "$fuzz_secs" != 0 ]; then
  if cargo fuzz --version >/dev/null 2>&1; then
    # No build lock, like the cargo test above (a caller holding it would wait on itself).
    KUBEEDGE_BUILD_LOCK= FUZZ_SANITIZER=none bash hack/fuzz.sh "$fuzz_secs" 2>&1 | tee -a "$log"
    fuzz_status=${PIPESTATUS[0]}
    if [ "$fuzz_status" -ne 0 ]; then
      status=1
      if ! grep '^fuzz: [a-z_]*: FAILED' "$log" >/dev/null; then
        echo "fuzz: [run]: FAILED (hack/fuzz.sh exited $fuzz_status)" | tee -a "$log"
      fi
    fi
  elif [ -n "${KUBEEDGE_REQUIRE_TOOLS:-}" ]; then
    echo "fuzz: [run]: FAILED (cargo-fuzz is not installed; hack/install-deps.sh installs it)" | tee -a "$log"
    status=1
  else
    echo "fuzz: skipped (cargo-fuzz is not installed; hack/install-deps.sh installs it)"
  fi
fi
awk '/^test result:/ { p += $4; f += $6 }
  /^fuzz: [][a-z_]*: FAILED/ { f++ }
  /^fuzz: [a-z_]*: [0-9]+ executions/ { p++ }
  END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
