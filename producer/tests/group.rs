//! Scale-out of `producer run` on a consumer group (`tenant_source = "topic"`): tenants live on
//! a six-partition compacted tenants topic managed with `producer tenants add|update|remove|list`;
//! three instances share its partitions, one transactional producer per owned partition. One
//! instance is killed with SIGKILL while snapshot syncs are running: the survivors take its
//! partitions within the session timeout and finish its tenants' syncs from their checkpoints.
//! Then one survivor is frozen (SIGSTOP) until the other has taken its partitions, and thawed: a
//! zombie whose stale commits are fenced. A tenant added at runtime starts and syncs; a removed
//! one stops writing. A `read_committed`
//! reader then sees every completed sync equal to the simulator's truth (no entity twice) and
//! every sign-on exactly once, and nothing of the removed tenant after its removal.

mod common;
#[path = "common/group_support.rs"]
mod group_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use group_support::{
    Deadline, Instance, Signons, SimTenant, Workdir, activity_counts, describe_topic, find_field,
    listed_tenants, partition_of, strip_last_signon, tenants_cmd, tenants_topic_records,
    tenants_with_completed_sync, truth_signons, truth_without_last_signon,
};
use pingone_sim::{SimConfig, TenantSpec};

/// Tenants in the simulator.
const TENANTS: usize = 30;
/// Tenants added before the instances start (`tenant-00` … `tenant-27`).
const INITIAL: usize = 28;
/// Added while the instances run.
const LATE: usize = 28;
/// In the simulator, never added: it must write nothing.
const NEVER: usize = 29;
/// Removed while the instances run.
const REMOVED: usize = 5;
/// Partitions of the tenants topic.
const PARTITIONS: i32 = 6;
/// How far back a tenant without checkpoint starts polling activity.
const LOOKBACK_S: i64 = 6 * 3600;
/// Activity polling (`activity_poll_interval_s` and `activity_safety_lag_s`).
const POLL_S: u64 = 2;
const LAG_S: u64 = 2;
/// The consumer group's session timeout (the producer's default).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

fn tenant_id(i: usize) -> String {
    format!("tenant-{i:02}")
}

/// The tenant's `[[tenants]]` entry. Requests are rate-limited (2 to 5 per second, by tenant)
/// and pages are small, so that a sync takes several seconds and is still running when an
/// instance is killed; one page per transaction, so that a killed sync has committed progress
/// to resume from.
fn tenant_entry(i: usize, t: &SimTenant) -> String {
    common::tenant_toml(
        &t.id,
        &t.info,
        &t.secret_env,
        &format!(
            r#"requests_per_second = {}
directory_page_size = 20
snapshot_pages_per_transaction = 1
snapshot_interval_s = 3600
activity_poll_interval_s = {POLL_S}
activity_safety_lag_s = {LAG_S}
activity_overlap_s = 30
activity_initial_lookback_s = {LOOKBACK_S}
activity_action_types = ["USER.ACCESS_ALLOWED"]
application_signons_days = 0"#,
            2 + (i + 1) % 4
        ),
    )
}

/// Sums of `producer_owned_partitions` and `producer_running_tenants` over `instances`, and each
/// instance's pair (for messages).
async fn group_gauges(
    instances: &[&Instance],
) -> (f64, f64, Vec<(String, Option<f64>, Option<f64>)>) {
    let mut each = Vec::new();
    for i in instances {
        let (owned, running) = i.gauges().await;
        each.push((i.name.clone(), owned, running));
    }
    let owned = each.iter().filter_map(|e| e.1).sum();
    let running = each.iter().filter_map(|e| e.2).sum();
    (owned, running, each)
}

/// Waits until `instances` own all partitions between them, each at least one, and run
/// `tenants` tenants in all; prints how long it took.
async fn wait_for_group(what: &str, instances: &[&Instance], tenants: usize, limit: Duration) {
    let deadline = Deadline::new(what, limit);
    loop {
        let (owned, running, each) = group_gauges(instances).await;
        let everyone = each.iter().all(|e| e.1.is_some_and(|n| n >= 1.0));
        if everyone && owned == f64::from(PARTITIONS) && running == tenants as f64 {
            eprintln!("{what}: after {:?}", deadline.elapsed());
            return;
        }
        deadline.check(&each);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the sum of `producer_running_tenants` over `instances` is `tenants`.
async fn wait_for_running(what: &str, instances: &[&Instance], tenants: usize, limit: Duration) {
    let deadline = Deadline::new(what, limit);
    loop {
        let (_, running, each) = group_gauges(instances).await;
        if running == tenants as f64 {
            return;
        }
        deadline.check(&each);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every sign-on of `wanted` is on the raw topic (`read_committed`).
async fn wait_for_signons(what: &str, raw_topic: &str, wanted: &BTreeSet<String>, limit: Duration) {
    let deadline = Deadline::new(what, limit);
    loop {
        let records = common::read_raw(raw_topic).await;
        let written: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.event.kind == "activity")
            .filter_map(|r| r.event.entity_id.as_deref())
            .collect();
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|id| !written.contains(id.as_str()))
            .collect();
        if missing.is_empty() {
            return;
        }
        deadline.check(&missing);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts `tenants list` shows exactly `expected` among the test's tenants.
async fn assert_listed(
    dir: &Workdir,
    config: &std::path::Path,
    envs: &[(String, String)],
    known: &[String],
    expected: &BTreeSet<String>,
    when: &str,
) {
    let listed = tenants_cmd(dir, config, &["list"], envs).await;
    assert!(listed.success, "tenants list failed {when}: {listed:?}");
    assert_eq!(
        &listed_tenants(&listed.stdout, known),
        expected,
        "tenants listed {when}; stdout:\n{}",
        listed.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_share_the_tenants_topic_and_a_killed_one_loses_and_duplicates_nothing() {
    let t0 = schemas::time::now_ms();

    // 1. The simulator: 30 small tenants, each with its own secret.
    let specs: Vec<TenantSpec> = (0..TENANTS)
        .map(|i| {
            let n = i as u64;
            TenantSpec::generated(&tenant_id(i), 200 + (n * 37) % 101, 100 + n)
        })
        .collect();
    let sim = pingone_sim::spawn(SimConfig::with_tenants(specs))
        .await
        .expect("simulator");
    let mut tenants: Vec<SimTenant> = Vec::new();
    for (i, info) in sim.tenants().into_iter().enumerate() {
        let admin = sim.admin(&info.environment_id);
        let ids = |list: Vec<serde_json::Value>, n: usize| -> Vec<String> {
            list.iter()
                .filter_map(|v| v["id"].as_str().map(str::to_owned))
                .take(n)
                .collect()
        };
        let users = ids(admin.truth_users().await.expect("users"), 40);
        let apps = ids(admin.truth_applications().await.expect("apps"), 5);
        assert!(!users.is_empty() && !apps.is_empty(), "tenant {i} is empty");
        tenants.push(SimTenant {
            id: tenant_id(i),
            partition: partition_of(&tenant_id(i), PARTITIONS),
            secret_env: format!("GROUP_TEST_SECRET_{i:02}"),
            info,
            users,
            apps,
        });
    }
    let known: Vec<String> = tenants.iter().map(|t| t.id.clone()).collect();
    let secrets: Vec<(String, String)> = tenants
        .iter()
        .map(|t| {
            (
                t.secret_env.clone(),
                t.info.client_secret.expose().to_owned(),
            )
        })
        .collect();
    // Every partition holds initial tenants, so every instance has work and the killed one
    // takes tenants down with it.
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for t in &tenants[..INITIAL] {
        *per_partition.entry(t.partition).or_default() += 1;
    }
    assert!(
        per_partition.len() == PARTITIONS as usize && per_partition.values().all(|n| *n >= 2),
        "initial tenants by partition: {per_partition:?}"
    );
    // A tenant sharing the removed tenant's partition (so its transactional producer) stays.
    let neighbour = (0..INITIAL)
        .find(|i| *i != REMOVED && tenants[*i].partition == tenants[REMOVED].partition)
        .expect("a neighbour of the removed tenant");

    // 2. Unique topics, prefix and group; the tenants topic is created by the first command.
    let dir = Workdir::new("producer-group");
    let names = common::Names::new("group");
    let tenants_topic = common::unique("tenants-group");
    let group_id = common::unique("producer-group-id");
    let global = common::global_toml(&names, "");
    assert!(global.starts_with("[kafka]\n"), "{global}");
    let config_text = global.replacen(
        "[kafka]\n",
        &format!(
            "[kafka]\ntenant_source = \"topic\"\ntenants_topic = \"{tenants_topic}\"\n\
             tenant_partitions = {PARTITIONS}\ngroup_id = \"{group_id}\"\n"
        ),
        1,
    );
    let config = dir.file("producer.toml");
    std::fs::write(&config, &config_text).expect("config");
    let entries = |range: std::ops::Range<usize>| -> String {
        range.map(|i| tenant_entry(i, &tenants[i])).collect()
    };
    let first_file = dir.file("tenants-first.toml");
    std::fs::write(&first_file, entries(0..20)).expect("tenants file");
    let second_file = dir.file("tenants-second.toml");
    std::fs::write(&second_file, entries(20..INITIAL)).expect("tenants file");
    let late_file = dir.file("tenant-late.toml");
    std::fs::write(&late_file, entries(LATE..LATE + 1)).expect("tenants file");
    let never_file = dir.file("tenant-never.toml");
    std::fs::write(&never_file, entries(NEVER..NEVER + 1)).expect("tenants file");
    let again_file = dir.file("tenant-again.toml");
    std::fs::write(&again_file, entries(3..4)).expect("tenants file");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();

    // 3. `tenants add` for 28 tenants from two files; `list` shows them.
    for file in [&first_file, &second_file] {
        let added = tenants_cmd(&dir, &config, &["add", "--file", &path(file)], &secrets).await;
        assert!(added.success, "tenants add {}: {added:?}", file.display());
    }
    let mut expected: BTreeSet<String> = known[..INITIAL].iter().cloned().collect();
    let listed = async |expected: &BTreeSet<String>, when: &str| {
        assert_listed(&dir, &config, &secrets, &known, expected, when).await;
    };
    listed(&expected, "after adding 28").await;
    // Adding an existing tenant fails and names it; updating an absent one fails; a tenant
    // whose secret variable is unset is refused (validated like `validate-config`).
    let refused = async |args: &[&str], envs: &[(String, String)], what: &str| {
        let out = tenants_cmd(&dir, &config, args, envs).await;
        assert!(!out.success, "{what} succeeded: {out:?}");
        format!("{}{}", out.stdout, out.stderr)
    };
    let again = refused(
        &["add", "--file", &path(&again_file)],
        &secrets,
        "adding an existing tenant",
    )
    .await;
    assert!(
        again.contains(&tenants[3].id),
        "the error names the existing tenant: {again}"
    );
    refused(
        &["update", "--file", &path(&never_file)],
        &secrets,
        "updating an absent tenant",
    )
    .await;
    refused(
        &["add", "--file", &path(&late_file)],
        &[],
        "adding a tenant without its secret variable",
    )
    .await;
    listed(&expected, "after refused commands").await;
    // The tenants topic: compacted, six partitions, each tenant on murmur2(id) % 6, values
    // holding the secret's variable name and never the secret.
    let (partitions, policy) = describe_topic(&tenants_topic).await;
    assert_eq!(
        partitions, PARTITIONS as usize,
        "partitions of {tenants_topic}"
    );
    assert_eq!(
        policy.as_deref(),
        Some("compact"),
        "cleanup.policy of {tenants_topic}"
    );
    let stored = tenants_topic_records(&tenants_topic).await;
    assert_eq!(
        stored.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "keys of {tenants_topic}"
    );
    for t in &tenants[..INITIAL] {
        let (partition, value) = &stored[&t.id];
        assert_eq!(*partition, t.partition, "partition of {} (murmur2)", t.id);
        let value = value.as_deref().expect("a tenant's value");
        let text = String::from_utf8_lossy(value);
        for (_, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret in {tenants_topic}: {text}"
            );
        }
        // The settings may sit at the top level or inside an envelope: fields are looked up at
        // any depth.
        let json: serde_json::Value = serde_json::from_slice(value).expect("tenant value is JSON");
        assert_eq!(
            find_field(&json, "client_secret_env"),
            Some(&serde_json::json!(t.secret_env)),
            "{text}"
        );
        assert_eq!(
            find_field(&json, "environment_id"),
            Some(&serde_json::json!(t.info.environment_id)),
            "{text}"
        );
        assert_eq!(find_field(&json, "client_secret"), None, "{text}");
    }

    // 4. Three instances; they share the six partitions and run the 28 tenants.
    let envs = secrets.clone();
    let a = Instance::start("a", &config, &dir, &envs);
    let b = Instance::start("b", &config, &dir, &envs);
    let c = Instance::start("c", &config, &dir, &envs);
    let mut signons = Signons::default();
    let mut running: Vec<usize> = (0..INITIAL).collect();
    wait_for_group(
        "3 instances own the 6 partitions and run 28 tenants",
        &[&a, &b, &c],
        INITIAL,
        Duration::from_secs(90),
    )
    .await;

    // 5. Kill -9 one instance once the first syncs have completed, while others still run.
    let deadline = Deadline::new("a first sync completes", Duration::from_secs(120));
    let (victim, completed_at_kill) = loop {
        signons.some(&sim, &tenants, &running, 2).await;
        let mut completed = BTreeSet::new();
        let mut busiest: Option<(usize, f64)> = None;
        for (n, i) in [&a, &b, &c].into_iter().enumerate() {
            if let Some(body) = i.metrics().await {
                completed.extend(tenants_with_completed_sync(&body));
                let runs = group_support::metric_sum(&body, "producer_running_tenants");
                if let Some(r) = runs
                    && busiest.is_none_or(|(_, most)| r > most)
                {
                    busiest = Some((n, r));
                }
            }
        }
        if !completed.is_empty()
            && let Some((n, _)) = busiest
        {
            break (n, completed);
        }
        deadline.check(&completed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        completed_at_kill.len() < INITIAL,
        "every sync completed before the kill: the test proves nothing"
    );
    let mut instances = vec![a, b, c];
    let killed = instances.remove(victim);
    let killed_name = killed.name.clone();
    let (owned_by_killed, running_on_killed) = killed.gauges().await;
    killed.kill();
    eprintln!(
        "killed instance {killed_name} (owning {owned_by_killed:?} partitions, running \
         {running_on_killed:?} tenants) with {} of {INITIAL} syncs completed",
        completed_at_kill.len()
    );
    let survivors: Vec<&Instance> = instances.iter().collect();
    wait_for_group(
        "the survivors own all 6 partitions and run the 28 tenants",
        &survivors,
        INITIAL,
        SESSION_TIMEOUT + Duration::from_secs(30),
    )
    .await;
    // Every tenant completes a sync, those of the killed instance included.
    let deadline = Deadline::new("every tenant completes a sync", Duration::from_secs(120));
    loop {
        signons.some(&sim, &tenants, &running, 2).await;
        let records = common::read_raw(&names.raw_topic).await;
        let without: Vec<&String> = known[..INITIAL]
            .iter()
            .filter(|t| common::completed_sync_ids(&records, t).is_empty())
            .collect();
        if without.is_empty() {
            break;
        }
        deadline.check(&without);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // 5b. A zombie: one survivor is frozen (SIGSTOP) past the session timeout, so the other
    // takes all six partitions, fencing the frozen one's writers, and goes on writing. Then it is
    // thawed: its streams wake up with stale checkpoints and try to commit what the other has
    // already written. Fencing refuses those commits; the exactly-once checks below would find
    // the duplicates otherwise.
    let (frozen, awake) = (survivors[0], survivors[1]);
    frozen.signal("-STOP");
    let deadline = Deadline::new(
        "the awake survivor owns all 6 partitions and runs the 28 tenants",
        SESSION_TIMEOUT + Duration::from_secs(30),
    );
    loop {
        signons.some(&sim, &tenants, &running, 2).await;
        let gauges = awake.gauges().await;
        if gauges == (Some(f64::from(PARTITIONS)), Some(INITIAL as f64)) {
            break;
        }
        deadline.check(&gauges);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for _ in 0..4 {
        signons.some(&sim, &tenants, &running, 2).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    frozen.signal("-CONT");
    wait_for_group(
        "the thawed survivor rejoins",
        &survivors,
        INITIAL,
        SESSION_TIMEOUT + Duration::from_secs(50),
    )
    .await;

    // 6a. A tenant added at runtime starts within seconds and completes a sync.
    let added = tenants_cmd(
        &dir,
        &config,
        &["add", "--file", &path(&late_file)],
        &secrets,
    )
    .await;
    assert!(added.success, "tenants add (late): {added:?}");
    expected.insert(tenants[LATE].id.clone());
    listed(&expected, "after the late add").await;
    wait_for_running(
        "the added tenant runs",
        &survivors,
        INITIAL + 1,
        Duration::from_secs(30),
    )
    .await;
    running.push(LATE);
    let deadline = Deadline::new("the added tenant completes a sync", Duration::from_secs(90));
    loop {
        signons.some(&sim, &tenants, &running, 1).await;
        let mut synced = false;
        for i in &survivors {
            if let Some(body) = i.metrics().await {
                synced |= tenants_with_completed_sync(&body).contains(&tenants[LATE].id);
            }
        }
        if synced {
            break;
        }
        deadline.check(&tenants[LATE].id);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 6b. A removed tenant stops. Before removing it, all its sign-ons so far are written.
    running.retain(|i| *i != REMOVED);
    let before = signons.append(&sim, &tenants, REMOVED).await;
    let mut removed_marker = BTreeMap::new();
    removed_marker.insert(REMOVED, before.at_ms);
    wait_for_signons(
        "the removed tenant's last sign-on before its removal is written",
        &names.raw_topic,
        &signons
            .appended
            .iter()
            .filter(|s| s.tenant == REMOVED)
            .map(|s| s.id.clone())
            .collect(),
        Duration::from_secs(30),
    )
    .await;
    let removed = tenants_cmd(
        &dir,
        &config,
        &["remove", "--tenant", &tenants[REMOVED].id],
        &secrets,
    )
    .await;
    assert!(removed.success, "tenants remove: {removed:?}");
    expected.remove(&tenants[REMOVED].id);
    wait_for_running(
        "the removed tenant stops",
        &survivors,
        INITIAL,
        Duration::from_secs(30),
    )
    .await;
    listed(&expected, "after the removal").await;
    test_harness::kafka::wait_for_no_open_transaction(&names.raw_topic, Duration::from_secs(60))
        .await
        .expect("raw topic settles");
    let records = common::read_raw(&names.raw_topic).await;
    let removed_count = records
        .iter()
        .filter(|r| r.event.tenant_id == tenants[REMOVED].id)
        .count();
    // A sign-on of the removed tenant after its removal is not collected; one of its
    // neighbour on the same partition is.
    let after_removal = signons.append(&sim, &tenants, REMOVED).await;
    let control = signons.append(&sim, &tenants, neighbour).await;
    wait_for_signons(
        "the neighbour's sign-on after the removal is written",
        &names.raw_topic,
        &BTreeSet::from([control.id.clone()]),
        Duration::from_secs(30),
    )
    .await;
    let quiet = Duration::from_secs(2 * POLL_S + LAG_S + 2);
    let since = u64::try_from(schemas::time::now_ms() - after_removal.at_ms).unwrap_or(0);
    tokio::time::sleep(quiet.saturating_sub(Duration::from_millis(since))).await;
    let records = common::read_raw(&names.raw_topic).await;
    assert!(
        !activity_counts(&records, &tenants[REMOVED].id).contains_key(&after_removal.id),
        "a sign-on of the removed tenant after its removal was written"
    );

    // 7. Every running tenant catches up past a last sign-on; then the survivors stop.
    let mut markers: BTreeMap<usize, i64> = removed_marker;
    for i in running.clone() {
        let last = signons.append(&sim, &tenants, i).await;
        markers.insert(i, last.at_ms);
    }
    let wanted: BTreeSet<String> = signons
        .appended
        .iter()
        .filter(|s| s.id != after_removal.id)
        .map(|s| s.id.clone())
        .collect();
    wait_for_signons(
        "every appended sign-on is written",
        &names.raw_topic,
        &wanted,
        Duration::from_secs(60),
    )
    .await;
    let t_end = schemas::time::now_ms();
    for i in instances {
        i.stop(Duration::from_secs(30)).await;
    }
    test_harness::kafka::wait_for_no_open_transaction(&names.raw_topic, Duration::from_secs(60))
        .await
        .expect("raw topic settles");
    let records = common::read_raw(&names.raw_topic).await;

    // Keys and tenants: every record is keyed by its tenant; the never-added tenant wrote
    // nothing; the removed one nothing after its removal settled.
    for r in &records {
        assert_eq!(
            r.key, r.event.tenant_id,
            "record key at {}/{}",
            r.partition, r.offset
        );
    }
    assert!(
        !records
            .iter()
            .any(|r| r.event.tenant_id == tenants[NEVER].id),
        "a tenant never added wrote raw events"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r.event.tenant_id == tenants[REMOVED].id)
            .count(),
        removed_count,
        "raw events of the removed tenant after its removal"
    );
    let stored = tenants_topic_records(&tenants_topic).await;
    assert_eq!(
        stored.get(&tenants[REMOVED].id).map(|(_, v)| v.is_none()),
        Some(true),
        "the removed tenant's latest record on {tenants_topic} is a tombstone"
    );

    // Every sync that started completed, and holds exactly the simulator's entities, each once.
    // Appended sign-ons change their users' `lastSignOn`, which a sync may see either way: only
    // that field of those users is left out of the comparison.
    let mut syncs = 0;
    for (i, t) in tenants.iter().enumerate().filter(|(i, _)| *i != NEVER) {
        let completed = common::completed_sync_ids(&records, &t.id);
        assert!(!completed.is_empty(), "tenant {} completed no sync", t.id);
        // A sync interrupted by the kill or a partition move is resumed, never abandoned.
        let started: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.event.tenant_id == t.id && r.event.kind == "sync_started")
            .filter_map(|r| r.event.sync_id.as_deref())
            .collect();
        assert_eq!(
            started,
            completed.iter().map(String::as_str).collect(),
            "syncs of {} started but never completed",
            t.id
        );
        let touched = signons.users_of(i);
        let truth =
            truth_without_last_signon(&common::truth(&sim, &t.info.environment_id).await, &touched);
        for sync_id in &completed {
            let mut contents = common::completed_sync_contents(&records, &t.id, sync_id);
            if let Some(users) = contents.get_mut("user") {
                strip_last_signon(users, &touched);
            }
            common::assert_matches_truth(&contents, &truth);
            syncs += 1;
        }
    }

    // Every sign-on exactly once: none twice; every appended one (but the one after the
    // removal) present; everything the simulator holds from the latest possible start of
    // polling up to each tenant's last sign-on present; nothing the simulator does not hold.
    let floor = t_end - LOOKBACK_S * 1000 + 10_000;
    let mut exactly_once = 0;
    for (i, t) in tenants.iter().enumerate().filter(|(i, _)| *i != NEVER) {
        let seen = activity_counts(&records, &t.id);
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "activities of {} written twice: {twice:?}",
            t.id
        );
        let env = &t.info.environment_id;
        let must = truth_signons(&sim, env, floor, markers[&i] + 1).await;
        let may = truth_signons(&sim, env, t0 - LOOKBACK_S * 1000 - 120_000, t_end + 60_000).await;
        let missing: Vec<_> = must.iter().filter(|id| !seen.contains_key(*id)).collect();
        assert!(missing.is_empty(), "sign-ons of {} lost: {missing:?}", t.id);
        let extra: Vec<_> = seen.keys().filter(|id| !may.contains(*id)).collect();
        assert!(
            extra.is_empty(),
            "activities of {} not in the simulator: {extra:?}",
            t.id
        );
        for s in signons.appended.iter().filter(|s| s.tenant == i) {
            let n = seen.get(&s.id).copied().unwrap_or(0);
            let want = usize::from(s.id != after_removal.id);
            assert_eq!(
                n, want,
                "appended sign-on {} of {} written {n} times",
                s.id, t.id
            );
        }
        exactly_once += seen.len();
    }
    assert!(
        exactly_once > 100,
        "too few sign-ons to test: {exactly_once}"
    );

    // No secret in any log or command output.
    for log in dir.logs() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for (var, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the secret of {var} in {}",
                log.display()
            );
        }
    }
    eprintln!(
        "group test: {syncs} complete syncs of {} tenants, {exactly_once} sign-ons exactly once \
         ({} appended), instance {killed_name} killed with {} of {INITIAL} syncs done",
        TENANTS - 1,
        signons.appended.len(),
        completed_at_kill.len()
    );
    drop(dir);
    sim.shutdown().await;
}
