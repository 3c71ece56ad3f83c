//! `lincir train-pic2word`: Pic2Word's mapping network trained on unlabelled images, so that
//! LinCIR (trained on text) can be compared with it on the same backbone and data
//! (docs/TRAINING.md, "Pic2Word").

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use lincir::clip::weights::Weights;
use lincir::pic2word::train::{self, TrainConfig, NETWORK_FILE};
use lincir::pic2word::Im2TextConfig;

use crate::image_training::ImageTrainingArgs;
use crate::pipeline::PipelineArg;

#[derive(Args)]
pub struct TrainPic2WordArgs {
    #[command(flatten)]
    common: ImageTrainingArgs,
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
}

pub fn run(args: TrainPic2WordArgs) -> Result<()> {
    if args.batch_size < 2 {
        bail!("--batch-size must be at least 2 (the loss contrasts the images of a batch)");
    }
    if !(0.0..1.0).contains(&args.dropout) {
        bail!("--dropout must be in [0, 1)");
    }
    args.common.refuse_existing_run(train::STATE_FILE, args.resume)?;
    let mut clip = args.common.load_clip()?;
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
    let source = if args.augment { Source::Files(readable_images(&args)?) } else { Source::Embeddings(args.common.embeddings(&clip)?) };
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
    let summary = train::train(&clip, logit_scale, &images, &cfg, &args.common.output_dir, args.resume, &on_step)?;
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
    let net = args.common.output_dir.join(NETWORK_FILE);
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
    let paths = crate::embed::image_files(&args.common.images)?;
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
