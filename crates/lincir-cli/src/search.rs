//! `lincir search`: one composed (or image-only, or text-only) query against an index.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use lincir::clip::{preprocess, Clip};
use lincir::index::Index;
use lincir::phi::Phi;
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
    /// phi checkpoint (lincir safetensors or official .pt; a file or `owner/repo/file` on the
    /// hub); needed for image + text queries.
    #[arg(long)]
    pub phi: Option<String>,
    /// Composed-query template: `{}` is the text, `$` the image.
    #[arg(long, default_value = lincir::prompt::QUERY_TEMPLATE)]
    pub template: String,
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
}

/// Loads the model (both towers), phi and the index, checking they fit together.
pub fn load_searcher(a: &SearcherArgs) -> Result<Searcher> {
    let (phi, template) = (a.phi.as_ref(), a.template.as_str());
    let index = Index::open(&a.index)?;
    let model = a.model.clone().unwrap_or_else(|| index.meta.model.clone());
    let clip = Clip::load(&model, &a.compute.load_options(lincir::clip::Towers::Both)?)?;
    let phi = match phi {
        Some(p) => {
            let t = clip.text()?;
            Some(Phi::load_for(&Phi::resolve(p)?, t.projection_dim(), t.width(), &clip.device)?)
        }
        None => None,
    };
    if !template.contains("{}") || !template.split_whitespace().any(|w| w == "$") {
        bail!("--template must contain `{{}}` for the text and a `$` word for the image");
    }
    let mut s = Searcher::new(clip, phi, index)?;
    s.template = template.to_string();
    Ok(s)
}

pub fn run(args: SearchArgs) -> Result<()> {
    let s = load_searcher(&args.searcher)?;
    let reference = match (&args.image, args.id) {
        (Some(p), _) => Some(Reference::Pixels(preprocess::load_rgb8(p)?)),
        (None, Some(id)) => Some(Reference::Indexed(id)),
        (None, None) => None,
    };
    let r = s.search(&Query { reference, text: args.text.clone(), k: args.k })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if let Some(sentence) = &r.sentence {
        println!("query ({:?}): {sentence}", r.mode);
    }
    println!("| rank | id | score | path |");
    println!("|---|---|---|---|");
    for (i, h) in r.hits.iter().enumerate() {
        println!("| {} | {} | {:.4} | {} |", i + 1, h.id, h.score, h.path);
    }
    println!("encode {:.1} ms, rank {:.1} ms over {} images", r.encode_ms, r.rank_ms, s.index.len());
    Ok(())
}
