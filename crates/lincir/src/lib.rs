//! lincir: LinCIR (language-only training of zero-shot composed image retrieval) in Rust.
//!
//! The data flow is the module layout: [`clip`] holds the frozen CLIP (tokenizer, image
//! preprocessing, both towers, weight loading), [`prompt`] the one place that knows the
//! pseudo-word conventions, [`embed`] batch embedding of texts and image files.

pub mod bench;
pub mod clip;
pub mod compact;
pub mod device;
pub mod embed;
pub mod error;
pub mod fnv;
pub mod guard;
pub mod index;
pub mod io;
pub mod linear;
pub mod mapper;
pub mod moved;
pub mod method;
pub mod phi;
pub mod photo_date;
pub mod pic2word;
pub mod searle;
pub mod prompt;
pub mod rng;
pub mod search;
pub mod smp;
pub mod torch_save;
pub(crate) mod train_state;

pub use error::{Error, Result};
