//! Exactly-once under crashes: the `transformer` binary is killed with SIGKILL at random moments,
//! many times, while it works through three syncs of two tenants and interleaved accesses; then
//! it runs to the end and stops on SIGTERM. The `read_committed` outputs must hold every
//! expected record exactly once: no duplicates, no gaps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use test_harness::kafka::consume_all;

const TENANTS: [&str; 2] = ["t1", "t2"];
const USERS: [std::ops::Range<usize>; 3] = [0..1_000, 0..900, 0..800];
const KILLS: usize = 8;

fn spawn(config_path: &std::path::Path, log: &std::path::Path) -> Running {
    let bin = env!("CARGO_BIN_EXE_transformer");
    Running::start(bin, config_path, log, &[("RUST_LOG", "warn".to_owned())])
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
    let workload = syncs_with_accesses(&TENANTS, &USERS, 40, 300, |_, _| {
        (rng.next(12) as usize, 1 + rng.next(20), rng.next(24))
    });
    let accesses = &workload.accesses;
    produce_events(&s, &workload.events).await;

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

    let expected_users: usize =
        TENANTS.len() * USERS.iter().map(ExactSizeIterator::len).sum::<usize>();
    let expected_tombstones = TENANTS.len() * (USERS[0].len() - USERS[2].len());
    let committed = || async {
        consume_all(&topics.users)
            .await
            .map(|r| r.len())
            .unwrap_or(0)
    };
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        let before = committed().await;
        let child = spawn(&config_path, &log);
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
        drop(child); // SIGKILL
        let so_far = committed().await;
        eprintln!("killed with {so_far} user records committed");
        progress.push(so_far);
    }

    // Let it finish, then stop it gracefully with SIGTERM.
    let child = spawn(&config_path, &log);
    let users = wait_for(&topics.users, Duration::from_secs(120), |r| {
        r.len() >= expected_users + expected_tombstones
    })
    .await;
    wait_for(&topics.app_usage, Duration::from_secs(120), |r| {
        r.len() as u64 >= accesses.values().sum::<u64>()
    })
    .await;
    child.stop(&log).await;

    eprintln!("progress at each kill: {progress:?} of {}", users.len());
    // The test only proves something if some kills hit the transformer mid-work.
    assert!(
        progress.iter().any(|p| *p > 0 && *p < users.len()),
        "no kill happened while output was being written: {progress:?}"
    );
    check_exactly_once(
        &s.config,
        &TENANTS,
        &USERS,
        &workload,
        None,
        &format!("seed {seed}; log in {}", log.display()),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
