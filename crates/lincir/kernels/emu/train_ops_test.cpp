// Every kernel of train_ops.cu, run on the CPU through emu/cuda_emu.h, against a reference in
// double precision computed from the same (rounded) inputs: f32, bf16 and f16 storage, ragged
// shapes (a row shorter than its thread group, rows not filling the last block, one-element rows,
// a masked softmax), several group and block sizes, and nothing written past the output.
// Built and run by scripts/check_cuda_kernels.sh; exits 1 on the first failure.
#include <cstdio>
#include <functional>
#include <random>
#include <string>

#include "../train_ops.cu"

namespace {

std::mt19937 rng(7);

template <typename T> T from_f(float v);
template <> float from_f<float>(float v) { return v; }
template <> __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> __half from_f<__half>(float v) { return __float2half(v); }

template <typename T> double to_d(T v) { return load(&v, 0); }

template <typename T> const char* name();
template <> const char* name<float>() { return "f32"; }
template <> const char* name<__nv_bfloat16>() { return "bf16"; }
template <> const char* name<__half>() { return "f16"; }

// Relative tolerance of an output, against the largest reference value: the storage's rounding.
template <typename T> double tolerance();
template <> double tolerance<float>() { return 1e-5; }
template <> double tolerance<__nv_bfloat16>() { return 8e-3; }
template <> double tolerance<__half>() { return 1.5e-3; }

template <typename T>
std::vector<T> random_values(size_t n, float scale, float mean = 0.f) {
  std::normal_distribution<float> d(mean, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = from_f<T>(d(rng));
  return v;
}

// An output buffer with a guard band of sentinel bytes after `n` values.
constexpr size_t GUARD = 64;
template <typename T>
std::vector<T> output(size_t n) {
  std::vector<T> v(n + GUARD);
  std::memset(v.data(), 0xA5, v.size() * sizeof(T));
  return v;
}

int failures = 0;

template <typename T>
void check(const std::string& what, const std::vector<T>& got, const std::vector<double>& want) {
  double scale = 0, err = 0;
  bool finite = true;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::abs(want[i]));
    const double g = to_d(got[i]);
    finite = finite && std::isfinite(g);
    err = std::max(err, std::abs(g - want[i]));
  }
  bool guard_intact = true;
  for (size_t i = want.size(); i < got.size(); ++i) {
    unsigned char bytes[sizeof(T)];
    std::memcpy(bytes, &got[i], sizeof(T));
    for (auto b : bytes) guard_intact = guard_intact && b == 0xA5;
  }
  const double rel = err / std::max(scale, 1e-30);
  const bool ok = finite && guard_intact && rel <= tolerance<T>();
  if (!ok) ++failures;
  std::printf("%-4s %-58s rel err %.2e%s%s%s\n", ok ? "ok" : "FAIL", (what + " " + name<T>()).c_str(), rel,
              finite ? "" : ", not finite", guard_intact ? "" : ", wrote past the output", ok ? "" : " <==");
}

unsigned blocks_for(long long rows, unsigned block, unsigned group) {
  const unsigned per_block = block / group;
  return unsigned((rows + per_block - 1) / per_block);
}

template <typename T>
void layer_norm(long long rows, int cols, unsigned block, unsigned group) {
  const float eps = 1e-5f;
  auto x = random_values<T>(rows * cols, 2.f, 0.5f), g = random_values<T>(rows * cols, 1.f);
  auto wt = random_values<float>(cols, 0.3f, 1.f), bt = random_values<float>(cols, 0.3f);
  auto y = output<T>(rows * cols), dx = output<T>(rows * cols);
  if constexpr (std::is_same_v<T, float>) {
    emu_launch(lincir_layer_norm_fwd_f32, blocks_for(rows, block, group), block, x.data(), wt.data(), bt.data(), y.data(), rows, cols, eps, group);
    emu_launch(lincir_layer_norm_bwd_f32, blocks_for(rows, block, group), block, x.data(), g.data(), wt.data(), dx.data(), rows, cols, eps, group);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    emu_launch(lincir_layer_norm_fwd_bf16, blocks_for(rows, block, group), block, x.data(), wt.data(), bt.data(), y.data(), rows, cols, eps, group);
    emu_launch(lincir_layer_norm_bwd_bf16, blocks_for(rows, block, group), block, x.data(), g.data(), wt.data(), dx.data(), rows, cols, eps, group);
  } else {
    emu_launch(lincir_layer_norm_fwd_f16, blocks_for(rows, block, group), block, x.data(), wt.data(), bt.data(), y.data(), rows, cols, eps, group);
    emu_launch(lincir_layer_norm_bwd_f16, blocks_for(rows, block, group), block, x.data(), g.data(), wt.data(), dx.data(), rows, cols, eps, group);
  }
  std::vector<double> want_y(rows * cols), want_dx(rows * cols);
  for (long long r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int i = 0; i < cols; ++i) mean += to_d(x[r * cols + i]);
    mean /= cols;
    for (int i = 0; i < cols; ++i) var += std::pow(to_d(x[r * cols + i]) - mean, 2);
    const double inv = 1 / std::sqrt(var / cols + eps);
    double sg = 0, sgx = 0;
    for (int i = 0; i < cols; ++i) {
      const double xhat = (to_d(x[r * cols + i]) - mean) * inv, gw = to_d(g[r * cols + i]) * wt[i];
      want_y[r * cols + i] = xhat * wt[i] + bt[i];
      sg += gw;
      sgx += gw * xhat;
    }
    for (int i = 0; i < cols; ++i) {
      const double xhat = (to_d(x[r * cols + i]) - mean) * inv;
      want_dx[r * cols + i] = inv * (to_d(g[r * cols + i]) * wt[i] - sg / cols - xhat * sgx / cols);
    }
  }
  const std::string shape = std::to_string(rows) + "x" + std::to_string(cols) + " block " + std::to_string(block) + " group " + std::to_string(group);
  check("layer norm " + shape, y, want_y);
  check("layer norm backward " + shape, dx, want_dx);
}

template <typename T>
void softmax(long long rows, int cols, unsigned block, unsigned group, bool causal) {
  auto x = random_values<T>(rows * cols, 3.f), g = random_values<T>(rows * cols, 1.f);
  // A causal mask as attention adds it: row r of each [cols, cols] square sees keys 0..r.
  if (causal)
    for (long long r = 0; r < rows; ++r)
      for (int i = int(r % cols) + 1; i < cols; ++i) x[r * cols + i] = from_f<T>(-INFINITY);
  auto y = output<T>(rows * cols), dx = output<T>(rows * cols);
  if constexpr (std::is_same_v<T, float>) {
    emu_launch(lincir_softmax_fwd_f32, blocks_for(rows, block, group), block, x.data(), y.data(), rows, cols, group);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    emu_launch(lincir_softmax_fwd_bf16, blocks_for(rows, block, group), block, x.data(), y.data(), rows, cols, group);
  } else {
    emu_launch(lincir_softmax_fwd_f16, blocks_for(rows, block, group), block, x.data(), y.data(), rows, cols, group);
  }
  // The backward reads the forward's (rounded) output, as candle hands it back.
  if constexpr (std::is_same_v<T, float>) {
    emu_launch(lincir_softmax_bwd_f32, blocks_for(rows, block, group), block, y.data(), g.data(), dx.data(), rows, cols, group);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    emu_launch(lincir_softmax_bwd_bf16, blocks_for(rows, block, group), block, y.data(), g.data(), dx.data(), rows, cols, group);
  } else {
    emu_launch(lincir_softmax_bwd_f16, blocks_for(rows, block, group), block, y.data(), g.data(), dx.data(), rows, cols, group);
  }
  std::vector<double> want_y(rows * cols), want_dx(rows * cols);
  for (long long r = 0; r < rows; ++r) {
    double m = -INFINITY, s = 0, dot = 0;
    for (int i = 0; i < cols; ++i) m = std::max(m, to_d(x[r * cols + i]));
    for (int i = 0; i < cols; ++i) s += std::exp(to_d(x[r * cols + i]) - m);
    for (int i = 0; i < cols; ++i) want_y[r * cols + i] = std::exp(to_d(x[r * cols + i]) - m) / s;
    for (int i = 0; i < cols; ++i) dot += to_d(g[r * cols + i]) * to_d(y[r * cols + i]);
    for (int i = 0; i < cols; ++i) want_dx[r * cols + i] = to_d(y[r * cols + i]) * (to_d(g[r * cols + i]) - dot);
  }
  const std::string shape = std::to_string(rows) + "x" + std::to_string(cols) + (causal ? " causal" : "") + " block " +
                            std::to_string(block) + " group " + std::to_string(group);
  check("softmax " + shape, y, want_y);
  check("softmax backward " + shape, dx, want_dx);
}

template <typename T>
void activation(long long n, int kind, unsigned grid, unsigned block) {
  auto x = random_values<T>(n, 3.f), g = random_values<T>(n, 1.f);
  auto y = output<T>(n), dx = output<T>(n);
  if constexpr (std::is_same_v<T, float>) {
    emu_launch(lincir_act_fwd_f32, grid, block, x.data(), y.data(), n, kind);
    emu_launch(lincir_act_bwd_f32, grid, block, x.data(), g.data(), dx.data(), n, kind);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    emu_launch(lincir_act_fwd_bf16, grid, block, x.data(), y.data(), n, kind);
    emu_launch(lincir_act_bwd_bf16, grid, block, x.data(), g.data(), dx.data(), n, kind);
  } else {
    emu_launch(lincir_act_fwd_f16, grid, block, x.data(), y.data(), n, kind);
    emu_launch(lincir_act_bwd_f16, grid, block, x.data(), g.data(), dx.data(), n, kind);
  }
  std::vector<double> want_y(n), want_dx(n);
  for (long long i = 0; i < n; ++i) {
    const double v = to_d(x[i]);
    if (kind == 0) {
      const double s = 1 / (1 + std::exp(-1.702 * v));
      want_y[i] = v * s;
      want_dx[i] = to_d(g[i]) * (s + 1.702 * v * s * (1 - s));
    } else {
      const double cdf = 0.5 * (1 + std::erf(v / std::sqrt(2.0)));
      want_y[i] = v * cdf;
      want_dx[i] = to_d(g[i]) * (cdf + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI));
    }
  }
  const std::string what = std::string(kind == 0 ? "quick gelu" : "gelu (erf)") + " n " + std::to_string(n) + " grid " +
                           std::to_string(grid) + " block " + std::to_string(block);
  check(what, y, want_y);
  check(what + " backward", dx, want_dx);
}

template <typename T>
void all() {
  // Rows of the text towers (512, 768, 1280 wide; one short enough to leave lanes idle), and
  // attention's short rows, with groups as the host picks them (rust: cuda_ops::group_for) and
  // others, in full and partial blocks.
  layer_norm<T>(5, 1280, 256, 256);
  layer_norm<T>(37, 48, 256, 32);
  layer_norm<T>(9, 768, 128, 128);
  layer_norm<T>(3, 1, 64, 32);
  layer_norm<T>(70, 77, 256, 64);
  softmax<T>(300, 7, 256, 32, true);
  softmax<T>(130, 77, 256, 64, true);
  softmax<T>(4, 1, 64, 32, false);
  softmax<T>(9, 1280, 256, 256, false);
  softmax<T>(33, 40, 64, 64, false);
  for (int kind = 0; kind < 2; ++kind) {
    activation<T>(1000, kind, 3, 64);  // grid-stride: 192 threads over 1000 values
    activation<T>(1, kind, 1, 32);
  }
}

}  // namespace

int main() {
  all<float>();
  all<__nv_bfloat16>();
  all<__half>();
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all kernels match the reference\n");
  return 0;
}
