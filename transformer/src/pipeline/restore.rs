//! Start-up restore: the processor's state rebuilt from Kafka alone, so that in-memory state
//! never diverges from committed output.
//!
//! 1. The users, applications and app usage topics are read to their end (`read_committed`,
//!    [`read_output`]): what is live, and each (application, user) usage.
//! 2. The state topic holds one [`Checkpoint`] per raw partition, written in the same
//!    transaction as the consumed offsets: which syncs were in progress at the committed offset.
//!    Their raw events, from the sync's start offset to the committed offset, are re-applied in
//!    [`Mode::Restore`] (no outputs), so a sync that spans a restart still knows which entities
//!    it has seen and can write the right tombstones when it completes.

use std::collections::HashMap;

use pipeline_io::kafka::RangeReader;
use pipeline_io::registry::Registry;
use rdkafka::{Message, Offset};
use serde::{Deserialize, Serialize};

use super::PipelineError;
use super::codec::{Decoded, decode_raw};
use super::outputs::{OutputError, OutputKind, OutputRecord, read_output};
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

/// Step 1: reads every output topic into `processor`.
///
/// # Errors
/// [`PipelineError::OutputSchemaLost`] (fatal), Kafka or registry errors.
pub async fn restore_outputs(
    config: &Config,
    registry: &Registry,
    processor: &mut Processor,
) -> Result<u64, PipelineError> {
    let group = restore_group(config);
    let topics = &config.kafka.topics;
    let mut restored = 0_u64;
    for kind in OutputKind::STATE {
        let apply = |key: &str, record: Option<OutputRecord>| {
            if !key.contains('/') {
                tracing::warn!(topic = %kind.topic(topics), key, "output record without a tenant/id key passed over on restore");
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
        restored += read_output(config, registry, &group, topics, kind, apply)
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
    tracing::info!(records = restored, "state restored from output topics");
    Ok(restored)
}

/// Step 2: re-applies the raw events of the syncs in progress at `committed_at` (the group's
/// committed offset per raw partition).
///
/// # Errors
/// Kafka or registry errors.
pub async fn restore_in_progress(
    config: &Config,
    registry: &Registry,
    processor: &mut Processor,
    committed_at: &HashMap<i32, i64>,
) -> Result<(), PipelineError> {
    let group = restore_group(config);
    let raw_topic = &config.kafka.raw_topic;
    let prefix = format!("{raw_topic}/");
    let mut checkpoints: HashMap<i32, Checkpoint> = HashMap::new();
    let mut reader =
        RangeReader::whole_topic(&config.kafka.client, &group, &config.kafka.topics.state).await?;
    while let Some(m) = reader.next().await? {
        let Some(partition) = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
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
    let mut plan = Vec::new();
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
        if let Some(first) = c.in_progress.iter().map(|s| s.start_offset).min() {
            ranges.insert(p, (Offset::Offset(first), Some(committed)));
            plan.extend(c.in_progress);
        }
    }
    if plan.is_empty() {
        return Ok(());
    }
    tracing::info!(
        syncs = plan.len(),
        "re-reading raw events of syncs in progress"
    );
    processor.set_restore_plan(plan);
    let mut reader = RangeReader::open(&config.kafka.client, &group, raw_topic, &ranges).await?;
    let mut out = Vec::new();
    while let Some(m) = reader.next().await? {
        if let Decoded::Event(ev) = decode_raw(registry, m.key(), m.payload()).await? {
            let source = Source {
                topic: raw_topic,
                partition: m.partition(),
                offset: m.offset(),
            };
            let _ = processor.process(&ev, source, Mode::Restore, &mut out);
        }
    }
    processor.set_restore_plan(Vec::new());
    Ok(())
}
