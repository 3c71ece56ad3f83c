#!/usr/bin/env bash
# Builds `lincir` with the CUDA backend into target/cuda/release/lincir, on any x86_64 Linux
# machine with Python 3 and pip (no CUDA toolkit, no GPU needed). About 25 minutes on 2 cores the
# first time (candle's kernels are compiled by nvcc), seconds when nothing changed.
#
#   scripts/build_cuda.sh [extra cargo args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda_toolchain.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"

# 1. Everything but the final link (the library needs no driver to compile). `--workspace` so
#    that dependencies get the same features as in step 3 and are not compiled twice.
mkdir -p "$LINCIR_CUDA_STUBS"
cargo build --release --features "$LINCIR_CUDA_FEATURES" --workspace --lib "$@"

# 2. A link-time stub of the driver library: the driver functions cudarc's objects call, each
#    returning an error. The real libcuda.so.1 replaces it when the program runs (same soname).
stub="$LINCIR_CUDA_STUBS/libcuda.so"
rlib="$(ls -t "$CARGO_TARGET_DIR"/release/deps/libcudarc-*.rlib | head -1)"
if [ ! -f "$stub" ] || [ "$rlib" -nt "$stub" ]; then
  mkdir -p "$LINCIR_CUDA_STUBS"
  src="$(mktemp --suffix .c)"
  nm -u "$rlib" 2>/dev/null | awk '{print $NF}' | grep -E '^cu[A-Z]' | sort -u \
    | awk '{print "int " $1 "(void) { return 999; }"}' > "$src"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$src"
  echo "driver stub: $(wc -l < "$src") functions -> $stub"
  rm -f "$src"
fi

# 3. The binary.
cargo build --release --features "$LINCIR_CUDA_FEATURES" -p lincir-cli "$@"
echo "built $CARGO_TARGET_DIR/release/lincir"
