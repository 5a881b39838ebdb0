//! The lake sink: the normalized topics (`usage.users.v1`, `usage.applications.v1`,
//! `usage.app_usage.v1`) as Delta Lake tables `users`, `applications` and `app_usage`, exactly
//! once without Kafka transactions, the way delta-io's kafka-delta-ingest does it.
//!
//! # Layout
//! - [`config`]: the typed, validated configuration (`[kafka]`, `[schema_registry]`, `[lake]`,
//!   `[operations]`).
//! - [`sink`]: the loop: a consumer group over the three topics, rows buffered per table,
//!   flushed by size and by time, each partition resumed from its table's `txn` version.
//! - [`table`]: one Delta table, its commits and their exactly-once check.
//! - [`columns`]: the tables' columns from the topics' Avro schemas.
//! - [`decode`]: Avro values decoded straight into a table's Arrow columns.
//! - [`maintain`]: small-file compaction and vacuum, safe while sinks run.
//! - [`storage`]: `s3://`, `gs://` and `az://` locations through `object_store`.
//! - [`metrics`]: `/metrics` and `/readyz`.

pub mod assign;
pub mod columns;
pub mod config;
pub mod decode;
pub mod maintain;
pub mod metrics;
pub mod sink;
pub mod storage;
pub mod table;

pub use sink::{SinkError, Summary, TABLES, run};
