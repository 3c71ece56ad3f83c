//! The `lincir` binary end to end on the committed tiny CLIP: `embed` outputs, hub-cache
//! resolution offline, and bad input (one-line errors naming the file, exit code 1, no panic).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn read_output(path: &Path) -> (Vec<usize>, Vec<f32>, serde_json::Value) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("embeddings").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let data = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let names = serde_json::from_str(meta.metadata().as_ref().unwrap().get("names").unwrap()).unwrap();
    (t.shape().to_vec(), data, names)
}

#[test]
fn embed_texts_writes_embeddings_and_line_numbers() {
    let model = model_dir();
    let work = tempfile::tempdir().unwrap();
    let texts = work.path().join("texts.txt");
    std::fs::write(&texts, "a red circle\na photo of $ that is blue\n\nthe same red circle\na red circle\n").unwrap();
    let out = work.path().join("t.safetensors");
    let o = lincir(&["embed", "--model", model.path().to_str().unwrap(), "--texts", texts.to_str().unwrap(), "--out", out.to_str().unwrap(), "--batch-size", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (shape, data, names) = read_output(&out);
    assert_eq!(shape, vec![5, 16], "[texts, projection_dim]");
    assert_eq!(names, serde_json::json!([1, 2, 3, 4, 5]));
    // Batching and padding do not change a text's embedding: lines 1 and 5 are the same text
    // in different batches with different padding.
    let row = |i: usize| &data[i * 16..(i + 1) * 16];
    let diff = row(0).iter().zip(row(4)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "{diff}");
    assert!(row(0) != row(1));
}

#[test]
fn embed_images_walks_directories_in_sorted_order() {
    let model = model_dir();
    let work = tempfile::tempdir().unwrap();
    let imgs = work.path().join("imgs");
    std::fs::create_dir_all(imgs.join("sub")).unwrap();
    let src = fixtures().join("images");
    std::fs::copy(src.join("chelsea_palette.png"), imgs.join("b.png")).unwrap();
    std::fs::copy(src.join("astronaut_512x512.jpg"), imgs.join("sub/a.jpg")).unwrap();
    std::fs::copy(src.join("coffee_400x600.webp"), imgs.join("a.webp")).unwrap();
    std::fs::write(imgs.join("notes.txt"), "not an image").unwrap();
    let single = src.join("camera_gray_256.png");
    let out = work.path().join("i.safetensors");
    let o = lincir(&["embed", "--model", model.path().to_str().unwrap(), "--images", single.to_str().unwrap(), imgs.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (shape, _, names) = read_output(&out);
    assert_eq!(shape, vec![4, 16]);
    let names: Vec<String> = names.as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    let tails: Vec<&str> = names.iter().map(|n| n.rsplit(['/', '\\']).next().unwrap()).collect();
    assert_eq!(tails, ["camera_gray_256.png", "a.webp", "b.png", "a.jpg"]);
}

#[test]
fn hub_id_resolves_from_an_offline_cache() {
    // The Hugging Face cache layout: models--org--name/{refs/main, blobs/, snapshots/<rev>/}.
    let model = model_dir();
    let home = tempfile::tempdir().unwrap();
    let files: Vec<(String, PathBuf)> = std::fs::read_dir(model.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().to_string(), e.path())
        })
        .collect();
    let files: Vec<(&str, PathBuf)> = files.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    fake_hub_repo(home.path(), "model", "lincir-test/tiny-clip", &files);
    let work = tempfile::tempdir().unwrap();
    let texts = work.path().join("t.txt");
    std::fs::write(&texts, "a dog\n").unwrap();
    let out = work.path().join("o.safetensors");
    let run = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_lincir"))
            .args(["embed", "--model", id, "--texts", texts.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .current_dir(work.path())
            .output()
            .unwrap()
    };
    let o = run("lincir-test/tiny-clip");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_output(&out).0, vec![1, 16]);
    let o = run("lincir-test/not-cached");
    assert_clean_failure(&o, &["lincir-test/not-cached", "config.json", "not in the Hugging Face cache", "HF_HUB_OFFLINE"]);
}

#[test]
fn bad_inputs_fail_with_one_line_naming_the_culprit() {
    let work = tempfile::tempdir().unwrap();
    let texts = work.path().join("t.txt");
    std::fs::write(&texts, "a dog\n").unwrap();
    let out = work.path().join("o.safetensors");
    let (t, o) = (texts.to_str().unwrap(), out.to_str().unwrap());

    // A model directory that does not exist.
    let missing = work.path().join("no-such-model");
    assert_clean_failure(&lincir(&["embed", "--model", missing.to_str().unwrap(), "--texts", t, "--out", o]), &["no-such-model", "not found"]);

    // No weights.
    let model = model_dir();
    std::fs::remove_file(model.path().join("model.safetensors")).unwrap();
    assert_clean_failure(&lincir(&["embed", "--model", model.path().to_str().unwrap(), "--texts", t, "--out", o]), &["no weights found"]);

    // A tensor of the wrong shape.
    let model = model_dir();
    let cfg_path = model.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["text_config"]["intermediate_size"] = serde_json::json!(44);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    assert_clean_failure(
        &lincir(&["embed", "--model", model.path().to_str().unwrap(), "--texts", t, "--out", o]),
        &["model.safetensors", "text_model.encoder.layers.0.mlp.fc1.weight", "[40, 24]", "[44, 24]"],
    );

    // A truncated safetensors file.
    let model = model_dir();
    let w = model.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 3]).unwrap();
    assert_clean_failure(&lincir(&["embed", "--model", model.path().to_str().unwrap(), "--texts", t, "--out", o]), &["model.safetensors", "safetensors"]);

    // An unreadable image.
    let model = model_dir();
    let bad = work.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 truncated").unwrap();
    assert_clean_failure(
        &lincir(&["embed", "--model", model.path().to_str().unwrap(), "--images", bad.to_str().unwrap(), "--out", o]),
        &["broken.jpg"],
    );

    // A missing text file.
    assert_clean_failure(&lincir(&["embed", "--model", model.path().to_str().unwrap(), "--texts", "nope.txt", "--out", o]), &["nope.txt"]);
    // Nothing to embed.
    let empty = work.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    assert_clean_failure(&lincir(&["embed", "--model", model.path().to_str().unwrap(), "--texts", empty.to_str().unwrap(), "--out", o]), &["empty.txt", "no texts"]);
    let empty_dir = work.path().join("no-images");
    std::fs::create_dir(&empty_dir).unwrap();
    assert_clean_failure(&lincir(&["embed", "--model", model.path().to_str().unwrap(), "--images", empty_dir.to_str().unwrap(), "--out", o]), &["no-images", "no image files"]);
    assert!(!out.exists(), "no output is written on failure");
}

/// `--preprocess`: a wide photo gives three different embeddings through transformers' processor,
/// OpenAI's transform (another crop offset) and SEARLE's target pad (black bars); a square one
/// the same through all three; the pipeline is recorded in the output.
#[test]
fn embed_images_through_other_methods_pipelines() {
    let model = model_dir();
    let work = tempfile::tempdir().unwrap();
    let src = fixtures().join("images");
    let (wide, square) = (src.join("rocket_427x640.jpg"), src.join("astronaut_512x512.jpg"));
    let mut rows = Vec::new();
    for pipeline in ["transformers", "openai", "targetpad"] {
        let out = work.path().join(format!("{pipeline}.safetensors"));
        let o = lincir(&["embed", "--model", model.path().to_str().unwrap(), "--images", wide.to_str().unwrap(), square.to_str().unwrap(), "--out", out.to_str().unwrap(), "--preprocess", pipeline]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&out).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap().get("preprocess").map(String::as_str), Some(pipeline));
        let (shape, data, _) = read_output(&out);
        assert_eq!(shape, vec![2, 16]);
        rows.push((data[..16].to_vec(), data[16..].to_vec()));
    }
    for i in 0..3 {
        for j in i + 1..3 {
            assert!(rows[i].0 != rows[j].0, "the wide photo: pipelines {i} and {j} gave the same embedding");
            assert_eq!(rows[i].1, rows[j].1, "the square photo: pipelines {i} and {j} differ");
        }
    }
    let o = lincir(&["embed", "--model", "x", "--images", "y.jpg", "--out", "z", "--preprocess", "searle"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_with_2() {
    let o = lincir(&["embed", "--model", "x"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A CIRR-layout benchmark of six one-colour images and three queries.
fn mini_cirr(root: &Path) {
    let colours = [("red", [220, 30, 30]), ("green", [30, 200, 40]), ("blue", [30, 40, 220]), ("yellow", [230, 220, 30]), ("black", [10, 10, 10]), ("white", [245, 245, 245])];
    std::fs::create_dir_all(root.join("cirr/captions")).unwrap();
    std::fs::create_dir_all(root.join("cirr/image_splits")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    let mut split = serde_json::Map::new();
    for (name, rgb) in colours {
        write_bmp(&root.join(format!("dev/{name}.bmp")), rgb);
        split.insert(name.into(), format!("./dev/{name}.bmp").into());
    }
    let members: Vec<&str> = colours.iter().map(|c| c.0).collect();
    let queries: Vec<serde_json::Value> = [("red", "green"), ("blue", "yellow"), ("black", "white")]
        .iter()
        .enumerate()
        .map(|(i, (r, t))| serde_json::json!({"pairid": i, "reference": r, "target_hard": t, "caption": format!("is {t} instead"), "img_set": {"members": members}}))
        .collect();
    std::fs::write(root.join("cirr/image_splits/split.rc2.val.json"), serde_json::Value::Object(split).to_string()).unwrap();
    std::fs::write(root.join("cirr/captions/cap.rc2.val.json"), serde_json::Value::Array(queries).to_string()).unwrap();
}

#[test]
fn train_then_eval_writes_checkpoints_metrics_and_recall() {
    let model = model_dir();
    let work = tempfile::tempdir().unwrap();
    let captions = work.path().join("captions.txt");
    std::fs::write(&captions, "a man riding a brown horse\n\ntwo dogs in the snow\na red car near a building\n$\na cat on a sunny windowsill\n").unwrap();
    let out = work.path().join("run");
    let bench = work.path().join("CIRR");
    mini_cirr(&bench);
    let m = model.path().to_str().unwrap();
    let o = lincir(&[
        "train", "--model", m, "--captions", captions.to_str().unwrap(), "--output-dir", out.to_str().unwrap(),
        "--batch-size", "2", "--max-steps", "4", "--checkpointing-steps", "2", "--validation-steps", "2",
        "--cirr-dataset-path", bench.to_str().unwrap(), "--lr-scheduler", "cosine", "--use-ema",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| steps | final loss"), "{stdout}");
    // phi's sizes as the model sets them (projection 16, text width 24), not placeholders.
    assert!(stdout.contains("training phi (16 -> 64 -> 24, "), "{stdout}");
    for f in ["phi_latest.safetensors", "phi_best.safetensors", "train_config.json", "train_state.safetensors", "checkpoints/phi_000002.safetensors", "checkpoints/phi_000004.safetensors"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|l| l.get("loss").is_some()).count(), 4);
    assert_eq!(lines.iter().filter(|l| l.get("validation").is_some()).count(), 2);
    assert!(lines.iter().all(|l| l.get("loss").is_none() || l["skipped_captions"].as_u64().is_some()));

    // Continuing the same run to 6 steps resumes at 4.
    let o = lincir(&[
        "train", "--model", m, "--captions", captions.to_str().unwrap(), "--output-dir", out.to_str().unwrap(),
        "--batch-size", "2", "--max-steps", "6", "--checkpointing-steps", "2", "--validation-steps", "2",
        "--cirr-dataset-path", bench.to_str().unwrap(), "--lr-scheduler", "cosine", "--use-ema", "--resume",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("checkpoints/phi_000006.safetensors").is_file());

    let json = work.path().join("eval.json");
    let phi = out.join("phi_latest.safetensors");
    let o = lincir(&["eval", "--model", m, "--phi", phi.to_str().unwrap(), "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("R@1"));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["queries"], 3);
    let r50 = report["metrics"]["all"]["R@50"].as_f64().unwrap();
    assert_eq!(r50, 100.0, "5 candidates: every target is within the top 50");
    assert_eq!(report["preprocess"], "transformers");
    let o = lincir(&["eval", "--model", m, "--baseline", "image", "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `train-pic2word` on a folder of images: checkpoints, metrics, unreadable images left out, a
/// network `eval` loads as Pic2Word's; a run extended with --resume continues at its last
/// step; an existing run is not overwritten without --resume, nor resumed with other settings.
/// (Resuming to the same bytes after a kill: kill_resume.rs.)
#[test]
fn train_pic2word_trains_extends_and_evaluates() {
    let model = model_dir();
    let work = tempfile::tempdir().unwrap();
    let m = model.path().to_str().unwrap();
    let imgs = work.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for f in ["astronaut_512x512.jpg", "camera_gray_256.png", "chelsea_small_120x90.png", "coffee_400x600.webp", "rocket_427x640.jpg"] {
        std::fs::copy(fixtures().join("images").join(f), imgs.join(f)).unwrap();
    }
    std::fs::write(imgs.join("broken.jpg"), b"not a jpeg").unwrap();
    let train = |out: &Path, steps: &str, extra: &[&str]| {
        let mut a = vec!["train-pic2word", "--model", m, "--images", imgs.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--batch-size", "2", "--max-steps", steps, "--checkpointing-steps", "2", "--warmup-steps", "2", "--lr", "1e-3", "--hidden-dim", "8", "--no-cache"];
        a.extend_from_slice(extra);
        lincir(&a)
    };
    let straight = work.path().join("straight");
    let o = train(&straight, "6", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("5 images embedded") && stdout.contains("1 unreadable left out"), "{stdout}");
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    std::fs::remove_file(imgs.join("broken.jpg")).unwrap(); // the same 5 images, one error line

    let resumed = work.path().join("resumed");
    let o = train(&resumed, "4", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_clean_failure(&train(&resumed, "6", &[]), &["train_state.safetensors", "--resume"]);
    let o = train(&resumed, "6", &["--resume"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("| 6 (from 4) |"), "{}", String::from_utf8_lossy(&o.stdout));
    let steps: Vec<u64> = std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    // Resuming with other settings is refused.
    assert_clean_failure(&train(&resumed, "8", &["--resume", "--seed", "3"]), &["train_state.safetensors", "other settings"]);

    // Pic2Word's augmentation re-embeds random crops at every step: another network than
    // embedding once, from the same settings otherwise.
    let augmented = work.path().join("augmented");
    let o = train(&augmented, "6", &["--augment"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let weights = |dir: &Path| std::fs::read(dir.join("im2text_latest.safetensors")).unwrap();
    assert!(weights(&augmented) != weights(&straight));
    let usage = lincir(&["train-pic2word", "--model", m, "--embeddings", "e.safetensors", "--augment", "--output-dir", "x"]);
    assert_eq!(usage.status.code(), Some(2), "--augment needs the image files");

    let bench = work.path().join("CIRR");
    mini_cirr(&bench);
    let net = straight.join("im2text_latest.safetensors");
    let json = work.path().join("eval.json");
    let o = lincir(&["eval", "--model", m, "--phi", net.to_str().unwrap(), "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["mode"], "pic2word", "an IM2TEXT is evaluated as Pic2Word: {report}");
}

/// `train-searle` on a folder of images: concepts, textual inversion stored per batch, phi with
/// its checkpoints and SEARLE's release file, which `eval` loads as SEARLE's; --resume reads the
/// inverted batches back and extends phi; other inversion settings are refused on resume; phrases
/// from captions work as well as a JSON file. (Resuming to the same bytes after a kill:
/// kill_resume.rs.)
#[test]
fn train_searle_inverts_trains_resumes_and_evaluates() {
    let model = model_dir();
    let work = tempfile::tempdir().unwrap();
    let m = model.path().to_str().unwrap();
    let imgs = work.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for f in ["astronaut_512x512.jpg", "camera_gray_256.png", "chelsea_small_120x90.png", "coffee_400x600.webp", "rocket_427x640.jpg"] {
        std::fs::copy(fixtures().join("images").join(f), imgs.join(f)).unwrap();
    }
    let vocabulary = work.path().join("vocabulary.txt");
    std::fs::write(&vocabulary, "cat\nrocket\ncoffee cup\ncamera\nastronaut\n").unwrap();
    let phrases = work.path().join("phrases.json");
    let json = serde_json::json!({
        "cat": ["a photo of cat that sleeps", "a photo of cat that is orange"],
        "rocket": ["a photo of rocket that flies"],
        "coffee cup": ["a photo of coffee cup that is hot", "a photo of a mug"], // not all name it: not used
        "camera": ["a photo of camera that is old"],
    });
    std::fs::write(&phrases, json.to_string()).unwrap();
    let train = |out: &Path, steps: &str, extra: &[&str]| {
        let mut a = vec!["train-searle", "--model", m, "--images", imgs.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--vocabulary", vocabulary.to_str().unwrap(),
            "--batch-size", "2", "--max-steps", steps, "--checkpointing-steps", "2", "--oti-steps", "3", "--oti-batch-size", "2", "--top-k", "3", "--no-cache"];
        if !extra.contains(&"--phrase-captions") {
            a.extend(["--phrases", phrases.to_str().unwrap()]);
        }
        a.extend_from_slice(extra);
        lincir(&a)
    };
    let run = work.path().join("run");
    let o = train(&run, "4", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("5 concepts, 3 with usable phrases; 5 images") && stdout.contains("5 images in 3 batches of 2, 3 steps each"), "{stdout}");
    assert_eq!(std::fs::read_dir(run.join("oti")).unwrap().count(), 3, "one file per inverted batch");
    assert_eq!(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count(), 4);
    assert_clean_failure(&train(&run, "6", &[]), &["train_state.safetensors", "--resume"]);
    let o = train(&run, "6", &["--resume"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| 6 (from 4) |") && stdout.contains("3 of 3 batches' pseudo words read back"), "{stdout}");
    assert_clean_failure(&train(&run, "8", &["--resume", "--oti-lr", "0.01"]), &["batch-0000000.safetensors", "other settings"]);

    let bench = work.path().join("CIRR");
    mini_cirr(&bench);
    let release = format!("searle={}", run.join("searle_phi.pt").display());
    let report = work.path().join("eval.json");
    let o = lincir(&["eval", "--model", m, "--phi", &release, "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap(), "--json", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["mode"], "searle", "{report}");
    // lincir's own file says which method it was trained for; the .pt (LinCIR's format too) does not.
    for (file, method) in [("phi_latest.safetensors", "searle"), ("searle_phi.pt", "lincir")] {
        let json = work.path().join("plain.json");
        let phi = run.join(file);
        let o = lincir(&["eval", "--model", m, "--phi", phi.to_str().unwrap(), "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap(), "--json", json.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["mode"], method, "{file}: {report}");
    }

    // Phrases from captions: the captions naming each concept.
    let captions = work.path().join("captions.txt");
    std::fs::write(&captions, "A cat on a sofa\nthe rocket at dawn\na Camera and a cat\nno concept here\n").unwrap();
    let from_captions = work.path().join("captions-run");
    let o = train(&from_captions, "2", &["--phrase-captions", captions.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("5 concepts, 3 with usable phrases"), "{}", String::from_utf8_lossy(&o.stdout));
    let usage = lincir(&["train-searle", "--model", m, "--images", "x", "--output-dir", "y", "--vocabulary", "v"]);
    assert_eq!(usage.status.code(), Some(2), "phrases are required");

    // SEARLE-OTI: the references inverted at query time, beside the trained SEARLE, in one table.
    let both = work.path().join("both.json");
    let (b, v, p, j) = (bench.to_str().unwrap(), vocabulary.to_str().unwrap(), phrases.to_str().unwrap(), both.to_str().unwrap());
    let o = lincir(&["eval", "--model", m, "--phi", &release, "--searle-oti", "--oti-vocabulary", v, "--oti-phrases", p, "--oti-steps", "2", "--dataset", "cirr", "--dataset-path", b, "--json", j]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("| searle-oti |"), "{}", String::from_utf8_lossy(&o.stdout));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&both).unwrap()).unwrap();
    let modes: Vec<&str> = report["runs"].as_array().unwrap().iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["searle", "searle-oti"]);
    let usage = lincir(&["eval", "--model", m, "--searle-oti", "--dataset", "cirr", "--dataset-path", b]);
    assert_eq!(usage.status.code(), Some(2), "--searle-oti needs a vocabulary");
    assert_clean_failure(&lincir(&["eval", "--model", m, "--searle-oti", "--oti-vocabulary", v, "--dataset", "cirr", "--dataset-path", b]), &["--oti-phrases"]);
}

#[test]
fn keywords_prints_one_json_line_per_caption() {
    let o = lincir(&["keywords", "A man riding a brown horse on the beach at sunset", "$$"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["caption"], "a man riding a brown horse on the beach at sunset");
    assert_eq!(lines[0]["keywords"], serde_json::json!(["a man", "a brown horse", "the beach", "sunset"]));
    assert_eq!(lines[0]["masked"], "[$] riding [$] on [$] at [$]");
    assert_eq!(lines[1]["masked"], serde_json::Value::Null, "nothing left to mask");
}

#[test]
fn bad_training_input_fails_cleanly() {
    let model = model_dir();
    let m = model.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str, body: &[u8]| {
        let p = work.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let train = |captions: &str, extra: &[&str]| {
        let out = work.path().join(format!("out-{}", captions.len()));
        let mut args = vec!["train", "--model", m, "--captions", captions, "--output-dir", out.to_str().unwrap(), "--batch-size", "2", "--max-steps", "2"];
        args.extend_from_slice(extra);
        lincir(&args)
    };
    let empty = w("empty.txt", b"");
    assert_clean_failure(&train(&empty, &[]), &["empty"]);
    let dollars = w("dollars.txt", b"$\n\n $$ \n");
    assert_clean_failure(&train(&dollars, &[]), &["no usable captions"]);
    let parquet = fixtures().join("corpus/no_text.parquet");
    assert_clean_failure(&train(parquet.to_str().unwrap(), &[]), &["no_text.parquet", "no column `text`"]);
    let missing = work.path().join("absent.txt");
    assert_clean_failure(&train(missing.to_str().unwrap(), &[]), &["absent.txt", "not found"]);
    let ok = w("ok.txt", b"a dog\n");
    assert_clean_failure(&train(&ok, &["--resume"]), &["nothing to resume"]);
    let o = train(&ok, &["--lr-scheduler", "exponential"]);
    assert_eq!(o.status.code(), Some(2), "unknown schedule is a usage error");
    // Numbers that can only train to NaN are refused before the model is even loaded.
    for (flag, value) in [("--lr", "nan"), ("--lr", "-1e-4"), ("--weight-decay", "inf"), ("--phi-dropout", "-0.5"), ("--max-grad-norm", "0")] {
        assert_clean_failure(&train(&ok, &[&format!("{flag}={value}")]), &[flag]);
    }

    // A phi checkpoint for another backbone, and a file that is no checkpoint at all.
    let bench = work.path().join("CIRR");
    mini_cirr(&bench);
    let official = fixtures().join("phi_official.pt"); // 16 -> 24: fits clip-a
    let o = lincir(&["eval", "--model", m, "--phi", official.to_str().unwrap(), "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap()]);
    assert!(o.status.success(), "the official .pt format loads: {}", String::from_utf8_lossy(&o.stderr));
    let foreign = work.path().join("phi_foreign.safetensors");
    write_phi(&foreign, 40, 48); // a phi for clip-b (projection 40, width 48)
    assert_clean_failure(
        &lincir(&["eval", "--model", m, "--phi", foreign.to_str().unwrap(), "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap()]),
        &["phi_foreign.safetensors", "another backbone"],
    );
    let other = fixtures().join("clip-b/config.json");
    assert_clean_failure(
        &lincir(&["eval", "--model", m, "--phi", other.to_str().unwrap(), "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap()]),
        &["config.json", "neither a safetensors file nor a PyTorch .pt"],
    );
}

/// A phi checkpoint with official key names for a backbone of projection `p` and width `w`.
fn write_phi(path: &Path, p: usize, w: usize) {
    let h = 4 * p;
    let shapes = [("layers.0.weight", vec![h, p]), ("layers.0.bias", vec![h]), ("layers.3.weight", vec![h, h]), ("layers.3.bias", vec![h]), ("layers.6.weight", vec![w, h]), ("layers.6.bias", vec![w])];
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> =
        shapes.iter().map(|(n, s)| (n.to_string(), s.clone(), vec![0u8; 4 * s.iter().product::<usize>()])).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = buffers
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn phi_checkpoints_resolve_from_the_hub_cache() {
    let model = model_dir();
    let m = model.path().to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    fake_hub_repo(home.path(), "model", "navervision/zeroshot-cir-models", &[("lincir_large.pt", fixtures().join("phi_official.pt"))]);
    let out = home.path().join("converted.safetensors");
    let run = |phi: &str| {
        Command::new(env!("CARGO_BIN_EXE_lincir"))
            .args(["convert-phi", "--phi", phi, "--out", out.to_str().unwrap()])
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    let o = run("navervision/zeroshot-cir-models/lincir_large.pt");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("phi 16 -> 64 -> 24"));
    assert_clean_failure(&run("navervision/zeroshot-cir-models/lincir_giga.pt"), &["lincir_giga.pt", "not in the Hugging Face cache"]);
    let bench = home.path().join("CIRR");
    mini_cirr(&bench);
    let o = Command::new(env!("CARGO_BIN_EXE_lincir"))
        .args(["eval", "--model", m, "--phi", "navervision/zeroshot-cir-models/lincir_large.pt", "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap(), "--no-cache"])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn genecis_attribute_tasks_crop_their_regions() {
    // Three Visual Genome-style records: the crop of each box is what gets embedded.
    let model = model_dir();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("GeneCIS");
    for i in 0..6 {
        write_bmp(&root.join(format!("Visual_Genome/VG_All/{}.jpg", 100 + i)), [40 * i as u8, 200 - 30 * i as u8, 90]);
    }
    let item = |id: u32, b: [f64; 4]| serde_json::json!({"image_id": id, "instance_bbox": b});
    let records: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            serde_json::json!({
                "reference": item(100 + i, [1.0, 1.0, 4.0, 3.0]),
                "target": item(103 + i, [0.5, 2.0, 6.0, 5.0]),
                "gallery": [item(101, [0.0, 0.0, 8.0, 8.0]), item(102 + i % 2, [2.0, 2.0, 2.0, 2.0])],
                "condition": "red",
            })
        })
        .collect();
    std::fs::create_dir_all(root.join("genecis")).unwrap();
    std::fs::write(root.join("genecis/focus_attribute.json"), serde_json::Value::Array(records).to_string()).unwrap();
    let json = work.path().join("g.json");
    let phi = fixtures().join("phi_official.pt");
    let o = lincir(&["eval", "--model", model.path().to_str().unwrap(), "--phi", phi.to_str().unwrap(), "--dataset", "genecis", "--dataset-path", root.to_str().unwrap(), "--json", json.to_str().unwrap(), "--no-cache"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["queries"], 3);
    assert_eq!(r["metrics"]["focus_attribute"]["R@3"], 100.0, "3 candidates: the target is always within the top 3");
    assert!(r["notes"].to_string().contains("mean over the 1 tasks"));
    // A record without a box is an error naming the file and the record.
    std::fs::write(root.join("genecis/focus_attribute.json"), r#"[{"reference": {"image_id": 100}, "target": {"image_id": 101}, "gallery": [], "condition": "x"}]"#).unwrap();
    let o = lincir(&["eval", "--model", model.path().to_str().unwrap(), "--phi", phi.to_str().unwrap(), "--dataset", "genecis", "--dataset-path", root.to_str().unwrap(), "--no-cache"]);
    assert_clean_failure(&o, &["focus_attribute.json", "record 0", "instance_bbox"]);
}

#[test]
fn several_methods_and_baselines_in_one_eval_share_the_gallery() {
    let model = model_dir();
    let work = tempfile::tempdir().unwrap();
    let m = model.path().to_str().unwrap();
    let bench = work.path().join("CIRR");
    mini_cirr(&bench);
    let phi = fixtures().join("phi_official.pt");
    let pic2word = fixtures().join("peers/pic2word.pt");
    let (a, b, c) = (format!("lincir={}", phi.display()), format!("searle={}", phi.display()), format!("pic2word={}", pic2word.display()));
    let cache = work.path().join("cache");
    let json = work.path().join("compare.json");
    let run = || {
        lincir(&[
            "eval", "--model", m, "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap(), "--phi", &a, "--phi", &b, "--phi", &c,
            "--baseline", "image", "--baseline", "sum", "--cache-dir", cache.to_str().unwrap(), "--json", json.to_str().unwrap(),
        ])
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for row in ["| lincir |", "| searle |", "| pic2word |", "| image-only |", "| image+text |"] {
        assert_eq!(stdout.matches(row).count(), 1, "{row}: one row in the table: {stdout}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["mode"].as_str().unwrap()).collect::<Vec<_>>(), ["lincir", "searle", "pic2word", "image-only", "image+text"]);
    assert!(runs[1..].iter().all(|r| r["cached_images"] == 6), "later runs take the gallery from the cache: {report}");
    assert!(runs.iter().all(|r| r["preprocess"] == "transformers"), "{report}");
    // Each method through its authors' transform: SEARLE's and Pic2Word's galleries are embedded
    // anew (the cache keeps transforms apart), LinCIR's and the baselines' come from the cache.
    let o = lincir(&[
        "eval", "--model", m, "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap(), "--phi", &a, "--phi", &b, "--phi", &c,
        "--baseline", "image", "--cache-dir", cache.to_str().unwrap(), "--json", json.to_str().unwrap(), "--preprocess", "method",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("image preprocessing: lincir transformers, searle targetpad, pic2word openai, image-only transformers"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    let pipelines: Vec<&str> = runs.iter().map(|r| r["preprocess"].as_str().unwrap()).collect();
    assert_eq!(pipelines, ["transformers", "targetpad", "openai", "transformers"]);
    let cached: Vec<u64> = runs.iter().map(|r| r["cached_images"].as_u64().unwrap()).collect();
    assert_eq!(cached, [6, 0, 0, 6], "{report}");
    // A method whose code does not use the checkpoint's architecture is refused by name.
    let wrong = format!("searle={}", pic2word.display());
    assert_clean_failure(
        &lincir(&["eval", "--model", m, "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap(), "--phi", &wrong]),
        &["pic2word.pt", "IM2TEXT", "searle does not use"],
    );
}

/// `bench train` and `bench encode` write their JSON with consistent rates and work: the useful
/// GFLOP/s are the samples/s times the work of a sample (3 text-tower passes at each caption's
/// length, which for the tiny fixture is at least 3 x 5 tokens' worth).
#[test]
fn bench_train_and_encode_write_consistent_json() {
    let model = model_dir();
    let work = tempfile::tempdir().unwrap();
    let m = model.path().to_str().unwrap();
    let json = |p: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };

    let out = work.path().join("train.json");
    let o = lincir(&["bench", "train", "--model", m, "--batch-size", "4", "--steps", "3", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out);
    let (rate, per_sample, useful) = (r["samples_per_s"].as_f64().unwrap(), r["gflop_per_sample"].as_f64().unwrap(), r["useful_gflops"].as_f64().unwrap());
    assert!(rate > 0.0 && (useful - rate * per_sample).abs() <= 1e-9 * useful.max(1.0), "{r}");
    // The fixture's text tower (sizes from its config) at 5 to 77 tokens a caption.
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.path().join("config.json")).unwrap()).unwrap();
    let t = &cfg["text_config"];
    let (d, f, layers) = (t["hidden_size"].as_f64().unwrap(), t["intermediate_size"].as_f64().unwrap(), t["num_hidden_layers"].as_f64().unwrap());
    let at = |s: f64| 3.0 * layers * (2.0 * s * (4.0 * d * d + 2.0 * d * f) + 4.0 * s * s * d) / 1e9;
    assert!(per_sample >= at(5.0) && per_sample <= at(77.0), "{per_sample} GFLOP per sample");
    assert_eq!(r["steps_timed"], 3, "a warm-up step, then the steps asked for");

    let out = work.path().join("encode.json");
    let o = lincir(&["bench", "encode", "--model", m, "--batch-size", "2", "--text-batches", "1", "--image-batches", "1", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out);
    assert!(r["texts_per_s"].as_f64().unwrap() > 0.0 && r["images_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["dtype"], "f32");
    // What feeds the tower from JPEG files: a phone photo costs far more than a small image.
    let (small, photo) = (r["decode_preprocess_jpeg_640x480_per_s"].as_f64().unwrap(), r["decode_preprocess_jpeg_4032x3024_per_s"].as_f64().unwrap());
    assert!(photo > 0.0 && small > 5.0 * photo, "{r}");
}

/// The tests' runner kills a command past its limit and fails (what keeps a looping command from
/// holding CI): `sleep 30` under a 200 ms limit.
#[cfg(unix)]
#[test]
fn a_command_past_its_limit_is_killed_and_fails_its_test() {
    let started = std::time::Instant::now();
    let run = std::panic::catch_unwind(|| output_within(Command::new("sleep").arg("30"), std::time::Duration::from_millis(200)));
    assert!(run.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
