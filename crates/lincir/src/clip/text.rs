//! CLIP's text tower with its projection, and the entry point that injects pseudo words.

use candle_core::Tensor;

use super::config::{ClipConfig, TextConfig};
use super::nn::{linear, Encoder, Grad, LayerNorm, Linear, Packing};
use super::weights::Weights;
use crate::prompt::PSEUDO_TOKEN_ID;
use crate::{Error, Result};

pub struct TextTower {
    token_embedding: Tensor,    // [vocab, width]
    position_embedding: Tensor, // [positions, width]
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    projection: Linear,
    cfg: TextConfig,
    projection_dim: usize,
}

impl TextTower {
    pub fn load(w: &Weights, cfg: &ClipConfig) -> Result<Self> {
        let t = &cfg.text;
        let width = t.tower.hidden_size;
        Ok(TextTower {
            token_embedding: w.get("text_model.embeddings.token_embedding.weight", &[t.vocab_size, width])?,
            position_embedding: w
                .get("text_model.embeddings.position_embedding.weight", &[t.max_position_embeddings, width])?,
            encoder: Encoder::load(w, "text_model.encoder", &t.tower)?,
            final_layer_norm: LayerNorm::load(w, "text_model.final_layer_norm", width, t.tower.layer_norm_eps)?,
            projection: linear(w, "text_projection", width, cfg.projection_dim, false)?,
            cfg: t.clone(),
            projection_dim: cfg.projection_dim,
        })
    }

    /// Width of the token embeddings: the size of a pseudo word.
    pub fn width(&self) -> usize {
        self.cfg.tower.hidden_size
    }

    pub fn projection_dim(&self) -> usize {
        self.projection_dim
    }

    /// The device the tower's weights live on.
    pub fn device(&self) -> &candle_core::Device {
        self.token_embedding.device()
    }

    pub fn max_positions(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    /// How training differentiates the encoder here, in words (for reports): "fused layers",
    /// "hand-written backward" or "candle's autograd".
    pub fn training_path(&self) -> &'static str {
        // The activations' dtype is the token embeddings'.
        self.encoder.training_path(self.token_embedding.device(), self.token_embedding.dtype())
    }

    /// Embeds token ids (one padded row per sentence; see [`super::tokenizer::pad_batch`]).
    ///
    /// # Shapes
    /// ids: [batch, seq] u32 -> [batch, projection_dim], projected and un-normalised
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let tokens = self.token_embeddings(ids)?;
        self.encode_embeddings(&tokens, ids, Grad::No)
    }

    /// Embeds token ids with the embedding at every [`PSEUDO_TOKEN_ID`] position replaced by that
    /// sentence's pseudo word. Differentiable with respect to `pseudo` when `grad` is [`Grad::Yes`].
    ///
    /// # Shapes
    /// ids: [batch, seq] u32; pseudo: [batch, width] -> [batch, projection_dim]
    pub fn embed_with_pseudo_words(&self, ids: &Tensor, pseudo: &Tensor, grad: Grad) -> Result<Tensor> {
        self.embed_with_pseudo_words_at(ids, pseudo, PSEUDO_TOKEN_ID, true, grad)
    }

    /// [`Self::embed_with_pseudo_words`] for another method's placeholder id (Pic2Word's `*`),
    /// replacing every occurrence in a sentence or only the first (SEARLE, Pic2Word). A sentence
    /// without the placeholder is encoded as plain text.
    ///
    /// # Shapes
    /// ids: [batch, seq] u32; pseudo: [batch, width] -> [batch, projection_dim]
    pub fn embed_with_pseudo_words_at(&self, ids: &Tensor, pseudo: &Tensor, placeholder: u32, every: bool, grad: Grad) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let width = self.width();
        if pseudo.dims() != [b, width] {
            return Err(Error::Invalid(format!(
                "pseudo words have shape {:?}, expected [{b}, {width}] (one per sentence, text width {width})",
                pseudo.dims()
            )));
        }
        let tokens = self.token_embeddings(ids)?; // [b, s, width]
        let is_pseudo = if every {
            ids.eq(placeholder)?
        } else {
            // Only the first occurrence of each row.
            let mut mask = vec![0u8; b * s];
            for (r, row) in ids.to_vec2::<u32>()?.iter().enumerate() {
                if let Some(j) = row.iter().position(|&id| id == placeholder) {
                    mask[r * s + j] = 1;
                }
            }
            Tensor::from_vec(mask, (b, s), ids.device())?
        };
        let is_pseudo = is_pseudo.unsqueeze(2)?.broadcast_as((b, s, width))?;
        let pseudo = pseudo.to_dtype(tokens.dtype())?.unsqueeze(1)?.broadcast_as((b, s, width))?;
        let tokens = is_pseudo.where_cond(&pseudo, &tokens)?;
        self.encode_embeddings(&tokens, ids, grad)
    }

    /// # Shapes
    /// ids: [batch, seq] -> [batch, seq, width]
    fn token_embeddings(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        if s == 0 || s > self.max_positions() {
            return Err(Error::Invalid(format!("token sequences of length {s}; must be 1..={}", self.max_positions())));
        }
        let max_id = ids.max_all()?.to_scalar::<u32>()? as usize;
        if max_id >= self.cfg.vocab_size {
            return Err(Error::Invalid(format!("token id {max_id} is outside the vocabulary ({})", self.cfg.vocab_size)));
        }
        let flat = ids.flatten_all()?;
        Ok(self.token_embedding.index_select(&flat, 0)?.reshape((b, s, self.width()))?)
    }

    /// Position embeddings, causal transformer, final LayerNorm, pooling at the end-of-text token
    /// (the argmax of the ids), projection. Only the tokens up to each end-of-text are computed
    /// (packed, see [`Packing`]): with causal attention nothing after it changes the result.
    ///
    /// # Shapes
    /// tokens: [batch, seq, width]; ids: [batch, seq] -> [batch, projection_dim]
    fn encode_embeddings(&self, tokens: &Tensor, ids: &Tensor, grad: Grad) -> Result<Tensor> {
        let (_, s, _) = tokens.dims3()?;
        let positions = self.position_embedding.narrow(0, 0, s)?;
        let x = tokens.broadcast_add(&positions)?;
        let lengths: Vec<usize> = ids.to_vec2::<u32>()?.iter().map(|row| end_of_text_position(row) + 1).collect();
        let packing = Packing::new(&lengths, x.dtype(), x.device())?;
        let pooled = self.encoder.forward_packed_last(&packing.pack(&x)?, &packing, grad)?; // [b, width]
        let pooled = self.final_layer_norm.forward(&pooled, grad)?;
        // Embeddings (and the loss built on them) are f32 whatever the tower's dtype.
        Ok(self.projection.forward(&pooled)?.to_dtype(candle_core::DType::F32)?)
    }
}

/// The pooling position: the first position holding the largest id (torch's `argmax`), which is
/// the end-of-text token since 49407 is the largest id and padding never is.
pub fn end_of_text_position(ids: &[u32]) -> usize {
    let mut best = 0;
    for (i, &id) in ids.iter().enumerate() {
        if id > ids[best] {
            best = i;
        }
    }
    best
}
