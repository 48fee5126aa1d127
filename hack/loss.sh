#!/usr/bin/env bash
# The loss test at a larger size, several seeds: pods and configmaps churned while edgecore and
# cloudcore are killed with SIGKILL at seeded points, deletes made while cloudcore is down, and a
# silent partition (tests/e2e/loss.rs). Each run must end with the edge holding exactly what
# the API says and ObjectSyncs saying exactly what the edge holds.
#
#   hack/loss.sh [objects=2000] [runs=3] [seed…]
#
# Needs root, iproute2 and iptables (hack/install-deps.sh). Prints one line per run: seed,
# objects, crashes, time to converge after cloudcore's restart and after the last crash, the
# anti-entropy repairs. Results: docs/performance.md ("Zero loss").
set -euo pipefail
cd "$(dirname "$0")/.."

OBJECTS=${1:-2000}
RUNS=${2:-3}
shift $(( $# > 2 ? 2 : $# ))
SEEDS=("$@")

cargo build --locked --bins
cargo test --locked -p kubeedge-e2e --test loss --no-run
for ((i = 0; i < RUNS; i++)); do
    seed=${SEEDS[$i]:-$(( (RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM ))}
    LOSS_SEED=$seed LOSS_OBJECTS=$OBJECTS cargo test --locked -q -p kubeedge-e2e --test loss -- --nocapture 2>&1 \
        | grep -E '^loss test: seed .*converged|Anti-entropy repaired|panicked|not converged' \
        | sed -E 's/^ +[0-9T:.-]+Z +INFO [^:]+: [^:]+: /    /'
done
