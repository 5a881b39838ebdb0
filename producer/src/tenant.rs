//! Supervision of one tenant: its snapshot and activity streams run side by side, each reopened
//! from its committed checkpoint after a failure with a capped backoff. Any failure marks the tenant unhealthy until that
//! stream succeeds again (a failure on Kafka also marks Kafka unreachable); `invalid_client`
//! waits the long `invalid_client_backoff`. Other tenants are not affected.

use std::time::Duration;

use crate::activity::ActivityStream;
use crate::kafka::SinkError;
use crate::pingone::PingOneError;
use crate::snapshot::SnapshotStream;
use crate::stream::{StreamContext, StreamError};

/// First wait after a stream failure; doubles up to [`MAX_RESTART_BACKOFF`].
const FIRST_RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between restarts of a failing stream (except `invalid_client`).
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);

/// Which of a tenant's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Scheduled snapshot syncs.
    Snapshot,
    /// Activity polling.
    Activity,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Activity => "activity",
        }
    }
}

async fn run_stream_once(ctx: &StreamContext, kind: StreamKind) -> Result<(), StreamError> {
    match kind {
        StreamKind::Snapshot => SnapshotStream::open(ctx.clone()).run_scheduled().await,
        StreamKind::Activity => ActivityStream::open(ctx.clone()).run().await,
    }
}

/// Runs one stream of a tenant until shutdown, reopening it after failures.
pub async fn supervise(ctx: StreamContext, kind: StreamKind) {
    let tenant = ctx.tenant.tenant_id.clone();
    let mut backoff = FIRST_RESTART_BACKOFF;
    loop {
        let result = run_stream_once(&ctx, kind).await;
        let err = match result {
            Ok(()) => return,
            Err(e) if e.is_cancelled() || ctx.cancel.is_cancelled() => {
                tracing::info!(tenant = %tenant, stream = kind.name(), "stream stopped");
                return;
            }
            Err(e) => e,
        };
        ctx.metrics.error(&tenant, err.kind());
        ctx.metrics.stream_failed(&tenant, kind.name());
        // Only a failed Kafka call says the broker is unreachable; a stopped partition writer
        // (fenced, revoked) says nothing about it.
        if matches!(err, StreamError::Kafka(SinkError::Kafka(_))) {
            ctx.metrics.set_kafka_reachable(false);
        }
        let wait = if matches!(
            err,
            StreamError::PingOne(PingOneError::InvalidClient { .. })
        ) {
            tracing::error!(tenant = %tenant, stream = kind.name(), error = %err,
                wait_s = ctx.tenant.invalid_client_backoff.as_secs(), "tenant credentials refused, tenant unhealthy");
            ctx.tenant.invalid_client_backoff
        } else {
            tracing::error!(tenant = %tenant, stream = kind.name(), error = %err,
                wait_ms = backoff.as_millis() as u64, "stream failed, restarting from its checkpoint");
            let wait = backoff;
            backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
            wait
        };
        if ctx.sleep(wait).await.is_err() {
            return;
        }
    }
}
