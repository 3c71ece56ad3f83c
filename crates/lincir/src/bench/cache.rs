//! The gallery feature cache: image embeddings computed once per (model, image file) and reused
//! across runs, so a second evaluation (another phi, a baseline) costs only the text side.
//!
//! Layout: `{root}/features/{model key}/{image list key}.safetensors`, tensor `features` [N, P]
//! and metadata `stamps` (per image: [size, mtime in ns] of the file when it was embedded, or null
//! when it was not). The model key hashes `config.json`, the preprocessing settings and the
//! weight files' names, sizes and modification times; the list key hashes the image list (paths
//! and regions). A row is reused only if its file still has the same size and mtime.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use candle_core::{Device, Tensor};

use super::images::BenchImage;
use crate::clip::Clip;
use crate::{Error, Result};

/// Environment variable that moves the cache (else `$XDG_CACHE_HOME/lincir` or `~/.cache/lincir`).
pub const CACHE_ENV: &str = "LINCIR_CACHE";

pub struct FeatureCache {
    dir: PathBuf,
    dim: usize,
}

/// (size, mtime in ns) of a file, if it can be read.
pub fn stamp(path: &Path) -> Option<(u64, u128)> {
    stamp_of(&std::fs::metadata(path).ok()?)
}

/// (size, mtime in ns) from a file's metadata, when it has a modification time.
pub fn stamp_of(m: &std::fs::Metadata) -> Option<(u64, u128)> {
    let mtime = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    Some((m.len(), mtime))
}

/// Where the feature cache lives unless `--cache-dir` says: `$LINCIR_CACHE`, else
/// `$XDG_CACHE_HOME/lincir`, else `.cache/lincir` in the home folder (`%USERPROFILE%` on
/// Windows, which has no `HOME`: beside the Hugging Face cache, as the hub's libraries put it).
pub fn default_root() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CACHE_ENV) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(p).join("lincir"));
    }
    let home = std::env::var_os("HOME").or_else(|| if cfg!(windows) { std::env::var_os("USERPROFILE") } else { None });
    home.map(|h| PathBuf::from(h).join(".cache").join("lincir"))
}

/// A key that changes when the model's image embeddings could change: `config.json`, the
/// preprocessing settings, the weight files' names, sizes and modification times, and the dtype.
pub fn model_key(clip: &Clip) -> Result<String> {
    let config = std::fs::read(clip.dir.join("config.json")).map_err(|e| Error::file(clip.dir.join("config.json"), e))?;
    let mut parts: Vec<Vec<u8>> = vec![config, clip.preprocess.cache_key().into_bytes()];
    for f in crate::clip::weights::weight_files_in(&clip.dir)? {
        let (size, mtime) = stamp(&f).unwrap_or((0, 0));
        parts.push(format!("{}:{size}:{mtime}", f.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()).into_bytes());
    }
    // Embeddings computed in another precision differ: they are another key (f32 adds nothing,
    // so keys, caches and indexes made before dtypes existed stay valid).
    if clip.dtype() != candle_core::DType::F32 {
        parts.push(format!("dtype:{}", crate::device::dtype_name(clip.dtype())).into_bytes());
    }
    Ok(format!("{:016x}", crate::fnv::of_parts(parts.iter().map(Vec::as_slice))))
}

impl FeatureCache {
    /// The cache of `clip`'s image embeddings under `root`.
    pub fn for_model(clip: &Clip, root: &Path) -> Result<Self> {
        let dir = root.join("features").join(model_key(clip)?);
        std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, format!("cannot create the feature cache: {e}")))?;
        Ok(FeatureCache { dir, dim: clip.config.projection_dim })
    }

    fn file_for(&self, images: &[BenchImage]) -> PathBuf {
        let keys: Vec<String> = images.iter().map(BenchImage::key).collect();
        self.dir.join(format!("{:016x}-{}.safetensors", crate::fnv::of_parts(keys.iter().map(|k| k.as_bytes())), images.len()))
    }

    /// Cached rows of still-unchanged files; `None` for the rest. A corrupt cache file is ignored.
    pub fn lookup(&self, images: &[BenchImage]) -> Result<Vec<Option<Vec<f32>>>> {
        let mut out = vec![None; images.len()];
        let path = self.file_for(images);
        let Ok((tensors, meta)) = crate::io::read_safetensors(&path) else { return Ok(out) };
        let (Some(features), Some(stamps)) = (tensors.get("features"), meta.get("stamps")) else { return Ok(out) };
        let Ok(stamps) = serde_json::from_str::<Vec<Option<(u64, u128)>>>(stamps) else { return Ok(out) };
        if features.dims() != [images.len(), self.dim] || stamps.len() != images.len() {
            return Ok(out);
        }
        let rows = features.to_vec2::<f32>()?;
        for (i, (row, saved)) in rows.into_iter().zip(stamps).enumerate() {
            if saved.is_some() && saved == stamp(&images[i].path) {
                out[i] = Some(row);
            }
        }
        Ok(out)
    }

    /// Saves the rows computed so far (atomically).
    pub fn store(&self, images: &[BenchImage], rows: &[Option<Vec<f32>>]) -> Result<()> {
        let stamps: Vec<Option<(u64, u128)>> =
            rows.iter().zip(images).map(|(r, img)| r.as_ref().and_then(|_| stamp(&img.path))).collect();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.clone().unwrap_or_else(|| vec![0.0; self.dim])).collect();
        let features = Tensor::from_vec(flat, (rows.len(), self.dim), &Device::Cpu)?;
        let meta = std::collections::HashMap::from([("stamps".to_string(), serde_json::to_string(&stamps).expect("stamps serialise"))]);
        crate::io::write_safetensors_atomic(&self.file_for(images), &[("features".to_string(), features)], meta)
    }
}
