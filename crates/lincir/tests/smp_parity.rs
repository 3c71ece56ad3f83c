//! Parity of one SMP training step, and of 20 AdamW steps, with a PyTorch implementation written
//! from the specification (fixture from scripts/make_smp_fixtures.py): the same phi weights,
//! captions, masks, noise and dropout masks give the same loss, gradients and final weights.
//! Also: masking and placeholder tokenisation match, and the official `.pt` checkpoint imports.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::{fixtures, rel_err, test_device};
use lincir::clip::{tokenizer::pad_batch, weights::Weights, ClipConfig, ClipTokenizer, TextTower};
use lincir::phi::{DropoutMasks, Phi, PhiConfig};
use lincir::smp::mask::mask_caption;
use lincir::smp::optim::{clip_grad_norm, AdamW, AdamWConfig};
use lincir::smp::sample::encode_with_placeholder;
use lincir::smp::loss_scale::LossScale;
use lincir::smp::step::{loss_and_grads, target_embeddings, Noise};

const STEP_TOL: f32 = 1e-4;
const WEIGHTS_TOL: f32 = 1e-3;

struct Fixture {
    meta: serde_json::Value,
    t: HashMap<String, Tensor>,
    text: TextTower,
    tokenizer: ClipTokenizer,
}

/// The step fixture: the committed one (PyTorch on the CPU), or the one the GPU check writes with
/// the same script on the GPU (`LINCIR_SMP_FIXTURE=DIR`), compared on `LINCIR_TEST_DEVICE`.
fn step_fixture_dir() -> std::path::PathBuf {
    std::env::var_os("LINCIR_SMP_FIXTURE").map(Into::into).unwrap_or_else(fixtures)
}

fn load() -> Fixture {
    let dev = test_device();
    let dir = fixtures().join("clip-a");
    let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    let w = Weights::from_dir(&dir, DType::F32, &dev).unwrap();
    let bpe = fixtures().join("bpe");
    let steps = step_fixture_dir();
    Fixture {
        meta: serde_json::from_str(&std::fs::read_to_string(steps.join("smp_step.json")).unwrap()).unwrap(),
        t: candle_core::safetensors::load(steps.join("smp_step.safetensors"), &dev).unwrap(),
        text: TextTower::load(&w, &cfg).unwrap(),
        tokenizer: ClipTokenizer::from_vocab_and_merges(&bpe.join("vocab.json"), &bpe.join("merges.txt")).unwrap(),
    }
}

impl Fixture {
    fn get(&self, k: &str) -> &Tensor {
        self.t.get(k).unwrap_or_else(|| panic!("fixture has no {k}"))
    }
    fn strings(&self, k: &str) -> Vec<String> {
        self.meta[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }
    fn f64(&self, k: &str) -> f64 {
        self.meta[k].as_f64().unwrap()
    }
    /// The reference's ids were padded to 77 with the end token; ours are padded to the longest.
    fn our_ids(&self, texts: &[String], placeholder: bool) -> Tensor {
        let seqs: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| if placeholder { encode_with_placeholder(&self.tokenizer, t).unwrap() } else { self.tokenizer.encode(t).unwrap() })
            .collect();
        pad_batch(&seqs, &test_device()).unwrap()
    }
    fn phi(&self, prefix: &str) -> Phi {
        let tensors: HashMap<String, Tensor> = lincir::phi::LAYER_NAMES
            .iter()
            .flat_map(|l| ["weight", "bias"].map(|s| format!("{l}.{s}")))
            .map(|k| (k.clone(), self.get(&format!("{prefix}.{k}")).clone()))
            .collect();
        let (p, w) = (self.text.projection_dim(), self.text.width());
        let cfg = PhiConfig { dropout: self.f64("dropout"), ..PhiConfig::for_backbone(p, w) };
        Phi::from_tensors(cfg, &tensors, std::path::Path::new("fixture"), &test_device()).unwrap()
    }
    fn noise(&self, step: usize) -> (Noise, DropoutMasks) {
        let g = |k: &str| self.get(k).get(step).unwrap();
        (
            Noise { scale: g("u").unsqueeze(1).unwrap(), direction: g("n") },
            DropoutMasks { first: g("mask1"), second: g("mask2") },
        )
    }
}

#[test]
fn masking_and_placeholder_tokens_match_the_reference() {
    let f = load();
    let captions = f.strings("captions");
    let masked = f.strings("masked");
    for (i, c) in captions.iter().enumerate() {
        let kws: Vec<String> =
            f.meta["keywords"][i].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
        let pick = f.meta["picks"][i].as_u64().unwrap() as usize;
        assert_eq!(mask_caption(c, &kws, &mut |_| pick).text, masked[i], "caption {c:?}");
        let ours = encode_with_placeholder(&f.tokenizer, &masked[i]).unwrap();
        let theirs: Vec<u32> = f.meta["ids_r"][i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ours, theirs[..ours.len()], "masked {:?}", masked[i]);
        assert!(theirs[ours.len()..].iter().all(|&id| id == 49407), "reference pads with the end token");
    }
}

#[test]
fn one_step_loss_and_gradients_match_pytorch() {
    let f = load();
    let ids_c = f.our_ids(&f.strings("captions"), false);
    let ids_r = f.our_ids(&f.strings("masked"), true);
    let target = target_embeddings(&f.text, &ids_c).unwrap();
    let e = rel_err(&target, f.get("target"));
    println!("targets: rel err {e:.2e}");
    assert!(e < STEP_TOL);

    let phi = f.phi("init");
    let (noise, masks) = f.noise(0);
    let (loss, grads) = loss_and_grads(&f.text, &phi, &target, &ids_r, &noise, Some(&masks), 1.0).unwrap();
    let expected = f.get("first_loss").to_vec1::<f32>().unwrap()[0];
    let le = (loss - expected).abs() / expected;
    println!("loss {loss} vs {expected}: rel err {le:.2e}");
    assert!(le < STEP_TOL);
    for ((name, _), g) in phi.named_tensors().iter().zip(&grads) {
        let e = rel_err(g, f.get(&format!("grad.{name}")));
        println!("grad {name}: rel err {e:.2e}");
        assert!(e < STEP_TOL, "gradient of {name}: {e}");
    }
}

/// `train --dtype bf16` on the CPU: the frozen text tower's matrices in bf16 (products in bf16
/// with `vdpbf16ps` where the CPU has AVX512_BF16), phi, the loss and the gradients' sums in f32.
/// The step stays within bf16's tolerance of PyTorch's f32 step: targets, loss, each gradient.
#[test]
fn one_step_with_a_bf16_frozen_tower_stays_within_2e_2() {
    let mut f = load();
    if !test_device().is_cpu() {
        return; // the GPU's bf16 is checked by scripts/gpu_check.sh
    }
    let dir = fixtures().join("clip-a");
    let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    let w = Weights::from_dir(&dir, DType::F32, &Device::Cpu).unwrap().with_matrix_dtype(DType::BF16);
    f.text = TextTower::load(&w, &cfg).unwrap();
    let ids_c = f.our_ids(&f.strings("captions"), false);
    let ids_r = f.our_ids(&f.strings("masked"), true);
    let target = target_embeddings(&f.text, &ids_c).unwrap();
    let mut errors = vec![("targets".to_string(), rel_err(&target, f.get("target")))];
    let phi = f.phi("init");
    let (noise, masks) = f.noise(0);
    let (loss, grads) = loss_and_grads(&f.text, &phi, &target, &ids_r, &noise, Some(&masks), 1.0).unwrap();
    let expected = f.get("first_loss").to_vec1::<f32>().unwrap()[0];
    errors.push(("loss".to_string(), (loss - expected).abs() / expected));
    for ((name, _), g) in phi.named_tensors().iter().zip(&grads) {
        errors.push((format!("grad {name}"), rel_err(g, f.get(&format!("grad.{name}")))));
    }
    for (what, e) in &errors {
        println!("bf16 tower, {what}: rel err {e:.2e}");
        assert!(*e < 2e-2, "bf16 tower, {what}: {e}");
    }
    assert!(errors[0].1 > 1e-6, "the bf16 matrices were not used");
}

/// `train --dtype f16`: a tower in f16 at the paper's gradient magnitudes. The fixture's loss is
/// a mean over 4 x 16 values, the paper's over 512 x 768 (ViT-L/14): its gradients are 2^13 times
/// smaller, about 1e-6 where they enter the tower, under f16's smallest normal number. The loss
/// is scaled down by 2^-13 to put them there; without loss scaling the gradients lose their
/// precision in f16's subnormals, with the initial scale (2^16) they stay within 2e-2 of
/// PyTorch's f32 step.
#[test]
fn an_f16_tower_at_the_papers_gradient_sizes_needs_and_gets_loss_scaling() {
    let mut f = load();
    if !test_device().is_cpu() {
        return; // on a GPU, f16 training is measured by scripts/gpu_check.sh
    }
    let dir = fixtures().join("clip-a");
    let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    f.text = TextTower::load(&Weights::from_dir(&dir, DType::F16, &Device::Cpu).unwrap(), &cfg).unwrap();
    let ids_c = f.our_ids(&f.strings("captions"), false);
    let ids_r = f.our_ids(&f.strings("masked"), true);
    let target = target_embeddings(&f.text, &ids_c).unwrap();
    let phi = f.phi("init");
    let (noise, masks) = f.noise(0);
    let paper = 2f64.powi(-13);
    // The backward pass runs on loss_scale x loss; the gradients come back divided by it: those
    // of the fixture's loss, computed at the paper's magnitudes (times 2^16 for the scaled run).
    let worst = |loss_scale: f64| {
        let (_, grads) = loss_and_grads(&f.text, &phi, &target, &ids_r, &noise, Some(&masks), loss_scale).unwrap();
        phi.named_tensors()
            .iter()
            .zip(&grads)
            .map(|((name, _), g)| rel_err(g, f.get(&format!("grad.{name}"))))
            .fold(0f32, f32::max)
    };
    let (unscaled, scaled) = (worst(paper), worst(paper * LossScale::INITIAL));
    println!("f16 tower, paper-sized gradients: worst rel err {unscaled:.2e} unscaled, {scaled:.2e} with loss scaling");
    assert!(scaled < 2e-2, "with loss scaling: {scaled}");
    assert!(unscaled > 2.0 * scaled, "f16 without loss scaling was expected to lose precision: {unscaled} vs {scaled}");
}

#[test]
fn twenty_adamw_steps_with_clipping_match_pytorch() {
    let f = load();
    let ids_c = f.our_ids(&f.strings("captions"), false);
    let ids_r = f.our_ids(&f.strings("masked"), true);
    let target = target_embeddings(&f.text, &ids_c).unwrap();
    let phi = f.phi("init");
    let cfg = AdamWConfig { weight_decay: f.f64("weight_decay"), ..AdamWConfig::default() };
    let mut opt = AdamW::new(cfg, &phi.vars()).unwrap();
    let reference = f.meta["losses_and_grad_norms"].as_array().unwrap();
    let steps = f.meta["steps"].as_u64().unwrap() as usize;
    assert_eq!(reference.len(), steps);
    for (step, expected) in reference.iter().enumerate() {
        let (noise, masks) = f.noise(step);
        let (loss, mut grads) = loss_and_grads(&f.text, &phi, &target, &ids_r, &noise, Some(&masks), 1.0).unwrap();
        let norm = clip_grad_norm(&mut grads, f.f64("max_grad_norm")).unwrap();
        let (ref_loss, ref_norm) = (expected[0].as_f64().unwrap(), expected[1].as_f64().unwrap());
        assert!(((loss as f64 - ref_loss) / ref_loss).abs() < 1e-3, "step {step}: loss {loss} vs {ref_loss}");
        assert!(((norm - ref_norm) / ref_norm).abs() < 1e-3, "step {step}: grad norm {norm} vs {ref_norm}");
        opt.step(&phi.vars(), &grads, f.f64("lr")).unwrap();
    }
    for (name, t) in phi.named_tensors() {
        let e = rel_err(&t, f.get(&format!("final.{name}")));
        let moved = rel_err(f.get(&format!("init.{name}")), f.get(&format!("final.{name}")));
        println!("after 20 steps {name}: rel err {e:.2e} (the reference moved {moved:.2e})");
        assert!(e < WEIGHTS_TOL, "{name}: {e}");
    }
}

#[test]
fn official_checkpoint_imports_and_round_trips_through_safetensors() {
    let f = load();
    let phi = Phi::load(&fixtures().join("phi_official.pt"), &Device::Cpu).unwrap();
    assert_eq!((phi.config.input_dim, phi.config.hidden_dim, phi.config.output_dim), (16, 64, 24));
    for (name, t) in phi.named_tensors() {
        assert_eq!(rel_err(&t, f.get(&format!("init.{name}"))), 0.0, "{name}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phi.safetensors");
    phi.save(&path, &[]).unwrap();
    let again = Phi::load_for(&path, 16, 24, &Device::Cpu).unwrap();
    for ((_, a), (_, b)) in phi.named_tensors().iter().zip(again.named_tensors()) {
        assert_eq!(rel_err(a, &b), 0.0);
    }
    let err = Phi::load_for(&path, 512, 512, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("another backbone"), "{err}");
}

#[test]
fn export_to_the_official_format_reads_back_identically() {
    let phi = Phi::load(&fixtures().join("phi_official.pt"), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exported.pt");
    phi.save_official(&path, 12).unwrap();
    // candle's pickle reader is an independent parser of the format torch.load reads.
    let again = Phi::load(&path, &Device::Cpu).unwrap();
    for ((name, a), (_, b)) in phi.named_tensors().iter().zip(again.named_tensors()) {
        assert_eq!(rel_err(a, &b), 0.0, "{name}");
    }
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"PK"), "a zip archive, as torch.save writes");
}
