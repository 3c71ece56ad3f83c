// A small emulation of CUDA's thread model on the CPU, enough to run train_ops.cu as C++ in a test
// (scripts/check_cuda_kernels.sh): every thread of a block is an OS thread, __syncthreads is a
// barrier across them, __shared__ variables are statics (blocks run one after another), and
// bf16 / f16 are stored as CUDA stores them (bf16 rounded to nearest even, as __float2bfloat16).
// Real threads make a missing barrier a likely wrong answer here too, though not a certain one.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* emu_block_barrier = nullptr;

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

struct __nv_bfloat16 {
  uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return {uint16_t(u >> 16)};
}

struct __half {
  _Float16 v;
};

inline float __half2float(__half h) { return float(h.v); }
inline __half __float2half(float f) { return {_Float16(f)}; }

// kernel<<<grid, block>>>(args...), one block at a time.
template <typename... Params, typename... Args>
void emu_launch(void (*kernel)(Params...), unsigned grid, unsigned block, Args... args) {
  blockDim = {block, 1, 1};
  gridDim = {grid, 1, 1};
  for (unsigned bx = 0; bx < grid; ++bx) {
    std::barrier<> barrier(block);
    emu_block_barrier = &barrier;
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned tx = 0; tx < block; ++tx)
      threads.emplace_back([=] {
        threadIdx = {tx, 0, 0};
        blockIdx = {bx, 0, 0};
        kernel(args...);
      });
    for (auto& t : threads) t.join();
  }
}
