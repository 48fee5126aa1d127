#!/usr/bin/env bash
# The scale harness: hollow edge nodes against cloudcore, as upstream measured KubeEdge with
# edgemark hollow nodes and ClusterLoader2's density test, scaled to one machine.
#
#   hack/bench-scale.sh [nodes=100] [pods-per-node=10] [extra bench-scale flags…]
#   hack/bench-scale.sh 9000 1 --replicas 3 --kill-replica   # 3 cloudcores behind haproxy, one killed
#   hack/bench-scale.sh 100 10 --upstream-edge               # nodes that behave as upstream edgecores
#
# Builds apiserver-lite, cloudcore and the fleet (release), raises the open-file limit (each
# connected node is one socket in cloudcore and one in the fleet), and runs `bench-scale`:
# three processes (apiserver-lite, cloudcore, hollow-edge) on loopback. Prints nodes
# connected, cloudcore RSS and CPU, pod startup latency p50/p90/p99, ACKed msg/s, reconnect
# time after a cloudcore restart and idle uplink per node. With --replicas N the cloudcores run
# behind haproxy (hack/install-deps.sh installs it); --kill-replica SIGKILLs the busiest after
# the idle phase and reports the reconnection time and any object lost or duplicated.
# Results: docs/performance.md.
# CARGO_TARGET_DIR is honoured; RATE (pods/s, default 500) and IDLE_SECS (default 60) too.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${1:-100}
PODS=${2:-10}
shift $(( $# > 2 ? 2 : $# ))
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release --locked -p apiserver-lite -p cloudcore -p kubeedge-hollow
# The hard limit is what we may raise the soft one to.
ulimit -n "$(ulimit -Hn)"
echo "bench-scale: open files limit $(ulimit -n); $(nproc) CPUs; $(free -g | awk '/Mem:/ {print $2}') GiB"
exec "$TARGET/release/bench-scale" --nodes "$NODES" --pods-per-node "$PODS" \
    --rate "${RATE:-500}" --idle-secs "${IDLE_SECS:-60}" "$@"
