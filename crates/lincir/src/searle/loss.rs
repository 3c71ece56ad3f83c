//! SEARLE's two losses: the cosine loss (`nn.CosineEmbeddingLoss` with target 1) and the
//! contrastive distillation loss that phi is trained with (PALAVRA's, as SEARLE's `utils.py`).

use candle_core::{DType, Tensor, D};

use crate::Result;

/// mean over rows of 1 - cos(a_i, b_i), with PyTorch's `cosine_embedding_loss` arithmetic:
/// cos = a.b / sqrt((|a|^2 + 1e-12)(|b|^2 + 1e-12)).
///
/// # Shapes
/// a, b: [batch, d] -> []
pub fn cosine_loss(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const EPS: f64 = 1e-12;
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = (a.sqr()?.sum(D::Minus1)? + EPS)?;
    let nb = (b.sqr()?.sum(D::Minus1)? + EPS)?;
    let cos = dot.div(&(na * nb)?.sqrt()?)?;
    Ok(cos.affine(-1.0, 1.0)?.mean_all()?)
}

/// The normalised-temperature cross-entropy between the OTI pseudo words (targets) and phi's
/// predictions: with u = normalise(targets), v = normalise(predicted), J = [u; v] (2B rows) and
/// S = exp(J J^T / t), each row k of J scores its partner (u_i with v_i) against every other
/// row: loss = mean_k [log(sum_{j != k} S_kj) - u_i.v_i / t].
///
/// # Shapes
/// targets, predicted: [batch, w] -> []
pub fn distillation_loss(targets: &Tensor, predicted: &Tensor, temperature: f64) -> Result<Tensor> {
    let (u, v) = (normalize(targets)?, normalize(predicted)?);
    let partner = ((&u * &v)?.sum(D::Minus1)? / temperature)?; // [B]
    let joint = Tensor::cat(&[&u, &v], 0)?; // [2B, w]
    let n = joint.dim(0)?;
    let scores = (joint.matmul(&joint.t()?)? / temperature)?.exp()?;
    let off_diagonal = Tensor::eye(n, DType::F32, joint.device())?.affine(-1.0, 1.0)?;
    let denominator = (scores * off_diagonal)?.sum(D::Minus1)?; // [2B]
    Ok((denominator.log()?.mean_all()? - partner.mean_all()?)?)
}

/// `F.normalize`: rows divided by max(|x|, 1e-12).
fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_cosine_loss_is_one_minus_the_mean_cosine() {
        let a = Tensor::new(&[[1f32, 0.0], [0.0, 2.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[3f32, 0.0], [1.0, 0.0]], &Device::Cpu).unwrap();
        let l = cosine_loss(&a, &b).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - 0.5).abs() < 1e-6, "{l}"); // rows: cos 1 and cos 0
    }

    #[test]
    fn the_distillation_loss_matches_its_definition() {
        // Two pairs in 2-D, computed by hand from the definition in f64.
        let u = [[1f64, 0.0], [0.0, 1.0]];
        let v = [[0.6f64, 0.8], [-0.8, 0.6]];
        let t = 0.5;
        let rows: Vec<[f64; 2]> = u.iter().chain(v.iter()).copied().collect();
        let dot = |a: [f64; 2], b: [f64; 2]| a[0] * b[0] + a[1] * b[1];
        let mut want = 0.0;
        for k in 0..4 {
            let denom: f64 = (0..4).filter(|&j| j != k).map(|j| (dot(rows[k], rows[j]) / t).exp()).sum();
            let partner = dot(u[k % 2], v[k % 2]) / t;
            want += denom.ln() - partner;
        }
        want /= 4.0;
        let dev = Device::Cpu;
        // Un-normalised inputs: the loss normalises them.
        let ut = Tensor::new(&[[2f32, 0.0], [0.0, 3.0]], &dev).unwrap();
        let vt = Tensor::new(&[[0.6f32, 0.8], [-1.6, 1.2]], &dev).unwrap();
        let got = distillation_loss(&ut, &vt, t).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
