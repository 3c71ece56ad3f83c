//! `lincir eval`: zero-shot composed retrieval metrics on a benchmark.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Tensor;
use clap::{Args, ValueEnum};
use lincir::bench::{cirr, query};
use lincir::clip::{Clip, LoadOptions};
use lincir::phi::Phi;

use crate::progress;

#[derive(Clone, Copy, ValueEnum)]
pub enum Dataset {
    Cirr,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Baseline {
    Image,
    Text,
    Sum,
}

#[derive(Args)]
pub struct EvalArgs {
    /// CLIP model: a local Hugging Face directory or a hub id.
    #[arg(long)]
    model: String,
    /// phi checkpoint: lincir safetensors or an official .pt (not needed with --baseline).
    #[arg(long, required_unless_present = "baseline")]
    phi: Option<PathBuf>,
    #[arg(long, value_enum)]
    dataset: Dataset,
    /// Dataset root (for CIRR: the folder holding cirr/ and the image folders).
    #[arg(long)]
    dataset_path: PathBuf,
    #[arg(long, default_value = "val")]
    split: String,
    /// Evaluate a query without phi instead: the image, the text, or their normalised sum.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// Images or queries per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Also write the metrics as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let clip = Clip::load(&args.model, &LoadOptions::default())?;
    let mode = match args.baseline {
        None => query::QueryMode::Composed,
        Some(Baseline::Image) => query::QueryMode::Image,
        Some(Baseline::Text) => query::QueryMode::Text,
        Some(Baseline::Sum) => query::QueryMode::Sum,
    };
    let phi = match (&args.phi, mode) {
        (Some(p), query::QueryMode::Composed) => {
            let text = clip.text()?;
            Some(Phi::load_for(p, text.projection_dim(), text.width(), &clip.device)?)
        }
        _ => None,
    };
    let Dataset::Cirr = args.dataset;
    let split = cirr::CirrSplit::load(&args.dataset_path, &args.split)?;
    let pb = progress::bar(split.paths.len(), "images");
    let gallery = lincir::embed::embed_image_files(&clip, &split.paths, args.batch_size, &|n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let idx: Vec<u32> = split.reference_indices().iter().map(|&i| i as u32).collect();
    let references = gallery.index_select(&Tensor::from_vec(idx, split.queries.len(), &clip.device)?, 0)?;
    let started = std::time::Instant::now();
    let q = query::query_features(&clip, phi.as_ref(), mode, &references, &split.captions(), args.batch_size)?;
    let scores = query::scores(&q, &gallery)?;
    let m = cirr::metrics(&split, &scores)?;
    let query_secs = started.elapsed().as_secs_f64();

    println!("CIRR {} ({} queries, {} images), {}", args.split, m.queries, split.names.len(), mode.name());
    let cells: Vec<String> = m.recall.iter().map(|(k, _)| format!("R@{k}")).chain(m.recall_subset.iter().map(|(k, _)| format!("Rs@{k}"))).collect();
    println!("| {} |", cells.join(" | "));
    println!("|{}", "---|".repeat(cells.len()));
    let values: Vec<String> = m.recall.iter().chain(&m.recall_subset).map(|(_, v)| format!("{v:.2}")).collect();
    println!("| {} |", values.join(" | "));
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "dataset": "cirr", "split": args.split, "model": args.model, "mode": mode.name(),
            "phi": args.phi.as_ref().map(|p| p.display().to_string()),
            "recall": m.recall.iter().map(|(k, v)| (format!("R@{k}"), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "recall_subset": m.recall_subset.iter().map(|(k, v)| (format!("Rs@{k}"), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "queries": m.queries,
            "query_seconds": query_secs,
        });
        lincir::io::write_atomic(path, (serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    }
    Ok(())
}
