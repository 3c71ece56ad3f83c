//! SEARLE's phi training (its `train_phi.py`) over precomputed image embeddings and their OTI
//! pseudo words: phi (LinCIR's architecture, dropout 0.5) predicts each image's pseudo word;
//!
//! loss = l_distil * distillation(oti words, phi(v), t) + l_gpt * cosine(phrase, phrase with phi(v))
//!
//! where the phrase is a random phrase of a random usable concept of the image, the concept's
//! every occurrence replaced by ` $ ` and only the first `$` taking the pseudo word (SEARLE's
//! encoder). AdamW (weight decay on every parameter, as `optim.AdamW(phi.parameters())`), constant
//! learning rate, shuffled batches with each epoch's last incomplete batch dropped.
//!
//! Files in the output folder:
//! - `phi_latest.safetensors`: phi (official key names), at every checkpoint;
//! - `searle_phi.pt`: the same weights in SEARLE's release format (`{'Phi': state_dict}`);
//! - `train_state.safetensors`, `metrics.jsonl`, `train_config.json` (as `train-pic2word`).

use std::io::Write;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::loss::{cosine_loss, distillation_loss};
use super::phrases::PhraseBatch;
use crate::clip::{Clip, ClipTokenizer, TextTower};
use crate::phi::{DropoutMasks, Phi, PhiConfig};
use crate::pic2word::train::batch_rows;
use crate::rng::Rng;
use crate::smp::optim::{AdamW, AdamWConfig};
use crate::{Error, Result};

pub const PHI_FILE: &str = "phi_latest.safetensors";
pub const RELEASE_FILE: &str = "searle_phi.pt";
pub const STATE_FILE: &str = "train_state.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CONFIG_FILE: &str = "train_config.json";

// Purposes of the derived random streams.
const DROPOUT: u64 = 31;
const DRAW: u64 = 32;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub max_steps: u64,
    pub seed: u64,
    pub checkpointing_steps: u64,
    /// Weight of the distillation loss (1), of the phrase regulariser (0.25), and the
    /// distillation's temperature (0.25).
    pub lambda_distil: f64,
    pub lambda_gpt: f64,
    pub temperature: f64,
    pub phi: PhiConfig,
    /// Number of training images (a resumed run must see the same set).
    pub images: usize,
}

/// One image's usable concepts, each with its phrases.
pub type ImageConcepts<'a> = Vec<(&'a str, &'a [String])>;

/// A step's phrases: per image a concept (uniform over its usable ones), then one of its phrases
/// (uniform), every occurrence of the concept replaced (SEARLE's phi training).
pub fn draw_phrases(tokenizer: &ClipTokenizer, concepts: &[&ImageConcepts], rng: &mut Rng, device: &Device) -> Result<Option<PhraseBatch>> {
    let chosen: Vec<Option<(&str, &str)>> = concepts
        .iter()
        .map(|c| {
            (!c.is_empty()).then(|| {
                let (concept, phrases) = c[rng.below(c.len())];
                (concept, phrases[rng.below(phrases.len())].as_str())
            })
        })
        .collect();
    PhraseBatch::new(tokenizer, &chosen, true, device)
}

/// The parts of one step's loss.
pub struct StepLoss {
    pub total: Tensor,
    pub distillation: f32,
    pub gpt: f32,
}

/// One step's loss, whose graph reaches phi's parameters.
///
/// # Shapes
/// image: [batch, P]; oti: [batch, width] (the images' OTI pseudo words)
pub fn phi_loss(text: &TextTower, phi: &Phi, image: &Tensor, oti: &Tensor, masks: Option<&DropoutMasks>, texts: Option<&PhraseBatch>, cfg: &TrainConfig) -> Result<StepLoss> {
    let predicted = phi.forward(image, masks)?;
    let distillation = distillation_loss(oti, &predicted, cfg.temperature)?;
    let mut total = (&distillation * cfg.lambda_distil)?;
    let mut gpt_value = 0.0;
    if let Some(t) = texts {
        let (with_word, target) = t.embeddings(text, &predicted)?;
        let gpt = cosine_loss(&target, &with_word)?;
        gpt_value = gpt.to_scalar::<f32>()?;
        total = (total + (gpt * cfg.lambda_gpt)?)?;
    }
    Ok(StepLoss { distillation: distillation.to_scalar::<f32>()?, gpt: gpt_value, total })
}

/// The loss parts and the gradient of every phi parameter (in [`Phi::vars`] order).
pub fn loss_and_grads(text: &TextTower, phi: &Phi, image: &Tensor, oti: &Tensor, masks: Option<&DropoutMasks>, texts: Option<&PhraseBatch>, cfg: &TrainConfig) -> Result<(f32, f32, f32, Vec<Tensor>)> {
    let loss = phi_loss(text, phi, image, oti, masks, texts, cfg)?;
    let mut grads = loss.total.backward()?;
    let grads = phi.vars().into_iter().map(|v| grads.remove(v.as_tensor()).ok_or_else(|| Error::Invalid("a phi parameter received no gradient".into()))).collect::<Result<Vec<_>>>()?;
    Ok((loss.total.to_scalar::<f32>()?, loss.distillation, loss.gpt, grads))
}

/// One step's report to the caller (progress, logs).
pub struct StepReport {
    pub step: u64,
    pub loss: f32,
}

pub struct Summary {
    pub first_step: u64,
    pub steps: u64,
    pub final_loss: f32,
}

fn adam(weight_decay: f64, phi: &Phi) -> Result<AdamW> {
    AdamW::new(AdamWConfig { weight_decay, ..AdamWConfig::default() }, &phi.vars())
}

fn save_state(dir: &Path, step: u64, phi: &Phi, opt: &AdamW, cfg: &TrainConfig) -> Result<()> {
    crate::train_state::save(&dir.join(STATE_FILE), step, phi.named_tensors(), &[("phi", opt)], cfg)
}

/// Restores a run's state; the settings must be the run's own (but for the number of steps).
fn load_state(dir: &Path, cfg: &TrainConfig, device: &Device) -> Result<(u64, Phi, AdamW)> {
    let saved = crate::train_state::load(&dir.join(STATE_FILE), cfg, |s| TrainConfig { max_steps: cfg.max_steps, ..s }, "train-searle")?;
    let phi = Phi::from_tensors(cfg.phi, &saved.tensors, &saved.path, device)?;
    let mut opt = adam(cfg.weight_decay, &phi)?;
    saved.restore("phi", &mut opt, device)?;
    Ok((saved.step, phi, opt))
}

/// Trains phi into `dir` from scratch or (with `resume`) from the run's last checkpoint.
///
/// # Shapes
/// images: [n, P] f32 (un-normalised CLIP image embeddings); oti: [n, width] (their OTI words)
#[allow(clippy::too_many_arguments)]
pub fn train(clip: &Clip, images: &Tensor, oti: &Tensor, concepts: &[ImageConcepts], cfg: &TrainConfig, dir: &Path, resume: bool, on_step: &dyn Fn(&StepReport)) -> Result<Summary> {
    let (text, tokenizer, device) = (clip.text()?, &clip.tokenizer, clip.device.clone());
    let (n, p) = images.dims2()?;
    if cfg.images != n || oti.dims2()? != (n, text.width()) || concepts.len() != n {
        return Err(Error::Invalid(format!("{n} images, {:?} pseudo words and {} concept lists for a run of {} images", oti.dims(), concepts.len(), cfg.images)));
    }
    if n < cfg.batch_size || cfg.batch_size < 2 {
        return Err(Error::Invalid(format!("{n} images for batches of {}: the distillation loss needs batches of at least 2 and at least one whole batch", cfg.batch_size)));
    }
    if p != cfg.phi.input_dim || text.width() != cfg.phi.output_dim {
        return Err(Error::Invalid(format!("embeddings of dim {p} for a phi {} -> {}", cfg.phi.input_dim, cfg.phi.output_dim)));
    }
    let (first_step, phi, mut opt) = if crate::train_state::start(dir, STATE_FILE, resume)? {
        load_state(dir, cfg, &device)?
    } else {
        let phi = Phi::init(cfg.phi, cfg.seed, &device)?;
        let opt = adam(cfg.weight_decay, &phi)?;
        (0, phi, opt)
    };
    let metrics_path = dir.join(METRICS_FILE);
    let mut metrics = crate::train_state::metrics_from(&metrics_path, first_step)?;
    crate::io::write_atomic(&dir.join(CONFIG_FILE), (serde_json::to_string_pretty(cfg).expect("config serialises") + "\n").as_bytes())?;
    let (images, oti) = (images.to_device(&device)?, oti.to_device(&device)?.to_dtype(candle_core::DType::F32)?);
    let mut perm = None;
    let mut last = f32::NAN;
    for step in first_step..cfg.max_steps {
        let rows = batch_rows(cfg.seed, n, cfg.batch_size, step, &mut perm);
        let index = Tensor::from_vec(rows.clone(), rows.len(), &device)?;
        let batch_concepts: Vec<&ImageConcepts> = rows.iter().map(|&r| &concepts[r as usize]).collect();
        let texts = draw_phrases(tokenizer, &batch_concepts, &mut Rng::derive(cfg.seed, DRAW, step), &device)?;
        let masks = DropoutMasks::draw(&mut Rng::derive(cfg.seed, DROPOUT, step), cfg.batch_size, cfg.phi.hidden_dim, cfg.phi.dropout, &device)?;
        let (loss, distillation, gpt, grads) = loss_and_grads(text, &phi, &images.index_select(&index, 0)?, &oti.index_select(&index, 0)?, Some(&masks), texts.as_ref(), cfg)?;
        if !loss.is_finite() {
            return Err(Error::Invalid(format!("step {}: the loss is {loss}; stopped before updating (resume from the last checkpoint with --resume; try a lower --lr)", step + 1)));
        }
        opt.step(&phi.vars(), &grads, cfg.lr)?;
        last = loss;
        writeln!(metrics, "{}", serde_json::json!({"step": step + 1, "loss": loss, "distillation": distillation, "gpt": gpt})).map_err(|e| Error::file(&metrics_path, e))?;
        let done = step + 1;
        if done % cfg.checkpointing_steps.max(1) == 0 || done == cfg.max_steps {
            metrics.flush().map_err(|e| Error::file(&metrics_path, e))?;
            phi.save(&dir.join(PHI_FILE), &[("step", done.to_string()), ("method", "searle".to_string())])?;
            save_state(dir, done, &phi, &opt, cfg)?;
        }
        on_step(&StepReport { step: done, loss });
    }
    let epoch = (cfg.max_steps / (n / cfg.batch_size) as u64) as usize;
    phi.save_official(&dir.join(RELEASE_FILE), epoch)?;
    Ok(Summary { first_step, steps: cfg.max_steps - first_step, final_loss: last })
}
