//! The producer's part of the fault findings of issue 9, each reproduced against the real broker
//! and registry, the simulator, or a host that accepts connections and never answers:
//!
//! - an entity over the record limit becomes an `oversized` marker and the sync completes;
//! - `producer_tenant_healthy` and `/readyz` follow failed syncs and polls, `invalid_client`
//!   and an unreachable broker; the last success of each tenant stream is a gauge;
//! - SIGTERM ends a hung PingOne request at once (clean exit well within the deadline);
//! - `sync --once` reports a hung host, a DNS failure, an unreachable broker or registry within
//!   60 s with defaults, naming what failed, each cause once;
//! - `run` keeps retrying a registry unreachable at start (503 meanwhile) instead of exiting;
//! - config errors never print secret values, name the tenant of an unknown key and the
//!   variable of a bad override.

mod common;

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pingone_sim::{SimConfig, TenantSpec};
use sha2::{Digest, Sha256};
use test_harness::ops::{HungBroker, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_producer");

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", common::unique(name)));
    std::fs::write(&path, text).expect("write config");
    path
}

/// A tenant block with every timeout and retry setting at its default.
fn default_tenant(tenant_id: &str, auth: &str, api: &str, extra: &str) -> String {
    format!(
        r#"
[[tenants]]
tenant_id = "{tenant_id}"
environment_id = "7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f"
region = "eu"
client_id = "c1"
client_secret_env = "FAULT_TEST_SECRET"
auth_base_url = "{auth}"
api_base_url = "{api}"
{extra}
"#
    )
}

fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

async fn http_get(url: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    match client.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// A running `producer run` whose stderr is collected.
struct Running {
    child: common::ChildGuard,
    logs: std::thread::JoinHandle<String>,
    port: u16,
}

fn start_run(config: &std::path::Path, envs: &[(&str, &str)]) -> Running {
    let mut command = Command::new(BIN);
    command
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    for (k, v) in envs {
        command.env(k, v);
    }
    let (child, logs) = common::ChildGuard::spawn_capturing_stderr(&mut command);
    Running {
        child,
        logs,
        port: 0,
    }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Polls `/metrics` until `ready(text)` holds, failing after `bound`.
    async fn wait_metrics(&mut self, bound: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                panic!("producer exited early with {status}");
            }
            let (status, text) = http_get(&self.url("/metrics")).await;
            if status == 200 && ready(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "metrics did not reach the expected state within {bound:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGTERM, then the exit status and how long it took (killed after `bound`).
    fn terminate(mut self, bound: Duration) -> (Option<ExitStatus>, Duration, String) {
        let sent = Instant::now();
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = wait_exit(&mut self.child, bound);
        let elapsed = sent.elapsed();
        drop(self.child);
        (status, elapsed, self.logs.join().unwrap_or_default())
    }
}

fn wait_exit(child: &mut common::ChildGuard, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `producer sync --once --tenant t`, killed after `bound`: exit status (None when killed),
/// elapsed time, stderr.
fn sync_once(config: &std::path::Path, bound: Duration) -> (Option<ExitStatus>, Duration, String) {
    let started = Instant::now();
    let (mut child, logs) = common::ChildGuard::spawn_capturing_stderr(
        Command::new(BIN)
            .args(["sync", "--once", "--tenant", "t", "--config"])
            .arg(config)
            .env("FAULT_TEST_SECRET", "fault-test-secret-value")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null()),
    );
    let status = wait_exit(&mut child, bound);
    let elapsed = started.elapsed();
    drop(child);
    (status, elapsed, logs.join().unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// 3. A tenant stuck forever.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_user_becomes_a_marker_and_the_sync_completes() {
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![TenantSpec::generated(
        "oversized",
        30,
        31,
    )]))
    .await
    .expect("simulator");
    let t = sim.tenants()[0].clone();
    let admin = sim.admin(&t.environment_id);
    let huge = admin
        .create_user(&serde_json::json!({
            "username": "huge.attribute",
            "notes": "x".repeat(1_100_000),
        }))
        .await
        .expect("create the huge user");
    let huge_id = huge["id"].as_str().expect("id").to_owned();
    let names = common::Names::new("oversized");
    let text = format!(
        "{}{}",
        common::global_toml(&names, ""),
        common::tenant_toml(
            "big",
            &t,
            "BIG_SECRET",
            "activity_initial_lookback_s = 3600"
        ),
    );
    let config = common::config_from(&text, &[("BIG_SECRET", t.client_secret.expose())]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(producer::run_with(config, shutdown.clone(), move |r| {
        let _ = tx.send(r.metrics.clone());
    }));
    let metrics = rx.recv_timeout(Duration::from_secs(30)).expect("started");

    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        let text = metrics.render();
        if text
            .contains(r#"producer_last_success_timestamp_seconds{tenant="big",stream="snapshot"}"#)
        {
            break text;
        }
        assert!(Instant::now() < deadline, "no sync completed: {text}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let records = common::read_raw(&names.raw_topic).await;
    shutdown.cancel();
    task.await.expect("join").expect("producer run");

    let sync_id = common::completed_sync_ids(&records, "big")[0].clone();
    let mine: Vec<&common::Record> = records
        .iter()
        .filter(|r| r.event.sync_id.as_deref() == Some(sync_id.as_str()))
        .collect();
    let markers: Vec<&&common::Record> = mine
        .iter()
        .filter(|r| r.event.kind == schemas::raw::kind::OVERSIZED)
        .collect();
    assert_eq!(markers.len(), 1, "one oversized marker");
    let marker = &markers[0].event;
    assert_eq!(marker.entity_id.as_deref(), Some(huge_id.as_str()));
    assert_eq!(marker.tenant_id, "big");
    assert_eq!(marker.environment_id, t.environment_id);
    assert_eq!(marker.region, t.region);
    assert_eq!(
        markers[0].headers.get("kind").map(String::as_str),
        Some("oversized")
    );
    let info: schemas::raw::Oversized =
        serde_json::from_str(&marker.payload).expect("oversized payload");
    let truth = common::truth(&sim, &t.environment_id).await;
    let original = serde_json::to_string(&truth.users[&huge_id]).expect("json");
    assert_eq!(info.kind, "user");
    assert_eq!(info.entity_id, huge_id);
    assert_eq!(info.size, original.len() as u64);
    let sha: String = Sha256::digest(original.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(info.sha256, sha);
    assert_eq!(info.limit, schemas::topics::MAX_RECORD_BYTES as u64);

    // Every other user is there, and the marker is counted as a user.
    let users: std::collections::BTreeSet<String> = mine
        .iter()
        .filter(|r| r.event.kind == "user")
        .filter_map(|r| r.event.entity_id.clone())
        .collect();
    let expected: std::collections::BTreeSet<String> = truth
        .users
        .keys()
        .filter(|id| **id != huge_id)
        .cloned()
        .collect();
    assert_eq!(users, expected);
    let completed: serde_json::Value = serde_json::from_str(
        &mine
            .iter()
            .find(|r| r.event.kind == "sync_completed")
            .expect("sync_completed")
            .event
            .payload,
    )
    .expect("marker json");
    assert_eq!(
        completed["counts"]["user"].as_u64(),
        Some(truth.users.len() as u64)
    );
    assert!(
        text.contains(r#"producer_oversized_entities_total{tenant="big",kind="user"} 1"#),
        "{text}"
    );
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Health that lies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_and_tenants_unhealthy_when_pingone_is_unreachable_or_refuses() {
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![TenantSpec::generated(
        "health-denied",
        20,
        41,
    )]))
    .await
    .expect("simulator");
    let t = sim.tenants()[0].clone();
    let names = common::Names::new("health");
    let mut run = {
        let port = free_port();
        let down = closed_port_url();
        let text = format!(
            "{}{}{}",
            common::global_toml(&names, &format!("127.0.0.1:{port}")),
            default_tenant(
                "down",
                &down,
                &format!("{down}/v1"),
                "max_retries = 1\nretry_base_backoff_ms = 50"
            ),
            common::tenant_toml(
                "denied",
                &t,
                "DENIED_SECRET",
                "invalid_client_backoff_s = 600"
            ),
        );
        let path = write_config("health", &text);
        let mut run = start_run(
            &path,
            &[
                ("FAULT_TEST_SECRET", "x"),
                ("DENIED_SECRET", "not-the-secret"),
            ],
        );
        run.port = port;
        run
    };
    let metrics = run
        .wait_metrics(Duration::from_secs(90), |m| {
            m.contains(r#"producer_tenant_healthy{tenant="down"} 0"#)
                && m.contains(r#"producer_tenant_healthy{tenant="denied"} 0"#)
        })
        .await;
    assert!(
        !metrics.contains(r#"producer_last_success_timestamp_seconds{tenant="down""#),
        "{metrics}"
    );
    let (status, body) = http_get(&run.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no tenant healthy"), "{body}");
    assert_eq!(http_get(&run.url("/healthz")).await.0, 200);
    let (status, _, logs) = run.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {logs}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_success_of_each_stream_is_exported_and_readyz_is_200_while_healthy() {
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![TenantSpec::generated(
        "health-good",
        40,
        42,
    )]))
    .await
    .expect("simulator");
    let t = sim.tenants()[0].clone();
    let names = common::Names::new("health-good");
    let port = free_port();
    let text = format!(
        "{}{}",
        common::global_toml(&names, &format!("127.0.0.1:{port}")),
        common::tenant_toml(
            "good",
            &t,
            "GOOD_SECRET",
            "activity_initial_lookback_s = 3600"
        ),
    );
    let path = write_config("health-good", &text);
    let mut run = start_run(&path, &[("GOOD_SECRET", t.client_secret.expose())]);
    run.port = port;
    let metrics = run
        .wait_metrics(Duration::from_secs(120), |m| {
            m.contains(
                r#"producer_last_success_timestamp_seconds{tenant="good",stream="snapshot"}"#,
            ) && m.contains(
                r#"producer_last_success_timestamp_seconds{tenant="good",stream="activity"}"#,
            )
        })
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    for stream in ["snapshot", "activity"] {
        let prefix = format!(
            r#"producer_last_success_timestamp_seconds{{tenant="good",stream="{stream}"}} "#
        );
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .expect("a timestamp");
        assert!(
            value > now - 300.0 && value <= now + 5.0,
            "{stream}: {value} vs {now}"
        );
    }
    assert!(
        metrics.contains(r#"producer_tenant_healthy{tenant="good"} 1"#),
        "{metrics}"
    );
    assert_eq!(http_get(&run.url("/readyz")).await.0, 200);
    let (status, _, logs) = run.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {logs}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_broker_is_unreachable() {
    let broker = HungBroker::start();
    let port = free_port();
    let down = closed_port_url();
    let text = format!(
        r#"[kafka]
bootstrap_servers = "{}"
create_topics = false
request_timeout_ms = 3000
[schema_registry]
url = "{}"
[operations]
listen_addr = "127.0.0.1:{port}"
{}"#,
        broker.addr,
        common::registry_url(),
        default_tenant("t", &down, &format!("{down}/v1"), ""),
    );
    let path = write_config("broker-down", &text);
    let mut run = start_run(&path, &[("FAULT_TEST_SECRET", "x")]);
    run.port = port;
    let metrics = run
        .wait_metrics(Duration::from_secs(60), |m| {
            m.contains("producer_kafka_reachable 0")
        })
        .await;
    assert!(
        metrics.contains(r#"producer_tenant_healthy{tenant="t"} 0"#),
        "{metrics}"
    );
    let (status, body) = http_get(&run.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("kafka"), "{body}");
    drop(run);
}

// ---------------------------------------------------------------------------------------------
// 5. Shutdown ignored.

/// A listener that accepts connections, counts them, and never answers.
struct CountingHung {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingHung {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Self { addr, accepted }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_hung_pingone_request_at_once() {
    let hung = CountingHung::start();
    let names = common::Names::new("hung-sigterm");
    let port = free_port();
    let base = format!("http://{}", hung.addr);
    let text = format!(
        "{}{}",
        common::global_toml(&names, &format!("127.0.0.1:{port}")),
        default_tenant("t", &base, &format!("{base}/v1"), ""),
    );
    let path = write_config("hung-sigterm", &text);
    let mut run = start_run(&path, &[("FAULT_TEST_SECRET", "x")]);
    run.port = port;
    // Wait until the token request is in flight on the host that never answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while hung.accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no request reached the hung host"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The request timeout is 30 s and the shutdown deadline 10 s (exit 1 when missed).
    let (status, elapsed, logs) = run.terminate(Duration::from_secs(40));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {elapsed:?}: {logs}"
    );
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}: {logs}");
}

// ---------------------------------------------------------------------------------------------
// 6. Slow to fail with defaults; 9. each cause once, registry unreachable.

const ONE_SHOT_BOUND: Duration = Duration::from_secs(60);

fn assert_fails_in_time(
    (status, elapsed, stderr): (Option<ExitStatus>, Duration, String),
    must_name: &[&str],
) {
    let Some(status) = status else {
        panic!("still running after {elapsed:?} (killed): {stderr}");
    };
    assert!(!status.success(), "{stderr}");
    assert!(elapsed < ONE_SHOT_BOUND, "{elapsed:?}: {stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    for name in must_name {
        assert!(error.contains(name), "`{name}` not in: {error}");
    }
    // Each part of the error is said once.
    let parts: Vec<&str> = error.split(": ").filter(|p| p.len() > 12).collect();
    for p in &parts {
        assert_eq!(error.matches(p).count(), 1, "`{p}` repeated in: {error}");
    }
    assert!(!stderr.contains("fault-test-secret-value"), "{stderr}");
}

#[test]
fn sync_once_reports_a_host_that_never_answers_within_a_minute() {
    let hung = HungBroker::start();
    let names = common::Names::new("once-hung");
    let base = format!("http://{}", hung.addr);
    let text = format!(
        "{}{}",
        common::global_toml(&names, ""),
        default_tenant("t", &base, &format!("{base}/v1"), ""),
    );
    let path = write_config("once-hung", &text);
    assert_fails_in_time(
        sync_once(&path, ONE_SHOT_BOUND + Duration::from_secs(10)),
        &["deadline", &hung.addr.to_string(), "tenant `t`"],
    );
}

#[test]
fn sync_once_reports_a_dns_failure_within_a_minute() {
    let names = common::Names::new("once-dns");
    let base = "http://pingone-fault-test.invalid";
    let text = format!(
        "{}{}",
        common::global_toml(&names, ""),
        default_tenant("t", base, &format!("{base}/v1"), ""),
    );
    let path = write_config("once-dns", &text);
    assert_fails_in_time(
        sync_once(&path, ONE_SHOT_BOUND + Duration::from_secs(10)),
        &["pingone-fault-test.invalid", "dns", "tenant `t`"],
    );
}

#[test]
fn sync_once_reports_an_unreachable_broker_within_a_minute() {
    let names = common::Names::new("once-broker");
    let broker = format!("127.0.0.1:{}", free_port());
    let base = closed_port_url();
    let text = common::global_toml(&names, "").replace(&common::kafka_bootstrap(), &broker)
        + &default_tenant("t", &base, &format!("{base}/v1"), "");
    let path = write_config("once-broker", &text);
    assert_fails_in_time(
        sync_once(&path, ONE_SHOT_BOUND + Duration::from_secs(10)),
        &["kafka", &broker],
    );
}

#[test]
fn sync_once_reports_an_unreachable_registry_at_once() {
    let names = common::Names::new("once-registry");
    let registry = format!("http://127.0.0.1:{}/apis/ccompat/v7", free_port());
    let base = closed_port_url();
    let text = common::global_toml(&names, "").replace(&common::registry_url(), &registry)
        + &default_tenant("t", &base, &format!("{base}/v1"), "");
    let path = write_config("once-registry", &text);
    assert_fails_in_time(
        sync_once(&path, ONE_SHOT_BOUND + Duration::from_secs(10)),
        &["schema registry", &registry],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_keeps_retrying_a_registry_unreachable_at_start() {
    let names = common::Names::new("run-registry");
    let registry_port = free_port();
    let registry = format!("http://127.0.0.1:{registry_port}/apis/ccompat/v7");
    let port = free_port();
    let base = closed_port_url();
    let text = common::global_toml(&names, &format!("127.0.0.1:{port}"))
        .replace(&common::registry_url(), &registry)
        + &default_tenant("t", &base, &format!("{base}/v1"), "");
    let path = write_config("run-registry", &text);
    let mut run = start_run(&path, &[("FAULT_TEST_SECRET", "x")]);
    run.port = port;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        run.child.0.try_wait().expect("try_wait").is_none(),
        "the producer exited instead of retrying"
    );
    let (status, body) = http_get(&run.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(http_get(&run.url("/healthz")).await.0, 200);
    let (status, _, logs) = run.terminate(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {logs}");
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("retrying"))
        .collect();
    assert!(warnings.len() >= 2, "{logs}");
    assert!(
        warnings
            .iter()
            .all(|l| l.contains(&format!("127.0.0.1:{registry_port}"))),
        "{logs}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Secret echoed; 9. unknown keys name the tenant and the variable.

const VALID: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:1"
[schema_registry]
url = "http://127.0.0.1:1/apis/ccompat/v7"
[[tenants]]
tenant_id = "acme"
environment_id = "7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f"
region = "eu"
client_id = "c1"
client_secret_env = "FAULT_TEST_SECRET"
[[tenants]]
tenant_id = "beta"
environment_id = "7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e70"
region = "eu"
client_id = "c2"
client_secret_env = "FAULT_TEST_SECRET"
"#;

fn validate(text: &str, envs: &[(&str, &str)]) -> (i32, String) {
    let path = write_config("validate-faults", text);
    let mut command = Command::new(BIN);
    command
        .args(["validate-config", "--config"])
        .arg(&path)
        .env("FAULT_TEST_SECRET", "x");
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().expect("run producer");
    let _ = std::fs::remove_file(path);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn validate_config_never_prints_a_secret_value() {
    let in_file = VALID.replace(
        "[schema_registry]",
        "[kafka.librdkafka_options]\n\"sasl.password\" = 12345678\n[schema_registry]",
    );
    let (code, out) = validate(&in_file, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("sasl.password"), "{out}");
    assert!(!out.contains("12345678"), "{out}");

    let unparsable = VALID.replace(
        "[schema_registry]",
        "[kafka.librdkafka_options]\n\"sasl.password\" = \"hunter2-secret\n[schema_registry]",
    );
    let (code, out) = validate(&unparsable, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("hunter2-secret"), "{out}");

    // From the environment the password is taken verbatim, digits and all: valid, unprinted.
    let var = "PRODUCER__KAFKA__LIBRDKAFKA_OPTIONS__sasl.password";
    let (code, out) = validate(VALID, &[(var, "87654321")]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("87654321"), "{out}");
}

#[test]
fn an_unknown_key_names_its_tenant_or_its_variable() {
    let (code, out) = validate(&format!("{VALID}colour = \"red\"\n"), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("colour") && out.contains("tenant_id `beta`"),
        "{out}"
    );

    let var = "PRODUCER__TENANTS__ACME__COLOUR";
    let (code, out) = validate(VALID, &[(var, "red")]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(var) && out.contains("colour"), "{out}");
}
