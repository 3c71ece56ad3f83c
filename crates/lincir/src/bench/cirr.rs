//! CIRR: the reader for its published layout, the metrics (Recall@K with the reference removed,
//! subset Recall@K within the query's image set) and the evaluation server's submission files.
//!
//! Layout under the dataset root (`CIRR/`): `cirr/captions/cap.rc2.{split}.json`,
//! `cirr/image_splits/split.rc2.{split}.json` (image name -> path relative to the root).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::metrics::{rank_of, ranking, recall_at};
use crate::{Error, Result};

pub const RECALL_KS: [usize; 4] = [1, 5, 10, 50];
pub const SUBSET_KS: [usize; 3] = [1, 2, 3];

#[derive(Debug, Clone)]
pub struct CirrQuery {
    pub pair_id: i64,
    pub caption: String,
    /// Gallery index of the reference image.
    pub reference: usize,
    /// Gallery index of `target_hard` (absent on the test split).
    pub target: Option<usize>,
    /// Gallery indices of `img_set.members`.
    pub members: Vec<usize>,
}

pub struct CirrSplit {
    pub root: PathBuf,
    pub split: String,
    /// Gallery image names, sorted, and their files.
    pub names: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub queries: Vec<CirrQuery>,
}

#[derive(Deserialize)]
struct RawQuery {
    pairid: i64,
    reference: String,
    caption: String,
    target_hard: Option<String>,
    img_set: RawImgSet,
}

#[derive(Deserialize)]
struct RawImgSet {
    members: Vec<String>,
}

impl CirrSplit {
    /// Finds the dataset root: `path` itself or `path/CIRR`, whichever holds `cirr/captions`.
    pub fn find_root(path: &Path) -> Result<PathBuf> {
        for root in [path.to_path_buf(), path.join("CIRR")] {
            if root.join("cirr/captions").is_dir() {
                return Ok(root);
            }
        }
        Err(Error::file(path, "not a CIRR dataset root: expected cirr/captions/ and cirr/image_splits/ under it"))
    }

    pub fn load(path: &Path, split: &str) -> Result<Self> {
        let root = Self::find_root(path)?;
        let split_file = root.join(format!("cirr/image_splits/split.rc2.{split}.json"));
        let images: HashMap<String, String> = read_json(&split_file)?;
        let mut names: Vec<String> = images.keys().cloned().collect();
        names.sort();
        let paths = names.iter().map(|n| root.join(&images[n])).collect();
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();

        let captions_file = root.join(format!("cirr/captions/cap.rc2.{split}.json"));
        let raw: Vec<RawQuery> = read_json(&captions_file)?;
        let find = |name: &str, what: &str, pair: i64| -> Result<usize> {
            index.get(name).copied().ok_or_else(|| {
                Error::file(&captions_file, format!("pair {pair}: {what} `{name}` is not in {}", split_file.display()))
            })
        };
        let queries = raw
            .into_iter()
            .map(|q| {
                Ok(CirrQuery {
                    pair_id: q.pairid,
                    reference: find(&q.reference, "reference", q.pairid)?,
                    target: q.target_hard.as_deref().map(|t| find(t, "target", q.pairid)).transpose()?,
                    members: q.img_set.members.iter().map(|m| find(m, "image-set member", q.pairid)).collect::<Result<_>>()?,
                    caption: q.caption,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CirrSplit { root, split: split.to_string(), names, paths, queries })
    }

    pub fn captions(&self) -> Vec<String> {
        self.queries.iter().map(|q| q.caption.clone()).collect()
    }

    pub fn reference_indices(&self) -> Vec<usize> {
        self.queries.iter().map(|q| q.reference).collect()
    }
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("malformed annotation file: {e}")))
}

/// CIRR's metrics, percentages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CirrMetrics {
    /// (k, Recall@k) over the whole gallery, reference removed.
    pub recall: Vec<(usize, f64)>,
    /// (k, Recall_subset@k) within the image set, reference removed.
    pub recall_subset: Vec<(usize, f64)>,
    pub queries: usize,
}

impl CirrMetrics {
    pub fn recall_at(&self, k: usize) -> Option<f64> {
        self.recall.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v)
    }
}

/// Metrics of one score row per query (over the split's gallery). Queries need targets.
pub fn metrics(split: &CirrSplit, scores: &[Vec<f32>]) -> Result<CirrMetrics> {
    let all: Vec<usize> = (0..split.names.len()).collect();
    let mut ranks = Vec::new();
    let mut subset_ranks = Vec::new();
    for (q, row) in split.queries.iter().zip(scores) {
        let target = q.target.ok_or_else(|| Error::Invalid(format!("pair {} has no target: the {} split has no ground truth", q.pair_id, split.split)))?;
        ranks.push(rank_of(row, &all, target, Some(q.reference)));
        subset_ranks.push(rank_of(row, &q.members, target, Some(q.reference)));
    }
    Ok(CirrMetrics {
        recall: RECALL_KS.iter().map(|&k| (k, recall_at(&ranks, k))).collect(),
        recall_subset: SUBSET_KS.iter().map(|&k| (k, recall_at(&subset_ranks, k))).collect(),
        queries: ranks.len(),
    })
}

/// The two files of the CIRR evaluation server: `recall` (top 50 names per pair) and
/// `recall_subset` (top 3 names within the image set), version rc2, reference removed.
pub fn submission(split: &CirrSplit, scores: &[Vec<f32>]) -> (serde_json::Value, serde_json::Value) {
    let mut recall = serde_json::Map::new();
    let mut subset = serde_json::Map::new();
    for m in [&mut recall, &mut subset] {
        m.insert("version".into(), "rc2".into());
    }
    recall.insert("metric".into(), "recall".into());
    subset.insert("metric".into(), "recall_subset".into());
    for (q, row) in split.queries.iter().zip(scores) {
        let names = |order: Vec<usize>, n: usize| -> serde_json::Value {
            order.into_iter().filter(|&i| i != q.reference).take(n).map(|i| split.names[i].clone()).collect()
        };
        recall.insert(q.pair_id.to_string(), names(ranking(row), 50));
        let mut members: Vec<usize> = q.members.clone();
        // Stable: ties keep the image-set order.
        members.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        subset.insert(q.pair_id.to_string(), names(members, 3));
    }
    (recall.into(), subset.into())
}

/// Score rows of the queries that could be ranked, their indices in the split, and the
/// unreadable images.
struct Scored {
    scores: Vec<Vec<f32>>,
    kept: Vec<usize>,
    skipped_images: Vec<String>,
}

/// Scores of every query of a split against its gallery, with the queries whose reference could
/// not be read left out (and counted).
fn split_scores(ev: &super::eval::Evaluator, split: &CirrSplit) -> Result<Scored> {
    use super::eval::{masked_scores, rows};
    let images: Vec<super::images::BenchImage> = split.paths.iter().cloned().map(super::images::BenchImage::file).collect();
    let gallery = ev.embed(&format!("CIRR {}", split.split), &images)?;
    let skipped = gallery.skipped.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
    let kept: Vec<usize> = (0..split.queries.len()).filter(|&i| gallery.ok[split.queries[i].reference]).collect();
    let refs = rows(&gallery.features, &kept.iter().map(|&i| split.queries[i].reference).collect::<Vec<_>>())?;
    let texts: Vec<String> = kept.iter().map(|&i| split.queries[i].caption.clone()).collect();
    Ok(Scored { scores: masked_scores(&ev.queries(&refs, &texts)?, &gallery)?, kept, skipped_images: skipped })
}

/// Recall@1/5/10/50 and subset Recall@1/2/3 of a split with ground truth.
pub fn evaluate(ev: &super::eval::Evaluator, path: &Path, split_name: &str) -> Result<super::eval::Report> {
    let mut split = CirrSplit::load(path, split_name)?;
    if split.queries.iter().any(|q| q.target.is_none()) {
        return Err(Error::Invalid(format!("CIRR {split_name} has no ground truth: use `lincir submit` for the test split")));
    }
    let Scored { scores, kept, skipped_images } = split_scores(ev, &split)?;
    let total = split.queries.len();
    // The metrics are over the queries that could be ranked (the others are counted as skipped).
    split.queries = kept.iter().map(|&i| split.queries[i].clone()).collect();
    let m = metrics(&split, &scores)?;
    let group: Vec<(String, f64)> =
        m.recall.iter().map(|(k, v)| (format!("R@{k}"), *v)).chain(m.recall_subset.iter().map(|(k, v)| (format!("Rs@{k}"), *v))).collect();
    Ok(super::eval::Report {
        dataset: "cirr".into(),
        split: split_name.into(),
        mode: ev.mode_name().into(),
        groups: vec![("all".into(), group)],
        queries: m.queries,
        skipped_images,
        skipped_queries: total - m.queries,
        cached_images: ev.cached_images(),
        notes: vec![],
    })
}

/// The two submission files of a split (`recall`, `recall_subset`).
pub fn submission_files(ev: &super::eval::Evaluator, path: &Path, split_name: &str) -> Result<(serde_json::Value, serde_json::Value)> {
    let split = CirrSplit::load(path, split_name)?;
    let Scored { scores, kept, .. } = split_scores(ev, &split)?;
    if kept.len() != split.queries.len() {
        return Err(Error::Invalid("a submission needs every query: some reference images could not be read".into()));
    }
    Ok(submission(&split, &scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(queries: Vec<CirrQuery>) -> CirrSplit {
        let names: Vec<String> = (0..5).map(|i| format!("img{i}")).collect();
        CirrSplit { root: PathBuf::new(), split: "val".into(), paths: vec![PathBuf::new(); 5], names, queries }
    }

    #[test]
    fn the_reference_is_removed_even_when_it_ranks_first() {
        // scores: the reference (0) is best, then the target (3), then the rest.
        let q = CirrQuery { pair_id: 7, caption: String::new(), reference: 0, target: Some(3), members: vec![4, 0, 3, 2] };
        let s = split(vec![q]);
        let scores = vec![vec![0.9, 0.1, 0.2, 0.8, 0.8]];
        let m = metrics(&s, &scores).unwrap();
        // Whole gallery without the reference: 3 and 4 tie at 0.8, 3 comes first (gallery order).
        assert_eq!(m.recall_at(1), Some(100.0));
        // Subset [4, 0, 3, 2] without the reference: 4 and 3 tie, 4 is listed first -> rank 1.
        assert_eq!(m.recall_subset, vec![(1, 0.0), (2, 100.0), (3, 100.0)]);
        let (recall, subset) = submission(&s, &scores);
        assert_eq!(recall["7"], serde_json::json!(["img3", "img4", "img2", "img1"]));
        assert_eq!(subset["7"], serde_json::json!(["img4", "img3", "img2"]));
        assert_eq!((recall["version"].as_str(), recall["metric"].as_str()), (Some("rc2"), Some("recall")));
        assert_eq!(subset["metric"], "recall_subset");
    }

    #[test]
    fn a_split_without_targets_has_no_metrics() {
        let q = CirrQuery { pair_id: 1, caption: String::new(), reference: 0, target: None, members: vec![] };
        assert!(metrics(&split(vec![q]), &[vec![0.0; 5]]).unwrap_err().to_string().contains("no target"));
    }
}
