// Fused training ops for NVIDIA GPUs: layer norm, softmax over the last dimension and the two
// activations of CLIP, each with its input-gradient backward (the weights are frozen). They are
// the GPU counterparts of the CPU's fused ops in src/clip/ops.rs, which candle's unfused
// compositions replace otherwise (several kernel launches and memory passes per op).
//
// Storage is f32, bf16 or f16; the arithmetic is f32. Rows are handled by groups of `group`
// consecutive threads (a power of two, at most the block size, which it divides): a block handles
// blockDim.x / group rows. Reductions go through shared memory with a barrier per step (no
// warp-synchronous code), which keeps the kernels checkable on the CPU: build.rs compiles this
// file to PTX with nvcc; scripts/check_cuda_kernels.sh compiles it as C++ against a small
// emulation of CUDA's thread model (emu/cuda_emu.h) and tests every kernel against a reference.

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#else
#include "emu/cuda_emu.h"
#endif

// The largest block the host may launch (the shared-memory scratch is this long).
#define MAX_BLOCK 1024

__device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float load(const __half* p, long long i) { return __half2float(p[i]); }
__device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, long long i, float v) { p[i] = __float2bfloat16(v); }
__device__ __forceinline__ void store(__half* p, long long i, float v) { p[i] = __float2half(v); }

// The sum of `v` over each group of threads, returned to every thread of the group. Every thread
// of the block must call it (it has barriers), live rows or not.
__device__ float group_sum(float v, float* shm, unsigned group) {
  const unsigned t = threadIdx.x, lane = t & (group - 1);
  shm[t] = v;
  __syncthreads();
  for (unsigned s = group / 2; s > 0; s /= 2) {
    if (lane < s) shm[t] += shm[t + s];
    __syncthreads();
  }
  const float r = shm[t - lane];
  __syncthreads();
  return r;
}

// The maximum of `v` over each group of threads (as group_sum).
__device__ float group_max(float v, float* shm, unsigned group) {
  const unsigned t = threadIdx.x, lane = t & (group - 1);
  shm[t] = v;
  __syncthreads();
  for (unsigned s = group / 2; s > 0; s /= 2) {
    if (lane < s) shm[t] = fmaxf(shm[t], shm[t + s]);
    __syncthreads();
  }
  const float r = shm[t - lane];
  __syncthreads();
  return r;
}

// The row this thread's group handles (may be past the last one: then it only joins barriers).
__device__ __forceinline__ long long group_row(unsigned group) {
  return (long long)blockIdx.x * (blockDim.x / group) + threadIdx.x / group;
}

// (mean, 1/sqrt(var + eps)) of a row, two passes as the CPU's ops.rs.
template <typename T>
__device__ void moments(const T* xr, bool live, int cols, float eps, unsigned group, float* shm, float* mean, float* inv) {
  const unsigned lane = threadIdx.x & (group - 1);
  float s = 0.f;
  if (live)
    for (int i = lane; i < cols; i += group) s += load(xr, i);
  const float m = group_sum(s, shm, group) / cols;
  float v = 0.f;
  if (live)
    for (int i = lane; i < cols; i += group) {
      const float d = load(xr, i) - m;
      v += d * d;
    }
  *mean = m;
  *inv = 1.f / sqrtf(group_sum(v, shm, group) / cols + eps);
}

// y = (x - mean) / sqrt(var + eps) * w + b, per row of `cols`.
template <typename T>
__device__ void layer_norm_fwd(const T* x, const float* w, const float* b, T* y, long long rows, int cols, float eps, unsigned group) {
  __shared__ float shm[MAX_BLOCK];
  const long long row = group_row(group);
  const bool live = row < rows;
  const T* xr = x + (live ? row : 0) * cols;
  float mean, inv;
  moments(xr, live, cols, eps, group, shm, &mean, &inv);
  if (!live) return;
  for (int i = threadIdx.x & (group - 1); i < cols; i += group)
    store(y + row * cols, i, (load(xr, i) - mean) * inv * w[i] + b[i]);
}

// dx = inv (g w - mean(g w) - xhat mean(g w xhat)), xhat = (x - mean) inv.
template <typename T>
__device__ void layer_norm_bwd(const T* x, const T* g, const float* w, T* dx, long long rows, int cols, float eps, unsigned group) {
  __shared__ float shm[MAX_BLOCK];
  const unsigned lane = threadIdx.x & (group - 1);
  const long long row = group_row(group);
  const bool live = row < rows;
  const long long at = (live ? row : 0) * cols;
  float mean, inv;
  moments(x + at, live, cols, eps, group, shm, &mean, &inv);
  float sg = 0.f, sgx = 0.f;
  if (live)
    for (int i = lane; i < cols; i += group) {
      const float gw = load(g + at, i) * w[i];
      sg += gw;
      sgx += gw * (load(x + at, i) - mean) * inv;
    }
  const float mean_g = group_sum(sg, shm, group) / cols;
  const float mean_gx = group_sum(sgx, shm, group) / cols;
  if (!live) return;
  for (int i = lane; i < cols; i += group) {
    const float xhat = (load(x + at, i) - mean) * inv;
    store(dx + at, i, inv * (load(g + at, i) * w[i] - mean_g - xhat * mean_gx));
  }
}

// y = exp(x - max) / sum exp(x - max), per row of `cols`.
template <typename T>
__device__ void softmax_fwd(const T* x, T* y, long long rows, int cols, unsigned group) {
  __shared__ float shm[MAX_BLOCK];
  const unsigned lane = threadIdx.x & (group - 1);
  const long long row = group_row(group);
  const bool live = row < rows;
  const long long at = (live ? row : 0) * cols;
  float m = -INFINITY;
  if (live)
    for (int i = lane; i < cols; i += group) m = fmaxf(m, load(x + at, i));
  m = group_max(m, shm, group);
  float s = 0.f;
  if (live)
    for (int i = lane; i < cols; i += group) s += expf(load(x + at, i) - m);
  const float inv = 1.f / group_sum(s, shm, group);
  if (!live) return;
  for (int i = lane; i < cols; i += group) store(y + at, i, expf(load(x + at, i) - m) * inv);
}

// dx = y (g - sum(g y)).
template <typename T>
__device__ void softmax_bwd(const T* y, const T* g, T* dx, long long rows, int cols, unsigned group) {
  __shared__ float shm[MAX_BLOCK];
  const unsigned lane = threadIdx.x & (group - 1);
  const long long row = group_row(group);
  const bool live = row < rows;
  const long long at = (live ? row : 0) * cols;
  float s = 0.f;
  if (live)
    for (int i = lane; i < cols; i += group) s += load(g + at, i) * load(y + at, i);
  const float dot = group_sum(s, shm, group);
  if (!live) return;
  for (int i = lane; i < cols; i += group) {
    const float yi = load(y + at, i);
    store(dx + at, i, yi * (load(g + at, i) - dot));
  }
}

// Activations: 0 = quick GELU, x sigmoid(1.702 x) (OpenAI's CLIP); 1 = exact GELU (erf).
__device__ __forceinline__ float act_value(int kind, float x) {
  if (kind == 0) return x / (1.f + expf(-1.702f * x));
  return 0.5f * x * erfcf(-x * 0.70710678118654752f);  // erfc: no cancellation for x < 0
}

__device__ __forceinline__ float act_derivative(int kind, float x) {
  if (kind == 0) {
    const float s = 1.f / (1.f + expf(-1.702f * x));
    return s + 1.702f * x * s * (1.f - s);
  }
  const float cdf = 0.5f * erfcf(-x * 0.70710678118654752f);
  const float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
  return cdf + x * pdf;
}

template <typename T>
__device__ void act_fwd(const T* x, T* y, long long n, int kind) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    store(y, i, act_value(kind, load(x, i)));
}

template <typename T>
__device__ void act_bwd(const T* x, const T* g, T* dx, long long n, int kind) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    store(dx, i, load(g, i) * act_derivative(kind, load(x, i)));
}

// The kernels, one per op and storage type: NAME_f32, NAME_bf16, NAME_f16 (candle's dtype names).
#define LINCIR_TRAIN_OPS(T, SUFFIX)                                                                          \
  extern "C" __global__ void lincir_layer_norm_fwd_##SUFFIX(const T* x, const float* w, const float* b, T* y,   \
                                                           long long rows, int cols, float eps, unsigned group) { \
    layer_norm_fwd(x, w, b, y, rows, cols, eps, group);                                                      \
  }                                                                                                          \
  extern "C" __global__ void lincir_layer_norm_bwd_##SUFFIX(const T* x, const T* g, const float* w, T* dx,      \
                                                           long long rows, int cols, float eps, unsigned group) { \
    layer_norm_bwd(x, g, w, dx, rows, cols, eps, group);                                                     \
  }                                                                                                          \
  extern "C" __global__ void lincir_softmax_fwd_##SUFFIX(const T* x, T* y, long long rows, int cols, unsigned group) { \
    softmax_fwd(x, y, rows, cols, group);                                                                    \
  }                                                                                                          \
  extern "C" __global__ void lincir_softmax_bwd_##SUFFIX(const T* y, const T* g, T* dx, long long rows, int cols,  \
                                                        unsigned group) {                                    \
    softmax_bwd(y, g, dx, rows, cols, group);                                                                \
  }                                                                                                          \
  extern "C" __global__ void lincir_act_fwd_##SUFFIX(const T* x, T* y, long long n, int kind) { act_fwd(x, y, n, kind); } \
  extern "C" __global__ void lincir_act_bwd_##SUFFIX(const T* x, const T* g, T* dx, long long n, int kind) {     \
    act_bwd(x, g, dx, n, kind);                                                                              \
  }

LINCIR_TRAIN_OPS(float, f32)
LINCIR_TRAIN_OPS(__nv_bfloat16, bf16)
LINCIR_TRAIN_OPS(__half, f16)
