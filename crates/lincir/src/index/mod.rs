//! An on-disk index of a folder's image embeddings: built incrementally, memory-mapped on open,
//! searched exactly by a matrix-vector product.
//!
//! Layout of the index folder:
//! - `index.json`: the model (name and key, see [`crate::bench::cache::model_key`]), the image
//!   root, and one entry per image: path relative to the root, size, mtime, the row of its vector
//!   and the norm of its un-normalised embedding (phi needs the raw embedding);
//! - `vectors-{generation}.f32`: rows of L2-normalised f32 vectors, little-endian;
//! - `codes-{generation}.i8` (format 2): the same rows as int8 codes ([`crate::compact`]), a
//!   quarter of the bytes, ranked first; the f32 rows re-rank the candidates so that results are
//!   those of the exact f32 search. Format 1 indexes (no codes) are searched exactly and get
//!   their codes the next time `lincir index` updates them.
//!
//! Ids: every image gets an id when it is first indexed and keeps it while its path stays indexed
//! (through changes of its content, other images coming and going, and compaction); an id is
//! never given to another path. So an id in a page, a link or a script stays meaningful after
//! `lincir index` runs again, and `serve` can reload the index under its clients. Indexes written
//! before ids existed get their position as id (what it was then) when read.
//!
//! Safety against interruption: new rows are appended to the vectors and codes files and flushed
//! before `index.json` (written atomically) refers to them; a codes file shorter or longer than
//! the vectors is repaired from them on the next build; compaction writes a new generation and
//! switches to it in `index.json` before deleting the old file. At every instant the index on
//! disk is a consistent one, at worst with unreferenced rows.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bench::cache::stamp;
use crate::clip::fastmath::dot;
use crate::clip::preprocess::JpegDecode;
use crate::compact;
use crate::{Error, Result};

mod build;
pub use build::{build, write, BuildReport, Unreachable};

pub const META_FILE: &str = "index.json";
/// Larger than any CLIP's projection (bigG/14: 1,280); a larger `dim` is a damaged index.json.
const MAX_INDEX_DIM: usize = 1 << 16;
/// Held by the `lincir index` run updating the index ([`lock`]).
const LOCK_FILE: &str = "index.lock";
pub const FORMAT: u32 = 2;
/// Indexes written before the codes: still opened and searched (exactly).
const OLDEST_READABLE_FORMAT: u32 = 1;
/// Images embedded per round of appending (at least; on a GPU, eight batches, so that decoding
/// the next batches overlaps the GPU's work on the current one within a round).
const ROUND_IMAGES: usize = 256;
/// `index.json` is rewritten after a round only when this long has passed since the last time
/// (and at the end): with a million entries it is 100 MB, a quarter of a second to write, and a
/// GPU embeds a round in well under that.
const SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the index root, with `/` separators.
    pub path: String,
    /// The image's id (see the module's documentation); absent in older indexes.
    #[serde(default = "unassigned")]
    pub id: usize,
    pub size: u64,
    pub mtime_ns: u128,
    pub row: usize,
    /// Norm of the un-normalised image embedding.
    pub norm: f32,
    /// When the photo was taken, from its EXIF data ([`crate::photo_date`]); None when it does not
    /// say (or, with `dates` false, when it was not read yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken: Option<String>,
    /// The digest of the file's bytes when it was embedded ([`crate::moved::content_digest`]),
    /// by which the photo is recognised after a rename; absent for photos embedded before
    /// 2026-12-02.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
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
    /// The int8 codes of the same rows (format 2); absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codes_file: Option<String>,
    /// How JPEG files were decoded (`lincir index --jpeg-decode`); queries' images are decoded
    /// the same way. Absent (exact) in indexes made before the choice existed.
    #[serde(default, skip_serializing_if = "is_exact")]
    pub jpeg: JpegDecode,
    /// Rows present in the vectors file (some may no longer be referenced).
    pub rows: usize,
    /// The id the next new image gets: ids are never reused.
    #[serde(default)]
    pub next_id: usize,
    /// Whether every entry's date was read ([`Entry::taken`]); an index made before dates
    /// existed gets them on its next `lincir index`, and date filters wait until then.
    #[serde(default)]
    pub dates: bool,
    /// Sorted by path.
    pub entries: Vec<Entry>,
}

fn unassigned() -> usize {
    usize::MAX
}

/// An opened index: metadata plus the memory-mapped vectors.
pub struct Index {
    pub dir: PathBuf,
    pub meta: IndexMeta,
    vectors: memmap2::Mmap,
    codes: Option<memmap2::Mmap>,
    /// (id, position in `meta.entries`), sorted by id.
    by_id: Vec<(usize, usize)>,
    /// `index.json` as it was when read ([`crate::search::Searcher::reload_if_changed`]).
    stamp: Option<Stamp>,
}

/// What tells that `index.json` was rewritten: its size, modification time and file (it is
/// replaced by a rename, so the inode changes even within the clock's resolution).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl Stamp {
    pub fn of(dir: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(dir.join(META_FILE)).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Stamp { len: m.len(), modified: m.modified().ok(), inode })
    }
}

/// The path an entry has for `file` under the indexed folder `root`: relative, its names joined
/// with `/` whatever the system's separator (a `\\` in a Linux file name stays part of the
/// name). None outside `root`, or where a name is not UTF-8: `index.json` holds text, and a name
/// made valid by replacing bytes would not open the file again.
fn entry_path(root: &Path, file: &Path) -> Option<String> {
    let names: Option<Vec<&str>> = file.strip_prefix(root).ok()?.components().map(|c| c.as_os_str().to_str()).collect();
    Some(names?.join("/"))
}

fn is_exact(jpeg: &JpegDecode) -> bool {
    *jpeg == JpegDecode::Exact
}

/// Writes `index.json` with its entries sorted by path.
fn save_sorted(dir: &Path, meta: &mut IndexMeta) -> Result<()> {
    meta.entries.sort_by(|a, b| a.path.cmp(&b.path));
    write_meta(dir, meta)
}

fn read_meta(dir: &Path) -> Result<IndexMeta> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("not an index: {e}")))?;
    let mut meta: IndexMeta = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("malformed index: {e}")))?;
    if !(OLDEST_READABLE_FORMAT..=FORMAT).contains(&meta.format) {
        return Err(Error::file(&path, format!("index format {} is not supported (this lincir reads {OLDEST_READABLE_FORMAT} to {FORMAT})", meta.format)));
    }
    assign_missing_ids(&mut meta);
    Ok(meta)
}

/// Entries of an index written before ids get their position (their id then); any other entry
/// without one (an index edited by hand) gets a new id. `next_id` is kept above every id.
fn assign_missing_ids(meta: &mut IndexMeta) {
    if meta.entries.iter().all(|e| e.id == unassigned()) {
        meta.entries.iter_mut().enumerate().for_each(|(i, e)| e.id = i);
    }
    let mut next = meta.entries.iter().map(|e| e.id).filter(|&id| id != unassigned()).max().map_or(0, |m| m + 1).max(meta.next_id);
    for e in meta.entries.iter_mut().filter(|e| e.id == unassigned()) {
        e.id = next;
        next += 1;
    }
    meta.next_id = next;
}

/// (id, position) of every entry sorted by id, or the error naming two entries that share one.
fn ids_by_position(dir: &Path, entries: &[Entry]) -> Result<Vec<(usize, usize)>> {
    let mut by_id: Vec<(usize, usize)> = entries.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
    by_id.sort_unstable();
    if let Some(w) = by_id.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::file(
            dir.join(META_FILE),
            format!("`{}` and `{}` have the same id {}", entries[w[0].1].path, entries[w[1].1].path, w[0].0),
        ));
    }
    Ok(by_id)
}

/// Writes `index.json`, unless it already holds exactly this: a run that changes nothing leaves
/// the file (and its time) alone, so that a running `serve` does not read it again for nothing.
fn write_meta(dir: &Path, meta: &IndexMeta) -> Result<()> {
    let path = dir.join(META_FILE);
    let json = serde_json::to_string(meta).expect("index serialises");
    if same_content(&path, json.as_bytes()) {
        return Ok(());
    }
    crate::io::write_atomic(&path, json.as_bytes())
}

/// Whether the file at `path` holds exactly `bytes` (compared a megabyte at a time).
fn same_content(path: &Path, bytes: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut file) = File::open(path) else { return false };
    if file.metadata().map(|m| m.len()).ok() != Some(bytes.len() as u64) {
        return false;
    }
    let mut buffer = vec![0u8; 1 << 20];
    for expected in bytes.chunks(buffer.len()) {
        let got = &mut buffer[..expected.len()];
        if file.read_exact(got).is_err() || got != expected {
            return false;
        }
    }
    true
}

impl Index {
    pub fn open(dir: &Path) -> Result<Self> {
        // Before reading: a rewrite in between is then seen as a change, not missed.
        let stamp = Stamp::of(dir);
        let meta = read_meta(dir)?;
        let path = dir.join(&meta.vectors_file);
        let file = File::open(&path).map_err(|e| Error::file(&path, format!("cannot open the index vectors: {e}")))?;
        // SAFETY: rows that an `index.json` refers to are never truncated or rewritten in place
        // (the file is appended to, only an unreferenced tail is ever cut, compaction writes a
        // new file), so the bytes we read stay valid while we hold the map, even while
        // `lincir index` updates the index beside a running server.
        let vectors = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(&path, format!("cannot map: {e}")))?;
        // Sizes from index.json are checked before any product of them is trusted.
        if !(1..=MAX_INDEX_DIM).contains(&meta.dim) {
            return Err(Error::file(dir.join(META_FILE), format!("dim {} is not an embedding size", meta.dim)));
        }
        let needed = meta.rows.checked_mul(meta.dim * 4).ok_or_else(|| Error::file(dir.join(META_FILE), format!("{} rows cannot exist", meta.rows)))?;
        if vectors.len() < needed {
            return Err(Error::file(&path, format!("holds {} bytes, the index needs {needed}", vectors.len())));
        }
        let codes = match &meta.codes_file {
            Some(name) if meta.dim <= compact::MAX_DIM => {
                let path = dir.join(name);
                let file = File::open(&path).map_err(|e| Error::file(&path, format!("cannot open the index codes: {e}")))?;
                // SAFETY: as for the vectors.
                let codes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(&path, format!("cannot map: {e}")))?;
                let needed = meta.rows.checked_mul(compact::row_bytes(meta.dim)).ok_or_else(|| Error::file(&path, "too many rows"))?;
                if codes.len() < needed {
                    return Err(Error::file(&path, format!("holds {} bytes, the index needs {needed}", codes.len())));
                }
                Some(codes)
            }
            _ => None,
        };
        if let Some(e) = meta.entries.iter().find(|e| e.row >= meta.rows) {
            return Err(Error::file(dir.join(META_FILE), format!("entry {} points past the vectors", e.path)));
        }
        let mut meta = meta;
        // Folders are ranges of the path order: an index.json out of order (edited) is sorted.
        if !meta.entries.windows(2).all(|w| w[0].path <= w[1].path) {
            meta.entries.sort_by(|a, b| a.path.cmp(&b.path));
        }
        let by_id = ids_by_position(dir, &meta.entries)?;
        Ok(Index { dir: dir.to_path_buf(), meta, vectors, codes, by_id, stamp })
    }

    /// How `index.json` was when this index was read.
    pub fn stamp(&self) -> Option<&Stamp> {
        self.stamp.as_ref()
    }

    /// The position of image `id` among the entries (sorted by path).
    pub fn position(&self, id: usize) -> Option<usize> {
        self.by_id.binary_search_by_key(&id, |&(id, _)| id).ok().map(|i| self.by_id[i].1)
    }

    /// The entry of image `id`.
    pub fn entry(&self, id: usize) -> Option<&Entry> {
        self.position(id).map(|p| &self.meta.entries[p])
    }

    /// The id of the image at `file`, when it is indexed and unchanged since (same size and
    /// modification time): its vector can stand for the file.
    pub fn id_of_file(&self, file: &Path) -> Option<usize> {
        let file = dunce::canonicalize(file).ok()?;
        let rel = entry_path(&self.meta.root, &file)?;
        let entries = &self.meta.entries;
        let e = entries.binary_search_by(|e| e.path.as_str().cmp(&rel)).ok().map(|p| &entries[p])?;
        (stamp(&file) == Some((e.size, e.mtime_ns))).then_some(e.id)
    }

    /// The ids of every image, ascending.
    pub fn ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.by_id.iter().map(|&(id, _)| id)
    }

    pub fn len(&self) -> usize {
        self.meta.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.entries.is_empty()
    }

    /// The file of image `id` (only indexed files are ever named).
    pub fn path_of(&self, id: usize) -> Option<PathBuf> {
        self.entry(id).map(|e| self.meta.root.join(&e.path))
    }

    fn row(&self, row: usize) -> &[f32] {
        let bytes = &self.vectors[row * self.meta.dim * 4..(row + 1) * self.meta.dim * 4];
        // The map is page-aligned and rows are 4-byte multiples: the cast is aligned.
        bytemuck_f32(bytes)
    }

    /// The L2-normalised vector of image `id`.
    pub fn vector(&self, id: usize) -> Option<&[f32]> {
        self.entry(id).map(|e| self.row(e.row))
    }

    /// The un-normalised embedding of image `id` (what phi takes).
    pub fn embedding(&self, id: usize) -> Option<Vec<f32>> {
        self.entry(id).map(|e| self.row(e.row).iter().map(|v| v * e.norm).collect())
    }

    /// Whether ranking reads the int8 codes first (format 2) or only the f32 vectors.
    pub fn has_codes(&self) -> bool {
        self.codes.is_some()
    }

    /// Top-k (id, score) by inner product with `query` (cosine when it is normalised), best
    /// first; ties in path order. Identical to [`Self::top_k_exact`]: the codes only choose
    /// which rows are scored exactly ([`crate::compact`] has the bound that guarantees it).
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        self.top_k_in(query, k, 0..self.len())
    }

    /// [`Self::top_k`] among the entries at `positions` (a folder: [`Self::folder_positions`]).
    pub fn top_k_in(&self, query: &[f32], k: usize, positions: Range<usize>) -> Vec<(usize, f32)> {
        self.top_k_where(query, k, positions, &|_| true)
    }

    /// [`Self::top_k_in`] among the entries that `keep` accepts (a span of dates). Still the
    /// exact top-k of those: a row left out is never scored, its bound never reaches the floor.
    pub fn top_k_where(&self, query: &[f32], k: usize, positions: Range<usize>, keep: &Keep<'_>) -> Vec<(usize, f32)> {
        let end = positions.end.min(self.len());
        let positions = positions.start.min(end)..end;
        let best = match &self.codes {
            Some(codes) if k > 0 && query.len() == self.meta.dim => self.top_k_compact(codes, query, k, positions, keep),
            _ => self.top_k_positions(query, k, positions, keep),
        };
        self.with_ids(best)
    }

    /// The positions of the images in `folder` (relative to the indexed one, with `/` or `\`,
    /// subfolders included; empty: every image): one range, as entries are sorted by path.
    pub fn folder_positions(&self, folder: &str) -> Range<usize> {
        // A `\\` is a separator, unless a folder of that very name (Linux) is indexed.
        let literal = self.folder_range(folder);
        if literal.is_empty() && folder.contains('\\') {
            return self.folder_range(&folder.replace('\\', "/"));
        }
        literal
    }

    fn folder_range(&self, folder: &str) -> Range<usize> {
        let folder = folder.trim().trim_start_matches("./").trim_matches('/');
        if folder.is_empty() {
            return 0..self.len();
        }
        // Paths in the folder start with `folder/`; in byte order they all lie between it and
        // `folder0` ('0' follows '/').
        let (from, to) = (format!("{folder}/"), format!("{folder}0"));
        let entries = &self.meta.entries;
        entries.partition_point(|e| e.path < from)..entries.partition_point(|e| e.path < to)
    }

    /// (position, score) pairs as (id, score).
    fn with_ids(&self, best: Vec<(usize, f32)>) -> Vec<(usize, f32)> {
        best.into_iter().map(|(p, s)| (self.meta.entries[p].id, s)).collect()
    }

    fn top_k_compact(&self, codes: &[u8], query: &[f32], k: usize, positions: Range<usize>, keep: &Keep<'_>) -> Vec<(usize, f32)> {
        let (entries, dim) = (&self.meta.entries, self.meta.dim);
        let base = positions.start;
        let quant = compact::QuantQuery::new(query);
        const CHUNK: usize = 4096;
        // Pass 1: every row's upper bound, and the best rows by approximate score.
        let candidates_per_chunk = 2 * k;
        // Per chunk: the upper bound of every row, and the chunk's best rows by approximate score.
        type Chunk = (Vec<f32>, Vec<(usize, f32)>);
        let scored: Vec<Chunk> = entries[positions.clone()]
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(c, chunk)| {
                let mut upper = Vec::with_capacity(chunk.len());
                let mut approx = Vec::with_capacity(chunk.len());
                for (i, e) in chunk.iter().enumerate() {
                    if !keep(e) {
                        upper.push(f32::NEG_INFINITY); // below any floor: never scored
                        continue;
                    }
                    let (a, u) = quant.score(&compact::row(codes, dim, e.row));
                    upper.push(u);
                    approx.push((base + c * CHUNK + i, a));
                }
                keep_best(&mut approx, candidates_per_chunk);
                (upper, approx)
            })
            .collect();
        let mut candidates: Vec<(usize, f32)> = scored.iter().flat_map(|(_, a)| a.iter().copied()).collect();
        keep_best(&mut candidates, candidates_per_chunk);
        // The k-th best exact score among real rows is a floor for the true k-th best score.
        let exact = |id: usize| (id, dot(self.row(entries[id].row), query));
        let mut best: Vec<(usize, f32)> = candidates.iter().map(|&(id, _)| exact(id)).collect();
        keep_best(&mut best, k);
        let Some(&(_, floor)) = best.get(k - 1) else { return self.top_k_positions(query, k, positions, keep) };
        // Pass 2: every row whose bound reaches the floor is scored exactly.
        let mut rescored: Vec<(usize, f32)> = scored
            .par_iter()
            .enumerate()
            .flat_map_iter(|(c, (upper, _))| {
                upper.iter().enumerate().filter(move |(_, &u)| u >= floor).map(move |(i, _)| exact(base + c * CHUNK + i))
            })
            .collect();
        keep_best(&mut rescored, k);
        rescored
    }

    /// Exact top-k (id, score) over the f32 vectors.
    pub fn top_k_exact(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        self.with_ids(self.top_k_positions(query, k, 0..self.len(), &|_| true))
    }

    /// Exact top-k (position, score) over the f32 vectors.
    fn top_k_positions(&self, query: &[f32], k: usize, positions: Range<usize>, keep: &Keep<'_>) -> Vec<(usize, f32)> {
        let (entries, base) = (&self.meta.entries[positions.clone()], positions.start);
        const CHUNK: usize = 4096;
        let mut best: Vec<(usize, f32)> = entries
            .par_chunks(CHUNK)
            .enumerate()
            .flat_map_iter(|(c, chunk)| {
                let mut local: Vec<(usize, f32)> =
                    chunk.iter().enumerate().filter(|(_, e)| keep(e)).map(|(i, e)| (base + c * CHUNK + i, dot(self.row(e.row), query))).collect();
                keep_best(&mut local, k);
                local
            })
            .collect();
        keep_best(&mut best, k);
        best
    }
}

/// Which entries a ranking may return.
pub type Keep<'a> = dyn Fn(&Entry) -> bool + Sync + 'a;

fn bytemuck_f32(bytes: &[u8]) -> &[f32] {
    assert!((bytes.as_ptr() as usize).is_multiple_of(4) && bytes.len().is_multiple_of(4), "vectors are f32-aligned");
    // SAFETY: alignment and length checked above; any bit pattern is a valid f32.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, bytes.len() / 4) }
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

#[cfg(test)]
mod tests {
    use super::build::{encode_rows, sync_codes};
    use super::*;

    #[test]
    fn keep_best_sorts_by_score_then_id() {
        let mut v = vec![(0, 0.5), (1, 0.9), (2, 0.5), (3, 0.1), (4, 0.7)];
        keep_best(&mut v, 3);
        assert_eq!(v, vec![(1, 0.9), (4, 0.7), (0, 0.5)]);
    }

    #[test]
    fn entries_without_ids_get_their_position_or_else_new_ids() {
        let meta = |ids: &[usize], next_id| IndexMeta {
            format: FORMAT, model: "m".into(), model_key: "k".into(), dim: 1, root: "/".into(), vectors_file: "v".into(), codes_file: None,
            jpeg: Default::default(), rows: ids.len(), next_id, dates: true,
            entries: ids.iter().enumerate().map(|(row, &id)| Entry { path: format!("{row}"), id, size: 0, mtime_ns: 0, row, norm: 1.0, taken: None, digest: None }).collect(),
        };
        let ids = |m: &IndexMeta| m.entries.iter().map(|e| e.id).collect::<Vec<_>>();
        let none = unassigned();
        // Written before ids: positions, as ids were then.
        let mut m = meta(&[none, none, none], 0);
        assign_missing_ids(&mut m);
        assert_eq!((ids(&m), m.next_id), (vec![0, 1, 2], 3));
        // Some without (edited by hand): new ids above every other, and above next_id.
        let mut m = meta(&[none, 3, none], 0);
        assign_missing_ids(&mut m);
        assert_eq!((ids(&m), m.next_id), (vec![4, 3, 5], 6));
        let mut m = meta(&[7, 2], 20);
        assign_missing_ids(&mut m);
        assert_eq!((ids(&m), m.next_id), (vec![7, 2], 20), "ids of deleted images are not given again");
        assert!(ids_by_position(Path::new("/"), &meta(&[1, 1], 2).entries).is_err());
    }

    #[test]
    fn a_folder_is_the_range_of_paths_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ["a-b/1.jpg", "a.jpg", "a/1.jpg", "a/b/2.jpg", "a/b0.jpg", "a0/3.jpg", "b/4.jpg", "c\\d/5.jpg"];
        let dim = 4;
        let entries = paths.iter().enumerate().map(|(i, p)| Entry { path: p.to_string(), id: i, size: 0, mtime_ns: 0, row: i, norm: 1.0, taken: None, digest: None }).collect();
        let meta = IndexMeta { format: FORMAT, model: "m".into(), model_key: "k".into(), dim, root: dir.path().into(), vectors_file: "vectors-0.f32".into(), codes_file: None, jpeg: Default::default(), rows: 0, next_id: 0, dates: true, entries };
        write(dir.path(), meta, &vec![0.5; paths.len() * dim], true).unwrap();
        let index = Index::open(dir.path()).unwrap();
        let under = |f: &str| index.meta.entries[index.folder_positions(f)].iter().map(|e| e.path.as_str()).collect::<Vec<_>>();
        assert_eq!(under("a"), ["a/1.jpg", "a/b/2.jpg", "a/b0.jpg"]);
        assert_eq!(under("/a/b/"), ["a/b/2.jpg"]);
        assert_eq!(under("a\\b"), ["a/b/2.jpg"]);
        assert_eq!(under("c\\d"), ["c\\d/5.jpg"], "a Linux folder named with a backslash");
        assert_eq!(under("./b"), ["b/4.jpg"]);
        assert_eq!(under(""), paths);
        assert!(under("c").is_empty() && under("a/1.jpg").is_empty());
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.03).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }

    fn unit_rows(rng: &mut crate::rng::Rng, n: usize, dim: usize, center: Option<&[f32]>, spread: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let v: Vec<f32> = (0..dim).map(|i| center.map_or(0.0, |c| c[i]) + spread * rng.normal()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.extend(v.iter().map(|x| x / norm));
        }
        out
    }

    fn synthetic(dir: &Path, vectors: &[f32], dim: usize, with_codes: bool) -> Index {
        let n = vectors.len() / dim;
        let entries = (0..n).map(|i| Entry { path: format!("{i:06}.png"), id: i, size: 0, mtime_ns: 0, row: i, norm: 1.0, taken: None, digest: None }).collect();
        let meta = IndexMeta { format: FORMAT, model: "m".into(), model_key: "k".into(), dim, root: dir.to_path_buf(), vectors_file: "vectors-0.f32".into(), codes_file: None, jpeg: Default::default(), rows: n, next_id: n, dates: true, entries };
        write(dir, meta, vectors, with_codes).unwrap();
        Index::open(dir).unwrap()
    }

    /// The codes only choose candidates: the result is the exact f32 top-k, scores bit for bit
    /// and ties by id, on spread-out data, on one tight cluster (every row within the codes'
    /// error of the threshold) and with exact duplicates.
    #[test]
    fn compact_ranking_is_identical_to_the_exact_scan() {
        let dim = 96;
        let mut rng = crate::rng::Rng::new(3);
        let spread = unit_rows(&mut rng, 6000, dim, None, 1.0);
        let center = unit_rows(&mut rng, 1, dim, None, 1.0);
        let mut cluster = unit_rows(&mut rng, 6000, dim, Some(&center), 0.01);
        let copy = cluster[..dim * 50].to_vec();
        cluster.extend_from_slice(&copy); // 50 exact duplicates: ties broken by id
        for vectors in [spread, cluster] {
            let dir = tempfile::tempdir().unwrap();
            let index = synthetic(dir.path(), &vectors, dim, true);
            assert!(index.has_codes());
            let mut queries = unit_rows(&mut rng, 20, dim, None, 1.0);
            queries.extend_from_slice(&vectors[..dim * 5]); // queries that are rows
            queries.extend(center.iter().map(|c| c * 0.5)); // not normalised
            for q in queries.chunks(dim) {
                for k in [1, 10, 100, 7000] {
                    assert_eq!(index.top_k(q, k), index.top_k_exact(q, k), "k {k}");
                }
                // Among the entries a filter keeps (a span of dates): the exact top-k of those.
                let odd = |e: &Entry| e.id % 3 == 1;
                for k in [1, 10, 100] {
                    let mut exact: Vec<(usize, f32)> = (0..vectors.len() / dim).filter(|p| p % 3 == 1).map(|p| (p, dot(&vectors[p * dim..(p + 1) * dim], q))).collect();
                    keep_best(&mut exact, k);
                    assert_eq!(index.top_k_where(q, k, 0..index.len(), &odd), exact, "k {k} filtered");
                }
                // Within a range of positions (a folder): the exact top-k of that range.
                for (range, k) in [(1000..5100, 10), (5990..6010, 7), (17..18, 3), (40..40, 5)] {
                    let n = vectors.len() / dim; // a range past the end is cut to it
                    let mut exact: Vec<(usize, f32)> = (range.start.min(n)..range.end.min(n)).map(|p| (p, dot(&vectors[p * dim..(p + 1) * dim], q))).collect();
                    keep_best(&mut exact, k);
                    assert_eq!(index.top_k_in(q, k, range.clone()), exact, "{range:?}");
                }
            }
        }
    }

    #[test]
    fn an_index_without_codes_is_read_and_ranked_exactly() {
        let dim = 16;
        let mut rng = crate::rng::Rng::new(4);
        let vectors = unit_rows(&mut rng, 300, dim, None, 1.0);
        let dir = tempfile::tempdir().unwrap();
        let index = synthetic(dir.path(), &vectors, dim, false);
        assert!(!index.has_codes());
        assert_eq!(index.meta.format, 1);
        let q = &vectors[..dim];
        assert_eq!(index.top_k(q, 5)[0].0, 0);
        assert_eq!(index.top_k(q, 5), index.top_k_exact(q, 5));
    }

    #[test]
    fn codes_cut_or_missing_after_an_interruption_are_rebuilt_from_the_vectors() {
        let dim = 20;
        let mut rng = crate::rng::Rng::new(5);
        let vectors = unit_rows(&mut rng, 40, dim, None, 1.0);
        let dir = tempfile::tempdir().unwrap();
        let index = synthetic(dir.path(), &vectors, dim, true);
        let mut meta = index.meta.clone();
        drop(index);
        let path = dir.path().join(meta.codes_file.as_ref().unwrap());
        let whole = std::fs::read(&path).unwrap();
        assert_eq!(whole, encode_rows(&vectors, dim));
        let row_bytes = compact::row_bytes(dim);
        // Cut inside a row, then longer than the vectors (garbage rows): both repaired.
        for len in [row_bytes * 5 / 2, whole.len() + row_bytes * 3, 0] {
            let mut bytes = whole.clone();
            bytes.resize(len, 0xAB);
            std::fs::write(&path, &bytes).unwrap();
            drop(sync_codes(dir.path(), &mut meta).unwrap());
            assert_eq!(std::fs::read(&path).unwrap(), whole, "length {len}");
        }
    }
}
