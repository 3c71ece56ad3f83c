//! Parity of Pic2Word's training step with a PyTorch implementation on transformers' CLIP
//! (scripts/make_pic2word_fixtures.py): the same IM2TEXT weights, image embeddings and dropout
//! masks give the same loss and gradients, and 10 AdamW steps (Pic2Word's parameter groups:
//! biases without weight decay) the same weights.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{fixtures, rel_err};
use lincir::clip::{weights::Weights, ClipConfig, ClipTokenizer, TextTower};
use lincir::pic2word::train::Optimizer;
use lincir::pic2word::{loss_and_grads, prompt_ids, Im2TextConfig, Im2TextNet};

const STEP_TOL: f32 = 1e-4;
const WEIGHTS_TOL: f32 = 1e-5;

#[test]
fn pic2word_step_matches_pytorch() {
    let dev = Device::Cpu;
    let dir = fixtures().join("clip-a");
    let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    let text = TextTower::load(&Weights::from_dir(&dir, DType::F32, &dev).unwrap(), &cfg).unwrap();
    let bpe = fixtures().join("bpe");
    let tokenizer = ClipTokenizer::from_vocab_and_merges(&bpe.join("vocab.json"), &bpe.join("merges.txt")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("pic2word_step.json")).unwrap()).unwrap();
    let t = candle_core::safetensors::load(fixtures().join("pic2word_step.safetensors"), &dev).unwrap();
    let get = |k: &str| t.get(k).unwrap_or_else(|| panic!("fixture has no {k}")).clone();
    let num = |k: &str| meta[k].as_f64().unwrap();

    // The prompt: the reference's ids up to its end token (transformers pads with it).
    let padded: Vec<u32> = meta["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let end = padded.iter().position(|&i| i == 49407).unwrap();
    let ids = padded[..=end].to_vec();
    assert_eq!(prompt_ids(&tokenizer).unwrap(), ids);
    let v = get("image_embeds");
    let b = v.dim(0).unwrap();
    let ids = Tensor::from_vec(ids.repeat(b), (b, ids.len()), &dev).unwrap();

    let net_cfg = Im2TextConfig { input_dim: v.dim(1).unwrap(), hidden_dim: num("hidden") as usize, output_dim: text.width(), layers: num("layers") as usize, dropout: num("dropout") };
    let init: std::collections::HashMap<String, Tensor> = t.iter().filter_map(|(k, v)| k.strip_prefix("init.").map(|n| (n.to_string(), v.clone()))).collect();
    let net = Im2TextNet::from_tensors(net_cfg, &init, std::path::Path::new("fixture"), &dev).unwrap();
    let masks = get("masks"); // [steps, layers, batch, hidden]
    let step_masks = |s: usize| -> Vec<Tensor> { (0..net_cfg.layers).map(|l| masks.get(s).unwrap().get(l).unwrap()).collect() };
    let losses: Vec<f64> = meta["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let scale = num("logit_scale").exp();

    let (loss, grads) = loss_and_grads(&text, &net, &v, &ids, Some(&step_masks(0)), scale).unwrap();
    let loss_err = ((loss as f64 - losses[0]).abs() / losses[0].abs()) as f32;
    println!("loss {loss} vs {}: {loss_err:.2e}", losses[0]);
    assert!(loss_err < STEP_TOL, "loss {loss} vs {}", losses[0]);
    for ((name, _), g) in net.named_tensors().iter().zip(&grads) {
        let e = rel_err(g, &get(&format!("grad.{name}")));
        println!("grad {name}: {e:.2e}");
        assert!(e < STEP_TOL, "grad {name}: {e}");
    }

    let mut opt = Optimizer::new(&net, num("weight_decay")).unwrap();
    let lr = num("lr");
    assert_eq!(losses.len(), num("steps") as usize);
    for (s, &want) in losses.iter().enumerate() {
        let (loss, grads) = loss_and_grads(&text, &net, &v, &ids, Some(&step_masks(s)), scale).unwrap();
        assert!(((loss as f64 - want).abs() / want) < 1e-3, "step {s}: loss {loss} vs {want}");
        opt.step(&net, grads, lr).unwrap();
    }
    for (name, w) in net.named_tensors() {
        let e = rel_err(&w, &get(&format!("final.{name}")));
        println!("final {name}: {e:.2e}");
        assert!(e < WEIGHTS_TOL, "final {name}: {e}");
    }
}
