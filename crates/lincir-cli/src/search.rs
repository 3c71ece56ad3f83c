//! `lincir search`: one composed (or image-only, or text-only) query against an index.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use lincir::clip::{preprocess, Clip};
use lincir::index::Index;
use lincir::search::{Query, Reference, Searcher};

/// What `search` and `serve` load: an index, its model, phi, the query template.
#[derive(Args)]
pub struct SearcherArgs {
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
    /// The index folder (from `lincir index`).
    #[arg(long)]
    pub index: PathBuf,
    /// CLIP model (default: the one the index was built with).
    #[arg(long)]
    pub model: Option<String>,
    /// Pseudo-word network, `[METHOD=]CHECKPOINT` (METHOD: lincir, searle, pic2word; as in
    /// `eval --phi`), repeatable: several methods can be loaded and chosen per query, the first is
    /// the default. Needed for image + text queries.
    #[arg(long)]
    pub phi: Vec<String>,
    /// Composed-query template for the methods whose placeholder is `$` (LinCIR, SEARLE): `{}`
    /// is the text, `$` the image (default: the method's own, `a photo of $ that {}`).
    #[arg(long)]
    pub template: Option<String>,
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    searcher: SearcherArgs,
    /// Reference image file.
    #[arg(long, conflicts_with = "id")]
    image: Option<PathBuf>,
    /// Reference image by its id in the index.
    #[arg(long)]
    id: Option<usize>,
    /// The modification ("is red and bigger"), or a sentence with `$` for the image.
    #[arg(long)]
    text: Option<String>,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The method of a composed query, when several are loaded (default: the first --phi).
    #[arg(long)]
    method: Option<String>,
    /// Only images in this folder of the indexed one (relative to it, subfolders included).
    #[arg(long)]
    folder: Option<String>,
    /// Only photos taken from this date on (`2023`, `2023-07`, `2023-07-14`, `2023-07-14T18:03`;
    /// from their EXIF data): photos without a date are left out.
    #[arg(long)]
    taken_from: Option<String>,
    /// Only photos taken up to this date, included at the precision written (`2023-08`: all of
    /// August).
    #[arg(long)]
    taken_to: Option<String>,
    /// Let the reference (`--id`) be among the results; it is left out by default.
    #[arg(long)]
    keep_reference: bool,
}

/// Loads the model (both towers), phi and the index, checking they fit together.
pub fn load_searcher(a: &SearcherArgs) -> Result<Searcher> {
    let index = Index::open(&a.index)?;
    let model = a.model.clone().unwrap_or_else(|| index.meta.model.clone());
    let clip = Clip::load(&model, &a.compute.load_options(lincir::clip::Towers::Both)?)?;
    let methods = crate::evaluator::load_methods(&a.phi, &clip)?.into_iter().map(|(m, mapper, _)| (m, mapper)).collect();
    if let Some(t) = &a.template {
        if !t.contains("{}") || !t.split_whitespace().any(|w| w == "$") {
            bail!("--template must contain `{{}}` for the text and a `$` word for the image");
        }
    }
    let mut s = Searcher::new(clip, methods, index)?;
    s.template = a.template.clone();
    Ok(s)
}

pub fn run(args: SearchArgs) -> Result<()> {
    let s = load_searcher(&args.searcher)?;
    let reference = match (&args.image, args.id) {
        // A file of the index, unchanged since: its stored vector, and left out of the results
        // as an id is.
        (Some(p), _) => match s.index().id_of_file(p) {
            Some(id) => Some(Reference::Indexed(id)),
            None => Some(Reference::Pixels(preprocess::load_rgb8_for(p, &s.clip.preprocess)?)),
        },
        (None, Some(id)) => Some(Reference::Indexed(id)),
        (None, None) => None,
    };
    let r = s.search(&Query { reference, text: args.text.clone(), k: args.k, method: args.method.clone(), folder: args.folder.clone(), taken_from: args.taken_from.clone(), taken_to: args.taken_to.clone(), keep_reference: args.keep_reference })?;
    let index = s.index();
    let root = index.meta.root.display().to_string();
    if args.json {
        // Hits' paths are relative to the indexed folder, given once.
        let mut json = serde_json::to_value(&r)?;
        json["root"] = serde_json::json!(root);
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if let Some(sentence) = &r.sentence {
        match r.method {
            Some(m) => println!("query ({:?}, {m}): {sentence}", r.mode),
            None => println!("query ({:?}): {sentence}", r.mode),
        }
    }
    println!("| rank | id | score | path | taken |");
    println!("|---|---|---|---|---|");
    for (i, h) in r.hits.iter().enumerate() {
        println!("| {} | {} | {:.4} | {} | {} |", i + 1, h.id, h.score, h.path, h.taken.as_deref().unwrap_or(""));
    }
    let folder = args.folder.as_deref().map(|f| format!(" (folder {f})")).unwrap_or_default();
    println!("encode {:.1} ms, rank {:.1} ms over {} images in {root}{folder}", r.encode_ms, r.rank_ms, r.ranked);
    Ok(())
}
