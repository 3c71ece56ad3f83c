//! The fused GPU training ops (`clip::cuda_ops`, kernels/train_ops.cu) on a GPU: values and input
//! gradients in f32, bf16 and f16 storage against the CPU's f32 ops on the same (rounded) inputs,
//! which `clip::ops`'s own tests check against candle's compositions.
//!
//! Needs a CUDA build and a GPU: run by the GPU check (`scripts/gpu_check.sh`) with
//! `LINCIR_TEST_DEVICE=cuda`. Elsewhere (CI compiles it with `--no-run`) every test says it was
//! skipped and passes; on a GPU, a tolerance exceeded fails.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use lincir::clip::{cuda_ops, ops};

fn gpu() -> Option<Device> {
    let wanted = std::env::var("LINCIR_TEST_DEVICE").is_ok_and(|d| d.starts_with("cuda"));
    if !wanted {
        eprintln!("skipped: set LINCIR_TEST_DEVICE=cuda on a machine with a GPU");
        return None;
    }
    Some(Device::new_cuda(0).expect("LINCIR_TEST_DEVICE=cuda but no usable GPU 0"))
}

/// The storage's rounding, relative to the largest reference value.
fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 2e-5,
        DType::BF16 => 1.2e-2,
        _ => 2e-3,
    }
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
    let b = b.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
    let diff = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-30);
    assert!(diff.is_finite(), "not finite");
    diff / scale
}

/// `fused` on the GPU in `dtype` against `reference` on the CPU in f32, from the same rounded
/// input and output gradient: the values and the input gradients.
fn check(name: &str, gpu: &Device, x: &Tensor, fused: impl Fn(&Tensor) -> Tensor, reference: impl Fn(&Tensor) -> Tensor) {
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        // Rounded once to the storage type: both sides see the same numbers.
        let x_gpu = Var::from_tensor(&x.to_device(gpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
        let x_cpu = Var::from_tensor(&x_gpu.as_tensor().to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1.0, x.dims(), gpu).unwrap().to_dtype(dtype).unwrap();
        let r_cpu = r.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();

        let y = fused(x_gpu.as_tensor());
        assert_eq!(y.dtype(), dtype, "{name}: output dtype");
        let g = (&y * &r).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = g.get(x_gpu.as_tensor()).expect("input gradient");
        let y_ref = reference(x_cpu.as_tensor());
        let g_ref = (&y_ref * &r_cpu).unwrap().sum_all().unwrap().backward().unwrap();
        let gx_ref = g_ref.get(x_cpu.as_tensor()).expect("reference input gradient");

        let (ey, eg) = (max_rel(&y, &y_ref), max_rel(gx, gx_ref));
        eprintln!("{name} {dtype:?}: value {ey:.2e}, input gradient {eg:.2e} (tolerance {:.0e})", tolerance(dtype));
        assert!(ey <= tolerance(dtype), "{name} {dtype:?} value: {ey:.2e}");
        assert!(eg <= tolerance(dtype), "{name} {dtype:?} input gradient: {eg:.2e}");
    }
}

#[test]
fn fused_layer_norm_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    for (dims, width) in [(&[3usize, 37, 1280][..], 1280), (&[5, 48][..], 48), (&[2, 77][..], 77)] {
        let x = (Tensor::randn(0.5f32, 2.0, dims, &Device::Cpu).unwrap()).to_dtype(DType::F32).unwrap();
        let w = Tensor::randn(1f32, 0.3, width, &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 0.3, width, &Device::Cpu).unwrap();
        let (wg, bg) = (w.to_device(&gpu).unwrap(), b.to_device(&gpu).unwrap());
        check(
            &format!("layer norm {dims:?}"),
            &gpu,
            &x,
            |x| {
                // The model's parameters are in the model's dtype; the op widens them.
                cuda_ops::layer_norm(x, &wg.to_dtype(x.dtype()).unwrap(), &bg.to_dtype(x.dtype()).unwrap(), 1e-5).unwrap()
            },
            |x| ops::layer_norm(x, &w, &b, 1e-5).unwrap(),
        );
    }
}

#[test]
fn fused_softmax_matches_the_cpu_with_a_causal_mask() {
    let Some(gpu) = gpu() else { return };
    // Attention's scores: [batch * heads, longest, longest] plus the causal mask.
    let (bh, s) = (40, 40);
    let mask: Vec<f32> = (0..s).flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    let mask = Tensor::from_vec(mask, (s, s), &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 3.0, (bh, s, s), &Device::Cpu).unwrap().broadcast_add(&mask).unwrap();
    check("softmax causal", &gpu, &x, |x| cuda_ops::softmax_last_dim(x).unwrap(), |x| ops::softmax_last_dim(x).unwrap());
    let x = Tensor::randn(0f32, 3.0, (7, 1280), &Device::Cpu).unwrap();
    check("softmax wide", &gpu, &x, |x| cuda_ops::softmax_last_dim(x).unwrap(), |x| ops::softmax_last_dim(x).unwrap());
}

#[test]
fn fused_activations_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::randn(0f32, 3.0, (3, 5, 5120), &Device::Cpu).unwrap();
    check("quick gelu", &gpu, &x, |x| cuda_ops::activation(x, ops::Act::QuickGelu, true).unwrap(), |x| ops::quick_gelu(x).unwrap());
    check("gelu (erf)", &gpu, &x, |x| cuda_ops::activation(x, ops::Act::GeluErf, true).unwrap(), |x| ops::gelu_erf(x).unwrap());
    // Without the graph (inference): the same values.
    let xg = x.to_device(&gpu).unwrap();
    let a = cuda_ops::activation(&xg, ops::Act::QuickGelu, false).unwrap();
    let b = cuda_ops::activation(&xg, ops::Act::QuickGelu, true).unwrap();
    assert_eq!(max_rel(&a, &b), 0.0);
}
