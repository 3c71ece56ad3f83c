//! GeneCIS: each record ranks its target against its own small gallery (candidates = [target] +
//! gallery, the target at index 0); Recall@1/2/3 per task and their mean.
//!
//! Annotations `genecis/{focus,change}_{attribute,object}.json` under the dataset path. Object
//! tasks use whole COCO val2017 images (`{coco}/{val_image_id:012}.jpg`); attribute tasks use
//! Visual Genome images (`{vg}/{image_id}.jpg`) cropped to the dilated `instance_bbox` and
//! padded to a square. The condition text fills the query template for every task (the official
//! evaluation passes the target-rank field for the object tasks instead, so that every object
//! query reads "a photo of $ that 0"; we use the condition, as intended).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cirr::read_json;
use super::eval::{rows, Evaluator, Report};
use super::images::{BenchImage, Region};
use super::metrics::{rank_of, recall_at};
use crate::{Error, Result};

pub const TASKS: [&str; 4] = ["focus_attribute", "change_attribute", "focus_object", "change_object"];
pub const RECALL_KS: [usize; 3] = [1, 2, 3];

/// Where GeneCIS's images are.
#[derive(Debug, Clone)]
pub struct GenecisPaths {
    pub annotations: PathBuf,
    pub coco_val2017: PathBuf,
    pub visual_genome: PathBuf,
}

impl GenecisPaths {
    /// Annotations in `{path}/genecis` (or `path` itself); images in the given folders, else
    /// `{path}/coco2017/val2017` and `{path}/Visual_Genome/VG_All`.
    pub fn new(path: &Path, coco: Option<PathBuf>, vg: Option<PathBuf>) -> Result<Self> {
        let annotations = [path.join("genecis"), path.to_path_buf()]
            .into_iter()
            .find(|d| TASKS.iter().any(|t| d.join(format!("{t}.json")).is_file()))
            .ok_or_else(|| Error::file(path, "not a GeneCIS dataset root: no genecis/{focus,change}_{attribute,object}.json"))?;
        Ok(GenecisPaths {
            annotations,
            coco_val2017: coco.unwrap_or_else(|| path.join("coco2017/val2017")),
            visual_genome: vg.unwrap_or_else(|| path.join("Visual_Genome/VG_All")),
        })
    }
}

#[derive(Deserialize)]
struct RawRecord {
    reference: serde_json::Value,
    target: serde_json::Value,
    gallery: Vec<serde_json::Value>,
    condition: serde_json::Value,
}

pub struct GenecisRecord {
    /// Index into the task's image list.
    pub reference: usize,
    /// Candidates: the target first, then the gallery.
    pub candidates: Vec<usize>,
    pub condition: String,
}

pub struct GenecisTask {
    pub name: String,
    pub images: Vec<BenchImage>,
    pub records: Vec<GenecisRecord>,
}

fn image_of(v: &serde_json::Value, object_task: bool, paths: &GenecisPaths) -> std::result::Result<BenchImage, String> {
    if object_task {
        let id = v.get("val_image_id").and_then(|x| x.as_u64()).ok_or("no numeric `val_image_id`")?;
        return Ok(BenchImage::file(paths.coco_val2017.join(format!("{id:012}.jpg"))));
    }
    let id = v.get("image_id").ok_or("no `image_id`")?;
    let id = id.as_u64().map(|n| n.to_string()).or_else(|| id.as_str().map(str::to_string)).ok_or("`image_id` is neither a number nor a string")?;
    let b: Vec<f64> = v
        .get("instance_bbox")
        .and_then(|b| b.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .filter(|b: &Vec<f64>| b.len() == 4)
        .ok_or("no `instance_bbox` [x, y, w, h]")?;
    Ok(BenchImage { path: paths.visual_genome.join(format!("{id}.jpg")), region: Some(Region { x: b[0], y: b[1], w: b[2], h: b[3] }) })
}

impl GenecisTask {
    pub fn load(paths: &GenecisPaths, task: &str) -> Result<Self> {
        let file = paths.annotations.join(format!("{task}.json"));
        let raw: Vec<RawRecord> = read_json(&file)?;
        let object_task = task.ends_with("_object");
        let mut images = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut intern = |img: BenchImage| -> usize {
            *index.entry(img.key()).or_insert_with(|| {
                images.push(img);
                images.len() - 1
            })
        };
        let mut records = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let err = |m: String| Error::file(&file, format!("record {i}: {m}"));
            let reference = intern(image_of(&r.reference, object_task, paths).map_err(|m| err(format!("reference: {m}")))?);
            let mut candidates = vec![intern(image_of(&r.target, object_task, paths).map_err(|m| err(format!("target: {m}")))?)];
            for g in &r.gallery {
                candidates.push(intern(image_of(g, object_task, paths).map_err(|m| err(format!("gallery: {m}")))?));
            }
            let condition = match r.condition {
                serde_json::Value::String(s) => s,
                other => return Err(err(format!("condition is not text: {other}"))),
            };
            records.push(GenecisRecord { reference, candidates, condition });
        }
        Ok(GenecisTask { name: task.into(), images, records })
    }
}

/// Recall@1/2/3 of one task: each record's target (candidate 0) ranked among its readable
/// candidates, from one score row per record over the task's images.
pub fn task_metrics(records: &[&GenecisRecord], scores: &[Vec<f32>], readable: &[bool]) -> Vec<(String, f64)> {
    let ranks: Vec<Option<usize>> = records
        .iter()
        .zip(scores)
        .map(|(r, row)| {
            let usable: Vec<usize> = r.candidates.iter().copied().filter(|&c| readable[c]).collect();
            rank_of(row, &usable, r.candidates[0], None)
        })
        .collect();
    RECALL_KS.iter().map(|&k| (format!("R@{k}"), recall_at(&ranks, k))).collect()
}

/// Recall@1/2/3 per task present, and their mean.
pub fn evaluate(ev: &Evaluator, paths: &GenecisPaths) -> Result<Report> {
    let mut groups = Vec::new();
    let mut notes = Vec::new();
    let (mut total, mut skipped_images, mut skipped_queries) = (0, Vec::new(), 0);
    for task in TASKS {
        if !paths.annotations.join(format!("{task}.json")).is_file() {
            notes.push(format!("{task}: no annotation file, not evaluated"));
            continue;
        }
        let t = GenecisTask::load(paths, task)?;
        let emb = ev.embed(&format!("GeneCIS {task}"), &t.images)?;
        skipped_images.extend(emb.skipped.iter().map(|(p, e)| format!("{}: {e}", p.display())));
        let records: Vec<&GenecisRecord> = t.records.iter().filter(|r| emb.ok[r.reference] && emb.ok[r.candidates[0]]).collect();
        skipped_queries += t.records.len() - records.len();
        let refs = rows(&emb.features, &records.iter().map(|r| r.reference).collect::<Vec<_>>())?;
        let texts: Vec<String> = records.iter().map(|r| r.condition.clone()).collect();
        let scores = super::query::scores(&ev.queries(&refs, &texts)?, &emb.features)?;
        total += records.len();
        groups.push((task.to_string(), task_metrics(&records, &scores, &emb.ok)));
    }
    if groups.is_empty() {
        return Err(Error::file(&paths.annotations, "no GeneCIS task annotations found"));
    }
    if groups.len() < TASKS.len() {
        notes.push(format!("mean over the {} tasks evaluated, not all four", groups.len()));
    }
    let mean: Vec<(String, f64)> = RECALL_KS
        .iter()
        .enumerate()
        .map(|(j, k)| (format!("R@{k}"), groups.iter().map(|(_, m)| m[j].1).sum::<f64>() / groups.len() as f64))
        .collect();
    groups.push(("mean".into(), mean));
    Ok(Report { dataset: "genecis".into(), split: "test".into(), mode: ev.mode_name().into(), groups, queries: total, skipped_images, skipped_queries, cached_images: ev.cached_images(), notes })
}
