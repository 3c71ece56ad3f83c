//! The concepts each image resembles: a vocabulary of concept names (SEARLE uses Open Images V7's
//! class names) embedded by CLIP as an ensemble over [`super::TEMPLATES`], and the k nearest
//! concepts of each image embedding (SEARLE's `image_concepts_association.py`).

use std::path::Path;

use candle_core::{Tensor, D};

use crate::clip::tokenizer::pad_batch;
use crate::clip::{ClipTokenizer, TextTower};
use crate::{Error, Result};

/// A vocabulary larger than this is refused (Open Images V7 has about 20,000 classes).
pub const MAX_CONCEPTS: usize = 1_000_000;
/// A vocabulary file larger than this is refused (Open Images V7's is under 1 MiB).
const MAX_VOCABULARY_BYTES: u64 = 256 << 20;
/// A concept name longer than this (bytes) is refused.
const MAX_CONCEPT_LEN: usize = 200;

/// Reads a vocabulary: one concept per line, or a CSV file whose header has a `DisplayName`
/// column (Open Images' `oidv7-class-descriptions.csv`). Names are trimmed; empty lines and
/// repeats are dropped (the first occurrence keeps its place).
pub fn read_vocabulary(path: &Path) -> Result<Vec<String>> {
    crate::io::check_file_size(path, MAX_VOCABULARY_BYTES, "vocabulary")?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read the vocabulary: {e}")))?;
    let first = text.lines().next().unwrap_or_default();
    let names: Vec<String> = if first.split(',').any(|c| c.trim().trim_matches('"') == "DisplayName") {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| Error::file(path, format!("bad CSV header: {e}")))?.clone();
        let column = headers.iter().position(|h| h.trim() == "DisplayName").expect("checked above");
        let mut names = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| Error::file(path, format!("CSV record {}: {e}", i + 1)))?;
            names.push(record.get(column).unwrap_or_default().to_string());
        }
        names
    } else {
        text.lines().map(str::to_string).collect()
    };
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    for name in names {
        let name = name.trim().to_string();
        if name.is_empty() || !seen.insert(name.clone()) {
            continue;
        }
        if name.len() > MAX_CONCEPT_LEN {
            return Err(Error::file(path, format!("a concept name of {} bytes (at most {MAX_CONCEPT_LEN}): {:?}...", name.len(), &name[..name.floor_char_boundary(40)])));
        }
        kept.push(name);
        if kept.len() > MAX_CONCEPTS {
            return Err(Error::file(path, format!("more than {MAX_CONCEPTS} concepts")));
        }
    }
    if kept.is_empty() {
        return Err(Error::file(path, "no concepts in the vocabulary"));
    }
    Ok(kept)
}

/// The vocabulary lower-cased, repeats dropped (the first keeps its place): how it pairs with
/// phrases taken from captions ([`super::phrases::Phrases::from_captions`]).
pub fn lowercased(vocabulary: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    vocabulary.into_iter().map(|c| c.to_lowercase()).filter(|c| seen.insert(c.clone())).collect()
}

/// The texts that embed one concept: each template with ` {concept} ` in it (SEARLE's spacing).
pub fn concept_prompts(concept: &str) -> Vec<String> {
    super::TEMPLATES.iter().map(|t| t.replace("{}", &format!(" {concept} "))).collect()
}

/// Each concept's ensemble embedding: its prompts embedded, each normalised, averaged, the mean
/// normalised again. `progress` is called with the number of concepts finished.
///
/// # Shapes
/// -> [concepts, projection_dim], unit rows, f32
pub fn embed_vocabulary(text: &TextTower, tokenizer: &ClipTokenizer, concepts: &[String], batch_size: usize, progress: &dyn Fn(usize)) -> Result<Tensor> {
    let per = super::TEMPLATES.len();
    // Whole concepts per chunk, about `batch_size` prompts each (each chunk padded to its longest).
    let chunk = (batch_size / per).max(1);
    let mut parts = Vec::new();
    for group in concepts.chunks(chunk) {
        let prompts: Vec<String> = group.iter().flat_map(|c| concept_prompts(c)).collect();
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let ids = pad_batch(&tokenizer.encode_batch(&refs)?, text.device())?;
        let e = text.embed(&ids)?.to_dtype(candle_core::DType::F32)?;
        let e = unit_rows(&e)?.reshape((group.len(), per, e.dim(1)?))?.mean(1)?;
        parts.push(unit_rows(&e)?);
        progress(group.len());
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The indices of the `k` concepts nearest each image (cosine similarity, best first; ties to
/// the lower index), computed a block of images at a time so that memory stays bounded.
///
/// # Shapes
/// images: [n, P] (any norm); vocabulary: [concepts, P] unit rows
pub fn nearest_concepts(images: &Tensor, vocabulary: &Tensor, k: usize) -> Result<Vec<Vec<u32>>> {
    // At most 2^26 similarities (256 MiB) at a time, whatever the vocabulary's size.
    let n = images.dim(0)?;
    let vocabulary = vocabulary.to_device(images.device())?;
    let block = ((1usize << 26) / vocabulary.dim(0)?.max(1)).clamp(1, 1024);
    let k = k.min(vocabulary.dim(0)?);
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(block) {
        let rows = unit_rows(&images.narrow(0, start, block.min(n - start))?.to_dtype(candle_core::DType::F32)?)?;
        let sims = rows.matmul(&vocabulary.t()?)?.to_vec2::<f32>()?;
        for row in sims {
            let mut order: Vec<u32> = (0..row.len() as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            order.truncate(k);
            out.push(order);
        }
    }
    Ok(out)
}

fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_read_as_lines_or_open_images_csv() {
        let dir = std::env::temp_dir().join(format!("lincir-vocab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = dir.join("v.txt");
        std::fs::write(&lines, "dog\n cat \n\ndog\nred square\n").unwrap();
        assert_eq!(read_vocabulary(&lines).unwrap(), ["dog", "cat", "red square"]);
        let csv = dir.join("oid.csv");
        std::fs::write(&csv, "LabelName,DisplayName\n/m/011k07,Tortoise\n/m/0120dh,\"Sea turtle, green\"\n").unwrap();
        assert_eq!(read_vocabulary(&csv).unwrap(), ["Tortoise", "Sea turtle, green"]);
        std::fs::write(&lines, "\n\n").unwrap();
        assert!(read_vocabulary(&lines).unwrap_err().to_string().contains("no concepts"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn nearest_concepts_are_sorted_by_cosine() {
        let dev = candle_core::Device::Cpu;
        let vocab = Tensor::new(&[[1f32, 0.0], [0.0, 1.0], [0.6, 0.8]], &dev).unwrap();
        let images = Tensor::new(&[[10f32, 1.0], [0.0, -1.0]], &dev).unwrap();
        assert_eq!(nearest_concepts(&images, &vocab, 2).unwrap(), [vec![0, 2], vec![0, 2]]);
        assert_eq!(nearest_concepts(&images, &vocab, 9).unwrap()[1], [0, 2, 1]);
    }
}
