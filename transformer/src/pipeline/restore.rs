//! The restore of the raw partitions an instance is assigned: each partition's processor
//! state rebuilt from Kafka alone, so that in-memory state never diverges from committed output.
//!
//! Every record the transformer writes goes to the partition of the raw record it came from
//! (the output and state topics have as many partitions as the raw topic), so the state of raw
//! partition `p` is in partition `p` of the output and state topics, and only there. An
//! assignment reads those partitions, never the whole of a topic:
//!
//! 1. The committed offsets of the assigned partitions (a `read_committed` fetch waits for a
//!    transaction that holds offsets of them to end, such as the last one of the previous owner).
//! 2. Partitions `p` of the users, applications and app usage topics, read to their end
//!    ([`read_records`]): what is live, and each (application, user) usage.
//! 3. Partition `p` of the state topic holds the [`Checkpoint`] of raw partition `p`, written
//!    in the same transaction as the consumed offsets: which syncs were in progress at the
//!    committed offset. Their raw events, from the sync's start offset to the committed offset,
//!    are re-applied in [`Mode::Restore`] (no outputs), so a sync that spans a hand-over still
//!    knows which entities it has seen and can write the right tombstones when it completes.

use std::collections::HashMap;
use std::sync::Arc;

use pipeline_io::kafka::{RangeReader, off_runtime};
use pipeline_io::registry::Registry;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::raw::RawEvent;
use serde::{Deserialize, Serialize};

use super::PipelineError;
use super::codec::decode_raw;
use super::outputs::{OutputError, OutputKind, OutputRecord, read_records};
use crate::config::Config;
use crate::processor::{InProgress, Mode, Processor, Source};

/// Value of a checkpoint record (key `<raw topic>/<partition>` on the state topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The next raw offset to read, committed in the same transaction.
    pub committed_offset: i64,
    /// Syncs in progress at that offset.
    pub in_progress: Vec<InProgress>,
}

impl Checkpoint {
    /// The state topic's key of a raw partition's checkpoint.
    pub fn key(raw_topic: &str, partition: i32) -> String {
        format!("{raw_topic}/{partition}")
    }
}

/// The consumer group name of restore reads (never committed).
fn restore_group(config: &Config) -> String {
    format!("{}-restore", config.kafka.group_id)
}

/// The committed offsets of `partitions` of the raw topic in `consumer`'s group.
///
/// # Errors
/// Kafka errors (a timeout while a transaction holding offsets of them stays open).
pub async fn committed_offsets<C: ConsumerContext + 'static>(
    config: &Config,
    consumer: &Arc<StreamConsumer<C>>,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, PipelineError> {
    let mut wanted = TopicPartitionList::new();
    for &p in partitions {
        wanted.add_partition(&config.kafka.raw_topic, p);
    }
    let (c, timeout) = (Arc::clone(consumer), config.kafka.client.timeout);
    let committed = off_runtime("reading committed offsets", move || {
        c.committed_offsets(wanted, timeout)
    })
    .await?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Rebuilds one processor per partition of `partitions` (newly assigned; `committed_at`: their
/// committed offsets, where the group has one), each from that partition of the output and
/// state topics (see the module documentation).
///
/// # Errors
/// [`PipelineError::OutputSchemaLost`] (fatal), Kafka or registry errors.
pub async fn restore_partitions(
    config: &Config,
    registry: &Registry,
    partitions: &[i32],
    committed_at: &HashMap<i32, i64>,
) -> Result<HashMap<i32, Processor>, PipelineError> {
    let started = std::time::Instant::now();
    let mut processors: HashMap<i32, Processor> = partitions
        .iter()
        .map(|&p| {
            let processor = Processor::new(config.processing.activity_dedup_capacity)
                .with_max_delete_share(config.processing.max_delete_share);
            (p, processor)
        })
        .collect();
    // Opening a reader (a client of its own, the partitions' watermarks) takes tens of
    // milliseconds even for empty partitions, and longer right after the topics were created:
    // the four readers of steps 2 and 3 are opened at once, then read one after the other.
    // Their ends are fixed when they open, which is after step 1 waited for the previous
    // owner's last transaction; a reader waiting its turn prefetches at most 4 MB
    // (`ClientSettings::reader_config`).
    let group = restore_group(config);
    let ranges: HashMap<i32, (Offset, Option<i64>)> = partitions
        .iter()
        .map(|&p| (p, (Offset::Beginning, None)))
        .collect();
    let open = |topic| RangeReader::open(&config.kafka.client, &group, topic, &ranges);
    let topics = &config.kafka.topics;
    let (users, applications, app_usage, state) = tokio::try_join!(
        open(&topics.users),
        open(&topics.applications),
        open(&topics.app_usage),
        open(&topics.state),
    )?;
    let outputs = [
        (OutputKind::Users, users),
        (OutputKind::Applications, applications),
        (OutputKind::AppUsage, app_usage),
    ];
    let records = restore_outputs(registry, outputs, &mut processors).await?;
    let syncs = restore_in_progress(config, registry, &mut processors, committed_at, state).await?;
    tracing::info!(
        ?partitions,
        records,
        syncs_in_progress = syncs,
        restore_ms = started.elapsed().as_millis() as u64,
        // How much the restored state weighs (Linux only).
        rss_mb = pipeline_io::ops::status_kib(None, "VmRSS:")
            .map_or(f64::NAN, |kb| (kb as f64 / 102.4).round() / 10.0),
        "partitions restored"
    );
    Ok(processors)
}

/// Step 2: reads the assigned partitions of every state-bearing output topic (`readers`, one
/// per [`OutputKind::STATE`]) into `processors`.
async fn restore_outputs(
    registry: &Registry,
    readers: [(OutputKind, RangeReader); 3],
    processors: &mut HashMap<i32, Processor>,
) -> Result<u64, PipelineError> {
    let mut restored = 0_u64;
    for (kind, reader) in readers {
        let topic = reader.topic().to_owned();
        let apply = |partition: i32, key: &str, record: Option<OutputRecord>| {
            let Some(processor) = processors.get_mut(&partition) else {
                return;
            };
            if !key.contains('/') {
                tracing::warn!(%topic, key, "output record without a tenant/id key passed over on restore");
                return;
            }
            match (kind, record) {
                (OutputKind::Users, None) => processor.restore_user(key, None),
                (OutputKind::Applications, None) => processor.restore_application(key, None),
                (OutputKind::AppUsage, None) => processor.restore_app_usage(key, None),
                (_, Some(OutputRecord::User(u))) => processor.restore_user(key, Some(&u)),
                (_, Some(OutputRecord::Application(a))) => {
                    processor.restore_application(key, Some(&a));
                }
                (_, Some(OutputRecord::AppUsage(u))) => processor.restore_app_usage(key, Some(u)),
                // Not in `STATE`: sign-on counts leave no state behind.
                (OutputKind::AppSignons, None) | (_, Some(OutputRecord::AppSignons(_))) => {}
            }
        };
        restored += read_records(reader, registry, kind, apply)
            .await
            .map_err(|e| match e {
                OutputError::SchemaLost {
                    topic,
                    partition,
                    offset,
                    source,
                } => PipelineError::OutputSchemaLost {
                    topic,
                    partition,
                    offset,
                    source,
                },
                other => other.into(),
            })?;
    }
    Ok(restored)
}

/// Step 3: reads the checkpoints of `processors`' partitions (`state`, a reader of the state
/// topic) and re-applies the raw events of the syncs in progress at `committed_at`. Returns how
/// many syncs were re-read.
async fn restore_in_progress(
    config: &Config,
    registry: &Registry,
    processors: &mut HashMap<i32, Processor>,
    committed_at: &HashMap<i32, i64>,
    mut state: RangeReader,
) -> Result<usize, PipelineError> {
    let group = restore_group(config);
    let raw_topic = &config.kafka.raw_topic;
    let prefix = format!("{raw_topic}/");
    let mut checkpoints: HashMap<i32, Checkpoint> = HashMap::new();
    while let Some(m) = state.next().await? {
        let Some(partition) = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
            .filter(|p| processors.contains_key(p))
        else {
            continue;
        };
        match m.payload().map(serde_json::from_slice::<Checkpoint>) {
            Some(Ok(c)) => {
                checkpoints.insert(partition, c);
            }
            Some(Err(e)) => tracing::warn!(error = %e, partition, "unreadable checkpoint ignored"),
            None => {
                checkpoints.remove(&partition);
            }
        }
    }
    let mut syncs = 0;
    let mut ranges: HashMap<i32, (Offset, Option<i64>)> = HashMap::new();
    for (p, c) in checkpoints {
        let Some(&committed) = committed_at.get(&p) else {
            continue;
        };
        if c.committed_offset != committed {
            tracing::warn!(
                partition = p,
                checkpoint = c.committed_offset,
                committed,
                "checkpoint and committed offset differ; syncs in progress restart from scratch"
            );
            continue;
        }
        if let Some(first) = c.in_progress.iter().map(|s| s.start_offset).min()
            && let Some(processor) = processors.get_mut(&p)
        {
            ranges.insert(p, (Offset::Offset(first), Some(committed)));
            syncs += c.in_progress.len();
            processor.set_restore_plan(c.in_progress);
        }
    }
    if ranges.is_empty() {
        return Ok(0);
    }
    tracing::info!(syncs, "re-reading raw events of syncs in progress");
    let mut reader = RangeReader::open(&config.kafka.client, &group, raw_topic, &ranges).await?;
    let mut out = Vec::new();
    let mut ev = RawEvent::default();
    while let Some(m) = reader.next().await? {
        let Some(processor) = processors.get_mut(&m.partition()) else {
            continue;
        };
        if decode_raw(registry, m.key(), m.payload(), &mut ev)
            .await?
            .is_none()
        {
            let source = Source {
                topic: raw_topic,
                partition: m.partition(),
                offset: m.offset(),
            };
            let _ = processor.process(&ev, source, Mode::Restore, &mut out);
        }
    }
    for processor in processors.values_mut() {
        processor.set_restore_plan(Vec::new());
    }
    Ok(syncs)
}
