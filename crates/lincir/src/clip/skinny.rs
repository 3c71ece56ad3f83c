//! Products with few rows through a frozen weight: a search query's dozen tokens.
//!
//! With a dozen rows, a product is bound by reading its weight from memory (a ViT-L/14 text
//! tower is 340 MB of f32 matrices per query, far beyond any cache). General kernels pack the
//! weight into blocks first, which reads and writes it again; here each thread owns a band of
//! output columns, and an AVX2 micro-kernel keeps a 4 x 24 block of outputs in registers while it
//! streams blocks of the weight's rows in place (the next block prefetched). bf16 weights (the
//! CPU's `--dtype bf16`) halve the bytes and are widened to f32 in registers: the arithmetic
//! stays f32. Measured in `lincir search` on a ViT-L/14 text tower: query encoding 59-63 ms
//! against 81-83 ms with candle's kernel (docs/PERFORMANCE.md). CPUs without AVX2 use the
//! general path.

use rayon::prelude::*;

/// The most rows this path takes; above it the general kernels are faster (measured with
/// `lincir bench matmul`).
pub const MAX_ROWS: usize = 32;
/// Output columns per micro-kernel call (three 8-lane vectors).
const TILE: usize = 24;

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

/// A weight element the micro-kernel reads: f32, or bf16 (half the bytes to stream; widened to
/// f32 in registers, so the arithmetic stays f32).
pub trait Element: Copy + Sync {
    fn to_f32(self) -> f32;
    /// [`tile`] for this element type.
    ///
    /// # Safety
    /// As for [`tile`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const R: usize>(x: *const f32, ldx: usize, kn: usize, w: *const Self, ldw: usize, out: *mut f32, ldo: usize);
}

impl Element for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const R: usize>(x: *const f32, ldx: usize, kn: usize, w: *const Self, ldw: usize, out: *mut f32, ldo: usize) {
        tile::<R, F32Loads>(x, ldx, kn, w, ldw, out, ldo)
    }
}

impl Element for half::bf16 {
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile<const R: usize>(x: *const f32, ldx: usize, kn: usize, w: *const Self, ldw: usize, out: *mut f32, ldo: usize) {
        tile::<R, Bf16Loads>(x, ldx, kn, w as *const u16, ldw, out, ldo)
    }
}

/// `y[m, n] = x[m, k] · w[k, n]`, all row-major; None where the micro-kernel is not available
/// or `m` is above [`MAX_ROWS`].
pub fn matmul<W: Element>(x: &[f32], w: &[W], m: usize, k: usize, n: usize) -> Option<Vec<f32>> {
    if m == 0 || m > MAX_ROWS || !available() || x.len() != m * k || w.len() != k * n {
        return None;
    }
    // One band of columns per thread (a multiple of the tile), so that each thread streams long
    // contiguous pieces of the weight's rows.
    let threads = rayon::current_num_threads().max(1);
    let band_width = n.div_ceil(threads).next_multiple_of(TILE).max(TILE);
    let bands: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(band_width))
        .into_par_iter()
        .map(|b| {
            let (c0, c1) = (b * band_width, ((b + 1) * band_width).min(n));
            let mut out = vec![0f32; m * (c1 - c0)];
            band(x, w, m, k, n, c0, c1, &mut out);
            (c0, out)
        })
        .collect();
    let mut y = vec![0f32; m * n];
    for (c0, out) in bands {
        let width = out.len() / m;
        for r in 0..m {
            y[r * n + c0..r * n + c0 + width].copy_from_slice(&out[r * width..(r + 1) * width]);
        }
    }
    Some(y)
}

/// Bytes of the weight one block of rows may take: it is read from memory once and then from
/// the L2 cache by every group of four rows (the next block is being prefetched meanwhile).
const BLOCK_BYTES: usize = 64 * 1024;

/// Prefetches rows `r0..r1`, columns `c0..c1` of `w` (row length `n`) into the cache.
fn prefetch_rows<W>(w: &[W], n: usize, r0: usize, r1: usize, c0: usize, c1: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let line = 64 / std::mem::size_of::<W>().max(1);
        for r in r0..r1 {
            let row = &w[r * n + c0..r * n + c1];
            for chunk in row.chunks(line) {
                // SAFETY: a prefetch is a hint; the address is inside `w`.
                unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(chunk.as_ptr() as *const i8) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, n, r0, r1, c0, c1);
}

/// Columns `c0..c1` of the product into `out` (`m` rows of `c1 - c0`), accumulated over blocks
/// of the weight's rows.
#[allow(clippy::too_many_arguments)]
fn band<W: Element>(x: &[f32], w: &[W], m: usize, k: usize, n: usize, c0: usize, c1: usize, out: &mut [f32]) {
    let width = c1 - c0;
    let tiled = c0 + (width / TILE) * TILE;
    let block = (BLOCK_BYTES / (std::mem::size_of::<W>() * width)).clamp(4, 256);
    prefetch_rows(w, n, 0, block.min(k), c0, c1);
    let mut k0 = 0;
    while k0 < k {
        let kn = block.min(k - k0);
        // The tiles walk many rows of the block at once, more streams than a hardware
        // prefetcher follows: ask for the next block row by row, in memory order, meanwhile.
        prefetch_rows(w, n, k0 + kn, (k0 + 2 * kn).min(k), c0, c1);
        let mut c = c0;
        while c < tiled {
            let mut r = 0;
            while r < m {
                let rows = (m - r).min(4);
                // SAFETY: `available()` checked AVX2 and FMA; rows r..r+rows < m, columns
                // c..c+TILE <= c1 <= n and weight rows k0..k0+kn <= k are inside x, w and out.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    let (xp, wp, op) = (x.as_ptr().add(r * k + k0), w.as_ptr().add(k0 * n + c), out.as_mut_ptr().add(r * width + (c - c0)));
                    match rows {
                        4 => W::tile::<4>(xp, k, kn, wp, n, op, width),
                        3 => W::tile::<3>(xp, k, kn, wp, n, op, width),
                        2 => W::tile::<2>(xp, k, kn, wp, n, op, width),
                        _ => W::tile::<1>(xp, k, kn, wp, n, op, width),
                    }
                }
                r += rows;
            }
            c += TILE;
        }
        k0 += kn;
    }
    // Columns left over (widths that are not a multiple of 24): plain loops.
    for r in 0..m {
        for col in tiled..c1 {
            out[r * width + (col - c0)] = (0..k).map(|i| x[r * k + i] * w[i * n + col].to_f32()).sum();
        }
    }
}

/// How the micro-kernel reads 24 consecutive weights as three f32 vectors.
#[cfg(target_arch = "x86_64")]
trait Loads {
    type T;
    unsafe fn load3(p: *const Self::T) -> [std::arch::x86_64::__m256; 3];
}

#[cfg(target_arch = "x86_64")]
struct F32Loads;

#[cfg(target_arch = "x86_64")]
impl Loads for F32Loads {
    type T = f32;
    #[inline(always)]
    unsafe fn load3(p: *const f32) -> [std::arch::x86_64::__m256; 3] {
        use std::arch::x86_64::*;
        [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16))]
    }
}

#[cfg(target_arch = "x86_64")]
struct Bf16Loads;

#[cfg(target_arch = "x86_64")]
impl Loads for Bf16Loads {
    type T = u16;
    /// bf16 is the top half of an f32: widen to 32 bits and shift.
    #[inline(always)]
    unsafe fn load3(p: *const u16) -> [std::arch::x86_64::__m256; 3] {
        use std::arch::x86_64::*;
        let widen = |q: *const u16| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(q as *const __m128i))));
        [widen(p), widen(p.add(8)), widen(p.add(16))]
    }
}

/// Adds R rows x 24 columns of output over `kn` weight rows, in registers. `x` points at the
/// block's first column of row 0 (rows `ldx` apart), `w` at the block's first row and column.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, L: Loads>(x: *const f32, ldx: usize, kn: usize, w: *const L::T, ldw: usize, out: *mut f32, ldo: usize) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 3]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        let op = out.add(r * ldo);
        *a = [_mm256_loadu_ps(op), _mm256_loadu_ps(op.add(8)), _mm256_loadu_ps(op.add(16))];
    }
    for i in 0..kn {
        let [w0, w1, w2] = L::load3(w.add(i * ldw));
        for (r, a) in acc.iter_mut().enumerate() {
            let xv = _mm256_broadcast_ss(&*x.add(r * ldx + i));
            a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
            a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
            a[2] = _mm256_fmadd_ps(xv, w2, a[2]);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let op = out.add(r * ldo);
        _mm256_storeu_ps(op, a[0]);
        _mm256_storeu_ps(op.add(8), a[1]);
        _mm256_storeu_ps(op.add(16), a[2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_plain_product_for_every_row_count_and_ragged_widths() {
        if !available() {
            return; // nothing to compare: the general kernel is used
        }
        let mut rng = crate::rng::Rng::new(2);
        for (m, k, n) in [(1, 7, 24), (3, 64, 200), (5, 33, 50), (12, 768, 2304), (32, 40, 24 * 9 + 5), (4, 1, 1)] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let y = matmul(&x, &w, m, k, n).unwrap();
            for r in 0..m {
                for c in 0..n {
                    let want: f64 = (0..k).map(|i| x[r * k + i] as f64 * w[i * n + c] as f64).sum();
                    assert!((y[r * n + c] as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()), "{m}x{k}x{n} [{r},{c}]");
                }
            }
        }
        assert!(matmul(&[0.0f32; 33], &[0.0f32; 33], 33, 1, 1).is_none(), "too many rows");
        // bf16 weights: the product of the widened weights, exactly as in f32.
        let (m, k, n) = (7, 300, 24 * 4 + 3);
        let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let w: Vec<half::bf16> = (0..k * n).map(|_| half::bf16::from_f32(rng.normal())).collect();
        let wide: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        assert_eq!(matmul(&x, &w, m, k, n), matmul(&x, &wide, m, k, n));
    }
}
