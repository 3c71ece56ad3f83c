//! `lincir bench encode`: texts/s and images/s of a CLIP on this machine, written as JSON.
//! scripts/bench_encode_torch.py measures the same workload with transformers for comparison.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Tensor;
use clap::{Args, Subcommand};
use lincir::clip::{preprocess, tokenizer::pad_batch, Clip};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Text and image encoding throughput of a CLIP model.
    Encode(EncodeArgs),
    /// Training throughput (samples/s) of the SMP step, data preparation included.
    Train(TrainBenchArgs),
    /// Search latency (query encoding + exact ranking) over a synthetic index.
    Search(SearchBenchArgs),
    /// GFLOP/s of CLIP's matrix products (builtin kernel and named BLAS libraries) next to the
    /// CPU's measured peak.
    Matmul(crate::bench_matmul::MatmulBenchArgs),
}

#[derive(Args)]
pub struct SearchBenchArgs {
    #[command(flatten)]
    compute: crate::compute::ComputeArgs,
    /// CLIP model whose text tower encodes the queries (the index width is its projection dim).
    #[arg(long)]
    model: String,
    /// Synthetic index entries (random unit vectors).
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Timed queries (after 5 warm-up queries).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Write the numbers as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    compute: crate::compute::ComputeArgs,
    /// CLIP model: a local directory or a hub id (only the text tower is loaded).
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 6)]
    steps: u64,
    /// Write the numbers as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    compute: crate::compute::ComputeArgs,
    /// CLIP model: a local directory or a hub id.
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Timed text batches (after one warm-up batch).
    #[arg(long, default_value_t = 5)]
    text_batches: usize,
    /// Timed image batches (after one warm-up batch); 0 skips images.
    #[arg(long, default_value_t = 2)]
    image_batches: usize,
    /// Write the numbers as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Encode(args) => encode(args),
        BenchCommand::Train(args) => train_step(args),
        BenchCommand::Search(args) => search_latency(args),
        BenchCommand::Matmul(args) => crate::bench_matmul::run(args),
    }
}

/// Deterministic caption-like texts of 8 to 24 words (the length of real captions).
pub fn synthetic_captions(n: usize, seed: u64) -> Vec<String> {
    const WORDS: &[&str] = &[
        "a", "the", "photo", "of", "man", "woman", "dog", "cat", "red", "blue", "small", "large", "riding",
        "horse", "on", "beach", "at", "sunset", "with", "two", "people", "standing", "next", "to", "car",
        "wooden", "table", "in", "kitchen", "green", "field", "under", "cloudy", "sky", "holding", "umbrella",
    ];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let len = 8 + next() % 17;
            (0..len).map(|_| WORDS[next() % WORDS.len()]).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// The CPU (always: it decodes, tokenises and ranks), and the device CLIP ran on.
fn machine(device: &candle_core::Device) -> String {
    let cpu = format!("{}, {} threads", lincir::device::cpu_model(), candle_core::utils::get_num_threads());
    if device.is_cpu() {
        cpu
    } else {
        let fused = if lincir::device::fused_gpu_kernels() { ", fused kernels" } else { "" };
        format!("{}{fused} (host: {cpu})", lincir::device::name(device))
    }
}

fn encode(args: EncodeArgs) -> Result<()> {
    if args.batch_size == 0 || args.text_batches == 0 {
        bail!("--batch-size and --text-batches must be at least 1");
    }
    let clip = Clip::load(&args.model, &args.compute.load_options(lincir::clip::Towers::Both)?)?;
    let b = args.batch_size;

    // Texts: tokenise + pad to the batch's longest + encode, as `lincir embed` does.
    let texts = synthetic_captions(b * (args.text_batches + 1), 0);
    let tower = clip.text()?;
    let mut text_secs = 0.0;
    let (mut tokens, mut text_flops) = (0usize, 0f64);
    for (i, chunk) in texts.chunks(b).enumerate() {
        let t = Instant::now();
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let ids = clip.tokenizer.encode_batch(&refs)?;
        tokens += ids.iter().map(Vec::len).sum::<usize>();
        let out = tower.embed(&pad_batch(&ids, &clip.device)?)?;
        out.to_vec2::<f32>()?;
        if i > 0 {
            text_secs += t.elapsed().as_secs_f64();
            // The work each sentence needs (up to its end), whatever padding a runtime adds.
            text_flops += ids.iter().map(|s| clip.config.text.tower.forward_flops(s.len())).sum::<f64>();
        }
    }
    let texts_per_s = (b * args.text_batches) as f64 / text_secs;

    // Images: the vision tower on preprocessed pixels; preprocessing measured on its own.
    let mut images_per_s = None;
    if args.image_batches > 0 {
        let s = clip.config.vision.image_size;
        let pixels = Tensor::randn(0f32, 1f32, (b, 3, s, s), &clip.device)?;
        let vision = clip.vision()?;
        let mut secs = 0.0;
        for i in 0..=args.image_batches {
            let t = Instant::now();
            vision.embed(&pixels)?.to_vec2::<f32>()?;
            if i > 0 {
                secs += t.elapsed().as_secs_f64();
            }
        }
        images_per_s = Some((b * args.image_batches) as f64 / secs);
    }
    let preprocess_per_s = preprocess_rate(&clip.preprocess, (640, 480), 1, false)?;
    // What feeds the tower from files (on a GPU, CPU threads decode while it computes): JPEG
    // decoding and preprocessing on every thread, at a benchmark image's size and a phone photo's.
    let threads = rayon::current_num_threads();
    let feed_small = preprocess_rate(&clip.preprocess, (640, 480), threads, true)?;
    let feed_photo = preprocess_rate(&clip.preprocess, (4032, 3024), threads, true)?;
    // The same photo with `--jpeg-decode fast` (decoded at a reduced size).
    let fast = preprocess::PreprocessConfig { jpeg: preprocess::JpegDecode::Fast, ..clip.preprocess.clone() };
    let feed_photo_fast = preprocess_rate(&fast, (4032, 3024), threads, true)?;
    let text_gflops = text_flops / text_secs / 1e9;
    let image_gflops = images_per_s.map(|v| v * clip.config.vision.forward_flops() / 1e9);
    let peak = clip.device.is_cpu().then(|| crate::bench_matmul::fma_peak_gflops(rayon::current_num_threads()));
    // In bf16 the products run at the bf16 peak where the CPU has vdpbf16ps.
    let peak_bf16 = (clip.device.is_cpu() && clip.dtype() == candle_core::DType::BF16).then(|| crate::bench_matmul::bf16_peak_gflops(rayon::current_num_threads())).flatten();

    let report = serde_json::json!({
        "tool": "lincir",
        "model": clip.name,
        "machine": machine(&clip.device),
        "device": lincir::device::name(&clip.device),
        "batch_size": b,
        "dtype": lincir::device::dtype_name(clip.dtype()),
        "texts_per_s": texts_per_s,
        "mean_tokens_per_text": tokens as f64 / texts.len() as f64,
        "images_per_s": images_per_s,
        "preprocess_640x480_per_s_one_thread": preprocess_per_s,
        "decode_preprocess_jpeg_640x480_per_s": feed_small,
        "decode_preprocess_jpeg_4032x3024_per_s": feed_photo,
        "decode_preprocess_jpeg_4032x3024_fast_per_s": feed_photo_fast,
        "jpeg_simd": cfg!(feature = "jpeg-simd"),
        "cpu_features": lincir::device::cpu_features(),
        "matmul": lincir::clip::blas::describe(),
        "text_gflops": text_gflops,
        "image_gflops": image_gflops,
        "gflop_per_image": clip.config.vision.forward_flops() / 1e9,
        "peak_gflops_measured": peak.map(|p| p.0),
        "peak_kernel": peak.map(|p| p.1),
        "peak_bf16_gflops_measured": peak_bf16,
    });
    println!("{:<44} {:>12}", "measure", "value");
    println!("{:<44} {:>12.1}", "texts/s (batch, padded to longest)", texts_per_s);
    if let Some(v) = images_per_s {
        println!("{:<44} {:>12.2}", "images/s (vision tower)", v);
    }
    println!("{:<44} {:>12.1}", "preprocess 640x480 -> crop, images/s (1 thread)", preprocess_per_s);
    println!("{:<44} {:>12.1}", format!("decode+preprocess JPEG 640x480 ({threads} threads)"), feed_small);
    println!("{:<44} {:>12.1}", format!("decode+preprocess JPEG 4032x3024 ({threads} threads)"), feed_photo);
    println!("{:<44} {:>12.1}", "  the same, --jpeg-decode fast", feed_photo_fast);
    println!("{:<44} {:>12.1}", "text tower GFLOP/s (useful work)", text_gflops);
    if let Some(v) = image_gflops {
        println!("{:<44} {:>12.1}", "vision tower GFLOP/s", v);
    }
    if let Some((p, kernel)) = peak {
        println!("{:<44} {:>12.1}", format!("CPU peak GFLOP/s ({kernel} loop)"), p);
    }
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// Runs the real training loop on synthetic captions and reports the median samples/s per step.
fn train_step(args: TrainBenchArgs) -> Result<()> {
    use lincir::smp::{corpus::Corpus, train};
    if args.batch_size == 0 || args.steps == 0 {
        bail!("--batch-size and --steps must be at least 1");
    }
    let clip = Clip::load(&args.model, &args.compute.load_options(lincir::clip::Towers::Text)?)?;
    let work = std::env::temp_dir().join(format!("lincir-bench-train-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let captions = work.join("captions.txt");
    let texts = synthetic_captions(args.batch_size * (args.steps as usize + 1), 1);
    std::fs::write(&captions, texts.join("\n"))?;
    // The useful work of a sample: the clean caption's forward pass (the target), the masked
    // caption's forward pass and its input-gradient backward (about one forward each), at each
    // caption's own length: what the step needs, whatever padding a runtime adds.
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = clip.tokenizer.encode_batch(&refs)?;
    let flop_per_sample = 3.0 * ids.iter().map(|s| clip.config.text.tower.forward_flops(s.len())).sum::<f64>() / ids.len().max(1) as f64;
    let text = clip.text()?;
    let phi = lincir::phi::PhiConfig::for_backbone(text.projection_dim(), text.width());
    let cfg = train::TrainConfig {
        batch_size: args.batch_size,
        max_steps: args.steps + 1,
        checkpointing_steps: u64::MAX,
        // No shuffling: the captions come in the order PyTorch's side reads them.
        shuffle_buffer: 1,
        ..train::TrainConfig::paper(&args.model, vec![captions.display().to_string()], phi)
    };
    let corpus = Corpus::open(&cfg.captions, "text")?;
    let mut rates = Vec::new();
    let result = train::train(&cfg, &clip, &corpus, &lincir::smp::keywords::keywords, &work.join("run"), false, &mut |e| {
        if let train::Event::Step(r) = e {
            if r.step > 1 {
                rates.push(r.samples_per_s);
            }
        }
    });
    let _ = std::fs::remove_dir_all(&work);
    result?;
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let report = serde_json::json!({
        "tool": "lincir",
        "model": clip.name,
        "machine": machine(&clip.device),
        "device": lincir::device::name(&clip.device),
        "batch_size": args.batch_size,
        "dtype": lincir::device::dtype_name(clip.dtype()),
        "text_backward": text.training_path(),
        "samples_per_s": median,
        "steps_timed": rates.len(),
        "gflop_per_sample": flop_per_sample / 1e9,
        "useful_gflops": median * flop_per_sample / 1e9,
    });
    println!("{:<44} {:>12}", "measure", "value");
    println!("{:<44} {:>12.2}", "training samples/s (median step)", median);
    println!("{:<44} {:>12.1}", "GFLOP/s of useful work (3 passes per sample)", median * flop_per_sample / 1e9);
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// Images/s of preprocessing a photo-like picture of `size` on `threads` threads at once, from a
/// quality-90 JPEG (decoding included) when `from_jpeg`, else from its pixels.
fn preprocess_rate(cfg: &preprocess::PreprocessConfig, (w, h): (usize, usize), threads: usize, from_jpeg: bool) -> Result<f64> {
    use rayon::prelude::*;
    // Smooth colour fields and mild texture: about what a camera's JPEG costs to decode.
    let data: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let grain = ((i * 7919) % 13) as f32;
            [128.0 + 100.0 * (x / 300.0).sin() + grain, 128.0 + 100.0 * (y / 200.0).cos() + grain, 128.0 + 80.0 * ((x + y) / 500.0).sin() + grain]
        })
        .map(|v| v.clamp(0.0, 255.0) as u8)
        .collect();
    let mut jpeg = Vec::new();
    if from_jpeg {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode(&data, w as u32, h as u32, image::ExtendedColorType::Rgb8)?;
    }
    let photo = preprocess::Rgb8::new(w, h, data);
    let one = || -> Result<()> {
        let decoded = if from_jpeg { Some(preprocess::decode_rgb8_for(&jpeg, "bench.jpg", cfg)?) } else { None };
        std::hint::black_box(preprocess::pixels(decoded.as_ref().unwrap_or(&photo), cfg));
        Ok(())
    };
    one()?; // warm-up
    // About a second of work: four rounds of one image per thread, more for small images.
    let reps = threads * if w * h > 2_000_000 { 4 } else { 40 };
    let t = Instant::now();
    if threads > 1 {
        (0..reps).into_par_iter().try_for_each(|_| one())?;
    } else {
        (0..reps).try_for_each(|_| one())?;
    }
    Ok(reps as f64 / t.elapsed().as_secs_f64())
}

/// Builds a synthetic index (random unit vectors, random norms) and times composed queries with
/// indexed references: phi, the text tower on `a photo of $ that ...`, then the exact top-k.
fn search_latency(args: SearchBenchArgs) -> Result<()> {
    use lincir::index::{Entry, Index, IndexMeta, FORMAT};
    use lincir::rng::Rng;
    if args.entries == 0 || args.queries == 0 {
        bail!("--entries and --queries must be at least 1");
    }
    let clip = Clip::load(&args.model, &args.compute.load_options(lincir::clip::Towers::Text)?)?;
    let dim = clip.config.projection_dim;
    let dir = std::env::temp_dir().join(format!("lincir-bench-search-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rng = Rng::new(7);
    let mut vectors = Vec::with_capacity(args.entries * dim);
    let mut entries = Vec::with_capacity(args.entries);
    for i in 0..args.entries {
        let v: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        vectors.extend(v.iter().map(|x| x / norm));
        entries.push(Entry { path: format!("synthetic/{i:06}.jpg"), id: i, size: 0, mtime_ns: 0, row: i, norm: 5.0 + 10.0 * rng.uniform(), taken: None, digest: None });
    }
    let meta = IndexMeta {
        format: FORMAT,
        model: args.model.clone(),
        model_key: String::new(),
        dim,
        root: dir.clone(),
        vectors_file: "vectors-0.f32".into(),
        codes_file: None,
        jpeg: Default::default(),
        rows: args.entries,
        next_id: args.entries,
        dates: true,
        entries,
    };
    lincir::index::write(&dir, meta, &vectors, true)?;
    drop(vectors);
    let index = Index::open(&dir)?;
    let text = clip.text()?;
    let phi = lincir::phi::Phi::init(lincir::phi::PhiConfig::for_backbone(text.projection_dim(), text.width()), 0, &clip.device)?;
    let searcher = lincir::search::Searcher::new(clip, vec![(lincir::method::Method::Lincir, lincir::mapper::Mapper::Phi(phi))], index)?;
    let texts = synthetic_captions(args.queries + 5, 3);
    let (mut encode, mut rank, mut total, mut rank_exact) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut identical = 0;
    for (i, t) in texts.iter().enumerate() {
        let words: Vec<&str> = t.split(' ').take(6).collect();
        let q = lincir::search::Query { reference: Some(lincir::search::Reference::Indexed(rng.below(args.entries))), text: Some(words.join(" ")), k: args.k, method: None, folder: None, taken_from: None, taken_to: None, keep_reference: true };
        let started = Instant::now();
        let r = searcher.search(&q)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        // The same query ranked by the exact f32 scan: its time, and whether the top-k agree.
        let started = Instant::now();
        let exact = searcher.index().top_k_exact(&r.query, args.k);
        let exact_ms = started.elapsed().as_secs_f64() * 1e3;
        if i >= 5 {
            encode.push(r.encode_ms);
            rank.push(r.rank_ms);
            total.push(ms);
            rank_exact.push(exact_ms);
            identical += usize::from(exact.iter().map(|h| h.0).eq(r.hits.iter().map(|h| h.id)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let report = serde_json::json!({
        "tool": "lincir", "model": args.model, "machine": machine(&searcher.clip.device),
        "device": lincir::device::name(&searcher.clip.device), "entries": args.entries, "dim": dim, "k": args.k,
        "queries": total.len(),
        "total_ms_p50": pct(&mut total, 0.5), "total_ms_p95": pct(&mut total, 0.95),
        "encode_ms_p50": pct(&mut encode, 0.5), "encode_ms_p95": pct(&mut encode, 0.95),
        "rank_ms_p50": pct(&mut rank, 0.5), "rank_ms_p95": pct(&mut rank, 0.95),
        "ranking": if searcher.index().has_codes() { "int8 codes + exact re-ranking" } else { "exact f32" },
        "rank_exact_f32_ms_p50": pct(&mut rank_exact, 0.5), "rank_exact_f32_ms_p95": pct(&mut rank_exact, 0.95),
        "top_k_identical_to_exact_f32": identical as f64 / total.len() as f64,
    });
    println!("{:<44} {:>10} {:>10}", format!("{} entries x {dim}, k {}", args.entries, args.k), "p50 ms", "p95 ms");
    for what in ["total", "encode", "rank", "rank_exact_f32"] {
        println!("{:<44} {:>10.2} {:>10.2}", what, report[format!("{what}_ms_p50")].as_f64().unwrap(), report[format!("{what}_ms_p95")].as_f64().unwrap());
    }
    println!("{:<44} {:>10.4}", "top-k identical to exact f32 (fraction)", report["top_k_identical_to_exact_f32"].as_f64().unwrap());
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
