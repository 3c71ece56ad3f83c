//! The OTI results of a run on disk: one small file per inverted batch under `oti/`, written
//! atomically, so that a killed run loses at most the batch in progress and resumes without
//! redoing the others. Each file carries the run's fingerprint (settings, images, concepts and
//! phrases): results of another run are refused, not mixed in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::oti::Inverted;
use crate::{Error, Result};

pub struct OtiStore {
    dir: PathBuf,
    fingerprint: String,
}

impl OtiStore {
    /// The store of the run in `output_dir` whose inputs hash to `fingerprint`.
    pub fn new(output_dir: &Path, fingerprint: String) -> Result<Self> {
        let dir = output_dir.join("oti");
        std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, format!("cannot create: {e}")))?;
        Ok(OtiStore { dir, fingerprint })
    }

    fn path(&self, batch: u64) -> PathBuf {
        self.dir.join(format!("batch-{batch:07}.safetensors"))
    }

    /// Whether any batch is stored.
    pub fn has_any(&self) -> Result<bool> {
        let mut entries = std::fs::read_dir(&self.dir).map_err(|e| Error::file(&self.dir, format!("cannot list: {e}")))?;
        Ok(entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))))
    }

    /// Batch `batch`'s words and moving average ([rows, width] each), if stored.
    pub fn load(&self, batch: u64, rows: usize, width: usize) -> Result<Option<(Tensor, Tensor)>> {
        let path = self.path(batch);
        if !path.is_file() {
            return Ok(None);
        }
        let (tensors, meta) = crate::io::read_safetensors(&path)?;
        if meta.get("fingerprint") != Some(&self.fingerprint) {
            return Err(Error::file(&path, "was inverted with other settings, images, concepts or phrases; use a new --output-dir (or delete its oti/ folder)"));
        }
        let get = |k: &str| -> Result<Tensor> {
            let t = tensors.get(k).ok_or_else(|| Error::tensor(&path, k, "missing"))?;
            if t.dims() != [rows, width] {
                return Err(Error::tensor(&path, k, format!("shape {:?}, expected [{rows}, {width}]", t.dims())));
            }
            Ok(t.to_device(&Device::Cpu)?)
        };
        Ok(Some((get("words")?, get("ema")?)))
    }

    pub fn save(&self, batch: u64, inverted: &Inverted) -> Result<()> {
        let tensors = vec![("words".to_string(), inverted.words.to_device(&Device::Cpu)?), ("ema".to_string(), inverted.ema.to_device(&Device::Cpu)?)];
        let meta = HashMap::from([("fingerprint".to_string(), self.fingerprint.clone()), ("loss".to_string(), inverted.loss.to_string())]);
        crate::io::write_safetensors_atomic(&self.path(batch), &tensors, meta)
    }
}

/// FNV-1a over a sequence of strings (each followed by a separator byte), as hex: a fingerprint
/// that is the same on every platform and Rust version.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    format!("{:016x}", crate::fnv::of_parts(parts.into_iter().map(str::as_bytes)))
}
