//! Building an index: walking the folder, recognising what is unchanged, moved or out of reach,
//! embedding the rest in rounds appended to the vectors and codes files, compacting.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::*;
use crate::bench::cache::{model_key, stamp};
use crate::bench::images::{embed_images, BadImages, BenchImage};
use crate::clip::preprocess::JpegDecode;
use crate::clip::Clip;
use crate::compact;
use crate::{Error, Result};

/// What an indexing run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BuildReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// The folder the index was made of, when it is gone and the run found its images in the
    /// folder given instead (the library moved to another disk or mount point).
    pub relocated_from: Option<PathBuf>,
    /// Of the unchanged, photos found under new paths, moved there ([`crate::moved`]): vectors,
    /// dates and ids kept.
    pub moved: usize,
    /// Of the unchanged, photos found under new names (and perhaps folders), renamed: found by
    /// their content's digest with their size and time ([`crate::moved`]); vectors, dates and
    /// ids kept.
    pub renamed: usize,
    pub failed: Vec<(String, String)>,
    pub compacted: bool,
    pub total: usize,
    /// Photos under the folder in formats lincir cannot decode (HEIC, RAW, ...), by extension:
    /// not indexed, and said so.
    pub unsupported: std::collections::BTreeMap<String, usize>,
    /// Hidden folders not entered and hidden image files left out ([`crate::embed::is_hidden`]).
    pub hidden_folders: usize,
    pub hidden_images: usize,
    /// How JPEGs were decoded: as asked, else as the index records, else exactly.
    pub jpeg_decode: JpegDecode,
    /// Images whose dates were read for an index made before dates were recorded.
    pub dates_read: usize,
    /// Images whose date is known (after the run).
    pub dated: usize,
    /// Places below the folder that could not be reached this time (a link to a drive or share
    /// not mounted, a folder that cannot be listed, with `skip_bad`): path relative to the
    /// folder, why, and how many of the index's images under it were kept as they were.
    pub unreachable: Vec<Unreachable>,
}

/// A place below the indexed folder that a run could not reach: its images stay in the index
/// (dropping them would re-embed them all when the drive is back), and the run says so.
#[derive(Debug, Clone, Serialize)]
pub struct Unreachable {
    pub path: String,
    pub why: String,
    pub kept: usize,
}

/// Indexes the images under `images` into `dir`, reusing every unchanged image's vector.
/// `jpeg`: how JPEGs are decoded (None: as the index records, exactly for a new one; asking an
/// index for the other one is an error); `clip` decodes that way afterwards. `skip_bad` leaves
/// unreadable images out (reported) instead of failing.
pub fn build(
    clip: &mut Clip,
    images: &Path,
    dir: &Path,
    jpeg: Option<JpegDecode>,
    batch_size: usize,
    skip_bad: bool,
    progress: &dyn Fn(usize, usize),
) -> Result<BuildReport> {
    // dunce: on Windows, `C:\Photos` rather than the `\\?\C:\Photos` std's canonical form is.
    let root = dunce::canonicalize(images).map_err(|e| Error::file(images, format!("cannot index: {e}")))?;
    if !root.is_dir() {
        return Err(Error::file(images, "not a folder of images"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create the index: {e}")))?;
    let _lock = lock(dir)?;
    let existing = if dir.join(META_FILE).is_file() { Some(read_meta(dir)?) } else { None };
    clip.preprocess.jpeg = jpeg.or(existing.as_ref().map(|m| m.jpeg)).unwrap_or_default();
    let key = model_key(clip)?;
    let dim = clip.config.projection_dim;
    let mut relocated_from = None;
    let mut meta = if let Some(m) = existing {
        if m.jpeg != clip.preprocess.jpeg {
            return Err(Error::file(
                dir.join(META_FILE),
                format!("decodes JPEGs `{}`, not `{}`: index into another folder", m.jpeg.name(), clip.preprocess.jpeg.name()),
            ));
        }
        if m.model_key != key || m.dim != dim {
            return Err(Error::file(
                dir.join(META_FILE),
                format!("was built with model `{}`, not `{}`: index into another folder", m.model, clip.name),
            ));
        }
        let mut m = m;
        if m.root != root {
            if m.root.exists() {
                return Err(Error::file(dir.join(META_FILE), format!("indexes {}, not {}", m.root.display(), root.display())));
            }
            // The indexed folder is gone: moved (a new disk, another mount point) to `root`,
            // which the run checks by finding its images there.
            relocated_from = Some(std::mem::replace(&mut m.root, root.clone()));
        }
        ids_by_position(dir, &m.entries)?;
        m
    } else {
        IndexMeta {
            format: FORMAT,
            model: clip.name.clone(),
            model_key: key,
            dim,
            root: root.clone(),
            vectors_file: "vectors-0.f32".into(),
            codes_file: None,
            jpeg: clip.preprocess.jpeg,
            rows: 0,
            next_id: 0,
            dates: true,
            entries: vec![],
        }
    };
    remove_earlier_generations(dir, &meta);

    let mut report = BuildReport { jpeg_decode: clip.preprocess.jpeg, ..Default::default() };
    let old = std::mem::take(&mut meta.entries);
    let Plan { mut kept, out_of_reach, todo } = plan(&root, dir, old, skip_bad, relocated_from, &mut report)?;
    if !meta.dates {
        // An index made before dates were recorded: its photos' dates, read once (EXIF headers
        // only, a fraction of a millisecond a photo).
        kept.par_iter_mut().for_each(|e| e.taken = crate::photo_date::taken(&root.join(&e.path)));
        report.dates_read = kept.len();
        // Photos kept from a place not reached get theirs on a later run.
        meta.dates = out_of_reach.is_empty();
    }
    kept.extend(out_of_reach);
    meta.entries = kept;
    save_sorted(dir, &mut meta)?; // deletions take effect now

    let vectors_path = dir.join(&meta.vectors_file);
    let mut out = OpenOptions::new().create(true).append(true).open(&vectors_path).map_err(|e| Error::file(&vectors_path, e))?;
    // Rows beyond `meta.rows` (an interrupted append) are garbage: start after them.
    let on_disk = out.metadata().map_err(|e| Error::file(&vectors_path, e))?.len() as usize;
    if !on_disk.is_multiple_of(dim * 4) || on_disk / (dim * 4) < meta.rows {
        out.set_len((meta.rows * dim * 4) as u64).map_err(|e| Error::file(&vectors_path, e))?;
    }
    meta.rows = out.metadata().map_err(|e| Error::file(&vectors_path, e))?.len() as usize / (dim * 4);
    let mut codes_out = sync_codes(dir, &mut meta)?;
    write_meta(dir, &meta)?; // an older format is upgraded here
    let total = todo.len();
    let done = std::cell::Cell::new(0);
    let bad = if skip_bad { BadImages::Skip } else { BadImages::Fail };
    let mut saved = std::time::Instant::now();
    for save_chunk in todo.chunks(ROUND_IMAGES.max(8 * batch_size)) {
        let images: Vec<BenchImage> = save_chunk.iter().map(|t| BenchImage::file(t.file.clone())).collect();
        let embedded = match embed_images(clip, None, &images, batch_size, bad, &|n| {
            done.set(done.get() + n);
            progress(done.get(), total);
        }) {
            Ok(embedded) => embedded,
            Err(e) => {
                // The rounds before this one are on disk: keep them before reporting the error.
                save_sorted(dir, &mut meta)?;
                return Err(e);
            }
        };
        let mut errors = embedded.skipped.into_iter().map(|(_, e)| e);
        // (Only the images that embedded: a file that failed is not indexed.) Their dates, and
        // their content's digest (the file was just read: it is in the page cache).
        let dates_and_digests: Vec<(Option<String>, Option<String>)> = save_chunk
            .par_iter()
            .zip(embedded.ok.par_iter())
            .map(|(t, &ok)| if ok { (crate::photo_date::taken(&t.file), crate::moved::content_digest(&t.file)) } else { (None, None) })
            .collect();
        let mut bytes = Vec::with_capacity(save_chunk.len() * dim * 4);
        for (((t, row), ok), (taken, digest)) in save_chunk.iter().zip(embedded.features.to_vec2::<f32>()?).zip(&embedded.ok).zip(dates_and_digests) {
            if !ok {
                report.failed.push((t.rel.clone(), errors.next().unwrap_or_default()));
                continue;
            }
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            bytes.extend(row.iter().flat_map(|v| (v / norm).to_le_bytes()));
            let id = match t.id {
                Some(id) => {
                    report.updated += 1;
                    id
                }
                None => {
                    report.added += 1;
                    let id = meta.next_id;
                    // Only an edited index.json gets here: ids are not meant to run out.
                    meta.next_id = id.checked_add(1).filter(|&n| n != unassigned()).ok_or_else(|| Error::file(dir.join(META_FILE), "has no image ids left (next_id)"))?;
                    id
                }
            };
            meta.entries.push(Entry { path: t.rel.clone(), id, size: t.size, mtime_ns: t.mtime_ns, row: meta.rows, norm, taken, digest });
            meta.rows += 1;
        }
        // Rows first, then the metadata that refers to them.
        out.write_all(&bytes).map_err(|e| Error::file(&vectors_path, e))?;
        out.sync_data().map_err(|e| Error::file(&vectors_path, e))?;
        if let Some((codes, path)) = &mut codes_out {
            codes.write_all(&encode_rows(&f32_values(&bytes), dim)).map_err(|e| Error::file(&*path, e))?;
            codes.sync_data().map_err(|e| Error::file(&*path, e))?;
        }
        if saved.elapsed() >= SAVE_INTERVAL {
            save_sorted(dir, &mut meta)?;
            saved = std::time::Instant::now();
        }
    }
    save_sorted(dir, &mut meta)?;
    drop(out);
    drop(codes_out);
    if meta.rows > 0 && meta.entries.len() * 4 < meta.rows * 3 {
        compact(dir, &mut meta)?;
        report.compacted = true;
    }
    report.total = meta.entries.len();
    report.dated = meta.entries.iter().filter(|e| e.taken.is_some()).count();
    Ok(report)
}

/// An image to embed: its path relative to the folder, its file, size and time, and its id when
/// it is an indexed image that changed.
struct Todo {
    rel: String,
    file: PathBuf,
    size: u64,
    mtime_ns: u128,
    id: Option<usize>,
}

/// What a run finds in the folder: the entries that stay as they are (unchanged or moved), those
/// kept under places out of reach, and the images to embed.
struct Plan {
    kept: Vec<Entry>,
    out_of_reach: Vec<Entry>,
    todo: Vec<Todo>,
}

/// Walks `root` and compares what it finds with the index's entries (`old`), counting in `report`
/// what is unchanged, moved, out of reach, gone and unreadable.
fn plan(root: &Path, dir: &Path, old: Vec<Entry>, skip_bad: bool, relocated_from: Option<PathBuf>, report: &mut BuildReport) -> Result<Plan> {
    let walk = crate::embed::walk_images_skipping(&[root.to_path_buf()], skip_bad)?;
    report.unsupported = walk.unsupported;
    report.hidden_folders = walk.hidden_folders;
    report.hidden_images = walk.hidden_images;
    let relative = |p: &Path| entry_path(root, p).unwrap_or_else(|| p.to_string_lossy().into_owned());
    for (folder, e) in &walk.unreadable_folders {
        report.failed.push((format!("{}/", relative(folder)), e.clone()));
    }
    let old: HashMap<String, Entry> = old.into_iter().map(|e| (e.path.clone(), e)).collect();
    let mut out_of_reach = Vec::new();
    // What was indexed under a place not reached this time stays as it was.
    for (place, why) in walk.unreadable_folders.iter().chain(&walk.broken_links) {
        let place = relative(place);
        let under = |path: &str| path == place || path.strip_prefix(place.as_str()).is_some_and(|rest| rest.starts_with('/'));
        let before = out_of_reach.len();
        out_of_reach.extend(old.values().filter(|e| under(&e.path)).cloned());
        report.unreachable.push(Unreachable { path: place, why: why.clone(), kept: out_of_reach.len() - before });
    }
    if walk.images.is_empty() && out_of_reach.is_empty() && !old.is_empty() {
        // An empty mount point (a drive not mounted) reads as a folder whose photos were all
        // deleted: not taken as that.
        return Err(Error::file(
            root,
            format!(
                "holds no images now, and the index holds {}: left as it is (a drive not mounted?); to empty the index, delete {}",
                old.len(),
                dir.display()
            ),
        ));
    }
    let mut kept = Vec::new();
    let mut todo = Vec::new();
    for file in walk.images {
        let Some(rel) = entry_path(root, &file) else {
            let why = "its name is not valid UTF-8 (an old archive's encoding?): rename it to index it, e.g. with `convmv -f latin1 -t utf8`";
            if !skip_bad {
                return Err(Error::file(&file, format!("{why}, or index with --skip-bad-images")));
            }
            report.failed.push((relative(&file), why.into()));
            continue;
        };
        // A file listed but whose size and time cannot be read (vanished, no permission) is an
        // unreadable image like any other: an error, or a listed skip.
        let Some((size, mtime_ns)) = stamp(&file) else {
            if !skip_bad {
                return Err(Error::file(&file, "cannot read the file's size and modification time"));
            }
            report.failed.push((rel, "cannot read the file's size and modification time".into()));
            continue;
        };
        match old.get(&rel) {
            Some(e) if e.size == size && e.mtime_ns == mtime_ns => kept.push(e.clone()),
            // A changed image keeps its id.
            Some(e) => todo.push(Todo { rel, file, size, mtime_ns, id: Some(e.id) }),
            None => todo.push(Todo { rel, file, size, mtime_ns, id: None }),
        }
    }
    // Photos moved to another folder keep their vectors, dates and ids (crate::moved).
    let found: std::collections::HashSet<&str> =
        kept.iter().chain(&out_of_reach).map(|e| e.path.as_str()).chain(todo.iter().map(|t| t.rel.as_str())).collect();
    let mut gone = crate::moved::Gone::new(old.values().filter(|e| !found.contains(e.path.as_str())));
    drop(found);
    let mut moved = Vec::new();
    todo.retain(|t| t.id.is_some() || gone.take(&t.rel, t.size, t.mtime_ns).map(|e| moved.push(e)).is_none());
    report.moved = moved.len();
    kept.extend(moved);
    // Photos renamed keep theirs too, recognised by their content: only the new files with the
    // size and time of a gone photo with a digest are read.
    let digests: Vec<Option<String>> = todo
        .par_iter()
        .map(|t| if t.id.is_none() && gone.may_be_renamed(t.size, t.mtime_ns) { crate::moved::content_digest(&t.file) } else { None })
        .collect();
    let mut renamed = Vec::new();
    let mut digests = digests.into_iter();
    todo.retain(|t| {
        let digest = digests.next().flatten();
        digest.and_then(|d| gone.take_renamed(&t.rel, t.size, t.mtime_ns, &d)).map(|e| renamed.push(e)).is_none()
    });
    report.renamed = renamed.len();
    kept.extend(renamed);
    if let Some(from) = relocated_from {
        if kept.is_empty() && !old.is_empty() {
            return Err(Error::file(
                root,
                format!(
                    "is not {}, the folder this index was made of (gone): none of its {} images is here unchanged; index into another folder",
                    from.display(),
                    old.len()
                ),
            ));
        }
        report.relocated_from = Some(from);
    }
    report.unchanged = kept.len();
    // Every old entry is kept (as it was, or moved), out of reach, embedded again, or gone.
    let changed = todo.iter().filter(|t| t.id.is_some()).count();
    report.removed = old.len().saturating_sub(kept.len() + out_of_reach.len() + changed);
    Ok(Plan { kept, out_of_reach, todo })
}

/// Holds `index.lock` for one `lincir index` run: two runs on one index (a cron job and one by
/// hand) would append rows to the same file in turns and each write an `index.json` that knows
/// only its own. The lock is the operating system's (flock), so a killed run releases it.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(|e| Error::file(&path, e))?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the message another run gives.
            use std::io::{Seek, SeekFrom};
            let _ = file.set_len(0).and_then(|_| file.seek(SeekFrom::Start(0))).and_then(|_| write!(file, "{}", std::process::id()));
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).ok().filter(|p| !p.trim().is_empty()).map(|p| format!(" (process {})", p.trim())).unwrap_or_default();
            Err(Error::file(dir, format!("another `lincir index` is updating this index{holder}: run this one when it has finished")))
        }
        // A file system without locks (some network shares): indexing goes on unguarded.
        Err(std::fs::TryLockError::Error(_)) => Ok(file),
    }
}

/// Writes an index of rows that are already L2-normalised (benchmarks, tests) into the empty
/// folder `dir`: the vectors, the codes when `with_codes` (else an index of format 1), the
/// metadata. `meta.vectors_file` names the vectors; `rows` and `codes_file` are set here.
pub fn write(dir: &Path, mut meta: IndexMeta, vectors: &[f32], with_codes: bool) -> Result<()> {
    let bytes: Vec<u8> = vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
    crate::io::write_atomic(&dir.join(&meta.vectors_file), &bytes)?;
    meta.rows = vectors.len() / meta.dim.max(1);
    meta.codes_file = None;
    meta.format = OLDEST_READABLE_FORMAT;
    if with_codes {
        drop(sync_codes(dir, &mut meta)?);
    }
    write_meta(dir, &meta)
}

fn codes_name(vectors_file: &str) -> String {
    format!("{}.i8", vectors_file.trim_end_matches(".f32").replacen("vectors-", "codes-", 1))
}

/// Int8 codes of consecutive f32 rows.
pub(super) fn encode_rows(rows: &[f32], dim: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() / dim * compact::row_bytes(dim));
    for v in rows.chunks_exact(dim) {
        compact::encode_row(v, &mut out);
    }
    out
}

/// Makes the codes file hold exactly the codes of the vectors' `meta.rows` rows (cutting an
/// interrupted append, encoding rows it lacks: an index of format 1 gets all of them), and
/// returns it open for appending. None for rows wider than the codes support.
pub(super) fn sync_codes(dir: &Path, meta: &mut IndexMeta) -> Result<Option<(File, PathBuf)>> {
    if meta.dim > compact::MAX_DIM {
        meta.codes_file = None;
        return Ok(None);
    }
    let name = meta.codes_file.clone().unwrap_or_else(|| codes_name(&meta.vectors_file));
    let path = dir.join(&name);
    let row_bytes = compact::row_bytes(meta.dim);
    let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::file(&path, e))?;
    let len = file.metadata().map_err(|e| Error::file(&path, e))?.len();
    let have = (len as usize / row_bytes).min(meta.rows);
    // Cut only what an interruption left: Windows refuses to change the length of a file that
    // a running `serve` has mapped.
    if len != (have * row_bytes) as u64 {
        file.set_len((have * row_bytes) as u64).map_err(|e| Error::file(&path, e))?;
    }
    if have < meta.rows {
        // Only the rows that lack codes are read, a bounded slice at a time (an index of format 1
        // may hold millions of rows).
        use std::io::{Read, Seek, SeekFrom};
        const ROWS_PER_READ: usize = 4096;
        let vectors_path = dir.join(&meta.vectors_file);
        let mut vectors = File::open(&vectors_path).map_err(|e| Error::file(&vectors_path, e))?;
        vectors.seek(SeekFrom::Start((have * meta.dim * 4) as u64)).map_err(|e| Error::file(&vectors_path, e))?;
        let mut buffer = Vec::new();
        for start in (have..meta.rows).step_by(ROWS_PER_READ) {
            buffer.resize((ROWS_PER_READ.min(meta.rows - start)) * meta.dim * 4, 0);
            vectors.read_exact(&mut buffer).map_err(|e| Error::file(&vectors_path, e))?;
            file.write_all(&encode_rows(&f32_values(&buffer), meta.dim)).map_err(|e| Error::file(&path, e))?;
        }
    }
    file.sync_data().map_err(|e| Error::file(&path, e))?;
    meta.codes_file = Some(name);
    meta.format = FORMAT;
    Ok(Some((file, path)))
}

/// f32 values of little-endian bytes that may not be 4-aligned (a `Vec<u8>`).
fn f32_values(bytes: &[u8]) -> std::borrow::Cow<'_, [f32]> {
    if (bytes.as_ptr() as usize).is_multiple_of(4) {
        std::borrow::Cow::Borrowed(bytemuck_f32(bytes))
    } else {
        std::borrow::Cow::Owned(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
    }
}

/// Deletes the vectors and codes of earlier generations that a compaction could not delete
/// (on Windows a file mapped by a running `serve` cannot be deleted): tried again on every run.
fn remove_earlier_generations(dir: &Path, meta: &IndexMeta) {
    let Ok(listing) = std::fs::read_dir(dir) else { return };
    for name in listing.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()) {
        let generation = name.strip_prefix("vectors-").and_then(|n| n.strip_suffix(".f32")).or_else(|| name.strip_prefix("codes-").and_then(|n| n.strip_suffix(".i8")));
        let current = name == meta.vectors_file || meta.codes_file.as_deref() == Some(name.as_str()) || name == codes_name(&meta.vectors_file);
        if generation.is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit())) && !current {
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
}

/// Rewrites the vectors with only the referenced rows, as a new generation.
pub(super) fn compact(dir: &Path, meta: &mut IndexMeta) -> Result<()> {
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
    let old_codes = meta.codes_file.take();
    if meta.dim <= compact::MAX_DIM {
        let codes = codes_name(&new_name);
        crate::io::write_atomic(&dir.join(&codes), &encode_rows(&f32_values(&bytes), meta.dim))?;
        meta.codes_file = Some(codes);
    }
    meta.vectors_file = new_name;
    meta.rows = meta.entries.len();
    write_meta(dir, meta)?;
    let _ = std::fs::remove_file(dir.join(old_name));
    if let Some(old_codes) = old_codes {
        let _ = std::fs::remove_file(dir.join(old_codes));
    }
    Ok(())
}
