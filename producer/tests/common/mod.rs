//! Helpers shared by the producer's integration tests, over the shared `test-harness`:
//! infrastructure addresses (failing with the command to run when absent), unique names,
//! configs, a `read_committed` reader of the raw topic, and the simulator's truth.

#![allow(dead_code)]

use schemas::raw::{RawEvent, raw_event_schema};
use std::collections::BTreeMap;

/// The broker (from `KAFKA_BOOTSTRAP_SERVERS` via the shared harness, which fails naming the
/// command to run when it is absent).
pub fn kafka_bootstrap() -> String {
    test_harness::kafka_bootstrap()
}

/// The registry (`SCHEMA_REGISTRY_URL` via the shared harness).
pub fn registry_url() -> String {
    test_harness::schema_registry_url()
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    test_harness::unique_name(prefix)
}

/// One record read back from the raw topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: String,
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// Decoded event.
    pub event: RawEvent,
    /// Schema id from the wire header.
    pub schema_id: u32,
}

/// Reads every committed record of `topic` (read_committed, up to the end offsets seen now)
/// and decodes the raw events.
pub async fn read_raw(topic: &str) -> Vec<Record> {
    let consumed = test_harness::consume_all(topic)
        .await
        .expect("read the raw topic");
    consumed
        .into_iter()
        .map(|m| {
            let payload = m.value.as_deref().expect("value");
            let (schema_id, datum) = schemas::wire::decode(payload).expect("wire format");
            let event = RawEvent::from_avro_datum(raw_event_schema(), datum).expect("avro");
            let headers = m
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned(),
                    )
                })
                .collect();
            Record {
                partition: m.partition,
                offset: m.offset,
                key: String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned(),
                headers,
                event,
                schema_id,
            }
        })
        .collect()
}

/// Topic names and transactional prefix unique to one test.
#[derive(Debug, Clone)]
pub struct Names {
    /// Raw topic.
    pub raw_topic: String,
    /// Checkpoint topic.
    pub checkpoint_topic: String,
    /// Transactional id prefix.
    pub txn_prefix: String,
}

impl Names {
    /// Fresh names.
    pub fn new(test: &str) -> Self {
        Self {
            raw_topic: unique(&format!("raw-{test}")),
            checkpoint_topic: unique(&format!("ckpt-{test}")),
            txn_prefix: unique(&format!("producer-{test}")),
        }
    }
}

/// The `[kafka]`, `[schema_registry]` and `[operations]` sections for a test.
pub fn global_toml(names: &Names, listen: &str) -> String {
    format!(
        r#"[kafka]
bootstrap_servers = "{}"
raw_topic = "{}"
checkpoint_topic = "{}"
transactional_id_prefix = "{}"
transaction_timeout_ms = 30000
message_timeout_ms = 20000
topic_partitions = 2

[schema_registry]
url = "{}"

[operations]
listen_addr = "{listen}"
shutdown_deadline_ms = 10000
"#,
        kafka_bootstrap(),
        names.raw_topic,
        names.checkpoint_topic,
        names.txn_prefix,
        registry_url(),
    )
}

/// A `[[tenants]]` entry pointing at a simulated tenant; the secret is read from `secret_env`.
pub fn tenant_toml(
    tenant_id: &str,
    t: &pingone_sim::TenantInfo,
    secret_env: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[[tenants]]
tenant_id = "{tenant_id}"
environment_id = "{}"
region = "{}"
client_id = "{}"
client_secret_env = "{secret_env}"
auth_base_url = "{}"
api_base_url = "{}"
retry_base_backoff_ms = 50
retry_max_backoff_ms = 1500
request_timeout_ms = 10000
{extra}
"#,
        t.environment_id, t.region, t.client_id, t.auth_base_url, t.api_base_url,
    )
}

/// Validates config text with the given secret variables (no process environment involved).
pub fn config_from(text: &str, secrets: &[(&str, &str)]) -> producer::config::Config {
    let file = producer::config::parse_with_overrides(std::path::Path::new("test.toml"), text, &[])
        .expect("config parses");
    let secrets: Vec<(String, String)> = secrets
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    file.validate(|var| {
        secrets
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.clone())
    })
    .expect("config validates")
}

/// The truth of a simulated tenant, as id → JSON.
#[derive(Debug)]
pub struct Truth {
    /// Users by id.
    pub users: BTreeMap<String, serde_json::Value>,
    /// Groups by id.
    pub groups: BTreeMap<String, serde_json::Value>,
    /// Applications by id.
    pub applications: BTreeMap<String, serde_json::Value>,
    /// `<groupId>/<userId>` of members of groups named by an application's access control.
    pub memberships: std::collections::BTreeSet<String>,
}

fn by_id(list: Vec<serde_json::Value>) -> BTreeMap<String, serde_json::Value> {
    list.into_iter()
        .map(|v| {
            (
                v["id"].as_str().expect("truth item has an id").to_string(),
                v,
            )
        })
        .collect()
}

/// Reads the simulator's truth for one tenant.
pub async fn truth(sim: &pingone_sim::RunningSim, env: &str) -> Truth {
    let admin = sim.admin(env);
    let applications = by_id(admin.truth_applications().await.expect("truth apps"));
    let access: std::collections::BTreeSet<String> = applications
        .values()
        .flat_map(|a| {
            a.pointer("/accessControl/group/groups")
                .and_then(|g| g.as_array())
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|g| g["id"].as_str().map(str::to_owned))
        .collect();
    let memberships = admin
        .truth_memberships()
        .await
        .expect("truth memberships")
        .into_iter()
        .filter_map(|m| {
            let g = m["groupId"].as_str()?.to_string();
            let u = m["userId"].as_str()?.to_string();
            access.contains(&g).then(|| format!("{g}/{u}"))
        })
        .collect();
    Truth {
        users: by_id(admin.truth_users().await.expect("truth users")),
        groups: by_id(admin.truth_groups().await.expect("truth groups")),
        applications,
        memberships,
    }
}

/// The events of one sync, checked to lie between exactly one `sync_started` and one
/// `sync_completed` whose counts match; returns them by kind → entity id → payload.
pub fn completed_sync_contents(
    records: &[Record],
    tenant: &str,
    sync_id: &str,
) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let mine: Vec<&Record> = records
        .iter()
        .filter(|r| r.event.tenant_id == tenant && r.event.sync_id.as_deref() == Some(sync_id))
        .collect();
    assert!(!mine.is_empty(), "no events of sync {sync_id}");
    let partitions: std::collections::BTreeSet<i32> = mine.iter().map(|r| r.partition).collect();
    assert_eq!(
        partitions.len(),
        1,
        "one tenant's events stay in one partition"
    );
    assert_eq!(
        mine.first().unwrap().event.kind,
        "sync_started",
        "sync opens with sync_started"
    );
    assert_eq!(
        mine.last().unwrap().event.kind,
        "sync_completed",
        "sync ends with sync_completed"
    );
    assert_eq!(
        mine.iter()
            .filter(|r| r.event.kind == "sync_started")
            .count(),
        1
    );
    assert_eq!(
        mine.iter()
            .filter(|r| r.event.kind == "sync_completed")
            .count(),
        1
    );
    let mut out: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    for r in &mine[1..mine.len() - 1] {
        assert_eq!(r.key, tenant, "key is the tenant id");
        assert_eq!(r.headers.get("kind"), Some(&r.event.kind));
        assert_eq!(r.headers.get("tenant_id").map(String::as_str), Some(tenant));
        let id = r.event.entity_id.clone().expect("entity id");
        let payload: serde_json::Value =
            serde_json::from_str(&r.event.payload).expect("payload json");
        let previous = out
            .entry(r.event.kind.clone())
            .or_default()
            .insert(id.clone(), payload);
        assert!(
            previous.is_none(),
            "{} {id} written twice in sync {sync_id}",
            r.event.kind
        );
    }
    let completed: serde_json::Value =
        serde_json::from_str(&mine.last().unwrap().event.payload).expect("marker json");
    for kind in ["user", "group", "application", "group_membership"] {
        let n = out.get(kind).map_or(0, BTreeMap::len) as u64;
        assert_eq!(
            completed["counts"][kind].as_u64(),
            Some(n),
            "count of {kind} in sync_completed"
        );
    }
    out
}

/// Asserts a sync's contents equal the simulator's truth (payloads verbatim as JSON).
pub fn assert_matches_truth(
    contents: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    truth: &Truth,
) {
    let empty = BTreeMap::new();
    assert_eq!(
        contents.get("user").unwrap_or(&empty),
        &truth.users,
        "users differ from truth"
    );
    assert_eq!(
        contents.get("group").unwrap_or(&empty),
        &truth.groups,
        "groups differ from truth"
    );
    assert_eq!(
        contents.get("application").unwrap_or(&empty),
        &truth.applications,
        "applications differ from truth"
    );
    let memberships: std::collections::BTreeSet<String> = contents
        .get("group_membership")
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(
        memberships, truth.memberships,
        "memberships differ from truth"
    );
    assert!(
        !truth.users.is_empty() && !truth.memberships.is_empty(),
        "the test tenant is not empty"
    );
}

/// Ids of sync_completed markers of `tenant`, in topic order.
pub fn completed_sync_ids(records: &[Record], tenant: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.event.tenant_id == tenant && r.event.kind == "sync_completed")
        .filter_map(|r| r.event.sync_id.clone())
        .collect()
}

/// A spawned producer process, killed when dropped (so a failing test leaves nothing running).
#[derive(Debug)]
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Spawns `command` with stderr piped, and reads that stderr to its end on a thread (so the
    /// child never blocks on a full pipe). Join the handle after the child has exited or been
    /// killed to get everything it logged.
    pub fn spawn_capturing_stderr(
        command: &mut std::process::Command,
    ) -> (Self, std::thread::JoinHandle<String>) {
        use std::io::Read as _;
        let mut child = Self(
            command
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn producer"),
        );
        let mut stderr = child.0.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        (child, reader)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Ids of the simulator's `USER.ACCESS_ALLOWED` activities recorded in `[from_ms, to_ms)`
/// (generated and appended sign-ons).
pub async fn truth_signons_between(
    admin: &pingone_sim::AdminClient,
    from_ms: i64,
    to_ms: i64,
) -> std::collections::BTreeSet<String> {
    admin
        .truth_activities(
            &schemas::time::format_ms(from_ms),
            &schemas::time::format_ms(to_ms),
        )
        .await
        .expect("truth activities")
        .into_iter()
        .filter(|a| a["action"]["type"] == "USER.ACCESS_ALLOWED")
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect()
}
