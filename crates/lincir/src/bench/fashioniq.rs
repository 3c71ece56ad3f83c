//! FashionIQ: per category, the gallery is the category's split; each query has two captions,
//! combined as the official evaluation does; Recall@10 and @50 per category and their mean.
//!
//! Layout under the dataset root (`FashionIQ/`): `captions/cap.{category}.{split}.json`
//! (`candidate`, `target`, two `captions`), `image_splits/split.{category}.{split}.json` (names),
//! `images/{name}.jpg`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cirr::read_json;
use super::eval::{masked_scores, rows, Evaluator, Report};
use super::images::BenchImage;
use super::metrics::{rank_of, recall_at};
use crate::phi::l2_normalize;
use candle_core::Tensor;
use crate::{Error, Result};

pub const CATEGORIES: [&str; 3] = ["dress", "shirt", "toptee"];
pub const RECALL_KS: [usize; 2] = [10, 50];

pub struct FashionIqCategory {
    pub category: String,
    pub names: Vec<String>,
    pub images: Vec<BenchImage>,
    pub queries: Vec<FashionIqQuery>,
}

pub struct FashionIqQuery {
    pub reference: usize,
    pub target: usize,
    pub captions: [String; 2],
}

#[derive(Deserialize)]
struct RawQuery {
    candidate: String,
    target: String,
    captions: Vec<String>,
}

/// `path` itself or `path/FashionIQ`, whichever holds `captions/`.
pub fn find_root(path: &Path) -> Result<PathBuf> {
    for root in [path.to_path_buf(), path.join("FashionIQ")] {
        if root.join("captions").is_dir() && root.join("image_splits").is_dir() {
            return Ok(root);
        }
    }
    Err(Error::file(path, "not a FashionIQ dataset root: expected captions/, image_splits/ and images/ under it"))
}

/// The official caption cleaning: `.`, `?`, `,` and spaces stripped at both ends.
pub fn clean_caption(c: &str) -> String {
    c.trim_matches(|ch| matches!(ch, '.' | '?' | ',' | ' ')).to_string()
}

impl FashionIqCategory {
    pub fn load(path: &Path, category: &str, split: &str) -> Result<Self> {
        let root = find_root(path)?;
        let split_file = root.join(format!("image_splits/split.{category}.{split}.json"));
        let names: Vec<String> = read_json(&split_file)?;
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let captions_file = root.join(format!("captions/cap.{category}.{split}.json"));
        let raw: Vec<RawQuery> = read_json(&captions_file)?;
        let find = |name: &str, i: usize, what: &str| {
            index.get(name).copied().ok_or_else(|| {
                Error::file(&captions_file, format!("record {i}: {what} `{name}` is not in {}", split_file.display()))
            })
        };
        let queries = raw
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let [c1, c2]: [String; 2] = q
                    .captions
                    .try_into()
                    .map_err(|c: Vec<String>| Error::file(&captions_file, format!("record {i}: expected 2 captions, found {}", c.len())))?;
                Ok(FashionIqQuery { reference: find(&q.candidate, i, "candidate")?, target: find(&q.target, i, "target")?, captions: [c1, c2] })
            })
            .collect::<Result<Vec<_>>>()?;
        let images = names.iter().map(|n| BenchImage::file(root.join("images").join(format!("{n}.jpg")))).collect();
        Ok(FashionIqCategory { category: category.to_string(), names, images, queries })
    }
}

/// Recall@10 and @50 of one category from one score row per query over its gallery (the
/// reference is not removed, as in the official evaluation).
pub fn category_metrics(queries: &[&FashionIqQuery], scores: &[Vec<f32>]) -> Vec<(String, f64)> {
    let gallery: Vec<usize> = (0..scores.first().map_or(0, Vec::len)).collect();
    let ranks: Vec<Option<usize>> = queries.iter().zip(scores).map(|(q, row)| rank_of(row, &gallery, q.target, None)).collect();
    RECALL_KS.iter().map(|&k| (format!("R@{k}"), recall_at(&ranks, k))).collect()
}

/// Recall@10/50 per category and their means.
pub fn evaluate(ev: &Evaluator, path: &Path, split: &str) -> Result<Report> {
    let mut groups = Vec::new();
    let (mut total, mut skipped_images, mut skipped_queries) = (0, Vec::new(), 0);
    for category in CATEGORIES {
        let cat = FashionIqCategory::load(path, category, split)?;
        let gallery = ev.embed(&format!("FashionIQ {category}"), &cat.images)?;
        skipped_images.extend(gallery.skipped.iter().map(|(p, e)| format!("{}: {e}", p.display())));
        let queries: Vec<&FashionIqQuery> = cat.queries.iter().filter(|q| gallery.ok[q.reference]).collect();
        skipped_queries += cat.queries.len() - queries.len();
        let refs = rows(&gallery.features, &queries.iter().map(|q| q.reference).collect::<Vec<_>>())?;
        // The method's own texts: LinCIR and SEARLE average both caption orders, Pic2Word
        // encodes one (crate::method). Baselines use LinCIR's.
        let texts: Vec<Vec<String>> = queries.iter().map(|q| ev.method.fashioniq_texts(&q.captions[0], &q.captions[1])).collect();
        let n_orders = texts.first().map_or(1, Vec::len);
        let mut sum: Option<Tensor> = None;
        for order in 0..n_orders {
            let these: Vec<String> = texts.iter().map(|t| t[order].clone()).collect();
            let f = ev.queries(&refs, &these)?;
            sum = Some(match sum {
                None => f,
                Some(s) => (s + f)?,
            });
        }
        let q = l2_normalize(&(sum.expect("at least one order") / n_orders as f64)?)?;
        let scores = masked_scores(&q, &gallery)?;
        total += queries.len();
        groups.push((category.to_string(), category_metrics(&queries, &scores)));
    }
    let mean: Vec<(String, f64)> = RECALL_KS
        .iter()
        .enumerate()
        .map(|(j, k)| (format!("R@{k}"), groups.iter().map(|(_, m)| m[j].1).sum::<f64>() / groups.len() as f64))
        .collect();
    groups.push(("mean".to_string(), mean));
    Ok(Report {
        dataset: "fashioniq".into(),
        split: split.into(),
        mode: ev.mode_name().into(),
        groups,
        queries: total,
        skipped_images,
        skipped_queries,
        cached_images: ev.cached_images(),
        notes: vec![],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn captions_are_stripped_of_the_official_characters() {
        assert_eq!(super::clean_caption(" is red, . "), "is red");
        assert_eq!(super::clean_caption("?is it?"), "is it");
    }
}
