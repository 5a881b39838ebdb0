//! Shared harness of every integration test: where the broker and registry are, and random names.
//!
//! # Layout
//! - [`infra`] / [`kafka_bootstrap`] / [`schema_registry_url`]: the addresses of a real Kafka
//!   broker and a Confluent-compatible schema registry. They come from `KAFKA_BOOTSTRAP_SERVERS`
//!   and `SCHEMA_REGISTRY_URL` (set by `eval "$(deploy/local/up)"` or `deploy/local/test`). When
//!   both are unset and a Docker engine answers (feature `docker`, opt-in with
//!   `--features test-harness/docker`), containers are started once per test process. Otherwise
//!   the calling test panics with a message naming the command to run: a test never skips
//!   silently.
//! - [`unique_name`]: random topic, group and subject names, so tests run in parallel and again.
//! - [`kafka`]: client settings with bounded timeouts, topic creation, and [`kafka::consume_all`]
//!   which reads a topic with `read_committed` up to its end.
//! - [`registry`]: small calls on the registry's Confluent-compatible API.
//! - [`ops`]: probing a binary's `/healthz` and `/readyz`, and a broker that never answers.
//!
//! Every client setting here bounds its timeouts, so a stopped broker makes tests fail with an
//! error instead of hanging.

#[cfg(feature = "docker")]
mod docker;
pub mod kafka;
pub mod ops;
pub mod registry;

use std::sync::OnceLock;

pub use kafka::{ConsumedRecord, TopicOptions, consume_all, create_topic};

/// Environment variable holding the broker's bootstrap servers (`host:port[,host:port]`).
pub const KAFKA_BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";
/// Environment variable holding the registry's Confluent-compatible base URL
/// (for Apicurio: `http://host:port/apis/ccompat/v7`).
pub const SCHEMA_REGISTRY_ENV: &str = "SCHEMA_REGISTRY_URL";

/// What a test is told when no broker or registry can be had.
pub const MISSING_INFRA_MESSAGE: &str = "KAFKA_BOOTSTRAP_SERVERS is not set: start Kafka and the registry with `eval \"$(deploy/local/up)\"`, or run deploy/local/test";

/// Addresses of the real infrastructure the integration tests run against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Infra {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// Base URL of the Confluent-compatible registry API, without a trailing slash.
    pub schema_registry_url: String,
    /// Where the addresses came from.
    pub source: InfraSource,
}

/// Where [`Infra`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfraSource {
    /// `KAFKA_BOOTSTRAP_SERVERS` and `SCHEMA_REGISTRY_URL`.
    Environment,
    /// Containers started by this test process through testcontainers.
    Containers,
}

/// Why [`Infra`] could not be resolved (see [`try_infra`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum InfraError {
    /// Neither the environment nor a Docker engine provides the infrastructure.
    #[error("{MISSING_INFRA_MESSAGE}")]
    Missing,
    /// Only one of the two variables is set.
    #[error(
        "{set} is set but {unset} is not: both come from `eval \"$(deploy/local/up)\"` (or run deploy/local/test)"
    )]
    Partial {
        /// The variable that is set.
        set: &'static str,
        /// The variable that is missing.
        unset: &'static str,
    },
    /// A Docker engine answered but the containers did not start.
    #[error("starting containers through docker failed: {0}")]
    Containers(String),
}

static INFRA: OnceLock<Result<Infra, InfraError>> = OnceLock::new();

/// Resolves the infrastructure once per process (see the crate docs).
///
/// # Errors
/// [`InfraError::Missing`] when neither the environment nor Docker provide it, and the other
/// variants as documented there.
pub fn try_infra() -> Result<&'static Infra, InfraError> {
    INFRA.get_or_init(resolve).as_ref().map_err(Clone::clone)
}

/// The infrastructure for this test process.
///
/// # Panics
/// When it cannot be had, with a message naming the command to run: an integration test without
/// a broker fails, it never passes or skips silently.
#[allow(clippy::panic)]
pub fn infra() -> &'static Infra {
    match try_infra() {
        Ok(infra) => infra,
        Err(error) => panic!("{error}"),
    }
}

/// Kafka bootstrap servers for this test process (see [`infra`], which can panic).
pub fn kafka_bootstrap() -> String {
    infra().bootstrap_servers.clone()
}

/// Base URL of the Confluent-compatible registry API for this test process (see [`infra`]).
pub fn schema_registry_url() -> String {
    infra().schema_registry_url.clone()
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

fn resolve() -> Result<Infra, InfraError> {
    let bootstrap = non_empty_env(KAFKA_BOOTSTRAP_ENV);
    let registry = non_empty_env(SCHEMA_REGISTRY_ENV);
    match (bootstrap, registry) {
        (Some(bootstrap_servers), Some(registry)) => Ok(Infra {
            bootstrap_servers,
            schema_registry_url: registry.trim_end_matches('/').to_owned(),
            source: InfraSource::Environment,
        }),
        (Some(_), None) => Err(InfraError::Partial {
            set: KAFKA_BOOTSTRAP_ENV,
            unset: SCHEMA_REGISTRY_ENV,
        }),
        (None, Some(_)) => Err(InfraError::Partial {
            set: SCHEMA_REGISTRY_ENV,
            unset: KAFKA_BOOTSTRAP_ENV,
        }),
        (None, None) => from_docker(),
    }
}

#[cfg(feature = "docker")]
fn from_docker() -> Result<Infra, InfraError> {
    if !docker::engine_answers() {
        return Err(InfraError::Missing);
    }
    docker::start().map_err(InfraError::Containers)
}

#[cfg(not(feature = "docker"))]
fn from_docker() -> Result<Infra, InfraError> {
    Err(InfraError::Missing)
}

/// A name unique to this call: `<prefix>-<millis since epoch>-<16 random hex digits>`.
///
/// Use it for topics, consumer groups, transactional ids and registry subjects, so tests can
/// run in parallel and again on the same broker. Only characters Kafka accepts in topic names
/// are added; the prefix should use `[a-zA-Z0-9._-]`.
pub fn unique_name(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or_default();
    format!("{prefix}-{millis}-{:016x}", rand::random::<u64>())
}

/// The last `lines` lines of the log file at `path`: what a failure message shows of a spawned
/// binary's story (a whole log can fill a CI page and push the failure off it).
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Progress of a slow wait: a count that should keep growing (records on a topic). A wait built
/// on it fails when the count has not grown for `stall` (the binary under test is stuck), or
/// after four times `stall` in all; a busy machine only makes it slower.
#[derive(Debug)]
pub struct Stall {
    stall: std::time::Duration,
    started: std::time::Instant,
    last_progress: std::time::Instant,
    seen: usize,
}

impl Stall {
    /// Starts watching now.
    pub fn new(stall: std::time::Duration) -> Self {
        let now = std::time::Instant::now();
        Self {
            stall,
            started: now,
            last_progress: now,
            seen: 0,
        }
    }

    /// Records the latest count; `Err` describes the stall once a limit is passed.
    ///
    /// # Errors
    /// No growth for `stall`, or `4 × stall` in all.
    pub fn observe(&mut self, count: usize) -> Result<(), String> {
        if count > self.seen {
            (self.seen, self.last_progress) = (count, std::time::Instant::now());
        }
        let (quiet, total) = (self.last_progress.elapsed(), self.started.elapsed());
        if quiet < self.stall && total < 4 * self.stall {
            Ok(())
        } else {
            Err(format!(
                "{} seen, the last new one {quiet:?} ago, {total:?} in all (limits {:?} without \
                 progress, {:?} in all)",
                self.seen,
                self.stall,
                4 * self.stall
            ))
        }
    }
}

/// Installs a `tracing` subscriber that writes through the test harness's captured output,
/// filtered by `RUST_LOG` (default `info`). Safe to call from every test.
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Another subscriber may already be installed by the test itself: keep that one.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_fails_only_without_progress() {
        // A 500 ms stall. Growing for 800 ms (longer than the stall) is fine; 600 ms without growth
        // is not, while the total (about 1.4 s) stays under its 2 s limit.
        let mut s = Stall::new(std::time::Duration::from_millis(500));
        for count in 1..=8 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(s.observe(count).is_ok(), "growing count {count}");
        }
        std::thread::sleep(std::time::Duration::from_millis(600));
        let e = s.observe(8).unwrap_err();
        assert!(e.starts_with("8 seen"), "{e}");
    }

    #[test]
    fn unique_names_differ_and_keep_the_prefix() {
        let first = unique_name("smoke-topic");
        let second = unique_name("smoke-topic");
        assert_ne!(first, second);
        assert!(first.starts_with("smoke-topic-"), "{first}");
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'),
            "{first} has a character kafka rejects in topic names"
        );
    }

    #[test]
    fn missing_infra_message_names_the_command() {
        let message = InfraError::Missing.to_string();
        assert!(message.contains("KAFKA_BOOTSTRAP_SERVERS is not set"));
        assert!(message.contains("eval \"$(deploy/local/up)\""));
        assert!(message.contains("deploy/local/test"));
    }

    #[test]
    fn partial_environment_names_both_variables() {
        let message = InfraError::Partial {
            set: KAFKA_BOOTSTRAP_ENV,
            unset: SCHEMA_REGISTRY_ENV,
        }
        .to_string();
        assert!(
            message.contains("KAFKA_BOOTSTRAP_SERVERS is set"),
            "{message}"
        );
        assert!(message.contains("SCHEMA_REGISTRY_URL is not"), "{message}");
    }
}
