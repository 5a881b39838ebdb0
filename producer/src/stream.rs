//! What a tenant's two streams (snapshot and activity) share: their context (with the writer of
//! the tenant's partition), their error type, their checkpoints, and building raw events.

use std::sync::Arc;
use std::time::Duration;

use schemas::raw::RawEvent;
use tokio_util::sync::CancellationToken;

use crate::config::TenantConfig;
use crate::kafka::{EncodedEvent, Sent, SinkError, encode_event};
use crate::metrics::Metrics;
use crate::pingone::{Client, PingOneError};
use crate::writer::{Budget, SlotHandle, Unit};

/// The producer's version, written into every raw event.
pub const PRODUCER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything a tenant stream needs.
#[derive(Debug, Clone)]
pub struct StreamContext {
    /// The tenant.
    pub tenant: Arc<TenantConfig>,
    /// The writer of the tenant's partition, shared with its other tenants.
    pub writer: SlotHandle,
    /// Memory bound on pages read and not yet committed, shared by every tenant.
    pub budget: Budget,
    /// Registered id of the raw event schema.
    pub schema_id: u32,
    /// The tenant's PingOne client.
    pub client: Client,
    /// Metrics.
    pub metrics: Metrics,
    /// Shutdown signal.
    pub cancel: CancellationToken,
}

/// Why a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// PingOne failed (after retries).
    #[error(transparent)]
    PingOne(#[from] PingOneError),
    /// A background task failed.
    #[error("internal task failed: {0}")]
    Task(String),
    /// Kafka or the registry failed.
    #[error(transparent)]
    Kafka(#[from] SinkError),
    /// Shutdown was requested.
    #[error("cancelled by shutdown")]
    Cancelled,
}

impl StreamError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::PingOne(e) => e.kind(),
            Self::Kafka(_) => "kafka",
            Self::Task(_) => "task",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether this is (or wraps) a shutdown.
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            Self::Cancelled | Self::PingOne(PingOneError::Cancelled)
        )
    }
}

impl StreamContext {
    /// The stream's committed checkpoint, as the partition's writer holds it.
    pub fn stored_checkpoint(&self, key: &str) -> Option<Vec<u8>> {
        self.writer.checkpoint(key)
    }

    /// Encodes a raw event of this tenant for the writer.
    ///
    /// # Errors
    /// [`SinkError::Encode`] (a bug, not bad input).
    pub fn encode(&self, event: &RawEvent) -> Result<(EncodedEvent, Sent), SinkError> {
        encode_event(self.schema_id, event)
    }

    /// Commits `events` and the checkpoint `value` under `key` in one transaction of the
    /// partition's writer, and counts the metrics Kafka was reached.
    ///
    /// # Errors
    /// [`StreamError::Kafka`]: nothing of it was written.
    pub async fn commit(
        &self,
        stream: &'static str,
        events: Vec<EncodedEvent>,
        key: &str,
        value: Vec<u8>,
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<(), StreamError> {
        let unit = Unit {
            tenant: Arc::clone(&self.tenant),
            stream,
            events,
            checkpoint_key: key.to_owned(),
            checkpoint: value,
            budget,
        };
        self.writer.commit(unit).await?;
        self.metrics.set_kafka_reachable(true);
        Ok(())
    }

    /// A raw event of this tenant.
    pub fn event(
        &self,
        kind: &str,
        entity_id: Option<String>,
        sync_id: Option<&str>,
        observed_at_ms: i64,
        payload: String,
    ) -> RawEvent {
        RawEvent {
            tenant_id: self.tenant.tenant_id.clone(),
            environment_id: self.tenant.environment_id.to_string(),
            region: self.tenant.region.clone(),
            kind: kind.into(),
            entity_id,
            sync_id: sync_id.map(str::to_owned),
            observed_at_ms,
            payload,
            producer_version: PRODUCER_VERSION.into(),
        }
    }

    /// Sleeps `d` unless shutdown comes first.
    ///
    /// # Errors
    /// [`StreamError::Cancelled`] on shutdown.
    pub async fn sleep(&self, d: Duration) -> Result<(), StreamError> {
        tokio::select! {
            () = self.cancel.cancelled() => Err(StreamError::Cancelled),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }
}
