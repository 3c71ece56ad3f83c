//! `--device` and `--dtype`, shared by every command that runs CLIP.

use std::sync::Once;

use anyhow::Result;
use clap::Args;
use lincir::clip::{LoadOptions, Towers};
use lincir::device::{self, DTypeChoice, DeviceChoice};

#[derive(Args, Clone, Debug)]
pub struct ComputeArgs {
    /// Where CLIP runs: auto (the first GPU when this build has CUDA and one is present, else
    /// the CPU), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Precision of the frozen CLIP: auto (f32 on the CPU and, for now, on GPUs), f32, bf16, f16.
    /// phi, its optimiser, the loss and the rankings stay f32.
    #[arg(long, default_value = "auto")]
    pub dtype: DTypeChoice,
}

static ANNOUNCED: Once = Once::new();

impl ComputeArgs {
    /// The load options for `towers`, printing the chosen device once (on stderr).
    pub fn load_options(&self, towers: Towers) -> Result<LoadOptions> {
        let device = self.device.resolve()?;
        let dtype = self.dtype.resolve(&device);
        ANNOUNCED.call_once(|| {
            let place = if device.is_cpu() {
                let features = device::cpu_features();
                let features = if features.is_empty() { "no AVX2".to_string() } else { features.join(" ") };
                format!(
                    "cpu ({}, {} threads; {features}; matmul: {})",
                    device::cpu_model(),
                    rayon::current_num_threads(),
                    lincir::clip::blas::describe()
                )
            } else if device::fused_gpu_kernels() {
                format!("{} (fused kernels: LINCIR_CUDA_FUSED=1)", device::name(&device))
            } else {
                device::name(&device)
            };
            eprintln!("device: {place}, {}", device::dtype_name(dtype));
            // f32 stays the default; where bf16 arithmetic pays, say so once.
            if device.is_cpu() && self.dtype == DTypeChoice::Auto && lincir::clip::panel::enabled() && lincir::clip::panel::isa() == lincir::clip::panel::Isa::Avx512Bf16 {
                eprintln!("hint: this CPU multiplies bf16 natively: --dtype bf16 (embeddings within 2e-2 of f32) encoded 1.7x faster than f32 on a Zen 4 (docs/PERFORMANCE.md)");
            }
        });
        Ok(LoadOptions { towers, dtype, device })
    }
}

/// `--batch-size` when it is not given: what keeps the device busy. 32 images or texts keep a
/// CPU's caches warm; a GPU needs hundreds in flight (the GPU check times ViT-L/14 at 256).
pub fn default_batch_size(device: &candle_core::Device) -> usize {
    if device.is_cpu() {
        32
    } else {
        256
    }
}
