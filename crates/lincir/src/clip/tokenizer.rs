//! CLIP's byte-level BPE through the `tokenizers` crate, from `tokenizer.json` or from
//! `vocab.json` + `merges.txt` (for which the pipeline of Hugging Face's CLIP converter is built
//! here: NFC, whitespace collapsing, lower-casing, CLIP's split pattern, byte-level BPE with the
//! `</w>` suffix).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use crate::prompt::{CONTEXT_LENGTH, END_OF_TEXT_ID, START_OF_TEXT_ID};
use crate::{Error, Result};

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const VOCAB_FILE: &str = "vocab.json";
pub const MERGES_FILE: &str = "merges.txt";

const START_TOKEN: &str = "<|startoftext|>";
const END_TOKEN: &str = "<|endoftext|>";

pub struct ClipTokenizer {
    inner: Tokenizer,
    context_length: usize,
    start_id: u32,
    end_id: u32,
    source: PathBuf,
}

impl ClipTokenizer {
    /// `tokenizer.json` when the directory has one, else `vocab.json` + `merges.txt`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join(TOKENIZER_FILE);
        if json.is_file() {
            return Self::from_tokenizer_json(&json);
        }
        let (vocab, merges) = (dir.join(VOCAB_FILE), dir.join(MERGES_FILE));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_and_merges(&vocab, &merges);
        }
        Err(Error::file(dir, format!("no tokenizer found (looked for {TOKENIZER_FILE}, or {VOCAB_FILE} + {MERGES_FILE})")))
    }

    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| Error::file(path, format!("not a readable tokenizer: {e}")))?;
        Self::wrap(inner, path)
    }

    pub fn from_vocab_and_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        let vocab_json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(vocab).map_err(|e| Error::file(vocab, e))?,
        )
        .map_err(|e| Error::file(vocab, format!("malformed vocabulary: {e}")))?;
        let merges_text = std::fs::read_to_string(merges).map_err(|e| Error::file(merges, e))?;
        let merges_list: Vec<String> = merges_text
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let json = clip_tokenizer_json(vocab_json, merges_list);
        let inner: Tokenizer =
            json.to_string().parse().map_err(|e| Error::file(vocab, format!("cannot build a CLIP tokenizer: {e}")))?;
        Self::wrap(inner, vocab)
    }

    fn wrap(inner: Tokenizer, source: &Path) -> Result<Self> {
        let id = |tok: &str| {
            inner.token_to_id(tok).ok_or_else(|| Error::file(source, format!("the vocabulary has no `{tok}` token")))
        };
        let (start_id, end_id) = (id(START_TOKEN)?, id(END_TOKEN)?);
        if (start_id, end_id) != (START_OF_TEXT_ID, END_OF_TEXT_ID) {
            // Pooling takes the argmax of the ids, which is only the end token in CLIP's vocabulary.
            return Err(Error::file(
                source,
                format!("start/end ids are {start_id}/{end_id}, expected CLIP's {START_OF_TEXT_ID}/{END_OF_TEXT_ID}"),
            ));
        }
        Ok(ClipTokenizer { inner, context_length: CONTEXT_LENGTH, start_id, end_id, source: source.to_path_buf() })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Token ids of one text: start, at most `context_length - 2` BPE tokens, end (truncation
    /// keeps the end token, as transformers' `truncation=True, max_length=77`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.frame(&self.encode_plain(text)?))
    }

    /// BPE tokens of a text without start/end and without truncation.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::file(&self.source, format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// [`Self::encode`] over many texts, in parallel.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| Error::file(&self.source, format!("cannot tokenize: {e}")))?;
        Ok(encs.iter().map(|e| self.frame(e.get_ids())).collect())
    }

    /// Decodes ids back to text (special tokens dropped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::file(&self.source, format!("cannot decode: {e}")))
    }

    /// Decodes BPE ids to text as CLIP's reference tokenizer does: tokens joined, byte-level
    /// characters mapped back to bytes, every `</w>` (end of word) read as a space, stripped.
    /// Used to cut an over-long caption to its first 75 tokens.
    pub fn decode_words(&self, ids: &[u32]) -> Result<String> {
        let mut joined = String::new();
        for &id in ids {
            let tok = self
                .inner
                .id_to_token(id)
                .ok_or_else(|| Error::file(&self.source, format!("cannot decode: id {id} is not in the vocabulary")))?;
            joined.push_str(&tok);
        }
        let table = byte_level_decoder();
        let bytes: Vec<u8> = joined.chars().filter_map(|c| table.get(&c).copied()).collect();
        Ok(String::from_utf8_lossy(&bytes).replace("</w>", " ").trim().to_string())
    }

    /// Start token, at most `context_length - 2` of `body`, end token.
    pub fn frame(&self, body: &[u32]) -> Vec<u32> {
        let keep = body.len().min(self.context_length - 2);
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(self.start_id);
        ids.extend_from_slice(&body[..keep]);
        ids.push(self.end_id);
        ids
    }
}

/// The inverse of byte-level BPE's byte-to-character table: printable bytes stand for themselves,
/// the others were shifted to code points from 256 on.
fn byte_level_decoder() -> &'static std::collections::HashMap<char, u8> {
    static TABLE: std::sync::OnceLock<std::collections::HashMap<char, u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let mut next = 256u32;
        (0..=255u8)
            .map(|b| {
                if printable(b) {
                    (char::from(b), b)
                } else {
                    let c = char::from_u32(next).expect("valid code point");
                    next += 1;
                    (c, b)
                }
            })
            .collect()
    })
}

/// Pads token sequences with 0 to the longest one. Exact for CLIP: attention is causal and
/// pooling happens at the end token, so nothing after it affects the result; 0 is never the
/// argmax, so pooling still finds the end token.
///
/// # Shapes
/// -> [batch, longest] u32
pub fn pad_batch(seqs: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let longest = seqs.iter().map(Vec::len).max().ok_or_else(|| Error::Invalid("empty batch of texts".into()))?;
    let mut flat = Vec::with_capacity(seqs.len() * longest);
    for s in seqs {
        flat.extend_from_slice(s);
        flat.resize(flat.len() + longest - s.len(), 0);
    }
    Ok(Tensor::from_vec(flat, (seqs.len(), longest), device)?)
}

/// The `tokenizer.json` that transformers' CLIP converter writes for a vocabulary and merges.
fn clip_tokenizer_json(vocab: serde_json::Value, merges: Vec<String>) -> serde_json::Value {
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(START_OF_TEXT_ID, START_TOKEN), special(END_OF_TEXT_ID, END_TOKEN)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex":
                "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": END_TOKEN, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}
