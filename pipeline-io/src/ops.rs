//! The operations listener every binary serves: `/metrics` (Prometheus text), `/healthz` (the
//! process serves requests) and `/readyz` (the binary can do its work). What the endpoints say
//! comes from the binary through [`Observable`].
//!
//! The listener runs on the async runtime like everything else; it stays responsive during a
//! broker outage because no blocking Kafka call runs there (see [`crate::kafka::off_runtime`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// A memory field of `/proc/<pid>/status` (of `/proc/self/status` without a pid) in KiB:
/// `VmRSS:` (resident now) or `VmHWM:` (the peak). `None` without such a file (not Linux) or
/// field. What the transformer logs once it has restored its state, and what its benchmark
/// reads of the processes it times.
pub fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = pid.map_or_else(
        || "/proc/self/status".to_owned(),
        |pid| format!("/proc/{pid}/status"),
    );
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What a binary tells its operations endpoints.
pub trait Observable: Send + Sync + 'static {
    /// The metrics in the Prometheus / OpenMetrics text format.
    fn metrics(&self) -> String;
    /// `Ok(body)` when ready (`/readyz` 200), `Err(body)` when not (503).
    fn readiness(&self) -> Result<String, String>;
}

async fn metrics(State(s): State<Arc<dyn Observable>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(s): State<Arc<dyn Observable>>) -> impl IntoResponse {
    match s.readiness() {
        Ok(body) => (StatusCode::OK, body),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, body),
    }
}

/// The listener could not bind its address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    /// The address.
    pub addr: SocketAddr,
    /// The bind error.
    #[source]
    pub source: std::io::Error,
}

/// The running listener.
#[derive(Debug)]
pub struct OpsServer {
    /// The bound address (port 0 picks one).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl OpsServer {
    /// Binds `addr` and serves until [`OpsServer::stop`].
    ///
    /// # Errors
    /// [`ListenError`] when the address cannot be bound.
    pub async fn start(addr: SocketAddr, source: Arc<dyn Observable>) -> Result<Self, ListenError> {
        let bind_error = |source| ListenError { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(source);
        let stop = CancellationToken::new();
        let cancelled = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancelled.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "operations listener failed");
            }
        });
        tracing::info!(addr = %bound, "operations listener on /metrics, /healthz, /readyz");
        Ok(Self {
            addr: bound,
            task,
            stop,
        })
    }

    /// [`OpsServer::start`] where an address is configured; `None` where it is not.
    ///
    /// # Errors
    /// As [`OpsServer::start`].
    pub async fn start_if(
        addr: Option<SocketAddr>,
        source: Arc<dyn Observable>,
    ) -> Result<Option<Self>, ListenError> {
        match addr {
            Some(addr) => Ok(Some(Self::start(addr, source).await?)),
            None => Ok(None),
        }
    }

    /// Stops serving and waits for the listener to close.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn status_fields_of_this_process() {
        let rss = status_kib(None, "VmRSS:").unwrap();
        assert!(rss > 0);
        assert_eq!(
            status_kib(Some(std::process::id()), "VmHWM:").map(|hwm| hwm >= rss),
            Some(true)
        );
        assert_eq!(status_kib(None, "NoSuchField:"), None);
    }
}
