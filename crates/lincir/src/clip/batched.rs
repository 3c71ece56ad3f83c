//! Attention's batched products on the CPU (inference): one single-threaded product per
//! (sequence, head), the batch spread over the threads.
//!
//! candle multiplies the batch one item after the other and splits each item's product across
//! the threads; attention's items are small (257 x 64 by 64 x 257 for a ViT-L/14 image), so
//! most of that time went to splitting and joining (`lincir bench matmul` has both figures).
//! The training path keeps candle's product, whose backward pass it needs. The CPU's fused
//! vision layers (`unmasked_layer.rs`) multiply per head through the packed-panel kernels
//! instead; this product serves the graph of ops (a loaded BLAS, `LINCIR_FUSED_LAYERS=0`).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::Result;

struct BatchedMatmul;

/// Whether every element a strided `[batch, rows, cols]` view reaches lies inside `len`.
fn inside(l: &Layout, len: usize) -> bool {
    let (dims, stride) = (l.dims(), l.stride());
    let last = dims.iter().zip(stride).map(|(d, s)| d.saturating_sub(1) * s).sum::<usize>();
    dims.contains(&0) || l.start_offset() + last < len
}

impl CustomOp2 for BatchedMatmul {
    fn name(&self) -> &'static str {
        "batched-matmul"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(a), CpuStorage::F32(b)) = (a, b) else { candle_core::bail!("batched-matmul: only f32 is supported") };
        let (batch, m, k) = al.shape().dims3()?;
        let (batch_b, k_b, n) = bl.shape().dims3()?;
        if batch != batch_b || k != k_b {
            candle_core::bail!("batched-matmul: shapes {:?} and {:?} do not multiply", al.dims(), bl.dims());
        }
        if !inside(al, a.len()) || !inside(bl, b.len()) {
            candle_core::bail!("batched-matmul: a layout reaches past its storage");
        }
        let (sa, sb) = (al.stride(), bl.stride());
        let mut out = vec![0f32; batch * m * n];
        if m * n > 0 {
            out.par_chunks_mut(m * n).enumerate().for_each(|(i, dst)| {
                // SAFETY: `inside` checked that item i's rows and columns lie in a and b; dst is
                // the item's own m x n block.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        dst.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr().add(al.start_offset() + i * sa[0]),
                        sa[2] as isize,
                        sa[1] as isize,
                        b.as_ptr().add(bl.start_offset() + i * sb[0]),
                        sb[2] as isize,
                        sb[1] as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, m, n))))
    }
}

/// `a · b` for `a: [batch, m, k]`, `b: [batch, k, n]` (any strides); on the CPU in f32 without
/// gradients, one product per item in parallel; otherwise candle's matmul.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cpu_f32 = a.device().is_cpu() && a.dtype() == DType::F32 && b.dtype() == DType::F32;
    if cpu_f32 && a.rank() == 3 && b.rank() == 3 && !a.track_op() && !b.track_op() {
        return Ok(a.apply_op2_no_bwd(b, &BatchedMatmul)?);
    }
    Ok(a.matmul(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_on_contiguous_and_transposed_operands() {
        let a = Tensor::randn(0f32, 1f32, (6, 17, 8), &Device::Cpu).unwrap();
        let k = Tensor::randn(0f32, 1f32, (6, 17, 8), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f32, 1f32, (6, 17, 5), &Device::Cpu).unwrap();
        let kt = k.t().unwrap(); // a strided view, as attention uses it
        for (x, y) in [(&a, &kt), (&a.matmul(&kt).unwrap(), &v)] {
            let want = x.matmul(y).unwrap();
            let got = matmul(x, y).unwrap();
            let diff = (want - got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{diff}");
        }
        let narrow = a.narrow(1, 3, 5).unwrap(); // an offset view
        let want = narrow.matmul(&kt.narrow(2, 0, 9).unwrap()).unwrap();
        let got = matmul(&narrow, &kt.narrow(2, 0, 9).unwrap()).unwrap();
        assert!((want - got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-4);
    }
}
