//! What every benchmark evaluation shares: the model, phi or a baseline, the feature cache, bad
//! image handling, progress, and a report that prints as a table and serialises as JSON.

use candle_core::Tensor;
use serde::Serialize;

use super::cache::FeatureCache;
use super::images::{embed_images, BadImages, BenchImage, Embedded};
use super::query::{self, QueryMode};
use crate::clip::Clip;
use crate::mapper::PseudoWordNet;
use crate::method::Method;
use crate::Result;

/// Progress of the long parts (embedding galleries).
pub enum Progress<'a> {
    Start { what: &'a str, total: usize },
    Advance(usize),
    Done,
}

pub struct Evaluator<'a> {
    pub clip: &'a Clip,
    /// The pseudo-word network (phi, a peer method's, or SEARLE-OTI's inverter) for composed
    /// queries.
    pub phi: Option<Box<dyn PseudoWordNet + 'a>>,
    /// The row's name when it is not the method's (SEARLE-OTI: `searle-oti`).
    pub label: Option<&'static str>,
    /// How composed queries are built (template, placeholder).
    pub method: Method,
    pub mode: QueryMode,
    pub cache: Option<FeatureCache>,
    pub batch_size: usize,
    pub bad_images: BadImages,
    pub on_progress: &'a (dyn Fn(Progress) + Sync),
    /// Images served from the cache so far (reported).
    pub cached: std::sync::atomic::AtomicUsize,
}

impl Evaluator<'_> {
    /// Image embeddings (through the cache), with unreadable images failing or counted.
    pub fn embed(&self, what: &str, images: &[BenchImage]) -> Result<Embedded> {
        (self.on_progress)(Progress::Start { what, total: images.len() });
        let e = embed_images(self.clip, self.cache.as_ref(), images, self.batch_size, self.bad_images, &|n| {
            (self.on_progress)(Progress::Advance(n))
        });
        (self.on_progress)(Progress::Done);
        if let Ok(e) = &e {
            self.cached.fetch_add(e.cached, std::sync::atomic::Ordering::Relaxed);
        }
        e
    }

    pub fn cached_images(&self) -> usize {
        self.cached.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// L2-normalised query features for reference embeddings and modification texts.
    ///
    /// # Shapes
    /// references: [n, P] -> [n, P]
    pub fn queries(&self, references: &Tensor, texts: &[String]) -> Result<Tensor> {
        query::query_features(self.clip, self.phi.as_deref(), self.method, self.mode, references, texts, self.batch_size)
    }

    /// The name of what is evaluated: the method for composed queries, else the baseline.
    pub fn mode_name(&self) -> &'static str {
        if let Some(label) = self.label {
            return label;
        }
        match self.mode {
            QueryMode::Composed => self.method.name(),
            other => other.name(),
        }
    }
}

/// Rows of `features` at `indices`.
pub fn rows(features: &Tensor, indices: &[usize]) -> Result<Tensor> {
    let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
    let n = idx.len();
    Ok(features.index_select(&Tensor::from_vec(idx, n, features.device())?, 0)?)
}

/// Scores with unreadable gallery images pushed to the end of every ranking.
pub fn masked_scores(queries: &Tensor, gallery: &Embedded) -> Result<Vec<Vec<f32>>> {
    let mut s = query::scores(queries, &gallery.features)?;
    if gallery.ok.iter().any(|ok| !ok) {
        for row in &mut s {
            for (v, ok) in row.iter_mut().zip(&gallery.ok) {
                if !ok {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
    }
    Ok(s)
}

/// One evaluation's outcome: named metric groups (printed as a table), plus what was left out.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub split: String,
    pub mode: String,
    /// (group, [(metric, value in %)]), e.g. ("dress", [("R@10", 25.1), ...]).
    pub groups: Vec<(String, Vec<(String, f64)>)>,
    pub queries: usize,
    pub skipped_images: Vec<String>,
    pub skipped_queries: usize,
    /// Gallery images whose embedding came from the feature cache.
    pub cached_images: usize,
    pub notes: Vec<String>,
}

impl Report {
    /// Markdown tables: one row per group, groups with the same metric names in one table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut header: Option<Vec<&str>> = None;
        for (group, metrics) in &self.groups {
            let names: Vec<&str> = metrics.iter().map(|(n, _)| n.as_str()).collect();
            if header.as_ref() != Some(&names) {
                if header.is_some() {
                    out.push('\n');
                }
                out += &format!("| | {} |\n|---|{}\n", names.join(" | "), "---|".repeat(names.len()));
                header = Some(names);
            }
            let cells: Vec<String> = metrics.iter().map(|(_, v)| format!("{v:.2}")).collect();
            out += &format!("| {group} | {} |\n", cells.join(" | "));
        }
        out
    }

    /// JSON with metrics as `{group: {metric: value}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let metrics: serde_json::Map<String, serde_json::Value> = self
            .groups
            .iter()
            .map(|(g, m)| (g.clone(), m.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>().into()))
            .collect();
        serde_json::json!({
            "dataset": self.dataset, "split": self.split, "mode": self.mode, "metrics": metrics,
            "queries": self.queries, "skipped_images": self.skipped_images,
            "skipped_queries": self.skipped_queries, "cached_images": self.cached_images, "notes": self.notes,
        })
    }
}

/// Several evaluations of one benchmark side by side: for each metric group of the first report,
/// one table with a row per report (its mode: method or baseline).
pub fn comparison_table(reports: &[&Report]) -> String {
    let mut out = String::new();
    let Some(first) = reports.first() else { return out };
    for (g, (group, metrics)) in first.groups.iter().enumerate() {
        let names: Vec<&str> = metrics.iter().map(|(n, _)| n.as_str()).collect();
        if g > 0 {
            out.push('\n');
        }
        out += &format!("| {group} | {} |\n|---|{}\n", names.join(" | "), "---|".repeat(names.len()));
        for r in reports {
            let row = r.groups.iter().find(|(gr, _)| gr == group);
            let cells: Vec<String> = names
                .iter()
                .map(|n| row.and_then(|(_, m)| m.iter().find(|(k, _)| k == n)).map_or("-".into(), |(_, v)| format!("{v:.2}")))
                .collect();
            out += &format!("| {} | {} |\n", r.mode, cells.join(" | "));
        }
    }
    out
}
