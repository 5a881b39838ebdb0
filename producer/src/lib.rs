//! PingOne to Kafka: polls each tenant and writes raw events, exactly once (see
//! `producer/README.md`).
//!
//! # Layout
//! - [`config`]: the TOML file, environment overrides, validation into typed values.
//! - [`pingone`]: tokens, retrying rate-limited requests, tolerant HAL parsing.
//! - [`kafka`]: schema registration, topics, encoding, the transactional writer, checkpoints.
//! - [`checkpoint`]: the stream positions stored in the compacted checkpoint topic.
//! - [`snapshot`] and [`activity`]: a tenant's two streams; [`stream`]: what they share.
//! - [`tenant`]: supervision of a tenant's streams.
//! - [`writer`]: the one transactional producer of a tenant partition, shared by its tenants;
//!   [`slot`]: a partition's writer and tenants.
//! - [`registry`]: the tenants topic; [`group`]: instances sharing it in a consumer group.
//! - [`ops`] and [`metrics`]: operations.
//!
//! [`run`] is the whole producer (the binary's `run` command); [`sync_once`] is `sync --once`.
//! With `tenant_source = "file"` the file's tenants are spread over `tenant_partitions` fixed
//! slots, each with its writer, exactly as an instance of a group runs the partitions it owns.

pub mod activity;
pub mod checkpoint;
pub mod config;
pub mod group;
pub mod kafka;
pub mod metrics;
pub mod ops;
pub mod pingone;
pub mod registry;
pub mod slot;
pub mod snapshot;
pub mod stream;
pub mod tenant;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pipeline_io::ops::{ListenError, OpsServer};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Completed;
use crate::config::{Config, TenantSource};
use crate::kafka::SinkError;
use crate::metrics::Metrics;
use crate::pingone::{Client, PingOneError};
use crate::registry::partition_for;
use crate::slot::{Shared, TenantChange};
use crate::snapshot::SnapshotStream;
use crate::stream::{StreamContext, StreamError};
use crate::writer::Budget;

/// PingOne data read and not yet committed, across every tenant of a process.
pub const READ_BUDGET_BYTES: usize = 16 << 20;

/// Snapshot syncs running at once in a process; the others wait for a turn.
pub const CONCURRENT_SYNCS: usize = 16;

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
    /// The tenants topic could not be followed.
    #[error("tenants topic: {0}")]
    Group(#[from] pipeline_io::kafka::KafkaCallError),
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
async fn setup(config: &Config) -> Result<(u32, i32), RunError> {
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
    let waited = config.kafka.client.timeout;
    let slots = tokio::time::timeout(waited, slot_count(config))
        .await
        .map_err(|_| RunError::SetupTimeout {
            what: format!(
                "kafka brokers `{}` (tenants topic metadata)",
                config.kafka.client.bootstrap_servers
            ),
            waited,
        })??;
    Ok((schema_id, slots))
}

/// How many partitions tenant ids hash into: the tenants topic's, or the file's fixed slots.
async fn slot_count(config: &Config) -> Result<i32, RunError> {
    match config.kafka.tenant_source {
        TenantSource::File => Ok(config.kafka.tenant_partitions),
        TenantSource::Topic => {
            let ps =
                pipeline_io::kafka::partitions(&config.kafka.client, &config.kafka.tenants_topic)
                    .await?;
            Ok(i32::try_from(ps.len()).unwrap_or(i32::MAX))
        }
    }
}

/// [`setup`] until it succeeds (`run`): Kafka or the registry being unreachable at start is
/// logged at WARN with the cause and retried with a backoff (1 s doubling to 60 s) while
/// `/readyz` answers 503. A registry refusing the schema is fatal (a release mistake). `None` on
/// shutdown.
async fn setup_until_done(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<(u32, i32)>, RunError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = tokio::select! {
            r = setup(config) => r,
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

/// Runs the file's tenants over `kafka.tenant_partitions` fixed slots, each with its writer.
async fn run_file(shared: Shared, config: &Config, shutdown: &CancellationToken) {
    let mut by_slot: std::collections::BTreeMap<i32, Vec<config::TenantConfig>> =
        std::collections::BTreeMap::new();
    for t in &config.tenants {
        by_slot
            .entry(partition_for(t.tenant_id.as_bytes(), shared.slots))
            .or_default()
            .push(t.clone());
    }
    let mut tasks = tokio::task::JoinSet::new();
    // Held open until the slots end: a closed channel would stop its slot.
    let mut senders = Vec::new();
    for (slot, tenants) in by_slot {
        let (changes, rx) = tokio::sync::mpsc::channel(tenants.len());
        for t in tenants {
            // The channel has room for every tenant of the slot.
            let _ = changes.try_send(TenantChange::Upsert(Box::new(t)));
        }
        tasks.spawn(slot::run(shared.clone(), slot, rx, shutdown.clone()));
        senders.push(changes);
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "partition task failed");
        }
    }
    drop(senders);
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
        let Some((schema_id, slots)) = setup_until_done(&config, &shutdown).await? else {
            return Ok(());
        };
        ready.store(true, Ordering::Relaxed);
        let shared = Shared {
            kafka: Arc::new(config.kafka.clone()),
            slots,
            schema_id,
            metrics: metrics.clone(),
            budget: Budget::new(READ_BUDGET_BYTES, CONCURRENT_SYNCS),
        };
        match config.kafka.tenant_source {
            TenantSource::File => run_file(shared, &config, &shutdown).await,
            TenantSource::Topic => {
                group::run(shared, |name| std::env::var(name).ok(), shutdown.clone()).await?;
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
/// returns. Activity polling is not run. It opens the writer of the tenant's partition, which
/// fences a running producer's writer of that partition: that one reopens after a backoff
/// (fencing this one in turn), and either resumes from the checkpoints committed.
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
    let Some(tenant) = config.tenants.iter().find(|t| t.tenant_id == tenant_id) else {
        return Err(RunError::UnknownTenant(tenant_id.into()));
    };
    let (schema_id, slots) = setup(&config).await?;
    let (handle, writer_task) =
        writer::open_for(&config.kafka, slots, tenant_id, metrics.clone()).await?;
    let client = Client::new(tenant, metrics.clone(), shutdown.clone()).map_err(|source| {
        RunError::Client {
            tenant: tenant_id.into(),
            source: Box::new(source),
        }
    })?;
    let ctx = StreamContext {
        tenant: Arc::new(tenant.clone()),
        writer: handle,
        budget: Budget::new(READ_BUDGET_BYTES, CONCURRENT_SYNCS),
        schema_id,
        client,
        metrics,
        cancel: shutdown,
    };
    let result = SnapshotStream::open(ctx).sync_once().await;
    // Every unit was answered: nothing is open.
    writer_task.abort();
    result.map_err(|source| RunError::Sync {
        tenant: tenant_id.into(),
        source: Box::new(source),
    })
}
