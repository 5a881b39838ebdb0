//! Kafka helpers for integration tests: client settings with bounded timeouts, topic creation,
//! reading a whole topic with `read_committed`, and waiting until no transaction is open on it.
//!
//! Every timeout here is finite: when the broker is stopped during a test, calls end with a
//! [`HarnessError`] (and the test fails) instead of hanging.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pipeline_io::kafka::{ReaderContext, fetch_watermarks};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::{kafka_bootstrap, unique_name};

/// How long one request to the broker may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`consume_all`] may take as a whole.
pub const CONSUME_ALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the Kafka helpers, with the topic or step they concern.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A client call failed.
    #[error("kafka {context}: {source}")]
    Kafka {
        /// What was being done (names the topic).
        context: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// A topic-level error reported by the broker (create, metadata).
    #[error("kafka {context}: {message}")]
    Broker {
        /// What was being done (names the topic).
        context: String,
        /// The broker's error.
        message: String,
    },
    /// A step did not finish in time.
    #[error("timed out after {waited_ms} ms: {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        waited_ms: u128,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task of {what} failed: {message}")]
    Task {
        /// What the task did.
        what: String,
        /// Why it ended.
        message: String,
    },
}

/// Settings shared by every client: the bootstrap servers and finite network timeouts.
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", kafka_bootstrap())
        .set("socket.timeout.ms", "10000")
        .set("socket.connection.setup.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "1000")
        // The pipeline's record limit (`schemas::topics::MAX_MESSAGE_BYTES`), so that tests can
        // write records as large as the pipeline's own clients may.
        .set("message.max.bytes", "1048576");
    config
}

/// Settings of an idempotent producer whose sends fail after 30 s without a broker.
pub fn producer_config() -> ClientConfig {
    let mut config = client_config();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("request.timeout.ms", "10000");
    config
}

/// Settings of a transactional producer with the given `transactional.id`.
pub fn transactional_producer_config(transactional_id: &str) -> ClientConfig {
    let mut config = producer_config();
    config
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "60000");
    config
}

/// Longest wait of [`consume_all`] for a topic's last stable offset to reach its high
/// watermark (a commit's markers being written) before it reads.
const STABLE_WAIT: Duration = Duration::from_secs(1);

/// Settings of a consumer in `group_id` that reads only committed records from the beginning
/// and commits nothing by itself.
pub fn consumer_config(group_id: &str) -> ClientConfig {
    let mut config = client_config();
    config
        .set("group.id", group_id)
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "10000")
        .set("enable.partition.eof", "true");
    config
}

/// How to create a topic with [`create_topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOptions {
    /// Number of partitions (at least 1).
    pub partitions: i32,
    /// `cleanup.policy=compact` instead of `delete`.
    pub compact: bool,
    /// Further topic settings, e.g. `("retention.ms", "60000")`.
    pub config: Vec<(String, String)>,
}

impl TopicOptions {
    /// A topic with `partitions` partitions and the broker's default settings.
    pub fn new(partitions: i32) -> Self {
        Self {
            partitions,
            compact: false,
            config: Vec::new(),
        }
    }

    /// The same topic, compacted (`cleanup.policy=compact`).
    #[must_use]
    pub fn compacted(mut self) -> Self {
        self.compact = true;
        self
    }

    /// The same topic with one more setting.
    #[must_use]
    pub fn with_config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_owned(), value.to_owned()));
        self
    }
}

impl Default for TopicOptions {
    fn default() -> Self {
        Self::new(1)
    }
}

/// Creates `topic` and waits until the broker reports a leader for each of its partitions.
///
/// # Errors
/// When the topic exists already, the broker refuses it, or it is not ready within
/// [`REQUEST_TIMEOUT`] several times over.
pub async fn create_topic(topic: &str, options: &TopicOptions) -> Result<(), HarnessError> {
    let context = format!("create topic {topic}");
    let admin: AdminClient<DefaultClientContext> =
        client_config()
            .create()
            .map_err(|source| HarnessError::Kafka {
                context: context.clone(),
                source,
            })?;
    let mut new_topic = NewTopic::new(topic, options.partitions, TopicReplication::Fixed(1));
    if options.compact {
        new_topic = new_topic.set("cleanup.policy", "compact");
    }
    for (key, value) in &options.config {
        new_topic = new_topic.set(key, value);
    }
    let admin_options = AdminOptions::new()
        .operation_timeout(Some(Timeout::After(REQUEST_TIMEOUT)))
        .request_timeout(Some(Timeout::After(REQUEST_TIMEOUT)));
    let results = admin
        .create_topics([&new_topic], &admin_options)
        .await
        .map_err(|source| HarnessError::Kafka {
            context: context.clone(),
            source,
        })?;
    for result in results {
        if let Err((name, code)) = result {
            return Err(HarnessError::Broker {
                context: format!("create topic {name}"),
                message: code.to_string(),
            });
        }
    }
    drop(admin);
    let mut settings = pipeline_io::kafka::ClientSettings::new(kafka_bootstrap(), "harness");
    settings.timeout = REQUEST_TIMEOUT;
    let started = Instant::now();
    pipeline_io::kafka::wait_for_leaders(
        &settings,
        &[(topic.to_owned(), options.partitions)],
        REQUEST_TIMEOUT * 3,
    )
    .await
    .map_err(|e| match e.source.rdkafka_error_code() {
        Some(rdkafka::types::RDKafkaErrorCode::LeaderNotAvailable) => HarnessError::Timeout {
            what: format!(
                "leaders for the {} partitions of {topic}",
                options.partitions
            ),
            waited_ms: started.elapsed().as_millis(),
        },
        _ => HarnessError::Kafka {
            context: e.context,
            source: e.source,
        },
    })
}

/// One record read by [`consume_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any (`None` is a tombstone).
    pub value: Option<Vec<u8>>,
    /// Its headers in order; a header may have no value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Its timestamp in milliseconds since the epoch, if it has one.
    pub timestamp_ms: Option<i64>,
}

impl ConsumedRecord {
    /// The value of the first header named `key`, if present and not null.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(name, _)| name == key)
            .and_then(|(_, value)| value.as_deref())
    }
}

/// Reads every committed record of `topic`, on all partitions, from the beginning up to the end
/// the broker reports when the call starts, with `isolation.level=read_committed` and a fresh
/// consumer group. Records are sorted by partition, then offset.
///
/// # Errors
/// When the topic does not exist, a client call fails, or the end is not reached within
/// [`CONSUME_ALL_TIMEOUT`].
pub async fn consume_all(topic: &str) -> Result<Vec<ConsumedRecord>, HarnessError> {
    consume_all_within(topic, CONSUME_ALL_TIMEOUT).await
}

/// The keys of [`consume_all`]'s records (records without a key are left out), in its order.
///
/// # Errors
/// As [`consume_all`].
pub async fn committed_keys(topic: &str) -> Result<Vec<Vec<u8>>, HarnessError> {
    Ok(consume_all(topic)
        .await?
        .into_iter()
        .filter_map(|r| r.key)
        .collect())
}

/// [`consume_all`] with its own overall time limit.
///
/// # Errors
/// As [`consume_all`].
pub async fn consume_all_within(
    topic: &str,
    limit: Duration,
) -> Result<Vec<ConsumedRecord>, HarnessError> {
    let topic = topic.to_owned();
    let context = format!("consume all of {topic}");
    blocking(&context, move || consume_all_blocking(&topic, limit)).await
}

fn consume_all_blocking(topic: &str, limit: Duration) -> Result<Vec<ConsumedRecord>, HarnessError> {
    let started = Instant::now();
    let kafka_error = |context: String| move |source| HarnessError::Kafka { context, source };
    // The pipeline's reader context: end-of-partition events are how this stops, not errors to log.
    let consumer: BaseConsumer<ReaderContext> =
        consumer_config(&unique_name("harness-consume-all"))
            .create_with_context(ReaderContext)
            .map_err(kafka_error(format!("consumer for {topic}")))?;

    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(kafka_error(format!("metadata of {topic}")))?;
    let Some(found) = metadata.topics().iter().find(|found| found.name() == topic) else {
        return Err(HarnessError::Broker {
            context: format!("metadata of {topic}"),
            message: "topic not in the metadata response".to_owned(),
        });
    };
    if let Some(error) = found.error() {
        return Err(HarnessError::Broker {
            context: format!("metadata of {topic}"),
            message: format!("{error:?}"),
        });
    }
    if found.partitions().is_empty() {
        return Err(HarnessError::Broker {
            context: format!("metadata of {topic}"),
            message: "topic has no partitions (does it exist?)".to_owned(),
        });
    }

    // A read_committed consumer's watermarks end at the last stable offset. Just after a
    // producer's commit returns, its markers may not be written yet, so the partition looks
    // as if it ended before that transaction (a CI run read 0 of 300 users that way): wait up
    // to STABLE_WAIT for the stable offset to reach the high watermark. A transaction left open
    // (a killed writer) keeps it below; then the read ends at the stable offset, as before.
    let ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    let marks: BaseConsumer = {
        let mut config = consumer_config(&unique_name("harness-marks"));
        config.set("isolation.level", "read_uncommitted");
        config
            .create()
            .map_err(kafka_error(format!("watermark client for {topic}")))?
    };
    let waiting = Instant::now();
    loop {
        let mut stable_everywhere = true;
        for &id in &ids {
            let context = || format!("watermarks of {topic}/{id}");
            let (_, stable) = fetch_watermarks(&consumer, topic, id, REQUEST_TIMEOUT)
                .map_err(kafka_error(context()))?;
            let (_, high) = fetch_watermarks(&marks, topic, id, REQUEST_TIMEOUT)
                .map_err(kafka_error(context()))?;
            stable_everywhere &= stable >= high;
        }
        if stable_everywhere || waiting.elapsed() > STABLE_WAIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Partition -> stable offset still to reach.
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &id in &ids {
        let (low, high) = fetch_watermarks(&consumer, topic, id, REQUEST_TIMEOUT)
            .map_err(kafka_error(format!("watermarks of {topic}/{id}")))?;
        if high > low {
            pending.insert(id, high);
            assignment
                .add_partition_offset(topic, id, Offset::Beginning)
                .map_err(kafka_error(format!("assign {topic}/{id}")))?;
        }
    }
    let mut records = Vec::new();
    if pending.is_empty() {
        return Ok(records);
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_error(format!("assign {topic}")))?;

    while !pending.is_empty() {
        if started.elapsed() > limit {
            return Err(HarnessError::Timeout {
                what: format!(
                    "reading {topic} to its end (partitions not finished: {:?})",
                    pending.keys().collect::<Vec<_>>()
                ),
                waited_ms: started.elapsed().as_millis(),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            // read_committed stops at the last stable offset and skips aborted records and
            // transaction markers, so the end of a partition is its EOF event.
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            Some(Err(source)) => {
                return Err(HarnessError::Kafka {
                    context: format!("consume {topic}"),
                    source,
                });
            }
            Some(Ok(message)) => {
                let partition = message.partition();
                let offset = message.offset();
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(ConsumedRecord {
                    partition,
                    offset,
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    headers,
                    timestamp_ms: message.timestamp().to_millis(),
                });
                if pending
                    .get(&partition)
                    .is_some_and(|high| offset + 1 >= *high)
                {
                    pending.remove(&partition);
                }
            }
        }
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    Ok(records)
}

/// Waits until the transactions open on `topic` now have ended: each partition's last stable
/// offset (the end a `read_committed` reader sees) has reached the high watermark it has now
/// ([`pipeline_io::kafka::wait_settled`], which the producer uses before reading checkpoints). A
/// producer killed inside a transaction leaves it open until an instance with the same
/// `transactional.id` starts or its `transaction.timeout.ms` passes; until then,
/// `read_committed` readers (and [`consume_all`]) stop before it, and so before everything
/// committed after it.
///
/// # Errors
/// [`HarnessError::Timeout`] naming the partitions still open after `limit`, or Kafka errors.
pub async fn wait_for_no_open_transaction(
    topic: &str,
    limit: Duration,
) -> Result<(), HarnessError> {
    let started = Instant::now();
    let mut settings = pipeline_io::kafka::ClientSettings::new(kafka_bootstrap(), "harness");
    settings.timeout = REQUEST_TIMEOUT;
    pipeline_io::kafka::wait_settled(&settings, topic, limit)
        .await
        .map_err(|e| match e.source.rdkafka_error_code() {
            Some(rdkafka::types::RDKafkaErrorCode::OperationTimedOut) => HarnessError::Timeout {
                what: e.context,
                waited_ms: started.elapsed().as_millis(),
            },
            _ => HarnessError::Kafka {
                context: e.context,
                source: e.source,
            },
        })
}

/// Runs blocking client work off the async runtime.
async fn blocking<T, F>(what: &str, work: F) -> Result<T, HarnessError>
where
    F: FnOnce() -> Result<T, HarnessError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| HarnessError::Task {
            what: what.to_owned(),
            message: error.to_string(),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_options_build_up() {
        let options = TopicOptions::new(3)
            .compacted()
            .with_config("retention.ms", "1000");
        assert_eq!(options.partitions, 3);
        assert!(options.compact);
        assert_eq!(
            options.config,
            vec![("retention.ms".to_owned(), "1000".to_owned())]
        );
    }

    #[test]
    fn header_lookup_finds_first_non_null_value() {
        let record = ConsumedRecord {
            partition: 0,
            offset: 7,
            key: None,
            value: None,
            headers: vec![
                ("a".to_owned(), Some(b"1".to_vec())),
                ("b".to_owned(), None),
                ("a".to_owned(), Some(b"2".to_vec())),
            ],
            timestamp_ms: None,
        };
        assert_eq!(record.header("a"), Some(&b"1"[..]));
        assert_eq!(record.header("b"), None);
        assert_eq!(record.header("c"), None);
    }
}
