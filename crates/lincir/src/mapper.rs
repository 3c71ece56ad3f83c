//! The networks that turn an image embedding into a pseudo word, for each method lincir compares
//! (docs/PEERS.md): LinCIR's and SEARLE's phi (one architecture, [`Phi`]) and Pic2Word's
//! IM2TEXT. Which one a checkpoint holds is read from its weights (key names and shapes), never
//! from its file name.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::method::Method;
use crate::phi::Phi;
use crate::{Error, Result};

/// Pic2Word's mapping network (`IM2TEXT` of google-research/composed_image_retrieval,
/// model/model.py): `n` blocks of Linear -> Dropout -> ReLU, then `fc_out`. Dropout is the
/// identity at evaluation; only evaluation is supported.
pub struct Im2Text {
    /// (weight [out, in], bias [out]) of each block, in order.
    blocks: Vec<(Tensor, Tensor)>,
    fc_out: (Tensor, Tensor),
}

impl Im2Text {
    pub fn input_dim(&self) -> usize {
        self.blocks[0].0.dim(1).unwrap_or(0)
    }

    pub fn output_dim(&self) -> usize {
        self.fc_out.0.dim(0).unwrap_or(0)
    }

    /// Builds the network from its state dict (keys with or without DDP's `module.` prefix).
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, source: &Path, device: &Device) -> Result<Self> {
        let get = |key: &str| -> Result<Tensor> {
            let t = tensors.get(key).ok_or_else(|| Error::tensor(source, key, "missing from the Pic2Word checkpoint"))?;
            Ok(t.to_dtype(DType::F32)?.to_device(device)?)
        };
        let linear = |prefix: &str, input: usize| -> Result<(Tensor, Tensor)> {
            let (w, b) = (get(&format!("{prefix}.weight"))?, get(&format!("{prefix}.bias"))?);
            let (out, inp) = w.dims2().map_err(|_| Error::tensor(source, &format!("{prefix}.weight"), "is not a matrix"))?;
            if inp != input && input != 0 {
                return Err(Error::tensor(source, &format!("{prefix}.weight"), format!("takes {inp} inputs, the previous layer gives {input}")));
            }
            if b.dims() != [out] {
                return Err(Error::tensor(source, &format!("{prefix}.bias"), format!("has shape {:?}, expected [{out}]", b.dims())));
            }
            Ok((w, b))
        };
        let mut blocks = Vec::new();
        let mut width = 0;
        while tensors.contains_key(&format!("layers.{}.0.weight", blocks.len())) {
            let block = linear(&format!("layers.{}.0", blocks.len()), width)?;
            width = block.0.dim(0)?;
            blocks.push(block);
        }
        if blocks.is_empty() {
            return Err(Error::tensor(source, "layers.0.0.weight", "missing from the Pic2Word checkpoint"));
        }
        let fc_out = linear("fc_out", width)?;
        Ok(Im2Text { blocks, fc_out })
    }

    /// # Shapes
    /// x: [batch, input_dim] -> [batch, output_dim]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (w, b) in &self.blocks {
            h = h.matmul(&w.t()?)?.broadcast_add(b)?.relu()?;
        }
        Ok(h.matmul(&self.fc_out.0.t()?)?.broadcast_add(&self.fc_out.1)?)
    }
}

/// A pseudo-word network of any supported architecture.
pub enum Mapper {
    /// LinCIR's and SEARLE's phi (`layers.0/3/6`).
    Phi(Phi),
    /// Pic2Word's IM2TEXT (`layers.{i}.0`, `fc_out`).
    Im2Text(Im2Text),
}

/// The architecture a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Phi,
    Im2Text,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Phi => "phi (LinCIR / SEARLE)",
            Architecture::Im2Text => "IM2TEXT (Pic2Word)",
        }
    }
}

/// Recognises the architecture from the key names (DDP's `module.` already stripped).
pub fn recognise(keys: &[&str], source: &Path) -> Result<Architecture> {
    let has = |k: &str| keys.contains(&k);
    if has("layers.0.weight") && has("layers.3.weight") && has("layers.6.weight") {
        return Ok(Architecture::Phi);
    }
    if has("fc_out.weight") && has("layers.0.0.weight") {
        return Ok(Architecture::Im2Text);
    }
    let mut found: Vec<&str> = keys.to_vec();
    found.sort();
    let shown: Vec<&str> = found.iter().take(8).copied().collect();
    Err(Error::file(
        source,
        format!(
            "not a pseudo-word network lincir knows (LinCIR/SEARLE phi: layers.0/3/6; Pic2Word IM2TEXT: layers.N.0, fc_out); found {} tensors: {}{}",
            found.len(),
            shown.join(", "),
            if found.len() > shown.len() { ", ..." } else { "" }
        ),
    ))
}

/// The state dict of a PyTorch checkpoint: under `'Phi'` (LinCIR, SEARLE), under
/// `'state_dict_img2text'` (Pic2Word), `'state_dict'`, or the top level; DDP's `module.`
/// prefixes removed.
fn read_torch_state_dict(path: &Path) -> Result<HashMap<String, Tensor>> {
    let mut last = String::new();
    // Pic2Word's training checkpoints hold the whole CLIP under 'state_dict' beside the mapper:
    // 'state_dict_img2text' is looked at first.
    for key in [Some("Phi"), Some("state_dict_img2text"), Some("state_dict"), None] {
        match candle_core::pickle::read_all_with_key(path, key) {
            Ok(entries) if !entries.is_empty() => {
                return Ok(entries.into_iter().map(|(k, t)| (k.strip_prefix("module.").unwrap_or(&k).to_string(), t)).collect());
            }
            Ok(_) => {}
            Err(e) => last = e.to_string(),
        }
    }
    Err(Error::file(
        path,
        format!("not a readable PyTorch checkpoint with tensors under 'Phi', 'state_dict_img2text', 'state_dict' or at the top level ({last})"),
    ))
}

impl Mapper {
    /// Loads a checkpoint of any supported format (lincir safetensors, LinCIR's or SEARLE's
    /// `.pt`, Pic2Word's `.pt`) and recognises its architecture from its weights.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Ok(Self::load_recorded(path, device)?.0)
    }

    /// [`Self::load`], and the method the file says it was trained for: `method` in a lincir
    /// safetensors checkpoint's metadata (`train-searle` writes `searle`); None for other files.
    fn load_recorded(path: &Path, device: &Device) -> Result<(Self, Option<Method>)> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        if !bytes.starts_with(b"PK") {
            // safetensors: lincir's own phi (its config in the metadata), or a converted peer.
            let (tensors, meta) = crate::io::parse_safetensors(path, &bytes, "neither a safetensors file nor a PyTorch .pt checkpoint")?;
            let recorded = meta.get("method").and_then(|m| Method::parse(m));
            let keys: Vec<&str> = tensors.keys().map(String::as_str).collect();
            let mapper = match recognise(&keys, path)? {
                Architecture::Phi => Mapper::Phi(Phi::load(path, device)?),
                Architecture::Im2Text => Mapper::Im2Text(Im2Text::from_tensors(&tensors, path, device)?),
            };
            return Ok((mapper, recorded));
        }
        let tensors = read_torch_state_dict(path)?;
        let keys: Vec<&str> = tensors.keys().map(String::as_str).collect();
        let mapper = match recognise(&keys, path)? {
            Architecture::Phi => Mapper::Phi(Phi::from_state_dict(&tensors, path, device)?),
            Architecture::Im2Text => Mapper::Im2Text(Im2Text::from_tensors(&tensors, path, device)?),
        };
        Ok((mapper, None))
    }

    /// [`Self::load_recorded`], then checks that the network fits the CLIP backbone.
    pub fn load_for(path: &Path, projection_dim: usize, text_width: usize, device: &Device) -> Result<(Self, Option<Method>)> {
        let (m, recorded) = Self::load_recorded(path, device)?;
        let (i, o) = (m.input_dim(), m.output_dim());
        if i != projection_dim || o != text_width {
            return Err(Error::file(
                path,
                format!(
                    "this {} maps {i} -> {o}, but the CLIP model has projection dim {projection_dim} and text width {text_width}: \
                     a checkpoint for another backbone",
                    m.architecture().name()
                ),
            ));
        }
        Ok((m, recorded))
    }

    pub fn architecture(&self) -> Architecture {
        match self {
            Mapper::Phi(_) => Architecture::Phi,
            Mapper::Im2Text(_) => Architecture::Im2Text,
        }
    }

    pub fn input_dim(&self) -> usize {
        match self {
            Mapper::Phi(p) => p.config.input_dim,
            Mapper::Im2Text(m) => m.input_dim(),
        }
    }

    pub fn output_dim(&self) -> usize {
        match self {
            Mapper::Phi(p) => p.config.output_dim,
            Mapper::Im2Text(m) => m.output_dim(),
        }
    }

    /// The pseudo words of un-normalised image embeddings (evaluation: no dropout).
    ///
    /// # Shapes
    /// x: [batch, input_dim] -> [batch, output_dim]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mapper::Phi(p) => p.forward(x, None),
            Mapper::Im2Text(m) => m.forward(x),
        }
    }
}

/// Anything that maps image embeddings to pseudo words at evaluation.
pub trait PseudoWordNet: Sync {
    /// # Shapes
    /// x: [batch, input_dim] un-normalised image embeddings -> [batch, text width]
    fn pseudo_words(&self, x: &Tensor) -> Result<Tensor>;
}

impl<T: PseudoWordNet + ?Sized> PseudoWordNet for &T {
    fn pseudo_words(&self, x: &Tensor) -> Result<Tensor> {
        (**self).pseudo_words(x)
    }
}

impl PseudoWordNet for Phi {
    fn pseudo_words(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x, None)
    }
}

impl PseudoWordNet for Mapper {
    fn pseudo_words(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x)
    }
}
