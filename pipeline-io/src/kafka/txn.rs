//! One transactional producer and its open transaction, the way every writer of the pipeline
//! uses it: the producer's tenant streams, the transformer's loop and its replay.
//!
//! [`TxnSession::open`] creates the producer and runs `init_transactions`, which fences an older
//! instance with the same transactional id and settles what it left open. Then, per
//! transaction: [`TxnSession::begin`]; [`TxnSession::send`] for each record, waiting while
//! librdkafka's local queue is full; optionally [`TxnSession::send_offsets`] (consumed offsets
//! of a consume-transform-produce loop); [`TxnSession::commit`], which first waits for every
//! record to be acknowledged, then commits. On any failure the transaction is aborted, so nothing
//! of it becomes visible to `read_committed` readers. An abort that times out (the broker out of
//! reach) goes on in librdkafka's background, and librdkafka refuses every other transactional
//! call until the abort is called again: the next `begin` finishes it first.
//!
//! librdkafka reports only failed deliveries (`delivery.report.only.error`): the first failure
//! of a transaction is kept, and a commit waits until nothing is in flight. A report per record,
//! each completing a future that the commit then awaited, cost about a tenth of the
//! transformer's CPU for nothing a commit needs: Kafka itself refuses to commit a transaction
//! with a failed record.
//!
//! Waiting until every record is acknowledged before `commit_transaction` matters for speed:
//! rdkafka's commit flushes, and its flush loop sleeps 100 ms whenever a record is still in
//! flight. Every blocking call runs off the async runtime ([`super::off_runtime`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, TopicPartitionList};

use super::{ClientSettings, KafkaCallError, OffRuntimeDrop, ctx, off_runtime};

/// Settings of a transactional producer, besides the shared [`ClientSettings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnSettings {
    /// `transactional.id`: one per writer; a new instance with the same id fences the old one.
    pub transactional_id: String,
    /// `transaction.timeout.ms`: how long the broker keeps an open transaction.
    pub transaction_timeout: Duration,
    /// `message.timeout.ms`: how long a record may wait for delivery (at most the transaction
    /// timeout).
    pub message_timeout: Duration,
    /// `compression.type`.
    pub compression_type: String,
    /// `linger.ms`.
    pub linger: Duration,
}

impl TxnSettings {
    /// Defaults for `transactional_id`: 60 s transactions and deliveries, lz4, 5 ms linger.
    pub fn new(transactional_id: impl Into<String>) -> Self {
        Self {
            transactional_id: transactional_id.into(),
            transaction_timeout: Duration::from_secs(60),
            message_timeout: Duration::from_secs(60),
            compression_type: "lz4".into(),
            linger: Duration::from_millis(5),
        }
    }
}

/// The producer's context: keeps the first failed delivery of the newest transaction that had
/// one (librdkafka reports only failures, on the producer's polling thread). Each record carries
/// its transaction's number, so that a failure reported late (a record purged by an abort) is
/// never taken for a later transaction's.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<(usize, KafkaError)>>,
}

impl Deliveries {
    /// The first failure of transaction `number`, if it had one.
    fn failure_of(&self, number: usize) -> Option<KafkaError> {
        let failed = self.failed.lock().ok()?;
        failed
            .as_ref()
            .filter(|(n, _)| *n == number)
            .map(|(_, e)| e.clone())
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, number: usize) {
        if let Err((e, _)) = result
            && let Ok(mut failed) = self.failed.lock()
            && failed.as_ref().is_none_or(|(n, _)| *n < number)
        {
            *failed = Some((number, e.clone()));
        }
    }
}

type TxnProducer = ThreadedProducer<Deliveries>;

/// The least time between a call that ends a transaction (commit, abort) and that call resumed
/// after it timed out. The timed-out call's request may still wait in librdkafka's queue for
/// its main thread; a resumed call queued before that thread took the first request makes it
/// serve both, and the second trips librdkafka's transaction state assertion, which aborts the
/// process (SIGABRT: 4 of 30 runs of the commit test below, which resumes with no timeout at
/// all). A pause costs nothing next to the timeout the call already waited.
const RESUME_PAUSE: Duration = Duration::from_millis(100);

/// A transactional producer and the deliveries of its open transaction.
pub struct TxnSession {
    producer: OffRuntimeDrop<Arc<TxnProducer>>,
    transactional_id: String,
    /// Records sent in the open transaction.
    sent: usize,
    /// The open (or last) transaction's number, carried by each of its records.
    number: usize,
    open: bool,
    /// An abort timed out and goes on in librdkafka's background: until `abort_transaction`
    /// is called again and returns, every other transactional call is refused as conflicting.
    abort_pending: bool,
    /// When a call that ends a transaction last returned a timeout: it is resumed no sooner
    /// than [`RESUME_PAUSE`] after.
    timed_out_at: Option<Instant>,
    /// Bound on init, commit, abort and offset sending (the client timeout).
    timeout: Duration,
    /// `transaction.timeout.ms`: how long a commit that keeps timing out is resumed.
    transaction_timeout: Duration,
    /// How long a commit waits for its records to be acknowledged: `message.timeout.ms`, after
    /// which librdkafka fails a record anyway, and a little more.
    delivery_timeout: Duration,
}

impl std::fmt::Debug for TxnSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnSession")
            .field("transactional_id", &self.transactional_id)
            .field("open", &self.open)
            .field("abort_pending", &self.abort_pending)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl TxnSession {
    /// Creates the producer and runs `init_transactions`.
    ///
    /// # Errors
    /// When the client cannot be created, or the broker cannot be reached or refuses within the
    /// client timeout.
    pub async fn open(client: &ClientSettings, txn: &TxnSettings) -> Result<Self, KafkaCallError> {
        let id = &txn.transactional_id;
        let mut config = client.client_config();
        // librdkafka's local queue holds at most one transaction's records before they are
        // acknowledged (each commit waits for every delivery): 32 MB bounds it (librdkafka's
        // default is 1 GB), and a fuller queue makes `send` wait, never fail. An operator's
        // value wins.
        client.set_unless_given(&mut config, "queue.buffering.max.kbytes", "32768");
        let message_timeout = txn.message_timeout.min(txn.transaction_timeout);
        let producer: TxnProducer = config
            .set("transactional.id", id)
            .set("enable.idempotence", "true")
            .set("delivery.report.only.error", "true")
            .set("compression.type", &txn.compression_type)
            .set(
                "transaction.timeout.ms",
                txn.transaction_timeout.as_millis().to_string(),
            )
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            )
            .set("linger.ms", txn.linger.as_millis().to_string())
            // A transaction's first AddPartitionsToTxn meets CONCURRENT_TRANSACTIONS while the
            // previous commit's markers are written; the default 100 ms retry backoff would add
            // that much to every transaction.
            .set("retry.backoff.ms", "10")
            .set("retry.backoff.max.ms", "200")
            .create_with_context(Deliveries::default())
            .map_err(ctx(format!("creating transactional producer {id}")))?;
        let producer = Arc::new(producer);
        let timeout = client.timeout;
        let p = Arc::clone(&producer);
        off_runtime(format!("init_transactions for {id}"), move || {
            // librdkafka drops its bootstrap connection as soon as the first metadata names the
            // brokers. If `init_transactions` asks for a producer id before a named broker is
            // connected, it waits for its coordinator timer: 500 ms in a quarter to all of the
            // starts measured here. A second metadata request needs a named broker, so once it
            // returns one is up, and the producer id comes at once (about 20 ms in all). The
            // topic asked for is the transaction log's, which every cluster running transactions
            // has: a small answer, and nothing auto-created that would not be anyway.
            for _ in 0..2 {
                p.client()
                    .fetch_metadata(Some("__transaction_state"), timeout)?;
            }
            p.init_transactions(timeout)
        })
        .await?;
        Ok(Self {
            producer: OffRuntimeDrop::new(producer),
            transactional_id: id.clone(),
            sent: 0,
            number: 0,
            open: false,
            abort_pending: false,
            timed_out_at: None,
            timeout,
            transaction_timeout: txn.transaction_timeout,
            delivery_timeout: message_timeout + Duration::from_secs(5),
        })
    }

    /// The transactional id.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// Whether a transaction is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Begins a transaction. A local call, unless an earlier abort timed out (the broker was
    /// unreachable): that abort is finished first, as librdkafka requires.
    ///
    /// # Errors
    /// When the producer is in an error state (fenced, or a previous transaction failed), or
    /// the earlier abort still cannot finish (it is tried again at the next call).
    pub async fn begin(&mut self) -> Result<(), KafkaCallError> {
        if self.abort_pending {
            self.abort_call().await?;
            tracing::info!(transactional_id = %self.transactional_id,
                "the abort that had timed out is finished");
        }
        self.producer.begin_transaction().map_err(ctx(format!(
            "begin_transaction for {}",
            self.transactional_id
        )))?;
        self.number += 1;
        self.sent = 0;
        self.open = true;
        Ok(())
    }

    /// Enqueues a record in the open transaction, waiting while librdkafka's local queue is
    /// full. A record without a value is a tombstone.
    ///
    /// # Errors
    /// Any other production error, naming the topic.
    pub async fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaCallError> {
        self.send_to(topic, None, key, value, headers).await
    }

    /// As [`TxnSession::send`], to `partition` of `topic` when given (else the partitioner
    /// decides from the key): how the transformer keeps its outputs on the partition of the raw
    /// record they came from.
    ///
    /// # Errors
    /// As [`TxnSession::send`].
    pub async fn send_to(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaCallError> {
        let mut record =
            BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, self.number).key(key);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(ctx(format!("producing to {topic}"))(e)),
            }
        }
    }

    /// Adds consumed offsets to the open transaction (`send_offsets_to_transaction`), so they
    /// are committed with the records (exactly-once consume-transform-produce).
    ///
    /// # Errors
    /// The call's error.
    pub async fn send_offsets(
        &mut self,
        offsets: TopicPartitionList,
        group: Arc<ConsumerGroupMetadata>,
    ) -> Result<(), KafkaCallError> {
        let p = Arc::clone(&self.producer);
        let timeout = self.timeout;
        off_runtime("send_offsets_to_transaction", move || {
            p.send_offsets_to_transaction(&offsets, &group, timeout)
        })
        .await
    }

    /// Waits until every record sent so far is acknowledged, then commits. A commit that times
    /// out goes on in librdkafka's background and is resumed until it returns otherwise, for
    /// at most the transaction timeout. On failure the transaction is aborted (when the client
    /// still can) and the error returned.
    ///
    /// # Errors
    /// The first failed delivery, records still unacknowledged after `message.timeout.ms`,
    /// or the commit's error. A commit still unfinished after the transaction timeout has an
    /// unknown outcome: its error is fatal ([`KafkaCallError::is_fatal`]), and the caller
    /// reopens the producer and reads its state back.
    pub async fn commit(&mut self) -> Result<(), KafkaCallError> {
        let records = std::mem::take(&mut self.sent);
        let started = Instant::now();
        // librdkafka counts a record until it is acknowledged, or until its failure is taken
        // for reporting (the polling thread serves reports at once): then nothing is in flight.
        // A millisecond's sleep between looks costs nothing next to a commit's round trips.
        let deliveries = self.producer.context();
        let failed = loop {
            if let Some(e) = deliveries.failure_of(self.number) {
                break Some(e);
            }
            if self.producer.in_flight_count() == 0 {
                // A failure taken from the queue but not yet recorded at the first look: the
                // commit refuses it anyway, with a vaguer error.
                break deliveries.failure_of(self.number);
            }
            if started.elapsed() > self.delivery_timeout {
                break Some(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageTimedOut,
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if let Some(e) = failed {
            self.abort().await;
            return Err(ctx(format!(
                "delivering a record of {}",
                self.transactional_id
            ))(e));
        }
        let delivered_ms = started.elapsed().as_millis() as u64;
        let result = self.commit_call().await;
        tracing::debug!(
            transactional_id = %self.transactional_id, records, delivered_ms,
            commit_ms = started.elapsed().as_millis() as u64, "transaction commit returned"
        );
        match result {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            // librdkafka refuses an abort while the commit is under way: only a new producer
            // (`init_transactions`) learns how the broker ended the transaction.
            Err(e) if e.is_retriable() => {
                self.open = false;
                Err(KafkaCallError {
                    context: format!(
                        "commit_transaction for {} still unfinished after the transaction \
                         timeout ({e}): its outcome is unknown until the producer is reopened",
                        self.transactional_id
                    ),
                    source: KafkaError::Global(RDKafkaErrorCode::Fatal),
                })
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// `commit_transaction`, called again while it times out (the broker out of reach): the
    /// commit goes on in librdkafka's background, and only a call that returns otherwise tells
    /// whether it committed. At most for the transaction timeout, after which the broker has
    /// aborted a transaction it was not asked to commit.
    async fn commit_call(&mut self) -> Result<(), KafkaCallError> {
        let deadline = Instant::now() + self.transaction_timeout;
        loop {
            let result = self
                .end_call("commit_transaction", |p, t| p.commit_transaction(t))
                .await;
            match result {
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tracing::warn!(transactional_id = %self.transactional_id, error = %e,
                        "commit not finished yet; resuming it");
                }
                other => return other,
            }
        }
    }

    /// Aborts the open transaction, if any. Best effort: a fenced or failed producer leaves it
    /// to the broker's transaction timeout or to the next `init_transactions`; an abort that
    /// times out goes on in the background and the next [`TxnSession::begin`] finishes it.
    pub async fn abort(&mut self) {
        self.sent = 0;
        if !self.open && !self.abort_pending {
            return;
        }
        self.open = false;
        match self.abort_call().await {
            Ok(()) => {
                tracing::info!(transactional_id = %self.transactional_id, "transaction aborted")
            }
            Err(error) if self.abort_pending => {
                tracing::warn!(transactional_id = %self.transactional_id, %error,
                    "abort not finished yet; the next transaction finishes it first")
            }
            Err(error) => {
                tracing::warn!(transactional_id = %self.transactional_id, %error, "abort failed")
            }
        }
    }

    /// One `abort_transaction` call. librdkafka goes on with an abort that timed out (a
    /// retriable error) in the background and refuses every other transactional call until
    /// `abort_transaction` is called again and returns: such an abort stays pending.
    async fn abort_call(&mut self) -> Result<(), KafkaCallError> {
        let result = self
            .end_call("abort_transaction", |p, t| p.abort_transaction(t))
            .await;
        self.abort_pending = matches!(&result, Err(e) if e.is_retriable());
        result
    }

    /// One blocking call that ends the transaction (`name`), off the runtime, bounded by the
    /// client timeout; at least [`RESUME_PAUSE`] after a call that timed out.
    async fn end_call(
        &mut self,
        name: &str,
        call: fn(&TxnProducer, Duration) -> rdkafka::error::KafkaResult<()>,
    ) -> Result<(), KafkaCallError> {
        if let Some(at) = self.timed_out_at {
            tokio::time::sleep(RESUME_PAUSE.saturating_sub(at.elapsed())).await;
        }
        let p = Arc::clone(&self.producer);
        let timeout = self.timeout;
        let context = format!("{name} for {}", self.transactional_id);
        let result = off_runtime(context, move || call(&p, timeout)).await;
        self.timed_out_at = matches!(&result, Err(e) if e.is_retriable()).then(Instant::now);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_harness::kafka::{TopicOptions, committed_keys, create_topic};
    use test_harness::{kafka_bootstrap, unique_name};

    /// A new topic and a session on the local broker with a 30 s client timeout.
    async fn topic_and_session(name: &str) -> (String, TxnSession) {
        let topic = unique_name(name);
        create_topic(&topic, &TopicOptions::new(1)).await.unwrap();
        let mut client = ClientSettings::new(kafka_bootstrap(), "txn-test");
        client.timeout = Duration::from_secs(30);
        let session = TxnSession::open(&client, &TxnSettings::new(unique_name(name)))
            .await
            .unwrap();
        (topic, session)
    }

    /// A broker out of reach makes `abort_transaction` time out; given no time at all, it
    /// times out against the local broker too. librdkafka then refuses to begin ("Conflicting
    /// abort_transaction API call is already in progress") until the abort is called again:
    /// a producer that only began again was stuck for good.
    #[tokio::test]
    async fn an_abort_that_times_out_is_finished_before_the_next_transaction() {
        let (topic, mut s) = topic_and_session("txn-abort-timeout").await;
        s.begin().await.unwrap();
        s.send(&topic, b"aborted", Some(b"v"), None).await.unwrap();
        let acknowledged_by = Instant::now() + Duration::from_secs(30);
        while s.producer.in_flight_count() > 0 {
            assert!(
                Instant::now() < acknowledged_by,
                "the record was never acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        s.timeout = Duration::ZERO;
        s.abort().await;
        assert!(s.abort_pending, "an abort given no time times out");
        // Refused as conflicting with the pending abort, or (when librdkafka's main thread has
        // not taken the abort's request yet) as invalid in state BeginAbort: 1 run in 86.
        let refused = s
            .producer
            .begin_transaction()
            .expect_err("librdkafka refuses");
        let text = refused.to_string();
        assert!(
            text.contains("Conflicting") || text.contains("not valid in state BeginAbort"),
            "{refused}"
        );

        s.timeout = Duration::from_secs(30);
        s.begin().await.expect("begin finishes the abort first");
        assert!(!s.abort_pending);
        s.send(&topic, b"committed", Some(b"v"), None)
            .await
            .unwrap();
        s.commit().await.unwrap();
        let keys = committed_keys(&topic).await.unwrap();
        assert_eq!(keys, vec![b"committed".to_vec()]);
    }

    /// A commit that times out goes on in librdkafka's background; an abort is then refused
    /// as conflicting, and the outcome is known only once `commit_transaction` is called again.
    #[tokio::test]
    async fn a_commit_that_times_out_is_resumed_until_it_commits() {
        let (topic, mut s) = topic_and_session("txn-commit-timeout").await;
        s.begin().await.unwrap();
        s.send(&topic, b"first", Some(b"v"), None).await.unwrap();
        s.timeout = Duration::ZERO;
        s.commit().await.expect("the resumed commit commits");
        assert!(!s.is_open());

        s.timeout = Duration::from_secs(30);
        s.begin().await.expect("the next transaction begins");
        s.send(&topic, b"second", Some(b"v"), None).await.unwrap();
        s.commit().await.unwrap();
        let keys = committed_keys(&topic).await.unwrap();
        assert_eq!(keys, vec![b"first".to_vec(), b"second".to_vec()]);
    }
}
