//! The training loop on the tiny clip-a fixture: a resumed run is identical to an uninterrupted
//! one, outputs are complete, bad corpora and mismatched resumptions are clear errors.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::{model_dir, rel_err};
use lincir::clip::{Clip, LoadOptions, Towers};
use lincir::phi::{Phi, PhiConfig};
use lincir::smp::corpus::Corpus;
use lincir::smp::optim::AdamWConfig;
use lincir::smp::schedule::LrSchedule;
use lincir::smp::train::{self, NoiseMode, TrainConfig};

fn words(c: &str) -> Vec<String> {
    c.split(' ').filter(|w| w.len() > 3).map(str::to_string).collect()
}

fn config(model: &Path, captions: &Path, steps: u64) -> TrainConfig {
    TrainConfig {
        model: model.display().to_string(),
        captions: vec![captions.display().to_string()],
        text_field: "text".into(),
        batch_size: 4,
        max_steps: steps,
        lr: 1e-3,
        adamw: AdamWConfig::default(),
        lr_scheduler: LrSchedule::Cosine,
        lr_warmup_steps: 2,
        grad_accum: 2,
        max_grad_norm: Some(1.0),
        phi: PhiConfig::for_backbone(16, 24),
        noise: NoiseMode::Uniform,
        use_ema: true,
        ema_decay: 0.999,
        seed: 5,
        checkpointing_steps: 3,
        validation_steps: None,
        cirr_dataset_path: None,
        shuffle_buffer: 7, // smaller than the corpus: the buffer state matters on resume
    }
}

fn corpus_file(dir: &Path, lines: &[&str]) -> PathBuf {
    let p = dir.join("captions.txt");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

const CAPTIONS: [&str; 13] = [
    "a man riding a brown horse on the beach",
    "two dogs playing in the snow",
    "",
    "a red car parked near a tall building",
    "$$",
    "a bowl of fresh fruit on a wooden table",
    "children flying kites in a green park",
    "an old lighthouse under a cloudy sky",
    "a plate of pasta with tomato sauce",
    "a cat sleeping on a sunny windowsill",
    "a small boat on a calm blue lake",
    "people walking across a busy street",
    "a snowy mountain behind a frozen lake",
];

fn run(cfg: &TrainConfig, clip: &Clip, out: &Path, resume: bool) -> lincir::Result<u64> {
    let corpus = Corpus::open(&cfg.captions, "text")?;
    let mut steps = 0;
    train::train(cfg, clip, &corpus, &words, out, resume, &mut |e| {
        if let train::Event::Step(r) = e {
            steps = r.step;
        }
    })?;
    Ok(steps)
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let model = model_dir();
    let clip = Clip::load(model.path().to_str().unwrap(), &LoadOptions { towers: Towers::Text, ..Default::default() }).unwrap();
    let work = tempfile::tempdir().unwrap();
    let captions = corpus_file(work.path(), &CAPTIONS);

    let straight = work.path().join("straight");
    assert_eq!(run(&config(model.path(), &captions, 6), &clip, &straight, false).unwrap(), 6);

    let split = work.path().join("split");
    assert_eq!(run(&config(model.path(), &captions, 3), &clip, &split, false).unwrap(), 3);
    assert_eq!(run(&config(model.path(), &captions, 6), &clip, &split, true).unwrap(), 6);

    for file in [train::LATEST_FILE, "checkpoints/phi_000006.safetensors"] {
        let a = Phi::load(&straight.join(file), &Device::Cpu).unwrap();
        let b = Phi::load(&split.join(file), &Device::Cpu).unwrap();
        for ((name, x), (_, y)) in a.named_tensors().iter().zip(b.named_tensors()) {
            assert_eq!(rel_err(x, &y), 0.0, "{file} {name} differs after resuming");
        }
    }
    let lines = |d: &Path| std::fs::read_to_string(d.join(train::METRICS_FILE)).unwrap();
    let strip = |s: String| -> Vec<serde_json::Value> {
        s.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("samples_per_s");
                v
            })
            .collect()
    };
    assert_eq!(strip(lines(&straight)), strip(lines(&split)), "same losses, rates and skip counts");
    let last: serde_json::Value = serde_json::from_str(lines(&straight).lines().last().unwrap()).unwrap();
    assert!(last["skipped_captions"].as_u64().unwrap() >= 2, "the empty line and the `$$` line are skipped: {last}");
    assert!(straight.join(train::CONFIG_FILE).is_file());
    assert!(straight.join("checkpoints/phi_000003.safetensors").is_file());

    // The saved phi is trained: it moved away from the initialisation.
    let init = Phi::init(PhiConfig::for_backbone(16, 24), 5, &Device::Cpu).unwrap();
    let trained = Phi::load(&straight.join(train::LATEST_FILE), &Device::Cpu).unwrap();
    assert!(rel_err(&trained.named_tensors()[0].1, &init.named_tensors()[0].1) > 1e-4);

    // Resuming with other settings, or starting over an existing run, is refused.
    let mut other = config(model.path(), &captions, 9);
    other.batch_size = 8;
    let e = run(&other, &clip, &split, true).unwrap_err().to_string();
    assert!(e.contains("other settings"), "{e}");
    let e = run(&config(model.path(), &captions, 6), &clip, &split, false).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    let e = run(&config(model.path(), &captions, 6), &clip, &work.path().join("nothing"), true).unwrap_err().to_string();
    assert!(e.contains("nothing to resume"), "{e}");
}

#[test]
fn corpora_without_usable_captions_are_errors_not_hangs() {
    let model = model_dir();
    let clip = Clip::load(model.path().to_str().unwrap(), &LoadOptions { towers: Towers::Text, ..Default::default() }).unwrap();
    let work = tempfile::tempdir().unwrap();
    let only_dollars = corpus_file(work.path(), &["$", "", " $ ", "$$"]);
    let e = run(&config(model.path(), &only_dollars, 2), &clip, &work.path().join("a"), false).unwrap_err().to_string();
    assert!(e.contains("no usable captions"), "{e}");
    let empty = corpus_file(work.path(), &[]);
    let e = run(&config(model.path(), &empty, 2), &clip, &work.path().join("b"), false).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn non_finite_numbers_stop_training_and_leave_a_resumable_finite_state() {
    let model = model_dir();
    let clip = Clip::load(model.path().to_str().unwrap(), &LoadOptions { towers: Towers::Text, ..Default::default() }).unwrap();
    let work = tempfile::tempdir().unwrap();
    let captions = corpus_file(work.path(), &CAPTIONS);

    // Hyper-parameters that can only give NaN are refused before any work.
    for (what, edit) in [
        ("--lr", Box::new(|c: &mut TrainConfig| c.lr = f64::NAN) as Box<dyn Fn(&mut TrainConfig)>),
        ("--lr", Box::new(|c: &mut TrainConfig| c.lr = -1e-3)),
        ("--weight-decay", Box::new(|c: &mut TrainConfig| c.adamw.weight_decay = f64::INFINITY)),
        ("--max-grad-norm", Box::new(|c: &mut TrainConfig| c.max_grad_norm = Some(0.0))),
        ("--phi-dropout", Box::new(|c: &mut TrainConfig| c.phi.dropout = -0.5)),
        ("--ema-decay", Box::new(|c: &mut TrainConfig| c.ema_decay = f64::NAN)),
    ] {
        let mut cfg = config(model.path(), &captions, 4);
        edit(&mut cfg);
        let out = work.path().join("refused");
        let e = run(&cfg, &clip, &out, false).unwrap_err().to_string();
        assert!(e.contains(what), "{what}: {e}");
        assert!(!out.join(train::STATE_FILE).exists(), "{what}: nothing is written");
    }

    // An absurd learning rate drives phi to overflow: the run stops at the first non-finite step.
    let mut cfg = config(model.path(), &captions, 20);
    cfg.lr = 1e30;
    cfg.max_grad_norm = None;
    cfg.checkpointing_steps = 100;
    let out = work.path().join("exploding");
    let e = run(&cfg, &clip, &out, false).unwrap_err().to_string();
    assert!(e.starts_with("step ") && e.contains("training stopped"), "{e}");
    let failed_step: u64 = e["step ".len()..].split(':').next().unwrap().parse().unwrap();
    assert!((2..=20).contains(&failed_step), "{e}");
    let latest = Phi::load(&out.join(train::LATEST_FILE), &Device::Cpu).unwrap();
    for (name, t) in latest.named_tensors() {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name} of phi_latest is not finite");
    }
    let metrics = std::fs::read_to_string(out.join(train::METRICS_FILE)).unwrap();
    assert_eq!(metrics.lines().count() as u64, failed_step - 1, "one metrics line per finite step");

    // --resume continues from the last finite step: the state there is readable, and the same
    // run (deterministic) meets the same non-finite step again, not an earlier one.
    let e2 = run(&cfg, &clip, &out, true).unwrap_err().to_string();
    assert!(e2.starts_with(&format!("step {failed_step}:")), "{e2}");
    let mut shorter = cfg.clone();
    shorter.max_steps = failed_step - 1;
    assert_eq!(run(&shorter, &clip, &out, true).unwrap(), 0, "already at the last finite step");
}

/// `--dtype f16`: the loss is scaled (loss_scale.rs), the scale is part of the resumable state,
/// and gradients that overflow f16 skip the update and halve the scale instead of stopping.
#[test]
fn an_f16_tower_trains_with_a_loss_scale_that_resumes_and_backs_off() {
    let model = model_dir();
    let opts = LoadOptions { towers: Towers::Text, dtype: candle_core::DType::F16, ..Default::default() };
    let clip = Clip::load(model.path().to_str().unwrap(), &opts).unwrap();
    let work = tempfile::tempdir().unwrap();
    let captions = corpus_file(work.path(), &CAPTIONS);
    let metrics = |d: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join(train::METRICS_FILE)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };

    let straight = work.path().join("straight");
    run(&config(model.path(), &captions, 4), &clip, &straight, false).unwrap();
    let split = work.path().join("split");
    run(&config(model.path(), &captions, 3), &clip, &split, false).unwrap();
    run(&config(model.path(), &captions, 4), &clip, &split, true).unwrap();
    let phi = |d: &Path, f: &str| Phi::load(&d.join(f), &Device::Cpu).unwrap().named_tensors();
    for ((name, x), (_, y)) in phi(&straight, train::LATEST_FILE).iter().zip(phi(&split, train::LATEST_FILE)) {
        assert_eq!(rel_err(x, &y), 0.0, "{name} differs after resuming an f16 run");
    }
    let m = metrics(&straight);
    assert!(m.iter().all(|r| r["loss_scale"] == 65536.0 && r.get("update_skipped").is_none()), "{m:?}");

    // A scale of 2^100 overflows f16 at once: step 4 is skipped (phi and its EMA stay those of
    // step 3), the scale halves, and training goes on.
    let three = work.path().join("three");
    run(&config(model.path(), &captions, 3), &clip, &three, false).unwrap();
    let (tensors, mut meta) = lincir::io::read_safetensors(&three.join(train::STATE_FILE)).unwrap();
    assert_eq!(meta["loss_scale"], "65536 3");
    let step3 = phi(&three, train::LATEST_FILE);
    meta.insert("loss_scale".into(), format!("{} 0", 2f64.powi(100)));
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let overflow = work.path().join("overflow");
    std::fs::create_dir_all(&overflow).unwrap();
    std::fs::copy(three.join(train::METRICS_FILE), overflow.join(train::METRICS_FILE)).unwrap();
    std::fs::create_dir_all(overflow.join("checkpoints")).unwrap();
    lincir::io::write_safetensors_atomic(&overflow.join(train::STATE_FILE), &tensors, meta.clone()).unwrap();
    // The caption stream resumes where step 3 left it.
    run(&config(model.path(), &captions, 4), &clip, &overflow, true).unwrap();
    let last = metrics(&overflow).pop().unwrap();
    assert_eq!((last["step"].as_u64(), last["update_skipped"].as_bool()), (Some(4), Some(true)), "{last}");
    assert_eq!(last["loss_scale"], 2f64.powi(100));
    assert!(last["loss"].as_f64().unwrap().is_finite());
    for ((name, x), (_, y)) in step3.iter().zip(phi(&overflow, train::LATEST_FILE)) {
        assert_eq!(rel_err(x, &y), 0.0, "{name} changed in a skipped step");
    }
    let (_, after) = lincir::io::read_safetensors(&overflow.join(train::STATE_FILE)).unwrap();
    assert_eq!(after["loss_scale"], format!("{} 0", 2f64.powi(99)));
}
