//! phi: the MLP that turns a CLIP embedding into a pseudo word, and its checkpoint formats.
//!
//! `Linear(P, 4P) -> GELU(erf) -> Dropout -> Linear(4P, 4P) -> GELU -> Dropout -> Linear(4P, W)`
//! with P the CLIP projection dimension and W the text width. Parameter names are the official
//! ones (`layers.0.*`, `layers.3.*`, `layers.6.*`: the positions in PyTorch's `nn.Sequential`), so
//! our safetensors checkpoints and the official `.pt` files share one key space.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The three linear layers by their official names.
pub const LAYER_NAMES: [&str; 3] = ["layers.0", "layers.3", "layers.6"];

/// `format` metadata of a lincir phi checkpoint.
const FORMAT: &str = "lincir-phi";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhiConfig {
    /// P: the CLIP projection dimension (phi's input).
    pub input_dim: usize,
    /// 4P in the paper.
    pub hidden_dim: usize,
    /// W: the width of CLIP's token embeddings (phi's output, a pseudo word).
    pub output_dim: usize,
    /// Dropout probability while training (0.5 in the paper); never applied at evaluation.
    pub dropout: f64,
    /// L2-normalise phi's input (training and evaluation alike). Off in the paper.
    pub l2_normalize: bool,
}

impl PhiConfig {
    /// The paper's phi for a backbone with projection dim `p` and text width `w`.
    pub fn for_backbone(p: usize, w: usize) -> Self {
        PhiConfig { input_dim: p, hidden_dim: 4 * p, output_dim: w, dropout: 0.5, l2_normalize: false }
    }

    /// (output, input) shape of each linear layer's weight.
    fn weight_shapes(&self) -> [(usize, usize); 3] {
        [(self.hidden_dim, self.input_dim), (self.hidden_dim, self.hidden_dim), (self.output_dim, self.hidden_dim)]
    }

    pub fn parameter_count(&self) -> usize {
        self.weight_shapes().iter().map(|(o, i)| o * i + o).sum()
    }
}

/// Dropout masks of one forward pass: 0 where dropped, 1/(1-p) where kept.
///
/// # Shapes
/// each: [batch, hidden_dim]
pub struct DropoutMasks {
    pub first: Tensor,
    pub second: Tensor,
}

pub struct Phi {
    pub config: PhiConfig,
    /// The three linear layers, trainable.
    layers: Vec<crate::linear::Linear>,
}

impl Phi {
    /// PyTorch's default `nn.Linear` initialisation: U(-1/sqrt(in), 1/sqrt(in)) for weights and
    /// biases, drawn from a seeded generator.
    pub fn init(config: PhiConfig, seed: u64, device: &Device) -> Result<Self> {
        Ok(Phi { config, layers: crate::linear::init(&config.weight_shapes(), seed, device)? })
    }

    /// Builds phi from named tensors (official key names), checking every shape against `config`.
    pub fn from_tensors(config: PhiConfig, tensors: &HashMap<String, Tensor>, source: &Path, device: &Device) -> Result<Self> {
        let names: Vec<String> = LAYER_NAMES.iter().map(|n| n.to_string()).collect();
        Ok(Phi { config, layers: crate::linear::load(tensors, &names, &config.weight_shapes(), source, device, "phi")? })
    }

    /// Builds phi from a state dict alone, its sizes read from the weight shapes (a `.pt` file
    /// of LinCIR or SEARLE carries no config).
    pub fn from_state_dict(tensors: &HashMap<String, Tensor>, source: &Path, device: &Device) -> Result<Self> {
        let config = config_from_shapes(source, tensors)?;
        Self::from_tensors(config, tensors, source, device)
    }

    /// Where a phi checkpoint named by the user is: a local file, or a file of a hub model
    /// repository written `owner/name/file` (optionally `owner/name@revision/file`), such as
    /// `navervision/zeroshot-cir-models/lincir_large.pt`, fetched through the hub cache.
    pub fn resolve(spec: &str) -> Result<std::path::PathBuf> {
        let path = Path::new(spec);
        if path.exists() {
            return Ok(path.to_path_buf());
        }
        let parts: Vec<&str> = spec.splitn(3, '/').collect();
        match parts.as_slice() {
            [owner, name, file] if !spec.starts_with(['.', '/', '~']) && !owner.is_empty() && !name.is_empty() && !file.is_empty() => {
                crate::clip::hub::fetch_file(&format!("{owner}/{name}"), file)
            }
            _ => Err(Error::file(path, "phi checkpoint not found (a file, or owner/repo/file on the Hugging Face hub)")),
        }
    }

    /// Loads a checkpoint: lincir's safetensors (with its config in the metadata) or an official
    /// `.pt` file (`{'epoch', 'Phi': state_dict}`; the architecture is read from the shapes).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (tensors, config) = read_checkpoint(path)?;
        Self::from_tensors(config, &tensors, path, device)
    }

    /// [`Self::load`], then checks that phi fits the CLIP backbone it will be used with.
    pub fn load_for(path: &Path, projection_dim: usize, text_width: usize, device: &Device) -> Result<Self> {
        let phi = Self::load(path, device)?;
        let c = &phi.config;
        if c.input_dim != projection_dim || c.output_dim != text_width {
            return Err(Error::file(
                path,
                format!(
                    "phi maps {} -> {}, but the CLIP model has projection dim {projection_dim} and text width {text_width}: \
                     a checkpoint for another backbone",
                    c.input_dim, c.output_dim
                ),
            ));
        }
        Ok(phi)
    }

    /// phi with the given parameter values (in [`Self::vars`] order), copied.
    pub fn with_weights(config: PhiConfig, values: &[Tensor]) -> Result<Self> {
        let vars: Vec<Var> = values.iter().map(Var::from_tensor).collect::<candle_core::Result<_>>()?;
        if vars.len() != 6 {
            return Err(Error::Invalid(format!("phi has 6 parameter tensors, got {}", vars.len())));
        }
        let layers = vars.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
        Ok(Phi { config, layers })
    }

    /// The trainable parameters in a fixed order: weight and bias of each layer.
    pub fn vars(&self) -> Vec<&Var> {
        self.layers.iter().flat_map(|(w, b)| [w, b]).collect()
    }

    /// Parameters by official name.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let names: Vec<String> = LAYER_NAMES.iter().map(|n| n.to_string()).collect();
        crate::linear::named(&names, &self.layers)
    }

    /// The forward pass. Dropout is applied only with masks (training); evaluation passes `None`.
    ///
    /// # Shapes
    /// x: [batch, input_dim] -> [batch, output_dim]
    pub fn forward(&self, x: &Tensor, masks: Option<&DropoutMasks>) -> Result<Tensor> {
        let mut h = if self.config.l2_normalize { l2_normalize(x)? } else { x.clone() };
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            if i < 2 {
                h = crate::clip::ops::gelu_erf(&h)?;
                if let Some(m) = masks {
                    h = (h * if i == 0 { &m.first } else { &m.second })?;
                }
            }
        }
        Ok(h)
    }

    /// Writes a lincir checkpoint (safetensors, official key names, config in the metadata),
    /// atomically: a crash never leaves a half-written file under `path`.
    pub fn save(&self, path: &Path, extra: &[(&str, String)]) -> Result<()> {
        let mut meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("phi_config".to_string(), serde_json::to_string(&self.config).expect("config serialises")),
        ]);
        meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        crate::io::write_safetensors_atomic(path, &self.named_tensors(), meta)
    }

    /// Writes the official checkpoint format, `torch.save({'epoch': epoch, 'Phi': state_dict})`.
    pub fn save_official(&self, path: &Path, epoch: usize) -> Result<()> {
        crate::torch_save::save(path, epoch, "Phi", &self.named_tensors())
    }

    /// Sets the parameter values (in [`Self::vars`] order).
    pub fn set_from(&self, values: &[Tensor]) -> Result<()> {
        for (v, t) in self.vars().into_iter().zip(values) {
            v.set(t)?;
        }
        Ok(())
    }
}

/// x / ||x|| over the last dimension.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(candle_core::D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// Reads the tensors of a phi checkpoint in either format and the config they imply.
fn read_checkpoint(path: &Path) -> Result<(HashMap<String, Tensor>, PhiConfig)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    if bytes.starts_with(b"PK") {
        return read_official(path);
    }
    let (tensors, meta) = crate::io::parse_safetensors(path, &bytes, "neither a safetensors file nor an official .pt checkpoint")?;
    let config = match meta.get("phi_config") {
        Some(json) => serde_json::from_str(json).map_err(|e| Error::file(path, format!("malformed phi_config metadata: {e}")))?,
        None => config_from_shapes(path, &tensors)?,
    };
    Ok((tensors, config))
}

/// The official format: a PyTorch zip checkpoint holding `{'epoch': n, 'Phi': state_dict}`.
/// candle's pickle reader parses the data and executes nothing.
fn read_official(path: &Path) -> Result<(HashMap<String, Tensor>, PhiConfig)> {
    let entries = candle_core::pickle::read_all_with_key(path, Some("Phi"))
        .map_err(|e| Error::file(path, format!("not a readable official phi checkpoint (expected a dict with key 'Phi'): {e}")))?;
    let tensors: HashMap<String, Tensor> = entries.into_iter().collect();
    let config = config_from_shapes(path, &tensors)?;
    Ok((tensors, config))
}

/// phi's architecture from its weight shapes (the official files carry no config).
fn config_from_shapes(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<PhiConfig> {
    let dims = |key: &str| -> Result<(usize, usize)> {
        let t = tensors.get(key).ok_or_else(|| Error::tensor(path, key, "missing: not a phi checkpoint"))?;
        t.dims2().map_err(|_| Error::tensor(path, key, format!("has shape {:?}, expected a matrix", t.dims())))
    };
    let (hidden, input) = dims("layers.0.weight")?;
    let (output, _) = dims("layers.6.weight")?;
    Ok(PhiConfig { input_dim: input, hidden_dim: hidden, output_dim: output, dropout: 0.5, l2_normalize: false })
}
