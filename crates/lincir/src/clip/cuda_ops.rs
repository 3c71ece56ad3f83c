//! The training ops on NVIDIA GPUs as fused kernels with their own backward
//! (`kernels/train_ops.cu`): layer norm, softmax over the last dimension, quick GELU and exact
//! GELU, in f32, bf16 or f16 storage with f32 arithmetic. They are the GPU counterparts of the
//! CPU's fused ops (`ops.rs`): without them, a training step on the GPU runs candle's unfused
//! compositions (about 8 kernels forward and 20 backward per layer norm, 5 and 8 per softmax, 3
//! and 6 per activation, each a pass over memory).
//!
//! Also, for products without a gradient in bf16/f16, `linear_bias`: the product and its bias in
//! one cuBLASLt call.
//!
//! **Off unless `LINCIR_CUDA_FUSED=1`** until the GPU check (`scripts/gpu_check.sh`, docs/GPU.md)
//! has measured them on a GPU: the kernels are tested on the CPU through an emulation of CUDA's
//! thread model (`scripts/check_cuda_kernels.sh`), and compiled by nvcc in every CUDA build, but
//! no GPU has run them yet.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage, Tensor, WithDType};

use super::ops::Act;
use crate::Result;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/train_ops.ptx"));
const MODULE: &str = "lincir_train_ops";
/// Threads per block of the row kernels (their shared scratch holds up to 1024).
const BLOCK: u32 = 256;

/// Whether the fused GPU ops are used: `LINCIR_CUDA_FUSED=1` (read once).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("LINCIR_CUDA_FUSED").is_ok_and(|v| v == "1"))
}

/// Whether `x` goes through the fused GPU ops: on a GPU, in a dtype they take, and enabled.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cuda() && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16) && enabled()
}

/// Threads per row: about two values per thread, 32 to 256 (a power of two dividing the block).
fn group_for(cols: usize) -> u32 {
    (cols.next_power_of_two() / 2).clamp(32, BLOCK as usize) as u32
}

/// A row kernel's arguments besides its tensors.
struct RowLaunch {
    cfg: LaunchConfig,
    group: u32,
    rows: i64,
    cols: i32,
}

/// The output of a row kernel over `l`'s rows, and its launch (None: no rows, nothing to run).
fn row_output<T: DeviceRepr>(dev: &CudaDevice, l: &Layout) -> candle_core::Result<(CudaSlice<T>, Option<RowLaunch>)> {
    let (rows, cols) = rows_cols(l);
    // SAFETY: the kernel launched with the RowLaunch writes every value.
    let out = unsafe { dev.alloc::<T>(rows * cols)? };
    if rows == 0 {
        return Ok((out, None));
    }
    let (cfg, group) = rows_config(rows, cols);
    Ok((out, Some(RowLaunch { cfg, group, rows: rows as i64, cols: cols as i32 })))
}

/// Launch shape of a row kernel over `rows` rows of `cols`, and its thread group per row.
fn rows_config(rows: usize, cols: usize) -> (LaunchConfig, u32) {
    let group = group_for(cols);
    let blocks = rows.div_ceil((BLOCK / group) as usize) as u32;
    (LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }, group)
}

/// Launches the kernel `lincir_{op}_{dtype}` of `T` with the arguments, in order.
macro_rules! launch {
    ($dev:expr, $T:ty, $op:literal, $cfg:expr, $($arg:expr),+) => {{
        let name = format!(concat!("lincir_", $op, "_{}"), <$T as WithDType>::DTYPE.as_str());
        let func = $dev.get_or_load_custom_func(&name, MODULE, PTX)?;
        let mut args = func.builder();
        $(args.arg($arg);)+
        // SAFETY: the arguments' types and order are the kernel's (kernels/train_ops.cu).
        unsafe { args.launch($cfg) }.w()?;
    }};
}

fn view<'a, T>(s: &'a CudaSlice<T>, l: &Layout, op: &str) -> candle_core::Result<CudaView<'a, T>> {
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("{op}: input must be contiguous") };
    Ok(s.slice(start..end))
}

/// (rows, cols) of a tensor seen as rows of its last dimension.
fn rows_cols(l: &Layout) -> (usize, usize) {
    let cols = l.shape().dims().last().copied().unwrap_or(1).max(1);
    (l.shape().elem_count() / cols, cols)
}

/// Calls `f` with a frozen f32 vector of `len` values on the GPU (a layer norm's weight or bias).
fn with_f32<R>(t: &Tensor, len: usize, op: &str, f: impl FnOnce(&CudaView<f32>) -> candle_core::Result<R>) -> candle_core::Result<R> {
    if t.elem_count() != len {
        candle_core::bail!("{op}: {} parameters for rows of {len}", t.elem_count());
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else { candle_core::bail!("{op}: parameters are not on the GPU") };
    f(&view(s.as_cuda_slice::<f32>()?, layout, op)?)
}

/// One kernel over one input, generic in the storage type.
trait Kernel1 {
    const NAME: &'static str;
    fn run<T: DeviceRepr + WithDType>(&self, x: &CudaView<T>, l: &Layout, dev: &CudaDevice) -> candle_core::Result<CudaSlice<T>>;

    fn apply(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = s.device().clone();
        let slice = match &s.slice {
            CudaStorageSlice::F32(x) => CudaStorageSlice::F32(self.run(&view(x, l, Self::NAME)?, l, &dev)?),
            CudaStorageSlice::BF16(x) => CudaStorageSlice::BF16(self.run(&view(x, l, Self::NAME)?, l, &dev)?),
            CudaStorageSlice::F16(x) => CudaStorageSlice::F16(self.run(&view(x, l, Self::NAME)?, l, &dev)?),
            _ => candle_core::bail!("{}: f32, bf16 or f16 only, not {:?}", Self::NAME, s.dtype()),
        };
        Ok((CudaStorage { slice, device: dev }, l.shape().clone()))
    }
}

/// One kernel over two inputs of the same shape and storage type (a backward pass: the forward's
/// input or output, and the output's gradient).
trait Kernel2 {
    const NAME: &'static str;
    fn run<T: DeviceRepr + WithDType>(&self, a: &CudaView<T>, b: &CudaView<T>, l: &Layout, dev: &CudaDevice) -> candle_core::Result<CudaSlice<T>>;

    fn apply(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("{}: shapes {:?} and {:?} differ", Self::NAME, l1.shape(), l2.shape());
        }
        let (dev, n) = (s1.device().clone(), Self::NAME);
        let slice = match (&s1.slice, &s2.slice) {
            (CudaStorageSlice::F32(a), CudaStorageSlice::F32(b)) => CudaStorageSlice::F32(self.run(&view(a, l1, n)?, &view(b, l2, n)?, l1, &dev)?),
            (CudaStorageSlice::BF16(a), CudaStorageSlice::BF16(b)) => CudaStorageSlice::BF16(self.run(&view(a, l1, n)?, &view(b, l2, n)?, l1, &dev)?),
            (CudaStorageSlice::F16(a), CudaStorageSlice::F16(b)) => CudaStorageSlice::F16(self.run(&view(a, l1, n)?, &view(b, l2, n)?, l1, &dev)?),
            _ => candle_core::bail!("{n}: f32, bf16 or f16 inputs of one dtype, not {:?} and {:?}", s1.dtype(), s2.dtype()),
        };
        Ok((CudaStorage { slice, device: dev }, l1.shape().clone()))
    }
}

fn gpu_only(op: &str) -> candle_core::Result<(CpuStorage, Shape)> {
    candle_core::bail!("{op}: a GPU op (clip::cuda_ops) was handed a CPU tensor")
}

/// candle's op plumbing for a [`Kernel1`] with an inherent
/// `backward(&self, x, y, grad) -> candle_core::Result<Tensor>` (the input gradient).
macro_rules! gpu_op1 {
    ($op:ty) => {
        impl CustomOp1 for $op {
            fn name(&self) -> &'static str {
                <Self as Kernel1>::NAME
            }
            fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
                gpu_only(<Self as Kernel1>::NAME)
            }
            fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
                self.apply(s, l)
            }
            fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
                self.backward(x, y, grad).map(Some)
            }
        }
    };
}

/// candle's op plumbing for a [`Kernel2`] (a backward pass: no gradient of its own).
macro_rules! gpu_op2 {
    ($op:ty) => {
        impl CustomOp2 for $op {
            fn name(&self) -> &'static str {
                <Self as Kernel2>::NAME
            }
            fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
                gpu_only(<Self as Kernel2>::NAME)
            }
            fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
                self.apply(s1, l1, s2, l2)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Layer norm over the last dimension, frozen weight and bias.

struct LayerNormOp {
    weight: Tensor, // f32, [cols]
    bias: Tensor,
    eps: f32,
}

impl Kernel1 for LayerNormOp {
    const NAME: &'static str = "cuda-layer-norm";
    fn run<T: DeviceRepr + WithDType>(&self, x: &CudaView<T>, l: &Layout, dev: &CudaDevice) -> candle_core::Result<CudaSlice<T>> {
        let (y, launch) = row_output::<T>(dev, l)?;
        let Some(RowLaunch { cfg, group, rows, cols }) = launch else { return Ok(y) };
        with_f32(&self.weight, cols as usize, Self::NAME, |w| {
            with_f32(&self.bias, cols as usize, Self::NAME, |b| {
                launch!(dev, T, "layer_norm_fwd", cfg, x, w, b, &y, &rows, &cols, &self.eps, &group);
                Ok(())
            })
        })?;
        Ok(y)
    }
}

impl LayerNormOp {
    fn backward(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        layer_norm_backward(x, grad, &self.weight, self.eps as f64)
    }
}

/// The input gradient of [`layer_norm`] at `x`, `g` being its output's gradient (one kernel).
pub fn layer_norm_backward(x: &Tensor, g: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let back = LayerNormBackward { weight: weight.to_dtype(DType::F32)?.contiguous()?, eps: eps as f32 };
    x.contiguous()?.apply_op2_no_bwd(&g.contiguous()?, &back)
}

gpu_op1!(LayerNormOp);

struct LayerNormBackward {
    weight: Tensor,
    eps: f32,
}

impl Kernel2 for LayerNormBackward {
    const NAME: &'static str = "cuda-layer-norm-backward";
    fn run<T: DeviceRepr + WithDType>(&self, x: &CudaView<T>, g: &CudaView<T>, l: &Layout, dev: &CudaDevice) -> candle_core::Result<CudaSlice<T>> {
        let (dx, launch) = row_output::<T>(dev, l)?;
        let Some(RowLaunch { cfg, group, rows, cols }) = launch else { return Ok(dx) };
        with_f32(&self.weight, cols as usize, Self::NAME, |w| {
            launch!(dev, T, "layer_norm_bwd", cfg, x, g, w, &dx, &rows, &cols, &self.eps, &group);
            Ok(())
        })?;
        Ok(dx)
    }
}

gpu_op2!(LayerNormBackward);

/// Layer norm over the last dimension, differentiable with respect to `x` (weight and bias are
/// frozen).
///
/// # Shapes
/// x: [..., w]; weight, bias: [w] -> [..., w]
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let f32_param = |t: &Tensor| t.to_dtype(DType::F32)?.contiguous();
    let op = LayerNormOp { weight: f32_param(weight)?, bias: f32_param(bias)?, eps: eps as f32 };
    Ok(x.contiguous()?.apply_op1(op)?)
}

// ---------------------------------------------------------------------------------------------
// Softmax over the last dimension.

struct SoftmaxOp;

impl Kernel1 for SoftmaxOp {
    const NAME: &'static str = "cuda-softmax";
    fn run<T: DeviceRepr + WithDType>(&self, x: &CudaView<T>, l: &Layout, dev: &CudaDevice) -> candle_core::Result<CudaSlice<T>> {
        let (y, launch) = row_output::<T>(dev, l)?;
        let Some(RowLaunch { cfg, group, rows, cols }) = launch else { return Ok(y) };
        launch!(dev, T, "softmax_fwd", cfg, x, &y, &rows, &cols, &group);
        Ok(y)
    }
}

impl SoftmaxOp {
    fn backward(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        softmax_backward(y, grad)
    }
}

/// The input gradient of a softmax over the last dimension from its output `y` and the output's
/// gradient `g` (one kernel).
pub fn softmax_backward(y: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    y.contiguous()?.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBackward)
}

gpu_op1!(SoftmaxOp);

struct SoftmaxBackward;

impl Kernel2 for SoftmaxBackward {
    const NAME: &'static str = "cuda-softmax-backward";
    fn run<T: DeviceRepr + WithDType>(&self, y: &CudaView<T>, g: &CudaView<T>, l: &Layout, dev: &CudaDevice) -> candle_core::Result<CudaSlice<T>> {
        let (dx, launch) = row_output::<T>(dev, l)?;
        let Some(RowLaunch { cfg, group, rows, cols }) = launch else { return Ok(dx) };
        launch!(dev, T, "softmax_bwd", cfg, y, g, &dx, &rows, &cols, &group);
        Ok(dx)
    }
}

gpu_op2!(SoftmaxBackward);

/// Differentiable softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(SoftmaxOp)?)
}

// ---------------------------------------------------------------------------------------------
// Activations.

/// An elementwise kernel's launch shape and value count.
struct ElementwiseLaunch {
    cfg: LaunchConfig,
    count: i64,
}

/// The output of an elementwise kernel over `l`'s values, and its launch (None: no values). At
/// most 64k blocks of 256: the kernel strides over the rest.
fn elementwise_output<T: DeviceRepr>(dev: &CudaDevice, l: &Layout) -> candle_core::Result<(CudaSlice<T>, Option<ElementwiseLaunch>)> {
    let n = l.shape().elem_count();
    // SAFETY: the kernel launched with the returned shape writes every value.
    let out = unsafe { dev.alloc::<T>(n)? };
    if n == 0 {
        return Ok((out, None));
    }
    let blocks = n.div_ceil(BLOCK as usize).min(65_536) as u32;
    Ok((out, Some(ElementwiseLaunch { cfg: LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }, count: n as i64 })))
}

struct ActOp(Act);

impl Kernel1 for ActOp {
    const NAME: &'static str = "cuda-activation";
    fn run<T: DeviceRepr + WithDType>(&self, x: &CudaView<T>, l: &Layout, dev: &CudaDevice) -> candle_core::Result<CudaSlice<T>> {
        let (y, launch) = elementwise_output::<T>(dev, l)?;
        let Some(ElementwiseLaunch { cfg, count }) = launch else { return Ok(y) };
        let kind = self.0 as i32;
        launch!(dev, T, "act_fwd", cfg, x, &y, &count, &kind);
        Ok(y)
    }
}

impl ActOp {
    fn backward(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        activation_backward(self.0, x, grad)
    }
}

/// The input gradient of the activation at `x`, `g` being its output's gradient (one kernel).
pub fn activation_backward(act: Act, x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&g.contiguous()?, &ActBackward(act))
}

gpu_op1!(ActOp);

struct ActBackward(Act);

impl Kernel2 for ActBackward {
    const NAME: &'static str = "cuda-activation-backward";
    fn run<T: DeviceRepr + WithDType>(&self, x: &CudaView<T>, g: &CudaView<T>, l: &Layout, dev: &CudaDevice) -> candle_core::Result<CudaSlice<T>> {
        let (dx, launch) = elementwise_output::<T>(dev, l)?;
        let Some(ElementwiseLaunch { cfg, count }) = launch else { return Ok(dx) };
        let kind = self.0 as i32;
        launch!(dev, T, "act_bwd", cfg, x, g, &dx, &count, &kind);
        Ok(dx)
    }
}

gpu_op2!(ActBackward);

/// A differentiable activation (with respect to `x`); with `grad` false, the value alone (one
/// kernel, no graph).
pub fn activation(x: &Tensor, act: Act, grad: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    Ok(if grad { x.apply_op1(ActOp(act))? } else { x.apply_op1_no_bwd(&ActOp(act))? })
}

// ---------------------------------------------------------------------------------------------
// y = x W + b in one cuBLASLt call (the bias added by the product's epilogue), bf16 and f16.

/// One cuBLASLt handle (and its workspace) per GPU, made on first use. Its workspace is shared by
/// the threads using that GPU: `serve` lets one query at a time use it (`Searcher::search`), the
/// other commands compute on one thread.
fn blas_lt(dev: &CudaDevice) -> candle_core::Result<std::sync::Arc<CudaBlasLT>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    static HANDLES: OnceLock<Mutex<HashMap<usize, Arc<CudaBlasLT>>>> = OnceLock::new();
    let mut handles = HANDLES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let ordinal = dev.cuda_stream().context().ordinal();
    if let Some(h) = handles.get(&ordinal) {
        return Ok(h.clone());
    }
    let handle = Arc::new(CudaBlasLT::new(dev.cuda_stream()).map_err(|e| candle_core::Error::Cuda(Box::new(e)))?);
    handles.insert(ordinal, handle.clone());
    Ok(handle)
}

/// `x [rows, in] · weight_t [in, out] + bias [out]`, frozen weight and bias, no gradient.
struct LinearBiasOp {
    weight_t: Tensor,
    bias: Tensor,
}

impl LinearBiasOp {
    /// y = x w + b for contiguous views, x being [rows, inputs] and w [inputs, outputs].
    fn run<T: DeviceRepr + WithDType>(
        x: &CudaView<T>,
        w: &CudaView<T>,
        b: &CudaView<T>,
        (rows, inputs, outputs): (usize, usize, usize),
        dev: &CudaDevice,
    ) -> candle_core::Result<CudaSlice<T>>
    where
        CudaBlasLT: Matmul<T>,
    {
        // SAFETY: the product below writes every value.
        let mut y = unsafe { dev.alloc::<T>(rows * outputs)? };
        if rows == 0 {
            return Ok(y);
        }
        // cuBLASLt is column-major: the row-major y [rows, out] = x W is, column-major,
        // yᵀ [out, rows] = Wᵀ [out, in] · xᵀ [in, rows], each operand read as stored; the bias runs
        // along yᵀ's rows (one value per output feature).
        let cfg = MatmulConfig {
            transa: false,
            transb: false,
            transc: false,
            m: outputs as u64,
            n: rows as u64,
            k: inputs as u64,
            alpha: 1.0,
            lda: outputs as i64,
            ldb: inputs as i64,
            beta: 0.0,
            ldc: outputs as i64,
            stride_a: None,
            stride_b: None,
            stride_c: None,
            stride_bias: None,
            batch_size: None,
        };
        // SAFETY: the views hold the shapes the caller checked, y holds rows x outputs.
        unsafe { blas_lt(dev)?.matmul(cfg, w, x, &mut y, Some(b), None) }.map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
        Ok(y)
    }
}

impl CustomOp1 for LinearBiasOp {
    fn name(&self) -> &'static str {
        "cuda-linear-bias"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        gpu_only("cuda-linear-bias")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        const NAME: &str = "cuda-linear-bias";
        let dev = s.device().clone();
        let (ws, wl) = self.weight_t.storage_and_layout();
        let (bs, bl) = self.bias.storage_and_layout();
        let (Storage::Cuda(ws), Storage::Cuda(bs)) = (&*ws, &*bs) else { candle_core::bail!("{NAME}: weight or bias not on the GPU") };
        let (rows, inputs) = l.shape().dims2()?;
        let (w_inputs, outputs) = wl.shape().dims2()?;
        if w_inputs != inputs || bl.shape().elem_count() != outputs {
            candle_core::bail!("{NAME}: x {:?}, weight {:?}, bias {:?}", l.shape(), wl.shape(), bl.shape());
        }
        let dims = (rows, inputs, outputs);
        let slice = match (&s.slice, &ws.slice, &bs.slice) {
            (CudaStorageSlice::BF16(x), CudaStorageSlice::BF16(w), CudaStorageSlice::BF16(b)) => {
                CudaStorageSlice::BF16(Self::run(&view(x, l, NAME)?, &view(w, wl, NAME)?, &view(b, bl, NAME)?, dims, &dev)?)
            }
            (CudaStorageSlice::F16(x), CudaStorageSlice::F16(w), CudaStorageSlice::F16(b)) => {
                CudaStorageSlice::F16(Self::run(&view(x, l, NAME)?, &view(w, wl, NAME)?, &view(b, bl, NAME)?, dims, &dev)?)
            }
            _ => candle_core::bail!("{NAME}: bf16 or f16 of one dtype only"),
        };
        Ok((CudaStorage { slice, device: dev }, Shape::from((rows, outputs))))
    }
}

/// Prints `message` on stderr the first time only (a fallback taken for the rest of the run).
pub fn warn_once(message: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| eprintln!("warning: {message}"));
}

/// Whether `x · weight_t + bias` goes through [`linear_bias`]: the fused GPU ops enabled, and x,
/// the weight and the bias on the GPU in bf16 or f16 alike (in f32 cuBLASLt's product would
/// round through TF32; f32 stays on cuBLAS), and no gradient to carry.
pub fn linear_bias_applies(x: &Tensor, weight_t: &Tensor, bias: &Tensor) -> bool {
    applies(x) && matches!(x.dtype(), DType::BF16 | DType::F16) && weight_t.dtype() == x.dtype() && bias.dtype() == x.dtype() && !x.track_op()
}

/// `x [rows, in] · weight_t [in, out] + bias [out]` in one cuBLASLt product whose epilogue adds
/// the bias (candle's product and a broadcast addition are two passes over the output).
pub fn linear_bias(x: &Tensor, weight_t: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let op = LinearBiasOp { weight_t: weight_t.contiguous()?, bias: bias.contiguous()? };
    Ok(x.contiguous()?.apply_op1_no_bwd(&op)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_groups_are_powers_of_two_dividing_the_block() {
        for cols in [1, 7, 32, 40, 77, 512, 768, 1280, 5000] {
            let g = group_for(cols);
            assert!(g.is_power_of_two() && BLOCK.is_multiple_of(g) && (32..=BLOCK).contains(&g), "cols {cols}: group {g}");
        }
        assert_eq!(group_for(40), 32);
        assert_eq!(group_for(77), 64);
        assert_eq!(group_for(1280), 256);
        let (cfg, group) = rows_config(1001, 77);
        assert_eq!((cfg.grid_dim.0, group), (251, 64)); // 4 rows per block
    }
}
