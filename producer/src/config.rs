//! The producer's configuration: a TOML file, environment overrides, and validation into typed
//! values.
//!
//! [`FileConfig`] mirrors the file (every field documented in `producer/README.md`, unknown keys
//! rejected). [`load`] reads the file, applies `PRODUCER__…` environment overrides, and
//! [`FileConfig::validate`] turns it into a [`Config`] or a list of errors that each name the
//! tenant and the field. Secrets are read from environment variables or files into [`Secret`]s.
//! The loading, the override rules and the `[schema_registry]` and `[operations]` sections are
//! shared with the transformer (`pipeline_io::config`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pipeline_io::config::{
    Errors, KafkaBasics, Layers, OperationsFile, OperationsSettings, RegistryFile,
    RegistrySettings, check_topic, parse_base_url, redacted_options,
};
use pipeline_io::kafka::ClientSettings;
use pipeline_io::secret::Secret;
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

pub use pipeline_io::config::{ConfigError, FieldError, LogFormat};

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

/// Most days of PingOne's sign-on counts a tenant may read (`application_signons_days`): the
/// report compares at most 30, and `/applicationSignons` caps
/// `samplePeriod × samplePeriodCount × limit` at 100,000.
pub const MAX_SIGNONS_DAYS: u32 = 90;

/// [`MAX_ACTIVITY_WINDOW_S`] as a duration.
pub const MAX_ACTIVITY_WINDOW_S_DURATION: Duration = Duration::from_secs(MAX_ACTIVITY_WINDOW_S);

/// Prefix of environment variables that override file values (`PRODUCER__KAFKA__BOOTSTRAP_SERVERS`).
pub const ENV_PREFIX: &str = "PRODUCER__";

/// The operations listener's default address (the transformer's is 9465).
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:9464";

/// How the file is layered: `PRODUCER__` overrides, tenants addressed by `tenant_id`.
const LAYERS: Layers<'static> = Layers {
    env_prefix: ENV_PREFIX,
    array_ids: &[("tenants", "tenant_id")],
    free_form: &["librdkafka_options"],
};

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
    #[serde(default = "pipeline_io::config::default_replication_factor")]
    pub topic_replication_factor: i32,
    /// Bound on each blocking Kafka call (metadata, reading checkpoints, transactions).
    #[serde(default = "pipeline_io::config::default_kafka_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Extra librdkafka options (security settings); values of keys naming a password or secret
    /// are redacted in any output.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
    /// Where the tenants are kept: `file` (the `[[tenants]]` of this file) or `topic` (the
    /// tenants topic, managed with `producer tenants …`).
    #[serde(default)]
    pub tenant_source: TenantSource,
    /// Compacted topic of tenant settings (key = tenant id), read with `tenant_source = "topic"`.
    #[serde(default = "default_tenants_topic")]
    pub tenants_topic: String,
    /// Partitions of the tenants topic when the producer creates it, and the number of writer
    /// slots with `tenant_source = "file"`: one transactional producer per partition or slot.
    #[serde(default = "default_tenant_partitions")]
    pub tenant_partitions: i32,
    /// Consumer group of the producer instances on the tenants topic (default: the
    /// transactional id prefix).
    #[serde(default)]
    pub group_id: Option<String>,
}

/// Where the producer's tenants are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantSource {
    /// The `[[tenants]]` entries of the configuration file, run by this one process.
    #[default]
    File,
    /// The tenants topic, shared by every instance in the consumer group.
    Topic,
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

/// One `[[tenants]]` entry; also the value of a tenants topic record (it holds a reference to
/// the secret, never the secret).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// File holding the client secret (trailing newline trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Auth host override (custom domain, simulator), e.g. `https://auth.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_base_url: Option<String>,
    /// API base override, e.g. `https://api.example.com/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// Extra PEM CA file trusted beside the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// Whole UTC days of PingOne's own sign-on counts (`/applicationSignons`) to read on the
    /// activity schedule, for the license report's cross-check (at most 90; 0 turns it off).
    #[serde(default = "default_signons_days")]
    pub application_signons_days: u32,
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
    /// Longest time one PingOne call may take, its retries and their waits included.
    #[serde(default = "default_request_deadline_ms")]
    pub request_deadline_ms: u64,
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
    schemas::topics::RAW_TOPIC.into()
}
fn default_checkpoint_topic() -> String {
    schemas::topics::PRODUCER_CHECKPOINT_TOPIC.into()
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
fn default_tenants_topic() -> String {
    schemas::topics::PRODUCER_TENANTS_TOPIC.into()
}
const fn default_tenant_partitions() -> i32 {
    6
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
const fn default_signons_days() -> u32 {
    30
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
/// 40 s: with the other defaults, `sync --once` reports an unreachable PingOne within a minute.
const fn default_request_deadline_ms() -> u64 {
    40_000
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
    pub registry: RegistrySettings,
    /// Logs, metrics, shutdown.
    pub operations: OperationsSettings,
    /// Tenants, in file order.
    pub tenants: Vec<TenantConfig>,
}

/// Validated `[kafka]`.
#[derive(Clone)]
pub struct KafkaConfig {
    /// Brokers, extra librdkafka options, the bound on blocking calls.
    pub client: ClientSettings,
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
    /// Where the tenants are kept.
    pub tenant_source: TenantSource,
    /// The tenants topic.
    pub tenants_topic: String,
    /// Partitions of a created tenants topic; writer slots of file tenants.
    pub tenant_partitions: i32,
    /// Consumer group of the instances on the tenants topic.
    pub group_id: String,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("client", &self.client)
            .field("raw_topic", &self.raw_topic)
            .field("checkpoint_topic", &self.checkpoint_topic)
            .field("transactional_id_prefix", &self.transactional_id_prefix)
            .finish_non_exhaustive()
    }
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
    /// Days of PingOne's sign-on counts read on the activity schedule (0: none).
    pub application_signons_days: u32,
    /// `limit` of directory queries.
    pub directory_page_size: u32,
    /// Snapshot pages per transaction.
    pub snapshot_pages_per_transaction: u32,
    /// Requests per second towards PingOne.
    pub requests_per_second: u32,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Longest time of one call, retries and waits included.
    pub request_deadline: Duration,
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
    let vars = pipeline_io::config::process_env();
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
    let file: FileConfig = LAYERS.load(Some(path), overrides)?;
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
    LAYERS.parse(Some(path), text, overrides)
}

fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl FileConfig {
    /// Checks every value and reads the secrets. `env` looks up environment variables.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem, each naming tenant and field.
    pub fn validate(self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut errors = Errors::default();

        let k = &self.kafka;
        KafkaBasics {
            bootstrap_servers: &k.bootstrap_servers,
            raw_topic: &k.raw_topic,
            request_timeout_ms: k.request_timeout_ms,
            transaction_timeout_ms: k.transaction_timeout_ms,
            librdkafka_options: &k.librdkafka_options,
        }
        .check(&mut errors);
        check_topic(&mut errors, "kafka.checkpoint_topic", &k.checkpoint_topic);
        if k.raw_topic == k.checkpoint_topic {
            errors.global("kafka.checkpoint_topic", "must differ from kafka.raw_topic");
        }
        if k.transactional_id_prefix.is_empty() {
            errors.global("kafka.transactional_id_prefix", "must not be empty");
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

        let registry = self.schema_registry.validate(&env, &mut errors);
        let operations = self
            .operations
            .validate(Some(DEFAULT_LISTEN_ADDR), &mut errors);

        check_topic(&mut errors, "kafka.tenants_topic", &k.tenants_topic);
        if [&k.raw_topic, &k.checkpoint_topic].contains(&&k.tenants_topic) {
            errors.global(
                "kafka.tenants_topic",
                "must differ from kafka.raw_topic and kafka.checkpoint_topic",
            );
        }
        if !(1..=1024).contains(&k.tenant_partitions) {
            errors.global("kafka.tenant_partitions", "must be between 1 and 1024");
        }
        if k.group_id.as_deref().is_some_and(str::is_empty) {
            errors.global("kafka.group_id", "must not be empty");
        }
        match k.tenant_source {
            TenantSource::File if self.tenants.is_empty() => errors.global(
                "tenants",
                "at least one [[tenants]] entry is required (or kafka.tenant_source = \"topic\")",
            ),
            TenantSource::Topic if !self.tenants.is_empty() => errors.global(
                "tenants",
                "kafka.tenant_source = \"topic\" reads the tenants from kafka.tenants_topic: \
                 add them with `producer tenants add`, not as [[tenants]] entries",
            ),
            _ => {}
        }
        let tenants = check_tenants(&self.tenants, &env, &mut errors);

        let k = self.kafka;
        errors.finish(|| {
            Some(Config {
                kafka: KafkaConfig {
                    client: ClientSettings::new(k.bootstrap_servers, "pingone-producer")
                        .with_options(k.librdkafka_options)
                        .with_timeout(Duration::from_millis(k.request_timeout_ms)),
                    raw_topic: k.raw_topic,
                    checkpoint_topic: k.checkpoint_topic,
                    group_id: k
                        .group_id
                        .unwrap_or_else(|| k.transactional_id_prefix.clone()),
                    transactional_id_prefix: k.transactional_id_prefix,
                    transaction_timeout: Duration::from_millis(k.transaction_timeout_ms),
                    message_timeout: Duration::from_millis(k.message_timeout_ms),
                    compression_type: k.compression_type,
                    create_topics: k.create_topics,
                    topic_partitions: k.topic_partitions,
                    topic_replication_factor: k.topic_replication_factor,
                    tenant_source: k.tenant_source,
                    tenants_topic: k.tenants_topic,
                    tenant_partitions: k.tenant_partitions,
                },
                registry: registry?,
                operations,
                tenants,
            })
        })
    }
}

/// Validates tenant entries (`[[tenants]]` or tenants topic records) and reads their secrets, as
/// `validate-config` does: ids unique and well formed, every field checked.
///
/// # Errors
/// [`ConfigError::Invalid`] listing every problem, each naming tenant and field.
pub fn validate_tenants(
    files: &[TenantFile],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<TenantConfig>, ConfigError> {
    let mut errors = Errors::default();
    let tenants = check_tenants(files, &env, &mut errors);
    errors.finish(|| Some(tenants))
}

fn check_tenants(
    files: &[TenantFile],
    env: &impl Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Vec<TenantConfig> {
    let mut seen_ids = BTreeSet::new();
    let mut tenants = Vec::new();
    for (index, t) in files.iter().enumerate() {
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
        if let Some(tenant) = validate_tenant(&name, t, env, errors) {
            tenants.push(tenant);
        }
    }
    tenants
}

fn validate_tenant(
    name: &str,
    t: &TenantFile,
    env: &impl Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<TenantConfig> {
    let before = errors.len();
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
    if t.request_deadline_ms < 1_000 {
        errors.tenant(name, "request_deadline_ms", "must be at least 1000");
    }
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
    if t.application_signons_days > MAX_SIGNONS_DAYS {
        errors.tenant(
            name,
            "application_signons_days",
            format!("must be at most {MAX_SIGNONS_DAYS} (0 turns the counts off)"),
        );
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
    if errors.len() != before {
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
        application_signons_days: t.application_signons_days,
        directory_page_size: t.directory_page_size,
        snapshot_pages_per_transaction: t.snapshot_pages_per_transaction,
        requests_per_second: t.requests_per_second,
        request_timeout: Duration::from_millis(t.request_timeout_ms),
        request_deadline: Duration::from_millis(t.request_deadline_ms),
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
        assert_eq!(c.kafka.client.bootstrap_servers, "10.0.0.1:9092");
        assert_eq!(
            c.tenants[0].api_base_url.as_str(),
            "https://127.0.0.1:8443/v1"
        );
        assert_eq!(c.tenants[0].requests_per_second, 7);
        let err = validate(GOOD, &[("PRODUCER__TENANTS__NOPE__REGION", "eu")]).unwrap_err();
        assert!(err.to_string().contains("nope") || err.to_string().contains("NOPE"));
    }
}
