//! Caption sources: plain text (one caption per line), JSONL / JSON, CSV / TSV and Parquet files,
//! local files or folders, or Hugging Face dataset ids (their data files through `hf-hub`).
//! Captions are streamed, never all held in memory, and shuffled through a seeded buffer.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use hf_hub::{api::sync::ApiBuilder, Cache, Repo, RepoType};

use crate::clip::hub::{hub_offline, looks_like_hub_id};
use crate::rng::Rng;
use crate::{Error, Result};

/// The text column of the paper's datasets.
pub const DEFAULT_TEXT_FIELD: &str = "text";

/// The training text of the paper (CC3M captions, Stable Diffusion prompts, Midjourney prompts).
pub const PAPER_DATASETS: [&str; 3] =
    ["dangne/gcc_caption_only", "FredZhang7/stable-diffusion-prompts-2.47M", "Geonmo/midjourney-prompts-only"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Jsonl,
    Json,
    Csv,
    Tsv,
    Parquet,
}

impl Format {
    /// By extension; `None` for files that are not caption sources.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" => Format::Text,
            "jsonl" | "ndjson" => Format::Jsonl,
            "json" => Format::Json,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "parquet" => Format::Parquet,
            _ => return None,
        })
    }
}

/// One file of captions.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub format: Format,
}

/// The caption sources of a training run, in a fixed order.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub sources: Vec<Source>,
    pub text_field: String,
}

impl Corpus {
    /// Resolves each spec: a file (format by extension; unknown extensions are read as plain
    /// text), a folder (every caption file under it, sorted), or a hub dataset id
    /// (`owner/name[@revision]`: its training data files, from the cache or downloaded).
    pub fn open(specs: &[String], text_field: &str) -> Result<Corpus> {
        let mut sources = Vec::new();
        for spec in specs {
            let path = Path::new(spec);
            if path.is_file() {
                sources.push(Source { path: path.to_path_buf(), format: Format::of(path).unwrap_or(Format::Text) });
            } else if path.is_dir() {
                let found = files_under(path)?;
                if found.is_empty() {
                    return Err(Error::file(path, "no caption files (.txt, .jsonl, .json, .csv, .tsv, .parquet) in this folder"));
                }
                sources.extend(found);
            } else if looks_like_hub_id(spec) {
                sources.extend(hub_dataset_files(spec)?);
            } else {
                return Err(Error::file(path, "caption source not found (not a file, a folder or a hub dataset id)"));
            }
        }
        if sources.is_empty() {
            return Err(Error::Invalid("no caption sources given".into()));
        }
        Ok(Corpus { sources, text_field: text_field.to_string() })
    }

    /// One pass over every caption of every source, in order. `None` is a missing value (null).
    pub fn captions(&self) -> impl Iterator<Item = Result<Option<String>>> + Send + '_ {
        self.sources.iter().flat_map(move |s| -> Box<dyn Iterator<Item = Result<Option<String>>> + Send> {
            match read_source(s, &self.text_field) {
                Ok(it) => it,
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        })
    }
}

/// Caption files under a folder, recursively, sorted by path.
fn files_under(dir: &Path) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::file(&d, e))? {
            let path = entry.map_err(|e| Error::file(&d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(format) = Format::of(&path) {
                out.push(Source { path, format });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The data files of a hub dataset's training split: files whose path names the split `train`
/// when there are any, else every caption file of the repository.
fn hub_dataset_files(spec: &str) -> Result<Vec<Source>> {
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id.to_string(), rev.to_string()),
        None => (spec.to_string(), "main".to_string()),
    };
    let repo = Repo::with_revision(id, RepoType::Dataset, revision);
    let cache = Cache::from_env();
    let err = |msg: String| Error::Dataset { dataset: spec.to_string(), msg };
    let names = if hub_offline() {
        cached_files(&cache, &repo).ok_or_else(|| {
            err(format!("not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set", cache.path().display()))
        })?
    } else {
        let api = ApiBuilder::from_cache(cache.clone())
            .with_progress(true)
            .build()
            .map_err(|e| err(format!("cannot set up the hub client: {e}")))?;
        match api.repo(repo.clone()).info() {
            Ok(info) => info.siblings.into_iter().map(|s| s.rfilename).collect(),
            Err(e) => cached_files(&cache, &repo).ok_or_else(|| {
                err(format!("not in the Hugging Face cache at {} and the hub could not be reached: {e}", cache.path().display()))
            })?,
        }
    };
    let data: Vec<String> = names.into_iter().filter(|n| Format::of(Path::new(n)).is_some()).collect();
    let train: Vec<String> = data.iter().filter(|n| n.to_ascii_lowercase().contains("train")).cloned().collect();
    let mut chosen = if train.is_empty() { data } else { train };
    chosen.sort();
    if chosen.is_empty() {
        return Err(err("has no data files lincir can read (.txt, .jsonl, .json, .csv, .tsv, .parquet)".into()));
    }
    let cache_repo = cache.repo(repo.clone());
    let api = if hub_offline() {
        None
    } else {
        ApiBuilder::from_cache(cache.clone()).with_progress(true).build().ok().map(|a| a.repo(repo.clone()))
    };
    chosen
        .iter()
        .map(|name| {
            let path = match (cache_repo.get(name), &api) {
                (Some(p), _) => p,
                (None, Some(api)) => api.get(name).map_err(|e| err(format!("cannot download {name}: {e}")))?,
                (None, None) => return Err(err(format!("{name} is not in the cache and HF_HUB_OFFLINE is set"))),
            };
            Ok(Source { format: Format::of(&path).unwrap_or(Format::Text), path })
        })
        .collect()
}

/// Files of a cached dataset snapshot (relative paths), when the revision is in the cache.
fn cached_files(cache: &Cache, repo: &Repo) -> Option<Vec<String>> {
    let root = cache.path().join(repo.folder_name());
    let commit = std::fs::read_to_string(root.join("refs").join(repo.revision())).ok()?;
    let snapshot = root.join("snapshots").join(commit.trim());
    let mut out = Vec::new();
    let mut stack = vec![snapshot.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(&snapshot) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    Some(out)
}

type Captions = Box<dyn Iterator<Item = Result<Option<String>>> + Send>;

fn read_source(s: &Source, field: &str) -> Result<Captions> {
    let path = s.path.clone();
    let open = || File::open(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")));
    Ok(match s.format {
        Format::Text => {
            let reader = BufReader::new(open()?);
            let p = path.clone();
            Box::new(reader.lines().map(move |l| {
                l.map(|l| Some(l.strip_suffix('\r').unwrap_or(&l).to_string()))
                    .map_err(|e| Error::file(&p, format!("cannot read: {e}")))
            }))
        }
        Format::Jsonl => {
            let reader = BufReader::new(open()?);
            let (p, field) = (path.clone(), field.to_string());
            Box::new(reader.lines().enumerate().filter_map(move |(i, l)| match l {
                Err(e) => Some(Err(Error::file(&p, format!("cannot read line {}: {e}", i + 1)))),
                Ok(l) if l.trim().is_empty() => None,
                Ok(l) => Some(
                    serde_json::from_str::<serde_json::Value>(&l)
                        .map_err(|e| format!("line {}: not JSON: {e}", i + 1))
                        .and_then(|v| json_text(&v, &field).map_err(|m| format!("line {}: {m}", i + 1)))
                        .map_err(|m| Error::file(&p, m)),
                ),
            }))
        }
        Format::Json => {
            // A JSON document cannot be streamed record by record: read it whole.
            let v: serde_json::Value = serde_json::from_reader(BufReader::new(open()?))
                .map_err(|e| Error::file(&path, format!("not JSON: {e}")))?;
            let serde_json::Value::Array(records) = v else {
                return Err(Error::file(&path, "expected a JSON array of records (or use .jsonl for one record per line)"));
            };
            let (p, field) = (path.clone(), field.to_string());
            Box::new(records.into_iter().enumerate().map(move |(i, r)| {
                json_text(&r, &field).map_err(|m| Error::file(&p, format!("record {i}: {m}")))
            }))
        }
        Format::Csv | Format::Tsv => {
            let delimiter = if s.format == Format::Csv { b',' } else { b'\t' };
            let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).from_reader(open()?);
            let headers = reader.headers().map_err(|e| Error::file(&path, format!("cannot read the header: {e}")))?;
            let column = headers.iter().position(|h| h == field).ok_or_else(|| {
                let names: Vec<&str> = headers.iter().collect();
                Error::file(&path, format!("no column `{field}` (columns: {names:?}); choose one with --text-field"))
            })?;
            let p = path.clone();
            Box::new(reader.into_records().map(move |r| {
                let r = r.map_err(|e| Error::file(&p, format!("malformed row: {e}")))?;
                Ok(r.get(column).map(str::to_string))
            }))
        }
        Format::Parquet => parquet_column(&path, field)?,
    })
}

/// The caption of one JSON record: a string, or an object's `field` (null is a missing value).
fn json_text(v: &serde_json::Value, field: &str) -> std::result::Result<Option<String>, String> {
    match v {
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Object(o) => match o.get(field) {
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Null) => Ok(None),
            Some(other) => Err(format!("field `{field}` is not a string: {other}")),
            None => {
                let keys: Vec<&String> = o.keys().collect();
                Err(format!("no field `{field}` (fields: {keys:?}); choose one with --text-field"))
            }
        },
        other => Err(format!("expected an object or a string, found {other}")),
    }
}

/// The string column `field` of a Parquet file, row group by row group.
fn parquet_column(path: &Path, field: &str) -> Result<Captions> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    use parquet::schema::types::Type;

    // The Parquet reader panics on some malformed files (found by tests/fuzz_inputs.rs): every
    // call into it is guarded, and a panic is an error naming the file.
    let corrupt = |what: String| Error::file(path, format!("corrupt Parquet file ({what})"));
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let reader = crate::guard::catch_panic(|| SerializedFileReader::new(file))
        .map_err(corrupt)?
        .map_err(|e| Error::file(path, format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema();
    let column = schema.get_fields().iter().find(|f| f.name() == field).cloned().ok_or_else(|| {
        let names: Vec<&str> = schema.get_fields().iter().map(|f| f.name()).collect();
        Error::file(path, format!("no column `{field}` (columns: {names:?}); choose one with --text-field"))
    })?;
    let projection = Type::group_type_builder(schema.name())
        .with_fields(vec![column])
        .build()
        .map_err(|e| Error::file(path, format!("cannot select column `{field}`: {e}")))?;
    let mut rows = crate::guard::catch_panic(|| parquet::record::reader::RowIter::from_file_into(Box::new(reader)).project(Some(projection)))
        .map_err(corrupt)?
        .map_err(|e| Error::file(path, format!("cannot select column `{field}`: {e}")))?;
    let (p, field) = (path.to_path_buf(), field.to_string());
    let mut failed = false;
    let guarded = std::iter::from_fn(move || {
        if failed {
            return None;
        }
        match crate::guard::catch_panic(|| rows.next()) {
            Ok(next) => next,
            Err(what) => {
                failed = true; // the reader's state is unknown after a panic: stop here
                Some(Err(parquet::errors::ParquetError::General(format!("the reader failed: {what}"))))
            }
        }
    });
    Ok(Box::new(guarded.map(move |row| {
        let row = row.map_err(|e| Error::file(&p, format!("cannot read a row: {e}")))?;
        match row.get_column_iter().next().map(|(_, v)| v) {
            Some(Field::Str(s)) => Ok(Some(s.clone())),
            Some(Field::Null) | None => Ok(None),
            Some(other) => Err(Error::file(&p, format!("column `{field}` holds {other:?}, not text"))),
        }
    })))
}

/// An endless, seeded shuffle of a corpus: each epoch streams the sources through a buffer of
/// `buffer` captions, emitting a random one as each new caption arrives (a uniform permutation
/// when the buffer holds the whole corpus). Every emitted caption gets a running index, the
/// identity that seeds its masking, so a resumed run can skip to where it stopped.
pub struct ShuffledCaptions<'a> {
    corpus: &'a Corpus,
    seed: u64,
    capacity: usize,
    epoch: u64,
    pass: Option<Box<dyn Iterator<Item = Result<Option<String>>> + Send + 'a>>,
    pass_len: u64,
    epoch_len: Option<u64>,
    buffer: Vec<Option<String>>,
    rng: Rng,
    next_index: u64,
}

const SHUFFLE_STREAM: u64 = 0x5348_5546;

impl<'a> ShuffledCaptions<'a> {
    pub fn new(corpus: &'a Corpus, seed: u64, capacity: usize) -> Self {
        ShuffledCaptions {
            corpus,
            seed,
            capacity: capacity.max(1),
            epoch: 0,
            pass: None,
            pass_len: 0,
            epoch_len: None,
            buffer: Vec::new(),
            rng: Rng::derive(seed, SHUFFLE_STREAM, 0),
            next_index: 0,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Captions per epoch, once the first epoch has been read.
    pub fn epoch_len(&self) -> Option<u64> {
        self.epoch_len
    }

    /// Index that the next caption will carry.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }
}

impl Iterator for ShuffledCaptions<'_> {
    /// (running index, caption).
    type Item = Result<(u64, Option<String>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let pass = self.pass.get_or_insert_with(|| Box::new(self.corpus.captions()));
            // Fill the buffer, then trade each arriving caption for a random buffered one.
            match pass.next() {
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(caption)) => {
                    self.pass_len += 1;
                    if self.buffer.len() < self.capacity {
                        self.buffer.push(caption);
                        continue;
                    }
                    let i = self.rng.below(self.buffer.len());
                    let out = std::mem::replace(&mut self.buffer[i], caption);
                    return Some(Ok(self.emit(out)));
                }
                None if !self.buffer.is_empty() => {
                    let i = self.rng.below(self.buffer.len());
                    let out = self.buffer.swap_remove(i);
                    return Some(Ok(self.emit(out)));
                }
                None => {
                    if self.pass_len == 0 {
                        return Some(Err(Error::Invalid("the caption corpus is empty".into())));
                    }
                    self.epoch += 1;
                    self.epoch_len.get_or_insert(self.pass_len);
                    self.pass = None;
                    self.pass_len = 0;
                    self.rng = Rng::derive(self.seed, SHUFFLE_STREAM, self.epoch);
                }
            }
        }
    }
}

impl ShuffledCaptions<'_> {
    fn emit(&mut self, caption: Option<String>) -> (u64, Option<String>) {
        self.next_index += 1;
        (self.next_index - 1, caption)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_of(lines: &[&str]) -> (tempfile::TempDir, Corpus) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        std::fs::write(&p, lines.join("\n")).unwrap();
        let c = Corpus::open(&[p.display().to_string()], DEFAULT_TEXT_FIELD).unwrap();
        (dir, c)
    }

    #[test]
    fn a_full_buffer_gives_a_permutation_per_epoch_and_the_same_one_per_seed() {
        let lines: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (_d, c) = corpus_of(&refs);
        let take = |seed| -> Vec<String> {
            ShuffledCaptions::new(&c, seed, 1000).take(100).map(|r| r.unwrap().1.unwrap()).collect()
        };
        let a = take(1);
        assert_eq!(a, take(1));
        assert_ne!(a, take(2));
        for epoch in a.chunks(50) {
            let mut e = epoch.to_vec();
            e.sort();
            let mut want = lines.clone();
            want.sort();
            assert_eq!(e, want);
        }
        assert_ne!(a[..50], a[50..], "each epoch is shuffled anew");
        assert_ne!(a[..50].to_vec(), lines, "shuffled");
    }

    #[test]
    fn a_small_buffer_still_emits_everything_once_per_epoch() {
        let lines: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (_d, c) = corpus_of(&refs);
        let mut got: Vec<String> = ShuffledCaptions::new(&c, 3, 4).take(30).map(|r| r.unwrap().1.unwrap()).collect();
        got.sort();
        let mut want = lines.clone();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn an_empty_file_is_an_error_not_a_hang() {
        let (_d, c) = corpus_of(&[]);
        let first = ShuffledCaptions::new(&c, 0, 10).next().unwrap();
        assert!(first.unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn jsonl_csv_tsv_and_json_read_the_text_field() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            p.display().to_string()
        };
        let specs = vec![
            w("a.jsonl", "{\"text\": \"one\"}\n\n{\"text\": null, \"x\": 1}\n\"two\"\n"),
            w("b.csv", "id,text\n1,\"three, with a comma\"\n2,four\n"),
            w("c.tsv", "text\tid\nfive\t1\n"),
            w("d.json", "[{\"text\": \"six\"}, \"seven\"]"),
        ];
        let c = Corpus::open(&specs, "text").unwrap();
        let got: Vec<Option<String>> = c.captions().map(|r| r.unwrap()).collect();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(got, vec![s("one"), None, s("two"), s("three, with a comma"), s("four"), s("five"), s("six"), s("seven")]);
    }

    #[test]
    fn a_missing_field_names_the_file_line_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, "{\"caption\": \"x\"}\n").unwrap();
        let c = Corpus::open(&[p.display().to_string()], "text").unwrap();
        let e = c.captions().next().unwrap().unwrap_err().to_string();
        assert!(e.contains("a.jsonl") && e.contains("line 1") && e.contains("caption"), "{e}");
        let p = dir.path().join("b.csv");
        std::fs::write(&p, "caption\nx\n").unwrap();
        let e = Corpus::open(&[p.display().to_string()], "text").unwrap().captions().next().unwrap().unwrap_err();
        assert!(e.to_string().contains("no column `text`"), "{e}");
    }
}
