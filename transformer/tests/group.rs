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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use schemas::raw::kind;
use test_harness::kafka::consume_all;

const TENANTS: usize = 12;
const USERS: [std::ops::Range<usize>; 3] = [0..300, 0..270, 0..240];

/// One transformer process and its operations address; killed when dropped, so that a failed
/// assertion leaves no process behind.
struct Instance {
    name: &'static str,
    child: Child,
    ops: SocketAddr,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(config: &Path, log: &Path, name: &'static str) -> Instance {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let ops: SocketAddr = format!("127.0.0.1:{}", test_harness::ops::free_port())
        .parse()
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_transformer"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "info")
        .env("TRANSFORMER__KAFKA__INSTANCE_ID", name)
        .env("TRANSFORMER__OPERATIONS__LISTEN_ADDR", ops.to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Instance { name, child, ops }
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

/// Stops `instance` with SIGTERM and requires a clean exit.
async fn stop(mut instance: Instance, log: &Path) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(instance.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = instance.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} did not exit after SIGTERM",
            instance.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        exit.success(),
        "{} exit status {exit}; log in {}",
        instance.name,
        log.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_hands_its_partitions_over_with_nothing_lost_or_repeated() {
    let s = setup("group", 6).await;
    let topics = s.config.kafka.topics.clone();
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("g{t}")).collect();

    // Input: per tenant three syncs, with accesses between them.
    let mut events = Vec::new();
    let mut accesses: BTreeMap<String, u64> = BTreeMap::new();
    for tenant in &tenants {
        for (n, users) in USERS.iter().enumerate() {
            let ids: Vec<usize> = users.clone().collect();
            let rule: &[&str] = &["g1"];
            let members: Vec<(&str, usize)> = (0..20).map(|u| ("g1", u)).collect();
            events.extend(sync_events(
                tenant,
                &format!("{tenant}-s{n}"),
                &ids,
                &[("open", None), ("gated", Some(("ANY_GROUP", rule)))],
                &members,
            ));
            for a in 0..40 {
                let app = if a % 3 == 0 { "gated" } else { "open" };
                let user = format!("u-{}", (a * 7 + n) % 10);
                let id = format!("{tenant}-act-{n}-{a}");
                let at = format!("2026-11-{:02}T{:02}:00:00Z", 1 + a % 20, a % 24);
                *accesses
                    .entry(format!("{tenant}/{app}/{user}"))
                    .or_default() += 1;
                events.push(event(
                    tenant,
                    kind::ACTIVITY,
                    Some(&id),
                    None,
                    &access_json(&id, app, &user, &at),
                ));
            }
        }
    }
    produce_events(&s, &events).await;
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
    let users = wait_for(&topics.users, Duration::from_secs(120), |r| {
        r.len() >= total
    })
    .await;
    let usage = wait_for(&topics.app_usage, Duration::from_secs(120), |r| {
        r.len() as u64 >= accesses.values().sum::<u64>()
    })
    .await;
    // The newcomer takes part: the group gives it partitions.
    wait_assigned(&[&a, &c, &d]).await;
    for instance in [a, c, d] {
        stop(instance, &log).await;
    }

    let reg = registry(&s.config);
    // Users: each (user, sync) exactly once; each tombstone exactly once; on its tenant's
    // raw partition.
    let mut per_sync: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut tombstones: BTreeMap<String, u32> = BTreeMap::new();
    for r in &users {
        let k = key(r);
        let tenant = k.split('/').next().unwrap();
        assert_eq!(
            Some(&r.partition),
            partition_of.get(tenant),
            "{k} not on its tenant's raw partition"
        );
        match &r.value {
            None => *tombstones.entry(k).or_default() += 1,
            Some(_) => {
                let u = decode_user(&reg, r).await;
                *per_sync.entry((k, u.sync_id.unwrap())).or_default() += 1;
            }
        }
    }
    assert_eq!(users.len(), total, "log in {}", log.display());
    for tenant in &tenants {
        for (n, range) in USERS.iter().enumerate() {
            for i in range.clone() {
                let k = (format!("{tenant}/u-{i}"), format!("{tenant}-s{n}"));
                assert_eq!(per_sync.get(&k), Some(&1), "{k:?}");
            }
        }
        for i in USERS[2].end..USERS[0].end {
            assert_eq!(
                tombstones.get(&format!("{tenant}/u-{i}")),
                Some(&1),
                "tombstone {tenant}/u-{i}"
            );
        }
    }
    assert_eq!(tombstones.len(), expected_tombstones);
    // App usage: the totals of each pair are exactly 1..=n in order.
    let mut totals: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &usage {
        let k = key(r);
        assert_eq!(
            Some(&r.partition),
            partition_of.get(k.split('/').next().unwrap()),
            "{k}"
        );
        let u = decode_usage(&reg, r).await;
        totals.entry(k).or_default().push(u.access_count_total);
    }
    assert_eq!(totals.len(), accesses.len());
    for (pair, n) in &accesses {
        let want: Vec<i64> = (1..=i64::try_from(*n).unwrap()).collect();
        assert_eq!(totals.get(pair), Some(&want), "{pair}");
    }
    // Applications: each (app, sync) once: 2 apps x 3 syncs per tenant.
    let apps = consume_all(&topics.applications).await.unwrap();
    assert_eq!(apps.len(), TENANTS * 6);
    let dead = consume_all(&topics.dead_letter).await.unwrap();
    assert!(dead.is_empty(), "no dead letters expected");
    let _ = std::fs::remove_dir_all(&dir);
}
