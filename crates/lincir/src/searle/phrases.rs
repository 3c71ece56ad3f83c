//! Phrases about each concept, SEARLE's regulariser: the pseudo word put in place of the concept
//! in a phrase must embed like the phrase itself. SEARLE generated 256 phrases per concept with
//! GPT-Neo 2.7B from the prompt "a photo of {concept} that"; lincir reads such phrases from a JSON
//! file, or (language only, no generator needed) takes them from a caption corpus: the captions
//! that name the concept.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::clip::tokenizer::pad_batch;
use crate::clip::{ClipTokenizer, Grad, TextTower};
use crate::method::DOLLAR_ID;
use crate::rng::Rng;
use crate::{Error, Result};

/// A phrase longer than this (bytes) is not used (CLIP reads 75 tokens of it at most): with 256
/// phrases per concept, 20,000 concepts hold at most 2 GB of phrases.
const MAX_PHRASE_LEN: usize = 400;
/// A phrases file larger than this is refused (SEARLE's 256 GPT phrases for each of Open Images'
/// ~20,000 concepts are about 0.6 GB).
const MAX_JSON_BYTES: u64 = 4 << 30;
/// Random stream of the caption sampling.
const SAMPLE: u64 = 11;

/// Phrases by concept name.
#[derive(Debug, Default)]
pub struct Phrases {
    by_concept: HashMap<String, Vec<String>>,
}

impl Phrases {
    /// SEARLE's `concept_to_phrases` as JSON: `{"concept": ["phrase", ...], ...}` (from its
    /// pickle: `json.dump(pickle.load(f), out)`).
    pub fn read_json(path: &Path) -> Result<Self> {
        crate::io::check_file_size(path, MAX_JSON_BYTES, "phrases file")?;
        let file = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot read the phrases: {e}")))?;
        let by_concept: HashMap<String, Vec<String>> = serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|e| Error::file(path, format!("not a JSON object of concept -> list of phrases: {e}")))?;
        let by_concept: HashMap<String, Vec<String>> = by_concept
            .into_iter()
            .map(|(c, p)| (c.trim().to_string(), p.into_iter().filter(|p| p.len() <= MAX_PHRASE_LEN).collect()))
            .collect();
        if by_concept.values().all(Vec::is_empty) {
            return Err(Error::file(path, "no phrases in the file"));
        }
        Ok(Phrases { by_concept })
    }

    /// Up to `per_concept` captions naming each concept (as whole words, ignoring case; captions
    /// and concepts are compared lower-cased, so the phrases are lower-case and pair with the
    /// lower-cased concept names), sampled uniformly from the stream (reservoir sampling, seeded).
    pub fn from_captions(captions: impl Iterator<Item = Result<Option<String>>>, concepts: &[String], per_concept: usize, seed: u64) -> Result<Self> {
        let lower: HashMap<String, usize> = concepts.iter().enumerate().map(|(i, c)| (c.to_lowercase(), i)).collect();
        let longest = lower.keys().map(|c| words(c).len()).max().unwrap_or(1);
        let mut kept: Vec<Vec<String>> = vec![Vec::new(); concepts.len()];
        let mut seen = vec![0usize; concepts.len()];
        let mut rng = Rng::derive(seed, SAMPLE, 0);
        for caption in captions {
            let Some(caption) = caption? else { continue };
            if caption.len() > MAX_PHRASE_LEN {
                continue;
            }
            let caption = caption.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
            let spans = words(&caption);
            let mut named: Vec<usize> = Vec::new();
            for i in 0..spans.len() {
                for n in 1..=longest.min(spans.len() - i) {
                    if let Some(&c) = lower.get(&caption[spans[i].0..spans[i + n - 1].1]) {
                        if !named.contains(&c) {
                            named.push(c);
                        }
                    }
                }
            }
            for c in named {
                seen[c] += 1;
                if kept[c].len() < per_concept {
                    kept[c].push(caption.clone());
                } else {
                    let j = rng.below(seen[c]);
                    if j < per_concept {
                        kept[c][j] = caption.clone();
                    }
                }
            }
        }
        let by_concept = lower.into_iter().map(|(name, i)| (name, std::mem::take(&mut kept[i]))).filter(|(_, p)| !p.is_empty()).collect();
        Ok(Phrases { by_concept })
    }

    /// A concept's phrases, when SEARLE would use the concept: it has phrases and every one of
    /// them contains the concept's name (SEARLE drops a concept if any phrase does not).
    pub fn usable(&self, concept: &str) -> Option<&[String]> {
        let phrases = self.by_concept.get(concept)?;
        (!phrases.is_empty() && phrases.iter().all(|p| p.contains(concept))).then_some(phrases.as_slice())
    }

    /// Number of concepts with phrases.
    pub fn len(&self) -> usize {
        self.by_concept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_concept.is_empty()
    }
}

/// The token ids of one step's phrases, for the batch rows that have one: each phrase with its
/// concept replaced by ` $ `, and as written.
pub struct PhraseBatch {
    pub rows: Vec<u32>,
    /// [rows, seq] each.
    pub replaced: Tensor,
    pub plain: Tensor,
}

impl PhraseBatch {
    /// `chosen`: a (concept, phrase) per batch row, or none. The concept's first occurrence is
    /// replaced (SEARLE's inversion) or every one (its phi training). `None` when no row has one.
    pub fn new(tokenizer: &ClipTokenizer, chosen: &[Option<(&str, &str)>], every_occurrence: bool, device: &Device) -> Result<Option<Self>> {
        let rows: Vec<u32> = (0..chosen.len() as u32).filter(|&i| chosen[i as usize].is_some()).collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let pairs: Vec<(&str, &str)> = chosen.iter().flatten().copied().collect();
        let replaced: Vec<String> = pairs.iter().map(|(c, p)| if every_occurrence { p.replace(c, " $ ") } else { p.replacen(c, " $ ", 1) }).collect();
        let replaced: Vec<&str> = replaced.iter().map(String::as_str).collect();
        let plain: Vec<&str> = pairs.iter().map(|(_, p)| *p).collect();
        Ok(Some(PhraseBatch {
            rows,
            replaced: pad_batch(&tokenizer.encode_batch(&replaced)?, device)?,
            plain: pad_batch(&tokenizer.encode_batch(&plain)?, device)?,
        }))
    }

    /// The text embeddings of the phrases with their rows' pseudo words at the first `$`
    /// (SEARLE's encoder; differentiable with respect to `words`), and of the phrases as written
    /// (constant).
    ///
    /// # Shapes
    /// words: [batch, width] -> ([rows, P], [rows, P])
    pub fn embeddings(&self, text: &TextTower, words: &Tensor) -> Result<(Tensor, Tensor)> {
        let rows = Tensor::from_vec(self.rows.clone(), self.rows.len(), words.device())?;
        let with_word = text.embed_with_pseudo_words_at(&self.replaced, &words.index_select(&rows, 0)?, DOLLAR_ID, false, Grad::Yes)?;
        Ok((with_word, text.embed(&self.plain)?.detach()))
    }
}

/// Byte spans of the alphanumeric runs of a text.
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, ch) in text.char_indices() {
        match (ch.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captions(lines: &[&str]) -> impl Iterator<Item = Result<Option<String>>> {
        lines.iter().map(|l| Ok(Some(l.to_string()))).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn captions_become_phrases_of_the_concepts_they_name() {
        let concepts: Vec<String> = ["Square", "red square", "star"].iter().map(|s| s.to_string()).collect();
        let p = Phrases::from_captions(captions(&["A  RED square, on gray", "a starfish", "squares", "one star and a square"]), &concepts, 10, 0).unwrap();
        assert_eq!(p.usable("square").unwrap(), ["a red square, on gray", "one star and a square"]);
        assert_eq!(p.usable("red square").unwrap(), ["a red square, on gray"]);
        assert_eq!(p.usable("star").unwrap(), ["one star and a square"], "whole words only");
        assert!(p.usable("Square").is_none(), "keys are lower-case");
    }

    #[test]
    fn sampling_keeps_at_most_the_limit_and_depends_on_the_seed() {
        let lines: Vec<String> = (0..200).map(|i| format!("star number {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let concepts = vec!["star".to_string()];
        let a = Phrases::from_captions(captions(&refs), &concepts, 5, 1).unwrap();
        let b = Phrases::from_captions(captions(&refs), &concepts, 5, 2).unwrap();
        assert_eq!(a.usable("star").unwrap().len(), 5);
        assert_ne!(a.usable("star"), b.usable("star"));
    }

    #[test]
    fn a_concept_with_a_phrase_not_naming_it_is_not_used() {
        let p = Phrases { by_concept: HashMap::from([("Dog".to_string(), vec!["a photo of Dog that runs".to_string(), "a photo of a cat".to_string()]), ("Cat".to_string(), vec![])]) };
        assert!(p.usable("Dog").is_none());
        assert!(p.usable("Cat").is_none());
        assert!(p.usable("Bird").is_none());
    }
}
