//! Steps 5 and 6 of SMP: noise, phi, the masked caption with the pseudo word, the loss.

use candle_core::{Device, Tensor};

use crate::clip::{Grad, TextTower};
use crate::phi::{DropoutMasks, Phi};
use crate::rng::Rng;
use crate::Result;

/// The random inputs of one step, drawn outside so that a test can replay a reference's draws.
///
/// # Shapes
/// scale: [batch, 1] (u ~ U(0,1)); direction: [batch, P] (n ~ N(0, I))
pub struct Noise {
    pub scale: Tensor,
    pub direction: Tensor,
}

impl Noise {
    pub fn draw(rng: &mut Rng, batch: usize, dim: usize, device: &Device) -> Result<Self> {
        let scale: Vec<f32> = (0..batch).map(|_| rng.uniform()).collect();
        let direction: Vec<f32> = (0..batch * dim).map(|_| rng.normal()).collect();
        Ok(Noise {
            scale: Tensor::from_vec(scale, (batch, 1), device)?,
            direction: Tensor::from_vec(direction, (batch, dim), device)?,
        })
    }
}

impl DropoutMasks {
    /// Bernoulli keep-masks scaled by 1/(1-p) (inverted dropout, as PyTorch's `nn.Dropout`).
    pub fn draw(rng: &mut Rng, batch: usize, hidden: usize, p: f64, device: &Device) -> Result<Self> {
        let keep = (1.0 / (1.0 - p)) as f32;
        let mut mask = || -> Result<Tensor> {
            let v: Vec<f32> = (0..batch * hidden).map(|_| if (rng.uniform() as f64) < p { 0.0 } else { keep }).collect();
            Ok(Tensor::from_vec(v, (batch, hidden), device)?)
        };
        Ok(DropoutMasks { first: mask()?, second: mask()? })
    }
}

/// The frozen targets: text embeddings of the clean captions (fast path, no graph).
///
/// # Shapes
/// ids_caption: [batch, seq] -> [batch, P]
pub fn target_embeddings(text: &TextTower, ids_caption: &Tensor) -> Result<Tensor> {
    text.embed(ids_caption)
}

/// The SMP loss of one batch, as a scalar tensor whose graph reaches phi's parameters:
/// mse(text(r with phi(e + u n) at every 259), e), averaged over batch and dimensions.
///
/// # Shapes
/// target: [batch, P]; ids_masked: [batch, seq] -> []
pub fn smp_loss(
    text: &TextTower,
    phi: &Phi,
    target: &Tensor,
    ids_masked: &Tensor,
    noise: &Noise,
    masks: Option<&DropoutMasks>,
) -> Result<Tensor> {
    let x = (target + noise.direction.broadcast_mul(&noise.scale)?)?;
    let pseudo = phi.forward(&x, masks)?;
    let predicted = text.embed_with_pseudo_words(ids_masked, &pseudo, Grad::Yes)?;
    Ok((predicted - target)?.sqr()?.mean_all()?)
}

/// The loss value and the gradient of every phi parameter (in [`Phi::vars`] order). The backward
/// pass runs on `loss_scale` times the loss (a power of two; 1 unless the tower is f16:
/// [`super::loss_scale`]), and the gradients returned are divided by it again, exactly.
pub fn loss_and_grads(
    text: &TextTower,
    phi: &Phi,
    target: &Tensor,
    ids_masked: &Tensor,
    noise: &Noise,
    masks: Option<&DropoutMasks>,
    loss_scale: f64,
) -> Result<(f32, Vec<Tensor>)> {
    let loss = smp_loss(text, phi, target, ids_masked, noise, masks)?;
    let grads = (&loss * loss_scale)?.backward()?;
    let grads = phi
        .vars()
        .into_iter()
        .map(|v| {
            grads.get(v.as_tensor()).cloned().ok_or_else(|| {
                crate::Error::Invalid("a phi parameter received no gradient (a fused op without backward on the path)".into())
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let grads = grads.into_iter().map(|g| g * (1.0 / loss_scale)).collect::<candle_core::Result<_>>()?;
    Ok((loss.to_scalar::<f32>()?, grads))
}
