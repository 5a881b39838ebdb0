//! Typed, validated configuration: the simulator, its tenants (environments) and their secrets.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::SimError;
use crate::faults::FaultProfile;

/// The PingOne region codes a tenant may carry (lowercase, case-sensitive).
pub const REGIONS: &[&str] = &["com", "ca", "eu", "asia", "com.au", "sg"];

/// A secret string: printed as `***` by `Debug` and `Display`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the few places that must send or print it on purpose.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// TLS material for serving HTTPS (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain file.
    pub cert_path: PathBuf,
    /// PEM private key file.
    pub key_path: PathBuf,
}

/// The whole simulator: one listener, many tenants.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Base URL used in absolute links (`next`, `self`) and printed tenant URLs, e.g.
    /// `https://sim.example:8443`. When absent, links use the request's scheme and `Host`.
    pub public_base_url: Option<String>,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<TlsConfig>,
    /// The anchor time every generated timestamp is laid out from (the newest possible generated
    /// sign-on). Defaults to the time the simulator starts.
    pub anchor_time: Option<OffsetDateTime>,
    /// The tenants served.
    pub tenants: Vec<TenantSpec>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_base_url: None,
            tls: None,
            anchor_time: None,
            tenants: Vec::new(),
        }
    }
}

impl SimConfig {
    /// A config with the given tenants on `127.0.0.1:0`.
    #[must_use]
    pub fn with_tenants(tenants: Vec<TenantSpec>) -> Self {
        Self {
            tenants,
            ..Self::default()
        }
    }

    /// Checks every tenant and cross-tenant rule.
    ///
    /// # Errors
    /// [`SimError::Config`] naming the offending tenant and field.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.tenants.is_empty() {
            return Err(SimError::Config("at least one tenant is required".into()));
        }
        let mut seen = std::collections::HashSet::new();
        let mut clients = std::collections::HashSet::new();
        for t in &self.tenants {
            t.validate()?;
            if !seen.insert(t.environment_id.to_ascii_lowercase()) {
                return Err(SimError::Config(format!(
                    "duplicate environment id {}",
                    t.environment_id
                )));
            }
            if !clients.insert(t.client_id.clone()) {
                return Err(SimError::Config(format!(
                    "duplicate client id {}",
                    t.client_id
                )));
            }
        }
        if let Some(url) = &self.public_base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(SimError::Config(format!(
                "public base url {url} must start with http:// or https://"
            )));
        }
        Ok(())
    }
}

/// The file form of the tenant list (`--tenants-file`, TOML or JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    /// The tenants; in TOML write `[[tenants]]` tables.
    pub tenants: Vec<TenantSpec>,
}

/// One simulated PingOne environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// The environment id (a UUID).
    pub environment_id: String,
    /// The Worker application's client id.
    pub client_id: String,
    /// The Worker application's client secret.
    pub client_secret: Secret,
    /// Region label (`com`, `ca`, `eu`, `asia`, `com.au`, `sg`); informational only.
    #[serde(default = "default_region")]
    pub region: String,
    /// Number of generated users.
    #[serde(default = "default_users")]
    pub users: u64,
    /// Number of generated groups; derived from `users` when absent.
    #[serde(default)]
    pub groups: Option<u64>,
    /// Number of generated applications (at most 1,000); derived from `users` when absent.
    #[serde(default)]
    pub applications: Option<u64>,
    /// Number of populations (1..=50); 3 to 5 depending on the seed when absent.
    #[serde(default)]
    pub populations: Option<u64>,
    /// Seed of all generated data.
    #[serde(default)]
    pub seed: u64,
    /// Lifetime of issued access tokens in seconds (`expires_in`).
    #[serde(default = "default_token_ttl_secs")]
    pub token_ttl_secs: u64,
    /// Largest page of users served (PingOne caps at 200).
    #[serde(default = "default_users_page_max")]
    pub users_page_max: u32,
    /// Fault injection by probability.
    #[serde(default)]
    pub faults: FaultProfile,
}

const fn default_users() -> u64 {
    1000
}
const fn default_token_ttl_secs() -> u64 {
    3600
}
const fn default_users_page_max() -> u32 {
    200
}
fn default_region() -> String {
    "com".into()
}

impl TenantSpec {
    /// A tenant with `users` users and ids/credentials derived from `seed` and `name`.
    #[must_use]
    pub fn generated(name: &str, users: u64, seed: u64) -> Self {
        let ns = uuid::Uuid::from_u128(0x6f1c_2b0e_8d4a_4f37_9a51_3c2e_7b90_d1a4);
        let env = uuid::Uuid::new_v5(&ns, format!("env:{name}:{seed}").as_bytes());
        let client = uuid::Uuid::new_v5(&ns, format!("client:{name}:{seed}").as_bytes());
        let secret = crate::rng::b64url(
            &crate::rng::hash(seed, &[crate::rng::hash_str(name), 77]).to_le_bytes(),
        );
        Self {
            environment_id: env.to_string(),
            client_id: client.to_string(),
            client_secret: Secret::new(format!(
                "sim-{secret}-{}",
                &client.simple().to_string()[..12]
            )),
            region: default_region(),
            users,
            groups: None,
            applications: None,
            populations: None,
            seed,
            token_ttl_secs: default_token_ttl_secs(),
            users_page_max: default_users_page_max(),
            faults: FaultProfile::default(),
        }
    }

    /// Sets the token lifetime (`expires_in`) in seconds.
    #[must_use]
    pub fn with_token_ttl_secs(mut self, secs: u64) -> Self {
        self.token_ttl_secs = secs;
        self
    }

    /// Sets the region label.
    #[must_use]
    pub fn with_region(mut self, region: &str) -> Self {
        self.region = region.to_string();
        self
    }

    /// Sets the probability fault profile.
    #[must_use]
    pub fn with_faults(mut self, faults: FaultProfile) -> Self {
        self.faults = faults;
        self
    }

    /// Sets the numbers of groups and applications.
    #[must_use]
    pub fn with_sizes(mut self, groups: u64, applications: u64) -> Self {
        self.groups = Some(groups);
        self.applications = Some(applications);
        self
    }

    /// The built-in demo tenant used when no tenant is configured (1,000 users, seed 1).
    #[must_use]
    pub fn demo() -> Self {
        Self::generated("demo", 1000, 1)
    }

    /// Groups generated for this tenant.
    #[must_use]
    pub fn group_count(&self) -> u64 {
        self.groups
            .unwrap_or_else(|| (self.users / 100).clamp(8, 1000))
    }

    /// Applications generated for this tenant.
    #[must_use]
    pub fn application_count(&self) -> u64 {
        self.applications
            .unwrap_or_else(|| (14 + self.users / 2000).min(80))
    }

    /// Checks this tenant's fields.
    ///
    /// # Errors
    /// [`SimError::Config`] naming the tenant and the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let env = &self.environment_id;
        let bad = |m: String| Err(SimError::Config(format!("tenant {env}: {m}")));
        if uuid::Uuid::parse_str(env).is_err() {
            return bad("environment_id must be a UUID".into());
        }
        if self.client_id.is_empty() || self.client_secret.expose().is_empty() {
            return bad("client_id and client_secret must not be empty".into());
        }
        if !REGIONS.contains(&self.region.as_str()) {
            return bad(format!(
                "region {:?} is not one of {}",
                self.region,
                REGIONS.join(", ")
            ));
        }
        if self.users > 50_000_000 {
            return bad("users must be at most 50,000,000".into());
        }
        if self.group_count() > 100_000 || self.group_count() == 0 {
            return bad("groups must be between 1 and 100,000".into());
        }
        if self.application_count() > 1000 || self.application_count() == 0 {
            return bad("applications must be between 1 and 1,000".into());
        }
        if let Some(p) = self.populations
            && !(1..=50).contains(&p)
        {
            return bad("populations must be between 1 and 50".into());
        }
        if self.token_ttl_secs == 0 {
            return bad("token_ttl_secs must be at least 1".into());
        }
        if !(1..=1000).contains(&self.users_page_max) {
            return bad("users_page_max must be between 1 and 1000".into());
        }
        self.faults
            .validate()
            .map_err(|m| SimError::Config(format!("tenant {env}: {m}")))
    }
}
