//! The lake sink's configuration: a TOML file (optional: every field has a default but the
//! broker and registry addresses), `LAKE_SINK__…` environment overrides, and validation into
//! typed values that reports every problem at once. Same loading as the producer's and the
//! transformer's (`pipeline_io::config`); the fields are documented in the sink's README.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pipeline_io::config::{
    Errors, Layers, OperationsFile, OperationsSettings, RegistryFile, RegistrySettings,
    check_librdkafka_options, check_topic,
};
use pipeline_io::kafka::ClientSettings;
use schemas::topics::OutputTopics;
use serde::Deserialize;
use url::Url;

pub use pipeline_io::config::{ConfigError, LogFormat};

/// Prefix of environment variables that override file values.
pub const ENV_PREFIX: &str = "LAKE_SINK__";

/// The default `operations.listen_addr`: beside the producer's 9464 and the transformer's 9465.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:9466";

const LAYERS: Layers<'static> = Layers {
    env_prefix: ENV_PREFIX,
    array_ids: &[],
    free_form: &["librdkafka_options", "storage_options"],
};

/// The configuration file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Kafka connection, topics and group.
    #[serde(default)]
    pub kafka: KafkaFile,
    /// Schema registry.
    #[serde(default)]
    pub schema_registry: RegistryFile,
    /// Where the tables are and how often they are written.
    #[serde(default)]
    pub lake: LakeFile,
    /// Logs, metrics and shutdown.
    #[serde(default)]
    pub operations: OperationsFile,
}

/// `[kafka]`. A missing field takes its value from [`KafkaFile::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaFile {
    /// Comma-separated `host:port` list (default: `KAFKA_BOOTSTRAP_SERVERS`).
    pub bootstrap_servers: String,
    /// Prefix of the normalized topics read: `<prefix>users.v1`, `<prefix>applications.v1`,
    /// `<prefix>app_usage.v1`.
    pub output_prefix: String,
    /// Consumer group of the sink's instances. Its committed offsets only speed up a restart:
    /// where each partition resumes is the table's own record.
    pub group_id: String,
    /// Bound on every blocking Kafka call.
    pub request_timeout_ms: u64,
    /// Extra librdkafka settings (security settings); values of keys naming a password or
    /// secret are redacted in any output.
    pub librdkafka_options: BTreeMap<String, String>,
}

impl Default for KafkaFile {
    fn default() -> Self {
        Self {
            bootstrap_servers: String::new(),
            output_prefix: schemas::topics::OUTPUT_PREFIX.into(),
            group_id: "usage-lake-sink".into(),
            request_timeout_ms: pipeline_io::config::default_kafka_request_timeout_ms(),
            librdkafka_options: BTreeMap::new(),
        }
    }
}

/// `[lake]`. A missing field takes its value from [`LakeFile::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeFile {
    /// Where the tables live: a local directory, or an `s3://`, `gs://` or `az://` URL. The
    /// tables are `<location>/users`, `<location>/applications` and `<location>/app_usage`.
    pub location: String,
    /// Options of the object store (`aws_region`, `google_service_account`, ...); credentials
    /// otherwise come from the environment as each cloud's SDKs read them.
    pub storage_options: BTreeMap<String, String>,
    /// Prefix of the Delta `txn` application ids, `<app_id>-<topic>-<partition>`: two sinks
    /// writing one table must share it.
    pub app_id: String,
    /// A table is committed once this many rows are buffered for it...
    pub flush_max_rows: usize,
    /// ...or this many bytes of record keys and values (the default, 128 MiB, leaves the
    /// row count to decide for records under about 670 bytes and bounds the window's memory for
    /// larger ones)...
    pub flush_max_bytes: usize,
    /// ...or its oldest buffered row is this old.
    pub flush_interval_ms: u64,
    /// Stop once every assigned partition's end is committed to the tables (demos, tests and
    /// batch runs; `lake-sink run --until-caught-up` sets it).
    pub stop_at_end: bool,
}

impl Default for LakeFile {
    fn default() -> Self {
        Self {
            location: "lake".into(),
            storage_options: BTreeMap::new(),
            app_id: "lake-sink".into(),
            flush_max_rows: 200_000,
            flush_max_bytes: 128 * 1024 * 1024,
            flush_interval_ms: 30_000,
            stop_at_end: false,
        }
    }
}

/// The validated configuration the sink runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// Schema registry settings.
    pub registry: RegistrySettings,
    /// The tables and the flush policy.
    pub lake: LakeConfig,
    /// Logs, metrics, shutdown.
    pub operations: OperationsSettings,
}

/// Validated `[kafka]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Brokers, extra librdkafka options, the bound on blocking calls.
    pub client: ClientSettings,
    /// The normalized topics.
    pub topics: OutputTopics,
    /// The consumer group.
    pub group_id: String,
}

/// Validated `[lake]`.
#[derive(Clone, PartialEq, Eq)]
pub struct LakeConfig {
    /// The tables' parent location, as a URL ending in `/`.
    pub location: Url,
    /// Object store options.
    pub storage_options: BTreeMap<String, String>,
    /// Prefix of the `txn` application ids.
    pub app_id: String,
    /// Rows that trigger a commit.
    pub flush_max_rows: usize,
    /// Value bytes that trigger a commit.
    pub flush_max_bytes: usize,
    /// Age of the oldest buffered row that triggers a commit.
    pub flush_interval: Duration,
    /// Stop once caught up.
    pub stop_at_end: bool,
}

impl std::fmt::Debug for LakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeConfig")
            .field("location", &self.location.as_str())
            .field(
                "storage_options",
                &pipeline_io::config::redacted_options(&self.storage_options),
            )
            .field("app_id", &self.app_id)
            .field("flush_max_rows", &self.flush_max_rows)
            .field("flush_max_bytes", &self.flush_max_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("stop_at_end", &self.stop_at_end)
            .finish()
    }
}

impl LakeConfig {
    /// The URL of one table under the location.
    pub fn table_url(&self, table: &str) -> Url {
        // The location ends in '/', so joining keeps its path.
        self.location
            .join(&format!("{table}/"))
            .unwrap_or_else(|_| self.location.clone())
    }
}

/// Values given on the command line, stronger than the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--bootstrap-servers`.
    pub bootstrap_servers: Option<String>,
    /// `--schema-registry-url`.
    pub schema_registry_url: Option<String>,
    /// `--location`.
    pub location: Option<String>,
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
    if let Some(l) = &flags.location {
        file.lake.location.clone_from(l);
    }
    file.validate(env)
}

/// Only `[lake]`, for what needs nothing else (`lake-sink maintain`): no broker or registry
/// address is required.
///
/// # Errors
/// As [`load`], for `[lake]`.
pub fn load_lake(path: Option<&Path>, flags: &Flags) -> Result<LakeConfig, ConfigError> {
    let mut file: FileConfig = LAYERS.load(path, &pipeline_io::config::process_env())?;
    if let Some(l) = &flags.location {
        file.lake.location.clone_from(l);
    }
    let mut errors = Errors::default();
    let lake = file.lake.validate(&mut errors);
    errors.finish(|| lake)
}

/// Parses TOML text with `LAKE_SINK__…` overrides (for tests).
///
/// # Errors
/// [`ConfigError::Parse`] or [`ConfigError::Override`].
pub fn parse_with_overrides(
    text: &str,
    vars: &[(String, String)],
) -> Result<FileConfig, ConfigError> {
    LAYERS.parse(None, text, vars)
}

/// The URL schemes a location may have: the local file system and the three clouds whose
/// `object_store` clients the sink registers ([`crate::storage`]).
pub const SCHEMES: &[&str] = &["file", "s3", "s3a", "gs", "az", "abfs", "abfss"];

/// A location as a URL ending in `/`: a URL with a known scheme, or a local path (relative
/// to the working directory).
fn parse_location(raw: &str) -> Result<Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    let mut url = match Url::parse(raw) {
        Ok(url) if url.scheme().len() > 1 => {
            if !SCHEMES.contains(&url.scheme()) {
                return Err(format!(
                    "scheme `{}` is not one of {}",
                    url.scheme(),
                    SCHEMES.join(", ")
                ));
            }
            url
        }
        // No scheme (or a Windows drive letter): a local path.
        _ => {
            let path = std::path::absolute(raw).map_err(|e| format!("not a usable path ({e})"))?;
            Url::from_directory_path(&path)
                .map_err(|()| format!("`{}` is not an absolute path", path.display()))?
        }
    };
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

impl LakeFile {
    /// Checks `[lake]`, noting problems in `errors`; `None` when it is invalid.
    pub fn validate(self, errors: &mut Errors) -> Option<LakeConfig> {
        let l = &self;
        let location = match parse_location(&l.location) {
            Ok(url) => Some(url),
            Err(e) => {
                errors.global("lake.location", e);
                None
            }
        };
        if l.app_id.is_empty()
            || !l
                .app_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            errors.global(
                "lake.app_id",
                "must be letters, digits, '.', '_' or '-', and not empty",
            );
        }
        if !(1..=10_000_000).contains(&l.flush_max_rows) {
            errors.global("lake.flush_max_rows", "must be between 1 and 10000000");
        }
        if !(1024..=1024 * 1024 * 1024).contains(&l.flush_max_bytes) {
            errors.global("lake.flush_max_bytes", "must be between 1 KiB and 1 GiB");
        }
        if !(10..=3_600_000).contains(&l.flush_interval_ms) {
            errors.global(
                "lake.flush_interval_ms",
                "must be between 10 and 3600000 (one hour)",
            );
        }
        Some(LakeConfig {
            location: location?,
            storage_options: self.storage_options,
            app_id: self.app_id,
            flush_max_rows: self.flush_max_rows,
            flush_max_bytes: self.flush_max_bytes,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            stop_at_end: self.stop_at_end,
        })
    }
}

impl FileConfig {
    /// Checks every value and reads secrets from the environment (`env` looks variables up).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem.
    pub fn validate(self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut errors = Errors::default();
        let k = &self.kafka;
        if k.bootstrap_servers.trim().is_empty() {
            errors.global("kafka.bootstrap_servers", "must not be empty");
        }
        if !k.output_prefix.is_empty() {
            check_topic(&mut errors, "kafka.output_prefix", &k.output_prefix);
        }
        if k.group_id.is_empty() {
            errors.global("kafka.group_id", "must not be empty");
        }
        if k.request_timeout_ms < 100 {
            errors.global("kafka.request_timeout_ms", "must be at least 100");
        }
        check_librdkafka_options(&mut errors, &k.librdkafka_options);
        let lake = self.lake.validate(&mut errors);
        let registry = self.schema_registry.validate(&env, &mut errors);
        let operations = self
            .operations
            .validate(Some(DEFAULT_LISTEN_ADDR), &mut errors);
        let k = self.kafka;
        let client = ClientSettings::new(k.bootstrap_servers, "usage-lake-sink")
            .with_options(k.librdkafka_options)
            .with_timeout(Duration::from_millis(k.request_timeout_ms));
        errors.finish(|| {
            Some(Config {
                kafka: KafkaConfig {
                    client,
                    topics: OutputTopics::new(&k.output_prefix),
                    group_id: k.group_id,
                },
                registry: registry?,
                lake: lake?,
                operations,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KAFKA_BOOTSTRAP_SERVERS" => Some("127.0.0.1:9092".into()),
            "SCHEMA_REGISTRY_URL" => Some("http://127.0.0.1:8081/apis/ccompat/v7".into()),
            _ => None,
        }
    }

    #[test]
    fn defaults_write_under_a_local_directory() {
        let c = load_with_env(None, &[], &Flags::default(), env).unwrap();
        assert_eq!(c.kafka.topics.users, "usage.users.v1");
        assert_eq!(c.kafka.group_id, "usage-lake-sink");
        assert_eq!(c.lake.location.scheme(), "file");
        assert!(c.lake.location.path().ends_with("/lake/"));
        assert!(c.lake.table_url("users").path().ends_with("/lake/users/"));
        assert_eq!(c.lake.flush_interval, Duration::from_secs(30));
    }

    #[test]
    fn cloud_urls_pass_and_unknown_schemes_and_bad_values_are_all_reported() {
        let vars = [
            ("LAKE_SINK__LAKE__LOCATION", "s3://bucket/usage"),
            (
                "LAKE_SINK__LAKE__STORAGE_OPTIONS__aws_secret_access_key",
                "hunter2",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = load_with_env(None, &vars, &Flags::default(), env).unwrap();
        assert_eq!(
            c.lake.table_url("users").as_str(),
            "s3://bucket/usage/users/"
        );
        assert!(!format!("{c:?}").contains("hunter2"));

        let text = "[lake]\nlocation = 'ftp://x/y'\nflush_max_rows = 0\napp_id = 'a b'\n\
                    flush_interval_ms = 1\n[kafka]\ngroup_id = ''\n";
        let err = parse_with_overrides(text, &[])
            .unwrap()
            .validate(|_| None)
            .unwrap_err()
            .to_string();
        for field in [
            "kafka.bootstrap_servers",
            "kafka.group_id",
            "lake.location",
            "lake.flush_max_rows",
            "lake.app_id",
            "lake.flush_interval_ms",
            "schema_registry.url",
        ] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
    }
}
