//! The binary's command line: bad configuration fails at once with a clear message, and a
//! secret from the configuration never shows in its output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run(config: &str, args: &[&str]) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "transformer-cli-{}-{}",
        std::process::id(),
        args.join("-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_transformer"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unknown_keys_and_bad_values_are_rejected_without_leaking_secrets() {
    let (ok, text) = run(
        "bootstrap_servers = 'k:9092'\nschema_registry_url = 'http://r'\nbatch_max_record = 5\n",
        &["run"],
    );
    assert!(!ok);
    assert!(text.contains("unknown field `batch_max_record`"), "{text}");

    let (ok, text) = run(
        "bootstrap_servers = 'k:9092'\nschema_registry_url = 'r:8081'\n[schema_registry_auth]\nusername = 'u'\npassword = 'hunter2-secret'\n",
        &["run"],
    );
    assert!(!ok);
    assert!(
        text.contains("schema_registry_url must be an http(s) URL"),
        "{text}"
    );
    assert!(!text.contains("hunter2-secret"), "{text}");

    let (ok, text) = run("schema_registry_url = 'http://r'\n", &["license-report"]);
    assert!(!ok);
    assert!(text.contains("bootstrap_servers is empty"), "{text}");

    let (ok, text) = run(
        "bootstrap_servers = 'k:9092'\nschema_registry_url = 'http://r'\n",
        &["replay", "--sync-id", "s"],
    );
    assert!(!ok);
    assert!(
        text.contains("--tenant"),
        "replay --sync-id needs --tenant: {text}"
    );
}
