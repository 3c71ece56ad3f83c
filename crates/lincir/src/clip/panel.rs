//! Products through a frozen f32 weight on CPUs with AVX2, the weight packed once at load.
//!
//! A blocked product in the manner of BLIS/GotoBLAS. The weight `[input, output]` is stored as
//! panels of 16 output columns (each input row's 16 weights contiguous, zero-padded past the last
//! column), so no product packs it again: a query's dozen rows stream it from memory once, in
//! order, and a batch's thousands of rows read each panel from the cache. Each thread owns a band
//! of panels; for each block of 256 input columns it packs a block of input rows into 6-row
//! panels, and an AVX2 micro-kernel keeps a 6 x 16 block of outputs in twelve registers while
//! it walks one input panel against one weight panel (both in L1).
//!
//! The input gradient `g · Wᵀ` (training) reads the same panels transposed: it packs them per
//! product into the layout above, which costs a pass over the weight.
//!
//! The packed form replaces the tensor (memory stays that of the model). Measured with
//! `lincir bench matmul`: docs/PERFORMANCE.md. CPUs without AVX2 keep the tensor and candle's
//! kernel.

use rayon::prelude::*;

/// Rows of the micro-kernel's output block.
const MR: usize = 6;
/// Columns of the micro-kernel's output block (two 8-lane vectors); the width of a panel.
const NR: usize = 16;
/// Depth of one pass: an input panel (6 x 256 floats, 6 KiB) and a weight panel (256 x 16,
/// 16 KiB) stay in a 32 KiB L1 cache together.
const KC: usize = 256;
/// Input rows packed at once (96 x 256 floats, 96 KiB: in L2).
const MC: usize = 96;
const _: () = assert!(MC.is_multiple_of(MR), "input blocks hold whole panels");

/// Whether this CPU has the micro-kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether layers pack their weights for the micro-kernel: on AVX2 CPUs, unless
/// `LINCIR_PACKED_WEIGHTS=0` (a diagnostic: candle's kernel instead, for comparisons).
pub fn enabled() -> bool {
    available() && std::env::var("LINCIR_PACKED_WEIGHTS").map_or(true, |v| v != "0")
}

/// A weight element: f32, or bf16 (the CPU's `--dtype bf16`: half the bytes to stream, widened
/// to f32 in registers, so the arithmetic stays f32).
pub trait Element: Copy + Default + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Two 8-lane f32 vectors from 16 consecutive elements.
    ///
    /// # Safety
    /// `p` points at 16 readable elements; AVX2 is available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> [std::arch::x86_64::__m256; 2];
}

impl Element for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> [std::arch::x86_64::__m256; 2] {
        use std::arch::x86_64::*;
        [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]
    }
}

impl Element for half::bf16 {
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    /// bf16 is the top half of an f32: widen to 32 bits and shift.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const half::bf16) -> [std::arch::x86_64::__m256; 2] {
        use std::arch::x86_64::*;
        let v = _mm256_loadu_si256(p as *const __m256i);
        let lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(v));
        let hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(v));
        [_mm256_castsi256_ps(_mm256_slli_epi32::<16>(lo)), _mm256_castsi256_ps(_mm256_slli_epi32::<16>(hi))]
    }
}

/// A frozen `[k, n]` weight (`y = x · W`) as panels of 16 columns, in blocks of 256 rows: block
/// `b` holds, panel after panel, rows `256b..256b+256` of each panel (each row's 16 weights
/// contiguous, zeros past the last column). A pass over one block reads memory in order, which
/// the hardware prefetchers follow.
pub struct Packed<E = f32> {
    k: usize,
    n: usize,
    panels: Vec<E>,
    /// Wᵀ packed the same way, made on the first input-gradient product (training) and kept:
    /// gathering Wᵀ's panels from W's on every product cost about 5% of a training step. It
    /// doubles the memory of a layer that trains through it, and nothing for inference.
    transposed: std::sync::OnceLock<Box<Packed<E>>>,
}

impl<E: Element> Packed<E> {
    /// Packs a row-major `[k, n]` matrix.
    pub fn new(w: &[E], k: usize, n: usize) -> Option<Self> {
        if k == 0 || n == 0 || w.len() != k * n {
            return None;
        }
        let mut packed = Packed { k, n, panels: vec![E::default(); n.div_ceil(NR) * NR * k], transposed: std::sync::OnceLock::new() };
        for r in 0..k {
            for p in 0..n.div_ceil(NR) {
                let (c0, cols) = (p * NR, NR.min(n - p * NR));
                let at = packed.offset(r, c0);
                packed.panels[at..at + cols].copy_from_slice(&w[r * n + c0..r * n + c0 + cols]);
            }
        }
        Some(packed)
    }

    /// Where `W[r, c]` is.
    fn offset(&self, r: usize, c: usize) -> usize {
        let pc = r / KC * KC;
        let kc = KC.min(self.k - pc);
        pc * self.n.div_ceil(NR) * NR + (c / NR) * kc * NR + (r - pc) * NR + c % NR
    }

    /// Rows (input width) of W.
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns (output width) of W.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// `W[r, c]`.
    fn at(&self, r: usize, c: usize) -> E {
        self.panels[self.offset(r, c)]
    }

    /// Wᵀ (`[n, k]`), packed.
    fn transposed(&self) -> &Packed<E> {
        self.transposed.get_or_init(|| {
            let (k, n) = (self.k, self.n);
            let mut t = vec![E::default(); k * n];
            for r in 0..k {
                for c in 0..n {
                    t[c * k + r] = self.at(r, c);
                }
            }
            Box::new(Packed::new(&t, n, k).expect("a non-empty weight has a non-empty transpose"))
        })
    }

    /// The row-major `[k, n]` matrix back.
    #[cfg(test)]
    fn unpack(&self) -> Vec<E> {
        let mut w = Vec::with_capacity(self.k * self.n);
        for r in 0..self.k {
            w.extend((0..self.n).map(|c| self.at(r, c)));
        }
        w
    }
}

/// A packed weight of either element type.
pub enum Frozen {
    F32(Packed<f32>),
    Bf16(Packed<half::bf16>),
}

impl Frozen {
    pub fn rows(&self) -> usize {
        match self {
            Frozen::F32(w) => w.rows(),
            Frozen::Bf16(w) => w.rows(),
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            Frozen::F32(w) => w.cols(),
            Frozen::Bf16(w) => w.cols(),
        }
    }
    /// [`matmul`].
    pub fn matmul(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        match self {
            Frozen::F32(w) => matmul(x, m, w),
            Frozen::Bf16(w) => matmul(x, m, w),
        }
    }
    /// [`matmul_transposed`].
    pub fn matmul_transposed(&self, g: &[f32], m: usize) -> Option<Vec<f32>> {
        match self {
            Frozen::F32(w) => matmul_transposed(g, m, w),
            Frozen::Bf16(w) => matmul_transposed(g, m, w),
        }
    }
}

/// `y[m, n] = x[m, k] · W`, `x` row-major; None where the micro-kernel is not available or `x`
/// has the wrong size.
pub fn matmul<E: Element>(x: &[f32], m: usize, w: &Packed<E>) -> Option<Vec<f32>> {
    let (k, n) = (w.k, w.n);
    if !available() || m == 0 || x.len() != m * k {
        return None;
    }
    // The input is packed once, by all threads, for all of them (each used to pack all of it).
    let xp = pack_input(x, m, k);
    // Not zeroed first: the first pass over the depth writes every output (`accumulate` false).
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let panels = n.div_ceil(NR);
    let band = panels.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let out = OutPtr(y.as_mut_ptr());
    (0..panels.div_ceil(band)).into_par_iter().for_each(|b| {
        let (p0, p1) = (b * band, ((b + 1) * band).min(panels));
        // SAFETY: bands cover disjoint columns of y's allocation, which outlives the loop.
        unsafe { band_product(&xp, m, w, p0, p1, out) };
    });
    // SAFETY: the bands cover all n columns (k and n are not 0: `Packed::new` refuses that) and
    // the first depth block writes all m rows of each.
    unsafe { y.set_len(m * n) };
    Some(y)
}

/// `y[m, k] = g[m, n] · Wᵀ` (the input gradient of [`matmul`]), `g` row-major; None as for
/// [`matmul`].
pub fn matmul_transposed<E: Element>(g: &[f32], m: usize, w: &Packed<E>) -> Option<Vec<f32>> {
    if !available() || m == 0 || g.len() != m * w.n {
        return None;
    }
    matmul(g, m, w.transposed())
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each thread writes only its own columns.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the Sync wrapper, not the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Panels `p0..p1` (columns `16 p0..16 p1`) of the product into `y`, from the packed input `xp`
/// ([`pack_input`]).
///
/// # Safety
/// `y` points at `m * n` floats; no other thread writes these columns.
unsafe fn band_product<E: Element>(xp: &[f32], m: usize, w: &Packed<E>, p0: usize, p1: usize, y: OutPtr) {
    let (k, n) = (w.k, w.n);
    let m_pad = m.next_multiple_of(MR);
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        let wblock = w.panels[w.offset(pc, p0 * NR)..].as_ptr();
        // Blocks of MC input rows (in L2) against every weight panel of the band (in L1).
        for ic in (0..m).step_by(MC) {
            let mc = MC.min(m - ic);
            for p in p0..p1 {
                let c0 = p * NR;
                let cols = NR.min(n - c0);
                let wp = wblock.add((p - p0) * kc * NR);
                for ir in (ic..ic + mc).step_by(MR) {
                    let rows = MR.min(m - ir);
                    micro(kc, xp.as_ptr().add(pc * m_pad + ir * kc), wp, y.0.add(ir * n + c0), n, pc > 0, rows, cols);
                }
            }
        }
    }
}

/// The input `[m, k]` as panels of MR rows, in blocks of KC columns: block `pc` starts at
/// `pc * m_pad` (m rounded up to MR), and its panel of rows `i0..i0+MR` holds, column after
/// column, those rows contiguously (zeros past the last row). Packed in parallel by row panels.
fn pack_input(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let m_pad = m.next_multiple_of(MR);
    let mut out = vec![0f32; m_pad * k];
    let dst = OutPtr(out.as_mut_ptr());
    (0..m_pad / MR).into_par_iter().with_min_len(4).for_each(|panel| {
        let (i0, rows) = (panel * MR, MR.min(m - panel * MR));
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // SAFETY: this panel's region of each block, [pc * m_pad + i0 * kc, + kc * MR), is
            // inside `out` and written by this task alone (no other reference to it exists).
            let block = unsafe { std::slice::from_raw_parts_mut(dst.get().add(pc * m_pad + i0 * kc), kc * MR) };
            let src: [&[f32]; MR] = std::array::from_fn(|r| if r < rows { &x[(i0 + r) * k + pc..][..kc] } else { &[] });
            if rows == MR {
                // Whole panels (all but the last): fixed trip counts, no bounds checks inside.
                for (c, column) in block.chunks_exact_mut(MR).enumerate() {
                    for (r, v) in column.iter_mut().enumerate() {
                        *v = src[r][c];
                    }
                }
            } else {
                for (c, column) in block.chunks_exact_mut(MR).enumerate() {
                    for (r, v) in column[..rows].iter_mut().enumerate() {
                        *v = src[r][c];
                    }
                }
            }
        }
    });
    out
}

/// One block of up to 6 x 16 outputs over `kc` packed steps, written (`accumulate` false) or
/// added to: `rows x cols` of it land in `y`. Only the rows that exist are computed (a query's
/// 20 rows are three full blocks and one of two rows).
///
/// # Safety
/// `x` and `w` point at packed panels of `kc` steps; `y` has `rows` rows of `cols` writable
/// floats, `ldy` apart.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn micro<E: Element>(kc: usize, x: *const f32, w: *const E, y: *mut f32, ldy: usize, accumulate: bool, rows: usize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if cols == NR {
            return match rows {
                6 => kernel::<6, E>(kc, x, w, y, ldy, accumulate),
                5 => kernel::<5, E>(kc, x, w, y, ldy, accumulate),
                4 => kernel::<4, E>(kc, x, w, y, ldy, accumulate),
                3 => kernel::<3, E>(kc, x, w, y, ldy, accumulate),
                2 => kernel::<2, E>(kc, x, w, y, ldy, accumulate),
                _ => kernel::<1, E>(kc, x, w, y, ldy, accumulate),
            };
        }
        // Last columns of a width that is not a multiple of 16: a full block aside, then copy.
        let mut tmp = [0f32; MR * NR];
        if accumulate {
            for r in 0..rows {
                std::ptr::copy_nonoverlapping(y.add(r * ldy), tmp.as_mut_ptr().add(r * NR), cols);
            }
        }
        kernel::<MR, E>(kc, x, w, tmp.as_mut_ptr(), NR, accumulate);
        for r in 0..rows {
            std::ptr::copy_nonoverlapping(tmp.as_ptr().add(r * NR), y.add(r * ldy), cols);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (kc, x, w, y, ldy, accumulate, rows, cols);
}

/// R rows (of the 6 an input panel holds) x 16 columns in twelve or fewer registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize, E: Element>(kc: usize, x: *const f32, w: *const E, y: *mut f32, ldy: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    // The output block is read (or written) only after the loop: fetch its lines now, so that a
    // large product's output, which lives beyond L2 between depth blocks, does not stall it.
    for r in 0..R {
        _mm_prefetch::<_MM_HINT_T0>(y.add(r * ldy) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(y.add(r * ldy + NR - 1) as *const i8);
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for i in 0..kc {
        let [w0, w1] = E::load16(w.add(i * NR));
        for (r, a) in acc.iter_mut().enumerate() {
            let xv = _mm256_broadcast_ss(&*x.add(i * MR + r));
            a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
            a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let yp = y.add(r * ldy);
        let (mut v0, mut v1) = (a[0], a[1]);
        if accumulate {
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(yp));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(yp.add(8)));
        }
        _mm256_storeu_ps(yp, v0);
        _mm256_storeu_ps(yp.add(8), v1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        let w: Vec<f32> = (0..7 * 37).map(|i| i as f32).collect();
        let p = Packed::<f32>::new(&w, 7, 37).unwrap();
        assert_eq!((p.rows(), p.cols()), (7, 37));
        assert_eq!(p.unpack(), w);
        assert!(Packed::new(&w, 7, 36).is_none(), "wrong size");
    }

    #[test]
    fn matches_the_plain_product_and_its_transpose_for_ragged_shapes() {
        if !available() {
            return; // nothing to compare: the general kernel is used
        }
        let mut rng = crate::rng::Rng::new(3);
        // Shapes crossing every block edge: rows past MR and MC, columns past NR, depth past KC.
        for (m, k, n) in [(1, 1, 1), (7, 300, 17), (97, 257, 1041), (200, 768, 64), (13, 5, 2100), (12, 531, 40)] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let g: Vec<f32> = (0..m * n).map(|_| rng.normal()).collect();
            let packed = Packed::new(&w, k, n).unwrap();
            let y = matmul(&x, m, &packed).unwrap();
            let dx = matmul_transposed(&g, m, &packed).unwrap();
            for r in 0..m {
                for c in 0..n {
                    let want: f64 = (0..k).map(|i| x[r * k + i] as f64 * w[i * n + c] as f64).sum();
                    let got = y[r * n + c] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "x·W {m}x{k}x{n} [{r},{c}]: {got} vs {want}");
                }
                for c in 0..k {
                    let want: f64 = (0..n).map(|j| g[r * n + j] as f64 * w[c * n + j] as f64).sum();
                    let got = dx[r * k + c] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "g·Wᵀ {m}x{k}x{n} [{r},{c}]: {got} vs {want}");
                }
            }
        }
        // bf16 weights: exactly the product of the widened weights, forward and transposed.
        let (m, k, n) = (20, 300, 50);
        let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let w: Vec<half::bf16> = (0..k * n).map(|_| half::bf16::from_f32(rng.normal())).collect();
        let wide: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let (narrow, wide) = (Packed::new(&w, k, n).unwrap(), Packed::new(&wide, k, n).unwrap());
        assert_eq!(matmul(&x, m, &narrow), matmul(&x, m, &wide));
        let g: Vec<f32> = (0..m * n).map(|_| rng.normal()).collect();
        assert_eq!(matmul_transposed(&g, m, &narrow), matmul_transposed(&g, m, &wide));
        let packed = Packed::new(&[1.0f32; 4], 2, 2).unwrap();
        assert!(matmul(&[0.0; 3], 2, &packed).is_none(), "input of the wrong size");
        assert!(matmul_transposed(&[0.0; 5], 2, &packed).is_none(), "gradient of the wrong size");
    }
}
