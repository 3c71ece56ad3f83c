//! Parity of SEARLE's training (concept ensembles, OTI, phi's step) with a PyTorch implementation
//! on transformers' CLIP (scripts/make_searle_fixtures.py): the same inputs and random choices
//! give the same concept embeddings, losses, gradients, and words/weights after several AdamW
//! steps.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{fixtures, rel_err};
use lincir::clip::{weights::Weights, ClipConfig, ClipTokenizer, TextTower};
use lincir::phi::{DropoutMasks, Phi, PhiConfig};
use lincir::searle::{concepts, oti, train};

const STEP_TOL: f32 = 1e-4;
const WEIGHTS_TOL: f32 = 1e-4;

struct Fixture {
    text: TextTower,
    tokenizer: ClipTokenizer,
    meta: serde_json::Value,
    tensors: std::collections::HashMap<String, Tensor>,
}

impl Fixture {
    fn load() -> Self {
        let dev = Device::Cpu;
        let dir = fixtures().join("clip-a");
        let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
        let text = TextTower::load(&Weights::from_dir(&dir, DType::F32, &dev).unwrap(), &cfg).unwrap();
        let bpe = fixtures().join("bpe");
        let tokenizer = ClipTokenizer::from_vocab_and_merges(&bpe.join("vocab.json"), &bpe.join("merges.txt")).unwrap();
        let meta = serde_json::from_str(&std::fs::read_to_string(fixtures().join("searle_step.json")).unwrap()).unwrap();
        let tensors = candle_core::safetensors::load(fixtures().join("searle_step.safetensors"), &dev).unwrap();
        Fixture { text, tokenizer, meta, tensors }
    }

    fn get(&self, k: &str) -> Tensor {
        self.tensors.get(k).unwrap_or_else(|| panic!("fixture has no {k}")).clone()
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// (concept, phrase) pairs, `null` for an image without one.
fn pairs(v: &serde_json::Value) -> Vec<Option<(String, String)>> {
    v.as_array().unwrap().iter().map(|p| p.as_array().map(|a| (a[0].as_str().unwrap().to_string(), a[1].as_str().unwrap().to_string()))).collect()
}

fn check(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let e = rel_err(got, want);
    println!("{what}: {e:.2e}");
    assert!(e < tol, "{what}: {e}");
}

#[test]
fn concept_ensembles_match_pytorch() {
    let f = Fixture::load();
    let names = strings(&f.meta["concepts"]);
    let got = concepts::embed_vocabulary(&f.text, &f.tokenizer, &names, 20, &|_| {}).unwrap();
    check("concept embeddings", &got, &f.get("concepts"), STEP_TOL);
}

#[test]
fn textual_inversion_matches_pytorch() {
    let f = Fixture::load();
    let m = &f.meta["oti"];
    let cfg = oti::OtiConfig { steps: m["steps"].as_u64().unwrap(), lr: m["lr"].as_f64().unwrap(), ..oti::OtiConfig::default() };
    let choices = m["choices"].as_array().unwrap();
    let image = f.get("oti.image");
    let texts_of = |s: usize| -> oti::StepTexts {
        let templates = strings(&choices[s]["templates"]);
        let templates: Vec<&str> = templates.iter().map(String::as_str).collect();
        let p = pairs(&choices[s]["phrases"]);
        let p: Vec<Option<(&str, &str)>> = p.iter().map(|x| x.as_ref().map(|(c, t)| (c.as_str(), t.as_str()))).collect();
        oti::StepTexts::new(&f.tokenizer, &templates, &p, &Device::Cpu).unwrap()
    };
    // The first step's loss and gradient.
    let words = candle_core::Var::from_tensor(&f.get("oti.start")).unwrap();
    let loss = oti::oti_loss(&f.text, words.as_tensor(), &image, &texts_of(0), &cfg).unwrap();
    let want = m["losses"][0].as_f64().unwrap();
    let got = loss.to_scalar::<f32>().unwrap() as f64;
    println!("loss {got} vs {want}");
    assert!(((got - want) / want).abs() < STEP_TOL as f64);
    let grad = loss.backward().unwrap().remove(words.as_tensor()).unwrap();
    check("word gradient", &grad, &f.get("oti.grad"), STEP_TOL);
    // The whole optimisation: final words and their moving average.
    let done = oti::invert_from(&f.text, &image, &f.get("oti.start"), &cfg, &mut |s| Ok(texts_of(s as usize))).unwrap();
    check("final words", &done.words, &f.get("oti.final"), WEIGHTS_TOL);
    check("moving average", &done.ema, &f.get("oti.ema"), WEIGHTS_TOL);
    let last = m["losses"].as_array().unwrap().last().unwrap().as_f64().unwrap();
    assert!(((done.loss as f64 - last) / last).abs() < 1e-3, "last loss {} vs {last}", done.loss);
}

#[test]
fn phi_step_matches_pytorch() {
    let f = Fixture::load();
    let m = &f.meta["phi"];
    let dev = Device::Cpu;
    let (image, target) = (f.get("phi.image"), f.get("phi.oti"));
    let hidden = m["hidden"].as_u64().unwrap() as usize;
    let phi_cfg = PhiConfig { hidden_dim: hidden, ..PhiConfig::for_backbone(image.dim(1).unwrap(), f.text.width()) };
    let init: std::collections::HashMap<String, Tensor> = f.tensors.iter().filter_map(|(k, v)| k.strip_prefix("phi.init.").map(|n| (n.to_string(), v.clone()))).collect();
    let phi = Phi::from_tensors(phi_cfg, &init, std::path::Path::new("fixture"), &dev).unwrap();
    let cfg = train::TrainConfig {
        batch_size: image.dim(0).unwrap(),
        lr: m["lr"].as_f64().unwrap(),
        weight_decay: 0.01,
        max_steps: 3,
        seed: 0,
        checkpointing_steps: 1,
        lambda_distil: 1.0,
        lambda_gpt: 0.25,
        temperature: m["temperature"].as_f64().unwrap(),
        phi: phi_cfg,
        images: image.dim(0).unwrap(),
    };
    let p = pairs(&m["pairs"]);
    let p: Vec<Option<(&str, &str)>> = p.iter().map(|x| x.as_ref().map(|(c, t)| (c.as_str(), t.as_str()))).collect();
    let texts = lincir::searle::phrases::PhraseBatch::new(&f.tokenizer, &p, true, &dev).unwrap().unwrap();
    let all_masks = f.get("phi.masks"); // [steps, 2, batch, hidden]
    let masks = |s: usize| DropoutMasks { first: all_masks.get(s).unwrap().get(0).unwrap(), second: all_masks.get(s).unwrap().get(1).unwrap() };
    let (loss, distillation, gpt, grads) = train::loss_and_grads(&f.text, &phi, &image, &target, Some(&masks(0)), Some(&texts), &cfg).unwrap();
    let first = &f.meta["phi_first"];
    for (what, got, want) in [("loss", loss, m["losses"][0].as_f64().unwrap()), ("distillation", distillation, first["distillation"].as_f64().unwrap()), ("gpt", gpt, first["gpt"].as_f64().unwrap())] {
        let e = ((got as f64 - want) / want).abs();
        println!("{what} {got} vs {want}: {e:.2e}");
        assert!(e < STEP_TOL as f64, "{what}");
    }
    for ((name, _), g) in phi.named_tensors().iter().zip(&grads) {
        check(&format!("grad {name}"), g, &f.get(&format!("phi.grad.{name}")), STEP_TOL);
    }
    let mut opt = lincir::smp::optim::AdamW::new(lincir::smp::optim::AdamWConfig { weight_decay: 0.01, ..Default::default() }, &phi.vars()).unwrap();
    for s in 0..3 {
        let (_, _, _, grads) = train::loss_and_grads(&f.text, &phi, &image, &target, Some(&masks(s)), Some(&texts), &cfg).unwrap();
        opt.step(&phi.vars(), &grads, cfg.lr).unwrap();
    }
    for (name, w) in phi.named_tensors() {
        check(&format!("final {name}"), &w, &f.get(&format!("phi.final.{name}")), WEIGHTS_TOL);
    }
}

/// Each image's inversion draws from its own stream: the same image gets the same word alone or
/// in a batch with others (what lets a resumed or re-batched run reproduce it).
#[test]
fn an_image_is_inverted_alike_in_any_batch() {
    let f = Fixture::load();
    let cfg = oti::OtiConfig { steps: 4, ..oti::OtiConfig::default() };
    let image = f.get("oti.image");
    let phrases: Vec<oti::ConceptPhrases> = vec![vec![("dog", "a photo of dog that runs")], vec![], vec![("cat", "a photo of cat that sleeps"), ("cat", "a photo of cat on a sofa")]];
    let all = oti::invert(&f.text, &f.tokenizer, &image.narrow(0, 0, 3).unwrap(), &phrases, &cfg, 7, &[10, 11, 12]).unwrap();
    let alone = oti::invert(&f.text, &f.tokenizer, &image.narrow(0, 2, 1).unwrap(), &phrases[2..], &cfg, 7, &[12]).unwrap();
    check("word alone vs in a batch", &alone.ema, &all.ema.narrow(0, 2, 1).unwrap(), 1e-5);
    let other_seed = oti::invert(&f.text, &f.tokenizer, &image.narrow(0, 2, 1).unwrap(), &phrases[2..], &cfg, 8, &[12]).unwrap();
    assert!(rel_err(&other_seed.ema, &alone.ema) > 1e-2, "the seed changes the word");
}

/// SEARLE-OTI at query time: a reference repeated across queries is inverted once, and its word
/// does not depend on the other references it comes with.
#[test]
fn the_query_time_inverter_inverts_each_reference_once() {
    use lincir::mapper::PseudoWordNet;
    use lincir::searle::inverter::{InversionSetup, Inverter};
    let f = Fixture::load();
    let vocabulary: Vec<String> = ["dog", "cat", "red square"].iter().map(|s| s.to_string()).collect();
    let embeddings = concepts::embed_vocabulary(&f.text, &f.tokenizer, &vocabulary, 24, &|_| {}).unwrap();
    let captions = ["a dog on the grass", "a cat on a red square", "the dog and the cat"].iter().map(|c| Ok(Some(c.to_string())));
    let phrases = lincir::searle::phrases::Phrases::from_captions(captions, &vocabulary, 8, 0).unwrap();
    let setup = InversionSetup { vocabulary, embeddings, phrases, top_k: 2, config: oti::OtiConfig { steps: 3, ..oti::OtiConfig::default() }, seed: 1 };
    let count = std::sync::atomic::AtomicUsize::new(0);
    let on_inverted = |n: usize| {
        count.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };
    let image = f.get("oti.image");
    let (a, b) = (image.narrow(0, 0, 1).unwrap(), image.narrow(0, 1, 1).unwrap());
    let inverter = Inverter::new(&f.text, &f.tokenizer, &setup, &on_inverted);
    let words = inverter.pseudo_words(&Tensor::cat(&[&a, &b, &a], 0).unwrap()).unwrap();
    assert_eq!((inverter.inverted(), count.load(std::sync::atomic::Ordering::Relaxed)), (2, 2));
    assert_eq!(words.get(0).unwrap().to_vec1::<f32>().unwrap(), words.get(2).unwrap().to_vec1::<f32>().unwrap());
    inverter.pseudo_words(&a).unwrap();
    assert_eq!(inverter.inverted(), 2, "a reference seen before is not inverted again");
    let fresh = Inverter::new(&f.text, &f.tokenizer, &setup, &on_inverted);
    check("reference alone vs with others", &fresh.pseudo_words(&a).unwrap(), &words.narrow(0, 0, 1).unwrap(), 1e-5);
}
