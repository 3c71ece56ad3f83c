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

/// Trains phi on the shapes captions alone (300 steps of 64) and evaluates it on the shapes
/// CIRR-layout benchmark against the image-only, text-only and image+text baselines.
#[test]
#[ignore = "shared suite: needs ../shared"]
fn shapes_phi_trained_on_text_alone_beats_single_modality_baselines() {
    use lincir::bench::{cirr, query};
    use lincir::smp::{corpus::Corpus, train};

    let model = shared().join("shapes/clip");
    let clip = Clip::load(model.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let text = clip.text().unwrap();
    let captions = shared().join("shapes/captions.txt").display().to_string();
    let phi = lincir::phi::PhiConfig::for_backbone(text.projection_dim(), text.width());
    let cfg = train::TrainConfig {
        batch_size: 64,
        max_steps: 300,
        checkpointing_steps: 300,
        ..train::TrainConfig::paper(&model.display().to_string(), vec![captions.clone()], phi)
    };
    let out = tempfile::tempdir().unwrap();
    let corpus = Corpus::open(&[captions], "text").unwrap();
    train::train(&cfg, &clip, &corpus, &lincir::smp::keywords::keywords, out.path(), false, &mut |_| {}).unwrap();
    let phi = lincir::phi::Phi::load(&out.path().join(train::LATEST_FILE), &Device::Cpu).unwrap();

    let split = cirr::CirrSplit::load(&shared().join("shapes/bench"), "val").unwrap();
    let gallery = lincir::embed::embed_image_files(&clip, &split.paths, 64, &|_| {}).unwrap();
    let idx: Vec<u32> = split.reference_indices().iter().map(|&i| i as u32).collect();
    let refs = gallery.index_select(&candle_core::Tensor::new(idx, &Device::Cpu).unwrap(), 0).unwrap();
    let r1 = |mode| {
        let q = query::query_features(&clip, Some(&phi), lincir::method::Method::Lincir, mode, &refs, &split.captions(), 128).unwrap();
        let m = cirr::metrics(&split, &query::scores(&q, &gallery).unwrap()).unwrap();
        println!("{}: {:?} subset {:?}", mode.name(), m.recall, m.recall_subset);
        m.recall_at(1).unwrap()
    };
    let (lincir_r1, image, text_only, sum) =
        (r1(query::QueryMode::Composed), r1(query::QueryMode::Image), r1(query::QueryMode::Text), r1(query::QueryMode::Sum));
    // The official code reaches R@1 16.2 after 1,000 steps here; the baselines are 3.4 / 2.0 / 44.8.
    assert!((image - 3.4).abs() < 0.1 && (text_only - 1.95).abs() < 0.1 && (sum - 44.75).abs() < 0.1, "baselines moved");
    assert!(lincir_r1 > 30.0, "phi trained on text alone: R@1 {lincir_r1}");
}

/// The stream of scripts/make_metric_fixtures.py: n x dim integers in -8..7.
fn int_features(seed: u64, purpose: u64, n: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut r = lincir::rng::Rng::derive(seed, purpose, 0);
    (0..n).map(|_| (0..dim).map(|_| (r.next_u64() >> 60) as f32 - 8.0).collect()).collect()
}

/// Scores of queries 2 * gallery[target] + noise (exact: small integers).
fn crosscheck_scores(seed: u64, dim: usize, gallery_purpose: u64, gallery_len: usize, targets: &[usize]) -> Vec<Vec<f32>> {
    let g = int_features(seed, gallery_purpose, gallery_len, dim);
    let noise = int_features(seed, gallery_purpose + 1, targets.len(), dim);
    targets
        .iter()
        .zip(noise)
        .map(|(&t, n)| {
            let q: Vec<f32> = g[t].iter().zip(&n).map(|(a, b)| 2.0 * a + b).collect();
            g.iter().map(|row| row.iter().zip(&q).map(|(a, b)| a * b).sum()).collect()
        })
        .collect()
}

fn assert_metrics(dataset: &str, ours: &[(String, Vec<(String, f64)>)], expected: &serde_json::Value) {
    for (group, metrics) in ours {
        for (name, v) in metrics {
            let e = expected[group][name].as_f64().unwrap_or_else(|| panic!("{dataset} {group} {name} missing from the fixture"));
            assert!((v - e).abs() < 1e-9, "{dataset} {group} {name}: ours {v}, Python {e}");
        }
        println!("{dataset} {group}: {metrics:?}");
    }
}

/// The official metric definitions implemented in Python (scripts/make_metric_fixtures.py) and
/// ours agree on the real annotation files, with the same deterministic features.
#[test]
#[ignore = "shared suite: needs ../shared"]
fn metrics_match_the_python_reference_on_real_annotations() {
    use lincir::bench::{circo, cirr, fashioniq, genecis, metrics::ranking};
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("metrics_crosscheck.json")).unwrap()).unwrap();
    let (seed, dim) = (expected["seed"].as_u64().unwrap(), expected["dim"].as_u64().unwrap() as usize);
    let b = shared().join("benchmarks");

    let split = cirr::CirrSplit::load(&b.join("CIRR"), "val").unwrap();
    assert_eq!(split.queries.len(), 4181);
    let targets: Vec<usize> = split.queries.iter().map(|q| q.target.unwrap()).collect();
    let m = cirr::metrics(&split, &crosscheck_scores(seed, dim, 101, split.names.len(), &targets)).unwrap();
    let group: Vec<(String, f64)> =
        m.recall.iter().map(|(k, v)| (format!("R@{k}"), *v)).chain(m.recall_subset.iter().map(|(k, v)| (format!("Rs@{k}"), *v))).collect();
    assert_metrics("cirr", &[("all".into(), group)], &expected["cirr"]);

    let mut groups = Vec::new();
    for (j, cat) in fashioniq::CATEGORIES.iter().enumerate() {
        let c = fashioniq::FashionIqCategory::load(&b.join("FashionIQ"), cat, "val").unwrap();
        let queries: Vec<&fashioniq::FashionIqQuery> = c.queries.iter().collect();
        let targets: Vec<usize> = queries.iter().map(|q| q.target).collect();
        let scores = crosscheck_scores(seed, dim, 201 + 10 * j as u64, c.names.len(), &targets);
        groups.push((cat.to_string(), fashioniq::category_metrics(&queries, &scores)));
    }
    assert_metrics("fashioniq", &groups, &expected["fashioniq"]);

    // CIRCO: the gallery is the annotation's images plus distractors, as the Python side builds it.
    let anns: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(b.join("CIRCO/annotations/val.json")).unwrap()).unwrap();
    let mut ids: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    for a in &anns {
        ids.insert(a["reference_img_id"].as_u64().unwrap());
        ids.insert(a["target_img_id"].as_u64().unwrap());
        ids.extend(a["gt_img_ids"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap()));
    }
    ids.extend((0..expected["circo_distractors"].as_u64().unwrap()).map(|i| 1_000_000_000 + i));
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("CIRCO/annotations")).unwrap();
    std::fs::create_dir_all(root.path().join("COCO2017_unlabeled/annotations")).unwrap();
    std::fs::copy(b.join("CIRCO/annotations/val.json"), root.path().join("CIRCO/annotations/val.json")).unwrap();
    let images: Vec<serde_json::Value> = ids.iter().map(|id| serde_json::json!({"id": id, "file_name": format!("{id:012}.jpg")})).collect();
    std::fs::write(root.path().join("COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"), serde_json::json!({"images": images}).to_string())
        .unwrap();
    let split = circo::CircoSplit::load(root.path(), "val").unwrap();
    assert_eq!(split.queries.len(), 220);
    let targets: Vec<usize> = split.queries.iter().map(|q| q.target.unwrap()).collect();
    let scores = crosscheck_scores(seed, dim, 301, split.images.len(), &targets);
    let tops: Vec<Vec<usize>> = scores.iter().map(|row| ranking(row).into_iter().take(50).collect()).collect();
    let queries: Vec<&circo::CircoQuery> = split.queries.iter().collect();
    assert_metrics("circo", &circo::metrics(&queries, &tops), &expected["circo"]);

    let paths = genecis::GenecisPaths::new(&b.join("GeneCIS"), None, None).unwrap();
    let mut groups = Vec::new();
    for (j, task) in ["focus_object", "change_object"].iter().enumerate() {
        let t = genecis::GenecisTask::load(&paths, task).unwrap();
        assert_eq!(t.records.len(), 1960);
        let records: Vec<&genecis::GenecisRecord> = t.records.iter().collect();
        let targets: Vec<usize> = records.iter().map(|r| r.candidates[0]).collect();
        let scores = crosscheck_scores(seed, dim, 401 + 10 * j as u64, t.images.len(), &targets);
        groups.push((task.to_string(), genecis::task_metrics(&records, &scores, &vec![true; t.images.len()])));
    }
    assert_metrics("genecis", &groups, &expected["genecis"]);
}
