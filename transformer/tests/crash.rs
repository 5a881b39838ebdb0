//! Exactly-once under crashes: the `transformer` binary is killed with SIGKILL at random moments,
//! many times, while it works through three syncs of two tenants and interleaved accesses; then
//! it runs to the end and stops on SIGTERM. The `read_committed` outputs must hold every
//! expected record exactly once: no duplicates, no gaps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use schemas::raw::kind;
use test_harness::kafka::consume_all;

const USERS: [std::ops::Range<usize>; 3] = [0..1_000, 0..900, 0..800];
const KILLS: usize = 8;

/// A transformer process, killed when dropped, so that a failed assertion leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(config_path: &std::path::Path, log: &std::path::Path) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Running(
        Command::new(env!("CARGO_BIN_EXE_transformer"))
            .arg("--config")
            .arg(config_path)
            .arg("run")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// A small deterministic generator (seed printed on failure).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_never_duplicates_or_loses_output() {
    let mut s = setup("crash", 2).await;
    s.config.processing.batch_max_records = 100;
    s.config.processing.batch_max_wait = Duration::from_millis(20);
    let topics = s.config.kafka.topics.clone();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    eprintln!("crash test seed {seed}");

    // Input: per tenant three syncs, with accesses between them.
    let mut events = Vec::new();
    let mut accesses: BTreeMap<String, u64> = BTreeMap::new();
    for tenant in ["t1", "t2"] {
        for (n, users) in USERS.iter().enumerate() {
            let ids: Vec<usize> = users.clone().collect();
            let rule: &[&str] = &["g1"];
            let members: Vec<(&str, usize)> = (0..40).map(|u| ("g1", u)).collect();
            events.extend(sync_events(
                tenant,
                &format!("{tenant}-s{n}"),
                &ids,
                &[("open", None), ("gated", Some(("ANY_GROUP", rule)))],
                &members,
            ));
            for a in 0..300 {
                let app = if a % 3 == 0 { "gated" } else { "open" };
                let user = format!("u-{}", rng.next(12));
                let id = format!("{tenant}-act-{n}-{a}");
                let at = format!("2026-11-{:02}T{:02}:00:00Z", 1 + rng.next(20), rng.next(24));
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

    let dir = std::env::temp_dir().join(test_harness::unique_name("transformer-crash"));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("transformer.toml");
    let log = dir.join("transformer.log");
    std::fs::write(
        &config_path,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\nraw_topic = \"{}\"\noutput_prefix = \"{}\"\ngroup_id = \"{}\"\ntransactional_id = \"{}\"\ntransaction_timeout_ms = 20000\nrequest_timeout_ms = 20000\n[kafka.librdkafka_options]\n\"session.timeout.ms\" = \"6000\"\n[schema_registry]\nurl = \"{}\"\n[operations]\nlisten_addr = \"\"\nshutdown_deadline_ms = 20000\n[processing]\nbatch_max_records = 20\nbatch_max_wait_ms = 20\n",
            s.config.kafka.client.bootstrap_servers, s.raw_topic, s.config.kafka.output_prefix, s.config.kafka.group_id, s.config.kafka.transactional_id, s.config.registry.url
        ),
    )
    .unwrap();

    let expected_users: usize = 2 * USERS.iter().map(ExactSizeIterator::len).sum::<usize>();
    let expected_tombstones = 2 * (USERS[0].len() - USERS[2].len());
    let committed = || async {
        consume_all(&topics.users)
            .await
            .map(|r| r.len())
            .unwrap_or(0)
    };
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        let before = committed().await;
        let mut child = spawn(&config_path, &log);
        // Each kill lands while output is being written, however long start-up takes on a busy
        // machine: once this instance has committed something (or all is done), at a random
        // moment within the next 0.3 s. Transactions of 20 records keep the run long enough for
        // that: with 100 a fast transformer wrote everything before the first kill.
        let started = std::time::Instant::now();
        while before < expected_users + expected_tombstones
            && committed().await <= before
            && started.elapsed() < Duration::from_secs(90)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        let so_far = committed().await;
        eprintln!("killed with {so_far} user records committed");
        progress.push(so_far);
    }

    // Let it finish, then stop it gracefully with SIGTERM.
    let mut child = spawn(&config_path, &log);
    let users = wait_for(&topics.users, Duration::from_secs(120), |r| {
        r.len() >= expected_users + expected_tombstones
    })
    .await;
    let usage = wait_for(&topics.app_usage, Duration::from_secs(120), |r| {
        r.len() as u64 >= accesses.values().sum::<u64>()
    })
    .await;
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        exit.success(),
        "graceful shutdown exit status {exit}; log in {}",
        log.display()
    );

    let reg = registry(&s.config);
    // Users: each (user, sync) exactly once; each tombstone exactly once.
    let mut per_sync: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut tombstones: BTreeMap<String, u32> = BTreeMap::new();
    for r in &users {
        match &r.value {
            None => *tombstones.entry(key(r)).or_default() += 1,
            Some(_) => {
                let u = decode_user(&reg, r).await;
                *per_sync.entry((key(r), u.sync_id.unwrap())).or_default() += 1;
            }
        }
    }
    assert_eq!(
        users.len(),
        expected_users + expected_tombstones,
        "seed {seed}"
    );
    eprintln!("progress at each kill: {progress:?} of {}", users.len());
    // The test only proves something if some kills hit the transformer mid-work.
    assert!(
        progress.iter().any(|p| *p > 0 && *p < users.len()),
        "no kill happened while output was being written: {progress:?}"
    );
    for tenant in ["t1", "t2"] {
        for (n, range) in USERS.iter().enumerate() {
            for i in range.clone() {
                let k = (format!("{tenant}/u-{i}"), format!("{tenant}-s{n}"));
                assert_eq!(per_sync.get(&k), Some(&1), "{k:?} seed {seed}");
            }
        }
        for i in USERS[2].end..USERS[0].end {
            assert_eq!(
                tombstones.get(&format!("{tenant}/u-{i}")),
                Some(&1),
                "tombstone u-{i} seed {seed}"
            );
        }
    }
    // App usage: the totals of each pair are exactly 1..=n in order.
    let mut totals: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &usage {
        let u = decode_usage(&reg, r).await;
        totals.entry(key(r)).or_default().push(u.access_count_total);
    }
    assert_eq!(totals.len(), accesses.len());
    for (pair, n) in &accesses {
        let want: Vec<i64> = (1..=i64::try_from(*n).unwrap()).collect();
        assert_eq!(totals.get(pair), Some(&want), "{pair} seed {seed}");
    }
    // Applications: each (app, sync) once, 2 apps x 3 syncs x 2 tenants.
    let apps = consume_all(&topics.applications).await.unwrap();
    assert_eq!(apps.len(), 12);
    let dead = consume_all(&topics.dead_letter).await.unwrap();
    assert!(dead.is_empty(), "no dead letters expected");
    let _ = std::fs::remove_dir_all(&dir);
}
