//! HEIF images (HEIC: what iPhones write) through libheif, in builds with the `heic` feature.
//! libheif applies the file's own rotation, mirroring and crop (HEIF's `irot`/`imir`/`clap`
//! properties, which is where a HEIC photo's orientation lives), so the photo comes out upright,
//! as pillow-heif opens it. Without the feature, a HEIF file is a clear error saying how to get
//! the support.

/// What an ISO-BMFF file's `ftyp` box says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// HEVC-coded HEIF (`.heic`, `.heif`).
    Heic,
    /// AV1-coded HEIF (`.avif`).
    Avif,
}

/// The HEIF flavour of a file from its first bytes, or None when it is not HEIF.
pub fn container(bytes: &[u8]) -> Option<Container> {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return None;
    }
    let size = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let major = &bytes[8..12];
    // The compatible brands follow the major brand and its version.
    let compatible: Vec<&[u8]> = bytes[16..size.clamp(16, bytes.len())].chunks_exact(4).collect();
    let is = |brands: &[&[u8]]| brands.contains(&major) || compatible.iter().any(|b| brands.contains(b));
    if matches!(major, b"avif" | b"avis") {
        Some(Container::Avif)
    } else if is(&[b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"]) {
        Some(Container::Heic)
    } else if is(&[b"avif", b"avis"]) {
        Some(Container::Avif)
    } else if is(&[b"mif1", b"msf1", b"mif2"]) {
        Some(Container::Heic)
    } else {
        None
    }
}

/// Whether this build decodes HEIC.
pub const SUPPORTED: bool = cfg!(feature = "heic");

#[cfg(not(feature = "heic"))]
pub fn decode(_bytes: &[u8], kind: Container, _preview_edge: Option<usize>) -> Result<image::DynamicImage, String> {
    let what = match kind {
        Container::Heic => "a HEIC/HEIF image",
        Container::Avif => "an AVIF image",
    };
    Err(format!("{what}: this lincir was built without HEIF support (build it with `--features heic`, README \"HEIC photos\"), or convert the file to JPEG"))
}

/// Decodes the primary image to 8-bit RGB, or RGBA when it has an alpha channel (composited
/// over white by the caller, as for every other format). Sizes are checked against the pixel and
/// memory limits from the header, before anything is decoded. With `preview_edge` (a preview,
/// not CLIP's input), the smallest thumbnail stored in the file whose long edge reaches it is
/// decoded instead, when there is one (phones store one of a few hundred pixels).
#[cfg(feature = "heic")]
pub fn decode(bytes: &[u8], kind: Container, preview_edge: Option<usize>) -> Result<image::DynamicImage, String> {
    use libheif_rs::{ColorSpace, HeifContext, LibHeif, RgbChroma};
    use std::sync::OnceLock;

    use super::image_limits::{self, Verdict};

    // libheif's global initialisation, once for the process.
    static LIB: OnceLock<LibHeif> = OnceLock::new();
    let lib = LIB.get_or_init(LibHeif::new);
    let corrupt = |e: libheif_rs::HeifError| format!("corrupt HEIF image: {}", e.message);
    let mut ctx = HeifContext::read_from_bytes(bytes).map_err(corrupt)?;
    // Phone photos are grids of tiles, which libheif decodes on up to 4 threads of its own. When
    // this decode is one of many running on rayon's threads (index, embed), those threads are
    // already busy: one each.
    if rayon::current_thread_index().is_some() {
        ctx.set_max_decoding_threads(1);
    }
    let primary = ctx.primary_image_handle().map_err(corrupt)?;
    let handle = match preview_edge {
        Some(edge) => covering_thumbnail(&primary, edge).unwrap_or(primary),
        None => primary,
    };
    let (w, h) = (handle.width() as u64, handle.height() as u64);
    match image_limits::check(w, h) {
        Verdict::Refuse(msg) => return Err(msg),
        Verdict::Warn(msg) => eprintln!("warning: {msg}"),
        Verdict::Accept => {}
    }
    // libheif holds the coded planes (up to 16 bits per value, 3 planes) and the RGBA result.
    let needed = w * h * 10;
    if needed > image_limits::max_decoder_bytes() {
        return Err(format!("image of {w}x{h} needs {needed} bytes to decode, above the limit"));
    }
    let alpha = handle.has_alpha_channel();
    let chroma = if alpha { RgbChroma::Rgba } else { RgbChroma::Rgb };
    let img = lib.decode(&handle, ColorSpace::Rgb(chroma), None).map_err(|e| match e.code {
        // A libheif built without the codec's decoder (libde265 for HEVC, dav1d or libaom for AV1).
        libheif_rs::HeifErrorCode::UnsupportedFeature => {
            let codec = match kind {
                Container::Heic => "HEVC (libde265)",
                Container::Avif => "AV1 (dav1d or libaom)",
            };
            format!("this lincir's libheif has no {codec} decoder ({}): convert the file to JPEG", e.message)
        }
        _ => corrupt(e),
    })?;
    let short = || "libheif returned a short plane".to_string();
    let planes = img.planes();
    let plane = planes.interleaved.ok_or("libheif returned no interleaved plane")?;
    let channels = if alpha { 4 } else { 3 };
    let (pw, ph) = (plane.width as usize, plane.height as usize);
    let row = pw * channels;
    if plane.stride < row || plane.data.len() < plane.stride * ph.saturating_sub(1) + row {
        return Err(short());
    }
    let mut data = Vec::with_capacity(row * ph);
    for y in 0..ph {
        data.extend_from_slice(&plane.data[y * plane.stride..y * plane.stride + row]);
    }
    Ok(if alpha {
        image::DynamicImage::ImageRgba8(image::RgbaImage::from_raw(pw as u32, ph as u32, data).ok_or_else(short)?)
    } else {
        image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(pw as u32, ph as u32, data).ok_or_else(short)?)
    })
}

/// The smallest of an image's thumbnails whose long edge is at least `edge`.
#[cfg(feature = "heic")]
fn covering_thumbnail(primary: &libheif_rs::ImageHandle, edge: usize) -> Option<libheif_rs::ImageHandle> {
    let mut ids = vec![0; primary.number_of_thumbnails().min(16)];
    let n = primary.thumbnail_ids(&mut ids);
    ids[..n]
        .iter()
        .filter_map(|&id| primary.thumbnail(id).ok())
        .filter(|t| t.width().max(t.height()) as usize >= edge)
        .min_by_key(|t| t.width() as u64 * t.height() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
        let mut b = Vec::new();
        let size = 16 + 4 * compatible.len();
        b.extend((size as u32).to_be_bytes());
        b.extend(b"ftyp");
        b.extend(major);
        b.extend([0, 0, 0, 0]);
        for c in compatible {
            b.extend(*c);
        }
        b.extend([0u8; 8]); // the next box
        b
    }

    #[test]
    fn brands_name_the_container() {
        assert_eq!(container(&ftyp(b"heic", &[b"mif1", b"heic"])), Some(Container::Heic));
        assert_eq!(container(&ftyp(b"mif1", &[b"mif1", b"heic", b"miaf"])), Some(Container::Heic));
        assert_eq!(container(&ftyp(b"avif", &[b"mif1", b"avif"])), Some(Container::Avif));
        assert_eq!(container(&ftyp(b"mif1", &[b"avif", b"mif1"])), Some(Container::Avif));
        // An MP4 video and a QuickTime file are not images; short and odd files are not HEIF.
        assert_eq!(container(&ftyp(b"isom", &[b"isom", b"mp41"])), None);
        assert_eq!(container(&ftyp(b"qt  ", &[])), None);
        assert_eq!(container(b"\0\0\0\x18ftypheic"), None);
        assert_eq!(container(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        let mut lying = ftyp(b"heic", &[]);
        lying[0..4].copy_from_slice(&u32::MAX.to_be_bytes()); // a size past the end is clamped
        assert_eq!(container(&lying), Some(Container::Heic));
    }
}
