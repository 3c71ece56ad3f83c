//! HEIC photos (`--features heic`): decoded as Pillow with pillow-heif decodes them
//! (`scripts/make_heic_fixtures.py`: 8-bit, rotated by HEIF's own `irot`, alpha, 10-bit), and
//! without the feature a clear error naming the file and the way to get the support.

mod common;

use common::fixtures;
use lincir::clip::preprocess::load_rgb8;

#[cfg(feature = "heic")]
#[test]
fn heic_photos_decode_as_pillow_heif_decodes_them() {
    let dir = fixtures().join("heic");
    for name in ["photo.heic", "rotated.heic", "alpha.heic", "ten_bit.heic"] {
        let got = load_rgb8(&dir.join(name)).unwrap();
        // The reference's own pixels, composited over white by the PNG path if they have alpha.
        let want = load_rgb8(&dir.join(format!("{name}.png"))).unwrap();
        assert_eq!((got.width, got.height), (want.width, want.height), "{name}");
        let differ = got.data.iter().zip(&want.data).filter(|(a, b)| a != b).count();
        let worst = got.data.iter().zip(&want.data).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap();
        println!("{name:14} {}x{}: {differ} of {} values differ, by at most {worst}", got.width, got.height, got.data.len());
        assert_eq!(differ, 0, "{name}: {differ} values differ from pillow-heif's, by up to {worst}");
    }
    assert_eq!(load_rgb8(&dir.join("rotated.heic")).unwrap().width, 192, "HEIF's rotation is applied");
}

#[cfg(feature = "heic")]
#[test]
fn broken_heic_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let heic = std::fs::read(fixtures().join("heic/photo.heic")).unwrap();
    for (name, bytes) in [("cut.heic", heic[..heic.len() / 2].to_vec()), ("header.heic", heic[..64].to_vec()), ("noise.heic", {
        let mut b = heic[..40].to_vec();
        b.extend((0..20_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        b
    })] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = load_rgb8(&path).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("HEIF"), "{e}");
    }
}

#[cfg(not(feature = "heic"))]
#[test]
fn without_the_feature_a_heic_photo_is_an_error_saying_how_to_read_it() {
    let e = load_rgb8(&fixtures().join("heic/photo.heic")).unwrap_err().to_string();
    assert!(e.contains("photo.heic") && e.contains("--features heic"), "{e}");
}

/// Mutated HEIC files (bytes flipped, fields set to extreme values, cut short, chunks repeated),
/// 3,000 of them from a fixed seed: each decodes or is an error, and the process survives
/// (libheif and libde265 are C/C++: a crash there would end it).
#[cfg(feature = "heic")]
#[test]
fn mutated_heic_files_decode_or_fail_cleanly() {
    use lincir::clip::preprocess::decode_rgb8;
    let originals: Vec<Vec<u8>> =
        ["photo.heic", "rotated.heic", "alpha.heic", "ten_bit.heic"].iter().map(|n| std::fs::read(fixtures().join("heic").join(n)).unwrap()).collect();
    let mut seed = 0x5EED_u64;
    let mut next = |m: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize % m.max(1)
    };
    let (mut decoded, mut refused) = (0, 0);
    for i in 0..3000 {
        let mut b = originals[i % originals.len()].clone();
        // Most of a HEIC file's structure is in its first kilobyte or so (ftyp, meta, iloc).
        let at = |next: &mut dyn FnMut(usize) -> usize, len: usize| if next(2) == 0 { next(len.min(1200)) } else { next(len) };
        match i % 4 {
            0 => {
                for _ in 0..1 + next(8) {
                    let p = at(&mut next, b.len());
                    b[p] ^= 1 << next(8);
                }
            }
            1 => {
                let p = at(&mut next, b.len() - 4);
                let v: u32 = [0, u32::MAX, 0x7FFF_FFFF, 0x8000_0000, 1, 0x10000][next(6)];
                b[p..p + 4].copy_from_slice(&v.to_be_bytes());
            }
            2 => b.truncate(at(&mut next, b.len())),
            _ => {
                let (p, n) = (at(&mut next, b.len()), 1 + next(64));
                let chunk = b[p..(p + n).min(b.len())].to_vec();
                let q = at(&mut next, b.len());
                b.splice(q..q, chunk);
            }
        }
        match decode_rgb8(&b, "mutated.heic") {
            Ok(img) => {
                assert!(img.width * img.height * 3 == img.data.len() && img.width > 0);
                decoded += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("mutated.heic"), "{e}");
                refused += 1;
            }
        }
    }
    println!("3000 mutated HEIC files: {decoded} decoded, {refused} refused with an error");
}

/// Previews of a HEIC photo come from the thumbnail it stores when that is large enough
/// (upright, as the photo), else from the photo itself.
#[cfg(feature = "heic")]
#[test]
fn heic_previews_use_the_stored_thumbnail_when_it_is_large_enough() {
    use lincir::clip::preprocess::{decode_for_preview, decode_rgb8};
    let bytes = std::fs::read(fixtures().join("heic/thumbnail.heic")).unwrap();
    let full = decode_rgb8(&bytes, "thumbnail.heic").unwrap();
    assert_eq!((full.width, full.height), (192, 256));
    let thumb = decode_for_preview(&bytes, "thumbnail.heic", 100).unwrap();
    assert_eq!((thumb.width, thumb.height), (96, 128), "the 128-pixel thumbnail, upright");
    // Each thumbnail pixel against the mean of its 2x2 block of the photo; turned half a turn,
    // to show what a wrong orientation would give.
    let difference = |half_turn: bool| {
        let (mut total, mut n) = (0f64, 0usize);
        for y in 0..128 {
            for x in 0..96 {
                let (ty, tx) = if half_turn { (127 - y, 95 - x) } else { (y, x) };
                for c in 0..3 {
                    let block: f64 = (0..4).map(|i| full.data[((y * 2 + i / 2) * 192 + x * 2 + i % 2) * 3 + c] as f64).sum::<f64>() / 4.0;
                    total += (thumb.data[(ty * 96 + tx) * 3 + c] as f64 - block).abs();
                    n += 1;
                }
            }
        }
        total / n as f64
    };
    let (upright, turned) = (difference(false), difference(true));
    println!("thumbnail: mean |difference| from the photo's 2x2 means {upright:.2} levels ({turned:.2} turned half a turn)");
    assert!(upright < 6.0 && turned > 4.0 * upright, "{upright} / {turned}: not the same picture, or not upright");
    let big = decode_for_preview(&bytes, "thumbnail.heic", 200).unwrap();
    assert_eq!(big, full, "no thumbnail that large: the photo");
}
