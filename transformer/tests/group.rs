//! Scale-out on a consumer group: three `transformer` processes share a six-partition raw topic
//! of twelve tenants; one is killed with SIGKILL while output is being written and a fourth
//! joins. The killed instance's partitions move to the others, which restore their state from
//! those partitions of the output topics alone. The `read_committed` outputs must hold every
//! (user, sync) exactly once, every tombstone exactly once, and app usage totals equal to the
//! accesses, each record on the raw partition of its tenant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use test_harness::kafka::consume_all;

const TENANTS: usize = 12;
const USERS: [std::ops::Range<usize>; 3] = [0..300, 0..270, 0..240];

/// One transformer process and its operations address.
struct Instance {
    name: &'static str,
    process: Running,
    ops: SocketAddr,
}

fn spawn(config: &Path, log: &Path, name: &'static str) -> Instance {
    let ops: SocketAddr = format!("127.0.0.1:{}", test_harness::ops::free_port())
        .parse()
        .unwrap();
    let process = Running::start(
        env!("CARGO_BIN_EXE_transformer"),
        config,
        log,
        &[
            ("RUST_LOG", "info".to_owned()),
            ("TRANSFORMER__KAFKA__INSTANCE_ID", name.to_owned()),
            ("TRANSFORMER__OPERATIONS__LISTEN_ADDR", ops.to_string()),
        ],
    );
    Instance { name, process, ops }
}

/// A metric's value on `instance`'s `/metrics`, if it answers and has it.
fn metric(instance: &Instance, name: &str) -> Option<f64> {
    let (_, body) =
        test_harness::ops::get(instance.ops, "/metrics", Duration::from_secs(2)).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until every one of `instances` owns at least one raw partition.
async fn wait_assigned(instances: &[&Instance]) {
    let started = Instant::now();
    loop {
        let owned: Vec<Option<f64>> = instances
            .iter()
            .map(|i| metric(i, "transformer_assigned_partitions"))
            .collect();
        if owned.iter().all(|o| o.is_some_and(|n| n >= 1.0)) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "instances {:?} own {owned:?} partitions after 90 s",
            instances.iter().map(|i| i.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_hands_its_partitions_over_with_nothing_lost_or_repeated() {
    let s = setup("group", 6).await;
    let topics = s.config.kafka.topics.clone();
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("g{t}")).collect();

    // Input: per tenant three syncs, with accesses between them.
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let workload = syncs_with_accesses(&names, &USERS, 20, 40, |n, a| {
        ((a * 7 + n) % 10, 1 + a as u64 % 20, a as u64 % 24)
    });
    produce_events(&s, &workload.events).await;
    // Where the producer's partitioner put each tenant.
    let raw = consume_all(&s.raw_topic).await.unwrap();
    let partition_of: BTreeMap<String, i32> = raw
        .iter()
        .map(|r| (key(r), r.partition))
        .collect::<BTreeMap<_, _>>();
    let used: std::collections::BTreeSet<i32> = partition_of.values().copied().collect();
    assert!(used.len() >= 3, "tenants on partitions {used:?}");

    let dir = std::env::temp_dir().join(test_harness::unique_name("transformer-group"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("transformer.toml");
    let log = dir.join("transformer.log");
    // A killed instance leaves the group after 6 s (the broker's minimum session timeout), and
    // its open transaction is aborted after 10 s.
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\nraw_topic = \"{}\"\noutput_prefix = \"{}\"\ngroup_id = \"{}\"\ntransactional_id = \"{}\"\ntransaction_timeout_ms = 10000\nrequest_timeout_ms = 10000\n[kafka.librdkafka_options]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n[schema_registry]\nurl = \"{}\"\n[operations]\nshutdown_deadline_ms = 20000\n[processing]\nbatch_max_records = 20\nbatch_max_wait_ms = 20\n",
            s.config.kafka.client.bootstrap_servers,
            s.raw_topic,
            s.config.kafka.output_prefix,
            s.config.kafka.group_id,
            s.config.kafka.transactional_id,
            s.config.registry.url
        ),
    )
    .unwrap();

    let expected_users = TENANTS * USERS.iter().map(ExactSizeIterator::len).sum::<usize>();
    let expected_tombstones = TENANTS * (USERS[0].len() - USERS[2].len());
    let total = expected_users + expected_tombstones;
    let committed = || async {
        consume_all(&topics.users)
            .await
            .map(|r| r.len())
            .unwrap_or(0)
    };

    let a = spawn(&config, &log, "a");
    let b = spawn(&config, &log, "b");
    let c = spawn(&config, &log, "c");
    wait_assigned(&[&a, &b, &c]).await;
    // Kill `b` while output is being written.
    let started = Instant::now();
    while committed().await == 0 && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b_owned = metric(&b, "transformer_assigned_partitions");
    drop(b); // SIGKILL
    let at_kill = committed().await;
    eprintln!(
        "killed b (owning {b_owned:?} partitions) with {at_kill} of {total} user records committed"
    );
    assert!(
        at_kill < total,
        "every record was written before the kill: the test proves nothing"
    );

    let d = spawn(&config, &log, "d");
    wait_for(&topics.users, Duration::from_secs(120), |r| {
        r.len() >= total
    })
    .await;
    wait_for(&topics.app_usage, Duration::from_secs(120), |r| {
        r.len() as u64 >= workload.accesses.values().sum::<u64>()
    })
    .await;
    // The newcomer takes part: the group gives it partitions.
    wait_assigned(&[&a, &c, &d]).await;
    for instance in [a, c, d] {
        instance.process.stop(&log).await;
    }
    check_exactly_once(
        &s.config,
        &names,
        &USERS,
        &workload,
        Some(&partition_of),
        &format!("log in {}", log.display()),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
