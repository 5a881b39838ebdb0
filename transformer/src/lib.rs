//! Raw events to usage metadata: normalizes the raw topic into schema-registered records.
//!
//! # Layout
//! - [`normalize`]: pure functions from PingOne JSON to record fields (table-tested).
//! - [`processor`]: the state machine from raw events to output records (syncs, deletes, usage).

pub mod normalize;
pub mod processor;
