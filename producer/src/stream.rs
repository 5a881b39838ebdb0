//! What a tenant's two streams (snapshot and activity) share: their context, their error type,
//! opening a transactional session, and building raw events.

use std::sync::Arc;
use std::time::Duration;

use schemas::raw::RawEvent;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaConfig, TenantConfig};
use crate::kafka::{SinkError, TxnWriter, read_checkpoint};
use crate::metrics::Metrics;
use crate::pingone::{Client, PingOneError};

/// The producer's version, written into every raw event.
pub const PRODUCER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything a tenant stream needs.
#[derive(Debug, Clone)]
pub struct StreamContext {
    /// The tenant.
    pub tenant: Arc<TenantConfig>,
    /// Kafka settings.
    pub kafka: Arc<KafkaConfig>,
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
    /// `<prefix>.<tenant>.<stream>`.
    pub fn transactional_id(&self, stream: &str) -> String {
        format!(
            "{}.{}.{}",
            self.kafka.transactional_id_prefix, self.tenant.tenant_id, stream
        )
    }

    /// Opens the stream's transactional writer (fencing older instances), then reads its
    /// checkpoint back. The order matters: once `init_transactions` returns, no transaction of
    /// this stream is open, so the committed view is final.
    ///
    /// # Errors
    /// [`StreamError::Kafka`].
    pub async fn open(
        &self,
        stream: &str,
        key: String,
    ) -> Result<(TxnWriter, Option<Vec<u8>>), StreamError> {
        let writer =
            TxnWriter::new(&self.kafka, self.transactional_id(stream), self.schema_id).await?;
        let checkpoint = read_checkpoint(&self.kafka, &key).await?;
        self.metrics.set_kafka_reachable(true);
        Ok((writer, checkpoint))
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
