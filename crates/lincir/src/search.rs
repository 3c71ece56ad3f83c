//! Composed image search over an [`Index`]: "this image, but ..." as one query vector, then the
//! exact top-k. Shared by `lincir search` and `lincir serve` (it is `Sync`: one loaded model
//! serves concurrent requests).

use std::sync::Mutex;
use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use crate::clip::preprocess::{self, Rgb8};
use crate::clip::{tokenizer::pad_batch, Clip, Grad};
use crate::index::Index;
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub mode: Mode,
    /// The method of a composed query.
    pub method: Option<Method>,
    /// The sentence that was encoded (composed and text queries).
    pub sentence: Option<String>,
    pub hits: Vec<Hit>,
    pub encode_ms: f64,
    pub rank_ms: f64,
    /// The normalised query vector that was ranked against the index.
    #[serde(skip)]
    pub query: Vec<f32>,
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
    pub index: Index,
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
        Ok(Searcher { clip, methods, index, template: None, device_turn: Mutex::new(()) })
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
    fn reference_embedding(&self, r: Prepared) -> Result<Tensor> {
        Ok(match r {
            Prepared::Indexed(id) => {
                let e = self.index.embedding(id).ok_or_else(|| Error::Invalid(format!("no image with id {id} in the index")))?;
                Tensor::from_vec(e, (1, self.index.meta.dim), &self.clip.device)?
            }
            Prepared::Pixels(px) => {
                let px = preprocess::stack(vec![px], &self.clip.preprocess, &self.clip.device)?;
                self.clip.vision()?.embed(&px)?
            }
        })
    }

    pub fn search(&self, q: &Query) -> Result<Results> {
        let started = Instant::now();
        // Preprocessing is CPU work: done before taking the device's turn.
        let reference = q.reference.as_ref().map(|r| match r {
            Reference::Indexed(id) => Prepared::Indexed(*id),
            Reference::Pixels(img) => Prepared::Pixels(preprocess::pixels(img, &self.clip.preprocess)),
        });
        let turn = if self.clip.device.is_cpu() { None } else { Some(self.device_turn.lock().unwrap_or_else(|e| e.into_inner())) };
        let text = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let (mode, sentence, vector) = match (reference, text) {
            (None, None) => return Err(Error::Invalid("a query needs a reference image, a text, or both".into())),
            (Some(r), None) => (Mode::Image, None, self.reference_embedding(r)?),
            (None, Some(t)) => (Mode::Text, Some(t.to_string()), self.clip.text()?.embed(&self.tokens(t)?)?),
            (Some(r), Some(t)) => {
                let (method, mapper) = self.method(q.method.as_deref())?;
                let s = self.sentence(*method, t);
                let ids = self.tokens(&s)?;
                let (word, id) = method.placeholder();
                if !ids.flatten_all()?.to_vec1::<u32>()?.contains(&id) {
                    return Err(Error::Invalid(format!("the sentence {s:?} has no `{word}` word for the image")));
                }
                let pseudo = mapper.forward(&self.reference_embedding(r)?)?;
                let every = method.replaces_every_placeholder();
                (Mode::Composed, Some(s), self.clip.text()?.embed_with_pseudo_words_at(&ids, &pseudo, id, every, Grad::No)?)
            }
        };
        let method = (mode == Mode::Composed).then(|| self.method(q.method.as_deref()).map(|(m, _)| *m)).transpose()?;
        let query: Vec<f32> = l2_normalize(&vector)?.flatten_all()?.to_vec1()?;
        drop(turn);
        let encode_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        let hits = self
            .index
            .top_k(&query, q.k)
            .into_iter()
            .map(|(id, score)| Hit { id, path: self.index.meta.entries[id].path.clone(), score })
            .collect();
        let rank_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(Results { mode, method, sentence, hits, encode_ms, rank_ms, query })
    }
}
