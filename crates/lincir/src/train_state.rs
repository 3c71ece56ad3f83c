//! What the image-trained peers (`train-pic2word`, `train-searle`) share to resume exactly: a
//! state file holding the network, each AdamW group's moments, the step and the settings,
//! written atomically; the check that a run is resumed with its own settings; and the metrics
//! log cut back to the resumed step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{de::DeserializeOwned, Serialize};

use crate::smp::optim::AdamW;
use crate::{Error, Result};

/// Writes `path`: the network's tensors, then `adam.{group}.{i}.{m,v}` for each AdamW group
/// (all groups step together: one update count).
pub fn save<C: Serialize>(path: &Path, step: u64, network: Vec<(String, Tensor)>, groups: &[(&str, &AdamW)], cfg: &C) -> Result<()> {
    let mut tensors = network;
    for (group, adam) in groups {
        for (i, (m, v)) in adam.m.iter().zip(&adam.v).enumerate() {
            tensors.push((format!("adam.{group}.{i}.m"), m.clone()));
            tensors.push((format!("adam.{group}.{i}.v"), v.clone()));
        }
    }
    let tensors = tensors.into_iter().map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?))).collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([
        ("step".to_string(), step.to_string()),
        ("adam_t".to_string(), groups.first().map_or(0, |(_, a)| a.t).to_string()),
        ("config".to_string(), serde_json::to_string(cfg).expect("config serialises")),
    ]);
    crate::io::write_safetensors_atomic(path, &tensors, meta)
}

/// A state read back by [`load`].
pub struct Saved {
    pub path: PathBuf,
    pub step: u64,
    pub tensors: HashMap<String, Tensor>,
    adam_t: u64,
}

/// Reads the state at `path`. Its settings, once `extended` has given them the current run's
/// number of steps (a run may be extended), must equal `cfg`; `command` names the writer.
pub fn load<C: Serialize + DeserializeOwned + PartialEq>(path: &Path, cfg: &C, extended: impl Fn(C) -> C, command: &str) -> Result<Saved> {
    let (tensors, meta) = crate::io::read_safetensors(path)?;
    let saved: C = meta
        .get("config")
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or_else(|| Error::file(path, format!("no training settings in the metadata: not a {command} state")))?;
    let shown = serde_json::to_string(&saved).unwrap_or_default();
    if extended(saved) != *cfg {
        return Err(Error::file(path, format!("was written with other settings ({shown}); resume with the same ones, or use a new --output-dir")));
    }
    let number = |k: &str| meta.get(k).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| Error::file(path, format!("metadata {k} missing")));
    Ok(Saved { path: path.to_path_buf(), step: number("step")?, adam_t: number("adam_t")?, tensors })
}

impl Saved {
    /// Puts group `group`'s moments and update count back into `adam`.
    pub fn restore(&self, group: &str, adam: &mut AdamW, device: &Device) -> Result<()> {
        adam.t = self.adam_t;
        for i in 0..adam.m.len() {
            let get = |k: String| -> Result<Tensor> { Ok(self.tensors.get(&k).ok_or_else(|| Error::tensor(&self.path, &k, "missing"))?.to_device(device)?) };
            adam.m[i] = get(format!("adam.{group}.{i}.m"))?;
            adam.v[i] = get(format!("adam.{group}.{i}.v"))?;
        }
        Ok(())
    }
}

/// Creates the output folder; whether a run there is resumed (`resume` and a state exists). A
/// state there without `resume` is an error: a run is never overwritten.
pub fn start(dir: &Path, state_file: &str, resume: bool) -> Result<bool> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create the output folder: {e}")))?;
    let has_state = dir.join(state_file).is_file();
    if has_state && !resume {
        return Err(Error::file(dir.join(state_file), "a run is already here: pass --resume to continue it, or choose another --output-dir"));
    }
    Ok(has_state)
}

/// Keeps the metric lines of steps up to `step` (a resumed run rewrites what followed) and opens
/// the log for appending.
pub fn metrics_from(path: &Path, step: u64) -> Result<std::fs::File> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let kept: String = text
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
            .map(|l| format!("{l}\n"))
            .collect();
        crate::io::write_atomic(path, kept.as_bytes())?;
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::file(path, e))
}
