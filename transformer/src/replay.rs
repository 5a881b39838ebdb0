//! `transformer replay`: re-normalizes past raw events, read from raw topic offsets, into the
//! output topics or into topics with another prefix.
//!
//! Selections: `--tenant T --sync-id S` (that sync only, from its `sync_started` to its
//! `sync_completed`), `--from-offset` (`<offset>` for every partition or `<partition>:<offset>`)
//! or `--from-time` (RFC 3339), each optionally limited to `--tenant`. Reading stops at the end
//! of the raw topic as it was when the replay started. The replay starts from empty state: a
//! replayed sync writes its users and applications but no tombstones; replayed activities
//! count from zero (so replay activities into another prefix, or from the beginning).
//! Output is transactional (its own `transactional.id`), so `read_committed` readers never see
//! half a batch; the running transformer's offsets are not touched.

use std::collections::HashMap;

use pipeline_io::kafka::{
    ClientSettings, KafkaCallError, RangeReader, TxnSession, ctx, off_runtime,
};
use pipeline_io::registry::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::raw::{RawEvent, kind};
use schemas::time::parse_rfc3339_ms;
use schemas::topics::OutputTopics;
use serde::Serialize;

use crate::config::Config;
use crate::pipeline::PipelineError;
use crate::pipeline::codec::{Sent, Staged, decode_raw, stage_results};
use crate::pipeline::live::txn_settings;
use crate::pipeline::outputs::{self, Prepared, SchemaIds};
use crate::processor::{Mode, Processor, Source};

/// Command-line arguments of `transformer replay`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplayArgs {
    /// Only raw events of this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this sync of `--tenant`, from its sync_started to its sync_completed.
    #[arg(long, requires = "tenant")]
    pub sync_id: Option<String>,
    /// Start offsets: `<offset>` for every partition, or `<partition>:<offset>` (repeat or
    /// separate with commas). Default: the beginning.
    #[arg(long, value_delimiter = ',', conflicts_with = "from_time")]
    pub from_offset: Vec<String>,
    /// Start at the first raw event at or after this RFC 3339 time.
    #[arg(long)]
    pub from_time: Option<String>,
    /// Write to topics with this prefix instead of the configured `output_prefix`.
    #[arg(long)]
    pub output_prefix: Option<String>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Raw events read.
    pub read: u64,
    /// Raw events that matched the selection and were processed.
    pub processed: u64,
    /// Records written to the output topics (including tombstones).
    pub produced: u64,
    /// Raw events written to the dead-letter topic.
    pub dead_lettered: u64,
    /// Whether the selected sync's `sync_completed` was found (sync replays only).
    pub sync_completed: bool,
    /// The users topic written.
    pub users_topic: String,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An argument is invalid.
    #[error("replay: {0}")]
    Args(String),
    /// Kafka, registry or encoding failure.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<KafkaCallError> for ReplayError {
    fn from(e: KafkaCallError) -> Self {
        Self::Pipeline(e.into())
    }
}

async fn start_offsets(
    args: &ReplayArgs,
    settings: &ClientSettings,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, (Offset, Option<i64>)>, ReplayError> {
    let mut starts: HashMap<i32, (Offset, Option<i64>)> = partitions
        .iter()
        .map(|p| (*p, (Offset::Beginning, None)))
        .collect();
    if let Some(t) = &args.from_time {
        let ms = parse_rfc3339_ms(t)
            .ok_or_else(|| ReplayError::Args(format!("--from-time `{t}` is not RFC 3339")))?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(topic, *p, Offset::Offset(ms))
                .map_err(ctx("building time lookup"))?;
        }
        let (config, timeout) = (settings.client_config(), settings.timeout);
        let found = off_runtime("offsets_for_times", move || {
            let consumer: BaseConsumer = config.create()?;
            consumer.offsets_for_times(tpl, timeout)
        })
        .await?;
        for e in found.elements() {
            let start = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                // No event at or after the time: nothing to read on this partition.
                _ => Offset::End,
            };
            starts.insert(e.partition(), (start, None));
        }
        starts.retain(|_, (o, _)| *o != Offset::End);
    }
    for spec in &args.from_offset {
        let spec = spec.trim();
        let bad = || {
            ReplayError::Args(format!(
                "--from-offset `{spec}` is not `<offset>` or `<partition>:<offset>`"
            ))
        };
        match spec.split_once(':') {
            Some((p, o)) => {
                let p: i32 = p.parse().map_err(|_| bad())?;
                let o: i64 = o.parse().map_err(|_| bad())?;
                if !starts.contains_key(&p) || o < 0 {
                    return Err(bad());
                }
                starts.insert(p, (Offset::Offset(o), None));
            }
            None => {
                let o: i64 = spec.parse().map_err(|_| bad())?;
                if o < 0 {
                    return Err(bad());
                }
                for v in starts.values_mut() {
                    *v = (Offset::Offset(o), None);
                }
            }
        }
    }
    Ok(starts)
}

/// Runs a replay (see the module documentation).
///
/// # Errors
/// Bad arguments, Kafka or registry failures.
pub async fn replay(config: &Config, args: &ReplayArgs) -> Result<ReplaySummary, ReplayError> {
    let topics = match &args.output_prefix {
        Some(prefix) => OutputTopics::new(prefix),
        None => config.kafka.topics.clone(),
    };
    let registry = config.registry.client().map_err(PipelineError::from)?;
    let Prepared {
        raw_partitions,
        ids,
    } = outputs::prepare(config, &registry, &topics)
        .await
        .map_err(PipelineError::from)?;
    let raw_topic = &config.kafka.raw_topic;
    let client = &config.kafka.client;
    let ranges = start_offsets(args, client, raw_topic, &raw_partitions).await?;
    let group = format!("{}-replay", config.kafka.group_id);
    let mut reader = RangeReader::open(client, &group, raw_topic, &ranges).await?;
    let transactional_id = format!(
        "{}-replay-{}",
        config.kafka.transactional_id,
        uuid::Uuid::new_v4()
    );
    let mut session = TxnSession::open(client, &txn_settings(config, &transactional_id)).await?;
    let result = replay_loop(
        config,
        args,
        &topics,
        ids,
        &registry,
        &mut reader,
        &mut session,
    )
    .await;
    if result.is_err() {
        // Do not leave an open transaction to block read_committed readers until it times out.
        session.abort().await;
    }
    result
}

async fn replay_loop(
    config: &Config,
    args: &ReplayArgs,
    topics: &OutputTopics,
    ids: SchemaIds,
    registry: &Registry,
    reader: &mut RangeReader,
    session: &mut TxnSession,
) -> Result<ReplaySummary, ReplayError> {
    let raw_topic = config.kafka.raw_topic.as_str();
    let mut processor = Processor::new(config.processing.activity_dedup_capacity)
        .with_max_delete_share(config.processing.max_delete_share);
    let mut summary = ReplaySummary {
        users_topic: topics.users.clone(),
        ..ReplaySummary::default()
    };
    let mut outputs = Vec::new();
    let mut staged = Staged::default();
    let mut event = RawEvent::default();
    let mut in_txn = 0_usize;
    let mut seen_start = false;
    loop {
        let Some(m) = reader.next().await? else { break };
        summary.read += 1;
        if in_txn == 0 {
            session.begin().await?;
        }
        in_txn += 1;
        let source = Source {
            topic: raw_topic,
            partition: m.partition(),
            offset: m.offset(),
        };
        let poison = decode_raw(registry, m.key(), m.payload(), &mut event)
            .await
            .map_err(PipelineError::from)?;
        let failure = match poison {
            Some((kind, error)) => {
                // Poison cannot be attributed to a tenant; a selective replay leaves it alone.
                if args.tenant.is_some() {
                    None
                } else {
                    Some((kind, error))
                }
            }
            None => {
                let ev = &event;
                let tenant_ok = args.tenant.as_ref().is_none_or(|t| *t == ev.tenant_id);
                let sync_ok = match &args.sync_id {
                    None => true,
                    Some(s) => {
                        let mine = ev.sync_id.as_deref() == Some(s.as_str());
                        if mine && ev.kind == kind::SYNC_STARTED {
                            seen_start = true;
                        }
                        mine && seen_start
                    }
                };
                if !(tenant_ok && sync_ok) {
                    None
                } else {
                    summary.processed += 1;
                    let done = args.sync_id.is_some() && ev.kind == kind::SYNC_COMPLETED;
                    let r = processor.process(ev, source, Mode::Live, &mut outputs);
                    if done && r.is_ok() {
                        summary.sync_completed = true;
                    }
                    r.err().map(|e| ("normalize", e.to_string()))
                }
            }
        };
        let failure = failure.as_ref().map(|(k, e)| (*k, e.as_str()));
        stage_results(
            &mut staged,
            (topics, ids),
            (raw_topic, &m),
            failure,
            &mut outputs,
            |sent| match sent {
                Sent::Output(_) => summary.produced += 1,
                Sent::DeadLetter { .. } => summary.dead_lettered += 1,
            },
            |o| processor.recycle(o),
        )?;
        staged.send(session).await?;
        if in_txn >= config.processing.batch_max_records || summary.sync_completed {
            session.commit().await?;
            in_txn = 0;
        }
        if summary.sync_completed {
            break;
        }
    }
    if in_txn > 0 {
        session.commit().await?;
    }
    tracing::info!(
        read = summary.read,
        processed = summary.processed,
        produced = summary.produced,
        "replay finished"
    );
    Ok(summary)
}
