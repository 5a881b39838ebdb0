//! The producer's configuration: a TOML file, environment overrides, and validation into typed
//! values.
//!
//! [`FileConfig`] mirrors the file (every field documented in `producer/README.md`, unknown keys
//! rejected). [`load`] reads the file, applies `PRODUCER__…` environment overrides, and
//! [`FileConfig::validate`] turns it into a [`Config`] or a list of errors that each name the
//! tenant and the field. Secrets are read from environment variables or files into [`Secret`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;
use uuid::Uuid;

use schemas::registry::RegistryAuth;

use crate::secret::Secret;

/// PingOne region codes, lowercase and case-sensitive.
pub const REGIONS: [&str; 6] = ["com", "ca", "eu", "asia", "com.au", "sg"];

/// Longest activity window PingOne serves in one query, and how far back it serves.
pub const MAX_ACTIVITY_WINDOW_S: u64 = 14 * 24 * 3600;

/// The activity action types polled when a tenant names none.
pub const DEFAULT_ACTION_TYPES: [&str; 10] = [
    "USER.ACCESS_ALLOWED",
    "USER.ACCESS_DENIED",
    "USER.CREATED",
    "USER.UPDATED",
    "USER.DELETED",
    "MEMBER_OF_GROUP.CREATED",
    "MEMBER_OF_GROUP.DELETED",
    "APPLICATION.CREATED",
    "APPLICATION.UPDATED",
    "APPLICATION.DELETED",
];

/// [`MAX_ACTIVITY_WINDOW_S`] as a duration.
pub const MAX_ACTIVITY_WINDOW_S_DURATION: Duration = Duration::from_secs(MAX_ACTIVITY_WINDOW_S);

/// Prefix of environment variables that override file values (`PRODUCER__KAFKA__BOOTSTRAP_SERVERS`).
pub const ENV_PREFIX: &str = "PRODUCER__";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected structure.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// An environment override could not be applied.
    #[error("environment override {var}: {message}")]
    Override {
        /// The variable's name.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// The values are well-formed but invalid; one entry per problem.
    #[error("invalid configuration:\n{}", render_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn render_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One invalid value: where it is (tenant, field) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The tenant's id (or its position when the id itself is bad); `None` for global sections.
    pub tenant: Option<String>,
    /// The field's path, e.g. `region` or `kafka.bootstrap_servers`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "tenant `{t}`: field `{}`: {}", self.field, self.message),
            None => write!(f, "field `{}`: {}", self.field, self.message),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written.

/// The configuration file, as written (see `producer/README.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Kafka connection and topics.
    pub kafka: KafkaFile,
    /// Schema registry.
    pub schema_registry: RegistryFile,
    /// Logs, metrics and shutdown.
    #[serde(default)]
    pub operations: OperationsFile,
    /// The PingOne tenants to poll.
    #[serde(default)]
    pub tenants: Vec<TenantFile>,
}

/// `[kafka]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaFile {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Topic of raw events.
    #[serde(default = "default_raw_topic")]
    pub raw_topic: String,
    /// Compacted topic of the producer's checkpoints.
    #[serde(default = "default_checkpoint_topic")]
    pub checkpoint_topic: String,
    /// Prefix of transactional ids: `<prefix>.<tenant>.snapshot` and `<prefix>.<tenant>.activity`.
    #[serde(default = "default_txn_prefix")]
    pub transactional_id_prefix: String,
    /// Broker-side limit on an open transaction before it is aborted.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Longest time a record may wait for delivery.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// librdkafka `compression.type`: `none`, `gzip`, `snappy` or `lz4`.
    #[serde(default = "default_compression")]
    pub compression_type: String,
    /// Create missing topics at start (raw: `delete` cleanup, checkpoint: `compact`).
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of topics the producer creates.
    #[serde(default = "default_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of topics the producer creates.
    #[serde(default = "default_replication")]
    pub topic_replication_factor: i32,
    /// Extra librdkafka options (security settings); values of keys naming a password or secret
    /// are redacted in any output.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaFile")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("raw_topic", &self.raw_topic)
            .field("checkpoint_topic", &self.checkpoint_topic)
            .field(
                "librdkafka_options",
                &redacted_options(&self.librdkafka_options),
            )
            .finish_non_exhaustive()
    }
}

/// librdkafka options with the values of secret-looking keys replaced by `***`.
pub fn redacted_options(options: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    options
        .iter()
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            let secret = ["password", "secret", "key", "token", "jaas"]
                .iter()
                .any(|s| lower.contains(s));
            (k.as_str(), if secret { "***" } else { v.as_str() })
        })
        .collect()
}

/// `[schema_registry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Base URL of the Confluent-compatible API, e.g. `http://127.0.0.1:8081/apis/ccompat/v7`.
    pub url: String,
    /// Basic-auth user name, if the registry needs one.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the basic-auth password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Timeout of one registry request.
    #[serde(default = "default_registry_timeout_ms")]
    pub request_timeout_ms: u64,
}

/// `[operations]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationsFile {
    /// Address of the `/metrics`, `/healthz`, `/readyz` listener; empty string disables it.
    #[serde(default = "default_listen")]
    pub listen_addr: String,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// How long a shutdown may take before the process exits anyway.
    #[serde(default = "default_shutdown_ms")]
    pub shutdown_deadline_ms: u64,
}

impl Default for OperationsFile {
    fn default() -> Self {
        Self {
            listen_addr: default_listen(),
            log_format: default_log_format(),
            shutdown_deadline_ms: default_shutdown_ms(),
        }
    }
}

/// One `[[tenants]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    /// Operator-chosen id: record key and label; letters, digits, `-`, `_`, `.`.
    pub tenant_id: String,
    /// PingOne environment id (a UUID).
    pub environment_id: String,
    /// PingOne region code.
    pub region: String,
    /// Worker application's client id.
    pub client_id: String,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// File holding the client secret (trailing newline trimmed).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Auth host override (custom domain, simulator), e.g. `https://auth.example.com`.
    #[serde(default)]
    pub auth_base_url: Option<String>,
    /// API base override, e.g. `https://api.example.com/v1`.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Extra PEM CA file trusted beside the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Time between snapshot sync starts.
    #[serde(default = "default_snapshot_interval_s")]
    pub snapshot_interval_s: u64,
    /// An unfinished sync older than this is abandoned (never completed) instead of resumed.
    #[serde(default = "default_resume_max_age_s")]
    pub snapshot_resume_max_age_s: u64,
    /// Time between activity polls.
    #[serde(default = "default_activity_interval_s")]
    pub activity_poll_interval_s: u64,
    /// Activity action types to poll (one query per type and window).
    #[serde(default)]
    pub activity_action_types: Option<Vec<String>>,
    /// How far back the first activity poll of a tenant starts (at most 14 days).
    #[serde(default = "default_lookback_s")]
    pub activity_initial_lookback_s: u64,
    /// Activities newer than now minus this lag are left for the next poll (search index lag).
    #[serde(default = "default_safety_lag_s")]
    pub activity_safety_lag_s: u64,
    /// Longest window of one activity query (at most 14 days).
    #[serde(default = "default_window_s")]
    pub activity_window_max_s: u64,
    /// Each window re-reads this much before its start; ids seen there are dropped as duplicates.
    #[serde(default = "default_overlap_s")]
    pub activity_overlap_s: u64,
    /// `limit` of activity queries.
    #[serde(default = "default_activity_page_size")]
    pub activity_page_size: u32,
    /// `limit` of user and group queries (PingOne may serve fewer).
    #[serde(default = "default_page_size")]
    pub directory_page_size: u32,
    /// Snapshot pages written per Kafka transaction.
    #[serde(default = "default_pages_per_txn")]
    pub snapshot_pages_per_transaction: u32,
    /// Request rate limit towards PingOne for this tenant.
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Timeout of one HTTP request.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Retries of one request on 408, 429, 5xx and connection errors.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Cap of one retry wait.
    #[serde(default = "default_retry_cap_ms")]
    pub retry_max_backoff_ms: u64,
    /// First retry wait when PingOne gives no `Retry-After` (doubles each retry).
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_backoff_ms: u64,
    /// Wait after `invalid_client` before trying the credentials again.
    #[serde(default = "default_invalid_client_backoff_s")]
    pub invalid_client_backoff_s: u64,
    /// Seconds before `expires_in` runs out at which the token is renewed.
    #[serde(default = "default_token_margin_s")]
    pub token_renew_margin_s: u64,
}

fn default_raw_topic() -> String {
    "pingone.raw.v1".into()
}
fn default_checkpoint_topic() -> String {
    "pingone.producer.checkpoints.v1".into()
}
fn default_txn_prefix() -> String {
    "pingone-producer".into()
}
const fn default_transaction_timeout_ms() -> u64 {
    120_000
}
const fn default_message_timeout_ms() -> u64 {
    30_000
}
fn default_compression() -> String {
    "lz4".into()
}
const fn default_true() -> bool {
    true
}
const fn default_partitions() -> i32 {
    3
}
const fn default_replication() -> i32 {
    1
}
const fn default_registry_timeout_ms() -> u64 {
    10_000
}
fn default_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_log_format() -> String {
    "text".into()
}
const fn default_shutdown_ms() -> u64 {
    15_000
}
const fn default_snapshot_interval_s() -> u64 {
    24 * 3600
}
const fn default_resume_max_age_s() -> u64 {
    6 * 3600
}
const fn default_activity_interval_s() -> u64 {
    60
}
const fn default_lookback_s() -> u64 {
    7 * 24 * 3600
}
const fn default_safety_lag_s() -> u64 {
    120
}
const fn default_window_s() -> u64 {
    6 * 3600
}
const fn default_overlap_s() -> u64 {
    60
}
const fn default_activity_page_size() -> u32 {
    500
}
const fn default_page_size() -> u32 {
    200
}
const fn default_pages_per_txn() -> u32 {
    50
}
const fn default_rps() -> u32 {
    50
}
const fn default_request_timeout_ms() -> u64 {
    30_000
}
const fn default_max_retries() -> u32 {
    10
}
const fn default_retry_cap_ms() -> u64 {
    30_000
}
const fn default_retry_base_ms() -> u64 {
    1_000
}
const fn default_invalid_client_backoff_s() -> u64 {
    300
}
const fn default_token_margin_s() -> u64 {
    60
}

// ---------------------------------------------------------------------------------------------
// Validated configuration.

/// The validated configuration the producer runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// Schema registry settings.
    pub registry: RegistryConfig,
    /// Logs, metrics, shutdown.
    pub operations: OperationsConfig,
    /// Tenants, in file order.
    pub tenants: Vec<TenantConfig>,
}

/// Validated `[kafka]`.
#[derive(Clone)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Raw event topic.
    pub raw_topic: String,
    /// Compacted checkpoint topic.
    pub checkpoint_topic: String,
    /// Prefix of transactional ids.
    pub transactional_id_prefix: String,
    /// `transaction.timeout.ms`.
    pub transaction_timeout: Duration,
    /// `message.timeout.ms`.
    pub message_timeout: Duration,
    /// `compression.type`.
    pub compression_type: String,
    /// Create missing topics at start.
    pub create_topics: bool,
    /// Partitions of created topics.
    pub topic_partitions: i32,
    /// Replication factor of created topics.
    pub topic_replication_factor: i32,
    /// Extra librdkafka options.
    pub librdkafka_options: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("raw_topic", &self.raw_topic)
            .field("checkpoint_topic", &self.checkpoint_topic)
            .field("transactional_id_prefix", &self.transactional_id_prefix)
            .field(
                "librdkafka_options",
                &redacted_options(&self.librdkafka_options),
            )
            .finish_non_exhaustive()
    }
}

/// Validated `[schema_registry]`.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible API (no trailing slash).
    pub url: Url,
    /// Basic auth, if any.
    pub basic_auth: Option<RegistryAuth>,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Validated `[operations]`.
#[derive(Debug, Clone)]
pub struct OperationsConfig {
    /// Listener of `/metrics`, `/healthz`, `/readyz`; `None` disables it.
    pub listen_addr: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Shutdown deadline.
    pub shutdown_deadline: Duration,
}

/// One validated tenant.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// Operator-chosen id.
    pub tenant_id: String,
    /// PingOne environment id.
    pub environment_id: Uuid,
    /// Region code.
    pub region: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// Token endpoint: `{auth}/{envId}/as/token`.
    pub token_url: Url,
    /// API base, e.g. `https://api.pingone.eu/v1` (no trailing slash).
    pub api_base_url: Url,
    /// Extra CA certificates (PEM bytes).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Time between snapshot starts.
    pub snapshot_interval: Duration,
    /// Age after which an unfinished sync is abandoned rather than resumed.
    pub snapshot_resume_max_age: Duration,
    /// Time between activity polls.
    pub activity_poll_interval: Duration,
    /// Action types polled.
    pub activity_action_types: Vec<String>,
    /// First poll's lookback.
    pub activity_initial_lookback: Duration,
    /// Index lag left to the next poll.
    pub activity_safety_lag: Duration,
    /// Longest window of one query.
    pub activity_window_max: Duration,
    /// Overlap re-read before each window.
    pub activity_overlap: Duration,
    /// `limit` of activity queries.
    pub activity_page_size: u32,
    /// `limit` of directory queries.
    pub directory_page_size: u32,
    /// Snapshot pages per transaction.
    pub snapshot_pages_per_transaction: u32,
    /// Requests per second towards PingOne.
    pub requests_per_second: u32,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Retries of one request.
    pub max_retries: u32,
    /// Cap of one retry wait.
    pub retry_max_backoff: Duration,
    /// First retry wait without `Retry-After`.
    pub retry_base_backoff: Duration,
    /// Wait after `invalid_client`.
    pub invalid_client_backoff: Duration,
    /// Renewal margin before token expiry.
    pub token_renew_margin: Duration,
}

/// Reads `path`, applies `PRODUCER__…` overrides from the process environment and validates.
///
/// # Errors
/// [`ConfigError`] naming the file, the override, or every invalid tenant field.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_with_env(path, &vars, |name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment (for tests).
///
/// # Errors
/// As [`load`].
pub fn load_with_env(
    path: &Path,
    overrides: &[(String, String)],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = parse_with_overrides(path, &text, overrides)?;
    file.validate(env)
}

/// Parses TOML text and applies `PRODUCER__SECTION__FIELD` overrides. Tenants are addressed by
/// id: `PRODUCER__TENANTS__<tenant_id>__<FIELD>`. Values are parsed as TOML when they can be
/// (numbers, booleans, arrays), else taken as strings.
///
/// # Errors
/// [`ConfigError::Parse`] or [`ConfigError::Override`].
pub fn parse_with_overrides(
    path: &Path,
    text: &str,
    overrides: &[(String, String)],
) -> Result<FileConfig, ConfigError> {
    let parse_err = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let mut root: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
    for (var, value) in overrides {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        apply_override(&mut root, rest, value).map_err(|message| ConfigError::Override {
            var: var.clone(),
            message,
        })?;
    }
    FileConfig::deserialize(toml::Value::Table(root)).map_err(|e| parse_err(e.to_string()))
}

fn apply_override(root: &mut toml::Table, path: &str, raw: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.split("__").collect();
    let value = parse_override_value(raw);
    match parts.as_slice() {
        [section, field] if !section.eq_ignore_ascii_case("tenants") => {
            let section = section.to_ascii_lowercase();
            let table = root
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(table) = table else {
                return Err(format!("`{section}` is not a table"));
            };
            table.insert(field.to_ascii_lowercase(), value);
            Ok(())
        }
        [tenants, tenant, field] if tenants.eq_ignore_ascii_case("tenants") => {
            let Some(toml::Value::Array(list)) = root.get_mut("tenants") else {
                return Err("the file has no [[tenants]]".into());
            };
            let entry = list.iter_mut().find_map(|t| match t {
                toml::Value::Table(t)
                    if t.get("tenant_id")
                        .and_then(|v| v.as_str())
                        .is_some_and(|id| id.eq_ignore_ascii_case(tenant)) =>
                {
                    Some(t)
                }
                _ => None,
            });
            let Some(entry) = entry else {
                return Err(format!("no tenant with tenant_id `{tenant}`"));
            };
            entry.insert(field.to_ascii_lowercase(), value);
            Ok(())
        }
        _ => {
            Err("expected PRODUCER__<SECTION>__<FIELD> or PRODUCER__TENANTS__<ID>__<FIELD>".into())
        }
    }
}

fn parse_override_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&probe) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

struct Errors {
    list: Vec<FieldError>,
}

impl Errors {
    fn global(&mut self, field: &str, message: impl Into<String>) {
        self.list.push(FieldError {
            tenant: None,
            field: field.into(),
            message: message.into(),
        });
    }
    fn tenant(&mut self, tenant: &str, field: &str, message: impl Into<String>) {
        self.list.push(FieldError {
            tenant: Some(tenant.into()),
            field: field.into(),
            message: message.into(),
        });
    }
}

fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim_end_matches('/')).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", url.scheme()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(url)
}

impl FileConfig {
    /// Checks every value and reads the secrets. `env` looks up environment variables.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem, each naming tenant and field.
    pub fn validate(self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut errors = Errors { list: Vec::new() };

        let k = &self.kafka;
        if k.bootstrap_servers.trim().is_empty() {
            errors.global("kafka.bootstrap_servers", "must not be empty");
        }
        for (name, topic) in [
            ("kafka.raw_topic", &k.raw_topic),
            ("kafka.checkpoint_topic", &k.checkpoint_topic),
        ] {
            if topic.is_empty()
                || !topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                errors.global(name, format!("`{topic}` is not a valid topic name"));
            }
        }
        if k.raw_topic == k.checkpoint_topic {
            errors.global("kafka.checkpoint_topic", "must differ from kafka.raw_topic");
        }
        if k.transactional_id_prefix.is_empty() {
            errors.global("kafka.transactional_id_prefix", "must not be empty");
        }
        if !(1_000..=900_000).contains(&k.transaction_timeout_ms) {
            errors.global(
                "kafka.transaction_timeout_ms",
                "must be between 1000 and 900000",
            );
        }
        if k.message_timeout_ms == 0 || k.message_timeout_ms > k.transaction_timeout_ms {
            errors.global(
                "kafka.message_timeout_ms",
                "must be positive and at most kafka.transaction_timeout_ms",
            );
        }
        if !["none", "gzip", "snappy", "lz4"].contains(&k.compression_type.as_str()) {
            errors.global(
                "kafka.compression_type",
                format!(
                    "`{}` is not one of none, gzip, snappy, lz4 (zstd is not built in)",
                    k.compression_type
                ),
            );
        }
        if k.topic_partitions < 1 {
            errors.global("kafka.topic_partitions", "must be at least 1");
        }
        if k.topic_replication_factor < 1 {
            errors.global("kafka.topic_replication_factor", "must be at least 1");
        }
        for reserved in [
            "bootstrap.servers",
            "transactional.id",
            "enable.idempotence",
            "isolation.level",
        ] {
            if k.librdkafka_options.contains_key(reserved) {
                errors.global(
                    &format!("kafka.librdkafka_options.{reserved}"),
                    "is set by the producer and may not be overridden",
                );
            }
        }

        let registry_url = match parse_base_url(&self.schema_registry.url) {
            Ok(u) => Some(u),
            Err(m) => {
                errors.global("schema_registry.url", m);
                None
            }
        };
        let basic_auth = match (
            &self.schema_registry.username,
            &self.schema_registry.password_env,
        ) {
            (Some(user), Some(var)) => match env(var) {
                Some(p) => Some(RegistryAuth {
                    username: user.clone(),
                    password: Secret::new(p),
                }),
                None => {
                    errors.global(
                        "schema_registry.password_env",
                        format!("environment variable `{var}` is not set"),
                    );
                    None
                }
            },
            (None, None) => None,
            _ => {
                errors.global(
                    "schema_registry.username",
                    "username and password_env must be given together",
                );
                None
            }
        };

        let listen_addr = if self.operations.listen_addr.is_empty() {
            None
        } else {
            match self.operations.listen_addr.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    errors.global(
                        "operations.listen_addr",
                        format!(
                            "`{}` is not an address like 127.0.0.1:9464",
                            self.operations.listen_addr
                        ),
                    );
                    None
                }
            }
        };
        let log_format = match self.operations.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                errors.global(
                    "operations.log_format",
                    format!("`{other}` is not `text` or `json`"),
                );
                LogFormat::Text
            }
        };

        if self.tenants.is_empty() {
            errors.global("tenants", "at least one [[tenants]] entry is required");
        }
        let mut seen_ids = BTreeSet::new();
        let mut tenants = Vec::new();
        for (index, t) in self.tenants.iter().enumerate() {
            let name = if valid_tenant_id(&t.tenant_id) {
                t.tenant_id.clone()
            } else {
                errors.tenant(
                    &format!("#{}", index + 1),
                    "tenant_id",
                    format!(
                        "`{}` must be 1-64 characters of letters, digits, `-`, `_`, `.`",
                        t.tenant_id
                    ),
                );
                format!("#{}", index + 1)
            };
            if !seen_ids.insert(t.tenant_id.clone()) {
                errors.tenant(&name, "tenant_id", "is used by more than one tenant");
            }
            if let Some(tenant) = validate_tenant(&name, t, &env, &mut errors) {
                tenants.push(tenant);
            }
        }

        if !errors.list.is_empty() {
            return Err(ConfigError::Invalid(errors.list));
        }
        let (Some(registry_url), k) = (registry_url, self.kafka) else {
            return Err(ConfigError::Invalid(errors.list));
        };
        Ok(Config {
            kafka: KafkaConfig {
                bootstrap_servers: k.bootstrap_servers,
                raw_topic: k.raw_topic,
                checkpoint_topic: k.checkpoint_topic,
                transactional_id_prefix: k.transactional_id_prefix,
                transaction_timeout: Duration::from_millis(k.transaction_timeout_ms),
                message_timeout: Duration::from_millis(k.message_timeout_ms),
                compression_type: k.compression_type,
                create_topics: k.create_topics,
                topic_partitions: k.topic_partitions,
                topic_replication_factor: k.topic_replication_factor,
                librdkafka_options: k.librdkafka_options,
            },
            registry: RegistryConfig {
                url: registry_url,
                basic_auth,
                request_timeout: Duration::from_millis(self.schema_registry.request_timeout_ms),
            },
            operations: OperationsConfig {
                listen_addr,
                log_format,
                shutdown_deadline: Duration::from_millis(self.operations.shutdown_deadline_ms),
            },
            tenants,
        })
    }
}

fn validate_tenant(
    name: &str,
    t: &TenantFile,
    env: &impl Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<TenantConfig> {
    let before = errors.list.len();
    let environment_id = match Uuid::parse_str(&t.environment_id) {
        Ok(u) if t.environment_id.len() == 36 => Some(u),
        _ => {
            errors.tenant(
                name,
                "environment_id",
                format!("`{}` is not a UUID", t.environment_id),
            );
            None
        }
    };
    if !REGIONS.contains(&t.region.as_str()) {
        errors.tenant(
            name,
            "region",
            format!(
                "`{}` is not a region code; valid codes (lowercase) are: {}",
                t.region,
                REGIONS.join(", ")
            ),
        );
    }
    if t.client_id.trim().is_empty() {
        errors.tenant(name, "client_id", "must not be empty");
    }
    let secret = match (&t.client_secret_env, &t.client_secret_file) {
        (Some(var), None) => match env(var) {
            Some(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => {
                errors.tenant(
                    name,
                    "client_secret_env",
                    format!("environment variable `{var}` is not set or empty"),
                );
                None
            }
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) if !v.trim_end_matches(['\r', '\n']).is_empty() => {
                Some(Secret::new(v.trim_end_matches(['\r', '\n'])))
            }
            Ok(_) => {
                errors.tenant(
                    name,
                    "client_secret_file",
                    format!("file {} is empty", path.display()),
                );
                None
            }
            Err(e) => {
                errors.tenant(
                    name,
                    "client_secret_file",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        },
        (None, None) => {
            errors.tenant(
                name,
                "client_secret_env",
                "missing client secret: set client_secret_env or client_secret_file",
            );
            None
        }
        (Some(_), Some(_)) => {
            errors.tenant(
                name,
                "client_secret_file",
                "set only one of client_secret_env and client_secret_file",
            );
            None
        }
    };
    let auth_base = match &t.auth_base_url {
        Some(raw) => parse_base_url(raw)
            .map_err(|m| errors.tenant(name, "auth_base_url", m))
            .ok(),
        None => Url::parse(&format!("https://auth.pingone.{}", t.region)).ok(),
    };
    let api_base = match &t.api_base_url {
        Some(raw) => parse_base_url(raw)
            .map_err(|m| errors.tenant(name, "api_base_url", m))
            .ok(),
        None => Url::parse(&format!("https://api.pingone.{}/v1", t.region)).ok(),
    };
    let extra_ca_pem = match &t.ca_file {
        Some(path) => match std::fs::read(path) {
            Ok(pem) if pem.windows(11).any(|w| w == b"-----BEGIN ") => Some(pem),
            Ok(_) => {
                errors.tenant(
                    name,
                    "ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                );
                None
            }
            Err(e) => {
                errors.tenant(
                    name,
                    "ca_file",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        },
        None => None,
    };
    let action_types = match &t.activity_action_types {
        Some(list) => {
            if list.is_empty() {
                errors.tenant(name, "activity_action_types", "must not be empty");
            }
            for a in list {
                if a.is_empty()
                    || !a
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "._".contains(c))
                {
                    errors.tenant(
                        name,
                        "activity_action_types",
                        format!("`{a}` is not an action type like USER.ACCESS_ALLOWED"),
                    );
                }
            }
            list.clone()
        }
        None => DEFAULT_ACTION_TYPES
            .iter()
            .map(|s| (*s).to_string())
            .collect(),
    };
    let positive = |errors: &mut Errors, field: &str, v: u64| {
        if v == 0 {
            errors.tenant(name, field, "must be greater than 0");
        }
    };
    positive(errors, "snapshot_interval_s", t.snapshot_interval_s);
    positive(
        errors,
        "activity_poll_interval_s",
        t.activity_poll_interval_s,
    );
    positive(errors, "activity_window_max_s", t.activity_window_max_s);
    positive(errors, "request_timeout_ms", t.request_timeout_ms);
    positive(
        errors,
        "invalid_client_backoff_s",
        t.invalid_client_backoff_s,
    );
    positive(
        errors,
        "requests_per_second",
        u64::from(t.requests_per_second),
    );
    if t.activity_window_max_s > MAX_ACTIVITY_WINDOW_S {
        errors.tenant(
            name,
            "activity_window_max_s",
            "must be at most 1209600 (14 days, PingOne's limit)",
        );
    }
    if t.activity_initial_lookback_s > MAX_ACTIVITY_WINDOW_S {
        errors.tenant(
            name,
            "activity_initial_lookback_s",
            "must be at most 1209600 (PingOne serves the last 14 days)",
        );
    }
    if t.activity_overlap_s == 0 {
        errors.tenant(
            name,
            "activity_overlap_s",
            "must be at least 1 (windows are exclusive at both ends)",
        );
    }
    if t.activity_overlap_s >= t.activity_window_max_s {
        errors.tenant(
            name,
            "activity_overlap_s",
            "must be smaller than activity_window_max_s",
        );
    }
    if !(1..=1000).contains(&t.activity_page_size) {
        errors.tenant(name, "activity_page_size", "must be between 1 and 1000");
    }
    if !(1..=1000).contains(&t.directory_page_size) {
        errors.tenant(name, "directory_page_size", "must be between 1 and 1000");
    }
    if !(1..=1000).contains(&t.snapshot_pages_per_transaction) {
        errors.tenant(
            name,
            "snapshot_pages_per_transaction",
            "must be between 1 and 1000",
        );
    }
    if errors.list.len() != before {
        return None;
    }
    let environment_id = environment_id?;
    let auth_base = auth_base?;
    let token_url = Url::parse(&format!(
        "{}/{}/as/token",
        auth_base.as_str().trim_end_matches('/'),
        environment_id
    ))
    .ok()?;
    Some(TenantConfig {
        tenant_id: t.tenant_id.clone(),
        environment_id,
        region: t.region.clone(),
        client_id: t.client_id.clone(),
        client_secret: secret?,
        token_url,
        api_base_url: api_base?,
        extra_ca_pem,
        snapshot_interval: Duration::from_secs(t.snapshot_interval_s),
        snapshot_resume_max_age: Duration::from_secs(t.snapshot_resume_max_age_s),
        activity_poll_interval: Duration::from_secs(t.activity_poll_interval_s),
        activity_action_types: action_types,
        activity_initial_lookback: Duration::from_secs(t.activity_initial_lookback_s),
        activity_safety_lag: Duration::from_secs(t.activity_safety_lag_s),
        activity_window_max: Duration::from_secs(t.activity_window_max_s),
        activity_overlap: Duration::from_secs(t.activity_overlap_s),
        activity_page_size: t.activity_page_size,
        directory_page_size: t.directory_page_size,
        snapshot_pages_per_transaction: t.snapshot_pages_per_transaction,
        requests_per_second: t.requests_per_second,
        request_timeout: Duration::from_millis(t.request_timeout_ms),
        max_retries: t.max_retries,
        retry_max_backoff: Duration::from_millis(t.retry_max_backoff_ms),
        retry_base_backoff: Duration::from_millis(t.retry_base_backoff_ms),
        invalid_client_backoff: Duration::from_secs(t.invalid_client_backoff_s),
        token_renew_margin: Duration::from_secs(t.token_renew_margin_s),
    })
}

impl TenantConfig {
    /// `{api}/environments/{envId}/{collection}`.
    pub fn collection_url(&self, collection: &str) -> String {
        format!(
            "{}/environments/{}/{}",
            self.api_base_url.as_str().trim_end_matches('/'),
            self.environment_id,
            collection
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
[schema_registry]
url = "http://127.0.0.1:8081/apis/ccompat/v7"
[[tenants]]
tenant_id = "acme"
environment_id = "7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f"
region = "eu"
client_id = "c1"
client_secret_env = "ACME_SECRET"
"#;

    fn validate(text: &str, overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
            .collect();
        parse_with_overrides(Path::new("t.toml"), text, &overrides)?
            .validate(|v| (v == "ACME_SECRET").then(|| "s3cr3t-value".to_string()))
    }

    fn errors(text: &str) -> Vec<FieldError> {
        match validate(text, &[]) {
            Err(ConfigError::Invalid(list)) => list,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn good_config_validates_with_defaults() {
        let c = validate(GOOD, &[]).unwrap();
        let t = &c.tenants[0];
        assert_eq!(t.region, "eu");
        assert_eq!(
            t.token_url.as_str(),
            "https://auth.pingone.eu/7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f/as/token"
        );
        assert_eq!(
            t.collection_url("users"),
            "https://api.pingone.eu/v1/environments/7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f/users"
        );
        assert_eq!(t.client_secret.expose(), "s3cr3t-value");
        assert!(
            t.activity_action_types
                .contains(&"USER.ACCESS_ALLOWED".to_string())
        );
        assert_eq!(c.kafka.raw_topic, "pingone.raw.v1");
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn uppercase_region_is_rejected_with_the_valid_codes() {
        let list = errors(&GOOD.replace("\"eu\"", "\"COM\""));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].tenant.as_deref(), Some("acme"));
        assert_eq!(list[0].field, "region");
        let text = list[0].to_string();
        assert!(text.contains("com, ca, eu, asia, com.au, sg"), "{text}");
    }

    #[test]
    fn malformed_environment_id_and_missing_secret_are_both_reported() {
        let text = GOOD
            .replace("7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f", "not-a-uuid")
            .replace("ACME_SECRET", "UNSET_VAR");
        let list = errors(&text);
        let fields: Vec<&str> = list.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["environment_id", "client_secret_env"]);
        assert!(list.iter().all(|e| e.tenant.as_deref() == Some("acme")));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = validate(&format!("{GOOD}colour = \"red\"\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn window_longer_than_14_days_is_rejected() {
        let list = errors(&format!("{GOOD}activity_window_max_s = 2000000\n"));
        assert_eq!(list[0].field, "activity_window_max_s");
    }

    #[test]
    fn env_overrides_replace_file_values() {
        let c = validate(
            GOOD,
            &[
                ("PRODUCER__KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092"),
                (
                    "PRODUCER__TENANTS__ACME__API_BASE_URL",
                    "https://127.0.0.1:8443/v1",
                ),
                ("PRODUCER__TENANTS__ACME__REQUESTS_PER_SECOND", "7"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "10.0.0.1:9092");
        assert_eq!(
            c.tenants[0].api_base_url.as_str(),
            "https://127.0.0.1:8443/v1"
        );
        assert_eq!(c.tenants[0].requests_per_second, 7);
        let err = validate(GOOD, &[("PRODUCER__TENANTS__NOPE__REGION", "eu")]).unwrap_err();
        assert!(err.to_string().contains("nope") || err.to_string().contains("NOPE"));
    }

    #[test]
    fn redacts_secret_librdkafka_options() {
        let mut o = BTreeMap::new();
        o.insert("sasl.password".to_string(), "pw".to_string());
        o.insert("security.protocol".to_string(), "SASL_SSL".to_string());
        let r = redacted_options(&o);
        assert_eq!(r["sasl.password"], "***");
        assert_eq!(r["security.protocol"], "SASL_SSL");
    }
}
