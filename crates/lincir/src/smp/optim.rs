//! The optimiser of phi: AdamW as PyTorch computes it, gradient-norm clipping, and an exponential
//! moving average of the weights. The state is plain tensors so that it can be checkpointed.

use candle_core::{Tensor, Var};

use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    /// The paper's settings (weight decay 0.01, betas (0.9, 0.999), eps 1e-8).
    fn default() -> Self {
        AdamWConfig { weight_decay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// AdamW with decoupled weight decay, the same arithmetic as `torch.optim.AdamW`:
/// p *= 1 - lr wd; m, v updated; p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
pub struct AdamW {
    pub config: AdamWConfig,
    /// Number of updates done.
    pub t: u64,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &[&Var]) -> Result<Self> {
        let zeros = || params.iter().map(|p| p.as_tensor().zeros_like()).collect::<candle_core::Result<Vec<_>>>();
        Ok(AdamW { config, t: 0, m: zeros()?, v: zeros()? })
    }

    pub fn step(&mut self, params: &[&Var], grads: &[Tensor], lr: f64) -> Result<()> {
        let c = self.config;
        self.t += 1;
        let bias1 = 1.0 - c.beta1.powi(self.t as i32);
        let bias2_sqrt = (1.0 - c.beta2.powi(self.t as i32)).sqrt();
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let decayed = (p.as_tensor() * (1.0 - lr * c.weight_decay))?;
            self.m[i] = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            self.v[i] = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((self.v[i].sqrt()? / bias2_sqrt)? + c.eps)?;
            let update = (self.m[i].div(&denom)? * (lr / bias1))?;
            p.set(&(decayed - update)?)?;
        }
        Ok(())
    }
}

/// The global L2 norm of the gradients (NaN or infinite when any gradient is).
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads {
        total += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

/// Scales the gradients so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (coefficient max_norm / (norm + 1e-6), capped at 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    scale_to_max_norm(grads, norm, max_norm)?;
    Ok(norm)
}

/// The scaling of [`clip_grad_norm`] given the norm already measured.
pub fn scale_to_max_norm(grads: &mut [Tensor], norm: f64, max_norm: f64) -> Result<()> {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * coef)?;
        }
    }
    Ok(())
}

/// Exponential moving average of phi's weights with the warm-up of the official option:
/// decay_n = min(decay, (1 + n) / (10 + n)) for the n-th update (n from 0).
pub struct Ema {
    pub decay: f64,
    pub updates: u64,
    pub weights: Vec<Tensor>,
}

impl Ema {
    pub fn new(decay: f64, params: &[&Var]) -> Result<Self> {
        let weights = params.iter().map(|p| p.as_tensor().copy()).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Ema { decay, updates: 0, weights })
    }

    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    pub fn update(&mut self, params: &[&Var]) -> Result<()> {
        let d = self.current_decay();
        for (w, p) in self.weights.iter_mut().zip(params) {
            *w = ((&*w * d)? + (p.as_tensor() * (1.0 - d))?)?;
        }
        self.updates += 1;
        Ok(())
    }
}
