//! LinCIR keywords of a caption: the maximal runs of consecutive tokens tagged NOUN, PROPN,
//! ADJ or DET, each run's token texts joined by single spaces (as LinCIR computes them with
//! spaCy `en_core_web_sm`). Example: `a man riding a brown horse on the beach at sunset` ->
//! `a man`, `a brown horse`, `the beach`, `sunset`.
//!
//! The caption is expected to be cleaned already (LinCIR lower-cases it and deletes `$`);
//! nothing is normalised here.

use super::tagger::Tagger;
use super::words::split_spans;

/// Keywords of `caption` using the built-in tagger.
pub fn keywords(caption: &str) -> Vec<String> {
    keywords_with(Tagger::builtin(), caption)
}

/// Keywords of `caption` using `tagger`.
pub fn keywords_with(tagger: &Tagger, caption: &str) -> Vec<String> {
    let words: Vec<&str> = split_spans(caption)
        .into_iter()
        .map(|(a, b)| &caption[a..b])
        .collect();
    let tags = tagger.tag(&words);
    let mut out = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for (word, tag) in words.iter().zip(tags) {
        if tag.is_keyword() {
            run.push(word);
        } else if !run.is_empty() {
            out.push(run.join(" "));
            run.clear();
        }
    }
    if !run.is_empty() {
        out.push(run.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lincir_example() {
        assert_eq!(
            keywords("a man riding a brown horse on the beach at sunset"),
            ["a man", "a brown horse", "the beach", "sunset"]
        );
    }

    /// Checked against spaCy 3.8 `en_core_web_sm`.
    #[test]
    fn more_captions() {
        let cases: &[(&str, &[&str])] = &[
            (
                "remove all but one dog and add a woman hugging it",
                &["dog", "a woman"],
            ),
            ("is solid white", &["solid white"]),
            ("the dog's toy is red", &["the dog", "toy", "red"]),
            ("a t-shirt with a cat on it", &["a t", "shirt", "a cat"]),
        ];
        for (caption, want) in cases {
            assert_eq!(keywords(caption), *want, "{caption:?}");
        }
    }

    #[test]
    fn odd_input() {
        assert!(keywords("").is_empty());
        assert!(keywords("   ").is_empty());
        assert!(keywords("?!...").is_empty());
        let long = "a red car ".repeat(5000);
        assert!(!keywords(&long).is_empty());
        let _ = keywords("日本語 🙂 ñandú\u{0}");
    }
}
