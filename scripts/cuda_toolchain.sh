#!/usr/bin/env bash
# CUDA 13.0's compiler, headers and libraries from PyPI, for building lincir with `--features cuda`
# on a machine without a CUDA toolkit (or with one that is too old). Source it:
#
#   source scripts/cuda_toolchain.sh      # installs once into target/cuda-toolchain, sets the env
#
# What it does, and why (docs/GPU.md):
# - pins every CUDA wheel to 13.0: newer nvvm/crt wheels make ptxas refuse the PTX version, and
#   PTX from a newer nvcc is refused by a CUDA 13.0 driver;
# - links the wheels' versioned libraries under their unversioned names (what `-lcublas` wants);
# - sets PATH (nvcc), CUDA_ROOT (cudarc's and candle-kernels' search root) and CUDA_COMPUTE_CAP
#   (default 90, H100/H200; set it before sourcing for another GPU: 80 for A100, 89 for L4/4090).
# The driver library (libcuda.so) is not on PyPI: scripts/build_cuda.sh makes a link-time stub;
# at run time the real driver's libcuda.so.1 is used.

_lincir_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_lincir_tc="$_lincir_root/target/cuda-toolchain"
_lincir_venv="$_lincir_tc/venv"
if [ ! -x "$_lincir_venv/bin/nvcc-installed" ]; then
  python3 -m venv "$_lincir_venv"
  "$_lincir_venv/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88" \
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" "nvidia-cuda-nvrtc==13.0.88" \
    "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.5.25"
  touch "$_lincir_venv/bin/nvcc-installed"
fi
_lincir_cu="$("$_lincir_venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/nvidia/cu13"
for _lib in cublas cublasLt curand nvrtc cudart; do
  _versioned="$(ls "$_lincir_cu/lib/lib$_lib.so."* 2>/dev/null | grep -v alt | head -1)"
  [ -n "$_versioned" ] && ln -sf "$(basename "$_versioned")" "$_lincir_cu/lib/lib$_lib.so"
done
export CUDA_ROOT="$_lincir_cu"
export PATH="$_lincir_cu/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# The features of every CUDA build, test and package (one list: a difference recompiles). JPEG
# decoding through libjpeg's SIMD code where nasm is installed: the same bytes, faster, and on a
# GPU decoding on CPU threads is what feeds the tower.
if command -v nasm > /dev/null 2>&1; then
  export LINCIR_CUDA_FEATURES=cuda,jpeg-simd
else
  export LINCIR_CUDA_FEATURES=cuda
  echo "note: nasm not found: JPEG decoding without SIMD (apt-get install nasm for faster image indexing)" >&2
fi
# The driver stub goes beside the wheel libraries: a folder cudarc's build script already searches.
export LINCIR_CUDA_STUBS="$_lincir_cu/lib"
unset _lincir_root _lincir_tc _lincir_venv _lincir_cu _lib _versioned
