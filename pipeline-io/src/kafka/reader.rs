//! Reading a topic `read_committed` up to an end, then stopping: how the producer reads its
//! checkpoints back, how the transformer restores its state and replays raw events, and how the
//! license report reads the normalized topics.
//!
//! The end of a partition is reached at an end-of-partition event, or when a message at or after
//! the end offset arrives (under `read_committed` the last offsets may be transaction markers,
//! which are never delivered). Every wait is bounded by the settings' timeout.
//!
//! A `read_committed` read can end at the last stable offset: a transaction left open by any
//! writer on a partition then hides everything committed there after it began. [`wait_settled`]
//! waits until the transactions open at a moment have ended, for reads that must see
//! everything committed before it (the producer's checkpoints).

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{
    ClientSettings, KafkaCallError, OffRuntimeDrop, ctx, fetch_watermarks, is_partition_eof,
    learn_leaders, off_runtime, partitions,
};

/// Client context of the readers: end-of-partition is how they stop, not an error to log.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_eof(&error) {
            tracing::error!(%error, reason, "kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// Reads partitions of one topic from a start offset up to an end, then stops.
pub struct RangeReader {
    consumer: OffRuntimeDrop<Arc<StreamConsumer<ReaderContext>>>,
    topic: String,
    /// Partitions still being read, with their end offset (exclusive).
    end: HashMap<i32, i64>,
    timeout: std::time::Duration,
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
    /// Starts reading `ranges` (`partition -> (start, end exclusive)`) of `topic`; an end of
    /// `None` is the partition's end when reading starts. `group_id` is only a name: nothing is
    /// committed.
    ///
    /// # Errors
    /// Client creation, watermark or assignment errors.
    pub async fn open(
        settings: &ClientSettings,
        group_id: &str,
        topic: &str,
        ranges: &HashMap<i32, (Offset, Option<i64>)>,
    ) -> Result<Self, KafkaCallError> {
        let consumer: OffRuntimeDrop<Arc<StreamConsumer<ReaderContext>>> =
            OffRuntimeDrop::new(Arc::new(
                settings
                    .reader_config(group_id)
                    .create_with_context(ReaderContext)
                    .map_err(ctx(format!("creating a reader of {topic}")))?,
            ));
        let timeout = settings.timeout;
        let wanted: Vec<(i32, Offset, Option<i64>)> = ranges
            .iter()
            .map(|(&p, &(start, stop))| (p, start, stop))
            .collect();
        let (c, name) = (Arc::clone(&consumer), topic.to_owned());
        let (assignment, end) = off_runtime(format!("watermarks of {topic}"), move || {
            let mut tpl = TopicPartitionList::new();
            let mut end = HashMap::new();
            learn_leaders(&*c, &name, timeout)?;
            for (p, start, stop) in wanted {
                let (low, high) = fetch_watermarks(&*c, &name, p, timeout)?;
                let stop = stop.unwrap_or(high).min(high);
                let first = match start {
                    Offset::Offset(o) => o.max(low),
                    _ => low,
                };
                if first < stop {
                    tpl.add_partition_offset(&name, p, Offset::Offset(first))?;
                    end.insert(p, stop);
                }
            }
            Ok((tpl, end))
        })
        .await?;
        consumer
            .assign(&assignment)
            .map_err(ctx(format!("assigning {topic}")))?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            end,
            timeout,
        })
    }

    /// Reads every partition of `topic` from the beginning to its end when reading starts.
    ///
    /// # Errors
    /// As [`RangeReader::open`]; a missing topic is an error.
    pub async fn whole_topic(
        settings: &ClientSettings,
        group_id: &str,
        topic: &str,
    ) -> Result<Self, KafkaCallError> {
        let ranges = partitions(settings, topic)
            .await?
            .into_iter()
            .map(|p| (p, (Offset::Beginning, None)))
            .collect();
        Self::open(settings, group_id, topic, &ranges).await
    }

    /// The topic being read.
    pub fn topic(&self) -> &str {
        &self.topic
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
            let Some(&stop) = self.end.get(&p) else {
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

/// Reads a whole topic and keeps the latest value of each key (`None` for a tombstone removes
/// the key): what a compacted topic means. `wanted` filters keys before their values are copied.
///
/// # Errors
/// As [`RangeReader::whole_topic`] and [`RangeReader::next`].
pub async fn latest_by_key(
    settings: &ClientSettings,
    group_id: &str,
    topic: &str,
    wanted: impl Fn(&[u8]) -> bool,
) -> Result<HashMap<Vec<u8>, Vec<u8>>, KafkaCallError> {
    let mut reader = RangeReader::whole_topic(settings, group_id, topic).await?;
    let mut latest = HashMap::new();
    while let Some(m) = reader.next().await? {
        let Some(key) = m.key().filter(|k| wanted(k)) else {
            continue;
        };
        match m.payload() {
            Some(v) => latest.insert(key.to_vec(), v.to_vec()),
            None => latest.remove(key),
        };
    }
    Ok(latest)
}

/// Waits until every transaction open on `topic` when called has ended (committed or aborted):
/// until each partition's last stable offset has reached the high watermark the partition had
/// then. A `read_committed` read started afterwards sees every record committed before the call.
/// Transactions opened meanwhile do not hold it up.
///
/// # Errors
/// When a partition is still held back after `max_wait` (the error names the partitions), or a
/// metadata or watermark call fails.
pub async fn wait_settled(
    settings: &ClientSettings,
    topic: &str,
    max_wait: std::time::Duration,
) -> Result<(), KafkaCallError> {
    let parts = partitions(settings, topic).await?;
    // Watermark queries answer by the client's isolation level: the last stable offset under
    // read_committed, the high watermark under read_uncommitted.
    let config = |isolation: &str| {
        let mut c = settings.client_config();
        c.set("isolation.level", isolation);
        c
    };
    let (committed, uncommitted) = (config("read_committed"), config("read_uncommitted"));
    let (name, timeout) = (topic.to_owned(), settings.timeout);
    let held: Vec<i32> = off_runtime(format!("watermarks of {topic}"), move || {
        let committed: BaseConsumer = committed.create()?;
        let uncommitted: BaseConsumer = uncommitted.create()?;
        learn_leaders(&committed, &name, timeout)?;
        learn_leaders(&uncommitted, &name, timeout)?;
        let mut targets = HashMap::new();
        for p in parts {
            targets.insert(p, fetch_watermarks(&uncommitted, &name, p, timeout)?.1);
        }
        let started = std::time::Instant::now();
        loop {
            let mut still = HashMap::new();
            for (p, high) in targets {
                if fetch_watermarks(&committed, &name, p, timeout)?.1 < high {
                    still.insert(p, high);
                }
            }
            if still.is_empty() || started.elapsed() >= max_wait {
                let mut held: Vec<i32> = still.into_keys().collect();
                held.sort_unstable();
                return Ok(held);
            }
            targets = still;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })
    .await?;
    if held.is_empty() {
        Ok(())
    } else {
        Err(KafkaCallError {
            context: format!(
                "{topic} partitions {held:?} still have a transaction open after {} s: their \
                 last records cannot be read yet",
                max_wait.as_secs()
            ),
            source: KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
        })
    }
}
