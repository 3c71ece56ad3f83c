//! How large an image lincir agrees to decode: Pillow's decompression-bomb policy
//! (`Image.MAX_IMAGE_PIXELS`), applied to the size a file *declares* before any pixel buffer is
//! allocated, for every format. A file whose header claims 100,000 x 100,000 pixels is refused
//! in microseconds instead of asking for 30 GB.
//!
//! The limit is process-wide, as Pillow's is: the command line sets it once
//! (`--max-image-pixels`), and every decoder (embed, index, eval, search, serve, training
//! validation) reads it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Pillow refuses images above twice `Image.MAX_IMAGE_PIXELS` (89,478,485) ...
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

static MAX_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PIXELS);

/// Sets the largest number of pixels (width x height) an image may declare. 0 is refused by the
/// command line; here it would refuse every image.
pub fn set_max_pixels(n: u64) {
    MAX_PIXELS.store(n, Ordering::Relaxed);
}

pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(Ordering::Relaxed)
}

/// ... and warns above `Image.MAX_IMAGE_PIXELS`, half the refusal limit.
pub fn warn_pixels() -> u64 {
    max_pixels() / 2
}

/// The most bytes one decoder may hold: the largest accepted image as 16-bit RGBA (8 bytes per
/// pixel, the widest layout we decode), plus room for a decoder's own buffers.
pub fn max_decoder_bytes() -> u64 {
    max_pixels().saturating_mul(8).saturating_add(64 << 20)
}

/// What a declared size means: refused, accepted with a warning, or accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Refuse(String),
    Warn(String),
    Accept,
}

/// Judges a declared size against the process-wide limit.
pub fn check(width: u64, height: u64) -> Verdict {
    check_against(width, height, max_pixels())
}

fn check_against(width: u64, height: u64, limit: u64) -> Verdict {
    let pixels = width.saturating_mul(height);
    if width == 0 || height == 0 {
        Verdict::Refuse(format!("image declares a size of {width}x{height} pixels"))
    } else if pixels > limit {
        Verdict::Refuse(format!(
            "image of {width}x{height} ({pixels} pixels) exceeds the limit of {limit} pixels \
             (a decompression bomb? --max-image-pixels raises the limit)"
        ))
    } else if pixels > limit / 2 {
        Verdict::Warn(format!("image of {width}x{height} ({pixels} pixels) is above {} pixels: decoding it needs much memory", limit / 2))
    } else {
        Verdict::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pillow_thresholds() {
        let limit = DEFAULT_MAX_PIXELS;
        assert!(matches!(check_against(100_000, 100_000, limit), Verdict::Refuse(_)));
        assert!(matches!(check_against(13_379, 13_379, limit), Verdict::Refuse(_))); // 178,997,641
        assert!(matches!(check_against(13_377, 13_377, limit), Verdict::Warn(_))); // 178,944,129
        assert!(matches!(check_against(9_460, 9_460, limit), Verdict::Warn(_))); // 89,491,600
        assert_eq!(check_against(9_459, 9_459, limit), Verdict::Accept); // 89,472,681
        assert_eq!(check_against(100_000, 1, limit), Verdict::Accept);
        assert!(matches!(check_against(0, 7, limit), Verdict::Refuse(_)));
        assert!(matches!(check_against(u64::MAX, u64::MAX, limit), Verdict::Refuse(_)));
    }
}
