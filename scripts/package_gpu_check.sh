#!/usr/bin/env bash
# Prepares what scripts/gpu_check.sh needs on the GPU machine (which has no Rust toolchain):
#   gpu-bin/lincir       the CUDA build (scripts/build_cuda.sh)
#   gpu-bin/smp_parity   the step-parity test binary of the same build
#   gpu-data/shapes      the shapes world (clip, captions, bench), when ../shared is beside the repo
# Both folders are git-ignored: name them in the device tool's `carry`; together they exceed
# the 64 MiB a call may carry, so: first call carry ["gpu-bin"], command `SKIP=shapes
# scripts/gpu_check.sh`; second call at once (the machine is still warm and keeps gpu-bin),
# carry ["gpu-data"], command `SECTIONS=shapes scripts/gpu_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build_cuda.sh
source scripts/cuda_toolchain.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
test_bin=$(cargo test --release --features cuda -p lincir --test smp_parity --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
mkdir -p gpu-bin
cp "$CARGO_TARGET_DIR/release/lincir" gpu-bin/lincir
cp "$test_bin" gpu-bin/smp_parity
strip gpu-bin/lincir gpu-bin/smp_parity
# The device tool carries at most 64 MiB per call: the binaries (70 + 60 MB) travel as xz (about
# 12 + 10 MB); scripts/gpu_check.sh unpacks them there.
xz -T0 -6 -f gpu-bin/lincir gpu-bin/smp_parity
shared=${LINCIR_SHARED:-../shared}
if [ -d "$shared/shapes/clip" ]; then
  mkdir -p gpu-data/shapes
  cp -r "$shared/shapes/clip" "$shared/shapes/bench" "$shared/shapes/captions.txt" gpu-data/shapes/
fi
du -sh gpu-bin gpu-data 2>/dev/null || true
