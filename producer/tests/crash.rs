//! Crash safety of the `producer` binary: it is killed with SIGKILL at random moments during
//! snapshot scans and activity polling, restarted, and finally left to catch up. A
//! `read_committed` reader then sees every sign-on exactly once, and every completed sync holds
//! exactly the simulator's entities.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use pingone_sim::admin::SignonSpec;
use pingone_sim::{SimConfig, TenantSpec};
use producer::checkpoint::{ActivityCheckpoint, activity_key};
use rand::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_producer");
const KILLS: usize = 8;

fn spawn(path: &std::path::Path, secret: &str, log: &std::path::Path) -> common::ChildGuard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    common::ChildGuard(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(path)
            .env("CRASH_SECRET", secret)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn producer"),
    )
}

fn ms_to_rfc3339(ms: i64) -> String {
    schemas::time::format_ms(ms)
}

async fn activity_position(kafka: &producer::config::KafkaConfig) -> Option<i64> {
    let found = producer::kafka::read_checkpoint(kafka, &activity_key("crashy"))
        .await
        .expect("read checkpoints");
    found.map(|b| {
        producer::checkpoint::decode::<ActivityCheckpoint>(&b)
            .expect("checkpoint")
            .window_end_ms
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let mut spec = TenantSpec::generated("crash", 1000, 31);
    spec.users_page_max = 50;
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![spec]))
        .await
        .expect("simulator");
    let t = sim.tenants()[0].clone();
    let admin = sim.admin(&t.environment_id);
    let names = common::Names::new("crash");
    let lookback_s = 6 * 3600;
    let text = format!(
        "{}{}",
        common::global_toml(&names, ""),
        common::tenant_toml(
            "crashy",
            &t,
            "CRASH_SECRET",
            &format!(
                r#"requests_per_second = 60
directory_page_size = 50
snapshot_pages_per_transaction = 1
snapshot_interval_s = 3
activity_poll_interval_s = 1
activity_safety_lag_s = 1
activity_overlap_s = 30
activity_window_max_s = 900
activity_page_size = 4
activity_initial_lookback_s = {lookback_s}
activity_action_types = ["USER.ACCESS_ALLOWED"]"#
            ),
        ),
    );
    let config = common::config_from(&text, &[("CRASH_SECRET", t.client_secret.expose())]);
    let path = std::env::temp_dir().join(format!("{}.toml", common::unique("crash")));
    std::fs::write(&path, &text).expect("config");
    let log = std::env::temp_dir().join(format!("{}.log", common::unique("crash")));

    let users: Vec<String> = admin
        .truth_users()
        .await
        .expect("users")
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_owned))
        .take(20)
        .collect();
    let apps: Vec<String> = admin
        .truth_applications()
        .await
        .expect("apps")
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .take(5)
        .collect();

    let t0 = schemas::time::now_ms();
    let mut rng = rand::rng();
    for round in 0..KILLS {
        let mut child = spawn(&path, t.client_secret.expose(), &log);
        // New sign-ons arrive while the producer runs.
        let now = schemas::time::now_ms();
        let specs: Vec<SignonSpec> = (0..5)
            .map(|i| SignonSpec {
                user_id: users[(round * 5 + i) % users.len()].clone(),
                application_id: apps[i % apps.len()].clone(),
                at: ms_to_rfc3339(now - i64::try_from(i).unwrap_or(0) * 10),
            })
            .collect();
        admin.append_signons(&specs).await.expect("append sign-ons");
        let wait = Duration::from_millis(rng.random_range(700..4000));
        tokio::time::sleep(wait).await;
        child.0.kill().expect("kill -9");
        let _ = child.0.wait();
    }

    // Final run: let it catch up past the last appended sign-on, then stop it.
    let last_append = schemas::time::now_ms();
    let mut child = spawn(&path, t.client_secret.expose(), &log);
    // Fails when the raw topic gains nothing for 120 s (stuck), or after 480 s in all.
    let mut progress = test_harness::Stall::new(Duration::from_secs(120));
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let records = common::read_raw(&names.raw_topic).await;
        let caught_up = activity_position(&config.kafka)
            .await
            .is_some_and(|p| p > last_append + 1000);
        let syncs = common::completed_sync_ids(&records, "crashy").len();
        if caught_up && syncs >= 2 {
            break;
        }
        if let Err(e) = progress.observe(records.len()) {
            panic!(
                "producer did not catch up (activity caught up: {caught_up}, complete syncs: \
                 {syncs}, raw records: {e}); its log ends:\n{}",
                test_harness::log_tail(&log, 30)
            );
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    let window_end = activity_position(&config.kafka)
        .await
        .expect("activity checkpoint");

    let records = common::read_raw(&names.raw_topic).await;

    // Activities: exactly once.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| r.event.kind == "activity") {
        *seen
            .entry(r.event.entity_id.clone().expect("activity id"))
            .or_default() += 1;
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "activities written twice: {dupes:?}");
    let start = t0 - lookback_s * 1000;
    let must_have = common::truth_signons_between(&admin, start + 10_000, window_end).await;
    let may_have = common::truth_signons_between(&admin, start - 60_000, window_end).await;
    let written: BTreeSet<String> = seen.keys().cloned().collect();
    assert!(
        must_have.len() > 20,
        "too few sign-ons to test: {}",
        must_have.len()
    );
    let missing: Vec<_> = must_have.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "{} sign-ons lost, e.g. {:?}",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
    let extra: Vec<_> = written.difference(&may_have).collect();
    assert!(
        extra.is_empty(),
        "activities not in the simulator: {extra:?}"
    );

    // Every completed sync is complete.
    let truth = common::truth(&sim, &t.environment_id).await;
    let completed = common::completed_sync_ids(&records, "crashy");
    let started = records
        .iter()
        .filter(|r| r.event.kind == "sync_started")
        .count();
    for sync_id in &completed {
        let contents = common::completed_sync_contents(&records, "crashy", sync_id);
        let user_ids: BTreeSet<&String> = contents
            .get("user")
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            user_ids,
            truth.users.keys().collect(),
            "users of sync {sync_id}"
        );
        assert_eq!(
            contents.get("group"),
            Some(&truth.groups),
            "groups of sync {sync_id}"
        );
        assert_eq!(
            contents.get("application"),
            Some(&truth.applications),
            "apps of sync {sync_id}"
        );
        let members: BTreeSet<String> = contents
            .get("group_membership")
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(members, truth.memberships, "memberships of sync {sync_id}");
    }
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let resumed = logs.matches("resuming snapshot sync").count();
    eprintln!(
        "crash test: {KILLS} kills, {started} syncs started, {} completed, {resumed} resumed after a kill, {} sign-ons exactly once",
        completed.len(),
        written.len()
    );
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(log);
    sim.shutdown().await;
}
