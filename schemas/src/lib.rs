//! The pipeline's data contract: the Avro schemas under `schemas/avro/`, the Rust types that
//! read and write them, and the topic names (see `schemas/README.md`). Pure: no I/O here; the
//! clients that move these values (Kafka, the schema registry) are in `pipeline-io`.
//!
//! # Layout
//! - [`raw`]: the raw event envelope the producer writes and the transformer reads.
//! - [`wire`]: the Confluent wire format (magic byte, schema id, datum) used on every topic.
//! - [`usage`]: the normalized usage-metadata records the transformer writes.
//! - [`topics`]: the topic names of the contract.
//! - [`time`]: RFC 3339 text to and from the contract's epoch milliseconds.

pub mod raw;
pub mod time;
pub mod topics;
pub mod usage;
pub mod wire;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The Avro library rejected the value or the bytes.
    #[error("avro: {0}")]
    Avro(#[from] apache_avro::Error),
    /// A decoded record lacks a field or has it with another type.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The field's name in the schema.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value is not in the Confluent wire format.
    #[error("wire format: {0}")]
    Wire(&'static str),
    /// Bytes left over after a complete datum: the value is not one datum of its schema.
    #[error("{0} bytes after the avro datum")]
    TrailingBytes(usize),
}

/// Fails with [`SchemaError::TrailingBytes`] unless a datum read consumed all of `rest`.
pub(crate) fn expect_end(rest: &[u8]) -> Result<(), SchemaError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::TrailingBytes(rest.len()))
    }
}
