//! CIRCO: several ground truths per query over the COCO 2017 unlabeled gallery; mAP@k, Recall@k
//! of the main target, mAP@10 per semantic aspect; the evaluation server's submission file.
//!
//! Layout: `CIRCO/annotations/{val,test}.json` and `COCO2017_unlabeled/annotations/
//! image_info_unlabeled2017.json` + `COCO2017_unlabeled/unlabeled2017/{file_name}`, the two folders
//! side by side (the dataset path is their parent, or `CIRCO/` itself).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cirr::read_json;
use super::eval::{masked_scores, rows, Evaluator, Report};
use super::images::BenchImage;
use super::metrics::{average_precision_at, ranking};
use crate::{Error, Result};

pub const KS: [usize; 4] = [5, 10, 25, 50];

pub struct CircoQuery {
    pub id: u64,
    pub caption: String,
    pub reference: usize,
    pub target: Option<usize>,
    pub ground_truth: Vec<usize>,
    pub aspects: Vec<String>,
}

pub struct CircoSplit {
    pub split: String,
    pub image_ids: Vec<u64>,
    pub images: Vec<BenchImage>,
    pub queries: Vec<CircoQuery>,
}

#[derive(Deserialize)]
struct RawQuery {
    id: u64,
    reference_img_id: u64,
    relative_caption: String,
    target_img_id: Option<u64>,
    #[serde(default)]
    gt_img_ids: Vec<u64>,
    #[serde(default)]
    semantic_aspects: Vec<String>,
}

#[derive(Deserialize)]
struct ImageInfo {
    images: Vec<ImageEntry>,
}

#[derive(Deserialize)]
struct ImageEntry {
    id: u64,
    file_name: String,
}

/// (CIRCO folder, COCO2017_unlabeled folder) from the dataset path.
fn find_roots(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let candidates = [(path.join("CIRCO"), path.join("COCO2017_unlabeled")), (path.to_path_buf(), path.join("../COCO2017_unlabeled")), (path.to_path_buf(), path.join("COCO2017_unlabeled"))];
    for (circo, coco) in candidates {
        if circo.join("annotations").is_dir() && coco.join("annotations").is_dir() {
            return Ok((circo, coco));
        }
    }
    Err(Error::file(path, "not a CIRCO dataset root: expected CIRCO/annotations/ and COCO2017_unlabeled/annotations/ side by side"))
}

impl CircoSplit {
    pub fn load(path: &Path, split: &str) -> Result<Self> {
        let (circo, coco) = find_roots(path)?;
        let info_file = coco.join("annotations/image_info_unlabeled2017.json");
        let info: ImageInfo = read_json(&info_file)?;
        let mut entries = info.images;
        entries.sort_by_key(|e| e.id);
        let index: HashMap<u64, usize> = entries.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
        let ann_file = circo.join(format!("annotations/{split}.json"));
        let raw: Vec<RawQuery> = read_json(&ann_file)?;
        let find = |id: u64, q: u64, what: &str| {
            index.get(&id).copied().ok_or_else(|| Error::file(&ann_file, format!("query {q}: {what} image {id} is not in {}", info_file.display())))
        };
        let queries = raw
            .into_iter()
            .map(|q| {
                Ok(CircoQuery {
                    id: q.id,
                    reference: find(q.reference_img_id, q.id, "reference")?,
                    target: q.target_img_id.map(|t| find(t, q.id, "target")).transpose()?,
                    ground_truth: q.gt_img_ids.iter().map(|&g| find(g, q.id, "ground-truth")).collect::<Result<_>>()?,
                    caption: q.relative_caption,
                    aspects: q.semantic_aspects,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let images = entries.iter().map(|e| BenchImage::file(coco.join("unlabeled2017").join(&e.file_name))).collect();
        Ok(CircoSplit { split: split.into(), image_ids: entries.iter().map(|e| e.id).collect(), images, queries })
    }
}

/// The queries that could be ranked, each with its top 50 gallery indices.
struct Ranked<'s> {
    tops: Vec<Vec<usize>>,
    queries: Vec<&'s CircoQuery>,
    skipped_images: Vec<String>,
}

/// Gallery rankings of the split's queries (reference not removed, as the official evaluation).
fn rankings<'s>(ev: &Evaluator, split: &'s CircoSplit) -> Result<Ranked<'s>> {
    let gallery = ev.embed("CIRCO gallery", &split.images)?;
    let skipped: Vec<String> = gallery.skipped.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
    let queries: Vec<&CircoQuery> = split.queries.iter().filter(|q| gallery.ok[q.reference]).collect();
    let refs = rows(&gallery.features, &queries.iter().map(|q| q.reference).collect::<Vec<_>>())?;
    let texts: Vec<String> = queries.iter().map(|q| q.caption.clone()).collect();
    let scores = masked_scores(&ev.queries(&refs, &texts)?, &gallery)?;
    let tops = scores.iter().map(|row| ranking(row).into_iter().take(50).collect()).collect();
    Ok(Ranked { tops, queries, skipped_images: skipped })
}

/// mAP@5/10/25/50 and Recall@5/10/25/50 of the main target ("all"), and mAP@10 per semantic
/// aspect, from each query's top 50 gallery indices.
pub fn metrics(queries: &[&CircoQuery], tops: &[Vec<usize>]) -> Vec<(String, Vec<(String, f64)>)> {
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let ap = |k: usize| -> Vec<f64> { queries.iter().zip(tops).map(|(q, top)| average_precision_at(top, &q.ground_truth, k)).collect() };
    let map = KS.iter().map(|&k| (format!("mAP@{k}"), mean(&ap(k))));
    let recall = KS.iter().map(|&k| {
        let hits: Vec<f64> = queries
            .iter()
            .zip(tops)
            .map(|(q, top)| if q.target.is_some_and(|t| top[..k.min(top.len())].contains(&t)) { 100.0 } else { 0.0 })
            .collect();
        (format!("R@{k}"), mean(&hits))
    });
    let mut groups = vec![("all".to_string(), map.chain(recall).collect::<Vec<_>>())];
    let ap10 = ap(10);
    let mut by_aspect: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (q, v) in queries.iter().zip(&ap10) {
        for a in &q.aspects {
            by_aspect.entry(a.as_str()).or_default().push(*v);
        }
    }
    if !by_aspect.is_empty() {
        groups.push(("mAP@10 by semantic aspect".to_string(), by_aspect.iter().map(|(a, v)| (a.to_string(), mean(v))).collect()));
    }
    groups
}

/// mAP@5/10/25/50, Recall@5/10/25/50 of the main target, mAP@10 per semantic aspect.
pub fn evaluate(ev: &Evaluator, path: &Path, split_name: &str) -> Result<Report> {
    let split = CircoSplit::load(path, split_name)?;
    if split.queries.iter().any(|q| q.ground_truth.is_empty()) {
        return Err(Error::Invalid(format!("CIRCO {split_name} has no ground truth: use `lincir submit` for the test split")));
    }
    let Ranked { tops, queries, skipped_images } = rankings(ev, &split)?;
    let groups = metrics(&queries, &tops);
    Ok(Report {
        dataset: "circo".into(),
        split: split_name.into(),
        mode: ev.mode_name().into(),
        groups,
        queries: queries.len(),
        skipped_queries: split.queries.len() - queries.len(),
        skipped_images,
        cached_images: ev.cached_images(),
        notes: vec![],
    })
}

/// The CIRCO server's file: `{"<query id>": [top 50 image ids]}`.
pub fn submission(ev: &Evaluator, path: &Path, split_name: &str) -> Result<serde_json::Value> {
    let split = CircoSplit::load(path, split_name)?;
    let Ranked { tops, queries, .. } = rankings(ev, &split)?;
    if queries.len() != split.queries.len() {
        return Err(Error::Invalid("a submission needs every query: some reference images could not be read".into()));
    }
    Ok(queries
        .iter()
        .zip(&tops)
        .map(|(q, top)| (q.id.to_string(), top.iter().map(|&i| serde_json::json!(split.image_ids[i])).collect::<serde_json::Value>()))
        .collect::<serde_json::Map<_, _>>()
        .into())
}
