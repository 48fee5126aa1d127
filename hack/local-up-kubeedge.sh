#!/usr/bin/env bash
# Builds cloudcore, edgecore and apiserver-lite and runs them locally until Ctrl-C.
#
# Configs come from each daemon's own `--defaultconfig` (modules this build does not have yet
# are switched off there). Work files go to _output/local-up/ (override with LOCAL_UP_DIR).
# Monitor ports: CLOUDCORE_MONITOR (127.0.0.1:9091) and EDGECORE_MONITOR (127.0.0.1:9092);
# the Kubernetes API (apiserver-lite): APISERVER_LISTEN (127.0.0.1:6443), kubeconfig in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${LOCAL_UP_DIR:-_output/local-up}
CLOUD_MON=${CLOUDCORE_MONITOR:-127.0.0.1:9091}
EDGE_MON=${EDGECORE_MONITOR:-127.0.0.1:9092}
PROFILE=${PROFILE:-release}

bash hack/install-deps.sh
echo "local-up: building cloudcore and edgecore ($PROFILE)"
PKGS=(-p cloudcore -p edgecore -p apiserver-lite)
if [ "$PROFILE" = release ]; then cargo build --release --locked "${PKGS[@]}"; else cargo build --locked "${PKGS[@]}"; fi
BIN=target/$PROFILE
mkdir -p "$OUT"

gen_config() { # daemon monitor-address
  "$BIN/$1" --defaultconfig | sed "s#^\(\s*bindAddress:\).*#\1 $2#" > "$OUT/$1.yaml"
}
gen_config cloudcore "$CLOUD_MON"
gen_config edgecore "$EDGE_MON"

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "local-up: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  echo "local-up: stopped (exit $status)"
  exit "$status"
}
trap stop INT TERM EXIT

APISERVER=${APISERVER_LISTEN:-127.0.0.1:6443}
rm -f "$OUT/kubeconfig"
"$BIN/apiserver-lite" --listen "$APISERVER" --kubeconfig-out "$OUT/kubeconfig" > "$OUT/apiserver-lite.out" 2> "$OUT/apiserver-lite.log" & pids+=($!)
for _ in $(seq 1 100); do [ -s "$OUT/kubeconfig" ] && break; sleep 0.1; done
if [ ! -s "$OUT/kubeconfig" ]; then
  echo "local-up: apiserver-lite did not start; see $OUT/apiserver-lite.log" >&2
  exit 1
fi
echo "local-up: apiserver-lite on https://$APISERVER; use it with: export KUBECONFIG=$PWD/$OUT/kubeconfig"
"$BIN/cloudcore" --config "$OUT/cloudcore.yaml" 2> "$OUT/cloudcore.log" & pids+=($!)
"$BIN/edgecore" --config "$OUT/edgecore.yaml" 2> "$OUT/edgecore.log" & pids+=($!)

wait_ready() { # name address
  for _ in $(seq 1 100); do
    if curl -fsS "http://$2/readyz" >/dev/null 2>&1; then echo "local-up: $1 ready on http://$2 (/healthz /readyz /metrics)"; return 0; fi
    sleep 0.1
  done
  echo "local-up: $1 did not become ready; see $OUT/$1.log" >&2
  tail -n 20 "$OUT/$1.log" >&2 || true
  return 1
}
wait_ready cloudcore "$CLOUD_MON"
wait_ready edgecore "$EDGE_MON"
echo "local-up: configs and logs in $OUT; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
echo "local-up: a daemon exited on its own; see $OUT/*.log" >&2
