//! Image preprocessing identical to transformers' `CLIPImageProcessor` (the PIL-based one):
//! decode, EXIF orientation, convert to RGB (alpha composited over white, as transformers'
//! `convert_to_rgb` does), resize the shortest edge with Pillow's antialiasing filter, center
//! crop, rescale to [0, 1], normalise. Sizes and statistics come from `preprocessor_config.json`.
//!
//! Choices where PIL or the processor leave room (see docs/PREPROCESSING.md):
//! - EXIF orientation is applied (as transformers' `load_image` does with
//!   `ImageOps.exif_transpose`), so phone photos are upright.
//! - 16-bit images keep their high byte (what Pillow does for 16-bit RGB(A) PNGs; for 16-bit
//!   grayscale Pillow clips values above 255 to white, which destroys the image, so there we scale
//!   like the colour case instead).

use std::path::Path;

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader};
use serde_json::Value;

use super::{heif, image_limits, jpeg};
use super::resample::{resize_rgb8_window_of_extent, Filter};
use crate::{Error, Result};

pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// OpenAI CLIP's normalisation statistics (the defaults of `CLIPImageProcessor`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// How to resize before cropping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resize {
    /// Shortest edge to this size, aspect kept (CLIP's setting).
    ShortestEdge(usize),
    /// Exactly this height and width.
    Exact { height: usize, width: usize },
}

/// Which published image transform turns a decoded image into the tower's pixels. The methods
/// compared in `eval` were evaluated by their authors with different ones (docs/PREPROCESSING.md,
/// "Other methods' transforms").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pipeline {
    /// transformers' `CLIPImageProcessor`, settings from `preprocessor_config.json`: LinCIR's.
    #[default]
    Transformers,
    /// OpenAI CLIP's torchvision transform (resize the shortest edge to the tower's size with
    /// bicubic, center crop rounding half to even): Pic2Word's, and SEARLE's `clip` option.
    OpenAi,
    /// SEARLE's default ("target pad"): pad with black to an aspect ratio of 1.25 when the image
    /// is more elongated than that, then OpenAI CLIP's transform.
    TargetPad,
}

/// SEARLE's target aspect ratio.
pub const TARGET_PAD_RATIO: f64 = 1.25;

/// How JPEG files are decoded before the resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JpegDecode {
    /// Every pixel, as Pillow and transformers' processor decode it: the reference pipeline.
    #[default]
    Exact,
    /// A large JPEG decoded at 1/2, 1/4 or 1/8 of its size inside libjpeg's inverse DCT, the
    /// smallest that still holds [`FAST_JPEG_GAP`] times the resize's target in each dimension,
    /// then resized as Pillow's `draft` + `resize(box=...)` (its `thumbnail`) does: the same
    /// geometry, slightly different pixels, a phone photo several times faster
    /// (docs/PREPROCESSING.md, "Fast JPEG decoding"). Not with SEARLE's target pad.
    Fast,
}

/// Pillow's `reducing_gap` for [`JpegDecode::Fast`]: the decoded image keeps at least this many
/// times the resize target. Pillow documents 3 as indistinguishable from a full decode; on 24
/// photographs of 1.5 to 24 megapixels it moved the 224 x 224 crop by 0.12 levels on average
/// (at most 7), against 0.25 (17) for `thumbnail`'s default of 2.
pub const FAST_JPEG_GAP: usize = 3;

impl JpegDecode {
    pub fn name(self) -> &'static str {
        match self {
            JpegDecode::Exact => "exact",
            JpegDecode::Fast => "fast",
        }
    }
}

impl Pipeline {
    pub fn name(self) -> &'static str {
        match self {
            Pipeline::Transformers => "transformers",
            Pipeline::OpenAi => "openai",
            Pipeline::TargetPad => "targetpad",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub resize: Option<Resize>,
    pub filter: Filter,
    pub crop: Option<(usize, usize)>, // (height, width)
    pub rescale_factor: Option<f32>,
    pub normalize: Option<([f32; 3], [f32; 3])>,
    pub pipeline: Pipeline,
    pub jpeg: JpegDecode,
}

/// The black border SEARLE's target pad adds on each side, (horizontal, vertical), for an image
/// of `w` x `h`: none when the long edge is less than `ratio` times the short one; otherwise the
/// short axis grows to about long / ratio (each side's border truncated, as Python's `int`).
pub fn target_pad(w: usize, h: usize, ratio: f64) -> (usize, usize) {
    let (long, short) = (w.max(h) as f64, w.min(h) as f64);
    if short == 0.0 || long / short < ratio {
        return (0, 0);
    }
    let side = |size: usize| ((long / ratio - size as f64) / 2.0).trunc().max(0.0) as usize;
    (side(w), side(h))
}

/// torchvision's center-crop offset: `int(round((size - crop) / 2.0))`, Python rounding half to
/// even (transformers' processor floors instead, so odd margins can differ by one pixel).
fn offset_round_half_even(margin: i64) -> i64 {
    let half = margin.div_euclid(2);
    if margin.rem_euclid(2) == 0 || half.rem_euclid(2) == 0 {
        half
    } else {
        half + 1
    }
}

impl PreprocessConfig {
    /// CLIP's preprocessing for square inputs of `image_size` (used when a model directory has no
    /// `preprocessor_config.json`).
    pub fn clip_default(image_size: usize) -> Self {
        PreprocessConfig {
            resize: Some(Resize::ShortestEdge(image_size)),
            filter: Filter::Bicubic,
            crop: Some((image_size, image_size)),
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some((CLIP_MEAN, CLIP_STD)),
            pipeline: Pipeline::Transformers,
            jpeg: JpegDecode::Exact,
        }
    }

    /// This model's preprocessing through `pipeline`. OpenAI's transform and SEARLE's resize the
    /// shortest edge to the tower's `image_size` with bicubic and crop a square of it, whatever
    /// the processor file says; the rescaling and normalisation statistics stay the model's
    /// (OpenAI's for every OpenAI and LAION CLIP, as those transforms hard-code).
    pub fn with_pipeline(&self, pipeline: Pipeline, image_size: usize) -> Self {
        match pipeline {
            Pipeline::Transformers => PreprocessConfig { pipeline, ..self.clone() },
            Pipeline::OpenAi | Pipeline::TargetPad => PreprocessConfig {
                resize: Some(Resize::ShortestEdge(image_size)),
                filter: Filter::Bicubic,
                crop: Some((image_size, image_size)),
                pipeline,
                ..self.clone()
            },
        }
    }

    /// What identifies these settings in cache and index keys. The transformers pipeline with
    /// exact decoding keeps the text it had before pipelines existed, so feature caches and
    /// indexes stay valid.
    pub fn cache_key(&self) -> String {
        let PreprocessConfig { resize, filter, crop, rescale_factor, normalize, pipeline, jpeg } = self;
        let mut key = format!("PreprocessConfig {{ resize: {resize:?}, filter: {filter:?}, crop: {crop:?}, rescale_factor: {rescale_factor:?}, normalize: {normalize:?} }}");
        if *pipeline != Pipeline::Transformers {
            key += &format!(" pipeline: {}", pipeline.name());
        }
        if *jpeg != JpegDecode::Exact {
            key += &format!(" jpeg: {}", jpeg.name());
        }
        key
    }

    /// The size Pillow's `draft` is asked for, (width, height), when JPEGs are decoded fast:
    /// [`FAST_JPEG_GAP`] times the resize target (its larger side for an exact size, whatever
    /// the orientation). None when decoding is exact, without a resize, or with SEARLE's pad
    /// (whose border is counted in full-size pixels).
    fn draft_request(&self) -> Option<(usize, usize)> {
        if self.jpeg != JpegDecode::Fast || self.pipeline == Pipeline::TargetPad {
            return None;
        }
        let side = match self.resize? {
            Resize::ShortestEdge(s) => s,
            Resize::Exact { height, width } => height.max(width),
        };
        Some((FAST_JPEG_GAP * side, FAST_JPEG_GAP * side))
    }

    /// Reads `preprocessor_config.json` (both the old `size: 224` and the new
    /// `size: {"shortest_edge": 224}` layouts).
    pub fn from_file(path: &Path, image_size: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::file(path, format!("malformed JSON: {e}")))?;
        let bad = |msg: String| Error::file(path, msg);
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(true);
        let default = Self::clip_default(image_size);
        let resize = if flag("do_resize") {
            Some(match v.get("size") {
                None => default.resize.unwrap(),
                Some(Value::Number(n)) => Resize::ShortestEdge(n.as_u64().ok_or_else(|| bad(format!("bad size {n}")))? as usize),
                Some(Value::Object(m)) => {
                    let get = |k: &str| m.get(k).and_then(Value::as_u64).map(|x| x as usize);
                    match (get("shortest_edge"), get("height"), get("width")) {
                        (Some(s), _, _) => Resize::ShortestEdge(s),
                        (None, Some(height), Some(width)) => Resize::Exact { height, width },
                        _ => return Err(bad(format!("unsupported size {}", Value::Object(m.clone())))),
                    }
                }
                Some(other) => return Err(bad(format!("unsupported size {other}"))),
            })
        } else {
            None
        };
        let filter = match v.get("resample") {
            None => Filter::Bicubic,
            Some(code) => code
                .as_u64()
                .and_then(Filter::from_pil_code)
                .ok_or_else(|| bad(format!("resample {code} is not supported (1 lanczos, 2 bilinear, 3 bicubic)")))?,
        };
        let crop = if flag("do_center_crop") {
            Some(match v.get("crop_size") {
                None => default.crop.unwrap(),
                Some(Value::Number(n)) => {
                    let s = n.as_u64().ok_or_else(|| bad(format!("bad crop_size {n}")))? as usize;
                    (s, s)
                }
                Some(Value::Object(m)) => {
                    let get = |k: &str| m.get(k).and_then(Value::as_u64).map(|x| x as usize);
                    (get("height").ok_or_else(|| bad("crop_size without height".into()))?,
                     get("width").ok_or_else(|| bad("crop_size without width".into()))?)
                }
                Some(other) => return Err(bad(format!("unsupported crop_size {other}"))),
            })
        } else {
            None
        };
        let rescale_factor = if flag("do_rescale") {
            Some(v.get("rescale_factor").and_then(Value::as_f64).unwrap_or(1.0 / 255.0) as f32)
        } else {
            None
        };
        let stats = |k: &str, d: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(k) {
                None => Ok(d),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().ok_or_else(|| bad(format!("{k} must hold numbers")))? as f32;
                    }
                    Ok(out)
                }
                Some(other) => Err(bad(format!("{k} must be 3 numbers, found {other}"))),
            }
        };
        let normalize = if flag("do_normalize") {
            Some((stats("image_mean", CLIP_MEAN)?, stats("image_std", CLIP_STD)?))
        } else {
            None
        };
        Ok(PreprocessConfig { resize, filter, crop, rescale_factor, normalize, pipeline: Pipeline::Transformers, jpeg: JpegDecode::Exact })
    }

    /// Output (height, width) for an input of (h, w) before cropping, as transformers'
    /// `get_resize_output_image_size(default_to_square=False)` computes it.
    pub fn resized_size(&self, h: usize, w: usize) -> (usize, usize) {
        match self.resize {
            None => (h, w),
            Some(Resize::Exact { height, width }) => (height, width),
            Some(Resize::ShortestEdge(s)) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                if short == s {
                    return (h, w);
                }
                let new_long = (s as f64 * long as f64 / short as f64) as usize;
                if w <= h {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }
}

/// Whether a file's first bytes are a HEIF image (HEIC or AVIF), whichever this build decodes.
pub fn is_heif(bytes: &[u8]) -> bool {
    heif::container(bytes).is_some()
}

/// An 8-bit RGB image, interleaved `[h][w][3]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
    /// Set when this is a JPEG decoded at a reduced size ([`JpegDecode::Fast`]).
    pub reduced: Option<Reduced>,
}

/// What an image decoded at a reduced size stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reduced {
    /// The full image's upright (width, height).
    pub full: (usize, usize),
    /// The reduction (2, 4 or 8): each side is the full one divided by it, rounded up.
    pub divisor: usize,
}

impl Rgb8 {
    /// An image at its full size.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Rgb8 {
        Rgb8 { width, height, data, reduced: None }
    }

    /// The box (left, top, right, bottom) as Pillow's `crop` makes it: at least 1 x 1, black
    /// where the box leaves the image. The box is in this image's pixels (a reduced image's
    /// crop is a full-size image of its own).
    pub fn crop(&self, (l, t, r, b): (usize, usize, usize, usize)) -> Rgb8 {
        let (w, h) = (r.saturating_sub(l).max(1), b.saturating_sub(t).max(1));
        let mut data = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = (l + x, t + y);
                if sx < self.width && sy < self.height {
                    let s = (sy * self.width + sx) * 3;
                    data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&self.data[s..s + 3]);
                }
            }
        }
        Rgb8::new(w, h, data)
    }
}

/// Decodes an image file, applies its EXIF orientation and converts it to 8-bit RGB.
pub fn load_rgb8(path: &Path) -> Result<Rgb8> {
    load(path, DecodeSize::Full)
}

/// Decodes an image held in memory (an upload); `name` is used in errors.
pub fn decode_rgb8(bytes: &[u8], name: &str) -> Result<Rgb8> {
    decode_guarded(bytes, DecodeSize::Full).map_err(|msg| Error::file(name, msg))
}

/// [`load_rgb8`] for `cfg`'s [`pixels`]: with [`JpegDecode::Fast`], a large JPEG is decoded
/// at a reduced size (the image says so in [`Rgb8::reduced`]).
pub fn load_rgb8_for(path: &Path, cfg: &PreprocessConfig) -> Result<Rgb8> {
    load(path, decode_size(cfg))
}

/// [`decode_rgb8`] for `cfg`'s [`pixels`], as [`load_rgb8_for`].
pub fn decode_rgb8_for(bytes: &[u8], name: &str, cfg: &PreprocessConfig) -> Result<Rgb8> {
    decode_guarded(bytes, decode_size(cfg)).map_err(|msg| Error::file(name, msg))
}

fn load(path: &Path, size: DecodeSize) -> Result<Rgb8> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read image: {e}")))?;
    decode_guarded(&bytes, size).map_err(|msg| Error::file(path, msg))
}

/// At which size a JPEG is decoded.
#[derive(Debug, Clone, Copy)]
enum DecodeSize {
    Full,
    /// For showing: the smallest whose long edge still reaches this.
    Preview(usize),
    /// Pillow's `draft("RGB", (width, height))`.
    Draft(usize, usize),
}

fn decode_size(cfg: &PreprocessConfig) -> DecodeSize {
    cfg.draft_request().map_or(DecodeSize::Full, |(w, h)| DecodeSize::Draft(w, h))
}

/// The reduction (1, 2, 4 or 8) at which a `w` x `h` JPEG is decoded.
fn jpeg_divisor(size: DecodeSize, w: usize, h: usize) -> usize {
    match size {
        DecodeSize::Full => 1,
        // The fewest eighths whose long edge (rounded up, as libjpeg does) reaches the target.
        DecodeSize::Preview(edge) => [8, 4, 2, 1].into_iter().find(|&d| w.max(h).div_ceil(d) >= edge).unwrap_or(1),
        // Pillow: the largest of 8, 4, 2, 1 not above min(w // width, h // height).
        DecodeSize::Draft(rw, rh) => {
            let fits = (w / rw.max(1)).min(h / rh.max(1));
            [8, 4, 2, 1].into_iter().find(|&d| d <= fits).unwrap_or(1)
        }
    }
}

/// An image for showing, not for CLIP: decoded as [`decode_rgb8`] (upright, alpha over white),
/// except that a JPEG is decoded at the smallest of 1/8, 1/4, 1/2 or full size whose long edge is
/// still at least `long_edge` (libjpeg's scaled inverse DCT), and a HEIC photo from a thumbnail
/// it stores when one is that large, so a phone photo's preview costs a fraction of a full
/// decode. The caller resizes it to the size it shows.
pub fn decode_for_preview(bytes: &[u8], name: &str, long_edge: usize) -> Result<Rgb8> {
    decode_guarded(bytes, DecodeSize::Preview(long_edge)).map_err(|msg| Error::file(name, msg))
}

fn decode_guarded(bytes: &[u8], size: DecodeSize) -> std::result::Result<Rgb8, String> {
    // A decoder that panics on a malformed file must not take the process (a server) down.
    crate::guard::catch_panic(|| decode_within_limits(bytes, size)).unwrap_or_else(|what| Err(format!("corrupt image: decoder failure ({what})")))
}

/// Reads the header, refuses sizes over the pixel limit before any pixel buffer exists, then
/// decodes with every decoder's allocations bounded (see `image_limits`). `size`: a JPEG's
/// decoding size (other formats are decoded whole).
fn decode_within_limits(bytes: &[u8], size: DecodeSize) -> std::result::Result<Rgb8, String> {
    if let Some(kind) = heif::container(bytes) {
        // libheif applies HEIF's own orientation; such files carry no EXIF orientation to apply.
        let preview_edge = match size {
            DecodeSize::Preview(edge) => Some(edge),
            _ => None,
        };
        return heif::decode(bytes, kind, preview_edge).map(|img| to_rgb8(&img));
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(image_limits::max_decoder_bytes());
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        // A decoder that checks its header against the memory limit itself (PNG) says so here.
        image::ImageError::Limits(l) => format!("image exceeds the limit of decoding memory ({l}): a decompression bomb? --max-image-pixels raises the limit"),
        e => format!("not a readable image: {e}"),
    })?;
    let (w, h) = decoder.dimensions();
    match image_limits::check(w as u64, h as u64) {
        image_limits::Verdict::Refuse(msg) => return Err(msg),
        image_limits::Verdict::Warn(msg) => eprintln!("warning: {msg}"),
        image_limits::Verdict::Accept => {}
    }
    if decoder.total_bytes() > image_limits::max_decoder_bytes() {
        return Err(format!("image of {w}x{h} needs {} bytes to decode, above the limit", decoder.total_bytes()));
    }
    let orientation = decoder.orientation().map_err(|e| format!("bad EXIF data: {e}"))?;
    let mut divisor = 1;
    let mut img = if jpeg::is_jpeg(bytes) {
        // libjpeg, as Pillow: the image crate's decoder is not bit-exact (see jpeg.rs). Its size
        // was checked above from the same header.
        drop(decoder);
        divisor = jpeg_divisor(size, w as usize, h as usize);
        let (w, h, data) = jpeg::decode_rgb8_scaled(bytes, (8 / divisor) as u8)?;
        let buf = image::RgbImage::from_raw(w as u32, h as u32, data).ok_or("JPEG decoder returned a short buffer")?;
        DynamicImage::ImageRgb8(buf)
    } else {
        DynamicImage::from_decoder(decoder).map_err(|e| format!("corrupt image: {e}"))?
    };
    img.apply_orientation(orientation);
    let mut rgb = to_rgb8(&img);
    if divisor > 1 && matches!(size, DecodeSize::Draft(..)) {
        use image::metadata::Orientation::*;
        let turned = matches!(orientation, Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH);
        let full = if turned { (h as usize, w as usize) } else { (w as usize, h as usize) };
        rgb.reduced = Some(Reduced { full, divisor });
    }
    Ok(rgb)
}

/// transformers' `convert_to_rgb`: RGB stays, anything else becomes RGBA and is composited over
/// white with Pillow's integer `alpha_composite`; grey is replicated; 16 bits keep the high byte.
fn to_rgb8(img: &DynamicImage) -> Rgb8 {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = match img {
        DynamicImage::ImageRgb8(b) => b.as_raw().clone(),
        DynamicImage::ImageRgb16(b) => b.as_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageLuma8(b) => b.as_raw().iter().flat_map(|&l| [l, l, l]).collect(),
        DynamicImage::ImageLuma16(b) => b.as_raw().iter().flat_map(|&l| [(l >> 8) as u8; 3]).collect(),
        DynamicImage::ImageLumaA8(b) => b.as_raw().chunks_exact(2).flat_map(|p| over_white([p[0], p[0], p[0]], p[1])).collect(),
        DynamicImage::ImageLumaA16(b) => b
            .as_raw()
            .chunks_exact(2)
            .flat_map(|p| {
                let l = (p[0] >> 8) as u8;
                over_white([l, l, l], (p[1] >> 8) as u8)
            })
            .collect(),
        DynamicImage::ImageRgba8(b) => b.as_raw().chunks_exact(4).flat_map(|p| over_white([p[0], p[1], p[2]], p[3])).collect(),
        DynamicImage::ImageRgba16(b) => b
            .as_raw()
            .chunks_exact(4)
            .flat_map(|p| over_white([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8], (p[3] >> 8) as u8))
            .collect(),
        other => {
            // Float images (HDR, EXR, float TIFF): the image crate's conversion, alpha over white.
            let rgba = other.to_rgba8();
            rgba.as_raw().chunks_exact(4).flat_map(|p| over_white([p[0], p[1], p[2]], p[3])).collect()
        }
    };
    Rgb8::new(width, height, data)
}

/// Pillow's `Image.alpha_composite(white, pixel)` in its integer arithmetic (7 extra bits,
/// division by 255 as two shifts), then dropping alpha.
fn over_white(rgb: [u8; 3], alpha: u8) -> [u8; 3] {
    const BITS: u32 = 7;
    let shift_div255 = |a: u32| ((a >> 8) + a) >> 8;
    if alpha == 0 {
        return [255, 255, 255];
    }
    let (sa, da) = (alpha as u32, 255u32);
    let blend = da * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << BITS) / outa255;
    let coef2 = 255 * (1 << BITS) - coef1;
    rgb.map(|c| (shift_div255(c as u32 * coef1 + 255 * coef2 + (0x80 << BITS)) >> BITS) as u8)
}

/// Resize, center crop, rescale and normalise one RGB image.
///
/// # Shapes
/// -> [3, crop_h, crop_w] f32, channel-first as the vision tower expects
pub fn pixels(img: &Rgb8, cfg: &PreprocessConfig) -> Vec<f32> {
    // SEARLE's target pad: the image on a black canvas, which is never made (its size grows
    // with the long edge squared); the resize reads the image alone.
    let (pad_w, pad_h) = match cfg.pipeline {
        Pipeline::TargetPad => target_pad(img.width, img.height, TARGET_PAD_RATIO),
        _ => (0, 0),
    };
    let (canvas_w, canvas_h) = (img.width + 2 * pad_w, img.height + 2 * pad_h);
    // A JPEG decoded at a reduced size stands for the full image: the resize target and the crop
    // are the full image's, and the resize reads the reduced pixels as covering the full extent
    // divided by the reduction (Pillow's draft + resize(box=...)).
    let (geometry, extent) = match img.reduced {
        Some(Reduced { full, divisor }) if cfg.pipeline != Pipeline::TargetPad => {
            let part = |n: usize| (n as f64 / divisor as f64) as f32;
            (full, (part(full.0), part(full.1)))
        }
        _ => ((canvas_w, canvas_h), (canvas_w as f32, canvas_h as f32)),
    };
    let (rh, rw) = cfg.resized_size(geometry.1, geometry.0);
    let (ch, cw) = cfg.crop.unwrap_or((rh, rw));
    // transformers' center_crop: top = (h - crop_h) // 2; torchvision's rounds half to even;
    // zero padding when the image is smaller.
    let offset = |margin: i64| match cfg.pipeline {
        Pipeline::Transformers => margin.div_euclid(2),
        Pipeline::OpenAi | Pipeline::TargetPad => offset_round_half_even(margin),
    };
    let top = offset(rh as i64 - ch as i64);
    let left = offset(rw as i64 - cw as i64);
    // Only the part of the resized image that the crop keeps is computed (a very long image's
    // full resize can be gigabytes).
    let clamp = |v: i64, n: usize| v.clamp(0, n as i64) as usize;
    let (y0, y1) = (clamp(top, rh), clamp(top + ch as i64, rh));
    let (x0, x1) = (clamp(left, rw), clamp(left + cw as i64, rw));
    let (size, pad, canvas) = ((img.width, img.height), (pad_w, pad_h), (canvas_w, canvas_h));
    let window = resize_rgb8_window_of_extent(&img.data, size, pad, canvas, extent, (rw, rh), cfg.filter, x0..x1, y0..y1);
    let win_w = x1 - x0;
    let scale = cfg.rescale_factor.unwrap_or(1.0);
    let (mean, std) = cfg.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
    let mut out = vec![0f32; 3 * ch * cw];
    for c in 0..3 {
        for y in 0..ch {
            for x in 0..cw {
                let (sy, sx) = (y as i64 + top, x as i64 + left);
                let v = if sy >= 0 && sx >= 0 && (sy as usize) < rh && (sx as usize) < rw {
                    window[((sy as usize - y0) * win_w + sx as usize - x0) * 3 + c] as f32
                } else {
                    0.0
                };
                out[(c * ch + y) * cw + x] = (v * scale - mean[c]) / std[c];
            }
        }
    }
    out
}

/// Stacks preprocessed images into a batch.
///
/// # Shapes
/// -> [batch, 3, crop_h, crop_w]
pub fn stack(images: Vec<Vec<f32>>, cfg: &PreprocessConfig, device: &Device) -> Result<Tensor> {
    let n = images.len();
    let (h, w) = cfg.crop.ok_or_else(|| Error::Invalid("batched preprocessing needs a crop size".into()))?;
    let flat: Vec<f32> = images.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (n, 3, h, w), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_sizes_follow_transformers() {
        let cfg = PreprocessConfig::clip_default(224);
        assert_eq!(cfg.resized_size(480, 640), (224, 298)); // int(224 * 640 / 480) = 298
        assert_eq!(cfg.resized_size(640, 480), (298, 224));
        assert_eq!(cfg.resized_size(224, 500), (224, 500));
        assert_eq!(cfg.resized_size(100, 100), (224, 224));
    }

    #[test]
    fn target_pad_follows_searle() {
        // 640 x 427: 640 / 1.25 = 512, (512 - 427) / 2 = 42.5 -> 42 rows above and below.
        assert_eq!(target_pad(640, 427, 1.25), (0, 42));
        assert_eq!(target_pad(427, 640, 1.25), (42, 0));
        // Less elongated than 1.25: unchanged; exactly 1.25: a border of 0.
        assert_eq!(target_pad(120, 100, 1.25), (0, 0));
        assert_eq!(target_pad(500, 400, 1.25), (0, 0));
        assert_eq!(target_pad(100_000, 1, 1.25), (0, 39_999));
        assert_eq!(target_pad(0, 10, 1.25), (0, 0));
    }

    #[test]
    fn crop_offsets_round_half_to_even_as_python() {
        // Python: int(round(m / 2.0)) for m in -5..=7
        let want = [-2, -2, -2, -1, 0, 0, 0, 1, 2, 2, 2, 3, 4];
        let got: Vec<i64> = (-5..=7).map(offset_round_half_even).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_transformers_cache_key_is_the_one_indexes_were_made_with() {
        // The text `format!("{:?}")` gave before pipelines existed: changing it would orphan
        // every feature cache and make every index re-embed.
        let key = PreprocessConfig::clip_default(224).cache_key();
        assert_eq!(key, "PreprocessConfig { resize: Some(ShortestEdge(224)), filter: Bicubic, crop: Some((224, 224)), rescale_factor: Some(0.003921569), normalize: Some(([0.48145467, 0.4578275, 0.40821072], [0.26862955, 0.2613026, 0.2757771])) }");
        let pad = PreprocessConfig::clip_default(224).with_pipeline(Pipeline::TargetPad, 224).cache_key();
        assert!(pad.starts_with(&key) && pad.ends_with("pipeline: targetpad"), "{pad}");
        let fast = PreprocessConfig { jpeg: JpegDecode::Fast, ..PreprocessConfig::clip_default(224) }.cache_key();
        assert_eq!(fast, format!("{key} jpeg: fast"));
    }

    #[test]
    fn jpeg_reductions_follow_pillows_draft() {
        let draft = |cfg: &PreprocessConfig, w, h| jpeg_divisor(decode_size(cfg), w, h);
        let fast = PreprocessConfig { jpeg: JpegDecode::Fast, ..PreprocessConfig::clip_default(224) };
        assert_eq!(draft(&fast, 4032, 3024), 4); // 3024 // 672 = 4
        assert_eq!(draft(&fast, 3024, 4032), 4);
        assert_eq!(draft(&fast, 8000, 6000), 8);
        assert_eq!(draft(&fast, 1920, 1080), 1); // 1080 // 672 = 1
        assert_eq!(draft(&fast, 2688, 1344), 2);
        assert_eq!(draft(&fast, 100_000, 600), 1);
        assert_eq!(draft(&PreprocessConfig::clip_default(224), 8000, 6000), 1, "exact decoding");
        let pad = PreprocessConfig { jpeg: JpegDecode::Fast, ..PreprocessConfig::clip_default(224).with_pipeline(Pipeline::TargetPad, 224) };
        assert_eq!(draft(&pad, 8000, 6000), 1, "SEARLE's pad is measured on the full image");
        // Previews: the fewest eighths whose long edge still reaches the size asked for.
        assert_eq!(jpeg_divisor(DecodeSize::Preview(256), 4032, 3024), 8);
        assert_eq!(jpeg_divisor(DecodeSize::Preview(640), 4032, 3024), 4);
        assert_eq!(jpeg_divisor(DecodeSize::Preview(4096), 4032, 3024), 1);
    }

    #[test]
    fn alpha_over_white() {
        assert_eq!(over_white([10, 20, 30], 255), [10, 20, 30]);
        assert_eq!(over_white([10, 20, 30], 0), [255, 255, 255]);
        let half = over_white([0, 0, 0], 128);
        assert!((126..=128).contains(&half[0]), "{half:?}");
    }

    #[test]
    fn old_and_new_preprocessor_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(PREPROCESSOR_FILE);
        std::fs::write(&p, r#"{"size": 224, "crop_size": 224, "resample": 3}"#).unwrap();
        let old = PreprocessConfig::from_file(&p, 224).unwrap();
        std::fs::write(&p, r#"{"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}}"#).unwrap();
        let new = PreprocessConfig::from_file(&p, 224).unwrap();
        assert_eq!(old, new);
        assert_eq!(old, PreprocessConfig::clip_default(224));
        std::fs::write(&p, r#"{"resample": 0}"#).unwrap();
        let e = PreprocessConfig::from_file(&p, 224).unwrap_err().to_string();
        assert!(e.contains("preprocessor_config.json") && e.contains("resample"), "{e}");
    }
}
