//! Hostile and unusual image files (tests/hostile): header liars are refused from their headers
//! in every format (the process would abort on a 30 GB allocation otherwise), broken files are
//! clear errors, odd but valid images are preprocessed without unbounded memory.

mod hostile;

use hostile::Expect;
use lincir::clip::preprocess::{decode_rgb8, pixels, PreprocessConfig};

#[test]
fn every_hostile_case_has_its_expected_outcome() {
    let cfg = PreprocessConfig::clip_default(224);
    for case in hostile::cases() {
        let result = decode_rgb8(&case.bytes, case.file);
        match (case.expect, result) {
            (Expect::RefusedTooLarge, Err(e)) => {
                let e = e.to_string();
                assert!(e.contains(case.file) && e.contains("exceeds the limit"), "{}: {e}", case.name);
            }
            (Expect::Error, Err(e)) => assert!(e.to_string().contains(case.file), "{}: {e}", case.name),
            (Expect::Embedded, Ok(img)) => {
                let px = pixels(&img, &cfg);
                assert_eq!(px.len(), 3 * 224 * 224, "{}", case.name);
                assert!(px.iter().all(|v| v.is_finite()), "{}", case.name);
            }
            (want, got) => panic!("{}: expected {want:?}, got {:?}", case.name, got.map(|i| (i.width, i.height))),
        }
    }
}

#[test]
fn extreme_aspect_ratios_are_cropped_without_resizing_the_whole_image() {
    // A one-colour 100,000 x 1 image resized to a shortest edge of 224 would be 22.4 M x 224
    // pixels (15 GB); only the center crop is computed, and it is the colour itself.
    let cfg = PreprocessConfig::clip_default(224);
    for case in hostile::cases().into_iter().filter(|c| c.file == "wide.png" || c.file == "tall.png") {
        let img = decode_rgb8(&case.bytes, case.file).unwrap();
        let px = pixels(&img, &cfg);
        let plane = 224 * 224;
        for c in 0..3 {
            let first = px[c * plane];
            assert!(px[c * plane..(c + 1) * plane].iter().all(|&v| v == first), "{}: channel {c} is not flat", case.name);
        }
        let one = pixels(&decode_rgb8(&hostile::png_of(&image::RgbImage::from_pixel(4, 4, image::Rgb([200, 100, 50]))), "x").unwrap(), &cfg);
        assert_eq!(px, one, "{}: same colour, same pixels", case.name);
    }
}

/// SEARLE's target pad on the same images: the black canvas (100,000 x 80,000 pixels, 24 GB) is
/// never made; the crop is the 1-pixel line smeared by the resize between black bars, done in
/// bounded time and memory, and every hostile case that embeds still embeds.
#[test]
fn target_padding_extreme_aspect_ratios_stays_bounded() {
    use lincir::clip::preprocess::Pipeline;
    let cfg = PreprocessConfig::clip_default(224).with_pipeline(Pipeline::TargetPad, 224);
    let started = std::time::Instant::now();
    for case in hostile::cases() {
        let Ok(img) = decode_rgb8(&case.bytes, case.file) else { continue };
        let px = pixels(&img, &cfg);
        assert_eq!(px.len(), 3 * 224 * 224, "{}", case.name);
        assert!(px.iter().all(|v| v.is_finite()), "{}", case.name);
        if case.file == "wide.png" || case.file == "tall.png" {
            // Mostly black border: the first channel's value for 0 is -mean/std.
            let black = -lincir::clip::preprocess::CLIP_MEAN[0] / lincir::clip::preprocess::CLIP_STD[0];
            let dark = px[..224 * 224].iter().filter(|&&v| (v - black).abs() < 1e-5).count();
            assert!(dark > 224 * 200, "{}: {dark} black values", case.name);
        }
    }
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
}

/// The corpus cases PIL accepts whose decoding is unusual (CMYK JPEG, palette with transparency,
/// grey + alpha, EXIF orientations 1-8; scripts/make_hostile_fixtures.py): pixels identical to
/// transformers' PIL processor (sizes that need no resampling, so decoding is what is compared).
#[test]
fn unusual_but_valid_images_match_pil() {
    use lincir::clip::preprocess::{load_rgb8, CLIP_MEAN, CLIP_STD};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(expected.len(), 11);
    let cfg = PreprocessConfig::clip_default(224);
    for (name, reference) in &expected {
        let reference = reference.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let img = load_rgb8(&dir.join(name)).unwrap();
        let got = pixels(&img, &cfg);
        let plane = 224 * 224;
        let worst = got
            .iter()
            .zip(&reference)
            .enumerate()
            .map(|(i, (&g, &r))| {
                let c = i / plane;
                ((g - (r as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]).abs()) * CLIP_STD[c] * 255.0
            })
            .fold(0f32, f32::max);
        println!("{name:28} {}x{}: worst {worst:.4} steps of 1/255", img.width, img.height);
        assert!(worst <= 1e-3, "{name}: differs from PIL by {worst} steps of 1/255");
    }
}
