//! The transformer blocks shared by both CLIP towers, with Hugging Face weight names.
//!
//! Two execution paths: [`Grad::No`] uses candle's fused layer-norm and softmax kernels (fast, but
//! they have no backward pass and silently drop gradients), [`Grad::Yes`] uses our fused kernels
//! that do have one (`ops.rs`), and a matrix product that computes only the input gradient. The text tower uses the second when a pseudo word needs its gradient.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use super::ops::contiguous_f32;
use super::causal_layer::{CausalLayerOp, LayerWeights, Norm};
use super::unmasked_layer::{Outputs, UnmaskedLayerOp};
use super::{batched, blas, panel};
use super::config::{Activation, TowerConfig};
use super::weights::Weights;
use crate::Result;

mod taped;

/// Whether the forward pass must be differentiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grad {
    No,
    Yes,
}

/// y = x Wᵀ + b over the last dimension, computed as one 2-D matrix product over all leading
/// dimensions (candle_nn::Linear broadcasts the weight into a batch of small products instead,
/// which is several times slower for short text sequences).
#[derive(Clone)]
pub struct Linear {
    weight: Weight,
}

/// A layer's frozen weight and bias: packed for the CPU's micro-kernel (f32 on AVX2 CPUs without
/// a loaded BLAS, and bf16), else a tensor `[input, output]` for candle, the BLAS, or the GPU.
#[derive(Clone)]
enum Weight {
    Tensor { weight_t: Tensor, bias: Option<Tensor> },
    Packed(PackedMatmul),
}

/// y = x W (+ b) through a packed weight; its backward pass computes only the input gradient,
/// `g Wᵀ`, from the same panels. The bias is added in place: as a separate node of candle's
/// graph it would cost a pass over the output forward and two more backward.
#[derive(Clone)]
pub(super) struct PackedMatmul {
    weight: std::sync::Arc<panel::Frozen>,
    bias: Option<std::sync::Arc<[f32]>>,
}

impl PackedMatmul {
    /// # Shapes
    /// x: [m, input] -> [m, output]
    pub(super) fn forward_rows(&self, x: &[f32], m: usize) -> candle_core::Result<Vec<f32>> {
        use rayon::prelude::*;
        let Some(mut y) = self.weight.matmul(x, m) else {
            candle_core::bail!("packed-matmul: input is not [rows, {}]", self.weight.rows())
        };
        if let Some(b) = &self.bias {
            y.par_chunks_mut(b.len() * super::causal_layer::ROWS_PER_TASK).for_each(|rows| {
                for row in rows.chunks_exact_mut(b.len()) {
                    row.iter_mut().zip(b.iter()).for_each(|(v, b)| *v += b);
                }
            });
        }
        Ok(y)
    }

    /// The input gradient `g Wᵀ`.
    ///
    /// # Shapes
    /// g: [m, output] -> [m, input]
    pub(super) fn backward_rows(&self, g: &[f32], m: usize) -> candle_core::Result<Vec<f32>> {
        match self.weight.matmul_transposed(g, m) {
            Some(dx) => Ok(dx),
            None => candle_core::bail!("packed-matmul-backward: gradient is not [rows, {}]", self.weight.cols()),
        }
    }
}

impl CustomOp1 for PackedMatmul {
    fn name(&self) -> &'static str {
        "packed-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, _) = layout.shape().dims2()?;
        let y = self.forward_rows(contiguous_f32(x, layout, "packed-matmul")?, m)?;
        Ok((CpuStorage::F32(y), Shape::from((m, self.weight.cols()))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_y.contiguous()?.apply_op1_no_bwd(&PackedMatmulBackward(self.clone()))?))
    }
}

/// The input gradient of [`PackedMatmul`].
struct PackedMatmulBackward(PackedMatmul);

impl CustomOp1 for PackedMatmulBackward {
    fn name(&self) -> &'static str {
        "packed-matmul-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, _) = layout.shape().dims2()?;
        let dx = self.0.backward_rows(contiguous_f32(g, layout, "packed-matmul-backward")?, m)?;
        Ok((CpuStorage::F32(dx), Shape::from((m, self.0.weight.rows()))))
    }
}

/// y = x Wᵀ for a frozen W whose backward pass computes only the input gradient. candle's matmul
/// backward also computes the weight gradient, which training never uses: skipping it saves about
/// a quarter of the backward time and all of the weight-gradient memory (docs/PERFORMANCE.md).
struct FrozenMatmul {
    weight_t: Tensor, // [input, output]
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, x_layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = x_layout.shape().dims2()?;
        let (_, n) = self.weight_t.dims2()?;
        let (storage, w_layout) = self.weight_t.storage_and_layout();
        let Storage::Cpu(w) = &*storage else { candle_core::bail!("frozen-matmul: weight is not on the CPU") };
        if let Some(y) = blas_product(x, x_layout, w, w_layout, (m, n, k), false)? {
            return Ok((CpuStorage::F32(y), Shape::from((m, n))));
        }
        Ok((x.matmul(w, (1, m, n, k), x_layout, w_layout)?, Shape::from((m, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, x: &candle_core::CudaStorage, x_layout: &Layout) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (m, k) = x_layout.shape().dims2()?;
        let (_, n) = self.weight_t.dims2()?;
        let (storage, w_layout) = self.weight_t.storage_and_layout();
        let Storage::Cuda(w) = &*storage else { candle_core::bail!("frozen-matmul: weight is not on the GPU") };
        Ok((x.matmul(w, (1, m, n, k), x_layout, w_layout)?, Shape::from((m, n))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad_y = grad_y.contiguous()?;
        // The BLAS takes f32 only (an f16 or bf16 tower's gradient stays on candle's product).
        let f32_cpu = grad_y.device().is_cpu() && grad_y.dtype() == candle_core::DType::F32 && self.weight_t.dtype() == candle_core::DType::F32;
        if f32_cpu && blas::active().is_some() && grad_y.dim(0)? > BLAS_MIN_ROWS {
            return Ok(Some(grad_y.apply_op1_no_bwd(&FrozenMatmulBackward { weight_t: self.weight_t.clone() })?));
        }
        Ok(Some(grad_y.matmul(&self.weight_t.t()?)?))
    }
}

/// The input gradient of [`FrozenMatmul`], `g Wᵀᵀ`, through the loaded BLAS.
struct FrozenMatmulBackward {
    weight_t: Tensor, // [input, output]
}

impl CustomOp1 for FrozenMatmulBackward {
    fn name(&self) -> &'static str {
        "frozen-matmul-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, g_layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, n) = g_layout.shape().dims2()?;
        let (k, _) = self.weight_t.dims2()?;
        let (storage, w_layout) = self.weight_t.storage_and_layout();
        let Storage::Cpu(w) = &*storage else { candle_core::bail!("frozen-matmul-backward: weight is not on the CPU") };
        match blas_product(g, g_layout, w, w_layout, (m, k, n), true)? {
            Some(dx) => Ok((CpuStorage::F32(dx), Shape::from((m, k)))),
            None => candle_core::bail!("frozen-matmul-backward: needs f32 contiguous inputs and a BLAS"),
        }
    }
}

/// Products with at most this many rows stay on candle's kernel even with a BLAS loaded: the
/// BLAS libraries measured were half as fast on a query's dozen rows (docs/PERFORMANCE.md).
const BLAS_MIN_ROWS: usize = 16;

/// `a[m, k] · b` through the loaded BLAS, `b` being `[k, n]` (or `[n, k]` read transposed);
/// None when no BLAS is loaded or the operands are not contiguous f32.
fn blas_product(a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout, (m, n, k): (usize, usize, usize), b_transposed: bool) -> candle_core::Result<Option<Vec<f32>>> {
    let Some(blas) = blas::active().filter(|_| m > BLAS_MIN_ROWS) else { return Ok(None) };
    let (CpuStorage::F32(a), CpuStorage::F32(b)) = (a, b) else { return Ok(None) };
    let (Some((a0, a1)), Some((b0, b1))) = (al.contiguous_offsets(), bl.contiguous_offsets()) else { return Ok(None) };
    blas.matmul(&a[a0..a1], &b[b0..b1], m, n, k, b_transposed).map(Some).map_err(|e| candle_core::Error::Msg(e.to_string()))
}

impl Linear {
    /// A layer from a weight `[output, input]` (the layout of Hugging Face files) and a bias.
    pub fn new(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        let weight_t = weight.t()?.contiguous()?;
        // Packed for the CPU's micro-kernel: f32 unless a BLAS was asked for, and bf16 (which
        // no BLAS takes).
        let packed = match weight_t.dtype() {
            _ if !weight_t.device().is_cpu() || !panel::enabled() => None,
            candle_core::DType::F32 if blas::active().is_none() => {
                let (k, n) = weight_t.dims2()?;
                panel::Packed::new(&weight_t.flatten_all()?.to_vec1::<f32>()?, k, n).map(panel::Frozen::F32)
            }
            candle_core::DType::BF16 => {
                let (k, n) = weight_t.dims2()?;
                panel::Packed::new(&weight_t.flatten_all()?.to_vec1::<half::bf16>()?, k, n).map(panel::Frozen::Bf16)
            }
            _ => None,
        };
        let weight = match packed {
            Some(packed) => {
                let bias = bias.as_ref().map(|b| b.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()).transpose()?;
                Weight::Packed(PackedMatmul { weight: std::sync::Arc::new(packed), bias: bias.map(Into::into) })
            }
            None => Weight::Tensor { weight_t, bias },
        };
        Ok(Linear { weight })
    }

    /// Output width.
    fn outputs(&self) -> Result<usize> {
        Ok(match &self.weight {
            Weight::Tensor { weight_t, .. } => weight_t.dim(1)?,
            Weight::Packed(p) => p.weight.cols(),
        })
    }

    /// The input gradient of [`Self::forward`] (the weight is frozen: it gets none), `g` being
    /// the output's gradient.
    ///
    /// # Shapes
    /// g: [rows, output] -> [rows, input]
    pub(super) fn input_grad(&self, g: &Tensor) -> Result<Tensor> {
        let g = g.contiguous()?;
        Ok(match &self.weight {
            Weight::Tensor { weight_t, .. } if weight_t.dtype() != g.dtype() => g.matmul(&weight_t.to_dtype(g.dtype())?.t()?)?,
            Weight::Tensor { weight_t, .. } => g.matmul(&weight_t.t()?)?,
            Weight::Packed(op) => g.apply_op1_no_bwd(&PackedMatmulBackward(op.clone()))?,
        })
    }

    /// The packed weight and bias, where the layer has them.
    fn packed(&self) -> Option<PackedMatmul> {
        match &self.weight {
            Weight::Packed(p) => Some(p.clone()),
            Weight::Tensor { .. } => None,
        }
    }

    /// # Shapes
    /// x: [..., input] -> [..., output]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let input = *dims.last().expect("linear input has at least one dimension");
        let rows = x.elem_count() / input;
        let x2 = x.contiguous()?.reshape((rows, input))?;
        let mut out = dims.to_vec();
        *out.last_mut().unwrap() = self.outputs()?;
        let (weight_t, bias) = match &self.weight {
            Weight::Packed(op) if x2.dtype() == candle_core::DType::F32 => {
                let y = if x2.track_op() { x2.apply_op1(op.clone())? } else { x2.apply_op1_no_bwd(op)? };
                return Ok(y.reshape(out)?);
            }
            Weight::Packed(_) => return Err(crate::Error::Invalid(format!("a packed f32 layer got {:?} input", x2.dtype()))),
            Weight::Tensor { weight_t, bias } => (weight_t, bias),
        };
        // Both backends have the frozen product (cuBLAS on the GPU, with the `cuda` feature); on
        // the CPU it is also the way to a loaded BLAS.
        let cpu_f32 = x2.device().is_cpu() && x2.dtype() == candle_core::DType::F32;
        // bf16 weights with f32 arithmetic where they are not packed: widened per product.
        let weight_t = if weight_t.dtype() != x2.dtype() {
            std::borrow::Cow::Owned(weight_t.to_dtype(x2.dtype())?)
        } else {
            std::borrow::Cow::Borrowed(weight_t)
        };
        // On a GPU in bf16/f16 with the fused ops on: the bias added by the product's epilogue.
        // Where cuBLASLt refuses the product (it names no algorithm for some shapes), cuBLAS below.
        #[cfg(feature = "cuda")]
        if let Some(b) = bias.as_ref().filter(|b| super::cuda_ops::linear_bias_applies(&x2, &weight_t, b)) {
            match super::cuda_ops::linear_bias(&x2, &weight_t, b) {
                Ok(y) => return Ok(y.reshape(out)?),
                Err(e) => super::cuda_ops::warn_once(&format!("cuBLASLt's product with bias failed ({e}); using cuBLAS and a separate bias addition")),
            }
        }
        let own_kernel = cpu_f32 && blas::active().is_some() && rows > BLAS_MIN_ROWS;
        let y = if own_kernel || (x2.track_op() && (x2.device().is_cpu() || cfg!(feature = "cuda"))) {
            x2.apply_op1(FrozenMatmul { weight_t: weight_t.into_owned() })?
        } else {
            x2.matmul(&weight_t)?
        };
        let y = match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        Ok(y.reshape(out)?)
    }

}

pub fn linear(w: &Weights, prefix: &str, input: usize, output: usize, bias: bool) -> Result<Linear> {
    linear_side_by_side(w, &[prefix], input, output, bias)
}

/// One layer computing several layers' outputs side by side (their weights concatenated along
/// the output dimension), each `input -> output`.
fn linear_side_by_side(w: &Weights, prefixes: &[&str], input: usize, output: usize, bias: bool) -> Result<Linear> {
    let weights = prefixes.iter().map(|p| w.get_matrix(&format!("{p}.weight"), &[output, input])).collect::<Result<Vec<_>>>()?;
    let biases = match bias {
        true => Some(Tensor::cat(&prefixes.iter().map(|p| w.get(&format!("{p}.bias"), &[output])).collect::<Result<Vec<_>>>()?, 0)?),
        false => None,
    };
    Linear::new(&Tensor::cat(&weights, 0)?, biases)
}

/// x · sigmoid(1.702 x) in one pass over the data (inference only: no backward).
struct QuickGeluOp;

impl CustomOp1 for QuickGeluOp {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let mut out = contiguous_f32(storage, layout, "quick-gelu")?.to_vec();
        out.par_chunks_mut(4096).for_each(super::fastmath::quick_gelu_in_place);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Softmax over the last dimension with a vector exponential (inference only: no backward).
struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let row = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        // In place on one copy (ops::map_rows would zero a second buffer first).
        let mut out = contiguous_f32(storage, layout, "softmax")?.to_vec();
        out.par_chunks_mut((4096 / row).max(1) * row).for_each(|c| super::fastmath::softmax_rows_in_place(c, row));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, prefix: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.get(&format!("{prefix}.weight"), &[size])?,
            bias: w.get(&format!("{prefix}.bias"), &[size])?,
            eps,
        })
    }

    fn norm(&self) -> Result<Norm> {
        let values = |t: &Tensor| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>();
        Ok(Norm { weight: values(&self.weight)?, bias: values(&self.bias)?, eps: self.eps as f32 })
    }

    /// # Shapes
    /// x: [..., size] -> [..., size]
    pub fn forward(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        Ok(match grad {
            // The fused kernel needs contiguous input.
            // candle's fused kernel has no f64 (which only tests use).
            Grad::No if x.dtype() == candle_core::DType::F64 => candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps as f32)?,
            Grad::No => candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)?,
            Grad::Yes => super::ops::layer_norm(x, &self.weight, &self.bias, self.eps)?,
        })
    }
}

pub fn activate(x: &Tensor, act: Activation, grad: Grad) -> Result<Tensor> {
    // Inference on a GPU: one fused kernel instead of candle's three (LINCIR_CUDA_FUSED=1).
    #[cfg(feature = "cuda")]
    if let Some(fused) = super::ops::Act::of(act).filter(|_| grad == Grad::No && super::cuda_ops::applies(x)) {
        return super::cuda_ops::activation(x, fused, false);
    }
    Ok(match act {
        Activation::QuickGelu if grad == Grad::No && x.device().is_cpu() && x.dtype() == candle_core::DType::F32 => {
            x.contiguous()?.apply_op1_no_bwd(&QuickGeluOp)?
        }
        Activation::QuickGelu if grad == Grad::No => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
        Activation::QuickGelu => super::ops::quick_gelu(x)?,
        Activation::Gelu if grad == Grad::No => x.gelu_erf()?,
        Activation::Gelu => super::ops::gelu_erf(x)?,
        Activation::GeluTanh => x.gelu()?,
    })
}

/// Variable-length sequences packed without padding: the rows of a [tokens, hidden] matrix are
/// the real tokens of every sequence, one after the other. The linear layers (most of the work)
/// run on those rows only; attention scatters them to the padded [batch, longest] layout it needs
/// and gathers them back. Exact: each sequence sees only its own tokens, as with padding.
#[derive(Clone)]
pub struct Packing {
    lengths: Vec<usize>,
    batch: usize,
    longest: usize,
    /// Padded position (sequence * longest + position) -> packed row (0 for padding, whose values
    /// are never read: padding only follows a sequence's last token, and attention is causal).
    to_padded: Tensor,
    /// Packed row -> padded position.
    to_packed: Tensor,
    /// Packed row of each sequence's last token.
    last_rows: Tensor,
    /// [batch, 1, 1, longest] additive mask: 0 on a sequence's tokens, -inf on its padding.
    last_mask: Tensor,
    /// [longest, longest] additive causal mask.
    causal: Tensor,
    /// [batch * longest, 1]: 1 at a sequence's tokens, 0 at its padding (the hand-written
    /// backward zeroes the padding's gradient with it).
    real: Tensor,
}

impl Packing {
    pub fn new(lengths: &[usize], dtype: candle_core::DType, device: &candle_core::Device) -> Result<Self> {
        let batch = lengths.len();
        let longest = lengths.iter().copied().max().unwrap_or(0);
        if batch == 0 || lengths.contains(&0) {
            return Err(crate::Error::Invalid("cannot pack an empty batch or an empty sequence".into()));
        }
        let mut to_padded = vec![0u32; batch * longest];
        let mut to_packed = Vec::with_capacity(lengths.iter().sum());
        let mut last_rows = Vec::with_capacity(batch);
        let mut last_mask = vec![f32::NEG_INFINITY; batch * longest];
        let mut real = vec![0f32; batch * longest];
        for (i, &len) in lengths.iter().enumerate() {
            for j in 0..len {
                to_padded[i * longest + j] = to_packed.len() as u32;
                to_packed.push((i * longest + j) as u32);
                last_mask[i * longest + j] = 0.0;
                real[i * longest + j] = 1.0;
            }
            last_rows.push(to_packed.len() as u32 - 1);
        }
        let tokens = to_packed.len();
        let causal: Vec<f32> =
            (0..longest).flat_map(|i| (0..longest).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        Ok(Packing {
            lengths: lengths.to_vec(),
            batch,
            longest,
            to_padded: Tensor::from_vec(to_padded, batch * longest, device)?,
            to_packed: Tensor::from_vec(to_packed, tokens, device)?,
            last_rows: Tensor::from_vec(last_rows, batch, device)?,
            last_mask: Tensor::from_vec(last_mask, (batch, 1, 1, longest), device)?.to_dtype(dtype)?,
            causal: Tensor::from_vec(causal, (longest, longest), device)?.to_dtype(dtype)?,
            real: Tensor::from_vec(real, (batch * longest, 1), device)?.to_dtype(dtype)?,
        })
    }

    /// # Shapes
    /// padded: [batch, longest, hidden] -> [tokens, hidden]
    pub fn pack(&self, padded: &Tensor) -> Result<Tensor> {
        let h = padded.dim(2)?;
        Ok(padded.reshape((self.batch * self.longest, h))?.index_select(&self.to_packed, 0)?)
    }

    /// # Shapes
    /// packed: [tokens, hidden] -> [batch, hidden], each sequence's last token
    pub fn last(&self, packed: &Tensor) -> Result<Tensor> {
        Ok(packed.index_select(&self.last_rows, 0)?)
    }
}

#[derive(Clone)]
struct Attention {
    /// q, k and v projections fused into one product: [hidden] -> [3 * hidden].
    qkv: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(w: &Weights, prefix: &str, cfg: &TowerConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let [q, k, v] = ["q_proj", "k_proj", "v_proj"].map(|p| format!("{prefix}.{p}"));
        let qkv = linear_side_by_side(w, &[&q, &k, &v], h, h, true)?;
        Ok(Attention {
            qkv,
            out: linear(w, &format!("{prefix}.out_proj"), h, h, true)?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    /// Unmasked self-attention (the vision tower; the text tower runs on packed sequences).
    ///
    /// # Shapes
    /// x: [batch, seq, hidden] -> [batch, seq, hidden]
    fn forward(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let (n, d) = (self.heads, self.head_dim);
        // [b, s, 3h] -> [3, b * heads, s, head_dim] in one copy
        let qkv = self.qkv.forward(x)?.reshape((b, s, 3, n, d))?.permute((2, 0, 3, 1, 4))?.contiguous()?;
        let qkv = qkv.reshape((3, b * n, s, d))?;
        let q = (qkv.get(0)? * (d as f64).powf(-0.5))?;
        let (k, v) = (qkv.get(1)?, qkv.get(2)?);
        let scores = batched::matmul(&q, &k.t()?)?; // [b*heads, s, s]
        let ctx = batched::matmul(&softmax(&scores, grad)?, &v)?; // [b*heads, s, head_dim]
        let ctx = ctx.reshape((b, n, s, d))?.transpose(1, 2)?.reshape((b, s, h))?;
        self.out.forward(&ctx)
    }

    /// Attention output at the first token only (the vision tower's class token), unmasked.
    ///
    /// # Shapes
    /// x: [batch, seq, hidden] -> [batch, hidden]
    fn forward_first(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let (n, d) = (self.heads, self.head_dim);
        let qkv = self.qkv.forward(x)?; // [b, s, 3h]
        let q = (qkv.narrow(1, 0, 1)?.narrow(2, 0, h)?.reshape((b * n, 1, d))? * (d as f64).powf(-0.5))?;
        let kv = qkv.narrow(2, h, 2 * h)?.reshape((b, s, 2, n, d))?.permute((2, 0, 3, 1, 4))?.contiguous()?;
        let kv = kv.reshape((2, b * n, s, d))?;
        let scores = batched::matmul(&q, &kv.get(0)?.t()?)?; // [b*heads, 1, s]
        let ctx = batched::matmul(&softmax(&scores, grad)?, &kv.get(1)?)?.reshape((b, h))?;
        self.out.forward(&ctx)
    }
}

impl Attention {
    /// q, k, v of packed rows in the padded per-head layout.
    ///
    /// # Shapes
    /// qkv: [tokens, 3 * hidden] -> 3 x [batch * heads, longest, head_dim] (q scaled)
    fn padded_heads(&self, qkv: &Tensor, p: &Packing) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, s, n, d) = (p.batch, p.longest, self.heads, self.head_dim);
        let qkv = qkv.index_select(&p.to_padded, 0)?; // [b * s, 3h]
        let qkv = qkv.reshape((b, s, 3, n, d))?.permute((2, 0, 3, 1, 4))?.contiguous()?.reshape((3, b * n, s, d))?;
        Ok(((qkv.get(0)? * (d as f64).powf(-0.5))?, qkv.get(1)?, qkv.get(2)?))
    }

    /// Causal self-attention over packed sequences.
    ///
    /// # Shapes
    /// x: [tokens, hidden] -> [tokens, hidden]
    fn forward_packed(&self, x: &Tensor, p: &Packing, grad: Grad) -> Result<Tensor> {
        self.out.forward(&self.attend_packed(x, p, grad)?.ctx)
    }

    /// Attention output at each sequence's last token only (what pooling reads).
    ///
    /// # Shapes
    /// x: [tokens, hidden] -> [batch, hidden]
    fn forward_last(&self, x: &Tensor, p: &Packing, grad: Grad) -> Result<Tensor> {
        self.out.forward(&self.attend_last(x, p, grad)?.ctx)
    }

    /// [`Self::forward_packed`] before the output projection, with what it computed on the way.
    fn attend_packed(&self, x: &Tensor, p: &Packing, grad: Grad) -> Result<Attended> {
        let (b, s, n, d) = (p.batch, p.longest, self.heads, self.head_dim);
        let (q, k, v) = self.padded_heads(&self.qkv.forward(x)?, p)?;
        let scores = batched::matmul(&q, &k.t()?)?.broadcast_add(&p.causal)?; // [b*n, s, s]
        let probs = softmax(&scores, grad)?;
        let ctx = batched::matmul(&probs, &v)?; // [b*n, s, d]
        let ctx = ctx.reshape((b, n, s, d))?.transpose(1, 2)?.reshape((b * s, n * d))?.index_select(&p.to_packed, 0)?;
        Ok(Attended { ctx, q, k, v, probs })
    }

    /// [`Self::forward_last`] before the output projection, with what it computed on the way (q
    /// at each sequence's last token only).
    fn attend_last(&self, x: &Tensor, p: &Packing, grad: Grad) -> Result<Attended> {
        let (b, s, n, d) = (p.batch, p.longest, self.heads, self.head_dim);
        let qkv = self.qkv.forward(x)?; // [tokens, 3h]
        let (_, k, v) = self.padded_heads(&qkv, p)?;
        let q = (p.last(&qkv)?.narrow(1, 0, n * d)? * (d as f64).powf(-0.5))?; // [b, h]
        let q = q.reshape((b * n, 1, d))?;
        let scores = batched::matmul(&q, &k.t()?)?.reshape((b, n, 1, s))?.broadcast_add(&p.last_mask)?; // [b, n, 1, s]
        let probs = softmax(&scores.reshape((b * n, 1, s))?, grad)?;
        let ctx = probs.matmul(&v)?.reshape((b, n * d))?;
        Ok(Attended { ctx, q, k, v, probs })
    }
}

/// Packed causal attention before its output projection, and what it computed on the way (what
/// the hand-written backward of `taped.rs` reads).
struct Attended {
    /// [tokens, hidden], or [batch, hidden] for each sequence's last token.
    ctx: Tensor,
    /// q (scaled), k and v in the per-head layout [batch * heads, longest, head_dim] (q:
    /// [batch * heads, 1, head_dim] at the last token only).
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// [batch * heads, queries, longest]
    probs: Tensor,
}

fn softmax(scores: &Tensor, grad: Grad) -> Result<Tensor> {
    Ok(match grad {
        Grad::No if scores.device().is_cpu() && scores.dtype() == candle_core::DType::F32 => scores.contiguous()?.apply_op1_no_bwd(&SoftmaxOp)?,
        Grad::No => candle_nn::ops::softmax_last_dim(scores)?,
        Grad::Yes => super::ops::softmax_last_dim(scores)?,
    })
}

#[derive(Clone)]
struct EncoderLayer {
    attn: Attention,
    ln1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ln2: LayerNorm,
    act: Activation,
    /// The layer as one fused op, where its weights are packed and its activation has a fused
    /// backward: the CPU's text path (`causal_layer.rs`) and image path (`unmasked_layer.rs`).
    fused: Option<Arc<LayerWeights>>,
}

impl EncoderLayer {
    fn load(w: &Weights, prefix: &str, cfg: &TowerConfig) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let mut layer = EncoderLayer {
            attn: Attention::load(w, &format!("{prefix}.self_attn"), cfg)?,
            ln1: LayerNorm::load(w, &format!("{prefix}.layer_norm1"), h, eps)?,
            fc1: linear(w, &format!("{prefix}.mlp.fc1"), h, i, true)?,
            fc2: linear(w, &format!("{prefix}.mlp.fc2"), i, h, true)?,
            ln2: LayerNorm::load(w, &format!("{prefix}.layer_norm2"), h, eps)?,
            act: cfg.hidden_act,
            fused: None,
        };
        layer.fused = layer.fused_weights()?.map(Arc::new);
        Ok(layer)
    }

    fn fused_weights(&self) -> Result<Option<LayerWeights>> {
        let Some(act) = super::ops::Act::of(self.act) else { return Ok(None) };
        let dense = [&self.attn.qkv, &self.attn.out, &self.fc1, &self.fc2].map(Linear::packed);
        let [Some(qkv), Some(out), Some(fc1), Some(fc2)] = dense else { return Ok(None) };
        Ok(Some(LayerWeights { ln1: self.ln1.norm()?, qkv, out, ln2: self.ln2.norm()?, fc1, fc2, act, heads: self.attn.heads }))
    }

    fn forward(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x, grad)?, grad)?)?;
        self.feed_forward(&x, grad)
    }

    /// The layer's output at the first token only.
    ///
    /// # Shapes
    /// x: [batch, seq, hidden] -> [batch, hidden]
    fn forward_first(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        let first = x.narrow(1, 0, 1)?.squeeze(1)?;
        let x = (first + self.attn.forward_first(&self.ln1.forward(x, grad)?, grad)?)?;
        self.feed_forward(&x, grad)
    }

    /// x + mlp(ln2(x))
    fn feed_forward(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        Ok(self.feed_forward_keeping(x, grad)?.0)
    }

    /// [`Self::feed_forward`], and fc1's output (what the activation's derivative reads).
    fn feed_forward_keeping(&self, x: &Tensor, grad: Grad) -> Result<(Tensor, Tensor)> {
        let u = self.fc1.forward(&self.ln2.forward(x, grad)?)?;
        let y = self.fc2.forward(&activate(&u, self.act, grad)?)?;
        Ok(((x + y)?, u))
    }

    /// # Shapes
    /// x: [tokens, hidden] -> [tokens, hidden]
    fn forward_packed(&self, x: &Tensor, p: &Packing, grad: Grad) -> Result<Tensor> {
        let x = (x + self.attn.forward_packed(&self.ln1.forward(x, grad)?, p, grad)?)?;
        self.feed_forward(&x, grad)
    }

    /// The layer's output at each sequence's last token only.
    ///
    /// # Shapes
    /// x: [tokens, hidden] -> [batch, hidden]
    fn forward_last(&self, x: &Tensor, p: &Packing, grad: Grad) -> Result<Tensor> {
        let x = (p.last(x)? + self.attn.forward_last(&self.ln1.forward(x, grad)?, p, grad)?)?;
        self.feed_forward(&x, grad)
    }
}

/// Whether the CPU runs a text layer as one fused op: unless `LINCIR_FUSED_LAYERS=0` (a diagnostic:
/// candle's graph of ops instead, for comparisons).
fn fused_layers_enabled() -> bool {
    std::env::var("LINCIR_FUSED_LAYERS").map_or(true, |v| v != "0")
}

/// Whether a differentiable pass outside the CPU's fused layers runs the hand-written backward
/// (`taped.rs`): unless `LINCIR_TAPED=0` (a diagnostic: candle's autograd instead).
fn taped_enabled() -> bool {
    std::env::var("LINCIR_TAPED").map_or(true, |v| v != "0")
}

/// How the text encoder runs over packed sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Each layer one fused op with its own backward (the CPU in f32, `causal_layer.rs`).
    Fused,
    /// The encoder one node of candle's graph with a hand-written backward (`taped.rs`): the
    /// GPU's training path.
    Taped,
    /// candle's ops, and its autograd when differentiable.
    Graph,
}

/// A pre-LayerNorm transformer encoder (`{prefix}.layers.{i}`).
pub struct Encoder {
    layers: Arc<[EncoderLayer]>,
}

impl Encoder {
    pub fn load(w: &Weights, prefix: &str, cfg: &TowerConfig) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::load(w, &format!("{prefix}.layers.{i}"), cfg))
            .collect::<Result<_>>()?;
        Ok(Encoder { layers })
    }

    /// Every layer's fused weights, where all have them.
    fn fused_layers(&self) -> Option<Vec<Arc<LayerWeights>>> {
        self.layers.iter().map(|l| l.fused.clone()).collect()
    }

    /// Causal encoder over packed sequences, returning only each sequence's last token (the last
    /// layer computes nothing else: only that row is pooled).
    ///
    /// # Shapes
    /// x: [tokens, hidden] -> [batch, hidden]
    pub fn forward_packed_last(&self, x: &Tensor, p: &Packing, grad: Grad) -> Result<Tensor> {
        self.forward_packed_last_via(x, p, grad, self.path(x.device(), x.dtype(), grad))
    }

    /// The path [`Self::forward_packed_last`] takes for input of this device and dtype.
    fn path(&self, device: &candle_core::Device, dtype: candle_core::DType, grad: Grad) -> Path {
        let fused = device.is_cpu() && dtype == candle_core::DType::F32 && fused_layers_enabled();
        if fused && self.layers.iter().all(|l| l.fused.is_some()) {
            Path::Fused
        } else if grad == Grad::Yes && taped_enabled() && taped::applies(&self.layers) {
            Path::Taped
        } else {
            Path::Graph
        }
    }

    /// How training differentiates this encoder for input of this device and dtype, in words
    /// (for reports).
    pub fn training_path(&self, device: &candle_core::Device, dtype: candle_core::DType) -> &'static str {
        match self.path(device, dtype, Grad::Yes) {
            Path::Fused => "fused layers",
            Path::Taped => "hand-written backward",
            Path::Graph => "candle's autograd",
        }
    }

    /// [`Self::forward_packed_last`] along `path` (Fused needs every layer's fused weights, Taped
    /// a differentiable pass).
    fn forward_packed_last_via(&self, x: &Tensor, p: &Packing, grad: Grad, path: Path) -> Result<Tensor> {
        let (last, rest) = self.layers.split_last().ok_or_else(|| crate::Error::Invalid("an encoder without layers".into()))?;
        match path {
            Path::Fused => {
                let layers = self.fused_layers().ok_or_else(|| crate::Error::Invalid("a layer without fused weights".into()))?;
                let mut x = x.contiguous()?;
                let n = layers.len();
                for (i, weights) in layers.into_iter().enumerate() {
                    let op = CausalLayerOp::new(weights, &p.lengths, i + 1 == n, grad == Grad::Yes);
                    x = if grad == Grad::Yes { x.apply_op1(op)? } else { x.apply_op1_no_bwd(&op)? };
                }
                Ok(x)
            }
            Path::Taped => taped::forward_packed_last(&self.layers, x, p),
            Path::Graph => {
                let mut x = x.clone();
                for layer in rest {
                    x = layer.forward_packed(&x, p, grad)?;
                }
                last.forward_last(&x, p, grad)
            }
        }
    }

    /// Unmasked encoder returning only the first token (the last layer computes nothing else:
    /// the vision tower pools the class token).
    ///
    /// # Shapes
    /// x: [batch, seq, hidden] -> [batch, hidden]
    pub fn forward_first_token(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        let fused = x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && fused_layers_enabled();
        self.forward_first_token_via(x, grad, fused)
    }

    /// [`Self::forward_first_token`] through the fused layers where `fused` and every layer has
    /// them (inference only), else through candle's ops.
    fn forward_first_token_via(&self, x: &Tensor, grad: Grad, fused: bool) -> Result<Tensor> {
        let (last, rest) = self.layers.split_last().ok_or_else(|| crate::Error::Invalid("an encoder without layers".into()))?;
        if let Some(layers) = self.fused_layers().filter(|_| fused && grad == Grad::No) {
            let (batch, seq, _) = x.dims3()?;
            let mut x = x.contiguous()?;
            let n = layers.len();
            for (i, weights) in layers.into_iter().enumerate() {
                let outputs = if i + 1 == n { Outputs::First } else { Outputs::All };
                x = x.apply_op1_no_bwd(&UnmaskedLayerOp { weights, batch, seq, outputs })?;
            }
            return Ok(x);
        }
        let mut x = x.clone();
        for layer in rest {
            x = layer.forward(&x, grad)?;
        }
        last.forward_first(&x, grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The fused causal layers against candle's graph of the same layers: values and the input
    /// gradient, on ragged sequences (a one-token sequence included), through an all-rows layer
    /// and a last-row-only layer.
    #[test]
    fn fused_causal_layers_match_the_graph_of_ops() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-a");
        let cfg = super::super::ClipConfig::from_file(&dir.join("config.json")).unwrap();
        let w = Weights::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
        let encoder = Encoder::load(&w, "text_model.encoder", &cfg.text.tower).unwrap();
        if !panel::enabled() {
            assert!(encoder.layers.iter().all(|l| l.fused.is_none()));
            return; // no packed weights on this CPU: the graph of ops is the only path
        }
        assert!(encoder.layers.iter().all(|l| l.fused.is_some()));
        let lengths = [3, 1, 7, 5];
        let rows: usize = lengths.iter().sum();
        let h = cfg.text.tower.hidden_size;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, h), &Device::Cpu).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1.0, (lengths.len(), h), &Device::Cpu).unwrap();
        let p = Packing::new(&lengths, DType::F32, &Device::Cpu).unwrap();
        let run = |fused| {
            let path = if fused { Path::Fused } else { Path::Graph };
            let y = encoder.forward_packed_last_via(x.as_tensor(), &p, Grad::Yes, path).unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let ((y1, g1), (y2, g2)) = (run(true), run(false));
        let rel = |a: &[f32], b: &[f32]| {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
        };
        assert!(rel(&y1, &y2) < 1e-5, "values differ by {}", rel(&y1, &y2));
        assert!(rel(&g1, &g2) < 1e-5, "input gradients differ by {}", rel(&g1, &g2));
        // Every row of every sequence reaches the output through attention: no gradient is zero.
        assert!(g1.chunks(h).all(|row| row.iter().any(|v| *v != 0.0)));
        // Inference (no kept activations) gives the training path's values.
        let y3 = encoder.forward_packed_last_via(x.as_tensor(), &p, Grad::No, Path::Fused).unwrap();
        let y4 = encoder.forward_packed_last_via(x.as_tensor(), &p, Grad::No, Path::Graph).unwrap();
        let (y3, y4) = (y3.flatten_all().unwrap().to_vec1::<f32>().unwrap(), y4.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(y3, y1);
        assert!(rel(&y3, &y4) < 1e-5, "inference values differ by {}", rel(&y3, &y4));
    }

    /// The fused vision layers (unmasked, the last one computing the first token only) against
    /// candle's graph of the same layers, for both fixtures' vision towers (QuickGELU and GELU,
    /// heads of 8 and 20): sequences that end inside a micro-kernel block, cross a 16-column
    /// panel, and cross the 256-deep block of the attention's second product (ViT-L/14's 257).
    #[test]
    fn fused_unmasked_layers_match_the_graph_of_ops() {
        for fixture in ["clip-a", "clip-b"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
            let cfg = super::super::ClipConfig::from_file(&dir.join("config.json")).unwrap();
            let w = Weights::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();
            let encoder = Encoder::load(&w, "vision_model.encoder", &cfg.vision.tower).unwrap();
            if !panel::enabled() {
                return; // no packed weights on this CPU: the graph of ops is the only path
            }
            assert!(encoder.layers.iter().all(|l| l.fused.is_some()), "{fixture}");
            let h = cfg.vision.tower.hidden_size;
            for (batch, seq) in [(1, 1), (2, 17), (3, 40), (2, 257), (1, 300)] {
                let x = Tensor::randn(0f32, 1.0, (batch, seq, h), &Device::Cpu).unwrap();
                let run = |fused| encoder.forward_first_token_via(&x, Grad::No, fused).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let (fused, graph) = (run(true), run(false));
                assert_eq!(fused.len(), batch * h);
                let scale = graph.iter().fold(0f32, |m, v| m.max(v.abs()));
                let err = fused.iter().zip(&graph).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
                assert!(err < 1e-5, "{fixture} batch {batch} x {seq}: values differ by {err}");
            }
        }
    }

    /// The hand-written backward (the GPU's training path) against candle's autograd of the same
    /// layers: values and the input gradient on ragged sequences, in f64 (the weights as tensors
    /// and the backward's ops composed of candle's, as on a GPU without the fused kernels), f32
    /// (packed weights and the CPU's fused backward ops, where the CPU has them) and f16.
    #[test]
    fn the_hand_written_backward_matches_candles_autograd() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-a");
        let cfg = super::super::ClipConfig::from_file(&dir.join("config.json")).unwrap();
        let lengths = [3, 1, 7, 5];
        let rows: usize = lengths.iter().sum();
        let h = cfg.text.tower.hidden_size;
        let x64 = Tensor::randn(0f64, 1.0, (rows, h), &Device::Cpu).unwrap();
        let r64 = Tensor::randn(0f64, 1.0, (lengths.len(), h), &Device::Cpu).unwrap();
        for (dtype, tolerance) in [(DType::F64, 1e-5), (DType::F32, 1e-5), (DType::F16, 2e-2)] {
            let w = Weights::from_dir(&dir, dtype, &Device::Cpu).unwrap();
            let encoder = Encoder::load(&w, "text_model.encoder", &cfg.text.tower).unwrap();
            assert!(taped::applies(&encoder.layers));
            let x = Var::from_tensor(&x64.to_dtype(dtype).unwrap()).unwrap();
            let r = r64.to_dtype(dtype).unwrap();
            let p = Packing::new(&lengths, dtype, &Device::Cpu).unwrap();
            let run = |path| {
                let y = encoder.forward_packed_last_via(x.as_tensor(), &p, Grad::Yes, path).unwrap();
                let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
                (f64s(&y), f64s(g.get(x.as_tensor()).unwrap()))
            };
            let ((y1, g1), (y2, g2)) = (run(Path::Taped), run(Path::Graph));
            let rel = |a: &[f64], b: &[f64]| {
                let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
                a.iter().zip(b).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale
            };
            assert!(rel(&y1, &y2) < tolerance, "{dtype:?}: values differ by {}", rel(&y1, &y2));
            assert!(rel(&g1, &g2) < tolerance, "{dtype:?}: input gradients differ by {}", rel(&g1, &g2));
            assert!(g1.chunks(h).all(|row| row.iter().any(|v| *v != 0.0)), "{dtype:?}: a row without gradient");
        }
    }
}
