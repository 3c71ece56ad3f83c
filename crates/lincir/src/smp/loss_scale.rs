//! Dynamic loss scaling for a frozen tower in f16 (`--dtype f16`), as the original's
//! `accelerate --mixed_precision fp16` does with PyTorch's `GradScaler`.
//!
//! The SMP loss is a mean over batch x projection dims (512 x 768 at ViT-L/14), so the gradient
//! entering the text tower is about 1e-6 per value: below f16's smallest normal number (6.1e-5),
//! where f16 keeps 3-4 significant bits or none. Multiplying the loss by a large power of two
//! before the backward pass lifts those gradients into f16's range; phi's gradients (f32) are
//! divided by it again before clipping and AdamW, exactly (a power of two). When a gradient
//! overflows (f16's largest value is 65504), the step's update is skipped and the scale halved;
//! after 2,000 steps without overflow it doubles (GradScaler's defaults: 2^16, 0.5, 2, 2000).
//! bf16 and f32 have f32's exponent range and need none of this.

/// The current scale and how many steps in a row had finite gradients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    scale: f64,
    good_steps: u64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale { scale: Self::INITIAL, good_steps: 0 }
    }
}

impl LossScale {
    pub const INITIAL: f64 = 65536.0;
    pub const GROWTH_INTERVAL: u64 = 2000;
    /// Never below one: gradients that overflow even then are not finite at all, and training
    /// stops there (train.rs) instead of skipping every step.
    pub const MIN: f64 = 1.0;

    /// As a training state keeps it: "SCALE GOOD_STEPS".
    pub fn to_meta(&self) -> String {
        format!("{} {}", self.scale, self.good_steps)
    }

    /// A scale read back from [`Self::to_meta`]; None unless a power of two of at least 1 and a
    /// step count.
    pub fn from_meta(text: &str) -> Option<Self> {
        let (scale, good_steps) = text.trim().split_once(' ')?;
        let (scale, good_steps) = (scale.parse::<f64>().ok()?, good_steps.trim().parse().ok()?);
        (scale.is_finite() && scale >= Self::MIN && scale.log2().fract() == 0.0).then_some(LossScale { scale, good_steps })
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn good_steps(&self) -> u64 {
        self.good_steps
    }

    /// After a step's backward pass: whether its update may be applied (every gradient finite),
    /// and the scale for the next step.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale * 0.5).max(Self::MIN);
            self.good_steps = 0;
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_and_doubles_after_the_growth_interval() {
        let mut s = LossScale::default();
        assert_eq!(s.scale(), 65536.0);
        assert!(!s.update(false));
        assert_eq!((s.scale(), s.good_steps()), (32768.0, 0));
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale(), 32768.0);
        assert!(s.update(true));
        assert_eq!((s.scale(), s.good_steps()), (65536.0, 0));
        for _ in 0..40 {
            s.update(false);
        }
        assert_eq!(s.scale(), 1.0);
    }

    #[test]
    fn restores_only_powers_of_two() {
        let s = LossScale { scale: 1024.0, good_steps: 7 };
        assert_eq!(LossScale::from_meta(&s.to_meta()), Some(s));
        assert_eq!(LossScale::from_meta("1000 0"), None);
        assert_eq!(LossScale::from_meta("NaN 0"), None);
        assert_eq!(LossScale::from_meta("0.5 0"), None);
        assert_eq!(LossScale::from_meta("1024"), None);
    }
}
