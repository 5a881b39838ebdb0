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
        "[kafka]\nbootstrap_servers = 'k:9092'\n[schema_registry]\nurl = 'http://r'\n[processing]\nbatch_max_record = 5\n",
        &["run"],
    );
    assert!(!ok);
    assert!(text.contains("unknown field `batch_max_record`"), "{text}");

    // Every problem at once, each naming its field.
    let (ok, text) = run(
        "[kafka]\nraw_topic = 'no spaces allowed'\n[schema_registry]\nurl = 'r:8081'\n[processing]\nbatch_max_records = 0\n",
        &["run"],
    );
    assert!(!ok);
    for field in [
        "kafka.bootstrap_servers",
        "kafka.raw_topic",
        "schema_registry.url",
        "processing.batch_max_records",
    ] {
        assert!(text.contains(field), "{field} missing from: {text}");
    }

    // A registry password comes from the environment and never shows.
    let dir = std::env::temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_transformer"))
        .arg("validate-config")
        .env("TRANSFORMER__KAFKA__BOOTSTRAP_SERVERS", "k:9092")
        .env("TRANSFORMER__SCHEMA_REGISTRY__URL", "r:8081")
        .env("TRANSFORMER__SCHEMA_REGISTRY__USERNAME", "u")
        .env("TRANSFORMER__SCHEMA_REGISTRY__PASSWORD_ENV", "REG_PW")
        .env("REG_PW", "hunter2-secret")
        .env_remove("TRANSFORMER_CONFIG")
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(text.contains("schema_registry.url"), "{text}");
    assert!(!text.contains("hunter2-secret"), "{text}");

    let (ok, text) = run(
        "[kafka]\nbootstrap_servers = 'k:9092'\n[schema_registry]\nurl = 'http://r'\n",
        &["replay", "--sync-id", "s"],
    );
    assert!(!ok);
    assert!(
        text.contains("--tenant"),
        "replay --sync-id needs --tenant: {text}"
    );
}

#[test]
fn validate_config_accepts_a_good_file_and_overrides() {
    let (ok, text) = run(
        "[kafka]\nbootstrap_servers = 'k:9092'\n[schema_registry]\nurl = 'http://r'\n",
        &["validate-config"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("valid"), "{text}");
    assert!(text.contains("usage."), "{text}");
}
