//! Caption sources on real file formats: Parquet as Hugging Face publishes it (fixtures from
//! scripts/make_corpus_fixtures.py, written by pyarrow) and hub dataset ids from an offline cache.

mod common;

use common::fixtures;
use lincir::smp::corpus::{Corpus, Format};

fn parquet(name: &str) -> String {
    fixtures().join("corpus").join(name).display().to_string()
}

#[test]
fn parquet_text_column_streams_across_row_groups_and_codecs() {
    for name in ["train-00000-of-00001.parquet", "zstd.parquet"] {
        let c = Corpus::open(&[parquet(name)], "text").unwrap();
        assert_eq!(c.sources[0].format, Format::Parquet);
        let got: Vec<Option<String>> = c.captions().map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), 25, "{name}");
        assert_eq!(got[0].as_deref(), Some("a photo of caption number 0"));
        assert_eq!(got[7], None, "null is a missing value");
        assert_eq!(got[24].as_deref(), Some("a photo of caption number 24"));
    }
}

#[test]
fn parquet_without_the_text_column_is_a_clear_error() {
    let c = Corpus::open(&[parquet("no_text.parquet")], "text").unwrap();
    let e = c.captions().next().unwrap().unwrap_err().to_string();
    assert!(e.contains("no_text.parquet") && e.contains("no column `text`") && e.contains("prompt"), "{e}");
    // The other column works when named.
    let c = Corpus::open(&[parquet("no_text.parquet")], "prompt").unwrap();
    assert_eq!(c.captions().next().unwrap().unwrap().as_deref(), Some("no text column here"));
}

#[test]
fn hub_dataset_ids_resolve_from_an_offline_cache() {
    // datasets--owner--name/{refs/main, snapshots/<rev>/data/...}: the training split is chosen.
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/datasets--lincir-test--captions");
    let rev = "89abcdef0123456789abcdef0123456789abcdef";
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(snap.join("data")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    std::fs::copy(fixtures().join("corpus/train-00000-of-00001.parquet"), snap.join("data/train-00000-of-00001.parquet")).unwrap();
    std::fs::write(snap.join("data/test.txt"), "not training text\n").unwrap();
    std::fs::write(snap.join("README.md"), "# card\n").unwrap();
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let c = Corpus::open(&["lincir-test/captions".to_string()], "text").unwrap();
    assert_eq!(c.sources.len(), 1, "only the train split: {:?}", c.sources);
    assert_eq!(c.captions().count(), 25);
    let e = Corpus::open(&["lincir-test/absent".to_string()], "text").unwrap_err().to_string();
    assert!(e.contains("lincir-test/absent") && e.contains("HF_HUB_OFFLINE"), "{e}");
}
