//! The images a benchmark embeds: a file, optionally a region of it (GeneCIS attribute tasks),
//! and their embedding through the feature cache, with bad images as errors or counted skips.

use std::path::PathBuf;

use candle_core::Tensor;
use rayon::prelude::*;

use super::cache::FeatureCache;
use crate::clip::preprocess::{self, Rgb8};
use crate::clip::Clip;
use crate::Result;

/// A bounding box [x, y, w, h] in pixels, dilated and squared before preprocessing (GeneCIS).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// GeneCIS dilates each attribute box by this fraction of its size on every side.
pub const REGION_DILATION: f64 = 0.7;

#[derive(Debug, Clone, PartialEq)]
pub struct BenchImage {
    pub path: PathBuf,
    pub region: Option<Region>,
}

impl BenchImage {
    pub fn file(path: PathBuf) -> Self {
        BenchImage { path, region: None }
    }

    /// A stable text identity for the cache key.
    pub fn key(&self) -> String {
        match self.region {
            None => self.path.display().to_string(),
            Some(r) => format!("{}#{},{},{},{}", self.path.display(), r.x, r.y, r.w, r.h),
        }
    }

    /// The image to preprocess with `cfg`: the whole image (decoded as `cfg` says), or the
    /// dilated region padded to a square (from the full-size image, whose pixels the box names).
    pub fn load(&self, cfg: &preprocess::PreprocessConfig) -> Result<Rgb8> {
        Ok(match self.region {
            None => preprocess::load_rgb8_for(&self.path, cfg)?,
            Some(r) => {
                let img = preprocess::load_rgb8(&self.path)?;
                expand_to_square(&img.crop(dilated_box(r, img.width, img.height)))
            }
        })
    }
}

/// left = max(0, x - 0.7w), top = max(0, y - 0.7h), right = min(W, left + 1.7w),
/// bottom = min(H, top + 1.7h), rounded as PIL's `crop` rounds (half to even).
fn dilated_box(r: Region, width: usize, height: usize) -> (usize, usize, usize, usize) {
    let left = (r.x - REGION_DILATION * r.w).max(0.0);
    let top = (r.y - REGION_DILATION * r.h).max(0.0);
    let right = (left + (1.0 + REGION_DILATION) * r.w).min(width as f64);
    let bottom = (top + (1.0 + REGION_DILATION) * r.h).min(height as f64);
    let round = |v: f64| v.round_ties_even().max(0.0) as usize;
    (round(left), round(top), round(right), round(bottom))
}


/// Pads to a square with black, the image centred along the padded axis (`expand2square`).
pub fn expand_to_square(img: &Rgb8) -> Rgb8 {
    let side = img.width.max(img.height);
    if img.width == img.height {
        return img.clone();
    }
    let (ox, oy) = if img.width > img.height { (0, (side - img.height) / 2) } else { ((side - img.width) / 2, 0) };
    let mut data = vec![0u8; side * side * 3];
    for y in 0..img.height {
        let src = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        let dst = ((y + oy) * side + ox) * 3;
        data[dst..dst + img.width * 3].copy_from_slice(src);
    }
    Rgb8::new(side, side, data)
}

/// Time between two saves of the cache during a long embedding run. Each save rewrites the whole
/// file, so saving by time (not every so many batches) keeps the I/O linear in the run's length
/// while an interruption loses at most this much work.
const STORE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// What to do with an image that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadImages {
    /// Stop with an error naming the file (the default: a silently shorter evaluation is wrong).
    Fail,
    /// Count it, warn, and leave it out of the evaluation.
    Skip,
}

/// Embeddings of benchmark images and which of them could be read.
pub struct Embedded {
    /// [n, P], un-normalised; rows of unreadable images are zeros.
    pub features: Tensor,
    pub ok: Vec<bool>,
    /// Unreadable images with the reason (only with [`BadImages::Skip`]).
    pub skipped: Vec<(PathBuf, String)>,
    /// Images taken from the cache rather than computed.
    pub cached: usize,
}

/// Embeds images through the cache: only images missing from it, or changed since, are computed.
pub fn embed_images(
    clip: &Clip,
    cache: Option<&FeatureCache>,
    images: &[BenchImage],
    batch_size: usize,
    bad: BadImages,
    progress: &dyn Fn(usize),
) -> Result<Embedded> {
    let dim = clip.config.projection_dim;
    let mut rows: Vec<Option<Vec<f32>>> = match cache {
        Some(c) => c.lookup(images)?,
        None => vec![None; images.len()],
    };
    let cached = rows.iter().filter(|r| r.is_some()).count();
    progress(cached);
    let todo: Vec<usize> = (0..images.len()).filter(|&i| rows[i].is_none()).collect();
    let mut skipped = Vec::new();
    let mut ok = vec![true; images.len()];
    let tower = clip.vision()?;
    let mut last_store = std::time::Instant::now();
    let load_chunk = |chunk: &[usize]| -> Vec<(usize, Result<Vec<f32>>)> {
        chunk.par_iter().map(|&i| (i, images[i].load(&clip.preprocess).map(|img| preprocess::pixels(&img, &clip.preprocess)))).collect()
    };
    let mut consume = |chunk: &[usize], loaded: Vec<(usize, Result<Vec<f32>>)>| -> Result<()> {
        let mut good = Vec::new();
        let mut pixels = Vec::new();
        for (i, px) in loaded {
            match (px, bad) {
                (Ok(px), _) => {
                    good.push(i);
                    pixels.push(px);
                }
                (Err(e), BadImages::Fail) => return Err(e),
                (Err(e), BadImages::Skip) => {
                    ok[i] = false;
                    skipped.push((images[i].path.clone(), e.to_string()));
                }
            }
        }
        if !pixels.is_empty() {
            let feats = tower.embed(&preprocess::stack(pixels, &clip.preprocess, &clip.device)?)?.to_dtype(candle_core::DType::F32)?;
            for (row, i) in feats.to_vec2::<f32>()?.into_iter().zip(&good) {
                rows[*i] = Some(row);
            }
        }
        progress(chunk.len());
        // Save progress now and then: an interrupted run keeps what it computed.
        if let (Some(c), true) = (cache, last_store.elapsed() >= STORE_EVERY) {
            c.store(images, &rows)?;
            last_store = std::time::Instant::now();
        }
        Ok(())
    };
    let chunks: Vec<&[usize]> = todo.chunks(batch_size.max(1)).collect();
    if clip.device.is_cpu() {
        // The CPU computes the tower with every core: decoding in between, not beside it.
        for chunk in chunks {
            consume(chunk, load_chunk(chunk))?;
        }
    } else {
        // On a GPU, CPU threads decode the next batches while the GPU embeds this one.
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel(2);
            let producer_chunks = chunks.clone();
            scope.spawn(move || {
                for chunk in producer_chunks {
                    if tx.send(load_chunk(chunk)).is_err() {
                        return; // the consumer stopped (an error)
                    }
                }
            });
            for (chunk, loaded) in chunks.into_iter().zip(rx) {
                consume(chunk, loaded)?;
            }
            Ok(())
        })?;
    }
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.clone().unwrap_or_else(|| vec![0.0; dim])).collect();
    if let (Some(c), false) = (cache, todo.is_empty()) {
        c.store(images, &rows)?;
    }
    Ok(Embedded { features: Tensor::from_vec(flat, (images.len(), dim), &clip.device)?, ok, skipped, cached })
}


#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize) -> Rgb8 {
        Rgb8::new(w, h, (0..w * h * 3).map(|i| (i % 251) as u8 + 1).collect())
    }

    #[test]
    fn region_is_dilated_clamped_and_rounded_like_pil() {
        // box 10x20 at (50, 40): left 43, top 26, right 43 + 17 = 60, bottom 26 + 34 = 60
        assert_eq!(dilated_box(Region { x: 50.0, y: 40.0, w: 10.0, h: 20.0 }, 100, 100), (43, 26, 60, 60));
        // clamped at the image border
        assert_eq!(dilated_box(Region { x: 2.0, y: 90.0, w: 10.0, h: 20.0 }, 100, 100), (0, 76, 17, 100));
        // half to even: 2.5 -> 2
        assert_eq!(dilated_box(Region { x: 9.5, y: 0.0, w: 10.0, h: 1.0 }, 100, 100).0, 2);
    }

    #[test]
    fn squares_are_centred_on_black() {
        let wide = expand_to_square(&img(4, 2));
        assert_eq!((wide.width, wide.height), (4, 4));
        assert!(wide.data[..4 * 3].iter().all(|&v| v == 0), "first row is padding");
        assert_eq!(&wide.data[4 * 3..4 * 3 + 3], &img(4, 2).data[..3]);
        let tall = expand_to_square(&img(1, 3));
        assert_eq!((tall.width, tall.height), (3, 3));
        assert_eq!(&tall.data[3..6], &img(1, 3).data[..3], "column 1 holds the image");
        assert!(tall.data[..3].iter().all(|&v| v == 0));
    }

    #[test]
    fn crops_outside_the_image_are_black() {
        let c = img(2, 2).crop((1, 1, 3, 3));
        assert_eq!((c.width, c.height), (2, 2));
        assert_eq!(&c.data[..3], &img(2, 2).data[9..12]);
        assert!(c.data[3..].iter().all(|&v| v == 0));
    }
}
