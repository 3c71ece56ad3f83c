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
    let bars = crate::progress::Bars::default();
    let on_progress = |p: lincir::bench::eval::Progress<'_>| bars.drive(p);
    let mut reports = Vec::new();
    for i in 0..loaded.runs.len() {
        let started = std::time::Instant::now();
        let (checkpoint, pipeline) = (loaded.runs[i].checkpoint.clone(), loaded.runs[i].pipeline);
        let ev = loaded.evaluator(i, &args.model, &on_progress)?;
        let report = match args.dataset {
            Dataset::Cirr => cirr::evaluate(&ev, &args.dataset_path, &args.split)?,
            Dataset::Fashioniq => fashioniq::evaluate(&ev, &args.dataset_path, &args.split)?,
            Dataset::Circo => circo::evaluate(&ev, &args.dataset_path, &args.split)?,
            Dataset::Genecis => genecis::evaluate(&ev, &genecis::GenecisPaths::new(&args.dataset_path, args.coco_dir.clone(), args.vg_dir.clone())?)?,
        };
        let mut json = report.to_json();
        json["phi"] = serde_json::json!(checkpoint);
        json["preprocess"] = serde_json::json!(pipeline.name());
        json["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
        reports.push((report, json));
        drop(ev);
        loaded.inverted.finish_and_clear();
    }
    let first = &reports[0].0;
    // Which transform made each row's pixels, when it is not transformers' for all of them.
    if loaded.runs.iter().any(|r| r.pipeline != lincir::clip::preprocess::Pipeline::Transformers) {
        let pipelines: Vec<String> = loaded.runs.iter().map(|r| format!("{} {}", r.label, r.pipeline.name())).collect();
        println!("image preprocessing: {}", pipelines.join(", "));
    }
    if reports.len() == 1 {
        println!("{} {} ({} queries), {}", first.dataset, first.split, first.queries, first.mode);
        print!("{}", first.table());
    } else {
        let names: Vec<&str> = reports.iter().map(|(r, _)| r.mode.as_str()).collect();
        println!("{} {} ({} queries), {}", first.dataset, first.split, first.queries, names.join(", "));
        print!("{}", lincir::bench::eval::comparison_table(&reports.iter().map(|(r, _)| r).collect::<Vec<_>>()));
    }
    for n in &first.notes {
        println!("note: {n}");
    }
    if first.skipped_queries > 0 || !first.skipped_images.is_empty() {
        println!("skipped: {} unreadable images, {} queries without their reference", first.skipped_images.len(), first.skipped_queries);
    }
    if let Some(path) = &args.json {
        let mut json = if reports.len() == 1 {
            reports.pop().expect("one report").1
        } else {
            serde_json::json!({"dataset": first.dataset, "split": first.split, "runs": reports.iter().map(|(_, j)| j.clone()).collect::<Vec<_>>()})
        };
        json["model"] = serde_json::json!(args.model.model);
        lincir::io::write_atomic(path, (serde_json::to_string_pretty(&json)? + "\n").as_bytes())?;
    }
    Ok(())
}
