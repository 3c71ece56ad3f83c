//! `lincir embed`: texts or images -> safetensors of projected, un-normalised CLIP embeddings.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use lincir::clip::{Clip, Towers};
use lincir::embed;

use crate::progress;

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    compute: crate::compute::ComputeArgs,
    #[command(flatten)]
    pipeline: crate::pipeline::PipelineArgs,
    /// CLIP model: a local Hugging Face directory or a hub id (e.g. openai/clip-vit-large-patch14).
    #[arg(long)]
    model: String,
    /// A text file, one text per line (metadata `names` holds their 1-based line numbers).
    #[arg(long, conflicts_with = "images", required_unless_present = "images")]
    texts: Option<PathBuf>,
    /// Image files and/or directories (walked recursively, in sorted order).
    #[arg(long, num_args = 1.., required_unless_present = "texts")]
    images: Vec<PathBuf>,
    /// Output safetensors file: tensor `embeddings` [N, projection_dim] f32, metadata `names`.
    #[arg(long)]
    out: PathBuf,
    /// Texts or images per forward pass (default: 32 on the CPU, 256 on a GPU).
    #[arg(long)]
    batch_size: Option<usize>,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    if args.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    let towers = if args.texts.is_some() { Towers::Text } else { Towers::Vision };
    let mut clip = Clip::load(&args.model, &args.compute.load_options(towers)?)?;
    args.pipeline.apply(&mut clip)?;
    let batch_size = args.batch_size.unwrap_or_else(|| crate::compute::default_batch_size(&clip.device));
    let started = std::time::Instant::now();
    let (embeddings, names, kind) = if let Some(path) = &args.texts {
        let texts = embed::read_text_lines(path)?;
        if texts.is_empty() {
            bail!("{}: no texts (the file is empty)", path.display());
        }
        let pb = progress::bar(texts.len(), "texts");
        let e = embed::embed_texts(&clip, &texts, batch_size, &|n| pb.inc(n as u64))?;
        pb.finish_and_clear();
        let names: Vec<usize> = (1..=texts.len()).collect();
        (e, serde_json::json!(names), "text")
    } else {
        let paths = image_files(&args.images)?;
        let pb = progress::bar(paths.len(), "images");
        let e = embed::embed_image_files(&clip, &paths, batch_size, &|n| pb.inc(n as u64))?;
        pb.finish_and_clear();
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        (e, serde_json::json!(names), "image")
    };
    let n = embeddings.dim(0)?;
    let mut meta = vec![("model", clip.name.clone()), ("kind", kind.to_string())];
    if kind == "image" {
        meta.push(("preprocess", args.pipeline.preprocess.pipeline().name().to_string()));
        meta.push(("jpeg_decode", clip.preprocess.jpeg.name().to_string()));
    }
    embed::write_embeddings(&args.out, &embeddings, &names, &meta)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "embedded {n} {kind}s with {} in {secs:.1}s ({:.1}/s) -> {} [{n}, {}]",
        clip.name,
        n as f64 / secs.max(1e-9),
        args.out.display(),
        embeddings.dim(1)?
    );
    Ok(())
}

/// The image files under `inputs` (files and folders, walked in sorted order); photos in formats
/// this build cannot read are counted on stderr, and finding none is an error that says why.
pub fn image_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let walk = embed::walk_images(inputs)?;
    let unsupported = embed::describe_unsupported(&walk.unsupported);
    for note in embed::describe_broken_links(&walk.broken_links) {
        eprintln!("{note}");
    }
    if walk.images.is_empty() {
        let given: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        match unsupported {
            Some(note) => bail!("no image files lincir can read in {}; {note}", given.join(", ")),
            None => bail!("no image files found in {} (extensions: {})", given.join(", "), embed::image_extensions().join(", ")),
        }
    }
    for note in [embed::describe_hidden(walk.hidden_folders, walk.hidden_images), unsupported].into_iter().flatten() {
        eprintln!("{note}");
    }
    Ok(walk.images)
}
