//! JPEG decoding through libjpeg (mozjpeg's bundled C library, built without SIMD), which gives
//! the same bytes as Pillow's libjpeg-turbo: the ISLOW IDCT and "fancy" chroma upsampling.
//! The `image` crate's pure-Rust decoder differs from Pillow by up to 4 levels per pixel, which
//! is more than CLIP parity allows. Truncated files are errors, as in Pillow.

use std::cell::Cell;
use std::os::raw::c_int;

use mozjpeg::{ColorSpace, Decompress};
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error, JWRN_JPEG_EOF};

/// True when a buffer starts with the JPEG start-of-image marker.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

thread_local! {
    static TRUNCATED: Cell<bool> = const { Cell::new(false) };
}

extern "C-unwind" fn note_warning(cinfo: &mut jpeg_common_struct, level: c_int) {
    // level -1: a warning. Premature end of data is the one Pillow refuses.
    let code = unsafe { cinfo.err.as_ref() }.map(|e| e.msg_code).unwrap_or(0);
    if level < 0 && code == JWRN_JPEG_EOF as c_int {
        TRUNCATED.with(|t| t.set(true));
    }
}

extern "C-unwind" fn fail(cinfo: &mut jpeg_common_struct) {
    let code = unsafe { cinfo.err.as_ref() }.map(|e| e.msg_code).unwrap_or(0);
    // Unwinds back to `decode_rgb8`'s catch_unwind without invoking the panic hook.
    std::panic::resume_unwind(Box::new(format!("libjpeg error {code}")));
}

fn error_manager() -> jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills every field of a zeroed manager.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { jpeg_std_error(&mut err) };
    err.error_exit = Some(fail);
    err.emit_message = Some(note_warning);
    err
}

/// Decodes a JPEG to interleaved RGB as Pillow's `Image.open(p).convert("RGB")` does
/// (CMYK/YCCK files as Pillow's inverted CMYK and its CMYK -> RGB formula).
pub fn decode_rgb8(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), String> {
    decode_rgb8_scaled(bytes, 8)
}

/// [`decode_rgb8`] at `eighths` / 8 of the size (1, 2, 4 or 8), scaled inside the inverse DCT,
/// which skips most of the work: for previews, not for CLIP (whose pixels are Pillow's).
pub fn decode_rgb8_scaled(bytes: &[u8], eighths: u8) -> Result<(usize, usize, Vec<u8>), String> {
    TRUNCATED.with(|t| t.set(false));
    let result = std::panic::catch_unwind(|| -> std::io::Result<(usize, usize, Vec<u8>)> {
        let mut d = Decompress::with_err(error_manager()).from_mem(bytes)?;
        d.scale(eighths.clamp(1, 8));
        // The caller checked the size the image crate read; libjpeg's own reading of the header
        // is the one that allocates, so it is checked again.
        if let super::image_limits::Verdict::Refuse(msg) = super::image_limits::check(d.width() as u64, d.height() as u64) {
            return Err(std::io::Error::other(msg));
        }
        let cmyk = matches!(d.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
        if !cmyk {
            let mut s = d.rgb()?;
            let (w, h) = (s.width(), s.height());
            let px = s.read_scanlines::<u8>()?;
            s.finish()?;
            return Ok((w, h, px));
        }
        let mut s = d.to_colorspace(ColorSpace::JCS_CMYK)?;
        let (w, h) = (s.width(), s.height());
        let cmyk = s.read_scanlines::<[u8; 4]>()?;
        s.finish()?;
        let muldiv255 = |a: i32, b: i32| {
            let t = a * b + 128;
            ((t >> 8) + t) >> 8
        };
        let mut px = Vec::with_capacity(w * h * 3);
        for p in cmyk {
            let [c, m, y, k] = p.map(|v| 255 - v as i32); // Adobe files store inverted CMYK
            let nk = 255 - k;
            px.extend([c, m, y].map(|v| (nk - muldiv255(v, nk)).clamp(0, 255) as u8));
        }
        Ok((w, h, px))
    });
    match result {
        Ok(Ok(_)) if TRUNCATED.with(Cell::get) => Err("truncated JPEG (premature end of data)".into()),
        Ok(Ok(img)) => Ok(img),
        Ok(Err(e)) => Err(format!("corrupt JPEG: {e}")),
        Err(payload) => Err(format!(
            "corrupt JPEG: {}",
            payload.downcast_ref::<String>().cloned().unwrap_or_else(|| "decoder failure".into())
        )),
    }
}
