//! `lincir train`: language-only training of phi (self-masking projection).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use lincir::clip::{Clip, Towers};
use lincir::phi::PhiConfig;
use lincir::smp::corpus::{Corpus, DEFAULT_TEXT_FIELD, PAPER_DATASETS};
use lincir::smp::optim::AdamWConfig;
use lincir::smp::schedule::LrSchedule;
use lincir::smp::train::{self, Event, NoiseMode, TrainConfig};

use crate::progress;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    compute: crate::compute::ComputeArgs,
    /// CLIP model: a local Hugging Face directory or a hub id (e.g. openai/clip-vit-large-patch14).
    #[arg(long)]
    model: String,
    /// Caption sources: text files (one caption per line), .jsonl/.json/.csv/.tsv/.parquet files,
    /// folders of them, or hub dataset ids. Default: the paper's three datasets.
    #[arg(long, num_args = 1..)]
    captions: Vec<String>,
    /// Column or field holding the caption in JSON, CSV and Parquet sources.
    #[arg(long, default_value = DEFAULT_TEXT_FIELD)]
    text_field: String,
    /// Where checkpoints, train_config.json and metrics.jsonl go.
    #[arg(long)]
    output_dir: PathBuf,
    /// Captions per micro-batch (the paper trains with 512 in total).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Optimiser steps.
    #[arg(long, default_value_t = 20_000)]
    max_steps: u64,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Learning-rate schedule: constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial.
    #[arg(long, default_value = "constant", value_parser = parse_schedule)]
    lr_scheduler: LrSchedule,
    /// Linear warm-up steps (ignored by `constant`).
    #[arg(long, default_value_t = 0)]
    lr_warmup_steps: u64,
    /// Micro-batches accumulated per optimiser step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Clip the global gradient norm to this value (off unless given).
    #[arg(long)]
    max_grad_norm: Option<f64>,
    /// Dropout inside phi while training.
    #[arg(long, default_value_t = 0.5)]
    phi_dropout: f64,
    /// L2-normalise phi's input (in training and evaluation alike).
    #[arg(long)]
    l2_normalize: bool,
    /// Train without the noise on phi's input (an ablation; the paper uses it).
    #[arg(long)]
    no_noise: bool,
    /// Keep an exponential moving average of phi and save/evaluate it.
    #[arg(long)]
    use_ema: bool,
    /// EMA decay (with the warm-up min(decay, (1+n)/(10+n))).
    #[arg(long, default_value_t = 0.9999)]
    ema_decay: f64,
    /// Seed of everything random: initialisation, shuffling, masking, noise, dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save phi_latest, a numbered checkpoint and the resumable state every N steps.
    #[arg(long, default_value_t = 500)]
    checkpointing_steps: u64,
    /// Evaluate on CIRR val every N steps (needs --cirr-dataset-path) and keep phi_best.
    #[arg(long)]
    validation_steps: Option<u64>,
    /// CIRR dataset root (holding cirr/captions, cirr/image_splits and dev/).
    #[arg(long)]
    cirr_dataset_path: Option<PathBuf>,
    /// Continue the run in --output-dir from its last checkpoint, with the same data order.
    #[arg(long)]
    resume: bool,
    /// Captions held by the shuffle buffer (a full shuffle when the corpus fits).
    #[arg(long, default_value_t = 1_000_000)]
    shuffle_buffer: usize,
}

fn parse_schedule(s: &str) -> std::result::Result<LrSchedule, String> {
    LrSchedule::parse(s).ok_or_else(|| format!("unknown schedule `{s}`; one of {}", LrSchedule::NAMES.join(", ")))
}

pub fn run(args: TrainArgs) -> Result<()> {
    let captions = if args.captions.is_empty() { PAPER_DATASETS.iter().map(|s| s.to_string()).collect() } else { args.captions.clone() };
    let towers = if args.validation_steps.is_some() { Towers::Both } else { Towers::Text };
    // The phi sizes come from the model; the numbers are checked before it is loaded.
    let phi = PhiConfig { dropout: args.phi_dropout, l2_normalize: args.l2_normalize, ..PhiConfig::for_backbone(1, 1) };
    let mut cfg = TrainConfig {
        model: args.model.clone(),
        captions: captions.clone(),
        text_field: args.text_field.clone(),
        batch_size: args.batch_size,
        max_steps: args.max_steps,
        lr: args.lr,
        adamw: AdamWConfig { weight_decay: args.weight_decay, ..AdamWConfig::default() },
        lr_scheduler: args.lr_scheduler,
        lr_warmup_steps: args.lr_warmup_steps,
        grad_accum: args.grad_accum,
        max_grad_norm: args.max_grad_norm,
        phi,
        noise: if args.no_noise { NoiseMode::None } else { NoiseMode::Uniform },
        use_ema: args.use_ema,
        ema_decay: args.ema_decay,
        seed: args.seed,
        checkpointing_steps: args.checkpointing_steps,
        validation_steps: args.validation_steps,
        cirr_dataset_path: args.cirr_dataset_path.clone(),
        shuffle_buffer: args.shuffle_buffer,
    };
    cfg.validate()?;
    let clip = Clip::load(&args.model, &args.compute.load_options(towers)?)?;
    let text = clip.text()?;
    cfg.phi = PhiConfig { dropout: args.phi_dropout, l2_normalize: args.l2_normalize, ..PhiConfig::for_backbone(text.projection_dim(), text.width()) };
    if args.validation_steps.is_some() && args.cirr_dataset_path.is_none() {
        bail!("--validation-steps needs --cirr-dataset-path");
    }
    let corpus = Corpus::open(&captions, &args.text_field)?;
    println!(
        "training phi ({} -> {} -> {}, {} parameters) on {} caption file(s), batch {} x {}, {} steps (text tower gradients: {})",
        cfg.phi.input_dim,
        cfg.phi.hidden_dim,
        cfg.phi.output_dim,
        cfg.phi.parameter_count(),
        corpus.sources.len(),
        args.batch_size,
        args.grad_accum,
        args.max_steps,
        text.training_path()
    );
    let pb = progress::bar(args.max_steps as usize, "steps");
    let started = std::time::Instant::now();
    let mut last = None;
    let mut best = None;
    let mut first_step = 0;
    train::train(&cfg, &clip, &corpus, &lincir::smp::keywords::keywords, &args.output_dir, args.resume, &mut |event| match event {
        Event::Started { start_step, resumed } => {
            first_step = start_step;
            pb.set_position(start_step);
            if resumed {
                pb.println(format!("resuming at step {start_step}"));
            }
        }
        Event::Step(r) => {
            pb.set_position(r.step);
            pb.set_message(format!("loss {:.5} | {:.0} samples/s", r.loss, r.samples_per_s));
            if r.update_skipped {
                let scale = r.loss_scale.unwrap_or(0.0);
                pb.println(format!("step {:>6}  f16 gradients overflowed at loss scale {scale}: update skipped, scale halved", r.step));
            }
            last = Some(r.clone());
        }
        Event::Validation(v) => {
            let r = |k| v.cirr_val.recall_at(k).unwrap_or(0.0);
            pb.println(format!(
                "step {:>6}  CIRR val R@1 {:.2}  R@5 {:.2}  R@10 {:.2}  R@50 {:.2}{}",
                v.step,
                r(1),
                r(5),
                r(10),
                r(50),
                if v.best { "  (best)" } else { "" }
            ));
            if v.best {
                best = Some(v.clone());
            }
        }
        Event::Checkpoint { .. } => {}
    })?;
    pb.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let out = args.output_dir.display();
    match last {
        Some(r) => {
            let steps = r.step - first_step;
            let samples = steps as f64 * (args.batch_size * args.grad_accum) as f64;
            println!("| steps | final loss | samples/s | skipped captions | random-word masks | time |");
            println!("|---|---|---|---|---|---|");
            println!(
                "| {} | {:.5} | {:.1} | {} | {:.1}% | {:.1} s |",
                r.step,
                r.loss,
                samples / elapsed,
                r.skipped_captions,
                100.0 * r.random_word_rate,
                elapsed
            );
        }
        None => println!("nothing to do: the run in {out} already reached step {}", args.max_steps),
    }
    if let Some(b) = best {
        println!("best CIRR val R@1 {:.2} at step {} -> {out}/{}", b.cirr_val.recall_at(1).unwrap_or(0.0), b.step, train::BEST_FILE);
    }
    println!("phi: {out}/{}; metrics: {out}/{}", train::LATEST_FILE, train::METRICS_FILE);
    Ok(())
}
