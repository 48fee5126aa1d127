#!/usr/bin/env bash
# Builds the daemons' container images without docker, buildah or a registry:
#   kubeedge-rs/cloudcore:v<version>   what the cloudcore chart deploys (values.yaml
#                                      cloudCore.image.repository and .tag)
#   kubeedge-rs/edgecore:v<version>    for completeness (edgecore runs on the host, as a unit)
# Each is a docker-archive tarball (manifest.json + config JSON + one layer tar) holding what
# build/<daemon>/Containerfile puts in its image: the binary at /usr/local/bin/<daemon>, the glibc
# libraries it links (found with ldd, copied from this machine), CA certificates, /etc/passwd
# (cloudcore runs as nonroot, 65532, as on distroless; edgecore as root), the empty config dir
# /etc/kubeedge/config, and the entrypoint with `--config /etc/kubeedge/config/<daemon>.yaml`
# as its default argument. Every tar is written with fixed owners, order and mtimes: the same
# binary and libraries give the same digests.
#
# Usage: hack/build-images.sh [OPTIONS] [cloudcore] [edgecore]     (default: both)
#   --out DIR          where the tarballs go (default _output/images): DIR/<daemon>.tar, and
#                      DIR/daemons.env with CLOUDCORE_IMAGE=... and EDGECORE_IMAGE=...
#   --profile NAME     the cargo profile whose binaries go in: release (default), debug (the
#                      dev profile: a bigger image, no release build needed), or any other
#   --skip-build       do not run cargo; use the binaries already in the target dir
#                      ($CARGO_TARGET_DIR, default target/)
#   --repository REPO  image repository prefix (default kubeedge-rs): REPO/cloudcore
#   --tag TAG          image tag (default v<workspace version>, the chart's tag)
#   --no-strip         keep the binaries' symbol tables (default: strip them)
#   --address SOCKET   also import the images into the containerd at SOCKET (namespace k8s.io)
#                      with `ctr images import`
#   --force            rebuild the tarballs even when they are up to date
#
# Idempotent: cargo builds only what changed, a tarball is rewritten only when its inputs
# (binary, libraries, certificates, name, this script) changed, and importing twice is
# harmless. Concurrent runs on one DIR are serialised with flock.
set -euo pipefail
trap 'echo "build-images: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo_root/_output/images"
profile=release
skip_build=false
repository=kubeedge-rs
tag=""
strip=true
address=""
force=false
daemons=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --skip-build) skip_build=true; shift ;;
    --repository) repository="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --no-strip) strip=false; shift ;;
    --address) address="$2"; shift 2 ;;
    --force) force=true; shift ;;
    cloudcore|edgecore) daemons+=("$1"); shift ;;
    -h|--help) sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
[ ${#daemons[@]} -gt 0 ] || daemons=(cloudcore edgecore)

if [ -z "$tag" ]; then
  # The first `version = "..."` of the root Cargo.toml is [workspace.package]'s.
  version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo_root/Cargo.toml" | sed -n 1p)"
  [ -n "$version" ] || { echo "build-images: no version in $repo_root/Cargo.toml" >&2; exit 1; }
  tag="v$version"
fi

# shellcheck source=hack/lib/image.sh
. "$repo_root/hack/lib/image.sh"
arch="$(image_arch)"

# cargo's dev profile builds into target/debug; every other profile into target/<name>.
case "$profile" in
  debug|dev) cargo_profile=(--profile dev); profile_dir=debug ;;
  *) cargo_profile=(--profile "$profile"); profile_dir="$profile" ;;
esac
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo_root/$target_dir" ;; esac
bin_dir="$target_dir/$profile_dir"

if ! $skip_build; then
  packages=()
  for d in "${daemons[@]}"; do packages+=(-p "$d"); done
  echo "build-images: cargo build ${cargo_profile[*]} ${packages[*]}"
  (cd "$repo_root" && cargo build --locked "${cargo_profile[@]}" "${packages[@]}")
fi
for d in "${daemons[@]}"; do
  if ! [ -x "$bin_dir/$d" ]; then
    echo "build-images: $bin_dir/$d is not built (run without --skip-build, or cargo build ${cargo_profile[*]} -p $d)" >&2
    exit 1
  fi
done
if $strip && ! command -v strip >/dev/null 2>&1; then
  echo "build-images: strip is missing (binutils); pass --no-strip to keep the symbols" >&2
  exit 1
fi

# The shared libraries a binary loads, the dynamic loader included, as absolute paths (none
# for a static binary). ldd prints "libc.so.6 => /lib/.../libc.so.6 (0x...)" and
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso is the kernel's.
shared_libs() {
  local bin="$1" lines
  if ! lines="$(ldd "$bin" 2>&1)"; then
    case "$lines" in
      *"not a dynamic executable"*|*"statically linked"*) return 0 ;;
      *) echo "build-images: ldd $bin failed: $lines" >&2; return 1 ;;
    esac
  fi
  if grep -q "not found" <<<"$lines"; then
    echo "build-images: $bin needs libraries this machine lacks:" >&2
    grep "not found" <<<"$lines" >&2
    return 1
  fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$lines" | sort -u
}

ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca_bundle" ] || { echo "build-images: $ca_bundle is missing; install ca-certificates" >&2; exit 1; }

mkdir -p "$out"
out="$(cd "$out" && pwd)"
exec 9>"$out/.lock"
flock 9

# build_image DAEMON: writes $out/DAEMON.tar and $out/DAEMON.env unless they are up to date.
build_image() {
  local daemon="$1" ref="$repository/$1:$tag" bin="$bin_dir/$1" var
  var="$(tr '[:lower:]' '[:upper:]' <<<"$daemon")_IMAGE"
  local libs
  libs="$(shared_libs "$bin")"

  local stamp
  # shellcheck disable=SC2086 # $libs: one path per line, none with spaces
  stamp="$( { printf '%s\n' "$ref" "$strip" "$arch"; cat "$bin" $libs "$ca_bundle" "${BASH_SOURCE[0]}" "$repo_root/hack/lib/image.sh"; } | sha256sum | cut -d' ' -f1)"
  if ! $force && [ -f "$out/$daemon.tar" ] && [ -f "$out/$daemon.env" ] &&
    [ "$(cat "$out/.$daemon.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "build-images: $ref up to date in $out/$daemon.tar"
    return 0
  fi
  local start work rootfs
  start=$(date +%s%N)
  work="$(mktemp -d "$out/.build-$daemon.XXXXXX")"
  rootfs="$work/rootfs"
  umask 022

  # The user, the entrypoint's config path, and what else each daemon needs in its rootfs.
  local user ports
  mkdir -p "$rootfs"/{dev,proc,sys,tmp,etc/kubeedge/config,etc/ssl/certs,usr/local/bin}
  case "$daemon" in
    cloudcore)
      user="65532:65532"
      ports='"10000/tcp":{},"10002/tcp":{},"9091/tcp":{}'
      ;;
    edgecore)
      user="0:0"
      ports='"10350/tcp":{},"10550/tcp":{}'
      # Its database and state; bind-mounted from the host when it runs in a container.
      mkdir -p "$rootfs"/var/lib/kubeedge "$rootfs"/etc/kubeedge/{ca,certs}
      ;;
  esac
  cp "$bin" "$rootfs/usr/local/bin/$daemon"
  if $strip; then strip "$rootfs/usr/local/bin/$daemon"; fi
  chmod 0755 "$rootfs/usr/local/bin/$daemon"
  local lib
  for lib in $libs; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
    chmod 0755 "$rootfs$lib"
  done
  cp "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # distroless's users: root, nobody, and nonroot (65532), the one cloudcore runs as. No home
  # directory is writable: the daemons write none.
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$rootfs/etc/group"
  # glibc's built-in nss_files and nss_dns: /etc/hosts (the runtime's), then DNS.
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
  chmod 0644 "$rootfs"/etc/{passwd,group,nsswitch.conf} "$rootfs/etc/ssl/certs/ca-certificates.crt"
  find "$rootfs" -type d -exec chmod 0755 {} +
  chmod 1777 "$rootfs/tmp"

  local entries
  mapfile -t entries < <(cd "$rootfs" && ls -A)
  dtar "$work/layer.tar" "$rootfs" "${entries[@]}"
  local layer_sha uncompressed
  layer_sha="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
  uncompressed="$(stat -c %s "$work/layer.tar")"

  local dir="$work/image" config_sha
  mkdir -p "$dir"
  printf '{"architecture":"%s","os":"linux","config":{"User":"%s","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"Entrypoint":["/usr/local/bin/%s"],"Cmd":["--config","/etc/kubeedge/config/%s.yaml"],"ExposedPorts":{%s},"WorkingDir":"/","Labels":{"org.opencontainers.image.title":"%s","org.opencontainers.image.version":"%s","org.opencontainers.image.description":"kubeedge-rs %s (wire-compatible with KubeEdge)"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"hack/build-images.sh"}],"created":"1970-01-01T00:00:00Z"}' \
    "$arch" "$user" "$daemon" "$daemon" "$ports" "$daemon" "$tag" "$daemon" "$layer_sha" >"$dir/config.json"
  config_sha="$(sha256sum "$dir/config.json" | cut -d' ' -f1)"
  mv "$dir/config.json" "$dir/$config_sha.json"
  mv "$work/layer.tar" "$dir/$layer_sha.tar"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s.tar"]}]' \
    "$config_sha" "$ref" "$layer_sha" >"$dir/manifest.json"
  chmod 0644 "$dir"/*
  dtar "$work/$daemon.tar" "$dir" "$config_sha.json" "$layer_sha.tar" manifest.json
  printf '%s=%s\n' "$var" "$ref" >"$work/$daemon.env"

  # Rename into place, so a reader never sees a half-written tarball.
  mv -f "$work/$daemon.tar" "$out/$daemon.tar"
  mv -f "$work/$daemon.env" "$out/$daemon.env"
  echo "$stamp" >"$out/.$daemon.stamp"
  rm -rf "$work"
  local end
  end=$(date +%s%N)
  echo "build-images: built $ref in $out/$daemon.tar (layer sha256:$layer_sha, $((uncompressed / 1024 / 1024)) MiB, $(((end - start) / 1000000)) ms)"
}

cleanup() { rm -rf "$out"/.build-*; }
trap cleanup EXIT
for d in "${daemons[@]}"; do build_image "$d"; done
# Every image this DIR holds, whichever run built it.
cat "$out"/cloudcore.env "$out"/edgecore.env 2>/dev/null >"$out/daemons.env" || true

if [ -n "$address" ]; then
  if ! command -v ctr >/dev/null 2>&1; then
    echo "build-images: ctr is missing; install containerd (hack/install-deps.sh)" >&2
    exit 1
  fi
  for d in "${daemons[@]}"; do
    if ! ctr --address "$address" --namespace k8s.io images import "$out/$d.tar" >"$out/.import.log" 2>&1; then
      echo "build-images: importing $out/$d.tar into $address failed:" >&2
      cat "$out/.import.log" >&2
      exit 1
    fi
    echo "build-images: imported $(cut -d= -f2 "$out/$d.env") into $address (namespace k8s.io)"
  done
fi
