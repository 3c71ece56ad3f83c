//! kill -9 at a random moment, then run again: `train` (with --resume when a state was saved),
//! `index` and `eval` (the feature cache) finish, and their results equal an uninterrupted run's.
//! The kill points are drawn from a fixed seed over the uninterrupted run's duration, so every
//! phase (loading, computing, writing) is hit across the points.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const KILLS: usize = 4;

fn command(args: &[String], cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lincir"));
    c.args(args).env("HF_HUB_OFFLINE", "1").env("LINCIR_CACHE", cache).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Runs to the end; returns how long it took.
fn run_to_end(args: &[String], cache: &Path) -> Duration {
    let t = Instant::now();
    let out = command(args, cache).stderr(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    t.elapsed()
}

/// Starts the command and SIGKILLs it after `after` (if it is still running).
fn kill_after(args: &[String], cache: &Path, after: Duration) {
    let mut child = command(args, cache).spawn().unwrap();
    std::thread::sleep(after);
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
}

/// Kill points spread over (5%, 95%) of `total`, from a fixed seed.
fn kill_points(total: Duration, salt: u64) -> Vec<Duration> {
    let mut rng = lincir::rng::Rng::new(0xdead ^ salt);
    (0..KILLS).map(|_| total.mul_f64(0.05 + 0.9 * rng.uniform() as f64)).collect()
}

/// Every tensor of a safetensors file, as raw bytes by name (metadata order may differ).
fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, v.data().to_vec())).collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A training command run straight through, then killed at each kill point and run again (with
/// --resume once it has saved a state): every time, `output` ends with the straight run's bytes
/// and `metrics.jsonl` has one line per step.
fn killed_training_resumes_exactly(work: &Path, cache: &Path, salt: u64, args: impl Fn(&Path) -> Vec<String>, output: &str, steps: usize) {
    let straight = work.join("straight");
    let total = run_to_end(&args(&straight), cache);
    let expected = tensors(&straight.join(output));
    for (k, at) in kill_points(total, salt).into_iter().enumerate() {
        let out = work.join(format!("killed{k}"));
        kill_after(&args(&out), cache, at);
        let mut again = args(&out);
        if out.join("train_state.safetensors").exists() && !again.iter().any(|a| a == "--resume") {
            again.push("--resume".into());
        }
        run_to_end(&again, cache);
        assert_eq!(tensors(&out.join(output)), expected, "killed after {at:?}: the resumed {output} differs");
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), steps, "killed after {at:?}: one metrics line per step");
    }
}

#[test]
fn train_killed_anywhere_resumes_to_the_same_phi() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let captions = work.path().join("captions.txt");
    let lines: Vec<String> = (0..200).map(|i| format!("a photo of {} red dogs near a {} house number {i}", i % 7, ["big", "small", "blue"][i % 3])).collect();
    std::fs::write(&captions, lines.join("\n")).unwrap();
    let args = |out: &Path| {
        s(&["train", "--model", m, "--captions", captions.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--batch-size", "8",
            "--max-steps", "40", "--checkpointing-steps", "5", "--seed", "3", "--threads", "1"])
    };
    killed_training_resumes_exactly(work.path(), &work.path().join("cache"), 1, args, "phi_latest.safetensors", 40);
}

#[test]
fn train_pic2word_killed_anywhere_resumes_to_the_same_network() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("photos");
    photos(&images, 64);
    let args = |out: &Path| {
        s(&["train-pic2word", "--model", m, "--images", images.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--batch-size", "8",
            "--max-steps", "40", "--checkpointing-steps", "5", "--warmup-steps", "5", "--lr", "1e-3", "--seed", "3", "--threads", "1"])
    };
    killed_training_resumes_exactly(work.path(), &work.path().join("cache"), 4, args, "im2text_latest.safetensors", 40);
}

/// SEARLE's two stages: the inverted batches of a killed run are read back (each file written
/// atomically), phi resumes from its checkpoint; the run ends with the same bytes. `--resume`
/// is always given: it starts a run that has nothing yet.
#[test]
fn train_searle_killed_anywhere_resumes_to_the_same_phi() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("photos");
    photos(&images, 32);
    let vocabulary = work.path().join("vocabulary.txt");
    std::fs::write(&vocabulary, "red\ngreen\nblue\ndog\nhouse\n").unwrap();
    let captions = work.path().join("captions.txt");
    let lines: Vec<String> = (0..60).map(|i| format!("a {} dog near a {} house number {i}", ["red", "green", "blue"][i % 3], ["big", "small"][i % 2])).collect();
    std::fs::write(&captions, lines.join("\n")).unwrap();
    let args = |out: &Path| {
        s(&["train-searle", "--model", m, "--images", images.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--vocabulary", vocabulary.to_str().unwrap(),
            "--phrase-captions", captions.to_str().unwrap(), "--oti-steps", "6", "--oti-batch-size", "4", "--batch-size", "8", "--max-steps", "24",
            "--checkpointing-steps", "4", "--top-k", "3", "--seed", "3", "--threads", "1", "--resume"])
    };
    killed_training_resumes_exactly(work.path(), &work.path().join("cache"), 6, args, "phi_latest.safetensors", 24);
}

/// With Pic2Word's augmentation every step decodes and crops the images at random: the crops are
/// derived from (seed, step, slot), so a resumed run still ends with the same bytes.
#[test]
fn train_pic2word_augmented_killed_anywhere_resumes_to_the_same_network() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("photos");
    std::fs::create_dir_all(&images).unwrap();
    // Textured pictures, so that every crop gives another embedding.
    for i in 0..24u32 {
        let img = image::RgbImage::from_fn(40 + i, 30 + 2 * i, |x, y| image::Rgb([(x * 7 + i * 11) as u8, (y * 13 + x * y) as u8, (x ^ y ^ i) as u8 * 9]));
        img.save(images.join(format!("p{i:02}.png"))).unwrap();
    }
    let args = |out: &Path| {
        s(&["train-pic2word", "--model", m, "--images", images.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--batch-size", "8",
            "--max-steps", "24", "--checkpointing-steps", "4", "--warmup-steps", "4", "--lr", "1e-3", "--seed", "5", "--augment", "--threads", "1"])
    };
    killed_training_resumes_exactly(work.path(), &work.path().join("cache"), 5, args, "im2text_latest.safetensors", 24);
}

fn photos(dir: &Path, n: usize) {
    for i in 0..n {
        write_bmp(&dir.join(format!("p{i:03}.bmp")), [(i * 37 % 256) as u8, (i * 91 % 256) as u8, (i * 13 % 256) as u8]);
    }
}

/// (path, id, vector) of every entry, sorted by path: an interrupted run resumed gives the
/// images the ids an uninterrupted one does.
fn index_content(dir: &Path) -> Vec<(String, usize, Vec<f32>)> {
    let index = lincir::index::Index::open(dir).unwrap();
    let mut v: Vec<(String, usize, Vec<f32>)> = index.meta.entries.iter().map(|e| (e.path.clone(), e.id, index.vector(e.id).unwrap().to_vec())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn index_killed_anywhere_completes_to_the_same_index() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("photos");
    photos(&images, 300);
    let cache = work.path().join("cache");
    let args = |out: &Path| s(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap(), "--batch-size", "2", "--threads", "1"]);
    let straight = work.path().join("straight");
    let total = run_to_end(&args(&straight), &cache);
    let expected = index_content(&straight);
    assert_eq!(expected.len(), 300);
    for (k, at) in kill_points(total, 2).into_iter().enumerate() {
        let out = work.path().join(format!("killed{k}"));
        kill_after(&args(&out), &cache, at);
        run_to_end(&args(&out), &cache);
        assert_eq!(index_content(&out), expected, "killed after {at:?}");
    }
}

fn mini_cirr(root: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(root.join("cirr/captions")).unwrap();
    std::fs::create_dir_all(root.join("cirr/image_splits")).unwrap();
    let mut split = serde_json::Map::new();
    let names: Vec<String> = (0..n).map(|i| format!("img{i:03}")).collect();
    for (i, name) in names.iter().enumerate() {
        write_bmp(&root.join(format!("dev/{name}.bmp")), [(i * 37 % 256) as u8, (i * 91 % 256) as u8, (i * 13 % 256) as u8]);
        split.insert(name.clone(), format!("./dev/{name}.bmp").into());
    }
    let queries: Vec<serde_json::Value> = (0..n / 2)
        .map(|i| {
            let members: Vec<&String> = names.iter().skip(i).take(6).collect();
            serde_json::json!({"pairid": i, "reference": names[i], "target_hard": names[i + 1], "caption": "is brighter", "img_set": {"members": members}})
        })
        .collect();
    std::fs::write(root.join("cirr/image_splits/split.rc2.val.json"), serde_json::Value::Object(split).to_string()).unwrap();
    std::fs::write(root.join("cirr/captions/cap.rc2.val.json"), serde_json::Value::Array(queries).to_string()).unwrap();
    root.to_path_buf()
}

#[test]
fn eval_killed_anywhere_gives_the_same_metrics_on_the_rerun() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let bench = mini_cirr(&work.path().join("CIRR"), 300);
    let args = |json: &Path| {
        s(&["eval", "--model", m, "--baseline", "image", "--dataset", "cirr", "--dataset-path", bench.to_str().unwrap(), "--batch-size", "2",
            "--json", json.to_str().unwrap(), "--threads", "1"])
    };
    let metrics = |json: &Path| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        v["metrics"].clone()
    };
    let straight = work.path().join("straight.json");
    let total = run_to_end(&args(&straight), &work.path().join("cache-straight"));
    let expected = metrics(&straight);
    let cache = work.path().join("cache");
    for (k, at) in kill_points(total, 3).into_iter().enumerate() {
        let json = work.path().join(format!("killed{k}.json"));
        kill_after(&args(&json), &cache, at);
        run_to_end(&args(&json), &cache);
        assert_eq!(metrics(&json), expected, "killed after {at:?}");
    }
}
