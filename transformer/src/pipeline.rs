//! The exactly-once loop: raw topic -> [`Processor`] -> output topics, one Kafka transaction per
//! batch with the consumed offsets sent inside it.
//!
//! # Start-up (every start and every restart after a failure)
//! 1. The transactional producer is initialised: this fences an older instance with the same
//!    `transactional_id` and aborts its open transaction.
//! 2. Output topics are created if missing (compacted) and the output schemas registered with
//!    `BACKWARD_TRANSITIVE`.
//! 3. State is rebuilt from Kafka only: the users, applications and app usage topics are read to
//!    their end (`read_committed`), then the checkpoint topic says which syncs were in progress
//!    at the last commit; their raw events from their start offset to the committed offset are
//!    re-applied in [`Mode::Restore`] (no outputs). An output record whose schema the registry
//!    no longer serves is fatal ([`PipelineError::OutputSchemaLost`]).
//! 4. The raw topic is read from the group's committed offsets.
//!
//! # Each batch
//! Up to `batch_max_records` raw events (or what arrived within `batch_max_wait_ms`):
//! `begin_transaction`; per event decode (wire format, writer schema from the registry, Avro),
//! process, produce outputs or a dead letter; produce one checkpoint record per partition;
//! `send_offsets_to_transaction`; `commit_transaction`. Any failure aborts the transaction and
//! restarts from step 1 with backoff, so in-memory state never diverges from committed output.
//!
//! # Dead letters
//! A raw event whose value is not in the wire format, names an unknown schema id, is not a raw
//! event datum, or fails normalization is written verbatim (same key and value) to the
//! dead-letter topic, with headers `error`, `error_kind`, `source_topic`, `source_partition`,
//! `source_offset`, inside the same transaction. Registry outages are not poison: they restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use schemas::raw::RawEvent;
use schemas::usage::{AppUsage, Application, UserUsage};
use schemas::{SchemaError, wire};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, OutputTopics};
use crate::kafka::{self, Deliveries, KafkaCallError, RangeReader, ctx};
use crate::metrics::Metrics;
use crate::processor::{InProgress, Mode, Output, Processor, Source};
use crate::registry::{Registry, RegistryError};

/// Why the pipeline stopped or restarts.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Bad configuration (fatal).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Kafka call failed (transient).
    #[error(transparent)]
    Kafka(#[from] KafkaCallError),
    /// The registry failed (transient unless it refused our schemas).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An output record did not encode (a bug).
    #[error("encoding output: {0}")]
    Encode(#[from] SchemaError),
    /// A record on one of our own output topics names a schema the registry no longer serves,
    /// so the state cannot be restored (fatal: restarting cannot bring the schema back).
    #[error(
        "cannot restore state from {topic} partition {partition} offset {offset}: {source}; \
         the registry has lost schemas this transformer registered (was its storage reset?)"
    )]
    OutputSchemaLost {
        /// The output topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// What the registry said.
        source: RegistryError,
    },
}

impl PipelineError {
    /// Whether a restart may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Config(_) | Self::Encode(_) | Self::OutputSchemaLost { .. } => false,
            Self::Registry(e) => !matches!(e, RegistryError::Refused { .. }),
            Self::Kafka(_) => true,
        }
    }
}

/// Schema ids of the output subjects.
#[derive(Debug, Clone, Copy)]
pub struct SchemaIds {
    /// `<users topic>-value`.
    pub users: u32,
    /// `<applications topic>-value`.
    pub applications: u32,
    /// `<app usage topic>-value`.
    pub app_usage: u32,
}

/// Registers the three output schemas for `topics` (idempotent).
///
/// # Errors
/// Registry errors; `Refused` when a schema is incompatible with what is registered.
pub async fn register_outputs(
    registry: &Registry,
    topics: &OutputTopics,
) -> Result<SchemaIds, RegistryError> {
    // The three subjects are independent: registered concurrently, which saves start-up time.
    let subject = |topic: &str| format!("{topic}-value");
    let (users_subject, applications_subject, app_usage_subject) = (
        subject(&topics.users),
        subject(&topics.applications),
        subject(&topics.app_usage),
    );
    let (users, applications, app_usage) = tokio::try_join!(
        registry.register(&users_subject, schemas::usage::USER_USAGE_SCHEMA),
        registry.register(&applications_subject, schemas::usage::APPLICATION_SCHEMA),
        registry.register(&app_usage_subject, schemas::usage::APP_USAGE_SCHEMA),
    )?;
    Ok(SchemaIds {
        users,
        applications,
        app_usage,
    })
}

/// What the live loop and a replay both set up before reading the raw topic.
pub(crate) struct Prepared {
    /// The registry client (writer schemas of the raw events).
    pub registry: Registry,
    /// A metadata client, for partition lists and offset lookups.
    pub meta: BaseConsumer,
    /// The raw topic's partitions.
    pub raw_partitions: Vec<i32>,
    /// Schema ids of the output subjects.
    pub ids: SchemaIds,
}

/// Creates the output topics `topics` if missing (as many partitions as the raw topic unless
/// configured; the state topic only when `with_state`) and registers the output schemas.
///
/// # Errors
/// Kafka or registry failures.
pub(crate) async fn prepare_outputs(
    config: &Config,
    topics: &OutputTopics,
    with_state: bool,
) -> Result<Prepared, PipelineError> {
    let timeout = Duration::from_millis(config.kafka_timeout_ms);
    let registry = config.registry()?;
    let meta: BaseConsumer = kafka::base_config(config)
        .create()
        .map_err(ctx("creating metadata client"))?;
    let raw_partitions = kafka::partitions(&meta, &config.raw_topic, timeout)?;
    let n = if config.output_partitions > 0 {
        config.output_partitions
    } else {
        i32::try_from(raw_partitions.len()).unwrap_or(1)
    };
    let mut wanted = vec![
        (topics.users.as_str(), true),
        (topics.applications.as_str(), true),
        (topics.app_usage.as_str(), true),
        (topics.dead_letter.as_str(), false),
    ];
    if with_state {
        wanted.push((topics.state.as_str(), true));
    }
    kafka::ensure_topics(config, &wanted, n).await?;
    let ids = register_outputs(&registry, topics).await?;
    Ok(Prepared {
        registry,
        meta,
        raw_partitions,
        ids,
    })
}

/// An output ready to produce.
#[derive(Debug)]
pub struct Encoded<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Record key.
    pub key: String,
    /// Confluent-framed value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Encodes an [`Output`] for `topics` with `ids`.
///
/// # Errors
/// [`SchemaError`] if the record does not match its schema (a bug).
pub fn encode<'a>(
    o: &Output,
    topics: &'a OutputTopics,
    ids: SchemaIds,
) -> Result<Encoded<'a>, SchemaError> {
    let key = o.key();
    Ok(match o {
        Output::User(u) => Encoded {
            topic: &topics.users,
            key,
            value: Some(wire::encode(ids.users, &u.to_avro_datum()?)),
        },
        Output::UserTombstone { .. } => Encoded {
            topic: &topics.users,
            key,
            value: None,
        },
        Output::Application(a) => Encoded {
            topic: &topics.applications,
            key,
            value: Some(wire::encode(ids.applications, &a.to_avro_datum()?)),
        },
        Output::ApplicationTombstone { .. } => Encoded {
            topic: &topics.applications,
            key,
            value: None,
        },
        Output::AppUsage(u) => Encoded {
            topic: &topics.app_usage,
            key,
            value: Some(wire::encode(ids.app_usage, &u.to_avro_datum()?)),
        },
    })
}

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
    let Some(value) = value else {
        return Ok(Decoded::Poison {
            kind: "wire",
            error: "record has no value".into(),
        });
    };
    let (id, datum) = match wire::decode(value) {
        Ok(x) => x,
        Err(e) => {
            return Ok(Decoded::Poison {
                kind: "wire",
                error: e.to_string(),
            });
        }
    };
    let schema = match registry.schema_by_id(id).await {
        Ok(s) => s,
        Err(e) if e.is_poison() => {
            return Ok(Decoded::Poison {
                kind: "schema",
                error: e.to_string(),
            });
        }
        Err(e) => return Err(e),
    };
    match RawEvent::from_avro_datum(&schema, datum) {
        Ok(ev) => Ok(Decoded::Event(Box::new(ev))),
        Err(e) => Ok(Decoded::Poison {
            kind: "avro",
            error: e.to_string(),
        }),
    }
}

/// Headers of a dead letter.
pub fn dead_letter_headers(
    kind: &str,
    error: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    let partition = partition.to_string();
    let offset = offset.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: "error",
            value: Some(error),
        })
        .insert(Header {
            key: "error_kind",
            value: Some(kind),
        })
        .insert(Header {
            key: "source_topic",
            value: Some(topic),
        })
        .insert(Header {
            key: "source_partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "source_offset",
            value: Some(&offset),
        })
}

/// Value of a checkpoint record (key `<raw topic>/<partition>` on the state topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The next raw offset to read, committed in the same transaction.
    pub committed_offset: i64,
    /// Syncs in progress at that offset.
    pub in_progress: Vec<InProgress>,
}

/// Consumer context that turns librdkafka statistics into the lag gauge.
#[derive(Debug)]
pub struct LagContext {
    metrics: Arc<Metrics>,
    topic: String,
}

impl ClientContext for LagContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // End of partition is expected (`stop_at_end`), not an error to log.
        if !matches!(
            error,
            rdkafka::error::KafkaError::PartitionEOF(_)
                | rdkafka::error::KafkaError::Global(
                    rdkafka::types::RDKafkaErrorCode::PartitionEOF
                )
        ) {
            tracing::error!(%error, reason, "kafka client error");
        }
    }

    fn stats(&self, statistics: Statistics) {
        if let Some(t) = statistics.topics.get(&self.topic) {
            for (p, s) in &t.partitions {
                if *p < 0 || s.app_offset < 0 || s.ls_offset < 0 {
                    continue;
                }
                let lag = (s.ls_offset - s.app_offset).max(0);
                self.metrics
                    .consumer_lag
                    .get_or_create(&Metrics::label("partition", &p.to_string()))
                    .set(lag);
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// Runs the transformer until `shutdown`, restarting after transient failures.
///
/// # Errors
/// Fatal errors only (bad configuration, schemas refused by the registry).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), PipelineError> {
    run_with_metrics(config, shutdown, Arc::new(Metrics::new())).await
}

/// [`run`] with the caller's metrics (served by `main.rs`, read by tests).
///
/// # Errors
/// As [`run`].
pub async fn run_with_metrics(
    config: Config,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<(), PipelineError> {
    config.validate()?;
    let mut backoff = Duration::from_millis(500);
    let max = Duration::from_millis(config.restart_backoff_max_ms.max(500));
    loop {
        let result = run_once(&config, &shutdown, &metrics).await;
        metrics.set_ready(false);
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && !shutdown.is_cancelled() => {
                metrics.restarts.inc();
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "transformer restarting after failure");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(max);
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "transformer stopped during shutdown");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

/// The transactional producer of the loop (also used by the pass-through benchmark, so that
/// both run with the same client settings); `init_transactions` has been called.
///
/// # Errors
/// Client creation or `init_transactions` failures.
pub fn transactional_producer(
    config: &Config,
    transactional_id: &str,
) -> Result<FutureProducer, KafkaCallError> {
    let producer: FutureProducer = kafka::base_config(config)
        .set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set(
            "transaction.timeout.ms",
            config.transaction_timeout_ms.to_string(),
        )
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set(
            "message.timeout.ms",
            config.transaction_timeout_ms.to_string(),
        )
        .create()
        .map_err(ctx("creating transactional producer"))?;
    producer
        .init_transactions(Duration::from_millis(config.kafka_timeout_ms))
        .map_err(ctx(format!("init_transactions for {transactional_id}")))?;
    Ok(producer)
}

/// Settings of the raw topic consumer (shared with the pass-through benchmark).
pub fn raw_consumer_config(config: &Config) -> rdkafka::ClientConfig {
    let mut c = kafka::base_config(config);
    c.set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        // Bounded wait of an empty fetch: quick start and low latency when the topic is idle.
        .set("fetch.wait.max.ms", "100")
        .set(
            "enable.partition.eof",
            if config.stop_at_end { "true" } else { "false" },
        );
    c
}

/// Everything one attempt needs.
struct Attempt<'a> {
    config: &'a Config,
    topics: OutputTopics,
    registry: Registry,
    ids: SchemaIds,
    metrics: &'a Metrics,
    processor: Processor,
    timeout: Duration,
}

async fn run_once(
    config: &Config,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> Result<(), PipelineError> {
    let timeout = Duration::from_millis(config.kafka_timeout_ms);
    let started = std::time::Instant::now();
    let topics = config.topics();
    let Prepared {
        registry,
        meta: _,
        raw_partitions,
        ids,
    } = prepare_outputs(config, &topics, true).await?;
    let producer = transactional_producer(config, &config.transactional_id)?;
    let prepared_ms = started.elapsed().as_millis() as u64;

    let mut attempt = Attempt {
        config,
        topics,
        registry,
        ids,
        metrics,
        processor: Processor::new(config.activity_dedup_capacity),
        timeout,
    };
    attempt.restore_outputs().await?;
    let restored_ms = started.elapsed().as_millis() as u64;

    let consumer: StreamConsumer<LagContext> = raw_consumer_config(config)
        .create_with_context(LagContext {
            metrics: metrics.clone(),
            topic: config.raw_topic.clone(),
        })
        .map_err(ctx("creating raw consumer"))?;
    let mut wanted = TopicPartitionList::new();
    for p in &raw_partitions {
        wanted.add_partition(&config.raw_topic, *p);
    }
    let committed = consumer
        .committed_offsets(wanted, timeout)
        .map_err(ctx("reading committed offsets"))?;
    let mut start = TopicPartitionList::new();
    let mut committed_at: HashMap<i32, i64> = HashMap::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => {
                committed_at.insert(e.partition(), o);
                Offset::Offset(o)
            }
            _ => Offset::Beginning,
        };
        start
            .add_partition_offset(&config.raw_topic, e.partition(), offset)
            .map_err(ctx("building assignment"))?;
    }
    attempt.restore_in_progress(&committed_at).await?;
    consumer
        .assign(&start)
        .map_err(ctx("assigning raw topic"))?;
    metrics.set_ready(true);
    tracing::info!(
        raw_topic = %config.raw_topic,
        partitions = raw_partitions.len(),
        prepared_ms,
        restored_ms,
        ready_ms = started.elapsed().as_millis() as u64,
        "transformer ready"
    );

    let group = consumer.group_metadata().ok_or_else(|| {
        ctx("consumer group metadata")(rdkafka::error::KafkaError::NoMessageReceived)
    })?;
    let max_wait = Duration::from_millis(config.batch_max_wait_ms);
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(config.batch_max_records);
    // Partitions whose end was reached (only tracked with `stop_at_end`).
    let mut at_end: std::collections::HashSet<i32> = std::collections::HashSet::new();
    loop {
        batch.clear();
        if config.stop_at_end && at_end.len() >= raw_partitions.len() {
            tracing::info!("raw topic end reached and committed");
            break;
        }
        // Wait for the first message or shutdown, then fill the batch for at most max_wait.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            m = consumer.recv() => take(m, &mut batch, &mut at_end)?,
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        while batch.len() < config.batch_max_records {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(m) => take(m, &mut batch, &mut at_end)?,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            attempt.transaction(&producer, &batch, &group).await?;
        }
    }
    tracing::info!("transformer stopped");
    Ok(())
}

/// Adds a received message to the batch, or notes a partition's end.
fn take(
    m: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
    batch: &mut Vec<OwnedMessage>,
    at_end: &mut std::collections::HashSet<i32>,
) -> Result<(), KafkaCallError> {
    match m {
        Ok(m) => {
            at_end.remove(&m.partition());
            batch.push(m.detach());
            Ok(())
        }
        Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
            at_end.insert(p);
            Ok(())
        }
        Err(e) => Err(ctx("reading raw topic")(e)),
    }
}

impl Attempt<'_> {
    async fn restore_outputs(&mut self) -> Result<(), PipelineError> {
        let group = format!("{}-restore", self.config.group_id);
        let mut restored = 0_u64;
        for topic in [
            &self.topics.users,
            &self.topics.applications,
            &self.topics.app_usage,
        ] {
            let mut reader = kafka::whole_topic(self.config, &group, topic)?;
            while let Some(m) = reader.next().await? {
                let Some(key) = m
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .filter(|k| k.contains('/'))
                else {
                    tracing::warn!(%topic, offset = m.offset(), "output record without a utf-8 tenant/id key ignored on restore");
                    continue;
                };
                restored += 1;
                let value = match m.payload() {
                    None => None,
                    Some(v) => match wire::decode(v) {
                        Ok((id, datum)) => match self.registry.schema_by_id(id).await {
                            Ok(schema) => Some((schema, datum)),
                            Err(source) if source.is_poison() => {
                                return Err(PipelineError::OutputSchemaLost {
                                    topic: topic.to_string(),
                                    partition: m.partition(),
                                    offset: m.offset(),
                                    source,
                                });
                            }
                            Err(e) => return Err(e.into()),
                        },
                        Err(error) => {
                            tracing::warn!(%topic, offset = m.offset(), %error, "output record not in wire format ignored on restore");
                            continue;
                        }
                    },
                };
                let bad = |e: SchemaError| {
                    tracing::warn!(%topic, offset = m.offset(), error = %e, "undecodable output record ignored on restore");
                };
                if *topic == self.topics.users {
                    match value {
                        None => self.processor.restore_user(key, None),
                        Some((s, d)) => match UserUsage::from_avro_datum(&s, d) {
                            Ok(u) => self.processor.restore_user(key, Some(&u)),
                            Err(e) => bad(e),
                        },
                    }
                } else if *topic == self.topics.applications {
                    match value {
                        None => self.processor.restore_application(key, None),
                        Some((s, d)) => match Application::from_avro_datum(&s, d) {
                            Ok(a) => self.processor.restore_application(key, Some(&a)),
                            Err(e) => bad(e),
                        },
                    }
                } else {
                    match value {
                        None => self.processor.restore_app_usage(key, None),
                        Some((s, d)) => match AppUsage::from_avro_datum(&s, d) {
                            Ok(u) => self.processor.restore_app_usage(key, Some(u)),
                            Err(e) => bad(e),
                        },
                    }
                }
            }
        }
        tracing::info!(records = restored, "state restored from output topics");
        Ok(())
    }

    async fn restore_in_progress(
        &mut self,
        committed_at: &HashMap<i32, i64>,
    ) -> Result<(), PipelineError> {
        let group = format!("{}-restore", self.config.group_id);
        let mut checkpoints: HashMap<i32, Checkpoint> = HashMap::new();
        let prefix = format!("{}/", self.config.raw_topic);
        let mut reader = kafka::whole_topic(self.config, &group, &self.topics.state)?;
        while let Some(m) = reader.next().await? {
            let Some(partition) = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.strip_prefix(&prefix))
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            match m.payload().map(serde_json::from_slice::<Checkpoint>) {
                Some(Ok(c)) => {
                    checkpoints.insert(partition, c);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, partition, "unreadable checkpoint ignored")
                }
                None => {
                    checkpoints.remove(&partition);
                }
            }
        }
        let mut plan = Vec::new();
        let mut ranges: HashMap<i32, (Offset, Option<i64>)> = HashMap::new();
        for (p, c) in checkpoints {
            let Some(&committed) = committed_at.get(&p) else {
                continue;
            };
            if c.committed_offset != committed {
                tracing::warn!(
                    partition = p,
                    checkpoint = c.committed_offset,
                    committed,
                    "checkpoint and committed offset differ; syncs in progress restart from scratch"
                );
                continue;
            }
            if let Some(first) = c.in_progress.iter().map(|s| s.start_offset).min() {
                ranges.insert(p, (Offset::Offset(first), Some(committed)));
                plan.extend(c.in_progress);
            }
        }
        if plan.is_empty() {
            return Ok(());
        }
        tracing::info!(
            syncs = plan.len(),
            "re-reading raw events of syncs in progress"
        );
        self.processor.set_restore_plan(plan);
        let mut reader = RangeReader::new(self.config, &group, &self.config.raw_topic, &ranges)?;
        let mut out = Vec::new();
        while let Some(m) = reader.next().await? {
            if let Decoded::Event(ev) = decode_raw(&self.registry, m.payload()).await? {
                let source = Source {
                    topic: &self.config.raw_topic,
                    partition: m.partition(),
                    offset: m.offset(),
                };
                let _ = self.processor.process(&ev, source, Mode::Restore, &mut out);
            }
        }
        self.processor.set_restore_plan(Vec::new());
        Ok(())
    }

    async fn transaction(
        &mut self,
        producer: &FutureProducer,
        batch: &[OwnedMessage],
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), PipelineError> {
        producer
            .begin_transaction()
            .map_err(ctx("begin_transaction"))?;
        let mut deliveries = Deliveries::default();
        let counts = match self.fill(&mut deliveries, producer, batch, group).await {
            Ok(counts) => counts,
            Err(e) => {
                deliveries.clear();
                self.abort(producer);
                return Err(e);
            }
        };
        if let Err(e) = deliveries.commit(producer, self.timeout).await {
            self.abort(producer);
            return Err(e.into());
        }
        // Counted only once committed, so that aborted work is not counted twice.
        self.metrics.transactions_committed.inc();
        self.metrics.consumed.inc_by(batch.len() as u64);
        for ((family, label), n) in counts {
            let (metric, name) = match family {
                Family::Produced => (&self.metrics.produced, "topic"),
                Family::DeadLettered => (&self.metrics.dead_lettered, "kind"),
                Family::Outcome => (&self.metrics.notes, "outcome"),
            };
            metric
                .get_or_create(&Metrics::label(name, &label))
                .inc_by(n);
        }
        Ok(())
    }

    fn abort(&self, producer: &FutureProducer) {
        self.metrics.transactions_aborted.inc();
        if let Err(error) = producer.abort_transaction(self.timeout) {
            tracing::warn!(%error, "abort_transaction failed");
        }
    }

    async fn fill(
        &mut self,
        deliveries: &mut Deliveries,
        producer: &FutureProducer,
        batch: &[OwnedMessage],
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<HashMap<(Family, String), u64>, PipelineError> {
        let raw_topic = self.config.raw_topic.clone();
        let mut counts: HashMap<(Family, String), u64> = HashMap::new();
        let mut count = |family: Family, label: &str| {
            *counts.entry((family, label.to_owned())).or_default() += 1;
        };
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut outputs = Vec::new();
        for m in batch {
            let (p, o) = (m.partition(), m.offset());
            next.insert(p, o + 1);
            let failure = match decode_raw(&self.registry, m.payload()).await? {
                Decoded::Poison { kind, error } => Some((kind, error)),
                Decoded::Event(ev) => {
                    let source = Source {
                        topic: &raw_topic,
                        partition: p,
                        offset: o,
                    };
                    match self
                        .processor
                        .process(&ev, source, Mode::Live, &mut outputs)
                    {
                        Ok(note) => {
                            count(Family::Outcome, note.label());
                            None
                        }
                        Err(e) => Some(("normalize", e.to_string())),
                    }
                }
            };
            if let Some((kind, error)) = failure {
                tracing::warn!(topic = %raw_topic, partition = p, offset = o, kind, %error, "raw event dead-lettered");
                let headers = dead_letter_headers(kind, &error, &raw_topic, p, o);
                deliveries
                    .send(
                        producer,
                        record(
                            &self.topics.dead_letter,
                            m.key().unwrap_or_default(),
                            m.payload(),
                            Some(headers),
                        ),
                    )
                    .await?;
                count(Family::Produced, &self.topics.dead_letter);
                count(Family::DeadLettered, kind);
                continue;
            }
            for out in outputs.drain(..) {
                let e = encode(&out, &self.topics, self.ids)?;
                deliveries
                    .send(
                        producer,
                        record(e.topic, e.key.as_bytes(), e.value.as_deref(), None),
                    )
                    .await?;
                count(Family::Produced, e.topic);
            }
        }
        let mut offsets = TopicPartitionList::new();
        for (&p, &n) in &next {
            let checkpoint = Checkpoint {
                committed_offset: n,
                in_progress: self.processor.in_progress(p),
            };
            let value = serde_json::to_vec(&checkpoint).unwrap_or_default();
            let key = format!("{raw_topic}/{p}");
            deliveries
                .send(
                    producer,
                    record(&self.topics.state, key.as_bytes(), Some(&value), None),
                )
                .await?;
            offsets
                .add_partition_offset(&raw_topic, p, Offset::Offset(n))
                .map_err(ctx("building offsets"))?;
        }
        producer
            .send_offsets_to_transaction(&offsets, group, self.timeout)
            .map_err(ctx("send_offsets_to_transaction"))?;
        Ok(counts)
    }
}

/// A record for `topic`; no value makes a tombstone. Shared with the replay.
pub(crate) fn record<'a>(
    topic: &'a str,
    key: &'a [u8],
    value: Option<&'a [u8]>,
    headers: Option<OwnedHeaders>,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut record = FutureRecord::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    record
}

/// Which labelled counter a pending count goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Produced,
    DeadLettered,
    Outcome,
}
