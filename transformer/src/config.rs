//! The transformer's configuration: a TOML file (optional: every field has a default but the
//! broker and registry addresses), `TRANSFORMER__…` environment overrides, and validation into
//! typed values that reports every problem at once. Same style and loading as the producer's
//! (`pipeline_io::config`); the fields are documented in `transformer/README.md`.
//!
//! Where a value comes from, weakest first: the defaults; `KAFKA_BOOTSTRAP_SERVERS` and
//! `SCHEMA_REGISTRY_URL` (what `deploy/local/up` exports); the file; `TRANSFORMER__SECTION__FIELD`
//! variables (`TRANSFORMER__PROCESSING__BATCH_MAX_RECORDS=500`); the `--bootstrap-servers` and
//! `--schema-registry-url` flags.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pipeline_io::config::{
    Errors, KafkaBasics, Layers, OperationsFile, OperationsSettings, RegistryFile,
    RegistrySettings, check_topic,
};
use pipeline_io::kafka::ClientSettings;
use schemas::topics::OutputTopics;
use serde::Deserialize;

pub use pipeline_io::config::{ConfigError, FieldError, LogFormat};

/// Prefix of environment variables that override file values.
pub const ENV_PREFIX: &str = "TRANSFORMER__";

/// The default `operations.listen_addr`, distinct from the producer's default 9464 so that both
/// run on one host; an empty `listen_addr` turns the endpoints off.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:9465";

const LAYERS: Layers<'static> = Layers {
    env_prefix: ENV_PREFIX,
    array_ids: &[],
    free_form: &["librdkafka_options"],
};

/// The configuration file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Kafka connection, topics, group and transactions.
    #[serde(default)]
    pub kafka: KafkaFile,
    /// Schema registry.
    #[serde(default)]
    pub schema_registry: RegistryFile,
    /// Logs, metrics and shutdown.
    #[serde(default)]
    pub operations: OperationsFile,
    /// Batching, state and restarts.
    #[serde(default)]
    pub processing: ProcessingFile,
}

/// `[kafka]`. A missing field takes its value from [`KafkaFile::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaFile {
    /// Comma-separated `host:port` list (default: `KAFKA_BOOTSTRAP_SERVERS`).
    pub bootstrap_servers: String,
    /// The raw topic written by the producer.
    pub raw_topic: String,
    /// Prefix of every output topic: `<prefix>users.v1`, `<prefix>applications.v1`,
    /// `<prefix>app_usage.v1`, `<prefix>app_signons.v1`, `<prefix>deadletter.v1` and the internal
    /// `<prefix>transformer-state.v1`.
    pub output_prefix: String,
    /// Consumer group whose committed offsets (written inside each transaction) say where the
    /// raw topic is read from.
    pub group_id: String,
    /// Prefix of the producer's transactional id, `<transactional_id>-<instance_id>`.
    pub transactional_id: String,
    /// This instance's name in the group, unique among the instances running at once and
    /// best kept across restarts (a restart then fences its predecessor at once); empty: the
    /// host name (a Kubernetes pod's name).
    pub instance_id: String,
    /// `transaction.timeout.ms`: how long the broker keeps an open transaction.
    pub transaction_timeout_ms: u64,
    /// Bound on every blocking Kafka call (init, commit, abort, metadata, committed offsets).
    pub request_timeout_ms: u64,
    /// Replication factor of created output topics.
    pub output_replication_factor: i32,
    /// Extra librdkafka settings for every client (security settings); values of keys naming a
    /// password or secret are redacted in any output.
    pub librdkafka_options: BTreeMap<String, String>,
}

impl Default for KafkaFile {
    fn default() -> Self {
        Self {
            bootstrap_servers: String::new(),
            raw_topic: schemas::topics::RAW_TOPIC.into(),
            output_prefix: schemas::topics::OUTPUT_PREFIX.into(),
            group_id: "pingone-transformer".into(),
            transactional_id: "pingone-transformer".into(),
            instance_id: String::new(),
            transaction_timeout_ms: 60_000,
            request_timeout_ms: pipeline_io::config::default_kafka_request_timeout_ms(),
            output_replication_factor: pipeline_io::config::default_replication_factor(),
            librdkafka_options: BTreeMap::new(),
        }
    }
}

/// `[processing]`. A missing field takes its value from [`ProcessingFile::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingFile {
    /// Most raw events per transaction.
    pub batch_max_records: usize,
    /// Longest wait for more raw events before a non-empty batch is committed.
    pub batch_max_wait_ms: u64,
    /// Activity ids remembered per tenant to drop duplicates.
    pub activity_dedup_capacity: usize,
    /// Longest pause before restarting after a transient failure (doubles from 500 ms).
    pub restart_backoff_max_ms: u64,
    /// Stop once every raw partition's end has been reached and committed (demos and batch
    /// runs; `transformer run --until-caught-up` sets it).
    pub stop_at_end: bool,
    /// The share (0 to 1) of a tenant's live users, or of its applications, that one sync may
    /// delete; a sync that would delete more deletes none of them and is dead-lettered
    /// (`deletions_held`). 1 turns the guard off.
    pub max_delete_share: f64,
}

impl Default for ProcessingFile {
    fn default() -> Self {
        Self {
            batch_max_records: 5_000,
            batch_max_wait_ms: 100,
            activity_dedup_capacity: 100_000,
            restart_backoff_max_ms: 30_000,
            stop_at_end: false,
            max_delete_share: crate::processor::DEFAULT_MAX_DELETE_SHARE,
        }
    }
}

/// The validated configuration the transformer runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// Schema registry settings.
    pub registry: RegistrySettings,
    /// Logs, metrics, shutdown.
    pub operations: OperationsSettings,
    /// Batching, state and restarts.
    pub processing: ProcessingConfig,
}

/// Validated `[kafka]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Brokers, extra librdkafka options, the bound on blocking calls.
    pub client: ClientSettings,
    /// The raw topic.
    pub raw_topic: String,
    /// The prefix the output topics were derived from.
    pub output_prefix: String,
    /// The output topics.
    pub topics: OutputTopics,
    /// Consumer group of the raw topic.
    pub group_id: String,
    /// This instance's transactional id: `<transactional_id>-<instance_id>`.
    pub transactional_id: String,
    /// This instance's id in its transactional id.
    pub instance_id: String,
    /// `transaction.timeout.ms`.
    pub transaction_timeout: Duration,
    /// Replication factor of created output topics.
    pub output_replication_factor: i32,
}

/// Validated `[processing]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessingConfig {
    /// Most raw events per transaction.
    pub batch_max_records: usize,
    /// Longest wait for more events before a non-empty batch is committed.
    pub batch_max_wait: Duration,
    /// Activity ids remembered per tenant.
    pub activity_dedup_capacity: usize,
    /// Longest pause before a restart.
    pub restart_backoff_max: Duration,
    /// Stop once the raw topic's end is committed.
    pub stop_at_end: bool,
    /// Largest share of a tenant's users or applications one sync may delete.
    pub max_delete_share: f64,
}

/// Values given on the command line, stronger than the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--bootstrap-servers`.
    pub bootstrap_servers: Option<String>,
    /// `--schema-registry-url`.
    pub schema_registry_url: Option<String>,
}

/// Loads `path` (or the defaults without one) with the process environment and `flags`.
///
/// # Errors
/// [`ConfigError`] naming the file, the override, or every invalid field.
pub fn load(path: Option<&Path>, flags: &Flags) -> Result<Config, ConfigError> {
    let vars = pipeline_io::config::process_env();
    load_with_env(path, &vars, flags, |name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment (for tests).
///
/// # Errors
/// As [`load`].
pub fn load_with_env(
    path: Option<&Path>,
    vars: &[(String, String)],
    flags: &Flags,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut file: FileConfig = LAYERS.load(path, vars)?;
    pipeline_io::config::resolve_addresses(
        &mut file.kafka.bootstrap_servers,
        &mut file.schema_registry.url,
        (
            flags.bootstrap_servers.as_ref(),
            flags.schema_registry_url.as_ref(),
        ),
        &env,
    );
    file.validate(env)
}

/// Parses TOML text with `TRANSFORMER__…` overrides (for tests and `validate-config`).
///
/// # Errors
/// [`ConfigError::Parse`] or [`ConfigError::Override`].
pub fn parse_with_overrides(
    text: &str,
    vars: &[(String, String)],
) -> Result<FileConfig, ConfigError> {
    LAYERS.parse(None, text, vars)
}

impl Config {
    /// Every default, with the given broker and registry (tests, tools).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when an address is malformed.
    pub fn for_addresses(
        bootstrap_servers: impl Into<String>,
        schema_registry_url: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let mut file = FileConfig::default();
        file.kafka.bootstrap_servers = bootstrap_servers.into();
        file.schema_registry.url = schema_registry_url.into();
        file.validate(|_| None)
    }

    /// The same configuration writing under another output prefix.
    #[must_use]
    pub fn with_output_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.kafka.output_prefix);
        self.kafka.topics = OutputTopics::new(prefix);
        self
    }
}

/// The host name (`/proc/sys/kernel/hostname`, else `HOSTNAME`), or `transformer` when
/// neither says.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "transformer".to_owned())
}

impl FileConfig {
    /// Checks every value and reads secrets from the environment (`env` looks variables up).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem.
    pub fn validate(self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let k = &self.kafka;
        let mut errors = Errors::default();
        let basics = KafkaBasics {
            librdkafka_options: &k.librdkafka_options,
            transaction_timeout_ms: k.transaction_timeout_ms,
            request_timeout_ms: k.request_timeout_ms,
            raw_topic: &k.raw_topic,
            bootstrap_servers: &k.bootstrap_servers,
        };
        basics.check(&mut errors);
        if !k.output_prefix.is_empty() {
            check_topic(&mut errors, "kafka.output_prefix", &k.output_prefix);
        }
        let topics = OutputTopics::new(&k.output_prefix);
        if [
            &topics.users,
            &topics.applications,
            &topics.app_usage,
            &topics.app_signons,
            &topics.dead_letter,
            &topics.state,
        ]
        .contains(&&k.raw_topic)
        {
            errors.global(
                "kafka.output_prefix",
                "output topics must differ from raw_topic",
            );
        }
        if k.group_id.is_empty() {
            errors.global("kafka.group_id", "must not be empty");
        }
        if k.transactional_id.is_empty() {
            errors.global("kafka.transactional_id", "must not be empty");
        }
        let instance_id = if k.instance_id.is_empty() {
            host_name()
        } else {
            k.instance_id.clone()
        };
        if instance_id.is_empty()
            || !instance_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            errors.global(
                "kafka.instance_id",
                "must be letters, digits, '.', '_' or '-' (empty: the host name)",
            );
        }
        if k.output_replication_factor < 1 {
            errors.global("kafka.output_replication_factor", "must be at least 1");
        }
        let registry = self.schema_registry.validate(&env, &mut errors);
        let operations = self
            .operations
            .validate(Some(DEFAULT_LISTEN_ADDR), &mut errors);
        let p = &self.processing;
        if !(1..=100_000).contains(&p.batch_max_records) {
            errors.global(
                "processing.batch_max_records",
                "must be between 1 and 100000",
            );
        }
        if !(1..=60_000).contains(&p.batch_max_wait_ms) {
            errors.global(
                "processing.batch_max_wait_ms",
                "must be between 1 and 60000",
            );
        }
        if p.activity_dedup_capacity == 0 {
            errors.global("processing.activity_dedup_capacity", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&p.max_delete_share) {
            errors.global(
                "processing.max_delete_share",
                "must be between 0 and 1 (1 turns the guard off)",
            );
        }
        let (k, p) = (self.kafka, self.processing);
        let timeout = Duration::from_millis(k.request_timeout_ms);
        let client = ClientSettings::new(k.bootstrap_servers, "pingone-transformer")
            .with_options(k.librdkafka_options)
            .with_timeout(timeout);
        errors.finish(|| {
            Some(Config {
                kafka: KafkaConfig {
                    client,
                    raw_topic: k.raw_topic,
                    topics,
                    output_prefix: k.output_prefix,
                    group_id: k.group_id,
                    transactional_id: format!("{}-{instance_id}", k.transactional_id),
                    instance_id,
                    transaction_timeout: Duration::from_millis(k.transaction_timeout_ms),
                    output_replication_factor: k.output_replication_factor,
                },
                registry: registry?,
                operations,
                processing: ProcessingConfig {
                    batch_max_records: p.batch_max_records,
                    batch_max_wait: Duration::from_millis(p.batch_max_wait_ms),
                    activity_dedup_capacity: p.activity_dedup_capacity,
                    restart_backoff_max: Duration::from_millis(p.restart_backoff_max_ms.max(500)),
                    stop_at_end: p.stop_at_end,
                    max_delete_share: p.max_delete_share,
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "KAFKA_BOOTSTRAP_SERVERS" => Some("127.0.0.1:9092".into()),
            "SCHEMA_REGISTRY_URL" => Some("http://127.0.0.1:8081/apis/ccompat/v7".into()),
            "REGISTRY_PASSWORD" => Some("hunter2".into()),
            _ => None,
        }
    }

    #[test]
    fn defaults_come_with_the_well_known_variables() {
        let c = load_with_env(None, &[], &Flags::default(), env).unwrap();
        assert_eq!(c.kafka.client.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(c.kafka.topics.users, "usage.users.v1");
        assert_eq!(c.kafka.topics.app_usage, "usage.app_usage.v1");
        assert_eq!(c.kafka.raw_topic, "pingone.raw.v1");
        assert_eq!(c.processing.batch_max_records, 5_000);
        assert_eq!(
            c.operations.listen_addr,
            Some(DEFAULT_LISTEN_ADDR.parse().unwrap())
        );
        assert!((c.processing.max_delete_share - 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "[kafka]\noutput_prefix = 'a b'\ninstance_id = 'a/b'\n\
                    transaction_timeout_ms = 10000\nrequest_timeout_ms = 20000\n\
                    [processing]\nbatch_max_records = 0\n\
                    [schema_registry]\nurl = 'localhost:8081'\n";
        let err = parse_with_overrides(text, &[])
            .unwrap()
            .validate(|_| None)
            .unwrap_err()
            .to_string();
        for field in [
            "kafka.bootstrap_servers",
            "kafka.output_prefix",
            "kafka.instance_id",
            "kafka.request_timeout_ms",
            "processing.batch_max_records",
            "schema_registry.url",
        ] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
    }

    #[test]
    fn overrides_reach_every_field_and_flags_win() {
        let c = load_with_env(
            None,
            &vars(&[
                ("TRANSFORMER__PROCESSING__BATCH_MAX_RECORDS", "17"),
                ("TRANSFORMER__KAFKA__OUTPUT_PREFIX", "replay."),
                (
                    "TRANSFORMER__KAFKA__LIBRDKAFKA_OPTIONS__security.protocol",
                    "SSL",
                ),
                ("TRANSFORMER__OPERATIONS__LISTEN_ADDR", "127.0.0.1:0"),
                ("TRANSFORMER__KAFKA__INSTANCE_ID", "pod-3"),
            ]),
            &Flags {
                bootstrap_servers: Some("flag:9092".into()),
                schema_registry_url: None,
            },
            env,
        )
        .unwrap();
        assert_eq!(c.processing.batch_max_records, 17);
        assert_eq!(c.kafka.topics.users, "replay.users.v1");
        assert_eq!(c.kafka.instance_id, "pod-3");
        assert_eq!(c.kafka.transactional_id, "pingone-transformer-pod-3");
        assert_eq!(
            c.kafka.client.librdkafka_options["security.protocol"],
            "SSL"
        );
        assert_eq!(c.kafka.client.bootstrap_servers, "flag:9092");
        assert!(c.operations.listen_addr.is_some());
    }

    #[test]
    fn unknown_keys_are_rejected_and_secrets_hidden() {
        let err = parse_with_overrides("[kafka]\nbootstrap_server = 'x'\n", &[]).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let c = parse_with_overrides(
            "[schema_registry]\nusername = 'u'\npassword_env = 'REGISTRY_PASSWORD'\n",
            &[],
        )
        .unwrap();
        let mut c = c;
        c.kafka.bootstrap_servers = "k:9092".into();
        c.schema_registry.url = "http://r".into();
        let c = c.validate(env).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let auth = c.registry.basic_auth.unwrap();
        assert_eq!(auth.password.expose(), "hunter2");
    }
}
