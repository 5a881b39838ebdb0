//! Kafka side of the producer: schema registration, topic creation, the transactional writer of
//! one tenant stream, and reading checkpoints back.
//!
//! Each tenant stream (snapshot, activity) has its own transactional id
//! (`<prefix>.<tenant>.<stream>`), so a restarted producer fences the previous instance and
//! `init_transactions` settles whatever it left open. A stream's raw events and its checkpoint
//! go into one transaction; checkpoints are read back with `read_committed` at start.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use schemas::raw::{RAW_EVENT_SCHEMA, RawEvent};
use schemas::registry::{Registry, RegistryError};

use crate::config::{KafkaConfig, RegistryConfig};

/// Why a Kafka or registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// A Kafka client call failed.
    #[error("kafka {op} ({context}): {source}")]
    Kafka {
        /// The operation.
        op: &'static str,
        /// Topic or transactional id.
        context: String,
        /// The client error.
        source: KafkaError,
    },
    /// The schema registry refused or failed.
    #[error("schema registry: {0}")]
    Registry(#[from] RegistryError),
    /// A raw event could not be encoded (a bug, not bad input).
    #[error("encoding a raw event: {0}")]
    Encode(#[from] schemas::SchemaError),
    /// Reading checkpoints did not reach the end of the topic in time.
    #[error("reading checkpoints from {topic}: {message}")]
    Checkpoint {
        /// The topic.
        topic: String,
        /// What happened.
        message: String,
    },
}

fn kafka_err<'a>(
    op: &'static str,
    context: &'a str,
) -> impl FnOnce(KafkaError) -> KafkaSinkError + 'a {
    move |source| KafkaSinkError::Kafka {
        op,
        context: context.to_string(),
        source,
    }
}

fn base_client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (k, v) in &kafka.librdkafka_options {
        c.set(k, v);
    }
    c
}

/// Registers the raw event schema under `<raw_topic>-value` (compatibility
/// `BACKWARD_TRANSITIVE`) and returns its id.
///
/// # Errors
/// [`KafkaSinkError::Registry`] when the registry cannot be reached or refuses the schema.
pub async fn register_raw_schema(
    registry: &RegistryConfig,
    raw_topic: &str,
) -> Result<u32, KafkaSinkError> {
    let client = Registry::new(
        registry.url.as_str(),
        registry.basic_auth.clone(),
        registry.request_timeout,
    )?;
    Ok(client
        .register(&format!("{raw_topic}-value"), RAW_EVENT_SCHEMA)
        .await?)
}

/// Creates the raw topic and the compacted checkpoint topic if they are missing.
///
/// # Errors
/// [`KafkaSinkError::Kafka`] when the admin client fails (an existing topic is fine).
pub async fn ensure_topics(kafka: &KafkaConfig) -> Result<(), KafkaSinkError> {
    let admin: AdminClient<DefaultClientContext> = base_client_config(kafka)
        .create()
        .map_err(kafka_err("create admin client", &kafka.bootstrap_servers))?;
    let replication = || TopicReplication::Fixed(kafka.topic_replication_factor);
    let raw = NewTopic::new(&kafka.raw_topic, kafka.topic_partitions, replication())
        .set("compression.type", "producer");
    let checkpoints = NewTopic::new(&kafka.checkpoint_topic, 1, replication())
        .set("cleanup.policy", "compact")
        .set("min.compaction.lag.ms", "60000");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&raw, &checkpoints], &options)
        .await
        .map_err(kafka_err("create topics", &kafka.raw_topic))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSinkError::Kafka {
                    op: "create topic",
                    context: topic,
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// Reads the latest committed value of every key in `keys` from the checkpoint topic
/// (`read_committed`, from the beginning to the end offsets seen at start).
///
/// # Errors
/// [`KafkaSinkError`] when the topic cannot be read to its end within `timeout`.
pub fn read_checkpoints(
    kafka: &KafkaConfig,
    keys: &[String],
    timeout: Duration,
) -> Result<HashMap<String, Vec<u8>>, KafkaSinkError> {
    let topic = kafka.checkpoint_topic.as_str();
    let consumer: BaseConsumer = base_client_config(kafka)
        .set(
            "group.id",
            format!("{}.checkpoint-reader", kafka.transactional_id_prefix),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(kafka_err("create consumer", topic))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(kafka_err("fetch metadata", topic))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .map_err(kafka_err("fetch watermarks", topic))?;
        if high > low {
            ends.insert(*p, high);
            assignment
                .add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(kafka_err("assign", topic))?;
        }
    }
    let mut found = HashMap::new();
    if ends.is_empty() {
        return Ok(found);
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_err("assign", topic))?;
    let deadline = std::time::Instant::now() + timeout;
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(KafkaSinkError::Checkpoint {
                topic: topic.into(),
                message: format!("end of partitions {:?} not reached in time", ends.keys()),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(msg)) => {
                if let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok())
                    && keys.iter().any(|k| k == key)
                {
                    match msg.payload() {
                        Some(v) => {
                            found.insert(key.to_string(), v.to_vec());
                        }
                        None => {
                            found.remove(key);
                        }
                    }
                }
                if ends
                    .get(&msg.partition())
                    .is_some_and(|end| msg.offset() + 1 >= *end)
                {
                    ends.remove(&msg.partition());
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // Under read_committed the end may sit behind a commit marker: compare the
                // position with the end offset seen at start.
                let position = consumer
                    .position()
                    .ok()
                    .and_then(|tpl| tpl.find_partition(topic, p).map(|e| e.offset()));
                if let (Some(Offset::Offset(pos)), Some(end)) = (position, ends.get(&p))
                    && pos >= *end
                {
                    ends.remove(&p);
                }
            }
            Some(Err(e)) => return Err(kafka_err("consume", topic)(e)),
        }
    }
    Ok(found)
}

/// One event to write: the raw event plus its kind for the header.
#[derive(Debug)]
pub struct Outgoing {
    /// The event.
    pub event: RawEvent,
}

/// A transactional producer for one tenant stream.
pub struct TxnWriter {
    producer: FutureProducer,
    transactional_id: String,
    raw_topic: String,
    checkpoint_topic: String,
    schema_id: u32,
    pending: Vec<DeliveryFuture>,
    open: bool,
    txn_timeout: Duration,
}

impl std::fmt::Debug for TxnWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnWriter")
            .field("transactional_id", &self.transactional_id)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl TxnWriter {
    /// Creates the producer and runs `init_transactions`, which fences an older instance with
    /// the same transactional id and settles the transaction it left open.
    ///
    /// # Errors
    /// [`KafkaSinkError::Kafka`] when the broker cannot be reached or refuses.
    pub async fn new(
        kafka: &KafkaConfig,
        transactional_id: String,
        schema_id: u32,
    ) -> Result<Self, KafkaSinkError> {
        let producer: FutureProducer = base_client_config(kafka)
            .set("transactional.id", &transactional_id)
            .set("enable.idempotence", "true")
            .set("compression.type", &kafka.compression_type)
            .set(
                "transaction.timeout.ms",
                kafka.transaction_timeout.as_millis().to_string(),
            )
            .set(
                "message.timeout.ms",
                kafka.message_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "5")
            // A transaction's first AddPartitionsToTxn meets CONCURRENT_TRANSACTIONS while the
            // previous commit's markers are written; the default 100 ms retry backoff would add
            // that much to every transaction.
            .set("retry.backoff.ms", "10")
            .set("retry.backoff.max.ms", "200")
            .create()
            .map_err(kafka_err("create producer", &transactional_id))?;
        let timeout = kafka.transaction_timeout;
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(timeout))
            .await
            .map_err(|e| KafkaSinkError::Checkpoint {
                topic: String::new(),
                message: format!("init task failed: {e}"),
            })?
            .map_err(kafka_err("init transactions", &transactional_id))?;
        Ok(Self {
            producer,
            transactional_id,
            raw_topic: kafka.raw_topic.clone(),
            checkpoint_topic: kafka.checkpoint_topic.clone(),
            schema_id,
            pending: Vec::new(),
            open: false,
            txn_timeout: timeout,
        })
    }

    /// The transactional id.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// Begins a transaction.
    ///
    /// # Errors
    /// [`KafkaSinkError::Kafka`].
    pub fn begin(&mut self) -> Result<(), KafkaSinkError> {
        self.producer
            .begin_transaction()
            .map_err(kafka_err("begin transaction", &self.transactional_id))?;
        self.open = true;
        Ok(())
    }

    async fn enqueue(
        &mut self,
        topic: String,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaSinkError> {
        loop {
            let record = FutureRecord::to(&topic)
                .key(key)
                .payload(payload)
                .headers(headers.clone());
            match self.producer.send_result(record) {
                Ok(future) => {
                    self.pending.push(future);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(kafka_err("produce", &topic)(e)),
            }
        }
    }

    /// Adds a raw event to the open transaction (key = tenant id, headers `kind`, `tenant_id`).
    ///
    /// # Errors
    /// [`KafkaSinkError`] when encoding or enqueueing fails.
    pub async fn send_event(&mut self, event: &RawEvent) -> Result<(), KafkaSinkError> {
        let datum = event.to_avro_datum()?;
        let value = schemas::wire::encode(self.schema_id, &datum);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "kind",
                value: Some(event.kind.as_str()),
            })
            .insert(Header {
                key: "tenant_id",
                value: Some(event.tenant_id.as_str()),
            });
        self.enqueue(self.raw_topic.clone(), &event.tenant_id, &value, headers)
            .await
    }

    /// Adds the stream's checkpoint to the open transaction.
    ///
    /// # Errors
    /// [`KafkaSinkError`] when enqueueing fails.
    pub async fn send_checkpoint(&mut self, key: &str, value: &[u8]) -> Result<(), KafkaSinkError> {
        self.enqueue(
            self.checkpoint_topic.clone(),
            key,
            value,
            OwnedHeaders::new(),
        )
        .await
    }

    /// Waits for every delivery, then commits. On failure the transaction is aborted (when the
    /// client still can) and the error returned: nothing of it becomes visible.
    ///
    /// # Errors
    /// [`KafkaSinkError::Kafka`].
    pub async fn commit(&mut self) -> Result<(), KafkaSinkError> {
        // Wait for every delivery report first: rdkafka's `commit_transaction` flushes, and its
        // flush loop sleeps 100 ms whenever a report is still outstanding (the producer's
        // polling thread serves them), which would add 100 ms to every transaction.
        let pending = std::mem::take(&mut self.pending);
        let started = std::time::Instant::now();
        let records = pending.len();
        for r in join_all(pending).await {
            let failed = match r {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => Some(e),
                Err(_) => Some(KafkaError::Canceled),
            };
            if let Some(e) = failed {
                self.abort().await;
                return Err(kafka_err("deliver", &self.transactional_id)(e));
            }
        }
        let delivered_ms = started.elapsed().as_millis() as u64;
        let p = self.producer.clone();
        let timeout = self.txn_timeout;
        let result = tokio::task::spawn_blocking(move || p.commit_transaction(timeout)).await;
        tracing::debug!(
            transactional_id = %self.transactional_id, records, delivered_ms,
            commit_ms = started.elapsed().as_millis() as u64, "transaction commit returned"
        );
        match result {
            Ok(Ok(())) => {
                self.open = false;
                Ok(())
            }
            Ok(Err(e)) => {
                self.abort().await;
                Err(kafka_err("commit transaction", &self.transactional_id)(e))
            }
            Err(e) => {
                self.abort().await;
                Err(KafkaSinkError::Checkpoint {
                    topic: self.transactional_id.clone(),
                    message: format!("commit task failed: {e}"),
                })
            }
        }
    }

    /// Aborts the open transaction, if any (best effort: a fenced or failed producer leaves it
    /// to the broker's transaction timeout or to the next `init_transactions`).
    pub async fn abort(&mut self) {
        self.pending.clear();
        if !self.open {
            return;
        }
        self.open = false;
        let p = self.producer.clone();
        let timeout = self.txn_timeout;
        match tokio::task::spawn_blocking(move || p.abort_transaction(timeout)).await {
            Ok(Ok(())) => {
                tracing::info!(transactional_id = %self.transactional_id, "transaction aborted")
            }
            Ok(Err(e)) => {
                tracing::warn!(transactional_id = %self.transactional_id, error = %e, "abort failed")
            }
            Err(e) => {
                tracing::warn!(transactional_id = %self.transactional_id, error = %e, "abort task failed")
            }
        }
    }
}
