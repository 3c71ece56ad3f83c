//! `lincir train-searle`: SEARLE's phi trained on unlabelled images (concepts, textual inversion,
//! distillation), so that LinCIR (trained on text) can be compared with it on the same backbone
//! and data (docs/TRAINING.md, "SEARLE").

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use clap::Args;
use lincir::clip::Clip;
use lincir::phi::PhiConfig;
use lincir::searle::oti::{self, OtiConfig};
use lincir::searle::store::{fingerprint, OtiStore};
use lincir::searle::train::{self, ImageConcepts, TrainConfig};
use lincir::searle::{concepts, PhraseSource, TEMPLATES};

use crate::image_training::ImageTrainingArgs;
use crate::pipeline::PipelineArg;

#[derive(Args)]
pub struct TrainSearleArgs {
    /// Device, model, training images (SEARLE: the ImageNet-1K test set), output folder.
    #[command(flatten)]
    common: ImageTrainingArgs,
    /// Concept vocabulary: one name per line, or a CSV with a `DisplayName` column (SEARLE:
    /// Open Images V7's `oidv7-class-descriptions.csv`).
    #[arg(long)]
    vocabulary: PathBuf,
    /// Phrases per concept as JSON, `{"concept": ["phrase", ...]}` (SEARLE's GPT-Neo phrases,
    /// converted from its pickle).
    #[arg(long, required_unless_present = "phrase_captions", conflicts_with = "phrase_captions")]
    phrases: Option<PathBuf>,
    /// Or phrases taken from captions (files, folders or hub datasets, as `train --captions`):
    /// the captions that name each concept, compared lower-cased. No text generator needed.
    #[arg(long, num_args = 1..)]
    phrase_captions: Vec<String>,
    /// Column or field of the caption files that holds the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Captions kept per concept (SEARLE generated 256 phrases per concept).
    #[arg(long, default_value_t = 256)]
    phrases_per_concept: usize,
    /// Nearest concepts per image that its regulariser draws from (SEARLE: 15).
    #[arg(long, default_value_t = 15)]
    top_k: usize,
    /// Textual-inversion steps per image (SEARLE: 350).
    #[arg(long, default_value_t = 350)]
    oti_steps: u64,
    /// Images inverted together (SEARLE: 32).
    #[arg(long, default_value_t = 32)]
    oti_batch_size: usize,
    #[arg(long, default_value_t = 2e-2)]
    oti_lr: f64,
    /// Weight of the phrase regulariser in the inversion (SEARLE: 0.5, the template loss 1).
    #[arg(long, default_value_t = 0.5)]
    oti_lambda_gpt: f64,
    /// Decay of the pseudo words' moving average (SEARLE: 0.99).
    #[arg(long, default_value_t = 0.99)]
    ema_decay: f64,
    /// phi: images per step (SEARLE: 256).
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Passes over the images (SEARLE: 100); --max-steps overrides.
    #[arg(long, default_value_t = 100)]
    epochs: u64,
    #[arg(long)]
    max_steps: Option<u64>,
    /// Weights of the distillation loss and of the phrase regulariser (SEARLE: 1 and 0.25), and
    /// the distillation's temperature (0.25).
    #[arg(long, default_value_t = 1.0)]
    lambda_distil: f64,
    #[arg(long, default_value_t = 0.25)]
    lambda_gpt: f64,
    #[arg(long, default_value_t = 0.25)]
    temperature: f64,
    #[arg(long, default_value_t = 0.5)]
    dropout: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// phi steps between checkpoints.
    #[arg(long, default_value_t = 500)]
    checkpointing_steps: u64,
    /// Continue the run in --output-dir: inverted batches are kept, phi resumes from its last
    /// checkpoint.
    #[arg(long)]
    resume: bool,
    /// How the training images become pixels (default: SEARLE's target pad).
    #[arg(long, value_enum, default_value = "targetpad")]
    preprocess: PipelineArg,
}

pub fn run(args: TrainSearleArgs) -> Result<()> {
    if args.batch_size < 2 || args.oti_batch_size == 0 || args.top_k == 0 || args.phrases_per_concept == 0 {
        bail!("--batch-size must be at least 2, and --oti-batch-size, --top-k and --phrases-per-concept at least 1");
    }
    if !(0.0..1.0).contains(&args.dropout) || !(0.0..1.0).contains(&args.ema_decay) {
        bail!("--dropout and --ema-decay must be in [0, 1)");
    }
    for (flag, value) in [("--lr", args.lr), ("--oti-lr", args.oti_lr), ("--temperature", args.temperature)] {
        if !(value.is_finite() && value > 0.0) {
            bail!("{flag} must be a finite number above 0");
        }
    }
    for (flag, value) in [("--weight-decay", args.weight_decay), ("--oti-lambda-gpt", args.oti_lambda_gpt), ("--lambda-distil", args.lambda_distil), ("--lambda-gpt", args.lambda_gpt)] {
        if !(value.is_finite() && value >= 0.0) {
            bail!("{flag} must be a finite number, 0 or more");
        }
    }
    if args.lambda_distil + args.lambda_gpt == 0.0 {
        bail!("--lambda-distil and --lambda-gpt are both 0: phi would learn nothing");
    }
    args.common.refuse_existing_run(train::STATE_FILE, args.resume)?;
    let mut clip = args.common.load_clip()?;
    if clip.dtype() == DType::F16 {
        bail!("train-searle runs the frozen CLIP in f32 or bf16 (--dtype), not f16");
    }
    clip.preprocess = clip.preprocess.with_pipeline(args.preprocess.pipeline(), clip.config.vision.image_size);
    let images = args.common.embeddings(&clip)?;
    let n = images.dim(0)?;
    if n < args.batch_size {
        bail!("{n} training images for batches of {}: use more images or a smaller --batch-size", args.batch_size);
    }
    std::fs::create_dir_all(&args.common.output_dir).map_err(|e| anyhow::anyhow!("{}: cannot create the output folder: {e}", args.common.output_dir.display()))?;

    // Concepts: the vocabulary (lower-cased when phrases come from captions), its embeddings, the
    // nearest concepts of each image, the phrases of each.
    let source = match &args.phrases {
        Some(path) => PhraseSource::Json(path),
        None => PhraseSource::Captions { sources: &args.phrase_captions, text_field: &args.text_field, per_concept: args.phrases_per_concept, seed: args.seed },
    };
    let (vocabulary, phrases) = lincir::searle::vocabulary_and_phrases(&args.vocabulary, source)?;
    let vocab_embeddings = vocabulary_embeddings(&clip, &vocabulary, Some(&args.common.output_dir))?;
    let nearest = concepts::nearest_concepts(&images, &vocab_embeddings, args.top_k)?;
    let per_image = lincir::searle::usable_concepts(&nearest, &vocabulary, &phrases);
    let without = per_image.iter().filter(|c| c.is_empty()).count();
    let usable = vocabulary.iter().filter(|c| phrases.usable(c).is_some()).count();
    println!(
        "{} concepts, {usable} with usable phrases; {n} images, {:.1} usable concepts each among their {} nearest ({without} with none: template loss only)",
        vocabulary.len(),
        per_image.iter().map(Vec::len).sum::<usize>() as f64 / n as f64,
        args.top_k
    );

    let oti_cfg = OtiConfig { steps: args.oti_steps, lr: args.oti_lr, weight_decay: 0.01, lambda_cos: 1.0, lambda_gpt: args.oti_lambda_gpt, ema_decay: args.ema_decay, batch_size: args.oti_batch_size };
    let words = invert_all(&args, &clip, &images, &per_image, &oti_cfg)?;

    let text = clip.text()?;
    let max_steps = args.max_steps.unwrap_or(args.epochs * (n / args.batch_size) as u64);
    if max_steps == 0 {
        bail!("no phi steps to train (--max-steps or --epochs is 0)");
    }
    let cfg = TrainConfig {
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        max_steps,
        seed: args.seed,
        checkpointing_steps: args.checkpointing_steps.max(1),
        lambda_distil: args.lambda_distil,
        lambda_gpt: args.lambda_gpt,
        temperature: args.temperature,
        phi: PhiConfig { dropout: args.dropout, ..PhiConfig::for_backbone(text.projection_dim(), text.width()) },
        images: n,
    };
    println!("training phi ({} -> {} -> {}) on {n} images and their pseudo words: {max_steps} steps of {}, lr {}", cfg.phi.input_dim, cfg.phi.hidden_dim, cfg.phi.output_dim, cfg.batch_size, cfg.lr);
    let started = std::time::Instant::now();
    let pb = crate::progress::bar(max_steps as usize, "steps");
    let on_step = |r: &train::StepReport| {
        pb.set_position(r.step);
        pb.set_message(format!("loss {:.4}", r.loss));
    };
    let summary = train::train(&clip, &images, &words, &per_image, &cfg, &args.common.output_dir, args.resume, &on_step)?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!("| phi steps | final loss | seconds | images/s |");
    println!("|---|---|---|---|");
    println!(
        "| {} (from {}) | {:.4} | {secs:.1} | {:.1} |",
        summary.first_step + summary.steps,
        summary.first_step,
        summary.final_loss,
        (summary.steps as f64 * cfg.batch_size as f64) / secs.max(1e-9)
    );
    let release = args.common.output_dir.join(train::RELEASE_FILE);
    println!("phi: {} and {} (evaluate with `lincir eval --phi searle={}`)", args.common.output_dir.join(train::PHI_FILE).display(), release.display(), release.display());
    Ok(())
}

/// The vocabulary's ensemble embeddings, with a progress bar; with `cache_dir`, kept there
/// (`concepts.safetensors`) for the same vocabulary and model, since a large vocabulary takes 24
/// text passes per concept. Shared with `eval --searle-oti` (no cache).
pub(crate) fn vocabulary_embeddings(clip: &Clip, vocabulary: &[String], cache_dir: Option<&Path>) -> Result<Tensor> {
    let path = cache_dir.map(|d| d.join("concepts.safetensors"));
    let dtype = format!("{:?}", clip.dtype());
    let key = fingerprint(vocabulary.iter().map(String::as_str).chain([clip.dir.to_string_lossy().as_ref(), dtype.as_str()]));
    if let Some(path) = path.as_ref().filter(|p| p.is_file()) {
        let (tensors, meta) = lincir::io::read_safetensors(path)?;
        if meta.get("fingerprint") == Some(&key) {
            if let Some(e) = tensors.get("embeddings").filter(|e| e.dims() == [vocabulary.len(), clip.config.projection_dim]) {
                println!("{} concept embeddings from {}", vocabulary.len(), path.display());
                return Ok(e.clone());
            }
        }
    }
    let pb = crate::progress::bar(vocabulary.len(), "concepts");
    let batch = crate::compute::default_batch_size(&clip.device).max(TEMPLATES.len());
    let e = concepts::embed_vocabulary(clip.text()?, &clip.tokenizer, vocabulary, batch, &|k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    if let Some(path) = path {
        let meta = std::collections::HashMap::from([("fingerprint".to_string(), key)]);
        lincir::io::write_safetensors_atomic(&path, &[("embeddings".to_string(), e.to_device(&candle_core::Device::Cpu)?)], meta)?;
    }
    Ok(e)
}

/// Every image's OTI pseudo word (the moving average, [n, width] f32), batch by batch; batches
/// already in the output folder are read back (with --resume), the others inverted and stored.
fn invert_all(args: &TrainSearleArgs, clip: &Clip, images: &Tensor, per_image: &[ImageConcepts], cfg: &OtiConfig) -> Result<Tensor> {
    let (text, n) = (clip.text()?, images.dim(0)?);
    let width = text.width();
    // What the pseudo words depend on: the settings, the images, each image's concepts and phrases.
    let settings = serde_json::to_string(&(cfg, args.seed, n, clip.dir.to_string_lossy(), format!("{:?}", clip.dtype()))).expect("settings serialise");
    let image_sum = images.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.to_string();
    // Streamed into the hash: each image's concept names, then the phrases of each concept once.
    let names = per_image.iter().flat_map(|c| c.iter().map(|(name, _)| *name).chain(["|"]));
    let mut used: Vec<(&str, &[String])> = per_image.iter().flatten().copied().collect();
    used.sort_by_key(|(name, _)| *name);
    used.dedup_by_key(|(name, _)| *name);
    let phrases = used.iter().flat_map(|(name, phrases)| std::iter::once(*name).chain(phrases.iter().map(String::as_str)));
    let parts = [settings.as_str(), image_sum.as_str()].into_iter().chain(names).chain(phrases);
    let store = OtiStore::new(&args.common.output_dir, fingerprint(parts))?;
    if !args.resume && store.has_any()? {
        bail!("{}: pseudo words of a run are already here: pass --resume to continue it, or choose another --output-dir", args.common.output_dir.join("oti").display());
    }
    let batches = n.div_ceil(cfg.batch_size);
    println!("textual inversion: {n} images in {batches} batches of {}, {} steps each", cfg.batch_size, cfg.steps);
    let images = images.to_device(&clip.device)?.to_dtype(DType::F32)?;
    let pb = crate::progress::bar(n, "images");
    let started = std::time::Instant::now();
    let (mut done, mut reused, mut inverted) = (Vec::with_capacity(batches), 0, 0);
    for b in 0..batches {
        let (start, rows) = (b * cfg.batch_size, cfg.batch_size.min(n - b * cfg.batch_size));
        let ema = match store.load(b as u64, rows, width)? {
            Some((_, ema)) => {
                reused += 1;
                ema
            }
            None => {
                let choices: Vec<oti::ConceptPhrases> = per_image[start..start + rows].iter().map(lincir::searle::concept_phrase_pairs).collect();
                let keys: Vec<u64> = (start as u64..(start + rows) as u64).collect();
                let result = oti::invert(text, &clip.tokenizer, &images.narrow(0, start, rows)?, &choices, cfg, args.seed, &keys)?;
                store.save(b as u64, &result)?;
                pb.set_message(format!("loss {:.4}", result.loss));
                inverted += rows;
                result.ema.to_device(&candle_core::Device::Cpu)?
            }
        };
        done.push(ema);
        pb.inc(rows as u64);
    }
    pb.finish_and_clear();
    if inverted > 0 {
        let secs = started.elapsed().as_secs_f64();
        println!("textual inversion: {inverted} images in {secs:.1} s ({:.2} images/s)", inverted as f64 / secs.max(1e-9));
    }
    if reused > 0 {
        println!("{reused} of {batches} batches' pseudo words read back from {}", args.common.output_dir.join("oti").display());
    }
    Ok(Tensor::cat(&done, 0)?)
}
