//! The exactly-once pipeline: raw topic -> [`Processor`](crate::processor::Processor) ->
//! output topics, restarted after transient failures.
//!
//! # Layout
//! - [`live`]: the consume-transform-produce loop in a consumer group, one transaction per
//!   batch (KIP-447 fencing by group generation).
//! - [`restore`]: the restore of an assigned raw partition's state from the same partition of
//!   the output and state topics, which are co-partitioned with the raw topic.
//! - [`outputs`]: the output topics both ways: setup, encoding, and reading them back as
//!   typed records ([`outputs::OutputKind`]), shared with the license report.
//! - [`codec`]: decoding raw records, dead letters, and writing what one raw record produced.
//!
//! # Dead letters
//! A raw record whose value is not in the wire format, names an unknown schema id, is not
//! exactly one raw event datum (trailing bytes included), is keyed for another tenant than its
//! envelope's, or fails normalization is written to the dead-letter topic (same key and
//! value) with headers `error`, `error_kind`, `source_topic`, `source_partition`,
//! `source_offset`, inside the same transaction. So is a raw record the processor will not act
//! on ([`crate::processor::Output::DeadLetter`]): an `oversized` marker, a `sync_completed` of
//! a sync not seen whole, a sync whose deletions were held back. A dead letter over the record
//! limit is cut to fit, with headers `original_size`, `original_sha256` and `truncated`
//! ([`codec::DeadLetter`]). Registry outages are not poison: they restart.

pub mod codec;
pub mod live;
pub mod outputs;
pub mod restore;

use std::sync::Arc;
use std::time::Duration;

use pipeline_io::kafka::probe::PROBE_PERIOD;
use pipeline_io::kafka::{ClientSettings, KafkaCallError};
use pipeline_io::registry::RegistryError;
use schemas::SchemaError;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::metrics::Metrics;

/// Why the pipeline stopped or restarts.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A record on one of our own output topics names a schema the registry no longer serves,
    /// so the state cannot be restored (fatal: restarting cannot bring the schema back).
    #[error(
        "cannot restore state from {topic} partition {partition} offset {offset}: {source}; \
         the registry has lost schemas this transformer registered (was its storage reset?)"
    )]
    OutputSchemaLost {
        /// The output topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// What the registry said.
        source: RegistryError,
    },
    /// A Kafka call failed (transient).
    #[error(transparent)]
    Kafka(#[from] KafkaCallError),
    /// An output record did not encode (a bug).
    #[error("encoding output: {0}")]
    Encode(#[from] SchemaError),
    /// The registry failed (transient unless it refused our schemas).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An output or state topic is not partitioned like the raw topic (fatal).
    #[error("{0}")]
    Layout(String),
    /// The task committing a batch's transaction failed (a bug: it panicked).
    #[error("transaction task: {0}")]
    Transaction(String),
    /// The task registering the output schemas failed (a bug: it panicked).
    #[error("schema registration task: {0}")]
    Registration(String),
    /// A raw record of a partition this instance does not own reached processing (a bug;
    /// the attempt restarts and the partition's new owner reads it).
    #[error(
        "raw record of partition {partition} offset {offset}, which this instance does not own"
    )]
    NotOwned {
        /// The partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
    },
}

impl From<outputs::OutputError> for PipelineError {
    fn from(e: outputs::OutputError) -> Self {
        match e {
            outputs::OutputError::Kafka(e) => Self::Kafka(e),
            outputs::OutputError::Registry(e) => Self::Registry(e),
            e @ outputs::OutputError::Partitions { .. } => Self::Layout(e.to_string()),
            outputs::OutputError::SchemaLost {
                topic,
                partition,
                offset,
                source,
            } => Self::OutputSchemaLost {
                topic,
                partition,
                offset,
                source,
            },
        }
    }
}

impl PipelineError {
    /// Whether a restart may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Encode(_) | Self::OutputSchemaLost { .. } | Self::Layout(_) => false,
            Self::NotOwned { .. } | Self::Transaction(_) | Self::Registration(_) => true,
            Self::Registry(e) => !matches!(e, RegistryError::Refused { .. }),
            Self::Kafka(_) => true,
        }
    }
}

/// Runs the transformer until `shutdown`, restarting after transient failures with backoff
/// (500 ms, doubling up to `restart_backoff_max_ms`). `metrics` are served by the caller.
/// Meanwhile a probe asks the brokers for the raw topic's metadata every 5 s and sets
/// `kafka_reachable`, which `/readyz` needs.
///
/// # Errors
/// Fatal errors only (schemas refused by the registry, output schemas lost, a bug).
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<(), PipelineError> {
    let stop_probe = shutdown.child_token();
    let probe = tokio::spawn(probe_brokers(
        config.kafka.client.clone(),
        config.kafka.raw_topic.clone(),
        stop_probe.clone(),
        Arc::clone(&metrics),
    ));
    let result = attempts(&config, &shutdown, &metrics).await;
    stop_probe.cancel();
    let _ = probe.await;
    result
}

/// Keeps `kafka_reachable` up to date; logs when it changes.
async fn probe_brokers(
    client: ClientSettings,
    raw_topic: String,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let watched = pipeline_io::kafka::probe::watch_brokers(
        &client,
        &raw_topic,
        PROBE_PERIOD,
        &shutdown,
        |outcome| {
            let was = metrics.kafka_reachable();
            metrics.set_kafka_reachable(outcome.is_ok());
            match outcome {
                Ok(()) if !was => tracing::info!("kafka reachable again"),
                Err(error) if was => tracing::warn!(%error, "kafka unreachable"),
                _ => {}
            }
        },
    )
    .await;
    if let Err(error) = watched {
        tracing::error!(%error, "no broker probe: /readyz reports kafka unreachable");
        metrics.set_kafka_reachable(false);
    }
}

/// The attempts of [`run`], one after another.
async fn attempts(
    config: &Config,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> Result<(), PipelineError> {
    let mut backoff = Duration::from_millis(500);
    let max = config.processing.restart_backoff_max;
    let mut schemas = live::Schemas {
        registry: config.registry.client()?,
        ids: Arc::default(),
    };
    loop {
        let result = live::run_once(config, shutdown, metrics, &mut schemas).await;
        metrics.set_ready(false);
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && !shutdown.is_cancelled() => {
                metrics.restarts.inc();
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "transformer restarting after failure");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(max);
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "transformer stopped during shutdown");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use pipeline_io::ops::Observable;

    use super::*;

    #[tokio::test]
    async fn readyz_says_kafka_unreachable_when_no_broker_answers() {
        // Ports nothing listens on (bound, then released).
        let mut config = Config::for_addresses(
            format!("127.0.0.1:{}", test_harness::ops::free_port()),
            format!("http://127.0.0.1:{}", test_harness::ops::free_port()),
        )
        .unwrap();
        config.kafka.client.timeout = Duration::from_secs(1);
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, shutdown.clone(), Arc::clone(&metrics)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while metrics.kafka_reachable() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Without the probe the attempts fail too, but `/readyz` would only say "starting".
        let body = metrics.readiness().unwrap_err();
        assert!(body.starts_with("kafka unreachable"), "{body}");
        assert!(metrics.render().contains("transformer_kafka_reachable 0"));
        shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(60), task).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }
}
