//! The text encoder's differentiable pass with a hand-written backward, through candle's ops on
//! any device: the GPU's training path (the CPU's is the fused layer op of `causal_layer.rs`).
//!
//! Under candle's autograd, each of the fifty-odd nodes of a layer's graph (views, copies, the
//! composed layer norms and softmaxes) costs in the backward pass a zero-filled gradient and an
//! addition into it besides its own gradient, two more kernels per node on a GPU, and keeps its
//! output alive until then. Here the forward pass builds no graph and keeps only what the
//! backward reads (per layer: its input, q, k and v in the per-head layout, the attention
//! probabilities, the residual after attention, fc1's output); the backward writes each gradient
//! once, through the frozen weights' transposes (the weights get none). The encoder is one node
//! of candle's graph, so phi's graph, which ends at the encoder's input, is differentiated by
//! candle as before.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use super::super::batched;
use super::super::ops::{self, Act};
use super::{EncoderLayer, Grad, Packing};
use crate::Result;

/// Whether every layer has a hand-written backward (its activation has a derivative kernel).
pub(super) fn applies(layers: &[EncoderLayer]) -> bool {
    layers.iter().all(|l| Act::of(l.act).is_some())
}

/// What a layer's backward pass reads.
struct Tape {
    /// The layer's input, [tokens, hidden] (layer norm 1's input).
    x: Tensor,
    /// q (scaled), k and v, [batch * heads, longest, head_dim]; the last layer's q is
    /// [batch * heads, 1, head_dim], each sequence's last token only.
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// The attention probabilities, [batch * heads, queries, longest].
    probs: Tensor,
    /// The residual after attention (layer norm 2's input): [tokens, hidden], or [batch, hidden]
    /// in the last layer.
    x1: Tensor,
    /// fc1's output before the activation.
    u: Tensor,
}

/// The encoder over packed sequences, each sequence's last token out: `x` [tokens, hidden] ->
/// [batch, hidden], differentiable with respect to `x`.
pub(super) fn forward_packed_last(layers: &Arc<[EncoderLayer]>, x: &Tensor, p: &Packing) -> Result<Tensor> {
    let mut h = x.detach();
    let mut tapes = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let (y, tape) = if i + 1 == layers.len() { layer.forward_last_taped(&h, p)? } else { layer.forward_taped(&h, p)? };
        tapes.push(tape);
        h = y;
    }
    // The node hands over a copy of `output`'s storage as its own: contiguous from the start,
    // the storage's first values are the output's, in order.
    let output = if h.is_contiguous() && h.layout().start_offset() == 0 { h } else { h.affine(1.0, 0.0)? };
    let op = TapedEncoder { layers: layers.clone(), packing: p.clone(), output, tapes: Mutex::new(Some(tapes)) };
    Ok(x.apply_op1(op)?)
}

/// The encoder as one node of candle's graph: its output was computed before the node was made
/// (the forward pass above); the node hands it over and differentiates it.
struct TapedEncoder {
    layers: Arc<[EncoderLayer]>,
    packing: Packing,
    /// The encoder's output, contiguous from the start of its storage.
    output: Tensor,
    /// Taken by the backward pass (which frees each layer's as it goes).
    tapes: Mutex<Option<Vec<Tape>>>,
}

impl CustomOp1 for TapedEncoder {
    fn name(&self) -> &'static str {
        "taped-text-encoder"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.output.storage_and_layout();
        let Storage::Cpu(s) = &*storage else { candle_core::bail!("taped-text-encoder: the output is not on the CPU") };
        Ok((s.try_clone(layout)?, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (storage, layout) = self.output.storage_and_layout();
        let Storage::Cuda(s) = &*storage else { candle_core::bail!("taped-text-encoder: the output is not on the GPU") };
        Ok((s.try_clone(layout)?, layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let tapes = self.tapes.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut tapes) = tapes else { candle_core::bail!("taped-text-encoder: differentiated twice") };
        let mut g = grad.clone();
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let tape = tapes.pop().expect("one tape per layer");
            let back = if i + 1 == n { layer.backward_last_taped(tape, &g, &self.packing) } else { layer.backward_taped(tape, &g, &self.packing) };
            g = back.map_err(|e| candle_core::Error::Msg(format!("taped-text-encoder: {e}")))?;
        }
        Ok(Some(g))
    }
}

impl EncoderLayer {
    fn act(&self) -> Result<Act> {
        Act::of(self.act).ok_or_else(|| crate::Error::Invalid(format!("no hand-written backward for {:?}", self.act)))
    }

    /// The gradient at x1 of [`Self::feed_forward_keeping`], `dy` being its output's.
    fn feed_forward_backward(&self, x1: &Tensor, u: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let du = ops::activation_backward(self.act()?, u, &self.fc2.input_grad(dy)?)?;
        let dh2 = self.fc1.input_grad(&du)?;
        Ok((dy + ops::layer_norm_backward(x1, &dh2, &self.ln2.weight, self.ln2.eps)?)?)
    }

    /// # Shapes
    /// x: [tokens, hidden] -> [tokens, hidden]
    fn forward_taped(&self, x: &Tensor, p: &Packing) -> Result<(Tensor, Tape)> {
        let at = self.attn.attend_packed(&self.ln1.forward(x, Grad::No)?, p, Grad::No)?;
        let x1 = (x + self.attn.out.forward(&at.ctx)?)?;
        let (y, u) = self.feed_forward_keeping(&x1, Grad::No)?;
        Ok((y, Tape { x: x.clone(), q: at.q, k: at.k, v: at.v, probs: at.probs, x1, u }))
    }

    /// The layer's output at each sequence's last token only.
    ///
    /// # Shapes
    /// x: [tokens, hidden] -> [batch, hidden]
    fn forward_last_taped(&self, x: &Tensor, p: &Packing) -> Result<(Tensor, Tape)> {
        let at = self.attn.attend_last(&self.ln1.forward(x, Grad::No)?, p, Grad::No)?;
        let x1 = (p.last(x)? + self.attn.out.forward(&at.ctx)?)?;
        let (y, u) = self.feed_forward_keeping(&x1, Grad::No)?;
        Ok((y, Tape { x: x.clone(), q: at.q, k: at.k, v: at.v, probs: at.probs, x1, u }))
    }

    /// The input gradient of [`Self::forward_taped`], `dy` being its output's.
    ///
    /// # Shapes
    /// dy: [tokens, hidden] -> [tokens, hidden]
    fn backward_taped(&self, t: Tape, dy: &Tensor, p: &Packing) -> Result<Tensor> {
        let a = &self.attn;
        let (b, s, n, d) = (p.batch, p.longest, a.heads, a.head_dim);
        let dx1 = self.feed_forward_backward(&t.x1, &t.u, dy)?;
        // The context's gradient in the per-head layout, zero at the padding (whose queries,
        // unmasked there, must not reach the keys' and values' gradients).
        let dctx = a.out.input_grad(&dx1)?.index_select(&p.to_padded, 0)?.broadcast_mul(&p.real)?;
        let dctx = dctx.reshape((b, s, n, d))?.transpose(1, 2)?.contiguous()?.reshape((b * n, s, d))?;
        let dv = batched::matmul(&t.probs.t()?, &dctx)?;
        let dscores = ops::softmax_backward(&t.probs, &batched::matmul(&dctx, &t.v.t()?)?)?;
        // scores = q kᵀ with q already scaled: q's own gradient carries the scale.
        let dq = (batched::matmul(&dscores, &t.k)? * (d as f64).powf(-0.5))?;
        let dk = batched::matmul(&dscores.t()?, &t.q)?;
        // [3, b, n, s, d] -> [b, s, 3, n, d]: padded_heads' layout, undone.
        let dqkv = Tensor::stack(&[dq, dk, dv], 0)?.reshape((3, b, n, s, d))?.permute((1, 3, 0, 2, 4))?.contiguous()?;
        let dqkv = dqkv.reshape((b * s, 3 * n * d))?.index_select(&p.to_packed, 0)?;
        let dh1 = a.qkv.input_grad(&dqkv)?;
        Ok((dx1 + ops::layer_norm_backward(&t.x, &dh1, &self.ln1.weight, self.ln1.eps)?)?)
    }

    /// The input gradient of [`Self::forward_last_taped`], `dy` being its output's.
    ///
    /// # Shapes
    /// dy: [batch, hidden] -> [tokens, hidden]
    fn backward_last_taped(&self, t: Tape, dy: &Tensor, p: &Packing) -> Result<Tensor> {
        let a = &self.attn;
        let (b, s, n, d) = (p.batch, p.longest, a.heads, a.head_dim);
        let rows = t.x.dim(0)?;
        let dx1 = self.feed_forward_backward(&t.x1, &t.u, dy)?; // [b, h]
        let dctx = a.out.input_grad(&dx1)?.reshape((b * n, 1, d))?;
        // (The [b*n, s, 1] transposes are copied: tiny, and the plainest layout for cuBLAS.)
        let dv = batched::matmul(&t.probs.t()?.contiguous()?, &dctx)?; // [b*n, s, d]
        let dscores = ops::softmax_backward(&t.probs, &batched::matmul(&dctx, &t.v.t()?)?)?; // [b*n, 1, s]
        let dq = (batched::matmul(&dscores, &t.k)? * (d as f64).powf(-0.5))?.reshape((b, n * d))?;
        let dk = batched::matmul(&dscores.t()?.contiguous()?, &t.q)?; // [b*n, s, d]
        let dkv = Tensor::stack(&[dk, dv], 0)?.reshape((2, b, n, s, d))?.permute((1, 3, 0, 2, 4))?.contiguous()?;
        let dkv = dkv.reshape((b * s, 2 * n * d))?.index_select(&p.to_packed, 0)?; // [tokens, 2h]
        // q was read at each sequence's last row only; so was the residual.
        let at_last_rows = |g: &Tensor| -> Result<Tensor> {
            Ok(Tensor::zeros((rows, g.dim(1)?), g.dtype(), g.device())?.index_add(&p.last_rows, g, 0)?)
        };
        let dqkv = Tensor::cat(&[&at_last_rows(&dq)?, &dkv], 1)?;
        let dh1 = a.qkv.input_grad(&dqkv)?;
        Ok((at_last_rows(&dx1)? + ops::layer_norm_backward(&t.x, &dh1, &self.ln1.weight, self.ln1.eps)?)?)
    }
}
