//! The Pic2Word training loop over precomputed image embeddings: shuffled batches (the last
//! incomplete batch of each epoch dropped, as Pic2Word's loader does), AdamW with Pic2Word's
//! parameter groups, open_clip's warm-up + cosine schedule, atomic checkpoints that resume to
//! the same bytes.
//!
//! Files in the output folder:
//! - `im2text_latest.safetensors`: the network (Pic2Word key names), at every checkpoint;
//! - `train_state.safetensors`: what resuming needs (weights, AdamW moments, step, settings);
//! - `metrics.jsonl`: one line per step (`step`, `loss`, `lr`);
//! - `train_config.json`: the settings and the model, for the record.

use std::f64::consts::PI;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::{loss_and_grads, prompt_ids, Im2TextConfig, Im2TextNet};
use crate::clip::Clip;
use crate::rng::Rng;
use crate::smp::optim::{AdamW, AdamWConfig};
use crate::{Error, Result};

pub const NETWORK_FILE: &str = "im2text_latest.safetensors";
pub const STATE_FILE: &str = "train_state.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CONFIG_FILE: &str = "train_config.json";

// Purposes of the derived random streams.
const SHUFFLE: u64 = 1;
const DROPOUT: u64 = 2;
const AUGMENT: u64 = 3;

/// Where a step's image embeddings come from.
pub enum Images<'a> {
    /// Computed once: [images, P] f32, un-normalised.
    Embeddings(&'a Tensor),
    /// Image files, decoded and embedded again at every step after Pic2Word's random crop
    /// ([`super::augment`]): what Pic2Word does, at a vision-tower pass per image per step.
    Augmented(&'a [PathBuf]),
}

impl Images<'_> {
    /// The number of training images.
    pub fn count(&self) -> Result<usize> {
        Ok(match self {
            Images::Embeddings(e) => e.dims2()?.0,
            Images::Augmented(paths) => paths.len(),
        })
    }

    fn dim(&self, clip: &Clip) -> Result<usize> {
        Ok(match self {
            Images::Embeddings(e) => e.dims2()?.1,
            Images::Augmented(_) => clip.config.projection_dim,
        })
    }
}

/// The embeddings of the images `rows` at step `step` ([batch, P] f32 on the CLIP's device;
/// precomputed embeddings are already there).
fn batch_embeddings(clip: &Clip, images: &Images, rows: Vec<u32>, seed: u64, step: u64) -> Result<Tensor> {
    match images {
        Images::Embeddings(all) => {
            let n = rows.len();
            Ok(all.index_select(&Tensor::from_vec(rows, n, &clip.device)?, 0)?)
        }
        Images::Augmented(paths) => {
            use rayon::prelude::*;
            let n = clip.config.vision.image_size;
            let batch = rows.len() as u64;
            let pixels = rows
                .par_iter()
                .enumerate()
                .map(|(k, &r)| {
                    let img = crate::clip::preprocess::load_rgb8(&paths[r as usize])?;
                    let mut rng = Rng::derive(seed, AUGMENT, step * batch + k as u64);
                    Ok(super::augment::augmented_pixels(&img, &clip.preprocess, n, &mut rng))
                })
                .collect::<Result<Vec<_>>>()?;
            let px = crate::clip::preprocess::stack(pixels, &clip.preprocess, &clip.device)?;
            Ok(clip.vision()?.embed(&px)?.to_dtype(candle_core::DType::F32)?)
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    pub max_steps: u64,
    pub seed: u64,
    pub checkpointing_steps: u64,
    pub net: Im2TextConfig,
    /// Number of training images (a resumed run must see the same set).
    pub images: usize,
    /// Whether the images are re-embedded at every step after a random crop ([`Images::Augmented`]).
    pub augment: bool,
}

/// open_clip's `cosine_lr` (Pic2Word's schedule): linear warm-up to `base` reached at step
/// `warmup` (step s gets base (s + 1) / warmup), then half a cosine down to 0 at `total`.
pub fn learning_rate(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let (e, es) = ((step - warmup) as f64, (total.saturating_sub(warmup)).max(1) as f64);
    0.5 * (1.0 + (PI * e / es).cos()) * base
}

/// The rows of step `step`'s batch: epoch `step / per_epoch` is a seeded permutation of the
/// images, cut into `per_epoch` whole batches.
pub(crate) fn batch_rows(seed: u64, images: usize, batch: usize, step: u64, cached: &mut Option<(u64, Vec<u32>)>) -> Vec<u32> {
    let per_epoch = (images / batch) as u64;
    let (epoch, i) = (step / per_epoch, (step % per_epoch) as usize);
    if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
        let mut perm: Vec<u32> = (0..images as u32).collect();
        let mut rng = Rng::derive(seed, SHUFFLE, epoch);
        for k in (1..perm.len()).rev() {
            perm.swap(k, rng.below(k + 1));
        }
        *cached = Some((epoch, perm));
    }
    cached.as_ref().expect("filled").1[i * batch..(i + 1) * batch].to_vec()
}

/// The inverted dropout masks of step `step`, one [batch, hidden] per block.
fn dropout_masks(cfg: &TrainConfig, step: u64, device: &Device) -> Result<Vec<Tensor>> {
    let (b, h, p) = (cfg.batch_size, cfg.net.hidden_dim, cfg.net.dropout);
    let keep = (1.0 / (1.0 - p)) as f32;
    let mut rng = Rng::derive(cfg.seed, DROPOUT, step);
    (0..cfg.net.layers)
        .map(|_| {
            let v: Vec<f32> = (0..b * h).map(|_| if (rng.uniform() as f64) < p { 0.0 } else { keep }).collect();
            Ok(Tensor::from_vec(v, (b, h), device)?)
        })
        .collect()
}

/// One step's report to the caller (progress, logs).
pub struct StepReport {
    pub step: u64,
    pub loss: f32,
    pub lr: f64,
}

pub struct Summary {
    pub first_step: u64,
    pub steps: u64,
    pub final_loss: f32,
}

/// Pic2Word's two AdamW parameter groups: weights with weight decay, biases without.
pub struct Optimizer {
    weights: AdamW,
    biases: AdamW,
}

impl Optimizer {
    pub fn new(net: &Im2TextNet, weight_decay: f64) -> Result<Self> {
        let (w, b) = split(net.vars());
        Ok(Optimizer {
            weights: AdamW::new(AdamWConfig { weight_decay, ..AdamWConfig::default() }, &w)?,
            biases: AdamW::new(AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() }, &b)?,
        })
    }

    /// One update of every parameter from its gradient ([`Im2TextNet::vars`] order).
    pub fn step(&mut self, net: &Im2TextNet, grads: Vec<Tensor>, lr: f64) -> Result<()> {
        let (w, b) = split(net.vars());
        let (gw, gb) = split(grads);
        self.weights.step(&w, &gw, lr)?;
        self.biases.step(&b, &gb, lr)
    }
}

/// Items at even positions (weights), then at odd ones (biases).
fn split<T>(items: Vec<T>) -> (Vec<T>, Vec<T>) {
    let (mut even, mut odd) = (Vec::new(), Vec::new());
    for (i, x) in items.into_iter().enumerate() {
        if Im2TextNet::is_bias(i) {
            odd.push(x)
        } else {
            even.push(x)
        }
    }
    (even, odd)
}

fn save_state(dir: &Path, step: u64, net: &Im2TextNet, opt: &Optimizer, cfg: &TrainConfig) -> Result<()> {
    crate::train_state::save(&dir.join(STATE_FILE), step, net.named_tensors(), &[("weights", &opt.weights), ("biases", &opt.biases)], cfg)
}

/// Restores a run's state; the settings must be the run's own (but for the number of steps:
/// a run can be extended, the schedule then follows the new total).
fn load_state(dir: &Path, cfg: &TrainConfig, device: &Device) -> Result<(u64, Im2TextNet, Optimizer)> {
    let saved = crate::train_state::load(&dir.join(STATE_FILE), cfg, |s| TrainConfig { max_steps: cfg.max_steps, ..s }, "train-pic2word")?;
    let net = Im2TextNet::from_tensors(cfg.net, &saved.tensors, &saved.path, device)?;
    let mut opt = Optimizer::new(&net, cfg.weight_decay)?;
    saved.restore("weights", &mut opt.weights, device)?;
    saved.restore("biases", &mut opt.biases, device)?;
    Ok((saved.step, net, opt))
}

/// Trains IM2TEXT on `images` into `dir`, from scratch or (with `resume`) from the run's last
/// checkpoint.
pub fn train(
    clip: &Clip,
    logit_scale: f64,
    images: &Images,
    cfg: &TrainConfig,
    dir: &Path,
    resume: bool,
    on_step: &dyn Fn(&StepReport),
) -> Result<Summary> {
    let (text, tokenizer, device) = (clip.text()?, &clip.tokenizer, clip.device.clone());
    let (n, p) = (images.count()?, images.dim(clip)?);
    if cfg.augment != matches!(images, Images::Augmented(_)) || cfg.images != n {
        return Err(Error::Invalid(format!("the settings say {} images, augment {}; given {n} images, augmented {}", cfg.images, cfg.augment, !cfg.augment)));
    }
    if n < cfg.batch_size || cfg.batch_size < 2 {
        return Err(Error::Invalid(format!("{n} images for batches of {}: the contrastive loss needs batches of at least 2 and at least one whole batch", cfg.batch_size)));
    }
    if p != cfg.net.input_dim || text.width() != cfg.net.output_dim {
        return Err(Error::Invalid(format!("embeddings of dim {p} for a network {} -> {}", cfg.net.input_dim, cfg.net.output_dim)));
    }
    let (first_step, net, mut opt) = if crate::train_state::start(dir, STATE_FILE, resume)? {
        load_state(dir, cfg, &device)?
    } else {
        let net = Im2TextNet::init(cfg.net, cfg.seed, &device)?;
        let opt = Optimizer::new(&net, cfg.weight_decay)?;
        (0, net, opt)
    };
    let mut metrics = crate::train_state::metrics_from(&dir.join(METRICS_FILE), first_step)?;
    crate::io::write_atomic(&dir.join(CONFIG_FILE), (serde_json::to_string_pretty(cfg).expect("config serialises") + "\n").as_bytes())?;

    let prompt = prompt_ids(tokenizer)?;
    let ids = Tensor::from_vec(prompt.repeat(cfg.batch_size), (cfg.batch_size, prompt.len()), &device)?;
    // The embeddings live on the CLIP's device for the whole run.
    let moved;
    let images = match images {
        Images::Embeddings(e) => {
            moved = e.to_device(&device)?;
            Images::Embeddings(&moved)
        }
        Images::Augmented(paths) => Images::Augmented(paths),
    };
    let mut perm = None;
    let mut last = f32::NAN;
    for step in first_step..cfg.max_steps {
        let rows = batch_rows(cfg.seed, n, cfg.batch_size, step, &mut perm);
        let batch = batch_embeddings(clip, &images, rows, cfg.seed, step)?;
        let masks = dropout_masks(cfg, step, &device)?;
        let (loss, grads) = loss_and_grads(text, &net, &batch, &ids, Some(&masks), logit_scale)?;
        if !loss.is_finite() {
            let state = dir.join(STATE_FILE);
            let resume = if state.is_file() {
                format!("the last checkpoint ({}) resumes with --resume", state.display())
            } else {
                "no checkpoint was written yet".to_string()
            };
            return Err(Error::Invalid(format!("step {}: the loss is {loss}; stopped before updating ({resume}); try a lower --lr", step + 1)));
        }
        let lr = learning_rate(cfg.lr, step, cfg.warmup_steps, cfg.max_steps);
        opt.step(&net, grads, lr)?;
        last = loss;
        writeln!(metrics, "{}", serde_json::json!({"step": step + 1, "loss": loss, "lr": lr})).map_err(|e| Error::file(dir.join(METRICS_FILE), e))?;
        let done = step + 1;
        if done % cfg.checkpointing_steps.max(1) == 0 || done == cfg.max_steps {
            metrics.flush().map_err(|e| Error::file(dir.join(METRICS_FILE), e))?;
            net.save(&dir.join(NETWORK_FILE), &[("step", done.to_string())])?;
            save_state(dir, done, &net, &opt, cfg)?;
        }
        on_step(&StepReport { step: done, loss, lr });
    }
    Ok(Summary { first_step, steps: cfg.max_steps - first_step, final_loss: last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_open_clips_cosine_with_warmup() {
        assert!((learning_rate(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, 99, 10, 100) < 1e-3);
        // No warm-up: the cosine from the first step.
        assert!((learning_rate(2.0, 0, 0, 4) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn batches_cover_each_epoch_once_and_drop_the_remainder() {
        let mut cache = None;
        let (n, b) = (10, 3);
        for epoch in 0..3u64 {
            let mut seen: Vec<u32> = (0..3).flat_map(|i| batch_rows(5, n, b, epoch * 3 + i, &mut cache)).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 9, "epoch {epoch}: 3 whole batches of distinct images");
        }
        let again = batch_rows(5, n, b, 4, &mut None);
        assert_eq!(again, batch_rows(5, n, b, 4, &mut cache), "a batch depends on (seed, step) only");
        assert_ne!(batch_rows(5, n, b, 0, &mut None), batch_rows(5, n, b, 3, &mut None), "epochs are reshuffled");
    }
}
