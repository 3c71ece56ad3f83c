//! CLIP's vision tower (ViT) with its projection.

use candle_core::Tensor;

use super::config::{ClipConfig, VisionConfig};
use super::nn::{linear, Encoder, Grad, LayerNorm, Linear};
use super::weights::Weights;
use crate::{Error, Result};

pub struct VisionTower {
    /// The patch convolution as a matrix: [width, channels * patch * patch].
    patch_weight: Tensor,
    class_embedding: Tensor,    // [width]
    position_embedding: Tensor, // [patches + 1, width]
    pre_layernorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    projection: Linear,
    cfg: VisionConfig,
}

impl VisionTower {
    pub fn load(w: &Weights, cfg: &ClipConfig) -> Result<Self> {
        let v = &cfg.vision;
        let (width, p, c) = (v.tower.hidden_size, v.patch_size, v.num_channels);
        let eps = v.tower.layer_norm_eps;
        let patch = w.get("vision_model.embeddings.patch_embedding.weight", &[width, c, p, p])?;
        Ok(VisionTower {
            patch_weight: patch.reshape((width, c * p * p))?,
            class_embedding: w.get("vision_model.embeddings.class_embedding", &[width])?,
            position_embedding: w.get("vision_model.embeddings.position_embedding.weight", &[v.num_patches() + 1, width])?,
            // `pre_layrnorm` is the real (misspelt) tensor name of Hugging Face's CLIP.
            pre_layernorm: LayerNorm::load(w, "vision_model.pre_layrnorm", width, eps)?,
            encoder: Encoder::load(w, "vision_model.encoder", &v.tower)?,
            post_layernorm: LayerNorm::load(w, "vision_model.post_layernorm", width, eps)?,
            projection: linear(w, "visual_projection", width, cfg.projection_dim, false)?,
            cfg: v.clone(),
        })
    }

    /// Side of the square input image, in pixels.
    pub fn image_size(&self) -> usize {
        self.cfg.image_size
    }

    /// # Shapes
    /// pixels: [batch, channels, image_size, image_size] (preprocessed) -> [batch, projection_dim],
    /// projected and un-normalised
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let (size, p) = (self.cfg.image_size, self.cfg.patch_size);
        if c != self.cfg.num_channels || h != size || w != size {
            return Err(Error::Invalid(format!(
                "pixel batch has shape {:?}, expected [batch, {}, {size}, {size}]",
                pixels.dims(),
                self.cfg.num_channels
            )));
        }
        let g = size / p;
        let width = self.cfg.tower.hidden_size;
        // Pixels arrive as f32; the tower computes in its weights' dtype and answers in f32.
        let pixels = pixels.to_dtype(self.patch_weight.dtype())?;
        // A stride-p convolution without bias is a matrix product over non-overlapping patches.
        let patches = pixels
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))? // [b, gy, gx, c, p, p]
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let patches = patches.matmul(&self.patch_weight.t()?)?.reshape((b, g * g, width))?;
        let class = self.class_embedding.reshape((1, 1, width))?.broadcast_as((b, 1, width))?;
        let x = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        let x = self.pre_layernorm.forward(&x, Grad::No)?;
        let cls = self.encoder.forward_first_token(&x, Grad::No)?; // [b, width]
        let cls = self.post_layernorm.forward(&cls, Grad::No)?;
        Ok(self.projection.forward(&cls)?.to_dtype(candle_core::DType::F32)?)
    }
}
