//! With the `cuda` feature: compiles lincir's own CUDA kernels (kernels/train_ops.cu: the
//! training ops' fused forward and backward, src/clip/cuda_ops.rs) to PTX with nvcc, for the
//! compute capability candle's kernels are built for (`CUDA_COMPUTE_CAP`, as candle-kernels reads
//! it). Without the feature it does nothing: the default build needs no CUDA.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels/train_ops.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_ROOT");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("train_ops.ptx");
    let cap = compute_cap();
    let nvcc = std::env::var_os("CUDA_ROOT")
        .map(|root| PathBuf::from(root).join("bin/nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("--gpu-architecture=sm_{cap}"), "kernels/train_ops.cu", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {} (the cuda feature needs CUDA's compiler; scripts/build_cuda.sh installs one): {e}", nvcc.display()));
    assert!(status.success(), "nvcc failed on kernels/train_ops.cu ({status})");
}

/// `CUDA_COMPUTE_CAP` (e.g. 90), else the first GPU's (nvidia-smi), else 80: PTX for compute 8.0
/// is compiled by the driver for any newer GPU.
fn compute_cap() -> String {
    if let Ok(cap) = std::env::var("CUDA_COMPUTE_CAP") {
        return cap.trim().replace('.', "");
    }
    let smi = Command::new("nvidia-smi").args(["--query-gpu=compute_cap", "--format=csv,noheader"]).output();
    if let Some(out) = smi.ok().filter(|o| o.status.success()) {
        if let Some(cap) = String::from_utf8_lossy(&out.stdout).lines().next().map(|l| l.trim().replace('.', "")).filter(|c| !c.is_empty()) {
            return cap;
        }
    }
    println!("cargo:warning=CUDA_COMPUTE_CAP not set and no GPU found: lincir's kernels are compiled for compute 8.0");
    "80".into()
}
