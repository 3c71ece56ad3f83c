//! A corpus of hostile and unusual image files, generated in code (shared by the library's and
//! the command line's tests): header liars that declare gigapixel sizes in every format, broken
//! files, and odd but valid images. Each case says what must happen to it.
#![allow(dead_code)]

use image::{ImageEncoder, RgbImage};

/// What decoding a case must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Refused from its header, before any pixel buffer: the error names the pixel limit.
    RefusedTooLarge,
    /// A clear error (unreadable, truncated, corrupt).
    Error,
    /// Decoded and embedded.
    Embedded,
}

pub struct Case {
    pub name: &'static str,
    pub file: &'static str,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend(crc32(&body).to_be_bytes());
}

/// A PNG whose IHDR declares `w` x `h` RGB pixels, with an empty zlib stream as data.
pub fn png_liar(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A baseline JPEG whose frame header declares `w` x `h` (at most 65,535 each).
pub fn jpeg_liar(w: u16, h: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    // One quantisation table of ones.
    out.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
    out.extend([1u8; 64]);
    // SOF0: 8-bit, h, w, three components sampling 1x1, table 0.
    out.extend([0xFF, 0xC0, 0x00, 0x11, 0x08]);
    out.extend(h.to_be_bytes());
    out.extend(w.to_be_bytes());
    out.extend([0x03, 0x01, 0x11, 0x00, 0x02, 0x11, 0x00, 0x03, 0x11, 0x00]);
    // DC and AC Huffman tables 0, each one code of length 1 for symbol 0.
    for class in [0x00u8, 0x10] {
        out.extend([0xFF, 0xC4, 0x00, 0x14, class, 1]);
        out.extend([0u8; 15]);
        out.push(0);
    }
    out.extend([0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x3F, 0x00]);
    out.extend([0x00, 0x00, 0xFF, 0xD9]);
    out
}

/// A GIF whose screen and only frame declare `w` x `h`.
pub fn gif_liar(w: u16, h: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend(w.to_le_bytes());
    out.extend(h.to_le_bytes());
    out.extend([0x80, 0, 0]); // a global colour table of 2 entries
    out.extend([0, 0, 0, 255, 255, 255]);
    out.push(0x2C);
    out.extend([0, 0, 0, 0]);
    out.extend(w.to_le_bytes());
    out.extend(h.to_le_bytes());
    out.push(0);
    out.extend([0x02, 0x02, 0x44, 0x01, 0x00, 0x3B]);
    out
}

/// A 24-bit BMP whose header declares `w` x `h` and holds no pixels.
pub fn bmp_liar(w: i32, h: i32) -> Vec<u8> {
    let mut b = b"BM".to_vec();
    b.extend(54u32.to_le_bytes());
    b.extend([0; 4]);
    b.extend(54u32.to_le_bytes());
    b.extend(40u32.to_le_bytes());
    b.extend(w.to_le_bytes());
    b.extend(h.to_le_bytes());
    b.extend(1u16.to_le_bytes());
    b.extend(24u16.to_le_bytes());
    b.extend([0; 24]);
    b
}

/// A little-endian greyscale TIFF whose first directory declares `w` x `h`, one empty strip.
pub fn tiff_liar(w: u32, h: u32) -> Vec<u8> {
    let mut b = b"II*\0".to_vec();
    b.extend(8u32.to_le_bytes());
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, w),  // ImageWidth, LONG
        (257, 4, h),  // ImageLength
        (258, 3, 8),  // BitsPerSample, SHORT
        (259, 3, 1),  // Compression: none
        (262, 3, 1),  // Photometric: black is zero
        (273, 4, 0),  // StripOffsets
        (277, 3, 1),  // SamplesPerPixel
        (278, 4, h),  // RowsPerStrip
        (279, 4, 0),  // StripByteCounts
    ];
    b.extend((entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        b.extend(tag.to_le_bytes());
        b.extend(kind.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        if kind == 3 {
            b.extend((value as u16).to_le_bytes());
            b.extend([0, 0]);
        } else {
            b.extend(value.to_le_bytes());
        }
    }
    b.extend(0u32.to_le_bytes());
    b
}

/// An extended WebP whose VP8X canvas declares `w` x `h` (at most 2^24 each), then a lossless
/// bitstream header of the same size.
pub fn webp_liar(w: u32, h: u32) -> Vec<u8> {
    let mut vp8x = vec![0u8; 4];
    vp8x.extend(&(w - 1).to_le_bytes()[..3]);
    vp8x.extend(&(h - 1).to_le_bytes()[..3]);
    // VP8L: signature 0x2F, then 14-bit width-1, 14-bit height-1 (capped), alpha 0, version 0.
    let (lw, lh) = ((w - 1).min(16383), (h - 1).min(16383));
    let bits: u32 = lw | (lh << 14);
    let mut vp8l = vec![0x2F];
    vp8l.extend(bits.to_le_bytes());
    vp8l.extend([0u8; 8]);
    let mut body = b"WEBP".to_vec();
    for (kind, data) in [(b"VP8X", vp8x), (b"VP8L", vp8l)] {
        body.extend_from_slice(kind);
        body.extend((data.len() as u32).to_le_bytes());
        body.extend_from_slice(&data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

pub fn png_of(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8).unwrap();
    out
}

/// A PNG of any layout the encoder takes (16-bit, grey with alpha, ...).
pub fn png_raw(w: u32, h: u32, data: &[u8], color: image::ExtendedColorType) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(data, w, h, color).unwrap();
    out
}

fn animated_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        for shade in [40u8, 200] {
            let frame = image::RgbaImage::from_pixel(8, 8, image::Rgba([shade, 10, 10, 255]));
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    out
}

/// Every case. The liars declare 10,000,000,000 pixels or more (4.3 G for the 16-bit formats),
/// far above Pillow's default limit; the valid images are tiny or extreme in one dimension.
pub fn cases() -> Vec<Case> {
    let blue = RgbImage::from_pixel(16, 12, image::Rgb([20, 40, 200]));
    let good_png = png_of(&blue);
    let mut truncated = good_png.clone();
    truncated.truncate(good_png.len() / 2);
    let rgba16: Vec<u8> = (0..8 * 8).flat_map(|i| [(i * 3) as u16, 40_000, 9_000, if i % 2 == 0 { 65_535 } else { 0 }]).flat_map(|v| v.to_be_bytes()).collect();
    let la8: Vec<u8> = (0..8 * 8).flat_map(|i| [(i * 4) as u8, if i % 3 == 0 { 0 } else { 255 }]).collect();
    let mut cmyk_header_only = jpeg_liar(8, 8);
    cmyk_header_only.truncate(40);
    vec![
        Case { name: "PNG header claiming 100,000 x 100,000", file: "liar.png", bytes: png_liar(100_000, 100_000), expect: Expect::RefusedTooLarge },
        Case { name: "PNG header claiming 4 G x 4 G", file: "liar-max.png", bytes: png_liar(0x7FFF_FFFF, 0x7FFF_FFFF), expect: Expect::RefusedTooLarge },
        Case { name: "JPEG header claiming 65,535 x 65,535", file: "liar.jpg", bytes: jpeg_liar(65_535, 65_535), expect: Expect::RefusedTooLarge },
        Case { name: "GIF header claiming 65,535 x 65,535", file: "liar.gif", bytes: gif_liar(65_535, 65_535), expect: Expect::RefusedTooLarge },
        Case { name: "BMP header claiming 20,000 x 20,000", file: "liar.bmp", bytes: bmp_liar(20_000, 20_000), expect: Expect::RefusedTooLarge },
        Case { name: "TIFF header claiming 100,000 x 100,000", file: "liar.tif", bytes: tiff_liar(100_000, 100_000), expect: Expect::RefusedTooLarge },
        Case { name: "WebP header claiming 16,384 x 16,384", file: "liar.webp", bytes: webp_liar(16_384, 16_384), expect: Expect::RefusedTooLarge },
        Case { name: "zero-byte file", file: "empty.png", bytes: Vec::new(), expect: Expect::Error },
        Case { name: "truncated PNG", file: "truncated.png", bytes: truncated, expect: Expect::Error },
        Case { name: "JPEG cut inside its headers", file: "cut.jpg", bytes: cmyk_header_only, expect: Expect::Error },
        Case { name: "text with an image extension", file: "notes.jpg", bytes: b"this is not an image\n".to_vec(), expect: Expect::Error },
        Case { name: "PNG named .jpg (wrong extension)", file: "really-png.jpg", bytes: good_png.clone(), expect: Expect::Embedded },
        Case { name: "1 x 1 PNG", file: "dot.png", bytes: png_of(&RgbImage::from_pixel(1, 1, image::Rgb([9, 99, 199]))), expect: Expect::Embedded },
        Case { name: "100,000 x 1 PNG", file: "wide.png", bytes: png_of(&RgbImage::from_pixel(100_000, 1, image::Rgb([200, 100, 50]))), expect: Expect::Embedded },
        Case { name: "1 x 100,000 PNG", file: "tall.png", bytes: png_of(&RgbImage::from_pixel(1, 100_000, image::Rgb([200, 100, 50]))), expect: Expect::Embedded },
        Case { name: "16-bit RGBA PNG", file: "rgba16.png", bytes: png_raw(8, 8, &rgba16, image::ExtendedColorType::Rgba16), expect: Expect::Embedded },
        Case { name: "grey + alpha PNG", file: "la8.png", bytes: png_raw(8, 8, &la8, image::ExtendedColorType::La8), expect: Expect::Embedded },
        Case { name: "animated GIF (first frame)", file: "anim.gif", bytes: animated_gif(), expect: Expect::Embedded },
    ]
}
