//! With the broker unreachable, `producer run` keeps answering `/healthz` within a few seconds
//! (`test_harness::ops::PROBE_BOUND`, far below the 20 s Kafka timeout) while its tenant streams
//! wait on Kafka (`init_transactions`, reading checkpoints back). Those blocking librdkafka calls
//! run off the async runtime; on a runtime with one worker (a container limited to one CPU, here
//! `TOKIO_WORKER_THREADS=1`) a blocking call made on the runtime would hold the only thread for
//! the whole Kafka timeout.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use test_harness::ops::{HungBroker, KillOnDrop, assert_answering, free_port};

#[test]
fn healthz_answers_while_the_broker_does_not() {
    let broker = HungBroker::start();
    let ops: std::net::SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    // Topics are not created (that is async anyway): the streams go straight to
    // init_transactions against the broker that never answers.
    let config = format!(
        r#"
[kafka]
bootstrap_servers = "{broker}"
create_topics = false
request_timeout_ms = 20000
[schema_registry]
url = "{registry}"
[operations]
listen_addr = "{ops}"
[[tenants]]
tenant_id = "acme"
environment_id = "7f1c4d9e-0b8a-4f5e-9d3c-2a1b0c9d8e7f"
region = "eu"
client_id = "c1"
client_secret_env = "ACME_SECRET_FOR_OUTAGE_TEST"
api_base_url = "http://127.0.0.1:9/v1"
auth_base_url = "http://127.0.0.1:9"
"#,
        broker = broker.addr,
        registry = test_harness::schema_registry_url(),
    );
    let path = std::env::temp_dir().join(format!("{}.toml", common::unique("outage")));
    std::fs::write(&path, config).expect("write config");
    let child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_producer"))
            .args(["run", "--config"])
            .arg(&path)
            .env("TOKIO_WORKER_THREADS", "1")
            .env("RUST_LOG", "warn")
            .env("ACME_SECRET_FOR_OUTAGE_TEST", "x")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the producer"),
    );
    // The streams wait in init_transactions for a broker that never answers.
    assert_answering(ops, Duration::from_secs(8), None);
    drop(child);
    let _ = std::fs::remove_file(&path);
}
