//! Raw events to usage metadata: normalizes the raw topic into schema-registered records,
//! exactly once, with tombstones for deletes, dead letters for poison input, replay and a
//! license-optimization report. See `transformer/README.md`.
//!
//! # Layout
//! - [`config`]: typed, validated configuration.
//! - [`normalize`]: pure functions from PingOne JSON to record fields (table-tested).
//! - [`processor`]: the state machine from raw events to output records (syncs, deletes, usage).
//! - [`pipeline`]: the transactional consume-transform-produce loop and its start-up restore;
//!   [`pipeline::run`] is the entry point `main.rs` and the tests call.
//! - [`replay`]: re-normalizes past raw events into the outputs or topics with another prefix.
//! - [`report`]: the `license-report` consumer.
//! - [`registry`], [`kafka`], [`metrics`]: schema registry client, Kafka plumbing, operations.

pub mod config;
pub mod kafka;
pub mod metrics;
pub mod normalize;
pub mod pipeline;
pub mod processor;
pub mod replay;
pub mod report;

pub use config::Config;
pub use pipeline::run;
/// The schema registry client (shared with the producer, in `schemas`).
pub use schemas::registry;
