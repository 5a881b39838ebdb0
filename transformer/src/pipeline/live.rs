//! The live loop: raw topic -> [`Processor`] -> output topics, one Kafka transaction per batch
//! with the consumed offsets and a [`Checkpoint`] per partition sent inside it.
//!
//! # One attempt ([`run_once`])
//! 1. Output topics created and schemas registered ([`prepare`]; the first attempt of a process
//!    registers, later ones reuse the ids, see [`Schemas`]); the transactional session
//!    opened, which fences an older instance with the same `transactional_id` and aborts its
//!    open transaction.
//! 2. State restored ([`super::restore`]).
//! 3. The raw topic is read from the group's committed offsets, in batches of up to
//!    `batch_max_records` (or what arrived within `batch_max_wait_ms`). Per batch: begin; per
//!    event decode, process, send outputs or a dead letter; send one checkpoint per partition;
//!    send the offsets; commit. Any failure aborts the transaction and ends the attempt.
//!
//! The attempt's clients close on the blocking pool ([`OffRuntimeDrop`]), so that a failed
//! attempt ends, and `/readyz` turns 503, without waiting for them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pipeline_io::kafka::{
    KafkaCallError, OffRuntimeDrop, TxnSession, TxnSettings, ctx, is_partition_eof, off_runtime,
};
use pipeline_io::registry::Registry;
use rdkafka::consumer::{Consumer, ConsumerContext, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::PipelineError;
use super::codec::{Decoded, Sent, decode_raw, send_results};
use super::outputs::{Prepared, SchemaIds, prepare};
use super::restore::{Checkpoint, restore_in_progress, restore_outputs};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::processor::{Mode, Processor, Source};

/// Consumer context that turns librdkafka statistics into the lag gauge and the broker
/// reachability behind `/readyz`.
#[derive(Debug)]
pub struct LagContext {
    metrics: Arc<Metrics>,
    topic: String,
}

impl LagContext {
    /// A context reporting the lag of `topic` into `metrics`.
    pub fn new(metrics: Arc<Metrics>, topic: impl Into<String>) -> Self {
        Self {
            metrics,
            topic: topic.into(),
        }
    }
}

impl ClientContext for LagContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // End of partition is expected (`stop_at_end`), not an error to log.
        if !is_partition_eof(&error) {
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

/// Settings of the raw topic consumer (shared with the pass-through benchmark).
pub fn raw_consumer_config(config: &Config) -> rdkafka::ClientConfig {
    let mut c = config.kafka.client.client_config();
    c.set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        // Bounded wait of an empty fetch: quick start and low latency when the topic is idle.
        .set("fetch.wait.max.ms", "100")
        .set(
            "enable.partition.eof",
            if config.processing.stop_at_end {
                "true"
            } else {
                "false"
            },
        );
    c
}

/// The transactional session settings of the loop (also used by the pass-through benchmark
/// and the replay, so that every writer runs with the same client settings).
pub fn txn_settings(config: &Config, transactional_id: &str) -> TxnSettings {
    TxnSettings {
        transactional_id: transactional_id.to_owned(),
        transaction_timeout: config.kafka.transaction_timeout,
        message_timeout: config.kafka.transaction_timeout,
        compression_type: "lz4".into(),
        linger: std::time::Duration::from_millis(5),
    }
}

/// What the attempts of one process share: one registry client, whose cache holds the writer
/// schemas seen so far, and the output schema ids once registered. A restart after a broker
/// outage then needs Kafka alone, unless it meets a raw schema it has not seen.
#[derive(Debug)]
pub struct Schemas {
    /// The registry client.
    pub registry: Registry,
    /// Schema ids of the output subjects, once registered.
    pub ids: Option<SchemaIds>,
}

/// One attempt: set up, restore, then the loop until shutdown, the end of the raw topic
/// (`stop_at_end`) or the first failure.
///
/// # Errors
/// Any failure; the caller decides whether to restart.
pub async fn run_once(
    config: &Config,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
    schemas: &mut Schemas,
) -> Result<(), PipelineError> {
    let started = std::time::Instant::now();
    let raw_topic = config.kafka.raw_topic.as_str();
    let Prepared {
        raw_partitions,
        ids,
    } = prepare(
        config,
        &schemas.registry,
        &config.kafka.topics,
        true,
        schemas.ids,
    )
    .await?;
    schemas.ids = Some(ids);
    let registry = schemas.registry.clone();
    let mut session = TxnSession::open(
        &config.kafka.client,
        &txn_settings(config, &config.kafka.transactional_id),
    )
    .await?;
    let prepared_ms = started.elapsed().as_millis() as u64;

    let mut processor = Processor::new(config.processing.activity_dedup_capacity)
        .with_max_delete_share(config.processing.max_delete_share);
    restore_outputs(config, &registry, &mut processor).await?;
    let restored_ms = started.elapsed().as_millis() as u64;

    let consumer: OffRuntimeDrop<Arc<StreamConsumer<LagContext>>> = OffRuntimeDrop::new(Arc::new(
        raw_consumer_config(config)
            .create_with_context(LagContext::new(Arc::clone(metrics), raw_topic))
            .map_err(ctx("creating the raw consumer"))?,
    ));
    let mut wanted = TopicPartitionList::new();
    for p in &raw_partitions {
        wanted.add_partition(raw_topic, *p);
    }
    let (c, timeout) = (Arc::clone(&consumer), config.kafka.client.timeout);
    let committed = off_runtime("reading committed offsets", move || {
        c.committed_offsets(wanted, timeout)
    })
    .await?;
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
            .add_partition_offset(raw_topic, e.partition(), offset)
            .map_err(ctx("building the assignment"))?;
    }
    restore_in_progress(config, &registry, &mut processor, &committed_at).await?;
    consumer
        .assign(&start)
        .map_err(ctx("assigning the raw topic"))?;
    let group = Arc::new(consumer.group_metadata().ok_or_else(|| {
        ctx("consumer group metadata")(rdkafka::error::KafkaError::NoMessageReceived)
    })?);
    metrics.set_ready(true);
    tracing::info!(
        raw_topic,
        partitions = raw_partitions.len(),
        prepared_ms,
        restored_ms,
        ready_ms = started.elapsed().as_millis() as u64,
        "transformer ready"
    );

    let mut batcher = Batcher {
        config,
        registry,
        ids,
        metrics,
        processor,
        group,
    };
    let max_wait = config.processing.batch_max_wait;
    let max_records = config.processing.batch_max_records;
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(max_records);
    // Partitions whose end was reached (only tracked with `stop_at_end`).
    let mut at_end: HashSet<i32> = HashSet::new();
    loop {
        batch.clear();
        if config.processing.stop_at_end && at_end.len() >= raw_partitions.len() {
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
        while batch.len() < max_records {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(m) => take(m, &mut batch, &mut at_end)?,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            batcher.transaction(&mut session, &batch).await?;
        }
    }
    tracing::info!("transformer stopped");
    Ok(())
}

/// Adds a received message to the batch, or notes a partition's end.
fn take(
    m: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
    batch: &mut Vec<OwnedMessage>,
    at_end: &mut HashSet<i32>,
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
        Err(e) => Err(ctx("reading the raw topic")(e)),
    }
}

/// Which labelled counter a pending count goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Produced,
    DeadLettered,
    Truncated,
    Outcome,
}

/// What one transaction of the loop needs.
struct Batcher<'a> {
    config: &'a Config,
    registry: Registry,
    ids: SchemaIds,
    metrics: &'a Metrics,
    processor: Processor,
    group: Arc<ConsumerGroupMetadata>,
}

impl Batcher<'_> {
    /// One batch in one transaction; aborted on any failure.
    async fn transaction(
        &mut self,
        session: &mut TxnSession,
        batch: &[OwnedMessage],
    ) -> Result<(), PipelineError> {
        session.begin()?;
        let counts = match self.fill(session, batch).await {
            Ok(counts) => counts,
            Err(e) => {
                self.metrics.transactions_aborted.inc();
                session.abort().await;
                return Err(e);
            }
        };
        if let Err(e) = session.commit().await {
            self.metrics.transactions_aborted.inc();
            return Err(e.into());
        }
        // Counted only once committed, so that aborted work is not counted twice.
        self.metrics.transactions_committed.inc();
        self.metrics.consumed.inc_by(batch.len() as u64);
        for ((family, label), n) in counts {
            let (metric, name) = match family {
                Family::Produced => (&self.metrics.produced, "topic"),
                Family::DeadLettered => (&self.metrics.dead_lettered, "kind"),
                Family::Truncated => (&self.metrics.dead_letters_truncated, "kind"),
                Family::Outcome => (&self.metrics.notes, "outcome"),
            };
            metric
                .get_or_create(&Metrics::label(name, &label))
                .inc_by(n);
        }
        Ok(())
    }

    async fn fill(
        &mut self,
        session: &mut TxnSession,
        batch: &[OwnedMessage],
    ) -> Result<HashMap<(Family, String), u64>, PipelineError> {
        let raw_topic = self.config.kafka.raw_topic.as_str();
        let topics = &self.config.kafka.topics;
        let mut counts: HashMap<(Family, String), u64> = HashMap::new();
        let mut count = |family: Family, label: &str| {
            *counts.entry((family, label.to_owned())).or_default() += 1;
        };
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut outputs = Vec::new();
        for m in batch {
            let (p, o) = (m.partition(), m.offset());
            next.insert(p, o + 1);
            let failure = match decode_raw(&self.registry, m.key(), m.payload()).await? {
                Decoded::Poison { kind, error } => Some((kind, error)),
                Decoded::Event(ev) => {
                    let source = Source {
                        topic: raw_topic,
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
            let failure = failure.as_ref().map(|(k, e)| (*k, e.as_str()));
            send_results(
                session,
                (topics, self.ids),
                raw_topic,
                m,
                failure,
                &mut outputs,
                |sent| match sent {
                    Sent::Output(topic) => count(Family::Produced, topic),
                    Sent::DeadLetter { kind, truncated } => {
                        count(Family::Produced, &topics.dead_letter);
                        count(Family::DeadLettered, kind);
                        if truncated {
                            count(Family::Truncated, kind);
                        }
                    }
                },
            )
            .await?;
        }
        let mut offsets = TopicPartitionList::new();
        for (&p, &n) in &next {
            let checkpoint = Checkpoint {
                committed_offset: n,
                in_progress: self.processor.in_progress(p),
            };
            let value = serde_json::to_vec(&checkpoint).unwrap_or_default();
            let key = Checkpoint::key(raw_topic, p);
            session
                .send(&topics.state, key.as_bytes(), Some(&value), None)
                .await?;
            offsets
                .add_partition_offset(raw_topic, p, Offset::Offset(n))
                .map_err(ctx("building offsets"))?;
        }
        session
            .send_offsets(offsets, Arc::clone(&self.group))
            .await?;
        Ok(counts)
    }
}
