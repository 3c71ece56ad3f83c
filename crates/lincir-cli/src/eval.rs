//! `lincir eval`: zero-shot composed retrieval metrics on a benchmark, as a table and JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use lincir::bench::{circo, cirr, fashioniq, genecis};

use crate::evaluator::ModelArgs;

#[derive(Clone, Copy, ValueEnum)]
pub enum Dataset {
    Cirr,
    Fashioniq,
    Circo,
    Genecis,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, value_enum)]
    dataset: Dataset,
    /// Dataset root in its published layout (see README: CIRR/, FashionIQ/, the parent of CIRCO/
    /// and COCO2017_unlabeled/, the folder holding genecis/).
    #[arg(long)]
    dataset_path: PathBuf,
    /// Split with ground truth (CIRR, FashionIQ, CIRCO: val).
    #[arg(long, default_value = "val")]
    split: String,
    /// GeneCIS object tasks: the COCO val2017 image folder (default DATASET_PATH/coco2017/val2017).
    #[arg(long)]
    coco_dir: Option<PathBuf>,
    /// GeneCIS attribute tasks: the Visual Genome image folder (default DATASET_PATH/Visual_Genome/VG_All).
    #[arg(long)]
    vg_dir: Option<PathBuf>,
    /// Also write the metrics as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let mut loaded = args.model.load()?;
    let started = std::time::Instant::now();
    let bars = crate::progress::Bars::default();
    let on_progress = |p: lincir::bench::eval::Progress<'_>| bars.drive(p);
    let report = {
        let ev = loaded.evaluator(&args.model, &on_progress);
        match args.dataset {
            Dataset::Cirr => cirr::evaluate(&ev, &args.dataset_path, &args.split)?,
            Dataset::Fashioniq => fashioniq::evaluate(&ev, &args.dataset_path, &args.split)?,
            Dataset::Circo => circo::evaluate(&ev, &args.dataset_path, &args.split)?,
            Dataset::Genecis => genecis::evaluate(&ev, &genecis::GenecisPaths::new(&args.dataset_path, args.coco_dir.clone(), args.vg_dir.clone())?)?,
        }
    };
    let secs = started.elapsed().as_secs_f64();
    println!("{} {} ({} queries), {}", report.dataset, report.split, report.queries, report.mode);
    print!("{}", report.table());
    for n in &report.notes {
        println!("note: {n}");
    }
    if report.skipped_queries > 0 || !report.skipped_images.is_empty() {
        println!("skipped: {} unreadable images, {} queries without their reference", report.skipped_images.len(), report.skipped_queries);
    }
    if let Some(path) = &args.json {
        let mut json = report.to_json();
        json["model"] = serde_json::json!(args.model.model);
        json["phi"] = serde_json::json!(args.model.phi);
        json["seconds"] = serde_json::json!(secs);
        lincir::io::write_atomic(path, (serde_json::to_string_pretty(&json)? + "\n").as_bytes())?;
    }
    Ok(())
}
