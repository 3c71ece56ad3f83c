//! What `train-pic2word` and `train-searle` share: the device, the model, the training images
//! (files embedded once through the feature cache, or precomputed embeddings) and the output
//! folder.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use lincir::bench::cache::{default_root, FeatureCache};
use lincir::bench::images::{embed_images, BadImages, BenchImage};
use lincir::clip::{Clip, Towers};

#[derive(Args)]
pub struct ImageTrainingArgs {
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
    /// CLIP model: a local Hugging Face directory or a hub id.
    #[arg(long)]
    pub model: String,
    /// Training images: files and/or folders (walked recursively). Their embeddings are cached
    /// (as `eval`'s galleries are), so a resumed or repeated run does not embed them again.
    #[arg(long, num_args = 1.., required_unless_present = "embeddings", conflicts_with = "embeddings")]
    pub images: Vec<PathBuf>,
    /// Or precomputed image embeddings: a `lincir embed --images` output (made with this model).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// Output folder (network, resumable state, metrics).
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Do not read or write the embedding cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl ImageTrainingArgs {
    /// Refuses to start over a run (its `state_file`) without `--resume`, before loading anything.
    pub fn refuse_existing_run(&self, state_file: &str, resume: bool) -> Result<()> {
        let state = self.output_dir.join(state_file);
        if !resume && state.is_file() {
            bail!("{}: a run is already here: pass --resume to continue it, or choose another --output-dir", state.display());
        }
        Ok(())
    }

    /// The CLIP, without its vision tower when the embeddings are given.
    pub fn load_clip(&self) -> Result<Clip> {
        let towers = if self.embeddings.is_some() { Towers::Text } else { Towers::Both };
        Ok(Clip::load(&self.model, &self.compute.load_options(towers)?)?)
    }

    /// The training images' CLIP embeddings: from `--embeddings`, or the files of `--images`
    /// embedded now (through the feature cache unless `--no-cache`), unreadable images left out
    /// and counted.
    pub fn embeddings(&self, clip: &Clip) -> Result<candle_core::Tensor> {
        if let Some(path) = &self.embeddings {
            let (tensors, _) = lincir::io::read_safetensors(path)?;
            let e = tensors.get("embeddings").with_context(|| format!("{}: no tensor `embeddings` (a `lincir embed --images` output)", path.display()))?;
            let (_, p) = e.dims2().with_context(|| format!("{}: `embeddings` is not a matrix", path.display()))?;
            if p != clip.text()?.projection_dim() {
                bail!("{}: embeddings of dim {p}, the model projects to {}: made with another model", path.display(), clip.text()?.projection_dim());
            }
            return Ok(e.clone());
        }
        let cache = if self.no_cache { None } else { default_root().map(|root| FeatureCache::for_model(clip, &root)).transpose()? };
        let images: Vec<BenchImage> = crate::embed::image_files(&self.images)?.into_iter().map(BenchImage::file).collect();
        let pb = crate::progress::bar(images.len(), "images");
        let batch = crate::compute::default_batch_size(&clip.device);
        let embedded = embed_images(clip, cache.as_ref(), &images, batch, BadImages::Skip, &|k| pb.inc(k as u64))?;
        pb.finish_and_clear();
        for (path, why) in embedded.skipped.iter().take(5) {
            eprintln!("skipped {}: {why}", path.display());
        }
        let kept: Vec<u32> = embedded.ok.iter().enumerate().filter(|(_, ok)| **ok).map(|(i, _)| i as u32).collect();
        println!("{} images embedded ({} from the cache, {} unreadable left out)", kept.len(), embedded.cached, embedded.skipped.len());
        let index = candle_core::Tensor::from_vec(kept.clone(), kept.len(), embedded.features.device())?;
        Ok(embedded.features.index_select(&index, 0)?.to_dtype(candle_core::DType::F32)?)
    }
}
