#!/usr/bin/env bash
# The local cluster demo: builds apiserver-lite (our in-memory Kubernetes API server), cloudcore
# and edgecore, starts them, and joins the edge to the cloud with nothing but the token — as
# `keadm join` would. Runs until Ctrl-C, which stops everything cleanly.
#
# Work files (configs, logs, certificates, kubeconfig) go to _output/local-up/ (LOCAL_UP_DIR).
# Ports (loopback): APISERVER_LISTEN 127.0.0.1:6443, CLOUDHUB_WS_PORT 10000,
# CLOUDHUB_HTTPS_PORT 10002, CLOUDCORE_MONITOR 127.0.0.1:9091, EDGECORE_MONITOR 127.0.0.1:9092.
# EDGE_NODE_NAME names the edge node (default: edge-local). PROFILE=debug skips the release build.
set -euo pipefail
# Job control: each daemon gets its own process group, so Ctrl-C reaches only this script,
# which then stops the daemons in order (edge, cloud, API server) with one SIGTERM each.
set -m
cd "$(dirname "$0")/.."

OUT=${LOCAL_UP_DIR:-_output/local-up}
APISERVER=${APISERVER_LISTEN:-127.0.0.1:6443}
WS_PORT=${CLOUDHUB_WS_PORT:-10000}
HTTPS_PORT=${CLOUDHUB_HTTPS_PORT:-10002}
CLOUD_MON=${CLOUDCORE_MONITOR:-127.0.0.1:9091}
EDGE_MON=${EDGECORE_MONITOR:-127.0.0.1:9092}
META_PORT=${METASERVER_PORT:-10550}
NODE=${EDGE_NODE_NAME:-edge-local}
PROFILE=${PROFILE:-release}

bash hack/install-deps.sh
echo "local-up: building apiserver-lite, cloudcore and edgecore ($PROFILE)"
PKGS=(-p cloudcore -p edgecore -p apiserver-lite)
if [ "$PROFILE" = release ]; then cargo build --release --locked "${PKGS[@]}"; else cargo build --locked "${PKGS[@]}"; fi
BIN=target/$PROFILE
rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "local-up: stopping"
  # Edge first, then cloud, then the API server.
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  echo "local-up: stopped (exit $status)"
  exit "$status"
}
trap stop INT TERM EXIT

wait_for() { # description command...
  local what=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "local-up: timed out waiting for $what" >&2
  return 1
}

"$BIN/apiserver-lite" --listen "$APISERVER" --kubeconfig-out "$OUT/kubeconfig" > "$OUT/apiserver-lite.out" 2> "$OUT/apiserver-lite.log" & pids+=($!)
wait_for "apiserver-lite" test -s "$OUT/kubeconfig"
export KUBECONFIG=$OUT/kubeconfig
echo "local-up: Kubernetes API (apiserver-lite) on https://$APISERVER — export KUBECONFIG=$KUBECONFIG"

# Only the modules this build has are enabled; the rest are switched off explicitly.
cat > "$OUT/cloudcore.yaml" <<YAML
apiVersion: cloudcore.config.kubeedge.io/v1alpha1
kind: CloudCore
commonConfig:
  monitorServer:
    bindAddress: $CLOUD_MON
kubeAPIConfig:
  kubeConfig: $OUT/kubeconfig
modules:
  cloudHub:
    advertiseAddress: [127.0.0.1]
    tlsCAFile: $OUT/cloud/rootCA.crt
    tlsCAKeyFile: $OUT/cloud/rootCA.key
    tlsCertFile: $OUT/cloud/server.crt
    tlsPrivateKeyFile: $OUT/cloud/server.key
    unixsocket: {enable: false}
    websocket: {enable: true, address: 127.0.0.1, port: $WS_PORT}
    https: {enable: true, address: 127.0.0.1, port: $HTTPS_PORT}
  edgeController: {enable: true}
  deviceController: {enable: false}
  syncController: {enable: true}
  iptablesManager: {enable: false}
YAML
"$BIN/cloudcore" --config "$OUT/cloudcore.yaml" 2> "$OUT/cloudcore.log" & pids+=($!)
wait_for "cloudcore" curl -fsS "http://$CLOUD_MON/readyz"

# The join token, as `keadm gettoken` prints it.
get_token() { kubectl get secret tokensecret -n kubeedge -o jsonpath='{.data.tokendata}' | base64 -d; }
wait_for "the join token" get_token
TOKEN=$(get_token)
echo "local-up: cloudcore ready (CloudHub wss://127.0.0.1:$WS_PORT, join API https://127.0.0.1:$HTTPS_PORT, metrics http://$CLOUD_MON/metrics)"

cat > "$OUT/edgecore.yaml" <<YAML
apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
commonConfig:
  monitorServer:
    bindAddress: $EDGE_MON
database:
  dataSource: $OUT/edge/edgecore.db
modules:
  edged:
    enable: false
    hostnameOverride: $NODE
  edgeHub:
    enable: true
    token: "$TOKEN"
    httpServer: https://127.0.0.1:$HTTPS_PORT
    websocket: {enable: true, server: "127.0.0.1:$WS_PORT"}
    tlsCaFile: $OUT/edge/ca/rootCA.crt
    tlsCertFile: $OUT/edge/certs/server.crt
    tlsPrivateKeyFile: $OUT/edge/certs/server.key
  eventBus: {enable: false}
  metaManager:
    enable: true
    metaServer: {enable: true, server: "127.0.0.1:$META_PORT"}
  deviceTwin: {enable: false}
YAML
"$BIN/edgecore" --config "$OUT/edgecore.yaml" 2> "$OUT/edgecore.log" & pids+=($!)
connected() { curl -fsS "http://$CLOUD_MON/metrics" | grep -q '^KubeEdge_CloudHub_connected_nodes 1'; }
wait_for "the edge to connect" connected
echo "local-up: edge node $NODE joined with the token and is connected (edgecore metrics http://$EDGE_MON/metrics)"
echo "local-up: the edge's local Kubernetes API (MetaServer): kubectl --server http://127.0.0.1:$META_PORT get pods -A"
echo "local-up: configs, certificates and logs in $OUT; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
echo "local-up: a process exited on its own; see $OUT/*.log" >&2
