//! Caption readers: the first byte picks the format (text, JSONL, JSON, CSV, TSV, Parquet).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    let ext = ["txt", "jsonl", "json", "csv", "tsv", "parquet"][kind as usize % 6];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("c.{ext}"));
    std::fs::write(&path, body).unwrap();
    if let Ok(corpus) = lincir::smp::corpus::Corpus::open(&[path.display().to_string()], "text") {
        let _ = corpus.captions().take(10_000).take_while(|c| c.is_ok()).count();
    }
});
