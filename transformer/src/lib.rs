//! Raw events to usage metadata: normalizes the raw topic into schema-registered records,
//! exactly once, with tombstones for deletes, dead letters for poison input, replay and a
//! license-optimization report. See `transformer/README.md`.
//!
//! # Layout
//! - [`config`]: the TOML file, `TRANSFORMER__…` overrides, validation into typed values.
//! - [`normalize`]: pure functions from PingOne JSON to the usage records (table-tested), on
//!   [`json`]'s lenient borrowing reads.
//! - [`processor`]: the state machine from raw events to output records (syncs, deletes, usage).
//! - [`pipeline`]: the transactional consume-transform-produce loop, its start-up restore, and
//!   the output topics both ways.
//! - [`replay`]: re-normalizes past raw events into the outputs or topics with another prefix.
//! - [`report`]: the `license-report` consumer.
//! - [`metrics`]: what `/metrics` and `/readyz` say.
//!
//! [`run`] is the whole transformer (the binary's `run` command); tests that watch the metrics
//! run [`pipeline::run`] with their own. Kafka and registry clients
//! come from `pipeline_io`, shared with the producer.

pub mod config;
pub mod json;
pub mod metrics;
pub mod normalize;
pub mod pipeline;
pub mod processor;
pub mod replay;
pub mod report;

use std::sync::Arc;

pub use config::Config;
use pipeline_io::ops::{ListenError, OpsServer};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::pipeline::PipelineError;

/// Why the transformer could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The operations listener could not bind (its message names the address).
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The pipeline stopped on a fatal error.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Runs the transformer until `shutdown` is cancelled (or, with `stop_at_end`, until the raw
/// topic's end is committed): the operations listener where configured, then the pipeline,
/// restarted after transient failures.
///
/// # Errors
/// [`RunError`] when the listener cannot bind or the pipeline stops on a fatal error.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let ops = OpsServer::start_if(config.operations.listen_addr, metrics.clone()).await?;
    let result = pipeline::run(config, shutdown, metrics).await;
    if let Some(ops) = ops {
        ops.stop().await;
    }
    Ok(result?)
}
