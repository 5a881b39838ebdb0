//! How every binary loads its configuration: a TOML file, then `<BINARY>__…` environment
//! overrides, then validation that collects every problem before reporting them all at once.
//! Also the sections both binaries share (`[schema_registry]`, `[operations]`) and the
//! redaction of secret-looking librdkafka options.
//!
//! # Overrides
//! `PRODUCER__KAFKA__BOOTSTRAP_SERVERS=k:9092` sets `bootstrap_servers` in `[kafka]`; any depth
//! works (`TRANSFORMER__SCHEMA_REGISTRY__REQUEST_TIMEOUT_MS=5000`). An element of an array of
//! tables is addressed by its id (`PRODUCER__TENANTS__<tenant_id>__REGION=eu`), where the binary
//! names the id key of that array. Values parse as TOML when they can (numbers, booleans,
//! arrays), else as strings; values in free-form maps (`librdkafka_options`) and of
//! secret-looking keys are always taken verbatim as strings, so a password is never reread as a
//! number or unquoted. Section and field names are matched case-insensitively, except the keys
//! of free-form maps, which are taken as written.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::registry::RegistryAuth;
use crate::secret::Secret;

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
    /// The file (with overrides applied) is not valid TOML or does not match the structure.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file, or `(defaults)` when there is none.
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

/// One invalid value: where it is and why.
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

/// Collects every problem found while validating, to report them all at once.
#[derive(Debug, Default)]
pub struct Errors {
    list: Vec<FieldError>,
}

impl Errors {
    /// A problem in a global section.
    pub fn global(&mut self, field: &str, message: impl Into<String>) {
        self.list.push(FieldError {
            tenant: None,
            field: field.into(),
            message: message.into(),
        });
    }

    /// A problem in one tenant's entry.
    pub fn tenant(&mut self, tenant: &str, field: &str, message: impl Into<String>) {
        self.list.push(FieldError {
            tenant: Some(tenant.into()),
            field: field.into(),
            message: message.into(),
        });
    }

    /// How many problems were found so far.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `Ok(value)` when nothing was found, else every problem.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with the problems.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, ConfigError> {
        if !self.list.is_empty() {
            return Err(ConfigError::Invalid(self.list));
        }
        value().ok_or(ConfigError::Invalid(self.list))
    }
}

/// How a binary's file is loaded: its environment prefix and the id keys of its arrays.
#[derive(Debug, Clone, Copy)]
pub struct Layers<'a> {
    /// Prefix of override variables, with the trailing `__` (`PRODUCER__`).
    pub env_prefix: &'a str,
    /// `(array, id key)`: elements of `array` are addressed by the value of `id key`.
    pub array_ids: &'a [(&'a str, &'a str)],
    /// Tables whose keys are free-form (taken as written, not lowercased).
    pub free_form: &'a [&'a str],
}

impl Layers<'_> {
    /// Reads `path` (or starts from an empty table without one), applies the overrides among
    /// `vars` that start with the prefix, and deserializes the result.
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`] or [`ConfigError::Override`].
    pub fn load<T: DeserializeOwned>(
        &self,
        path: Option<&Path>,
        vars: &[(String, String)],
    ) -> Result<T, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        self.parse(path, &text, vars)
    }

    /// [`Layers::load`] on text already read.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Override`].
    pub fn parse<T: DeserializeOwned>(
        &self,
        path: Option<&Path>,
        text: &str,
        vars: &[(String, String)],
    ) -> Result<T, ConfigError> {
        let shown = path.map_or_else(|| PathBuf::from("(defaults)"), Path::to_path_buf);
        let parse_err = |message: String| ConfigError::Parse {
            path: shown.clone(),
            message,
        };
        let mut root: toml::Table = match toml::from_str(text) {
            Ok(root) => root,
            Err(e) => {
                let secrets = secret_values_in_text(text);
                return Err(parse_err(syntax_message(&e, text, &secrets)));
            }
        };
        let file_only = root.clone();
        let mut applied = Vec::new();
        for (var, value) in vars {
            let Some(rest) = var.strip_prefix(self.env_prefix) else {
                continue;
            };
            self.apply(&mut root, rest, value)
                .map_err(|message| ConfigError::Override {
                    var: var.clone(),
                    message,
                })?;
            applied.push((var.as_str(), rest, value.as_str()));
        }
        let mut secrets = Vec::new();
        collect_secret_values(&root, false, &mut secrets);
        let redact = |message: String| redact_values(&message, &secrets);
        let error = match T::deserialize(toml::Value::Table(root.clone())) {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        // The file alone is fine: the first override after which it no longer is gets the blame.
        if !applied.is_empty() && T::deserialize(toml::Value::Table(file_only.clone())).is_ok() {
            let mut partial = file_only;
            for (var, rest, value) in applied {
                if self.apply(&mut partial, rest, value).is_err() {
                    continue;
                }
                if let Err(e) = T::deserialize(toml::Value::Table(partial.clone())) {
                    return Err(ConfigError::Override {
                        var: var.to_owned(),
                        message: redact(self.locate::<T>(&partial, e.to_string())),
                    });
                }
            }
        }
        Err(parse_err(redact(
            self.locate::<T>(&root, error.to_string()),
        )))
    }

    /// Adds to a deserialization error which element of an array of tables it is about (the
    /// parser only says `in tenants`): the first element that fails on its own, named by its id
    /// key and position.
    fn locate<T: DeserializeOwned>(&self, root: &toml::Table, message: String) -> String {
        for (array, id_key) in self.array_ids {
            let Some(toml::Value::Array(list)) = root.get(*array) else {
                continue;
            };
            if list.len() < 2 && !message.contains(&format!("in `{array}`")) {
                continue;
            }
            for (index, element) in list.iter().enumerate() {
                let mut alone = root.clone();
                alone.insert(
                    (*array).to_owned(),
                    toml::Value::Array(vec![element.clone()]),
                );
                let Err(e) = T::deserialize(toml::Value::Table(alone)) else {
                    continue;
                };
                if e.to_string() != message {
                    continue;
                }
                let id = element
                    .get(*id_key)
                    .and_then(toml::Value::as_str)
                    .map_or_else(String::new, |id| format!(" ({id_key} `{id}`)"));
                return format!("{array} entry #{}{id}: {message}", index + 1);
            }
        }
        message
    }

    fn apply(&self, root: &mut toml::Table, path: &str, raw: &str) -> Result<(), String> {
        let parts: Vec<&str> = path.split("__").collect();
        let Some((last, walk)) = parts.split_last() else {
            return Err("empty name".into());
        };
        if last.is_empty() || walk.iter().any(|p| p.is_empty()) {
            return Err(format!("expected {}<SECTION>__<FIELD>", self.env_prefix));
        }
        let mut table = root;
        let mut parent = String::new();
        let mut i = 0;
        while i < walk.len() {
            let name = walk[i].to_ascii_lowercase();
            if let Some((_, id_key)) = self.array_ids.iter().find(|(a, _)| *a == name) {
                let Some(id) = walk.get(i + 1) else {
                    return Err(format!(
                        "`{name}` needs an element id: {name}__<{id_key}>__<FIELD>"
                    ));
                };
                let Some(toml::Value::Array(list)) = table.get_mut(&name) else {
                    return Err(format!("the file has no `{name}` entries"));
                };
                let found = list.iter_mut().find_map(|t| match t {
                    toml::Value::Table(t)
                        if t.get(*id_key)
                            .and_then(|v| v.as_str())
                            .is_some_and(|v| v.eq_ignore_ascii_case(id)) =>
                    {
                        Some(t)
                    }
                    _ => None,
                });
                let Some(entry) = found else {
                    return Err(format!("no `{name}` entry with {id_key} `{id}`"));
                };
                table = entry;
                parent = name;
                i += 2;
                continue;
            }
            let key = if self.free_form.contains(&parent.as_str()) {
                walk[i].to_owned()
            } else {
                name.clone()
            };
            let next = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(next) = next else {
                return Err(format!("`{key}` is not a table"));
            };
            table = next;
            parent = name;
            i += 1;
        }
        let free_form = self.free_form.contains(&parent.as_str());
        let key = if free_form {
            (*last).to_owned()
        } else {
            last.to_ascii_lowercase()
        };
        // Free-form maps hold strings (librdkafka and object-store options), and a secret is
        // whatever its characters are: both are taken verbatim, so a password such as
        // `12345678`, `true` or `"quoted"` reaches the client as written.
        let value = if free_form || is_secret_key(&key) {
            toml::Value::String(raw.to_owned())
        } else {
            parse_override_value(raw)
        };
        table.insert(key, value);
        Ok(())
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

/// The values under secret-looking keys ([`is_secret_key`]) anywhere in `table`, as they may
/// appear in an error message.
fn collect_secret_values(table: &toml::Table, under_secret: bool, out: &mut Vec<String>) {
    for (key, value) in table {
        collect_value(value, under_secret || is_secret_key(key), out);
    }
}

fn collect_value(value: &toml::Value, secret: bool, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => collect_secret_values(t, secret, out),
        toml::Value::Array(list) => {
            for v in list {
                collect_value(v, secret, out);
            }
        }
        toml::Value::String(s) if secret => out.push(s.clone()),
        other if secret => out.push(other.to_string()),
        _ => {}
    }
}

/// The value texts of lines whose key looks secret, for a file that does not parse: the
/// parser's message quotes the line it stopped at.
fn secret_values_in_text(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            if !is_secret_key(key) {
                return None;
            }
            let value = value.trim();
            Some(
                [value.to_owned(), value.trim_matches(['"', '\'']).to_owned()]
                    .into_iter()
                    .filter(|v| !v.is_empty()),
            )
        })
        .flatten()
        .collect()
}

/// A TOML syntax error: the parser's full text (which quotes the offending line) unless the file
/// holds secret-looking keys; then only the position and the message, with secret values hidden.
fn syntax_message(e: &toml::de::Error, text: &str, secrets: &[String]) -> String {
    if secrets.is_empty() {
        return e.to_string();
    }
    let at = e.span().map_or_else(String::new, |span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" at line {line}, column {column}")
    });
    redact_values(
        &format!("TOML parse error{at}: {}", e.message().trim_end()),
        secrets,
    )
}

/// `message` with every occurrence of the given values replaced by `***`, longest first.
fn redact_values(message: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = message.to_owned();
    for s in sorted {
        // A value is quoted by serde as `value` or "value"; a bare replacement catches the rest.
        for quoted in [format!("`{s}`"), format!("\"{s}\""), format!("'{s}'")] {
            out = out.replace(&quoted, "`***`");
        }
        if s.len() >= 3 {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// The process environment as `(name, value)` pairs, for [`Layers::load`].
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// Whether a configuration key names a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `sasl.jaas.config`, …): its value is never printed.
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas"]
        .iter()
        .any(|s| lower.contains(s))
}

/// librdkafka options with the values of secret-looking keys replaced by `***`.
pub fn redacted_options(options: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    options
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_key(k) { "***" } else { v.as_str() };
            (k.as_str(), shown)
        })
        .collect()
}

/// Checks a Kafka topic name (1-249 characters of letters, digits, `.`, `_`, `-`).
pub fn check_topic(errors: &mut Errors, field: &str, topic: &str) {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        errors.global(field, format!("`{topic}` is not a valid topic name"));
    }
}

/// The librdkafka options every binary sets itself; `[kafka].librdkafka_options` may not.
pub const RESERVED_OPTIONS: [&str; 7] = [
    "bootstrap.servers",
    "transactional.id",
    "enable.idempotence",
    "isolation.level",
    "group.id",
    // Offsets are committed inside transactions or tables, never automatically.
    "enable.auto.commit",
    // Matches the topics' `max.message.bytes` (`schemas::topics::MAX_MESSAGE_BYTES`).
    "message.max.bytes",
];

/// Default `[kafka].request_timeout_ms` of every binary: the bound on blocking Kafka calls.
pub const fn default_kafka_request_timeout_ms() -> u64 {
    30_000
}

/// Default replication factor of the topics a binary creates (one broker, as locally).
pub const fn default_replication_factor() -> i32 {
    1
}

/// Where a binary's broker and registry addresses come from, weakest first: the file, else
/// `KAFKA_BOOTSTRAP_SERVERS` and `SCHEMA_REGISTRY_URL` (what `deploy/local/up` exports; `env`
/// looks variables up), then the `--bootstrap-servers` and `--schema-registry-url` flags.
pub fn resolve_addresses(
    bootstrap_servers: &mut String,
    registry_url: &mut String,
    flags: (Option<&String>, Option<&String>),
    env: impl Fn(&str) -> Option<String>,
) {
    if bootstrap_servers.is_empty()
        && let Some(b) = env("KAFKA_BOOTSTRAP_SERVERS")
    {
        *bootstrap_servers = b;
    }
    if registry_url.is_empty()
        && let Some(u) = env("SCHEMA_REGISTRY_URL")
    {
        *registry_url = u;
    }
    if let Some(b) = flags.0 {
        bootstrap_servers.clone_from(b);
    }
    if let Some(u) = flags.1 {
        registry_url.clone_from(u);
    }
}

/// What every `[kafka]` section has, checked the same way for every binary.
#[derive(Debug, Clone, Copy)]
pub struct KafkaBasics<'a> {
    /// `bootstrap_servers`.
    pub bootstrap_servers: &'a str,
    /// `raw_topic`: the contract's raw topic, which both binaries name.
    pub raw_topic: &'a str,
    /// `request_timeout_ms`: the bound on blocking calls.
    pub request_timeout_ms: u64,
    /// `transaction_timeout_ms`.
    pub transaction_timeout_ms: u64,
    /// `librdkafka_options`.
    pub librdkafka_options: &'a BTreeMap<String, String>,
}

impl KafkaBasics<'_> {
    /// Notes every problem in `errors`, with `kafka.` field names.
    pub fn check(&self, errors: &mut Errors) {
        if self.bootstrap_servers.trim().is_empty() {
            errors.global("kafka.bootstrap_servers", "must not be empty");
        }
        check_topic(errors, "kafka.raw_topic", self.raw_topic);
        if self.request_timeout_ms < 100 {
            errors.global("kafka.request_timeout_ms", "must be at least 100");
        }
        if !(1_000..=900_000).contains(&self.transaction_timeout_ms) {
            errors.global(
                "kafka.transaction_timeout_ms",
                "must be between 1000 and 900000",
            );
        } else if self.request_timeout_ms > self.transaction_timeout_ms + 100 {
            // librdkafka refuses a transactional producer whose socket timeout (ours: the
            // request timeout) exceeds the transaction timeout by more than 100 ms.
            errors.global(
                "kafka.request_timeout_ms",
                "must be at most transaction_timeout_ms + 100",
            );
        }
        check_librdkafka_options(errors, self.librdkafka_options);
    }
}

/// Refuses the [`RESERVED_OPTIONS`], then asks librdkafka whether it takes each of `options` (a
/// known key, a valid value, a feature this build has: `sasl.oauthbearer.method = "oidc"` needs
/// libcurl), without creating a client, so that a typo fails `validate-config` instead of the
/// first connection. A secret's value is
/// never echoed: librdkafka's message quotes values, so for those only the key is named.
pub fn check_librdkafka_options(errors: &mut Errors, options: &BTreeMap<String, String>) {
    for key in RESERVED_OPTIONS {
        if options.contains_key(key) {
            errors.global(
                &format!("kafka.librdkafka_options.{key}"),
                "is set by the binary and may not be overridden",
            );
        }
    }
    for (key, value) in options {
        let mut one = rdkafka::ClientConfig::new();
        one.set(key, value);
        if let Err(e) = one.create_native_config() {
            let field = format!("kafka.librdkafka_options.{key}");
            // Only librdkafka's description: the error's own text appends the value, which
            // may be a secret under a misspelt key.
            match e {
                rdkafka::error::KafkaError::ClientConfig(_, description, _, _)
                    if !is_secret_key(key) =>
                {
                    errors.global(
                        &field,
                        format!("librdkafka does not take it: {description}"),
                    );
                }
                _ => errors.global(&field, "librdkafka does not take this option or its value"),
            }
        }
    }
}

/// Parses an http(s) base URL without query or fragment (trailing `/` dropped).
///
/// # Errors
/// What is wrong with it.
pub fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim_end_matches('/')).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", url.scheme()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(url)
}

/// `[schema_registry]`, as both binaries write it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Base URL of the Confluent-compatible API, e.g. `http://127.0.0.1:8081/apis/ccompat/v7`.
    #[serde(default)]
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
    /// A PEM file of the CA certificates that sign an `https` registry's certificate, trusted
    /// besides the system's (a private CA); absent: the system's only.
    #[serde(default)]
    pub ca_location: Option<String>,
}

const fn default_registry_timeout_ms() -> u64 {
    10_000
}

impl Default for RegistryFile {
    fn default() -> Self {
        Self {
            url: String::new(),
            username: None,
            password_env: None,
            request_timeout_ms: default_registry_timeout_ms(),
            ca_location: None,
        }
    }
}

/// Validated `[schema_registry]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Base URL of the Confluent-compatible API (no trailing slash).
    pub url: Url,
    /// Basic auth, if any.
    pub basic_auth: Option<RegistryAuth>,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// The PEM certificates of `ca_location`, trusted besides the system's.
    pub ca_pem: Option<Vec<u8>>,
}

impl RegistrySettings {
    /// A client of this registry.
    ///
    /// # Errors
    /// When the HTTP client cannot be built, or `ca_pem` is not PEM (validation checks it).
    pub fn client(&self) -> Result<crate::registry::Registry, crate::registry::RegistryError> {
        let roots = match self.ca_pem.as_deref() {
            None => Vec::new(),
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                crate::registry::RegistryError::Unavailable {
                    url: self.url.to_string(),
                    reason: format!(
                        "the CA certificates of schema_registry.ca_location: {}",
                        crate::error_text(&e)
                    ),
                }
            })?,
        };
        crate::registry::Registry::with_roots(
            self.url.as_str(),
            self.basic_auth.clone(),
            self.request_timeout,
            roots,
        )
    }
}

/// The PEM certificates in the file at `path`, or what is wrong with it.
fn read_ca_file(path: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certificates) if !certificates.is_empty() => Ok(pem),
        Ok(_) => Err(format!("`{path}` holds no PEM certificate")),
        Err(e) => Err(format!(
            "`{path}` is not a PEM certificate bundle: {}",
            crate::error_text(&e)
        )),
    }
}

impl RegistryFile {
    /// Checks the section and reads the password from the environment (`env` looks variables
    /// up). `None` when something is wrong (and noted in `errors`).
    pub fn validate(
        &self,
        env: &impl Fn(&str) -> Option<String>,
        errors: &mut Errors,
    ) -> Option<RegistrySettings> {
        let url = match parse_base_url(&self.url) {
            Ok(u) => Some(u),
            Err(m) => {
                errors.global("schema_registry.url", m);
                None
            }
        };
        let basic_auth = match (&self.username, &self.password_env) {
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
        if self.request_timeout_ms < 100 {
            errors.global("schema_registry.request_timeout_ms", "must be at least 100");
        }
        let ca_pem = match self.ca_location.as_deref() {
            None => None,
            Some(path) => match read_ca_file(path) {
                Ok(pem) => Some(pem),
                Err(m) => {
                    errors.global("schema_registry.ca_location", m);
                    return None;
                }
            },
        };
        Some(RegistrySettings {
            url: url?,
            basic_auth,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            ca_pem,
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[operations]`, as both binaries write it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationsFile {
    /// Address of the `/metrics`, `/healthz`, `/readyz` listener; an empty string disables it;
    /// absent: the binary's default.
    #[serde(default)]
    pub listen_addr: Option<String>,
    /// `text` or `json` (default `text`).
    #[serde(default)]
    pub log_format: Option<String>,
    /// How long a shutdown may take before the process exits anyway (default 15 s).
    #[serde(default)]
    pub shutdown_deadline_ms: Option<u64>,
}

/// Validated `[operations]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationsSettings {
    /// Listener of `/metrics`, `/healthz`, `/readyz`; `None` disables it.
    pub listen_addr: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// Shutdown deadline.
    pub shutdown_deadline: Duration,
}

impl OperationsFile {
    /// Checks the section; `default_listen` is the binary's default address (`None`: off).
    pub fn validate(
        &self,
        default_listen: Option<&str>,
        errors: &mut Errors,
    ) -> OperationsSettings {
        let raw = self.listen_addr.as_deref().or(default_listen).unwrap_or("");
        let listen_addr = if raw.is_empty() {
            None
        } else {
            match raw.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    errors.global(
                        "operations.listen_addr",
                        format!("`{raw}` is not an address like 127.0.0.1:9464"),
                    );
                    None
                }
            }
        };
        let log_format = match self.log_format.as_deref().unwrap_or("text") {
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
        OperationsSettings {
            listen_addr,
            log_format,
            shutdown_deadline: Duration::from_millis(self.shutdown_deadline_ms.unwrap_or(15_000)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        #[serde(default)]
        kafka: BTreeMap<String, toml::Value>,
        #[serde(default)]
        tenants: Vec<BTreeMap<String, toml::Value>>,
    }

    const LAYERS: Layers<'static> = Layers {
        env_prefix: "TEST__",
        array_ids: &[("tenants", "tenant_id")],
        free_form: &["librdkafka_options"],
    };

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn overrides_reach_any_depth_and_array_elements_by_id() {
        let text =
            "[kafka]\nbootstrap_servers = 'a:1'\n[[tenants]]\ntenant_id = 'Acme'\nregion = 'com'\n";
        let file: File = LAYERS
            .parse(
                None,
                text,
                &vars(&[
                    ("TEST__KAFKA__BOOTSTRAP_SERVERS", "b:2"),
                    ("TEST__KAFKA__LIBRDKAFKA_OPTIONS__sasl.mechanism", "PLAIN"),
                    ("TEST__TENANTS__acme__REGION", "eu"),
                    ("TEST__TENANTS__acme__PAGE_SIZE", "100"),
                    ("OTHER__KAFKA__X", "ignored"),
                ]),
            )
            .unwrap();
        assert_eq!(file.kafka["bootstrap_servers"].as_str(), Some("b:2"));
        let options = file.kafka["librdkafka_options"].as_table().unwrap();
        assert_eq!(options["sasl.mechanism"].as_str(), Some("PLAIN"));
        assert_eq!(file.tenants[0]["region"].as_str(), Some("eu"));
        assert_eq!(file.tenants[0]["page_size"].as_integer(), Some(100));
    }

    #[test]
    fn a_bad_override_names_the_variable() {
        let err = LAYERS
            .parse::<File>(None, "", &vars(&[("TEST__TENANTS__nobody__REGION", "eu")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("TEST__TENANTS__nobody__REGION"),
            "{err}"
        );
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Typed {
        kafka: TypedKafka,
        #[serde(default)]
        tenants: Vec<TypedTenant>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TypedKafka {
        bootstrap_servers: String,
        #[serde(default)]
        librdkafka_options: BTreeMap<String, String>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TypedTenant {
        tenant_id: String,
        #[serde(default)]
        region: Option<String>,
    }

    const TYPED: &str = "[kafka]\nbootstrap_servers = 'a:1'\n[[tenants]]\ntenant_id = 'alpha'\n[[tenants]]\ntenant_id = 'beta'\nregion = 'eu'\n";

    fn both(err: &ConfigError) -> String {
        format!("{err} {err:?}")
    }

    #[test]
    fn secret_values_never_appear_in_config_errors() {
        let path = Path::new("p.toml");
        // A value of the wrong type in the file.
        let text = "[kafka]\nbootstrap_servers = 'a:1'\n[kafka.librdkafka_options]\n\"sasl.password\" = 12345678\n";
        let err = LAYERS.parse::<Typed>(Some(path), text, &[]).unwrap_err();
        assert!(!both(&err).contains("12345678"), "{}", both(&err));
        assert!(err.to_string().contains("sasl.password"), "{err}");
        // A file that does not parse, stopping on the secret's line.
        let text = "[kafka]\nbootstrap_servers = 'a:1'\n[kafka.librdkafka_options]\n\"sasl.password\" = \"hunter2\n";
        let err = LAYERS.parse::<Typed>(Some(path), text, &[]).unwrap_err();
        assert!(!both(&err).contains("hunter2"), "{}", both(&err));
        assert!(err.to_string().contains("line 4"), "{err}");
        // An environment override of a string map or a secret is taken verbatim, whatever it
        // looks like in TOML.
        for password in ["98765432", "true", "1e5", "inf", "\"quoted\"", "[a]"] {
            let typed = LAYERS
                .parse::<Typed>(
                    Some(path),
                    "[kafka]\nbootstrap_servers = 'a:1'\n",
                    &vars(&[
                        ("TEST__KAFKA__LIBRDKAFKA_OPTIONS__sasl.password", password),
                        ("TEST__KAFKA__LIBRDKAFKA_OPTIONS__linger.ms", "5"),
                    ]),
                )
                .unwrap_or_else(|e| panic!("{password}: {e}"));
            assert_eq!(typed.kafka.librdkafka_options["sasl.password"], password);
            assert_eq!(typed.kafka.librdkafka_options["linger.ms"], "5");
        }
        // Values of other keys are still shown.
        let err = LAYERS
            .parse::<Typed>(Some(path), "[kafka]\nbootstrap_servers = 4242\n", &[])
            .unwrap_err();
        assert!(err.to_string().contains("4242"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_an_array_element_names_the_element() {
        let text = TYPED.replace("region = 'eu'", "region = 'eu'\ncolour = 1");
        let err = LAYERS
            .parse::<Typed>(Some(Path::new("p.toml")), &text, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(
            err.contains("#2") && err.contains("tenant_id `beta`"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_from_an_override_names_the_variable_not_the_file() {
        let err = LAYERS
            .parse::<Typed>(
                Some(Path::new("p.toml")),
                TYPED,
                &vars(&[
                    ("TEST__TENANTS__alpha__REGION", "eu"),
                    ("TEST__TENANTS__beta__COLOUR", "red"),
                ]),
            )
            .unwrap_err();
        assert!(matches!(err, ConfigError::Override { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("TEST__TENANTS__beta__COLOUR"), "{text}");
        assert!(text.contains("colour"), "{text}");
        assert!(!text.contains("p.toml"), "{text}");
    }

    #[test]
    fn secret_options_are_redacted() {
        let options: BTreeMap<String, String> = [
            ("sasl.password", "hunter2"),
            ("sasl.jaas.config", "x"),
            ("security.protocol", "SASL_SSL"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let shown = format!("{:?}", redacted_options(&options));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("SASL_SSL"), "{shown}");
    }

    #[test]
    fn librdkafka_refuses_unknown_options_and_bad_values_without_echoing_secrets() {
        let options: BTreeMap<String, String> = [
            ("sasl.mechanismz", "SCRAM-SHA-512"),
            ("security.protocol", "SASL_TLS"),
            ("ssl.key.password", "hunter2"),
            // Accepted: this build has SSL, SASL SCRAM and OIDC token requests (libcurl).
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.oauthbearer.method", "oidc"),
            ("ssl.ca.location", "/etc/kafka/ca.crt"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut errors = Errors::default();
        check_librdkafka_options(&mut errors, &options);
        let err = errors.finish(|| Some(())).unwrap_err().to_string();
        assert!(
            err.contains("kafka.librdkafka_options.sasl.mechanismz"),
            "{err}"
        );
        assert!(
            err.contains("kafka.librdkafka_options.security.protocol"),
            "{err}"
        );
        for accepted in [
            "sasl.mechanisms",
            "sasl.oauthbearer.method",
            "ssl.ca.location",
        ] {
            assert!(!err.contains(&format!("options.{accepted}")), "{err}");
        }
        // A misspelt secret key: named, its value never shown.
        let mut errors = Errors::default();
        let secret: BTreeMap<String, String> =
            [("sasl.passwrod".to_owned(), "hunter2".to_owned())].into();
        check_librdkafka_options(&mut errors, &secret);
        let err = errors.finish(|| Some(())).unwrap_err().to_string();
        assert!(
            err.contains("kafka.librdkafka_options.sasl.passwrod"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn errors_are_collected() {
        let mut errors = Errors::default();
        check_topic(&mut errors, "kafka.raw_topic", "bad topic");
        let registry = RegistryFile {
            url: "ftp://x".into(),
            ..RegistryFile::default()
        };
        assert!(registry.validate(&|_| None, &mut errors).is_none());
        let ops = OperationsFile {
            log_format: Some("xml".into()),
            ..OperationsFile::default()
        };
        ops.validate(Some("127.0.0.1:1"), &mut errors);
        let err = errors.finish(|| Some(())).unwrap_err().to_string();
        for field in [
            "kafka.raw_topic",
            "schema_registry.url",
            "operations.log_format",
        ] {
            assert!(err.contains(field), "{err}");
        }
    }
}
