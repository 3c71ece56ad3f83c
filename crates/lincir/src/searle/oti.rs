//! Optimisation-based textual inversion (SEARLE's `oti_inversion.py`): for a batch of images, a
//! pseudo word per image, initialised N(0, 0.02^2) and optimised by AdamW so that
//!
//! - a random template with the pseudo word ("This is a photo of a $", [`super::TEMPLATES`])
//!   embeds like the image (cosine loss), and
//! - a random phrase about one of the image's concepts, with the concept replaced by the pseudo
//!   word, embeds like the phrase itself (cosine loss, the "GPT" regulariser),
//!
//! loss = (l_cos * cosine + l_gpt * gpt) / (l_cos + l_gpt); an exponential moving average of the
//! pseudo words is what phi is later distilled from.

use candle_core::{Device, Tensor, Var};

use super::loss::cosine_loss;
use super::phrases::PhraseBatch;
use crate::clip::tokenizer::pad_batch;
use crate::clip::{ClipTokenizer, Grad, TextTower};
use crate::method::DOLLAR_ID;
use crate::rng::Rng;
use crate::smp::optim::{AdamW, AdamWConfig};
use crate::Result;

// Purposes of the derived random streams.
const INIT: u64 = 21;
const DRAW: u64 = 22;

/// SEARLE's OTI settings (its defaults in [`Default`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OtiConfig {
    /// Optimisation steps per image (350).
    pub steps: u64,
    /// AdamW learning rate (2e-2) and weight decay (0.01).
    pub lr: f64,
    pub weight_decay: f64,
    /// Weights of the template cosine loss (1) and of the phrase regulariser (0.5).
    pub lambda_cos: f64,
    pub lambda_gpt: f64,
    /// Decay of the moving average of the pseudo words (0.99).
    pub ema_decay: f64,
    /// Images inverted together (32); each image's result does not depend on the others.
    pub batch_size: usize,
}

impl Default for OtiConfig {
    fn default() -> Self {
        OtiConfig { steps: 350, lr: 2e-2, weight_decay: 0.01, lambda_cos: 1.0, lambda_gpt: 0.5, ema_decay: 0.99, batch_size: 32 }
    }
}

/// What one image may be regularised with: (concept, phrase) pairs of its usable concepts.
pub type ConceptPhrases<'a> = Vec<(&'a str, &'a str)>;

/// The token ids of one step's texts.
pub struct StepTexts {
    /// [batch, seq]: each image's template with the placeholder.
    pub templates: Tensor,
    /// The phrases of the images that have one this step (those without one have no usable
    /// concept), the concept's first occurrence replaced.
    pub phrases: Option<PhraseBatch>,
}

impl StepTexts {
    /// Tokenises one step's choices: a template per image, and per image with a phrase the
    /// phrase with its concept's first occurrence replaced by ` $ ` (SEARLE's OTI replacement).
    pub fn new(tokenizer: &ClipTokenizer, templates: &[&str], phrases: &[Option<(&str, &str)>], device: &Device) -> Result<Self> {
        let with_placeholder: Vec<String> = templates.iter().map(|t| super::template_with_placeholder(t)).collect();
        let with_placeholder: Vec<&str> = with_placeholder.iter().map(String::as_str).collect();
        let templates = pad_batch(&tokenizer.encode_batch(&with_placeholder)?, device)?;
        Ok(StepTexts { templates, phrases: PhraseBatch::new(tokenizer, phrases, false, device)? })
    }

    /// A step's random choices, each image from its own stream: a template (uniform over the
    /// 24) and a phrase (uniform over all of its concepts' phrases, as SEARLE flattens them).
    pub fn draw(tokenizer: &ClipTokenizer, choices: &[ConceptPhrases], streams: &mut [Rng], device: &Device) -> Result<Self> {
        let mut templates = Vec::with_capacity(choices.len());
        let mut phrases = Vec::with_capacity(choices.len());
        for (c, rng) in choices.iter().zip(streams.iter_mut()) {
            templates.push(super::TEMPLATES[rng.below(super::TEMPLATES.len())]);
            phrases.push((!c.is_empty()).then(|| c[rng.below(c.len())]));
        }
        Self::new(tokenizer, &templates, &phrases, device)
    }
}

/// One step's loss, differentiable with respect to `words`. Images without a phrase this step
/// contribute the template term only; the phrase term sums over those with one and divides by
/// the batch size.
///
/// # Shapes
/// words: [batch, width]; image: [batch, P] (the images' CLIP embeddings) -> []
pub fn oti_loss(text: &TextTower, words: &Tensor, image: &Tensor, texts: &StepTexts, cfg: &OtiConfig) -> Result<Tensor> {
    let template = text.embed_with_pseudo_words_at(&texts.templates, words, DOLLAR_ID, false, Grad::Yes)?;
    let cosine = cosine_loss(&template, image)?;
    let Some(phrases) = &texts.phrases else { return Ok(cosine) };
    let (with_word, target) = phrases.embeddings(text, words)?;
    // Summed over the images with a phrase and divided by the whole batch: every image's gradient
    // is its own terms over the batch size, which AdamW's normalisation cancels, so an image is
    // inverted alike in any batch. With a phrase for every image (SEARLE's case) it is the mean.
    let with_phrase = phrases.rows.len() as f64 / image.dim(0)? as f64;
    let gpt = (cosine_loss(&with_word, &target)? * with_phrase)?;
    let total = cfg.lambda_cos + cfg.lambda_gpt;
    Ok(((cosine * (cfg.lambda_cos / total))? + (gpt * (cfg.lambda_gpt / total))?)?)
}

/// The pseudo words of one batch of images.
pub struct Inverted {
    /// [batch, width]: after the last step, and their moving average (what phi learns from).
    pub words: Tensor,
    pub ema: Tensor,
    /// The last step's loss.
    pub loss: f32,
}

/// Inverts a batch of images. Each image's draws (initial word, templates, phrases) come from
/// its own stream, (seed, key): an image is inverted the same way whatever batch it is in, and a
/// resumed run inverts it again to the same word. Training uses the image's index as its key.
///
/// # Shapes
/// image: [batch, P] f32 on the text tower's device; keys: one per image
pub fn invert(text: &TextTower, tokenizer: &ClipTokenizer, image: &Tensor, choices: &[ConceptPhrases], cfg: &OtiConfig, seed: u64, keys: &[u64]) -> Result<Inverted> {
    let (b, device) = (image.dim(0)?, image.device().clone());
    if keys.len() != b || choices.len() != b {
        return Err(crate::Error::Invalid(format!("{b} images, {} keys and {} choice lists", keys.len(), choices.len())));
    }
    let width = text.width();
    let mut start = Vec::with_capacity(b * width);
    for &key in keys {
        let mut init = Rng::derive(seed, INIT, key);
        start.extend((0..width).map(|_| 0.02 * init.normal()));
    }
    let mut streams: Vec<Rng> = keys.iter().map(|&k| Rng::derive(seed, DRAW, k)).collect();
    let mut texts = |_step: u64| StepTexts::draw(tokenizer, choices, &mut streams, &device);
    invert_from(text, image, &Tensor::from_vec(start, (b, width), &device)?, cfg, &mut texts)
        .map_err(|e| crate::Error::Invalid(format!("textual inversion of images {}..{}: {e}", keys[0] + 1, keys[b - 1] + 1)))
}

/// The optimisation itself, from initial words and each step's texts.
///
/// # Shapes
/// image: [batch, P]; start: [batch, width]
pub fn invert_from(text: &TextTower, image: &Tensor, start: &Tensor, cfg: &OtiConfig, texts: &mut dyn FnMut(u64) -> Result<StepTexts>) -> Result<Inverted> {
    let words = Var::from_tensor(start)?;
    let mut ema = words.as_tensor().copy()?;
    let mut adam = AdamW::new(AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() }, &[&words])?;
    let mut last = f32::NAN;
    for step in 0..cfg.steps {
        let loss = oti_loss(text, words.as_tensor(), image, &texts(step)?, cfg)?;
        last = loss.to_scalar::<f32>()?;
        if !last.is_finite() {
            return Err(crate::Error::Invalid(format!("the loss is {last} at step {}", step + 1)));
        }
        let grad = loss.backward()?.remove(words.as_tensor()).ok_or_else(|| crate::Error::Invalid("the pseudo words received no gradient".into()))?;
        adam.step(&[&words], &[grad], cfg.lr)?;
        ema = ((ema * cfg.ema_decay)? + (words.as_tensor() * (1.0 - cfg.ema_decay))?)?;
    }
    Ok(Inverted { words: words.as_tensor().copy()?, ema, loss: last })
}
