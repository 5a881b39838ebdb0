//! The sink's loop: one consumer in the group reads the three normalized topics
//! (`read_committed`), decodes each record through the registry, buffers rows per table, and
//! commits a table when its buffer is full or old enough ([`crate::table`] does the commit and
//! its exactly-once check).
//!
//! # Where each partition resumes
//! The table says, not the group: after every assignment the sink reads each partition's `txn`
//! version and seeks to the next offset (the beginning when there is none). A record that
//! arrives before the seek took effect is dropped; so is everything buffered when the
//! assignment changes, since whoever owns a partition next rereads it from the table. The
//! group's committed offsets (written after each table commit) only tell lag tools where the
//! sink is.
//!
//! # Failures
//! A value that cannot be decoded (not framed, unknown schema id, bad Avro, a type that does
//! not fit its column) becomes a row with `decode_error` set: never skipped. The registry or
//! the storage being unreachable holds the loop up, retrying with back-off, with `/readyz` 503
//! meanwhile; the buffered rows stay buffered or are reread.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use pipeline_io::kafka::{KafkaCallError, OffRuntimeDrop, ctx, off_runtime};
use pipeline_io::registry::Registry;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::assign::{Resumer, SinkContext, Source};
use crate::config::Config;
use crate::decode::{self, Plan};
use crate::metrics::{self, Metrics};
use crate::table::{CHUNK_ROWS, Committed, LakeTable, Prepared, Record, TableError};

/// The tables, in this order, and the topic each is fed from.
pub const TABLES: [&str; 3] = ["users", "applications", "app_usage"];

/// Why the sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A Kafka call failed in a way retrying does not mend.
    #[error(transparent)]
    Kafka(#[from] KafkaCallError),
    /// A table failed and the shutdown came before it recovered.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The operations listener could not start.
    #[error(transparent)]
    Listen(#[from] pipeline_io::ops::ListenError),
    /// The registry client could not be built.
    #[error(transparent)]
    Registry(#[from] pipeline_io::registry::RegistryError),
    /// A thread could not start, or a task stopped.
    #[error("{0}")]
    Thread(String),
    /// The shutdown came before the tables could be opened.
    #[error("stopped before the tables could be opened")]
    Stopped,
}

type SinkConsumer = StreamConsumer<SinkContext>;

/// How far one partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Assigned; the seek to its resume point has not been accepted yet.
    NeedsSeek,
    /// Seeked; no record read since.
    Seeking,
    /// Reading.
    Live,
}

#[derive(Debug)]
struct Part {
    /// The table's `txn` version for the partition when it was positioned, then after each of
    /// this instance's commits.
    held: Option<i64>,
    state: State,
    /// The last offset buffered.
    last: Option<i64>,
}

impl Part {
    fn target(&self) -> Offset {
        self.held
            .map_or(Offset::Beginning, |v| Offset::Offset(v + 1))
    }
}

/// With `stop_at_end`, how long the broker may hold a fetch that finds nothing new (unless the
/// operator set `fetch.wait.max.ms`): the partition EOF event that prompts the end check comes
/// with the first empty fetch after the last record, after Kafka's default 500 ms otherwise.
const END_FETCH_WAIT_MS: &str = "20";

/// With `stop_at_end`, how often the end is checked even when the EOF events do not prompt it.
const END_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a table's current window holds (its rows are in the table: decoded ones not yet
/// streamed, at most [`CHUNK_ROWS`], and encoded Parquet).
#[derive(Debug, Default)]
struct Buffer {
    /// Rows in the window, streamed or not.
    count: usize,
    bytes: usize,
    since: Option<Instant>,
    ends: BTreeMap<i32, i64>,
}

/// What one run did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows committed per table.
    pub rows: BTreeMap<String, u64>,
    /// Commits.
    pub commits: u64,
}

struct Sink {
    config: Config,
    consumer: OffRuntimeDrop<Arc<SinkConsumer>>,
    /// A group-less client for watermarks: the group consumer's own connections queue such
    /// requests behind its long-polling fetches.
    marks: OffRuntimeDrop<Arc<BaseConsumer>>,
    changed: Arc<AtomicBool>,
    registry: Registry,
    metrics: Arc<Metrics>,
    tables: Vec<LakeTable>,
    topics: Vec<String>,
    buffers: Vec<Buffer>,
    parts: HashMap<(usize, i32), Part>,
    /// Writer schema ids whose fields every table column covers, per table.
    covered: Vec<HashSet<u32>>,
    /// Writer schema ids refused by a table, and why.
    refused: Vec<HashMap<u32, String>>,
    summary: Summary,
    shutdown: CancellationToken,
    /// Partition EOF events since the partitions were last positioned (assigned or sought):
    /// with `stop_at_end`, the end is checked once there are as many as partitions.
    eofs: usize,
    /// When the end was last checked (`stop_at_end`).
    end_checked: Instant,
    /// The benchmark's baseline mode: no table, nothing decoded or written.
    consume_only: bool,
    /// Records and bytes read (consume-only mode).
    read: (u64, u64),
}

/// Runs the sink until `shutdown` (or, with `stop_at_end`, until caught up), then commits what
/// it buffered.
///
/// # Errors
/// [`SinkError`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Summary, SinkError> {
    let metrics = Arc::new(Metrics::new());
    let ops = pipeline_io::ops::OpsServer::start_if(config.operations.listen_addr, metrics.clone())
        .await?;
    let outcome = run_with(config, shutdown, metrics, false).await;
    if let Some(ops) = ops {
        ops.stop().await;
    }
    outcome.map(|sink| sink.summary)
}

/// What [`consume_only`] read.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ConsumeOnly {
    /// Records read.
    pub records: u64,
    /// Their key and value bytes.
    pub bytes: u64,
    /// Seconds from start to the end of the topics.
    pub seconds: f64,
}

/// The benchmark's baseline: the sink's loop and consumer, in a group of its own, reading the
/// three topics from their beginning to their end without decoding or writing anything.
///
/// # Errors
/// [`SinkError`].
pub async fn consume_only(
    mut config: Config,
    shutdown: CancellationToken,
) -> Result<ConsumeOnly, SinkError> {
    let started = Instant::now();
    config.kafka.group_id = format!(
        "{}-consume-only-{}",
        config.kafka.group_id,
        std::process::id()
    );
    config.lake.stop_at_end = true;
    let sink = run_with(config, shutdown, Arc::new(Metrics::new()), true).await?;
    Ok(ConsumeOnly {
        records: sink.read.0,
        bytes: sink.read.1,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    consume_only: bool,
) -> Result<Sink, SinkError> {
    crate::storage::register();
    let registry = config.registry.client()?;
    let topics: Vec<String> = vec![
        config.kafka.topics.users.clone(),
        config.kafka.topics.applications.clone(),
        config.kafka.topics.app_usage.clone(),
    ];
    let resumer = if consume_only {
        None
    } else {
        let sources = TABLES
            .iter()
            .zip(&topics)
            .map(|(name, topic)| Source {
                topic: topic.clone(),
                url: config.lake.table_url(name),
            })
            .collect();
        let options = config.lake.storage_options.clone().into_iter().collect();
        Some(
            Resumer::start(sources, options, config.lake.app_id.clone())
                .map_err(|e| SinkError::Thread(format!("starting a thread: {e}")))?,
        )
    };
    let _prefetch = (!consume_only).then(|| prefetch(&registry, &topics));
    let adopter = resumer.clone();
    let context = SinkContext::new(resumer, metrics.clone(), shutdown.clone());
    let changed = context.changed.clone();
    let mut c = config
        .kafka
        .client
        .group_consumer_config(&config.kafka.group_id);
    // With `stop_at_end`, an EOF event (librdkafka emits one per partition each time its fetch
    // reaches the end, past the transaction markers, and again after every seek) prompts the
    // end check ([`Sink::caught_up`]).
    c.set(
        "enable.partition.eof",
        if config.lake.stop_at_end {
            "true"
        } else {
            "false"
        },
    );
    if !config
        .kafka
        .client
        .librdkafka_options
        .contains_key("heartbeat.interval.ms")
    {
        c.set("heartbeat.interval.ms", "1000");
    }
    if config.lake.stop_at_end
        && !config
            .kafka
            .client
            .librdkafka_options
            .contains_key("fetch.wait.max.ms")
    {
        c.set("fetch.wait.max.ms", END_FETCH_WAIT_MS);
    }
    let consumer: SinkConsumer = c
        .create_with_context(context)
        .map_err(ctx("creating the consumer"))?;
    // Under read_committed a watermark query answers with the last stable offset.
    let marks: BaseConsumer = config
        .kafka
        .client
        .client_config()
        .set("isolation.level", "read_committed")
        .create()
        .map_err(ctx("creating the watermark client"))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(ctx("subscribing"))?;
    // The group is joined in librdkafka's threads meanwhile; the assignment waits for the
    // first poll, after this. Each table opens in a task of its own, so that both of the
    // runtime's workers take part, and is handed to the resumer, whose first answers then read
    // only the log entries after it (bench/RESULTS.md, session 27).
    let opening: Vec<_> = TABLES
        .iter()
        .zip(&topics)
        .filter(|_| !consume_only)
        .map(|(name, topic)| {
            let (config, topic, metrics, shutdown) = (
                config.clone(),
                topic.clone(),
                Arc::clone(&metrics),
                shutdown.clone(),
            );
            AbortOnDropHandle::new(tokio::spawn(async move {
                open_table(&config, name, &topic, &metrics, &shutdown).await
            }))
        })
        .collect();
    let mut tables = Vec::new();
    for (opened, topic) in futures::future::join_all(opening)
        .await
        .into_iter()
        .zip(&topics)
    {
        let table = match opened {
            Ok(Some(table)) => table,
            Ok(None) => return Err(SinkError::Stopped),
            Err(e) => {
                return Err(SinkError::Thread(format!(
                    "opening the table of {topic}: {e}"
                )));
            }
        };
        if let Some(resumer) = &adopter {
            resumer.adopt(topic, table.delta().clone());
        }
        tables.push(table);
    }
    tracing::info!(
        topics = ?names,
        group = %config.kafka.group_id,
        location = %config.lake.location,
        "lake sink started"
    );
    let n = TABLES.len();
    let mut sink = Sink {
        consume_only,
        read: (0, 0),
        eofs: 0,
        end_checked: Instant::now(),
        consumer: OffRuntimeDrop::new(Arc::new(consumer)),
        marks: OffRuntimeDrop::new(Arc::new(marks)),
        changed,
        registry,
        metrics,
        tables,
        topics,
        buffers: (0..n).map(|_| Buffer::default()).collect(),
        parts: HashMap::new(),
        covered: vec![HashSet::new(); n],
        refused: vec![HashMap::new(); n],
        summary: Summary::default(),
        shutdown: shutdown.clone(),
        config,
    };
    sink.work().await?;
    Ok(sink)
}

/// Reads the topics' latest value schemas (subjects `<topic>-value`, where the transformer
/// registers them) into the registry client's cache while the group is joined and the tables
/// open: the first records then find their writer schema cached instead of holding the loop up
/// for a request each (about 6 ms each against the local registry). A failure only means those
/// records ask for themselves. The requests are dropped with the handle.
fn prefetch(registry: &Registry, topics: &[String]) -> AbortOnDropHandle<()> {
    let registry = registry.clone();
    let subjects: Vec<String> = topics.iter().map(|t| format!("{t}-value")).collect();
    AbortOnDropHandle::new(tokio::spawn(async move {
        let asked = subjects.iter().map(|s| registry.prefetch_latest(s));
        for (subject, outcome) in subjects.iter().zip(futures::future::join_all(asked).await) {
            match outcome {
                Ok(id) => tracing::debug!(%subject, id, "latest writer schema cached"),
                Err(e) => tracing::debug!(%subject, error = %e, "latest writer schema not cached"),
            }
        }
    }))
}

/// Opens a table, retrying while the storage fails; `None` after a shutdown.
async fn open_table(
    config: &Config,
    name: &str,
    topic: &str,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Option<LakeTable> {
    let schema = match name {
        "users" => schemas::usage::USER_USAGE_SCHEMA,
        "applications" => schemas::usage::APPLICATION_SCHEMA,
        _ => schemas::usage::APP_USAGE_SCHEMA,
    };
    let schema = Schema::parse_str(schema).ok()?;
    let url = config.lake.table_url(name);
    let mut backoff = Backoff::default();
    loop {
        match LakeTable::open(
            name,
            &url,
            &config.lake.storage_options,
            topic,
            &config.lake.app_id,
            &schema,
            undecodable(name, metrics),
        )
        .await
        {
            Ok(t) => return Some(t),
            Err(e) => {
                tracing::error!(error = %pipeline_io::error_text(&e), "cannot open the table: retrying");
                metrics.failing("storage", e.to_string());
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// How table `name` reports a value written as undecodable: a warning and a count.
fn undecodable(name: &str, metrics: &Metrics) -> crate::table::OnUndecodable {
    let count = metrics
        .undecodable
        .get_or_create(&metrics::table(name))
        .clone();
    let table = name.to_owned();
    Arc::new(move |why: &str| {
        tracing::warn!(table = %table, reason = %why, "value not decodable: written with decode_error");
        count.inc();
    })
}

/// Doubling pauses from 500 ms to 30 s.
#[derive(Debug, Default)]
struct Backoff(u32);

impl Backoff {
    /// Waits the next pause; false when `shutdown` came first.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let pause =
            Duration::from_millis(500 * 2u64.pow(self.0.min(6))).min(Duration::from_secs(30));
        self.0 += 1;
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(pause) => true,
        }
    }
}

/// Commits the files `adds` to `table` with the `txn` versions `ends`, if the table's versions
/// of those partitions are still `held` ([`LakeTable::commit`]); a failure is retried, after
/// doubling pauses, until it passes or `shutdown` comes.
async fn commit_retried(
    table: &mut LakeTable,
    adds: &[deltalake::kernel::Add],
    ends: &BTreeMap<i32, i64>,
    held: &BTreeMap<i32, Option<i64>>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Committed, SinkError> {
    let mut backoff = Backoff::default();
    loop {
        match table.commit(adds, ends, held).await {
            Ok(outcome) => return Ok(outcome),
            Err(e) => {
                tracing::error!(error = %pipeline_io::error_text(&e), "commit failed: retrying");
                metrics.failing("storage", e.to_string());
                if !backoff.wait(shutdown).await {
                    return Err(e.into());
                }
            }
        }
    }
}

impl Sink {
    async fn work(&mut self) -> Result<(), SinkError> {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_lag = Instant::now();
        let consumer = Arc::clone(&self.consumer);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                message = consumer.recv() => {
                    if self.changed.swap(false, Ordering::SeqCst) {
                        self.reassigned().await?;
                    }
                    match message {
                        Ok(m) => self.handle(&m).await?,
                        Err(e) if pipeline_io::kafka::is_partition_eof(&e) => {
                            self.eofs += 1;
                            if self.config.lake.stop_at_end
                                && self.eofs >= self.parts.len()
                                && self.caught_up().await?
                            {
                                self.stopped_at_end();
                                return Ok(());
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "consumer error (librdkafka retries)");
                            self.metrics.failing("kafka", e.to_string());
                        }
                    }
                }
                _ = tick.tick() => {
                    if self.changed.swap(false, Ordering::SeqCst) {
                        self.reassigned().await?;
                    }
                    self.seek_pending().await;
                    self.flush_aged().await?;
                    if self.config.lake.stop_at_end
                        && (self.eofs >= self.parts.len()
                            || self.end_checked.elapsed() >= END_CHECK_EVERY)
                        && self.caught_up().await?
                    {
                        self.stopped_at_end();
                        return Ok(());
                    }
                    if last_lag.elapsed() > Duration::from_secs(10) {
                        last_lag = Instant::now();
                        self.update_lag().await;
                    }
                }
            }
        }
        // Commit what is buffered, within the shutdown deadline of the caller.
        if let Err(e) = self.flush_all().await {
            tracing::warn!(error = %pipeline_io::error_text(&e), "buffered rows not committed at shutdown: the next owner rereads them");
        }
        Ok(())
    }

    /// The assignment changed: drop every buffer and take the partitions as the rebalance
    /// callback assigned them, each at its table's resume point ([`crate::assign`]).
    async fn reassigned(&mut self) -> Result<(), SinkError> {
        self.forget_ends();
        self.drop_windows().await;
        self.parts.clear();
        let consumer = Arc::clone(&self.consumer);
        let assignment =
            off_runtime("reading the assignment", move || consumer.assignment()).await?;
        let points = self
            .consumer
            .context()
            .assigned
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        for e in assignment.elements() {
            let Some(i) = self.topics.iter().position(|t| t == e.topic()) else {
                continue;
            };
            let (held, state) = match points.get(&(e.topic().to_owned(), e.partition())) {
                Some(point) => (*point, State::Live),
                None => (None, State::NeedsSeek),
            };
            self.parts.insert(
                (i, e.partition()),
                Part {
                    held,
                    state,
                    last: None,
                },
            );
        }
        self.metrics
            .assigned_partitions
            .set(i64::try_from(self.parts.len()).unwrap_or(i64::MAX));
        tracing::info!(
            partitions = self.parts.len(),
            "assignment changed: each partition resumes where its table says"
        );
        if self.parts.values().any(|p| p.state == State::NeedsSeek) {
            self.reposition().await?;
        }
        if !self.parts.is_empty() {
            self.metrics.working();
        }
        Ok(())
    }

    /// Drops every buffer and seeks every assigned partition to its table's latest resume
    /// point: after a commit found a partition written by another instance.
    async fn reposition(&mut self) -> Result<(), SinkError> {
        self.forget_ends();
        self.drop_windows().await;
        let keys: Vec<(usize, i32)> = self.parts.keys().copied().collect();
        for (i, p) in keys {
            let held = if self.consume_only {
                None
            } else {
                self.latest_resume_point(i, p).await?
            };
            self.parts.insert(
                (i, p),
                Part {
                    held,
                    state: State::NeedsSeek,
                    last: None,
                },
            );
        }
        self.seek_pending().await;
        Ok(())
    }

    /// Drops what every table's window holds: it is read again from the tables' versions.
    async fn drop_windows(&mut self) {
        for b in &mut self.buffers {
            *b = Buffer::default();
        }
        for t in &mut self.tables {
            t.discard().await;
        }
    }

    /// Notes that the partitions were positioned: EOF events from before it no longer count
    /// (librdkafka drops those it had not delivered yet, and emits new ones).
    fn forget_ends(&mut self) {
        self.eofs = 0;
    }

    fn stopped_at_end(&self) {
        tracing::info!(rows = ?self.summary.rows, "caught up: every assigned partition's end is in the tables");
    }

    /// The table's latest resume point of a partition, retried while the storage fails.
    async fn latest_resume_point(
        &mut self,
        i: usize,
        partition: i32,
    ) -> Result<Option<i64>, SinkError> {
        let mut backoff = Backoff::default();
        loop {
            match self.tables[i].latest_resume_point(partition).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.metrics.failing("storage", e.to_string());
                    tracing::error!(error = %pipeline_io::error_text(&e), "cannot read the table's log: retrying");
                    if !backoff.wait(&self.shutdown).await {
                        return Err(e.into());
                    }
                }
            }
        }
    }

    /// Seeks every partition waiting for it, each seek waiting until librdkafka performed it
    /// (so no record from before it is delivered after it); a refused seek is tried again on
    /// the next tick or record.
    async fn seek_pending(&mut self) {
        let pending: Vec<((usize, i32), Offset)> = self
            .parts
            .iter()
            .filter(|(_, part)| part.state == State::NeedsSeek)
            .map(|(k, part)| (*k, part.target()))
            .collect();
        for ((i, p), target) in pending {
            let consumer = Arc::clone(&self.consumer);
            let topic = self.topics[i].clone();
            let timeout = self.config.kafka.client.timeout;
            let sought = off_runtime(format!("seeking {topic}/{p}"), move || {
                consumer.seek(&topic, p, target, timeout)
            })
            .await;
            match sought {
                Ok(()) => {
                    if let Some(part) = self.parts.get_mut(&(i, p)) {
                        part.state = State::Seeking;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "seek not performed yet"),
            }
        }
    }

    /// Buffers record `m` for its table, unless its partition is not positioned yet or the
    /// record is one already buffered or written. Its key and value are copied
    /// ([`LakeTable::push`]); the message itself is not kept (nor detached).
    async fn handle(&mut self, m: &BorrowedMessage<'_>) -> Result<(), SinkError> {
        let Some(i) = self.topics.iter().position(|t| t == m.topic()) else {
            return Ok(());
        };
        let (p, offset) = (m.partition(), m.offset());
        let Some(part) = self.parts.get_mut(&(i, p)) else {
            return Ok(());
        };
        match part.state {
            State::NeedsSeek => {
                self.seek_pending().await;
                return Ok(());
            }
            State::Seeking => {
                if let Offset::Offset(from) = part.target()
                    && offset < from
                {
                    return Ok(());
                }
                part.state = State::Live;
            }
            State::Live => {}
        }
        if part.last.or(part.held).is_some_and(|last| offset <= last) {
            tracing::warn!(
                topic = m.topic(),
                partition = p,
                offset,
                "record already buffered or written: dropped"
            );
            return Ok(());
        }
        part.last = Some(offset);
        if self.consume_only {
            self.read.0 += 1;
            self.read.1 +=
                (m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len)) as u64;
            return Ok(());
        }
        let size = m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len);
        let value = self.prepare(i, m.payload()).await?;
        // Preparing may have committed (a new writer schema), and that commit may have found
        // the partition taken: then it is repositioned and this record is read again.
        if self
            .parts
            .get(&(i, p))
            .is_none_or(|part| part.state != State::Live)
        {
            return Ok(());
        }
        self.tables[i].push(Record {
            key: m.key(),
            payload: m.payload(),
            partition: p,
            offset,
            timestamp_ms: m.timestamp().to_millis(),
            value,
        });
        let buffer = &mut self.buffers[i];
        buffer.count += 1;
        buffer.bytes += size;
        buffer.since.get_or_insert_with(Instant::now);
        buffer.ends.insert(p, offset);
        if buffer.count >= self.config.lake.flush_max_rows
            || buffer.bytes >= self.config.lake.flush_max_bytes
        {
            self.flush(i).await?;
        } else if self.tables[i].pending() >= CHUNK_ROWS {
            self.stream(i).await?;
        }
        Ok(())
    }

    /// Streams table `i`'s decoded rows into its window. A write error drops every window and
    /// rereads from the tables.
    async fn stream(&mut self, i: usize) -> Result<(), SinkError> {
        if let Err(e) = self.tables[i].stream().await {
            self.storage_failed(&e).await?;
        }
        Ok(())
    }

    /// A window could not be written: drop every window and read again from the tables after
    /// a pause.
    async fn storage_failed(&mut self, e: &TableError) -> Result<(), SinkError> {
        tracing::error!(error = %pipeline_io::error_text(e), "writing data files failed: rereading from the tables");
        self.metrics.failing("storage", e.to_string());
        // Never commit a window a write failed in: its files may lack rows its offsets cover.
        self.drop_windows().await;
        let mut backoff = Backoff::default();
        if !backoff.wait(&self.shutdown).await {
            return Ok(());
        }
        self.reposition().await
    }

    /// How a record's value becomes a row; waits out a registry outage. A writer schema seen
    /// for the first time is adopted ([`Sink::adopt`]) or refused.
    async fn prepare(&mut self, i: usize, value: Option<&[u8]>) -> Result<Prepared, SinkError> {
        let Some(value) = value else {
            return Ok(Prepared::Deleted);
        };
        let (id, datum) = match schemas::wire::decode(value) {
            Ok(framed) => framed,
            Err(e) => {
                return Ok(Prepared::Undecodable(format!(
                    "not in the registry's wire format: {e}"
                )));
            }
        };
        if let Some(why) = self.refused[i].get(&id) {
            return Ok(Prepared::Undecodable(why.clone()));
        }
        if self.covered[i].contains(&id)
            && let Some(plan) = self.tables[i].plan(id)
        {
            return Ok(Prepared::Datum {
                schema_id: id,
                plan,
            });
        }
        let mut backoff = Backoff::default();
        let schema = loop {
            match self.registry.schema_by_id(id).await {
                Ok(s) => break s,
                Err(e) if e.is_poison() => {
                    return Ok(Prepared::Undecodable(format!("schema id {id}: {e}")));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "schema registry unavailable: waiting");
                    self.metrics.failing("registry", e.to_string());
                    if !backoff.wait(&self.shutdown).await {
                        return Err(SinkError::Registry(e));
                    }
                }
            }
        };
        // A value that is not Avro of its schema changes nothing about the table.
        if let Err(e) = decode::validate(&schema, datum) {
            return Ok(Prepared::Undecodable(format!("schema id {id}: {e}")));
        }
        if !self.covered[i].contains(&id) {
            return match self.adopt(i, id, schema, datum).await? {
                Ok(plan) => {
                    self.covered[i].insert(id);
                    Ok(Prepared::Datum {
                        schema_id: id,
                        plan,
                    })
                }
                Err(why) => {
                    self.refused[i].insert(id, why.clone());
                    Ok(Prepared::Undecodable(why))
                }
            };
        }
        Ok(match self.tables[i].plan(id) {
            Some(plan) => Prepared::Datum {
                schema_id: id,
                plan,
            },
            None => Prepared::Undecodable(format!("schema id {id}: no plan for its records")),
        })
    }

    /// A writer schema seen for the first time: the table gains its new fields as columns
    /// (after committing what is buffered under the old columns), and one of its records must
    /// fit the columns. `Ok(Err(why))` refuses the schema.
    async fn adopt(
        &mut self,
        i: usize,
        id: u32,
        schema: Arc<Schema>,
        sample: &[u8],
    ) -> Result<Result<Arc<Plan>, String>, SinkError> {
        if !self.tables[i].covers(&schema) {
            self.flush(i).await?;
            match self.tables[i].evolve(&schema).await {
                Ok(_) => {}
                Err(e) if matches!(*e.source, deltalake::DeltaTableError::Generic(_)) => {
                    return Ok(Err(format!(
                        "schema id {id}: {}",
                        pipeline_io::error_text(&e)
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.tables[i]
            .adopt(id, schema, sample)
            .map_err(|e| format!("schema id {id}: {e}")))
    }

    async fn flush_aged(&mut self) -> Result<(), SinkError> {
        let interval = self.config.lake.flush_interval;
        for i in 0..self.buffers.len() {
            if self.buffers[i]
                .since
                .is_some_and(|s| s.elapsed() >= interval)
            {
                self.flush(i).await?;
            }
        }
        Ok(())
    }

    /// Commits table `i`'s window, as [`Sink::flush_all`] does every table's.
    async fn flush(&mut self, i: usize) -> Result<(), SinkError> {
        self.flush_windows(Some(i)).await.map(|_| ())
    }

    /// Commits every table's window ([`Sink::flush_windows`]).
    async fn flush_all(&mut self) -> Result<bool, SinkError> {
        self.flush_windows(None).await
    }

    /// Commits the window of table `only`, or of every table side by side: each finishes its
    /// files on its encoder thread, then each commits (on a cloud store a commit is several
    /// requests, so three tables in turn would hold the loop three times as long); a failure
    /// to commit is retried until it passes or the shutdown comes. After a failed write every
    /// window is dropped and reread. After a stale commit the other tables' commits stand,
    /// every other window is dropped and every partition is repositioned at its table's
    /// version. After a failure (the shutdown came) the other tables' commits stand too. True
    /// when every window is in its table; false when windows were dropped to be read again.
    async fn flush_windows(&mut self, only: Option<usize>) -> Result<bool, SinkError> {
        let buffers: Vec<Buffer> = self
            .buffers
            .iter_mut()
            .enumerate()
            .map(|(i, b)| {
                if only.is_none_or(|o| o == i) {
                    std::mem::take(b)
                } else {
                    Buffer::default()
                }
            })
            .collect();
        let finishing = self
            .tables
            .iter_mut()
            .zip(&buffers)
            .map(|(table, buffer)| async move {
                if buffer.count == 0 {
                    None
                } else {
                    Some(table.finish().await)
                }
            });
        let mut finished = Vec::with_capacity(buffers.len());
        for adds in futures::future::join_all(finishing).await {
            match adds.transpose() {
                Ok(adds) => finished.push(adds),
                Err(e) => return self.storage_failed(&e).await.map(|()| false),
            }
        }
        let held: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, buffer)| self.held(i, buffer))
            .collect();
        let (metrics, shutdown) = (&self.metrics, &self.shutdown);
        let committing = self
            .tables
            .iter_mut()
            .zip(&buffers)
            .zip(&finished)
            .zip(&held)
            .map(|(((table, buffer), adds), held)| async move {
                match adds {
                    None => None,
                    Some(adds) => Some(
                        commit_retried(table, adds, &buffer.ends, held, metrics, shutdown).await,
                    ),
                }
            });
        let outcomes = futures::future::join_all(committing).await;
        let mut outcome: Result<(), SinkError> = Ok(());
        let mut stale = false;
        for (i, (buffer, committed)) in buffers.into_iter().zip(outcomes).enumerate() {
            match committed {
                None => {}
                Some(Ok(committed)) => stale |= !self.committed(i, buffer, committed),
                Some(Err(e)) => outcome = outcome.and(Err(e)),
            }
        }
        if stale {
            self.reposition().await?;
        }
        outcome.map(|()| !stale)
    }

    /// The versions table `i` held, when the sink positioned them, of the partitions of
    /// `buffer`: what a commit of it checks the table's versions against.
    fn held(&self, i: usize, buffer: &Buffer) -> BTreeMap<i32, Option<i64>> {
        buffer
            .ends
            .keys()
            .map(|p| (*p, self.parts.get(&(i, *p)).and_then(|part| part.held)))
            .collect()
    }

    /// Accounts for the commit of table `i`'s window `buffer`: metrics, the partitions' held
    /// versions and the group's offsets when it was written; false when it was stale (the
    /// caller then repositions every partition).
    fn committed(&mut self, i: usize, buffer: Buffer, outcome: Committed) -> bool {
        let labels = metrics::table(TABLES[i]);
        match outcome {
            Committed::Written {
                version,
                files,
                bytes,
            } => {
                let rows = buffer.count as u64;
                self.metrics.rows.get_or_create(&labels).inc_by(rows);
                self.metrics
                    .files
                    .get_or_create(&labels)
                    .inc_by(files as u64);
                self.metrics.bytes.get_or_create(&labels).inc_by(bytes);
                self.metrics.commits.get_or_create(&labels).inc();
                self.metrics.working();
                *self.summary.rows.entry(TABLES[i].to_owned()).or_default() += rows;
                self.summary.commits += 1;
                tracing::debug!(table = TABLES[i], version, rows, files, "committed");
                let mut offsets = TopicPartitionList::new();
                for (p, end) in &buffer.ends {
                    if let Some(part) = self.parts.get_mut(&(i, *p)) {
                        part.held = Some(*end);
                    }
                    let _ =
                        offsets.add_partition_offset(&self.topics[i], *p, Offset::Offset(end + 1));
                }
                // Only for lag tools: where to resume is the table's record.
                if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
                    tracing::debug!(error = %e, "offsets not committed to the group");
                }
                true
            }
            Committed::Stale(partitions) => {
                self.metrics.stale_commits.get_or_create(&labels).inc();
                tracing::warn!(
                    table = TABLES[i],
                    ?partitions,
                    "another instance wrote these partitions meanwhile: nothing committed, rereading from the table"
                );
                false
            }
        }
    }

    /// Whether every assigned partition's end is in the tables: each was read up to its last
    /// stable offset (queried now), and what was buffered is committed.
    ///
    /// A partition is read to its end when librdkafka's position for it (the offset after the
    /// last record or transaction marker handed to this loop since the partition was last
    /// positioned) is at least its last stable offset; or, when nothing was handed over since,
    /// when it was positioned at or after that offset. A seek resets librdkafka's position, so
    /// after a reposition the end is only found again once it was read again.
    async fn caught_up(&mut self) -> Result<bool, SinkError> {
        self.end_checked = Instant::now();
        if self.parts.is_empty() || self.parts.values().any(|p| p.state == State::NeedsSeek) {
            return Ok(false);
        }
        let consumer = Arc::clone(&self.consumer);
        // A failed query only postpones the answer: the next EOF event or tick asks again.
        let positions =
            match off_runtime("reading the positions", move || consumer.position()).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "end check postponed");
                    return Ok(false);
                }
            };
        let marks = match self.watermarks().await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "end check postponed");
                return Ok(false);
            }
        };
        for (&(i, p), part) in &self.parts {
            let position = positions
                .find_partition(&self.topics[i], p)
                .map(|e| e.offset());
            let Some(&(low, end)) = marks.get(&(i, p)) else {
                return Ok(false);
            };
            let from = match position {
                Some(Offset::Offset(n)) => n,
                // Nothing handed over since the partition was positioned.
                _ => part.held.map_or(low, |v| v + 1),
            };
            if from < end {
                return Ok(false);
            }
        }
        // A stale commit or a failed write drops the windows and repositions the partitions:
        // then there is more to read.
        self.flush_all().await
    }

    /// Low and high watermarks of every assigned partition.
    async fn watermarks(&mut self) -> Result<BTreeMap<(usize, i32), (i64, i64)>, SinkError> {
        let wanted: Vec<(usize, i32, String)> = self
            .parts
            .keys()
            .map(|(i, p)| (*i, *p, self.topics[*i].clone()))
            .collect();
        let consumer = Arc::clone(&self.marks);
        let timeout = self.config.kafka.client.timeout;
        let marks = off_runtime("reading watermarks", move || {
            wanted
                .into_iter()
                .map(|(i, p, topic)| {
                    Ok((
                        (i, p),
                        pipeline_io::kafka::fetch_watermarks(&*consumer, &topic, p, timeout)?,
                    ))
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
        })
        .await?;
        Ok(marks)
    }

    async fn update_lag(&mut self) {
        let Ok(marks) = self.watermarks().await else {
            return;
        };
        let mut lag = vec![0i64; TABLES.len()];
        for ((i, p), (low, high)) in marks {
            let next = self
                .parts
                .get(&(i, p))
                .and_then(|part| part.held)
                .map_or(low, |v| v + 1);
            lag[i] += (high - next).max(0);
        }
        for (i, l) in lag.into_iter().enumerate() {
            self.metrics
                .lag
                .get_or_create(&metrics::table(TABLES[i]))
                .set(l);
        }
    }
}
