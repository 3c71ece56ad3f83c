//! `lincir index`: embed a folder of images into an on-disk index (incremental).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lincir::clip::{Clip, Towers};

use crate::progress;

#[derive(Args)]
pub struct IndexArgs {
    #[command(flatten)]
    compute: crate::compute::ComputeArgs,
    /// CLIP model: a local Hugging Face directory or a hub id.
    #[arg(long)]
    model: String,
    /// The folder of images (walked recursively; links to folders followed, each folder once;
    /// hidden folders and files, `.thumbnails`, `@eaDir` and the like, left out and counted).
    #[arg(long)]
    images: PathBuf,
    /// The index folder (created, or updated: only new and changed images are embedded).
    #[arg(long)]
    out: PathBuf,
    /// Images per forward pass (default: 32 on the CPU, 256 on a GPU).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Leave unreadable images and folders out (listed) instead of stopping with an error.
    #[arg(long)]
    skip_bad_images: bool,
    /// Also write the run's report (counts, unreadable files, time) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// How JPEG files are decoded: `exact` (every pixel, as Pillow) or `fast` (a large JPEG
    /// decoded at 1/2 to 1/8 of its size inside libjpeg's inverse DCT, keeping at least 3 times
    /// the tower's input size: slightly different pixels, phone photos several times faster;
    /// docs/PREPROCESSING.md). Default: the index's own choice, `exact` for a new index.
    /// Searches decode their images as the index does.
    #[arg(long, value_enum)]
    jpeg_decode: Option<crate::pipeline::JpegDecodeArg>,
}

pub fn run(args: IndexArgs) -> Result<()> {
    if args.batch_size == Some(0) {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let jpeg = args.jpeg_decode.map(|asked| asked.decode(lincir::clip::preprocess::Pipeline::Transformers)).transpose()?;
    let mut clip = Clip::load(&args.model, &args.compute.load_options(Towers::Vision)?)?;
    if clip.device.is_cuda() && jpeg.is_none() && !args.out.join(lincir::index::META_FILE).is_file() {
        // A GPU embeds photos faster than the CPU threads decode them (docs/GPU.md).
        eprintln!("hint: on a GPU, decoding limits the rate of indexing photos: --jpeg-decode fast decodes a 12-megapixel JPEG about 3x faster (docs/PREPROCESSING.md)");
    }
    let started = std::time::Instant::now();
    let pb = progress::bar(0, "images");
    let batch_size = args.batch_size.unwrap_or_else(|| crate::compute::default_batch_size(&clip.device));
    let r = lincir::index::build(&mut clip, &args.images, &args.out, jpeg, batch_size, args.skip_bad_images, &|done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let embedded = r.added + r.updated;
    println!("| images | added | updated | removed | unchanged | unreadable | time | images/s |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.1} s | {} |",
        r.total,
        r.added,
        r.updated,
        r.removed,
        r.unchanged,
        r.failed.len(),
        secs,
        if embedded > 0 { format!("{:.1}", embedded as f64 / secs) } else { "-".into() }
    );
    if let Some(from) = &r.relocated_from {
        println!("the indexed folder moved from {} to {}: {} of its images found here unchanged", from.display(), args.images.display(), r.unchanged);
    }
    if r.moved > 0 {
        println!("{} of the unchanged images were moved to new folders (same name, size and time): their vectors and ids kept", r.moved);
    }
    if r.renamed > 0 {
        println!("{} of the unchanged images were renamed (same content, size and time): their vectors and ids kept", r.renamed);
    }
    if r.dates_read > 0 {
        println!("read when {} already indexed photos were taken (recorded from now on)", r.dates_read);
    }
    println!("{} of {} images say when they were taken (EXIF): search --taken-from/--taken-to", r.dated, r.total);
    if r.jpeg_decode == lincir::clip::preprocess::JpegDecode::Fast {
        println!("JPEGs decoded fast (at a reduced size), as this index records");
    }
    for (path, e) in &r.failed {
        println!("unreadable: {path}: {e}");
    }
    for u in &r.unreachable {
        // (An unreadable folder with nothing indexed under it is listed above already.)
        let listed = r.failed.iter().any(|(p, _)| p.trim_end_matches('/') == u.path);
        if u.kept > 0 || !listed {
            let kept = match u.kept {
                0 => "nothing under it was indexed before".to_string(),
                1 => "the 1 image indexed under it is kept as it was until it is back".to_string(),
                n => format!("the {n} images indexed under it are kept as they were until it is back"),
            };
            println!("not reachable: {}: {}; {kept}", u.path, u.why);
        }
    }
    if let Some(note) = lincir::embed::describe_hidden(r.hidden_folders, r.hidden_images) {
        println!("{note}");
    }
    if let Some(note) = lincir::embed::describe_unsupported(&r.unsupported) {
        println!("{note}");
    }
    if let Some(path) = &args.json {
        let mut json = serde_json::to_value(&r)?;
        json["seconds"] = serde_json::json!(secs);
        json["index"] = serde_json::json!(args.out.display().to_string());
        lincir::io::write_atomic(path, (serde_json::to_string_pretty(&json)? + "\n").as_bytes())?;
    }
    Ok(())
}
