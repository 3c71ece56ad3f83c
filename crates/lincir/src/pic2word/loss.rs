//! Pic2Word's training objective: the pseudo word of an image, in "a photo of *", must be
//! the text whose embedding retrieves that image among the batch (and the image that text).

use candle_core::{DType, Tensor};

use super::Im2TextNet;
use crate::clip::{ClipTokenizer, Grad, TextTower};
use crate::method::DOLLAR_ID;
use crate::Result;

/// The training prompt: Pic2Word's "a photo of" with the pseudo word inserted before the end
/// token, written with lincir's placeholder (the word's own id never reaches the encoder).
pub const PROMPT: &str = "a photo of $";

/// The prompt's token ids (start, "a photo of", the placeholder 259, end).
pub fn prompt_ids(tokenizer: &ClipTokenizer) -> Result<Vec<u32>> {
    let ids = tokenizer.encode(PROMPT)?;
    if !ids.contains(&DOLLAR_ID) {
        return Err(crate::Error::Invalid(format!("the tokenizer does not encode `$` in {PROMPT:?} as id {DOLLAR_ID}")));
    }
    Ok(ids)
}

/// Rows L2-normalised.
fn normalized(x: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_div(&x.sqr()?.sum_keepdim(1)?.sqrt()?)?)
}

/// Mean over rows of the cross-entropy of each row against its own column (the diagonal).
///
/// # Shapes
/// logits: [batch, batch] -> []
fn diagonal_cross_entropy(logits: &Tensor) -> Result<Tensor> {
    let n = logits.dim(0)?;
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(1)?.log()?; // [batch, 1]
    let eye = Tensor::eye(n, DType::F32, logits.device())?;
    let own = (shifted * eye)?.sum_keepdim(1)?;
    Ok((log_sum - own)?.mean_all()?)
}

/// The symmetric contrastive loss of one batch, whose graph reaches the network's parameters:
/// t = text embedding of the prompt with IM2TEXT(v); s = CLIP's logit scale (exp of the
/// checkpoint's `logit_scale`); (CE(s vn tn^T) + CE(s tn vn^T)) / 2.
///
/// # Shapes
/// image: [batch, P] (un-normalised image embeddings, f32); ids: [batch, seq] -> []
pub fn contrastive_loss(text: &TextTower, net: &Im2TextNet, image: &Tensor, ids: &Tensor, masks: Option<&[Tensor]>, logit_scale: f64) -> Result<Tensor> {
    let pseudo = net.forward(image, masks)?;
    let t = text.embed_with_pseudo_words(ids, &pseudo, Grad::Yes)?.to_dtype(DType::F32)?;
    let (vn, tn) = (normalized(image)?, normalized(&t)?);
    let logits = (vn.matmul(&tn.t()?)? * logit_scale)?;
    let per_image = diagonal_cross_entropy(&logits)?;
    let per_text = diagonal_cross_entropy(&logits.t()?.contiguous()?)?;
    Ok(((per_image + per_text)? * 0.5)?)
}

/// The loss value and the gradient of every parameter (in [`Im2TextNet::vars`] order).
pub fn loss_and_grads(text: &TextTower, net: &Im2TextNet, image: &Tensor, ids: &Tensor, masks: Option<&[Tensor]>, logit_scale: f64) -> Result<(f32, Vec<Tensor>)> {
    let loss = contrastive_loss(text, net, image, ids, masks, logit_scale)?;
    let grads = loss.backward()?;
    let grads = net
        .vars()
        .into_iter()
        .map(|v| grads.get(v.as_tensor()).cloned().ok_or_else(|| crate::Error::Invalid("an IM2TEXT parameter received no gradient".into())))
        .collect::<Result<Vec<_>>>()?;
    Ok((loss.to_scalar::<f32>()?, grads))
}
