//! Pillow's resampling of 8-bit images (`Image.resize` with a convolution filter), reproduced
//! bit for bit: separable, two passes in Pillow 13's order (see [`vertical_first`]), filter
//! support widened by the scale when shrinking (antialiasing), coefficients in 22-bit fixed
//! point, rounding and clipping to 8 bits after each pass. This is what `CLIPImageProcessor` runs
//! on every image.

/// Pillow's resampling filters (the `resample` codes of `preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Lanczos,  // 1
    Bilinear, // 2
    Bicubic,  // 3
}

impl Filter {
    pub fn from_pil_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Lanczos => 3.0,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                // Keys' cubic with a = -0.5, written as Pillow evaluates it.
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index, number of taps, and fixed-point coefficients.
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>, // [out, ksize]
}

impl Coefficients {
    /// The input indices these outputs read (outputs that read nothing do not count).
    fn span(&self) -> std::ops::Range<usize> {
        let taps = || self.bounds.iter().filter(|b| b.1 > 0);
        let first = taps().map(|b| b.0).min().unwrap_or(0);
        let last = taps().map(|b| b.0 + b.1).max().unwrap_or(0);
        first..last.max(first)
    }

    /// Each output reading every input once at full weight: a pass that changes nothing (exact:
    /// the rounding half is below one unit of the fixed point).
    fn identity(out: std::ops::Range<usize>) -> Coefficients {
        let n = out.len();
        Coefficients { ksize: 1, bounds: out.map(|x| (x, 1)).collect(), weights: vec![1 << PRECISION_BITS; n] }
    }

    /// The coefficients of an input that is black outside `lo..lo + len`, expressed on that part
    /// alone: taps on black pixels add nothing to Pillow's integer sums, so dropping them gives
    /// the same bytes without the black pixels existing. Indices become relative to `lo`; an
    /// output that reads only black gets no taps (its value is 0).
    fn restricted(mut self, lo: usize, len: usize) -> Coefficients {
        for (slot, b) in self.bounds.iter_mut().enumerate() {
            let (start, end) = (b.0.max(lo), (b.0 + b.1).min(lo + len));
            if start >= end {
                *b = (start.min(lo + len) - lo, 0);
                continue;
            }
            let row = &mut self.weights[slot * self.ksize..(slot + 1) * self.ksize];
            row.copy_within(start - b.0..end - b.0, 0);
            *b = (start - lo, end - start);
        }
        self
    }
}

/// Coefficients of the output pixels in `out` (a range of `0..out_size`); each output pixel's
/// coefficients depend only on its own index, so a window is exactly a slice of the full set.
/// The outputs cover `0..extent` of the input (Pillow's `box`, held in a C float): `in_size`
/// except for an image decoded at a reduced size, whose last pixel stands for less than a whole
/// one.
fn coefficients(in_size: usize, extent: f32, out_size: usize, filter: Filter, out: std::ops::Range<usize>) -> Coefficients {
    let scale = extent as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out.len());
    let mut weights = vec![0i32; out.len() * ksize];
    let mut k = vec![0f64; ksize];
    for (slot, xx) in out.enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero; negatives are clamped to 0 right after.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            *kx = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            total += *kx;
        }
        for x in 0..xmax {
            let w = if total != 0.0 { k[x] / total } else { k[x] };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[slot * ksize + x] = if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Coefficients { ksize, bounds, weights }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved 8-bit RGB image (`[h][w][3]`) to `out_w` x `out_h` exactly as
/// Pillow's `Image.resize((out_w, out_h), filter)` does.
pub fn resize_rgb8(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize, filter: Filter) -> Vec<u8> {
    resize_rgb8_window(src, w, h, (out_w, out_h), filter, 0..out_w, 0..out_h)
}

/// Whether Pillow runs the vertical pass first: since Pillow 13.0.0 (`ImagingResampleInner`),
/// when the height shrinks by more than twice as many pixels as the width does, so that the
/// horizontal pass runs on fewer rows. Pillow 12 and earlier always ran the horizontal pass
/// first. The two orders round differently (each pass clips to 8 bits), by one level on some
/// pixels; only images more than about twice as tall as wide take the vertical-first order when
/// CLIP resizes them (docs/PREPROCESSING.md).
pub fn vertical_first(w: usize, h: usize, out_w: usize, out_h: usize) -> bool {
    let (shrink_h, shrink_w) = (h as i64 - out_h as i64, w as i64 - out_w as i64);
    shrink_h > 0 && shrink_h > shrink_w * 2
}

/// The window `cols` x `rows` of [`resize_rgb8`]'s output, computed without the rest: identical
/// values, and memory bounded by the window. A 100,000 x 1 image resized to a shortest edge of
/// 224 would be 22.4 M x 224 pixels; its center crop is all that preprocessing needs.
pub fn resize_rgb8_window(
    src: &[u8],
    w: usize,
    h: usize,
    (out_w, out_h): (usize, usize),
    filter: Filter,
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
) -> Vec<u8> {
    resize_padded_rgb8_window(src, (w, h), (0, 0), (w, h), (out_w, out_h), filter, cols, rows)
}

/// [`resize_rgb8_window`] of the image placed at (`left`, `top`) on a black canvas of
/// `canvas_w` x `canvas_h` (torchvision's constant padding with 0, as SEARLE's "target pad"
/// does before resizing), without making the canvas: its size is bounded only by the image's
/// long edge squared, the work and memory here by the image and the window.
#[allow(clippy::too_many_arguments)]
pub fn resize_padded_rgb8_window(
    src: &[u8],
    size: (usize, usize),
    offset: (usize, usize),
    canvas: (usize, usize),
    out: (usize, usize),
    filter: Filter,
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
) -> Vec<u8> {
    let extent = (canvas.0 as f32, canvas.1 as f32);
    resize_rgb8_window_of_extent(src, size, offset, canvas, extent, out, filter, cols, rows)
}

/// [`resize_padded_rgb8_window`] of the canvas part `0..extent_w` x `0..extent_h`, in its
/// pixels, as Pillow's `resize(size, box=(0, 0, extent_w, extent_h))`: what Pillow's `draft` +
/// `resize` (its `thumbnail`) computes for a JPEG decoded at a reduced size, whose extent is the
/// full size times the reduction (`docs/PREPROCESSING.md`, "Fast JPEG decoding").
#[allow(clippy::too_many_arguments)]
pub fn resize_rgb8_window_of_extent(
    src: &[u8],
    (w, h): (usize, usize),
    (left, top): (usize, usize),
    (canvas_w, canvas_h): (usize, usize),
    (extent_w, extent_h): (f32, f32),
    (out_w, out_h): (usize, usize),
    filter: Filter,
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
) -> Vec<u8> {
    assert_eq!(src.len(), w * h * 3, "rgb buffer size");
    assert!(left + w <= canvas_w && top + h <= canvas_h, "image outside the canvas");
    assert!(cols.end <= out_w && rows.end <= out_h, "window outside the output");
    // An axis whose size changes gets a pass; an axis with padding always does (the identity
    // where its size is kept), so that the black border is made by the restriction.
    let axis = |size: usize, canvas: usize, extent: f32, out: usize, pad: usize, range: std::ops::Range<usize>| {
        if canvas != out || extent != canvas as f32 {
            Some(coefficients(canvas, extent, out, filter, range).restricted(pad, size))
        } else if canvas != size {
            Some(Coefficients::identity(range).restricted(pad, size))
        } else {
            None
        }
    };
    let vert = axis(h, canvas_h, extent_h, out_h, top, rows.clone());
    let horiz = axis(w, canvas_w, extent_w, out_w, left, cols.clone());
    let window = Window {
        // The input rows and columns the passes read (the window's own without a pass).
        in_rows: vert.as_ref().map_or(rows.clone(), Coefficients::span),
        in_cols: horiz.as_ref().map_or(cols.clone(), Coefficients::span),
        rows,
        cols,
    };
    let order = if vertical_first(canvas_w, canvas_h, out_w, out_h) { Order::VerticalFirst } else { Order::HorizontalFirst };
    passes(src, w, &window, horiz.as_ref(), vert.as_ref(), order)
}

/// The output window and the part of the input it reads.
struct Window {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    in_rows: std::ops::Range<usize>,
    in_cols: std::ops::Range<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Order {
    HorizontalFirst,
    VerticalFirst,
}

// The passes' sums are of 32-bit integers that cannot overflow (8-bit values times 22-bit
// coefficients summing to about 2^22), so any order of summation within a pass gives Pillow's
// result exactly: the loops below are written in the order that vectorises (AVX2 where the CPU
// has it). The order of the two passes does matter, and is Pillow's.

fn passes(src: &[u8], w: usize, win: &Window, horiz: Option<&Coefficients>, vert: Option<&Coefficients>, order: Order) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { passes_avx2(src, w, win, horiz, vert, order) };
    }
    passes_any(src, w, win, horiz, vert, order)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn passes_avx2(src: &[u8], w: usize, win: &Window, horiz: Option<&Coefficients>, vert: Option<&Coefficients>, order: Order) -> Vec<u8> {
    passes_any(src, w, win, horiz, vert, order)
}

#[inline(always)]
fn passes_any(src: &[u8], w: usize, win: &Window, horiz: Option<&Coefficients>, vert: Option<&Coefficients>, order: Order) -> Vec<u8> {
    let stride = w * 3;
    match (horiz, vert) {
        (Some(h), Some(v)) if order == Order::VerticalFirst => {
            // The window's rows over the columns the horizontal pass reads, then those columns.
            let in_cols = &win.in_cols;
            let tmp = vertical_pass(src, stride, in_cols.start * 3..in_cols.end * 3, 0, v);
            horizontal_pass(&tmp, in_cols.len(), 0..win.rows.len(), in_cols.start, h)
        }
        (Some(h), v) => {
            let tmp = horizontal_pass(src, w, win.in_rows.clone(), 0, h);
            match v {
                Some(v) => vertical_pass(&tmp, win.cols.len() * 3, 0..win.cols.len() * 3, win.in_rows.start, v),
                None => tmp,
            }
        }
        (None, Some(v)) => vertical_pass(src, stride, win.cols.start * 3..win.cols.end * 3, 0, v),
        (None, None) => {
            let mut img = Vec::with_capacity(win.cols.len() * win.rows.len() * 3);
            for y in win.rows.clone() {
                img.extend_from_slice(&src[y * stride + win.cols.start * 3..y * stride + win.cols.end * 3]);
            }
            img
        }
    }
}

/// The input rows `rows` of `src` (rows of `w` pixels, whose first column is input column
/// `first_col`) resampled horizontally to the coefficients' output columns.
///
/// # Shapes
/// src: [h][w][3] -> [rows.len()][outputs][3]
#[inline(always)]
fn horizontal_pass(src: &[u8], w: usize, rows: std::ops::Range<usize>, first_col: usize, c: &Coefficients) -> Vec<u8> {
    let outputs = c.bounds.len();
    let mut img = vec![0u8; outputs * rows.len() * 3];
    // One input row at a time as three planes of i32: each output value is then a contiguous
    // dot product.
    let mut planes = vec![0i32; 3 * w];
    for (y, sy) in rows.enumerate() {
        let (r, rest) = planes.split_at_mut(w);
        let (g, b) = rest.split_at_mut(w);
        for (((px, r), g), b) in src[sy * w * 3..(sy + 1) * w * 3].chunks_exact(3).zip(r).zip(g).zip(b) {
            (*r, *g, *b) = (px[0] as i32, px[1] as i32, px[2] as i32);
        }
        let out = &mut img[y * outputs * 3..(y + 1) * outputs * 3];
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            if n == 0 {
                continue; // reads only black padding: 0, already there
            }
            let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
            let x0 = xmin - first_col;
            for ch in 0..3 {
                let p = &planes[ch * w + x0..ch * w + x0 + n];
                let acc = p.iter().zip(k).fold(1i32 << (PRECISION_BITS - 1), |acc, (&p, &k)| acc.wrapping_add(p.wrapping_mul(k)));
                out[xx * 3 + ch] = clip8(acc);
            }
        }
    }
    img
}

/// The bytes `span` of each row of `img` (rows of `stride` bytes, the first being input row
/// `first_row`) resampled vertically to the coefficients' output rows.
///
/// # Shapes
/// img: [rows][stride] -> [outputs][span.len()]
#[inline(always)]
fn vertical_pass(img: &[u8], stride: usize, span: std::ops::Range<usize>, first_row: usize, c: &Coefficients) -> Vec<u8> {
    let width = span.len();
    let mut out = vec![0u8; width * c.bounds.len()];
    let mut acc = vec![0i32; width];
    for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
        acc.fill(1i32 << (PRECISION_BITS - 1));
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        for (i, &ky) in k.iter().enumerate() {
            let row = &img[(ymin - first_row + i) * stride + span.start..][..width];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add((v as i32).wrapping_mul(ky));
            }
        }
        for (o, &a) in out[yy * width..(yy + 1) * width].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_rgb8(&src, 4, 3, 4, 3, Filter::Bicubic), src);
    }

    #[test]
    fn flat_image_stays_flat_and_coefficients_sum_to_one() {
        let src = vec![200u8; 37 * 23 * 3];
        let out = resize_rgb8(&src, 37, 23, 10, 7, Filter::Bicubic);
        assert!(out.iter().all(|&v| v == 200));
        let c = coefficients(37, 37.0, 10, Filter::Bicubic, 0..10);
        for xx in 0..10 {
            let s: i64 = c.weights[xx * c.ksize..(xx + 1) * c.ksize].iter().map(|&w| w as i64).sum();
            assert!((s - (1 << PRECISION_BITS)).abs() <= c.ksize as i64, "row {xx} sums to {s}");
        }
    }

    #[test]
    fn a_window_equals_the_same_part_of_the_full_resize() {
        for (w, h, ow, oh) in [(29, 17, 11, 40), (29, 17, 29, 9), (29, 17, 50, 17), (29, 17, 29, 17), (29, 17, 7, 5), (225, 614, 224, 611), (242, 628, 224, 581)] {
            let src: Vec<u8> = (0..w * h * 3).map(|v| (v * 37 % 251) as u8).collect();
            let full = resize_rgb8(&src, w, h, ow, oh, Filter::Bicubic);
            for (cols, rows) in [(0..ow, 0..oh), (1..ow - 1, 2..oh - 1), (ow / 2..ow / 2 + 1, 0..1), (0..ow.min(224), (oh - oh.min(224)) / 2..(oh + oh.min(224)) / 2)] {
                let win = resize_rgb8_window(&src, w, h, (ow, oh), Filter::Bicubic, cols.clone(), rows.clone());
                let expect: Vec<u8> = rows.clone().flat_map(|y| full[(y * ow + cols.start) * 3..(y * ow + cols.end) * 3].to_vec()).collect();
                assert_eq!(win, expect, "{ow}x{oh} window {cols:?} x {rows:?}");
            }
        }
    }

    /// The black border made by restricting coefficients equals resizing a real black canvas:
    /// padding on one axis or both, enlarging and shrinking, both pass orders, axes whose size
    /// is kept (identity passes), windows.
    #[test]
    fn a_padded_resize_equals_resizing_the_padded_canvas() {
        let mut rng = crate::rng::Rng::new(7);
        let mut pick = |lo: usize, hi: usize| lo + (rng.next_u64() % (hi - lo) as u64) as usize;
        for case in 0..300 {
            let (w, h) = (pick(1, 40), pick(1, 40));
            let (left, top) = if case % 3 == 0 { (pick(0, 12), 0) } else if case % 3 == 1 { (0, pick(0, 12)) } else { (pick(0, 12), pick(0, 12)) };
            let (cw, ch) = (w + 2 * left, h + 2 * top);
            let (ow, oh) = match case % 4 {
                0 => (cw, pick(1, 60)),
                1 => (pick(1, 60), ch),
                _ => (pick(1, 60), pick(1, 60)),
            };
            let filter = [Filter::Bicubic, Filter::Bilinear, Filter::Lanczos][case % 3];
            let src: Vec<u8> = (0..w * h * 3).map(|v| (v * 37 % 251 + case) as u8).collect();
            let mut canvas = vec![0u8; cw * ch * 3];
            for y in 0..h {
                canvas[((y + top) * cw + left) * 3..((y + top) * cw + left + w) * 3].copy_from_slice(&src[y * w * 3..(y + 1) * w * 3]);
            }
            let (cols, rows) = if case % 2 == 0 { (0..ow, 0..oh) } else { (ow / 3..ow, oh / 4..oh - oh / 4) };
            let want = resize_rgb8_window(&canvas, cw, ch, (ow, oh), filter, cols.clone(), rows.clone());
            let got = resize_padded_rgb8_window(&src, (w, h), (left, top), (cw, ch), (ow, oh), filter, cols.clone(), rows.clone());
            assert!(got == want, "case {case}: {w}x{h} padded ({left}, {top}) to {cw}x{ch} -> {ow}x{oh} {filter:?}, window {cols:?} x {rows:?}");
        }
    }

    /// The vectorised passes against plain per-pixel loops in Pillow's order of summation and of
    /// passes, on random images shrunk, enlarged and both (tall ones vertical pass first), for
    /// every filter: identical bytes.
    #[test]
    fn the_passes_equal_pillows_loop_order() {
        fn horizontal(src: &[u8], w: usize, h: usize, out_w: usize, filter: Filter) -> Vec<u8> {
            let c = coefficients(w, w as f32, out_w, filter, 0..out_w);
            let mut out = vec![0u8; out_w * h * 3];
            for y in 0..h {
                for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
                    for ch in 0..3 {
                        let mut acc = 1i32 << (PRECISION_BITS - 1);
                        for i in 0..n {
                            acc += src[(y * w + xmin + i) * 3 + ch] as i32 * c.weights[xx * c.ksize + i];
                        }
                        out[(y * out_w + xx) * 3 + ch] = clip8(acc);
                    }
                }
            }
            out
        }
        fn vertical(src: &[u8], w: usize, h: usize, out_h: usize, filter: Filter) -> Vec<u8> {
            let c = coefficients(h, h as f32, out_h, filter, 0..out_h);
            let mut out = vec![0u8; w * out_h * 3];
            for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
                for x in 0..w * 3 {
                    let mut acc = 1i32 << (PRECISION_BITS - 1);
                    for i in 0..n {
                        acc += src[(ymin + i) * w * 3 + x] as i32 * c.weights[yy * c.ksize + i];
                    }
                    out[yy * w * 3 + x] = clip8(acc);
                }
            }
            out
        }
        fn reference(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize, filter: Filter) -> Vec<u8> {
            if vertical_first(w, h, out_w, out_h) {
                horizontal(&vertical(src, w, h, out_h, filter), w, out_h, out_w, filter)
            } else {
                vertical(&horizontal(src, w, h, out_w, filter), out_w, h, out_h, filter)
            }
        }
        let mut seed = 12345u64;
        let mut next = |m: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        for filter in [Filter::Bicubic, Filter::Bilinear, Filter::Lanczos] {
            // The last item: whether Pillow 13 runs the vertical pass first (worked out by hand).
            for (w, h, out_w, out_h, tall) in [(97, 61, 23, 17, false), (40, 30, 97, 71, false), (300, 17, 31, 40, false), (8, 9, 8, 3, true), (61, 200, 23, 75, true), (25, 61, 24, 58, true), (9, 40, 12, 11, true), (100, 199, 50, 99, false), (100, 201, 50, 99, true)] {
                assert_eq!(vertical_first(w, h, out_w, out_h), tall, "{w}x{h} -> {out_w}x{out_h}");
                let src: Vec<u8> = (0..w * h * 3).map(|_| next(256) as u8).collect();
                assert_eq!(resize_rgb8(&src, w, h, out_w, out_h, filter), reference(&src, w, h, out_w, out_h, filter), "{w}x{h} -> {out_w}x{out_h} {filter:?}");
            }
        }
    }
}
