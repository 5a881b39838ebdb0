//! Typed, validated configuration of the transformer (a TOML file; see `transformer/README.md`).
//!
//! Every field has a default except the broker and registry addresses, which `main.rs` may
//! also take from `KAFKA_BOOTSTRAP_SERVERS` / `SCHEMA_REGISTRY_URL`. Units are in field names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

pub use schemas::registry::RegistryAuth;
pub use schemas::secret::Secret;

/// The transformer's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[serde(default)]
    pub bootstrap_servers: String,
    /// Base URL of the Confluent-compatible schema registry API (Apicurio:
    /// `http://host:port/apis/ccompat/v7`).
    #[serde(default)]
    pub schema_registry_url: String,
    /// Optional basic-auth credentials for the registry.
    #[serde(default)]
    pub schema_registry_auth: Option<RegistryAuth>,
    /// The raw topic written by the producer.
    #[serde(default = "default_raw_topic")]
    pub raw_topic: String,
    /// Prefix of every output topic: `<prefix>users.v1`, `<prefix>applications.v1`,
    /// `<prefix>app_usage.v1`, `<prefix>deadletter.v1` and the internal
    /// `<prefix>transformer-state.v1`. A replay may use another prefix.
    #[serde(default = "default_output_prefix")]
    pub output_prefix: String,
    /// Consumer group whose committed offsets (written inside each transaction) say where the
    /// raw topic is read from.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Transactional id of the producer; a new instance with the same id fences the old one.
    #[serde(default = "default_transactional_id")]
    pub transactional_id: String,
    /// Most raw events per transaction.
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// Longest wait for more raw events before a non-empty batch is committed.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Kafka `transaction.timeout.ms`: how long the broker keeps an open transaction.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Bound on every blocking Kafka call (init, commit, abort, metadata, committed offsets).
    #[serde(default = "default_kafka_timeout_ms")]
    pub kafka_timeout_ms: u64,
    /// Bound on each schema registry request.
    #[serde(default = "default_registry_timeout_ms")]
    pub registry_timeout_ms: u64,
    /// Activity ids remembered per tenant to drop duplicates.
    #[serde(default = "default_activity_dedup_capacity")]
    pub activity_dedup_capacity: usize,
    /// Create missing output topics (compacted) with this many partitions; 0 means as many as
    /// the raw topic has.
    #[serde(default)]
    pub output_partitions: i32,
    /// Replication factor of created output topics.
    #[serde(default = "default_replication_factor")]
    pub output_replication_factor: i32,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; none when absent.
    #[serde(default)]
    pub metrics_listen_addr: Option<SocketAddr>,
    /// After a shutdown request, how long the current transaction may take to finish.
    #[serde(default = "default_shutdown_deadline_ms")]
    pub shutdown_deadline_ms: u64,
    /// Longest pause before restarting after a transient failure (doubles from 500 ms).
    #[serde(default = "default_restart_backoff_max_ms")]
    pub restart_backoff_max_ms: u64,
    /// Stop once every raw partition's end has been reached and committed (demos and batch
    /// runs; `transformer run --until-caught-up` sets it).
    #[serde(default)]
    pub stop_at_end: bool,
    /// Extra librdkafka settings for every client (escape hatch; our own settings win).
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

fn default_raw_topic() -> String {
    "pingone.raw.v1".into()
}
fn default_output_prefix() -> String {
    "usage.".into()
}
fn default_group_id() -> String {
    "pingone-transformer".into()
}
fn default_transactional_id() -> String {
    "pingone-transformer".into()
}
const fn default_batch_max_records() -> usize {
    2_000
}
const fn default_batch_max_wait_ms() -> u64 {
    100
}
const fn default_transaction_timeout_ms() -> u64 {
    60_000
}
const fn default_kafka_timeout_ms() -> u64 {
    30_000
}
const fn default_registry_timeout_ms() -> u64 {
    10_000
}
const fn default_activity_dedup_capacity() -> usize {
    100_000
}
const fn default_replication_factor() -> i32 {
    1
}
const fn default_shutdown_deadline_ms() -> u64 {
    15_000
}
const fn default_restart_backoff_max_ms() -> u64 {
    30_000
}

/// The topic names derived from a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTopics {
    /// User usage metadata (compacted).
    pub users: String,
    /// Applications (compacted).
    pub applications: String,
    /// Application usage per user (compacted).
    pub app_usage: String,
    /// Dead letters (not compacted).
    pub dead_letter: String,
    /// Internal checkpoint of syncs in progress (compacted).
    pub state: String,
}

impl OutputTopics {
    /// The names for `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            users: format!("{prefix}users.v1"),
            applications: format!("{prefix}applications.v1"),
            app_usage: format!("{prefix}app_usage.v1"),
            dead_letter: format!("{prefix}deadletter.v1"),
            state: format!("{prefix}transformer-state.v1"),
        }
    }
}

impl Config {
    /// A client of the configured schema registry (URL, credentials, request timeout).
    ///
    /// # Errors
    /// [`RegistryError`](crate::registry::RegistryError) if the HTTP client cannot be built.
    pub fn registry(&self) -> Result<crate::registry::Registry, crate::registry::RegistryError> {
        crate::registry::Registry::new(
            &self.schema_registry_url,
            self.schema_registry_auth.clone(),
            std::time::Duration::from_millis(self.registry_timeout_ms),
        )
    }

    /// A configuration with every default and the given addresses.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        schema_registry_url: impl Into<String>,
    ) -> Self {
        let mut config: Config = match toml::from_str("") {
            Ok(c) => c,
            Err(_) => unreachable_default(),
        };
        config.bootstrap_servers = bootstrap_servers.into();
        config.schema_registry_url = schema_registry_url.into();
        config
    }

    /// Reads and validates a TOML file.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable file, bad TOML, unknown keys or invalid values.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// The output topic names.
    pub fn topics(&self) -> OutputTopics {
        OutputTopics::new(&self.output_prefix)
    }

    /// Checks ranges and required values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.bootstrap_servers.trim().is_empty() {
            return bad("bootstrap_servers is empty (or set KAFKA_BOOTSTRAP_SERVERS)");
        }
        if !(self.schema_registry_url.starts_with("http://")
            || self.schema_registry_url.starts_with("https://"))
        {
            return bad("schema_registry_url must be an http(s) URL (or set SCHEMA_REGISTRY_URL)");
        }
        let topic_ok = |t: &str| {
            !t.is_empty()
                && t.len() <= 200
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !topic_ok(&self.raw_topic) {
            return bad("raw_topic must be a valid Kafka topic name");
        }
        if !self.output_prefix.is_empty() && !topic_ok(&self.output_prefix) {
            return bad("output_prefix may only use [a-zA-Z0-9._-]");
        }
        if self.topics().users == self.raw_topic {
            return bad("output topics must differ from raw_topic");
        }
        if self.group_id.is_empty() || self.transactional_id.is_empty() {
            return bad("group_id and transactional_id must not be empty");
        }
        if self.batch_max_records == 0 || self.batch_max_records > 100_000 {
            return bad("batch_max_records must be within 1..=100000");
        }
        if self.batch_max_wait_ms == 0 || self.batch_max_wait_ms > 60_000 {
            return bad("batch_max_wait_ms must be within 1..=60000");
        }
        if self.transaction_timeout_ms < 1_000 || self.transaction_timeout_ms > 900_000 {
            return bad("transaction_timeout_ms must be within 1000..=900000");
        }
        if self.kafka_timeout_ms < 100 || self.registry_timeout_ms < 100 {
            return bad("kafka_timeout_ms and registry_timeout_ms must be at least 100");
        }
        if self.output_partitions < 0 || self.output_replication_factor < 1 {
            return bad("output_partitions must be >= 0 and output_replication_factor >= 1");
        }
        Ok(())
    }
}

#[allow(clippy::panic)]
fn unreachable_default() -> Config {
    // Every field has a serde default, which a unit test checks.
    panic!("empty configuration must deserialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = Config::new("127.0.0.1:9092", "http://127.0.0.1:8081/apis/ccompat/v7");
        c.validate().unwrap();
        assert_eq!(c.topics().users, "usage.users.v1");
        assert_eq!(c.topics().app_usage, "usage.app_usage.v1");
        let mut bad = c.clone();
        bad.batch_max_records = 0;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.schema_registry_url = "localhost:8081".into();
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.output_prefix = "a b".into();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_rejected_and_secrets_hidden() {
        let err = toml::from_str::<Config>("bootstrap_server = 'x'").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let c: Config = toml::from_str(
            "bootstrap_servers = 'k:9092'\nschema_registry_url = 'http://r'\n[schema_registry_auth]\nusername = 'u'\npassword = 'hunter2'\n",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.schema_registry_auth.unwrap().password.expose(), "hunter2");
    }
}
