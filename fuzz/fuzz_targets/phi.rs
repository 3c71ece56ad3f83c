//! Pseudo-word checkpoints: lincir safetensors, LinCIR/SEARLE/Pic2Word PyTorch pickles.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(if data.starts_with(b"PK") { "x.pt" } else { "x.safetensors" });
    std::fs::write(&path, data).unwrap();
    let _ = lincir::mapper::Mapper::load(&path, &candle_core::Device::Cpu);
});
