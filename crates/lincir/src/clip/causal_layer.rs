//! One encoder layer of the text tower over packed causal sequences, forward and input-gradient
//! backward on plain f32 slices: the CPU's text path, in training and in inference.
//!
//! Composed of candle's ops, a layer's backward pass allocated a zero gradient and added into it
//! for every node of the graph, copied q, k and v to a padded per-head layout and back, and ran
//! about twenty elementwise passes. Here a layer is one node of candle's graph: the forward pass
//! keeps what the backward needs (q, k and v, the attention probabilities, the residual after
//! attention, fc1's output), and the backward writes each gradient once. Attention runs directly
//! on the packed rows, each token over its own sequence's tokens up to itself: no padding, no
//! mask. The weights are frozen: only the input gradient is computed, through Wᵀ's packed panels.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fastmath::dot;
use super::ops::{contiguous_f32, layer_norm_backward_row, layer_norm_row, Act};
use super::nn::PackedMatmul;

/// Rows of a [rows, width] matrix handed to one thread at a time in the elementwise passes.
pub(super) const ROWS_PER_TASK: usize = 8;

/// A layer norm's frozen parameters.
#[derive(Clone)]
pub(super) struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    pub(super) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let w = self.weight.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(w * ROWS_PER_TASK).zip(x.par_chunks(w * ROWS_PER_TASK)).for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
                layer_norm_row(x, &self.weight, &self.bias, self.eps, o);
            }
        });
        out
    }

    /// The input gradient, `x` being the norm's input and `g` its output's gradient.
    fn backward(&self, x: &[f32], g: &[f32]) -> Vec<f32> {
        let w = self.weight.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(w * ROWS_PER_TASK).zip(x.par_chunks(w * ROWS_PER_TASK)).zip(g.par_chunks(w * ROWS_PER_TASK)).for_each(|((o, x), g)| {
            for ((o, x), g) in o.chunks_exact_mut(w).zip(x.chunks_exact(w)).zip(g.chunks_exact(w)) {
                layer_norm_backward_row(x, g, &self.weight, self.eps, o);
            }
        });
        out
    }
}

/// Everything one layer computes with.
pub(super) struct LayerWeights {
    pub ln1: Norm,
    /// q, k and v side by side: [hidden] -> [3 * hidden].
    pub qkv: PackedMatmul,
    pub out: PackedMatmul,
    pub ln2: Norm,
    pub fc1: PackedMatmul,
    pub fc2: PackedMatmul,
    pub act: Act,
    pub heads: usize,
}

impl LayerWeights {
    pub(super) fn hidden(&self) -> usize {
        self.ln1.weight.len()
    }
}

/// Where the sequences lie among the packed rows, and which of their rows a layer outputs: every
/// row, or each sequence's last one only (the last layer: only that row is pooled).
struct Geometry {
    /// Per sequence: its first packed row, its length, its first output row, its output count.
    seqs: Vec<Seq>,
    rows: usize,
    outputs: usize,
    /// Where each sequence's attention probabilities start (heads x keys per output row), and
    /// their total at the end.
    prob_offsets: Vec<usize>,
}

#[derive(Clone, Copy)]
struct Seq {
    start: usize,
    len: usize,
    out_start: usize,
    outputs: usize,
}

impl Seq {
    /// The packed row queried by the sequence's j-th output: its last `outputs` rows, in order.
    fn query(&self, j: usize) -> usize {
        self.start + self.len - self.outputs + j
    }
    /// How many keys the j-th output attends to (its own row and the rows before it).
    fn keys(&self, j: usize) -> usize {
        self.len - self.outputs + j + 1
    }
}

impl Geometry {
    fn new(lengths: &[usize], last_only: bool, heads: usize) -> Self {
        let (mut seqs, mut prob_offsets) = (Vec::with_capacity(lengths.len()), vec![0]);
        let (mut rows, mut outputs, mut probs) = (0, 0, 0);
        for &len in lengths {
            let seq = Seq { start: rows, len, out_start: outputs, outputs: if last_only { 1 } else { len } };
            probs += heads * (0..seq.outputs).map(|j| seq.keys(j)).sum::<usize>();
            prob_offsets.push(probs);
            rows += len;
            outputs += seq.outputs;
            seqs.push(seq);
        }
        Geometry { seqs, rows, outputs, prob_offsets }
    }

    /// The packed row each output row reads its residual from.
    fn query_rows(&self) -> impl Iterator<Item = usize> + '_ {
        self.seqs.iter().flat_map(|s| (0..s.outputs).map(move |j| s.query(j)))
    }
}

/// `data` cut into consecutive parts of the given sizes.
fn split(mut data: &mut [f32], sizes: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    sizes
        .map(|n| {
            let (part, rest) = std::mem::take(&mut data).split_at_mut(n);
            data = rest;
            part
        })
        .collect()
}

/// What the backward pass reads, kept by the forward pass (besides the layer's input, which
/// candle hands back to the backward pass).
struct Saved {
    qkv: Vec<f32>,
    probs: Vec<f32>,
    /// The residual stream after attention (layer norm 2's input).
    x1: Vec<f32>,
    /// fc1's output, before the activation.
    u: Vec<f32>,
}

/// y += a x
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// `y += x` over rows of `width`, in parallel (residual connections).
pub(super) fn add_in_place(y: &mut [f32], x: &[f32], width: usize) {
    y.par_chunks_mut(width * ROWS_PER_TASK).zip(x.par_chunks(width * ROWS_PER_TASK)).for_each(|(y, x)| axpy(y, 1.0, x));
}

fn activate(act: Act, u: &[f32]) -> Vec<f32> {
    let mut g = u.to_vec();
    activate_in_place(act, &mut g);
    g
}

pub(super) fn activate_in_place(act: Act, values: &mut [f32]) {
    values.par_chunks_mut(16 * 1024).for_each(|c| match act {
        Act::QuickGelu => super::fastmath::quick_gelu_in_place(c),
        _ => c.iter_mut().for_each(|v| *v = act.value(*v)),
    });
}

fn activation_backward(act: Act, u: &[f32], g: &mut [f32]) {
    g.par_chunks_mut(16 * 1024).zip(u.par_chunks(16 * 1024)).for_each(|(g, u)| match act {
        Act::QuickGelu => super::fastmath::quick_gelu_backward_in_place(g, u),
        _ => g.iter_mut().zip(u).for_each(|(g, u)| *g *= act.derivative(*u)),
    });
}

/// Causal attention of each output row over its sequence.
///
/// # Shapes
/// qkv: [rows, 3 * hidden] -> ctx: [outputs, hidden], probabilities (as `prob_offsets` lays
/// them out)
fn attention(qkv: &[f32], geo: &Geometry, hidden: usize, heads: usize) -> (Vec<f32>, Vec<f32>) {
    let d = hidden / heads;
    let scale = (d as f32).powf(-0.5);
    let mut ctx = vec![0f32; geo.outputs * hidden];
    let mut probs = vec![0f32; *geo.prob_offsets.last().unwrap_or(&0)];
    let ctx_parts = split(&mut ctx, geo.seqs.iter().map(|s| s.outputs * hidden));
    let prob_parts = split(&mut probs, geo.prob_offsets.windows(2).map(|w| w[1] - w[0]));
    geo.seqs.par_iter().zip(ctx_parts).zip(prob_parts).for_each(|((s, ctx), probs)| {
        let row = |r: usize, part: usize, head: usize| &qkv[r * 3 * hidden + part * hidden + head * d..][..d];
        let mut at = 0;
        for j in 0..s.outputs {
            let (q_row, keys) = (s.query(j), s.keys(j));
            for head in 0..heads {
                let p = &mut probs[at..at + keys];
                at += keys;
                let q = row(q_row, 0, head);
                for (key, p) in p.iter_mut().enumerate() {
                    *p = dot(q, row(s.start + key, 1, head)) * scale;
                }
                super::fastmath::softmax_rows_in_place(p, keys);
                let c = &mut ctx[j * hidden + head * d..][..d];
                for (key, &p) in p.iter().enumerate() {
                    axpy(c, p, row(s.start + key, 2, head));
                }
            }
        }
    });
    (ctx, probs)
}

/// The gradient of q, k and v from the gradient of the attention output.
///
/// # Shapes
/// qkv: [rows, 3 * hidden]; dctx: [outputs, hidden] -> [rows, 3 * hidden]
fn attention_backward(qkv: &[f32], probs: &[f32], dctx: &[f32], geo: &Geometry, hidden: usize, heads: usize) -> Vec<f32> {
    let d = hidden / heads;
    let scale = (d as f32).powf(-0.5);
    let width = 3 * hidden;
    let mut dqkv = vec![0f32; geo.rows * width];
    let parts = split(&mut dqkv, geo.seqs.iter().map(|s| s.len * width));
    geo.seqs.par_iter().zip(&geo.prob_offsets).zip(parts).for_each(|((s, &prob_at), dseq)| {
        let row = |r: usize, part: usize, head: usize| &qkv[r * width + part * hidden + head * d..][..d];
        let mut dp = vec![0f32; s.len];
        let mut at = prob_at;
        for j in 0..s.outputs {
            let (q_row, keys) = (s.query(j), s.keys(j));
            for head in 0..heads {
                let p = &probs[at..at + keys];
                at += keys;
                let dc = &dctx[(s.out_start + j) * hidden + head * d..][..d];
                for (key, dp) in dp[..keys].iter_mut().enumerate() {
                    *dp = dot(dc, row(s.start + key, 2, head));
                }
                let mean = dot(p, &dp[..keys]);
                let q = row(q_row, 0, head);
                let dq_at = (q_row - s.start) * width + head * d;
                for key in 0..keys {
                    // d score = p (dp - Σ p dp); scores are scale · q·k.
                    let ds = p[key] * (dp[key] - mean) * scale;
                    let k_at = key * width + hidden + head * d;
                    axpy(&mut dseq[dq_at..dq_at + d], ds, row(s.start + key, 1, head));
                    axpy(&mut dseq[k_at..k_at + d], ds, q);
                    axpy(&mut dseq[k_at + hidden..k_at + hidden + d], p[key], dc);
                }
            }
        }
    });
    dqkv
}

/// # Shapes
/// x: [rows, hidden] -> [outputs, hidden]
fn forward(w: &LayerWeights, geo: &Geometry, x: &[f32], keep: bool) -> candle_core::Result<(Vec<f32>, Option<Saved>)> {
    let (h, t, o) = (w.hidden(), geo.rows, geo.outputs);
    let qkv = w.qkv.forward_rows(&w.ln1.forward(x), t)?;
    let (ctx, probs) = attention(&qkv, geo, h, w.heads);
    let mut x1 = w.out.forward_rows(&ctx, o)?;
    for (row, q) in x1.chunks_exact_mut(h).zip(geo.query_rows()) {
        axpy(row, 1.0, &x[q * h..(q + 1) * h]);
    }
    let u = w.fc1.forward_rows(&w.ln2.forward(&x1), o)?;
    let mut y = w.fc2.forward_rows(&activate(w.act, &u), o)?;
    add_in_place(&mut y, &x1, h);
    Ok((y, keep.then_some(Saved { qkv, probs, x1, u })))
}

/// # Shapes
/// x (the layer's input): [rows, hidden]; dy: [outputs, hidden] -> [rows, hidden]
fn backward(w: &LayerWeights, geo: &Geometry, saved: &Saved, x: &[f32], dy: &[f32]) -> candle_core::Result<Vec<f32>> {
    let (h, t, o) = (w.hidden(), geo.rows, geo.outputs);
    let mut dg = w.fc2.backward_rows(dy, o)?;
    activation_backward(w.act, &saved.u, &mut dg);
    let mut dx1 = w.ln2.backward(&saved.x1, &w.fc1.backward_rows(&dg, o)?);
    add_in_place(&mut dx1, dy, h);
    let dqkv = attention_backward(&saved.qkv, &saved.probs, &w.out.backward_rows(&dx1, o)?, geo, h, w.heads);
    let mut dx = w.ln1.backward(x, &w.qkv.backward_rows(&dqkv, t)?);
    for (g, q) in dx1.chunks_exact(h).zip(geo.query_rows()) {
        axpy(&mut dx[q * h..(q + 1) * h], 1.0, g);
    }
    Ok(dx)
}

/// One layer as one node of candle's graph (CPU, f32).
pub(super) struct CausalLayerOp {
    weights: Arc<LayerWeights>,
    geo: Geometry,
    /// Whether the forward pass keeps what the backward pass reads.
    keep: bool,
    saved: Mutex<Option<Saved>>,
}

impl CausalLayerOp {
    /// `lengths`: the packed sequences' lengths, in order; `last_only`: output each sequence's
    /// last row only; `keep`: keep what the backward pass reads.
    pub(super) fn new(weights: Arc<LayerWeights>, lengths: &[usize], last_only: bool, keep: bool) -> Self {
        let geo = Geometry::new(lengths, last_only, weights.heads);
        CausalLayerOp { weights, geo, keep, saved: Mutex::new(None) }
    }
}

impl CustomOp1 for CausalLayerOp {
    fn name(&self) -> &'static str {
        "causal-layer"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let h = self.weights.hidden();
        if l.dims() != [self.geo.rows, h] {
            candle_core::bail!("causal-layer: input {:?} is not [{}, {h}]", l.dims(), self.geo.rows);
        }
        let (y, saved) = forward(&self.weights, &self.geo, x, self.keep)?;
        if let Some(saved) = saved {
            *self.saved.lock().map_err(|_| candle_core::Error::Msg("causal-layer: poisoned".into()))? = Some(saved);
        }
        Ok((CpuStorage::F32(y), Shape::from((self.geo.outputs, h))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("causal-layer: poisoned".into()))?;
        let Some(saved) = saved.as_ref() else { candle_core::bail!("causal-layer: no backward pass without kept activations") };
        let dx = with_values(x, |x| with_values(grad, |dy| backward(&self.weights, &self.geo, saved, x, dy)))?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `f` of a CPU f32 tensor's values, read in place.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> candle_core::Result<R>) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(s) = &*storage else { candle_core::bail!("causal-layer: a tensor is not on the CPU") };
    f(contiguous_f32(s, layout, "causal-layer")?)
}
