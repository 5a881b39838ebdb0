//! Helpers of the producer's consumer-group test (`tests/group.rs`): `producer run` instances
//! with their own operations listener, the `producer tenants …` commands, `/metrics` parsing,
//! sign-ons appended to the simulator, and a work folder that prints every log's tail when the
//! test fails.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pingone_sim::admin::SignonSpec;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::util::Timeout;

use crate::common;

/// The `producer` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_producer");

/// The partition of `key` among `partitions`: the producer's `registry::partition_for`, whose
/// unit test checks it against Kafka's own murmur2 test values.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    producer::registry::partition_for(key.as_bytes(), partitions)
}

/// A folder for one test run's files. When the test fails (the folder is dropped while
/// panicking) it prints the tail of every `*.log` in it and keeps it; otherwise it is removed.
#[derive(Debug)]
pub struct Workdir {
    /// The folder.
    pub path: PathBuf,
}

impl Workdir {
    /// A fresh folder under the temporary directory.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(common::unique(prefix));
        std::fs::create_dir_all(&path).expect("work folder");
        Self { path }
    }

    /// A path inside the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Every `*.log` file in the folder, by name.
    pub fn logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "log"))
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        logs
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in self.logs() {
                eprintln!(
                    "===== last lines of {} =====\n{}",
                    log.display(),
                    test_harness::log_tail(&log, 40)
                );
            }
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One `producer run` process with its own operations listener; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Instance {
    /// Its name in messages and its log file name.
    pub name: String,
    /// Address of its `/metrics`.
    pub ops: SocketAddr,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    child: common::ChildGuard,
}

impl Instance {
    /// Starts `producer run --config <config>` with `envs` and
    /// `PRODUCER__OPERATIONS__LISTEN_ADDR` set to a free loopback port; output goes to
    /// `<dir>/instance-<name>.log`.
    pub fn start(name: &str, config: &Path, dir: &Workdir, envs: &[(String, String)]) -> Self {
        let ops: SocketAddr = format!("127.0.0.1:{}", test_harness::ops::free_port())
            .parse()
            .expect("loopback address");
        let log = dir.file(&format!("instance-{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("instance log");
        let err = out.try_clone().expect("instance log");
        let child = std::process::Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .env("PRODUCER__OPERATIONS__LISTEN_ADDR", ops.to_string())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn producer run");
        Self {
            name: name.to_owned(),
            ops,
            log,
            child: common::ChildGuard(child),
        }
    }

    /// The text of its `/metrics`, if it answers.
    pub async fn metrics(&self) -> Option<String> {
        let ops = self.ops;
        tokio::task::spawn_blocking(move || {
            test_harness::ops::get(ops, "/metrics", Duration::from_secs(3))
        })
        .await
        .ok()?
        .ok()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
    }

    /// Its `producer_owned_partitions` and `producer_running_tenants` (None when it does not
    /// answer or lacks the gauge).
    pub async fn gauges(&self) -> (Option<f64>, Option<f64>) {
        match self.metrics().await {
            Some(body) => (
                metric_sum(&body, "producer_owned_partitions"),
                metric_sum(&body, "producer_running_tenants"),
            ),
            None => (None, None),
        }
    }

    /// Sends it `signal` (`-STOP`, `-CONT`).
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal} to instance {}", self.name);
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.child.0.kill().expect("kill -9");
        let _ = self.child.0.wait();
    }

    /// Stops it with SIGTERM and requires a clean exit (status 0) within `limit`.
    pub async fn stop(mut self, limit: Duration) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "SIGTERM to instance {}", self.name);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("wait") {
                break status;
            }
            assert!(
                started.elapsed() < limit,
                "instance {} did not exit within {limit:?} of SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            status.success(),
            "instance {} exited with {status} after SIGTERM",
            self.name
        );
    }
}

/// Sum of every sample of the metric `name` (exactly that name, with or without labels).
pub fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.split_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Tenants for which `body` holds `producer_last_successful_sync_timestamp_seconds{tenant}`
/// above zero: tenants that completed a sync in that instance.
pub fn tenants_with_completed_sync(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("producer_last_successful_sync_timestamp_seconds{"))
        .filter_map(|l| {
            let (labels, value) = l.split_once('}')?;
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            let tenant = labels
                .split(',')
                .find_map(|kv| kv.strip_prefix("tenant=\""))?
                .trim_end_matches('"');
            (value > 0.0).then(|| tenant.to_owned())
        })
        .collect()
}

/// What one `producer tenants …` command did.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status 0.
    pub success: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Runs `producer tenants <args> --config <config>` (plus `extra`) with `envs`, within 120 s.
/// The command line and its output are appended to `<dir>/cli.log`.
pub async fn tenants_cmd(
    dir: &Workdir,
    config: &Path,
    args: &[&str],
    envs: &[(String, String)],
) -> CliOutput {
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("tenants")
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("producer tenants {}", args.join(" "));
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("`{what}` did not end within 120 s"))
        .unwrap_or_else(|e| panic!("`{what}` could not run: {e}"));
    let out = CliOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let record = format!(
        "$ {what}\n[{}]\n--- stdout\n{}--- stderr\n{}\n",
        output.status, out.stdout, out.stderr
    );
    {
        use std::io::Write as _;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.file("cli.log"))
            .expect("cli log");
        let _ = log.write_all(record.as_bytes());
    }
    out
}

/// The tenant ids `tenants list` printed: of each line, the leading run of tenant-id characters
/// (`A-Za-z0-9-_.`), kept when it is one of `known` (so a header or summary line is ignored).
pub fn listed_tenants(stdout: &str, known: &[String]) -> BTreeSet<String> {
    stdout
        .lines()
        .map(|l| {
            l.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect::<String>()
        })
        .filter(|id| known.contains(id))
        .collect()
}

/// One simulated tenant as the test uses it.
#[derive(Debug, Clone)]
pub struct SimTenant {
    /// Its `tenant_id`.
    pub id: String,
    /// How to reach it.
    pub info: pingone_sim::TenantInfo,
    /// The variable holding its client secret.
    pub secret_env: String,
    /// Its partition of the tenants topic.
    pub partition: i32,
    /// Some of its users and applications, for sign-ons.
    pub users: Vec<String>,
    /// Some of its applications.
    pub apps: Vec<String>,
}

/// A sign-on the test appended to the simulator.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Index of the tenant.
    pub tenant: usize,
    /// The activity's id.
    pub id: String,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// The user who signed on (whose `lastSignOn` changed).
    pub user_id: String,
}

/// Sign-ons appended during the test, in order.
#[derive(Debug, Default)]
pub struct Signons {
    turn: usize,
    /// Every sign-on appended so far.
    pub appended: Vec<Appended>,
}

impl Signons {
    /// Appends one sign-on, at now, for tenant `index`.
    pub async fn append(
        &mut self,
        sim: &pingone_sim::RunningSim,
        tenants: &[SimTenant],
        index: usize,
    ) -> Appended {
        let t = &tenants[index];
        let n = self.appended.len();
        let user_id = t.users[n % t.users.len()].clone();
        let at_ms = schemas::time::now_ms();
        let events = sim
            .admin(&t.info.environment_id)
            .append_signons(&[SignonSpec {
                user_id: user_id.clone(),
                application_id: t.apps[n % t.apps.len()].clone(),
                at: schemas::time::format_ms(at_ms),
            }])
            .await
            .expect("append a sign-on");
        let id = events
            .first()
            .and_then(|e| e["id"].as_str())
            .expect("appended sign-on has an id")
            .to_owned();
        let appended = Appended {
            tenant: index,
            id,
            at_ms,
            user_id,
        };
        self.appended.push(appended.clone());
        appended
    }

    /// Appends one sign-on to each of the next `count` tenants of `running`, round robin.
    pub async fn some(
        &mut self,
        sim: &pingone_sim::RunningSim,
        tenants: &[SimTenant],
        running: &[usize],
        count: usize,
    ) {
        for _ in 0..count.min(running.len()) {
            let index = running[self.turn % running.len()];
            self.turn += 1;
            self.append(sim, tenants, index).await;
        }
    }

    /// Users of tenant `index` that got an appended sign-on.
    pub fn users_of(&self, index: usize) -> BTreeSet<String> {
        self.appended
            .iter()
            .filter(|a| a.tenant == index)
            .map(|a| a.user_id.clone())
            .collect()
    }
}

/// Ids of `USER.ACCESS_ALLOWED` activities of a tenant in `[from_ms, to_ms)` (the simulator's
/// truth: generated and appended sign-ons).
pub async fn truth_signons(
    sim: &pingone_sim::RunningSim,
    env: &str,
    from_ms: i64,
    to_ms: i64,
) -> BTreeSet<String> {
    common::truth_signons_between(&sim.admin(env), from_ms, to_ms).await
}

/// Removes `lastSignOn` from the users in `users`: what a sign-on appended during the test
/// changes, so a sync may hold either value.
pub fn strip_last_signon(
    users: &mut BTreeMap<String, serde_json::Value>,
    appended_to: &BTreeSet<String>,
) {
    for (id, user) in users.iter_mut() {
        if appended_to.contains(id)
            && let Some(object) = user.as_object_mut()
        {
            object.remove("lastSignOn");
        }
    }
}

/// A copy of `truth` without `lastSignOn` for the users in `appended_to`.
pub fn truth_without_last_signon(
    truth: &common::Truth,
    appended_to: &BTreeSet<String>,
) -> common::Truth {
    let mut users = truth.users.clone();
    strip_last_signon(&mut users, appended_to);
    common::Truth {
        users,
        groups: truth.groups.clone(),
        applications: truth.applications.clone(),
        memberships: truth.memberships.clone(),
    }
}

/// Activity ids written for `tenant` and how often each.
pub fn activity_counts(records: &[common::Record], tenant: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.event.tenant_id == tenant && r.event.kind == "activity")
    {
        *seen
            .entry(r.event.entity_id.clone().expect("activity id"))
            .or_default() += 1;
    }
    seen
}

/// The value of the first field named `name` in `json`, at any depth (depth first).
pub fn find_field<'a>(json: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    match json {
        serde_json::Value::Object(map) => map
            .get(name)
            .or_else(|| map.values().find_map(|v| find_field(v, name))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_field(v, name)),
        _ => None,
    }
}

/// The number of partitions of `topic` and its `cleanup.policy`.
pub async fn describe_topic(topic: &str) -> (usize, Option<String>) {
    let name = topic.to_owned();
    let partitions = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = test_harness::kafka::client_config()
            .create()
            .expect("metadata client");
        let metadata = consumer
            .fetch_metadata(Some(&name), Duration::from_secs(10))
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .map_or(0, |t| t.partitions().len())
    })
    .await
    .expect("metadata task");
    let admin: AdminClient<DefaultClientContext> = test_harness::kafka::client_config()
        .create()
        .expect("admin client");
    let options =
        AdminOptions::new().request_timeout(Some(Timeout::After(Duration::from_secs(10))));
    let configs = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .expect("describe configs");
    let policy = configs
        .into_iter()
        .next()
        .and_then(Result::ok)
        .and_then(|r| r.get("cleanup.policy").and_then(|e| e.value.clone()));
    (partitions, policy)
}

/// The latest record of each key of the tenants topic: its partition and value (`None` for a
/// tombstone).
pub async fn tenants_topic_records(topic: &str) -> BTreeMap<String, (i32, Option<Vec<u8>>)> {
    let records = test_harness::consume_all(topic)
        .await
        .expect("read the tenants topic");
    let mut latest = BTreeMap::new();
    for r in records {
        let key = String::from_utf8_lossy(r.key.as_deref().expect("tenants record has a key"))
            .into_owned();
        latest.insert(key, (r.partition, r.value));
    }
    latest
}

/// A bound on one wait of the test: panics naming what was awaited and the last state seen.
#[derive(Debug)]
pub struct Deadline {
    what: String,
    started: Instant,
    limit: Duration,
}

impl Deadline {
    /// Starts now.
    pub fn new(what: &str, limit: Duration) -> Self {
        Self {
            what: what.to_owned(),
            started: Instant::now(),
            limit,
        }
    }

    /// Panics when the limit has passed.
    pub fn check(&self, state: &dyn std::fmt::Debug) {
        assert!(
            self.started.elapsed() < self.limit,
            "{}: not reached within {:?}; last seen: {state:?}",
            self.what,
            self.limit
        );
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
