//! The transactional writer of one tenant partition, shared by every tenant of that partition
//! (Kafka Connect's exactly-once source tasks work the same way: one transactional id per task,
//! many source partitions per task).
//!
//! A partition (a partition of the tenants topic, or a slot of the file's tenants) has one
//! transactional producer, `<prefix>.<partition>`. [`open`] runs `init_transactions`, which
//! fences the previous owner and settles the transaction it left open, then reads the
//! checkpoints of the partition's tenants once. From then on this writer is the only one that
//! writes them, so its in-memory copy is the committed truth.
//!
//! Tenant streams hand it [`Unit`]s: complete, already encoded batches of raw events with the
//! stream's next checkpoint. PingOne is read before a unit exists, so a slow or failing tenant
//! never holds a transaction open and its errors never abort one. [`SlotWriter::run`] puts every
//! unit waiting in its queue into one transaction (group commit), commits, and only then moves
//! the checkpoints forward and answers each stream. A Kafka error aborts the transaction and
//! every stream in it gets the error: each resumes from its last committed checkpoint.
//! A fenced or fatally failed producer ends the writer; the partition's owner reopens it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::config::{KafkaConfig, TenantConfig};
use crate::kafka::{EncodedEvent, SinkError, TxnWriter, read_checkpoints};
use crate::metrics::Metrics;
use crate::registry::partition_for;

/// Most units in one transaction.
const MAX_UNITS_PER_TRANSACTION: usize = 256;

/// Units queued for the writer; a stream waits for its unit's outcome before making the next,
/// so this bounds only the burst of a partition's tenants arriving at once.
const QUEUE: usize = 64;

/// A stream's batch: raw events and the checkpoint after them, committed together or not at all.
#[derive(Debug)]
pub struct Unit {
    /// The tenant.
    pub tenant: Arc<TenantConfig>,
    /// `snapshot` or `activity` (metrics label).
    pub stream: &'static str,
    /// The raw events, in order.
    pub events: Vec<EncodedEvent>,
    /// The checkpoint key (`<tenant>/<stream>`).
    pub checkpoint_key: String,
    /// The checkpoint value.
    pub checkpoint: Vec<u8>,
    /// Memory budget held by the events, given back once the unit is answered.
    pub budget: Option<OwnedSemaphorePermit>,
}

struct Queued {
    unit: Unit,
    reply: oneshot::Sender<Result<(), SinkError>>,
}

/// The partition's checkpoints, by key, as committed.
type Checkpoints = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// What tenant streams hold: the way to their partition's writer and its checkpoints.
#[derive(Debug, Clone)]
pub struct SlotHandle {
    slot: i32,
    tx: mpsc::Sender<Queued>,
    checkpoints: Checkpoints,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.unit.fmt(f)
    }
}

impl SlotHandle {
    /// The partition (slot) number.
    pub fn slot(&self) -> i32 {
        self.slot
    }

    /// Commits `unit` in the writer's next transaction and waits for the outcome.
    ///
    /// # Errors
    /// The transaction's Kafka error (nothing of the unit became visible), or
    /// [`SinkError::WriterStopped`].
    pub async fn commit(&self, unit: Unit) -> Result<(), SinkError> {
        let stopped = || SinkError::WriterStopped { slot: self.slot };
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send(Queued { unit, reply })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// The committed checkpoint under `key`.
    pub fn checkpoint(&self, key: &str) -> Option<Vec<u8>> {
        self.checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

/// The writer task's side: the transactional producer and the queue.
#[derive(Debug)]
pub struct SlotWriter {
    slot: i32,
    writer: TxnWriter,
    queue: mpsc::Receiver<Queued>,
    checkpoints: Checkpoints,
    metrics: Metrics,
}

/// The tenant of a checkpoint key (`<tenant>/<stream>`).
fn key_tenant(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(t, _)| t)
}

/// Opens the writer of partition `slot` of `slots`: fences the previous owner, then reads the
/// checkpoints of every tenant whose id hashes to this partition.
///
/// # Errors
/// [`SinkError::Kafka`] when the broker cannot be reached or refuses.
pub async fn open(
    kafka: &KafkaConfig,
    slot: i32,
    slots: i32,
    metrics: Metrics,
) -> Result<(SlotHandle, SlotWriter), SinkError> {
    let transactional_id = format!("{}.{slot}", kafka.transactional_id_prefix);
    let writer = TxnWriter::new(kafka, transactional_id).await?;
    let stored = read_checkpoints(kafka, |key| {
        partition_for(key_tenant(key).as_bytes(), slots) == slot
    })
    .await?;
    tracing::info!(
        slot,
        transactional_id = writer.transactional_id(),
        checkpoints = stored.len(),
        "partition writer opened"
    );
    let checkpoints = Arc::new(Mutex::new(stored));
    let (tx, queue) = mpsc::channel(QUEUE);
    Ok((
        SlotHandle {
            slot,
            tx,
            checkpoints: Arc::clone(&checkpoints),
        },
        SlotWriter {
            slot,
            writer,
            queue,
            checkpoints,
            metrics,
        },
    ))
}

/// Opens the writer of `tenant`'s partition among `slots` and runs it on a task, for one-off
/// work on one tenant (`sync --once`, tests). The task ends once every handle is dropped.
///
/// # Errors
/// As [`open`].
pub async fn open_for(
    kafka: &KafkaConfig,
    slots: i32,
    tenant: &str,
    metrics: Metrics,
) -> Result<(SlotHandle, tokio::task::JoinHandle<Result<(), SinkError>>), SinkError> {
    let slot = partition_for(tenant.as_bytes(), slots);
    let (handle, writer) = open(kafka, slot, slots, metrics).await?;
    Ok((handle, tokio::spawn(writer.run())))
}

impl SlotWriter {
    /// Commits queued units until every [`SlotHandle`] is dropped.
    ///
    /// # Errors
    /// When the producer cannot go on (fenced by a new owner, or failed for good); every unit
    /// queued then is answered with an error.
    pub async fn run(mut self) -> Result<(), SinkError> {
        while let Some(first) = self.queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_UNITS_PER_TRANSACTION {
                match self.queue.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let result = self.write(&batch).await;
            let fatal = result.as_ref().err().and_then(|e| self.fatal(e));
            self.answer(batch, result);
            if let Some(e) = fatal {
                self.queue.close();
                while let Some(q) = self.queue.recv().await {
                    let _ = q
                        .reply
                        .send(Err(SinkError::WriterStopped { slot: self.slot }));
                }
                return Err(e);
            }
        }
        self.writer.abort().await;
        Ok(())
    }

    /// The error to end with when `error` leaves the producer unusable (fenced, or a fatal
    /// transactional error).
    fn fatal(&self, error: &SinkError) -> Option<SinkError> {
        match error {
            SinkError::Kafka(e) if e.is_fatal() => Some(copy(error, self.slot)),
            _ => None,
        }
    }

    async fn write(&mut self, batch: &[Queued]) -> Result<(), SinkError> {
        // A producer that cannot begin is fenced or failed (`fatal`: the writer ends and is
        // reopened), or an earlier abort still cannot finish (the batch fails; its tenants retry).
        self.writer.begin().await?;
        if let Err(e) = self.send(batch).await {
            self.writer.abort().await;
            return Err(e);
        }
        self.writer.commit().await
    }

    async fn send(&mut self, batch: &[Queued]) -> Result<(), SinkError> {
        for q in batch {
            for event in &q.unit.events {
                self.writer.send_encoded(event).await?;
            }
            self.writer
                .send_checkpoint(&q.unit.checkpoint_key, &q.unit.checkpoint)
                .await?;
        }
        Ok(())
    }

    fn answer(&self, batch: Vec<Queued>, result: Result<(), SinkError>) {
        let outcome = if result.is_ok() {
            "committed"
        } else {
            "aborted"
        };
        if let Err(e) = &result {
            tracing::warn!(slot = self.slot, units = batch.len(), error = %e,
                "transaction aborted; its tenants resume from their checkpoints");
        }
        let mut checkpoints = self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for q in batch {
            let Queued { unit, reply } = q;
            self.metrics
                .transaction(&unit.tenant.tenant_id, unit.stream, outcome);
            let answer = match &result {
                Ok(()) => {
                    checkpoints.insert(unit.checkpoint_key, unit.checkpoint);
                    Ok(())
                }
                Err(e) => Err(copy(e, self.slot)),
            };
            // A stream that stopped waiting has nothing to learn.
            let _ = reply.send(answer);
        }
    }
}

/// `error` again, for each stream whose unit shared the failed transaction (the writer only
/// meets Kafka errors).
fn copy(error: &SinkError, slot: i32) -> SinkError {
    match error {
        SinkError::Kafka(e) => SinkError::Kafka(e.clone()),
        _ => SinkError::WriterStopped { slot },
    }
}

/// The memory bounds shared by every tenant of a process: with hundreds of tenants syncing at
/// once, memory stays at these bounds instead of growing with the tenant count.
///
/// - PingOne data read but not yet committed: snapshot pages take their size from it before they
///   are queued, and give it back once committed.
/// - Snapshot syncs running at once: each sync holds one of these from its first request to its
///   `sync_completed` (the others wait their turn). Each running sync holds a connection with
///   its read buffer, pages and encoded events.
#[derive(Debug, Clone)]
pub struct Budget {
    kib: Arc<Semaphore>,
    total_kib: u32,
    syncs: Arc<Semaphore>,
}

impl Budget {
    /// A budget of `bytes` and `syncs` concurrent snapshot syncs (at least 1 each).
    pub fn new(bytes: usize, syncs: usize) -> Self {
        let total_kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Self {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            syncs: Arc::new(Semaphore::new(syncs.max(1))),
        }
    }

    /// Waits for a turn to run a snapshot sync; the turn ends when the permit is dropped.
    /// `None` only if the budget were closed, which it never is.
    pub async fn sync_turn(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.syncs).acquire_owned().await.ok()
    }

    /// Takes `bytes` (at most the whole budget), waiting until they are free. `None` only if
    /// the budget were closed, which it never is.
    pub async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        Arc::clone(&self.kib).acquire_many_owned(kib).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_keys_name_their_tenant() {
        assert_eq!(key_tenant("acme.eu/snapshot"), "acme.eu");
        assert_eq!(key_tenant("acme/activity"), "acme");
    }

    #[tokio::test]
    async fn the_budget_makes_readers_wait_until_memory_is_given_back() {
        let budget = Budget::new(10 * 1024, 1);
        let a = budget.take(8 * 1024).await.expect("open budget");
        // More than the whole budget is clamped to it, and waits for the rest.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1 << 30).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        let all = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("given back")
            .expect("task")
            .expect("open budget");
        assert_eq!(all.num_permits(), 10);
        // One sync at a time: the second turn waits for the first.
        let turn = budget.sync_turn().await.expect("open budget");
        let next = tokio::spawn({
            let budget = budget.clone();
            async move { budget.sync_turn().await }
        });
        tokio::task::yield_now().await;
        assert!(!next.is_finished());
        drop(turn);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), next)
            .await
            .expect("turn given back")
            .expect("task");
        assert!(second.is_some(), "the second turn");
    }
}
