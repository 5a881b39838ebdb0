//! The `producer` binary: bad configurations exit non-zero naming tenant and field; two tenants
//! where one has wrong credentials (the other syncs fully, the bad one is reported unhealthy);
//! the client secret appears in no log line, metric or topic; SIGTERM stops it cleanly.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pingone_sim::{SimConfig, TenantSpec};

const BIN: &str = env!("CARGO_BIN_EXE_producer");

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", common::unique(name)));
    std::fs::write(&path, text).expect("write config");
    path
}

const VALID_TENANT: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:1"
[schema_registry]
url = "http://127.0.0.1:1/apis/ccompat/v7"
[[tenants]]
tenant_id = "acme"
environment_id = "7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f"
region = "eu"
client_id = "c1"
client_secret_env = "ACME_SECRET_FOR_CLI_TEST"
"#;

fn validate(text: &str) -> (bool, String, String) {
    let path = write_config("validate", text);
    let out = Command::new(BIN)
        .args(["validate-config", "--config"])
        .arg(&path)
        .env("ACME_SECRET_FOR_CLI_TEST", "x")
        .output()
        .expect("run producer");
    let _ = std::fs::remove_file(path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_config_accepts_a_good_file_without_connecting() {
    let (ok, stdout, stderr) = validate(VALID_TENANT);
    assert!(ok, "stderr: {stderr}");
    assert!(stdout.contains("acme"), "{stdout}");
}

#[test]
fn bad_configurations_exit_non_zero_naming_tenant_and_field() {
    let cases = [
        (
            VALID_TENANT.replace("\"eu\"", "\"COM\""),
            "region",
            "com, ca, eu, asia, com.au, sg",
        ),
        (
            VALID_TENANT.replace("7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f", "7f1c4d9e-nope"),
            "environment_id",
            "not a UUID",
        ),
        (
            VALID_TENANT.replace("ACME_SECRET_FOR_CLI_TEST", "NO_SUCH_SECRET_VAR"),
            "client_secret_env",
            "NO_SUCH_SECRET_VAR",
        ),
        (
            VALID_TENANT.replace("client_secret_env = \"ACME_SECRET_FOR_CLI_TEST\"\n", ""),
            "client_secret_env",
            "missing client secret",
        ),
        (
            format!("{VALID_TENANT}activity_window_max_s = 9999999\n"),
            "activity_window_max_s",
            "14 days",
        ),
    ];
    for (text, field, detail) in cases {
        let (ok, _, stderr) = validate(&text);
        assert!(!ok, "{field}: expected failure");
        assert!(stderr.contains("tenant `acme`"), "{field}: {stderr}");
        assert!(
            stderr.contains(&format!("field `{field}`")),
            "{field}: {stderr}"
        );
        assert!(stderr.contains(detail), "{field}: {stderr}");
    }
    let (ok, _, stderr) = validate(&format!("{VALID_TENANT}colour = 1\n"));
    assert!(!ok && stderr.contains("colour"), "{stderr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn http_get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_of_one_tenant_do_not_stop_the_other_and_secrets_never_leak() {
    let good_spec = TenantSpec::generated("cli-good", 600, 21);
    let bad_spec = TenantSpec::generated("cli-bad", 100, 22);
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![good_spec, bad_spec]))
        .await
        .expect("simulator");
    let good = sim.tenants()[0].clone();
    let bad = sim.tenants()[1].clone();
    let names = common::Names::new("cli");
    let port = free_port();
    let wrong_secret = "definitely-wrong-secret-7c1e5a";
    let text = format!(
        "{}{}{}",
        common::global_toml(&names, &format!("127.0.0.1:{port}")),
        common::tenant_toml(
            "good",
            &good,
            "GOOD_SECRET",
            "activity_initial_lookback_s = 3600"
        ),
        common::tenant_toml("bad", &bad, "BAD_SECRET", "invalid_client_backoff_s = 2"),
    );
    let path = write_config("cli", &text);
    let (mut child, log_reader) = common::ChildGuard::spawn_capturing_stderr(
        Command::new(BIN)
            .args(["run", "--log-format", "json", "--config"])
            .arg(&path)
            .env("GOOD_SECRET", good.client_secret.expose())
            .env("BAD_SECRET", wrong_secret)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped()),
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let records = loop {
        assert!(
            Instant::now() < deadline,
            "good tenant did not complete a sync in time"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            panic!(
                "producer exited early with {status}: {}",
                log_reader.join().unwrap_or_default()
            );
        }
        let (status, _) = http_get(&format!("http://127.0.0.1:{port}/readyz")).await;
        if status != 200 {
            continue;
        }
        let records = common::read_raw(&names.raw_topic).await;
        if !common::completed_sync_ids(&records, "good").is_empty() {
            break records;
        }
    };
    let sync_id = common::completed_sync_ids(&records, "good")[0].clone();
    let contents = common::completed_sync_contents(&records, "good", &sync_id);
    common::assert_matches_truth(&contents, &common::truth(&sim, &good.environment_id).await);
    assert!(
        records.iter().all(|r| r.event.tenant_id != "bad"),
        "the bad tenant wrote nothing"
    );

    let (status, metrics) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"producer_tenant_healthy{tenant="bad"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"producer_tenant_healthy{tenant="good"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"producer_entities_total{tenant="good",kind="user"} 600"#),
        "{metrics}"
    );
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/healthz"))
            .await
            .0,
        200
    );

    // Graceful stop on SIGTERM.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < stop_deadline,
            "producer did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs = log_reader.join().expect("logs");
    assert!(status.success(), "exit {status}: {logs}");
    assert!(
        logs.contains("invalid_client"),
        "the bad tenant's failure is logged: {logs}"
    );
    assert!(
        logs.lines()
            .all(|l| l.trim().is_empty() || l.starts_with('{')),
        "json logs"
    );

    let all_records = common::read_raw(&names.raw_topic).await;
    for secret in [good.client_secret.expose(), wrong_secret] {
        assert!(!logs.contains(secret), "secret in logs");
        assert!(!metrics.contains(secret), "secret in metrics");
        assert!(
            all_records
                .iter()
                .all(|r| !r.event.payload.contains(secret)),
            "secret in the raw topic"
        );
    }
    let _ = std::fs::remove_file(path);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_exit_status_says_whether_the_sync_completed() {
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![TenantSpec::generated(
        "once", 300, 23,
    )]))
    .await
    .expect("simulator");
    let t = sim.tenants()[0].clone();
    let names = common::Names::new("once");
    let text = format!(
        "{}{}{}",
        common::global_toml(&names, ""),
        common::tenant_toml("ok", &t, "OK_SECRET", ""),
        common::tenant_toml("denied", &t, "DENIED_SECRET", ""),
    );
    let path = write_config("once", &text);
    let run = |tenant: &str| {
        Command::new(BIN)
            .args(["sync", "--once", "--tenant", tenant, "--config"])
            .arg(&path)
            .env("OK_SECRET", t.client_secret.expose())
            .env("DENIED_SECRET", "not-the-secret")
            .output()
            .expect("run producer")
    };
    let ok = run("ok");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let denied = run("denied");
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("denied") && stderr.contains("invalid_client"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
    let unknown = run("nobody");
    assert!(!unknown.status.success());

    let records = common::read_raw(&names.raw_topic).await;
    let synced = common::completed_sync_ids(&records, "ok");
    assert_eq!(synced.len(), 1);
    common::assert_matches_truth(
        &common::completed_sync_contents(&records, "ok", &synced[0]),
        &common::truth(&sim, &t.environment_id).await,
    );
    assert!(
        records.iter().all(|r| r.event.tenant_id == "ok"),
        "the denied tenant wrote nothing"
    );
    let _ = std::fs::remove_file(path);
    sim.shutdown().await;
}
