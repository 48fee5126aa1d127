# shellcheck shell=bash
# Helpers shared by the scripts that write image tarballs by hand (hack/images.sh,
# hack/build-images.sh). Source it; it defines functions only.

# image_arch: this machine's architecture as OCI names it (amd64, arm64, ...).
image_arch() {
  case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    armv7l|armv6l) echo arm ;;
    ppc64le) echo ppc64le ;;
    s390x) echo s390x ;;
    riscv64) echo riscv64 ;;
    *) echo "unsupported machine $(uname -m)" >&2; return 1 ;;
  esac
}

# dtar FILE DIR ENTRY...: a deterministic tar of ENTRY... under DIR (fixed owners, order and
# mtimes), so the same files always give the same digest.
dtar() {
  local file="$1" dir="$2"; shift 2
  tar --create --file "$file" --directory "$dir" --format=gnu \
    --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 "$@"
}
