//! Helpers of the lake sink's integration tests (`tests/lake.rs`):
//!
//! - [`Topics`]: the three normalized topics under a unique prefix, with the contract schemas
//!   registered under their `<topic>-value` subjects.
//! - Records as the transformer writes them ([`user`], [`application`], [`app_usage`],
//!   [`Workload`]): Confluent framing, keys `<tenant>/<id>`, several tenants, updates of the same
//!   key, tombstones, and one value that is not framed; [`Writer`] writes them in Kafka
//!   transactions (and can abort one).
//! - [`Lake`] and [`Sink`]: the `lake-sink` binary run against a temporary location (killed on
//!   drop), `maintain`, and `/metrics`.
//! - [`read_lake`]: the independent Python reader (`tests/read_lake.py`, Python `deltalake`).
//! - What the tables must hold, computed from the topics read back with `read_committed`
//!   ([`expected_rows`], [`assert_rows`], [`assert_current`], [`assert_exactly_once`]).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::manual_is_multiple_of
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use schemas::usage::{
    APP_USAGE_SCHEMA, APPLICATION_SCHEMA, AppUsage, Application, DailyAccessCount,
    USER_USAGE_SCHEMA, UserUsage,
};
use serde_json::{Map, Value, json};
use test_harness::kafka::{ConsumedRecord, TopicOptions, create_topic};
use test_harness::registry::{Registration, RegistryClient};

/// Tenants of the generated records (the first part of every key).
pub const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
/// Partitions of every test topic.
pub const PARTITIONS: i32 = 3;
/// The tables, in the sink's order.
pub const TABLES: [&str; 3] = ["users", "applications", "app_usage"];
/// The sink's own columns, first in every table.
pub const META: [&str; 7] = [
    "record_key",
    "deleted",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "decode_error",
];
/// The partition columns, last in every table (until a column is added).
pub const PARTITION_COLUMNS: [&str; 2] = ["tenant", "record_date"];

const ENV_ID: &str = "5f0c4a52-8d0e-4b6a-9a57-3d1f2b7c9e10";
const DAY_MS: i64 = 86_400_000;

/// The contract schema of a table's topic.
pub fn contract_schema(table: &str) -> &'static str {
    match table {
        "users" => USER_USAGE_SCHEMA,
        "applications" => APPLICATION_SCHEMA,
        _ => APP_USAGE_SCHEMA,
    }
}

/// The field names of a record schema (its JSON text), in order.
pub fn field_names(schema: &str) -> Vec<String> {
    let parsed: Value = serde_json::from_str(schema).unwrap();
    parsed["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The three normalized topics of one test, and the schema ids of their values.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `LAKE_SINK__KAFKA__OUTPUT_PREFIX`.
    pub prefix: String,
    /// Topic of each table, in [`TABLES`] order.
    pub names: [String; 3],
    /// Schema id of each topic's contract schema, in [`TABLES`] order.
    pub ids: [u32; 3],
    /// Every writer schema the test used, by id.
    pub schemas: HashMap<u32, Schema>,
}

impl Topics {
    /// Creates `<prefix>users.v1`, `<prefix>applications.v1`, `<prefix>app_usage.v1` with
    /// [`PARTITIONS`] partitions under a unique prefix, and registers the contract schemas
    /// under `<topic>-value`.
    pub async fn create(name: &str) -> Self {
        test_harness::infra();
        let prefix = format!("{}.", test_harness::unique_name(&format!("lake-{name}")));
        let registry = RegistryClient::from_env().unwrap();
        let mut names: Vec<String> = Vec::new();
        let mut ids = Vec::new();
        let mut schemas = HashMap::new();
        for table in TABLES {
            let topic = format!("{prefix}{table}.v1");
            create_topic(&topic, &TopicOptions::new(PARTITIONS))
                .await
                .unwrap();
            let text = contract_schema(table);
            let id = register(&registry, &format!("{topic}-value"), text).await;
            schemas.insert(id, Schema::parse_str(text).unwrap());
            names.push(topic);
            ids.push(id);
        }
        Self {
            prefix,
            names: names.try_into().unwrap(),
            ids: ids.try_into().unwrap(),
            schemas,
        }
    }

    /// The topic of `table`.
    pub fn topic(&self, table: &str) -> &str {
        &self.names[table_index(table)]
    }

    /// The schema id of `table`'s contract schema.
    pub fn id(&self, table: &str) -> u32 {
        self.ids[table_index(table)]
    }

    /// Every committed record of `table`'s topic (`read_committed`), by partition and offset.
    pub async fn read(&self, table: &str) -> Vec<ConsumedRecord> {
        test_harness::kafka::consume_all_within(self.topic(table), Duration::from_secs(120))
            .await
            .unwrap()
    }

    /// Every committed record of the three topics, in [`TABLES`] order.
    pub async fn read_all(&self) -> [Vec<ConsumedRecord>; 3] {
        [
            self.read("users").await,
            self.read("applications").await,
            self.read("app_usage").await,
        ]
    }

    /// `table,topic` pairs for the reader's `--topics`.
    pub fn reader_topics(&self) -> String {
        TABLES
            .iter()
            .map(|t| format!("{t}={}", self.topic(t)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Registers `schema` under `subject`; its id.
pub async fn register(registry: &RegistryClient, subject: &str, schema: &str) -> u32 {
    match registry.register_avro(subject, schema).await.unwrap() {
        Registration::Registered { id } => id,
        other => panic!("{subject}: schema not registered: {other:?}"),
    }
}

/// The index of `table` in [`TABLES`].
pub fn table_index(table: &str) -> usize {
    TABLES.iter().position(|t| *t == table).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Records.

/// One record to write.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Its topic.
    pub topic: String,
    /// Its key, `<tenant>/<id>`.
    pub key: String,
    /// Its value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Its Kafka timestamp.
    pub timestamp_ms: i64,
}

/// `i` as an `i64`.
fn int(i: usize) -> i64 {
    i64::try_from(i).unwrap()
}

/// Generated user `i` of `tenant` in its `version`-th state (fields vary with both).
pub fn user(tenant: &str, i: usize, version: u32) -> UserUsage {
    let v = i64::from(version);
    UserUsage {
        tenant_id: tenant.into(),
        environment_id: ENV_ID.into(),
        user_id: format!("u-{i}"),
        username: (i % 7 != 0).then(|| format!("user{i}@{tenant}.example")),
        email: (i % 9 != 0).then(|| format!("user{i}.v{version}@{tenant}.example")),
        display_name: match i % 5 {
            0 => None,
            1 => Some(format!("Zoë Ünïcødé 日本 {i}")),
            _ => Some(format!("Given{i} Family{version}")),
        },
        can_authenticate: match (i + version as usize) % 3 {
            0 => None,
            1 => Some(true),
            _ => Some(false),
        },
        locality: (i % 4 != 0).then(|| format!("City{}", i % 13)),
        mfa_enabled: (i % 2 == 0).then_some(i % 4 == 0),
        region: (i % 3 != 0).then(|| format!("Region{}", i % 4)),
        status: Some(
            if (i + version as usize) % 5 == 0 {
                "LOCKED"
            } else {
                "OK"
            }
            .into(),
        ),
        enabled: (i % 10 != 3).then_some(i % 11 != 0),
        lifecycle_status: Some("ACCOUNT_OK".into()),
        user_type: (i % 6 != 1).then(|| if i % 2 == 0 { "Employee" } else { "Contractor" }.into()),
        verify_status: Some(["NOT_INITIATED", "ENABLED", "DISABLED"][i % 3].into()),
        population_id: Some(format!("pop-{}", i % 2)),
        identity_provider_type: Some(if i % 8 == 0 { "SAML" } else { "PING_ONE" }.into()),
        identity_provider_id: (i % 8 == 0).then(|| format!("idp-{tenant}")),
        last_sign_on_at: (i % 3 == 1).then_some(1_795_000_000_000 + int(i) * 1_000 + v),
        created_at: Some(1_700_000_000_123 + int(i) * 60_000),
        updated_at: (i % 13 != 0).then_some(1_790_000_000_000 + v * 3_600_000 + int(i)),
        access_group_ids: (0..(i + version as usize) % 4)
            .map(|g| format!("g{g}"))
            .collect(),
        sync_id: Some(format!("{tenant}-s{version}")),
        source_topic: "pingone.raw.v1".into(),
        source_partition: i32::try_from(i % 3).unwrap(),
        source_offset: int(i) * 10 + v,
        observed_at: 1_795_100_000_000 + v * DAY_MS + int(i),
    }
}

/// Generated application `i` of `tenant` in its `version`-th state.
pub fn application(tenant: &str, i: usize, version: u32) -> Application {
    let v = i64::from(version);
    let gated = i % 3 != 0;
    Application {
        tenant_id: tenant.into(),
        environment_id: ENV_ID.into(),
        application_id: format!("app-{i}"),
        name: (i % 5 != 4).then(|| format!("App {i} v{version}")),
        app_type: Some(["WEB_APP", "NATIVE_APP", "WORKER"][i % 3].into()),
        protocol: (i % 4 != 0).then(|| "OPENID_CONNECT".into()),
        enabled: Some(i % 6 != 5),
        access_control_role_type: (i % 7 == 0).then(|| "ADMIN_USERS_ONLY".into()),
        access_control_group_type: gated.then(|| {
            if i % 2 == 0 {
                "ANY_GROUP"
            } else {
                "ALL_GROUPS"
            }
            .into()
        }),
        access_control_group_ids: if gated {
            (0..1 + (i + version as usize) % 3)
                .map(|g| format!("g{g}"))
                .collect()
        } else {
            Vec::new()
        },
        authorized_user_count: int(i) * 17 + v,
        sync_id: Some(format!("{tenant}-s{version}")),
        source_topic: "pingone.raw.v1".into(),
        source_partition: i32::try_from(i % 3).unwrap(),
        source_offset: int(i) * 100 + v,
        observed_at: 1_795_100_000_000 + v * DAY_MS + int(i),
    }
}

/// Generated usage of application `app` by user `u` of `tenant`, after `n` accesses.
pub fn app_usage(tenant: &str, app: usize, u: usize, n: u32) -> AppUsage {
    let days = 1 + (u + app + n as usize) % 4;
    let daily: Vec<DailyAccessCount> = (0..days)
        .map(|d| DailyAccessCount {
            day: 20_400 + i32::try_from(d * 3 + app % 5).unwrap(),
            count: 1 + i32::try_from((u + d) % 6).unwrap(),
        })
        .collect();
    let last_day = i64::from(daily.last().map_or(20_400, |d| d.day));
    AppUsage {
        tenant_id: tenant.into(),
        environment_id: ENV_ID.into(),
        application_id: format!("app-{app}"),
        user_id: format!("u-{u}"),
        application_name: (app % 5 != 4).then(|| format!("App {app}")),
        last_access_at: last_day * DAY_MS + int(u) * 1_000 + i64::from(n),
        access_count_7d: daily.iter().map(|d| d.count).sum(),
        access_count_30d: daily.iter().map(|d| d.count).sum::<i32>() + 1,
        access_count_90d: daily.iter().map(|d| d.count).sum::<i32>() + 2,
        access_count_total: i64::from(n),
        daily_access_counts: daily,
        last_activity_id: format!("act-{tenant}-{app}-{u}-{n}"),
        source_topic: "pingone.raw.v1".into(),
        source_partition: i32::try_from(u % 3).unwrap(),
        source_offset: int(u) * 1_000 + i64::from(n),
        observed_at: 1_795_200_000_000 + int(u),
    }
}

/// A small deterministic generator (seeds are printed by the tests).
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..below`.
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// A seed from the clock.
pub fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    u64::try_from(nanos % u128::from(u64::MAX)).unwrap()
}

/// Records for the three topics of `topics`, built as a transformer writes them over syncs.
#[derive(Debug)]
pub struct Workload<'a> {
    topics: &'a Topics,
    /// The records, in writing order.
    pub records: Vec<Rec>,
    now_ms: i64,
}

impl<'a> Workload<'a> {
    /// No records yet.
    pub fn new(topics: &'a Topics) -> Self {
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        Self {
            topics,
            records: Vec::new(),
            now_ms,
        }
    }

    /// Adds a record of `table` with `value` (`None`: tombstone).
    pub fn push(&mut self, table: &str, key: String, value: Option<Vec<u8>>) {
        self.records.push(Rec {
            topic: self.topics.topic(table).to_owned(),
            key,
            value,
            timestamp_ms: 0,
        });
    }

    /// Adds user `i` of `tenant` in `version`.
    pub fn user(&mut self, tenant: &str, i: usize, version: u32) {
        let datum = user(tenant, i, version).to_avro_datum().unwrap();
        let value = schemas::wire::encode(self.topics.id("users"), &datum);
        self.push("users", format!("{tenant}/u-{i}"), Some(value));
    }

    /// Adds application `i` of `tenant` in `version`.
    pub fn application(&mut self, tenant: &str, i: usize, version: u32) {
        let datum = application(tenant, i, version).to_avro_datum().unwrap();
        let value = schemas::wire::encode(self.topics.id("applications"), &datum);
        self.push("applications", format!("{tenant}/app-{i}"), Some(value));
    }

    /// Adds the usage of application `app` by user `u` after `n` accesses.
    pub fn usage(&mut self, tenant: &str, app: usize, u: usize, n: u32) {
        let datum = app_usage(tenant, app, u, n).to_avro_datum().unwrap();
        let value = schemas::wire::encode(self.topics.id("app_usage"), &datum);
        self.push(
            "app_usage",
            format!("{tenant}/app-{app}/u-{u}"),
            Some(value),
        );
    }

    /// A tombstone of `key` on `table`.
    pub fn tombstone(&mut self, table: &str, key: String) {
        self.push(table, key, None);
    }

    /// A value that is not in the registry's wire format (no magic byte, no schema id).
    pub fn unframed(&mut self, table: &str, key: String) {
        self.push(
            table,
            key,
            Some(br#"{"user_id": "not Confluent-framed Avro"}"#.to_vec()),
        );
    }

    /// The transformer's syncs, per tenant (`users`, `apps` and `usages` are per tenant, `from`
    /// offsets the ids so that several calls add new keys): every user and application, usage
    /// records (about `usages`, over `usages / 2` pairs, some counted up to 3 times), updates
    /// of every 5th user (every 25th three times) and of every application, tombstones of every
    /// 50th user and every 10th application, and every 100th user created again after its
    /// tombstone.
    pub fn syncs(&mut self, from: usize, users: usize, apps: usize, usages: usize) {
        let pairs = (usages / 2).max(1);
        let apps = apps.max(1);
        for tenant in TENANTS {
            for i in from..from + users {
                self.user(tenant, i, 1);
            }
            for a in from..from + apps {
                self.application(tenant, a, 1);
            }
        }
        for round in 1..=3u32 {
            for tenant in TENANTS {
                for p in (0..pairs).filter(|p| p % round as usize == 0) {
                    self.usage(tenant, from + p % apps, from + p, round);
                }
            }
        }
        for tenant in TENANTS {
            for i in from..from + users {
                if i % 5 == 0 {
                    self.user(tenant, i, 2);
                }
                if i % 25 == 0 {
                    self.user(tenant, i, 3);
                    self.user(tenant, i, 4);
                }
            }
            for a in from..from + apps {
                self.application(tenant, a, 2);
            }
            for i in (from..from + users).filter(|i| i % 50 == 7) {
                self.tombstone("users", format!("{tenant}/u-{i}"));
            }
            for a in (from..from + apps).filter(|a| a % 10 == 3) {
                self.tombstone("applications", format!("{tenant}/app-{a}"));
            }
            for i in (from..from + users).filter(|i| i % 100 == 7) {
                self.user(tenant, i, 5);
            }
        }
    }

    /// The records, the three topics interleaved evenly (each key's records in order), with
    /// Kafka timestamps in writing order over three bands 8 hours apart within the last day
    /// (so usually two UTC days: `record_date` partitions).
    pub fn finish(self) -> Vec<Rec> {
        let mut per: [Vec<Rec>; 3] = Default::default();
        for r in self.records {
            let i = self
                .topics
                .names
                .iter()
                .position(|t| *t == r.topic)
                .unwrap();
            per[i].push(r);
        }
        let longest = per.iter().map(Vec::len).max().unwrap_or(0);
        let lens: Vec<usize> = per.iter().map(Vec::len).collect();
        let mut iters: Vec<_> = per.into_iter().map(Vec::into_iter).collect();
        let mut out = Vec::with_capacity(lens.iter().sum());
        for step in 0..longest {
            for (it, len) in iters.iter_mut().zip(&lens) {
                let due = (step + 1) * len / longest - step * len / longest;
                out.extend(it.by_ref().take(due));
            }
        }
        for (n, r) in out.iter_mut().enumerate() {
            r.timestamp_ms = self.now_ms - int(n % 3) * 8 * 3_600_000 - 3_600_000 + int(n / 10);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// A transactional producer, as the transformer writes: every record inside a transaction.
pub struct Writer {
    producer: BaseProducer,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// A producer with a unique `transactional.id`, transactions initialized.
    pub fn new() -> Self {
        let id = test_harness::unique_name("lake-test-writer");
        let producer: BaseProducer = test_harness::kafka::transactional_producer_config(&id)
            .set("linger.ms", "5")
            .create()
            .unwrap();
        producer.init_transactions(Duration::from_secs(30)).unwrap();
        Self { producer }
    }

    fn send(&self, records: &[Rec]) {
        for r in records {
            let mut record = BaseRecord::<[u8], [u8]>::to(&r.topic)
                .key(r.key.as_bytes())
                .timestamp(r.timestamp_ms);
            if let Some(v) = &r.value {
                record = record.payload(v.as_slice());
            }
            let mut record = record;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        assert!(
                            matches!(
                                e.rdkafka_error_code(),
                                Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            ),
                            "send: {e}"
                        );
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                    }
                }
            }
            self.producer.poll(Duration::ZERO);
        }
    }

    /// Writes `records` in one committed transaction.
    pub fn commit(&self, records: &[Rec]) {
        self.producer.begin_transaction().unwrap();
        self.send(records);
        self.producer
            .commit_transaction(Duration::from_secs(60))
            .unwrap();
    }

    /// Writes `records` in one transaction that is aborted: `read_committed` readers, the
    /// sink among them, never see them.
    pub fn abort(&self, records: &[Rec]) {
        self.producer.begin_transaction().unwrap();
        self.send(records);
        self.producer.flush(Duration::from_secs(60)).unwrap();
        self.producer
            .abort_transaction(Duration::from_secs(60))
            .unwrap();
    }

    /// Writes `records` in transactions of `per_txn`, pausing `pause` after each.
    pub fn write_all(&self, records: &[Rec], per_txn: usize, pause: Duration) {
        for chunk in records.chunks(per_txn) {
            self.commit(chunk);
            std::thread::sleep(pause);
        }
    }
}

/// Writes `records` on a thread of its own (transactions of `per_txn`, `pause` after each).
pub fn write_in_background(
    records: Vec<Rec>,
    per_txn: usize,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || Writer::new().write_all(&records, per_txn, pause))
}

// ---------------------------------------------------------------------------------------------
// The sink binary.

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// One location of tables and the settings every sink run on it gets.
#[derive(Debug)]
pub struct Lake {
    /// Temporary directory of the test (logs, outputs).
    pub base: PathBuf,
    /// The tables' location (`--location`).
    pub location: PathBuf,
    /// The topics.
    pub topics: Topics,
    /// Consumer group of the runs that do not name their own.
    pub group: String,
    /// Environment of every sink run and of the reader (an object store's address and
    /// credentials).
    pub env: Vec<(&'static str, String)>,
}

/// A running `lake-sink` process: SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct Sink {
    child: Option<Child>,
    /// Its stderr.
    pub log: PathBuf,
    /// Its stdout.
    pub out: PathBuf,
    /// Its `/metrics` listener, when it has one.
    pub ops: Option<SocketAddr>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Sink {
    /// `kill -9`, and reaped.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits up to `limit` for the exit.
    pub fn terminate(mut self, limit: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait(limit)
    }

    /// Sends `kill -<name>` (`STOP`, `CONT`, `TERM`) to the process.
    pub fn signal(&self, name: &str) {
        let id = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(id.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {id}");
    }

    /// Whether its log has a line containing `text`.
    pub fn logged(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains(text))
    }

    /// Waits up to `limit` for the process to exit (killing it, and failing, after that).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "lake-sink did not exit within {limit:?}; its log ({}) ends with:\n{}",
                    self.log.display(),
                    test_harness::log_tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The value of metric `name` (a sample without labels, or the sum of its labelled
    /// samples) on `/metrics`; `None` when the listener does not answer (yet).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let addr = self.ops?;
        let (status, body) =
            test_harness::ops::get(addr, "/metrics", Duration::from_secs(3)).ok()?;
        if status != 200 {
            return None;
        }
        let mut sum = None;
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((sample, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let metric = sample.split('{').next().unwrap_or_default();
            if metric == name {
                *sum.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        sum
    }

    /// The tail of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "log {}:\n{}",
            self.log.display(),
            test_harness::log_tail(&self.log, 40)
        )
    }
}

impl Lake {
    /// A fresh location for `topics` under the temporary directory, and a fresh group.
    pub fn new(name: &str, topics: Topics) -> Self {
        let base = std::env::temp_dir().join(test_harness::unique_name(&format!("lake-{name}")));
        let location = base.join("lake");
        std::fs::create_dir_all(&location).unwrap();
        Self {
            base,
            location,
            topics,
            group: test_harness::unique_name("lake-sink-group"),
            env: Vec::new(),
        }
    }

    /// A fresh location `s3://lake-tests/<unique>` on the S3-compatible store that
    /// `deploy/local/stores` starts (`LAKE_TEST_S3_ENDPOINT`), reached the way a user's sink
    /// reaches S3: `AWS_*` variables read by object_store's `from_env`.
    pub fn on_s3(name: &str, topics: Topics) -> Self {
        Self::on_store(name, topics, "s3", "LAKE_TEST_S3_ENDPOINT", |endpoint| {
            vec![
                ("AWS_ENDPOINT_URL", endpoint),
                ("AWS_ALLOW_HTTP", "true".into()),
                ("AWS_ACCESS_KEY_ID", "lake-tests".into()),
                ("AWS_SECRET_ACCESS_KEY", "lake-tests".into()),
                ("AWS_REGION", "us-east-1".into()),
            ]
        })
    }

    /// A fresh location `az://lake-tests/<unique>` on the Azure Storage emulator (Azurite) that
    /// `deploy/local/stores` starts (`LAKE_TEST_AZURE_ENDPOINT`), reached through object_store's
    /// emulator settings (`AZURE_STORAGE_USE_EMULATOR`, `AZURITE_BLOB_STORAGE_URL`).
    pub fn on_azure(name: &str, topics: Topics) -> Self {
        Self::on_store(name, topics, "az", "LAKE_TEST_AZURE_ENDPOINT", |endpoint| {
            vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", endpoint),
            ]
        })
    }

    /// A fresh location `<scheme>://lake-tests/<unique>` on the store whose address is in
    /// `variable`, with the environment `env` makes of that address.
    fn on_store(
        name: &str,
        topics: Topics,
        scheme: &str,
        variable: &str,
        env: impl FnOnce(String) -> Vec<(&'static str, String)>,
    ) -> Self {
        let endpoint = std::env::var(variable).unwrap_or_else(|_| {
            panic!(
                "{variable} is not set: this test needs the object store that \
                 deploy/local/test starts. Start it with: eval \"$(deploy/local/stores)\""
            )
        });
        let mut lake = Self::new(name, topics);
        lake.location = PathBuf::from(format!(
            "{scheme}://lake-tests/{}",
            test_harness::unique_name(name)
        ));
        lake.env = env(endpoint);
        lake
    }

    /// Starts `lake-sink <args>` with `settings` (`LAKE_SINK__…` variables, or others), in
    /// [`Lake::group`] unless `settings` name another group, without `/metrics` unless
    /// `settings` give `LAKE_SINK__OPERATIONS__LISTEN_ADDR`.
    pub fn spawn(&self, args: &[&str], settings: &[(&str, String)]) -> Sink {
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        let log = self.base.join(format!("sink-{n}.log"));
        let out = self.base.join(format!("sink-{n}.out"));
        let infra = test_harness::infra();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lake-sink"));
        command
            .arg("--location")
            .arg(&self.location)
            .args(args)
            .env("KAFKA_BOOTSTRAP_SERVERS", &infra.bootstrap_servers)
            .env("SCHEMA_REGISTRY_URL", &infra.schema_registry_url)
            .env("LAKE_SINK__KAFKA__OUTPUT_PREFIX", &self.topics.prefix)
            .env("LAKE_SINK__KAFKA__GROUP_ID", &self.group)
            .env("LAKE_SINK__OPERATIONS__LISTEN_ADDR", "")
            .env(
                "RUST_LOG",
                std::env::var("LAKE_SINK_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("LAKE_SINK_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut ops = None;
        for (k, v) in settings {
            command.env(k, v);
            if *k == "LAKE_SINK__OPERATIONS__LISTEN_ADDR" && !v.is_empty() {
                ops = Some(v.parse().unwrap());
            }
        }
        let child = command
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Sink {
            child: Some(child),
            log,
            out,
            ops,
        }
    }

    /// `lake-sink run --until-caught-up` with `settings`: must exit 0 within `limit`.
    pub fn catch_up(&self, settings: &[(&str, String)], limit: Duration) {
        let mut sink = self.spawn(&["run", "--until-caught-up"], settings);
        let status = sink.wait(limit);
        assert!(
            status.success(),
            "lake-sink run --until-caught-up: {status}; {}",
            sink.log_tail()
        );
    }

    /// `lake-sink maintain <args>`: must exit 0 within 120 s; its JSON output.
    pub fn maintain(&self, args: &[&str]) -> Value {
        let mut all = vec!["maintain"];
        all.extend_from_slice(args);
        let mut sink = self.spawn(&all, &[]);
        let status = sink.wait(Duration::from_secs(120));
        assert!(
            status.success(),
            "lake-sink maintain {args:?}: {status}; {}",
            sink.log_tail()
        );
        let text = std::fs::read_to_string(&sink.out).unwrap();
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("maintain printed no JSON ({e}): {text:?}"))
    }

    /// The independent reader on this location (see [`read_lake`]).
    pub fn read(&self, args: &[&str]) -> Value {
        read_lake(&self.location, args, &self.env)
    }

    /// The reader with `--txn` for the sink's default app id.
    pub fn txn_args(&self) -> Vec<String> {
        vec![
            "--txn".into(),
            "lake-sink".into(),
            "--topics".into(),
            self.topics.reader_topics(),
            "--partitions".into(),
            PARTITIONS.to_string(),
        ]
    }

    /// Delta commits (log entries) of the three tables so far: a cheap sign of progress.
    pub fn commits(&self) -> usize {
        TABLES
            .iter()
            .map(|t| {
                std::fs::read_dir(self.location.join(t).join("_delta_log"))
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .filter(|e| {
                                let name = e.file_name();
                                let name = name.to_string_lossy();
                                name.ends_with(".json") && !name.starts_with('.')
                            })
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Settings of small, frequent flushes.
pub fn small_flushes(rows: usize, interval_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("LAKE_SINK__LAKE__FLUSH_MAX_ROWS", rows.to_string()),
        (
            "LAKE_SINK__LAKE__FLUSH_INTERVAL_MS",
            interval_ms.to_string(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The independent reader.

/// The current-state query (`queries/current_state.sql`).
pub const CURRENT_STATE_SQL: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/queries/current_state.sql");

/// Runs `tests/read_lake.py <location> <args>` with `env` added (an object store's address and
/// credentials; Python `deltalake` is found through the environment's `PYTHONPATH`, which
/// `deploy/local/test` sets) and parses its JSON.
pub fn read_lake(location: &Path, args: &[&str], env: &[(&str, String)]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_lake.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(location)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("python3 must be installed for the independent Delta reader");
    assert!(
        out.status.success(),
        "the Python Delta reader failed (it needs the `deltalake` package: run through \
         deploy/local/test, or with PYTHONPATH=.cache/python): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// What the tables must hold.

/// One Avro value as the reader prints its column: timestamps in microseconds, dates in days,
/// records as objects, lists as arrays.
pub fn avro_json(value: &Avro) -> Value {
    match value {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => json!(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => json!(i),
        Avro::Long(l) | Avro::TimeMicros(l) | Avro::TimestampMicros(l) => json!(l),
        Avro::TimestampMillis(ms) => json!(ms * 1_000),
        Avro::Float(f) => json!(f),
        Avro::Double(d) => json!(d),
        Avro::String(s) | Avro::Enum(_, s) => json!(s),
        Avro::Bytes(b) | Avro::Fixed(_, b) => {
            json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
        Avro::Union(_, inner) => avro_json(inner),
        Avro::Array(items) => Value::Array(items.iter().map(avro_json).collect()),
        Avro::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), avro_json(v)))
                .collect(),
        ),
        Avro::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), avro_json(v))).collect()),
        other => panic!("no expected column value for {other:?}"),
    }
}

/// What one record must be in its table.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Where it was in Kafka.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Every column but `decode_error` and the field columns.
    pub meta: Map<String, Value>,
    /// Whether `decode_error` must be set.
    pub undecodable: bool,
    /// Its Avro fields (empty for a tombstone or an undecodable value).
    pub fields: Map<String, Value>,
}

impl Expected {
    /// The value of column `name` (a field the record lacks is null).
    pub fn column(&self, name: &str) -> Value {
        self.meta
            .get(name)
            .or_else(|| self.fields.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The row the reader must print (with `decode_error` as given).
    pub fn row(&self, columns: &[String], decode_error: &Value) -> Map<String, Value> {
        columns
            .iter()
            .map(|c| {
                let v = if c == "decode_error" {
                    decode_error.clone()
                } else {
                    self.column(c)
                };
                (c.clone(), v)
            })
            .collect()
    }
}

/// What each record of `records` (read from `topic`) must be in the table: Avro values decoded
/// with the writer schema their schema id names (among `schemas`).
pub fn expected_rows(
    topic: &str,
    records: &[ConsumedRecord],
    schemas: &HashMap<u32, Schema>,
) -> Vec<Expected> {
    records
        .iter()
        .map(|r| {
            let key = r
                .key
                .as_deref()
                .map(|k| String::from_utf8(k.to_vec()).unwrap());
            let ts = r.timestamp_ms.unwrap();
            let mut meta = Map::new();
            meta.insert("record_key".into(), json!(key));
            meta.insert("deleted".into(), json!(r.value.is_none()));
            meta.insert("kafka_topic".into(), json!(topic));
            meta.insert("kafka_partition".into(), json!(r.partition));
            meta.insert("kafka_offset".into(), json!(r.offset));
            meta.insert("kafka_timestamp".into(), json!(ts * 1_000));
            meta.insert(
                "tenant".into(),
                json!(key.as_deref().map(|k| k.split('/').next().unwrap())),
            );
            meta.insert("record_date".into(), json!(ts.div_euclid(DAY_MS)));
            let (undecodable, fields) = match r.value.as_deref() {
                None => (false, Map::new()),
                Some(value) => match schemas::wire::decode(value) {
                    Err(_) => (true, Map::new()),
                    Ok((id, mut datum)) => {
                        let schema = schemas
                            .get(&id)
                            .unwrap_or_else(|| panic!("schema id {id} unknown to the test"));
                        let decoded = GenericDatumReader::builder(schema)
                            .build()
                            .unwrap()
                            .read_value(&mut datum)
                            .unwrap();
                        let Avro::Record(fields) = decoded else {
                            panic!("not a record")
                        };
                        (
                            false,
                            fields
                                .iter()
                                .map(|(k, v)| (k.clone(), avro_json(v)))
                                .collect(),
                        )
                    }
                },
            };
            Expected {
                partition: r.partition,
                offset: r.offset,
                meta,
                undecodable,
                fields,
            }
        })
        .collect()
}

/// The (partition, offset) pairs of the reader's `rows` or `keys` of one table.
fn pairs(table: &Value) -> Vec<(i32, i64)> {
    if let Some(keys) = table["keys"].as_array() {
        return keys
            .iter()
            .map(|k| {
                (
                    i32::try_from(k[0].as_i64().unwrap()).unwrap(),
                    k[1].as_i64().unwrap(),
                )
            })
            .collect();
    }
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                i32::try_from(r["kafka_partition"].as_i64().unwrap()).unwrap(),
                r["kafka_offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The table's `txn` version of each partition (the reader's `--txn` output) is the offset of
/// the partition's last record.
pub fn assert_txn_at_last_offsets(table: &str, t: &Value, records: &[ConsumedRecord]) {
    for p in 0..PARTITIONS {
        let last = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .max();
        assert_eq!(
            t["txn"][p.to_string()].as_i64(),
            last,
            "table {table}: txn version of partition {p}"
        );
    }
}

/// Every record of `records` is in the reader's `table` output exactly once (by partition
/// and offset), and nothing else is: duplicates, losses and strays are listed.
pub fn assert_exactly_once(name: &str, table: &Value, records: &[ConsumedRecord], context: &str) {
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for pair in pairs(table) {
        *seen.entry(pair).or_default() += 1;
    }
    let wanted: BTreeSet<(i32, i64)> = records.iter().map(|r| (r.partition, r.offset)).collect();
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = wanted.iter().filter(|k| !seen.contains_key(k)).collect();
    let strays: Vec<_> = seen.keys().filter(|k| !wanted.contains(k)).collect();
    assert!(
        duplicates.is_empty() && missing.is_empty() && strays.is_empty(),
        "table {name}: {} rows for {} records; {} (partition, offset) written more than once \
         (first: {:?}), {} missing (first: {:?}), {} not in the topic (first: {:?}); {context}",
        seen.values().sum::<usize>(),
        wanted.len(),
        duplicates.len(),
        duplicates.iter().take(5).collect::<Vec<_>>(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        strays.len(),
        strays.iter().take(5).collect::<Vec<_>>(),
    );
    assert_eq!(
        table["count"].as_u64(),
        Some(records.len() as u64),
        "table {name}: row count; {context}"
    );
}

/// The column names of the reader's first row of `table`.
pub fn columns_of(table: &Value) -> Vec<String> {
    table["rows"][0]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

/// The columns a table fed by `fields` has: the sink's own, the fields, the partition columns.
pub fn table_columns(fields: &[String]) -> Vec<String> {
    META.iter()
        .map(|c| (*c).to_owned())
        .chain(fields.iter().cloned())
        .chain(PARTITION_COLUMNS.iter().map(|c| (*c).to_owned()))
        .collect()
}

/// Every row of the reader's `table` (with `--rows`) equals what its record must be, column by
/// column: exactly the `columns` (in that order when `ordered`), each record once.
pub fn assert_rows(
    name: &str,
    table: &Value,
    expected: &[Expected],
    columns: &[String],
    ordered: bool,
) {
    let rows = table["rows"].as_array().unwrap();
    let mut by_place: BTreeMap<(i32, i64), &Expected> = BTreeMap::new();
    for e in expected {
        by_place.insert((e.partition, e.offset), e);
    }
    let mut seen = BTreeSet::new();
    for row in rows {
        let row = row.as_object().unwrap();
        let place = (
            i32::try_from(row["kafka_partition"].as_i64().unwrap()).unwrap(),
            row["kafka_offset"].as_i64().unwrap(),
        );
        assert!(seen.insert(place), "table {name}: {place:?} twice");
        let e = by_place
            .get(&place)
            .unwrap_or_else(|| panic!("table {name}: row {place:?} is no record of the topic"));
        let got: Vec<&String> = row.keys().collect();
        if ordered {
            assert_eq!(
                got,
                columns.iter().collect::<Vec<_>>(),
                "table {name}: columns"
            );
        } else {
            let got: BTreeSet<&String> = got.into_iter().collect();
            assert_eq!(got, columns.iter().collect(), "table {name}: columns");
        }
        for c in columns {
            let value = &row[c.as_str()];
            if c == "decode_error" {
                assert_eq!(
                    value.is_string(),
                    e.undecodable,
                    "table {name}, {place:?}: decode_error is {value}"
                );
                continue;
            }
            assert_eq!(
                value,
                &e.column(c),
                "table {name}, record {place:?} (key {}): column {c}",
                e.meta["record_key"]
            );
        }
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "table {name}: {} rows for {} records",
        seen.len(),
        expected.len()
    );
}

/// The reader's current-state query result for `table` equals the latest record of each key
/// in the topic, unless that record is a tombstone or could not be decoded.
pub fn assert_current(name: &str, table: &Value, expected: &[Expected], columns: &[String]) {
    let mut latest: BTreeMap<String, &Expected> = BTreeMap::new();
    for e in expected {
        let key = e.meta["record_key"].as_str().unwrap().to_owned();
        match latest.get(&key) {
            Some(before) if before.offset > e.offset => {}
            Some(before) => {
                assert_eq!(before.partition, e.partition, "{key} on two partitions");
                latest.insert(key, e);
            }
            None => {
                latest.insert(key, e);
            }
        }
    }
    let want: Vec<Map<String, Value>> = latest
        .values()
        .filter(|e| e.meta["deleted"] == json!(false) && !e.undecodable)
        .map(|e| e.row(columns, &Value::Null))
        .collect();
    let got: Vec<Map<String, Value>> = table["current"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect();
    assert_eq!(
        table["current_columns"],
        json!(columns),
        "table {name}: the current-state query's columns"
    );
    assert_eq!(
        got.len(),
        want.len(),
        "table {name}: keys in the current state"
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "table {name}: current state of {}", w["record_key"]);
    }
}

/// Waits until `done` holds, checking every `every`; fails with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, every: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(every);
    }
}

/// How many records each topic holds, in [`TABLES`] order (read back with `read_committed`).
pub async fn topic_counts(topics: &Topics) -> [usize; 3] {
    let [a, b, c] = topics.read_all().await;
    [a.len(), b.len(), c.len()]
}
