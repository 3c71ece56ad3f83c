//! Options shared by `eval` and `submit`: model, phi or baseline, feature cache, bad images.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use lincir::bench::cache::{default_root, FeatureCache};
use lincir::bench::eval::{Evaluator, Progress};
use lincir::bench::images::BadImages;
use lincir::bench::query::QueryMode;
use lincir::clip::{Clip, LoadOptions};
use lincir::phi::Phi;

#[derive(Clone, Copy, ValueEnum)]
pub enum Baseline {
    Image,
    Text,
    Sum,
}

#[derive(Args)]
pub struct ModelArgs {
    /// CLIP model: a local Hugging Face directory or a hub id.
    #[arg(long)]
    pub model: String,
    /// phi checkpoint: lincir safetensors or an official .pt, a file or `owner/repo/file` on the
    /// hub (e.g. navervision/zeroshot-cir-models/lincir_large.pt); not needed with --baseline.
    #[arg(long, required_unless_present = "baseline")]
    pub phi: Option<String>,
    /// Rank without phi instead: by the reference image, the text, or their normalised sum.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Images or queries per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Where gallery embeddings are cached (default: $LINCIR_CACHE, else ~/.cache/lincir).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the feature cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Leave unreadable images out (counted and listed) instead of stopping with an error.
    #[arg(long)]
    pub skip_bad_images: bool,
}

pub struct Loaded {
    pub clip: Clip,
    pub phi: Option<Phi>,
    pub mode: QueryMode,
    pub cache: Option<FeatureCache>,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Loaded> {
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let clip = Clip::load(&self.model, &LoadOptions::default())?;
        let mode = match self.baseline {
            None => QueryMode::Composed,
            Some(Baseline::Image) => QueryMode::Image,
            Some(Baseline::Text) => QueryMode::Text,
            Some(Baseline::Sum) => QueryMode::Sum,
        };
        let phi = match (&self.phi, mode) {
            (Some(p), QueryMode::Composed) => {
                let text = clip.text()?;
                Some(Phi::load_for(&Phi::resolve(p)?, text.projection_dim(), text.width(), &clip.device)?)
            }
            _ => None,
        };
        let cache = match (self.no_cache, self.cache_dir.clone().or_else(default_root)) {
            (false, Some(root)) => Some(FeatureCache::for_model(&clip, &root)?),
            _ => None,
        };
        Ok(Loaded { clip, phi, mode, cache })
    }

    pub fn bad_images(&self) -> BadImages {
        if self.skip_bad_images {
            BadImages::Skip
        } else {
            BadImages::Fail
        }
    }
}

impl Loaded {
    pub fn evaluator<'a>(&'a mut self, args: &ModelArgs, on_progress: &'a (dyn Fn(Progress) + Sync)) -> Evaluator<'a> {
        Evaluator {
            clip: &self.clip,
            phi: self.phi.as_ref(),
            mode: self.mode,
            cache: self.cache.take(),
            batch_size: args.batch_size,
            bad_images: args.bad_images(),
            on_progress,
            cached: Default::default(),
        }
    }
}
