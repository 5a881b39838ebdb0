//! Fault soak: the producer and transformer binaries run against the PingOne simulator and the
//! real broker and registry while faults are injected together, then `read_committed` reads of
//! every topic check that nothing was lost, duplicated or deleted without evidence.
//!
//! Faults, over `SOAK_CYCLES` cycles (default 20, so ≥ 20 `kill -9` of each binary):
//! - each cycle `kill -9`s the producer and the transformer at random moments and restarts them;
//! - one broker restart (SIGTERM, then `deploy/local/up`) and one registry restart;
//! - PingOne faults (the simulator's probability faults: 5xx, 429, slow and malformed answers,
//!   token outages) in half of the cycles;
//! - tenant churn between syncs: users created, changed and deleted, sign-ons appended;
//! - poison raw records written straight to the raw topic;
//! - one user with a 1.1 MB attribute (too big for a raw record: an `oversized` marker).
//!
//! Then a last `producer sync --once` per tenant, a wait until no transaction of a killed
//! producer is open on the raw topic (`read_committed` readers stop before one), `transformer run
//! --until-caught-up`, and the checks (each a figure in the printed summary, all must be 0 but
//! the counts):
//! - every (user, sync) pair of the raw topic is on the users topic exactly once (`lost`,
//!   `duplicated`), and the raw topic has each (user, sync) and each activity once;
//! - every app usage record's `access_count_total` equals the raw accesses of its pair (no
//!   activity counted twice or lost);
//! - every user tombstone has evidence: a delete activity, or a sync seen whole (started,
//!   completed, counts equal to its events) without the user (`wrongly deleted`);
//! - the latest users topic equals the simulator's final truth (`stale`, `missing`);
//! - every poison record and the oversized marker are on the dead-letter topic.
//!
//! `/readyz` of both binaries is watched around the broker restart: 200 from the transformer
//! before, 503 from both while the broker is down, 200 from the transformer after.
//!
//! `deploy/local/test` runs it last, at 20 cycles and 40 users per tenant, against the broker and
//! registry it started. By hand, alone (it restarts the broker and registry every other test
//! uses): `cargo test --workspace --test soak -- --ignored --nocapture`. `SOAK_CYCLES`,
//! `SOAK_USERS` (default 150 per tenant) and `SOAK_SEED` choose the size, e.g.
//! `SOAK_CYCLES=100 SOAK_USERS=5000` for a larger run. The binaries are the workspace's debug
//! builds (`cargo build -p producer -p transformer`, done by `cargo test --workspace`).
//! Restarting the broker and registry needs them started by `deploy/local/up` (their pid files);
//! the test fails naming it otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pingone_sim::admin::SignonSpec;
use pingone_sim::faults::FaultProfile;
use pingone_sim::{RunningSim, SimConfig, TenantSpec};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::raw::{RawEvent, kind, raw_event_schema};
use schemas::usage::{AppUsage, UserUsage, app_usage_schema, user_usage_schema};
use serde_json::{Value, json};
use test_harness::kafka::{ConsumedRecord, consume_all};

/// Environment variable names of the tenants' client secrets.
const SECRET_ENV: [&str; 2] = ["SOAK_SECRET_A", "SOAK_SECRET_B"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (the seed is printed, so a failing run can be repeated).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Waits until `topic` has no open transaction, for at most three times the binaries'
/// `transaction_timeout_ms` (20 s in the soak's configs): after that the broker aborts it.
async fn wait_no_open_transaction(topic: &str) {
    let limit = Duration::from_secs(60);
    let started = Instant::now();
    test_harness::kafka::wait_for_no_open_transaction(topic, limit)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let waited = started.elapsed();
    if waited > Duration::from_secs(1) {
        eprintln!("[soak] {topic}: waited {waited:?} for an open transaction to end");
    }
}

/// Where the workspace's binaries and scripts are.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary kept running: restarted by [`Proc::kill9`] and [`Proc::ensure`].
struct Proc {
    name: &'static str,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    kills: u64,
    starts: u64,
}

impl Proc {
    /// The binary with `args`, this process's environment, and stderr appended to its log.
    fn command(&self, args: &[String]) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = Command::new(e2e::binary(self.name));
        c.args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        c
    }

    fn start(&mut self) {
        self.child = Some(self.command(&self.args).spawn().unwrap());
        self.starts += 1;
    }

    /// Runs the binary once with `args` to its end; whether it succeeded.
    fn run_to_end(&self, args: &[&str]) -> bool {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.command(&args).status().unwrap().success()
    }

    /// Restarts the process if it exited on its own (a crash would be a finding: logged).
    fn ensure(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            eprintln!("[soak] {} exited on its own with {status}", self.name);
            self.child = None;
        }
        if self.child.is_none() {
            self.start();
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
        }
        self.start();
    }

    /// SIGTERM and wait (bounded); SIGKILL if it does not stop.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(40);
            while Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("[soak] {} ignored SIGTERM for 40 s", self.name);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The cache folder of `deploy/local/up` (its pid files and logs).
fn local_cache() -> PathBuf {
    std::env::var("LOCAL_CACHE_DIR").map_or_else(|_| repo_root().join(".cache"), PathBuf::from)
}

/// The local infrastructure's pid file of `service` (`kafka`, `registry`).
fn pid_file(service: &str) -> PathBuf {
    local_cache().join("run").join(format!("{service}.pid"))
}

/// The broker's side of the transactions of the producers whose transactional ids start with
/// `producer_txn`, for a failure message: the last `lines` lines of the broker's logs (before and
/// since its restart) that name one of those ids, or warn about transactions.
fn coordinator_log(producer_txn: &str, lines: usize) -> String {
    let mut picked = Vec::new();
    for file in ["kafka.previous.log", "kafka.log"] {
        let text =
            std::fs::read_to_string(local_cache().join("logs").join(file)).unwrap_or_default();
        picked.extend(text.lines().map(str::to_owned).filter(|l| {
            l.contains(producer_txn)
                || ((l.contains(" WARN ") || l.contains(" ERROR "))
                    && (l.contains("ransaction") || l.contains("Txn") || l.contains("marker")))
        }));
    }
    picked[picked.len().saturating_sub(lines)..].join("\n")
}

/// Stops `service` (`kafka`, `registry`) started by `deploy/local/up`: SIGTERM, and SIGKILL for
/// a JVM still running three minutes later, as an operator would.
fn stop_service(service: &str) {
    let file = pid_file(service);
    let pid = std::fs::read_to_string(&file)
        .unwrap_or_else(|_| {
            panic!(
                "{} not found: the soak restarts the broker and registry, so they must be \
                 started by `eval \"$(deploy/local/up)\"`",
                file.display()
            )
        })
        .trim()
        .to_owned();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success(),
        "stopping {service} (pid {pid})"
    );
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    // 180 s: a broker holding the whole test suite's 190 partitions spent over 60 s closing
    // them on a loaded machine (2026-11-29), and a SIGKILL then costs log recovery and a slow
    // transaction coordinator at the next start.
    let until = Instant::now() + Duration::from_secs(180);
    while alive() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    if alive() {
        eprintln!("[soak] {service} (pid {pid}) still running 180 s after SIGTERM: SIGKILL");
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let until = Instant::now() + Duration::from_secs(30);
        while alive() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(!alive(), "{service} (pid {pid}) survived SIGKILL for 30 s");
    }
}

/// Starts what is not running with `deploy/local/up` (same ports and data). The readiness waits
/// are long: the broker now holds every earlier test's topics, and on a loaded 2-core machine
/// loading them took three minutes; the soak checks what restarts do, not how fast they are.
fn start_services() {
    let mut up = Command::new(repo_root().join("deploy/local/up"));
    for wait in ["KAFKA_START_TIMEOUT_S", "REGISTRY_START_TIMEOUT_S"] {
        if std::env::var_os(wait).is_none() {
            up.env(wait, "600");
        }
    }
    let out = up.output().unwrap();
    assert!(
        out.status.success(),
        "deploy/local/up failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops `service` and starts it again; how long that took.
fn restart(service: &str) -> Duration {
    let started = Instant::now();
    stop_service(service);
    start_services();
    started.elapsed()
}

/// The status of `GET /readyz` on `port`, or `None` when nothing answers.
fn readyz(port: u16) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    test_harness::ops::get(addr, "/readyz", Duration::from_secs(5))
        .ok()
        .map(|(status, _)| status)
}

/// Polls `/readyz` on `port` every 500 ms until it answers `status`; how long that took, or
/// `None` if it did not within `limit`.
fn wait_readyz(port: u16, status: u16, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if readyz(port) == Some(status) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

/// What `/readyz` said around the broker restart.
#[derive(Debug, Default)]
struct BrokerOutage {
    /// The transformer answered 200 before the stop.
    transformer_ready_before: bool,
    /// How soon after the broker stopped each answered 503.
    transformer_unready_after: Option<Duration>,
    producer_unready_after: Option<Duration>,
    /// How soon after the broker was back the transformer answered 200 again.
    transformer_ready_again_after: Option<Duration>,
    /// What the transformer answered while the broker was down ("none": no answer in 5 s).
    transformer_answers: std::collections::BTreeMap<String, u32>,
    restart_took: Duration,
}

/// Restarts the broker while watching both binaries' `/readyz`: both must turn 503 while it is
/// down, and the transformer 200 again after.
fn broker_outage(transformer_port: u16, producer_port: u16) -> BrokerOutage {
    let started = Instant::now();
    let mut o = BrokerOutage {
        transformer_ready_before: wait_readyz(transformer_port, 200, Duration::from_secs(180))
            .is_some(),
        ..BrokerOutage::default()
    };
    stop_service("kafka");
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(90)
        && (o.transformer_unready_after.is_none() || o.producer_unready_after.is_none())
    {
        if o.transformer_unready_after.is_none() {
            let answer = readyz(transformer_port);
            *o.transformer_answers
                .entry(answer.map_or_else(|| "none".to_owned(), |s| s.to_string()))
                .or_default() += 1;
            if answer == Some(503) {
                o.transformer_unready_after = Some(down.elapsed());
            }
        }
        if o.producer_unready_after.is_none() && readyz(producer_port) == Some(503) {
            o.producer_unready_after = Some(down.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    start_services();
    // Up to 10 minutes: after a broker killed on a loaded machine, its transaction coordinator
    // answered "not coordinator" and the registry (which stores schemas in Kafka) timed out for
    // minutes, so a transformer attempt kept failing past the old 180 s (2026-11-29). This checks
    // that it comes back, not how fast.
    o.transformer_ready_again_after = wait_readyz(transformer_port, 200, Duration::from_secs(600));
    o.restart_took = started.elapsed();
    o
}

struct Tenant {
    id: String,
    env_id: String,
    secret_env: &'static str,
    secret: String,
}

fn producer_toml(sim: &RunningSim, tenants: &[Tenant], names: &Names, ops_port: u16) -> String {
    let mut text = format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
raw_topic = "{raw}"
checkpoint_topic = "{checkpoints}"
transactional_id_prefix = "{txn}"
transaction_timeout_ms = 20000
message_timeout_ms = 15000
request_timeout_ms = 10000
topic_partitions = 2

[schema_registry]
url = "{registry}"
# A registry just restarted took over 10 s to answer writes on a loaded 2-core machine.
request_timeout_ms = 30000

[operations]
listen_addr = "127.0.0.1:{ops_port}"
shutdown_deadline_ms = 20000
"#,
        bootstrap = test_harness::kafka_bootstrap(),
        registry = test_harness::schema_registry_url(),
        raw = names.raw,
        checkpoints = names.checkpoints,
        txn = names.producer_txn,
    );
    for t in tenants {
        let info = sim.tenant(&t.env_id).unwrap();
        text.push_str(&format!(
            r#"
[[tenants]]
tenant_id = "{id}"
environment_id = "{env}"
region = "{region}"
client_id = "{client}"
client_secret_env = "{secret_env}"
auth_base_url = "{auth}"
api_base_url = "{api}"
requests_per_second = 1000
snapshot_interval_s = 4
activity_poll_interval_s = 1
activity_safety_lag_s = 1
activity_initial_lookback_s = 86400
"#,
            id = t.id,
            env = t.env_id,
            region = info.region,
            client = info.client_id,
            secret_env = t.secret_env,
            auth = info.auth_base_url,
            api = info.api_base_url,
        ));
    }
    text
}

fn transformer_toml(names: &Names, ops_port: u16) -> String {
    format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
raw_topic = "{raw}"
output_prefix = "{prefix}"
group_id = "{group}"
transactional_id = "{txn}"
transaction_timeout_ms = 20000
request_timeout_ms = 10000

[schema_registry]
url = "{registry}"
# A registry just restarted took over 10 s to answer writes on a loaded 2-core machine.
request_timeout_ms = 30000

[operations]
listen_addr = "127.0.0.1:{ops_port}"
shutdown_deadline_ms = 20000

[processing]
batch_max_records = 200
batch_max_wait_ms = 20
"#,
        bootstrap = test_harness::kafka_bootstrap(),
        registry = test_harness::schema_registry_url(),
        raw = names.raw,
        prefix = names.prefix,
        group = names.group,
        txn = names.transformer_txn,
    )
}

struct Names {
    raw: String,
    checkpoints: String,
    producer_txn: String,
    prefix: String,
    group: String,
    transformer_txn: String,
}

/// What the raw topic says, read `read_committed`.
#[derive(Default)]
struct RawView {
    records: u64,
    poison_offsets: HashSet<(i32, i64)>,
    /// (tenant, sync, user) -> raw user events.
    user_events: HashMap<(String, String, String), u64>,
    /// sync -> (tenant, started, announced counts, counts of what is on the topic, users).
    syncs: HashMap<String, SyncView>,
    /// activity id -> events.
    activities: HashMap<String, u64>,
    /// (tenant, app, user) -> distinct access activities.
    accesses: HashMap<(String, String, String), i64>,
    /// (tenant, user) deleted by an activity.
    user_deletes: HashSet<(String, String)>,
    oversized: Vec<(i32, i64)>,
}

#[derive(Default)]
struct SyncView {
    tenant: String,
    started: bool,
    announced: Option<Value>,
    seen: BTreeMap<String, u64>,
    users: HashSet<String>,
}

impl SyncView {
    fn whole(&self) -> bool {
        let Some(announced) = self.announced.as_ref() else {
            return false;
        };
        self.started
            && [
                kind::USER,
                kind::GROUP,
                kind::GROUP_MEMBERSHIP,
                kind::APPLICATION,
            ]
            .iter()
            .all(|k| announced[*k].as_u64().unwrap_or(0) == self.seen.get(*k).copied().unwrap_or(0))
    }
}

fn read_raw(records: &[ConsumedRecord]) -> RawView {
    let mut v = RawView::default();
    for r in records {
        v.records += 1;
        let decoded = r
            .value
            .as_deref()
            .and_then(|value| schemas::wire::decode(value).ok())
            .and_then(|(_, datum)| RawEvent::from_avro_datum(raw_event_schema(), datum).ok());
        let Some(e) = decoded else {
            v.poison_offsets.insert((r.partition, r.offset));
            continue;
        };
        let sync = e.sync_id.clone().unwrap_or_default();
        let entity = e.entity_id.clone().unwrap_or_default();
        match e.kind.as_str() {
            kind::SYNC_STARTED => {
                let s = v.syncs.entry(sync).or_default();
                s.tenant.clone_from(&e.tenant_id);
                s.started = true;
            }
            kind::SYNC_COMPLETED => {
                let marker: Value = serde_json::from_str(&e.payload).unwrap();
                let s = v.syncs.entry(sync).or_default();
                s.tenant.clone_from(&e.tenant_id);
                s.announced = Some(marker["counts"].clone());
            }
            kind::ACTIVITY => {
                let n = v.activities.entry(entity.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    continue;
                }
                let obj = transformer::normalize::parse_object(&e.payload).unwrap();
                match transformer::normalize::activity(&obj, Some(&entity)) {
                    Ok(transformer::normalize::Activity::Access {
                        application_id,
                        user_id,
                        ..
                    }) => {
                        *v.accesses
                            .entry((e.tenant_id.clone(), application_id, user_id))
                            .or_default() += 1;
                    }
                    Ok(transformer::normalize::Activity::UserDeleted { user_id, .. }) => {
                        v.user_deletes.insert((e.tenant_id.clone(), user_id));
                    }
                    _ => {}
                }
            }
            other => {
                let counted = if other == kind::OVERSIZED {
                    v.oversized.push((r.partition, r.offset));
                    let o: schemas::raw::Oversized = serde_json::from_str(&e.payload).unwrap();
                    o.kind
                } else {
                    other.to_owned()
                };
                let s = v.syncs.entry(sync.clone()).or_default();
                s.tenant.clone_from(&e.tenant_id);
                *s.seen.entry(counted.clone()).or_default() += 1;
                if counted == kind::USER {
                    s.users.insert(entity.clone());
                    if other == kind::USER {
                        *v.user_events
                            .entry((e.tenant_id.clone(), sync, entity))
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    v
}

fn key_of(r: &ConsumedRecord) -> String {
    String::from_utf8(r.key.clone().unwrap_or_default()).unwrap()
}

fn datum(r: &ConsumedRecord) -> Option<&[u8]> {
    r.value
        .as_deref()
        .map(|v| schemas::wire::decode(v).expect("output in wire format").1)
}

/// The figures the soak prints (through `Debug`); every count but the totals must be 0.
#[derive(Debug, Default)]
#[allow(dead_code)] // read through `Debug` only
struct Figures {
    cycles: u64,
    producer_kills: u64,
    transformer_kills: u64,
    raw_records: u64,
    user_sync_pairs: u64,
    output_records: u64,
    tombstones: u64,
    lost: u64,
    duplicated: u64,
    raw_duplicates: u64,
    activity_mismatches: u64,
    wrongly_deleted: u64,
    stale: u64,
    missing: u64,
    poison_not_dead_lettered: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared broker and registry: run alone with --ignored (see the module docs)"]
async fn faults_together_lose_duplicate_and_wrongly_delete_nothing() {
    test_harness::init_tracing();
    let cycles = env_u64("SOAK_CYCLES", 20);
    let users = env_u64("SOAK_USERS", 150);
    let seed = env_u64("SOAK_SEED", u64::from(std::process::id()));
    let mut rng = Rng(seed);
    eprintln!("[soak] cycles {cycles}, users per tenant {users}, seed {seed}");
    let _ = test_harness::kafka_bootstrap();
    // Fail before any work when the infrastructure cannot be restarted.
    for service in ["kafka", "registry"] {
        let file = pid_file(service);
        assert!(
            file.exists(),
            "{} not found: the soak restarts the broker and registry, so they must be started \
             by `eval \"$(deploy/local/up)\"`",
            file.display()
        );
    }

    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![
        TenantSpec::generated("soak-a", users, 21),
        TenantSpec::generated("soak-b", users, 22),
    ]))
    .await
    .expect("simulator starts");
    let tenants: Vec<Tenant> = sim
        .tenants()
        .iter()
        .zip(["soak-a", "soak-b"])
        .zip(SECRET_ENV)
        .map(|((t, id), secret_env)| Tenant {
            id: id.to_owned(),
            env_id: t.environment_id.clone(),
            secret_env,
            secret: t.client_secret.expose().to_owned(),
        })
        .collect();
    let names = Names {
        raw: test_harness::unique_name("soak-raw"),
        checkpoints: test_harness::unique_name("soak-checkpoints"),
        producer_txn: test_harness::unique_name("soak-producer"),
        prefix: format!("{}.", test_harness::unique_name("soak-usage")),
        group: test_harness::unique_name("soak-transformer"),
        transformer_txn: test_harness::unique_name("soak-transformer-txn"),
    };
    let dir = repo_root().join("target/soak").join(&names.raw);
    std::fs::create_dir_all(&dir).unwrap();
    let producer_cfg = dir.join("producer.toml");
    let transformer_cfg = dir.join("transformer.toml");
    let (producer_port, transformer_port) = (
        test_harness::ops::free_port(),
        test_harness::ops::free_port(),
    );
    std::fs::write(
        &producer_cfg,
        producer_toml(&sim, &tenants, &names, producer_port),
    )
    .unwrap();
    std::fs::write(&transformer_cfg, transformer_toml(&names, transformer_port)).unwrap();
    eprintln!("[soak] configs and logs in {}", dir.display());
    let secrets: Vec<(String, String)> = tenants
        .iter()
        .map(|t| (t.secret_env.to_owned(), t.secret.clone()))
        .collect();
    let mut producer = Proc {
        name: "producer",
        args: vec![
            "run".into(),
            "--config".into(),
            producer_cfg.display().to_string(),
        ],
        envs: secrets.clone(),
        log: dir.join("producer.log"),
        child: None,
        kills: 0,
        starts: 0,
    };
    let mut transformer = Proc {
        name: "transformer",
        args: vec![
            "run".into(),
            "--config".into(),
            transformer_cfg.display().to_string(),
        ],
        envs: Vec::new(),
        log: dir.join("transformer.log"),
        child: None,
        kills: 0,
        starts: 0,
    };
    producer.start();
    transformer.start();

    let raw_writer: FutureProducer = test_harness::kafka::producer_config().create().unwrap();
    let mut poison_sent = 0_u64;
    let mut outage: Option<BrokerOutage> = None;
    let broker_at = cycles / 3;
    let registry_at = 2 * cycles / 3;
    let oversized_at = cycles / 2;
    let started = Instant::now();
    for cycle in 0..cycles {
        let t = &tenants[usize::try_from(cycle % 2).unwrap()];
        let admin = sim.admin(&t.env_id);
        // PingOne faults in every other pair of cycles.
        let faulty = cycle % 4 >= 2;
        if faulty {
            admin
                .set_faults(&FaultProfile {
                    seed: seed + cycle,
                    api_probability: 0.15,
                    token_outage_probability: 0.05,
                    kinds: Vec::new(),
                })
                .await
                .unwrap();
        } else {
            admin.clear_faults().await.unwrap();
        }
        // Churn: a new user, a changed one, a deleted one, and sign-ons.
        admin
            .create_user(&json!({"username": format!("soak-{cycle}@example.com"),
                                 "name": {"given": "Soak", "family": format!("C{cycle}")}}))
            .await
            .unwrap();
        let truth = admin.truth_users().await.unwrap();
        let victim = truth[usize::try_from(rng.below(truth.len() as u64)).unwrap()]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        if cycle % 3 == 0 {
            admin.delete_user(&victim).await.unwrap();
        } else {
            admin.set_mfa(&victim, cycle % 2 == 0).await.unwrap();
        }
        let apps = admin.truth_applications().await.unwrap();
        let signons: Vec<SignonSpec> = (0..5)
            .map(|_| SignonSpec {
                user_id: truth[usize::try_from(rng.below(truth.len() as u64)).unwrap()]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                application_id: apps[usize::try_from(rng.below(apps.len() as u64)).unwrap()]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                at: schemas::time::format_ms(schemas::time::now_ms() - 1_000),
            })
            .collect();
        let _ = admin.append_signons(&signons).await;
        if cycle == oversized_at {
            // A user with a 1.1 MB attribute: over the record limit.
            admin
                .create_user(&json!({"username": "oversized@example.com",
                                     "title": "x".repeat(1_100_000)}))
                .await
                .unwrap();
        }
        // Poison straight onto the raw topic.
        if cycle % 5 == 1 {
            let value = format!("poison from soak cycle {cycle}");
            raw_writer
                .send(
                    FutureRecord::to(&names.raw)
                        .key(t.id.as_bytes())
                        .payload(value.as_bytes()),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            poison_sent += 1;
        }
        // Run a while, then kill -9 each binary at its own random moment.
        let first = Duration::from_millis(500 + rng.below(2_500));
        let second = Duration::from_millis(300 + rng.below(1_500));
        tokio::time::sleep(first).await;
        if cycle % 2 == 0 {
            producer.kill9();
        } else {
            transformer.kill9();
        }
        tokio::time::sleep(second).await;
        if cycle % 2 == 0 {
            transformer.kill9();
        } else {
            producer.kill9();
        }
        if cycle == broker_at {
            let o =
                tokio::task::spawn_blocking(move || broker_outage(transformer_port, producer_port))
                    .await
                    .unwrap();
            eprintln!("[soak] cycle {cycle}: broker restarted: {o:?}");
            outage = Some(o);
        }
        if cycle == registry_at {
            let took = tokio::task::spawn_blocking(|| restart("registry"))
                .await
                .unwrap();
            eprintln!("[soak] cycle {cycle}: registry restarted in {took:?}");
        }
        producer.ensure();
        transformer.ensure();
    }
    eprintln!("[soak] {cycles} cycles in {:?}", started.elapsed());

    // Quiesce: no more faults or churn; one last complete sync per tenant, then catch up.
    for t in &tenants {
        sim.admin(&t.env_id).clear_faults().await.unwrap();
    }
    producer.stop();
    let producer_cfg = producer_cfg.display().to_string();
    for t in &tenants {
        // A one-shot gives up on an outage (bounded failure, by design); the registry restart
        // of the cycles can leave it slow for a while, so a failed final sync is retried.
        let args = [
            "sync",
            "--config",
            &producer_cfg,
            "--tenant",
            &t.id,
            "--once",
        ];
        let mut attempts = 1;
        while !producer.run_to_end(&args) {
            assert!(
                attempts < 3,
                "final `producer sync --once` of {} failed {attempts} times; its log ends:\n{}\n\
                 the broker on the producer's transactions:\n{}",
                t.id,
                test_harness::log_tail(&producer.log, 20),
                coordinator_log(&names.producer_txn, 40)
            );
            eprintln!(
                "[soak] final sync of {} failed (attempt {attempts}); retrying in 10 s",
                t.id
            );
            attempts += 1;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
    // A producer `kill -9`ed inside an activity transaction leaves it open until an instance
    // with its transactional id starts (the last `run` may have been stopped before it reopened
    // that stream; `sync --once` opens the snapshot stream only) or the transaction times out
    // (20 s here). Until then read_committed readers, the transformer included, stop before it.
    wait_no_open_transaction(&names.raw).await;
    transformer.stop();
    let transformer_cfg = transformer_cfg.display().to_string();
    assert!(
        transformer.run_to_end(&["run", "--until-caught-up", "--config", &transformer_cfg]),
        "transformer run --until-caught-up"
    );

    // Checks.
    let topics = schemas::topics::OutputTopics::new(&names.prefix);
    for topic in [&topics.users, &topics.app_usage, &topics.dead_letter] {
        wait_no_open_transaction(topic).await;
    }
    let raw = read_raw(&consume_all(&names.raw).await.unwrap());
    let users_topic = consume_all(&topics.users).await.unwrap();
    let usage_topic = consume_all(&topics.app_usage).await.unwrap();
    let dead = consume_all(&topics.dead_letter).await.unwrap();
    let mut f = Figures {
        cycles,
        producer_kills: producer.kills,
        transformer_kills: transformer.kills,
        raw_records: raw.records,
        user_sync_pairs: raw.user_events.len() as u64,
        output_records: (users_topic.len() + usage_topic.len()) as u64,
        ..Figures::default()
    };
    let mut problems: Vec<String> = Vec::new();
    for (pair, n) in &raw.user_events {
        if *n > 1 {
            f.raw_duplicates += 1;
            problems.push(format!(
                "raw topic has {n} events of (tenant, sync, user) {pair:?}"
            ));
        }
    }
    for (id, n) in &raw.activities {
        if *n > 1 {
            f.raw_duplicates += 1;
            problems.push(format!("raw topic has activity {id} {n} times"));
        }
    }
    // Users topic: (tenant, sync, user) -> records; latest value per key.
    let mut written: HashMap<(String, String, String), u64> = HashMap::new();
    let mut latest: BTreeMap<String, Option<UserUsage>> = BTreeMap::new();
    for r in &users_topic {
        let key = key_of(r);
        match datum(r) {
            Some(d) => {
                let u = UserUsage::from_avro_datum(user_usage_schema().unwrap(), d).unwrap();
                *written
                    .entry((
                        u.tenant_id.clone(),
                        u.sync_id.clone().unwrap_or_default(),
                        u.user_id.clone(),
                    ))
                    .or_default() += 1;
                latest.insert(key, Some(u));
            }
            None => {
                f.tombstones += 1;
                latest.insert(key.clone(), None);
                let (tenant, user) = key.split_once('/').unwrap();
                let deleted = raw
                    .user_deletes
                    .contains(&(tenant.to_owned(), user.to_owned()));
                let evidence = raw
                    .syncs
                    .values()
                    .any(|s| s.tenant == tenant && s.whole() && !s.users.contains(user));
                if !(deleted || evidence) {
                    f.wrongly_deleted += 1;
                    problems.push(format!("tombstone of {key} without evidence"));
                }
            }
        }
    }
    for (pair, n) in &raw.user_events {
        match written.get(pair).copied().unwrap_or(0) {
            1 => {}
            0 => {
                f.lost += 1;
                problems.push(format!(
                    "no users record for raw (tenant, sync, user) {pair:?}"
                ));
            }
            n2 => {
                f.duplicated += n2 - 1;
                problems.push(format!("{n2} users records for {pair:?} ({n} raw)"));
            }
        }
    }
    for pair in written.keys() {
        if !raw.user_events.contains_key(pair) {
            f.duplicated += 1;
            problems.push(format!("users record for {pair:?} without a raw event"));
        }
    }
    // App usage: latest record per pair against the raw accesses.
    let mut usage: BTreeMap<String, AppUsage> = BTreeMap::new();
    for r in &usage_topic {
        if let Some(d) = datum(r) {
            usage.insert(
                key_of(r),
                AppUsage::from_avro_datum(app_usage_schema().unwrap(), d).unwrap(),
            );
        }
    }
    for ((tenant, app, user), n) in &raw.accesses {
        let got = usage
            .get(&format!("{tenant}/{app}/{user}"))
            .map_or(0, |u| u.access_count_total);
        if got != *n {
            f.activity_mismatches += 1;
            problems.push(format!(
                "{tenant}/{app}/{user}: {got} accesses counted, {n} on the raw topic"
            ));
        }
    }
    // The final truth: every user live, nothing else.
    for t in &tenants {
        let truth: HashSet<String> = sim
            .admin(&t.env_id)
            .truth_users()
            .await
            .unwrap()
            .iter()
            .filter(|u| u["username"] != "oversized@example.com")
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect();
        let live: HashSet<String> = latest
            .iter()
            .filter(|(k, v)| v.is_some() && k.starts_with(&format!("{}/", t.id)))
            .map(|(k, _)| k.split_once('/').unwrap().1.to_owned())
            .collect();
        for id in truth.difference(&live) {
            f.missing += 1;
            problems.push(format!("{}/{id} exists in PingOne but is not live", t.id));
        }
        for id in live.difference(&truth) {
            f.stale += 1;
            problems.push(format!("{}/{id} is live but not in PingOne", t.id));
        }
    }
    // Dead letters: every poison record and the oversized marker.
    let dead_sources: HashSet<(i32, i64)> = dead
        .iter()
        .map(|d| {
            let h = |n: &str| String::from_utf8(d.header(n).unwrap_or_default().to_vec()).unwrap();
            (
                h("source_partition").parse().unwrap(),
                h("source_offset").parse().unwrap(),
            )
        })
        .collect();
    for source in raw.poison_offsets.iter().chain(&raw.oversized) {
        if !dead_sources.contains(source) {
            f.poison_not_dead_lettered += 1;
            problems.push(format!(
                "raw record {source:?} is not on the dead-letter topic"
            ));
        }
    }
    eprintln!("[soak] figures: {f:#?}");
    eprintln!("[soak] /readyz around the broker restart: {outage:?}");
    eprintln!(
        "[soak] poison sent {poison_sent}, poison on the raw topic {}, oversized markers {}, \
         syncs {} ({} seen whole)",
        raw.poison_offsets.len(),
        raw.oversized.len(),
        raw.syncs.len(),
        raw.syncs.values().filter(|s| s.whole()).count()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(f.producer_kills >= cycles && f.transformer_kills >= cycles);
    assert_eq!(raw.poison_offsets.len() as u64, poison_sent);
    assert!(
        !raw.oversized.is_empty(),
        "the 1.1 MB user makes an oversized marker in each sync after it was created"
    );
    assert!(f.tombstones > 0, "churn deleted users: tombstones expected");
    assert!(f.user_sync_pairs > 2 * users, "several syncs per tenant");
    let o = outage.expect("the broker was restarted");
    assert!(
        o.transformer_ready_before
            && o.transformer_unready_after.is_some()
            && o.producer_unready_after.is_some()
            && o.transformer_ready_again_after.is_some(),
        "/readyz around the broker restart: 200 before, 503 for both while down, 200 after; \
         got {o:?}; the transformer's log ends:\n{}",
        test_harness::log_tail(&transformer.log, 40)
    );
    sim.shutdown().await;
}
