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
APT_PACKAGES=(procps curl ca-certificates iproute2 iptables
  containerd runc containernetworking-plugins busybox-static
  mosquitto mosquitto-clients systemd systemd-container)

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

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is missing; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
echo "install-deps: ok ($(cargo --version))"
