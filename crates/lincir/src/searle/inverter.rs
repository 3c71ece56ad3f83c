//! SEARLE-OTI at query time: a reference image's pseudo word found by textual inversion of that
//! image itself (SEARLE's "OTI" evaluation, the SEARLE-XL-OTI rows of its paper), instead of
//! predicted by phi. Usable wherever a pseudo-word network is ([`PseudoWordNet`]): each
//! reference is inverted once (repeats are remembered) and, drawing from a stream keyed by its
//! embedding, the same way whatever queries it comes with.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Tensor};

use super::oti::{self, ConceptPhrases, OtiConfig};
use super::phrases::Phrases;
use crate::clip::{ClipTokenizer, TextTower};
use crate::mapper::PseudoWordNet;
use crate::Result;

/// What an inversion needs besides CLIP: the concept vocabulary with its ensemble embeddings
/// ([`super::concepts::embed_vocabulary`]), the phrases, and the settings.
pub struct InversionSetup {
    pub vocabulary: Vec<String>,
    /// [concepts, P] unit rows.
    pub embeddings: Tensor,
    pub phrases: Phrases,
    pub top_k: usize,
    pub config: OtiConfig,
    pub seed: u64,
}

pub struct Inverter<'a> {
    text: &'a TextTower,
    tokenizer: &'a ClipTokenizer,
    setup: &'a InversionSetup,
    /// Pseudo words ([width] f32, the moving average) by embedding key.
    memo: Mutex<HashMap<u64, Tensor>>,
    on_inverted: &'a (dyn Fn(usize) + Sync),
}

impl<'a> Inverter<'a> {
    /// `on_inverted` is told how many images each inversion batch finished (progress).
    pub fn new(text: &'a TextTower, tokenizer: &'a ClipTokenizer, setup: &'a InversionSetup, on_inverted: &'a (dyn Fn(usize) + Sync)) -> Self {
        Inverter { text, tokenizer, setup, memo: Mutex::new(HashMap::new()), on_inverted }
    }

    /// Number of distinct images inverted so far.
    pub fn inverted(&self) -> usize {
        self.memo.lock().expect("memo").len()
    }
}

/// An image's key: FNV-1a over its embedding's f32 bits.
fn key(row: &[f32]) -> u64 {
    let mut h = crate::fnv::Fnv::new();
    for v in row {
        h.write(&v.to_bits().to_le_bytes());
    }
    h.finish()
}

impl PseudoWordNet for Inverter<'_> {
    fn pseudo_words(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let rows = x.to_vec2::<f32>()?;
        let keys: Vec<u64> = rows.iter().map(|r| key(r)).collect();
        // The distinct images not inverted yet, in order of appearance.
        let mut todo: Vec<usize> = Vec::new();
        {
            let memo = self.memo.lock().expect("memo");
            for (i, k) in keys.iter().enumerate() {
                if !memo.contains_key(k) && !todo.iter().any(|&j| keys[j] == *k) {
                    todo.push(i);
                }
            }
        }
        let s = self.setup;
        for chunk in todo.chunks(s.config.batch_size.max(1)) {
            let index = Tensor::from_vec(chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(), chunk.len(), x.device())?;
            let images = x.index_select(&index, 0)?;
            let nearest = super::concepts::nearest_concepts(&images, &s.embeddings, s.top_k)?;
            let choices: Vec<ConceptPhrases> = super::usable_concepts(&nearest, &s.vocabulary, &s.phrases).iter().map(super::concept_phrase_pairs).collect();
            let chunk_keys: Vec<u64> = chunk.iter().map(|&i| keys[i]).collect();
            let done = oti::invert(self.text, self.tokenizer, &images, &choices, &s.config, s.seed, &chunk_keys)?;
            let mut memo = self.memo.lock().expect("memo");
            for (r, &k) in chunk_keys.iter().enumerate() {
                memo.insert(k, done.ema.get(r)?);
            }
            drop(memo);
            (self.on_inverted)(chunk.len());
        }
        let memo = self.memo.lock().expect("memo");
        let words: Vec<Tensor> = keys.iter().map(|k| memo[k].clone()).collect();
        Ok(Tensor::stack(&words, 0)?)
    }
}
