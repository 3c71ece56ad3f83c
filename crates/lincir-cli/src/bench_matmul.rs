//! `lincir bench matmul`: how fast this CPU runs the matrix products CLIP is made of, next to
//! the CPU's measured arithmetic peak, for candle's kernel and any BLAS named with `--blas`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::Args;
use lincir::clip::panel;

#[derive(Args)]
pub struct MatmulBenchArgs {
    /// Also measure these BLAS libraries (openblas, mkl, blis, or a path); repeatable.
    #[arg(long)]
    blas: Vec<String>,
    /// Seconds spent on each product and backend (at least 2 repetitions).
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    /// Write the numbers as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The products of a ViT-L/14 CLIP: (what, m, k, n) for x[m, k] · W[k, n].
const PRODUCTS: [(&str, usize, usize, usize); 9] = [
    ("image fc1, batch 32 (8224 tokens), 1024 -> 4096", 32 * 257, 1024, 4096),
    ("image qkv, batch 32, 1024 -> 3072", 32 * 257, 1024, 3072),
    ("image fc2, batch 32, 4096 -> 1024", 32 * 257, 4096, 1024),
    ("text fc1, 32 captions (586 tokens), 768 -> 3072", 586, 768, 3072),
    ("text fc2, 32 captions, 3072 -> 768", 586, 3072, 768),
    ("text fc1, one query (12 tokens), 768 -> 3072", 12, 768, 3072),
    ("text fc2, one query, 3072 -> 768", 12, 3072, 768),
    ("text fc1, 2 queries (30 tokens), 768 -> 3072", 30, 768, 3072),
    ("square 2048", 2048, 2048, 2048),
];

/// Attention's batched products of a ViT-L/14 image batch of 32: (what, batch, m, k, n).
const ATTENTION: [(&str, usize, usize, usize, usize); 2] = [
    ("image attention q·kᵀ, 32 x 16 heads, 257x64 · 64x257", 32 * 16, 257, 64, 257),
    ("image attention p·v, 32 x 16 heads, 257x257 · 257x64", 32 * 16, 257, 257, 64),
];

/// Median seconds of `f` over repetitions filling `budget` seconds (one warm-up first).
fn time(budget: f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 2 || (started.elapsed().as_secs_f64() < budget && times.len() < 200) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub fn run(args: MatmulBenchArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    let peak = fma_peak_gflops(threads);
    let libraries = args.blas.iter().map(|name| lincir::clip::blas::load(name)).collect::<lincir::Result<Vec<_>>>()?;
    let mut rng = lincir::rng::Rng::new(1);
    let mut rows = Vec::new();
    // candle's kernel alone, then lincir's layer (its packed panels, or LINCIR_BLAS if set).
    let mut names = vec!["candle gemm".to_string(), format!("lincir layer ({})", lincir::clip::blas::describe()), "lincir layer, bf16 weights".to_string()];
    names.extend(libraries.iter().map(|l| l.library.clone()));
    let kernels = other_kernels();
    names.extend(kernels.iter().map(|(isa, bf16)| format!("kernel {}, {}", isa.name(), if *bf16 { "bf16" } else { "f32" })));
    print!("{:<50}", format!("GFLOP/s, {threads} threads"));
    for n in &names {
        print!(" {:>24}", short(n));
    }
    println!();
    for (what, m, k, n) in PRODUCTS {
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
        let flops = 2.0 * (m * k * n) as f64;
        let (ta, tb) = (Tensor::from_slice(&a, (m, k), &Device::Cpu)?, Tensor::from_slice(&b, (k, n), &Device::Cpu)?);
        let layer = lincir::clip::nn::Linear::new(&tb.t()?, None)?;
        let layer_bf16 = lincir::clip::nn::Linear::new(&tb.t()?.to_dtype(candle_core::DType::BF16)?, None)?;
        let mut results = vec![
            flops / time(args.seconds, || {
                ta.matmul(&tb)?;
                Ok(())
            })? / 1e9,
            flops / time(args.seconds, || {
                layer.forward(&ta)?;
                Ok(())
            })? / 1e9,
            flops / time(args.seconds, || {
                layer_bf16.forward(&ta)?;
                Ok(())
            })? / 1e9,
        ];
        for lib in &libraries {
            results.push(flops / time(args.seconds, || {
                lib.matmul(&a, &b, m, n, k, false)?;
                Ok(())
            })? / 1e9);
        }
        let packed = (panel::Packed::new(&b, k, n), panel::Packed::new(&b.iter().map(|&v| half::bf16::from_f32(v)).collect::<Vec<_>>(), k, n));
        for &(isa, bf16) in &kernels {
            results.push(flops / time(args.seconds, || {
                let y = match (&packed, bf16) {
                    ((Some(w), _), false) => panel::matmul_on(isa, &a, m, w),
                    ((_, Some(w)), true) => panel::matmul_on(isa, &a, m, w),
                    _ => None,
                };
                y.map(|_| ()).ok_or_else(|| anyhow::anyhow!("the {} kernel did not run", isa.name()))
            })? / 1e9);
        }
        print!("{what:<50}");
        for r in &results {
            print!(" {r:>24.1}");
        }
        println!();
        rows.push(serde_json::json!({"product": what, "m": m, "k": k, "n": n,
            "gflops": names.iter().zip(&results).map(|(n, r)| (n.clone(), serde_json::json!(r))).collect::<serde_json::Map<_, _>>()}));
    }
    // Attention's products: many small ones, batched over images and heads: candle's batched
    // product, lincir's batched product (one item per thread, the gemm crate's kernel; the
    // training path's), then the vision layers' per-head product (each item's second operand
    // packed into panels, the micro-kernel reading the first in place; `unmasked_layer.rs`). The
    // frozen-weight backends do not apply.
    for (what, batch, m, k, n) in ATTENTION {
        let a = Tensor::randn(0f32, 1f32, (batch, m, k), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1f32, (batch, k, n), &Device::Cpu)?;
        let flops = 2.0 * (batch * m * k * n) as f64;
        let g = flops / time(args.seconds, || {
            a.matmul(&b)?;
            Ok(())
        })? / 1e9;
        let ours = flops / time(args.seconds, || {
            lincir::clip::batched::matmul(&a, &b)?;
            Ok(())
        })? / 1e9;
        let per_head = if panel::enabled() {
            let (av, bv) = (a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?);
            Some(flops / time(args.seconds, || per_head_products(&av, &bv, batch, m, k, n))? / 1e9)
        } else {
            None
        };
        println!("{what:<50} {g:>24.1} {ours:>24.1} {:>24}", per_head.map_or("-".into(), |p| format!("{p:.1}")));
        rows.push(serde_json::json!({"product": what, "batch": batch, "m": m, "k": k, "n": n, "gflops": {"candle gemm": g, "lincir batched": ours, "lincir per head (panels)": per_head}}));
    }
    println!("{:<50} {:>24.1}", "arithmetic peak (FMA loop, measured)", peak.0);
    let peak_bf16 = bf16_peak_gflops(threads);
    if let Some(p) = peak_bf16 {
        println!("{:<50} {:>24.1}", "bf16 peak (vdpbf16ps loop, measured)", p);
    }
    let peak_int8 = int8_peak_gops(threads);
    if let Some(p) = peak_int8 {
        println!("{:<50} {:>24.1}", "int8 peak GOP/s (vpdpbusd loop, measured)", p);
    }
    let bandwidth = memory_read_gbps();
    println!("{:<50} {:>24.1}", "memory read GB/s (1 GiB, all threads)", bandwidth);
    let report = serde_json::json!({
        "tool": "lincir", "cpu": lincir::device::cpu_model(), "cpu_features": lincir::device::cpu_features(),
        "threads": threads, "kernel": panel::isa().name(), "peak_gflops_measured": peak.0, "peak_kernel": peak.1, "peak_bf16_gflops_measured": peak_bf16, "peak_int8_gops_measured": peak_int8, "memory_read_gbps": bandwidth, "products": rows,
    });
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// `batch` products `a[i] · b[i]` as the vision layers run attention's: per item, on one thread,
/// `b[i]` packed into panels and `a[i]` read in place.
fn per_head_products(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize) -> Result<()> {
    use rayon::prelude::*;
    let isa = panel::isa();
    let mut y = vec![0f32; batch * m * n];
    y.par_chunks_mut(m * n).enumerate().try_for_each_init(Vec::new, |buffer, (i, y)| {
        let w = panel::Packed::from_rows(std::mem::take(buffer), &b[i * k * n..][..k * n], n, k, n).ok_or_else(|| anyhow::anyhow!("packing failed"))?;
        panel::matmul_rows_serial(isa, &a[i * m * k..][..m * k], k, m, &w, y, n).ok_or_else(|| anyhow::anyhow!("the {} kernel did not run", isa.name()))?;
        *buffer = w.into_buffer();
        Ok(())
    })
}

/// The micro-kernels this CPU has besides the ones the layers use (`panel::isa()`), as (kernel,
/// bf16 weights?): on a CPU with AVX-512 the narrower kernels may be as fast or faster (a
/// 512-bit instruction runs as two 256-bit halves on AMD's Zen 4), and `LINCIR_KERNEL` chooses.
fn other_kernels() -> Vec<(panel::Isa, bool)> {
    use panel::Isa;
    let chosen = panel::isa();
    // f32 weights run the same kernel under Avx512 and Avx512Bf16.
    let f32_kernel = |isa: Isa| isa.min(Isa::Avx512);
    let mut out = Vec::new();
    for &isa in Isa::supported() {
        if isa <= Isa::Avx512 && f32_kernel(isa) != f32_kernel(chosen) {
            out.push((isa, false));
        }
        if isa != chosen {
            out.push((isa, true));
        }
    }
    out
}

/// Read bandwidth from memory: a 1 GiB f32 buffer summed by all threads (median of 5 passes);
/// what ranking f32 vectors and products with a dozen rows are limited by.
fn memory_read_gbps() -> f64 {
    use rayon::prelude::*;
    let data = vec![1f32; 256 << 20];
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            // Sixteen independent sums per chunk, so that the adds keep up with memory.
            let s: f32 = data
                .par_chunks(1 << 16)
                .map(|c| {
                    let lanes = c.chunks_exact(16).fold([0f32; 16], |mut a, x| {
                        for i in 0..16 {
                            a[i] += x[i];
                        }
                        a
                    });
                    lanes.iter().sum::<f32>()
                })
                .sum();
            std::hint::black_box(s);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (data.len() * 4) as f64 / times[2] / 1e9
}

fn short(library: &str) -> String {
    std::path::Path::new(library).file_name().map_or(library.to_string(), |f| f.to_string_lossy().into_owned())
}

/// The CPU's f32 arithmetic peak on `threads` threads: independent FMA chains in the widest
/// vectors the CPU has, so that nothing but the FMA units limits them. Returns (GFLOP/s, kernel).
pub fn fma_peak_gflops(threads: usize) -> (f64, &'static str) {
    let (kernel, flops_per_iter): (fn(u64) -> f32, f64) = pick_kernel();
    let secs = timed_on_threads(threads, || kernel(PEAK_ITERS));
    let name = match flops_per_iter as u64 {
        384 => "avx512 fma",
        192 => "avx2 fma",
        _ => "scalar",
    };
    (peak_rate(threads, secs, flops_per_iter / 12.0), name)
}

/// Seconds `threads` threads take to run `kernel` once each, the best of three tries: a peak
/// is what the CPU can do, and on a shared machine a try in which a neighbour took a core for a
/// while came out halved. On rayon's own threads where the count matches: separate threads would
/// compete with rayon's workers, which spin for a while after a parallel job.
fn timed_on_threads(threads: usize, kernel: impl Fn() -> f32 + Sync) -> f64 {
    let pool = (threads != rayon::current_num_threads()).then(|| rayon::ThreadPoolBuilder::new().num_threads(threads).build().ok()).flatten();
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let sink: f32 = match &pool {
                Some(pool) => pool.broadcast(|_| kernel()).into_iter().sum(),
                None => rayon::broadcast(|_| kernel()).into_iter().sum(),
            };
            std::hint::black_box(sink);
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Iterations of a peak loop (twelve instructions each): about 0.1 s on one core.
const PEAK_ITERS: u64 = 20_000_000;

/// Operations per second, in billions, of a twelve-instruction peak loop doing `ops` operations
/// per instruction on every one of `threads` threads.
fn peak_rate(threads: usize, secs: f64, ops: f64) -> f64 {
    threads as f64 * PEAK_ITERS as f64 * 12.0 * ops / secs / 1e9
}

/// The CPU's bf16 dot-product peak (`vdpbf16ps`, the `--dtype bf16` kernel's instruction) on
/// `threads` threads, in GFLOP/s; None where the CPU lacks AVX512_BF16.
pub fn bf16_peak_gflops(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the feature was detected. 16 lanes x 2 products x 2 flops an instruction.
        return Some(peak_rate(threads, timed_on_threads(threads, || unsafe { dpbf16_loop(PEAK_ITERS) }), 64.0));
    }
    let _ = threads;
    None
}

/// The CPU's int8 dot-product peak (`vpdpbusd`, AVX512_VNNI: u8 x i8 products summed in i32) on
/// `threads` threads, in GOP/s; None without AVX512_VNNI. lincir has no int8 path: this says
/// what one could gain over bf16 on this CPU (docs/PERFORMANCE.md).
pub fn int8_peak_gops(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni") {
        // SAFETY: the feature was detected. 16 lanes x 4 products x 2 operations an instruction.
        return Some(peak_rate(threads, timed_on_threads(threads, || unsafe { dpbusd_loop(PEAK_ITERS) }), 128.0));
    }
    let _ = threads;
    None
}

/// Twelve independent `vdpbf16ps` chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dpbf16_loop(n: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(1e-3)), _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.5)));
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..n {
        for s in acc.iter_mut() {
            *s = _mm512_dpbf16_ps(*s, a, b);
        }
    }
    _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, *a)))
}

/// Twelve independent `vpdpbusd` chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpbusd_loop(n: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-2));
    let mut acc = [_mm512_setzero_si512(); 12];
    for _ in 0..n {
        for s in acc.iter_mut() {
            *s = _mm512_dpbusd_epi32(*s, a, b);
        }
    }
    _mm512_reduce_add_epi32(acc.iter().fold(_mm512_setzero_si512(), |s, a| _mm512_add_epi32(s, *a))) as f32
}

#[cfg(target_arch = "x86_64")]
fn pick_kernel() -> (fn(u64) -> f32, f64) {
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was detected.
        (|n| unsafe { fma_avx512(n) }, 12.0 * 16.0 * 2.0)
    } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected.
        (|n| unsafe { fma_avx2(n) }, 12.0 * 8.0 * 2.0)
    } else {
        (fma_scalar, 2.0)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn pick_kernel() -> (fn(u64) -> f32, f64) {
    (fma_scalar, 2.0)
}

fn fma_scalar(n: u64) -> f32 {
    let mut a = 1.0f32;
    for _ in 0..n {
        a = std::hint::black_box(a).mul_add(0.999_999, 1e-7);
    }
    a
}

/// Twelve independent accumulators: enough to cover the FMA latency on two ports.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(n: u64) -> f32 {
    use std::arch::x86_64::*;
    let (m, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..n {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut out = [0f32; 8];
    let sum = acc.iter().fold(_mm256_setzero_ps(), |s, a| _mm256_add_ps(s, *a));
    _mm256_storeu_ps(out.as_mut_ptr(), sum);
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(n: u64) -> f32 {
    use std::arch::x86_64::*;
    let (m, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..n {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, *a)))
}
