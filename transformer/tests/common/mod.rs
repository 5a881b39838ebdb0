//! Helpers of the transformer's integration tests: realistic raw events (PingOne JSON inside
//! Confluent-framed `RawEvent`s registered in the registry), producing them, waiting for and
//! decoding the outputs.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::manual_is_multiple_of
)]

use std::time::Duration;

use pipeline_io::registry::Registry;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use schemas::raw::{RAW_EVENT_SCHEMA, RawEvent, kind};
use schemas::usage::{AppUsage, Application, UserUsage};
use schemas::wire;
use serde_json::{Value, json};
use test_harness::kafka::{
    ConsumedRecord, TopicOptions, consume_all, create_topic, producer_config,
};
use test_harness::registry::{Registration, RegistryClient};
use transformer::config::Config;

/// An application of a sync: id and optional group rule (type, group ids).
pub type AppSpec<'a> = (&'a str, Option<(&'a str, &'a [&'a str])>);

pub const ENV_ID: &str = "5f0c4a52-8d0e-4b6a-9a57-3d1f2b7c9e10";

/// A raw topic with its registered schema id, plus a config pointing the transformer at it
/// with a unique prefix, group and transactional id.
pub struct Setup {
    pub raw_topic: String,
    pub schema_id: u32,
    pub config: Config,
}

pub async fn setup(name: &str, partitions: i32) -> Setup {
    test_harness::init_tracing();
    let raw_topic = test_harness::unique_name(&format!("raw-{name}"));
    create_topic(&raw_topic, &TopicOptions::new(partitions))
        .await
        .unwrap();
    let registry = RegistryClient::new(&test_harness::schema_registry_url()).unwrap();
    let schema_id = match registry
        .register_avro(&format!("{raw_topic}-value"), RAW_EVENT_SCHEMA)
        .await
        .unwrap()
    {
        Registration::Registered { id } => id,
        other => panic!("raw schema not registered: {other:?}"),
    };
    let prefix = format!("{}.", test_harness::unique_name(&format!("out-{name}")));
    let mut config = Config::for_addresses(
        test_harness::kafka_bootstrap(),
        test_harness::schema_registry_url(),
    )
    .expect("test addresses are valid")
    .with_output_prefix(&prefix);
    config.kafka.raw_topic = raw_topic.clone();
    config.kafka.group_id = test_harness::unique_name("transformer-group");
    config.kafka.transactional_id = test_harness::unique_name("transformer-txn");
    config.processing.batch_max_wait = Duration::from_millis(50);
    config.kafka.client.timeout = Duration::from_secs(20);
    config.kafka.transaction_timeout = Duration::from_secs(20);
    Setup {
        raw_topic,
        schema_id,
        config,
    }
}

pub fn event(
    tenant: &str,
    kind: &str,
    entity: Option<&str>,
    sync: Option<&str>,
    payload: &Value,
) -> RawEvent {
    RawEvent {
        tenant_id: tenant.into(),
        environment_id: ENV_ID.into(),
        region: "eu".into(),
        kind: kind.into(),
        entity_id: entity.map(str::to_owned),
        sync_id: sync.map(str::to_owned),
        observed_at_ms: 1_795_000_000_000,
        payload: payload.to_string(),
        producer_version: "test".into(),
    }
}

/// The PingOne JSON of a generated user `i` (fields vary with `i`).
pub fn user_json(i: usize) -> Value {
    let verify = ["NOT_INITIATED", "ENABLED", "DISABLED"][i % 3];
    let mut u = json!({
        "_links": {"self": {"href": format!("https://api.pingone.eu/v1/environments/{ENV_ID}/users/u-{i}")}},
        "id": format!("u-{i}"),
        "environment": {"id": ENV_ID},
        "population": {"id": "pop-1"},
        "username": format!("user{i}@example.com"),
        "email": format!("user{i}@example.com"),
        "name": {"given": format!("Given{i}"), "family": "Family"},
        "enabled": i % 7 != 0,
        "lifecycle": {"status": if i % 5 == 0 { "VERIFICATION_REQUIRED" } else { "ACCOUNT_OK" }},
        "account": {"canAuthenticate": i % 4 != 0, "status": if i % 4 == 0 { "LOCKED" } else { "OK" }},
        "verifyStatus": verify,
        "identityProvider": {"type": "PING_ONE"},
        "createdAt": "2026-01-02T03:04:05.678Z",
        "updatedAt": "2026-11-01T00:00:00Z",
        "customAttribute": {"nested": [1, 2, 3]}
    });
    if i % 2 == 0 {
        u["mfaEnabled"] = json!(i % 4 == 0);
    }
    if i % 3 != 0 {
        u["address"] = json!({"locality": format!("City{}", i % 10), "region": format!("Region{}", i % 4), "countryCode": "DE"});
    }
    if i % 6 != 1 {
        u["type"] = json!(if i % 2 == 0 { "Employee" } else { "Contractor" });
    }
    if i % 3 == 1 {
        u["lastSignOn"] = json!({"at": "2026-11-15T08:00:00.000Z", "remoteIp": "10.1.2.3"});
    }
    u
}

pub fn app_json(id: &str, rule: Option<(&str, &[&str])>) -> Value {
    let mut a = json!({"id": id, "name": format!("App {id}"), "type": "WEB_APP", "protocol": "OPENID_CONNECT",
                       "enabled": true, "clientId": id, "grantTypes": ["AUTHORIZATION_CODE"]});
    if let Some((ty, groups)) = rule {
        let groups: Vec<Value> = groups.iter().map(|g| json!({"id": g})).collect();
        a["accessControl"] = json!({"group": {"type": ty, "groups": groups}});
    }
    a
}

pub fn access_json(id: &str, app: &str, user: &str, at: &str) -> Value {
    json!({"id": id, "recordedAt": at, "createdAt": at, "correlationId": "c",
           "action": {"type": "USER.ACCESS_ALLOWED", "description": "User Access Allowed"},
           "actors": {"client": {"id": app, "name": format!("App {app}"), "type": "CLIENT"},
                      "user": {"id": user, "name": user, "type": "USER"}},
           "resources": [{"type": "USER", "id": user}], "result": {"status": "SUCCESS"}})
}

pub fn deleted_json(id: &str, what: &str, entity: &str) -> Value {
    json!({"id": id, "recordedAt": "2026-11-20T00:00:00Z", "action": {"type": format!("{what}.DELETED")},
           "actors": {"user": {"id": "admin", "type": "USER"}},
           "resources": [{"type": what, "id": entity}]})
}

/// The events of one complete sync.
pub fn sync_events(
    tenant: &str,
    sync: &str,
    users: &[usize],
    apps: &[AppSpec<'_>],
    members: &[(&str, usize)],
) -> Vec<RawEvent> {
    let s = Some(sync);
    let mut v = vec![event(
        tenant,
        kind::SYNC_STARTED,
        None,
        s,
        &json!({"sync_id": sync, "started_at": "2026-11-20T00:00:00Z", "kinds": ["application", "group", "group_membership", "user"]}),
    )];
    for (id, rule) in apps {
        v.push(event(
            tenant,
            kind::APPLICATION,
            Some(id),
            s,
            &app_json(id, *rule),
        ));
    }
    for (g, u) in members {
        v.push(event(
            tenant,
            kind::GROUP_MEMBERSHIP,
            Some(&format!("{g}/u-{u}")),
            s,
            &user_json(*u),
        ));
    }
    for i in users {
        v.push(event(
            tenant,
            kind::USER,
            Some(&format!("u-{i}")),
            s,
            &user_json(*i),
        ));
    }
    v.push(event(
        tenant,
        kind::SYNC_COMPLETED,
        None,
        s,
        &json!({"sync_id": sync, "counts": {"user": users.len(), "group": 0,
                 "group_membership": members.len(), "application": apps.len()}}),
    ));
    v
}

pub fn framed(schema_id: u32, e: &RawEvent) -> Vec<u8> {
    wire::encode(schema_id, &e.to_avro_datum().unwrap())
}

pub fn producer() -> FutureProducer {
    producer_config().create().unwrap()
}

/// Produces (key, value) pairs in order and waits for every delivery.
pub async fn produce(topic: &str, records: &[(String, Vec<u8>)]) {
    let p = producer();
    let mut futures = Vec::new();
    for (k, v) in records {
        let mut r = FutureRecord::to(topic)
            .key(k.as_bytes())
            .payload(v.as_slice());
        loop {
            match p.send_result(r) {
                Ok(f) => {
                    futures.push(f);
                    break;
                }
                Err((_, back)) => {
                    r = back;
                    p.poll(Duration::from_millis(20));
                }
            }
        }
    }
    for f in futures {
        f.await.unwrap().unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

pub async fn produce_events(s: &Setup, events: &[RawEvent]) {
    let records: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.tenant_id.clone(), framed(s.schema_id, e)))
        .collect();
    produce(&s.raw_topic, &records).await;
}

/// Reads `topic` again and again until `done` holds for its records; fails on a
/// [`test_harness::Stall`] of `stall` (no new record for that long, or 4 × `stall` in all).
pub async fn wait_for(
    topic: &str,
    stall: Duration,
    done: impl Fn(&[ConsumedRecord]) -> bool,
) -> Vec<ConsumedRecord> {
    let mut progress = test_harness::Stall::new(stall);
    loop {
        let records = consume_all(topic).await.unwrap_or_default();
        if done(&records) {
            return records;
        }
        if let Err(e) = progress.observe(records.len()) {
            panic!("{topic} did not reach the expected state: {e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub fn key(r: &ConsumedRecord) -> String {
    String::from_utf8(r.key.clone().unwrap_or_default()).unwrap()
}

pub async fn decode_user(reg: &Registry, r: &ConsumedRecord) -> UserUsage {
    let (id, datum) = wire::decode(r.value.as_deref().unwrap()).unwrap();
    UserUsage::from_avro_datum(&reg.schema_by_id(id).await.unwrap(), datum).unwrap()
}

pub async fn decode_app(reg: &Registry, r: &ConsumedRecord) -> Application {
    let (id, datum) = wire::decode(r.value.as_deref().unwrap()).unwrap();
    Application::from_avro_datum(&reg.schema_by_id(id).await.unwrap(), datum).unwrap()
}

pub async fn decode_usage(reg: &Registry, r: &ConsumedRecord) -> AppUsage {
    let (id, datum) = wire::decode(r.value.as_deref().unwrap()).unwrap();
    AppUsage::from_avro_datum(&reg.schema_by_id(id).await.unwrap(), datum).unwrap()
}

pub fn registry(config: &Config) -> Registry {
    config.registry.client().unwrap()
}

/// What [`syncs_with_accesses`] wrote: the raw events, and per `<tenant>/<app>/<user>` pair how
/// many accesses.
pub struct Workload {
    pub events: Vec<RawEvent>,
    pub accesses: std::collections::BTreeMap<String, u64>,
}

/// Per tenant, one complete sync of each range of `users` (sync ids `<tenant>-s<n>`, apps
/// `open` and `gated` with `members` members of `g1`), each followed by `accesses` access
/// activities; `pick(n, a)` chooses the user, day (1–28) and hour of access `a` after sync `n`.
pub fn syncs_with_accesses(
    tenants: &[&str],
    users: &[std::ops::Range<usize>],
    members: usize,
    accesses: usize,
    mut pick: impl FnMut(usize, usize) -> (usize, u64, u64),
) -> Workload {
    let mut events = Vec::new();
    let mut counted: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for tenant in tenants {
        for (n, range) in users.iter().enumerate() {
            let ids: Vec<usize> = range.clone().collect();
            let rule: &[&str] = &["g1"];
            let group: Vec<(&str, usize)> = (0..members).map(|u| ("g1", u)).collect();
            events.extend(sync_events(
                tenant,
                &format!("{tenant}-s{n}"),
                &ids,
                &[("open", None), ("gated", Some(("ANY_GROUP", rule)))],
                &group,
            ));
            for a in 0..accesses {
                let app = if a % 3 == 0 { "gated" } else { "open" };
                let (u, day, hour) = pick(n, a);
                let user = format!("u-{u}");
                let id = format!("{tenant}-act-{n}-{a}");
                let at = format!("2026-11-{day:02}T{hour:02}:00:00Z");
                *counted.entry(format!("{tenant}/{app}/{user}")).or_default() += 1;
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
    Workload {
        events,
        accesses: counted,
    }
}

/// Checks the `read_committed` outputs of a [`syncs_with_accesses`] workload: every (user, sync)
/// exactly once, a tombstone exactly once for each user of the first range missing from the
/// last, each pair's access totals exactly 1..=n in order, two applications per sync, and no
/// dead letter. With `partition_of` (tenant -> raw partition), every user and usage record must
/// be on its tenant's raw partition. `context` is added to failure messages.
pub async fn check_exactly_once(
    config: &Config,
    tenants: &[&str],
    users: &[std::ops::Range<usize>],
    workload: &Workload,
    partition_of: Option<&std::collections::BTreeMap<String, i32>>,
    context: &str,
) {
    use std::collections::BTreeMap;
    let topics = &config.kafka.topics;
    let reg = registry(config);
    let on_its_partition = |r: &ConsumedRecord| {
        let k = key(r);
        if let Some(map) = partition_of {
            let tenant = k.split('/').next().unwrap();
            assert_eq!(
                Some(&r.partition),
                map.get(tenant),
                "{k} not on its tenant's raw partition; {context}"
            );
        }
        k
    };
    let records = consume_all(&topics.users).await.unwrap();
    let mut per_sync: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut tombstones: BTreeMap<String, u32> = BTreeMap::new();
    for r in &records {
        let k = on_its_partition(r);
        match &r.value {
            None => *tombstones.entry(k).or_default() += 1,
            Some(_) => {
                let u = decode_user(&reg, r).await;
                *per_sync.entry((k, u.sync_id.unwrap())).or_default() += 1;
            }
        }
    }
    let first = &users[0];
    let last = &users[users.len() - 1];
    let expected_users = tenants.len() * users.iter().map(ExactSizeIterator::len).sum::<usize>();
    let expected_tombstones = tenants.len() * (first.len() - last.len());
    assert_eq!(
        records.len(),
        expected_users + expected_tombstones,
        "{context}"
    );
    for tenant in tenants {
        for (n, range) in users.iter().enumerate() {
            for i in range.clone() {
                let k = (format!("{tenant}/u-{i}"), format!("{tenant}-s{n}"));
                assert_eq!(per_sync.get(&k), Some(&1), "{k:?}; {context}");
            }
        }
        for i in last.end..first.end {
            assert_eq!(
                tombstones.get(&format!("{tenant}/u-{i}")),
                Some(&1),
                "tombstone {tenant}/u-{i}; {context}"
            );
        }
    }
    assert_eq!(tombstones.len(), expected_tombstones, "{context}");
    let mut totals: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &consume_all(&topics.app_usage).await.unwrap() {
        let k = on_its_partition(r);
        let u = decode_usage(&reg, r).await;
        totals.entry(k).or_default().push(u.access_count_total);
    }
    assert_eq!(totals.len(), workload.accesses.len(), "{context}");
    for (pair, n) in &workload.accesses {
        let want: Vec<i64> = (1..=i64::try_from(*n).unwrap()).collect();
        assert_eq!(totals.get(pair), Some(&want), "{pair}; {context}");
    }
    let apps = consume_all(&topics.applications).await.unwrap();
    assert_eq!(apps.len(), tenants.len() * users.len() * 2, "{context}");
    let dead = consume_all(&topics.dead_letter).await.unwrap();
    assert!(dead.is_empty(), "no dead letters expected; {context}");
}

/// A `transformer` process, killed (SIGKILL) when dropped, so that a failed assertion leaves
/// none behind.
pub struct Running {
    pub child: std::process::Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Starts the transformer binary `bin` with `--config config run`, stderr appended to
    /// `log`, with `envs` set.
    pub fn start(
        bin: &str,
        config: &std::path::Path,
        log: &std::path::Path,
        envs: &[(&str, String)],
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("run")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child }
    }

    /// Stops it with SIGTERM and requires a clean exit within 60 s (`log` named on failure).
    pub async fn stop(mut self, log: &std::path::Path) {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let started = std::time::Instant::now();
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no exit after SIGTERM; log in {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            exit.success(),
            "graceful shutdown exit status {exit}; log in {}",
            log.display()
        );
    }
}
