//! The binary's command line: flags, the tenants file and `--tenant key=value,...` specs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{Secret, SimConfig, TenantSpec, TenantsFile, TlsConfig};
use crate::error::SimError;

/// Simulates PingOne (token endpoint, users, groups, applications, activities,
/// applicationSignons) for many tenants on one listener, plus an admin API under /__admin.
/// Once ready it prints one JSON line per tenant on stdout (environment_id, client_id,
/// client_secret, region, auth_base_url, api_base_url, token_url, users); logs go to stderr
/// (RUST_LOG sets the level). With no tenant given it serves one demo tenant.
#[derive(Debug, Parser)]
#[command(name = "pingone-sim", version)]
pub struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9400", env = "PINGONE_SIM_LISTEN")]
    pub listen: SocketAddr,

    /// TOML or JSON file with `tenants = [...]` (fields as in `--tenant`, snake_case, plus
    /// `faults = {seed, api_probability, token_outage_probability, kinds}`).
    #[arg(long)]
    pub tenants_file: Option<PathBuf>,

    /// A tenant as comma-separated key=value pairs (repeatable). Keys: name (derives ids and
    /// secret), env (environment id, UUID), client_id, client_secret, region
    /// (com|ca|eu|asia|com.au|sg), users, groups, applications, populations, seed,
    /// token_ttl_secs, users_page_max, fault_probability, fault_seed, token_outage_probability.
    /// Example: --tenant name=big,users=1000000,seed=3
    #[arg(long = "tenant", value_name = "SPEC")]
    pub tenants: Vec<String>,

    /// Users of the demo tenant (used when no tenant is given).
    #[arg(long, default_value_t = 1000)]
    pub demo_users: u64,

    /// Seed of the demo tenant (used when no tenant is given).
    #[arg(long, default_value_t = 1)]
    pub demo_seed: u64,

    /// Base URL used in absolute `next`/`self` links and printed URLs (e.g. when behind a
    /// proxy); default: the scheme and Host header of each request.
    #[arg(long)]
    pub public_base_url: Option<String>,

    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Anchor time (RFC 3339) all generated timestamps are laid out from; default: now. Fix it
    /// to get byte-identical data across runs.
    #[arg(long)]
    pub anchor_time: Option<String>,
}

fn parse_tenant(spec: &str) -> Result<TenantSpec, SimError> {
    let err = |m: String| SimError::Config(format!("--tenant {spec:?}: {m}"));
    let mut pairs = Vec::new();
    for kv in spec.split(',').filter(|s| !s.trim().is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| err(format!("{kv:?} is not key=value")))?;
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let num = |k: &str| -> Result<Option<u64>, SimError> {
        get(k)
            .map(|v| {
                v.replace('_', "")
                    .parse::<u64>()
                    .map_err(|_| err(format!("{k} must be a number")))
            })
            .transpose()
    };
    let prob = |k: &str| -> Result<Option<f64>, SimError> {
        get(k)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| err(format!("{k} must be a number")))
            })
            .transpose()
    };
    const KEYS: &[&str] = &[
        "name",
        "env",
        "client_id",
        "client_secret",
        "region",
        "users",
        "groups",
        "applications",
        "populations",
        "seed",
        "token_ttl_secs",
        "users_page_max",
        "fault_probability",
        "fault_seed",
        "token_outage_probability",
    ];
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !KEYS.contains(&k.as_str())) {
        return Err(err(format!(
            "unknown key {k:?}; known: {}",
            KEYS.join(", ")
        )));
    }
    let seed = num("seed")?.unwrap_or(1);
    let name = get("name").unwrap_or_else(|| "tenant".into());
    let mut t = TenantSpec::generated(&name, num("users")?.unwrap_or(1000), seed);
    if let Some(v) = get("env") {
        t.environment_id = v;
    }
    if let Some(v) = get("client_id") {
        t.client_id = v;
    }
    if let Some(v) = get("client_secret") {
        t.client_secret = Secret::new(v);
    }
    if let Some(v) = get("region") {
        t.region = v;
    }
    t.groups = num("groups")?;
    t.applications = num("applications")?;
    t.populations = num("populations")?;
    if let Some(v) = num("token_ttl_secs")? {
        t.token_ttl_secs = v;
    }
    if let Some(v) = num("users_page_max")? {
        t.users_page_max = u32::try_from(v).map_err(|_| err("users_page_max too large".into()))?;
    }
    if let Some(p) = prob("fault_probability")? {
        t.faults.api_probability = p;
    }
    if let Some(p) = prob("token_outage_probability")? {
        t.faults.token_outage_probability = p;
    }
    if let Some(s) = num("fault_seed")? {
        t.faults.seed = s;
    }
    Ok(t)
}

fn read_tenants_file(path: &PathBuf) -> Result<Vec<TenantSpec>, SimError> {
    let err = |message: String| SimError::ConfigFile {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: TenantsFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))?
    } else {
        toml::from_str(&text).map_err(|e| err(e.to_string()))?
    };
    Ok(file.tenants)
}

impl Cli {
    /// The validated simulator configuration these flags describe.
    ///
    /// # Errors
    /// [`SimError::Config`] / [`SimError::ConfigFile`] with the offending flag or file.
    pub fn into_config(self) -> Result<SimConfig, SimError> {
        let mut tenants = Vec::new();
        if let Some(f) = &self.tenants_file {
            tenants.extend(read_tenants_file(f)?);
        }
        for t in &self.tenants {
            tenants.push(parse_tenant(t)?);
        }
        if tenants.is_empty() {
            tenants.push(TenantSpec::generated(
                "demo",
                self.demo_users,
                self.demo_seed,
            ));
        }
        let anchor_time = self
            .anchor_time
            .as_deref()
            .map(|a| {
                time::OffsetDateTime::parse(a, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        SimError::Config(format!("--anchor-time {a:?} is not RFC 3339: {e}"))
                    })
            })
            .transpose()?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert_path), Some(key_path)) => Some(TlsConfig {
                cert_path,
                key_path,
            }),
            _ => None,
        };
        let config = SimConfig {
            listen: self.listen,
            public_base_url: self.public_base_url,
            tls,
            anchor_time,
            tenants,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tenant_specs() {
        let t = parse_tenant(
            "name=big,users=1_000_000,seed=3,region=eu,token_ttl_secs=5,fault_probability=0.1",
        )
        .expect("valid");
        assert_eq!(t.users, 1_000_000);
        assert_eq!(t.seed, 3);
        assert_eq!(t.region, "eu");
        assert_eq!(t.token_ttl_secs, 5);
        assert!((t.faults.api_probability - 0.1).abs() < f64::EPSILON);
        assert!(parse_tenant("users=x").is_err());
        assert!(parse_tenant("colour=red").is_err());
    }

    #[test]
    fn rejects_bad_regions_and_env_ids() {
        let cli = Cli::parse_from(["pingone-sim", "--tenant", "region=EU"]);
        assert!(cli.into_config().is_err());
        let cli = Cli::parse_from(["pingone-sim", "--tenant", "env=not-a-uuid"]);
        assert!(cli.into_config().is_err());
    }
}
