//! A short seeded mutation fuzz of every reader of user files (the long runs are cargo-fuzz
//! targets, `fuzz/`; docs/RELIABILITY.md). Valid seed files are mutated (bit flips, byte
//! overwrites with boundary values, insertions, deletions, truncations, splices of chunks) by a
//! fixed-seed generator, so a run is reproducible; each reader must answer every input with a
//! value or an error, never a panic, and in bounded time. An input that panics is written to
//! target/fuzz-failures/ and named in the failure.

mod common;
mod hostile;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use common::fixtures;
use image::ImageEncoder;
use lincir::rng::Rng;

/// One mutation of `seed`, `rounds` edits deep.
fn mutate(rng: &mut Rng, seed: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = b.len().max(1);
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                let interesting = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE];
                b[i] = interesting[rng.below(interesting.len())];
            }
            2 if b.len() >= 4 => {
                // A 32-bit field set to a boundary value (sizes, counts, offsets).
                let i = rng.below(b.len() - 3);
                let v: u32 = [0, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000, 0xFFFF, 0x1_0000][rng.below(7)];
                let bytes = if rng.below(2) == 0 { v.to_le_bytes() } else { v.to_be_bytes() };
                b[i..i + 4].copy_from_slice(&bytes);
            }
            3 => {
                let i = rng.below(len.min(b.len() + 1));
                let n = 1 + rng.below(16);
                let fill = rng.below(256) as u8;
                b.splice(i..i, std::iter::repeat_n(fill, n));
            }
            4 if !b.is_empty() => {
                let i = rng.below(b.len());
                let n = (1 + rng.below(32)).min(b.len() - i);
                b.drain(i..i + n);
            }
            5 => b.truncate(rng.below(len)),
            _ if !others.is_empty() => {
                // Splice a chunk of another seed in.
                let o = &others[rng.below(others.len())];
                if !o.is_empty() && !b.is_empty() {
                    let (s, n) = (rng.below(o.len()), 1 + rng.below(64));
                    let chunk = &o[s..(s + n).min(o.len())];
                    let at = rng.below(b.len());
                    b.splice(at..(at + chunk.len()).min(b.len()), chunk.iter().copied());
                }
            }
            _ => {}
        }
    }
    b
}

/// Runs `target` on `iterations` mutations of the seeds; fails on the first panic (saving its
/// input) or when one input takes longer than `slow`.
fn fuzz(name: &str, seeds: &[Vec<u8>], iterations: usize, slow: Duration, target: impl Fn(&[u8])) {
    let mut rng = Rng::new(0x5eed ^ name.len() as u64);
    let started = Instant::now();
    for it in 0..iterations {
        let seed = &seeds[it % seeds.len()];
        let input = if it < seeds.len() { seed.clone() } else { mutate(&mut rng, seed, seeds) };
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        let took = t.elapsed();
        if outcome.is_err() || took > slow {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}-{it}.bin"));
            std::fs::write(&path, &input).unwrap();
            panic!("{name}: iteration {it} {} (input saved to {})", if outcome.is_err() { "panicked" } else { "was slow" }, path.display());
        }
    }
    println!("{name}: {iterations} inputs in {:.1} s", started.elapsed().as_secs_f64());
}

fn encoded_images() -> Vec<Vec<u8>> {
    let img = image::RgbImage::from_fn(19, 13, |x, y| image::Rgb([(x * 13) as u8, (y * 19) as u8, ((x + y) * 7) as u8]));
    let rgba = image::RgbaImage::from_fn(9, 7, |x, y| image::Rgba([(x * 20) as u8, (y * 30) as u8, 99, ((x + y) * 15) as u8]));
    let mut out = vec![hostile::png_of(&img)];
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80).write_image(img.as_raw(), 19, 13, image::ExtendedColorType::Rgb8).unwrap();
    out.push(jpeg);
    for format in [image::ImageFormat::Gif, image::ImageFormat::Bmp, image::ImageFormat::Tiff, image::ImageFormat::WebP, image::ImageFormat::Png] {
        let mut buf = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgba8(rgba.clone()).write_to(&mut buf, format).unwrap();
        out.push(buf.into_inner());
    }
    out
}

#[test]
fn image_decoding_and_preprocessing() {
    let cfg = lincir::clip::preprocess::PreprocessConfig::clip_default(32);
    fuzz("image", &encoded_images(), 12000, Duration::from_secs(5), |bytes| {
        if let Ok(img) = lincir::clip::preprocess::decode_rgb8(bytes, "fuzz") {
            let px = lincir::clip::preprocess::pixels(&img, &cfg);
            assert_eq!(px.len(), 3 * 32 * 32);
        }
    });
}

/// `--jpeg-decode fast`: mutated JPEGs (one of them EXIF-rotated) decoded at a reduced size and
/// preprocessed over the full image's geometry, whatever sizes their headers claim.
#[test]
fn fast_jpeg_decoding_and_preprocessing() {
    use lincir::clip::preprocess::{decode_rgb8_for, pixels, JpegDecode, PreprocessConfig};
    let cfg = PreprocessConfig { jpeg: JpegDecode::Fast, ..PreprocessConfig::clip_default(8) };
    let img = image::RgbImage::from_fn(200, 150, |x, y| image::Rgb([(x * 13 % 256) as u8, (y * 19 % 256) as u8, ((x ^ y) * 7 % 256) as u8]));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).write_image(img.as_raw(), 200, 150, image::ExtendedColorType::Rgb8).unwrap();
    let rotated = std::fs::read(fixtures().join("images/coffee_exif_rotated.jpg")).unwrap();
    let reduced = decode_rgb8_for(&jpeg, "seed", &cfg).unwrap().reduced.map(|r| r.divisor);
    assert_eq!(reduced, Some(4), "the seed is decoded at a reduced size (200 // 24, 150 // 24)");
    fuzz("fast-jpeg", &[jpeg, rotated], 3000, Duration::from_secs(5), |bytes| {
        if let Ok(img) = decode_rgb8_for(bytes, "fuzz", &cfg) {
            assert_eq!(pixels(&img, &cfg).len(), 3 * 8 * 8);
        }
    });
}

/// Writes `bytes` to a fresh file named `name` and calls `read` on its path.
fn via_file(dir: &Path, name: &str, bytes: &[u8], read: impl Fn(&Path)) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    read(&path);
}

#[test]
fn phi_checkpoints_safetensors_and_pickle() {
    let dir = tempfile::tempdir().unwrap();
    let phi = lincir::phi::Phi::init(lincir::phi::PhiConfig::for_backbone(8, 12), 1, &Device::Cpu).unwrap();
    let st = dir.path().join("seed.safetensors");
    phi.save(&st, &[("step", "3".into())]).unwrap();
    let seeds = vec![std::fs::read(&st).unwrap(), std::fs::read(fixtures().join("phi_official.pt")).unwrap()];
    fuzz("phi", &seeds, 5000, Duration::from_secs(5), |bytes| {
        let name = if bytes.starts_with(b"PK") { "x.pt" } else { "x.safetensors" };
        via_file(dir.path(), name, bytes, |p| {
            let _ = lincir::phi::Phi::load(p, &Device::Cpu);
        });
    });
}

#[test]
fn model_weights_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let weights = std::fs::read(fixtures().join("clip-a/model.safetensors")).unwrap();
    // The header and the start of the data: where a reader's decisions are made.
    let seeds = vec![weights[..weights.len().min(64 * 1024)].to_vec(), weights.clone()];
    fuzz("weights", &seeds, 150, Duration::from_secs(10), |bytes| {
        via_file(dir.path(), "model.safetensors", bytes, |p| {
            if let Ok(w) = lincir::clip::weights::Weights::from_files(&[p.to_path_buf()], candle_core::DType::F32, &Device::Cpu) {
                let _ = w.get("text_model.embeddings.token_embedding.weight", &[1, 1]);
            }
        });
    });
    let config = std::fs::read(fixtures().join("clip-a/config.json")).unwrap();
    fuzz("config", &[config], 6000, Duration::from_secs(2), |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = lincir::clip::ClipConfig::from_json(text, Path::new("config.json"));
        }
    });
}

#[test]
fn caption_readers() {
    let dir = tempfile::tempdir().unwrap();
    let seeds_by_ext: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("txt", vec![b"a dog on a beach\n\na red car\n".to_vec()]),
        ("jsonl", vec![b"{\"text\": \"a dog\"}\n{\"text\": \"two cats\", \"x\": 1}\n".to_vec()]),
        ("json", vec![b"[{\"text\": \"a dog\"}, {\"text\": \"a cat\"}]".to_vec()]),
        ("csv", vec![b"id,text\n1,a dog\n2,\"a cat, sleeping\"\n".to_vec()]),
        ("tsv", vec![b"id\ttext\n1\ta dog\n".to_vec()]),
        ("parquet", vec![std::fs::read(fixtures().join("corpus/train-00000-of-00001.parquet")).unwrap(), std::fs::read(fixtures().join("corpus/zstd.parquet")).unwrap()]),
    ];
    for (ext, seeds) in seeds_by_ext {
        let iterations = if ext == "parquet" { 1500 } else { 2500 };
        fuzz(&format!("captions-{ext}"), &seeds, iterations, Duration::from_secs(5), |bytes| {
            via_file(dir.path(), &format!("c.{ext}"), bytes, |p| {
                if let Ok(corpus) = lincir::smp::corpus::Corpus::open(&[p.display().to_string()], "text") {
                    // Bounded: a reader must not invent captions without end.
                    for c in corpus.captions().take(10_000) {
                        if c.is_err() {
                            break;
                        }
                    }
                }
            });
        });
    }
}

fn cirr_layout(root: &Path, split: &[u8], captions: &[u8]) -> PathBuf {
    std::fs::create_dir_all(root.join("cirr/captions")).unwrap();
    std::fs::create_dir_all(root.join("cirr/image_splits")).unwrap();
    std::fs::write(root.join("cirr/image_splits/split.rc2.val.json"), split).unwrap();
    std::fs::write(root.join("cirr/captions/cap.rc2.val.json"), captions).unwrap();
    root.to_path_buf()
}

#[test]
fn benchmark_annotation_readers() {
    let dir = tempfile::tempdir().unwrap();
    let split = br#"{"a": "./dev/a.png", "b": "./dev/b.png", "c": "./dev/c.png"}"#.to_vec();
    let caps = br#"[{"pairid": 0, "reference": "a", "target_hard": "b", "caption": "is b", "img_set": {"members": ["a", "b", "c"]}}]"#.to_vec();
    let root = dir.path().join("cirr");
    fuzz("cirr-captions", std::slice::from_ref(&caps), 3000, Duration::from_secs(2), |bytes| {
        let _ = lincir::bench::cirr::CirrSplit::load(&cirr_layout(&root, &split, bytes), "val");
    });
    fuzz("cirr-split", std::slice::from_ref(&split), 3000, Duration::from_secs(2), |bytes| {
        let _ = lincir::bench::cirr::CirrSplit::load(&cirr_layout(&root, bytes, &caps), "val");
    });
}

/// Every input that once crashed a reader (tests/fixtures/fuzz-regressions, by extension) is now
/// an error or a value.
#[test]
fn kept_crash_inputs_are_handled() {
    for entry in std::fs::read_dir(fixtures().join("fuzz-regressions")).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_string();
        let outcome = std::panic::catch_unwind(|| match ext.as_str() {
            "parquet" | "txt" | "jsonl" | "json" | "csv" | "tsv" => {
                if let Ok(corpus) = lincir::smp::corpus::Corpus::open(&[path.display().to_string()], "text") {
                    let _ = corpus.captions().take(10_000).take_while(|c| c.is_ok()).count();
                }
            }
            "pt" | "safetensors" => {
                let _ = lincir::phi::Phi::load(&path, &Device::Cpu);
            }
            _ => {
                let _ = lincir::clip::preprocess::load_rgb8(&path);
            }
        });
        assert!(outcome.is_ok(), "{} panics again", path.display());
    }
}

/// When a photo was taken (`lincir index` reads it from every photo's EXIF block): mutated JPEG
/// and PNG files with EXIF dates, and a camera's EXIF-rotated JPEG, each give a date or none, in
/// bounded time, without taking the process down (a panic inside the parser costs the date only).
#[test]
fn exif_dates() {
    let field = exif::Field {
        tag: exif::Tag::DateTimeOriginal,
        ifd_num: exif::In::PRIMARY,
        value: exif::Value::Ascii(vec![b"2023:07:14 18:03:22".to_vec()]),
    };
    let mut writer = exif::experimental::Writer::new();
    writer.push_field(&field);
    let mut tiff = std::io::Cursor::new(Vec::new());
    writer.write(&mut tiff, false).unwrap();
    let tiff = tiff.into_inner();
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([10, 200, 30]));
    let mut jpeg = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new(&mut jpeg);
    image::ImageEncoder::set_exif_metadata(&mut encoder, tiff.clone()).unwrap();
    encoder.encode_image(&img).unwrap();
    let mut png = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut png);
    image::ImageEncoder::set_exif_metadata(&mut encoder, tiff).unwrap();
    image::ImageEncoder::write_image(encoder, img.as_raw(), 8, 8, image::ExtendedColorType::Rgb8).unwrap();
    let rotated = std::fs::read(fixtures().join("images/coffee_exif_rotated.jpg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (seed, name) in [(&jpeg, "seed.jpg"), (&png, "seed.png")] {
        via_file(dir.path(), name, seed, |p| assert_eq!(lincir::photo_date::taken(p).as_deref(), Some("2023-07-14T18:03:22"), "{name}"));
    }
    fuzz("exif-date", &[jpeg, png, rotated], 3000, Duration::from_secs(2), |bytes| {
        via_file(dir.path(), "fuzz.jpg", bytes, |p| {
            if let Some(t) = lincir::photo_date::taken(p) {
                assert!(lincir::photo_date::parse_bound(&t).is_ok_and(|b| b == t), "a date is always well formed: {t}");
            }
        });
    });
}
