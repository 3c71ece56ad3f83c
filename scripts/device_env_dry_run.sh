#!/usr/bin/env bash
# The GPU check's dry run on the CPU under the lent machine's own Python packages: the GPU
# check's Python side (the transformers and PyTorch references, the random models, the fixtures)
# runs there under that image's python3, not under our pins, so it is tried here under the same
# versions before device time is spent on it. Versions as the device library's KINDS.md lists
# them for `nvidia-h200` (2026-11): Python 3.12, torch 2.11.0, transformers 5.17.0, numpy 2.5.2,
# safetensors 0.8.0, tokenizers 0.23.2, accelerate 1.15.0.
#
#   scripts/device_env_dry_run.sh [LINCIR_BIN] [SMP_PARITY_TEST_BINARY]
#
# Needs a release build (`cargo build --release` and the smp_parity test binary:
# `cargo test --release --test smp_parity --no-run`) and ../shared/shapes (the shapes sections).
# Installs into target/device-env (about 5 GB: torch's CUDA wheels), writes the dry run's
# summary to target/device-env/out. Also prints the newest glibc symbol version the CUDA binary
# asks for, when one is built (gpu-bin/ or target/cuda/): the device's image must have that glibc.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV_DIR=target/device-env
BIN=${1:-target/release/lincir}
STEP_TEST=${2:-$(ls -t target/release/deps/smp_parity-* 2>/dev/null | grep -v '\.d$' | head -1)}
SHARED=${LINCIR_SHARED:-../shared}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first" >&2; exit 1; }
[ -n "$STEP_TEST" ] && [ -x "$STEP_TEST" ] || { echo "no smp_parity test binary: cargo test --release --test smp_parity --no-run" >&2; exit 1; }
[ -d "$SHARED/shapes" ] || { echo "no $SHARED/shapes (set LINCIR_SHARED)" >&2; exit 1; }

PY312=$(command -v python3.12 || true)
[ -n "$PY312" ] || PY312=$(ls /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | head -1 || true)
[ -n "$PY312" ] || { echo "no python3.12 here: using python3 ($(python3 --version))"; PY312=python3; }
if [ ! -x "$ENV_DIR/venv/bin/python" ]; then
  "$PY312" -m venv "$ENV_DIR/venv"
  "$ENV_DIR/venv/bin/pip" install -q torch==2.11.0 transformers==5.17.0 numpy==2.5.2 safetensors==0.8.0 \
    tokenizers==0.23.2 accelerate==1.15.0 pillow
fi
"$ENV_DIR/venv/bin/python" -c "import sys, torch, transformers, numpy; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'numpy', numpy.__version__)"

for cuda_bin in gpu-bin/lincir target/cuda/release/lincir; do
  if [ -f "$cuda_bin" ]; then
    echo "$cuda_bin needs glibc $(objdump -T "$cuda_bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 | cut -d_ -f2) or newer"
    break
  fi
done

rm -rf "$ENV_DIR/work" "$ENV_DIR/out"
mkdir -p "$ENV_DIR/work" "$ENV_DIR/out"
cp -r "$SHARED/shapes" "$ENV_DIR/work/shapes"
LINCIR_CHECK_DEVICE=cpu LINCIR_BIN="$BIN" LINCIR_STEP_TEST="$STEP_TEST" PYTHON="$ENV_DIR/venv/bin/python" \
  LINCIR_CHECK_WORK="$PWD/$ENV_DIR/work" OUT="$PWD/$ENV_DIR/out" scripts/gpu_check.sh > "$ENV_DIR/dry_run.log" 2>&1 || true
# Every section must have passed.
failed=$(grep -c '"rc": [^0]' "$ENV_DIR/work"/details-*/results.jsonl || true)
head -40 "$ENV_DIR/out/summary.md"
if [ "$failed" != 0 ]; then
  echo "$failed section(s) failed: $ENV_DIR/out/log.txt" >&2
  exit 1
fi
echo "every section passed under the device's Python packages"
