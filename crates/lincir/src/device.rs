//! Where the frozen CLIP runs and in which precision: `--device {auto,cpu,cuda,cuda:N}` and
//! `--dtype {auto,f32,bf16,f16}`, resolved once per command.
//!
//! CUDA needs a build with the `cuda` feature (docs/GPU.md). A CUDA build links the driver library
//! (`libcuda.so.1`) dynamically, as candle does: it runs on any machine with an NVIDIA driver,
//! with or without a GPU (then `auto` falls back to the CPU), but not on one without the driver.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::{Error, Result};

/// A device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU when built with `cuda` and one is present, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`: one of auto, cpu, cuda, cuda:N")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this build has the CUDA backend.
pub fn cuda_built() -> bool {
    candle_core::utils::cuda_is_available()
}

impl DeviceChoice {
    /// The device, or a one-line error saying why CUDA cannot be used.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(if cuda_built() { open_cuda(0).unwrap_or(Device::Cpu) } else { Device::Cpu }),
            DeviceChoice::Cuda(n) => {
                if !cuda_built() {
                    return Err(Error::Invalid(format!(
                        "--device {self}: this lincir was built without CUDA (build it with `scripts/build_cuda.sh`, see docs/GPU.md)"
                    )));
                }
                open_cuda(n).map_err(|e| {
                    let e = e.to_string();
                    let first = e.lines().next().unwrap_or("").trim();
                    Error::Invalid(format!("--device {self}: no usable CUDA device {n} ({first})"))
                })
            }
        }
    }
}

/// GPU `ordinal`, set up for lincir's use of it.
///
/// candle allocates with `cuMemAllocAsync` from the device's default memory pool, whose release
/// threshold is 0 by default: at every synchronisation (each training step reads its loss) the
/// pool hands its free memory back to the driver, and the next step maps it again. Here the pool
/// keeps what it has freed for reuse, as PyTorch's allocators do (its `cudaMallocAsync` backend
/// sets the same threshold). And since every thread computes on its own stream and only shares
/// tensors that are complete (the weights, synchronised after loading), cudarc's per-tensor
/// events for synchronising several streams are not created (two per allocation otherwise).
fn open_cuda(ordinal: usize) -> candle_core::Result<Device> {
    let device = Device::new_cuda(ordinal)?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = &device {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let stream = cuda.cuda_stream();
        let context = stream.context();
        // SAFETY: plain driver calls on a device the context above opened; `pool` and `keep` are
        // live for the calls. A failure leaves the driver's default (slower, still correct).
        unsafe {
            let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
            if sys::cuDeviceGetDefaultMemPool(&mut pool, context.cu_device()) == sys::CUresult::CUDA_SUCCESS {
                let mut keep = u64::MAX;
                let _ = sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut keep as *mut u64).cast(),
                );
            }
            // SAFETY: lincir never hands a tensor to another stream before it is complete (see
            // above), which is all the events were for.
            cuda.disable_event_tracking();
        }
    }
    Ok(device)
}

/// A compute precision as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeChoice {
    /// f32 on the CPU; on a GPU, see [`GPU_DEFAULT_DTYPE`].
    Auto,
    F32,
    Bf16,
    F16,
}

/// The GPU's default precision for the frozen CLIP (docs/GPU.md says why).
pub const GPU_DEFAULT_DTYPE: DType = DType::F32;

impl FromStr for DTypeChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DTypeChoice::Auto),
            "f32" => Ok(DTypeChoice::F32),
            "bf16" => Ok(DTypeChoice::Bf16),
            "f16" => Ok(DTypeChoice::F16),
            _ => Err(format!("unknown dtype `{s}`: one of auto, f32, bf16, f16")),
        }
    }
}

impl DTypeChoice {
    pub fn resolve(self, device: &Device) -> DType {
        match self {
            DTypeChoice::Auto if device.is_cuda() => GPU_DEFAULT_DTYPE,
            DTypeChoice::Auto | DTypeChoice::F32 => DType::F32,
            DTypeChoice::Bf16 => DType::BF16,
            DTypeChoice::F16 => DType::F16,
        }
    }
}

/// Whether lincir's fused GPU training kernels are on (a CUDA build with `LINCIR_CUDA_FUSED=1`:
/// docs/GPU.md).
pub fn fused_gpu_kernels() -> bool {
    #[cfg(feature = "cuda")]
    return crate::clip::cuda_ops::enabled();
    #[cfg(not(feature = "cuda"))]
    false
}

/// "cpu" or "cuda:0", for reports and file metadata.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        other => format!("{other:?}"),
    }
}

pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "other",
    }
}

/// The processor's model name (Linux `/proc/cpuinfo`), for reports.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The vector and matrix features of this CPU that decide how fast CLIP runs (from
/// /proc/cpuinfo's flags, Linux; the compiler's run-time detection elsewhere on x86).
pub fn cpu_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    const WANTED: [&str; 8] = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_int8"];
    // (x86's flags only: an x86 program emulated elsewhere, or ARM's `Features` line, say nothing
    // of what this build runs.)
    #[cfg(target_arch = "x86_64")]
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(flags) = info.lines().find(|l| l.starts_with("flags")) {
            let have: std::collections::HashSet<&str> = flags.split_whitespace().collect();
            return WANTED.into_iter().filter(|f| have.contains(f)).collect();
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let detected = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512_bf16", std::arch::is_x86_feature_detected!("avx512bf16")),
        ];
        detected.into_iter().filter(|(_, on)| *on).map(|(f, _)| f).collect()
    }
    // NEON (Advanced SIMD) is part of every 64-bit ARM CPU: candle's products use it.
    #[cfg(target_arch = "aarch64")]
    {
        vec!["neon"]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
        assert_eq!("bf16".parse(), Ok(DTypeChoice::Bf16));
        assert!("fp16".parse::<DTypeChoice>().is_err());
    }

    #[test]
    fn cpu_always_resolves_and_auto_falls_back_to_it() {
        assert!(DeviceChoice::Cpu.resolve().unwrap().is_cpu());
        if !cuda_built() {
            assert!(DeviceChoice::Auto.resolve().unwrap().is_cpu());
            let e = DeviceChoice::Cuda(0).resolve().unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
        assert_eq!(DTypeChoice::Auto.resolve(&Device::Cpu), DType::F32);
    }
}
