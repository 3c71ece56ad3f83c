#!/usr/bin/env bash
# lincir on 64-bit ARM (Apple silicon under Linux, AWS Graviton, Ampere, a Raspberry Pi 5), checked
# from an x86_64 machine: cross-compiled with Debian's aarch64 GCC (for the C libraries: libjpeg,
# zstd, ...), run under qemu's user-mode emulation.
#
#   scripts/check_aarch64.sh check   # compiles everything for aarch64 (a few minutes; CI)
#   scripts/check_aarch64.sh test    # the library's test suite under qemu, then the CLI end to end
#                                    # on the shapes world (../shared or $LINCIR_SHARED; 20-30 min)
#
# On ARM there are no lincir kernels (they are x86's AVX2 / AVX-512): the products are candle's,
# whose `gemm` crate has NEON kernels. What is checked here is that the results are right, not how
# fast they come (qemu emulates: its times say nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-check}
TARGET=aarch64-unknown-linux-gnu
need=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu)
[ "$MODE" = test ] && need+=(qemu-user)
. scripts/cross_setup.sh
cross_setup "$MODE" "$TARGET" aarch64 "${need[@]}"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

if [ "$MODE" = check ]; then
  # Warnings are errors here: code for x86 only must be cfg-gated, not merely compile.
  RUSTFLAGS="-D warnings" cargo check --release --target "$TARGET" -p lincir -p lincir-cli --all-targets
  echo "aarch64: compiles"
  exit 0
fi

cargo test --release --target "$TARGET" -p lincir
cargo build --release --target "$TARGET" -p lincir-cli
cargo build --release -p lincir-cli
SHAPES=${LINCIR_SHARED:-../shared}/shapes
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# The same short training and evaluation on the shapes world natively and on ARM (qemu runs
# about 100x slower than the native CPU: 50 steps of 32 captions). The products differ (candle's
# NEON kernel against lincir's AVX kernels), so the two agree within rounding, not bit for bit.
for arch in native aarch64; do
  if [ $arch = native ]; then run=(target/release/lincir); else run=(qemu-aarch64 -L /usr/aarch64-linux-gnu "target/$TARGET/release/lincir"); fi
  "${run[@]}" train --model "$SHAPES/clip" --captions "$SHAPES/captions.txt" --output-dir "$W/$arch" --batch-size 32 --max-steps 50 --seed 0
  "${run[@]}" eval --model "$SHAPES/clip" --phi "$W/$arch/phi_latest.safetensors" --dataset cirr --dataset-path "$SHAPES/bench" --no-cache --json "$W/$arch.json"
done
# The loss after 50 steps within 1e-3 relative, CIRR val R@1 within half a point.
python3 - "$W" <<'PYEOF'
import json, sys
w = sys.argv[1]
loss = {a: json.loads(open(f"{w}/{a}/metrics.jsonl").read().splitlines()[-1])["loss"] for a in ("native", "aarch64")}
r1 = {a: json.load(open(f"{w}/{a}.json"))["metrics"]["all"]["R@1"] for a in ("native", "aarch64")}
print(f"loss at step 50: native {loss['native']:.6f}, aarch64 {loss['aarch64']:.6f}; R@1: native {r1['native']}, aarch64 {r1['aarch64']}")
ok = abs(loss["native"] - loss["aarch64"]) <= 1e-3 * abs(loss["native"]) and abs(r1["native"] - r1["aarch64"]) <= 0.5
sys.exit(0 if ok else 1)
PYEOF
echo "aarch64: the library's tests and the shapes world agree with the native run"
