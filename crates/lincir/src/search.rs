//! Composed image search over an [`Index`]: "this image, but ..." as one query vector, then the
//! exact top-k. Shared by `lincir search` and `lincir serve` (it is `Sync`: one loaded model
//! serves concurrent requests).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use crate::clip::preprocess::{self, Rgb8};
use crate::clip::{tokenizer::pad_batch, Clip, Grad};
use crate::index::{Index, Stamp};
use crate::mapper::Mapper;
use crate::method::Method;
use crate::phi::l2_normalize;
use crate::{Error, Result};

/// The reference image of a query.
pub enum Reference {
    /// An image of the index, by id.
    Indexed(usize),
    /// Any decoded image (an upload, a file outside the index).
    Pixels(Rgb8),
}

pub struct Query {
    pub reference: Option<Reference>,
    /// The modification ("is red and bigger"), or a full sentence containing `$` where the
    /// pseudo word goes (as in the original demo).
    pub text: Option<String>,
    pub k: usize,
    /// The method of a composed query, by name (`lincir`, `searle`, `pic2word`); the first
    /// loaded one when absent.
    pub method: Option<String>,
    /// Only images in this folder of the indexed one (subfolders included); None: all.
    pub folder: Option<String>,
    /// Only photos taken within these dates, both included at the precision written
    /// (`2023`, `2023-07`, `2023-07-14`, `2023-07-14T18:03`: [`crate::photo_date`]); photos
    /// without a date are then left out.
    pub taken_from: Option<String>,
    pub taken_to: Option<String>,
    /// Whether an indexed reference may be among the results. It is left out by default: "this
    /// photo, but ..." is not answered by the photo itself (the benchmarks' protocol, too).
    pub keep_reference: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// phi(reference) in the sentence: LinCIR.
    Composed,
    Image,
    Text,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub id: usize,
    pub path: String,
    pub score: f32,
    /// When the photo was taken, when its EXIF data says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub mode: Mode,
    /// The method of a composed query.
    pub method: Option<Method>,
    /// The sentence that was encoded (composed and text queries).
    pub sentence: Option<String>,
    pub hits: Vec<Hit>,
    /// How many images were ranked (those of the folder and dates asked for).
    pub ranked: usize,
    pub encode_ms: f64,
    pub rank_ms: f64,
    /// The normalised query vector that was ranked against the index.
    #[serde(skip)]
    pub query: Vec<f32>,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reload {
    pub images: usize,
    /// Ids in the new index that the old one did not have, and the reverse.
    pub added: usize,
    pub removed: usize,
}

impl Reload {
    fn between(old: &Index, new: &Index) -> Reload {
        let (mut old_ids, mut new_ids) = (old.ids().peekable(), new.ids().peekable());
        let (mut added, mut removed) = (0, 0);
        // Both ascending: one merge counts what each has alone.
        loop {
            match (old_ids.peek(), new_ids.peek()) {
                (Some(a), Some(b)) if a == b => {
                    old_ids.next();
                    new_ids.next();
                }
                (Some(a), Some(b)) if a < b => {
                    removed += 1;
                    old_ids.next();
                }
                (Some(_), Some(_)) | (None, Some(_)) => {
                    added += 1;
                    new_ids.next();
                }
                (Some(_), None) => {
                    removed += 1;
                    old_ids.next();
                }
                (None, None) => break,
            }
        }
        Reload { images: new.len(), added, removed }
    }
}

/// The images a query ranks: those of its folder (a range of positions) taken within its dates.
struct Scope {
    positions: std::ops::Range<usize>,
    /// The span of dates, normalised ([`crate::photo_date::parse_bound`]); None, None: any time.
    from: Option<String>,
    to: Option<String>,
    /// How many images that is.
    ranked: usize,
}

impl Scope {
    /// The scope of `q` in `index`, or the error that says why it holds no image.
    fn of(index: &Index, q: &Query) -> Result<Scope> {
        let folder = q.folder.as_deref().unwrap_or("").trim();
        let positions = index.folder_positions(folder);
        if positions.is_empty() {
            return Err(Error::Invalid(if folder.is_empty() { "the index is empty".into() } else { format!("no indexed image in the folder `{folder}`") }));
        }
        let bound = |b: &Option<String>| b.as_deref().filter(|t| !t.trim().is_empty()).map(crate::photo_date::parse_bound).transpose().map_err(Error::Invalid);
        let mut scope = Scope { positions, from: bound(&q.taken_from)?, to: bound(&q.taken_to)?, ranked: 0 };
        if !scope.dated() {
            scope.ranked = scope.positions.len();
            return Ok(scope);
        }
        if !index.meta.dates {
            return Err(Error::Invalid("this index was made before lincir recorded when photos were taken: run `lincir index` on it once more".into()));
        }
        scope.ranked = index.meta.entries[scope.positions.clone()].iter().filter(|e| scope.keeps(e)).count();
        if scope.ranked == 0 {
            let within = if folder.is_empty() { String::new() } else { format!(" in the folder `{folder}`") };
            return Err(Error::Invalid(format!(
                "no indexed photo was taken within {} to {}{within}",
                scope.from.as_deref().unwrap_or("the first"),
                scope.to.as_deref().unwrap_or("the last")
            )));
        }
        Ok(scope)
    }

    fn dated(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    /// Whether the entry is taken within the span (any entry, without one).
    fn keeps(&self, e: &crate::index::Entry) -> bool {
        !self.dated() || e.taken.as_deref().is_some_and(|t| crate::photo_date::within(t, self.from.as_deref(), self.to.as_deref()))
    }
}

/// A query's reference, ready for the tower: an indexed image, or pixels preprocessed.
enum Prepared {
    Indexed(usize),
    Pixels(Vec<f32>),
}

pub struct Searcher {
    pub clip: Clip,
    /// The pseudo-word networks loaded, one per method, the first being the default.
    pub methods: Vec<(Method, Mapper)>,
    /// The index searched: replaced whole by [`Searcher::reload_if_changed`], while each query
    /// keeps the one it started with.
    index: RwLock<Arc<Index>>,
    /// The `index.json` whose reload failed: not tried again until it changes.
    failed_reload: Mutex<Option<Stamp>>,
    /// A composed-query template replacing the template of the methods whose placeholder is `$`
    /// (LinCIR, SEARLE), with `{}` for the text; None: each method's own.
    pub template: Option<String>,
    /// On a GPU, one query's device work at a time: every thread computes on its own stream,
    /// but the streams share one cuBLAS handle (and its workspace), so a query holds this from
    /// its first GPU operation until its result is back on the host.
    device_turn: Mutex<()>,
}

impl Searcher {
    /// A searcher of `index`; query images are decoded as the index's were.
    pub fn new(mut clip: Clip, methods: Vec<(Method, Mapper)>, index: Index) -> Result<Self> {
        if clip.config.projection_dim != index.meta.dim {
            return Err(Error::Invalid(format!(
                "the index holds {}-d vectors of `{}`, the model gives {}-d ones",
                index.meta.dim, index.meta.model, clip.config.projection_dim
            )));
        }
        clip.preprocess.jpeg = index.meta.jpeg;
        Ok(Searcher { clip, methods, index: RwLock::new(Arc::new(index)), failed_reload: Mutex::new(None), template: None, device_turn: Mutex::new(()) })
    }

    /// The index as it is now (a later reload does not change the one returned).
    pub fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the index again when `lincir index` has rewritten it since it was read, and
    /// searches it from then on; queries already running finish on the one they started with.
    /// An index rebuilt with another model or JPEG decoding is refused (the loaded model would
    /// not match it), as is one that cannot be opened; the current one is kept, and the same
    /// `index.json` is not tried again.
    pub fn reload_if_changed(&self) -> Result<Option<Reload>> {
        let current = self.index();
        let Some(stamp) = Stamp::of(&current.dir) else {
            return Ok(None); // being replaced this instant, or gone: nothing to read yet
        };
        let mut failed = self.failed_reload.lock().unwrap_or_else(|e| e.into_inner());
        if Some(&stamp) == current.stamp() || Some(&stamp) == failed.as_ref() {
            return Ok(None);
        }
        let fresh = Index::open(&current.dir).and_then(|fresh| {
            let (old, new) = (&current.meta, &fresh.meta);
            if new.model_key != old.model_key || new.dim != old.dim {
                return Err(Error::file(current.dir.join(crate::index::META_FILE), format!("was rebuilt with model `{}`: restart with it", new.model)));
            }
            if new.jpeg != old.jpeg {
                return Err(Error::file(current.dir.join(crate::index::META_FILE), format!("was rebuilt decoding JPEGs `{}`: restart to search it", new.jpeg.name())));
            }
            Ok(fresh)
        });
        let fresh = match fresh {
            Ok(fresh) => fresh,
            Err(e) => {
                // The stamp read before opening: a rewrite since then is tried at the next call.
                *failed = Some(stamp);
                return Err(e);
            }
        };
        *failed = None;
        let report = Reload::between(&current, &fresh);
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(Some(report))
    }

    /// The names of the loaded methods.
    pub fn method_names(&self) -> Vec<&'static str> {
        self.methods.iter().map(|(m, _)| m.name()).collect()
    }

    /// The loaded method named `name` (the first one when None), or an error listing them.
    pub fn method(&self, name: Option<&str>) -> Result<&(Method, Mapper)> {
        if self.methods.is_empty() {
            return Err(Error::Invalid("a composed query needs a phi checkpoint".into()));
        }
        match name {
            None => Ok(&self.methods[0]),
            Some(n) => self.methods.iter().find(|(m, _)| m.name() == n).ok_or_else(|| {
                Error::Invalid(format!("unknown method `{n}`; this server has {}", self.method_names().join(", ")))
            }),
        }
    }

    /// The sentence of a composed query: a text holding the method's placeholder word is used as
    /// it is, anything else goes into the method's template.
    pub fn sentence(&self, method: Method, text: &str) -> String {
        let (word, _) = method.placeholder();
        if text.split_whitespace().any(|w| w == word) {
            return text.to_string();
        }
        match (&self.template, word) {
            (Some(t), "$") => t.replace("{}", text),
            _ => method.query(text),
        }
    }

    /// Token ids, refusing texts longer than CLIP's context instead of cutting them silently.
    fn tokens(&self, sentence: &str) -> Result<Tensor> {
        let body = self.clip.tokenizer.encode_plain(sentence)?;
        let room = self.clip.tokenizer.context_length() - 2;
        if body.len() > room {
            return Err(Error::Invalid(format!("the text is {} tokens long; CLIP reads at most {room}", body.len())));
        }
        pad_batch(&[self.clip.tokenizer.frame(&body)], &self.clip.device)
    }

    /// The un-normalised image embedding of the reference.
    ///
    /// # Shapes
    /// -> [1, P]
    fn reference_embedding(&self, index: &Index, r: Prepared) -> Result<Tensor> {
        Ok(match r {
            Prepared::Indexed(id) => {
                let e = index.embedding(id).ok_or_else(|| Error::Invalid(format!("no image with id {id} in the index")))?;
                Tensor::from_vec(e, (1, index.meta.dim), &self.clip.device)?
            }
            Prepared::Pixels(px) => {
                let px = preprocess::stack(vec![px], &self.clip.preprocess, &self.clip.device)?;
                self.clip.vision()?.embed(&px)?
            }
        })
    }

    pub fn search(&self, q: &Query) -> Result<Results> {
        let started = Instant::now();
        // One index for the whole query: a reload meanwhile does not mix two.
        let index = self.index();
        let scope = Scope::of(&index, q)?;
        let excluded = match &q.reference {
            Some(Reference::Indexed(id)) if !q.keep_reference => Some(*id),
            _ => None,
        };
        // Preprocessing is CPU work: done before taking the device's turn.
        let reference = q.reference.as_ref().map(|r| match r {
            Reference::Indexed(id) => Prepared::Indexed(*id),
            Reference::Pixels(img) => Prepared::Pixels(preprocess::pixels(img, &self.clip.preprocess)),
        });
        let turn = if self.clip.device.is_cpu() { None } else { Some(self.device_turn.lock().unwrap_or_else(|e| e.into_inner())) };
        let text = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let (mode, sentence, vector) = match (reference, text) {
            (None, None) => return Err(Error::Invalid("a query needs a reference image, a text, or both".into())),
            (Some(r), None) => (Mode::Image, None, self.reference_embedding(&index, r)?),
            (None, Some(t)) => (Mode::Text, Some(t.to_string()), self.clip.text()?.embed(&self.tokens(t)?)?),
            (Some(r), Some(t)) => {
                let (method, mapper) = self.method(q.method.as_deref())?;
                let s = self.sentence(*method, t);
                let ids = self.tokens(&s)?;
                let (word, id) = method.placeholder();
                if !ids.flatten_all()?.to_vec1::<u32>()?.contains(&id) {
                    return Err(Error::Invalid(format!("the sentence {s:?} has no `{word}` word for the image")));
                }
                let pseudo = mapper.forward(&self.reference_embedding(&index, r)?)?;
                let every = method.replaces_every_placeholder();
                (Mode::Composed, Some(s), self.clip.text()?.embed_with_pseudo_words_at(&ids, &pseudo, id, every, Grad::No)?)
            }
        };
        let method = (mode == Mode::Composed).then(|| self.method(q.method.as_deref()).map(|(m, _)| *m)).transpose()?;
        let query: Vec<f32> = l2_normalize(&vector)?.flatten_all()?.to_vec1()?;
        drop(turn);
        let encode_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        // One more when the reference is left out: it can take at most one place.
        let hits = index
            .top_k_where(&query, q.k.saturating_add(usize::from(excluded.is_some())), scope.positions.clone(), &|e| scope.keeps(e))
            .into_iter()
            .filter(|&(id, _)| Some(id) != excluded)
            .take(q.k)
            .filter_map(|(id, score)| index.entry(id).map(|e| Hit { id, path: e.path.clone(), score, taken: e.taken.clone() }))
            .collect();
        let rank_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(Results { mode, method, sentence, hits, ranked: scope.ranked, encode_ms, rank_ms, query })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Entry, IndexMeta};

    /// An index in `dir` whose entries have these ids (one-hot vectors).
    fn index_with_ids(dir: &std::path::Path, ids: &[usize]) -> Index {
        let dim = 8;
        let entries = ids.iter().enumerate().map(|(row, &id)| Entry { path: format!("{id:03}.png"), id, size: 0, mtime_ns: 0, row, norm: 1.0, taken: None, digest: None }).collect();
        let meta = IndexMeta { format: 2, model: "m".into(), model_key: "k".into(), dim, root: dir.into(), vectors_file: "vectors-0.f32".into(), codes_file: None, jpeg: Default::default(), rows: 0, next_id: 0, dates: true, entries };
        let vectors: Vec<f32> = (0..ids.len() * dim).map(|i| f32::from(i % (dim + 1) == 0)).collect();
        crate::index::write(dir, meta, &vectors, true).unwrap();
        Index::open(dir).unwrap()
    }

    #[test]
    fn a_reload_counts_the_ids_each_index_has_alone() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let old = index_with_ids(a.path(), &[0, 1, 2, 5, 9]);
        let new = index_with_ids(b.path(), &[1, 2, 6, 7, 9, 10]);
        assert_eq!(Reload::between(&old, &new), Reload { images: 6, added: 3, removed: 2 });
        assert_eq!(Reload::between(&new, &new), Reload { images: 6, added: 0, removed: 0 });
        assert_eq!(Reload::between(&new, &old), Reload { images: 5, added: 2, removed: 3 });
    }
}
