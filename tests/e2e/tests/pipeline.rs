//! The whole pipeline end to end on the real broker and registry: the PingOne simulator
//! (in-process) -> the producer library (`sync_once`, the code of `producer sync --once`, and
//! its activity stream, the code `producer run` polls with) -> the raw topic -> the transformer
//! library (`pipeline::run` until caught up, the code of `transformer run --until-caught-up`)
//! -> the normalized topics -> `license-report`.
//!
//! Checks, against the simulator's admin truth dumps:
//! 1. every user is on the users topic exactly once per key, its seven integration fields equal
//!    to the truth, decoded by an independent decoder (Python fastavro, writer schema fetched by
//!    id from the registry: `transformer/tests/fastavro_decode.py`); applications' ids, names
//!    and authorized-user counts equal those computed from access control and memberships;
//! 2. after deleting users and an application (and changing others) and syncing again,
//!    tombstones appear for exactly the deleted keys and the latest values equal the new truth;
//! 3. the license report's JSON equals the numbers computed here from the truth;
//! 4. PingOne's own sign-on counts (`/applicationSignons`, read by the activity stream) equal the
//!    activity-derived counts of the same days in the report, and a disagreement injected into the
//!    simulator's counts is flagged, at the default `--signon-gap` and not at a wider one.
//!
//! Needs `eval "$(deploy/local/up)"` (fails naming it otherwise) and `pip install fastavro`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use e2e::{Truth, expected_report, format_ms, parse_report, seven_from_pingone, seven_from_record};
use pingone_sim::admin::{SignonCountSpec, SignonSpec};
use pingone_sim::{RunningSim, SimConfig, TenantSpec};
use producer::activity::ActivityStream;
use producer::stream::StreamContext;
use serde_json::{Value, json};
use test_harness::kafka::{ConsumedRecord, consume_all};
use tokio_util::sync::CancellationToken;
use transformer::report::reclaim::{ReclaimArgs, ReclaimFormat};
use transformer::report::{Format, ReportAction, ReportArgs};

/// The tenant id the producer writes (record key prefix `<tenant>/`).
const TENANT: &str = "e2e";
/// Simulated users: a few hundred.
const USERS: u64 = 300;
/// Environment variable the producer's config names for the client secret (never the process
/// environment: the test passes it to validation directly).
const SECRET_ENV: &str = "E2E_PINGONE_SECRET";
/// Bound on each component run, so a hang fails the test instead of blocking it.
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// The producer's `activity_overlap_s` (its default, spelled out because the truth window
/// depends on it).
const OVERLAP_MS: i64 = 60_000;
/// Report windows: the defaults plus a week, whose cutoff falls inside the polled history.
const WINDOWS: [u32; 4] = [7, 30, 60, 90];

/// Everything one run of the test uses.
struct Env {
    sim: RunningSim,
    env_id: String,
    producer: producer::config::Config,
    transformer: transformer::Config,
    fastavro: String,
}

fn producer_config(sim: &RunningSim, env_id: &str) -> producer::config::Config {
    let t = sim.tenant(env_id).expect("the simulated tenant");
    let text = format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
raw_topic = "{raw}"
checkpoint_topic = "{checkpoints}"
transactional_id_prefix = "{txn}"
transaction_timeout_ms = 60000
message_timeout_ms = 30000
topic_partitions = 2

[schema_registry]
url = "{registry}"

[operations]
listen_addr = ""

[[tenants]]
tenant_id = "{TENANT}"
environment_id = "{env}"
region = "{region}"
client_id = "{client}"
client_secret_env = "{SECRET_ENV}"
auth_base_url = "{auth}"
api_base_url = "{api}"
requests_per_second = 1000
activity_initial_lookback_s = 1209600
activity_window_max_s = 1209600
activity_overlap_s = {overlap_s}
activity_safety_lag_s = 2
"#,
        bootstrap = test_harness::kafka_bootstrap(),
        registry = test_harness::schema_registry_url(),
        raw = test_harness::unique_name("e2e-raw"),
        checkpoints = test_harness::unique_name("e2e-checkpoints"),
        txn = test_harness::unique_name("e2e-producer"),
        env = t.environment_id,
        region = t.region,
        client = t.client_id,
        auth = t.auth_base_url,
        api = t.api_base_url,
        overlap_s = OVERLAP_MS / 1000,
    );
    let secret = t.client_secret.expose().to_owned();
    producer::config::parse_with_overrides(std::path::Path::new("e2e.toml"), &text, &[])
        .expect("producer config parses")
        .validate(|name| (name == SECRET_ENV).then(|| secret.clone()))
        .expect("producer config validates")
}

fn transformer_config(raw_topic: &str) -> transformer::Config {
    let mut c = transformer::Config::for_addresses(
        test_harness::kafka_bootstrap(),
        test_harness::schema_registry_url(),
    )
    .expect("test addresses are valid")
    .with_output_prefix(&format!("{}.", test_harness::unique_name("e2e-usage")));
    c.kafka.raw_topic = raw_topic.to_owned();
    c.kafka.group_id = test_harness::unique_name("e2e-transformer");
    c.kafka.transactional_id = test_harness::unique_name("e2e-transformer-txn");
    c.processing.stop_at_end = true;
    c.processing.batch_max_wait = Duration::from_millis(50);
    c.kafka.client.timeout = Duration::from_secs(20);
    c.kafka.transaction_timeout = Duration::from_secs(30);
    c
}

async fn setup() -> Env {
    test_harness::init_tracing();
    // Fail first, naming the command, when the broker and registry are absent.
    let _ = test_harness::kafka_bootstrap();
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![TenantSpec::generated(
        "e2e-pipeline",
        USERS,
        11,
    )]))
    .await
    .expect("simulator starts");
    let env_id = sim.tenants()[0].environment_id.clone();
    let producer = producer_config(&sim, &env_id);
    let transformer = transformer_config(&producer.kafka.raw_topic);
    Env {
        sim,
        env_id,
        producer,
        transformer,
        fastavro: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../transformer/tests/fastavro_decode.py"
        )
        .to_owned(),
    }
}

async fn truth(env: &Env) -> Truth {
    let admin = env.sim.admin(&env.env_id);
    Truth::new(
        &admin.truth_users().await.expect("truth users"),
        &admin
            .truth_applications()
            .await
            .expect("truth applications"),
        &admin.truth_memberships().await.expect("truth memberships"),
    )
}

/// `producer sync --once` for the tenant; returns the completed sync's id.
async fn sync(env: &Env) -> String {
    let completed = tokio::time::timeout(
        STEP_LIMIT,
        producer::sync_once(env.producer.clone(), TENANT, CancellationToken::new()),
    )
    .await
    .expect("sync within the limit")
    .expect("sync completes");
    completed.sync_id
}

/// Polls activity up to now with the producer's activity stream (`ActivityStream::catch_up`,
/// the code `producer run` polls with), opened afresh each time so that its position comes back
/// from the committed checkpoint. Returns the (start, end) positions: every activity recorded in
/// `(start - overlap, end)` was written. `catch_up` must return once it has reached "now minus
/// the safety lag" as of its call; the step limit fails the test if it keeps chasing the clock.
async fn poll_activity(env: &Env) -> (i64, i64) {
    let cfg = &env.producer;
    let tenant = cfg.tenants[0].clone();
    let metrics = producer::metrics::Metrics::new();
    let cancel = CancellationToken::new();
    let schema_id = producer::kafka::register_raw_schema(&cfg.registry, &cfg.kafka.raw_topic)
        .await
        .expect("raw schema registered");
    let (writer, writer_task) = producer::writer::open_for(
        &cfg.kafka,
        cfg.kafka.tenant_partitions,
        &tenant.tenant_id,
        metrics.clone(),
    )
    .await
    .expect("the tenant's partition writer opens");
    let ctx = StreamContext {
        client: producer::pingone::Client::new(&tenant, metrics.clone(), cancel.clone())
            .expect("pingone client"),
        tenant: Arc::new(tenant),
        writer,
        budget: producer::writer::Budget::new(
            producer::READ_BUDGET_BYTES,
            producer::CONCURRENT_SYNCS,
        ),
        schema_id,
        metrics,
        cancel,
    };
    let run = async {
        let mut stream = ActivityStream::open(ctx);
        let start = stream.position_ms();
        if let Err(e) = stream.catch_up().await {
            panic!("activity catch-up failed: {e}");
        }
        let end = stream.position_ms();
        drop(stream);
        writer_task
            .await
            .expect("writer task")
            .expect("writer ends cleanly");
        (start, end)
    };
    tokio::time::timeout(STEP_LIMIT, run)
        .await
        .expect("activity catch-up returns within the limit")
}

/// `transformer run --until-caught-up`.
async fn transform(env: &Env) {
    tokio::time::timeout(
        STEP_LIMIT,
        transformer::run(env.transformer.clone(), CancellationToken::new()),
    )
    .await
    .expect("transformer catches up within the limit")
    .expect("transformer run succeeds");
}

fn key(r: &ConsumedRecord) -> String {
    String::from_utf8(r.key.clone().unwrap_or_default()).expect("utf-8 key")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes the non-null values with Python fastavro (writer schema by id from the registry);
/// returns key -> decoded record, in input order.
fn fastavro(env: &Env, records: &[&ConsumedRecord]) -> Vec<(String, Value)> {
    let input: Vec<Value> = records
        .iter()
        .map(|r| json!({"key": key(r), "value_hex": hex(r.value.as_deref().expect("a value"))}))
        .collect();
    let mut child = std::process::Command::new("python3")
        .arg(&env.fastavro)
        .arg(env.transformer.registry.url.as_str())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the independent decoder");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(serde_json::to_string(&input).expect("json").as_bytes())
            .expect("write to the decoder");
    }
    let out = child.wait_with_output().expect("decoder output");
    assert!(
        out.status.success(),
        "fastavro decoder failed (install it with `pip install fastavro`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Vec<Value> = serde_json::from_slice(&out.stdout).expect("decoder JSON");
    assert_eq!(decoded.len(), records.len(), "one decoded record per value");
    decoded
        .into_iter()
        .map(|d| {
            (
                d["key"].as_str().expect("key").to_owned(),
                d["record"].clone(),
            )
        })
        .collect()
}

/// Highest offset read per partition.
fn ends(records: &[ConsumedRecord]) -> HashMap<i32, i64> {
    let mut m = HashMap::new();
    for r in records {
        let e = m.entry(r.partition).or_insert(-1);
        *e = (*e).max(r.offset);
    }
    m
}

/// Records after the given per-partition ends.
fn after<'a>(records: &'a [ConsumedRecord], ends: &HashMap<i32, i64>) -> Vec<&'a ConsumedRecord> {
    records
        .iter()
        .filter(|r| ends.get(&r.partition).is_none_or(|end| r.offset > *end))
        .collect()
}

fn entity_key(id: &str) -> String {
    format!("{TENANT}/{id}")
}

/// Asserts that the latest record of each truth user among `records` is a value whose seven
/// fields, decoded by fastavro, equal the truth, and that no other user has a value there.
/// Returns the keys written more than once (as "key: count"), which the test asserts on last so
/// that every other check still runs and reports.
fn check_users(env: &Env, truth: &Truth, records: &[&ConsumedRecord], what: &str) -> Vec<String> {
    let values: Vec<&ConsumedRecord> = records
        .iter()
        .copied()
        .filter(|r| r.value.is_some())
        .collect();
    let decoded = fastavro(env, &values);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // Records come sorted by partition and offset, and a key lives in one partition: the last
    // one decoded per key is the latest.
    let mut latest: BTreeMap<String, &Value> = BTreeMap::new();
    for (k, record) in &decoded {
        *seen.entry(k.clone()).or_default() += 1;
        latest.insert(k.clone(), record);
    }
    let want: BTreeSet<String> = truth.users.keys().map(|id| entity_key(id)).collect();
    let got: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: users on the topic vs in the simulator"
    );
    assert_eq!(got, want, "{what}: user keys");
    let mut mismatches = Vec::new();
    for (k, record) in &latest {
        let id = k
            .strip_prefix(&format!("{TENANT}/"))
            .expect("tenant prefix");
        assert_eq!(record["user_id"], json!(id), "{what}: user_id of {k}");
        let (expected, actual) = (
            seven_from_pingone(&truth.users[id]),
            seven_from_record(record),
        );
        if expected != actual {
            mismatches.push(format!("{k}: truth {expected:?}, topic {actual:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{what}: {} of {} users differ from the truth, e.g. {:?}",
        mismatches.len(),
        latest.len(),
        &mismatches[..mismatches.len().min(3)]
    );
    seen.into_iter()
        .filter(|(_, n)| *n != 1)
        .map(|(k, n)| format!("{what}: {k} written {n} times"))
        .collect()
}

/// Asserts that each truth application has exactly one record among `records`, with its name
/// and the authorized-user count computed from its group rule and the memberships.
fn check_applications(env: &Env, truth: &Truth, records: &[&ConsumedRecord], what: &str) {
    let values: Vec<&ConsumedRecord> = records
        .iter()
        .copied()
        .filter(|r| r.value.is_some())
        .collect();
    let decoded = fastavro(env, &values);
    let got: BTreeMap<String, (Value, Value, Value)> = decoded
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                (
                    r["application_id"].clone(),
                    r["name"].clone(),
                    r["authorized_user_count"].clone(),
                ),
            )
        })
        .collect();
    assert_eq!(
        got.len(),
        decoded.len(),
        "{what}: an application written twice"
    );
    let want: BTreeMap<String, (Value, Value, Value)> = truth
        .applications
        .iter()
        .map(|(id, app)| {
            (
                entity_key(id),
                (
                    json!(id),
                    app.get("name").cloned().unwrap_or(Value::Null),
                    json!(truth.authorized(app).len()),
                ),
            )
        })
        .collect();
    assert_eq!(
        got, want,
        "{what}: applications (id, name, authorized users)"
    );
    // The check is only meaningful if group rules restrict something.
    assert!(
        truth
            .applications
            .values()
            .any(|a| truth.authorized(a).len() < truth.users.len()),
        "the simulated tenant should have group-restricted applications"
    );
}

/// The report computed by the transformer's `license-report` (JSON) vs computed here.
async fn check_report(env: &Env, truth: &Truth, window: (i64, i64), what: &str) {
    let admin = env.sim.admin(&env.env_id);
    // The producer asked for `recordedat gt (start - overlap) and recordedat lt end`; the truth
    // dump's range is [from, to), so from = start - overlap + 1 ms (timestamps are in ms).
    let activities = admin
        .truth_activities(&format_ms(window.0 - OVERLAP_MS + 1), &format_ms(window.1))
        .await
        .expect("truth activities");
    assert!(
        activities.len() > 100,
        "{what}: too few activities to test with: {}",
        activities.len()
    );
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    let as_of = now_ms - now_ms % 1000;
    let json = transformer::report::run(
        &env.transformer,
        &ReportArgs {
            format: Format::Json,
            active_days: WINDOWS.to_vec(),
            as_of: Some(format_ms(as_of)),
            tenant: Some(TENANT.into()),
            group_id: test_harness::unique_name("e2e-report"),
            input_prefix: None,
            prices: None,
            signon_gap: transformer::report::signons::DEFAULT_GAP,
            action: None,
        },
    )
    .await
    .expect("license report");
    let got = parse_report(&json, TENANT).expect("report JSON");
    let want = expected_report(truth, &activities, &WINDOWS, as_of);
    assert_eq!(
        got.len(),
        truth.applications.len() + 1,
        "{what}: report lines"
    );
    for (id, line) in &want {
        assert_eq!(got.get(id), Some(line), "{what}: report line {id}");
    }
    let everyone = &want["*"];
    // Guard against a vacuous comparison: the tenant line must discriminate.
    assert!(
        everyone.active[&7] > 0
            && everyone.active[&7] < everyone.active[&30]
            && everyone.never_used > 0
            && everyone.inactive_can_authenticate > 0
            && everyone.without_mfa > 0,
        "{what}: the generated tenant should exercise every column: {everyone:?}"
    );
    check_costs_and_reclaim(env, truth, &activities, &want, as_of, what).await;
}

/// PingOne's sign-on counts beside ours in the report. The producer asked for every whole UTC
/// day after its first polling position (`window.0`) and before the day of its last
/// (`window.1`), at most 30; the report compares those within 30 days of its `as_of`. Both
/// counts must equal the simulator's sign-on activities of those days, PingOne's plus the
/// injected `extra` for one application, which alone is flagged (at 10 %, not at 50 %). Returns
/// the truth's sign-ons per (day, application) of the compared days.
async fn check_signon_counts(
    env: &Env,
    truth: &Truth,
    window: (i64, i64),
    injected: Option<(&str, u64)>,
    what: &str,
) -> BTreeMap<(i64, String), u64> {
    const DAY: i64 = 86_400_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let as_of = i64::try_from(now).expect("ms");
    let ceil_day = |ms: i64| ms.div_euclid(DAY) + i64::from(ms.rem_euclid(DAY) != 0);
    // Whole days [first_day, last_day): after the first polling position, before the day of the
    // last, at most 30 (the producer), within 30 days of `as_of` (the report).
    let last_day = window.1.div_euclid(DAY);
    let first_day = ceil_day(window.0)
        .max(last_day - 30)
        .max(ceil_day(as_of - 30 * DAY));
    assert!(
        last_day - first_day >= 7,
        "{what}: too few whole days polled to compare: {first_day}..{last_day}"
    );
    let activities = env
        .sim
        .admin(&env.env_id)
        .truth_activities(&format_ms(first_day * DAY), &format_ms(last_day * DAY))
        .await
        .expect("truth activities");
    let mut counted: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for a in &activities {
        if a.pointer("/action/type").and_then(Value::as_str) != Some("USER.ACCESS_ALLOWED") {
            continue;
        }
        let app = a
            .pointer("/actors/client/id")
            .and_then(Value::as_str)
            .expect("client id");
        let at = a
            .get("recordedAt")
            .and_then(e2e::parse_ms)
            .expect("recordedAt");
        *counted
            .entry((at.div_euclid(DAY), app.to_owned()))
            .or_default() += 1;
    }
    let report = |gap: f64| async move {
        let json = transformer::report::run(
            &env.transformer,
            &ReportArgs {
                format: Format::Json,
                as_of: Some(format_ms(as_of)),
                tenant: Some(TENANT.into()),
                group_id: test_harness::unique_name("e2e-report"),
                signon_gap: gap,
                ..ReportArgs::default()
            },
        )
        .await
        .expect("license report");
        serde_json::from_str::<Vec<Value>>(&json).expect("report JSON")
    };
    let rows = report(transformer::report::signons::DEFAULT_GAP).await;
    let days = u64::try_from(last_day - first_day).expect("days");
    let (mut ours_sum, mut pingone_sum) = (0_u64, 0_u64);
    for app in truth.applications.keys() {
        let row = rows
            .iter()
            .find(|r| r["application_id"] == json!(app))
            .unwrap_or_else(|| panic!("{what}: no report row for {app}"));
        let ours: u64 = counted
            .iter()
            .filter(|((_, a), _)| a == app)
            .map(|(_, n)| n)
            .sum();
        let extra = injected.filter(|(a, _)| a == app).map_or(0, |(_, n)| n);
        assert_eq!(
            row["signon_days"],
            json!(days),
            "{what}: days compared for {app}"
        );
        assert_eq!(
            row["signons"],
            json!(ours),
            "{what}: activity-derived sign-ons of {app}"
        );
        assert_eq!(
            row["pingone_signons"],
            json!(ours + extra),
            "{what}: PingOne's sign-ons of {app}"
        );
        assert_eq!(
            row["signon_gap_flagged"],
            json!(extra > 0),
            "{what}: gap flag of {app}: {row}"
        );
        ours_sum += ours;
        pingone_sum += ours + extra;
    }
    assert!(
        ours_sum > 50,
        "{what}: too few sign-ons to compare: {ours_sum}"
    );
    let tenant_row = rows
        .iter()
        .find(|r| r["application_id"].is_null())
        .expect("tenant row");
    assert_eq!(
        tenant_row["signons"],
        json!(ours_sum),
        "{what}: tenant sign-ons"
    );
    assert_eq!(
        tenant_row["pingone_signons"],
        json!(pingone_sum),
        "{what}: tenant PingOne sign-ons"
    );
    if let Some((app, _)) = injected {
        // The injected gap is 20 %: a 50 % tolerance flags nothing.
        let wide = report(0.5).await;
        let row = wide
            .iter()
            .find(|r| r["application_id"] == json!(app))
            .expect("row of the injected application");
        assert_eq!(row["signon_gap_flagged"], json!(false), "{what}: {row}");
        let gap = row["signon_gap"].as_f64().expect("gap");
        assert!((0.15..0.25).contains(&gap), "{what}: injected gap {gap}");
    }
    counted
}

/// `--prices` and `license-report reclaim` against the truth: the application with the most
/// members has 3 paid seats at 12.50 a month, every other the default 6.00 a month for the users
/// who may use it; waste = (seats − active in the widest window) × price. The 30-day reclaim list
/// of a group-restricted application with both recent and lapsed users holds exactly its members
/// without an access in 30 days, each with its identity and the raw record it came from.
async fn check_costs_and_reclaim(
    env: &Env,
    truth: &Truth,
    activities: &[Value],
    want: &BTreeMap<String, e2e::ReportLine>,
    as_of: i64,
    what: &str,
) {
    let (busiest, _) = truth
        .applications
        .iter()
        .max_by_key(|(id, a)| (truth.authorized(a).len(), (*id).clone()))
        .expect("applications");
    let dir = std::env::temp_dir().join(test_harness::unique_name("e2e-prices"));
    std::fs::create_dir_all(&dir).unwrap();
    let prices = dir.join("prices.toml");
    std::fs::write(
        &prices,
        format!(
            "currency = \"EUR\"\ndefault_price = 6.0\n\n[[application]]\nid = \"{busiest}\"\n\
             price = 12.5\nseats = 3\n"
        ),
    )
    .unwrap();
    let args = |format, action| ReportArgs {
        format,
        active_days: WINDOWS.to_vec(),
        as_of: Some(format_ms(as_of)),
        tenant: Some(TENANT.into()),
        group_id: test_harness::unique_name("e2e-report"),
        input_prefix: None,
        prices: Some(prices.clone()),
        signon_gap: transformer::report::signons::DEFAULT_GAP,
        action,
    };
    let json = transformer::report::run(&env.transformer, &args(Format::Json, None))
        .await
        .expect("license report with prices");
    let rows: Vec<Value> = serde_json::from_str(&json).expect("report JSON");
    let widest = WINDOWS.iter().max().unwrap();
    let (mut seats_sum, mut waste_sum) = (0_u64, 0.0_f64);
    for row in rows.iter().filter(|r| r["application_id"].is_string()) {
        let id = row["application_id"].as_str().unwrap();
        let line = &want[id];
        let (seats, price) = if id == busiest.as_str() {
            (3, 12.5)
        } else {
            (line.may_use, 6.0)
        };
        let unused = seats.saturating_sub(line.active[widest]);
        let waste = (price * unused as f64 * 100.0).round() / 100.0;
        assert_eq!(row["seats"], seats, "{what}: seats of {id}");
        assert_eq!(row["unused_seats"], unused, "{what}: unused seats of {id}");
        assert_eq!(row["monthly_waste"], waste, "{what}: waste of {id}");
        assert_eq!(row["currency"], "EUR");
        seats_sum += seats;
        waste_sum += waste;
    }
    let tenant_row = rows
        .iter()
        .find(|r| r["application_id"].is_null())
        .expect("tenant row");
    assert_eq!(tenant_row["seats"], seats_sum, "{what}: tenant seats");
    let tenant_waste = tenant_row["monthly_waste"].as_f64().unwrap();
    assert!(
        (tenant_waste - waste_sum).abs() < 0.005 && waste_sum > 0.0,
        "{what}: tenant waste {tenant_waste}, applications {waste_sum}"
    );

    // A group-restricted application whose 30-day reclaim list is a strict, non-empty part of
    // its members (the largest such list), so that both the group rule and the window must
    // discriminate.
    let (reclaim_app, expected) = e2e::expected_reclaims(truth, activities, 30, as_of)
        .into_iter()
        .map(|(id, listed)| {
            let members = truth.authorized(&truth.applications[&id]).len();
            (id, listed, members)
        })
        .filter(|(_, listed, members)| {
            !listed.is_empty() && listed.len() < *members && *members < truth.users.len()
        })
        .max_by_key(|(id, listed, _)| (listed.len(), id.clone()))
        .map(|(id, listed, _)| (id, listed))
        .unwrap_or_else(|| {
            panic!(
                "{what}: no group-restricted application has both recent and lapsed users to \
                 reclaim from"
            )
        });
    let reclaim = ReportAction::Reclaim(ReclaimArgs {
        app: reclaim_app.clone(),
        inactive_days: 30,
        format: ReclaimFormat::Json,
    });
    let json = transformer::report::run(&env.transformer, &args(Format::Json, Some(reclaim)))
        .await
        .expect("reclaim list");
    let listed: Vec<Value> = serde_json::from_str(&json).expect("reclaim JSON");
    let got: BTreeSet<String> = listed
        .iter()
        .map(|r| r["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, expected, "{what}: reclaim list of {reclaim_app}");
    for r in &listed {
        let user = &truth.users[r["user_id"].as_str().unwrap()];
        assert_eq!(r["username"], user["username"], "{what}: {r}");
        assert_eq!(
            r["source_topic"],
            env.transformer.kafka.raw_topic.as_str(),
            "{what}: {r}"
        );
        assert!(
            r["source_offset"].as_i64().is_some() && r["sync_id"].is_string(),
            "{what}: {r}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// How long the Python example consumer may take: its own bounds add up to about a minute.
const PYTHON_LIMIT: Duration = Duration::from_secs(180);

/// The two example consumers (`consumers/users-summary`, Rust, and
/// `consumers/python/users_summary.py`, confluent-kafka's `AvroDeserializer`) give, for the
/// tenant, the numbers the truth gives: users, `can_authenticate`, MFA enabled, never signed on.
async fn check_example_consumers(env: &Env, truth: &Truth) {
    let topic = &env.transformer.kafka.topics.users;
    let count = |f: &dyn Fn(&Value) -> bool| truth.users.values().filter(|u| f(u)).count();
    let want = format!(
        "tenant={TENANT} users={} can_authenticate={} mfa_enabled={} never_signed_on={}",
        truth.users.len(),
        count(&|u| u.pointer("/account/canAuthenticate") == Some(&Value::Bool(true))),
        count(&|u| u.get("mfaEnabled") == Some(&Value::Bool(true))),
        count(&|u| u.pointer("/lastSignOn/at").is_none()),
    );
    let (bootstrap, registry) = (
        test_harness::kafka_bootstrap(),
        test_harness::schema_registry_url(),
    );
    let rust = users_summary::summarize(&bootstrap, &registry, topic)
        .await
        .expect("the Rust example consumer");
    assert_eq!(
        rust,
        vec![want.clone()],
        "the Rust example consumer's summary"
    );
    // The script bounds its own waits (10 s per Kafka call, 4 x 10 s per registry request);
    // this bound is for anything else that hangs, so the test fails instead of waiting for ever.
    let python = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../consumers/python/users_summary.py"
        ))
        .arg(topic)
        .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .env("SCHEMA_REGISTRY_URL", &registry)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PYTHON_LIMIT, python)
        .await
        .unwrap_or_else(|_| {
            panic!("the Python example consumer did not end within {PYTHON_LIMIT:?}: killed")
        })
        .unwrap();
    assert!(
        out.status.success(),
        "the Python example consumer failed ({}): {}\n(it needs `pip install -r \
         consumers/python/requirements.txt`; deploy/local/test does that)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{want}\n"),
        "the Python example consumer's summary"
    );
}

/// The latest app usage record of each (application, user) pair: every pair with a
/// `USER.ACCESS_ALLOWED` in the polled window has one, with the number of those accesses and the
/// newest one's id; no other pair has one.
async fn check_app_usage(env: &Env, topic: &str, window: (i64, i64)) {
    let records = consume_all(topic).await.expect("app usage topic");
    let values: Vec<&ConsumedRecord> = records.iter().filter(|r| r.value.is_some()).collect();
    let mut got: BTreeMap<String, (Value, Value)> = BTreeMap::new();
    for (k, r) in fastavro(env, &values) {
        got.insert(
            k,
            (
                r["access_count_total"].clone(),
                r["last_activity_id"].clone(),
            ),
        );
    }
    let activities = env
        .sim
        .admin(&env.env_id)
        .truth_activities(&format_ms(window.0 - OVERLAP_MS + 1), &format_ms(window.1))
        .await
        .expect("truth activities");
    // Newest first: the first event seen per pair is its last access.
    let mut want: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for a in &activities {
        if a.pointer("/action/type") != Some(&json!("USER.ACCESS_ALLOWED")) {
            continue;
        }
        let pair = format!(
            "{TENANT}/{}/{}",
            a.pointer("/actors/client/id")
                .and_then(Value::as_str)
                .expect("client"),
            a.pointer("/actors/user/id")
                .and_then(Value::as_str)
                .expect("user"),
        );
        let id = a["id"].as_str().expect("id").to_owned();
        want.entry(pair).or_insert((0, id)).0 += 1;
    }
    let want: BTreeMap<String, (Value, Value)> = want
        .into_iter()
        .map(|(k, (n, id))| (k, (json!(n), json!(id))))
        .collect();
    assert!(
        want.len() > 100,
        "too few used pairs to test with: {}",
        want.len()
    );
    assert_eq!(got.len(), want.len(), "app usage pairs vs truth");
    assert_eq!(
        got, want,
        "app usage (access_count_total, last_activity_id) per pair"
    );
}

/// The activity ids on the raw topic are exactly the truth's in the polled window, once each.
/// The `application_signons` events on the raw topic.
async fn raw_signon_counts(env: &Env) -> usize {
    consume_all(&env.producer.kafka.raw_topic)
        .await
        .expect("read the raw topic")
        .iter()
        .filter(|r| r.header("kind") == Some(b"application_signons".as_slice()))
        .count()
}

async fn check_raw_activities(env: &Env, window: (i64, i64)) {
    let raw = consume_all(&env.producer.kafka.raw_topic)
        .await
        .expect("read the raw topic");
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for r in &raw {
        if r.header("kind") == Some(b"activity".as_slice()) {
            let (_, datum) =
                schemas::wire::decode(r.value.as_deref().expect("value")).expect("wire format");
            let event =
                schemas::raw::RawEvent::from_avro_datum(schemas::raw::raw_event_schema(), datum)
                    .expect("raw event");
            *ids.entry(event.entity_id.expect("activity id"))
                .or_default() += 1;
        }
    }
    let truth: BTreeSet<String> = env
        .sim
        .admin(&env.env_id)
        .truth_activities(&format_ms(window.0 - OVERLAP_MS + 1), &format_ms(window.1))
        .await
        .expect("truth activities")
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_owned())
        .collect();
    let dup: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "activities written twice: {dup:?}");
    let got: BTreeSet<String> = ids.into_keys().collect();
    assert_eq!(
        got.len(),
        truth.len(),
        "activities on the raw topic vs truth"
    );
    assert_eq!(got, truth, "activity ids on the raw topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_to_license_report() {
    let env = setup().await;
    let topics = env.transformer.kafka.topics.clone();
    let admin = env.sim.admin(&env.env_id);

    // Phase 1: one sync, 14 days of activity, the transformer until caught up.
    let truth1 = truth(&env).await;
    assert_eq!(truth1.users.len(), usize::try_from(USERS).expect("users"));
    sync(&env).await;
    let window1 = poll_activity(&env).await;
    transform(&env).await;

    let users1 = consume_all(&topics.users).await.expect("users topic");
    assert!(
        users1.iter().all(|r| r.value.is_some()),
        "no tombstone after the first sync"
    );
    let mut repeated = check_users(&env, &truth1, &users1.iter().collect::<Vec<_>>(), "sync 1");
    let apps1 = consume_all(&topics.applications)
        .await
        .expect("applications topic");
    check_applications(&env, &truth1, &apps1.iter().collect::<Vec<_>>(), "sync 1");
    check_raw_activities(&env, window1).await;
    check_report(&env, &truth1, window1, "sync 1").await;
    let counted = check_signon_counts(&env, &truth1, window1, None, "sync 1").await;
    assert_eq!(
        raw_signon_counts(&env).await,
        truth1.applications.len(),
        "sync 1: one application_signons event per application"
    );
    check_example_consumers(&env, &truth1).await;

    // Phase 2: delete users and an application, change others, add sign-ons, sync again.
    let user_ids: Vec<String> = truth1.users.keys().cloned().collect();
    let deleted_users = [&user_ids[3], &user_ids[50], &user_ids[120]];
    let deleted_app = truth1
        .applications
        .iter()
        .find(|(_, a)| Truth::rule(a).is_some())
        .map(|(id, _)| id.clone())
        .expect("an application with a group rule");
    for id in deleted_users {
        admin.delete_user(id).await.expect("delete user");
    }
    admin
        .delete_application(&deleted_app)
        .await
        .expect("delete application");
    let locked = &user_ids[7];
    admin.lock_user(locked).await.expect("lock");
    let mfa_user = &user_ids[8];
    let had_mfa = truth1.users[mfa_user]["mfaEnabled"] == json!(true);
    admin.set_mfa(mfa_user, !had_mfa).await.expect("mfa");
    let moved = &user_ids[9];
    admin
        .change_user(
            moved,
            &json!({"address": {"locality": "Tórshavn", "region": null}, "type": "Auditor"}),
        )
        .await
        .expect("change user");
    // A user who never accessed anything signs on to an open application: never_used and the
    // activity windows change for them.
    let open_app = truth1
        .applications
        .iter()
        .find(|(_, a)| Truth::rule(a).is_none())
        .map(|(id, _)| id.clone())
        .expect("an application without a group rule");
    let all_activity = admin
        .truth_activities(&format_ms(0), &format_ms(window1.1 + 86_400_000))
        .await
        .expect("all activities");
    let active: BTreeSet<&str> = all_activity
        .iter()
        .filter_map(|a| a.pointer("/actors/user/id").and_then(Value::as_str))
        .collect();
    let newcomer = user_ids
        .iter()
        .find(|u| !active.contains(u.as_str()) && !deleted_users.contains(u))
        .expect("a user who never signed on")
        .clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let signed_on_at = window1.1 + 1000;
    admin
        .append_signons(&[SignonSpec {
            user_id: newcomer.clone(),
            application_id: open_app.clone(),
            at: format_ms(signed_on_at),
        }])
        .await
        .expect("append sign-on");

    // PingOne counts sign-ons to the busiest application that the audit log does not show: a
    // quarter of its compared sign-ons more, on the last compared day, so its gap is 20 %.
    let mut per_app: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, app), n) in &counted {
        *per_app.entry(app.as_str()).or_default() += n;
    }
    let (busiest_app, its_count) = per_app
        .iter()
        .filter(|(app, _)| **app != deleted_app.as_str())
        .max_by_key(|(app, n)| (**n, **app))
        .map(|(app, n)| ((*app).to_owned(), *n))
        .expect("sign-ons on the compared days");
    let last_compared = counted.keys().map(|(day, _)| *day).max().expect("a day");
    let extra = its_count.div_ceil(4);
    admin
        .add_signon_counts(&[SignonCountSpec {
            application_id: busiest_app.clone(),
            at: format_ms(last_compared * 86_400_000 + 43_200_000),
            count: extra,
        }])
        .await
        .expect("extra sign-on counts");

    let truth2 = truth(&env).await;
    assert_eq!(truth2.users.len(), truth1.users.len() - deleted_users.len());
    assert!(!truth2.applications.contains_key(&deleted_app));
    sync(&env).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let window2 = poll_activity(&env).await;
    assert_eq!(
        window2.0, window1.1,
        "activity polling resumes from its committed position"
    );
    assert!(
        window2.1 > signed_on_at,
        "the new sign-on is in the polled window"
    );
    transform(&env).await;

    let users2 = consume_all(&topics.users).await.expect("users topic");
    let new_users = after(&users2, &ends(&users1));
    let tombstones: BTreeSet<String> = new_users
        .iter()
        .filter(|r| r.value.is_none())
        .map(|r| key(r))
        .collect();
    let want_tombstones: BTreeSet<String> = deleted_users.iter().map(|id| entity_key(id)).collect();
    assert_eq!(tombstones, want_tombstones, "user tombstones after sync 2");
    assert_eq!(
        new_users.iter().filter(|r| r.value.is_none()).count(),
        deleted_users.len(),
        "one tombstone per deleted user"
    );
    repeated.extend(check_users(&env, &truth2, &new_users, "sync 2"));
    let locked_now = seven_from_pingone(&truth2.users[locked]);
    assert_eq!(
        locked_now[0],
        json!(false),
        "the locked user cannot authenticate"
    );
    assert_eq!(
        seven_from_pingone(&truth2.users[moved])[5],
        json!("Auditor")
    );

    let apps2 = consume_all(&topics.applications)
        .await
        .expect("applications topic");
    let new_apps = after(&apps2, &ends(&apps1));
    let app_tombstones: Vec<String> = new_apps
        .iter()
        .filter(|r| r.value.is_none())
        .map(|r| key(r))
        .collect();
    assert_eq!(
        app_tombstones,
        vec![entity_key(&deleted_app)],
        "application tombstones after sync 2"
    );
    check_applications(&env, &truth2, &new_apps, "sync 2");
    check_raw_activities(&env, (window1.0, window2.1)).await;
    check_report(&env, &truth2, (window1.0, window2.1), "sync 2").await;
    check_signon_counts(
        &env,
        &truth2,
        (window1.0, window2.1),
        Some((&busiest_app, extra)),
        "sync 2",
    )
    .await;
    // The counts changed (the injected sign-ons, the deleted application): written once more.
    // Polled again with nothing changed, they are not written again.
    let written = raw_signon_counts(&env).await;
    assert_eq!(
        written,
        truth1.applications.len() + truth2.applications.len(),
        "sync 2: application_signons events"
    );
    poll_activity(&env).await;
    assert_eq!(
        raw_signon_counts(&env).await,
        written,
        "unchanged sign-on counts are not written again"
    );
    // After deletions: the consumers must drop tombstoned users.
    check_example_consumers(&env, &truth2).await;
    check_app_usage(&env, &topics.app_usage, (window1.0, window2.1)).await;

    env.sim.shutdown().await;

    // Last, so that every check above has run: each sync writes each user exactly once.
    assert!(
        repeated.is_empty(),
        "{} user records repeated within a sync (e.g. {:?}); the producer must write a sync's \
         group_membership events before its users (schemas/README.md)",
        repeated.len(),
        &repeated[..repeated.len().min(3)]
    );
}
