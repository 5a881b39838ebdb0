//! With the broker unreachable, `transformer run` keeps answering `/healthz` within a few
//! seconds (`test_harness::ops::PROBE_BOUND`, far below the 20 s Kafka timeout) and says it is
//! not ready. Every blocking librdkafka call (metadata, transactions, committed offsets) must run
//! off the async runtime for that: on a runtime with one worker (a container limited to one CPU,
//! here `TOKIO_WORKER_THREADS=1`) a blocking call made on the runtime holds the only thread for
//! the whole Kafka timeout, and the endpoints stop answering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use test_harness::ops::{HungBroker, KillOnDrop, assert_answering, free_port};

#[test]
fn healthz_answers_while_the_broker_does_not() {
    let broker = HungBroker::start();
    let ops: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_transformer"))
            .arg("run")
            .env("TOKIO_WORKER_THREADS", "1")
            .env("RUST_LOG", "warn")
            .env(
                "TRANSFORMER__KAFKA__BOOTSTRAP_SERVERS",
                broker.addr.to_string(),
            )
            .env("TRANSFORMER__KAFKA__REQUEST_TIMEOUT_MS", "20000")
            .env(
                "TRANSFORMER__SCHEMA_REGISTRY__URL",
                "http://127.0.0.1:9/apis/ccompat/v7",
            )
            .env("TRANSFORMER__OPERATIONS__LISTEN_ADDR", ops.to_string())
            .env_remove("TRANSFORMER_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // 8 s of calls against a broker that never answers: not ready, but always answering.
    assert_answering(ops, Duration::from_secs(8), Some(503));
}
