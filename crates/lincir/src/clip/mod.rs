//! The frozen CLIP: configuration, weights, tokenizer, image preprocessing and both towers.

pub mod config;
pub mod fastmath;
pub mod hub;
pub mod image_limits;
pub mod heif;
pub mod jpeg;
pub mod batched;
pub mod blas;
mod causal_layer;
mod unmasked_layer;
#[cfg(feature = "cuda")]
pub mod cuda_ops;
pub mod nn;
pub mod panel;
pub mod ops;
pub mod preprocess;
pub mod resample;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

pub use config::ClipConfig;
pub use nn::Grad;
pub use preprocess::PreprocessConfig;
pub use text::TextTower;
pub use tokenizer::ClipTokenizer;
pub use vision::VisionTower;

use crate::{Error, Result};

/// Which towers to load (a bigG vision tower is 1.8 B parameters: don't load it to embed text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Towers {
    Text,
    Vision,
    Both,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub towers: Towers,
    /// Compute dtype; weights are converted from their stored dtype. f32 unless asked otherwise.
    pub dtype: DType,
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { towers: Towers::Both, dtype: DType::F32, device: Device::Cpu }
    }
}

pub struct Clip {
    pub config: ClipConfig,
    pub tokenizer: ClipTokenizer,
    pub preprocess: PreprocessConfig,
    text: Option<TextTower>,
    vision: Option<VisionTower>,
    /// The directory the files were read from.
    pub dir: PathBuf,
    /// What the user named: a directory or a hub id (recorded in outputs).
    pub name: String,
    pub device: Device,
    dtype: DType,
}

impl Clip {
    /// Loads a model given as a local directory or a hub id.
    pub fn load(model: &str, opts: &LoadOptions) -> Result<Self> {
        let dir = hub::resolve_model_dir(model)?;
        let mut clip = Self::load_dir(&dir, opts)?;
        clip.name = model.to_string();
        Ok(clip)
    }

    pub fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let config_path = dir.join(hub::CONFIG_FILE);
        if !config_path.is_file() {
            return Err(Error::file(&config_path, "missing: not a Hugging Face CLIP directory"));
        }
        let config = ClipConfig::from_file(&config_path)?;
        let pre_path = dir.join(preprocess::PREPROCESSOR_FILE);
        let preprocess = if pre_path.is_file() {
            PreprocessConfig::from_file(&pre_path, config.vision.image_size)?
        } else {
            PreprocessConfig::clip_default(config.vision.image_size)
        };
        if let Some((h, w)) = preprocess.crop {
            let s = config.vision.image_size;
            if (h, w) != (s, s) {
                return Err(Error::file(&pre_path, format!("crop size {h}x{w} does not match the vision tower's image size {s}")));
            }
        }
        let tokenizer = ClipTokenizer::from_dir(dir)?;
        // On the CPU, bf16 means bf16 matrices and f32 arithmetic: CPUs without bf16 arithmetic
        // (most) would convert every operand, and the saving that matters there is bytes read.
        let weights = if opts.device.is_cpu() && opts.dtype == DType::BF16 {
            weights::Weights::from_dir(dir, DType::F32, &opts.device)?.with_matrix_dtype(DType::BF16)
        } else {
            weights::Weights::from_dir(dir, opts.dtype, &opts.device)?
        };
        let text = match opts.towers {
            Towers::Text | Towers::Both => Some(TextTower::load(&weights, &config)?),
            Towers::Vision => None,
        };
        let vision = match opts.towers {
            Towers::Vision | Towers::Both => Some(VisionTower::load(&weights, &config)?),
            Towers::Text => None,
        };
        Ok(Clip {
            config,
            tokenizer,
            preprocess,
            text,
            vision,
            dir: dir.to_path_buf(),
            name: dir.display().to_string(),
            device: opts.device.clone(),
            dtype: opts.dtype,
        })
    }

    pub fn text(&self) -> Result<&TextTower> {
        self.text.as_ref().ok_or_else(|| Error::Invalid("the text tower was not loaded".into()))
    }

    /// The dtype asked for: the towers compute in it on a GPU; on the CPU, bf16 stores the
    /// matrices in bf16 and computes in f32 (their outputs are always f32).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn vision(&self) -> Result<&VisionTower> {
        self.vision.as_ref().ok_or_else(|| Error::Invalid("the vision tower was not loaded".into()))
    }
}
