//! Learning-rate schedules: the six of the official training script, as multipliers of the base
//! learning rate at each optimiser step (0-based), with the formulas of the `diffusers` /
//! `transformers` schedulers it uses (cosine: half a cycle; cosine with restarts: one cycle;
//! polynomial: power 1 down to 1e-7).

use std::f64::consts::PI;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    ConstantWithWarmup,
    Linear,
    Cosine,
    CosineWithRestarts,
    Polynomial,
}

pub const POLYNOMIAL_END_LR: f64 = 1e-7;

impl LrSchedule {
    pub const NAMES: [&'static str; 6] =
        ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"];

    pub fn parse(name: &str) -> Option<Self> {
        use LrSchedule::*;
        Some(match name {
            "constant" => Constant,
            "constant_with_warmup" => ConstantWithWarmup,
            "linear" => Linear,
            "cosine" => Cosine,
            "cosine_with_restarts" => CosineWithRestarts,
            "polynomial" => Polynomial,
            _ => return None,
        })
    }

    /// The learning rate at optimiser step `step` (0-based) of `total`, with `warmup` steps.
    pub fn lr(&self, base: f64, step: u64, warmup: u64, total: u64) -> f64 {
        use LrSchedule::*;
        let (s, w, t) = (step as f64, warmup as f64, total as f64);
        if *self != Constant && step < warmup {
            return base * s / w.max(1.0);
        }
        let progress = (s - w) / (t - w).max(1.0);
        let factor = match self {
            Constant | ConstantWithWarmup => 1.0,
            Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            Cosine => (0.5 * (1.0 + (PI * progress).cos())).max(0.0),
            CosineWithRestarts => {
                if progress >= 1.0 {
                    0.0
                } else {
                    (0.5 * (1.0 + (PI * (progress % 1.0)).cos())).max(0.0)
                }
            }
            Polynomial => {
                if step > total {
                    POLYNOMIAL_END_LR / base
                } else {
                    let remaining = 1.0 - (s - w) / (t - w).max(1.0);
                    ((base - POLYNOMIAL_END_LR) * remaining + POLYNOMIAL_END_LR) / base
                }
            }
        };
        base * factor
    }
}

#[cfg(test)]
mod tests {
    use super::LrSchedule::*;
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_then_shape() {
        // warm-up 10 of 110 steps, base 1.0
        assert!(close(ConstantWithWarmup.lr(1.0, 5, 10, 110), 0.5));
        assert!(close(Constant.lr(1.0, 5, 10, 110), 1.0));
        assert!(close(Linear.lr(1.0, 60, 10, 110), 0.5));
        assert!(close(Cosine.lr(1.0, 60, 10, 110), 0.5));
        assert!(close(Cosine.lr(1.0, 110, 10, 110), 0.0));
        assert!(close(CosineWithRestarts.lr(1.0, 60, 10, 110), 0.5));
        assert!(close(Polynomial.lr(1.0, 60, 10, 110), 0.5 * (1.0 - 1e-7) + 1e-7));
        assert!(close(Polynomial.lr(1.0, 200, 10, 110), 1e-7));
    }

    #[test]
    fn names_round_trip() {
        for n in LrSchedule::NAMES {
            let s = LrSchedule::parse(n).unwrap();
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{n}\""));
        }
    }
}
