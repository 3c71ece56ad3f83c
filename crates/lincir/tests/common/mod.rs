//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::Tensor;

/// The committed fixtures; `LINCIR_FIXTURES` points elsewhere (a test binary run on another
/// machine, where the build's path does not exist: scripts/gpu_check.sh).
pub fn fixtures() -> PathBuf {
    std::env::var_os("LINCIR_FIXTURES").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// clip-a (quick_gelu, real vocabulary) with the BPE files: a complete model directory.
pub fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for src in [fixtures().join("clip-a"), fixtures().join("bpe")] {
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    dir
}

/// Where the parity tests compute: the CPU, or `LINCIR_TEST_DEVICE` (`cuda`, `cuda:1`; the GPU
/// check runs the test binaries of a CUDA build this way, scripts/gpu_check.sh).
pub fn test_device() -> candle_core::Device {
    match std::env::var("LINCIR_TEST_DEVICE") {
        Ok(name) => name.parse::<lincir::device::DeviceChoice>().unwrap().resolve().unwrap(),
        Err(_) => candle_core::Device::Cpu,
    }
}

/// max |a - b| / max |b|: the parity measure of the CLIP issue.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    assert!(scale > 0.0, "reference is all zeros");
    diff / scale
}
