//! Reading CLIP weights from `model.safetensors`, sharded safetensors with an index, or PyTorch's
//! `pytorch_model.bin` (zip + pickle, parsed as data by candle, never executed). Tensors are
//! converted from their stored dtype (f32, f16, bf16) to the compute dtype on load, and every
//! error names the file and the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{safetensors::MmapedSafetensors, DType, Device, Tensor};

use crate::{Error, Result};

pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const PYTORCH_FILE: &str = "pytorch_model.bin";

enum Source {
    Safetensors(MmapedSafetensors),
    Pth(candle_core::pickle::PthTensors),
}

struct File {
    path: PathBuf,
    source: Source,
}

/// A set of weight files, searchable by tensor name.
pub struct Weights {
    files: Vec<File>,
    /// tensor name -> index into `files`
    index: HashMap<String, usize>,
    dtype: DType,
    /// The dtype of the linear layers' weights ([`Self::get_matrix`]): the compute dtype, or
    /// bf16 on the CPU, where `--dtype bf16` stores the matrices in bf16 and computes in f32.
    matrix_dtype: DType,
    device: Device,
}

impl Weights {
    /// Finds the weights of a model directory: `model.safetensors`, else the shards listed in
    /// `model.safetensors.index.json`, else `pytorch_model.bin`.
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let files = weight_files_in(dir)?;
        Self::from_files(&files, dtype, device)
    }

    /// Opens the given files (`.safetensors` or PyTorch `.bin`/`.pt`/`.pth`).
    pub fn from_files(paths: &[PathBuf], dtype: DType, device: &Device) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            if !path.is_file() {
                return Err(Error::file(path, "weight file not found"));
            }
            let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
            let (source, names): (Source, Vec<String>) = if is_safetensors {
                // SAFETY: the file is mapped read-only; like every mmap user we rely on nobody
                // truncating it while we run.
                let st = unsafe { MmapedSafetensors::new(path) }
                    .map_err(|e| Error::file(path, format!("not a readable safetensors file: {}", root_cause(&e))))?;
                let names = st.tensors().into_iter().map(|(n, _)| n).collect();
                (Source::Safetensors(st), names)
            } else {
                let pth = candle_core::pickle::PthTensors::new(path, None)
                    .map_err(|e| Error::file(path, format!("not a readable PyTorch checkpoint: {}", root_cause(&e))))?;
                let names = pth.tensor_infos().keys().cloned().collect();
                (Source::Pth(pth), names)
            };
            for n in names {
                index.insert(n, i);
            }
            files.push(File { path: path.clone(), source });
        }
        Ok(Weights { files, index, dtype, matrix_dtype: dtype, device: device.clone() })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Stores the linear layers' weights in `dtype` (see [`Self::get_matrix`]).
    pub fn with_matrix_dtype(mut self, dtype: DType) -> Self {
        self.matrix_dtype = dtype;
        self
    }

    /// [`Self::get`] for a linear layer's weight, in the matrix dtype.
    pub fn get_matrix(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name, shape)?;
        if self.matrix_dtype == self.dtype {
            return Ok(t);
        }
        t.to_dtype(self.matrix_dtype).map_err(|e| Error::tensor(self.describe(), name, format!("cannot be converted: {e}")))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The file(s) the weights come from, for error messages.
    pub fn describe(&self) -> PathBuf {
        match self.files.as_slice() {
            [one] => one.path.clone(),
            many => many.first().and_then(|f| f.path.parent()).map(Path::to_path_buf).unwrap_or_default(),
        }
    }

    /// Loads tensor `name`, checks that its shape is `shape`, converts it to the compute dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let Some(&i) = self.index.get(name) else {
            return Err(Error::tensor(self.describe(), name, format!("missing (expected shape {shape:?})")));
        };
        let file = &self.files[i];
        let loaded = match &file.source {
            Source::Safetensors(st) => st.load(name, &self.device),
            Source::Pth(pth) => pth.get(name).and_then(|t| t.ok_or_else(|| candle_core::Error::Msg("missing".into()))),
        }
        .map_err(|e| Error::tensor(&file.path, name, format!("cannot be read: {}", root_cause(&e))))?;
        if loaded.dims() != shape {
            return Err(Error::tensor(
                &file.path,
                name,
                format!("has shape {:?}, expected {shape:?} from config.json", loaded.dims()),
            ));
        }
        loaded
            .to_dtype(self.dtype)
            .and_then(|t| t.to_device(&self.device))
            .map_err(|e| Error::tensor(&file.path, name, format!("cannot be converted: {e}")))
    }
}

/// The weight files of a model directory, in the order of preference documented on
/// [`Weights::from_dir`].
pub fn weight_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(SAFETENSORS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join(SAFETENSORS_INDEX_FILE);
    if index_path.is_file() {
        return shards_of(&index_path);
    }
    let pth = dir.join(PYTORCH_FILE);
    if pth.is_file() {
        return Ok(vec![pth]);
    }
    Err(Error::file(
        dir,
        format!("no weights found (looked for {SAFETENSORS_FILE}, {SAFETENSORS_INDEX_FILE}, {PYTORCH_FILE})"),
    ))
}

/// The distinct shard files named by a `model.safetensors.index.json`, in first-seen order.
pub fn shards_of(index_path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index_path).map_err(|e| Error::file(index_path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::file(index_path, format!("malformed index: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::file(index_path, "malformed index: no `weight_map` object"))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| Error::file(index_path, format!("malformed index: `{tensor}` does not map to a file name")))?;
        let path = dir.join(file);
        if !shards.contains(&path) {
            shards.push(path);
        }
    }
    Ok(shards)
}

/// The innermost message of a candle error, without its backtrace decoration.
fn root_cause(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithPath { inner, .. } => root_cause(inner),
        candle_core::Error::WithBacktrace { inner, .. } => root_cause(inner),
        candle_core::Error::Context { inner, .. } => root_cause(inner),
        other => other.to_string().lines().next().unwrap_or_default().to_string(),
    }
}
