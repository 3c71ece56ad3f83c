//! An on-disk index of a folder's image embeddings: built incrementally, memory-mapped on open,
//! searched exactly by a matrix-vector product.
//!
//! Layout of the index folder:
//! - `index.json`: the model (name and key, see [`crate::bench::cache::model_key`]), the image
//!   root, and one entry per image: path relative to the root, size, mtime, the row of its vector
//!   and the norm of its un-normalised embedding (phi needs the raw embedding);
//! - `vectors-{generation}.f32`: rows of L2-normalised f32 vectors, little-endian.
//!
//! Safety against interruption: new rows are appended to the vectors file and flushed before
//! `index.json` (written atomically) refers to them; compaction writes a new generation and
//! switches to it in `index.json` before deleting the old file. At every instant the index on
//! disk is a consistent one, at worst with unreferenced rows.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bench::cache::{model_key, stamp};
use crate::bench::images::{embed_images, BadImages, BenchImage};
use crate::clip::Clip;
use crate::{Error, Result};

pub const META_FILE: &str = "index.json";
pub const FORMAT: u32 = 1;
/// Images embedded between two saves of the index.
const SAVE_EVERY: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the index root, with `/` separators.
    pub path: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub row: usize,
    /// Norm of the un-normalised image embedding.
    pub norm: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexMeta {
    pub format: u32,
    pub model: String,
    pub model_key: String,
    pub dim: usize,
    /// The indexed folder (absolute).
    pub root: PathBuf,
    pub vectors_file: String,
    /// Rows present in the vectors file (some may no longer be referenced).
    pub rows: usize,
    /// Sorted by path; an image's id is its position here.
    pub entries: Vec<Entry>,
}

/// An opened index: metadata plus the memory-mapped vectors.
pub struct Index {
    pub dir: PathBuf,
    pub meta: IndexMeta,
    vectors: memmap2::Mmap,
}

fn read_meta(dir: &Path) -> Result<IndexMeta> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("not an index: {e}")))?;
    let meta: IndexMeta = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("malformed index: {e}")))?;
    if meta.format != FORMAT {
        return Err(Error::file(&path, format!("index format {} is not supported (expected {FORMAT})", meta.format)));
    }
    Ok(meta)
}

fn write_meta(dir: &Path, meta: &IndexMeta) -> Result<()> {
    crate::io::write_atomic(&dir.join(META_FILE), serde_json::to_string(meta).expect("index serialises").as_bytes())
}

impl Index {
    pub fn open(dir: &Path) -> Result<Self> {
        let meta = read_meta(dir)?;
        let path = dir.join(&meta.vectors_file);
        let file = File::open(&path).map_err(|e| Error::file(&path, format!("cannot open the index vectors: {e}")))?;
        // SAFETY: the file is only ever appended to or replaced by rename, never truncated in
        // place, so the mapped bytes stay valid while we hold the map.
        let vectors = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(&path, format!("cannot map: {e}")))?;
        let needed = meta.rows * meta.dim * 4;
        if vectors.len() < needed {
            return Err(Error::file(&path, format!("holds {} bytes, the index needs {needed}", vectors.len())));
        }
        if let Some(e) = meta.entries.iter().find(|e| e.row >= meta.rows) {
            return Err(Error::file(dir.join(META_FILE), format!("entry {} points past the vectors", e.path)));
        }
        Ok(Index { dir: dir.to_path_buf(), meta, vectors })
    }

    pub fn len(&self) -> usize {
        self.meta.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.entries.is_empty()
    }

    /// The file of image `id` (only indexed files are ever named).
    pub fn path_of(&self, id: usize) -> Option<PathBuf> {
        self.meta.entries.get(id).map(|e| self.meta.root.join(&e.path))
    }

    fn row(&self, row: usize) -> &[f32] {
        let bytes = &self.vectors[row * self.meta.dim * 4..(row + 1) * self.meta.dim * 4];
        // The map is page-aligned and rows are 4-byte multiples: the cast is aligned.
        bytemuck_f32(bytes)
    }

    /// The L2-normalised vector of image `id`.
    pub fn vector(&self, id: usize) -> Option<&[f32]> {
        self.meta.entries.get(id).map(|e| self.row(e.row))
    }

    /// The un-normalised embedding of image `id` (what phi takes).
    pub fn embedding(&self, id: usize) -> Option<Vec<f32>> {
        self.meta.entries.get(id).map(|e| self.row(e.row).iter().map(|v| v * e.norm).collect())
    }

    /// Exact top-k by inner product with `query` (cosine when it is normalised), best first;
    /// ties by id.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let entries = &self.meta.entries;
        const CHUNK: usize = 4096;
        let mut best: Vec<(usize, f32)> = entries
            .par_chunks(CHUNK)
            .enumerate()
            .flat_map_iter(|(c, chunk)| {
                let mut local: Vec<(usize, f32)> =
                    chunk.iter().enumerate().map(|(i, e)| (c * CHUNK + i, dot(self.row(e.row), query))).collect();
                keep_best(&mut local, k);
                local
            })
            .collect();
        keep_best(&mut best, k);
        best
    }
}

fn bytemuck_f32(bytes: &[u8]) -> &[f32] {
    assert!((bytes.as_ptr() as usize).is_multiple_of(4) && bytes.len().is_multiple_of(4), "vectors are f32-aligned");
    // SAFETY: alignment and length checked above; any bit pattern is a valid f32.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, bytes.len() / 4) }
}

/// Dot product in 8 independent lanes (vectorises well).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Keeps the k best (highest score, then lowest id), sorted.
fn keep_best(v: &mut Vec<(usize, f32)>, k: usize) {
    let better = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if v.len() > k && k > 0 {
        v.select_nth_unstable_by(k - 1, better);
        v.truncate(k);
    }
    v.sort_by(better);
    v.truncate(k);
}

/// What an indexing run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BuildReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    pub failed: Vec<(String, String)>,
    pub compacted: bool,
    pub total: usize,
}

/// Indexes the images under `images` into `dir`, reusing every unchanged image's vector.
/// `skip_bad` leaves unreadable images out (reported) instead of failing.
pub fn build(
    clip: &Clip,
    images: &Path,
    dir: &Path,
    batch_size: usize,
    skip_bad: bool,
    progress: &dyn Fn(usize, usize),
) -> Result<BuildReport> {
    let root = images.canonicalize().map_err(|e| Error::file(images, format!("cannot index: {e}")))?;
    if !root.is_dir() {
        return Err(Error::file(images, "not a folder of images"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create the index: {e}")))?;
    let key = model_key(clip)?;
    let dim = clip.config.projection_dim;
    let mut meta = if dir.join(META_FILE).is_file() {
        let m = read_meta(dir)?;
        if m.model_key != key || m.dim != dim {
            return Err(Error::file(
                dir.join(META_FILE),
                format!("was built with model `{}`, not `{}`: index into another folder", m.model, clip.name),
            ));
        }
        if m.root != root {
            return Err(Error::file(dir.join(META_FILE), format!("indexes {}, not {}", m.root.display(), root.display())));
        }
        m
    } else {
        IndexMeta { format: FORMAT, model: clip.name.clone(), model_key: key, dim, root: root.clone(), vectors_file: "vectors-0.f32".into(), rows: 0, entries: vec![] }
    };

    let files = crate::embed::collect_image_paths(std::slice::from_ref(&root))?;
    let mut report = BuildReport::default();
    let old: HashMap<String, Entry> = meta.entries.drain(..).map(|e| (e.path.clone(), e)).collect();
    let mut kept = Vec::new();
    let mut todo = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f).to_string_lossy().replace('\\', "/");
        // A file listed but whose size and time cannot be read (vanished, no permission) is an
        // unreadable image like any other: an error, or a listed skip.
        let Some((size, mtime_ns)) = stamp(f) else {
            if !skip_bad {
                return Err(Error::file(f, "cannot read the file's size and modification time"));
            }
            report.failed.push((rel, "cannot read the file's size and modification time".into()));
            continue;
        };
        match old.get(&rel) {
            Some(e) if e.size == size && e.mtime_ns == mtime_ns => kept.push(e.clone()),
            Some(_) => todo.push((rel, f.clone(), size, mtime_ns, true)),
            None => todo.push((rel, f.clone(), size, mtime_ns, false)),
        }
    }
    report.unchanged = kept.len();
    let present: std::collections::HashSet<&str> = kept.iter().map(|e| e.path.as_str()).chain(todo.iter().map(|t| t.0.as_str())).collect();
    report.removed = old.keys().filter(|p| !present.contains(p.as_str())).count();
    meta.entries = kept;
    meta.entries.sort_by(|a, b| a.path.cmp(&b.path));
    write_meta(dir, &meta)?; // deletions take effect now

    let vectors_path = dir.join(&meta.vectors_file);
    let mut out = OpenOptions::new().create(true).append(true).open(&vectors_path).map_err(|e| Error::file(&vectors_path, e))?;
    // Rows beyond `meta.rows` (an interrupted append) are garbage: start after them.
    let on_disk = out.metadata().map_err(|e| Error::file(&vectors_path, e))?.len() as usize;
    if !on_disk.is_multiple_of(dim * 4) || on_disk / (dim * 4) < meta.rows {
        out.set_len((meta.rows * dim * 4) as u64).map_err(|e| Error::file(&vectors_path, e))?;
    }
    meta.rows = out.metadata().map_err(|e| Error::file(&vectors_path, e))?.len() as usize / (dim * 4);
    let total = todo.len();
    let done = std::cell::Cell::new(0);
    let bad = if skip_bad { BadImages::Skip } else { BadImages::Fail };
    for save_chunk in todo.chunks(SAVE_EVERY) {
        let images: Vec<BenchImage> = save_chunk.iter().map(|t| BenchImage::file(t.1.clone())).collect();
        let embedded = embed_images(clip, None, &images, batch_size, bad, &|n| {
            done.set(done.get() + n);
            progress(done.get(), total);
        })?;
        let mut errors = embedded.skipped.into_iter().map(|(_, e)| e);
        let mut bytes = Vec::with_capacity(save_chunk.len() * dim * 4);
        for ((t, row), ok) in save_chunk.iter().zip(embedded.features.to_vec2::<f32>()?).zip(&embedded.ok) {
            if !ok {
                report.failed.push((t.0.clone(), errors.next().unwrap_or_default()));
                continue;
            }
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            bytes.extend(row.iter().flat_map(|v| (v / norm).to_le_bytes()));
            meta.entries.push(Entry { path: t.0.clone(), size: t.2, mtime_ns: t.3, row: meta.rows, norm });
            meta.rows += 1;
            if t.4 {
                report.updated += 1;
            } else {
                report.added += 1;
            }
        }
        // Rows first, then the metadata that refers to them.
        out.write_all(&bytes).map_err(|e| Error::file(&vectors_path, e))?;
        out.sync_data().map_err(|e| Error::file(&vectors_path, e))?;
        meta.entries.sort_by(|a, b| a.path.cmp(&b.path));
        write_meta(dir, &meta)?;
    }
    drop(out);
    if meta.rows > 0 && meta.entries.len() * 4 < meta.rows * 3 {
        compact(dir, &mut meta)?;
        report.compacted = true;
    }
    report.total = meta.entries.len();
    Ok(report)
}

/// Rewrites the vectors with only the referenced rows, as a new generation.
fn compact(dir: &Path, meta: &mut IndexMeta) -> Result<()> {
    let old_name = meta.vectors_file.clone();
    let generation: u64 = old_name.trim_start_matches("vectors-").trim_end_matches(".f32").parse().unwrap_or(0) + 1;
    let new_name = format!("vectors-{generation}.f32");
    let old = std::fs::read(dir.join(&old_name)).map_err(|e| Error::file(dir.join(&old_name), e))?;
    let row_bytes = meta.dim * 4;
    let mut bytes = Vec::with_capacity(meta.entries.len() * row_bytes);
    for (i, e) in meta.entries.iter_mut().enumerate() {
        bytes.extend_from_slice(&old[e.row * row_bytes..(e.row + 1) * row_bytes]);
        e.row = i;
    }
    crate::io::write_atomic(&dir.join(&new_name), &bytes)?;
    meta.vectors_file = new_name;
    meta.rows = meta.entries.len();
    write_meta(dir, meta)?;
    let _ = std::fs::remove_file(dir.join(old_name));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_best_sorts_by_score_then_id() {
        let mut v = vec![(0, 0.5), (1, 0.9), (2, 0.5), (3, 0.1), (4, 0.7)];
        keep_best(&mut v, 3);
        assert_eq!(v, vec![(1, 0.9), (4, 0.7), (0, 0.5)]);
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.03).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }
}
