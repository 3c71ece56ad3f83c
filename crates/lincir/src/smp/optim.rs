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
            if [p.as_tensor(), g, &self.m[i], &self.v[i]].iter().all(|t| fused::applies(t)) {
                fused::adamw(p.as_tensor(), g, &self.m[i], &self.v[i], c, lr, bias1, bias2_sqrt)?;
                continue;
            }
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
        total += match fused::applies(g) {
            true => fused::sum_of_squares(g)?,
            false => g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
        };
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
            if fused::applies(w) && fused::applies(p.as_tensor()) {
                fused::ema(w, p.as_tensor(), d)?;
                continue;
            }
            *w = ((&*w * d)? + (p.as_tensor() * (1.0 - d))?)?;
        }
        self.updates += 1;
        Ok(())
    }
}

/// The CPU's updates in one pass each, in place, with the same f32 arithmetic as the tensor
/// expressions they replace (those made about a dozen passes over phi's 14 M parameters at
/// ViT-L/14, each into a freshly allocated, page-faulted tensor: ~10% of a training step).
mod fused {
    use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor};
    use rayon::prelude::*;

    use super::AdamWConfig;
    use crate::Result;

    const CHUNK: usize = 16 * 1024;

    /// Whether a tensor takes the fused path: contiguous f32 on the CPU.
    pub fn applies(t: &Tensor) -> bool {
        t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous()
    }

    fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
        crate::clip::ops::contiguous_f32(s, l, "optimiser")
    }

    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
        crate::clip::ops::contiguous_f32_mut(s, l, "optimiser")
    }

    fn same_len(a: &[f32], b: &[f32]) -> candle_core::Result<()> {
        if a.len() != b.len() {
            candle_core::bail!("optimiser: {} values updated from {}", a.len(), b.len());
        }
        Ok(())
    }

    /// `t ← a t + b u`, elementwise.
    struct Blend {
        a: f32,
        b: f32,
        square: bool,
    }

    impl InplaceOp2 for Blend {
        fn name(&self) -> &'static str {
            "optimiser-blend"
        }
        fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
            let (t, u) = (slice_mut(s1, l1)?, slice(s2, l2)?);
            same_len(t, u)?;
            t.par_chunks_mut(CHUNK).zip(u.par_chunks(CHUNK)).for_each(|(t, u)| {
                for (t, &u) in t.iter_mut().zip(u) {
                    let u = if self.square { u * u } else { u };
                    *t = *t * self.a + u * self.b;
                }
            });
            Ok(())
        }
    }

    /// `p ← p (1 - lr λ) - m / (√v / √(1 - β2ᵗ) + ε) · lr / (1 - β1ᵗ)`.
    struct Update {
        decay: f32,
        inv_bias2_sqrt: f32,
        eps: f32,
        step: f32,
    }

    impl InplaceOp3 for Update {
        fn name(&self) -> &'static str {
            "adamw-update"
        }
        fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<()> {
            let (p, m, v) = (slice_mut(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
            same_len(p, m)?;
            same_len(p, v)?;
            p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK)).for_each(|((p, m), v)| {
                for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                    let denom = v.sqrt() * self.inv_bias2_sqrt + self.eps;
                    *p = *p * self.decay - m / denom * self.step;
                }
            });
            Ok(())
        }
    }

    /// One AdamW step of one parameter, its moments updated in place.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, c: AdamWConfig, lr: f64, bias1: f64, bias2_sqrt: f64) -> Result<()> {
        m.inplace_op2(g, &Blend { a: c.beta1 as f32, b: (1.0 - c.beta1) as f32, square: false })?;
        v.inplace_op2(g, &Blend { a: c.beta2 as f32, b: (1.0 - c.beta2) as f32, square: true })?;
        let update = Update {
            decay: (1.0 - lr * c.weight_decay) as f32,
            inv_bias2_sqrt: (1.0 / bias2_sqrt) as f32,
            eps: c.eps as f32,
            step: (lr / bias1) as f32,
        };
        p.inplace_op3(m, v, &update)?;
        Ok(())
    }

    /// `w ← d w + (1 - d) p`.
    pub fn ema(w: &Tensor, p: &Tensor, d: f64) -> Result<()> {
        w.inplace_op2(p, &Blend { a: d as f32, b: (1.0 - d) as f32, square: false })?;
        Ok(())
    }

    /// Σ g², accumulated in f64 per chunk.
    pub fn sum_of_squares(g: &Tensor) -> Result<f64> {
        let (storage, layout) = g.storage_and_layout();
        let candle_core::Storage::Cpu(s) = &*storage else { return Err(crate::Error::Invalid("gradient not on the CPU".into())) };
        let g = slice(s, layout)?;
        Ok(g.par_chunks(CHUNK).map(|c| c.iter().map(|v| (v * v) as f64).sum::<f64>()).sum())
    }
}

#[cfg(test)]
mod fused_tests {
    use super::*;
    use candle_core::Device;

    /// The in-place updates give the tensor expressions' values: the same f32 arithmetic.
    #[test]
    fn fused_updates_equal_the_tensor_expressions() {
        let dev = Device::Cpu;
        let rand = |seed: f32| Tensor::randn(seed, 1.0, 70_001, &dev).unwrap();
        let (p0, g, m0, v0) = (rand(0.0), rand(0.1), rand(0.0), rand(0.0).sqr().unwrap());
        let (c, lr, t) = (AdamWConfig::default(), 3e-4, 7);
        let mut opt = AdamW { config: c, t: t - 1, m: vec![m0.copy().unwrap()], v: vec![v0.copy().unwrap()] };
        let p = Var::from_tensor(&p0).unwrap();
        opt.step(&[&p], std::slice::from_ref(&g), lr).unwrap();
        let (bias1, bias2_sqrt) = (1.0 - c.beta1.powi(t as i32), (1.0 - c.beta2.powi(t as i32)).sqrt());
        let m = ((&m0 * c.beta1).unwrap() + (&g * (1.0 - c.beta1)).unwrap()).unwrap();
        let v = ((&v0 * c.beta2).unwrap() + (g.sqr().unwrap() * (1.0 - c.beta2)).unwrap()).unwrap();
        let denom = ((v.sqrt().unwrap() / bias2_sqrt).unwrap() + c.eps).unwrap();
        let want = ((&p0 * (1.0 - lr * c.weight_decay)).unwrap() - (m.div(&denom).unwrap() * (lr / bias1)).unwrap()).unwrap();
        let values = |t: &Tensor| t.to_vec1::<f32>().unwrap();
        assert_eq!(values(&opt.m[0]), values(&m));
        assert_eq!(values(&opt.v[0]), values(&v));
        let (got, want) = (values(p.as_tensor()), values(&want));
        assert_eq!(got, want);
        assert_ne!(got, values(&p0), "the parameter moved");

        let mut ema = Ema { decay: 0.999, updates: 5, weights: vec![m0.copy().unwrap()] };
        let d = ema.current_decay();
        ema.update(&[&p]).unwrap();
        let want = ((&m0 * d).unwrap() + (p.as_tensor() * (1.0 - d)).unwrap()).unwrap();
        assert_eq!(values(&ema.weights[0]), values(&want));

        let norm = grad_norm(std::slice::from_ref(&g)).unwrap();
        let want = values(&g).iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - want).abs() <= 1e-9 * want, "{norm} vs {want}");
    }
}
