//! Shared suite (`cargo test --release -- --ignored`): the real annotation files of
//! `../shared/benchmarks` run through `lincir eval` and `lincir submit` end to end, with
//! placeholder images generated here (the benchmark images are licensed downloads) and the
//! shapes CLIP with a briefly trained phi.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;

fn shared() -> PathBuf {
    let p = std::env::var("LINCIR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    assert!(p.join("benchmarks").is_dir(), "the shared suite needs ../shared (or LINCIR_SHARED): {} not found", p.display());
    p
}

/// A one-colour placeholder picked from the name, whatever the extension says (formats are
/// recognised by content).
fn placeholder(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let h = path.file_name().unwrap().to_string_lossy().bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    write_bmp(path, [(h & 255) as u8, ((h >> 8) & 255) as u8, ((h >> 16) & 255) as u8]);
}

fn link(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(from, to).unwrap();
    // (Links need privileges on Windows: a copy, a few megabytes of annotations.)
    #[cfg(not(unix))]
    copy_tree(from, to);
}

#[cfg(not(unix))]
fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

struct World {
    dir: tempfile::TempDir,
    model: String,
    phi: String,
}

impl World {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        let cache = self.path("cache");
        all.extend(["--cache-dir", cache.to_str().unwrap()]);
        let o = lincir(&all);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        o
    }
    fn eval(&self, dataset: &str, root: &Path, extra: &[&str]) -> serde_json::Value {
        let out = self.path(&format!("{dataset}.json"));
        let mut args = vec!["eval", "--model", &self.model, "--phi", &self.phi, "--dataset", dataset, "--dataset-path"];
        args.push(root.to_str().unwrap());
        args.extend(["--json", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let o = self.run(&args);
        println!("{}", String::from_utf8_lossy(&o.stdout));
        json(&out)
    }
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let model = shared().join("shapes/clip").display().to_string();
    let captions = shared().join("shapes/captions.txt");
    let run = dir.path().join("phi");
    let o = lincir(&["train", "--model", &model, "--captions", captions.to_str().unwrap(), "--output-dir", run.to_str().unwrap(), "--batch-size", "16", "--max-steps", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let phi = run.join("phi_latest.safetensors").display().to_string();
    World { dir, model, phi }
}

#[test]
#[ignore = "shared suite: needs ../shared"]
fn cirr_val_and_test1_run_through_eval_and_submit() {
    let w = world();
    let real = shared().join("benchmarks/CIRR");
    let root = w.path("CIRR");
    link(&real.join("cirr"), &root.join("cirr"));
    for split in ["val", "test1"] {
        let images = json(&real.join(format!("cirr/image_splits/split.rc2.{split}.json")));
        for rel in images.as_object().unwrap().values() {
            placeholder(&root.join(rel.as_str().unwrap()));
        }
    }
    let r = w.eval("cirr", &root, &[]);
    assert_eq!(r["queries"], 4181);
    assert!(r["metrics"]["all"]["R@50"].as_f64().unwrap() > 0.0);

    let out = w.path("submission");
    w.run(&["submit", "--model", &w.model, "--phi", &w.phi, "--dataset", "cirr", "--dataset-path", root.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let queries = json(&real.join("cirr/captions/cap.rc2.test1.json"));
    let recall = json(&out.join("recall_submission_test1.json"));
    let subset = json(&out.join("recall_subset_submission_test1.json"));
    assert_eq!((recall["version"].as_str(), recall["metric"].as_str()), (Some("rc2"), Some("recall")));
    assert_eq!(subset["metric"], "recall_subset");
    for q in queries.as_array().unwrap() {
        let id = q["pairid"].to_string();
        let top = recall[&id].as_array().unwrap_or_else(|| panic!("pair {id} missing"));
        assert_eq!(top.len(), 50);
        assert!(!top.contains(&q["reference"]), "the reference is removed");
        let sub = subset[&id].as_array().unwrap();
        assert_eq!(sub.len(), 3);
        let members = q["img_set"]["members"].as_array().unwrap();
        assert!(sub.iter().all(|m| members.contains(m) && *m != q["reference"]));
    }
    assert_eq!(recall.as_object().unwrap().len(), queries.as_array().unwrap().len() + 2);
}

#[test]
#[ignore = "shared suite: needs ../shared"]
fn fashioniq_val_runs_and_a_second_run_reads_the_cache() {
    let w = world();
    let real = shared().join("benchmarks/FashionIQ");
    let root = w.path("FashionIQ");
    link(&real.join("captions"), &root.join("captions"));
    link(&real.join("image_splits"), &root.join("image_splits"));
    let mut total = 0;
    for cat in ["dress", "shirt", "toptee"] {
        for name in json(&real.join(format!("image_splits/split.{cat}.val.json"))).as_array().unwrap() {
            placeholder(&root.join(format!("images/{}.jpg", name.as_str().unwrap())));
            total += 1;
        }
    }
    let t = std::time::Instant::now();
    let first = w.eval("fashioniq", &root, &[]);
    let first_s = t.elapsed().as_secs_f64();
    assert_eq!(first["queries"], 2017 + 2038 + 1961);
    assert_eq!(first["cached_images"], 0);
    let t = std::time::Instant::now();
    let second = w.eval("fashioniq", &root, &[]);
    let second_s = t.elapsed().as_secs_f64();
    assert_eq!(second["cached_images"], total, "every gallery image comes from the cache");
    assert_eq!(first["metrics"], second["metrics"], "cached features give the same numbers");
    println!("FashionIQ val, {total} images: first run {first_s:.1} s, cached {second_s:.1} s ({:.1}x)", first_s / second_s);

    // A changed image is re-embedded, the others still come from the cache.
    let some = root.join(format!("images/{}.jpg", json(&real.join("image_splits/split.dress.val.json"))[0].as_str().unwrap()));
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_bmp(&some, [1, 2, 3]);
    let third = w.eval("fashioniq", &root, &[]);
    assert_eq!(third["cached_images"], total - 1);
}

#[test]
#[ignore = "shared suite: needs ../shared"]
fn circo_val_runs_and_a_test_split_gives_a_submission() {
    let w = world();
    let real = shared().join("benchmarks/CIRCO");
    let root = w.path("data");
    link(&real.join("annotations/val.json"), &root.join("CIRCO/annotations/val.json"));
    // The gallery: the annotation's images and 500 distractors, as COCO's image_info lists them.
    let anns = json(&real.join("annotations/val.json"));
    let mut ids = BTreeSet::new();
    for a in anns.as_array().unwrap() {
        ids.insert(a["reference_img_id"].as_u64().unwrap());
        ids.extend(a["gt_img_ids"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap()));
    }
    ids.extend((0..500).map(|i| 900_000 + i));
    let images: Vec<serde_json::Value> = ids.iter().map(|id| serde_json::json!({"id": id, "file_name": format!("{id:012}.jpg")})).collect();
    for id in &ids {
        placeholder(&root.join(format!("COCO2017_unlabeled/unlabeled2017/{id:012}.jpg")));
    }
    std::fs::create_dir_all(root.join("COCO2017_unlabeled/annotations")).unwrap();
    std::fs::write(root.join("COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"), serde_json::json!({"images": images}).to_string()).unwrap();
    let r = w.eval("circo", &root, &[]);
    assert_eq!(r["queries"], 220);
    assert!(r["metrics"]["all"]["mAP@50"].as_f64().is_some());
    assert!(r["metrics"]["mAP@10 by semantic aspect"]["cardinality"].as_f64().is_some());

    // A test split has no ground truth: same queries without targets.
    let test: Vec<serde_json::Value> = anns
        .as_array()
        .unwrap()
        .iter()
        .map(|a| serde_json::json!({"id": a["id"], "reference_img_id": a["reference_img_id"], "relative_caption": a["relative_caption"], "shared_concept": a["shared_concept"]}))
        .collect();
    std::fs::write(root.join("CIRCO/annotations/test.json"), serde_json::Value::Array(test).to_string()).unwrap();
    let out = w.path("submission");
    w.run(&["submit", "--model", &w.model, "--phi", &w.phi, "--dataset", "circo", "--dataset-path", root.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let sub = json(&out.join("circo_test_submission.json"));
    assert_eq!(sub.as_object().unwrap().len(), 220);
    let top = sub["0"].as_array().unwrap();
    assert_eq!(top.len(), 50);
    assert!(top.iter().all(|id| ids.contains(&id.as_u64().unwrap())));
}

#[test]
#[ignore = "shared suite: needs ../shared"]
fn genecis_object_tasks_run_with_their_condition_text() {
    let w = world();
    let real = shared().join("benchmarks/GeneCIS/genecis");
    let root = w.path("GeneCIS");
    let mut ids = BTreeSet::new();
    for task in ["focus_object", "change_object"] {
        link(&real.join(format!("{task}.json")), &root.join(format!("genecis/{task}.json")));
        for r in json(&real.join(format!("{task}.json"))).as_array().unwrap() {
            ids.insert(r["reference"]["val_image_id"].as_u64().unwrap());
            ids.insert(r["target"]["val_image_id"].as_u64().unwrap());
            ids.extend(r["gallery"].as_array().unwrap().iter().map(|g| g["val_image_id"].as_u64().unwrap()));
        }
    }
    for id in &ids {
        placeholder(&root.join(format!("coco2017/val2017/{id:012}.jpg")));
    }
    let r = w.eval("genecis", &root, &[]);
    assert_eq!(r["queries"], 2 * 1960);
    for task in ["focus_object", "change_object", "mean"] {
        assert!(r["metrics"][task]["R@3"].as_f64().is_some(), "{task}");
    }
    let notes = r["notes"].to_string();
    assert!(notes.contains("focus_attribute") && notes.contains("mean over the 2 tasks"), "{notes}");
}
