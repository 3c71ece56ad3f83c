//! Token ids identical to transformers' CLIPTokenizer (truncation=True, max_length=77) on 3,200
//! strings: captions, unicode, punctuation, `$`, special-token text, inputs longer than 77.

mod common;

use common::fixtures;
use lincir::clip::ClipTokenizer;
use lincir::prompt::PSEUDO_TOKEN_ID;

fn cases() -> Vec<(String, Vec<u32>)> {
    std::fs::read_to_string(fixtures().join("tokenizer_cases.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (v["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

pub fn assert_matches_transformers(tok: &ClipTokenizer) {
    let cases = cases();
    assert!(cases.len() >= 3000, "only {} cases", cases.len());
    let mut mismatches = Vec::new();
    for (text, ids) in &cases {
        let got = tok.encode(text).unwrap();
        if &got != ids {
            mismatches.push(format!("{text:?}: got {got:?}, expected {ids:?}"));
        }
    }
    let long = cases.iter().filter(|(_, ids)| ids.len() == 77).count();
    println!("{} cases, {} truncated to 77, {} mismatches", cases.len(), long, mismatches.len());
    assert!(long > 100, "the fixture must exercise truncation");
    assert!(mismatches.is_empty(), "{} mismatches, first: {}", mismatches.len(), mismatches[..mismatches.len().min(5)].join("\n"));
    // The batch path gives the same ids.
    let texts: Vec<&str> = cases.iter().map(|(t, _)| t.as_str()).collect();
    let batch = tok.encode_batch(&texts).unwrap();
    assert!(batch.iter().zip(&cases).all(|(b, (_, ids))| b == ids));
}

#[test]
fn vocab_and_merges_match_transformers() {
    let bpe = fixtures().join("bpe");
    let tok = ClipTokenizer::from_dir(&bpe).unwrap();
    assert_matches_transformers(&tok);
}

#[test]
fn dollar_is_the_pseudo_token_and_truncation_keeps_the_end() {
    let tok = ClipTokenizer::from_dir(&fixtures().join("bpe")).unwrap();
    let ids = tok.encode("a photo of $ that is red").unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == PSEUDO_TOKEN_ID).count(), 1);
    let long = tok.encode(&"word ".repeat(200)).unwrap();
    assert_eq!(long.len(), 77);
    assert_eq!(*long.last().unwrap(), lincir::prompt::END_OF_TEXT_ID);
}

#[test]
fn a_directory_without_tokenizer_files_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = ClipTokenizer::from_dir(dir.path()).err().unwrap().to_string();
    assert!(e.contains("no tokenizer found") && e.contains(&dir.path().display().to_string()), "{e}");
}
