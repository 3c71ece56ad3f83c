//! Image decoding (every format) and CLIP preprocessing of the decoded pixels.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = lincir::clip::preprocess::decode_rgb8(data, "fuzz") {
        let cfg = lincir::clip::preprocess::PreprocessConfig::clip_default(32);
        let px = lincir::clip::preprocess::pixels(&img, &cfg);
        assert_eq!(px.len(), 3 * 32 * 32);
    }
});
