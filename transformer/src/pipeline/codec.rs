//! The raw side of the wire: decoding a raw record (Confluent framing, writer schema from the
//! registry, Avro, key against the envelope's tenant) into a [`RawEvent`], or saying why it is
//! poison; dead letters, which carry a raw record verbatim (or cut to the record limit) to the
//! dead-letter topic; and [`stage_results`], which stages what one raw record produced for its
//! batch's transaction ([`Staged`]).

use std::ops::Range;

use pipeline_io::kafka::{KafkaCallError, TxnSession};
use pipeline_io::registry::{Registry, RegistryError};
use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders};
use schemas::raw::{RawEvent, sha256_hex};
use schemas::topics::{MAX_RECORD_BYTES, OutputTopics};
use schemas::{SchemaError, wire};

use super::PipelineError;
use super::outputs::{SchemaIds, kind_of, write_value};
use crate::processor::Output;

/// Decodes a raw record into `ev` (reusing its allocations: decoding one record after another
/// allocates nothing once warm): its value, and its key, which must be the envelope's
/// `tenant_id`. `None` when `ev` holds the event; else why the record is poison, as an error
/// kind (`wire`, `schema`, `avro` or `key`) and message, for its dead letter.
///
/// # Errors
/// Only transient registry errors.
pub async fn decode_raw(
    registry: &Registry,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    ev: &mut RawEvent,
) -> Result<Option<(&'static str, String)>, RegistryError> {
    let Some(value) = value else {
        return Ok(Some(("wire", "record has no value".into())));
    };
    let (id, datum) = match wire::decode(value) {
        Ok(x) => x,
        Err(e) => return Ok(Some(("wire", e.to_string()))),
    };
    let schema = match registry.schema_by_id(id).await {
        Ok(s) => s,
        Err(e) if e.is_poison() => return Ok(Some(("schema", e.to_string()))),
        Err(e) => return Err(e),
    };
    if let Err(e) = ev.read_avro_datum(&schema, datum) {
        return Ok(Some(("avro", e.to_string())));
    }
    // The key decides the partition, and so the order of a tenant's events: a record keyed
    // for another tenant may be out of order with that tenant's events.
    if key != Some(ev.tenant_id.as_bytes()) {
        return Ok(Some((
            "key",
            format!(
                "record key `{}` is not the envelope's tenant_id `{}`",
                key.map(String::from_utf8_lossy).unwrap_or_default(),
                ev.tenant_id
            ),
        )));
    }
    Ok(None)
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

/// What one batch's raw records produced, encoded and waiting for their transaction: the live
/// loop prepares the next batch while the previous one commits, and sends this once that
/// transaction is open ([`Staged::send`]). Memory is bounded by the batch's size: the loop
/// closes a batch at `batch_max_records` raw records or [`Staged::bytes`] of
/// [`super::live::BATCH_MAX_BYTES`].
#[derive(Debug, Default)]
pub struct Staged {
    /// The topics named by the records (a handful).
    topics: Vec<String>,
    records: Vec<StagedRecord>,
    /// The records' keys and values, one after another: one buffer for the batch instead of
    /// two allocations per record.
    buf: Vec<u8>,
    /// Key and value bytes of `records`.
    bytes: usize,
}

#[derive(Debug)]
struct StagedRecord {
    /// Index into [`Staged::topics`].
    topic: usize,
    partition: i32,
    /// The key's bytes in [`Staged::buf`].
    key: Range<usize>,
    /// The value's bytes in [`Staged::buf`]; `None` for a tombstone.
    value: Option<Range<usize>>,
    headers: Option<OwnedHeaders>,
}

impl StagedRecord {
    /// Key and value bytes (what [`Staged::bytes`] counts).
    fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Range::len)
    }
}

/// Capacity of [`Staged::buf`] kept between batches; a batch of larger records gives its buffer
/// back when sent, so that memory at rest stays low.
const STAGED_BUF_KEEP: usize = 4 << 20;

impl Staged {
    /// Stages a record for `partition` of `topic`.
    pub fn push(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) {
        let start = self.buf.len();
        self.buf.extend_from_slice(key);
        let key = start..self.buf.len();
        let value = value.map(|v| {
            let start = self.buf.len();
            self.buf.extend_from_slice(v);
            start..self.buf.len()
        });
        self.add(topic, partition, key, value, headers);
    }

    /// Stages `o` for `partition` of its topic, its key and value written straight into the
    /// batch's buffer. Returns the topic; `None` for [`Output::DeadLetter`] (nothing staged).
    ///
    /// # Errors
    /// Encoding errors (a bug).
    pub fn push_output<'t>(
        &mut self,
        o: &Output,
        (topics, ids): (&'t OutputTopics, SchemaIds),
        partition: i32,
    ) -> Result<Option<&'t str>, SchemaError> {
        let Some(kind) = kind_of(o) else {
            return Ok(None);
        };
        let start = self.buf.len();
        o.write_key(&mut self.buf);
        let key = start..self.buf.len();
        let value = match write_value(o, ids, &mut self.buf) {
            Ok(true) => Some(key.end..self.buf.len()),
            Ok(false) => None,
            Err(e) => {
                self.buf.truncate(start);
                return Err(e);
            }
        };
        let topic = kind.topic(topics);
        self.add(topic, partition, key, value, None);
        Ok(Some(topic))
    }

    fn add(
        &mut self,
        topic: &str,
        partition: i32,
        key: Range<usize>,
        value: Option<Range<usize>>,
        headers: Option<OwnedHeaders>,
    ) {
        let topic = match self.topics.iter().position(|t| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push(topic.to_owned());
                self.topics.len() - 1
            }
        };
        let record = StagedRecord {
            topic,
            partition,
            key,
            value,
            headers,
        };
        self.bytes += record.bytes();
        self.records.push(record);
    }

    /// Key and value bytes staged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records staged.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Drops the records bound for the partitions `drop` says (a revoked raw partition's
    /// outputs, which its new owner produces again). Their bytes stay in the buffer until the
    /// batch is sent.
    pub fn drop_partitions(&mut self, drop: impl Fn(i32) -> bool) {
        let bytes = &mut self.bytes;
        self.records.retain(|r| {
            let keep = !drop(r.partition);
            if !keep {
                *bytes -= r.bytes();
            }
            keep
        });
    }

    /// Sends every staged record in `session`'s open transaction, in the order staged.
    ///
    /// # Errors
    /// The first send's error.
    pub async fn send(&mut self, session: &mut TxnSession) -> Result<(), KafkaCallError> {
        let Self {
            topics,
            records,
            buf,
            ..
        } = self;
        let sent = async {
            for r in records.drain(..) {
                session
                    .send_to(
                        &topics[r.topic],
                        Some(r.partition),
                        &buf[r.key],
                        r.value.map(|v| &buf[v]),
                        r.headers,
                    )
                    .await?;
            }
            Ok(())
        }
        .await;
        self.clear();
        sent
    }

    /// Drops every staged record, keeping the buffer's capacity up to [`STAGED_BUF_KEEP`] for
    /// the next batch.
    pub fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
        if self.buf.capacity() > STAGED_BUF_KEEP {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }
}

/// Stages the raw record `m` (same key and value) for `dead_letter_topic`, with
/// [`dead_letter_headers`] saying why; truncated if it would not fit ([`DeadLetter::new`]).
/// Returns whether it was truncated.
pub fn stage_dead_letter(
    staged: &mut Staged,
    dead_letter_topic: &str,
    raw_topic: &str,
    m: &impl Message,
    (kind, error): (&str, &str),
) -> bool {
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
    staged.push(
        dead_letter_topic,
        m.partition(),
        letter.key,
        letter.value,
        Some(headers),
    );
    truncated
}

/// What [`stage_results`] staged, one call per record, for the caller's counters.
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

/// Stages what the raw record `m` of `raw_topic` produced: its dead letter if it failed
/// (`failure`: error kind and message), else each of `outputs` (drained), where an
/// [`Output::DeadLetter`] stages the raw record for the dead-letter topic. `sent` is told of
/// every record staged, and `recycle` is given each output once staged (see
/// [`crate::processor::Processor::recycle`]). Every record goes to the partition `m` was read
/// from: the output topics are co-partitioned with the raw topic (see `pipeline`'s module
/// docs).
///
/// # Errors
/// Encoding errors (a bug).
pub fn stage_results<M: Message>(
    staged: &mut Staged,
    (topics, ids): (&OutputTopics, SchemaIds),
    (raw_topic, m): (&str, &M),
    failure: Option<(&str, &str)>,
    outputs: &mut Vec<Output>,
    mut sent: impl FnMut(Sent<'_>),
    mut recycle: impl FnMut(Output),
) -> Result<(), PipelineError> {
    if let Some((kind, error)) = failure {
        outputs.clear();
        tracing::warn!(topic = %raw_topic, partition = m.partition(), offset = m.offset(), kind, %error, "raw event dead-lettered");
        let truncated = stage_dead_letter(staged, &topics.dead_letter, raw_topic, m, (kind, error));
        sent(Sent::DeadLetter { kind, truncated });
        return Ok(());
    }
    for o in outputs.drain(..) {
        if let Output::DeadLetter { kind, error } = &o {
            tracing::warn!(topic = %raw_topic, partition = m.partition(), offset = m.offset(), kind, %error, "raw event dead-lettered");
            let truncated =
                stage_dead_letter(staged, &topics.dead_letter, raw_topic, m, (kind, error));
            sent(Sent::DeadLetter { kind, truncated });
            continue;
        }
        if let Some(topic) = staged.push_output(&o, (topics, ids), m.partition())? {
            sent(Sent::Output(topic));
        }
        recycle(o);
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
    fn staged_bytes_follow_the_records_kept() {
        let mut staged = Staged::default();
        staged.push("users", 0, b"k1", Some(&[0; 100]), None);
        staged.push("users", 1, b"k22", None, None);
        staged.push("state", 0, b"k333", Some(&[0; 10]), None);
        assert_eq!((staged.len(), staged.bytes()), (3, 2 + 100 + 3 + 4 + 10));
        // A revoked partition's outputs no longer count.
        staged.drop_partitions(|p| p == 0);
        assert_eq!((staged.len(), staged.bytes()), (1, 3));
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
