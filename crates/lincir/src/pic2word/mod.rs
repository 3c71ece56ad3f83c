//! Training Pic2Word's mapping network (Saito et al., CVPR 2023) from unlabelled images, so that
//! LinCIR can be compared with it on any backbone and any image collection (docs/TRAINING.md,
//! "Pic2Word"). The network is IM2TEXT: `layers` blocks of Linear -> Dropout -> ReLU, then
//! `fc_out`; its checkpoints use Pic2Word's key names and load wherever a pseudo-word network
//! does (`eval --phi pic2word=...`, `search`, `serve`).

pub mod augment;
mod loss;
pub mod train;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::Result;

pub use loss::{contrastive_loss, loss_and_grads, prompt_ids, PROMPT};

/// IM2TEXT's sizes and dropout (Pic2Word's defaults: 2 blocks 512 wide, dropout 0.1).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Im2TextConfig {
    pub input_dim: usize,
    pub hidden_dim: usize,
    pub output_dim: usize,
    pub layers: usize,
    pub dropout: f64,
}

impl Im2TextConfig {
    /// Pic2Word's network for a backbone of projection dim `p` and text width `w`.
    pub fn for_backbone(p: usize, w: usize) -> Self {
        Im2TextConfig { input_dim: p, hidden_dim: 512, output_dim: w, layers: 2, dropout: 0.1 }
    }

    /// (out, in) of each linear layer: the blocks, then `fc_out`.
    fn shapes(&self) -> Vec<(usize, usize)> {
        let mut s: Vec<(usize, usize)> = (0..self.layers).map(|i| (self.hidden_dim, if i == 0 { self.input_dim } else { self.hidden_dim })).collect();
        s.push((self.output_dim, self.hidden_dim));
        s
    }

    /// The Pic2Word state-dict name of each linear layer.
    fn layer_names(&self) -> Vec<String> {
        (0..self.layers).map(|i| format!("layers.{i}.0")).chain(["fc_out".to_string()]).collect()
    }
}

/// IM2TEXT with trainable parameters.
pub struct Im2TextNet {
    pub config: Im2TextConfig,
    /// Each linear layer, `fc_out` last.
    linears: Vec<crate::linear::Linear>,
}

const FORMAT: &str = "lincir-im2text-1";

impl Im2TextNet {
    /// PyTorch's default `nn.Linear` initialisation (U(-1/sqrt(in), 1/sqrt(in)) for weights and
    /// biases), from a seeded generator.
    pub fn init(config: Im2TextConfig, seed: u64, device: &Device) -> Result<Self> {
        Ok(Im2TextNet { config, linears: crate::linear::init(&config.shapes(), seed, device)? })
    }

    /// The network from Pic2Word-named tensors, every shape checked against `config`.
    pub fn from_tensors(config: Im2TextConfig, tensors: &HashMap<String, Tensor>, source: &Path, device: &Device) -> Result<Self> {
        Ok(Im2TextNet { config, linears: crate::linear::load(tensors, &config.layer_names(), &config.shapes(), source, device, "IM2TEXT")? })
    }

    /// The trainable parameters: weight and bias of each linear layer, `fc_out` last.
    pub fn vars(&self) -> Vec<&Var> {
        self.linears.iter().flat_map(|(w, b)| [w, b]).collect()
    }

    /// Whether parameter `i` of [`Self::vars`] is a bias (Pic2Word decays no bias).
    pub fn is_bias(i: usize) -> bool {
        i % 2 == 1
    }

    /// Parameters by Pic2Word's names, in [`Self::vars`] order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        crate::linear::named(&self.config.layer_names(), &self.linears)
    }

    /// The forward pass; dropout only with masks (one [batch, hidden] inverted mask per block).
    ///
    /// # Shapes
    /// x: [batch, input_dim] -> [batch, output_dim]
    pub fn forward(&self, x: &Tensor, masks: Option<&[Tensor]>) -> Result<Tensor> {
        let mut h = x.clone();
        let (fc_out, blocks) = self.linears.split_last().expect("fc_out");
        for (i, (w, b)) in blocks.iter().enumerate() {
            h = h.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            if let Some(m) = masks {
                h = (h * &m[i])?;
            }
            h = h.relu()?;
        }
        Ok(h.matmul(&fc_out.0.as_tensor().t()?)?.broadcast_add(fc_out.1.as_tensor())?)
    }

    /// Writes the network as safetensors with Pic2Word's key names (config in the metadata),
    /// atomically.
    pub fn save(&self, path: &Path, extra: &[(&str, String)]) -> Result<()> {
        let mut meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("im2text_config".to_string(), serde_json::to_string(&self.config).expect("config serialises")),
        ]);
        meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let tensors: Vec<(String, Tensor)> = self.named_tensors().into_iter().map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?))).collect::<Result<_>>()?;
        crate::io::write_safetensors_atomic(path, &tensors, meta)
    }
}
