//! SEARLE's and Pic2Word's published checkpoint formats load (architecture read from the
//! weights), and each method's pseudo words and query embeddings equal its own code path
//! (re-implemented with transformers in scripts/make_peer_fixtures.py) within 1e-4 relative.

mod common;

use candle_core::{Device, Tensor};
use common::{fixtures, rel_err};
use lincir::bench::query::{query_features, QueryMode};
use lincir::clip::{Clip, LoadOptions, Towers};
use lincir::mapper::{Architecture, Mapper, PseudoWordNet};
use lincir::method::Method;

const TOL: f32 = 1e-4;

fn clip() -> (tempfile::TempDir, Clip) {
    let dir = common::model_dir();
    let clip = Clip::load(dir.path().to_str().unwrap(), &LoadOptions { towers: Towers::Text, ..Default::default() }).unwrap();
    (dir, clip)
}

fn fixture() -> (std::collections::HashMap<String, Tensor>, Vec<String>) {
    let t = candle_core::safetensors::load(fixtures().join("peers/peers.safetensors"), &Device::Cpu).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("peers/peers.json")).unwrap()).unwrap();
    let captions = meta["captions"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    (t, captions)
}

#[test]
fn each_method_matches_its_published_code_path() {
    let (_dir, clip) = clip();
    let (t, captions) = fixture();
    let x = &t["image_embeddings"];
    for (method, file, arch) in [(Method::Searle, "searle_phi.pt", Architecture::Phi), (Method::Pic2Word, "pic2word.pt", Architecture::Im2Text)] {
        let mapper = Mapper::load(&fixtures().join("peers").join(file), &Device::Cpu).unwrap();
        assert_eq!(mapper.architecture(), arch, "{file}");
        assert_eq!(Method::default_for(arch) == method, method == Method::Pic2Word, "a phi is LinCIR's unless named");
        let pseudo = mapper.pseudo_words(x).unwrap();
        let e = rel_err(&pseudo, &t[&format!("{method}.pseudo")]);
        println!("{method}: pseudo words rel err {e:.2e}");
        assert!(e < TOL, "{method} pseudo words: {e}");
        let q = query_features(&clip, Some(&mapper), method, QueryMode::Composed, x, &captions, 3).unwrap();
        let e = rel_err(&q, &t[&format!("{method}.query")]);
        println!("{method}: query rel err {e:.2e}");
        assert!(e < TOL, "{method} queries: {e}");
    }
    // LinCIR's rule on SEARLE's weights: every `$` takes the pseudo word, so the caption with a
    // second `$` differs from SEARLE's query, and matches the reference for that rule.
    let searle = Mapper::load(&fixtures().join("peers/searle_phi.pt"), &Device::Cpu).unwrap();
    let q = query_features(&clip, Some(&searle), Method::Lincir, QueryMode::Composed, x, &captions, 4).unwrap();
    let e = rel_err(&q, &t["lincir.query"]);
    println!("lincir (every $): query rel err {e:.2e}");
    assert!(e < TOL, "lincir queries: {e}");
    let row = |m: &Tensor| m.get(2).unwrap();
    assert!(rel_err(&row(&q), &row(&t["searle.query"])) > 1e-2, "the two rules must differ on a caption with a second $");
}

#[test]
fn a_checkpoint_of_another_network_is_refused_naming_what_was_found() {
    let e = Mapper::load(&fixtures().join("peers/unknown.pt"), &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("unknown.pt") && e.contains("not a pseudo-word network") && e.contains("weight"), "{e}");
    let e = Mapper::load_for(&fixtures().join("peers/pic2word.pt"), 512, 512, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("IM2TEXT") && e.contains("another backbone"), "{e}");
    // LinCIR's own official file still loads as a phi.
    let m = Mapper::load(&fixtures().join("phi_official.pt"), &Device::Cpu).unwrap();
    assert_eq!(m.architecture(), Architecture::Phi);
}
