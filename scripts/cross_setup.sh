# Sourced by the cross-compilation checks (check_aarch64.sh, check_windows.sh): installs the Debian
# packages a target needs and Rust's standard library for it.
#
#   cross_setup MODE TARGET NAME PACKAGE...
#
# When rustup cannot install the standard library (its server out of reach), says SKIPPED loudly
# and exits 0 in the compile-only `check` mode (CI), 1 otherwise.
cross_setup() {
  local mode=$1 target=$2 name=$3
  shift 3
  local sudo="" missing=() p
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! rustup target list --installed | grep -qx "$target" && ! rustup target add "$target"; then
    echo "SKIPPED: the $name standard library cannot be installed here (rustup target add $target failed)" >&2
    [ "$mode" = check ] && exit 0
    exit 1
  fi
}
