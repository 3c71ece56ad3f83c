//! JPEG previews of indexed images for the page: the grid and the results show photos a few
//! hundred pixels wide, and a phone photo is 12 megapixels and several megabytes. A preview is
//! decoded at reduced size where the format allows it (JPEG's scaled inverse DCT), upright, and
//! re-encoded small. HEIC photos, which most browsers cannot show, are always sent this way.

use image::imageops::FilterType;
use lincir::clip::preprocess;

/// The largest preview edge a request may ask for.
pub const MAX_EDGE: usize = 4096;
/// The long edge of a HEIC photo sent without a requested size.
pub const HEIC_EDGE: usize = 1600;

/// A JPEG of the image in `bytes` whose long edge is at most `edge` pixels (a smaller image
/// keeps its size).
pub fn jpeg(bytes: &[u8], name: &str, edge: usize) -> anyhow::Result<Vec<u8>> {
    let img = preprocess::decode_for_preview(bytes, name, edge)?;
    let img = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data).ok_or_else(|| anyhow::anyhow!("{name}: short image buffer"))?;
    let (w, h) = img.dimensions();
    let scale = (edge as f64 / w.max(h) as f64).min(1.0);
    let img = if scale < 1.0 {
        let (pw, ph) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
        image::imageops::resize(&img, pw, ph, FilterType::Triangle)
    } else {
        img
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img)?;
    Ok(out)
}
