//! The producer's use of Kafka and the schema registry: registering the raw event schema,
//! creating its two topics, the transactional writer of one tenant stream, and reading a
//! stream's checkpoint back. The client plumbing itself is `pipeline_io::kafka`.
//!
//! Each tenant stream (snapshot, activity) has its own transactional id
//! (`<prefix>.<tenant>.<stream>`), so a restarted producer fences the previous instance and
//! `init_transactions` settles whatever it left open. A stream's raw events and its checkpoint
//! go into one transaction; checkpoints are read back with `read_committed` at start.
//!
//! A raw event whose record (key, Confluent-framed value, headers) would exceed
//! `schemas::topics::MAX_RECORD_BYTES` is replaced by a small `oversized` marker carrying the
//! original's kind, id, size and SHA-256, so that one huge PingOne object cannot stop a sync.

use pipeline_io::config::RegistrySettings;
use pipeline_io::kafka::reader::latest_by_key;
use pipeline_io::kafka::{KafkaCallError, TopicSpec, TxnSession, TxnSettings};
use pipeline_io::registry::RegistryError;
use rdkafka::message::{Header, OwnedHeaders};
use schemas::raw::{Oversized, RAW_EVENT_SCHEMA, RawEvent, kind};
use schemas::topics::MAX_RECORD_BYTES;

use crate::config::KafkaConfig;

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

/// Creates the raw topic and the compacted checkpoint topic if they are missing.
///
/// # Errors
/// [`SinkError::Kafka`] when the admin client fails (an existing topic is fine).
pub async fn ensure_topics(kafka: &KafkaConfig) -> Result<(), SinkError> {
    let raw = TopicSpec::new(
        &kafka.raw_topic,
        kafka.topic_partitions,
        kafka.topic_replication_factor,
    )
    .with("compression.type", "producer");
    let checkpoints = TopicSpec::new(&kafka.checkpoint_topic, 1, kafka.topic_replication_factor)
        .compacted()
        .with("min.compaction.lag.ms", "60000");
    pipeline_io::kafka::ensure_topics(&kafka.client, &[raw, checkpoints]).await?;
    Ok(())
}

/// The latest committed value of `key` on the checkpoint topic (`read_committed`, to the end
/// of the topic as it is when reading starts); `None` when there is none or it was deleted.
///
/// Every stream and tenant writes its checkpoints to the same topic, each in its own
/// transactions, so first it waits until the transactions open now have ended
/// ([`pipeline_io::kafka::wait_settled`], at most the transaction timeout and 30 s: the
/// broker aborts an expired transaction within its cleanup interval, 10 s by default): a read can
/// otherwise end at the last stable offset, before this stream's latest checkpoint, when another
/// stream has a transaction open on the partition; the stream would then resume from an older
/// checkpoint and write its pages twice (seen in the fault soak, and in
/// `tests/kafka_checkpoints.rs`).
///
/// # Errors
/// [`SinkError::Kafka`] when the topic cannot be read to its end, or stays held back.
pub async fn read_checkpoint(kafka: &KafkaConfig, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
    pipeline_io::kafka::wait_settled(
        &kafka.client,
        &kafka.checkpoint_topic,
        kafka.transaction_timeout + std::time::Duration::from_secs(30),
    )
    .await?;
    let group = format!("{}.checkpoint-reader", kafka.transactional_id_prefix);
    let mut found = latest_by_key(&kafka.client, &group, &kafka.checkpoint_topic, |k| {
        k == key.as_bytes()
    })
    .await?;
    Ok(found.remove(key.as_bytes()))
}

/// What [`TxnWriter::send_event`] wrote.
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

/// The transactional writer of one tenant stream: raw events and the stream's checkpoint.
#[derive(Debug)]
pub struct TxnWriter {
    session: TxnSession,
    raw_topic: String,
    checkpoint_topic: String,
    schema_id: u32,
}

impl TxnWriter {
    /// Opens the stream's transactional session, which fences an older instance with the same
    /// transactional id and settles the transaction it left open.
    ///
    /// # Errors
    /// [`SinkError::Kafka`] when the broker cannot be reached or refuses.
    pub async fn new(
        kafka: &KafkaConfig,
        transactional_id: String,
        schema_id: u32,
    ) -> Result<Self, SinkError> {
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
            schema_id,
        })
    }

    /// The transactional id.
    pub fn transactional_id(&self) -> &str {
        self.session.transactional_id()
    }

    /// Begins a transaction.
    ///
    /// # Errors
    /// [`SinkError::Kafka`].
    pub fn begin(&mut self) -> Result<(), SinkError> {
        Ok(self.session.begin()?)
    }

    /// Adds a raw event to the open transaction (key = tenant id, headers `kind`, `tenant_id`),
    /// or its `oversized` marker when its record would exceed `MAX_RECORD_BYTES`.
    ///
    /// # Errors
    /// [`SinkError`] when encoding or enqueueing fails.
    pub async fn send_event(&mut self, event: &RawEvent) -> Result<Sent, SinkError> {
        let datum = event.to_avro_datum()?;
        let value = schemas::wire::encode(self.schema_id, &datum);
        if record_bytes(event, &value) > MAX_RECORD_BYTES {
            let (marker, info) = oversized_marker(event);
            self.send_record(&marker).await?;
            return Ok(Sent::Oversized(info));
        }
        self.send_encoded(event, &value).await?;
        Ok(Sent::Event)
    }

    async fn send_record(&mut self, event: &RawEvent) -> Result<(), SinkError> {
        let datum = event.to_avro_datum()?;
        let value = schemas::wire::encode(self.schema_id, &datum);
        self.send_encoded(event, &value).await
    }

    async fn send_encoded(&mut self, event: &RawEvent, value: &[u8]) -> Result<(), SinkError> {
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
                Some(value),
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
