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
//! Rebalances happen inside the consumer's poll (`recv`), which the loop calls while the
//! previous batch's transaction may still be committing (see below). A revoked partition's
//! processor is dropped, and so is what its records added to the batch being collected: the
//! new owner reads them again from the committed offset. The transaction in flight still holds
//! that partition's outputs and offsets: if it commits, it was still this instance's generation
//! and the new owner's offset fetch (`require_stable`, `read_committed`) waits for it; if the
//! generation moved on, the commit is refused and aborted, and the loop rewinds. Newly assigned
//! partitions are restored ([`restore_partitions`]) before any of their records is processed.
//!
//! # One attempt ([`run_once`])
//! 1. Output topics created ([`prepare_topics`]), and meanwhile the transactional session
//!    opened, which fences an older instance with the same transactional id and aborts its open
//!    transaction. The output schemas are registered on a task of their own, waited for only by
//!    the first record staged ([`Ids`]; the first attempt of a process registers, later ones
//!    reuse the ids, see [`Schemas`]).
//! 2. The raw topic subscribed, before step 1, so that librdkafka joins the group meanwhile;
//!    partitions restored as they are assigned (at the first poll, after step 1). A newly
//!    assigned partition without a committed offset is sought to its beginning at once, while
//!    the restore reads ([`Batcher::assign`]).
//! 3. Batches of up to `batch_max_records` (or what arrived within `batch_max_wait_ms`, or
//!    [`BATCH_MAX_BYTES`] of outputs). Each
//!    record is decoded and processed as it is received, and what it produced is staged
//!    ([`Staged`]): outputs or a dead letter, then one checkpoint per partition. The batch's
//!    transaction (begin, send the staged records, send the offsets, commit) then runs on its
//!    own task while the next batch is collected and processed: the CPU work of one batch
//!    overlaps the delivery and commit round trips of the previous one. One transaction is in
//!    flight at most, and the next begins only once it committed. A transaction that fails
//!    aborts; the batch collected meanwhile, processed on top of it, is dropped, and the
//!    partitions rewind to their committed offsets (a rebalance) or the attempt ends.
//!
//! The attempt's clients close on the blocking pool ([`OffRuntimeDrop`]), so that a failed
//! attempt ends, and `/readyz` turns 503, without waiting for them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use pipeline_io::kafka::{
    OffRuntimeDrop, TxnSession, TxnSettings, ctx, is_partition_eof, off_runtime,
};
use pipeline_io::registry::Registry;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PipelineError;
use super::codec::{Sent, Staged, decode_raw, stage_results};
use super::outputs::{OutputError, SchemaIds, prepare_topics, register_outputs};
use super::restore::{Checkpoint, committed_offsets, restore_partitions};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::processor::{Mode, Output, Processor, Source};
use schemas::raw::RawEvent;
use schemas::topics::OutputTopics;

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
    /// Wakes a loop waiting for its first record when a change comes ([`RawContext::changed`]).
    changed: tokio::sync::Notify,
}

impl RawContext {
    /// A context reporting the lag of `topic` into `metrics`.
    pub fn new(metrics: Arc<Metrics>, topic: impl Into<String>) -> Self {
        Self {
            metrics,
            topic: topic.into(),
            changes: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Completes when a change was pushed since the last time it completed (at once if one
    /// was pushed while nothing waited).
    pub async fn changed(&self) {
        self.changed.notified().await;
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
        self.changed.notify_one();
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
    /// Schema ids of the output subjects, set once an attempt registered them.
    pub ids: Arc<OnceLock<SchemaIds>>,
}

/// The output schema ids of one attempt: known, or being registered on a task of their own.
///
/// The first attempt of a process registers the output schemas while it creates the topics,
/// opens the transactional session and joins the group, and waits for the ids only to stage its
/// first record: registering took about 60 ms longer than the topics at every start measured
/// here (transformer/README.md, "Benchmarks"). A failed registration ends the attempt as soon as
/// it fails, with or without records ([`Batcher::collect`]).
#[derive(Debug)]
enum Ids {
    Known(SchemaIds),
    Registering(JoinHandle<Result<SchemaIds, OutputError>>),
}

impl Ids {
    /// The ids `schemas` keeps, or their registration started.
    fn start(schemas: &Schemas, topics: &OutputTopics) -> Self {
        if let Some(ids) = schemas.ids.get() {
            return Self::Known(*ids);
        }
        let (registry, topics, keep) = (
            schemas.registry.clone(),
            topics.clone(),
            Arc::clone(&schemas.ids),
        );
        Self::Registering(tokio::spawn(async move {
            let ids = register_outputs(&registry, &topics).await?;
            // Kept for the later attempts, even if this one has ended meanwhile.
            let _ = keep.set(ids);
            Ok(ids)
        }))
    }

    /// Whether the registration is still in flight.
    fn pending(&self) -> bool {
        matches!(self, Self::Registering(_))
    }

    /// The ids, once registered.
    async fn get(&mut self) -> Result<SchemaIds, PipelineError> {
        match self {
            Self::Known(ids) => Ok(*ids),
            Self::Registering(task) => {
                let ids = task
                    .await
                    .map_err(|e| PipelineError::Registration(e.to_string()))??;
                *self = Self::Known(ids);
                Ok(ids)
            }
        }
    }
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
    let ids = Ids::start(schemas, &config.kafka.topics);
    let consumer: OffRuntimeDrop<Arc<StreamConsumer<RawContext>>> = OffRuntimeDrop::new(Arc::new(
        raw_consumer_config(config)
            .create_with_context(RawContext::new(Arc::clone(metrics), raw_topic))
            .map_err(ctx("creating the raw consumer"))?,
    ));
    // Subscribed first: librdkafka joins the group in its own threads while the outputs and
    // the session are prepared (about 20 ms of each start); the assignment comes with the
    // first poll, after them.
    consumer
        .subscribe(&[raw_topic])
        .map_err(ctx(format!("subscribing to {raw_topic}")))?;
    // The outputs and the transactional session are independent: both at once.
    let (raw_partitions, session) = tokio::try_join!(
        async {
            prepare_topics(config, &config.kafka.topics, true)
                .await
                .map_err(PipelineError::from)
        },
        async {
            TxnSession::open(
                &config.kafka.client,
                &txn_settings(config, &config.kafka.transactional_id),
            )
            .await
            .map_err(PipelineError::from)
        },
    )?;
    let registry = schemas.registry.clone();

    metrics.assigned_partitions.set(0);
    tracing::info!(
        raw_topic,
        partitions = raw_partitions.len(),
        transactional_id = %config.kafka.transactional_id,
        group_id = %config.kafka.group_id,
        prepared_ms = started.elapsed().as_millis() as u64,
        "transformer prepared: outputs, session, group join under way"
    );

    let mut batcher = Batcher {
        config,
        registry,
        ids,
        metrics,
        processors: HashMap::new(),
        assigned_once: false,
        outputs: Vec::new(),
        event: RawEvent::default(),
    };
    // Owned partitions whose end was reached (only tracked with `stop_at_end`).
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut batch = Batch::default();
    // The staging buffers of the batch committed last, emptied, for the next batch to fill
    // (a batch would otherwise grow its buffer from nothing, copying it at every doubling).
    let mut spare = Staged::default();
    let mut txn = Txn::Idle(session);
    loop {
        let collected = batcher
            .collect(&consumer, &mut batch, &mut at_end, shutdown)
            .await;
        // Every path below waits for the transaction in flight first: the loop never ends, nor
        // starts another transaction, with one open.
        let (session, outcome) = txn.settle().await?;
        match outcome {
            Ok(done) => {
                if let Some(done) = done {
                    batcher.committed(&done);
                    spare = done.staged;
                }
            }
            // The group moved on while the transaction was open: the consumer is still a
            // member and the producer still usable, so rewind rather than restart (a restart
            // would leave the group and rebalance it once more). The batch collected meanwhile
            // was processed on top of the aborted one: dropped.
            Err(PipelineError::Kafka(e)) if e.is_abortable() => {
                metrics.transactions_aborted.inc();
                tracing::warn!(error = %e, "transaction aborted; rewinding the owned partitions to their committed offsets");
                batch = Batch::default();
                at_end.clear();
                batcher.rewind(&consumer).await?;
                txn = Txn::Idle(session);
                continue;
            }
            Err(e) => {
                metrics.transactions_aborted.inc();
                return Err(e);
            }
        }
        collected?;
        // Shutdown: what was collected is left to be read again.
        if shutdown.is_cancelled() {
            break;
        }
        if batch.consumed() == 0 {
            if batcher.at_end(&at_end) {
                tracing::info!("raw topic end reached and committed");
                break;
            }
            txn = Txn::Idle(session);
            continue;
        }
        batcher.checkpoint(&mut batch);
        let group = consumer.group_metadata().ok_or_else(|| {
            ctx("consumer group metadata")(rdkafka::error::KafkaError::NoMessageReceived)
        })?;
        let ready = std::mem::replace(
            &mut batch,
            Batch {
                staged: std::mem::take(&mut spare),
                ..Batch::default()
            },
        );
        let raw_topic = raw_topic.to_owned();
        let mut session = session;
        txn = Txn::Committing(tokio::spawn(async move {
            let outcome = transaction(&mut session, ready, &raw_topic, Arc::new(group)).await;
            (session, outcome)
        }));
        // A task spawned from a worker waits in that worker's own slot, which no other worker
        // takes: let it start (send its records) before this one processes the next batch.
        tokio::task::yield_now().await;
    }
    tracing::info!("transformer stopped");
    Ok(())
}

/// The transactional session: idle, or committing a batch on its own task, which hands the
/// session back with the outcome.
enum Txn {
    Idle(TxnSession),
    Committing(JoinHandle<(TxnSession, Result<Batch, PipelineError>)>),
}

impl Txn {
    /// Waits for the transaction in flight, if any: the session, and the batch it committed.
    ///
    /// # Errors
    /// The task failed (a panic): the session is lost with it.
    async fn settle(
        self,
    ) -> Result<(TxnSession, Result<Option<Batch>, PipelineError>), PipelineError> {
        match self {
            Txn::Idle(session) => Ok((session, Ok(None))),
            Txn::Committing(task) => {
                let (session, outcome) = task
                    .await
                    .map_err(|e| PipelineError::Transaction(e.to_string()))?;
                Ok((session, outcome.map(Some)))
            }
        }
    }
}

/// Records processed between two yields of the collecting task.
const YIELD_EVERY: u64 = 128;

/// Most key and value bytes of outputs one batch stages before it closes: what librdkafka's
/// local queue holds (`queue.buffering.max.kbytes`, see [`TxnSession::open`]), so that a batch
/// of large records neither holds much memory nor waits for room in that queue.
pub const BATCH_MAX_BYTES: usize = 32 << 20;

/// Whether a batch of `consumed` raw records whose outputs take `bytes` is full
/// (`max_records` or [`BATCH_MAX_BYTES`]).
fn batch_full(consumed: u64, bytes: usize, max_records: u64) -> bool {
    consumed >= max_records || bytes >= BATCH_MAX_BYTES
}

/// Which labelled counter a pending count goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Produced,
    DeadLettered,
    Truncated,
    Outcome,
}

/// One batch: what its raw records produced, staged for its transaction, with the offsets to
/// commit and the counts to add once committed, per raw partition (a revoked partition's share
/// is dropped).
#[derive(Debug, Default)]
struct Batch {
    staged: Staged,
    /// Per raw partition: the offset after its last record, and how many records it gave.
    next: BTreeMap<i32, (i64, u64)>,
    /// (partition, family, label, count); a handful of labels, so a list.
    counts: Vec<(i32, Family, String, u64)>,
}

impl Batch {
    /// Raw records in the batch.
    fn consumed(&self) -> u64 {
        self.next.values().map(|(_, n)| n).sum()
    }

    /// Adds one to `counts`' entry for (`partition`, `family`, `label`).
    fn count(
        counts: &mut Vec<(i32, Family, String, u64)>,
        partition: i32,
        family: Family,
        label: &str,
    ) {
        match counts
            .iter_mut()
            .find(|(p, f, l, _)| *p == partition && *f == family && l == label)
        {
            Some((.., n)) => *n += 1,
            None => counts.push((partition, family, label.to_owned(), 1)),
        }
    }

    /// Forgets what the records of `partitions` produced: their new owner reads them again.
    /// Returns how many records that was.
    fn drop_partitions(&mut self, partitions: &[i32]) -> u64 {
        let dropped = partitions
            .iter()
            .filter_map(|p| self.next.remove(p))
            .map(|(_, n)| n)
            .sum();
        self.staged.drop_partitions(|p| partitions.contains(&p));
        self.counts.retain(|(p, ..)| !partitions.contains(p));
        dropped
    }
}

/// One batch in one transaction: begin, the staged records, the consumed offsets, commit.
/// Aborted on any failure. Returns the batch (its counts) once committed.
async fn transaction(
    session: &mut TxnSession,
    mut batch: Batch,
    raw_topic: &str,
    group: Arc<ConsumerGroupMetadata>,
) -> Result<Batch, PipelineError> {
    session.begin().await?;
    let sent = async {
        batch.staged.send(session).await?;
        let mut offsets = TopicPartitionList::new();
        for (&p, &(next, _)) in &batch.next {
            offsets
                .add_partition_offset(raw_topic, p, Offset::Offset(next))
                .map_err(ctx("building offsets"))?;
        }
        session.send_offsets(offsets, group).await
    }
    .await;
    if let Err(e) = sent {
        session.abort().await;
        return Err(e.into());
    }
    // On failure the commit aborts.
    session.commit().await?;
    Ok(batch)
}

/// What [`Batcher::apply`] did to the partitions: records of these received before it are
/// dropped ([`Batcher::take`]).
#[derive(Debug, Default)]
struct Applied {
    /// Revoked: their new owner reads them again.
    revoked: Vec<i32>,
    /// Sought to their beginning: they come again.
    sought: Vec<i32>,
}

/// What the loop needs to process batches, and the state of the owned partitions.
struct Batcher<'a> {
    config: &'a Config,
    registry: Registry,
    ids: Ids,
    metrics: &'a Metrics,
    /// One processor per owned raw partition.
    processors: HashMap<i32, Processor>,
    /// Whether the group has assigned this instance anything yet (even nothing).
    assigned_once: bool,
    /// One record's outputs (reused).
    outputs: Vec<Output>,
    /// The raw event being processed (reused: decoding allocates nothing once warm).
    event: RawEvent,
}

impl Batcher<'_> {
    /// With `stop_at_end`: whether every owned partition was read to its end.
    fn at_end(&self, at_end: &HashSet<i32>) -> bool {
        self.config.processing.stop_at_end
            && self.assigned_once
            && self.processors.keys().all(|p| at_end.contains(p))
    }

    /// Fills `batch`: waits up to 500 ms for a first record (or the shutdown, or a rebalance,
    /// which it acts on before it returns), then takes
    /// records for at most `batch_max_wait` until [`batch_full`]. Each record is decoded,
    /// processed and its outputs staged as it arrives, so this overlaps the previous batch's
    /// commit. Returns at once when [`Batcher::at_end`].
    async fn collect(
        &mut self,
        consumer: &Arc<StreamConsumer<RawContext>>,
        batch: &mut Batch,
        at_end: &mut HashSet<i32>,
        shutdown: &CancellationToken,
    ) -> Result<(), PipelineError> {
        if self.at_end(at_end) {
            return Ok(());
        }
        // How long one wait for a record lasts before the loop looks at its state again (an
        // instance that owns no partition receives nothing).
        let idle = Duration::from_millis(500);
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            // The output schemas' registration ended (its failure ends the attempt).
            ids = self.ids.get(), if self.ids.pending() => {
                ids?;
                return Ok(());
            }
            // A rebalance (it happens inside `recv`) is acted on at once: a new partition is
            // restored while librdkafka fetches its first records, instead of after they came
            // (about 0.1 s at every start, measured from the logs).
            () = consumer.context().changed() => {
                self.apply(consumer, batch, at_end).await?;
                return Ok(());
            }
            m = tokio::time::timeout(idle, consumer.recv()) => m,
        };
        match first {
            Ok(m) => self.take(consumer, m, batch, at_end).await?,
            Err(_) => {
                self.apply(consumer, batch, at_end).await?;
                return Ok(());
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.processing.batch_max_wait;
        let max_records = self.config.processing.batch_max_records as u64;
        // One stream for the batch (each `recv` would register and drop a waker slot), and a
        // timer only when no record is queued: while records are queued, the deadline is
        // looked at every `YIELD_EVERY` records instead of arming a timer for each.
        let mut records = consumer.stream();
        while !self.at_end(at_end)
            && !batch_full(batch.consumed(), batch.staged.bytes(), max_records)
        {
            let m = match records.next().now_or_never() {
                Some(m) => m,
                None => match tokio::time::timeout_at(deadline, records.next()).await {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            // A `StreamConsumer`'s stream never ends.
            let Some(m) = m else { break };
            self.take(consumer, m, batch, at_end).await?;
            // The stream is ready at once while records are queued, so this loop would not
            // yield for a whole batch: let the transaction in flight (woken on this worker) go
            // on.
            if batch.consumed().is_multiple_of(YIELD_EVERY) {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    /// Acts on what `recv` gave: rebalances first, then the record (processed into `batch`) or
    /// a partition's end.
    async fn take(
        &mut self,
        consumer: &Arc<StreamConsumer<RawContext>>,
        m: Result<BorrowedMessage<'_>, KafkaError>,
        batch: &mut Batch,
        at_end: &mut HashSet<i32>,
    ) -> Result<(), PipelineError> {
        let applied = self.apply(consumer, batch, at_end).await?;
        match m {
            Ok(m) => {
                let p = m.partition();
                if applied.revoked.contains(&p) && !self.processors.contains_key(&p) {
                    // Received before the revocation: its new owner reads it again.
                    return Ok(());
                }
                if applied.sought.contains(&p) {
                    // Fetched by librdkafka's own reset before the seek to the beginning: it
                    // comes again from there.
                    return Ok(());
                }
                at_end.remove(&p);
                self.stage(&m, batch).await
            }
            Err(KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                Ok(())
            }
            Err(e) => Err(ctx("reading the raw topic")(e).into()),
        }
    }

    /// Acts on the rebalances of the last `recv`: a revoked partition's processor is dropped,
    /// with what its records added to `batch`; newly assigned partitions are taken on
    /// ([`Batcher::assign`]).
    async fn apply(
        &mut self,
        consumer: &Arc<StreamConsumer<RawContext>>,
        batch: &mut Batch,
        at_end: &mut HashSet<i32>,
    ) -> Result<Applied, PipelineError> {
        let mut revoked = Vec::new();
        let mut sought = Vec::new();
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
                    let dropped = batch.drop_partitions(&ps);
                    if dropped > 0 {
                        tracing::info!(
                            partitions = ?ps,
                            dropped,
                            "records of revoked partitions left to their new owner"
                        );
                    }
                    revoked.extend(ps);
                }
                Change::Assigned(ps) => {
                    self.assigned_once = true;
                    sought.extend(self.assign(consumer, &ps).await?);
                    self.metrics.set_ready(true);
                }
            }
            self.metrics
                .assigned_partitions
                .set(i64::try_from(self.processors.len()).unwrap_or(i64::MAX));
        }
        Ok(Applied { revoked, sought })
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

    /// Takes on newly assigned `partitions`: their processors restored as of the group's
    /// committed offsets while those without one are sought to their beginning
    /// ([`Batcher::start_fresh`]), so that librdkafka fetches their first records during the
    /// restore (which opens four readers: 20–80 ms at a fresh start) instead of after it.
    /// Returns the partitions sought.
    async fn assign(
        &mut self,
        consumer: &Arc<StreamConsumer<RawContext>>,
        partitions: &[i32],
    ) -> Result<Vec<i32>, PipelineError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let committed = committed_offsets(self.config, consumer, partitions).await?;
        let (restored, sought) = tokio::join!(
            restore_partitions(self.config, &self.registry, partitions, &committed),
            self.start_fresh(consumer, partitions, &committed),
        );
        self.processors.extend(restored?);
        Ok(sought)
    }

    /// Starts the newly assigned `partitions` the group has no offset for at their beginning
    /// now, and returns those sought. librdkafka starts them there too (`auto.offset.reset` is
    /// always `earliest`), but only after a fixed 100 ms: it delays the offset query of a
    /// partition without a committed offset (`rd_kafka_offset_reset`), which every fresh group
    /// paid before its first record. A seek that fails only leaves that to happen. A record of
    /// a sought partition received before the seek is delivered again after it, so the caller
    /// drops it.
    async fn start_fresh(
        &self,
        consumer: &Arc<StreamConsumer<RawContext>>,
        partitions: &[i32],
        committed: &HashMap<i32, i64>,
    ) -> Vec<i32> {
        let positions: Vec<(i32, Offset)> = partitions
            .iter()
            .filter(|p| !committed.contains_key(p))
            .map(|&p| (p, Offset::Beginning))
            .collect();
        if positions.is_empty() {
            return Vec::new();
        }
        match self
            .seek(consumer, positions, "seeking fresh raw partitions")
            .await
        {
            Ok(outcomes) => outcomes
                .into_iter()
                .filter_map(|(p, outcome)| match outcome {
                    Ok(()) => Some(p),
                    Err(error) => {
                        tracing::debug!(partition = p, %error, "fresh raw partition left to librdkafka's reset");
                        None
                    }
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "fresh raw partitions left to librdkafka's reset");
                Vec::new()
            }
        }
    }

    /// Seeks raw partitions to `positions`, waiting until librdkafka performed each seek (so no
    /// record from before it is delivered after it); each partition's outcome.
    async fn seek(
        &self,
        consumer: &Arc<StreamConsumer<RawContext>>,
        positions: Vec<(i32, Offset)>,
        what: &'static str,
    ) -> Result<Vec<(i32, KafkaResult<()>)>, PipelineError> {
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in positions {
            tpl.add_partition_offset(&self.config.kafka.raw_topic, p, offset)
                .map_err(ctx("building positions"))?;
        }
        let (c, timeout) = (Arc::clone(consumer), self.config.kafka.client.timeout);
        let sought = off_runtime(what, move || c.seek_partitions(tpl, timeout)).await?;
        Ok(sought
            .elements()
            .iter()
            .map(|e| (e.partition(), e.error()))
            .collect())
    }

    /// After an aborted transaction: every owned partition restored anew and read again from
    /// its committed offset, as a newly assigned one would be (the aborted batch, and the one
    /// processed after it, changed the processors' state).
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
        let positions = ps
            .iter()
            .map(|&p| {
                let offset = committed
                    .get(&p)
                    .map_or(Offset::Beginning, |&o| Offset::Offset(o));
                (p, offset)
            })
            .collect();
        for (p, outcome) in self
            .seek(consumer, positions, "seeking the raw partitions back")
            .await?
        {
            if let Err(error) = outcome {
                return Err(ctx(format!("seeking raw partition {p}"))(error).into());
            }
        }
        Ok(())
    }

    /// Decodes and processes one raw record and stages what it produced (or its dead letter)
    /// in `batch`.
    async fn stage(
        &mut self,
        m: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> Result<(), PipelineError> {
        let ids = self.ids.get().await?;
        let raw_topic = self.config.kafka.raw_topic.as_str();
        let topics = &self.config.kafka.topics;
        let (p, o) = (m.partition(), m.offset());
        let failure =
            match decode_raw(&self.registry, m.key(), m.payload(), &mut self.event).await? {
                Some(poison) => Some(poison),
                None => {
                    let ev = &self.event;
                    let source = Source {
                        topic: raw_topic,
                        partition: p,
                        offset: o,
                    };
                    let processor = self.processors.get_mut(&p).ok_or(PipelineError::NotOwned {
                        partition: p,
                        offset: o,
                    })?;
                    match processor.process(ev, source, Mode::Live, &mut self.outputs) {
                        Ok(note) => {
                            Batch::count(&mut batch.counts, p, Family::Outcome, note.label());
                            None
                        }
                        Err(e) => Some(("normalize", e.to_string())),
                    }
                }
            };
        let entry = batch.next.entry(p).or_insert((o + 1, 0));
        *entry = (o + 1, entry.1 + 1);
        let failure = failure.as_ref().map(|(k, e)| (*k, e.as_str()));
        let dead_letter_topic = topics.dead_letter.as_str();
        let counts = &mut batch.counts;
        let mut processor = self.processors.get_mut(&p);
        stage_results(
            &mut batch.staged,
            (topics, ids),
            (raw_topic, m),
            failure,
            &mut self.outputs,
            |sent| match sent {
                Sent::Output(topic) => Batch::count(counts, p, Family::Produced, topic),
                Sent::DeadLetter { kind, truncated } => {
                    Batch::count(counts, p, Family::Produced, dead_letter_topic);
                    Batch::count(counts, p, Family::DeadLettered, kind);
                    if truncated {
                        Batch::count(counts, p, Family::Truncated, kind);
                    }
                }
            },
            |o| {
                if let Some(processor) = processor.as_deref_mut() {
                    processor.recycle(o);
                }
            },
        )?;
        Ok(())
    }

    /// Stages one [`Checkpoint`] per partition of the batch: its next offset and the state of
    /// its sync in progress, as of the batch's last record.
    fn checkpoint(&self, batch: &mut Batch) {
        let raw_topic = self.config.kafka.raw_topic.as_str();
        for (&p, &(next, _)) in &batch.next {
            let checkpoint = Checkpoint {
                committed_offset: next,
                in_progress: self
                    .processors
                    .get(&p)
                    .map(Processor::in_progress)
                    .unwrap_or_default(),
            };
            let value = serde_json::to_vec(&checkpoint).unwrap_or_default();
            let key = Checkpoint::key(raw_topic, p);
            batch.staged.push(
                &self.config.kafka.topics.state,
                p,
                key.as_bytes(),
                Some(&value),
                None,
            );
        }
    }

    /// Counts a committed batch (only once committed, so that aborted work is not counted
    /// twice).
    fn committed(&self, batch: &Batch) {
        self.metrics.transactions_committed.inc();
        self.metrics.consumed.inc_by(batch.consumed());
        for (_, family, label, n) in &batch.counts {
            let (metric, name) = match family {
                Family::Produced => (&self.metrics.produced, "topic"),
                Family::DeadLettered => (&self.metrics.dead_lettered, "kind"),
                Family::Truncated => (&self.metrics.dead_letters_truncated, "kind"),
                Family::Outcome => (&self.metrics.notes, "outcome"),
            };
            metric
                .get_or_create(&Metrics::label(name, label))
                .inc_by(*n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_large_outputs_closes_at_the_byte_bound() {
        assert!(!batch_full(4_999, BATCH_MAX_BYTES - 1, 5_000));
        assert!(batch_full(10, BATCH_MAX_BYTES, 5_000));
        assert!(batch_full(5_000, 0, 5_000));
    }
}
