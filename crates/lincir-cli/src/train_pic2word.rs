//! `lincir train-pic2word`: Pic2Word's mapping network trained on unlabelled images, so that
//! LinCIR (trained on text) can be compared with it on the same backbone and data
//! (docs/TRAINING.md, "Pic2Word").

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use lincir::bench::cache::{default_root, FeatureCache};
use lincir::bench::images::{embed_images, BadImages, BenchImage};
use lincir::clip::{weights::Weights, Clip, Towers};
use lincir::pic2word::train::{self, TrainConfig, NETWORK_FILE};
use lincir::pic2word::Im2TextConfig;

use crate::pipeline::PipelineArg;

#[derive(Args)]
pub struct TrainPic2WordArgs {
    #[command(flatten)]
    compute: crate::compute::ComputeArgs,
    /// CLIP model: a local Hugging Face directory or a hub id.
    #[arg(long)]
    model: String,
    /// Training images: files and/or folders (walked recursively). Their embeddings are cached
    /// (as `eval`'s galleries are), so a resumed or repeated run does not embed them again.
    #[arg(long, num_args = 1.., required_unless_present = "embeddings", conflicts_with = "embeddings")]
    images: Vec<PathBuf>,
    /// Or precomputed image embeddings: a `lincir embed --images` output (made with this model).
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// Output folder (network, resumable state, metrics).
    #[arg(long)]
    output_dir: PathBuf,
    /// Images per step (Pic2Word: 128 per GPU).
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate (Pic2Word: 1e-4).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// AdamW weight decay of the weights; biases get none (Pic2Word: 0.1).
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Linear warm-up steps before the cosine decay (default: Pic2Word's 10,000, at most a tenth
    /// of the run).
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Passes over the images (Pic2Word: 30); --max-steps overrides.
    #[arg(long, default_value_t = 30)]
    epochs: u64,
    /// Total optimiser steps.
    #[arg(long)]
    max_steps: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps between checkpoints (the network and the resumable state).
    #[arg(long, default_value_t = 500)]
    checkpointing_steps: u64,
    /// Continue the run in --output-dir from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Width of IM2TEXT's hidden layers (Pic2Word: 512).
    #[arg(long, default_value_t = 512)]
    hidden_dim: usize,
    /// Number of Linear-Dropout-ReLU blocks (Pic2Word: 2).
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// CLIP's logit scale s in the loss (default: exp of the model's `logit_scale` weight).
    #[arg(long)]
    logit_scale: Option<f64>,
    /// How the training images become pixels (default: OpenAI CLIP's transform, Pic2Word's).
    #[arg(long, value_enum, default_value = "openai")]
    preprocess: PipelineArg,
    /// Pic2Word's augmentation: every image decoded and embedded again at every step after a
    /// random crop of 90-100% of its area (aspect 3:4 to 4:3), resized to the tower's size. A
    /// vision-tower pass per image per step (GPU work at scale); without it each image is
    /// embedded once.
    #[arg(long, conflicts_with = "embeddings")]
    augment: bool,
    /// Do not read or write the embedding cache.
    #[arg(long)]
    no_cache: bool,
}

pub fn run(args: TrainPic2WordArgs) -> Result<()> {
    if args.batch_size < 2 {
        bail!("--batch-size must be at least 2 (the loss contrasts the images of a batch)");
    }
    if !(0.0..1.0).contains(&args.dropout) {
        bail!("--dropout must be in [0, 1)");
    }
    if !args.resume && args.output_dir.join(train::STATE_FILE).is_file() {
        bail!("{}: a run is already here: pass --resume to continue it, or choose another --output-dir", args.output_dir.join(train::STATE_FILE).display());
    }
    let mut clip = Clip::load(&args.model, &args.compute.load_options(if args.embeddings.is_some() { Towers::Text } else { Towers::Both })?)?;
    if clip.dtype() == candle_core::DType::F16 {
        bail!("train-pic2word runs the frozen CLIP in f32 or bf16 (--dtype), not f16");
    }
    clip.preprocess = clip.preprocess.with_pipeline(args.preprocess.pipeline(), clip.config.vision.image_size);
    let logit_scale = match args.logit_scale {
        Some(s) if s > 0.0 => s,
        Some(_) => bail!("--logit-scale must be positive"),
        None => {
            let w = Weights::from_dir(&clip.dir, candle_core::DType::F32, &candle_core::Device::Cpu)?;
            if !w.contains("logit_scale") {
                bail!("{}: the model has no logit_scale weight; give --logit-scale (OpenAI's CLIPs: 100)", clip.dir.display());
            }
            f64::from(w.get("logit_scale", &[])?.to_scalar::<f32>()?).exp()
        }
    };
    let source = if args.augment { Source::Files(readable_images(&args)?) } else { Source::Embeddings(image_embeddings(&args.images, args.embeddings.as_deref(), args.no_cache, &clip)?) };
    let images = match &source {
        Source::Files(paths) => train::Images::Augmented(paths),
        Source::Embeddings(e) => train::Images::Embeddings(e),
    };
    let n = images.count()?;
    if n < args.batch_size {
        bail!("{n} training images for batches of {}: use more images or a smaller --batch-size", args.batch_size);
    }
    let max_steps = args.max_steps.unwrap_or(args.epochs * (n / args.batch_size) as u64);
    if max_steps == 0 {
        bail!("no steps to train (--max-steps or --epochs is 0)");
    }
    let text = clip.text()?;
    let cfg = TrainConfig {
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup_steps: args.warmup_steps.unwrap_or(10_000.min(max_steps / 10)),
        max_steps,
        seed: args.seed,
        checkpointing_steps: args.checkpointing_steps.max(1),
        net: Im2TextConfig { hidden_dim: args.hidden_dim, layers: args.layers, dropout: args.dropout, ..Im2TextConfig::for_backbone(text.projection_dim(), text.width()) },
        images: n,
        augment: args.augment,
    };
    println!(
        "training Pic2Word's IM2TEXT ({} -> {} x {} -> {}) on {n} images: {max_steps} steps of {}, lr {}, logit scale {logit_scale:.2}",
        cfg.net.input_dim, cfg.net.hidden_dim, cfg.net.layers, cfg.net.output_dim, cfg.batch_size, cfg.lr
    );
    let started = std::time::Instant::now();
    let pb = crate::progress::bar(max_steps as usize, "steps");
    let on_step = |r: &train::StepReport| {
        pb.set_position(r.step);
        pb.set_message(format!("loss {:.4}", r.loss));
    };
    let summary = train::train(&clip, logit_scale, &images, &cfg, &args.output_dir, args.resume, &on_step)?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!("| steps | final loss | seconds | images/s |");
    println!("|---|---|---|---|");
    println!(
        "| {} (from {}) | {:.4} | {secs:.1} | {:.1} |",
        summary.first_step + summary.steps,
        summary.first_step,
        summary.final_loss,
        (summary.steps as f64 * cfg.batch_size as f64) / secs.max(1e-9)
    );
    let net = args.output_dir.join(NETWORK_FILE);
    println!("network: {} (evaluate with `lincir eval --phi pic2word={}`)", net.display(), net.display());
    Ok(())
}

/// The training images: embeddings computed once, or the files themselves (`--augment`).
enum Source {
    Embeddings(candle_core::Tensor),
    Files(Vec<PathBuf>),
}

/// The files of `--images` that decode (checked once, in parallel), for `--augment`.
fn readable_images(args: &TrainPic2WordArgs) -> Result<Vec<PathBuf>> {
    use rayon::prelude::*;
    let paths = crate::embed::image_files(&args.images)?;
    let pb = crate::progress::bar(paths.len(), "checked");
    let readable: Vec<Option<String>> = paths
        .par_iter()
        .map(|p| {
            let r = lincir::clip::preprocess::load_rgb8(p).err().map(|e| e.to_string());
            pb.inc(1);
            r
        })
        .collect();
    pb.finish_and_clear();
    let mut kept = Vec::new();
    let mut skipped = 0;
    for (p, err) in paths.into_iter().zip(readable) {
        match err {
            None => kept.push(p),
            Some(e) => {
                if skipped < 5 {
                    eprintln!("skipped {}: {e}", p.display());
                }
                skipped += 1;
            }
        }
    }
    println!("{} images readable ({skipped} unreadable left out); each is embedded again at every step (--augment)", kept.len());
    Ok(kept)
}

/// The training images' CLIP embeddings: from `embeddings` (a `lincir embed --images` output), or
/// the files under `images` embedded now (through the feature cache unless `no_cache`),
/// unreadable images left out and counted. Shared by `train-pic2word` and `train-searle`.
pub(crate) fn image_embeddings(images: &[PathBuf], embeddings: Option<&std::path::Path>, no_cache: bool, clip: &Clip) -> Result<candle_core::Tensor> {
    if let Some(path) = embeddings {
        let (tensors, _) = lincir::io::read_safetensors(path)?;
        let e = tensors.get("embeddings").with_context(|| format!("{}: no tensor `embeddings` (a `lincir embed --images` output)", path.display()))?;
        let (_, p) = e.dims2().with_context(|| format!("{}: `embeddings` is not a matrix", path.display()))?;
        if p != clip.text()?.projection_dim() {
            bail!("{}: embeddings of dim {p}, the model projects to {}: made with another model", path.display(), clip.text()?.projection_dim());
        }
        return Ok(e.clone());
    }
    let cache = if no_cache { None } else { default_root().map(|root| FeatureCache::for_model(clip, &root)).transpose()? };
    let images: Vec<BenchImage> = crate::embed::image_files(images)?.into_iter().map(BenchImage::file).collect();
    let pb = crate::progress::bar(images.len(), "images");
    let batch = crate::compute::default_batch_size(&clip.device);
    let embedded = embed_images(clip, cache.as_ref(), &images, batch, BadImages::Skip, &|k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    for (path, why) in embedded.skipped.iter().take(5) {
        eprintln!("skipped {}: {why}", path.display());
    }
    let kept: Vec<u32> = embedded.ok.iter().enumerate().filter(|(_, ok)| **ok).map(|(i, _)| i as u32).collect();
    println!("{} images embedded ({} from the cache, {} unreadable left out)", kept.len(), embedded.cached, embedded.skipped.len());
    let index = candle_core::Tensor::from_vec(kept.clone(), kept.len(), embedded.features.device())?;
    Ok(embedded.features.index_select(&index, 0)?.to_dtype(candle_core::DType::F32)?)
}
