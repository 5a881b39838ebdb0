//! PingOne to Kafka: polls each configured tenant and writes raw events, exactly once (see
//! `producer/README.md`).
//!
//! # Layout
//! - [`config`]: the TOML file, environment overrides, validation into typed values.
//! - [`pingone`]: tokens, retrying rate-limited requests, tolerant HAL parsing.
//! - [`kafka`]: schema registration, topics, the transactional writer, checkpoint reading.
//! - [`checkpoint`]: the stream positions stored in the compacted checkpoint topic.
//! - [`snapshot`] and [`activity`]: a tenant's two streams; [`stream`]: what they share.
//! - [`tenant`]: supervision of a tenant's streams; [`ops`] and [`metrics`]: operations.
//!
//! [`run`] is the whole producer (the binary's `run` command); [`sync_once`] is `sync --once`.

pub mod activity;
pub mod checkpoint;
pub mod config;
pub mod kafka;
pub mod metrics;
pub mod ops;
pub mod pingone;
pub mod snapshot;
pub mod stream;
pub mod tenant;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pipeline_io::ops::{ListenError, OpsServer};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Completed;
use crate::config::Config;
use crate::kafka::SinkError;
use crate::metrics::Metrics;
use crate::pingone::{Client, PingOneError};
use crate::snapshot::SnapshotStream;
use crate::stream::{StreamContext, StreamError};
use crate::tenant::{StreamKind, supervise};

/// Why the producer could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The operations listener could not bind.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// Topics or the schema could not be set up.
    #[error(transparent)]
    Setup(#[from] SinkError),
    /// The topics could not be created on the brokers.
    #[error("kafka brokers `{servers}`: {cause}")]
    Topics {
        /// `kafka.bootstrap_servers`.
        servers: String,
        /// Why.
        cause: Box<SinkError>,
    },
    /// A setup step did not finish within its bound.
    #[error("{what} did not answer within {}s", .waited.as_secs_f64())]
    SetupTimeout {
        /// What was asked, naming the brokers or the registry URL.
        what: String,
        /// How long it was given.
        waited: Duration,
    },
    /// A tenant's client could not be built.
    #[error("tenant `{tenant}`: {source}")]
    Client {
        /// The tenant.
        tenant: String,
        /// Why.
        source: Box<PingOneError>,
    },
    /// `sync --tenant` named an unknown tenant.
    #[error("no tenant `{0}` in the configuration")]
    UnknownTenant(String),
    /// A `sync --once` failed.
    #[error("tenant `{tenant}`: snapshot sync failed: {source}")]
    Sync {
        /// The tenant.
        tenant: String,
        /// Why.
        source: Box<StreamError>,
    },
}

/// What [`start`] gives back: the operations address and metrics.
#[derive(Debug, Clone)]
pub struct Running {
    /// Where `/metrics` is served, if enabled.
    pub ops_addr: Option<SocketAddr>,
    /// The metrics.
    pub metrics: Metrics,
}

/// Longest wait between two setup attempts of `run`.
const MAX_SETUP_BACKOFF: Duration = Duration::from_secs(60);

/// Creates the topics and registers the raw schema, each step bounded: the topics by
/// `kafka.request_timeout_ms`, the registration by twice `schema_registry.request_timeout_ms`
/// (it makes two requests).
async fn setup(config: &Config, metrics: &Metrics) -> Result<u32, RunError> {
    if config.kafka.create_topics {
        let waited = config.kafka.client.timeout;
        let servers = &config.kafka.client.bootstrap_servers;
        tokio::time::timeout(waited, kafka::ensure_topics(&config.kafka))
            .await
            .map_err(|_| RunError::SetupTimeout {
                what: format!("kafka brokers `{servers}` (creating topics)"),
                waited,
            })?
            .map_err(|cause| RunError::Topics {
                servers: servers.clone(),
                cause: Box::new(cause),
            })?;
    }
    let waited = config.registry.request_timeout * 2;
    let schema_id = tokio::time::timeout(
        waited,
        kafka::register_raw_schema(&config.registry, &config.kafka.raw_topic),
    )
    .await
    .map_err(|_| RunError::SetupTimeout {
        what: format!("schema registry {}", config.registry.url),
        waited,
    })??;
    tracing::info!(schema_id, subject = %format!("{}-value", config.kafka.raw_topic), "raw event schema registered");
    for t in &config.tenants {
        metrics.add_tenant(&t.tenant_id);
    }
    Ok(schema_id)
}

/// [`setup`] until it succeeds (`run`): Kafka or the registry being unreachable at start is
/// logged at WARN with the cause and retried with a backoff (1 s doubling to 60 s) while
/// `/readyz` answers 503. A registry refusing the schema is fatal (a release mistake). `None` on
/// shutdown.
async fn setup_until_done(
    config: &Config,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Option<u32>, RunError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = tokio::select! {
            r = setup(config, metrics) => r,
            () = shutdown.cancelled() => return Ok(None),
        };
        match attempt {
            Ok(id) => return Ok(Some(id)),
            Err(RunError::Setup(SinkError::Registry(
                e @ pipeline_io::registry::RegistryError::Refused { .. },
            ))) => return Err(RunError::Setup(SinkError::Registry(e))),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "setup failed (kafka topics or the schema registry), retrying; /readyz answers 503 meanwhile");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
        backoff = (backoff * 2).min(MAX_SETUP_BACKOFF);
    }
}

fn contexts(
    config: &Config,
    schema_id: u32,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> Result<Vec<StreamContext>, RunError> {
    let kafka = Arc::new(config.kafka.clone());
    config
        .tenants
        .iter()
        .map(|t| {
            let client = Client::new(t, metrics.clone(), cancel.clone()).map_err(|source| {
                RunError::Client {
                    tenant: t.tenant_id.clone(),
                    source: Box::new(source),
                }
            })?;
            Ok(StreamContext {
                tenant: Arc::new(t.clone()),
                kafka: Arc::clone(&kafka),
                schema_id,
                client,
                metrics: metrics.clone(),
                cancel: cancel.clone(),
            })
        })
        .collect()
}

/// Runs the producer until `shutdown` is cancelled: every tenant's snapshot and activity
/// streams, plus the operations listener. Returns when every stream has stopped (each commits
/// or aborts its open transaction first).
///
/// # Errors
/// [`RunError`] when setup fails (listener, topics, schema registry, a tenant's TLS setup).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    run_with(config, shutdown, |_| {}).await
}

/// [`run`], calling `on_start` once the operations listener is bound (tests read the address).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    on_start: impl FnOnce(&Running),
) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let state = ops::OpsState {
        metrics: metrics.clone(),
        ready: Arc::clone(&ready),
    };
    let ops = OpsServer::start_if(config.operations.listen_addr, Arc::new(state)).await?;
    on_start(&Running {
        ops_addr: ops.as_ref().map(|o| o.addr),
        metrics: metrics.clone(),
    });
    let result = async {
        let Some(schema_id) = setup_until_done(&config, &metrics, &shutdown).await? else {
            return Ok(());
        };
        ready.store(true, Ordering::Relaxed);
        let mut tasks = tokio::task::JoinSet::new();
        for ctx in contexts(&config, schema_id, &metrics, &shutdown)? {
            tasks.spawn(supervise(ctx.clone(), StreamKind::Snapshot));
            tasks.spawn(supervise(ctx, StreamKind::Activity));
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "tenant task failed");
            }
        }
        Ok(())
    }
    .await;
    if let Some(ops) = ops {
        ops.stop().await;
    }
    result
}

/// `sync --tenant T --once`: completes the tenant's unfinished sync or runs a new one, then
/// returns. Activity polling is not run.
///
/// # Errors
/// [`RunError::Sync`] when the sync did not complete (its committed pages stay for a resume);
/// [`RunError::Setup`] or [`RunError::SetupTimeout`] when Kafka or the registry cannot be used
/// (one attempt, bounded: a one-shot command fails rather than waits).
pub async fn sync_once(
    config: Config,
    tenant_id: &str,
    shutdown: CancellationToken,
) -> Result<Completed, RunError> {
    let metrics = Metrics::new();
    let mut config = config;
    config.tenants.retain(|t| t.tenant_id == tenant_id);
    if config.tenants.is_empty() {
        return Err(RunError::UnknownTenant(tenant_id.into()));
    }
    let schema_id = setup(&config, &metrics).await?;
    let ctx = contexts(&config, schema_id, &metrics, &shutdown)?
        .pop()
        .ok_or_else(|| RunError::UnknownTenant(tenant_id.into()))?;
    let sync_err = |source| RunError::Sync {
        tenant: tenant_id.into(),
        source: Box::new(source),
    };
    let mut stream = SnapshotStream::open(ctx).await.map_err(sync_err)?;
    let result = stream.sync_once().await;
    stream.close().await;
    result.map_err(sync_err)
}
