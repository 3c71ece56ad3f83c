//! Training SEARLE (Baldrati, Agnolucci, Bertini, Del Bimbo; ICCV 2023) for any backbone, so that
//! LinCIR can be compared with it on the same CLIP and data (docs/TRAINING.md, "SEARLE"). SEARLE
//! learns the same phi network as LinCIR from unlabelled **images**, in two stages:
//!
//! 1. **OTI** (optimisation-based textual inversion, [`oti`]): for each image a pseudo word is
//!    optimised so that "a photo of $"-like templates embed like the image, regularised by phrases
//!    about concepts the image resembles ([`concepts`], [`phrases`]);
//! 2. **phi** ([`train`]): phi learns to predict those pseudo words from the image embedding
//!    (a contrastive distillation loss), with the same phrase regularisation.
//!
//! The checkpoints are SEARLE's format (`{'Phi': state_dict}`) and load wherever a phi does
//! (`eval --phi searle=...`, `search`, `serve`).

pub mod concepts;
pub mod inverter;
pub mod loss;
pub mod oti;
pub mod phrases;
pub mod store;
pub mod train;

/// The 24 sentence templates SEARLE inverts with (PALAVRA's, Cohen et al. 2022); `{}` is the word.
/// The same list builds the concept embeddings (an ensemble over the templates).
pub const TEMPLATES: [&str; 24] = [
    "This is a photo of a {}",
    "This photo contains a {}",
    "A photo of a {}",
    "This is an illustration of a {}",
    "This illustration contains a {}",
    "An illustrations of a {}",
    "This is a sketch of a {}",
    "This sketch contains a {}",
    "A sketch of a {}",
    "This is a diagram of a {}",
    "This diagram contains a {}",
    "A diagram of a {}",
    "A {}",
    "We see a {}",
    "{}",
    "We see a {} in this photo",
    "We see a {} in this image",
    "We see a {} in this illustration",
    "We see a {} photo",
    "We see a {} image",
    "We see a {} illustration",
    "{} photo",
    "{} image",
    "{} illustration",
];

/// A template with the pseudo word's placeholder in it (SEARLE formats with `" $ "`).
pub fn template_with_placeholder(template: &str) -> String {
    template.replace("{}", " $ ")
}

/// Each image's usable concepts among its nearest (nearest first), each with its phrases: what
/// both the inversion and phi's phrase loss draw from.
pub fn usable_concepts<'a>(nearest: &[Vec<u32>], vocabulary: &'a [String], phrases: &'a phrases::Phrases) -> Vec<train::ImageConcepts<'a>> {
    nearest
        .iter()
        .map(|near| {
            near.iter()
                .filter_map(|&c| {
                    let name = vocabulary[c as usize].as_str();
                    phrases.usable(name).map(|p| (name, p))
                })
                .collect()
        })
        .collect()
}

/// An image's (concept, phrase) pairs, all phrases of all its usable concepts: what SEARLE's
/// inversion draws a phrase from, uniformly.
pub fn concept_phrase_pairs<'a>(concepts: &train::ImageConcepts<'a>) -> oti::ConceptPhrases<'a> {
    concepts.iter().flat_map(|(name, phrases)| phrases.iter().map(move |p| (*name, p.as_str()))).collect()
}

/// Where the phrases of the concepts come from.
pub enum PhraseSource<'a> {
    /// SEARLE's phrases as JSON ([`phrases::Phrases::read_json`]).
    Json(&'a std::path::Path),
    /// Up to `per_concept` captions naming each concept ([`phrases::Phrases::from_captions`]).
    Captions { sources: &'a [String], text_field: &'a str, per_concept: usize, seed: u64 },
}

/// The vocabulary and the phrases of its concepts; with phrases from captions the vocabulary is
/// lower-cased, as the captions are compared.
pub fn vocabulary_and_phrases(vocabulary: &std::path::Path, source: PhraseSource) -> crate::Result<(Vec<String>, phrases::Phrases)> {
    let vocabulary = concepts::read_vocabulary(vocabulary)?;
    Ok(match source {
        PhraseSource::Json(path) => (vocabulary, phrases::Phrases::read_json(path)?),
        PhraseSource::Captions { sources, text_field, per_concept, seed } => {
            let vocabulary = concepts::lowercased(vocabulary);
            let corpus = crate::smp::corpus::Corpus::open(sources, text_field)?;
            let phrases = phrases::Phrases::from_captions(corpus.captions(), &vocabulary, per_concept, seed)?;
            (vocabulary, phrases)
        }
    })
}
