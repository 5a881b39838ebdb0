//! HTTPS with a given certificate and key, and the built `pingone-sim` binary end to end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pingone_sim::{SimConfig, TenantSpec, TlsConfig, spawn};
use serde_json::Value;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pingone-sim-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn serves_https_with_a_given_certificate() {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("cert");
    let dir = temp_dir("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, ck.cert.pem()).expect("write cert");
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).expect("write key");
    let mut config = SimConfig::with_tenants(vec![TenantSpec::generated("tls", 30, 4)]);
    config.tls = Some(TlsConfig {
        cert_path,
        key_path,
    });
    let sim = spawn(config).await.expect("https simulator");
    let t = sim.tenants()[0].clone();
    assert!(t.auth_base_url.starts_with("https://127.0.0.1:"));
    let root = reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).expect("root");
    let c = reqwest::Client::builder()
        .add_root_certificate(root)
        .https_only(true)
        .build()
        .expect("client");
    let tok: Value = c
        .post(t.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &t.client_id),
            ("client_secret", t.client_secret.expose()),
        ])
        .send()
        .await
        .expect("token over https")
        .json()
        .await
        .expect("json");
    let tok = tok["access_token"].as_str().expect("token").to_string();
    let body: Value = c
        .get(format!(
            "{}/environments/{}/users?limit=10",
            t.api_base_url, t.environment_id
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .expect("users over https")
        .json()
        .await
        .expect("json");
    let next = body["_links"]["next"]["href"].as_str().expect("next");
    assert!(
        next.starts_with("https://127.0.0.1:"),
        "next keeps the https scheme: {next}"
    );
    let page2 = c
        .get(next)
        .bearer_auth(&tok)
        .send()
        .await
        .expect("next over https");
    assert_eq!(page2.status(), 200);
    // A plain-HTTP client is not served.
    let plain = reqwest::Client::new()
        .get(t.api_base_url.replace("https://", "http://"))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn missing_tls_files_are_a_clear_error() {
    let mut config = SimConfig::with_tenants(vec![TenantSpec::generated("tls", 3, 4)]);
    config.tls = Some(TlsConfig {
        cert_path: "/nonexistent/cert.pem".into(),
        key_path: "/nonexistent/key.pem".into(),
    });
    let err = spawn(config).await.expect_err("must fail");
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_one_json_line_per_tenant_and_serves_them() {
    let dir = temp_dir("bin");
    let file = dir.join("tenants.toml");
    std::fs::write(
        &file,
        r#"
[[tenants]]
environment_id = "3f1c9a2e-5b7d-4e8f-9a01-23456789abcd"
client_id = "file-client"
client_secret = "file-secret"
region = "eu"
users = 25
seed = 9
"#,
    )
    .expect("write tenants file");
    let child = Command::new(env!("CARGO_BIN_EXE_pingone-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--anchor-time",
            "2026-11-20T12:00:00Z",
            "--tenants-file",
        ])
        .arg(&file)
        .args(["--tenant", "name=flag,users=40,seed=2,region=ca"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start binary");
    let mut child = Child(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let lines: Vec<Value> = BufReader::new(stdout)
        .lines()
        .take(2)
        .map(|l| serde_json::from_str(&l.expect("line")).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["environment_id"],
        "3f1c9a2e-5b7d-4e8f-9a01-23456789abcd"
    );
    assert_eq!(lines[0]["client_secret"], "file-secret");
    assert_eq!(lines[0]["region"], "eu");
    assert_eq!(lines[1]["region"], "ca");
    let c = reqwest::Client::new();
    for (line, users) in lines.iter().zip([25, 40]) {
        let field = |k: &str| line[k].as_str().expect(k).to_string();
        let tok: Value = c
            .post(field("token_url"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &field("client_id")),
                ("client_secret", &field("client_secret")),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        let body: Value = c
            .get(format!(
                "{}/environments/{}/users",
                field("api_base_url"),
                field("environment_id")
            ))
            .bearer_auth(tok["access_token"].as_str().expect("token"))
            .send()
            .await
            .expect("users")
            .json()
            .await
            .expect("json");
        assert_eq!(body["count"], users);
    }
    drop(child);
    let help = Command::new(env!("CARGO_BIN_EXE_pingone-sim"))
        .arg("--help")
        .output()
        .expect("help");
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--tenants-file",
        "--tenant",
        "--public-base-url",
        "--tls-cert",
        "--tls-key",
        "--anchor-time",
        "--demo-users",
        "--demo-seed",
    ] {
        assert!(text.contains(flag), "--help documents {flag}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_pingone-sim"))
        .args(["--tenant", "region=EU"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("com, ca, eu, asia, com.au, sg"));
    let _ = std::fs::remove_dir_all(dir);
}
