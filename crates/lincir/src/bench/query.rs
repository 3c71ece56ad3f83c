//! Composed queries and their baselines, as L2-normalised features, and scores against a gallery.

use candle_core::Tensor;

use crate::clip::{Clip, Grad};
use crate::mapper::PseudoWordNet;
use crate::method::Method;
use crate::phi::l2_normalize;
use crate::Result;

/// How a query is built from (reference image, text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    /// A pseudo word of the reference in the method's template (LinCIR: `a photo of $ that {text}`).
    Composed,
    /// The reference image alone.
    Image,
    /// The text alone.
    Text,
    /// normalise(image) + normalise(text).
    Sum,
}

impl QueryMode {
    pub fn name(&self) -> &'static str {
        match self {
            QueryMode::Composed => "lincir",
            QueryMode::Image => "image-only",
            QueryMode::Text => "text-only",
            QueryMode::Sum => "image+text",
        }
    }
}

/// Query features for reference embeddings and texts, `batch_size` at a time.
///
/// # Shapes
/// references: [n, P] un-normalised image embeddings -> [n, P] L2-normalised
pub fn query_features(
    clip: &Clip,
    net: Option<&dyn PseudoWordNet>,
    method: Method,
    mode: QueryMode,
    references: &Tensor,
    texts: &[String],
    batch_size: usize,
) -> Result<Tensor> {
    let text = clip.text()?;
    let mut parts = Vec::new();
    for (start, chunk) in (0..texts.len()).step_by(batch_size.max(1)).map(|s| (s, &texts[s..(s + batch_size.max(1)).min(texts.len())])) {
        let refs = references.narrow(0, start, chunk.len())?;
        let feats = match mode {
            QueryMode::Image => refs,
            QueryMode::Composed => {
                let net = net.ok_or_else(|| crate::Error::Invalid("a composed query needs a phi checkpoint".into()))?;
                let queries: Vec<String> = chunk.iter().map(|t| method.query(t)).collect();
                let ids = encode(clip, &queries)?;
                let pseudo = net.pseudo_words(&refs)?;
                text.embed_with_pseudo_words_at(&ids, &pseudo, method.placeholder().1, method.replaces_every_placeholder(), Grad::No)?
            }
            QueryMode::Text => text.embed(&encode(clip, chunk)?)?,
            QueryMode::Sum => (l2_normalize(&refs)? + l2_normalize(&text.embed(&encode(clip, chunk)?)?)?)?,
        };
        parts.push(l2_normalize(&feats)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

fn encode(clip: &Clip, texts: &[String]) -> Result<Tensor> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let seqs = clip.tokenizer.encode_batch(&refs)?;
    crate::clip::tokenizer::pad_batch(&seqs, &clip.device)
}

/// Cosine scores of normalised queries against a gallery (normalised here).
///
/// # Shapes
/// queries: [n, P]; gallery: [g, P] -> n rows of g scores
pub fn scores(queries: &Tensor, gallery: &Tensor) -> Result<Vec<Vec<f32>>> {
    let g = l2_normalize(gallery)?;
    Ok(queries.matmul(&g.t()?)?.to_vec2::<f32>()?)
}
