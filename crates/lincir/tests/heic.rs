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
