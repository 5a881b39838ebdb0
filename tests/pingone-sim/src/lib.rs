//! A simulator of the PingOne token, directory and audit APIs for tests, demos and benchmarks.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), pingone_sim::SimError> {
//! use pingone_sim::{SimConfig, TenantSpec, spawn};
//! let sim = spawn(SimConfig::with_tenants(vec![TenantSpec::generated("acme", 1000, 7)])).await?;
//! let t = &sim.tenants()[0];
//! // token: POST {t.auth_base_url}/{t.environment_id}/as/token (client_secret_post)
//! // API:   GET  {t.api_base_url}/environments/{t.environment_id}/users
//! sim.admin(&t.environment_id).lock_user("<user id>").await?;
//! let truth = sim.admin(&t.environment_id).truth_users().await?;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! - [`spawn`] binds (port 0 = any free port), returns once listening; [`run`] serves until a
//!   cancellation token fires (what the binary uses).
//! - [`RunningSim`]: [`RunningSim::base_url`], [`RunningSim::tenants`], [`RunningSim::tenant`],
//!   [`RunningSim::admin`] (typed admin client), [`RunningSim::shutdown`].
//! - [`TenantInfo`]: what the binary prints, one JSON line per tenant: `environment_id`,
//!   `client_id`, `client_secret`, `region`, `auth_base_url` (token at
//!   `{auth_base_url}/{environment_id}/as/token`), `api_base_url` (`…/v1`), `users`.
//! - [`SimConfig`] / [`TenantSpec`] / [`FaultProfile`] / [`ScheduledFault`]: configuration.
//!
//! # Layout
//!
//! - `config.rs`: typed configuration and the redacting [`Secret`].
//! - `data.rs`: the deterministic dataset (users, groups, apps, sign-ons) built on the fly.
//! - `state.rs`: per-tenant overlay of mutations, paged reads, tokens.
//! - `filter.rs`: the SCIM filter subset. `api.rs`: PingOne routes. `admin.rs`: admin routes.
//! - `faults.rs`: fault injection. `client.rs`: the admin client. `cli.rs`: the binary's flags.
//! - `rng.rs`, `tables.rs`, `jsonw.rs`: hashing, id codecs, permutations; word lists; a JSON
//!   writer for users.

pub mod admin;
pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod data;
pub mod error;
pub mod faults;
pub mod filter;
pub mod jsonw;
pub mod rng;
pub mod state;
pub mod tables;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use client::AdminClient;
pub use config::{Secret, SimConfig, TenantSpec, TenantsFile, TlsConfig};
pub use error::SimError;
pub use faults::{FaultKind, FaultProfile, Route, ScheduledFault};

use crate::api::Server;
use crate::state::{Clock, Tenant, Tokens};

/// How to reach one tenant (the same facts the binary prints on stdout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantInfo {
    /// Environment id.
    pub environment_id: String,
    /// Worker app client id.
    pub client_id: String,
    /// Worker app client secret.
    pub client_secret: Secret,
    /// Region label.
    pub region: String,
    /// Auth base URL; the token endpoint is `{auth_base_url}/{environment_id}/as/token`.
    pub auth_base_url: String,
    /// API base URL (ends in `/v1`).
    pub api_base_url: String,
    /// Generated users.
    pub users: u64,
}

impl TenantInfo {
    pub(crate) fn of(spec: &TenantSpec, base: &str) -> Self {
        Self {
            environment_id: spec.environment_id.to_ascii_lowercase(),
            client_id: spec.client_id.clone(),
            client_secret: spec.client_secret.clone(),
            region: spec.region.clone(),
            auth_base_url: base.to_string(),
            api_base_url: format!("{base}/v1"),
            users: spec.users,
        }
    }

    /// The token endpoint.
    #[must_use]
    pub fn token_url(&self) -> String {
        format!("{}/{}/as/token", self.auth_base_url, self.environment_id)
    }

    /// The JSON line printed by the binary (this includes the client secret on purpose: it is
    /// how scripts learn the simulator's test credentials).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "environment_id": self.environment_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose(),
            "region": self.region,
            "auth_base_url": self.auth_base_url,
            "api_base_url": self.api_base_url,
            "token_url": self.token_url(),
            "users": self.users,
        })
    }
}

/// A simulator serving in the background.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    base_url: String,
    tenants: Vec<TenantInfo>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), SimError>>,
    http: reqwest::Client,
}

impl RunningSim {
    /// `http(s)://127.0.0.1:PORT` (or the configured public base URL).
    #[must_use]
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every tenant.
    #[must_use]
    pub fn tenants(&self) -> Vec<TenantInfo> {
        self.tenants.clone()
    }

    /// One tenant by environment id.
    #[must_use]
    pub fn tenant(&self, env_id: &str) -> Option<TenantInfo> {
        self.tenants
            .iter()
            .find(|t| t.environment_id.eq_ignore_ascii_case(env_id))
            .cloned()
    }

    /// The admin client of one tenant.
    #[must_use]
    pub fn admin(&self, env_id: &str) -> AdminClient {
        AdminClient::with_client(self.http.clone(), &self.base_url, env_id)
    }

    /// Stops serving (open connections get 5 s to finish) and waits for the server task.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Ok(Err(e)) = self.task.await {
            tracing::warn!(error = %e, "simulator stopped with an error");
        }
    }
}

fn build(config: &SimConfig, scheme: &'static str) -> Result<Arc<Server>, SimError> {
    config.validate()?;
    let anchor_ms = config.anchor_time.map_or_else(
        || {
            i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(0)
        },
        |t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
    );
    let tenants: HashMap<String, Arc<Tenant>> = config
        .tenants
        .iter()
        .map(|spec| {
            (
                spec.environment_id.to_ascii_lowercase(),
                Arc::new(Tenant::new(spec.clone(), anchor_ms)),
            )
        })
        .collect();
    Ok(Arc::new(Server {
        tenants,
        tokens: Tokens::default(),
        clock: Clock::new(anchor_ms),
        public_base_url: config
            .public_base_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_string()),
        scheme,
    }))
}

async fn serve(
    config: SimConfig,
    listener: std::net::TcpListener,
    server: Arc<Server>,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: config.listen,
        source,
    })?;
    let app = api::router(server).into_make_service();
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        h2.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let result = match &config.tls {
        Some(tls) => {
            let rustls =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_path, &tls.key_path)
                    .await
                    .map_err(|source| SimError::Tls {
                        cert: tls.cert_path.display().to_string(),
                        key: tls.key_path.display().to_string(),
                        source,
                    })?;
            axum_server::from_tcp_rustls(listener, rustls)
                .map_err(|source| SimError::Bind { addr, source })?
                .handle(handle)
                .serve(app)
                .await
        }
        None => {
            axum_server::from_tcp(listener)
                .map_err(|source| SimError::Bind { addr, source })?
                .handle(handle)
                .serve(app)
                .await
        }
    };
    result.map_err(|source| SimError::Bind { addr, source })
}

/// Binds and starts serving in the background; returns once the listener is bound.
///
/// # Errors
/// Invalid configuration, a port that cannot be bound, or unreadable TLS files.
pub async fn spawn(config: SimConfig) -> Result<RunningSim, SimError> {
    let shutdown = CancellationToken::new();
    let (listener, server) = prepare(&config).await?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: config.listen,
        source,
    })?;
    let base_url = public_base(&config, addr);
    let tenants = config
        .tenants
        .iter()
        .map(|t| TenantInfo::of(t, &base_url))
        .collect();
    let http = admin_http_client()?;
    let task = tokio::spawn(serve(config, listener, server, shutdown.clone()));
    Ok(RunningSim {
        addr,
        base_url,
        tenants,
        shutdown,
        task,
        http,
    })
}

fn admin_http_client() -> Result<reqwest::Client, SimError> {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| SimError::Admin {
            what: "http client".into(),
            message: e.to_string(),
        })
}

/// The base URL clients should use for a listener on `addr`.
#[must_use]
pub fn public_base(config: &SimConfig, addr: SocketAddr) -> String {
    config.public_base_url.as_ref().map_or_else(
        || {
            format!(
                "{}://{addr}",
                if config.tls.is_some() {
                    "https"
                } else {
                    "http"
                }
            )
        },
        |u| u.trim_end_matches('/').to_string(),
    )
}

async fn prepare(config: &SimConfig) -> Result<(std::net::TcpListener, Arc<Server>), SimError> {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = build(config, scheme)?;
    if let Some(tls) = &config.tls {
        // Fail early (before printing readiness) when the files are unusable.
        axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_path, &tls.key_path)
            .await
            .map_err(|source| SimError::Tls {
                cert: tls.cert_path.display().to_string(),
                key: tls.key_path.display().to_string(),
                source,
            })?;
    }
    let listener = std::net::TcpListener::bind(config.listen).map_err(|source| SimError::Bind {
        addr: config.listen,
        source,
    })?;
    Ok((listener, server))
}

/// Serves until `shutdown` fires, calling `ready` once listening with the tenant infos.
///
/// # Errors
/// Invalid configuration, a port that cannot be bound, or unreadable TLS files.
pub async fn run(
    config: SimConfig,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr, &[TenantInfo]),
) -> Result<(), SimError> {
    let (listener, server) = prepare(&config).await?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: config.listen,
        source,
    })?;
    let base = public_base(&config, addr);
    let infos: Vec<TenantInfo> = config
        .tenants
        .iter()
        .map(|t| TenantInfo::of(t, &base))
        .collect();
    ready(addr, &infos);
    serve(config, listener, server, shutdown).await
}
