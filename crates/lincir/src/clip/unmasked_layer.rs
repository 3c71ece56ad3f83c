//! One encoder layer of the vision tower over a batch of unmasked sequences, on plain f32 slices:
//! the CPU's image path (inference only: the vision tower is never differentiated).
//!
//! Composed of candle's ops, a layer copied q, k and v into a per-head layout, scaled q in a
//! pass of its own, copied the scores for the softmax and the context back from the per-head
//! layout, and ran each attention product through the `gemm` crate's AVX2 kernel (a third of
//! the CPU's FMA rate on CPUs with full-width AVX-512). Here a layer is one node of candle's
//! graph: each (image, head) reads its q, k and v rows where the qkv product wrote them, its two
//! products run through the packed-panel micro-kernels (`panel.rs`, the widest this CPU has), and
//! the context lands in its columns of the output directly.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use super::causal_layer::{activate_in_place, add_in_place, LayerWeights, ROWS_PER_TASK};
use super::ops::contiguous_f32;
use super::panel::{self, OutPtr, Packed};

/// Which rows a layer outputs: all of them, or each sequence's first (the last layer: the vision
/// tower pools the class token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outputs {
    All,
    First,
}

/// Per-thread memory of the attention products, kept across the (image, head) pairs a thread
/// takes.
#[derive(Default)]
struct Scratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    scores: Vec<f32>,
}

/// Unmasked attention of each sequence's output rows over all its rows.
///
/// # Shapes
/// qkv: [batch * seq, 3 * hidden] with q already scaled -> ctx: [batch * outputs, hidden]
fn attention(qkv: &[f32], batch: usize, seq: usize, hidden: usize, heads: usize, outputs: Outputs) -> candle_core::Result<Vec<f32>> {
    let d = hidden / heads;
    let width = 3 * hidden;
    let queries = if outputs == Outputs::All { seq } else { 1 };
    let mut ctx = vec![0f32; batch * queries * hidden];
    let isa = panel::isa();
    let failed = std::sync::atomic::AtomicBool::new(false);
    // One task per (image, head); its context block is `queries` rows of `d` columns, `hidden`
    // apart, in its image's rows of ctx.
    let out = OutPtr(ctx.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each_init(Scratch::default, |scratch, task| {
        let (image, head) = (task / heads, task % heads);
        let rows = &qkv[image * seq * width..][..seq * width];
        let (q, k, v) = (&rows[head * d..], &rows[hidden + head * d..], &rows[2 * hidden + head * d..]);
        // SAFETY: task (image, head) alone writes rows image * queries.. of ctx, at columns
        // head * d..head * d + d, which lie inside ctx; ctx outlives the loop.
        let ctx = unsafe { out.get().add(image * queries * hidden + head * d) };
        if unsafe { head_attention(isa, q, k, v, width, seq, queries, d, scratch, ctx, hidden) }.is_none() {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    if failed.into_inner() {
        candle_core::bail!("unmasked-layer: the attention product's micro-kernel is not available on this CPU");
    }
    Ok(ctx)
}

/// One head of one sequence: `softmax(q · kᵀ) · v` for its first `queries` rows, the q, k and v
/// rows `ld` apart, into `ctx` (rows `ldc` apart).
///
/// # Safety
/// `ctx` points at `queries` rows of `d` writable floats, `ldc` apart, that no other thread
/// reads or writes meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn head_attention(isa: panel::Isa, q: &[f32], k: &[f32], v: &[f32], ld: usize, seq: usize, queries: usize, d: usize, scratch: &mut Scratch, ctx: *mut f32, ldc: usize) -> Option<()> {
    let keys = Packed::from_transposed_rows(std::mem::take(&mut scratch.keys), k, ld, d, seq)?;
    scratch.scores.resize(queries * seq, 0.0);
    panel::matmul_rows_serial(isa, q, ld, queries, &keys, &mut scratch.scores, seq)?;
    scratch.keys = keys.into_buffer();
    super::fastmath::softmax_rows_in_place(&mut scratch.scores, seq);
    let values = Packed::from_rows(std::mem::take(&mut scratch.values), v, ld, seq, d)?;
    panel::matmul_rows_serial_into(isa, &scratch.scores, seq, queries, &values, ctx, ldc)?;
    scratch.values = values.into_buffer();
    Some(())
}

/// # Shapes
/// x: [batch * seq, hidden] -> [batch * seq, hidden], or [batch, hidden] for `Outputs::First`
fn forward(w: &LayerWeights, x: &[f32], batch: usize, seq: usize, outputs: Outputs) -> candle_core::Result<Vec<f32>> {
    let h = w.hidden();
    let mut qkv = w.qkv.forward_rows(&w.ln1.forward(x), batch * seq)?;
    // As transformers scales q: the Python float head_dim ** -0.5, rounded to f32.
    let scale = ((h / w.heads) as f64).powf(-0.5) as f32;
    qkv.par_chunks_mut(3 * h * ROWS_PER_TASK).for_each(|rows| rows.chunks_exact_mut(3 * h).for_each(|r| r[..h].iter_mut().for_each(|v| *v *= scale)));
    let ctx = attention(&qkv, batch, seq, h, w.heads, outputs)?;
    drop(qkv);
    let o = ctx.len() / h;
    let mut x1 = w.out.forward_rows(&ctx, o)?;
    match outputs {
        Outputs::All => add_in_place(&mut x1, x, h),
        Outputs::First => x1.par_chunks_mut(h).enumerate().for_each(|(image, row)| row.iter_mut().zip(&x[image * seq * h..][..h]).for_each(|(y, x)| *y += x)),
    }
    let mut u = w.fc1.forward_rows(&w.ln2.forward(&x1), o)?;
    activate_in_place(w.act, &mut u);
    let mut y = w.fc2.forward_rows(&u, o)?;
    add_in_place(&mut y, &x1, h);
    Ok(y)
}

/// One vision layer as one node of candle's graph (CPU, f32 activations; f32 or bf16 weights).
pub(super) struct UnmaskedLayerOp {
    pub weights: Arc<LayerWeights>,
    pub batch: usize,
    pub seq: usize,
    pub outputs: Outputs,
}

impl CustomOp1 for UnmaskedLayerOp {
    fn name(&self) -> &'static str {
        "unmasked-layer"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let h = self.weights.hidden();
        if l.dims() != [self.batch, self.seq, h] {
            candle_core::bail!("unmasked-layer: input {:?} is not [{}, {}, {h}]", l.dims(), self.batch, self.seq);
        }
        let y = forward(&self.weights, x, self.batch, self.seq, self.outputs)?;
        let shape = match self.outputs {
            Outputs::All => Shape::from((self.batch, self.seq, h)),
            Outputs::First => Shape::from((self.batch, h)),
        };
        Ok((CpuStorage::F32(y), shape))
    }
}
