//! Typed errors. Every variant that concerns a file names it, and tensor errors name the tensor,
//! so a user reading one line knows what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem with one file (missing, unreadable, malformed).
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },

    /// A problem with one tensor of a weight file (missing, wrong shape, unreadable).
    #[error("{}: tensor `{name}`: {msg}", path.display())]
    Tensor { path: PathBuf, name: String, msg: String },

    /// A model that could not be found locally nor fetched from the hub.
    #[error("model `{model}`: {msg}")]
    Model { model: String, msg: String },

    /// A hub dataset that could not be found locally nor fetched.
    #[error("dataset `{dataset}`: {msg}")]
    Dataset { dataset: String, msg: String },

    /// Invalid input that is not tied to a file (an empty batch, a bad argument).
    #[error("{0}")]
    Invalid(String),

    /// A tensor-library error on a path where no file is involved.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), msg: msg.to_string() }
    }

    pub fn tensor(path: impl Into<PathBuf>, name: &str, msg: impl std::fmt::Display) -> Self {
        Error::Tensor { path: path.into(), name: name.to_string(), msg: msg.to_string() }
    }
}
