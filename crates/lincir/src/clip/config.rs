//! Mirror of Hugging Face's `CLIPConfig` (`config.json`): every size, the activation and the
//! epsilon come from the file; the defaults are transformers' own for fields a file leaves out.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// The MLP activation named by `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// x * sigmoid(1.702 x): OpenAI's CLIPs.
    QuickGelu,
    /// The exact erf form: LAION's ViT-H/14 and ViT-bigG/14.
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Activation::QuickGelu),
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            _ => None,
        }
    }
}

/// Sizes of one transformer tower.
#[derive(Debug, Clone, PartialEq)]
pub struct TowerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub tower: TowerConfig,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub tower: TowerConfig,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
}

impl TowerConfig {
    /// Floating-point operations of one sequence of `seq` tokens through the layers: the linear
    /// products (q/k/v/out, the two MLP layers) and the two attention products. For benchmarks
    /// (GFLOP/s); elementwise work is left out.
    pub fn forward_flops(&self, seq: usize) -> f64 {
        let (d, f, s) = (self.hidden_size as f64, self.intermediate_size as f64, seq as f64);
        self.num_hidden_layers as f64 * (2.0 * s * (4.0 * d * d + 2.0 * d * f) + 4.0 * s * s * d)
    }
}

impl VisionConfig {
    /// Floating-point operations of one image: patch embedding and the layers.
    pub fn forward_flops(&self) -> f64 {
        let patch = 2.0 * self.num_patches() as f64 * (self.num_channels * self.patch_size * self.patch_size) as f64 * self.tower.hidden_size as f64;
        patch + self.tower.forward_flops(self.num_patches() + 1)
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// A whole CLIP: both towers and the shared embedding (projection) size.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: usize,
}

/// The raw JSON of one sub-config; absent fields take transformers' defaults below.
#[derive(Debug, Default, Deserialize)]
struct RawTower {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    projection_dim: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    num_channels: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct RawClip {
    model_type: Option<String>,
    projection_dim: Option<usize>,
    text_config: Option<RawTower>,
    vision_config: Option<RawTower>,
}

// transformers' CLIPTextConfig / CLIPVisionConfig defaults (ViT-B/32).
const TEXT_DEFAULTS: (usize, usize, usize, usize) = (512, 2048, 12, 8);
const VISION_DEFAULTS: (usize, usize, usize, usize) = (768, 3072, 12, 12);
const DEFAULT_PROJECTION_DIM: usize = 512;

fn tower(raw: &RawTower, defaults: (usize, usize, usize, usize), path: &Path, which: &str) -> Result<TowerConfig> {
    let act_name = raw.hidden_act.clone().unwrap_or_else(|| "quick_gelu".into());
    let hidden_act = Activation::parse(&act_name).ok_or_else(|| {
        Error::file(path, format!("{which}.hidden_act `{act_name}` is not supported (quick_gelu, gelu, gelu_new)"))
    })?;
    let cfg = TowerConfig {
        hidden_size: raw.hidden_size.unwrap_or(defaults.0),
        intermediate_size: raw.intermediate_size.unwrap_or(defaults.1),
        num_hidden_layers: raw.num_hidden_layers.unwrap_or(defaults.2),
        num_attention_heads: raw.num_attention_heads.unwrap_or(defaults.3),
        hidden_act,
        layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-5),
    };
    if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
        return Err(Error::file(
            path,
            format!("{which}: hidden_size {} is not divisible by num_attention_heads {}", cfg.hidden_size, cfg.num_attention_heads),
        ));
    }
    Ok(cfg)
}

impl ClipConfig {
    /// Reads `config.json`. Accepts a full `CLIPConfig`; `projection_dim` is taken from the top
    /// level when present, otherwise from the sub-configs (as `CLIP*ModelWithProjection` does).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read config: {e}")))?;
        Self::from_json(&text, path)
    }

    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn from_json(json: &str, path: &Path) -> Result<Self> {
        let raw: RawClip = serde_json::from_str(json).map_err(|e| Error::file(path, format!("malformed config.json: {e}")))?;
        if let Some(t) = raw.model_type.as_deref() {
            if t != "clip" {
                return Err(Error::file(path, format!("model_type is `{t}`, expected `clip` (a CLIPModel config)")));
            }
        }
        let rt = raw.text_config.unwrap_or_default();
        let rv = raw.vision_config.unwrap_or_default();
        let projection_dim = raw
            .projection_dim
            .or(rt.projection_dim)
            .or(rv.projection_dim)
            .unwrap_or(DEFAULT_PROJECTION_DIM);
        let text = TextConfig {
            tower: tower(&rt, TEXT_DEFAULTS, path, "text_config")?,
            vocab_size: rt.vocab_size.unwrap_or(49408),
            max_position_embeddings: rt.max_position_embeddings.unwrap_or(77),
        };
        let vision = VisionConfig {
            tower: tower(&rv, VISION_DEFAULTS, path, "vision_config")?,
            image_size: rv.image_size.unwrap_or(224),
            patch_size: rv.patch_size.unwrap_or(32),
            num_channels: rv.num_channels.unwrap_or(3),
        };
        if vision.patch_size == 0 || !vision.image_size.is_multiple_of(vision.patch_size) {
            return Err(Error::file(
                path,
                format!("vision_config: image_size {} is not a multiple of patch_size {}", vision.image_size, vision.patch_size),
            ));
        }
        Ok(ClipConfig { text, vision, projection_dim })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ClipConfig> {
        ClipConfig::from_json(json, Path::new("config.json"))
    }

    #[test]
    fn openai_large_layout_with_top_level_projection() {
        let cfg = parse(
            r#"{"model_type":"clip","projection_dim":768,
                "text_config":{"hidden_size":768,"intermediate_size":3072,"num_attention_heads":12,"num_hidden_layers":12,"projection_dim":768},
                "vision_config":{"hidden_size":1024,"intermediate_size":4096,"num_attention_heads":16,"num_hidden_layers":24,"patch_size":14,"image_size":224,"projection_dim":768}}"#,
        )
        .unwrap();
        assert_eq!(cfg.projection_dim, 768);
        assert_eq!(cfg.text.tower.hidden_act, Activation::QuickGelu);
        assert_eq!(cfg.vision.tower.num_hidden_layers, 24);
        assert_eq!(cfg.vision.num_patches(), 256);
    }

    #[test]
    fn laion_gelu_with_projection_only_in_sub_configs() {
        let cfg = parse(
            r#"{"text_config":{"hidden_size":1024,"num_attention_heads":16,"hidden_act":"gelu","projection_dim":1024,"layer_norm_eps":1e-5},
                "vision_config":{"hidden_size":1280,"num_attention_heads":16,"hidden_act":"gelu","patch_size":14,"projection_dim":1024}}"#,
        )
        .unwrap();
        assert_eq!(cfg.projection_dim, 1024);
        assert_eq!(cfg.text.tower.hidden_act, Activation::Gelu);
        assert_eq!(cfg.text.tower.intermediate_size, 2048, "transformers default");
    }

    #[test]
    fn bad_configs_are_errors_naming_the_file() {
        let e = parse(r#"{"text_config":{"hidden_act":"swish"}}"#).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("swish"), "{e}");
        let e = parse(r#"{"model_type":"bert"}"#).unwrap_err().to_string();
        assert!(e.contains("bert"), "{e}");
        let e = parse("{not json").unwrap_err().to_string();
        assert!(e.contains("malformed"), "{e}");
        let e = parse(r#"{"vision_config":{"image_size":225,"patch_size":14}}"#).unwrap_err().to_string();
        assert!(e.contains("multiple"), "{e}");
    }
}
