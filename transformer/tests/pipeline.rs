//! End-to-end test of the transformer library on the real broker and registry: two syncs of a
//! tenant plus a second tenant, usage activities, deletes and poison input; checks field values
//! (also with an independent Python fastavro decoder), tombstones, dead letters, metrics, the
//! replay of a past sync and the license report; then a restore from a record whose schema is
//! lost, and a restart that must not need the registry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::manual_is_multiple_of
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use schemas::raw::kind;
use schemas::usage::UserUsage;
use schemas::wire;
use serde_json::{Value, json};
use test_harness::kafka::{ConsumedRecord, TopicOptions, consume_all, create_topic};
use tokio_util::sync::CancellationToken;
use transformer::metrics::Metrics;
use transformer::replay::{ReplayArgs, replay};
use transformer::report::{self, Format, ReportArgs};

/// can_authenticate, locality, mfa_enabled, region, status, type, verify_status.
type Seven = (
    Option<bool>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

const WAIT: Duration = Duration::from_secs(120);

/// The seven integration fields as the test reads them from the PingOne JSON it generated.
fn seven_from_json(u: &Value) -> Seven {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    (
        u["account"]["canAuthenticate"].as_bool(),
        s(&u["address"]["locality"]),
        u["mfaEnabled"].as_bool(),
        s(&u["address"]["region"]),
        s(&u["account"]["status"]),
        s(&u["type"]),
        s(&u["verifyStatus"]),
    )
}

fn seven_from_record(u: &UserUsage) -> Seven {
    (
        u.can_authenticate,
        u.locality.clone(),
        u.mfa_enabled,
        u.region.clone(),
        u.status.clone(),
        u.user_type.clone(),
        u.verify_status.clone(),
    )
}

fn header(r: &ConsumedRecord, name: &str) -> String {
    String::from_utf8(r.header(name).unwrap_or_default().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_deletes_poison_replay_and_report() {
    let s = setup("pipeline", 2).await;
    let topics = s.config.kafka.topics.clone();
    let reg = registry(&s.config);
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let ops = pipeline_io::ops::OpsServer::start("127.0.0.1:0".parse().unwrap(), metrics.clone())
        .await
        .unwrap();
    let health = ops.addr;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("http://{health}{path}");
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(
        get("/readyz").await.0,
        503,
        "not ready before the loop runs"
    );
    let task = tokio::spawn(transformer::pipeline::run(
        s.config.clone(),
        shutdown.clone(),
        metrics.clone(),
    ));

    // First sync of acme, a sync of globex, accesses, and poison in between.
    let rule_any: &[&str] = &["g1"];
    let rule_all: &[&str] = &["g1", "g2"];
    let users1: Vec<usize> = (1..=12).collect();
    let mut events = sync_events(
        "acme",
        "s1",
        &users1,
        &[
            ("open", None),
            ("gated", Some(("ANY_GROUP", rule_any))),
            ("both", Some(("ALL_GROUPS", rule_all))),
        ],
        &[
            ("g1", 1),
            ("g1", 2),
            ("g1", 3),
            ("g1", 4),
            ("g2", 2),
            ("g2", 3),
            ("g2", 9),
        ],
    );
    events.extend(sync_events("globex", "g-s1", &[100, 101, 102], &[], &[]));
    for (id, app, user, at) in [
        ("act-1", "open", "u-1", "2026-11-20T10:00:00Z"),
        ("act-2", "open", "u-2", "2026-10-01T10:00:00Z"),
        ("act-3", "open", "u-5", "2026-06-01T10:00:00Z"),
        ("act-4", "gated", "u-1", "2026-11-19T10:00:00Z"),
        ("act-5", "gated", "u-1", "2026-11-18T10:00:00Z"),
    ] {
        events.push(event(
            "acme",
            kind::ACTIVITY,
            Some(id),
            None,
            &access_json(id, app, user, at),
        ));
    }
    let valid = framed(s.schema_id, &events[1]);
    let mut bad_json = event("acme", kind::USER, Some("u-x"), Some("s1"), &json!({}));
    bad_json.payload = "{\"id\": \"u-x\", ".into();
    let missing_id = event(
        "acme",
        kind::USER,
        None,
        Some("s1"),
        &json!({"username": "nobody"}),
    );
    // Users that fail normalization with raw records of the size that once wedged the
    // partition (999,950 bytes), and of the largest size a writer may produce, whose dead
    // letter (with its headers) must be cut to fit.
    let huge = |target: usize| {
        let mut e = event("acme", kind::USER, Some("u-huge"), Some("s1"), &json!({}));
        let bare = framed(s.schema_id, &e).len();
        // Payload `{"padding":"xxx…"}` (no `id`); +2 covers the Avro length prefix growth.
        e.payload = format!("{{\"padding\":\"{}\"}}", "x".repeat(target - bare - 16 - 2));
        let bytes = framed(s.schema_id, &e);
        assert!(
            (target - 4..=target).contains(&bytes.len()),
            "{}",
            bytes.len()
        );
        bytes
    };
    let at_limit = schemas::topics::MAX_RECORD_BYTES - "acme".len();
    let mut trailing = valid.clone();
    trailing.extend_from_slice(b"trailing garbage");
    // The acme sync's counts include its two unreadable users and the two huge ones, as the
    // producer counts every event it writes.
    for e in &mut events {
        if e.kind == kind::SYNC_COMPLETED && e.tenant_id == "acme" {
            let mut marker: Value = serde_json::from_str(&e.payload).unwrap();
            marker["counts"]["user"] = json!(12 + 4);
            e.payload = marker.to_string();
        }
    }
    let mut records: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.tenant_id.clone(), framed(s.schema_id, e)))
        .collect();
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("wire", b"{\"not\": \"avro\"}".to_vec()),
        (
            "schema",
            wire::encode(999_999_999, &events[1].to_avro_datum().unwrap()),
        ),
        ("normalize", framed(s.schema_id, &bad_json)),
        ("normalize", framed(s.schema_id, &missing_id)),
        ("avro", valid[..valid.len() / 2].to_vec()),
        ("avro", trailing),
        ("normalize", huge(999_950)),
        ("normalize", huge(at_limit)),
    ];
    // Poison sits in the middle of acme's sync (after the applications).
    for (i, (_, bytes)) in poison.iter().enumerate() {
        records.insert(5 + i, ("acme".into(), bytes.clone()));
    }
    // A valid acme event keyed for another tenant (it would be ordered with globex's events).
    records.insert(5, ("globex".into(), valid.clone()));
    produce(&s.raw_topic, &records).await;

    // Users: every user once, with the seven fields equal to the input.
    let users = wait_for(&topics.users, WAIT, |r| r.len() >= 15).await;
    assert_eq!(users.len(), 15, "12 acme users + 3 globex users, each once");
    let mut seen = BTreeSet::new();
    for r in &users {
        let u = decode_user(&reg, r).await;
        assert!(seen.insert(key(r)), "duplicate {}", key(r));
        assert_eq!(key(r), format!("{}/{}", u.tenant_id, u.user_id));
        let i: usize = u.user_id.trim_start_matches("u-").parse().unwrap();
        assert_eq!(
            seven_from_record(&u),
            seven_from_json(&user_json(i)),
            "user {i}"
        );
        assert_eq!(u.enabled, Some(i % 7 != 0));
        assert_eq!(u.username, Some(format!("user{i}@example.com")));
        assert_eq!(u.display_name, Some(format!("Given{i} Family")));
        assert_eq!(u.created_at, Some(1_767_323_045_678));
        assert_eq!(u.source_topic, s.raw_topic);
        if u.tenant_id == "acme" {
            let expected: Vec<&str> = match i {
                1 | 4 => vec!["g1"],
                2 | 3 => vec!["g1", "g2"],
                9 => vec!["g2"],
                _ => vec![],
            };
            assert_eq!(u.access_group_ids, expected, "user {i}");
        }
    }

    // Independent decoders: Python fastavro (when installed) and a Python decoder written from
    // the Avro specification, both with writer schemas fetched from the registry.
    let dump: Vec<Value> = users
        .iter()
        .map(|r| json!({"key": key(r), "value_hex": hex(r.value.as_deref().unwrap())}))
        .collect();
    let mut decoded = fastavro_decode(s.config.registry.url.as_str(), &dump, false);
    let builtin = fastavro_decode(s.config.registry.url.as_str(), &dump, true);
    assert_eq!(decoded.len(), 15);
    assert_eq!(builtin.len(), 15);
    assert!(builtin.iter().all(|d| d["decoder"] == "builtin"));
    decoded.extend(builtin);
    for d in &decoded {
        let rec = &d["record"];
        let id = rec["user_id"].as_str().unwrap();
        let i: usize = id.trim_start_matches("u-").parse().unwrap();
        let truth = seven_from_json(&user_json(i));
        let s = |v: &Value| v.as_str().map(str::to_owned);
        let got = (
            rec["can_authenticate"].as_bool(),
            s(&rec["locality"]),
            rec["mfa_enabled"].as_bool(),
            s(&rec["region"]),
            s(&rec["status"]),
            s(&rec["type"]),
            s(&rec["verify_status"]),
        );
        assert_eq!(got, truth, "fastavro: user {i}");
        assert_eq!(
            d["key"].as_str().unwrap(),
            format!("{}/{}", rec["tenant_id"].as_str().unwrap(), id)
        );
    }

    // Output subjects are registered with BACKWARD_TRANSITIVE.
    let client =
        test_harness::registry::RegistryClient::new(s.config.registry.url.as_str()).unwrap();
    for topic in [&topics.users, &topics.applications, &topics.app_usage] {
        let level = client
            .subject_compatibility(&format!("{topic}-value"))
            .await
            .unwrap();
        assert_eq!(level, "BACKWARD_TRANSITIVE", "{topic}");
    }

    // Applications with the number of users who may use them.
    let apps = wait_for(&topics.applications, WAIT, |r| r.len() >= 3).await;
    let mut counts = BTreeMap::new();
    for r in &apps {
        let a = decode_app(&reg, r).await;
        counts.insert(a.application_id.clone(), a.authorized_user_count);
    }
    assert_eq!(
        counts,
        BTreeMap::from([("both".into(), 2), ("gated".into(), 4), ("open".into(), 12)])
    );

    // Dead letters: original bytes, error and source position in headers.
    let raw = consume_all(&s.raw_topic).await.unwrap();
    let dead = wait_for(&topics.dead_letter, WAIT, |r| r.len() >= 9).await;
    assert_eq!(dead.len(), 9);
    let mut kinds: Vec<String> = Vec::new();
    let mut truncated = 0;
    for d in &dead {
        let partition: i32 = header(d, "source_partition").parse().unwrap();
        let offset: i64 = header(d, "source_offset").parse().unwrap();
        assert_eq!(header(d, "source_topic"), s.raw_topic);
        assert!(!header(d, "error").is_empty());
        let source = raw
            .iter()
            .find(|r| r.partition == partition && r.offset == offset)
            .unwrap();
        assert_eq!(d.key, source.key);
        let (value, original) = (
            d.value.as_deref().unwrap(),
            source.value.as_deref().unwrap(),
        );
        if d.header("truncated").is_some() {
            // Cut to the record limit: a prefix, with the original's size and hash.
            truncated += 1;
            assert!(value.len() < original.len() && original.starts_with(value));
            let headers: usize = d
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            let all = d.key.as_ref().unwrap().len() + value.len() + headers;
            assert!(all <= schemas::topics::MAX_RECORD_BYTES, "{all}");
            assert_eq!(header(d, "original_size"), (original.len() + 4).to_string());
            assert_eq!(
                header(d, "original_sha256"),
                schemas::raw::sha256_hex(original)
            );
        } else {
            assert_eq!(value, original, "dead letter keeps the original bytes");
        }
        kinds.push(header(d, "error_kind"));
    }
    assert_eq!(truncated, 1, "only the record at the limit is cut");
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "avro",
            "avro",
            "key",
            "normalize",
            "normalize",
            "normalize",
            "normalize",
            "schema",
            "wire"
        ]
    );
    let mismatch = dead
        .iter()
        .find(|d| header(d, "error_kind") == "key")
        .unwrap();
    assert!(header(mismatch, "error").contains("`globex`"));
    let garbage = dead
        .iter()
        .find(|d| header(d, "error").contains("bytes after the avro datum"))
        .unwrap();
    assert_eq!(header(garbage, "error_kind"), "avro");
    let missing = dead
        .iter()
        .find(|d| header(d, "error").contains("`id`"))
        .unwrap();
    assert_eq!(header(missing, "error_kind"), "normalize");

    // App usage: counts per pair.
    let usage = wait_for(&topics.app_usage, WAIT, |r| r.len() >= 5).await;
    let mut last = BTreeMap::new();
    for r in &usage {
        let u = decode_usage(&reg, r).await;
        last.insert(
            key(r),
            (u.access_count_total, u.access_count_7d, u.last_access_at),
        );
    }
    assert_eq!(
        last["acme/gated/u-1"],
        (2, 2, 1_795_168_800_000 - 86_400_000)
    );
    assert_eq!(last["acme/open/u-5"].0, 1);

    // Second sync: u-4, u-11, u-12 and app `both` are gone; then u-2 is deleted by an activity.
    let users2: Vec<usize> = (1..=10).filter(|i| *i != 4).collect();
    let mut events2 = sync_events(
        "acme",
        "s2",
        &users2,
        &[("open", None), ("gated", Some(("ANY_GROUP", rule_any)))],
        &[
            ("g1", 1),
            ("g1", 2),
            ("g1", 3),
            ("g2", 2),
            ("g2", 3),
            ("g2", 9),
        ],
    );
    events2.push(event(
        "acme",
        kind::ACTIVITY,
        Some("act-del"),
        None,
        &deleted_json("act-del", "USER", "u-2"),
    ));
    produce_events(&s, &events2).await;
    let users = wait_for(&topics.users, WAIT, |r| {
        r.iter().filter(|r| r.value.is_none()).count() >= 4
    })
    .await;
    let mut tombstones: Vec<String> = users
        .iter()
        .filter(|r| r.value.is_none())
        .map(key)
        .collect();
    tombstones.sort();
    assert_eq!(
        tombstones,
        vec!["acme/u-11", "acme/u-12", "acme/u-2", "acme/u-4"]
    );
    let apps = wait_for(&topics.applications, WAIT, |r| {
        r.iter().any(|r| r.value.is_none())
    })
    .await;
    let app_tombstones: Vec<String> = apps.iter().filter(|r| r.value.is_none()).map(key).collect();
    assert_eq!(app_tombstones, vec!["acme/both"]);

    // Metrics saw the dead letters and commits.
    let text = metrics.render();
    let dead_total: u64 = text
        .lines()
        .filter(|l| l.starts_with("transformer_dead_lettered_records_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(dead_total, 9, "{text}");
    assert!(
        text.contains("transformer_dead_letters_truncated_total{kind=\"normalize\"} 1"),
        "{text}"
    );
    assert!(metrics.transactions_committed.get() >= 1);
    assert!(metrics.is_ready());
    assert_eq!(get("/readyz").await.0, 200);
    let (status, body) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("transformer_transactions_committed_total"),
        "{body}"
    );
    assert!(
        body.contains("transformer_produced_records_total{topic=\""),
        "{body}"
    );

    // The lag gauge comes from librdkafka statistics (every 5 s).
    let started = std::time::Instant::now();
    loop {
        let body = get("/metrics").await.1;
        if body.contains("transformer_consumer_lag_records{partition=") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no consumer lag gauge: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Graceful stop, within a deadline: a stop that hangs fails here instead of holding the
    // test run.
    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the loop did not stop cleanly within {WAIT:?}: {stopped:?}"
    );

    // Replay of s1 into another prefix reproduces its users and applications.
    let prefix = format!("{}.", test_harness::unique_name("replay"));
    let summary = replay(
        &s.config,
        &ReplayArgs {
            tenant: Some("acme".into()),
            sync_id: Some("s1".into()),
            output_prefix: Some(prefix.clone()),
            ..ReplayArgs::default()
        },
    )
    .await
    .unwrap();
    assert!(summary.sync_completed);
    let replay_topics = schemas::topics::OutputTopics::new(&prefix);
    let replayed = consume_all(&replay_topics.users).await.unwrap();
    let original = consume_all(&topics.users).await.unwrap();
    let mut want = BTreeMap::new();
    for r in &original {
        if r.value.is_some() {
            let u = decode_user(&reg, r).await;
            if u.sync_id.as_deref() == Some("s1") {
                want.insert(key(r), u);
            }
        }
    }
    let mut got = BTreeMap::new();
    for r in &replayed {
        got.insert(key(r), decode_user(&reg, r).await);
    }
    assert_eq!(got.len(), 12);
    assert_eq!(got, want);
    let replayed_apps = consume_all(&replay_topics.applications).await.unwrap();
    let mut got = BTreeMap::new();
    for r in &replayed_apps {
        let a = decode_app(&reg, r).await;
        got.insert(a.application_id.clone(), a.authorized_user_count);
    }
    assert_eq!(
        got,
        BTreeMap::from([("both".into(), 2), ("gated".into(), 4), ("open".into(), 12)])
    );

    // Replay of everything from offset 0 into a third prefix: the latest value of every user
    // key equals the live output's (same input, same rules, deterministic provenance).
    let prefix_all = format!("{}.", test_harness::unique_name("replay-all"));
    let summary = replay(
        &s.config,
        &ReplayArgs {
            from_offset: vec!["0".into()],
            output_prefix: Some(prefix_all.clone()),
            ..ReplayArgs::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.dead_lettered, 9);
    let latest = |records: &[ConsumedRecord]| {
        let mut m: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for r in records {
            m.insert(key(r), r.value.clone());
        }
        m
    };
    let all_topics = schemas::topics::OutputTopics::new(&prefix_all);
    let live = latest(&consume_all(&topics.users).await.unwrap());
    let again = latest(&consume_all(&all_topics.users).await.unwrap());
    assert_eq!(again.len(), live.len());
    for (k, v) in &live {
        match (v, &again[k]) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                let (a, b) = (
                    decode_user_bytes(&reg, a).await,
                    decode_user_bytes(&reg, b).await,
                );
                assert_eq!(a, b, "{k}");
            }
            other => panic!("{k}: live and replayed differ: {other:?}"),
        }
    }

    // Replay from a time before everything, for one tenant: globex's three users.
    let prefix_time = format!("{}.", test_harness::unique_name("replay-time"));
    let summary = replay(
        &s.config,
        &ReplayArgs {
            tenant: Some("globex".into()),
            from_time: Some("2000-01-01T00:00:00Z".into()),
            output_prefix: Some(prefix_time.clone()),
            ..ReplayArgs::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.dead_lettered, 0);
    let time_users = consume_all(&schemas::topics::OutputTopics::new(&prefix_time).users)
        .await
        .unwrap();
    let mut keys: Vec<String> = time_users.iter().map(key).collect();
    keys.sort();
    assert_eq!(keys, vec!["globex/u-100", "globex/u-101", "globex/u-102"]);

    // License report, computed by hand from the input above (see transformer/README.md for
    // the definitions): acme has 8 live users after s2 and the delete.
    let csv = report::run(
        &s.config,
        &ReportArgs {
            format: Format::Csv,
            as_of: Some("2026-11-21T00:00:00Z".into()),
            ..ReportArgs::default()
        },
    )
    .await
    .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        vec![
            "tenant,application_id,application_name,may_use,active_30d,active_60d,active_90d,never_used,inactive_can_authenticate,without_mfa",
            "acme,*,,8,1,1,1,6,4,7",
            "acme,gated,App gated,2,1,1,1,1,1,2",
            "acme,open,App open,8,1,1,1,6,4,7",
            "globex,*,,3,0,0,0,3,2,2",
        ],
        "{csv}"
    );

    // The same report through a registry relay that drops the report's first connection: the
    // report (a one-shot command nothing restarts) asks again instead of failing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = s.config.registry.url.socket_addrs(|| None).unwrap()[0];
    let mut flaky = s.config.clone();
    flaky.registry.url.set_host(Some("127.0.0.1")).unwrap();
    flaky
        .registry
        .url
        .set_port(Some(listener.local_addr().unwrap().port()))
        .unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    tokio::spawn(drop_first(listener, upstream, 1, Arc::clone(&dropped)));
    let again = report::run(
        &flaky,
        &ReportArgs {
            format: Format::Csv,
            as_of: Some("2026-11-21T00:00:00Z".into()),
            ..ReportArgs::default()
        },
    )
    .await
    .expect("a report through a registry that dropped its first connection");
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(again, csv);
}

/// A record on the transformer's own output topic whose schema id the registry does not know
/// (what a registry whose storage was reset leaves behind) stops the transformer at start-up
/// with an error naming the topic, partition, offset and id, rather than restarting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_record_with_a_lost_schema_stops_the_restore() {
    const LOST_ID: u32 = 2_000_000_000;
    let s = setup("lost-schema", 1).await;
    let topics = s.config.kafka.topics.clone();
    create_topic(&topics.users, &TopicOptions::new(1).compacted())
        .await
        .unwrap();
    produce(
        &topics.users,
        &[("acme/u-kept".to_string(), wire::encode(LOST_ID, &[0]))],
    )
    .await;

    stops_with_a_fatal_error(
        &s.config,
        "the transformer restored state from a record it cannot decode",
        &[
            topics.users.as_str(),
            "partition 0",
            "offset 0",
            "schema id 2000000000",
        ],
    )
    .await;
}

/// Runs the transformer on `config` and requires it to stop on its own (within [`WAIT`]) with
/// a fatal error whose message holds every one of `parts`; `why` says what it did otherwise.
async fn stops_with_a_fatal_error(config: &transformer::Config, why: &str, parts: &[&str]) {
    let shutdown = CancellationToken::new();
    let outcome = tokio::time::timeout(
        WAIT,
        transformer::pipeline::run(config.clone(), shutdown.clone(), Arc::new(Metrics::new())),
    )
    .await;
    shutdown.cancel();
    let error = outcome
        .expect("the transformer kept restarting instead of stopping")
        .expect_err(why);
    assert!(!error.is_transient(), "{error}");
    let message = error.to_string();
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

/// The output topics hold each raw partition's state in the partition of the same number, so an
/// output topic with another partition count than the raw topic (created by hand, or before
/// the outputs were co-partitioned) stops the transformer, naming the topic, instead of
/// restoring the wrong state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_topics_partitioned_unlike_the_raw_topic_stop_it() {
    let s = setup("partitions", 2).await;
    let topics = s.config.kafka.topics.clone();
    create_topic(&topics.app_usage, &TopicOptions::new(1).compacted())
        .await
        .unwrap();
    stops_with_a_fatal_error(
        &s.config,
        "the transformer ran on output topics partitioned unlike the raw topic",
        &[
            topics.app_usage.as_str(),
            "has 1 partitions but the raw topic has 2",
        ],
    )
    .await;
}

/// Once a process has registered its output schemas, restarting the live loop needs Kafka alone:
/// here the registry is cut off (a relay that closes every connection) and another instance with
/// the same transactional id fences this one. The fenced loop restarts, restores its state and
/// writes the next sync, with no request to the registry. Before, each attempt registered the
/// schemas again, so a restart after a broker outage also waited for the registry, which keeps
/// its schemas in Kafka and recovers after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_needs_no_registry_once_schemas_are_known() {
    let mut s = setup("registry-cut", 1).await;
    let upstream = s.config.registry.url.socket_addrs(|| None).unwrap()[0];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = &mut s.config.registry.url;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(listener.local_addr().unwrap().port()))
        .unwrap();
    let cut = CancellationToken::new();
    let asked_after_cut = Arc::new(AtomicUsize::new(0));
    tokio::spawn(relay(
        listener,
        upstream,
        cut.clone(),
        Arc::clone(&asked_after_cut),
    ));

    let live = Live::start(&s.config);
    let users = s.config.kafka.topics.users.clone();
    produce_events(&s, &sync_events("acme", "s1", &[0, 1, 2], &[], &[])).await;
    wait_for(&users, WAIT, |r| r.len() >= 3).await;

    cut.cancel();
    let config = &s.config;
    let zombie = pipeline_io::kafka::TxnSession::open(
        &config.kafka.client,
        &transformer::pipeline::live::txn_settings(config, &config.kafka.transactional_id),
    )
    .await
    .unwrap();
    drop(zombie);
    produce_events(&s, &sync_events("acme", "s2", &[0, 1, 2, 3, 4], &[], &[])).await;
    let has = |records: &[ConsumedRecord], id: &str| records.iter().any(|r| key(r).ends_with(id));
    wait_for(&users, WAIT, |r| has(r, "/u-3") && has(r, "/u-4")).await;
    assert!(
        live.metrics.restarts.get() >= 1,
        "the fenced transformer never restarted"
    );
    assert_eq!(
        asked_after_cut.load(Ordering::SeqCst),
        0,
        "the restart asked the registry"
    );
    live.stop().await;
}

/// A new group reads the raw topic from where it begins now. Here the first sync's records were
/// deleted (a history cut by retention) before the transformer's first start: exactly the
/// second sync's users come out. The loop seeks a partition without a committed offset to its
/// beginning itself (`Batcher::start_fresh`, instead of waiting for librdkafka's reset), and
/// must land on that beginning, neither before it nor after the records already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_starts_where_retention_left_the_raw_topic() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::{Offset, TopicPartitionList};

    let mut s = setup("retention-cut", 1).await;
    let cut = sync_events("acme", "s1", &[1, 2, 3], &[], &[]);
    produce_events(&s, &cut).await;
    produce_events(
        &s,
        &sync_events("globex", "g-s1", &[10, 11, 12, 13], &[], &[]),
    )
    .await;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", test_harness::kafka_bootstrap())
        .create()
        .unwrap();
    let mut below = TopicPartitionList::new();
    below
        .add_partition_offset(&s.raw_topic, 0, Offset::Offset(cut.len() as i64))
        .unwrap();
    let deleted = admin
        .delete_records(&below, &AdminOptions::new())
        .await
        .unwrap();
    assert!(
        deleted.elements().iter().all(|e| e.error().is_ok()),
        "records not deleted: {deleted:?}"
    );

    s.config.processing.stop_at_end = true;
    tokio::time::timeout(
        WAIT,
        transformer::pipeline::run(
            s.config.clone(),
            CancellationToken::new(),
            Arc::new(Metrics::new()),
        ),
    )
    .await
    .expect("the transformer did not reach the end of the raw topic")
    .unwrap();
    let users = consume_all(&s.config.kafka.topics.users).await.unwrap();
    let keys: Vec<String> = users.iter().map(key).collect();
    let expected: Vec<String> = (10..=13).map(|i| format!("globex/u-{i}")).collect();
    assert_eq!(
        keys, expected,
        "users written from the raw topic left by retention"
    );
}

/// The live loop registers its output schemas while it joins its group, and waits for them only
/// to stage its first record. A registration that fails must still end the attempt at once,
/// with no record to stage: here the registry's address refuses every connection and the raw
/// topic stays empty. The loop restarts, and `/readyz` does not say ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_registration_ends_the_attempt_with_no_record_read() {
    use pipeline_io::ops::Observable;

    let mut s = setup("registry-refused", 1).await;
    // A port nothing listens on (bound, then released).
    let url = &mut s.config.registry.url;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(test_harness::ops::free_port())).unwrap();
    let live = Live::start(&s.config);
    let metrics = &live.metrics;
    let deadline = std::time::Instant::now() + WAIT;
    while metrics.restarts.get() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics.restarts.get() >= 1,
        "the attempt went on without its output schemas"
    );
    assert!(
        metrics.readiness().is_err(),
        "ready without output schemas: {:?}",
        metrics.readiness()
    );
    live.stop().await;
}

/// The live loop on a task of its own.
struct Live {
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), transformer::pipeline::PipelineError>>,
}

impl Live {
    fn start(config: &transformer::config::Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(transformer::pipeline::run(
            config.clone(),
            shutdown.clone(),
            Arc::clone(&metrics),
        ));
        Self {
            metrics,
            shutdown,
            task,
        }
    }

    /// Asks the loop to stop; it must end cleanly within [`WAIT`].
    async fn stop(self) {
        self.shutdown.cancel();
        let ended = tokio::time::timeout(WAIT, self.task).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }
}

/// Relays connections to `upstream` until `cut`; then closes the open ones, and accepts and
/// closes every new one at once, counting them in `asked_after_cut`.
async fn relay(
    listener: tokio::net::TcpListener,
    upstream: std::net::SocketAddr,
    cut: CancellationToken,
    asked_after_cut: Arc<AtomicUsize>,
) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        if cut.is_cancelled() {
            asked_after_cut.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let cut = cut.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                () = cut.cancelled() => {}
            }
        });
    }
}

/// Accepts and closes the first `drop` connections (counting them in `dropped`), then relays
/// every later one to `upstream`.
async fn drop_first(
    listener: tokio::net::TcpListener,
    upstream: std::net::SocketAddr,
    drop: usize,
    dropped: Arc<AtomicUsize>,
) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        if dropped.load(Ordering::SeqCst) < drop {
            dropped.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

async fn decode_user_bytes(reg: &pipeline_io::registry::Registry, value: &[u8]) -> UserUsage {
    let (id, datum) = wire::decode(value).unwrap();
    UserUsage::from_avro_datum(&reg.schema_by_id(id).await.unwrap(), datum).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes Confluent-framed values with Python (`transformer/tests/fastavro_decode.py`): fastavro
/// when installed, else (or with `builtin`) the script's own decoder written from the spec.
/// With `builtin`, the script's own decoder is used even when fastavro is installed.
fn fastavro_decode(registry_url: &str, records: &[Value], builtin: bool) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fastavro_decode.py");
    let mut command = std::process::Command::new("python3");
    if builtin {
        command.env("AVRO_DECODER", "builtin");
    }
    let mut child = command
        .arg(script)
        .arg(registry_url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 must be installed for the independent decoder check");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(records).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "independent avro decoder failed (python3 must be installed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
