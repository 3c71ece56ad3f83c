//! Compact index vectors: each unit vector as int8 codes with its own scale, and the bound that
//! lets a ranking over the codes be re-ranked into exactly the f32 ranking.
//!
//! Ranking 100,000 f32 vectors of width 768 streams 307 MB per query, which machines with little
//! memory bandwidth pay for (docs/PERFORMANCE.md). The codes are a quarter of that. A row is
//! `scale: f32, residual: f32, codes: [i8; dim]` (padded to 4 bytes), where
//! `v ≈ scale * codes` and `residual = |v - scale * codes|` (L2, computed exactly at index time).
//!
//! The query is quantised to 12-bit integers, so that the inner loop is an integer multiply-add
//! (`vpmaddwd`) that cannot overflow: |code| <= 127, |q| <= 4095, so a row of up to 4,096
//! dimensions sums to under 2^31. For a unit vector `v` and query `x ≈ qs * q` (residual `r`),
//!
//! `|v.x - scale * qs * (codes.q)| <= residual * |qs * q| + |r|`,
//!
//! by Cauchy-Schwarz on the two residuals. [`crate::index::Index::top_k`] scores every row with
//! the codes, rescores exactly (from the f32 vectors) every row whose upper bound reaches the
//! k-th best exact score, and so returns the exact f32 top-k, ties included.

/// Bytes before a row's codes: its scale and its residual norm.
const HEADER: usize = 8;
/// The query's integer range: 2^12 - 1 keeps every row's integer sum inside an i32.
const QUERY_MAX: f32 = 4095.0;
/// Widest row whose integer sum provably fits an i32 (127 * 4095 * 4096 < 2^31).
pub const MAX_DIM: usize = 4096;

/// Bytes per row of a codes file of width `dim` (a multiple of 4, so every header is aligned).
pub fn row_bytes(dim: usize) -> usize {
    HEADER + dim.next_multiple_of(4)
}

/// Appends the codes row of the unit vector `v`.
pub fn encode_row(v: &[f32], out: &mut Vec<u8>) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let codes: Vec<i8> = v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect();
    let residual = v.iter().zip(&codes).map(|(x, &c)| (*x as f64 - scale as f64 * c as f64).powi(2)).sum::<f64>().sqrt();
    out.extend_from_slice(&scale.to_le_bytes());
    // Rounded up, so that the bound stays a bound.
    out.extend_from_slice(&((residual as f32) * (1.0 + 1e-6) + f32::MIN_POSITIVE).to_le_bytes());
    out.extend(codes.iter().map(|&c| c as u8));
    out.resize(out.len() + dim_pad(v.len()), 0);
}

fn dim_pad(dim: usize) -> usize {
    dim.next_multiple_of(4) - dim
}

/// One row of a codes file.
pub struct CodeRow<'a> {
    pub scale: f32,
    pub residual: f32,
    pub codes: &'a [i8],
}

/// Reads row `row` of a codes buffer of width `dim`.
pub fn row(bytes: &[u8], dim: usize, row: usize) -> CodeRow<'_> {
    let at = row * row_bytes(dim);
    let f = |i: usize| f32::from_le_bytes(bytes[at + i..at + i + 4].try_into().expect("4 bytes"));
    let codes = &bytes[at + HEADER..at + HEADER + dim];
    // SAFETY: i8 and u8 have the same size and alignment.
    let codes = unsafe { std::slice::from_raw_parts(codes.as_ptr() as *const i8, dim) };
    CodeRow { scale: f(0), residual: f(4), codes }
}

/// A query prepared for scoring codes: integers, their scale, and the two norms of the bound.
pub struct QuantQuery {
    pub q: Vec<i16>,
    pub scale: f32,
    /// |scale * q|
    pub norm: f32,
    /// |x - scale * q|
    pub residual: f32,
    /// Room for the rounding of the f32 sums on both sides of the comparison.
    pub slack: f32,
}

impl QuantQuery {
    pub fn new(x: &[f32]) -> Self {
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / QUERY_MAX } else { 1.0 };
        let q: Vec<i16> = x.iter().map(|v| (v / scale).round().clamp(-QUERY_MAX, QUERY_MAX) as i16).collect();
        let (mut norm, mut residual, mut l2) = (0f64, 0f64, 0f64);
        for (v, &c) in x.iter().zip(&q) {
            let y = scale as f64 * c as f64;
            norm += y * y;
            residual += (*v as f64 - y).powi(2);
            l2 += (*v as f64).powi(2);
        }
        // f32 dot products of length n are accurate to ~n * eps * |x| for unit rows; be generous.
        let slack = (x.len() as f64 * 1e-6 * l2.sqrt()) as f32 + 1e-6;
        QuantQuery { q, scale, norm: norm.sqrt() as f32 * (1.0 + 1e-6), residual: residual.sqrt() as f32 * (1.0 + 1e-6), slack }
    }

    /// The approximate score of a row and an upper bound of its exact score.
    pub fn score(&self, r: &CodeRow) -> (f32, f32) {
        let approx = r.scale * self.scale * dot_i8_i16(r.codes, &self.q) as f32;
        // |v| is 1 up to f32 rounding; 1.0001 covers it.
        (approx, approx + r.residual * self.norm + 1.0001 * self.residual + self.slack)
    }
}

/// Integer dot product (exact: the same integer whatever the path).
pub fn dot_i8_i16(c: &[i8], q: &[i16]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        return unsafe { dot_i8_i16_avx2(c, q) };
    }
    dot_i8_i16_portable(c, q)
}

/// 16 lanes at a time with AVX2: sign extension and `vpmaddwd`. The default build targets
/// baseline x86-64 (SSE2), where the portable loop runs at half the width with extra shuffles:
/// the 1,000,000-row scan was compute-bound on it (docs/PERFORMANCE.md).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_i16_avx2(c: &[i8], q: &[i16]) -> i32 {
    use std::arch::x86_64::*;
    let n = c.len().min(q.len());
    let (mut acc0, mut acc1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut i = 0;
    while i + 32 <= n {
        let c0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(c.as_ptr().add(i) as *const __m128i));
        let c1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(c.as_ptr().add(i + 16) as *const __m128i));
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(c0, _mm256_loadu_si256(q.as_ptr().add(i) as *const __m256i)));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(c1, _mm256_loadu_si256(q.as_ptr().add(i + 16) as *const __m256i)));
        i += 32;
    }
    let acc = _mm256_add_epi32(acc0, acc1);
    let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s) + dot_i8_i16_portable(&c[i..n], &q[i..n])
}

/// Integer dot product in 16 lanes (vectorises to sign extension and `pmaddwd`).
fn dot_i8_i16_portable(c: &[i8], q: &[i16]) -> i32 {
    let mut acc = [0i32; 16];
    let (cc, qc) = (c.chunks_exact(16), q.chunks_exact(16));
    let tail: i32 = cc.remainder().iter().zip(qc.remainder()).map(|(&a, &b)| a as i32 * b as i32).sum();
    for (a, b) in cc.zip(qc) {
        for i in 0..16 {
            acc[i] += a[i] as i16 as i32 * b[i] as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        let v: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn the_bound_holds_and_is_tight_enough_to_be_useful() {
        for dim in [7, 64, 768, 1280] {
            let mut worst_gap = 0f32;
            for s in 0..200 {
                let (v, x) = (unit(s, dim), unit(1000 + s, dim));
                let mut bytes = Vec::new();
                encode_row(&v, &mut bytes);
                assert_eq!(bytes.len(), row_bytes(dim));
                let r = row(&bytes, dim, 0);
                let exact: f32 = v.iter().zip(&x).map(|(a, b)| a * b).sum();
                let (approx, upper) = QuantQuery::new(&x).score(&r);
                assert!(exact <= upper, "dim {dim}: exact {exact} above the bound {upper}");
                assert!((approx - exact).abs() < 0.01, "dim {dim}: approx {approx} vs {exact}");
                worst_gap = worst_gap.max(upper - approx);
            }
            // The bound is a worst case: about |e| + |r|, a few hundredths at most.
            assert!(worst_gap < 0.03, "dim {dim}: bound gap {worst_gap}");
        }
    }

    #[test]
    fn integer_dot_matches_the_plain_sum_at_the_extremes() {
        let c = vec![-127i8; MAX_DIM];
        let q = vec![-4095i16; MAX_DIM];
        assert_eq!(dot_i8_i16(&c, &q) as i64, 127 * 4095 * MAX_DIM as i64);
        let c: Vec<i8> = (0..37).map(|i| (i * 7 % 255) as u8 as i8).collect();
        let q: Vec<i16> = (0..37).map(|i| (i * 331 % 8191) as i16 - 4095).collect();
        assert_eq!(dot_i8_i16(&c, &q), c.iter().zip(&q).map(|(&a, &b)| a as i32 * b as i32).sum::<i32>());
        // Every length around the vector widths, both paths, against the plain sum.
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 768, 1023] {
            let c: Vec<i8> = (0..n).map(|i| (i * 37 % 255) as u8 as i8).collect();
            let q: Vec<i16> = (0..n).map(|i| (i * 331 % 8191) as i16 - 4095).collect();
            let want = c.iter().zip(&q).map(|(&a, &b)| a as i32 * b as i32).sum::<i32>();
            assert_eq!(dot_i8_i16(&c, &q), want, "length {n}");
            assert_eq!(dot_i8_i16_portable(&c, &q), want, "length {n}");
        }
    }

    #[test]
    fn a_zero_vector_has_a_finite_code() {
        let mut bytes = Vec::new();
        encode_row(&[0.0; 5], &mut bytes);
        let r = row(&bytes, 5, 0);
        let (approx, upper) = QuantQuery::new(&[1.0, 0.0, 0.0, 0.0, 0.0]).score(&r);
        assert!(approx == 0.0 && upper.is_finite() && upper >= 0.0);
    }
}
