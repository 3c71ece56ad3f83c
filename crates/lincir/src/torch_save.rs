//! Writing a PyTorch checkpoint (`torch.save` format) of f32 tensors, for users whose tools expect
//! the official phi files: `{'epoch': n, key: OrderedDict(name -> tensor)}`.
//!
//! The format is a zip of stored records under one folder: `data.pkl` (a pickle, protocol 2, in
//! which each tensor is `torch._utils._rebuild_tensor_v2` of a persistent storage id), one raw
//! little-endian record per storage (`data/{i}`, 64-byte aligned as torch writes them),
//! `byteorder` and `version`. Only the opcodes needed for this structure are emitted; the result
//! loads with `torch.load(..., weights_only=True)`.

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor};
use zip::write::SimpleFileOptions;

use crate::{Error, Result};

/// Pickle protocol-2 opcodes used here.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const GLOBAL: u8 = b'c';
    pub const REDUCE: u8 = b'R';
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, o: u8) {
        self.0.push(o);
    }
    fn str(&mut self, s: &str) {
        self.op(op::BINUNICODE);
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) -> Result<()> {
        let v = i32::try_from(v).map_err(|_| Error::Invalid(format!("{v} does not fit a pickle BININT")))?;
        self.op(op::BININT);
        self.0.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn global(&mut self, module: &str, name: &str) {
        self.op(op::GLOBAL);
        self.0.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn int_tuple(&mut self, values: &[usize]) -> Result<()> {
        self.op(op::MARK);
        for &v in values {
            self.int(v)?;
        }
        self.op(op::TUPLE);
        Ok(())
    }
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(op::EMPTY_TUPLE);
        self.op(op::REDUCE);
    }
}

/// Writes `{'epoch': epoch, key: OrderedDict(tensors)}` as a PyTorch checkpoint, atomically.
pub fn save(path: &Path, epoch: usize, key: &str, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut storages = Vec::with_capacity(tensors.len());
    let mut p = Pickle(vec![op::PROTO, 2]);
    p.op(op::EMPTY_DICT);
    p.op(op::MARK);
    p.str("epoch");
    p.int(epoch)?;
    p.str(key);
    p.empty_ordered_dict();
    p.op(op::MARK);
    for (i, (name, t)) in tensors.iter().enumerate() {
        let t = t.to_dtype(DType::F32)?.contiguous()?;
        let dims = t.dims().to_vec();
        let strides: Vec<usize> = (0..dims.len()).map(|d| dims[d + 1..].iter().product()).collect();
        p.str(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(op::MARK);
        // storage: persistent id ('storage', FloatStorage, key, location, numel)
        p.op(op::MARK);
        p.str("storage");
        p.global("torch", "FloatStorage");
        p.str(&i.to_string());
        p.str("cpu");
        p.int(t.elem_count())?;
        p.op(op::TUPLE);
        p.op(op::BINPERSID);
        p.int(0)?; // storage offset
        p.int_tuple(&dims)?;
        p.int_tuple(&strides)?;
        p.op(op::NEWFALSE); // requires_grad
        p.empty_ordered_dict(); // backward hooks
        p.op(op::TUPLE);
        p.op(op::REDUCE);
        let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
        storages.push(data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    }
    p.op(op::SETITEMS);
    p.op(op::SETITEMS);
    p.op(op::STOP);

    let folder = path.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty()).unwrap_or("archive");
    let mut records: Vec<(String, Vec<u8>)> = vec![(format!("{folder}/data.pkl"), p.0), (format!("{folder}/byteorder"), b"little".to_vec())];
    records.extend(storages.into_iter().enumerate().map(|(i, b)| (format!("{folder}/data/{i}"), b)));
    records.push((format!("{folder}/version"), b"3\n".to_vec()));

    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64);
    let zip_err = |e: zip::result::ZipError| Error::file(path, format!("cannot write the checkpoint: {e}"));
    for (name, bytes) in &records {
        zip.start_file(name.as_str(), stored).map_err(zip_err)?;
        zip.write_all(bytes).map_err(|e| Error::file(path, e))?;
    }
    let bytes = zip.finish().map_err(zip_err)?.into_inner();
    crate::io::write_atomic(path, &bytes)
}
