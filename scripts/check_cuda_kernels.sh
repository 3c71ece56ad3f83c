#!/usr/bin/env bash
# lincir's own CUDA kernels (crates/lincir/kernels/train_ops.cu: the fused training ops' forward
# and backward) checked on the CPU, no GPU or CUDA toolkit needed: the same source compiled as
# C++ against an emulation of CUDA's thread model (kernels/emu/cuda_emu.h: a block's threads are
# OS threads, __syncthreads a barrier) and run against a double-precision reference in f32, bf16
# and f16 (kernels/emu/train_ops_test.cpp); then again under ThreadSanitizer, which reports any
# shared-memory access not ordered by a barrier (a missing __syncthreads), whether or not it
# changed a result in this run. The CUDA build compiles the same file with nvcc (build.rs); the
# GPU check runs the kernels on a GPU (tests/cuda_ops.rs).
#
# Usage: scripts/check_cuda_kernels.sh     (about 20 s, then about 3 min under ThreadSanitizer;
# needs g++ 11 or newer)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
src=crates/lincir/kernels/emu/train_ops_test.cpp
g++ -std=c++20 -O1 -pthread -Wall -Wextra -Werror -o "$dir/plain" "$src"
"$dir/plain"
echo "== under ThreadSanitizer"
g++ -std=c++20 -O1 -g -pthread -fsanitize=thread -o "$dir/tsan" "$src"
export TSAN_OPTIONS="halt_on_error=1 exitcode=66"
set +e
"$dir/tsan" > "$dir/out" 2> "$dir/err"
rc=$?
# GCC's ThreadSanitizer cannot start under a kernel with more address randomisation than it
# knows ("unexpected memory mapping"): again without randomisation, where the sandbox allows it.
if [ $rc != 0 ] && grep -q "unexpected memory mapping" "$dir/err"; then
  setarch "$(uname -m)" -R "$dir/tsan" > "$dir/out" 2> "$dir/err"
  rc=$?
  if [ $rc != 0 ] && grep -q "unexpected memory mapping\|setarch:" "$dir/err"; then
    echo "check_cuda_kernels: SKIPPED under ThreadSanitizer: it cannot run on this kernel here (the plain check above passed)" >&2
    exit 0
  fi
fi
set -e
tail -1 "$dir/out"
[ $rc = 0 ] || { cat "$dir/err" >&2; echo "check_cuda_kernels: ThreadSanitizer run failed (exit $rc)" >&2; exit 1; }
