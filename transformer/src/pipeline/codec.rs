//! The raw side of the wire: decoding a raw record (Confluent framing, writer schema from the
//! registry, Avro, key against the envelope's tenant) into a [`RawEvent`], or saying why it is
//! poison; dead letters, which carry a raw record verbatim (or cut to the record limit) to the
//! dead-letter topic; and [`send_results`], which writes what one raw record produced.

use pipeline_io::kafka::{KafkaCallError, TxnSession};
use pipeline_io::registry::{Registry, RegistryError};
use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use schemas::raw::{RawEvent, sha256_hex};
use schemas::topics::{MAX_RECORD_BYTES, OutputTopics};
use schemas::wire;

use super::PipelineError;
use super::outputs::{SchemaIds, encode};
use crate::processor::Output;

/// A raw value decoded, or why it is poison.
#[derive(Debug)]
pub enum Decoded {
    /// A raw event.
    Event(Box<RawEvent>),
    /// Cannot be decoded: dead-letter it.
    Poison {
        /// `wire`, `schema`, `avro` or `key`.
        kind: &'static str,
        /// The error.
        error: String,
    },
}

/// Decodes a raw record: its value, and its key, which must be the envelope's `tenant_id`.
///
/// # Errors
/// Only transient registry errors; poison is [`Decoded::Poison`].
pub async fn decode_raw(
    registry: &Registry,
    key: Option<&[u8]>,
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
    let ev = match RawEvent::from_avro_datum(&schema, datum) {
        Ok(ev) => ev,
        Err(e) => return poison("avro", e.to_string()),
    };
    // The key decides the partition, and so the order of a tenant's events: a record keyed
    // for another tenant may be out of order with that tenant's events.
    if key != Some(ev.tenant_id.as_bytes()) {
        return poison(
            "key",
            format!(
                "record key `{}` is not the envelope's tenant_id `{}`",
                key.map(String::from_utf8_lossy).unwrap_or_default(),
                ev.tenant_id
            ),
        );
    }
    Ok(Decoded::Event(Box::new(ev)))
}

/// Longest `error` header of a dead letter, in bytes (cut at a character boundary).
const MAX_ERROR_HEADER: usize = 4096;

/// Longest key of a truncated dead letter, in bytes.
const MAX_TRUNCATED_KEY: usize = 4096;

/// Headers of a dead letter: `error`, `error_kind`, `source_topic`, `source_partition`,
/// `source_offset`.
pub fn dead_letter_headers(
    kind: &str,
    error: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Vec<(&'static str, String)> {
    vec![
        ("error", cut(error.as_bytes(), MAX_ERROR_HEADER).to_owned()),
        ("error_kind", kind.to_owned()),
        ("source_topic", topic.to_owned()),
        ("source_partition", partition.to_string()),
        ("source_offset", offset.to_string()),
    ]
}

/// The longest prefix of `bytes` of at most `max` bytes that is valid UTF-8 (lossy if `bytes`
/// is not UTF-8 at all).
fn cut(bytes: &[u8], max: usize) -> &str {
    let mut end = bytes.len().min(max);
    loop {
        match std::str::from_utf8(&bytes[..end]) {
            Ok(s) => return s,
            Err(e) if e.error_len().is_none() || e.valid_up_to() > 0 => end = e.valid_up_to(),
            Err(_) => return "",
        }
    }
}

/// A dead letter as written: key, value and headers within [`MAX_RECORD_BYTES`].
#[derive(Debug, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    /// The raw key (cut to 4 KiB if the record had to be truncated).
    pub key: &'a [u8],
    /// The raw value, or as much of its start as fits.
    pub value: Option<&'a [u8]>,
    /// [`dead_letter_headers`], plus `original_size`, `original_sha256` and `truncated` (the
    /// reason) when the record had to be truncated.
    pub headers: Vec<(&'static str, String)>,
}

impl<'a> DeadLetter<'a> {
    /// The dead letter of a raw record (`key`, `value`) with `headers`: verbatim when it fits in
    /// [`MAX_RECORD_BYTES`], else truncated, with headers saying so.
    pub fn new(
        key: &'a [u8],
        value: Option<&'a [u8]>,
        mut headers: Vec<(&'static str, String)>,
    ) -> Self {
        let header_bytes =
            |h: &[(&str, String)]| h.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let size = key.len() + value.map_or(0, <[u8]>::len) + header_bytes(&headers);
        if size <= MAX_RECORD_BYTES {
            return Self {
                key,
                value,
                headers,
            };
        }
        let original = value.unwrap_or_default();
        let original_size = original.len() + key.len();
        let key = &key[..key.len().min(MAX_TRUNCATED_KEY)];
        headers.extend([
            ("original_size", original_size.to_string()),
            ("original_sha256", sha256_hex(original)),
            (
                "truncated",
                format!(
                    "the dead letter of {size} bytes is over the record limit of \
                     {MAX_RECORD_BYTES} bytes: its value is cut"
                ),
            ),
        ]);
        let room = MAX_RECORD_BYTES.saturating_sub(key.len() + header_bytes(&headers));
        Self {
            key,
            value: value.map(|v| &v[..v.len().min(room)]),
            headers,
        }
    }

    /// Whether the value had to be cut.
    pub fn truncated(&self) -> bool {
        self.headers.iter().any(|(k, _)| *k == "truncated")
    }
}

/// Sends the raw record `m` (same key and value) to `dead_letter_topic` in the open
/// transaction, with [`dead_letter_headers`] saying why; truncated if it would not fit
/// ([`DeadLetter::new`]). Returns whether it was truncated.
///
/// # Errors
/// The send's error.
pub async fn send_dead_letter(
    session: &mut TxnSession,
    dead_letter_topic: &str,
    raw_topic: &str,
    m: &OwnedMessage,
    (kind, error): (&str, &str),
) -> Result<bool, KafkaCallError> {
    let headers = dead_letter_headers(kind, error, raw_topic, m.partition(), m.offset());
    let letter = DeadLetter::new(m.key().unwrap_or_default(), m.payload(), headers);
    let truncated = letter.truncated();
    if truncated {
        tracing::warn!(topic = %raw_topic, partition = m.partition(), offset = m.offset(), size = m.payload().map_or(0, <[u8]>::len), "dead letter truncated to the record limit");
    }
    let headers = letter
        .headers
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_str()),
            })
        });
    session
        .send_to(
            dead_letter_topic,
            Some(m.partition()),
            letter.key,
            letter.value,
            Some(headers),
        )
        .await?;
    Ok(truncated)
}

/// What [`send_results`] wrote, one call per record, for the caller's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent<'a> {
    /// A record (or tombstone) on this output topic.
    Output(&'a str),
    /// The raw record to the dead-letter topic, with this `error_kind`; `truncated` if cut.
    DeadLetter {
        /// Its `error_kind`.
        kind: &'a str,
        /// Whether it had to be cut to the record limit.
        truncated: bool,
    },
}

/// Writes what one raw record `m` produced in the open transaction: its dead letter if it
/// failed (`failure`: error kind and message), else each of `outputs` (drained), where an
/// [`Output::DeadLetter`] sends the raw record to the dead-letter topic. `sent` is told of
/// every record written. Every record goes to the partition `m` was read from: the output
/// topics are co-partitioned with the raw topic (see `pipeline`'s module docs).
///
/// # Errors
/// Kafka send errors, and encoding errors (a bug).
pub async fn send_results(
    session: &mut TxnSession,
    (topics, ids): (&OutputTopics, SchemaIds),
    raw_topic: &str,
    m: &OwnedMessage,
    failure: Option<(&str, &str)>,
    outputs: &mut Vec<Output>,
    mut sent: impl FnMut(Sent<'_>),
) -> Result<(), PipelineError> {
    if let Some((kind, error)) = failure {
        outputs.clear();
        tracing::warn!(topic = %raw_topic, partition = m.partition(), offset = m.offset(), kind, %error, "raw event dead-lettered");
        let truncated =
            send_dead_letter(session, &topics.dead_letter, raw_topic, m, (kind, error)).await?;
        sent(Sent::DeadLetter { kind, truncated });
        return Ok(());
    }
    for o in outputs.drain(..) {
        if let Output::DeadLetter { kind, error } = &o {
            tracing::warn!(topic = %raw_topic, partition = m.partition(), offset = m.offset(), kind, %error, "raw event dead-lettered");
            let truncated =
                send_dead_letter(session, &topics.dead_letter, raw_topic, m, (kind, error)).await?;
            sent(Sent::DeadLetter { kind, truncated });
            continue;
        }
        let Some(e) = encode(&o, topics, ids)? else {
            continue;
        };
        session
            .send_to(
                e.topic,
                Some(m.partition()),
                e.key.as_bytes(),
                e.value.as_deref(),
                None,
            )
            .await?;
        sent(Sent::Output(e.topic));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<(&'static str, String)> {
        dead_letter_headers("normalize", "bad", "raw", 0, 7)
    }

    #[test]
    fn a_dead_letter_that_fits_is_verbatim() {
        let value = vec![1_u8; 1000];
        let d = DeadLetter::new(b"acme", Some(&value), headers());
        assert_eq!(d.value, Some(value.as_slice()));
        assert!(!d.truncated());
    }

    /// A raw record close to the limit (the reproduced 999,950 bytes, and the largest one the
    /// producer may write) still makes a dead letter within the record limit, with its size
    /// and hash.
    #[test]
    fn a_dead_letter_over_the_limit_is_cut_with_size_and_hash() {
        for len in [999_950, MAX_RECORD_BYTES, 3 * MAX_RECORD_BYTES] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let d = DeadLetter::new(b"acme", Some(&value), headers());
            let total = d.key.len()
                + d.value.map_or(0, <[u8]>::len)
                + d.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            assert!(total <= MAX_RECORD_BYTES, "{len}: {total}");
            let get = |name: &str| {
                d.headers
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            };
            if len + 4 + 60 <= MAX_RECORD_BYTES {
                continue;
            }
            assert!(d.truncated(), "{len}");
            assert_eq!(get("original_size"), Some((len + 4).to_string()));
            assert_eq!(get("original_sha256"), Some(sha256_hex(&value)));
            assert!(value.starts_with(d.value.unwrap()));
            assert!(d.value.unwrap().len() > MAX_RECORD_BYTES - 8192);
        }
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        let error = "é".repeat(5000);
        let h = dead_letter_headers("normalize", &error, "raw", 0, 1);
        assert_eq!(h[0].1.len(), MAX_ERROR_HEADER);
        assert_eq!(cut("aé".as_bytes(), 2), "a");
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
