//! A greedy averaged-perceptron part-of-speech tagger (Universal POS tags).
//!
//! The classic design (Collins 2002; Honnibal's "A good part-of-speech tagger in about 200
//! lines of Python"): each token gets a sparse set of hashed features (word, affixes, shape,
//! neighbouring words, the two previously *predicted* tags); a weight row per feature scores
//! the tags and the best one is taken, left to right. Training runs the same greedy decoder and
//! moves weights towards the gold tag whenever it is wrong; the final weights are averaged over
//! all steps, which makes the perceptron generalise far better.
//!
//! Two such passes are stacked: the second also sees the first pass's tags of the current and
//! next two words (right context that one left-to-right pass cannot have). It is trained on
//! first-pass tags from k-fold models, so it learns how reliable they are on unseen text.
//!
//! The built-in weights (`tagger_weights.bin`) are trained to agree with spaCy
//! `en_core_web_sm` on lower-cased captions and general English text; see
//! `TAGGER_WEIGHTS.md` and `docs/TAGGER.md`.
//!
//! Weight file format (little-endian): magic `LCPT`, u32 version (2), u8 number of tags, then
//! for each of the two passes: f32 scale, u32 number of features, then per feature (sorted by
//! key) u32 key, u8 count and `count` u16 entries `tag << 11 | q` where `q` is an 11-bit
//! two's-complement integer; the weight is `q * scale`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// Universal POS tags as spaCy reports them (`token.pos_`): the 17 UD tags plus spaCy's
/// `SPACE` for whitespace tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Upos {
    Adj,
    Adp,
    Adv,
    Aux,
    Cconj,
    Det,
    Intj,
    Noun,
    Num,
    Part,
    Pron,
    Propn,
    Punct,
    Sconj,
    Sym,
    Verb,
    X,
    /// spaCy's tag for whitespace tokens (not a UD tag; assigned by rule, never learned).
    Space,
}

/// Tags the perceptron chooses between (all but `Space`).
const N_TAGS: usize = 17;
const ALL: [Upos; 18] = [
    Upos::Adj,
    Upos::Adp,
    Upos::Adv,
    Upos::Aux,
    Upos::Cconj,
    Upos::Det,
    Upos::Intj,
    Upos::Noun,
    Upos::Num,
    Upos::Part,
    Upos::Pron,
    Upos::Propn,
    Upos::Punct,
    Upos::Sconj,
    Upos::Sym,
    Upos::Verb,
    Upos::X,
    Upos::Space,
];
const NAMES: [&str; 18] = [
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
    "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE",
];

impl Upos {
    /// The tag's name as in UD / spaCy (`"NOUN"`).
    pub fn as_str(self) -> &'static str {
        NAMES[self as usize]
    }

    /// Parses a UD / spaCy tag name.
    pub fn from_name(name: &str) -> Option<Upos> {
        NAMES.iter().position(|n| *n == name).map(|i| ALL[i])
    }

    /// Whether LinCIR counts a token with this tag as part of a keyword.
    pub fn is_keyword(self) -> bool {
        matches!(self, Upos::Noun | Upos::Propn | Upos::Adj | Upos::Det)
    }
}

// ---------------------------------------------------------------------------------------------
// Features

/// Keys are already hashes, so the map does not hash them again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        // Spread the bits: the map uses the low bits for buckets, the high ones for tags.
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type KeyMap<V> = HashMap<u32, V, BuildHasherDefault<KeyHasher>>;

/// FNV-1a over a template id and string parts, folded to 32 bits.
struct FeatureHash(u64);

impl FeatureHash {
    fn new(template: u8) -> Self {
        let mut h = FeatureHash(0xcbf2_9ce4_8422_2325);
        h.byte(template);
        h
    }
    fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
    fn str(mut self, s: &str) -> Self {
        for b in s.bytes() {
            self.byte(b);
        }
        self.byte(0xff); // separator: ("ab","c") differs from ("a","bc")
        self
    }
    fn tag(mut self, t: u8) -> Self {
        self.byte(t);
        self
    }
    fn finish(self) -> u32 {
        let x = self.0 ^ (self.0 >> 32);
        x as u32
    }
}

/// Previous-tag ids beyond the real tags (0..=17): sentence start padding.
const START: u8 = 18;
const START2: u8 = 19;
/// First-pass tag ids past the sentence end.
const END: u8 = 20;
const END2: u8 = 21;

/// Per-token strings the features are built from, computed once per sentence.
struct Token {
    norm: String,
    suffix3: String,
    suffix2: String,
    prefix2: String,
    shape: String,
}

fn make_token(word: &str) -> Token {
    let norm = normalize(word);
    let chars: Vec<char> = norm.chars().collect();
    let tail = |n: usize| {
        chars[chars.len().saturating_sub(n)..]
            .iter()
            .collect::<String>()
    };
    Token {
        suffix3: tail(3),
        suffix2: tail(2),
        prefix2: chars.iter().take(2).collect(),
        shape: shape(word),
        norm,
    }
}

fn pad_token(name: &str) -> Token {
    Token {
        norm: name.to_string(),
        suffix3: name.to_string(),
        suffix2: name.to_string(),
        prefix2: name.to_string(),
        shape: name.to_string(),
    }
}

/// Lower-cased word; numbers collapse to a few classes so they share statistics.
fn normalize(word: &str) -> String {
    let digits = word.chars().filter(|c| c.is_ascii_digit()).count();
    let n = word.chars().count();
    if digits > 0 {
        if digits == 4 && n == 4 {
            return "!YEAR".to_string();
        }
        if word
            .chars()
            .all(|c| c.is_ascii_digit() || ",./:-".contains(c))
        {
            return "!DIGITS".to_string();
        }
    }
    let lower = word.to_lowercase();
    // Very long tokens are rare and carry no extra signal.
    if n > 30 {
        return lower.chars().take(30).collect();
    }
    lower
}

/// Word shape: `X` upper, `x` lower, `d` digit, other characters kept; runs capped at 2.
fn shape(word: &str) -> String {
    let mut out = String::new();
    let mut last = '\0';
    let mut run = 0;
    for c in word.chars() {
        let s = if c.is_uppercase() {
            'X'
        } else if c.is_alphabetic() {
            'x'
        } else if c.is_numeric() {
            'd'
        } else {
            c
        };
        run = if s == last { run + 1 } else { 1 };
        last = s;
        if run <= 2 {
            out.push(s);
        }
        if out.len() >= 8 {
            break;
        }
    }
    out
}

/// A sentence with padding: `ctx[i + 2]` is token `i`.
struct Context {
    ctx: Vec<Token>,
    space: Vec<bool>,
}

impl Context {
    fn new(words: &[&str]) -> Self {
        let mut ctx = vec![pad_token("-START2-"), pad_token("-START-")];
        ctx.extend(words.iter().map(|w| make_token(w)));
        ctx.push(pad_token("-END-"));
        ctx.push(pad_token("-END2-"));
        Context {
            ctx,
            space: words.iter().map(|w| is_whitespace_token(w)).collect(),
        }
    }

    fn len(&self) -> usize {
        self.space.len()
    }

    fn is_space(&self, i: usize) -> bool {
        self.space[i]
    }

    /// Feature keys for token `i` given the two previous predicted tags and, in the second
    /// pass, the first pass's tags of the whole sentence.
    fn features(&self, i: usize, p1: u8, p2: u8, prior: Option<&[u8]>, out: &mut Vec<u32>) {
        out.clear();
        let c = &self.ctx;
        let (w, prev, prev2, next, next2) = (&c[i + 2], &c[i + 1], &c[i], &c[i + 3], &c[i + 4]);
        let f = FeatureHash::new;
        out.extend([
            f(0).finish(), // bias
            f(1).str(&w.norm).finish(),
            f(2).str(&w.suffix3).finish(),
            f(3).str(&w.suffix2).finish(),
            f(4).str(&w.prefix2).finish(),
            f(5).str(&w.shape).finish(),
            f(6).tag(p1).finish(),
            f(7).tag(p2).finish(),
            f(8).tag(p1).tag(p2).finish(),
            f(9).tag(p1).str(&w.norm).finish(),
            f(10).str(&prev.norm).finish(),
            f(11).str(&prev.suffix3).finish(),
            f(12).str(&prev2.norm).finish(),
            f(13).str(&next.norm).finish(),
            f(14).str(&next.suffix3).finish(),
            f(15).str(&next2.norm).finish(),
            f(16).str(&w.norm).str(&next.norm).finish(),
            f(17).str(&prev.norm).str(&w.norm).finish(),
            f(18).tag(p1).str(&next.norm).finish(),
            f(19).str(&next.shape).finish(),
            f(20).str(&w.suffix3).str(&next.suffix3).finish(),
        ]);
        if let Some(prior) = prior {
            let at = |k: usize| {
                prior
                    .get(k)
                    .copied()
                    .unwrap_or(if k == i + 1 { END } else { END2 })
            };
            let (here, n1, n2) = (at(i), at(i + 1), at(i + 2));
            out.extend([
                f(30).tag(here).finish(),
                f(31).tag(n1).finish(),
                f(32).tag(n2).finish(),
                f(33).tag(n1).tag(n2).finish(),
                f(34).tag(here).str(&w.norm).finish(),
                f(35).tag(n1).str(&w.norm).finish(),
                f(36).tag(p1).tag(n1).finish(),
                f(37).tag(here).tag(n1).finish(),
            ]);
        }
    }
}

/// Whitespace tokens (as the tokenizer defines whitespace) are tagged `SPACE` by rule.
fn is_whitespace_token(word: &str) -> bool {
    !word.is_empty() && word.chars().all(super::words::is_space)
}

// ---------------------------------------------------------------------------------------------
// The tagger

/// An averaged-perceptron POS tagger with two greedy left-to-right passes: the first sees the
/// words and its own previous tags; the second also sees the first pass's tags of the *next*
/// words, which a single left-to-right pass cannot know. Immutable after construction, so
/// `&Tagger` can be shared between threads.
pub struct Tagger {
    first: Weights,
    second: Weights,
}

/// The weights shipped with the library.
static BUILTIN_WEIGHTS: &[u8] = include_bytes!("tagger_weights.bin");
const MAGIC: &[u8; 4] = b"LCPT";
const VERSION: u32 = 2;
/// Largest quantised weight magnitude (11-bit signed).
const QMAX: f32 = 1023.0;

impl Tagger {
    /// The built-in English tagger (parsed once on first use).
    pub fn builtin() -> &'static Tagger {
        static TAGGER: OnceLock<Tagger> = OnceLock::new();
        TAGGER.get_or_init(|| {
            Tagger::from_bytes(BUILTIN_WEIGHTS).unwrap_or_else(|e| {
                // The file is part of the crate and tested; fall back to an empty model
                // (every token gets the same tag) rather than panic.
                debug_assert!(false, "built-in tagger weights are corrupt: {e}");
                Tagger {
                    first: Weights::default(),
                    second: Weights::default(),
                }
            })
        })
    }

    /// Number of features with weights (both passes).
    pub fn num_features(&self) -> usize {
        self.first.rows.len() + self.second.rows.len()
    }

    /// Tags a tokenised sentence (one tag per word).
    pub fn tag(&self, words: &[&str]) -> Vec<Upos> {
        let ctx = Context::new(words);
        let prior = self.first.decode(&ctx, None);
        let tags = self.second.decode(&ctx, Some(&prior));
        tags.into_iter().map(|t| ALL[t as usize]).collect()
    }

    /// Parses weights written by [`Tagger::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Tagger, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err("not a lincir tagger weight file (bad magic)".into());
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(format!("unsupported tagger weight version {version}"));
        }
        let n_tags = r.u8()? as usize;
        if n_tags != N_TAGS {
            return Err(format!("weight file has {n_tags} tags, expected {N_TAGS}"));
        }
        let first = Weights::read(&mut r)?;
        let second = Weights::read(&mut r)?;
        if r.at != bytes.len() {
            return Err("trailing bytes after tagger weights".into());
        }
        Ok(Tagger { first, second })
    }

    /// Serialises the weights (see the module docs for the format).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(N_TAGS as u8);
        self.first.write(&mut out);
        self.second.write(&mut out);
        out
    }

    /// Trains a tagger on gold-tagged sentences (see [`TrainOptions`]).
    ///
    /// The second pass must learn how far to trust first-pass tags on text the first pass
    /// has not seen, so its training input comes from k-fold (jackknifed) first-pass models.
    pub fn train(sentences: &[Vec<(String, Upos)>], opts: &TrainOptions) -> Tagger {
        let data: Vec<(Context, Vec<u8>)> = sentences
            .iter()
            .map(|s| {
                let words: Vec<&str> = s.iter().map(|(w, _)| w.as_str()).collect();
                (
                    Context::new(&words),
                    s.iter().map(|(_, t)| *t as u8).collect(),
                )
            })
            .collect();
        let all: Vec<usize> = (0..data.len()).collect();
        let folds = opts.folds.max(2);
        let mut priors: Vec<Vec<u8>> = vec![Vec::new(); data.len()];
        for k in 0..folds {
            let train: Vec<usize> = all.iter().copied().filter(|i| i % folds != k).collect();
            let model = Weights::train(
                &data,
                &train,
                None,
                opts,
                &format!("fold {}/{folds}", k + 1),
            );
            for i in all.iter().copied().filter(|i| i % folds == k) {
                priors[i] = model.decode(&data[i].0, None);
            }
        }
        let first = Weights::train(&data, &all, None, opts, "first pass");
        let second = Weights::train(&data, &all, Some(&priors), opts, "second pass");
        Tagger { first, second }
    }
}

fn argmax(s: &[f32; N_TAGS]) -> usize {
    let mut best = 0;
    for (i, &v) in s.iter().enumerate() {
        if v > s[best] {
            best = i;
        }
    }
    best
}

/// Deterministic Fisher-Yates shuffle (xorshift64).
fn shuffle(v: &mut [usize], state: &mut u64) {
    for i in (1..v.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        v.swap(i, (*state % (i as u64 + 1)) as usize);
    }
}

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Passes over the data.
    pub iterations: usize,
    /// Folds for the first-pass predictions the second pass trains on (at least 2).
    pub folds: usize,
    /// Drop features seen fewer times than this per pass over the data (on average).
    pub min_count: u32,
    /// Drop averaged weights smaller than this in absolute value.
    pub min_weight: f32,
    /// Shuffling seed.
    pub seed: u64,
    /// Print per-iteration accuracy to stderr.
    pub verbose: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            iterations: 10,
            folds: 4,
            min_count: 2,
            min_weight: 0.8,
            seed: 42,
            verbose: false,
        }
    }
}

/// One perceptron: a weight row per feature key.
#[derive(Default)]
struct Weights {
    index: KeyMap<u32>,
    rows: Vec<[f32; N_TAGS]>,
}

impl Weights {
    fn scores(&self, feats: &[u32]) -> [f32; N_TAGS] {
        let mut s = [0f32; N_TAGS];
        for f in feats {
            if let Some(&r) = self.index.get(f) {
                for (a, b) in s.iter_mut().zip(&self.rows[r as usize]) {
                    *a += b;
                }
            }
        }
        s
    }

    /// Greedy left-to-right tag ids; whitespace tokens get `Space` by rule.
    fn decode(&self, ctx: &Context, prior: Option<&[u8]>) -> Vec<u8> {
        let mut feats = Vec::with_capacity(40);
        let mut tags = Vec::with_capacity(ctx.len());
        let (mut p1, mut p2) = (START, START2);
        for i in 0..ctx.len() {
            let tag = if ctx.is_space(i) {
                Upos::Space as u8
            } else {
                ctx.features(i, p1, p2, prior, &mut feats);
                argmax(&self.scores(&feats)) as u8
            };
            tags.push(tag);
            p2 = p1;
            p1 = tag;
        }
        tags
    }

    /// Trains one pass on the sentences `which` of `data`.
    fn train(
        data: &[(Context, Vec<u8>)],
        which: &[usize],
        priors: Option<&[Vec<u8>]>,
        opts: &TrainOptions,
        name: &str,
    ) -> Weights {
        let mut model = Trainer::default();
        let mut order = which.to_vec();
        let mut rng = opts.seed.max(1);
        let mut feats = Vec::with_capacity(40);
        for iter in 0..opts.iterations {
            shuffle(&mut order, &mut rng);
            let (mut right, mut total) = (0usize, 0usize);
            for &s in &order {
                let (ctx, gold) = &data[s];
                let prior = priors.map(|p| p[s].as_slice());
                let (mut p1, mut p2) = (START, START2);
                for (i, &gold) in gold.iter().enumerate() {
                    let guess = if ctx.is_space(i) || gold == Upos::Space as u8 {
                        gold
                    } else {
                        ctx.features(i, p1, p2, prior, &mut feats);
                        let guess = argmax(&model.scores(&feats)) as u8;
                        model.update(&feats, gold, guess);
                        right += usize::from(guess == gold);
                        total += 1;
                        guess
                    };
                    p2 = p1;
                    p1 = guess;
                }
            }
            if opts.verbose {
                let acc = right as f64 / total.max(1) as f64;
                eprintln!("{name}: iteration {}: train accuracy {acc:.4}", iter + 1);
            }
        }
        model.finish(opts)
    }

    /// Non-zero weights quantised to 11-bit integers with one scale per pass, each packed
    /// with its tag into a u16 (tag in the top 5 bits).
    fn write(&self, out: &mut Vec<u8>) {
        let max = self.rows.iter().flatten().fold(0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / QMAX } else { 1.0 };
        let mut keys: Vec<(u32, u32)> = self.index.iter().map(|(&k, &r)| (k, r)).collect();
        keys.sort_unstable();
        let quantised: Vec<(u32, Vec<u16>)> = keys
            .into_iter()
            .map(|(k, r)| {
                let q: Vec<u16> = self.rows[r as usize]
                    .iter()
                    .enumerate()
                    .map(|(t, w)| (t, (w / scale).round().clamp(-QMAX, QMAX) as i16))
                    .filter(|&(_, w)| w != 0)
                    .map(|(t, w)| ((t as u16) << 11) | (w as u16 & 0x7FF))
                    .collect();
                (k, q)
            })
            .filter(|(_, q)| !q.is_empty())
            .collect();
        out.extend_from_slice(&scale.to_le_bytes());
        out.extend_from_slice(&(quantised.len() as u32).to_le_bytes());
        for (k, q) in quantised {
            out.extend_from_slice(&k.to_le_bytes());
            out.push(q.len() as u8);
            for e in q {
                out.extend_from_slice(&e.to_le_bytes());
            }
        }
    }

    fn read(r: &mut Reader) -> Result<Weights, String> {
        let scale = f32::from_le_bytes([r.u8()?, r.u8()?, r.u8()?, r.u8()?]);
        let n = r.u32()? as usize;
        let mut w = Weights::default();
        w.rows.reserve(n.min(r.bytes.len() / 5));
        for _ in 0..n {
            let key = r.u32()?;
            let mut row = [0f32; N_TAGS];
            for _ in 0..r.u8()? {
                let e = u16::from_le_bytes([r.u8()?, r.u8()?]);
                // Sign-extend the low 11 bits.
                let v = ((e << 5) as i16) >> 5;
                let tag = usize::from(e >> 11);
                *row.get_mut(tag).ok_or("tag index out of range")? = f32::from(v) * scale;
            }
            w.index.insert(key, w.rows.len() as u32);
            w.rows.push(row);
        }
        Ok(w)
    }
}

/// Perceptron state while training: current weights plus what averaging needs.
#[derive(Default)]
struct Trainer {
    index: KeyMap<u32>,
    weights: Vec<[f32; N_TAGS]>,
    /// Sum of `step * delta` per weight; the average is `w - acc / steps`.
    acc: Vec<[f64; N_TAGS]>,
    counts: Vec<u32>,
    step: u64,
}

impl Trainer {
    fn scores(&self, feats: &[u32]) -> [f32; N_TAGS] {
        let mut s = [0f32; N_TAGS];
        for f in feats {
            if let Some(&r) = self.index.get(f) {
                for (a, b) in s.iter_mut().zip(&self.weights[r as usize]) {
                    *a += b;
                }
            }
        }
        s
    }

    fn row(&mut self, f: u32) -> usize {
        let next = self.weights.len() as u32;
        let r = *self.index.entry(f).or_insert(next) as usize;
        if r == self.weights.len() {
            self.weights.push([0.0; N_TAGS]);
            self.acc.push([0.0; N_TAGS]);
            self.counts.push(0);
        }
        r
    }

    fn update(&mut self, feats: &[u32], gold: u8, guess: u8) {
        self.step += 1;
        let t = self.step as f64;
        for &f in feats {
            let r = self.row(f);
            self.counts[r] = self.counts[r].saturating_add(1);
            if guess != gold {
                for (tag, d) in [(gold as usize, 1.0f32), (guess as usize, -1.0)] {
                    self.weights[r][tag] += d;
                    self.acc[r][tag] += t * f64::from(d);
                }
            }
        }
    }

    fn finish(self, opts: &TrainOptions) -> Weights {
        let steps = self.step.max(1) as f64;
        let mut out = Weights::default();
        for (&key, &r) in &self.index {
            let r = r as usize;
            // Counted once per pass; rare features are mostly noise and bloat the file.
            if self.counts[r] < opts.min_count.saturating_mul(opts.iterations as u32) {
                continue;
            }
            let mut row = [0f32; N_TAGS];
            for (t, w) in row.iter_mut().enumerate() {
                let avg = (f64::from(self.weights[r][t]) - self.acc[r][t] / steps) as f32;
                *w = if avg.abs() < opts.min_weight {
                    0.0
                } else {
                    avg
                };
            }
            if row.iter().any(|&w| w != 0.0) {
                out.index.insert(key, out.rows.len() as u32);
                out.rows.push(row);
            }
        }
        out
    }
}

/// Bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or("tagger weight file is truncated")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Vec<Vec<(String, Upos)>> {
        let s = |pairs: &[(&str, Upos)]| pairs.iter().map(|(w, t)| (w.to_string(), *t)).collect();
        use Upos::*;
        vec![
            s(&[("a", Det), ("dog", Noun), ("runs", Verb)]),
            s(&[("the", Det), ("red", Adj), ("cat", Noun), ("sleeps", Verb)]),
            s(&[("a", Det), ("cat", Noun), ("runs", Verb), ("fast", Adv)]),
        ]
    }

    #[test]
    fn learns_and_round_trips() {
        let opts = TrainOptions {
            min_count: 1,
            min_weight: 0.0,
            ..Default::default()
        };
        let tagger = Tagger::train(&toy(), &opts);
        let tags = tagger.tag(&["the", "dog", "sleeps"]);
        assert_eq!(tags, [Upos::Det, Upos::Noun, Upos::Verb]);
        let back = Tagger::from_bytes(&tagger.to_bytes()).unwrap();
        assert_eq!(back.tag(&["the", "dog", "sleeps"]), tags);
    }

    #[test]
    fn rejects_bad_bytes() {
        assert!(Tagger::from_bytes(b"").is_err());
        assert!(Tagger::from_bytes(b"LCPT\x01\x00\x00\x00\x11").is_err());
        let mut good = Tagger::train(&toy(), &TrainOptions::default()).to_bytes();
        assert!(Tagger::from_bytes(&good).is_ok());
        good.push(0);
        assert!(Tagger::from_bytes(&good).is_err());
    }

    #[test]
    fn odd_input() {
        let t = Tagger::builtin();
        assert!(t.tag(&[]).is_empty());
        assert_eq!(t.tag(&[" ", "\n"]), [Upos::Space, Upos::Space]);
        assert_eq!(t.tag(&["", "🙂", "ééé"]).len(), 3);
    }

    #[test]
    fn names_round_trip() {
        for u in ALL {
            assert_eq!(Upos::from_name(u.as_str()), Some(u));
        }
        assert_eq!(Upos::from_name("nope"), None);
    }
}
