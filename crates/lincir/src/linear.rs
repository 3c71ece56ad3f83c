//! Trainable linear layers as PyTorch's `nn.Linear` makes them, shared by the pseudo-word
//! networks lincir trains (LinCIR's phi, Pic2Word's IM2TEXT): the default initialisation and
//! loading by state-dict name with every shape checked.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::{Error, Result};

/// (weight [out, in], bias [out]).
pub type Linear = (Var, Var);

/// PyTorch's default `nn.Linear` initialisation, U(-1/sqrt(in), 1/sqrt(in)) for weights and
/// biases, of layers of (out, in) `shapes` in order, from one seeded generator.
pub fn init(shapes: &[(usize, usize)], seed: u64, device: &Device) -> Result<Vec<Linear>> {
    let mut rng = crate::rng::Rng::new(seed);
    shapes
        .iter()
        .map(|&(o, i)| {
            let bound = 1.0 / (i as f32).sqrt();
            let mut uniform = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect() };
            let w = Tensor::from_vec(uniform(o * i), (o, i), device)?;
            let b = Tensor::from_vec(uniform(o), o, device)?;
            Ok((Var::from_tensor(&w)?, Var::from_tensor(&b)?))
        })
        .collect()
}

/// The layers `names[k]` (`{name}.weight`, `{name}.bias`) of shapes `shapes[k]` from a state
/// dict; `what` names the checkpoint kind in errors.
pub fn load(tensors: &HashMap<String, Tensor>, names: &[String], shapes: &[(usize, usize)], source: &Path, device: &Device, what: &str) -> Result<Vec<Linear>> {
    names
        .iter()
        .zip(shapes)
        .map(|(name, &(o, i))| {
            let get = |suffix: &str, shape: &[usize]| -> Result<Var> {
                let key = format!("{name}.{suffix}");
                let t = tensors.get(&key).ok_or_else(|| Error::tensor(source, &key, format!("missing from the {what} checkpoint")))?;
                if t.dims() != shape {
                    return Err(Error::tensor(source, &key, format!("has shape {:?}, expected {shape:?}", t.dims())));
                }
                Ok(Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(device)?)?)
            };
            Ok((get("weight", &[o, i])?, get("bias", &[o])?))
        })
        .collect()
}

/// The layers' tensors by state-dict name (`{name}.weight`, `{name}.bias`), in order.
pub fn named(names: &[String], layers: &[Linear]) -> Vec<(String, Tensor)> {
    names
        .iter()
        .zip(layers)
        .flat_map(|(n, (w, b))| [(format!("{n}.weight"), w.as_tensor().clone()), (format!("{n}.bias"), b.as_tensor().clone())])
        .collect()
}
