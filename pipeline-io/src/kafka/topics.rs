//! Topic metadata and creation: the partitions of a topic, and creating the topics a binary
//! writes when they are missing (an existing topic is left as it is).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{ClientSettings, KafkaCallError, OffRuntimeDrop, ctx, off_runtime};

/// A topic to create if missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic's name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic configs (`cleanup.policy`, `max.message.bytes`, …).
    pub configs: Vec<(&'static str, String)>,
}

impl TopicSpec {
    /// A topic with `max.message.bytes` = [`schemas::topics::MAX_MESSAGE_BYTES`] (the
    /// `message.max.bytes` of every client) and the broker's defaults otherwise.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor,
            configs: vec![(
                "max.message.bytes",
                schemas::topics::MAX_MESSAGE_BYTES.to_string(),
            )],
        }
    }

    /// Adds a topic config.
    #[must_use]
    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.configs.push((key, value.into()));
        self
    }

    /// Log compaction: the latest record per key is kept.
    #[must_use]
    pub fn compacted(self) -> Self {
        self.with("cleanup.policy", "compact")
    }
}

/// Creates the topics of `specs` that do not exist yet, and waits until every partition of
/// those it created has a leader (at most the client timeout): a read or write right after
/// creation would otherwise meet `NotLeaderForPartition`. Returns the names of the topics it
/// created, each with the partitions its spec asked for.
///
/// A topic whose creation is refused for want of a Create ACL is accepted when it exists, so
/// binaries run on secured clusters whose topics are made by an operator.
///
/// # Errors
/// Admin errors other than "already exists", naming the topic; a refused creation of a topic
/// that does not exist; a created topic still without leaders after the client timeout.
pub async fn ensure_topics(
    settings: &ClientSettings,
    specs: &[TopicSpec],
) -> Result<Vec<String>, KafkaCallError> {
    let admin: OffRuntimeDrop<AdminClient<DefaultClientContext>> = OffRuntimeDrop::new(
        settings
            .client_config()
            .create()
            .map_err(ctx("creating the admin client"))?,
    );
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            s.configs.iter().fold(
                NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication_factor),
                ),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(settings.timeout));
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let results = admin
        .create_topics(new.iter(), &options)
        .await
        .map_err(ctx(format!("creating topics {}", names.join(", "))))?;
    let mut created = Vec::new();
    let mut refused = Vec::new();
    for result in results {
        match result {
            Ok(topic) => {
                tracing::info!(%topic, "topic created");
                let partitions = specs
                    .iter()
                    .find(|s| s.name == topic)
                    .map_or(1, |s| s.partitions);
                created.push((topic, partitions));
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            // A secured cluster's users may lack Create: the broker refuses before it looks
            // whether the topic exists. Topics made beforehand (a Strimzi KafkaTopic) are fine.
            Err((topic, RDKafkaErrorCode::TopicAuthorizationFailed)) => refused.push(topic),
            Err((topic, code)) => {
                return Err(KafkaCallError {
                    context: format!("creating topic {topic}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    if !refused.is_empty() {
        let names: Vec<&str> = refused.iter().map(String::as_str).collect();
        partitions_of(settings, &names)
            .await
            .map_err(|e| KafkaCallError {
                context: format!(
                    "creating topic {}: not authorized to create it (no Create ACL), and it \
                     does not exist or cannot be described ({}): create it beforehand (e.g. a \
                     Strimzi KafkaTopic) or grant Create",
                    names.join(", "),
                    e.context
                ),
                source: KafkaError::AdminOp(RDKafkaErrorCode::TopicAuthorizationFailed),
            })?;
        tracing::debug!(topics = %names.join(", "), "topics exist; creating them was not authorized");
    }
    wait_for_leaders(settings, &created, settings.timeout).await?;
    Ok(created.into_iter().map(|(topic, _)| topic).collect())
}

/// Waits until each of `topics` (name, partition count) has all its partitions, each with a
/// leader: a read or write right after a topic is created would otherwise meet
/// `NotLeaderForPartition` or a missing partition.
///
/// # Errors
/// A metadata call's error, or `LeaderNotAvailable` naming the topics when they are not ready
/// after `max_wait`.
pub async fn wait_for_leaders(
    settings: &ClientSettings,
    topics: &[(String, i32)],
    max_wait: Duration,
) -> Result<(), KafkaCallError> {
    if topics.is_empty() {
        return Ok(());
    }
    let config = settings.client_config();
    let timeout = settings.timeout;
    let names: Vec<&str> = topics.iter().map(|(t, _)| t.as_str()).collect();
    let context = format!("waiting for leaders of {}", names.join(", "));
    let topics = topics.to_vec();
    let led = off_runtime(context.clone(), move || {
        let consumer: BaseConsumer = config.create()?;
        let started = std::time::Instant::now();
        loop {
            let mut all = true;
            for (name, partitions) in &topics {
                let metadata = consumer.fetch_metadata(Some(name), timeout)?;
                all &= metadata.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && t.partitions().len() == usize::try_from(*partitions).unwrap_or(0)
                        && t.partitions()
                            .iter()
                            .all(|p| p.error().is_none() && p.leader() >= 0)
                });
            }
            if all || started.elapsed() >= max_wait {
                return Ok(all);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })
    .await?;
    if led {
        Ok(())
    } else {
        Err(KafkaCallError {
            context,
            source: KafkaError::MetadataFetch(RDKafkaErrorCode::LeaderNotAvailable),
        })
    }
}

/// The partition ids of `topic`.
///
/// # Errors
/// Metadata errors, or `UnknownTopicOrPartition` when the topic does not exist.
pub async fn partitions(
    settings: &ClientSettings,
    topic: &str,
) -> Result<Vec<i32>, KafkaCallError> {
    let mut all = partitions_of(settings, &[topic]).await?;
    Ok(all.pop().unwrap_or_default())
}

/// The partition ids of each of `topics`, in order, asked on one client.
///
/// # Errors
/// Metadata errors, or `UnknownTopicOrPartition` naming the first topic that does not exist.
pub async fn partitions_of(
    settings: &ClientSettings,
    topics: &[&str],
) -> Result<Vec<Vec<i32>>, KafkaCallError> {
    let config = settings.client_config();
    let timeout = settings.timeout;
    let names: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    let all = off_runtime(format!("metadata of {}", topics.join(", ")), move || {
        let consumer: BaseConsumer = config.create()?;
        names
            .iter()
            .map(|name| {
                let metadata = consumer.fetch_metadata(Some(name), timeout)?;
                Ok(metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == name && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect::<Vec<i32>>())
            })
            .collect::<Result<Vec<_>, KafkaError>>()
    })
    .await?;
    if let Some((topic, _)) = topics.iter().zip(&all).find(|(_, p)| p.is_empty()) {
        return Err(KafkaCallError {
            context: format!("topic {topic} does not exist"),
            source: KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        });
    }
    Ok(all)
}

/// The low and high watermarks of one partition.
///
/// # Errors
/// The metadata call's error.
pub async fn watermarks(
    settings: &ClientSettings,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), KafkaCallError> {
    let config = settings.client_config();
    let timeout: Duration = settings.timeout;
    let name = topic.to_owned();
    off_runtime(format!("watermarks of {topic}/{partition}"), move || {
        let consumer: BaseConsumer = config.create()?;
        super::learn_leaders(&consumer, &name, timeout)?;
        super::fetch_watermarks(&consumer, &name, partition, timeout)
    })
    .await
}
