//! Files written by lincir: atomically (temporary file + rename, so an interrupted run never
//! leaves a half-written output) and as safetensors where they hold tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// The temporary sibling a file is written to before being renamed into place.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// Refuses a file larger than `limit` bytes before it is read whole (`what` names it).
pub fn check_file_size(path: &Path, limit: u64, what: &str) -> Result<()> {
    let len = std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot read the {what}: {e}")))?.len();
    if len > limit {
        return Err(Error::file(path, format!("the {what} is {len} bytes, more than the {limit} accepted")));
    }
    Ok(())
}

/// Writes bytes to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = partial_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, format!("cannot write: {e}")))
}

/// Writes named tensors (stored as f32) and string metadata as one safetensors file, atomically.
pub fn write_safetensors_atomic(path: &Path, tensors: &[(String, Tensor)], meta: HashMap<String, String>) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_dtype(DType::F32)?.contiguous()?;
        let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name.clone(), t.dims().to_vec(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::file(path, format!("cannot build tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // Serialised in memory and written by `write_atomic`, not by `serialize_to_file`: that one
    // goes through a temporary file created with mode 0600, whatever the user's umask.
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::file(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

/// Every tensor of a parsed safetensors file, converted to f32 on the CPU.
fn safetensors_to_tensors(path: &Path, st: &safetensors::SafeTensors) -> Result<HashMap<String, Tensor>> {
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| Error::tensor(path, &name, e))?;
            Ok((name, t))
        })
        .collect()
}

/// Reads a whole safetensors file: tensors (f32, CPU) and metadata.
pub fn read_safetensors(path: &Path) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    parse_safetensors(path, &bytes, "not a readable safetensors file")
}

/// Tensors (f32, CPU) and metadata of safetensors bytes read from `path`; `not_safetensors` is the
/// error's wording when the bytes are not safetensors at all.
pub fn parse_safetensors(
    path: &Path,
    bytes: &[u8],
    not_safetensors: &str,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::file(path, format!("{not_safetensors}: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| Error::file(path, e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    Ok((safetensors_to_tensors(path, &st)?, meta))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn outputs_get_the_users_umask_like_any_other_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"x").unwrap();
        let expected = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
        let t = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let st = dir.path().join("a.safetensors");
        write_safetensors_atomic(&st, &[("t".into(), t)], HashMap::new()).unwrap();
        let plain = dir.path().join("b.json");
        write_atomic(&plain, b"{}").unwrap();
        for p in [st, plain] {
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, expected, "{}", p.display());
        }
    }
}
