//! From a raw caption to one training sample: clean, truncate, find keywords, mask, tokenise
//! (SMP steps 1 to 4). Pure and seeded per sample, so it runs on worker threads in any order.

use super::clean::clean_caption;
use super::mask::mask_caption;
use crate::clip::ClipTokenizer;
use crate::prompt::{FALLBACK_MASKED, PLACEHOLDER, PSEUDO_TOKEN_ID};
use crate::rng::Rng;
use crate::Result;

/// One caption ready for the step: token ids of the caption and of its masked form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub ids_caption: Vec<u32>,
    pub ids_masked: Vec<u32>,
    /// A random word was masked instead of the keywords.
    pub random_word: bool,
    /// The masked caption lost its placeholder (truncation) and became `a photo of [$]`.
    pub prompt_fallback: bool,
}

/// Why a caption gives no sample: it is counted and skipped, never a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Nothing left after cleaning (an empty line, a line of `$`).
    Empty,
}

/// Steps 1 to 4 of SMP for one caption. `keywords` tags the cleaned caption; `rng` decides the
/// random-word fallback.
pub fn prepare_sample(
    tokenizer: &ClipTokenizer,
    keywords: &dyn Fn(&str) -> Vec<String>,
    raw: Option<&str>,
    rng: &mut Rng,
) -> Result<std::result::Result<Sample, Skip>> {
    let mut caption = clean_caption(raw);
    if caption.is_empty() {
        return Ok(Err(Skip::Empty));
    }
    let body = tokenizer.encode_plain(&caption)?;
    let room = tokenizer.context_length() - 2;
    if body.len() > room {
        caption = tokenizer.decode_words(&body[..room])?;
    }
    let masked = mask_caption(&caption, &keywords(&caption), &mut |n| rng.below(n));
    let mut ids_masked = encode_with_placeholder(tokenizer, &masked.text)?;
    let prompt_fallback = !ids_masked.contains(&PSEUDO_TOKEN_ID);
    if prompt_fallback {
        ids_masked = encode_with_placeholder(tokenizer, FALLBACK_MASKED)?;
    }
    Ok(Ok(Sample { ids_caption: tokenizer.encode(&caption)?, ids_masked, random_word: masked.fallback, prompt_fallback }))
}

/// Tokenises text in which [`PLACEHOLDER`] stands for the pseudo word: every placeholder becomes
/// one [`PSEUDO_TOKEN_ID`] whatever surrounds it, and the text between placeholders is encoded on
/// its own (as a tokenizer with the placeholder as an added special token does). Framed and
/// truncated to the context like [`ClipTokenizer::encode`].
pub fn encode_with_placeholder(tokenizer: &ClipTokenizer, text: &str) -> Result<Vec<u32>> {
    let mut body = Vec::new();
    for (i, piece) in text.split(PLACEHOLDER).enumerate() {
        if i > 0 {
            body.push(PSEUDO_TOKEN_ID);
        }
        if !piece.is_empty() {
            body.extend(tokenizer.encode_plain(piece)?);
        }
    }
    Ok(tokenizer.frame(&body))
}
