#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ (cargo fuzz, libFuzzer) and runs each for a while, starting
# from its committed seeds (fuzz/seeds/<target>/, copied to a scratch corpus so they are never
# modified). Prints, per target, the executions, the coverage and features reached and the
# corpus size; exits non-zero on any crash, timeout or out-of-memory, printing the path of the
# input that caused it. The last line is "fuzz: N targets, M executions, K crashes".
#
# Usage: hack/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default: 60 s, every target)
#
# Environment:
#   FUZZ_SANITIZER  address (default when a nightly toolchain is installed: AddressSanitizer,
#                   built with cargo +nightly) or none (the default toolchain, stable works).
#   FUZZ_JOBS       parallel libFuzzer workers per target (default 1).
#   KUBEEDGE_BUILD_LOCK  the lock file the build step holds (default /tmp/kubeedge-build.lock;
#                   empty: no lock, e.g. when the caller already holds it).
#
# Scratch corpora, logs and crash inputs go to target/fuzz-runs/<target>/ (kept after the run);
# the instrumented build to target/fuzz/<sanitizer>/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${1:-60}
if [ $# -gt 0 ]; then shift; fi
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
  echo "usage: hack/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 64
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed (hack/install-deps.sh installs it)" >&2
  exit 3
fi

if [ -z "${FUZZ_SANITIZER:-}" ]; then
  FUZZ_SANITIZER=none
  if rustup toolchain list 2>/dev/null | grep '^nightly' >/dev/null; then FUZZ_SANITIZER=address; fi
fi
case "$FUZZ_SANITIZER" in
  none) toolchain=() ;;
  address) toolchain=(+nightly) ;;
  *) echo "fuzz: FUZZ_SANITIZER must be address or none" >&2; exit 64 ;;
esac
jobs=${FUZZ_JOBS:-1}
target_dir="$root/target/fuzz/$FUZZ_SANITIZER"
triple=$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')
bin_dir="$target_dir/$triple/release"

all_targets=$(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^kubeedge-fuzz$' || true)
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets <<<"$all_targets"; fi
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$all_targets"; then
    echo "fuzz: no target $t (have: $(echo $all_targets))" >&2
    exit 64
  fi
done

# Inputs larger than this are not generated (the readers' caps are checked inside the targets,
# which build or pad oversize inputs themselves).
max_len() {
  case "$1" in
    message_decode | config_yaml) echo 16384 ;;
    edge_cert_request) echo 4096 ;;
    metaserver_request) echo 1024 ;;
    *) echo 512 ;;
  esac
}

# Extra seeds taken straight from the fixtures at run time.
extra_seeds() {
  case "$1" in
    message_decode) find tests/fixtures/upstream -maxdepth 1 -name '*.json' ! -name 'malformed-*' ;;
  esac
}

# The build, and only the build, holds the shared build lock.
lock=${KUBEEDGE_BUILD_LOCK-/tmp/kubeedge-build.lock}
build=(cargo "${toolchain[@]}" fuzz build -s "$FUZZ_SANITIZER" --target-dir "$target_dir")
echo "fuzz: building ${#targets[@]} target(s), sanitizer $FUZZ_SANITIZER, toolchain $(rustc "${toolchain[@]}" --version)"
start=$(date +%s)
if [ -n "$lock" ]; then
  (cd fuzz && flock --timeout 3600 "$lock" "${build[@]}")
else
  (cd fuzz && "${build[@]}")
fi
echo "fuzz: build took $(($(date +%s) - start)) s"

total_execs=0
crashes=0
for t in "${targets[@]}"; do
  run="$root/target/fuzz-runs/$t"
  rm -rf "$run"
  mkdir -p "$run/corpus" "$run/artifacts"
  cp fuzz/seeds/"$t"/* "$run/corpus/" 2>/dev/null || true
  while IFS= read -r f; do
    [ -n "$f" ] && cp "$f" "$run/corpus/fixture-$(basename "$f")"
  done < <(extra_seeds "$t")
  seeds=$(find "$run/corpus" -type f | wc -l)
  args=(-max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048
    -print_final_stats=1 -artifact_prefix="$run/artifacts/")
  if [ "$jobs" -gt 1 ]; then args+=(-fork="$jobs" -ignore_crashes=0); fi
  status=0
  (cd "$run" && "$bin_dir/$t" "${args[@]}" corpus) >"$run/log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$run/log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$run/log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  execs=${execs:-0}
  total_execs=$((total_execs + execs))
  mapfile -t found < <(find "$run/artifacts" -type f | sort)
  if [ "$status" -ne 0 ] || [ ${#found[@]} -gt 0 ]; then
    crashes=$((crashes + (${#found[@]} > 0 ? ${#found[@]} : 1)))
    echo "fuzz: $t: FAILED (exit $status) after $execs executions; log: $run/log"
    grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY:|\s+(panicked at|assertion)|ERROR: libFuzzer)' "$run/log" | head -20 | sed 's/^/fuzz:   /' || true
    for f in "${found[@]}"; do echo "fuzz: $t: crashing input: $f"; done
  else
    echo "fuzz: $t: ${execs} executions (${rate:-?}/s) in ${secs} s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?} (from ${seeds} seeds), 0 crashes"
  fi
done

echo "fuzz: ${#targets[@]} targets, $total_execs executions, $crashes crashes"
[ "$crashes" -eq 0 ]
