//! Fused CPU kernels with a backward pass, for the training path ([`super::Grad::Yes`]).
//!
//! candle's fused layer-norm and softmax have no backward, and the unfused compositions that do
//! cost 5-10 elementwise passes each, single-threaded, in both directions: on a CLIP-L text tower
//! they took more time than the matrix products (docs/PERFORMANCE.md). These ops do one parallel
//! pass forward and one backward. The weights they capture are frozen: only the input gradient is
//! computed. On a GPU with `LINCIR_CUDA_FUSED=1` each op runs as a fused CUDA kernel with its own
//! backward (`cuda_ops.rs`); elsewhere (other devices or dtypes) it falls back to candle's unfused
//! composition, and a test checks both paths against each other.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::config::Activation;
use crate::Result;

/// Rows of the last dimension, processed in parallel in chunks of at least this many values.
const MIN_CHUNK: usize = 16 * 1024;

pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else { candle_core::bail!("{op}: only f32 is supported") };
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("{op}: input must be contiguous") };
    Ok(&data[start..end])
}

/// [`contiguous_f32`] for an op that writes in place.
pub(crate) fn contiguous_f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = s else { candle_core::bail!("{op}: only f32 is supported") };
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("{op}: input must be contiguous") };
    Ok(&mut data[start..end])
}

fn fast_path(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// Applies `f(row_in, row_out)` to every row of width `w`, rows in parallel.
fn map_rows(input: &[f32], w: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; input.len()];
    let rows_per_chunk = (MIN_CHUNK / w.max(1)).max(1);
    out.par_chunks_mut(rows_per_chunk * w).zip(input.par_chunks(rows_per_chunk * w)).for_each(|(o, i)| {
        for (ro, ri) in o.chunks_mut(w).zip(i.chunks(w)) {
            f(ri, ro);
        }
    });
    out
}

/// Like [`map_rows`] over two inputs of the same shape.
fn map_rows2(a: &[f32], b: &[f32], w: usize, f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    let rows_per_chunk = (MIN_CHUNK / w.max(1)).max(1);
    let n = rows_per_chunk * w;
    out.par_chunks_mut(n).zip(a.par_chunks(n)).zip(b.par_chunks(n)).for_each(|((o, ca), cb)| {
        for ((ro, ra), rb) in o.chunks_mut(w).zip(ca.chunks(w)).zip(cb.chunks(w)) {
            f(ra, rb, ro);
        }
    });
    out
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dimension, frozen weight and bias.

struct LayerNormOp {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// (mean, 1/std) of one row.
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// One row of layer norm: `o = (r - μ) / σ · weight + bias`.
pub(super) fn layer_norm_row(r: &[f32], weight: &[f32], bias: &[f32], eps: f32, o: &mut [f32]) {
    let (mean, inv) = moments(r, eps);
    for (((o, r), w), b) in o.iter_mut().zip(r).zip(weight).zip(bias) {
        *o = (r - mean) * inv * w + b;
    }
}

/// One row of layer norm's input gradient (see [`LayerNormBackward`]): `x` the row's input, `g`
/// the gradient of its output.
pub(super) fn layer_norm_backward_row(x: &[f32], g: &[f32], weight: &[f32], eps: f32, o: &mut [f32]) {
    let w = weight.len();
    let n = w as f32;
    let (mean, inv) = moments(x, eps);
    let (mut sum_g, mut sum_gx) = (0f32, 0f32);
    for i in 0..w {
        let gi = g[i] * weight[i];
        sum_g += gi;
        sum_gx += gi * (x[i] - mean) * inv;
    }
    let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
    for i in 0..w {
        let xhat = (x[i] - mean) * inv;
        o[i] = inv * (g[i] * weight[i] - mean_g - xhat * mean_gx);
    }
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let w = self.weight.len();
        let out = map_rows(x, w, |r, o| layer_norm_row(r, &self.weight, &self.bias, self.eps, o));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let back = LayerNormBackward { weight: self.weight.clone(), eps: self.eps };
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &back)?))
    }
}

/// dx = (1/σ) (g' - mean(g') - x̂ mean(g' x̂)) with g' = g γ, x̂ = (x - μ)/σ.
struct LayerNormBackward {
    weight: Vec<f32>,
    eps: f32,
}

impl CustomOp2 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer-norm-train-backward"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, self.name())?;
        let g = contiguous_f32(gs, gl, self.name())?;
        let w = self.weight.len();
        let out = map_rows2(x, g, w, |rx, rg, o| layer_norm_backward_row(rx, rg, &self.weight, self.eps, o));
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// Differentiable (with respect to `x`) layer norm over the last dimension.
///
/// # Shapes
/// x: [..., w]; weight, bias: [w] -> [..., w]
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda_ops::applies(x) {
        return super::cuda_ops::layer_norm(x, weight, bias, eps);
    }
    if !fast_path(x) {
        return Ok(candle_nn::ops::layer_norm_slow(x, weight, bias, eps as f32)?);
    }
    let op = LayerNormOp {
        weight: weight.to_dtype(candle_core::DType::F32)?.to_vec1()?,
        bias: bias.to_dtype(candle_core::DType::F32)?.to_vec1()?,
        eps: eps as f32,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

// ---------------------------------------------------------------------------------------------
// Softmax over the last dimension.

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "softmax-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let w = *l.shape().dims().last().unwrap_or(&1);
        let out = map_rows(x, w, |r, o| {
            let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (oi, ri) in o.iter_mut().zip(r) {
                *oi = (ri - max).exp();
                sum += *oi;
            }
            for oi in o.iter_mut() {
                *oi /= sum;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(y.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?))
    }
}

/// dx = y (g - Σ g y).
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "softmax-train-backward"
    }

    fn cpu_fwd(&self, ys: &CpuStorage, yl: &Layout, gs: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(ys, yl, self.name())?;
        let g = contiguous_f32(gs, gl, self.name())?;
        let w = *yl.shape().dims().last().unwrap_or(&1);
        let out = map_rows2(y, g, w, |ry, rg, o| {
            let dot: f32 = ry.iter().zip(rg).map(|(a, b)| a * b).sum();
            for i in 0..w {
                o[i] = ry[i] * (rg[i] - dot);
            }
        });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

/// Differentiable softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda_ops::applies(x) {
        return super::cuda_ops::softmax_last_dim(x);
    }
    if !fast_path(x) {
        return Ok(candle_nn::ops::softmax(x, D::Minus1)?);
    }
    Ok(x.contiguous()?.apply_op1(SoftmaxOp)?)
}

// ---------------------------------------------------------------------------------------------
// Activations: value and derivative in one pass each.

/// The activations with a fused kernel (the CPU's here, the GPU's in `cuda_ops.rs`, where the
/// discriminant is the kernels' `kind` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// x sigmoid(1.702 x), OpenAI's CLIP.
    QuickGelu = 0,
    /// Exact (erf) GELU.
    GeluErf = 1,
}

impl Act {
    /// The fused kernel of a model's activation; None for the tanh approximation, which has none.
    pub(super) fn of(act: Activation) -> Option<Act> {
        match act {
            Activation::QuickGelu => Some(Act::QuickGelu),
            Activation::Gelu => Some(Act::GeluErf),
            Activation::GeluTanh => None,
        }
    }

    pub(super) fn value(self, x: f32) -> f32 {
        match self {
            Act::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
            Act::GeluErf => {
                let x = x as f64;
                (0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2))) as f32
            }
        }
    }

    pub(super) fn derivative(self, x: f32) -> f32 {
        match self {
            Act::QuickGelu => {
                let s = 1.0 / (1.0 + (-1.702 * x).exp());
                s + 1.702 * x * s * (1.0 - s)
            }
            Act::GeluErf => {
                let x = x as f64;
                let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (cdf + x * pdf) as f32
            }
        }
    }
}

struct ActOp(Act);

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        "activation-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let mut out = x.to_vec();
        out.par_chunks_mut(MIN_CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v = self.0.value(*v)));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &ActBackward(self.0))?))
    }
}

struct ActBackward(Act);

impl CustomOp2 for ActBackward {
    fn name(&self) -> &'static str {
        "activation-train-backward"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, self.name())?;
        let g = contiguous_f32(gs, gl, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(MIN_CHUNK).zip(x.par_chunks(MIN_CHUNK)).zip(g.par_chunks(MIN_CHUNK)).for_each(|((o, cx), cg)| {
            for ((oi, xi), gi) in o.iter_mut().zip(cx).zip(cg) {
                *oi = gi * self.0.derivative(*xi);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// Differentiable x · sigmoid(1.702 x).
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda_ops::applies(x) {
        return super::cuda_ops::activation(x, Act::QuickGelu, true);
    }
    if !fast_path(x) {
        return Ok((x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?);
    }
    Ok(x.contiguous()?.apply_op1(ActOp(Act::QuickGelu))?)
}

/// Differentiable exact (erf) GELU.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda_ops::applies(x) {
        return super::cuda_ops::activation(x, Act::GeluErf, true);
    }
    if !fast_path(x) {
        return Ok(x.gelu_erf()?);
    }
    Ok(x.contiguous()?.apply_op1(ActOp(Act::GeluErf))?)
}

// ---------------------------------------------------------------------------------------------
// Input gradients as functions, for the text encoder's hand-written backward (`nn/taped.rs`):
// the fused kernels where they apply (the CPU's in f32, the GPU's with `LINCIR_CUDA_FUSED=1`),
// else candle's ops with f32 arithmetic. No graph is built: the caller is the backward pass.

/// The input gradient of [`layer_norm`] at `x`, `g` being its output's gradient.
///
/// # Shapes
/// x, g: [..., w]; weight: [w] -> [..., w]
pub fn layer_norm_backward(x: &Tensor, g: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda_ops::applies(x) {
        return Ok(super::cuda_ops::layer_norm_backward(x, g, weight, eps)?);
    }
    if fast_path(x) && fast_path(g) {
        let back = LayerNormBackward { weight: weight.to_dtype(candle_core::DType::F32)?.to_vec1()?, eps: eps as f32 };
        return Ok(x.contiguous()?.apply_op2_no_bwd(&g.contiguous()?, &back)?);
    }
    let f32 = candle_core::DType::F32;
    let (x32, g32, w) = (x.to_dtype(f32)?, g.to_dtype(f32)?, weight.to_dtype(f32)?);
    let centred = x32.broadcast_sub(&x32.mean_keepdim(D::Minus1)?)?;
    let inv_std = (centred.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    let x_hat = centred.broadcast_mul(&inv_std)?;
    let gw = g32.broadcast_mul(&w)?;
    let dx = gw
        .broadcast_sub(&gw.mean_keepdim(D::Minus1)?)?
        .sub(&x_hat.broadcast_mul(&(&gw * &x_hat)?.mean_keepdim(D::Minus1)?)?)?
        .broadcast_mul(&inv_std)?;
    Ok(dx.to_dtype(x.dtype())?)
}

/// The input gradient of a softmax over the last dimension, from its output `y` and the output's
/// gradient `g`: y (g - Σ y g).
pub fn softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda_ops::applies(y) {
        return Ok(super::cuda_ops::softmax_backward(y, g)?);
    }
    if fast_path(y) && fast_path(g) {
        return Ok(y.contiguous()?.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBackward)?);
    }
    let f32 = candle_core::DType::F32;
    let (y32, g32) = (y.to_dtype(f32)?, g.to_dtype(f32)?);
    let dot = (&y32 * &g32)?.sum_keepdim(D::Minus1)?;
    Ok((y32 * g32.broadcast_sub(&dot)?)?.to_dtype(y.dtype())?)
}

/// The input gradient of the activation at `x`, `g` being its output's gradient.
pub fn activation_backward(act: Act, x: &Tensor, g: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if super::cuda_ops::applies(x) {
        return Ok(super::cuda_ops::activation_backward(act, x, g)?);
    }
    if fast_path(x) && fast_path(g) {
        return Ok(x.contiguous()?.apply_op2_no_bwd(&g.contiguous()?, &ActBackward(act))?);
    }
    let f32 = candle_core::DType::F32;
    let x32 = x.to_dtype(f32)?;
    let derivative = match act {
        // s + 1.702 x s (1 - s), s = sigmoid(1.702 x)
        Act::QuickGelu => {
            let s = candle_nn::ops::sigmoid(&(&x32 * 1.702)?)?;
            (((&x32 * 1.702)? * s.affine(-1.0, 1.0)?)? + 1.0)?.mul(&s)?
        }
        // Φ(x) + x φ(x)
        Act::GeluErf => {
            let cdf = ((&x32 / std::f64::consts::SQRT_2)?.erf()? + 1.0)? * 0.5;
            let pdf = (x32.sqr()? * -0.5)?.exp()? * (1.0 / (2.0 * std::f64::consts::PI).sqrt());
            (cdf? + (&x32 * pdf?)?)?
        }
    };
    Ok((derivative * g.to_dtype(f32)?)?.to_dtype(x.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Fused value and input gradient against the unfused composition, in f32.
    fn check(name: &str, fused: impl Fn(&Tensor) -> Tensor, reference: impl Fn(&Tensor) -> Tensor, dims: &[usize]) {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, dims, &dev).unwrap())).unwrap();
        let weights = Tensor::randn(0f32, 1.0, dims, &dev).unwrap();
        let run = |f: &dyn Fn(&Tensor) -> Tensor| {
            let y = f(x.as_tensor());
            let g = (&y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
            (y, g.get(x.as_tensor()).expect("input gradient").clone())
        };
        let (y1, g1) = run(&fused);
        let (y2, g2) = run(&reference);
        let err = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            d / b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
        };
        assert!(err(&y1, &y2) < 1e-5, "{name} value: {}", err(&y1, &y2));
        assert!(err(&g1, &g2) < 1e-4, "{name} gradient: {}", err(&g1, &g2));
    }

    #[test]
    fn fused_ops_match_the_unfused_compositions() {
        let dev = Device::Cpu;
        let w = Tensor::randn(1f32, 0.3, 48, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, 48, &dev).unwrap();
        check(
            "layer_norm",
            |x| layer_norm(x, &w, &b, 1e-5).unwrap(),
            |x| candle_nn::ops::layer_norm_slow(x, &w, &b, 1e-5).unwrap(),
            &[3, 5, 48],
        );
        check("softmax", |x| softmax_last_dim(x).unwrap(), |x| candle_nn::ops::softmax(x, D::Minus1).unwrap(), &[4, 7, 7]);
        check(
            "quick_gelu",
            |x| quick_gelu(x).unwrap(),
            |x| (x * candle_nn::ops::sigmoid(&(x * 1.702).unwrap()).unwrap()).unwrap(),
            &[3, 5, 40],
        );
        check("gelu_erf", |x| gelu_erf(x).unwrap(), |x| x.gelu_erf().unwrap(), &[3, 5, 40]);
    }

    #[test]
    fn softmax_handles_a_causal_mask() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0.5f32, f32::NEG_INFINITY], [1.0, 2.0]], &dev).unwrap();
        let y = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y[0], [1.0, 0.0]);
        assert!((y[1][1] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
    }

    /// The backward functions of the hand-written backward against candle's autograd of the
    /// same op: in f32 through the CPU's fused ops, in f64 and f16 through the compositions of
    /// candle's ops (the GPU's path without the fused kernels).
    #[test]
    fn backward_functions_match_autograd_fused_and_composed() {
        let dev = Device::Cpu;
        let w64 = Tensor::randn(1f64, 0.3, 48, &dev).unwrap();
        let b64 = Tensor::randn(0f64, 0.3, 48, &dev).unwrap(); // (the gradient does not depend on it)
        for (dtype, tolerance) in [(candle_core::DType::F32, 1e-5), (candle_core::DType::F64, 1e-6), (candle_core::DType::F16, 1e-2)] {
            let f64s = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let compare = |name: &str, dims: &[usize], forward: &dyn Fn(&Tensor) -> Tensor, backward: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Tensor| {
                let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, dims, &dev).unwrap().to_dtype(dtype).unwrap()).unwrap();
                let g = Tensor::randn(0f64, 1.0, dims, &dev).unwrap().to_dtype(dtype).unwrap();
                // The reference: candle's autograd of the op in f64.
                let x64 = Var::from_tensor(&x.as_tensor().to_dtype(candle_core::DType::F64).unwrap()).unwrap();
                let y64 = forward(x64.as_tensor());
                let grads = (&y64 * &g.to_dtype(candle_core::DType::F64).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
                let expected = f64s(grads.get(x64.as_tensor()).unwrap());
                let y = forward(x.as_tensor()).detach();
                let got = f64s(&backward(x.as_tensor(), &y, &g));
                let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
                let err = got.iter().zip(&expected).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
                assert!(err < tolerance, "{name} {dtype:?}: {err}");
            };
            let w = w64.to_dtype(dtype).unwrap();
            compare("layer norm", &[3, 5, 48], &|x| candle_nn::ops::layer_norm_slow(x, &w64.to_dtype(x.dtype()).unwrap(), &b64.to_dtype(x.dtype()).unwrap(), 1e-5).unwrap(), &|x, _, g| {
                layer_norm_backward(x, g, &w, 1e-5).unwrap()
            });
            compare("softmax", &[4, 7, 7], &|x| candle_nn::ops::softmax(x, D::Minus1).unwrap(), &|_, y, g| softmax_backward(y, g).unwrap());
            compare("quick gelu", &[3, 5, 40], &|x| (x * candle_nn::ops::sigmoid(&(x * 1.702).unwrap()).unwrap()).unwrap(), &|x, _, g| {
                activation_backward(Act::QuickGelu, x, g).unwrap()
            });
            compare("gelu", &[3, 5, 40], &|x| x.gelu_erf().unwrap(), &|x, _, g| activation_backward(Act::GeluErf, x, g).unwrap());
        }
    }
}
