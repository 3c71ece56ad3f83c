//! Pic2Word's training augmentation: every image, at every step, through torchvision's
//! `RandomResizedCrop(n, scale=(0.9, 1.0), interpolation=BICUBIC)` (its `_transform(n,
//! is_train=True)`), then converted, rescaled and normalised as the model's preprocessing does.
//! The draws come from lincir's generator (same distribution as torchvision's, not its numbers).

use crate::clip::preprocess::{self, PreprocessConfig, Resize, Rgb8};
use crate::clip::resample::Filter;
use crate::rng::Rng;

/// The fraction of the image's area a crop keeps, and its aspect ratio range (w / h).
pub const SCALE: (f64, f64) = (0.9, 1.0);
pub const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// torchvision's `RandomResizedCrop.get_params`: up to 10 draws of an area fraction and a
/// log-uniform aspect ratio until the box fits, else the largest center box within the ratios.
/// Returns (left, top, width, height).
pub fn crop_box(width: usize, height: usize, rng: &mut Rng) -> (usize, usize, usize, usize) {
    let area = (width * height) as f64;
    let (lo, hi) = (RATIO.0.ln(), RATIO.1.ln());
    let uniform = |rng: &mut Rng, a: f64, b: f64| a + (b - a) * rng.uniform() as f64;
    for _ in 0..10 {
        let target = area * uniform(rng, SCALE.0, SCALE.1);
        let aspect = uniform(rng, lo, hi).exp();
        // Python's round(): half to even.
        let w = (target * aspect).sqrt().round_ties_even() as usize;
        let h = (target / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.below(height - h + 1);
            let left = rng.below(width - w + 1);
            return (left, top, w, h);
        }
    }
    let ratio = width as f64 / height as f64;
    let (w, h) = if ratio < RATIO.0 {
        (width, (width as f64 / RATIO.0).round_ties_even() as usize)
    } else if ratio > RATIO.1 {
        ((height as f64 * RATIO.1).round_ties_even() as usize, height)
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// One augmented view of `img` as the vision tower's pixels: the crop resized to the tower's
/// n x n with Pillow's bicubic, then the model's rescaling and normalisation.
///
/// # Shapes
/// -> [3, n, n]
pub fn augmented_pixels(img: &Rgb8, cfg: &PreprocessConfig, n: usize, rng: &mut Rng) -> Vec<f32> {
    let (left, top, w, h) = crop_box(img.width, img.height, rng);
    let view = img.crop((left, top, left + w, top + h));
    let exact = PreprocessConfig { resize: Some(Resize::Exact { height: n, width: n }), filter: Filter::Bicubic, crop: Some((n, n)), ..cfg.clone() };
    preprocess::pixels(&view, &exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_keep_90_to_100_percent_within_the_ratios_inside_the_image() {
        let mut rng = Rng::new(1);
        for (w, h) in [(640, 480), (480, 640), (224, 224), (1000, 100), (7, 5)] {
            for _ in 0..500 {
                let (l, t, cw, ch) = crop_box(w, h, &mut rng);
                assert!(l + cw <= w && t + ch <= h && cw > 0 && ch > 0, "{w}x{h}: {l},{t} {cw}x{ch}");
                let fraction = (cw * ch) as f64 / (w * h) as f64;
                let aspect = cw as f64 / ch as f64;
                // Images within the ratios, large enough that rounding to whole pixels barely
                // moves the fraction and the ratio.
                let own = w as f64 / h as f64;
                if w >= 100 && h >= 100 && (RATIO.0..=RATIO.1).contains(&own) {
                    assert!((0.88..=1.0).contains(&fraction), "{w}x{h}: area {fraction}");
                    assert!((0.74..=1.35).contains(&aspect), "{w}x{h}: aspect {aspect}");
                }
            }
        }
        // A 10:1 panorama never fits a 90% box within the ratios: the center fallback, 4:3.
        assert_eq!(crop_box(1000, 100, &mut rng), (433, 0, 133, 100));
    }
}
