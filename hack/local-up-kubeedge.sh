#!/usr/bin/env bash
# The local cluster demo: builds apiserver-lite (our in-memory Kubernetes API server), cloudcore
# and edgecore, starts a private containerd with locally built images, then the three daemons,
# and joins the edge to the cloud with nothing but the token — as `keadm join` would. Edged
# registers the node and runs its pods in containerd. Runs until Ctrl-C, which stops everything
# cleanly (pods, containerd, daemons).
#
# Work files (configs, logs, certificates, kubeconfig) go to _output/local-up/ (LOCAL_UP_DIR);
# containerd's root, state and socket to /tmp/kubeedge-local-up (LOCAL_UP_CONTAINERD_DIR).
# Ports (loopback): APISERVER_LISTEN 127.0.0.1:6443, CLOUDHUB_WS_PORT 10000,
# CLOUDHUB_HTTPS_PORT 10002, CLOUDCORE_MONITOR 127.0.0.1:9091, EDGECORE_MONITOR 127.0.0.1:9092,
# METASERVER_PORT 10550, KUBELET_PORT 10350 (Edged's logs/exec server), MQTT_PORT 1883 (a
# private mosquitto: the device twins' broker, EventBus's external mode), MODBUS_PORT 5020 (a
# simulated Modbus TCP thermometer, modbus-sim), MODBUS_MAPPER_HTTP_PORT 7777 (the modbus
# mapper's REST API; the mapper registers with edgecore over DMI, on $LOCAL_UP_DIR/edge/dmi.sock),
# STREAM_PORT 10003 and TUNNEL_PORT 10004 (CloudStream: the stream server the API server reaches,
# the tunnel EdgeStream dials), ROUTER_PORT 9443 (the Router's REST listener; its bearer token
# in $LOCAL_UP_DIR/router.token), SERVICEBUS_PORT 9060 (the edge's ServiceBus). cloudcore's iptables manager adds the nat chain TUNNEL-PORT to
# this host (a DNAT of its negotiated tunnel port, 10351 on any address, to the stream server),
# and removes it when cloudcore stops: that is how `kubectl logs/exec/port-forward` reach Edged.
# EDGE_NODE_NAME names the edge node (default: edge-local). POD_CIDR is the pod network
# (default 10.215.0.0/24, bridge kelocal0). PROFILE=debug skips the release build.
#
# Try: kubectl apply -f examples/web.yaml; kubectl get pods -o wide; curl http://<pod IP>:8080/
# Streams: kubectl logs -f web; kubectl exec -it web -- sh; kubectl port-forward pod/web 8080
# Devices: kubectl apply -f examples/devices/; mosquitto_pub/mosquitto_sub on MQTT_PORT (README).
# A Modbus device: kubectl apply -f examples/devices/modbus/ (modbus-sim on MODBUS_PORT, 5020).
# Cloud ↔ edge apps: kubectl apply -f examples/router/ (README: Router).
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
CTRD=${LOCAL_UP_CONTAINERD_DIR:-/tmp/kubeedge-local-up}
POD_CIDR=${POD_CIDR:-10.215.0.0/24}
KUBELET_PORT=${KUBELET_PORT:-10350}
MQTT_PORT=${MQTT_PORT:-1883}
MODBUS_PORT=${MODBUS_PORT:-5020}
MAPPER_HTTP_PORT=${MODBUS_MAPPER_HTTP_PORT:-7777}
STREAM_PORT=${STREAM_PORT:-10003}
TUNNEL_PORT=${TUNNEL_PORT:-10004}
ROUTER_PORT=${ROUTER_PORT:-9443}
SERVICEBUS_PORT=${SERVICEBUS_PORT:-9060}
BRIDGE=kelocal0

bash hack/install-deps.sh
echo "local-up: building apiserver-lite, cloudcore, edgecore, keadm, the modbus mapper and its simulator ($PROFILE)"
PKGS=(-p cloudcore -p edgecore -p keadm -p apiserver-lite -p kubeedge-mapper-modbus -p kubeedge-modbus-sim)
if [ "$PROFILE" = release ]; then cargo build --release --locked "${PKGS[@]}"; else cargo build --locked "${PKGS[@]}"; fi
BIN=target/$PROFILE
rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

pids=()
ctrd_pid=""
ctr() { command ctr -a "$CTRD/containerd.sock" -n k8s.io "$@"; }
stop_containerd() {
  [ -n "$ctrd_pid" ] || return 0
  # The pods go with the cluster: their tasks, their network namespaces, then containerd.
  local netns=()
  for id in $(ctr containers ls -q 2>/dev/null); do
    for ns in $(ctr containers info "$id" 2>/dev/null | grep -o '/var/run/netns/cni-[0-9a-f-]*' | sort -u); do netns+=("$ns"); done
    ctr tasks delete --force "$id" >/dev/null 2>&1 || true
  done
  kill -TERM "$ctrd_pid" 2>/dev/null || true
  wait "$ctrd_pid" 2>/dev/null || true
  for ns in "${netns[@]}"; do umount "$ns" 2>/dev/null || true; rm -f "$ns"; done
  grep -o " $CTRD/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link delete "$BRIDGE" 2>/dev/null || true
}
stop() {
  trap - INT TERM EXIT
  echo; echo "local-up: stopping"
  # Edge first, then cloud, then the API server; then the pods and containerd.
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  stop_containerd
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

# A private containerd: its own root, state, socket and CNI config (bridge + host-local), the
# pause and busybox images built from busybox-static and imported before any sandbox.
if [ -S "$CTRD/containerd.sock" ] && pgrep -f "containerd --config $CTRD/config.toml" >/dev/null; then
  echo "local-up: a containerd from an earlier run still uses $CTRD; stop it first" >&2; exit 1
fi
rm -rf "$CTRD"; mkdir -p "$CTRD/cni" "$CTRD/cni-ipam"
cat > "$CTRD/config.toml" <<TOML
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
[grpc]
  address = "$CTRD/containerd.sock"
[ttrpc]
  address = "$CTRD/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:busybox"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CTRD/cni"
TOML
cat > "$CTRD/cni/10-bridge.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "$BRIDGE", "plugins": [{"type": "bridge", "bridge": "$BRIDGE",
  "isGateway": true, "ipMasq": false,
  "ipam": {"type": "host-local", "dataDir": "$CTRD/cni-ipam", "ranges": [[{"subnet": "$POD_CIDR"}]]}}]}
JSON
containerd --config "$CTRD/config.toml" > "$OUT/containerd.log" 2>&1 & ctrd_pid=$!
wait_for "containerd" grep -q "Start streaming server" "$OUT/containerd.log"
bash hack/images.sh --address "$CTRD/containerd.sock" > "$OUT/images.log" 2>&1 || { cat "$OUT/images.log" >&2; exit 1; }
echo "local-up: containerd $(containerd --version | awk '{print $3}') on $CTRD/containerd.sock (pods on $POD_CIDR), images: $(ctr images ls -q | grep '^localhost/' | tr '\n' ' ')"

# The MQTT broker devices and mappers talk to (EventBus's external mode, upstream's default).
cat > "$OUT/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
CONF
mosquitto -c "$OUT/mosquitto.conf" > "$OUT/mosquitto.log" 2>&1 & pids+=($!)
wait_for "mosquitto" bash -c "exec 3<>/dev/tcp/127.0.0.1/$MQTT_PORT"
echo "local-up: mosquitto on 127.0.0.1:$MQTT_PORT"

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
  deviceController: {enable: true}
  syncController: {enable: true}
  cloudStream: {enable: true, streamPort: $STREAM_PORT, tunnelPort: $TUNNEL_PORT}
  iptablesManager: {enable: true, mode: internal}
  router: {enable: true, address: 127.0.0.1, port: $ROUTER_PORT, tokenFile: $OUT/router.token}
  taskManager: {enable: true}
YAML
# The Router's REST listener wants a bearer token (examples/router/).
[ -s "$OUT/router.token" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$OUT/router.token"
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
    enable: true
    hostnameOverride: $NODE
    nodeIP: 127.0.0.1
    rootDirectory: $OUT/edge/kubelet
    tailoredKubeletConfig:
      containerRuntimeEndpoint: unix://$CTRD/containerd.sock
      podLogsDir: $OUT/edge/pods-logs
      staticPodPath: $OUT/edge/manifests
      address: 127.0.0.1
      readOnlyPort: $KUBELET_PORT
  edgeHub:
    enable: true
    token: "$TOKEN"
    httpServer: https://127.0.0.1:$HTTPS_PORT
    websocket: {enable: true, server: "127.0.0.1:$WS_PORT"}
    tlsCaFile: $OUT/edge/ca/rootCA.crt
    tlsCertFile: $OUT/edge/certs/server.crt
    tlsPrivateKeyFile: $OUT/edge/certs/server.key
  eventBus:
    enable: true
    mqttMode: 2
    mqttServerExternal: tcp://127.0.0.1:$MQTT_PORT
  metaManager:
    enable: true
    metaServer: {enable: true, server: "127.0.0.1:$META_PORT"}
  deviceTwin: {enable: true, dmiSockPath: $OUT/edge/}
  serviceBus: {enable: true, server: 127.0.0.1, port: $SERVICEBUS_PORT}
  # Node tasks: prepulls run here; upgrades and config updates need edgecore.service under
  # systemd (docs/node-tasks.md), which local-up does not use.
  taskManager: {enable: true, keadmPath: $PWD/$BIN/keadm}
  edgeStream:
    enable: true
    server: 127.0.0.1:$TUNNEL_PORT
    tlsTunnelCAFile: $OUT/edge/ca/rootCA.crt
    tlsTunnelCertFile: $OUT/edge/certs/server.crt
    tlsTunnelPrivateKeyFile: $OUT/edge/certs/server.key
YAML
"$BIN/edgecore" --config "$OUT/edgecore.yaml" 2> "$OUT/edgecore.log" & pids+=($!)
connected() { curl -fsS "http://$CLOUD_MON/metrics" | grep -q '^KubeEdge_CloudHub_connected_nodes 1'; }
wait_for "the edge to connect" connected
echo "local-up: edge node $NODE joined with the token and is connected (edgecore metrics http://$EDGE_MON/metrics)"
ready() { [ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_for "node $NODE to be Ready" ready
kubectl get nodes -o wide
# A simulated Modbus TCP thermometer and the modbus mapper, registered with edgecore over DMI.
"$BIN/modbus-sim" --listen "127.0.0.1:$MODBUS_PORT" > "$OUT/modbus-sim.log" 2>&1 & pids+=($!)
wait_for "the Modbus simulator" bash -c "exec 3<>/dev/tcp/127.0.0.1/$MODBUS_PORT"
cat > "$OUT/modbus-mapper.yaml" <<YAML
grpc_server:
  socket_path: $OUT/edge/modbus.sock
common:
  name: modbus-mapper
  version: v1.0.0
  api_version: v1beta1
  protocol: modbus
  address: 127.0.0.1
  edgecore_sock: $OUT/edge/dmi.sock
  http_port: "$MAPPER_HTTP_PORT"
YAML
"$BIN/modbus-mapper" --config-file "$OUT/modbus-mapper.yaml" 2> "$OUT/modbus-mapper.log" & pids+=($!)
echo "local-up: a Modbus thermometer on 127.0.0.1:$MODBUS_PORT and the modbus mapper (REST on :$MAPPER_HTTP_PORT)"
echo "local-up: run pods on the edge: kubectl apply -f examples/web.yaml && kubectl get pods -o wide"
echo "local-up: container logs from Edged: curl http://127.0.0.1:$KUBELET_PORT/containerLogs/default/web/httpd"
echo "local-up: through the stream tunnel: kubectl logs -f web; kubectl exec -it web -- sh; kubectl port-forward pod/web 8080"
echo "local-up: node stats: kubectl get --raw /api/v1/nodes/$NODE/proxy/stats/summary"
echo "local-up: the edge's local Kubernetes API (MetaServer): kubectl --server http://127.0.0.1:$META_PORT get pods -A"
echo "local-up: devices: kubectl apply -f examples/devices/ && mosquitto_sub -p $MQTT_PORT -t '\$hw/events/device/#' -v (README: Devices)"
echo "local-up: a Modbus device: kubectl apply -f examples/devices/modbus/ && kubectl get devicestatus thermostat-1 -o yaml"
echo "local-up: cloud ↔ edge apps: kubectl apply -f examples/router/ (README: Router); REST on http://127.0.0.1:$ROUTER_PORT with the token in $OUT/router.token"
echo "local-up: KUBECONFIG=$KUBECONFIG; configs, certificates and logs in $OUT; Ctrl-C stops everything"
wait -n "${pids[@]}" "$ctrd_pid" || true
echo "local-up: a process exited on its own; see $OUT/*.log" >&2
