//! What a tenant's two streams (snapshot and activity) share: their context, their error type,
//! opening a transactional session, and small helpers (time, URL encoding, raw events).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use schemas::raw::RawEvent;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaConfig, TenantConfig};
use crate::kafka::{KafkaSinkError, TxnWriter, read_checkpoints};
use crate::metrics::Metrics;
use crate::pingone::{Client, PingOneError};

/// The producer's version, written into every raw event.
pub const PRODUCER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long reading a checkpoint back may take.
const CHECKPOINT_READ_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Kafka or the registry failed.
    #[error(transparent)]
    Kafka(#[from] KafkaSinkError),
    /// A background task failed.
    #[error("internal task failed: {0}")]
    Task(String),
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
        let kafka = Arc::clone(&self.kafka);
        let keys = vec![key.clone()];
        let mut found: HashMap<String, Vec<u8>> = tokio::task::spawn_blocking(move || {
            read_checkpoints(&kafka, &keys, CHECKPOINT_READ_TIMEOUT)
        })
        .await
        .map_err(|e| StreamError::Task(e.to_string()))??;
        Ok((writer, found.remove(&key)))
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

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// RFC 3339 with milliseconds and `Z`, as PingOne filters expect: `2026-11-01T00:00:00.000Z`.
pub fn format_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_timestamps() {
        assert_eq!(format_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(
            parse_rfc3339_ms("2026-11-18T11:06:40.123Z"),
            Some(1_795_000_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-18T11:06:40Z"),
            Some(1_795_000_000_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn encodes_filters() {
        assert_eq!(
            encode_query_value(r#"memberOfGroups[id eq "g-1"]"#),
            "memberOfGroups%5Bid%20eq%20%22g-1%22%5D"
        );
    }
}
