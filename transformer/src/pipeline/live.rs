//! The live loop: raw topic -> one [`Processor`] per owned raw partition -> output topics, one
//! Kafka transaction per batch with the consumed offsets and a [`Checkpoint`] per partition
//! sent inside it.
//!
//! # A consumer group, exactly once (KIP-447)
//! Any number of instances subscribe to the raw topic in one consumer group (`group_id`,
//! cooperative-sticky assignment). Each has its own transactional producer
//! (`<transactional_id>-<instance_id>`) and sends the consumed offsets with the consumer's
//! group metadata, fetched for every transaction: a zombie that lost its partitions is fenced
//! by the group generation when it tries to commit, whatever its transactional id.
//!
//! Rebalances happen inside the consumer's poll (`recv`), which the loop only calls between
//! transactions: no transaction is ever open when partitions are revoked or lost, so there is
//! nothing to commit or abort then. Records of a revoked partition that were received for the
//! next batch but not yet processed are dropped: the new owner reads them again from the
//! committed offset. Newly assigned partitions are restored ([`restore_partitions`]) before any
//! of their records is processed.
//!
//! # One attempt ([`run_once`])
//! 1. Output topics created and schemas registered ([`prepare`]; the first attempt of a process
//!    registers, later ones reuse the ids, see [`Schemas`]); the transactional session
//!    opened, which fences an older instance with the same transactional id and aborts its
//!    open transaction.
//! 2. The raw topic subscribed; partitions restored as they are assigned.
//! 3. Batches of up to `batch_max_records` (or what arrived within `batch_max_wait_ms`). Per
//!    batch: begin; per event decode, process, send outputs or a dead letter; send one
//!    checkpoint per partition; send the offsets; commit. Any failure aborts the transaction and
//!    ends the attempt.
//!
//! The attempt's clients close on the blocking pool ([`OffRuntimeDrop`]), so that a failed
//! attempt ends, and `/readyz` turns 503, without waiting for them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline_io::kafka::{
    KafkaCallError, OffRuntimeDrop, TxnSession, TxnSettings, ctx, is_partition_eof, off_runtime,
};
use pipeline_io::registry::Registry;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance, StreamConsumer,
};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::PipelineError;
use super::codec::{Decoded, Sent, decode_raw, send_results};
use super::outputs::{Prepared, SchemaIds, prepare};
use super::restore::{Checkpoint, committed_offsets, restore_partitions};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::processor::{Mode, Processor, Source};

/// A change of the partitions this instance owns, as the loop acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Partitions newly assigned.
    Assigned(Vec<i32>),
    /// Partitions taken away.
    Revoked(Vec<i32>),
}

/// Consumer context of the raw topic: librdkafka statistics into the lag gauge, and the
/// rebalances, queued for the loop as [`Change`]s (they happen inside `recv`).
#[derive(Debug)]
pub struct RawContext {
    metrics: Arc<Metrics>,
    topic: String,
    changes: Mutex<Vec<Change>>,
    /// Whether `changes` has any: the loop looks after every record, without taking the lock.
    pending: AtomicBool,
}

impl RawContext {
    /// A context reporting the lag of `topic` into `metrics`.
    pub fn new(metrics: Arc<Metrics>, topic: impl Into<String>) -> Self {
        Self {
            metrics,
            topic: topic.into(),
            changes: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
        }
    }

    /// The changes since the last call, oldest first.
    pub fn take_changes(&self) -> Vec<Change> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        match self.changes.lock() {
            Ok(mut changes) => std::mem::take(&mut *changes),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn push(&self, change: Change) {
        match self.changes.lock() {
            Ok(mut changes) => changes.push(change),
            Err(poisoned) => poisoned.into_inner().push(change),
        }
        self.pending.store(true, Ordering::Release);
    }

    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        pipeline_io::kafka::partitions_in(tpl, &self.topic)
    }
}

impl ClientContext for RawContext {
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

impl ConsumerContext for RawContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let count = |change: &str, n: usize| {
            self.metrics
                .rebalanced_partitions
                .get_or_create(&Metrics::label("change", change))
                .inc_by(n as u64);
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                let ps = self.partitions(tpl);
                tracing::info!(partitions = ?ps, "raw partitions assigned");
                count("assigned", ps.len());
                self.push(Change::Assigned(ps));
            }
            Rebalance::Revoke(tpl) => {
                let ps = self.partitions(tpl);
                let lost = consumer.assignment_lost();
                tracing::info!(partitions = ?ps, lost, "raw partitions revoked");
                count(if lost { "lost" } else { "revoked" }, ps.len());
                self.push(Change::Revoked(ps));
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// Settings of the raw topic consumer (shared with the pass-through benchmark).
pub fn raw_consumer_config(config: &Config) -> rdkafka::ClientConfig {
    let mut c = config
        .kafka
        .client
        .group_consumer_config(&config.kafka.group_id);
    // Incremental rebalances: partitions move one by one, the others keep being processed.
    c.set("partition.assignment.strategy", "cooperative-sticky")
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

/// One attempt: set up, join the group, then the loop until shutdown, the end of the raw
/// topic (`stop_at_end`: every owned partition read to its end) or the first failure.
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

    let consumer: OffRuntimeDrop<Arc<StreamConsumer<RawContext>>> = OffRuntimeDrop::new(Arc::new(
        raw_consumer_config(config)
            .create_with_context(RawContext::new(Arc::clone(metrics), raw_topic))
            .map_err(ctx("creating the raw consumer"))?,
    ));
    consumer
        .subscribe(&[raw_topic])
        .map_err(ctx(format!("subscribing to {raw_topic}")))?;
    metrics.assigned_partitions.set(0);
    tracing::info!(
        raw_topic,
        partitions = raw_partitions.len(),
        transactional_id = %config.kafka.transactional_id,
        group_id = %config.kafka.group_id,
        prepared_ms = started.elapsed().as_millis() as u64,
        "transformer joining the group"
    );

    let mut batcher = Batcher {
        config,
        registry,
        ids,
        metrics,
        processors: HashMap::new(),
        assigned_once: false,
    };
    let max_wait = config.processing.batch_max_wait;
    let max_records = config.processing.batch_max_records;
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(max_records);
    // Owned partitions whose end was reached (only tracked with `stop_at_end`).
    let mut at_end: HashSet<i32> = HashSet::new();
    // How long one wait for a record lasts before the loop looks at its state again (an
    // instance that owns no partition receives nothing).
    let idle = Duration::from_millis(500);
    loop {
        batch.clear();
        if config.processing.stop_at_end
            && batcher.assigned_once
            && batcher.processors.keys().all(|p| at_end.contains(p))
        {
            tracing::info!("raw topic end reached and committed");
            break;
        }
        // Wait for the first message or shutdown, then fill the batch for at most max_wait.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            m = tokio::time::timeout(idle, consumer.recv()) => {
                if let Ok(m) = m {
                    take(m, &mut batch, &mut at_end)?;
                }
                batcher.apply(&consumer, &mut batch, &mut at_end).await?;
            }
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        while batch.len() < max_records {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(m) => take(m, &mut batch, &mut at_end)?,
                Err(_) => break,
            }
            batcher.apply(&consumer, &mut batch, &mut at_end).await?;
        }
        if batch.is_empty() {
            continue;
        }
        let group = consumer.group_metadata().ok_or_else(|| {
            ctx("consumer group metadata")(rdkafka::error::KafkaError::NoMessageReceived)
        })?;
        match batcher
            .transaction(&mut session, &batch, Arc::new(group))
            .await
        {
            Ok(()) => {}
            // The group moved on while the transaction was open: the consumer is still a
            // member and the producer still usable, so rewind rather than restart (a restart
            // would leave the group and rebalance it once more).
            Err(PipelineError::Kafka(e)) if e.is_abortable() => {
                tracing::warn!(error = %e, "transaction aborted; rewinding the owned partitions to their committed offsets");
                at_end.clear();
                batcher.rewind(&consumer).await?;
            }
            Err(e) => return Err(e),
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

/// What one transaction of the loop needs, and the state of the owned partitions.
struct Batcher<'a> {
    config: &'a Config,
    registry: Registry,
    ids: SchemaIds,
    metrics: &'a Metrics,
    /// One processor per owned raw partition.
    processors: HashMap<i32, Processor>,
    /// Whether the group has assigned this instance anything yet (even nothing).
    assigned_once: bool,
}

impl Batcher<'_> {
    /// Acts on the rebalances of the last `recv`: a revoked partition's processor is dropped,
    /// with its records in `batch`; newly assigned partitions are restored.
    async fn apply(
        &mut self,
        consumer: &Arc<StreamConsumer<RawContext>>,
        batch: &mut Vec<OwnedMessage>,
        at_end: &mut HashSet<i32>,
    ) -> Result<(), PipelineError> {
        for change in consumer.context().take_changes() {
            match change {
                Change::Revoked(ps) => {
                    for p in &ps {
                        self.processors.remove(p);
                        at_end.remove(p);
                        self.metrics
                            .consumer_lag
                            .remove(&Metrics::label("partition", &p.to_string()));
                    }
                    let before = batch.len();
                    batch.retain(|m| !ps.contains(&m.partition()));
                    if batch.len() < before {
                        tracing::info!(
                            partitions = ?ps,
                            dropped = before - batch.len(),
                            "records of revoked partitions left to their new owner"
                        );
                    }
                }
                Change::Assigned(ps) => {
                    self.assigned_once = true;
                    self.restore(consumer, &ps).await?;
                    self.metrics.set_ready(true);
                }
            }
            self.metrics
                .assigned_partitions
                .set(i64::try_from(self.processors.len()).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    /// Restores the processors of `partitions` as of their committed offsets, which it returns.
    async fn restore(
        &mut self,
        consumer: &Arc<StreamConsumer<RawContext>>,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, PipelineError> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        let committed = committed_offsets(self.config, consumer, partitions).await?;
        let restored =
            restore_partitions(self.config, &self.registry, partitions, &committed).await?;
        self.processors.extend(restored);
        Ok(committed)
    }

    /// After an aborted transaction: every owned partition restored anew and read again from
    /// its committed offset, as a newly assigned one would be (the aborted batch changed the
    /// processors' state).
    async fn rewind(
        &mut self,
        consumer: &Arc<StreamConsumer<RawContext>>,
    ) -> Result<(), PipelineError> {
        let mut ps: Vec<i32> = self.processors.keys().copied().collect();
        ps.sort_unstable();
        self.processors.clear();
        if ps.is_empty() {
            return Ok(());
        }
        let committed = self.restore(consumer, &ps).await?;
        let mut positions = TopicPartitionList::new();
        for &p in &ps {
            let offset = committed
                .get(&p)
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            positions
                .add_partition_offset(&self.config.kafka.raw_topic, p, offset)
                .map_err(ctx("building positions"))?;
        }
        let (c, timeout) = (Arc::clone(consumer), self.config.kafka.client.timeout);
        let sought = off_runtime("seeking the raw partitions back", move || {
            c.seek_partitions(positions, timeout)
        })
        .await?;
        for e in sought.elements() {
            if let Err(error) = e.error() {
                return Err(ctx(format!("seeking raw partition {}", e.partition()))(error).into());
            }
        }
        Ok(())
    }

    /// One batch in one transaction; aborted on any failure.
    async fn transaction(
        &mut self,
        session: &mut TxnSession,
        batch: &[OwnedMessage],
        group: Arc<ConsumerGroupMetadata>,
    ) -> Result<(), PipelineError> {
        session.begin()?;
        let counts = match self.fill(session, batch, group).await {
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
        group: Arc<ConsumerGroupMetadata>,
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
                    let processor =
                        self.processors
                            .get_mut(&p)
                            .ok_or_else(|| PipelineError::NotOwned {
                                partition: p,
                                offset: o,
                            })?;
                    match processor.process(&ev, source, Mode::Live, &mut outputs) {
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
                in_progress: self
                    .processors
                    .get(&p)
                    .map(Processor::in_progress)
                    .unwrap_or_default(),
            };
            let value = serde_json::to_vec(&checkpoint).unwrap_or_default();
            let key = Checkpoint::key(raw_topic, p);
            session
                .send_to(&topics.state, Some(p), key.as_bytes(), Some(&value), None)
                .await?;
            offsets
                .add_partition_offset(raw_topic, p, Offset::Offset(n))
                .map_err(ctx("building offsets"))?;
        }
        session.send_offsets(offsets, group).await?;
        Ok(counts)
    }
}
