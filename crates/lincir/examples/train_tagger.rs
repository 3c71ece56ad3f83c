//! Trains lincir's POS tagger and writes its weight file.
//!
//!     cargo run --release -p lincir --example train_tagger -- \
//!         --data DATA_DIR [--repeat SRC=N]... [--ud-gold FILE.conllu]... \
//!         [--out crates/lincir/src/smp/tagger_weights.bin] \
//!         [--iterations 10] [--folds 4] [--min-count 2] [--min-weight 0.8] [--seed 42]
//!
//! DATA_DIR/train.jsonl comes from `scripts/make_tagger_data.py` (spaCy-labelled sentences,
//! one `{"src", "words", "tags"}` per line). `--ud-gold` adds UD English EWT sentences with
//! their gold UPOS (column 4), both as written and lower-cased; optional, as the target is
//! agreement with spaCy, whose conventions differ slightly from UD's. `--repeat SRC=N` uses
//! the sentences of one source N times (e.g. `benchmarks=2` to weight real captions up).

use lincir::smp::tagger::{Tagger, TrainOptions, Upos};
use std::io::BufRead;
use std::path::PathBuf;

type Sentence = Vec<(String, Upos)>;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut data: Option<PathBuf> = None;
    let mut ud_gold: Vec<PathBuf> = Vec::new();
    let mut repeat: Vec<(String, usize)> = Vec::new();
    let mut out = PathBuf::from("crates/lincir/src/smp/tagger_weights.bin");
    let mut opts = TrainOptions {
        verbose: true,
        ..TrainOptions::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--data" => data = Some(val()?.into()),
            "--ud-gold" => ud_gold.push(val()?.into()),
            "--repeat" => {
                let v = val()?;
                let (src, n) = v.split_once('=').ok_or("--repeat wants SRC=N")?;
                repeat.push((src.to_string(), parse(n)?));
            }
            "--out" => out = val()?.into(),
            "--iterations" => opts.iterations = parse(&val()?)?,
            "--min-count" => opts.min_count = parse(&val()?)?,
            "--folds" => opts.folds = parse(&val()?)?,
            "--min-weight" => opts.min_weight = parse(&val()?)?,
            "--seed" => opts.seed = parse(&val()?)?,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let data = data.ok_or("--data DATA_DIR is required")?;
    let mut sentences = Vec::new();
    for (src, sent) in read_jsonl(&data.join("train.jsonl"))? {
        let n = repeat
            .iter()
            .find(|(s, _)| *s == src)
            .map_or(1, |(_, n)| *n);
        sentences.extend(std::iter::repeat_n(sent, n));
    }
    eprintln!("spaCy-labelled sentences: {}", sentences.len());
    for path in &ud_gold {
        let gold = read_conllu(path)?;
        eprintln!(
            "{}: {} gold sentences (+ lower-cased)",
            path.display(),
            gold.len()
        );
        for s in gold {
            let lower = s.iter().map(|(w, t)| (w.to_lowercase(), *t)).collect();
            sentences.push(s);
            sentences.push(lower);
        }
    }
    let tagger = Tagger::train(&sentences, &opts);
    let bytes = tagger.to_bytes();
    std::fs::write(&out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "wrote {} ({} features, {} bytes)",
        out.display(),
        tagger.num_features(),
        bytes.len()
    );
    Ok(())
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad number {s:?}"))
}

fn lines(path: &PathBuf) -> Result<impl Iterator<Item = String>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(std::io::BufReader::new(f).lines().map_while(Result::ok))
}

/// `{"src": ..., "words": [...], "tags": [...]}` per line.
fn read_jsonl(path: &PathBuf) -> Result<Vec<(String, Sentence)>, String> {
    let mut out = Vec::new();
    for (n, line) in lines(path)?.enumerate() {
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        let strs = |k: &str| -> Vec<String> {
            v[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        };
        let (words, tags) = (strs("words"), strs("tags"));
        if words.len() != tags.len() {
            return Err(format!(
                "{}:{}: words and tags differ in length",
                path.display(),
                n + 1
            ));
        }
        let sent: Option<Sentence> = words
            .into_iter()
            .zip(&tags)
            .map(|(w, t)| Upos::from_name(t).map(|u| (w, u)))
            .collect();
        let src = v["src"].as_str().unwrap_or_default().to_string();
        out.push((
            src,
            sent.ok_or(format!("{}:{}: unknown tag", path.display(), n + 1))?,
        ));
    }
    Ok(out)
}

/// Word forms (column 2) and UPOS (column 4) of a CoNLL-U file; multi-word token ranges and
/// empty nodes are skipped.
fn read_conllu(path: &PathBuf) -> Result<Vec<Sentence>, String> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for line in lines(path)? {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 4 || cols[0].contains('-') || cols[0].contains('.') {
            continue;
        }
        if let Some(tag) = Upos::from_name(cols[3]) {
            cur.push((cols[1].to_string(), tag));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}
