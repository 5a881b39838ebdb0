//! Kafka, as every binary uses it: one error type ([`KafkaCallError`]), the settings every client
//! shares ([`ClientSettings`]), and [`off_runtime`], which runs librdkafka's blocking calls on
//! tokio's blocking pool.
//!
//! # Why off the runtime
//! `init_transactions`, `commit_transaction`, `abort_transaction`,
//! `send_offsets_to_transaction`, `fetch_metadata`, `fetch_watermarks`, `committed_offsets` and
//! `offsets_for_times` block their thread until the broker answers or the timeout passes (up to
//! the configured Kafka timeout). Called from an async task they hold a runtime worker for that
//! long; with one worker (a container limited to one CPU) nothing else runs, so `/healthz`
//! stopped answering for the whole of a broker outage. Every such call here goes through
//! [`off_runtime`].
//!
//! # Layout
//! - [`topics`]: partition lists and topic creation.
//! - [`probe`]: whether the brokers answer, on a client of its own.
//! - [`reader`]: [`RangeReader`], which reads partitions `read_committed` up to an end and stops.
//! - [`txn`]: [`TxnSession`], one transactional producer: send with back-pressure, wait for the
//!   deliveries, commit or abort.
//!
//! Dropping a client blocks as well; [`OffRuntimeDrop`] moves that to the blocking pool.

pub mod probe;
pub mod reader;
pub mod topics;
pub mod txn;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};

pub use reader::{RangeReader, ReaderContext, wait_settled};
pub use topics::{TopicSpec, ensure_topics, partitions, partitions_of, wait_for_leaders};
pub use txn::{TxnSession, TxnSettings};

use crate::config::redacted_options;

/// A Kafka call that failed, with what we were doing.
#[derive(Debug, Clone, thiserror::Error)]
#[error("kafka: {context}: {source}")]
pub struct KafkaCallError {
    /// What was being done (names the topic, partition or transactional id).
    pub context: String,
    /// librdkafka's error.
    #[source]
    pub source: KafkaError,
}

impl KafkaCallError {
    /// Whether librdkafka says this producer was fenced by a newer instance with the same
    /// transactional id (or a newer group generation): retrying with this client cannot help.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self.source.rdkafka_error_code(),
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
        )
    }

    /// Whether this transactional producer can never be used again: fenced, a fatal
    /// transactional error, or a commit whose outcome only a new producer can learn. A new
    /// producer (a new `init_transactions`) is needed.
    pub fn is_fatal(&self) -> bool {
        self.is_fenced()
            || matches!(&self.source, KafkaError::Transaction(e) if e.is_fatal())
            || self.source.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal)
    }

    /// Whether librdkafka says the transactional call may succeed if made again (for example an
    /// abort that timed out while the broker was unreachable).
    pub fn is_retriable(&self) -> bool {
        matches!(&self.source, KafkaError::Transaction(e) if e.is_retriable())
    }

    /// Whether librdkafka says the open transaction failed but the producer can go on once it
    /// is aborted: for example offsets sent with the group metadata of a generation that a
    /// rebalance has just ended (`ILLEGAL_GENERATION`).
    pub fn is_abortable(&self) -> bool {
        matches!(&self.source, KafkaError::Transaction(e) if e.txn_requires_abort() && !e.is_fatal())
    }
}

/// The partitions of `topic` in `list`, sorted: what a rebalance callback hands over.
pub fn partitions_in(list: &rdkafka::TopicPartitionList, topic: &str) -> Vec<i32> {
    let mut ps: Vec<i32> = list
        .elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect();
    ps.sort_unstable();
    ps
}

/// Wraps a [`KafkaError`] with context: `.map_err(ctx("creating the admin client"))`.
pub fn ctx(context: impl Into<String>) -> impl FnOnce(KafkaError) -> KafkaCallError {
    let context = context.into();
    move |source| KafkaCallError { context, source }
}

/// Runs a blocking librdkafka call on tokio's blocking pool, so that it never holds a runtime
/// worker (see the module docs). `context` names the call in the error.
///
/// # Errors
/// The call's error, or [`KafkaError::Canceled`] if the blocking task could not finish.
pub async fn off_runtime<T, F>(context: impl Into<String>, call: F) -> Result<T, KafkaCallError>
where
    T: Send + 'static,
    F: FnOnce() -> KafkaResult<T> + Send + 'static,
{
    let context = context.into();
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(ctx(context)),
        Err(_) => Err(KafkaCallError {
            context,
            source: KafkaError::Canceled,
        }),
    }
}

/// A Kafka client whose drop runs on tokio's blocking pool, as [`off_runtime`] runs its calls.
///
/// Dropping a client can block too: a consumer with a `group.id` closes by polling until
/// librdkafka reports it closed (rust-rdkafka loops on `closed()` with no bound), a producer
/// flushes for up to 500 ms, and `rd_kafka_destroy` joins the client's threads. Dropped on a
/// runtime worker, that would hold the worker meanwhile. Outside a runtime the drop is inline.
pub struct OffRuntimeDrop<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> OffRuntimeDrop<T> {
    /// Wraps `client`.
    pub fn new(client: T) -> Self {
        Self(Some(client))
    }
}

impl<T: Send + 'static> fmt::Debug for OffRuntimeDrop<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OffRuntimeDrop(..)")
    }
}

impl<T: Send + 'static> std::ops::Deref for OffRuntimeDrop<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("only taken in drop")
    }
}

impl<T: Send + 'static> Drop for OffRuntimeDrop<T> {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drop(client));
            }
            Err(_) => drop(client),
        }
    }
}

/// What every Kafka client of a process shares: where the brokers are, the operator's extra
/// librdkafka options (security settings), a bound on blocking calls, and a client id.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// Extra librdkafka options, applied first so that our own settings win.
    pub librdkafka_options: BTreeMap<String, String>,
    /// Bound on every blocking call (metadata, watermarks, transactions) and socket operation.
    pub timeout: Duration,
    /// `client.id`, shown in broker logs and quotas.
    pub client_id: String,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field(
                "librdkafka_options",
                &redacted_options(&self.librdkafka_options),
            )
            .field("timeout", &self.timeout)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl ClientSettings {
    /// Settings for `bootstrap_servers` with no extra options, a 30 s timeout and `client_id`.
    pub fn new(bootstrap_servers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            librdkafka_options: BTreeMap::new(),
            timeout: Duration::from_secs(30),
            client_id: client_id.into(),
        }
    }

    /// The same settings with the operator's extra librdkafka options.
    #[must_use]
    pub fn with_options(mut self, options: BTreeMap<String, String>) -> Self {
        self.librdkafka_options = options;
        self
    }

    /// The same settings with another bound on blocking calls.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base client configuration: the operator's options, then bootstrap servers, client
    /// id, the socket timeout and `message.max.bytes` ([`schemas::topics::MAX_MESSAGE_BYTES`],
    /// the `max.message.bytes` of every topic the pipeline creates).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.librdkafka_options {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            .set("socket.timeout.ms", self.timeout.as_millis().to_string())
            .set(
                "message.max.bytes",
                schemas::topics::MAX_MESSAGE_BYTES.to_string(),
            );
        // librdkafka opens a connection to a broker it needs at most once per half of this
        // back-off: with its default (100 ms) each new client's first request to a broker
        // named by the metadata waited about 50 ms, and a process starts several clients one
        // after another. 20 ms makes that wait 11 ms; reconnecting after a failure still backs
        // off exponentially up to `reconnect.backoff.max.ms` (10 s).
        self.set_unless_given(&mut c, "reconnect.backoff.ms", "20");
        c
    }

    /// Settings of a consumer in group `group_id` that reads only committed data from the
    /// earliest offset and commits offsets itself, when it chooses (never automatically): the
    /// transformer's raw consumer and the lake sink's consumer add their own tuning.
    ///
    /// - Prefetch up to 16 MB, and fetch again 10 ms after the queue was full, not after
    ///   librdkafka's 1 s: on the 1,000,000-user bench the transformer's catch-up took 13 s
    ///   instead of 21 s, peaking at 214 MB instead of 296 (transformer/README.md, "Benchmarks").
    /// - A dead member's partitions move after a 10 s session timeout, not Kafka's 45 s:
    ///   librdkafka heartbeats from its own thread, whatever the caller's loop is doing, so this
    ///   is safe.
    ///
    /// An operator's value of any of these three in `librdkafka_options` wins.
    pub fn group_consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest");
        self.set_unless_given(&mut c, "queued.max.messages.kbytes", "16384");
        self.set_unless_given(&mut c, "fetch.queue.backoff.ms", "10");
        self.set_unless_given(&mut c, "session.timeout.ms", "10000");
        c
    }

    /// Sets `key` to our default `value` unless the operator's `librdkafka_options` give it.
    pub(crate) fn set_unless_given(&self, c: &mut ClientConfig, key: &str, value: &str) {
        if !self.librdkafka_options.contains_key(key) {
            c.set(key, value);
        }
    }

    /// Consumer settings for reading committed data without committing anything: the readers
    /// of [`reader`] and the restore and report readers.
    pub fn reader_config(&self, group_id: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            // Readers wait for the end of a topic: do not let the broker hold empty fetches long.
            .set("fetch.wait.max.ms", "20")
            // Readers are short-lived: a small prefetch bounds what a restore or a report adds
            // to the process's memory (librdkafka's default is 64 MB), and fetching again 10 ms
            // after the queue was full (not librdkafka's 1 s) keeps them fast. Restoring a
            // 1,000,000-user tenant took 9.6 s with the defaults, 20.8 s with a 16 MB queue and
            // the 1 s back-off, 6.0 s with these (transformer/README.md, "Benchmarks").
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.queue.backoff.ms", "10");
        c
    }
}

/// Asks for `topic`'s metadata, so that a client just created knows the topic's partition
/// leaders before its first watermark query ([`fetch_watermarks`]).
///
/// librdkafka (2.12) closes the connection to a bootstrap server as soon as the first metadata
/// names the brokers. A watermark query looks the leader up with a metadata request of its own,
/// and when that request went out on the bootstrap connection it is lost with it: the query
/// then waited for its lookup's back-off, about 0.7 s: one reader of the transformer's restore
/// did in 3 of 34 starts measured here. An application metadata request is sent again to
/// another broker when that happens.
///
/// # Errors
/// The metadata call's error.
pub fn learn_leaders<C: rdkafka::consumer::Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<()> {
    consumer.fetch_metadata(Some(topic), timeout).map(|_| ())
}

/// The low and high watermarks of one partition, asked again while the broker answers that
/// the partition has no leader yet (within `timeout` in all).
///
/// Right after a topic is created the broker's metadata can already name a leader while the
/// leader itself does not serve the partition yet, and a `ListOffsets` then fails with
/// `NotLeaderForPartition` (a CI run's `tenants add` did). librdkafka retries produce and fetch
/// on such errors by itself, but not `fetch_watermarks`.
///
/// # Errors
/// The last error once `timeout` has passed, or at once any error that is not about leadership.
pub fn fetch_watermarks<
    C: rdkafka::consumer::Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
>(
    consumer: &C,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)> {
    let started = std::time::Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match consumer.fetch_watermarks(topic, partition, left.max(Duration::from_millis(100))) {
            Err(e) if is_leader_moving(&e) && started.elapsed() + RETRY_PAUSE < timeout => {
                tracing::debug!(topic, partition, error = %e, "watermarks: asking again");
                std::thread::sleep(RETRY_PAUSE);
            }
            other => return other,
        }
    }
}

/// Pause between two [`fetch_watermarks`] attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Whether `error` says a partition's leadership is not settled yet: worth asking again.
fn is_leader_moving(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

/// Whether an error only says that a consumer reached the end of a partition: how readers
/// stop, not something to log as an error.
pub fn is_partition_eof(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_first_and_ours_win() {
        let mut s = ClientSettings::new("k:9092", "test");
        s.librdkafka_options
            .insert("bootstrap.servers".into(), "elsewhere:1".into());
        s.librdkafka_options
            .insert("sasl.password".into(), "hunter2".into());
        let c = s.client_config();
        assert_eq!(c.get("bootstrap.servers"), Some("k:9092"));
        assert_eq!(c.get("sasl.password"), Some("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn the_operator_s_tuning_wins_over_the_group_consumer_defaults() {
        let defaults = ClientSettings::new("k:9092", "test").group_consumer_config("g");
        assert_eq!(defaults.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(defaults.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(defaults.get("session.timeout.ms"), Some("10000"));
        let options = [
            ("queued.max.messages.kbytes", "2048"),
            ("fetch.queue.backoff.ms", "50"),
            ("session.timeout.ms", "30000"),
        ];
        let tuned = ClientSettings::new("k:9092", "test")
            .with_options(
                options
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
            .group_consumer_config("g");
        for (k, v) in options {
            assert_eq!(tuned.get(k), Some(v), "{k}");
        }
        // What the group consumer must be is not the operator's to change.
        assert_eq!(tuned.get("enable.auto.commit"), Some("false"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn blocking_calls_leave_the_runtime_free() {
        // The blocking call waits for a message that only a task on the same single-threaded
        // runtime sends: it gets it only if the call does not hold the runtime's one thread.
        let (tx, rx) = std::sync::mpsc::channel::<u8>();
        let call = off_runtime("waiting for the runtime", move || {
            rx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| KafkaError::Canceled)
        });
        let sender = async move {
            tokio::task::yield_now().await;
            tx.send(7).unwrap();
        };
        let (received, ()) = tokio::join!(call, sender);
        assert_eq!(received.unwrap(), 7);
    }

    /// Blocks in its drop until it is sent a byte (10 s at most), then reports what it got.
    struct BlocksOnDrop {
        until: std::sync::mpsc::Receiver<u8>,
        report: std::sync::mpsc::Sender<u8>,
    }

    impl Drop for BlocksOnDrop {
        fn drop(&mut self) {
            let got = self
                .until
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or(0);
            let _ = self.report.send(got);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn drops_leave_the_runtime_free() {
        let (release, until) = std::sync::mpsc::channel();
        let (report, reported) = std::sync::mpsc::channel();
        // Dropped inline, this would wait 10 s for the byte sent below, then report 0.
        drop(OffRuntimeDrop::new(BlocksOnDrop { until, report }));
        release.send(7).unwrap();
        let got =
            tokio::task::spawn_blocking(move || reported.recv_timeout(Duration::from_secs(20)))
                .await
                .unwrap();
        assert_eq!(got, Ok(7));
    }
}
