//! The transformer blocks shared by both CLIP towers, with Hugging Face weight names.
//!
//! Two execution paths: [`Grad::No`] uses candle's fused layer-norm and softmax kernels (fast, but
//! they have no backward pass and silently drop gradients), [`Grad::Yes`] uses unfused ops whose
//! backward exists. The text tower uses the second when a pseudo word needs its gradient.

use candle_core::{Module, Tensor, D};
use candle_nn::Linear;

use super::config::{Activation, TowerConfig};
use super::weights::Weights;
use crate::Result;

/// Whether the forward pass must be differentiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grad {
    No,
    Yes,
}

pub fn linear(w: &Weights, prefix: &str, input: usize, output: usize, bias: bool) -> Result<Linear> {
    let weight = w.get(&format!("{prefix}.weight"), &[output, input])?;
    let bias = if bias { Some(w.get(&format!("{prefix}.bias"), &[output])?) } else { None };
    Ok(Linear::new(weight, bias))
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
            Grad::Yes => candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps as f32)?,
        })
    }
}

pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::GeluTanh => x.gelu()?,
    })
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(w: &Weights, prefix: &str, cfg: &TowerConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Attention {
            q: linear(w, &format!("{prefix}.q_proj"), h, h, true)?,
            k: linear(w, &format!("{prefix}.k_proj"), h, h, true)?,
            v: linear(w, &format!("{prefix}.v_proj"), h, h, true)?,
            out: linear(w, &format!("{prefix}.out_proj"), h, h, true)?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    /// # Shapes
    /// x: [batch, seq, hidden]; mask: [seq, seq] additive (0 or -inf) -> [batch, seq, hidden]
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, grad: Grad) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            // [b, s, h] -> [b * heads, s, head_dim]
            Ok(t.reshape((b, s, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()?.reshape((
                b * self.heads,
                s,
                self.head_dim,
            ))?)
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = split((self.q.forward(x)? * scale)?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let mut scores = q.matmul(&k.t()?)?; // [b*heads, s, s]
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = match grad {
            Grad::No => candle_nn::ops::softmax_last_dim(&scores)?,
            Grad::Yes => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let ctx = probs.matmul(&v)?; // [b*heads, s, head_dim]
        let ctx = ctx.reshape((b, self.heads, s, self.head_dim))?.transpose(1, 2)?.reshape((b, s, h))?;
        Ok(self.out.forward(&ctx)?)
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
        let y = self.fc2.forward(&activate(&self.fc1.forward(&self.ln2.forward(&x, grad)?)?, self.act)?)?;
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
