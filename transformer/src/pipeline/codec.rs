//! The raw side of the wire: decoding a raw topic value (Confluent framing, writer schema from
//! the registry, Avro) into a [`RawEvent`], or saying why it is poison; and the headers of a
//! dead letter, which carries a poison raw record verbatim to the dead-letter topic.

use pipeline_io::kafka::{KafkaCallError, TxnSession};
use pipeline_io::registry::{Registry, RegistryError};
use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use schemas::raw::RawEvent;
use schemas::wire;

/// A raw value decoded, or why it is poison.
#[derive(Debug)]
pub enum Decoded {
    /// A raw event.
    Event(Box<RawEvent>),
    /// Cannot be decoded: dead-letter it.
    Poison {
        /// `wire`, `schema` or `avro`.
        kind: &'static str,
        /// The error.
        error: String,
    },
}

/// Decodes a raw topic value.
///
/// # Errors
/// Only transient registry errors; poison is [`Decoded::Poison`].
pub async fn decode_raw(
    registry: &Registry,
    value: Option<&[u8]>,
) -> Result<Decoded, RegistryError> {
    let poison = |kind, error: String| Ok(Decoded::Poison { kind, error });
    let Some(value) = value else {
        return poison("wire", "record has no value".into());
    };
    let (id, datum) = match wire::decode(value) {
        Ok(x) => x,
        Err(e) => return poison("wire", e.to_string()),
    };
    let schema = match registry.schema_by_id(id).await {
        Ok(s) => s,
        Err(e) if e.is_poison() => return poison("schema", e.to_string()),
        Err(e) => return Err(e),
    };
    match RawEvent::from_avro_datum(&schema, datum) {
        Ok(ev) => Ok(Decoded::Event(Box::new(ev))),
        Err(e) => poison("avro", e.to_string()),
    }
}

/// Headers of a dead letter: `error`, `error_kind`, `source_topic`, `source_partition`,
/// `source_offset`.
pub fn dead_letter_headers(
    kind: &str,
    error: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    let partition = partition.to_string();
    let offset = offset.to_string();
    [
        ("error", error),
        ("error_kind", kind),
        ("source_topic", topic),
        ("source_partition", partition.as_str()),
        ("source_offset", offset.as_str()),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// Sends the raw record `m` verbatim (same key and value) to `dead_letter_topic` in the open
/// transaction, with [`dead_letter_headers`] saying why.
///
/// # Errors
/// The send's error.
pub async fn send_dead_letter(
    session: &mut TxnSession,
    dead_letter_topic: &str,
    raw_topic: &str,
    m: &OwnedMessage,
    (kind, error): (&str, &str),
) -> Result<(), KafkaCallError> {
    let headers = dead_letter_headers(kind, error, raw_topic, m.partition(), m.offset());
    session
        .send(
            dead_letter_topic,
            m.key().unwrap_or_default(),
            m.payload(),
            Some(headers),
        )
        .await
}
