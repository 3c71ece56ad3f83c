//! Zero-shot evaluation: dataset readers (one file each), the official metrics, and the shared
//! machinery of composed queries and rankings.

pub mod cache;
pub mod circo;
pub mod cirr;
pub mod eval;
pub mod fashioniq;
pub mod genecis;
pub mod images;
pub mod metrics;
pub mod query;
