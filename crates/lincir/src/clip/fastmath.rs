//! QuickGELU, `x · sigmoid(1.702 x)`, its derivative, and the softmax of rows, eight lanes at a
//! time on AVX2 CPUs.
//!
//! The scalar versions spent 4.7% of ViT-L/14 image encoding in libm's `expf` (`perf`, Zen 3): one
//! call per element of every fc1 output and of every attention score. The vector exponential below is the classic Cephes
//! polynomial (range reduction by ln 2, degree-5 polynomial, exponent built from the integer
//! part), with a relative error of about 1e-7, below f32 rounding of the result; the test bounds
//! it against the scalar formula.

/// Dot product in 8 independent lanes (vectorises well; the index's exact scan and attention in
/// the fused text layer).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `v ← v · sigmoid(1.702 v)` for every element.
pub fn quick_gelu_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::panel::available() {
        // SAFETY: AVX2 and FMA were just detected.
        unsafe { quick_gelu_avx2(values) };
        return;
    }
    values.iter_mut().for_each(|v| *v = scalar(*v));
}

/// `g ← g · d/du [u · sigmoid(1.702 u)]` for every element: QuickGELU's backward pass, `u` being
/// its input.
pub fn quick_gelu_backward_in_place(grad: &mut [f32], input: &[f32]) {
    assert_eq!(grad.len(), input.len(), "one input per gradient");
    #[cfg(target_arch = "x86_64")]
    if super::panel::available() {
        // SAFETY: AVX2 and FMA were just detected; the lengths are equal.
        unsafe { quick_gelu_backward_avx2(grad, input) };
        return;
    }
    grad.iter_mut().zip(input).for_each(|(g, u)| *g *= scalar_derivative(*u));
}

/// Each row of `row_len` values replaced by its softmax.
pub fn softmax_rows_in_place(values: &mut [f32], row_len: usize) {
    for row in values.chunks_exact_mut(row_len.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        #[cfg(target_arch = "x86_64")]
        let sum = if super::panel::available() {
            // SAFETY: AVX2 and FMA were just detected.
            unsafe { exp_shifted_avx2(row, max) }
        } else {
            exp_shifted(row, max)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let sum = exp_shifted(row, max);
        let scale = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= scale);
    }
}

/// `v ← e^(v - max)`; returns the sum.
fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
    row.iter_mut().map(|v| {
        *v = (*v - max).exp();
        *v
    }).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(row: &mut [f32], max: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut sum = _mm256_setzero_ps();
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), _mm256_set1_ps(max)));
        _mm256_storeu_ps(c.as_mut_ptr(), e);
        sum = _mm256_add_ps(sum, e);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    lanes.iter().sum::<f32>() + exp_shifted(chunks.into_remainder(), max)
}

fn scalar(v: f32) -> f32 {
    v / (1.0 + (-1.702 * v).exp())
}

/// σ + 1.702 u σ (1 - σ), σ = sigmoid(1.702 u).
fn scalar_derivative(u: f32) -> f32 {
    let s = 1.0 / (1.0 + (-1.702 * u).exp());
    s + 1.702 * u * s * (1.0 - s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quick_gelu_backward_avx2(grad: &mut [f32], input: &[f32]) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_ps(1.0);
    let mut g = grad.chunks_exact_mut(8);
    let mut u = input.chunks_exact(8);
    for (gc, uc) in (&mut g).zip(&mut u) {
        let v = _mm256_loadu_ps(uc.as_ptr());
        let a = _mm256_mul_ps(v, _mm256_set1_ps(1.702));
        let s = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), a))));
        // s + a s (1 - s)
        let d = _mm256_fmadd_ps(_mm256_mul_ps(a, s), _mm256_sub_ps(one, s), s);
        _mm256_storeu_ps(gc.as_mut_ptr(), _mm256_mul_ps(_mm256_loadu_ps(gc.as_ptr()), d));
    }
    for (gv, uv) in g.into_remainder().iter_mut().zip(u.remainder()) {
        *gv *= scalar_derivative(*uv);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quick_gelu_avx2(values: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = values.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = _mm256_loadu_ps(c.as_ptr());
        let e = exp8(_mm256_mul_ps(v, _mm256_set1_ps(-1.702)));
        _mm256_storeu_ps(c.as_mut_ptr(), _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0), e)));
    }
    for v in chunks.into_remainder() {
        *v = scalar(*v);
    }
}

/// e^x for 8 lanes, x clamped to ±88.376 (beyond which f32 overflows or underflows).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.376_26)), _mm256_set1_ps(88.376_26));
    // x = n ln2 + r, |r| <= ln2 / 2; ln2 split in two so that r is exact.
    let n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), _mm256_set1_ps(0.5)));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
    // 2^n through the exponent bits (n is within -128..128 after the clamp).
    let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
    _mm256_mul_ps(p, two_n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_the_formula_with_masked_entries() {
        let mut rng = crate::rng::Rng::new(5);
        for len in [1, 7, 8, 77, 257] {
            let mut rows: Vec<f32> = (0..3 * len).map(|_| 4.0 * rng.normal()).collect();
            if len > 1 {
                rows[len - 1] = f32::NEG_INFINITY; // a masked position (causal or padding)
            }
            let want: Vec<f64> = rows
                .chunks(len)
                .flat_map(|r| {
                    let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    let e: Vec<f64> = r.iter().map(|v| (*v as f64 - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    e.into_iter().map(move |v| v / sum)
                })
                .collect();
            softmax_rows_in_place(&mut rows, len);
            for (i, (got, want)) in rows.iter().zip(&want).enumerate() {
                assert!((*got as f64 - want).abs() <= 1e-6 * want + 1e-9, "len {len} at {i}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn quick_gelu_derivative_matches_the_formula() {
        let mut xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 1e-3).collect();
        xs.extend([-100.0, -60.0, 60.0, 100.0, -0.0, 3.0]);
        let mut rng = crate::rng::Rng::new(9);
        let gs: Vec<f32> = xs.iter().map(|_| rng.normal()).collect();
        let mut got = gs.clone();
        quick_gelu_backward_in_place(&mut got, &xs);
        for ((x, g), got) in xs.iter().zip(&gs).zip(&got) {
            let (x, g) = (*x as f64, *g as f64);
            let s = 1.0 / (1.0 + (-1.702 * x).exp());
            let want = g * (s + 1.702 * x * s * (1.0 - s));
            // As for the value: the rounding of 1.702 x moves σ by up to |1.702 x| 2^-24 relative,
            // and the derivative's two terms nearly cancel around x = -1.3.
            let bound = 4e-7 * (1.0 + (1.702 * x).abs()) * (1.0 + 1.702 * x.abs()) * g.abs();
            assert!((*got as f64 - want).abs() <= bound + 1e-30, "x {x}: {got} vs {want}");
        }
    }

    #[test]
    fn matches_the_scalar_formula_across_the_range() {
        // Dense around zero, where the values are not tiny, and out to where exp saturates.
        let mut xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 1e-3).collect();
        xs.extend([-100.0, -60.0, -52.0, -51.9, 51.9, 60.0, 100.0, f32::MIN_POSITIVE, -0.0, 1e-30]);
        let mut ys = xs.clone();
        quick_gelu_in_place(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            let want = *x as f64 / (1.0 + (-1.702 * *x as f64).exp());
            let err = (*y as f64 - want).abs();
            // Rounding 1.702 x to f32 alone (as the scalar formula does) moves e^(-1.702 x) by up
            // to |1.702 x| · 2^-24 relative: the bound grows with the argument.
            let bound = 2e-7 * (1.0 + (1.702 * *x as f64).abs());
            assert!(err <= bound * want.abs() + 1e-30, "x {x}: {y} vs {want}");
        }
    }
}
