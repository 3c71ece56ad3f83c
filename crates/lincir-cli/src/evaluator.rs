//! Options shared by `eval` and `submit`: model, the methods (checkpoints) and baselines to
//! evaluate, feature cache, bad images.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use lincir::bench::cache::{default_root, FeatureCache};
use lincir::bench::eval::{Evaluator, Progress};
use lincir::bench::images::BadImages;
use lincir::bench::query::QueryMode;
use lincir::clip::preprocess::Pipeline;
use lincir::clip::{Clip, PreprocessConfig};
use lincir::mapper::{Mapper, PseudoWordNet};
use lincir::method::Method;
use lincir::phi::Phi;
use lincir::searle::inverter::{InversionSetup, Inverter};
use lincir::searle::oti::OtiConfig;
use lincir::searle::PhraseSource;

#[derive(Clone, Copy, ValueEnum)]
pub enum Baseline {
    Image,
    Text,
    Sum,
}

#[derive(Args)]
pub struct ModelArgs {
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
    #[command(flatten)]
    pub pipeline: crate::pipeline::MethodsPipelineArgs,
    /// CLIP model: a local Hugging Face directory or a hub id.
    #[arg(long)]
    pub model: String,
    /// A pseudo-word network, `[METHOD=]CHECKPOINT`, repeatable to compare methods in one run:
    /// METHOD is lincir, searle or pic2word (default: the method a lincir checkpoint records,
    /// e.g. searle for train-searle's; else lincir for a phi, pic2word for an IM2TEXT, the
    /// architecture read from the weights). CHECKPOINT is a lincir safetensors
    /// file or a published .pt, a file or `owner/repo/file` on the hub (e.g.
    /// navervision/zeroshot-cir-models/lincir_large.pt). Not needed with --baseline.
    #[arg(long, required_unless_present_any = ["baseline", "searle_oti"])]
    pub phi: Vec<String>,
    #[command(flatten)]
    pub oti: OtiArgs,
    /// Also rank without a pseudo word: by the reference image, the text, or their normalised
    /// sum (repeatable).
    #[arg(long, value_enum)]
    pub baseline: Vec<Baseline>,
    /// Images or queries per forward pass (default: 32 on the CPU, 256 on a GPU).
    #[arg(long)]
    pub batch_size: Option<usize>,
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

/// SEARLE-OTI: pseudo words found by inverting each reference image (docs/EVALUATION.md).
#[derive(Args)]
pub struct OtiArgs {
    /// Also evaluate SEARLE-OTI: each reference image's pseudo word is found by textual
    /// inversion of the image itself (SEARLE's settings; no checkpoint), queried with SEARLE's
    /// rule. Needs --oti-vocabulary and --oti-phrases or --oti-phrase-captions.
    #[arg(long, requires = "oti_vocabulary")]
    pub searle_oti: bool,
    /// Concept vocabulary for SEARLE-OTI (as `train-searle --vocabulary`).
    #[arg(long, requires = "searle_oti")]
    pub oti_vocabulary: Option<PathBuf>,
    /// Phrases per concept as JSON (as `train-searle --phrases`).
    #[arg(long, requires = "searle_oti", conflicts_with = "oti_phrase_captions")]
    pub oti_phrases: Option<PathBuf>,
    /// Or phrases from captions (as `train-searle --phrase-captions`).
    #[arg(long, num_args = 1.., requires = "searle_oti")]
    pub oti_phrase_captions: Vec<String>,
    /// Inversion steps per reference image (SEARLE: 350).
    #[arg(long, default_value_t = 350)]
    pub oti_steps: u64,
    /// Nearest concepts per image for the phrase regulariser (SEARLE: 15).
    #[arg(long, default_value_t = 15)]
    pub oti_top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub oti_seed: u64,
}

impl OtiArgs {
    /// The inversion's concepts, phrases and settings, when SEARLE-OTI is asked for.
    fn setup(&self, clip: &Clip) -> Result<Option<InversionSetup>> {
        if !self.searle_oti {
            return Ok(None);
        }
        if self.oti_phrases.is_none() && self.oti_phrase_captions.is_empty() {
            bail!("--searle-oti needs --oti-phrases or --oti-phrase-captions");
        }
        if self.oti_top_k == 0 || self.oti_steps == 0 {
            bail!("--oti-top-k and --oti-steps must be at least 1");
        }
        let source = match &self.oti_phrases {
            Some(path) => PhraseSource::Json(path),
            None => PhraseSource::Captions { sources: &self.oti_phrase_captions, text_field: "text", per_concept: 256, seed: self.oti_seed },
        };
        let (vocabulary, phrases) = lincir::searle::vocabulary_and_phrases(self.oti_vocabulary.as_ref().expect("clap requires it"), source)?;
        let embeddings = crate::train_searle::vocabulary_embeddings(clip, &vocabulary, None)?;
        let config = OtiConfig { steps: self.oti_steps, ..OtiConfig::default() };
        Ok(Some(InversionSetup { vocabulary, embeddings, phrases, top_k: self.oti_top_k, config, seed: self.oti_seed }))
    }
}

/// One thing evaluated: a method with its checkpoint, or a baseline.
pub struct Run {
    /// The method's name, or the baseline's (`image-only`, ...): the row of the table.
    pub label: String,
    pub mode: QueryMode,
    pub method: Method,
    pub mapper: Option<Mapper>,
    /// SEARLE-OTI's inversion setup (then `mapper` is `None`).
    pub oti: Option<InversionSetup>,
    /// The checkpoint as the user named it.
    pub checkpoint: Option<String>,
    /// The image transform of this run's gallery and reference images.
    pub pipeline: Pipeline,
}

pub struct Loaded {
    pub clip: Clip,
    pub runs: Vec<Run>,
    cache_root: Option<PathBuf>,
    /// The model's own preprocessing, from which each run's pipeline is made.
    preprocess: PreprocessConfig,
    /// Counts SEARLE-OTI's inverted reference images.
    pub inverted: indicatif::ProgressBar,
    on_inverted: Box<dyn Fn(usize) + Sync + Send>,
}

/// Splits `[METHOD=]CHECKPOINT`; a prefix that is no method name is part of a path.
fn split_spec(spec: &str) -> (Option<Method>, &str) {
    match spec.split_once('=') {
        Some((name, path)) => match Method::parse(name) {
            Some(m) => (Some(m), path),
            None => (None, spec),
        },
        None => (None, spec),
    }
}

/// Loads the checkpoint of `spec` and the method it is evaluated with.
fn load_method(spec: &str, clip: &Clip) -> Result<(Method, Mapper)> {
    let (named, path) = split_spec(spec);
    if path.is_empty() {
        bail!("--phi {spec}: no checkpoint after the method name");
    }
    let text = clip.text()?;
    let (mapper, recorded) = Mapper::load_for(&Phi::resolve(path)?, text.projection_dim(), text.width(), &clip.device)?;
    let arch = mapper.architecture();
    let method = named.or(recorded).unwrap_or_else(|| Method::default_for(arch));
    if !method.uses(arch) {
        bail!("--phi {spec}: the checkpoint holds a {}, which {method} does not use", arch.name());
    }
    Ok((method, mapper))
}

/// Loads every `--phi` spec, refusing two checkpoints for one method.
pub fn load_methods(specs: &[String], clip: &Clip) -> Result<Vec<(Method, Mapper, String)>> {
    let mut loaded: Vec<(Method, Mapper, String)> = Vec::new();
    for spec in specs {
        let (method, mapper) = load_method(spec, clip)?;
        if loaded.iter().any(|(m, _, _)| *m == method) {
            bail!("--phi: two checkpoints for {method}; compare checkpoints of one method in separate runs");
        }
        loaded.push((method, mapper, spec.clone()));
    }
    Ok(loaded)
}

impl ModelArgs {
    pub fn load(&self) -> Result<Loaded> {
        if self.batch_size == Some(0) {
            bail!("--batch-size must be at least 1");
        }
        let clip = Clip::load(&self.model, &self.compute.load_options(lincir::clip::Towers::Both)?)?;
        let mut runs: Vec<Run> = load_methods(&self.phi, &clip)?
            .into_iter()
            .map(|(method, mapper, spec)| Run {
                label: method.name().into(),
                mode: QueryMode::Composed,
                method,
                mapper: Some(mapper),
                oti: None,
                checkpoint: Some(spec),
                pipeline: self.pipeline.pipeline_for(Some(method)),
            })
            .collect();
        if let Some(setup) = self.oti.setup(&clip)? {
            let method = Method::Searle;
            runs.push(Run { label: "searle-oti".into(), mode: QueryMode::Composed, method, mapper: None, oti: Some(setup), checkpoint: None, pipeline: self.pipeline.pipeline_for(Some(method)) });
        }
        for b in &self.baseline {
            let mode = match b {
                Baseline::Image => QueryMode::Image,
                Baseline::Text => QueryMode::Text,
                Baseline::Sum => QueryMode::Sum,
            };
            if !runs.iter().any(|r| r.mode == mode) {
                let pipeline = self.pipeline.pipeline_for(None);
                runs.push(Run { label: mode.name().into(), mode, method: Method::Lincir, mapper: None, oti: None, checkpoint: None, pipeline });
            }
        }
        let cache_root = if self.no_cache { None } else { self.cache_dir.clone().or_else(default_root) };
        let preprocess = clip.preprocess.clone();
        let inverted = crate::progress::counter("references inverted");
        let counter = inverted.clone();
        Ok(Loaded { clip, runs, cache_root, preprocess, inverted, on_inverted: Box::new(move |n| counter.inc(n as u64)) })
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
    /// The evaluator of run `i`, with the run's image transform; every run reads and fills the
    /// same feature cache, so the gallery is embedded once per transform.
    pub fn evaluator<'a>(&'a mut self, i: usize, args: &ModelArgs, on_progress: &'a (dyn Fn(Progress) + Sync)) -> Result<Evaluator<'a>> {
        self.clip.preprocess = self.preprocess.with_pipeline(self.runs[i].pipeline, self.clip.config.vision.image_size);
        let run = &self.runs[i];
        let cache = self.cache_root.as_ref().map(|root| FeatureCache::for_model(&self.clip, root)).transpose()?;
        Ok(Evaluator {
            clip: &self.clip,
            phi: match (&run.mapper, &run.oti) {
                (Some(m), _) => Some(Box::new(m) as Box<dyn PseudoWordNet>),
                (None, Some(setup)) => Some(Box::new(Inverter::new(self.clip.text()?, &self.clip.tokenizer, setup, &*self.on_inverted))),
                (None, None) => None,
            },
            label: run.oti.is_some().then_some("searle-oti"),
            method: run.method,
            mode: run.mode,
            cache,
            batch_size: args.batch_size.unwrap_or_else(|| crate::compute::default_batch_size(&self.clip.device)),
            bad_images: args.bad_images(),
            on_progress,
            cached: Default::default(),
        })
    }
}
