//! The producer's use of Kafka and the schema registry: registering the raw event schema,
//! creating its topics, encoding raw events, the transactional writer, and reading checkpoints
//! back. The client plumbing itself is `pipeline_io::kafka`; the writer shared by the tenants
//! of one partition is [`crate::writer`].
//!
//! A stream's raw events and its checkpoint go into one transaction; checkpoints are read back
//! with `read_committed` when a writer opens.
//!
//! A raw event whose record (key, Confluent-framed value, headers) would exceed
//! `schemas::topics::MAX_RECORD_BYTES` is replaced by a small `oversized` marker carrying the
//! original's kind, id, size and SHA-256, so that one huge PingOne object cannot stop a sync.

use std::collections::HashMap;

use pipeline_io::config::RegistrySettings;
use pipeline_io::kafka::reader::latest_by_key;
use pipeline_io::kafka::{KafkaCallError, TopicSpec, TxnSession, TxnSettings};
use pipeline_io::registry::RegistryError;
use rdkafka::message::{Header, OwnedHeaders};
use schemas::raw::{Oversized, RAW_EVENT_SCHEMA, RawEvent, kind};
use schemas::topics::MAX_RECORD_BYTES;

use crate::config::{KafkaConfig, TenantSource};

/// Why writing to Kafka, or setting it up, failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A Kafka call failed.
    #[error(transparent)]
    Kafka(#[from] KafkaCallError),
    /// The schema registry refused or failed.
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    /// A raw event could not be encoded (a bug, not bad input).
    #[error("encoding a raw event: {0}")]
    Encode(#[from] schemas::SchemaError),
    /// The writer of the tenant's partition stopped (fenced by another instance, or the
    /// partition was given up); the tenant resumes from its checkpoint once it runs again.
    #[error("the writer of tenant partition {slot} stopped")]
    WriterStopped {
        /// The partition (slot).
        slot: i32,
    },
}

/// Registers the raw event schema under `<raw_topic>-value` (compatibility
/// `BACKWARD_TRANSITIVE`) and returns its id.
///
/// # Errors
/// [`SinkError::Registry`] when the registry cannot be reached or refuses the schema.
pub async fn register_raw_schema(
    registry: &RegistrySettings,
    raw_topic: &str,
) -> Result<u32, SinkError> {
    let client = registry.client()?;
    Ok(client
        .register(&format!("{raw_topic}-value"), RAW_EVENT_SCHEMA)
        .await?)
}

/// Creates the raw topic and the compacted checkpoint topic if they are missing, and the
/// compacted tenants topic with `tenant_source = "topic"`.
///
/// # Errors
/// [`SinkError::Kafka`] when the admin client fails (an existing topic is fine).
pub async fn ensure_topics(kafka: &KafkaConfig) -> Result<(), SinkError> {
    let mut specs = vec![];
    if kafka.tenant_source == TenantSource::Topic {
        specs.push(tenants_topic_spec(kafka));
    }
    let raw = TopicSpec::new(
        &kafka.raw_topic,
        kafka.topic_partitions,
        kafka.topic_replication_factor,
    )
    .with("compression.type", "producer");
    let checkpoints = TopicSpec::new(&kafka.checkpoint_topic, 1, kafka.topic_replication_factor)
        .compacted()
        .with("min.compaction.lag.ms", "60000");
    specs.extend([raw, checkpoints]);
    pipeline_io::kafka::ensure_topics(&kafka.client, &specs).await?;
    Ok(())
}

/// The tenants topic: compacted, `tenant_partitions` partitions.
pub fn tenants_topic_spec(kafka: &KafkaConfig) -> TopicSpec {
    TopicSpec::new(
        &kafka.tenants_topic,
        kafka.tenant_partitions,
        kafka.topic_replication_factor,
    )
    .compacted()
}

/// The latest committed value of `key` on the checkpoint topic (`read_committed`, to the end
/// of the topic as it is when reading starts); `None` when there is none or it was deleted.
///
/// # Errors
/// As [`read_checkpoints`].
pub async fn read_checkpoint(kafka: &KafkaConfig, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
    Ok(read_checkpoints(kafka, |k| k == key).await?.remove(key))
}

/// The latest committed checkpoints whose key `wanted` accepts, by key.
///
/// Every writer puts its checkpoints on the same topic, each in its own transactions, so first
/// it waits until the transactions open now have ended ([`pipeline_io::kafka::wait_settled`],
/// at most the transaction timeout and 30 s: the broker aborts an expired transaction within
/// its cleanup interval, 10 s by default): a read can otherwise end at the last stable offset,
/// before a stream's latest checkpoint, when another writer has a transaction open on the
/// partition; the stream would then resume from an older checkpoint and write its pages twice
/// (seen in the fault soak, and in `tests/kafka_checkpoints.rs`).
///
/// # Errors
/// [`SinkError::Kafka`] when the topic cannot be read to its end, or stays held back.
pub async fn read_checkpoints(
    kafka: &KafkaConfig,
    wanted: impl Fn(&str) -> bool,
) -> Result<HashMap<String, Vec<u8>>, SinkError> {
    pipeline_io::kafka::wait_settled(
        &kafka.client,
        &kafka.checkpoint_topic,
        kafka.transaction_timeout + std::time::Duration::from_secs(30),
    )
    .await?;
    let group = format!("{}.checkpoint-reader", kafka.transactional_id_prefix);
    let found = latest_by_key(&kafka.client, &group, &kafka.checkpoint_topic, |k| {
        std::str::from_utf8(k).is_ok_and(&wanted)
    })
    .await?;
    Ok(found
        .into_iter()
        .filter_map(|(k, v)| Some((String::from_utf8(k).ok()?, v)))
        .collect())
}

/// A raw event encoded for the raw topic: key and `tenant_id` header = tenant id, `kind`
/// header, Confluent-framed Avro value. Encoded by the stream, so that the shared writer only
/// enqueues bytes.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    tenant_id: String,
    kind: String,
    value: Vec<u8>,
}

impl EncodedEvent {
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.value.len() + self.tenant_id.len() + self.kind.len()
    }

    /// Whether it holds nothing (never: a value has at least the Confluent header).
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// Encodes `event` with the raw schema `schema_id`, or its `oversized` marker when its record
/// would exceed `MAX_RECORD_BYTES`.
///
/// # Errors
/// [`SinkError::Encode`] (a bug, not bad input).
pub fn encode_event(schema_id: u32, event: &RawEvent) -> Result<(EncodedEvent, Sent), SinkError> {
    let encode = |e: &RawEvent| -> Result<EncodedEvent, SinkError> {
        let datum = e.to_avro_datum()?;
        Ok(EncodedEvent {
            tenant_id: e.tenant_id.clone(),
            kind: e.kind.clone(),
            value: schemas::wire::encode(schema_id, &datum),
        })
    };
    let encoded = encode(event)?;
    if record_bytes(event, &encoded.value) > MAX_RECORD_BYTES {
        let (marker, info) = oversized_marker(event);
        return Ok((encode(&marker)?, Sent::Oversized(info)));
    }
    Ok((encoded, Sent::Event))
}

/// What [`encode_event`] encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The event itself.
    Event,
    /// An `oversized` marker in its place.
    Oversized(Oversized),
}

/// The bytes of a raw record as the broker counts them against its limit.
fn record_bytes(event: &RawEvent, value: &[u8]) -> usize {
    event.tenant_id.len()
        + value.len()
        + "kind".len()
        + event.kind.len()
        + "tenant_id".len()
        + event.tenant_id.len()
}

/// The `oversized` marker standing in for `event`: same tenant, environment, region, entity id
/// and sync id; payload [`Oversized`] (size and SHA-256, lowercase hex, of the PingOne JSON).
pub fn oversized_marker(event: &RawEvent) -> (RawEvent, Oversized) {
    let sha256 = schemas::raw::sha256_hex(event.payload.as_bytes());
    let info = Oversized {
        kind: event.kind.clone(),
        entity_id: event.entity_id.clone().unwrap_or_default(),
        size: event.payload.len() as u64,
        sha256,
        limit: MAX_RECORD_BYTES as u64,
    };
    let payload = serde_json::to_string(&info).unwrap_or_default();
    let marker = RawEvent {
        kind: kind::OVERSIZED.into(),
        payload,
        ..event.clone()
    };
    (marker, info)
}

/// A transactional writer of raw events and checkpoints.
#[derive(Debug)]
pub struct TxnWriter {
    session: TxnSession,
    raw_topic: String,
    checkpoint_topic: String,
}

impl TxnWriter {
    /// Opens the stream's transactional session, which fences an older instance with the same
    /// transactional id and settles the transaction it left open.
    ///
    /// # Errors
    /// [`SinkError::Kafka`] when the broker cannot be reached or refuses.
    pub async fn new(kafka: &KafkaConfig, transactional_id: String) -> Result<Self, SinkError> {
        let settings = TxnSettings {
            transactional_id,
            transaction_timeout: kafka.transaction_timeout,
            message_timeout: kafka.message_timeout,
            compression_type: kafka.compression_type.clone(),
            linger: std::time::Duration::from_millis(5),
        };
        Ok(Self {
            session: TxnSession::open(&kafka.client, &settings).await?,
            raw_topic: kafka.raw_topic.clone(),
            checkpoint_topic: kafka.checkpoint_topic.clone(),
        })
    }

    /// The transactional id.
    pub fn transactional_id(&self) -> &str {
        self.session.transactional_id()
    }

    /// Begins a transaction, first finishing an abort that had timed out.
    ///
    /// # Errors
    /// [`SinkError::Kafka`].
    pub async fn begin(&mut self) -> Result<(), SinkError> {
        Ok(self.session.begin().await?)
    }

    /// Adds an encoded raw event ([`encode_event`]) to the open transaction (key = tenant id,
    /// headers `kind`, `tenant_id`).
    ///
    /// # Errors
    /// [`SinkError::Kafka`] when enqueueing fails.
    pub async fn send_encoded(&mut self, event: &EncodedEvent) -> Result<(), SinkError> {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "kind",
                value: Some(event.kind.as_str()),
            })
            .insert(Header {
                key: "tenant_id",
                value: Some(event.tenant_id.as_str()),
            });
        self.session
            .send(
                &self.raw_topic,
                event.tenant_id.as_bytes(),
                Some(&event.value),
                Some(headers),
            )
            .await?;
        Ok(())
    }

    /// Adds the stream's checkpoint to the open transaction.
    ///
    /// # Errors
    /// [`SinkError`] when enqueueing fails.
    pub async fn send_checkpoint(&mut self, key: &str, value: &[u8]) -> Result<(), SinkError> {
        self.session
            .send(&self.checkpoint_topic, key.as_bytes(), Some(value), None)
            .await?;
        Ok(())
    }

    /// Waits for every delivery, then commits; on failure the transaction is aborted and
    /// nothing of it becomes visible.
    ///
    /// # Errors
    /// [`SinkError::Kafka`].
    pub async fn commit(&mut self) -> Result<(), SinkError> {
        Ok(self.session.commit().await?)
    }

    /// Aborts the open transaction, if any (best effort).
    pub async fn abort(&mut self) {
        self.session.abort().await;
    }
}
