//! The optional run-time BLAS (clip/blas.rs): a library that cannot be loaded is a clear error,
//! and a loaded one computes the products the builtin kernel computes. With `LINCIR_BLAS` set,
//! the CLIP and SMP parity tests (tests/clip_parity.rs, tests/smp_parity.rs) run through it too:
//! `.ci/run` runs them with OpenBLAS.

use candle_core::{Device, Tensor};
use lincir::clip::blas;

#[test]
fn a_blas_that_cannot_be_loaded_is_a_clear_error() {
    let e = blas::load("/nonexistent/libnothing.so").err().expect("no such library").to_string();
    assert!(e.contains("/nonexistent/libnothing.so") && e.contains("unset LINCIR_BLAS"), "{e}");
    // A library without cblas_sgemm is refused by name (the C library is always there).
    let libc = if cfg!(windows) { "msvcrt.dll" } else if cfg!(target_os = "macos") { "libSystem.B.dylib" } else { "libc.so.6" };
    let e = blas::load(libc).err().expect("the C library is no BLAS").to_string();
    assert!(e.contains("has no cblas_sgemm"), "{e}");
}

fn random(rng: &mut lincir::rng::Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

/// Needs a BLAS: the one `LINCIR_BLAS` names, else OpenBLAS (Debian: libopenblas0-pthread).
#[test]
#[ignore = "needs a BLAS library (LINCIR_BLAS, default openblas); .ci/run installs OpenBLAS"]
fn blas_products_match_the_builtin_kernel() {
    let name = std::env::var("LINCIR_BLAS").unwrap_or_else(|_| "openblas".into());
    let lib = blas::load(&name).unwrap();
    let mut rng = lincir::rng::Rng::new(9);
    for (m, k, n) in [(1, 1, 1), (12, 768, 3072), (257, 1024, 64), (3, 5, 7), (0, 4, 4)] {
        let (a, b) = (random(&mut rng, m * k), random(&mut rng, k * n));
        let (ta, tb) = (Tensor::from_slice(&a, (m, k), &Device::Cpu).unwrap(), Tensor::from_slice(&b, (k, n), &Device::Cpu).unwrap());
        let want: Vec<f32> = ta.matmul(&tb).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let got = lib.matmul(&a, &b, m, n, k, false).unwrap();
        let bt: Vec<f32> = tb.t().unwrap().contiguous().unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let got_t = lib.matmul(&a, &bt, m, n, k, true).unwrap();
        for (g, w) in got.iter().zip(&want).chain(got_t.iter().zip(&want)) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}x{k}x{n}: {g} vs {w}");
        }
        assert_eq!((got.len(), got_t.len()), (want.len(), want.len()));
    }
    assert!(lib.matmul(&[1.0; 6], &[1.0; 6], 2, 3, 4, false).is_err(), "sizes that do not match are refused");
    // With LINCIR_BLAS set, the layers use it (the parity suites then test it end to end).
    if std::env::var("LINCIR_BLAS").is_ok() {
        assert!(blas::active().is_some(), "LINCIR_BLAS is set but no BLAS is in use");
    }
}
