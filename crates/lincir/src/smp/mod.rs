//! Language-only training of phi: self-masking projection (SMP).
//!
//! The modules follow the steps of the objective: [`clean`] (step 1), keywords (step 2:
//! [`words`], [`tagger`], [`keywords`]), [`mask`] (step 3), [`sample`] (steps 1-4 for one caption,
//! tokenised), [`step`] (steps 5-6: noise, phi, the loss), then [`optim`] and [`schedule`] for the
//! update ([`loss_scale`] for an f16 tower), [`corpus`] for caption sources and [`train`] for the loop with checkpoints.

pub mod clean;
pub mod corpus;
pub mod keywords;
pub mod loss_scale;
pub mod mask;
pub mod optim;
pub mod sample;
pub mod schedule;
pub mod step;
pub mod tagger;
pub mod train;
pub mod words;

