//! Zero-shot evaluation: dataset readers (one file each), the official metrics, and the shared
//! machinery of composed queries and rankings.

pub mod cirr;
pub mod metrics;
pub mod query;
