#!/usr/bin/env bash
# Checks the CUDA build on a machine without a GPU (CI): it links, starts, falls back to the CPU
# under `--device auto`, refuses `--device cuda` with one line and exit 1, and its step-parity
# test passes on the CPU. The driver library is the link-time stub here (every call fails, as on
# a machine whose driver finds no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda_toolchain.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
bin="$CARGO_TARGET_DIR/release/lincir"
fake_driver=$(mktemp -d)
ln -s "$LINCIR_CUDA_STUBS/libcuda.so" "$fake_driver/libcuda.so.1"
export LD_LIBRARY_PATH="$fake_driver:$CUDA_ROOT/lib"
model=$(mktemp -d)
cp crates/lincir/tests/fixtures/clip-a/* crates/lincir/tests/fixtures/bpe/* "$model/"

out=$("$bin" bench encode --model "$model" --device auto --text-batches 1 --image-batches 0 2>&1)
echo "$out" | grep -q "^device: cpu" || { echo "auto did not fall back to the CPU: $out"; exit 1; }

set +e
out=$("$bin" bench encode --model "$model" --device cuda --text-batches 1 --image-batches 0 2>&1)
rc=$?
set -e
echo "$out"
[ $rc -eq 1 ] || { echo "--device cuda without a GPU: exit $rc, expected 1"; exit 1; }
[ "$(echo "$out" | grep -c .)" -eq 1 ] && echo "$out" | grep -q "^error: --device cuda:0: no usable CUDA device 0" \
  || { echo "expected one error line"; exit 1; }

# `--workspace`, not `-p lincir`: the features build_cuda.sh resolved for the whole workspace, so
# nothing is compiled a second time (`-p lincir` alone costs a 12-minute rebuild).
cargo test --release --features "$LINCIR_CUDA_FEATURES" --workspace --test smp_parity --test cuda_ops
# The fused GPU ops' launch geometry (their kernels: scripts/check_cuda_kernels.sh; on a GPU:
# tests/cuda_ops.rs, which skips here).
cargo test --release --features "$LINCIR_CUDA_FEATURES" --workspace --lib clip::cuda_ops
# The build's JPEG decoding (libjpeg's SIMD code where nasm was there) gives Pillow's bytes, and
# hostile images are still refused cleanly.
cargo test --release --features "$LINCIR_CUDA_FEATURES" --workspace --test preprocess_parity --test hostile_images
echo "CUDA build: links, falls back, refuses cleanly, step parity on the CPU"
rm -rf "$fake_driver" "$model"
