#!/usr/bin/env bash
# Prepares what scripts/gpu_check.sh needs on the GPU machine (which has no Rust toolchain):
#   gpu-bin/lincir       the CUDA build (scripts/build_cuda.sh)
#   gpu-bin/smp_parity   the step-parity test binary of the same build
#   gpu-bin/cuda_ops     the fused GPU ops' parity test binary (tests/cuda_ops.rs)
#   gpu-data/shapes.tar.xz  the shapes world (clip, captions, bench), when ../shared is beside the repo
# Both folders are git-ignored: name them in the device tool's `carry`; together they exceed
# the 64 MiB a call may carry: the calls and what each carries are listed at the top of
# scripts/gpu_check.sh (and in docs/GPU.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build_cuda.sh
source scripts/cuda_toolchain.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
# The test binaries of the same build (`--workspace`: the binary's feature resolution, so no
# dependency is compiled twice): the SMP step's parity and the fused GPU ops' parity.
tests_json=$(cargo test --release --features "$LINCIR_CUDA_FEATURES" --workspace --test smp_parity --test cuda_ops --no-run --message-format=json 2>/dev/null)
test_bin() {
  echo "$tests_json" | python3 -c 'import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1" | tail -1
}
mkdir -p gpu-bin
cp "$CARGO_TARGET_DIR/release/lincir" gpu-bin/lincir
cp "$(test_bin smp_parity)" gpu-bin/smp_parity
cp "$(test_bin cuda_ops)" gpu-bin/cuda_ops
strip gpu-bin/lincir gpu-bin/smp_parity gpu-bin/cuda_ops
# The device tool carries at most 64 MiB per call: the binaries (70 + 60 + 60 MB) travel as xz
# (about 12 + 10 + 10 MB); scripts/gpu_check.sh unpacks them there.
xz -T0 -6 -f gpu-bin/lincir gpu-bin/smp_parity gpu-bin/cuda_ops
# The shapes world (69 MB) travels as one archive of about 49 MB, its weights' bytes in planes
# (scripts/pack_floats.py): with the repository's own files (about 18 MB) that fits in 64 MiB.
shared=${LINCIR_SHARED:-../shared}
if [ -d "$shared/shapes/clip" ]; then
  rm -rf gpu-data && mkdir -p gpu-data/stage
  cp -r "$shared/shapes/clip" "$shared/shapes/bench" "$shared/shapes/captions.txt" gpu-data/stage/
  python3 scripts/pack_floats.py pack gpu-data/stage gpu-data/shapes.tar.xz
  rm -rf gpu-data/stage
fi
du -sh gpu-bin gpu-data 2>/dev/null || true
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
for carried in gpu-bin gpu-data; do
  [ -d $carried ] || continue
  total=$(( tree + $(du -sb $carried | cut -f1) ))
  echo "$carried: $((total / 1048576)) MiB with the repository's files (at most 64 per call)"
  [ $total -le $((64 * 1048576)) ] || { echo "too large to carry" >&2; exit 1; }
done
