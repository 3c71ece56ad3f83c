//! `lincir submit`: the files the CIRR and CIRCO evaluation servers accept.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use lincir::bench::{circo, cirr};

use crate::evaluator::ModelArgs;

#[derive(Clone, Copy, ValueEnum)]
pub enum ServerDataset {
    Cirr,
    Circo,
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, value_enum)]
    dataset: ServerDataset,
    /// Dataset root in its published layout.
    #[arg(long)]
    dataset_path: PathBuf,
    /// Split to rank (default: test1 for CIRR, test for CIRCO).
    #[arg(long)]
    split: Option<String>,
    /// Folder for the submission files.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: SubmitArgs) -> Result<()> {
    let mut loaded = args.model.load()?;
    let bars = crate::progress::Bars::default();
    let on_progress = |p: lincir::bench::eval::Progress<'_>| bars.drive(p);
    let several = loaded.runs.len() > 1;
    for i in 0..loaded.runs.len() {
        let (label, pipeline) = (loaded.runs[i].label.clone(), loaded.runs[i].pipeline);
        let ev = loaded.evaluator(i, &args.model, &on_progress)?;
        let shown = match pipeline {
            lincir::clip::preprocess::Pipeline::Transformers => label.clone(),
            other => format!("{label} ({} preprocessing)", other.name()),
        };
        // Several methods: one folder each, named after the method or baseline.
        let out = if several { args.out.join(&label) } else { args.out.clone() };
        std::fs::create_dir_all(&out).map_err(|e| lincir::Error::file(&out, e))?;
        let write = |name: &str, v: &serde_json::Value| -> Result<PathBuf> {
            let path = out.join(name);
            lincir::io::write_atomic(&path, (serde_json::to_string(v)? + "\n").as_bytes())?;
            Ok(path)
        };
        match args.dataset {
            ServerDataset::Cirr => {
                let split = args.split.clone().unwrap_or_else(|| "test1".into());
                let (recall, subset) = cirr::submission_files(&ev, &args.dataset_path, &split)?;
                let n = recall.as_object().map(|o| o.len() - 2).unwrap_or(0);
                let a = write(&format!("recall_submission_{split}.json"), &recall)?;
                let b = write(&format!("recall_subset_submission_{split}.json"), &subset)?;
                println!("{}: CIRR {split}: {n} queries -> {} and {}", shown, a.display(), b.display());
            }
            ServerDataset::Circo => {
                let split = args.split.clone().unwrap_or_else(|| "test".into());
                let v = circo::submission(&ev, &args.dataset_path, &split)?;
                let n = v.as_object().map(|o| o.len()).unwrap_or(0);
                let a = write(&format!("circo_{split}_submission.json"), &v)?;
                println!("{}: CIRCO {split}: {n} queries -> {}", shown, a.display());
            }
        }
        drop(ev);
        loaded.inverted.finish_and_clear();
    }
    Ok(())
}
