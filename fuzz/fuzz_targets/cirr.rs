//! CIRR annotation files (captions and image split) of a benchmark folder.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (captions, split) = (&data[..cut], data.get(cut + 1..).unwrap_or(&[]));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("cirr/captions")).unwrap();
    std::fs::create_dir_all(dir.path().join("cirr/image_splits")).unwrap();
    std::fs::write(dir.path().join("cirr/captions/cap.rc2.val.json"), captions).unwrap();
    std::fs::write(dir.path().join("cirr/image_splits/split.rc2.val.json"), split).unwrap();
    let _ = lincir::bench::cirr::CirrSplit::load(dir.path(), "val");
});
