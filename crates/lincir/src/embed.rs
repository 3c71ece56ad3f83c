//! Batch embedding of texts and image files: what `lincir embed` and the benchmarks call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use rayon::prelude::*;

use crate::clip::{heif, preprocess, tokenizer::pad_batch, Clip};
use crate::{Error, Result};

/// File extensions treated as images when walking directories (HEIC's too in builds with the
/// `heic` feature: [`image_extensions`]).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// HEIC photos' extensions, read in builds with the `heic` feature.
pub const HEIC_EXTENSIONS: &[&str] = &["heic", "heif", "hif"];

/// The extensions this build reads.
pub fn image_extensions() -> Vec<&'static str> {
    let heic = if heif::SUPPORTED { HEIC_EXTENSIONS } else { &[] };
    IMAGE_EXTENSIONS.iter().chain(heic).copied().collect()
}

pub fn is_image_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        let e = e.to_ascii_lowercase();
        IMAGE_EXTENSIONS.contains(&e.as_str()) || (heif::SUPPORTED && HEIC_EXTENSIONS.contains(&e.as_str()))
    })
}

/// Photo formats that cameras and phones write and lincir cannot decode (no well-kept pure-Rust
/// decoder; HEIC needs the `heic` feature): found in a walked folder, they are counted, so that a
/// user is told what was left out (an iPhone library is mostly HEIC) instead of finding fewer
/// photos than they have.
pub const UNSUPPORTED_PHOTO_EXTENSIONS: &[&str] =
    &["heic", "heif", "hif", "avif", "jxl", "dng", "cr2", "cr3", "nef", "arw", "orf", "rw2", "raf", "srw", "pef"];

/// The image files of a walk, and the photos it passed over by format.
#[derive(Debug, Default)]
pub struct ImageWalk {
    pub images: Vec<PathBuf>,
    /// Lower-case extension -> files found with it (one of [`UNSUPPORTED_PHOTO_EXTENSIONS`]).
    pub unsupported: BTreeMap<String, usize>,
    /// Folders not entered and image files left out because they are hidden ([`is_hidden`]).
    pub hidden_folders: usize,
    pub hidden_images: usize,
    /// Folders that could not be listed, with the reason (only when skipping them was asked).
    pub unreadable_folders: Vec<(PathBuf, String)>,
    /// Links whose target is not there (a drive or share not mounted), with what they point to:
    /// passed over, and said so ([`describe_broken_links`]).
    pub broken_links: Vec<(PathBuf, String)>,
}

/// Whether a walk leaves a folder or file out: hidden names (`.thumbnails`, `.Trash`, `.git`, and
/// the `._IMG_0001.JPG` resource forks macOS leaves on shared drives, which are not images),
/// Synology's `@eaDir` folders, whose pictures are thumbnails of the photos beside them, and the
/// system folders of Windows and NAS drives (trash, snapshots), often unreadable. On Windows the
/// walk also leaves out what has the hidden or system attribute.
pub fn is_hidden(name: &std::ffi::OsStr) -> bool {
    const SYSTEM: &[&str] = &["@eaDir", "$RECYCLE.BIN", "System Volume Information", "#recycle", "#snapshot"];
    let name = name.to_string_lossy();
    name.starts_with('.') || SYSTEM.contains(&name.as_ref())
}

/// Windows' own mark for what Explorer does not show: the hidden or system attribute.
#[cfg(windows)]
fn hidden_by_attribute(m: &std::fs::Metadata) -> bool {
    const HIDDEN: u32 = 0x2;
    const SYSTEM: u32 = 0x4;
    std::os::windows::fs::MetadataExt::file_attributes(m) & (HIDDEN | SYSTEM) != 0
}

#[cfg(not(windows))]
fn hidden_by_attribute(_: &std::fs::Metadata) -> bool {
    false
}

/// "2 hidden folders and 1 hidden image", or None when nothing hidden was left out.
pub fn describe_hidden(folders: usize, images: usize) -> Option<String> {
    let plural = |n: usize, what: &str| format!("{n} hidden {what}{}", if n == 1 { "" } else { "s" });
    let parts: Vec<String> = [(folders, "folder"), (images, "image")].iter().filter(|(n, _)| *n > 0).map(|&(n, w)| plural(n, w)).collect();
    let windows = if cfg!(windows) { ", the hidden attribute" } else { "" };
    (!parts.is_empty()).then(|| format!("left out: {} (names starting with `.`, Synology's @eaDir{windows}: caches, trash, resource forks)", parts.join(" and ")))
}

/// Expands files and directories into image files: files are kept as given (whatever their
/// extension), directories are walked recursively in sorted order keeping image extensions.
pub fn collect_image_paths(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(walk_images(inputs)?.images)
}

/// [`collect_image_paths`], also counting the photos in formats lincir cannot read.
/// Directories given are walked whatever their names; below them, hidden folders and files
/// ([`is_hidden`]) are left out and counted. Links to folders are followed, but each folder is
/// walked once, at the first path that reaches it, so a link to a parent folder (a loop) costs
/// nothing.
pub fn walk_images(inputs: &[PathBuf]) -> Result<ImageWalk> {
    walk_images_skipping(inputs, false)
}

/// [`walk_images`]; with `skip_unreadable`, a folder below the inputs that cannot be listed (no
/// permission) is recorded in [`ImageWalk::unreadable_folders`] instead of stopping the walk.
pub fn walk_images_skipping(inputs: &[PathBuf], skip_unreadable: bool) -> Result<ImageWalk> {
    let mut walker = Walker { out: ImageWalk::default(), walked: std::collections::HashSet::new(), skip_unreadable };
    for p in inputs {
        if p.is_dir() {
            walker.folder(p, true)?;
        } else if p.is_file() {
            walker.out.images.push(p.clone());
        } else {
            return Err(Error::file(p, "no such file or directory"));
        }
    }
    Ok(walker.out)
}

struct Walker {
    out: ImageWalk,
    /// Every folder walked, by its canonical path.
    walked: std::collections::HashSet<PathBuf>,
    skip_unreadable: bool,
}

impl Walker {
    /// Walks `dir` unless it was walked already; a folder given by the user (`given`) that
    /// cannot be listed is always an error.
    fn folder(&mut self, dir: &Path, given: bool) -> Result<()> {
        match self.entries(dir) {
            Ok(Some(entries)) => self.walk(entries),
            Ok(None) => Ok(()),
            Err(e) if self.skip_unreadable && !given => {
                self.out.unreadable_folders.push((dir.to_path_buf(), e));
                Ok(())
            }
            Err(e) => Err(Error::file(dir, e)),
        }
    }

    /// The sorted entries of `dir`, None when it was walked already.
    fn entries(&mut self, dir: &Path) -> std::result::Result<Option<Vec<PathBuf>>, String> {
        let listing_error = |e: std::io::Error| format!("cannot list directory: {e}");
        if !self.walked.insert(std::fs::canonicalize(dir).map_err(listing_error)?) {
            return Ok(None);
        }
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).map_err(listing_error)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>().map_err(listing_error)?;
        entries.sort();
        Ok(Some(entries))
    }

    fn walk(&mut self, entries: Vec<PathBuf>) -> Result<()> {
        for p in entries {
            // One stat per entry (a network share answers each in a millisecond or more).
            let target = std::fs::metadata(&p);
            let hidden = p.file_name().is_some_and(is_hidden) || target.as_ref().is_ok_and(hidden_by_attribute);
            if target.as_ref().is_ok_and(|m| m.is_dir()) {
                if hidden {
                    self.out.hidden_folders += 1;
                } else {
                    self.folder(&p, false)?;
                }
                continue;
            }
            let out = &mut self.out;
            if let Err(e) = &target {
                if !hidden && std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                    let to = std::fs::read_link(&p).map(|t| t.display().to_string()).unwrap_or_default();
                    out.broken_links.push((p, format!("a link to {to}, which cannot be reached ({e})")));
                    continue;
                }
            }
            if is_image_file(&p) {
                if hidden {
                    out.hidden_images += 1;
                } else {
                    out.images.push(p);
                }
            } else if let Some(ext) = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase) {
                if UNSUPPORTED_PHOTO_EXTENSIONS.contains(&ext.as_str()) && !hidden {
                    *out.unsupported.entry(ext).or_default() += 1;
                }
            }
        }
        Ok(())
    }
}

/// One line per link of a walk whose target cannot be reached, or nothing.
pub fn describe_broken_links(links: &[(PathBuf, String)]) -> Vec<String> {
    links.iter().map(|(p, why)| format!("not reachable: {}: {why}; nothing under it was read", p.display())).collect()
}

/// "3 .heic, 1 .cr2" for a walk's unsupported photos, or None when there are none.
pub fn describe_unsupported(unsupported: &BTreeMap<String, usize>) -> Option<String> {
    let mut by_count: Vec<(&String, &usize)> = unsupported.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = by_count.iter().map(|(ext, n)| format!("{n} .{ext}")).collect();
    (!parts.is_empty()).then(|| {
        format!(
            "not read: {} (formats this lincir cannot decode; it reads {}): convert them to JPEG to search them, for example with `heif-convert` or `darktable-cli`{}",
            parts.join(", "),
            image_extensions().join(", "),
            if !heif::SUPPORTED && HEIC_EXTENSIONS.iter().any(|e| unsupported.contains_key(*e)) {
                ", or build lincir with `--features heic` to read HEIC (README)"
            } else {
                ""
            }
        )
    })
}

/// Embeds texts with the text tower, `batch_size` at a time, each batch padded to its longest.
/// `progress` is called with the number of texts finished after each batch.
///
/// # Shapes
/// -> [texts, projection_dim], un-normalised, in input order
pub fn embed_texts(clip: &Clip, texts: &[String], batch_size: usize, progress: &dyn Fn(usize)) -> Result<Tensor> {
    let tower = clip.text()?;
    let batch_size = batch_size.max(1);
    let mut parts = Vec::new();
    for chunk in texts.chunks(batch_size) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let ids = clip.tokenizer.encode_batch(&refs)?;
        let ids = pad_batch(&ids, &clip.device)?;
        parts.push(tower.embed(&ids)?);
        progress(chunk.len());
    }
    concat(parts, tower.projection_dim(), clip)
}

/// Loads and preprocesses image files in parallel.
///
/// # Shapes
/// -> [files, 3, size, size]
pub fn load_pixels(clip: &Clip, paths: &[PathBuf]) -> Result<Tensor> {
    let images: Vec<Vec<f32>> = paths
        .par_iter()
        .map(|p| preprocess::load_rgb8_for(p, &clip.preprocess).map(|img| preprocess::pixels(&img, &clip.preprocess)))
        .collect::<Result<_>>()?;
    preprocess::stack(images, &clip.preprocess, &clip.device)
}

/// Embeds image files with the vision tower, `batch_size` at a time; an unreadable file is an
/// error naming it. (The benchmark path, [`crate::bench::images::embed_images`], adds the feature
/// cache and the skip policy; this is it without either.)
///
/// # Shapes
/// -> [files, projection_dim], un-normalised, in input order
pub fn embed_image_files(clip: &Clip, paths: &[PathBuf], batch_size: usize, progress: &dyn Fn(usize)) -> Result<Tensor> {
    use crate::bench::images::{embed_images, BadImages, BenchImage};
    let images: Vec<BenchImage> = paths.iter().cloned().map(BenchImage::file).collect();
    Ok(embed_images(clip, None, &images, batch_size, BadImages::Fail, progress)?.features)
}

fn concat(parts: Vec<Tensor>, dim: usize, clip: &Clip) -> Result<Tensor> {
    if parts.is_empty() {
        return Ok(Tensor::zeros((0, dim), candle_core::DType::F32, &clip.device)?);
    }
    Ok(Tensor::cat(&parts, 0)?.to_dtype(candle_core::DType::F32)?)
}

/// Writes embeddings as safetensors: tensor `embeddings` (f32, [N, D]) and metadata `names`
/// (a JSON array), plus any extra metadata. Written to a temporary file and renamed, so a
/// crash never leaves a half-written output.
pub fn write_embeddings(
    path: &Path,
    embeddings: &Tensor,
    names: &serde_json::Value,
    extra: &[(&str, String)],
) -> Result<()> {
    let mut meta = std::collections::HashMap::new();
    meta.insert("names".to_string(), names.to_string());
    for (k, v) in extra {
        meta.insert(k.to_string(), v.clone());
    }
    crate::io::write_safetensors_atomic(path, &[("embeddings".to_string(), embeddings.clone())], meta)
}

/// Reads texts, one per line (a trailing newline does not add an empty text).
pub fn read_text_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read texts: {e}")))?;
    Ok(text.lines().map(str::to_string).collect())
}
