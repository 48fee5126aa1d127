#!/usr/bin/env bash
# Builds the two container images the project's tests and local clusters use, without a registry:
#   localhost/busybox:<busybox version>   a shell and the busybox applets (Cmd ["sh"])
#   localhost/pause:busybox               the same rootfs running `sleep 2147483647`: the sandbox
#                                         ("pause") image containerd's CRI plugin is configured with
# Both are docker-archive tarballs (manifest.json + config JSON + one layer tar) made from Debian's
# busybox-static. Every tar is written with fixed owners, order and mtimes, so the digests are the
# same on every machine with the same busybox binary.
#
# Usage: hack/images.sh [--out DIR] [--address SOCKET] [--force]
#   --out DIR         where the tarballs go (default _output/images); also writes DIR/images.env
#                     with BUSYBOX_IMAGE=... and PAUSE_IMAGE=...
#   --address SOCKET  also import both images into the containerd at SOCKET (namespace k8s.io)
#                     with `ctr images import`, and tag busybox as localhost/busybox:latest too
#   --force           rebuild even when DIR already holds images of the same busybox binary
#
# Idempotent: the tarballs are rebuilt only when missing or made from another busybox binary, and
# importing an image twice is harmless. Concurrent runs on one DIR are serialised with flock.
set -euo pipefail
trap 'echo "images: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo_root/_output/images"
address=""
force=false
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --address) address="$2"; shift 2 ;;
    --force) force=true; shift ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "images: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done

busybox_bin=/bin/busybox
if ! [ -x "$busybox_bin" ] || ! "$busybox_bin" --list >/dev/null 2>&1; then
  echo "images: $busybox_bin is missing or not a busybox; install busybox-static (hack/install-deps.sh)" >&2
  exit 1
fi
if ldd "$busybox_bin" >/dev/null 2>&1; then
  echo "images: $busybox_bin is dynamically linked; the images need busybox-static (hack/install-deps.sh)" >&2
  exit 1
fi

# "BusyBox v1.35.0 (Debian ...)" -> 1.35
# (sed reads the whole usage text: `| head -n1` could die of SIGPIPE under pipefail.)
version="$("$busybox_bin" 2>&1 | sed -n '1s/^BusyBox v\([0-9]*\.[0-9]*\).*/\1/p')"
[ -n "$version" ] || { echo "images: cannot read the busybox version" >&2; exit 1; }
busybox_image="localhost/busybox:$version"
pause_image="localhost/pause:busybox"

# shellcheck source=hack/lib/image.sh
. "$repo_root/hack/lib/image.sh"
arch="$(image_arch)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
exec 9>"$out/.lock"
flock 9

# What the current tarballs were made from: the busybox binary and this script.
stamp="$(cat "$busybox_bin" "${BASH_SOURCE[0]}" "$repo_root/hack/lib/image.sh" | sha256sum | cut -d' ' -f1)"
if ! $force && [ -f "$out/busybox.tar" ] && [ -f "$out/pause.tar" ] && [ -f "$out/images.env" ] &&
  [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "images: up to date in $out ($busybox_image, $pause_image)"
else
  start=$(date +%s%N)
  work="$(mktemp -d "$out/.build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  umask 022

  # The layer: /bin/busybox, a symlink per applet, passwd/group, and the empty mount points.
  rootfs="$work/rootfs"
  mkdir -p "$rootfs"/{bin,etc,dev,proc,sys,tmp,root}
  cp "$busybox_bin" "$rootfs/bin/busybox"
  chmod 0755 "$rootfs/bin/busybox"
  for applet in $("$busybox_bin" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$rootfs/etc/group"
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
  chmod 0755 "$rootfs" "$rootfs"/{bin,etc,dev,proc,sys}
  chmod 0700 "$rootfs/root"
  chmod 1777 "$rootfs/tmp"

  dtar "$work/layer.tar" "$rootfs" bin dev etc proc root sys tmp
  layer_sha="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"

  path_env='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  # image NAME TAG CONFIG_FRAGMENT: writes $work/NAME.tar
  image() {
    local name="$1" tag="$2" cfg="$3" dir="$work/$1"
    mkdir -p "$dir"
    printf '{"architecture":"%s","os":"linux","config":{"Env":["%s"],%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"hack/images.sh"}],"created":"1970-01-01T00:00:00Z"}' \
      "$arch" "$path_env" "$cfg" "$layer_sha" >"$dir/config.json"
    local config_sha
    config_sha="$(sha256sum "$dir/config.json" | cut -d' ' -f1)"
    mv "$dir/config.json" "$dir/$config_sha.json"
    cp "$work/layer.tar" "$dir/$layer_sha.tar"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s.tar"]}]' \
      "$config_sha" "$tag" "$layer_sha" >"$dir/manifest.json"
    chmod 0644 "$dir"/*
    dtar "$work/$name.tar" "$dir" "$config_sha.json" "$layer_sha.tar" manifest.json
  }
  image busybox "$busybox_image" '"Cmd":["sh"]'
  image pause "$pause_image" '"Entrypoint":["/bin/sleep","2147483647"]'

  printf 'BUSYBOX_IMAGE=%s\nPAUSE_IMAGE=%s\n' "$busybox_image" "$pause_image" >"$work/images.env"
  # Rename into place, so a reader never sees a half-written tarball.
  mv -f "$work/busybox.tar" "$out/busybox.tar"
  mv -f "$work/pause.tar" "$out/pause.tar"
  mv -f "$work/images.env" "$out/images.env"
  echo "$stamp" >"$out/.stamp"
  end=$(date +%s%N)
  echo "images: built $busybox_image and $pause_image in $out (layer sha256:$layer_sha, $(((end - start) / 1000000)) ms)"
fi

if [ -n "$address" ]; then
  if ! command -v ctr >/dev/null 2>&1; then
    echo "images: ctr is missing; install containerd (hack/install-deps.sh)" >&2
    exit 1
  fi
  for tarball in "$out/busybox.tar" "$out/pause.tar"; do
    if ! ctr --address "$address" --namespace k8s.io images import "$tarball" >"$out/.import.log" 2>&1; then
      echo "images: importing $tarball into $address failed:" >&2
      cat "$out/.import.log" >&2
      exit 1
    fi
  done
  # A stable name for examples: localhost/busybox:latest is the same image.
  ctr --address "$address" --namespace k8s.io images tag --force "$busybox_image" localhost/busybox:latest >/dev/null
  echo "images: imported $busybox_image (also tagged localhost/busybox:latest) and $pause_image into $address (namespace k8s.io)"
fi
