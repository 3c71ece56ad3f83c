//! The shared suite: tests on `../shared` (the shapes world, real benchmark files), run with
//! `cargo test --release -- --ignored`. They fail, not skip, when the folder is missing.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use common::{fixtures, rel_err};
use lincir::clip::{tokenizer::pad_batch, Clip, ClipTokenizer, LoadOptions};

fn shared() -> PathBuf {
    let p = std::env::var("LINCIR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    assert!(p.join("shapes/clip").is_dir(), "the shared suite needs ../shared (or LINCIR_SHARED): {} not found", p.display());
    p
}

#[test]
#[ignore = "shared suite: needs ../shared"]
fn shapes_tokenizer_json_matches_transformers() {
    let tok = ClipTokenizer::from_tokenizer_json(&shared().join("shapes/clip/tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(fixtures().join("tokenizer_cases.jsonl")).unwrap();
    let mut n = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ids: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(v["text"].as_str().unwrap()).unwrap(), ids, "{:?}", v["text"]);
        n += 1;
    }
    assert!(n >= 3000);
}

#[test]
#[ignore = "shared suite: needs ../shared"]
fn shapes_clip_matches_transformers() {
    let clip = Clip::load(shared().join("shapes/clip").to_str().unwrap(), &LoadOptions::default()).unwrap();
    let expected = candle_core::safetensors::load(fixtures().join("expected_shapes.safetensors"), &Device::Cpu).unwrap();
    let bytes = std::fs::read(fixtures().join("expected_shapes.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let texts: Vec<String> = serde_json::from_str(&meta["texts"]).unwrap();
    let images: Vec<String> = serde_json::from_str(&meta["images"]).unwrap();

    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = pad_batch(&clip.tokenizer.encode_batch(&refs).unwrap(), &Device::Cpu).unwrap();
    let e = rel_err(&clip.text().unwrap().embed(&ids).unwrap(), &expected["text"]);
    println!("shapes text: rel err {e:.2e}");
    assert!(e < 1e-4);

    let paths: Vec<PathBuf> = images.iter().map(|n| shared().join("shapes/bench/dev").join(n)).collect();
    let px = lincir::embed::load_pixels(&clip, &paths).unwrap();
    let e = rel_err(&clip.vision().unwrap().embed(&px).unwrap(), &expected["image"]);
    println!("shapes images: rel err {e:.2e}");
    assert!(e < 1e-4);
}

/// End to end on real files: every colour prompt retrieves images of that colour.
#[test]
#[ignore = "shared suite: needs ../shared"]
fn shapes_zero_shot_colour_retrieval() {
    let clip = Clip::load(shared().join("shapes/clip").to_str().unwrap(), &LoadOptions::default()).unwrap();
    let paths = lincir::embed::collect_image_paths(&[shared().join("shapes/bench/dev")]).unwrap();
    assert_eq!(paths.len(), 512);
    let img = lincir::embed::embed_image_files(&clip, &paths, 64, &|_| {}).unwrap();
    let img = img.broadcast_div(&img.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap();
    let colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"];
    let prompts: Vec<String> = colours.iter().map(|c| format!("a photo of a {c} shape")).collect();
    let txt = lincir::embed::embed_texts(&clip, &prompts, 8, &|_| {}).unwrap();
    let txt = txt.broadcast_div(&txt.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap();
    let scores = txt.matmul(&img.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
    let mut hits = 0;
    for (c, row) in colours.iter().zip(&scores) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        // Names describe the scene (used here only to score, never by the method).
        hits += order[..20].iter().filter(|&&i| paths[i].to_string_lossy().contains(&format!("-{c}-"))).count();
    }
    let precision = hits as f64 / (20.0 * colours.len() as f64);
    println!("colour retrieval precision@20: {precision:.3}");
    assert!(precision > 0.8, "{precision}");
}
