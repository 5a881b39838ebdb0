//! Kafka plumbing shared by the pipeline, the replay and the license report: client settings,
//! topic metadata and creation, a reader of partition ranges that ends at the topic's end, and
//! the deliveries of one transaction.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::Config;

/// A Kafka call that failed, with what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {context}: {source}")]
pub struct KafkaCallError {
    /// What was being done.
    pub context: String,
    /// librdkafka's error.
    #[source]
    pub source: KafkaError,
}

/// Wraps a [`KafkaError`] with context.
pub fn ctx(context: impl Into<String>) -> impl FnOnce(KafkaError) -> KafkaCallError {
    let context = context.into();
    move |source| KafkaCallError { context, source }
}

/// Settings every client shares: bootstrap servers, the operator's extra options, bounded
/// socket timeouts.
pub fn base_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &config.librdkafka_options {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("socket.timeout.ms", config.kafka_timeout_ms.to_string())
        .set("client.id", "pingone-transformer");
    c
}

/// Consumer settings for reading committed data without committing anything.
pub fn reader_config(config: &Config, group_id: &str) -> ClientConfig {
    let mut c = base_config(config);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        // Readers wait for the end of a topic: do not let the broker hold empty fetches long.
        .set("fetch.wait.max.ms", "20");
    c
}

/// Client context of the readers: end-of-partition is how they stop, not an error to log.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(%error, reason, "kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// The partition ids of `topic`; an error if the topic does not exist.
///
/// # Errors
/// Metadata errors, or `UnknownTopicOrPartition` when the topic has no partitions.
pub fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaCallError> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(ctx(format!("metadata of {topic}")))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(KafkaCallError {
            context: format!("topic {topic} does not exist"),
            source: KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        });
    }
    Ok(parts)
}

/// Creates the missing topics among `topics` (`(name, compacted)`).
///
/// # Errors
/// Admin errors other than "already exists".
pub async fn ensure_topics(
    config: &Config,
    topics: &[(&str, bool)],
    partitions: i32,
) -> Result<(), KafkaCallError> {
    let admin: AdminClient<DefaultClientContext> = base_config(config)
        .create()
        .map_err(ctx("creating admin client"))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, compacted)| {
            let t = NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(config.output_replication_factor),
            );
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts =
        AdminOptions::new().operation_timeout(Some(Duration::from_millis(config.kafka_timeout_ms)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(ctx("creating output topics"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaCallError {
                    context: format!("creating topic {name}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// Reads partitions of one topic from a start offset up to an end, then stops.
///
/// The end of a partition is reached at an end-of-partition event or when a message at or after
/// `end` (exclusive; `None`: the end of the partition when reading started) arrives; that
/// message is not returned. Every wait is bounded by the timeout given at creation.
pub struct RangeReader {
    consumer: StreamConsumer<ReaderContext>,
    topic: String,
    end: HashMap<i32, Option<i64>>,
    timeout: Duration,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeReader")
            .field("topic", &self.topic)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl RangeReader {
    /// Starts reading `ranges` (`partition -> (start, end exclusive)`) of `topic`.
    ///
    /// # Errors
    /// Client creation, watermark or assignment errors.
    pub fn new(
        config: &Config,
        group_id: &str,
        topic: &str,
        ranges: &HashMap<i32, (Offset, Option<i64>)>,
    ) -> Result<Self, KafkaCallError> {
        let consumer: StreamConsumer<ReaderContext> = reader_config(config, group_id)
            .create_with_context(ReaderContext)
            .map_err(ctx("creating reader"))?;
        let timeout = Duration::from_millis(config.kafka_timeout_ms);
        let mut tpl = TopicPartitionList::new();
        let mut end = HashMap::new();
        for (&p, &(start, stop)) in ranges {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(ctx(format!("watermarks of {topic}/{p}")))?;
            let stop = stop.unwrap_or(high).min(high);
            let first = match start {
                Offset::Offset(o) => o.max(low),
                _ => low,
            };
            if first >= stop {
                continue;
            }
            tpl.add_partition_offset(topic, p, Offset::Offset(first))
                .map_err(ctx("building assignment"))?;
            end.insert(p, Some(stop));
        }
        consumer
            .assign(&tpl)
            .map_err(ctx(format!("assigning {topic}")))?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            end,
            timeout,
        })
    }

    /// The next message in range, or `None` when every partition reached its end.
    ///
    /// # Errors
    /// Consumer errors, or a timeout when nothing arrives for the configured time.
    pub async fn next(&mut self) -> Result<Option<OwnedMessage>, KafkaCallError> {
        loop {
            if self.end.is_empty() {
                return Ok(None);
            }
            let received = tokio::time::timeout(self.timeout, self.consumer.recv()).await;
            let msg = match received {
                Err(_) => {
                    return Err(KafkaCallError {
                        context: format!("reading {} timed out before its end", self.topic),
                        source: KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
                    });
                }
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    self.finish(p)?;
                    continue;
                }
                Ok(Err(e)) => return Err(ctx(format!("reading {}", self.topic))(e)),
                Ok(Ok(m)) => m,
            };
            let p = msg.partition();
            let Some(Some(stop)) = self.end.get(&p).copied() else {
                continue;
            };
            if msg.offset() >= stop {
                self.finish(p)?;
                continue;
            }
            let owned = msg.detach();
            if owned.offset() + 1 >= stop {
                self.finish(p)?;
            }
            return Ok(Some(owned));
        }
    }

    fn finish(&mut self, partition: i32) -> Result<(), KafkaCallError> {
        if self.end.remove(&partition).is_some() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, partition);
            self.consumer
                .pause(&tpl)
                .map_err(ctx(format!("pausing {}/{partition}", self.topic)))?;
        }
        Ok(())
    }
}

/// Reads a whole topic (every partition from the beginning to its current end).
///
/// # Errors
/// As [`RangeReader::new`]; a missing topic is an error.
pub fn whole_topic(
    config: &Config,
    group_id: &str,
    topic: &str,
) -> Result<RangeReader, KafkaCallError> {
    let meta: BaseConsumer = base_config(config)
        .create()
        .map_err(ctx("creating metadata client"))?;
    let parts = partitions(&meta, topic, Duration::from_millis(config.kafka_timeout_ms))?;
    let ranges = parts
        .into_iter()
        .map(|p| (p, (Offset::Beginning, None)))
        .collect();
    RangeReader::new(config, group_id, topic, &ranges)
}

/// The records of one open transaction. [`Deliveries::send`] enqueues a record and keeps its
/// delivery future; [`Deliveries::commit`] waits
/// for every delivery report, then commits. Committing with reports outstanding works too, but
/// rdkafka's `commit_transaction` flushes first, and its flush loop sleeps 100 ms whenever a
/// report is still outstanding: about 100 ms lost per transaction.
#[derive(Default)]
pub struct Deliveries {
    pending: Vec<DeliveryFuture>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Deliveries {
    /// Enqueues `record` in the open transaction, waiting while librdkafka's local queue is full.
    ///
    /// # Errors
    /// Any other production error, naming the record's topic.
    pub async fn send(
        &mut self,
        producer: &FutureProducer,
        mut record: FutureRecord<'_, [u8], [u8]>,
    ) -> Result<(), KafkaCallError> {
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, back)) => return Err(ctx(format!("producing to {}", back.topic))(e)),
            }
        }
    }

    /// Waits for every record sent so far to be delivered, then commits the transaction (on a
    /// blocking thread: librdkafka's call blocks). The caller aborts on error.
    ///
    /// # Errors
    /// The first failed delivery, or the commit's error.
    pub async fn commit(
        &mut self,
        producer: &FutureProducer,
        timeout: Duration,
    ) -> Result<(), KafkaCallError> {
        for delivery in futures::future::join_all(self.pending.drain(..)).await {
            match delivery {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(ctx("delivering a record")(e)),
                Err(_) => return Err(ctx("delivering a record")(KafkaError::Canceled)),
            }
        }
        let producer = producer.clone();
        tokio::task::spawn_blocking(move || producer.commit_transaction(timeout))
            .await
            .map_err(|_| ctx("commit_transaction")(KafkaError::Canceled))?
            .map_err(ctx("commit_transaction"))
    }

    /// Forgets the records of an aborted transaction.
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}
