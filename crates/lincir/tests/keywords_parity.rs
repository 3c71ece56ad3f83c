//! Keyword extraction agrees with spaCy `en_core_web_sm` on held-out captions.
//!
//! `fixtures/keywords_heldout.jsonl` holds ~1,500 lower-cased captions (4/5 real benchmark
//! captions, 1/5 synthetic shapes captions) that the built-in tagger was not trained on, with
//! spaCy's tokens, UPOS tags and keywords (`scripts/make_tagger_data.py`).
//!
//! Token-level agreement: a spaCy token agrees when we produce a token with the same character
//! span and the same keyword / non-keyword status (NOUN, PROPN, ADJ, DET are keyword tags);
//! tokens we split differently count as disagreements.

use lincir::smp::keywords::keywords;
use lincir::smp::tagger::{Tagger, Upos};
use lincir::smp::words::{find_spans, split_spans, split_words};
use std::collections::HashMap;

const FIXTURE: &str = include_str!("fixtures/keywords_heldout.jsonl");

struct Case {
    caption: String,
    words: Vec<String>,
    tags: Vec<Upos>,
    keywords: Vec<String>,
}

fn cases() -> Vec<Case> {
    FIXTURE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("fixture line is JSON");
            let strs = |k: &str| -> Vec<String> {
                let arr = v[k]
                    .as_array()
                    .unwrap_or_else(|| panic!("fixture lacks {k}"));
                arr.iter()
                    .map(|x| x.as_str().expect("string").to_string())
                    .collect()
            };
            Case {
                caption: v["caption"].as_str().expect("caption").to_string(),
                words: strs("words"),
                tags: strs("tags")
                    .iter()
                    .map(|t| Upos::from_name(t).expect("known tag"))
                    .collect(),
                keywords: strs("keywords"),
            }
        })
        .collect()
}

#[test]
fn keywords_agree_with_spacy() {
    let cases = cases();
    assert!(cases.len() >= 1000, "fixture too small: {}", cases.len());
    let tagger = Tagger::builtin();
    let (mut same_tokens, mut same_lists, mut ref_tokens, mut agree) = (0, 0, 0, 0);
    for c in &cases {
        same_tokens += usize::from(split_words(&c.caption) == c.words);
        same_lists += usize::from(keywords(&c.caption) == c.keywords);

        let spans = split_spans(&c.caption);
        let words: Vec<&str> = spans.iter().map(|&(a, b)| &c.caption[a..b]).collect();
        let ours = tagger.tag(&words);
        let index: HashMap<(usize, usize), usize> =
            spans.iter().enumerate().map(|(i, &s)| (s, i)).collect();
        ref_tokens += c.words.len();
        for (span, want) in find_spans(&c.caption, &c.words).into_iter().zip(&c.tags) {
            if let Some(&i) = span.and_then(|s| index.get(&s)) {
                agree += usize::from(ours[i].is_keyword() == want.is_keyword());
            }
        }
    }
    let n = cases.len() as f64;
    let tokenizer = same_tokens as f64 / n;
    let token_agreement = agree as f64 / ref_tokens as f64;
    let lists = same_lists as f64 / n;
    println!(
        "{} captions, {ref_tokens} tokens: tokenizer {:.2}%, token keyword agreement {:.2}%, \
         identical keyword lists {:.2}%",
        cases.len(),
        100.0 * tokenizer,
        100.0 * token_agreement,
        100.0 * lists
    );
    assert!(tokenizer >= 0.99, "tokenizer agreement {tokenizer:.4}");
    assert!(
        token_agreement >= 0.98,
        "token keyword agreement {token_agreement:.4}"
    );
    assert!(lists >= 0.90, "identical keyword lists {lists:.4}");
}
