//! The training loop of phi: batches prepared on worker threads, SMP steps, optimiser and
//! schedule, EMA, periodic checkpoints and CIRR validation, exact resumption.
//!
//! Output directory:
//! - `train_config.json`: the configuration (evaluation rebuilds phi from it);
//! - `phi_latest.safetensors`, `phi_best.safetensors` (best CIRR val R@1, when validating),
//!   `checkpoints/phi_{step}.safetensors`: phi weights (the EMA weights when EMA is on);
//! - `train_state.safetensors`: what resuming needs (weights, AdamW moments, EMA, data position);
//! - `metrics.jsonl`: one line per step, one per validation.
//!
//! Every file is written atomically. Randomness is derived from (seed, purpose, step or caption
//! index), so a resumed run continues with exactly the data, masks and noise it would have had.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::corpus::{Corpus, ShuffledCaptions};
use super::optim::{grad_norm, scale_to_max_norm, AdamW, AdamWConfig, Ema};
use super::sample::{prepare_sample, Sample, Skip};
use super::schedule::LrSchedule;
use super::loss_scale::LossScale;
use super::step::{loss_and_grads, target_embeddings, Noise};
use crate::bench::{cirr, query};
use crate::clip::tokenizer::pad_batch;
use crate::clip::Clip;
use crate::phi::{DropoutMasks, Phi, PhiConfig};
use crate::rng::Rng;
use crate::{Error, Result};

pub const CONFIG_FILE: &str = "train_config.json";
pub const STATE_FILE: &str = "train_state.safetensors";
pub const LATEST_FILE: &str = "phi_latest.safetensors";
pub const BEST_FILE: &str = "phi_best.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_DIR: &str = "checkpoints";

/// Purposes of the derived random streams.
const MASK_STREAM: u64 = 1;
const NOISE_STREAM: u64 = 2;
const DROPOUT_STREAM: u64 = 3;

/// How the input of phi is perturbed during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseMode {
    /// The paper: x = e + u n, u ~ U(0,1) per caption, n ~ N(0, I).
    Uniform,
    /// No noise (an ablation).
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: String,
    pub captions: Vec<String>,
    pub text_field: String,
    pub batch_size: usize,
    pub max_steps: u64,
    pub lr: f64,
    pub adamw: AdamWConfig,
    pub lr_scheduler: LrSchedule,
    pub lr_warmup_steps: u64,
    pub grad_accum: usize,
    pub max_grad_norm: Option<f64>,
    pub phi: PhiConfig,
    pub noise: NoiseMode,
    pub use_ema: bool,
    pub ema_decay: f64,
    pub seed: u64,
    pub checkpointing_steps: u64,
    pub validation_steps: Option<u64>,
    pub cirr_dataset_path: Option<PathBuf>,
    pub shuffle_buffer: usize,
}

impl TrainConfig {
    /// The paper's settings (AdamW lr 1e-4, weight decay 0.01, constant schedule, dropout 0.5,
    /// noise, no clipping, no EMA) for `model` and `captions`, batch 256, 20,000 steps,
    /// checkpoints every 500 steps, no validation.
    pub fn paper(model: &str, captions: Vec<String>, phi: PhiConfig) -> Self {
        TrainConfig {
            model: model.to_string(),
            captions,
            text_field: super::corpus::DEFAULT_TEXT_FIELD.to_string(),
            batch_size: 256,
            max_steps: 20_000,
            lr: 1e-4,
            adamw: AdamWConfig::default(),
            lr_scheduler: LrSchedule::Constant,
            lr_warmup_steps: 0,
            grad_accum: 1,
            max_grad_norm: None,
            phi,
            noise: NoiseMode::Uniform,
            use_ema: false,
            ema_decay: 0.9999,
            seed: 0,
            checkpointing_steps: 500,
            validation_steps: None,
            cirr_dataset_path: None,
            shuffle_buffer: 1_000_000,
        }
    }

    /// What must not change between a run and its resumption.
    fn identity(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.model, "captions": self.captions, "text_field": self.text_field,
            "batch_size": self.batch_size, "grad_accum": self.grad_accum, "seed": self.seed,
            "phi": self.phi, "shuffle_buffer": self.shuffle_buffer, "noise": self.noise, "use_ema": self.use_ema,
        })
    }

    /// Checks the settings (ranges, finite numbers) before any work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.to_string()));
        if self.batch_size == 0 || self.grad_accum == 0 || self.max_steps == 0 {
            return bad("--batch-size, --grad-accum and --max-steps must be at least 1");
        }
        if !(0.0..1.0).contains(&self.phi.dropout) {
            return bad("--phi-dropout must be in [0, 1)");
        }
        if self.validation_steps.is_some() && self.cirr_dataset_path.is_none() {
            return bad("--validation-steps needs --cirr-dataset-path");
        }
        if self.checkpointing_steps == 0 {
            return bad("--checkpointing-steps must be at least 1");
        }
        // Non-finite or out-of-range numbers would train to NaN: refuse them before any work.
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let unit = |v: f64| v.is_finite() && (0.0..1.0).contains(&v);
        if !positive(self.lr) {
            return Err(Error::Invalid(format!("--lr must be a finite number above 0, not {}", self.lr)));
        }
        if !(self.adamw.weight_decay.is_finite() && self.adamw.weight_decay >= 0.0) {
            return Err(Error::Invalid(format!("--weight-decay must be a finite number >= 0, not {}", self.adamw.weight_decay)));
        }
        if !unit(self.adamw.beta1) || !unit(self.adamw.beta2) || !positive(self.adamw.eps) {
            return bad("AdamW needs betas in [0, 1) and a finite eps above 0");
        }
        if let Some(m) = self.max_grad_norm.filter(|&m| !positive(m)) {
            return Err(Error::Invalid(format!("--max-grad-norm must be a finite number above 0, not {m}")));
        }
        if self.use_ema && !(self.ema_decay.is_finite() && (0.0..=1.0).contains(&self.ema_decay)) {
            return Err(Error::Invalid(format!("--ema-decay must be in [0, 1], not {}", self.ema_decay)));
        }
        Ok(())
    }
}

/// One prepared micro-batch and where the caption stream stands after it.
struct Batch {
    samples: Vec<Sample>,
    stream_position: u64,
    skipped: u64,
    epoch: u64,
}

/// What a step reports to the caller (progress bar) and to `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: Option<f64>,
    pub random_word_rate: f64,
    pub prompt_fallback_rate: f64,
    pub skipped_captions: u64,
    pub samples_per_s: f64,
    pub epoch: u64,
    /// The loss scale this step ran with (an f16 tower only: `loss_scale.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// An f16 tower's gradients overflowed at that scale: phi was not updated, the scale halves.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub update_skipped: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub step: u64,
    pub cirr_val: cirr::CirrMetrics,
    pub best: bool,
}

pub enum Event<'a> {
    Started { start_step: u64, resumed: bool },
    Step(&'a StepReport),
    Validation(&'a ValidationReport),
    Checkpoint { step: u64 },
}

/// Finds the keywords of a cleaned caption (the part-of-speech tagger in production).
pub type KeywordFn = dyn Fn(&str) -> Vec<String> + Sync;

/// Trains phi. `resume` continues from `output_dir`'s state (an error if there is none).
pub fn train(
    cfg: &TrainConfig,
    clip: &Clip,
    corpus: &Corpus,
    keywords: &KeywordFn,
    output_dir: &Path,
    resume: bool,
    on_event: &mut dyn FnMut(Event),
) -> Result<()> {
    cfg.validate()?;
    let text = clip.text()?;
    if (cfg.phi.input_dim, cfg.phi.output_dim) != (text.projection_dim(), text.width()) {
        return Err(Error::Invalid(format!(
            "phi maps {} -> {} but the model has projection dim {} and text width {}",
            cfg.phi.input_dim,
            cfg.phi.output_dim,
            text.projection_dim(),
            text.width()
        )));
    }
    std::fs::create_dir_all(output_dir.join(CHECKPOINT_DIR)).map_err(|e| Error::file(output_dir, e))?;
    let device = clip.device.clone();

    let phi = Phi::init(cfg.phi, cfg.seed, &device)?;
    let mut opt = AdamW::new(cfg.adamw, &phi.vars())?;
    let mut ema = if cfg.use_ema { Some(Ema::new(cfg.ema_decay, &phi.vars())?) } else { None };
    let mut state = RunState::default();
    if resume {
        state = load_state(cfg, output_dir, &phi, &mut opt, ema.as_mut())?;
        truncate_metrics(&output_dir.join(METRICS_FILE), state.step)?;
    }
    // f16's narrow range needs the loss scaled (loss_scale.rs); a resumed f16 run keeps its scale.
    state.loss_scale = match clip.dtype() {
        candle_core::DType::F16 => Some(state.loss_scale.unwrap_or_default()),
        _ => None,
    };
    if !resume {
        if output_dir.join(STATE_FILE).exists() {
            return Err(Error::file(output_dir, "already holds a training run: pass --resume to continue it, or choose another --output-dir"));
        }
        let _ = std::fs::remove_file(output_dir.join(METRICS_FILE));
    }
    let config_json = serde_json::to_string_pretty(cfg).expect("config serialises");
    crate::io::write_atomic(&output_dir.join(CONFIG_FILE), config_json.as_bytes())?;
    on_event(Event::Started { start_step: state.step, resumed: resume });
    if state.step >= cfg.max_steps {
        return Ok(());
    }

    let validation = match (&cfg.validation_steps, &cfg.cirr_dataset_path) {
        (Some(_), Some(path)) => Some(Validation::prepare(clip, path)?),
        _ => None,
    };

    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = sync_channel::<Result<Batch>>(4);
        let (tokenizer, seed, batch, buffer, start) = (&clip.tokenizer, cfg.seed, cfg.batch_size, cfg.shuffle_buffer, state.stream_position);
        scope.spawn(move || {
            let mut stream = ShuffledCaptions::new(corpus, seed, buffer);
            let prepared = (|| -> Result<()> {
                skip_to(&mut stream, start)?;
                loop {
                    let batch = next_batch(&mut stream, tokenizer, keywords, seed, batch);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        return Ok(());
                    }
                }
            })();
            if let Err(e) = prepared {
                let _ = tx.send(Err(e));
            }
        });
        let result = run_steps(cfg, clip, &phi, &mut opt, &mut ema, &mut state, &rx, validation.as_ref(), output_dir, &device, on_event);
        drop(rx); // stops the producer
        result
    })
}

#[derive(Default)]
struct RunState {
    step: u64,
    stream_position: u64,
    skipped: u64,
    best_r1: Option<f64>,
    /// Dynamic loss scaling, with an f16 tower only.
    loss_scale: Option<LossScale>,
}

#[allow(clippy::too_many_arguments)]
fn run_steps(
    cfg: &TrainConfig,
    clip: &Clip,
    phi: &Phi,
    opt: &mut AdamW,
    ema: &mut Option<Ema>,
    state: &mut RunState,
    batches: &Receiver<Result<Batch>>,
    validation: Option<&Validation>,
    output_dir: &Path,
    device: &Device,
    on_event: &mut dyn FnMut(Event),
) -> Result<()> {
    let text = clip.text()?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output_dir.join(METRICS_FILE))
        .map_err(|e| Error::file(output_dir.join(METRICS_FILE), e))?;
    while state.step < cfg.max_steps {
        let started = Instant::now();
        let lr = cfg.lr_scheduler.lr(cfg.lr, state.step, cfg.lr_warmup_steps, cfg.max_steps);
        let mut grads: Option<Vec<Tensor>> = None;
        let mut epoch = 0;
        let before = (state.stream_position, state.skipped);
        let (mut loss_sum, mut samples, mut random_words, mut prompt_fallbacks) = (0f64, 0usize, 0usize, 0usize);
        for micro in 0..cfg.grad_accum {
            let batch = batches.recv().map_err(|_| Error::Invalid("the caption reader stopped".into()))??;
            state.stream_position = batch.stream_position;
            state.skipped += batch.skipped;
            epoch = batch.epoch;
            let n = batch.samples.len();
            let ids_c = pad_batch(&batch.samples.iter().map(|s| s.ids_caption.clone()).collect::<Vec<_>>(), device)?;
            let ids_r = pad_batch(&batch.samples.iter().map(|s| s.ids_masked.clone()).collect::<Vec<_>>(), device)?;
            let draw = state.step * cfg.grad_accum as u64 + micro as u64;
            let noise = match cfg.noise {
                NoiseMode::Uniform => Noise::draw(&mut Rng::derive(cfg.seed, NOISE_STREAM, draw), n, cfg.phi.input_dim, device)?,
                NoiseMode::None => Noise {
                    scale: Tensor::zeros((n, 1), candle_core::DType::F32, device)?,
                    direction: Tensor::zeros((n, cfg.phi.input_dim), candle_core::DType::F32, device)?,
                },
            };
            let masks = if cfg.phi.dropout > 0.0 {
                let mut rng = Rng::derive(cfg.seed, DROPOUT_STREAM, draw);
                Some(DropoutMasks::draw(&mut rng, n, cfg.phi.hidden_dim, cfg.phi.dropout, device)?)
            } else {
                None
            };
            let target = target_embeddings(text, &ids_c)?;
            let loss_scale = state.loss_scale.map_or(1.0, |s| s.scale());
            let (loss, g) = loss_and_grads(text, phi, &target, &ids_r, &noise, masks.as_ref(), loss_scale)?;
            // Average over micro-batches: the gradient of the mean loss of the accumulated batch.
            let scale = 1.0 / cfg.grad_accum as f64;
            let g: Vec<Tensor> = match cfg.grad_accum {
                1 => g, // a pass over phi's parameters saved
                _ => g.into_iter().map(|t| t * scale).collect::<candle_core::Result<_>>()?,
            };
            grads = Some(match grads {
                None => g,
                Some(acc) => acc.iter().zip(&g).map(|(a, b)| a + b).collect::<candle_core::Result<_>>()?,
            });
            loss_sum += loss as f64;
            samples += n;
            random_words += batch.samples.iter().filter(|s| s.random_word).count();
            prompt_fallbacks += batch.samples.iter().filter(|s| s.prompt_fallback).count();
        }
        let mut grads = grads.expect("grad_accum >= 1");
        let norm = grad_norm(&grads)?;
        let loss = loss_sum / cfg.grad_accum as f64;
        // With a scaled loss, gradients that overflowed f16 skip the update and halve the scale;
        // at a scale of 1 nothing is left to lower, and the step stops training as any other.
        let scale_used = state.loss_scale.map(|s| s.scale());
        let overflowed = loss.is_finite() && !norm.is_finite() && scale_used.is_some_and(|s| s > 1.0);
        if !overflowed && (!loss.is_finite() || !norm.is_finite()) {
            // phi and the optimiser are still those of the last finite step: save them, with
            // the caption stream rewound to before this step, so --resume continues from there.
            (state.stream_position, state.skipped) = before;
            metrics.flush().map_err(|e| Error::file(output_dir.join(METRICS_FILE), e))?;
            export_phi(phi, ema.as_ref())?.save(&output_dir.join(LATEST_FILE), &checkpoint_meta(state.step, cfg))?;
            save_state(output_dir, state, phi, opt, ema.as_ref(), cfg)?;
            return Err(Error::Invalid(format!(
                "step {}: the loss is {loss} and the gradient norm {norm}; training stopped. {} and the training state are those of step {} \
                 (--resume continues from there, e.g. with a lower --lr)",
                state.step + 1,
                LATEST_FILE,
                state.step
            )));
        }
        if let Some(s) = state.loss_scale.as_mut() {
            s.update(!overflowed);
        }
        let grad_norm = match cfg.max_grad_norm {
            Some(_) if overflowed => None,
            Some(m) => {
                scale_to_max_norm(&mut grads, norm, m)?;
                Some(norm)
            }
            None => None,
        };
        if !overflowed {
            opt.step(&phi.vars(), &grads, lr)?;
            if let Some(ema) = ema.as_mut() {
                ema.update(&phi.vars())?;
            }
        }
        state.step += 1;
        let report = StepReport {
            step: state.step,
            loss,
            lr,
            grad_norm,
            random_word_rate: random_words as f64 / samples as f64,
            prompt_fallback_rate: prompt_fallbacks as f64 / samples as f64,
            skipped_captions: state.skipped,
            samples_per_s: samples as f64 / started.elapsed().as_secs_f64(),
            epoch,
            loss_scale: scale_used,
            update_skipped: overflowed,
        };
        writeln!(metrics, "{}", serde_json::to_string(&report).expect("report serialises")).map_err(|e| Error::file(output_dir.join(METRICS_FILE), e))?;
        on_event(Event::Step(&report));

        let last = state.step == cfg.max_steps;
        let validate = validation.filter(|_| cfg.validation_steps.is_some_and(|every| state.step.is_multiple_of(every) || last));
        let checkpoint = state.step.is_multiple_of(cfg.checkpointing_steps) || last;
        if validate.is_none() && !checkpoint {
            continue;
        }
        // Only steps that validate or save need the exported (EMA) weights.
        let evaluated = export_phi(phi, ema.as_ref())?;
        if let Some(v) = validate {
            let m = v.evaluate(clip, &evaluated)?;
            let r1 = m.recall_at(1).unwrap_or(0.0);
            let best = state.best_r1.is_none_or(|b| r1 > b);
            if best {
                state.best_r1 = Some(r1);
                evaluated.save(&output_dir.join(BEST_FILE), &checkpoint_meta(state.step, cfg))?;
            }
            let report = ValidationReport { step: state.step, cirr_val: m, best };
            writeln!(metrics, "{}", serde_json::json!({"step": state.step, "validation": &report}))
                .map_err(|e| Error::file(output_dir.join(METRICS_FILE), e))?;
            on_event(Event::Validation(&report));
        }
        if checkpoint {
            metrics.flush().map_err(|e| Error::file(output_dir.join(METRICS_FILE), e))?;
            let meta = checkpoint_meta(state.step, cfg);
            evaluated.save(&output_dir.join(CHECKPOINT_DIR).join(format!("phi_{:06}.safetensors", state.step)), &meta)?;
            evaluated.save(&output_dir.join(LATEST_FILE), &meta)?;
            save_state(output_dir, state, phi, opt, ema.as_ref(), cfg)?;
            on_event(Event::Checkpoint { step: state.step });
        }
    }
    Ok(())
}

/// The phi that is evaluated and saved: the EMA weights when EMA is on.
fn export_phi(phi: &Phi, ema: Option<&Ema>) -> Result<Phi> {
    let values: Vec<Tensor> = match ema {
        Some(e) => e.weights.clone(),
        None => phi.vars().iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?,
    };
    Phi::with_weights(phi.config, &values)
}

fn checkpoint_meta(step: u64, cfg: &TrainConfig) -> Vec<(&'static str, String)> {
    vec![("step", step.to_string()), ("train_config", serde_json::to_string(cfg).expect("config serialises"))]
}

/// Skips the captions a previous run consumed (reading only, no tagging).
fn skip_to(stream: &mut ShuffledCaptions, position: u64) -> Result<()> {
    while stream.next_index() < position {
        stream.next().expect("the stream is endless")?;
    }
    Ok(())
}

/// Reads captions until `size` usable ones, then prepares them in parallel. Each caption's masking
/// is seeded by its index in the stream, so the order of the threads does not matter.
fn next_batch(
    stream: &mut ShuffledCaptions,
    tokenizer: &crate::clip::ClipTokenizer,
    keywords: &KeywordFn,
    seed: u64,
    size: usize,
) -> Result<Batch> {
    let mut raw = Vec::with_capacity(size);
    let mut skipped = 0u64;
    let mut skipped_in_a_row = 0u64;
    while raw.len() < size {
        let (index, caption) = stream.next().expect("the stream is endless")?;
        if super::clean::clean_caption(caption.as_deref()).is_empty() {
            skipped += 1;
            skipped_in_a_row += 1;
            // A whole epoch of unusable captions would loop forever.
            if stream.epoch_len().is_some_and(|len| skipped_in_a_row > len) {
                return Err(Error::Invalid(format!(
                    "the caption corpus has no usable captions ({skipped_in_a_row} read in a row were empty or only `$`)"
                )));
            }
            continue;
        }
        skipped_in_a_row = 0;
        raw.push((index, caption));
    }
    let prepared: Vec<Result<std::result::Result<Sample, Skip>>> = raw
        .par_iter()
        .map(|(index, caption)| {
            let mut rng = Rng::derive(seed, MASK_STREAM, *index);
            prepare_sample(tokenizer, keywords, caption.as_deref(), &mut rng)
        })
        .collect();
    let mut samples = Vec::with_capacity(size);
    for p in prepared {
        match p? {
            Ok(s) => samples.push(s),
            Err(Skip::Empty) => unreachable!("empty captions were filtered above"),
        }
    }
    Ok(Batch { samples, stream_position: stream.next_index(), skipped, epoch: stream.epoch() })
}

/// CIRR val, with the gallery embedded once for the whole run.
struct Validation {
    split: cirr::CirrSplit,
    gallery: Tensor,
    references: Tensor,
}

impl Validation {
    /// Embeds the val gallery once, through the feature cache (a rerun or a resumed run, and
    /// `lincir eval` on the same data, reuse it).
    fn prepare(clip: &Clip, path: &Path) -> Result<Self> {
        use crate::bench::{cache, images};
        let split = cirr::CirrSplit::load(path, "val")?;
        let cache = cache::default_root().map(|root| cache::FeatureCache::for_model(clip, &root)).transpose()?;
        let files: Vec<images::BenchImage> = split.paths.iter().cloned().map(images::BenchImage::file).collect();
        let gallery = images::embed_images(clip, cache.as_ref(), &files, 32, images::BadImages::Fail, &|_| {})?.features;
        let idx = Tensor::from_vec(split.reference_indices().iter().map(|&i| i as u32).collect::<Vec<_>>(), split.queries.len(), &clip.device)?;
        let references = gallery.index_select(&idx, 0)?;
        Ok(Validation { split, gallery, references })
    }

    fn evaluate(&self, clip: &Clip, phi: &Phi) -> Result<cirr::CirrMetrics> {
        let q = query::query_features(clip, Some(phi), crate::method::Method::Lincir, query::QueryMode::Composed, &self.references, &self.split.captions(), 64)?;
        cirr::metrics(&self.split, &query::scores(&q, &self.gallery)?)
    }
}

fn save_state(dir: &Path, s: &RunState, phi: &Phi, opt: &AdamW, ema: Option<&Ema>, cfg: &TrainConfig) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = phi.named_tensors().into_iter().map(|(n, t)| (format!("phi.{n}"), t)).collect();
    let names: Vec<String> = phi.named_tensors().into_iter().map(|(n, _)| n).collect();
    for (i, n) in names.iter().enumerate() {
        tensors.push((format!("adam_m.{n}"), opt.m[i].clone()));
        tensors.push((format!("adam_v.{n}"), opt.v[i].clone()));
        if let Some(e) = ema {
            tensors.push((format!("ema.{n}"), e.weights[i].clone()));
        }
    }
    let meta = std::collections::HashMap::from([
        ("step".to_string(), s.step.to_string()),
        ("stream_position".to_string(), s.stream_position.to_string()),
        ("skipped".to_string(), s.skipped.to_string()),
        ("adam_t".to_string(), opt.t.to_string()),
        ("ema_updates".to_string(), ema.map(|e| e.updates).unwrap_or(0).to_string()),
        ("best_r1".to_string(), s.best_r1.map(|b| b.to_string()).unwrap_or_default()),
        ("loss_scale".to_string(), s.loss_scale.map(|l| l.to_meta()).unwrap_or_default()),
        ("identity".to_string(), cfg.identity().to_string()),
    ]);
    crate::io::write_safetensors_atomic(&dir.join(STATE_FILE), &tensors, meta)
}

fn load_state(cfg: &TrainConfig, dir: &Path, phi: &Phi, opt: &mut AdamW, ema: Option<&mut Ema>) -> Result<RunState> {
    let path = dir.join(STATE_FILE);
    if !path.is_file() {
        return Err(Error::file(&path, "nothing to resume: no training state in this output directory"));
    }
    let (t, meta) = crate::io::read_safetensors(&path)?;
    let field = |k: &str| meta.get(k).cloned().ok_or_else(|| Error::file(&path, format!("training state lacks `{k}`")));
    let number = |k: &str| -> Result<u64> { field(k)?.parse().map_err(|_| Error::file(&path, format!("training state: `{k}` is not a number"))) };
    let saved: serde_json::Value = serde_json::from_str(&field("identity")?).map_err(|e| Error::file(&path, e))?;
    if saved != cfg.identity() {
        return Err(Error::file(
            &path,
            format!("was written by a run with other settings; resume with the same ones.\n  saved: {saved}\n  now:   {}", cfg.identity()),
        ));
    }
    let get = |k: String| t.get(&k).cloned().ok_or_else(|| Error::tensor(&path, &k, "missing from the training state"));
    let names: Vec<String> = phi.named_tensors().into_iter().map(|(n, _)| n).collect();
    let device = &phi.vars()[0].device().clone();
    let weights = names.iter().map(|n| get(format!("phi.{n}"))?.to_device(device).map_err(Error::from)).collect::<Result<Vec<_>>>()?;
    phi.set_from(&weights)?;
    opt.m = names.iter().map(|n| get(format!("adam_m.{n}"))?.to_device(device).map_err(Error::from)).collect::<Result<_>>()?;
    opt.v = names.iter().map(|n| get(format!("adam_v.{n}"))?.to_device(device).map_err(Error::from)).collect::<Result<_>>()?;
    opt.t = number("adam_t")?;
    if let Some(e) = ema {
        e.weights = names.iter().map(|n| get(format!("ema.{n}"))?.to_device(device).map_err(Error::from)).collect::<Result<_>>()?;
        e.updates = number("ema_updates")?;
    }
    let best = field("best_r1")?;
    // Empty without loss scaling (and absent from states written before it).
    let loss_scale = match meta.get("loss_scale").map(|v| v.trim()) {
        None | Some("") => None,
        Some(v) => Some(
            LossScale::from_meta(v).ok_or_else(|| Error::file(&path, "training state: `loss_scale` is not a power-of-two scale and a step count"))?,
        ),
    };
    Ok(RunState {
        step: number("step")?,
        stream_position: number("stream_position")?,
        skipped: number("skipped")?,
        best_r1: if best.is_empty() { None } else { best.parse().ok() },
        loss_scale,
    })
}

/// Drops metric lines after `step` (written after the checkpoint a run resumes from).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    crate::io::write_atomic(path, out.as_bytes())
}
