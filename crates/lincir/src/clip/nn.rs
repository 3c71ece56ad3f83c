//! The transformer blocks shared by both CLIP towers, with Hugging Face weight names.
//!
//! Two execution paths: [`Grad::No`] uses candle's fused layer-norm and softmax kernels (fast, but
//! they have no backward pass and silently drop gradients), [`Grad::Yes`] uses our fused kernels
//! that do have one (`ops.rs`), and a matrix product that computes only the input gradient. The text tower uses the second when a pseudo word needs its gradient.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use super::config::{Activation, TowerConfig};
use super::weights::Weights;
use crate::Result;

/// Whether the forward pass must be differentiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grad {
    No,
    Yes,
}

/// y = x Wᵀ + b over the last dimension, computed as one 2-D matrix product over all leading
/// dimensions (candle_nn::Linear broadcasts the weight into a batch of small products instead,
/// which is several times slower for short text sequences).
pub struct Linear {
    weight_t: Tensor, // [input, output], contiguous
    bias: Option<Tensor>,
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
        Ok((x.matmul(w, (1, m, n, k), x_layout, w_layout)?, Shape::from((m, n))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_y.matmul(&self.weight_t.t()?)?))
    }
}

impl Linear {
    /// # Shapes
    /// x: [..., input] -> [..., output]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let input = *dims.last().expect("linear input has at least one dimension");
        let rows = x.elem_count() / input;
        let x2 = x.contiguous()?.reshape((rows, input))?;
        let y = if x2.track_op() && x2.device().is_cpu() {
            x2.apply_op1(FrozenMatmul { weight_t: self.weight_t.clone() })?
        } else {
            x2.matmul(&self.weight_t)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims.to_vec();
        *out.last_mut().unwrap() = self.weight_t.dim(1)?;
        Ok(y.reshape(out)?)
    }

    /// One layer computing several layers' outputs side by side (their weights concatenated along
    /// the output dimension); all or none must have a bias.
    fn concat_outputs(parts: &[Linear]) -> Result<Linear> {
        let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight_t).collect();
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|l| l.bias.as_ref()).collect();
        if biases.is_none() && parts.iter().any(|l| l.bias.is_some()) {
            return Err(crate::Error::Invalid("cannot concatenate layers with and without bias".into()));
        }
        Ok(Linear {
            weight_t: Tensor::cat(&weights, 1)?.contiguous()?,
            bias: biases.map(|b| Tensor::cat(&b, 0)).transpose()?,
        })
    }
}

pub fn linear(w: &Weights, prefix: &str, input: usize, output: usize, bias: bool) -> Result<Linear> {
    let weight = w.get(&format!("{prefix}.weight"), &[output, input])?;
    let bias = if bias { Some(w.get(&format!("{prefix}.bias"), &[output])?) } else { None };
    Ok(Linear { weight_t: weight.t()?.contiguous()?, bias })
}

/// x · sigmoid(1.702 x) in one pass over the data (inference only: no backward).
struct QuickGeluOp;

impl CustomOp1 for QuickGeluOp {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("quick-gelu: only f32 is supported on the fast path")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("quick-gelu: input must be contiguous")
        };
        let mut out = data[start..end].to_vec();
        out.par_chunks_mut(4096).for_each(|c| {
            for v in c {
                *v /= 1.0 + (-1.702 * *v).exp();
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

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

    /// # Shapes
    /// x: [..., size] -> [..., size]
    pub fn forward(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        Ok(match grad {
            // The fused kernel needs contiguous input.
            Grad::No => candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)?,
            Grad::Yes => super::ops::layer_norm(x, &self.weight, &self.bias, self.eps)?,
        })
    }
}

pub fn activate(x: &Tensor, act: Activation, grad: Grad) -> Result<Tensor> {
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
        let [q, k, v] = ["q_proj", "k_proj", "v_proj"].map(|p| linear(w, &format!("{prefix}.{p}"), h, h, true));
        let qkv = Linear::concat_outputs(&[q?, k?, v?])?;
        Ok(Attention {
            qkv,
            out: linear(w, &format!("{prefix}.out_proj"), h, h, true)?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    /// # Shapes
    /// x: [batch, seq, hidden]; mask: [seq, seq] additive (0 or -inf) -> [batch, seq, hidden]
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, grad: Grad) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let (n, d) = (self.heads, self.head_dim);
        // [b, s, 3h] -> [3, b * heads, s, head_dim] in one copy
        let qkv = self.qkv.forward(x)?.reshape((b, s, 3, n, d))?.permute((2, 0, 3, 1, 4))?.contiguous()?;
        let qkv = qkv.reshape((3, b * n, s, d))?;
        let q = (qkv.get(0)? * (d as f64).powf(-0.5))?;
        let (k, v) = (qkv.get(1)?, qkv.get(2)?);
        let mut scores = q.matmul(&k.t()?)?; // [b*heads, s, s]
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = match grad {
            Grad::No => candle_nn::ops::softmax_last_dim(&scores)?,
            Grad::Yes => super::ops::softmax_last_dim(&scores)?,
        };
        let ctx = probs.matmul(&v)?; // [b*heads, s, head_dim]
        let ctx = ctx.reshape((b, n, s, d))?.transpose(1, 2)?.reshape((b, s, h))?;
        self.out.forward(&ctx)
    }
}

struct EncoderLayer {
    attn: Attention,
    ln1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ln2: LayerNorm,
    act: Activation,
}

impl EncoderLayer {
    fn load(w: &Weights, prefix: &str, cfg: &TowerConfig) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        Ok(EncoderLayer {
            attn: Attention::load(w, &format!("{prefix}.self_attn"), cfg)?,
            ln1: LayerNorm::load(w, &format!("{prefix}.layer_norm1"), h, eps)?,
            fc1: linear(w, &format!("{prefix}.mlp.fc1"), h, i, true)?,
            fc2: linear(w, &format!("{prefix}.mlp.fc2"), i, h, true)?,
            ln2: LayerNorm::load(w, &format!("{prefix}.layer_norm2"), h, eps)?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, grad: Grad) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x, grad)?, mask, grad)?)?;
        let y = self.fc2.forward(&activate(&self.fc1.forward(&self.ln2.forward(&x, grad)?)?, self.act, grad)?)?;
        Ok((x + y)?)
    }
}

/// A pre-LayerNorm transformer encoder (`{prefix}.layers.{i}`).
pub struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub fn load(w: &Weights, prefix: &str, cfg: &TowerConfig) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::load(w, &format!("{prefix}.layers.{i}"), cfg))
            .collect::<Result<_>>()?;
        Ok(Encoder { layers })
    }

    /// # Shapes
    /// x: [batch, seq, hidden]; mask: [seq, seq] -> [batch, seq, hidden]
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, grad: Grad) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, mask, grad)?;
        }
        Ok(x)
    }
}
