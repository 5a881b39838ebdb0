//! The pipeline's data contract: the Avro schemas under `schemas/avro/` and the Rust types that
//! read and write them.
//!
//! # Layout
//! - [`raw`]: the raw event envelope the producer writes and the transformer reads.

pub mod raw;
