//! Throughput benchmark: the transformer against a pass-through consume→produce loop that joins
//! its own consumer group as the transformer does, with the same client settings and the same
//! transaction batching, on the same broker, in the same run.
//!
//! Usage (see `transformer/scripts/throughput.sh`, which builds in release mode first):
//! `throughput <transformer binary> <syncs> [<syncs> ...]`, with `KAFKA_BOOTSTRAP_SERVERS` and
//! `SCHEMA_REGISTRY_URL` set; `throughput <transformer binary> idle` prints instead the
//! transformer's RSS at rest (15 s after starting on an empty raw topic), and
//! `throughput <transformer binary> scale <syncs>` one instance against two in a consumer group
//! on two tenants' partitions (see [`scale`]). For each size it writes a raw topic of `syncs` snapshot syncs of one
//! tenant (5,000 users, 5 applications, 200 memberships each) with 1,000 access activities after
//! each sync, then times (a) the pass-through (this program run as a child process) and (b) the
//! transformer binary, each from start until its group's committed offsets reach the end of the
//! raw topic, and reports events/s, the ratio, each process's CPU time per event (user + system
//! over every thread, from `/proc/<pid>/stat`) and peak RSS (VmHWM). The user
//! population is fixed, so a flat transformer RSS across sizes means memory does not grow with
//! the input. The transformer runs with `RUST_LOG=warn`, or `THROUGHPUT_RUST_LOG` when set
//! (e.g. `transformer=debug,pipeline_io::kafka::txn=debug` for its start-up steps and every
//! transaction's timings).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_io::kafka::TxnSession;
use pipeline_io::registry::Registry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::raw::{RAW_EVENT_SCHEMA, RawEvent, kind};
use serde_json::json;
use transformer::config::Config;
use transformer::pipeline;

/// The transformer binary's allocator, so that the pass-through (this program) allocates alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const USERS: usize = 5_000;
const ACCESSES_PER_SYNC: usize = 1_000;

fn env(name: &str) -> Res<String> {
    std::env::var(name)
        .map_err(|_| format!("{name} is not set: run `eval \"$(deploy/local/up)\"`").into())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{nanos}")
}

/// Deletes what one measurement wrote: `raw_topic` and every topic under one of `prefixes`.
/// A 128-sync run leaves over a gigabyte in the broker otherwise, and repeated runs fill its
/// disk. A failure is reported and left: the numbers are printed already.
async fn drop_topics(bootstrap: &str, raw_topic: &str, prefixes: &[String]) {
    let dropped = async {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()?;
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))?;
        let names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|n| n == raw_topic || prefixes.iter().any(|p| n.starts_with(p.as_str())))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        admin.delete_topics(&names, &AdminOptions::new()).await?;
        Res::Ok(())
    };
    if let Err(e) = dropped.await {
        eprintln!(
            "the benchmark's topics were not deleted ({e}): delete {raw_topic} and {prefixes:?}* by hand"
        );
    }
}

fn ev(kind: &str, entity: Option<String>, sync: Option<&str>, payload: String) -> RawEvent {
    RawEvent {
        tenant_id: "bench".into(),
        environment_id: "5f0c4a52-8d0e-4b6a-9a57-3d1f2b7c9e10".into(),
        region: "eu".into(),
        kind: kind.into(),
        entity_id: entity,
        sync_id: sync.map(str::to_owned),
        observed_at_ms: 1_795_000_000_000,
        payload,
        producer_version: "bench".into(),
    }
}

fn sync_events(n: usize) -> Vec<RawEvent> {
    let sync = format!("sync-{n}");
    let s = Some(sync.as_str());
    let mut v = vec![ev(
        kind::SYNC_STARTED,
        None,
        s,
        json!({"sync_id": sync}).to_string(),
    )];
    for a in 0..5 {
        let rule = if a % 2 == 0 {
            json!(null)
        } else {
            json!({"group": {"type": "ANY_GROUP", "groups": [{"id": "g1"}]}})
        };
        v.push(ev(kind::APPLICATION, Some(format!("app-{a}")), s, json!({"id": format!("app-{a}"), "name": "App", "type": "WEB_APP", "protocol": "SAML", "enabled": true, "accessControl": rule}).to_string()));
    }
    for u in 0..200 {
        v.push(ev(
            kind::GROUP_MEMBERSHIP,
            Some(format!("g1/u-{u}")),
            s,
            json!({"id": format!("u-{u}"), "username": "x"}).to_string(),
        ));
    }
    for u in 0..USERS {
        let payload = json!({
            "id": format!("u-{u}"), "username": format!("user{u}@example.com"), "email": format!("user{u}@example.com"),
            "name": {"given": "Ada", "family": "Lovelace"}, "population": {"id": "pop"},
            "address": {"locality": "London", "region": "Greater London"}, "enabled": true, "mfaEnabled": u % 2 == 0,
            "lifecycle": {"status": "ACCOUNT_OK"}, "account": {"canAuthenticate": true, "status": "OK"},
            "verifyStatus": "ENABLED", "type": "Employee", "identityProvider": {"type": "PING_ONE"},
            "lastSignOn": {"at": "2026-11-20T10:00:00.000Z"}, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-11-01T00:00:00Z"
        });
        v.push(ev(
            kind::USER,
            Some(format!("u-{u}")),
            s,
            payload.to_string(),
        ));
    }
    v.push(ev(
        kind::SYNC_COMPLETED,
        None,
        s,
        json!({"sync_id": sync}).to_string(),
    ));
    for a in 0..ACCESSES_PER_SYNC {
        let id = format!("act-{n}-{a}");
        let payload = json!({"id": id, "recordedAt": format!("2026-11-{:02}T10:00:00Z", 1 + (n + a) % 28),
            "action": {"type": "USER.ACCESS_ALLOWED"},
            "actors": {"client": {"id": format!("app-{}", a % 5), "name": "App"}, "user": {"id": format!("u-{}", a % 500)}}});
        v.push(ev(kind::ACTIVITY, Some(id), None, payload.to_string()));
    }
    v
}

/// Writes `syncs` syncs of each of `tenants` tenants, tenant `t` on partition `t` of a new
/// topic (one tenant: `bench`; more: `bench-0`, `bench-1`, ...). Returns the events written.
async fn write_input(
    bootstrap: &str,
    topic: &str,
    schema_id: u32,
    syncs: usize,
    tenants: usize,
) -> Res<u64> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let partitions = i32::try_from(tenants)?;
    admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create()?;
    let mut count = 0_u64;
    for (n, t) in (0..syncs).flat_map(|n| (0..tenants).map(move |t| (n, t))) {
        let mut pending = Vec::new();
        let tenant = if tenants == 1 {
            "bench".to_owned()
        } else {
            format!("bench-{t}")
        };
        let partition = i32::try_from(t)?;
        for mut e in sync_events(n) {
            e.tenant_id.clone_from(&tenant);
            let value = schemas::wire::encode(schema_id, &e.to_avro_datum()?);
            let mut record = FutureRecord::to(topic)
                .key(tenant.as_str())
                .partition(partition)
                .payload(&value);
            loop {
                match producer.send_result(record) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((_, r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(5));
                    }
                }
            }
            count += 1;
        }
        for f in pending {
            f.await?.map_err(|(e, _)| e)?;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(count)
}

fn end_offsets(bootstrap: &str, topic: &str, partitions: usize) -> Res<HashMap<i32, i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut end = HashMap::new();
    for p in 0..i32::try_from(partitions)? {
        let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        end.insert(p, high);
    }
    Ok(end)
}

/// Waits until `group` committed the end of `topic`.
/// When a group's commits on `topic` first moved and when they reached `end`.
struct Progress {
    /// Seconds from the start to the first commit.
    first_s: f64,
    /// Records committed by that first commit.
    first_records: i64,
    /// Seconds from the start until everything was committed.
    done_s: f64,
    /// The longest time the committed offsets stood still after `later_from` (seconds from
    /// the start), until everything was committed: with a second instance joining then, the
    /// rebalance pause.
    max_stall_s: f64,
}

/// Polls the group's committed offsets every 20 ms until they reach `end`.
///
/// The observer reads them `read_uncommitted`, so that librdkafka asks without
/// `RequireStable`: the broker then answers at once with the offsets of committed transactions
/// only. With librdkafka's default (`read_committed`) a fetch that meets a transaction still
/// holding offsets is answered `UNSTABLE_OFFSET_COMMIT` and retried, and took 0.1–0.8 s. The
/// transformer, which overlaps each commit with the next batch, nearly always has one open, so
/// the observer saw its end up to 0.8 s late; the pass-through, idle between its
/// transactions, far less (README, "Benchmarks", session 20).
fn wait_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    end: &HashMap<i32, i64>,
    started: Instant,
    limit: Duration,
    mut on_first: impl FnMut() -> Res<()>,
) -> Res<Progress> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_uncommitted")
        .create()?;
    let mut first: Option<(f64, i64)> = None;
    let (mut last_sum, mut last_move, mut max_stall) = (0_i64, 0.0_f64, 0.0_f64);
    loop {
        let mut tpl = TopicPartitionList::new();
        for p in end.keys() {
            tpl.add_partition(topic, *p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
        let offsets: Vec<(i32, Option<i64>)> = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), Some(o)),
                _ => (e.partition(), None),
            })
            .collect();
        let sum: i64 = offsets.iter().filter_map(|(_, o)| *o).sum();
        let now = started.elapsed().as_secs_f64();
        if first.is_none() && sum > 0 {
            first = Some((now, sum));
            on_first()?;
            last_move = now;
        }
        if sum != last_sum {
            if first.is_some() {
                max_stall = max_stall.max(now - last_move);
            }
            last_sum = sum;
            last_move = now;
        }
        let done = offsets
            .iter()
            .all(|(p, o)| o.is_some_and(|o| o >= end.get(p).copied().unwrap_or(0)));
        if done {
            let (first_s, first_records) = first.unwrap_or((0.0, 0));
            return Ok(Progress {
                first_s,
                first_records,
                done_s: started.elapsed().as_secs_f64(),
                max_stall_s: max_stall,
            });
        }
        if started.elapsed() > limit {
            return Err(format!("group {group} did not finish within {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU seconds (user + system, every thread) a live process has used, from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s, the kernel's `USER_HZ` on Linux).
fn cpu_s(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces), from field 3 (state).
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let user: u64 = rest.get(11)?.parse().ok()?;
            let system: u64 = rest.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let s = ticks as f64 / 100.0;
    s
}

fn rss_kib(pid: u32) -> u64 {
    pipeline_io::ops::status_kib(Some(pid), "VmRSS:").unwrap_or(0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    pipeline_io::ops::status_kib(Some(pid), "VmHWM:").unwrap_or(0)
}

/// The pass-through loop: same consumer and producer settings, same batching and transactions
/// as the transformer; copies each raw record unchanged to `<prefix>passthrough.v1`.
async fn passthrough(config: Config) -> Res<()> {
    let out = format!("{}passthrough.v1", config.kafka.output_prefix);
    let raw_topic = config.kafka.raw_topic.as_str();
    let mut session = TxnSession::open(
        &config.kafka.client,
        &pipeline::live::txn_settings(&config, &config.kafka.transactional_id),
    )
    .await?;
    // Subscribed, as the transformer is: the same group join and the same offset reset. (An
    // `assign` at once, before the consumer knows the partition's leader, waited 500 ms for
    // librdkafka's offset query timer at every start.)
    let consumer: StreamConsumer = pipeline::live::raw_consumer_config(&config).create()?;
    consumer.subscribe(&[raw_topic])?;
    let p = &config.processing;
    loop {
        let mut batch = vec![consumer.recv().await?.detach()];
        let deadline = tokio::time::Instant::now() + p.batch_max_wait;
        while batch.len() < p.batch_max_records {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(m) => batch.push(m?.detach()),
                Err(_) => break,
            }
        }
        // The transformer's own transaction plumbing, so that both commit the same way.
        session.begin().await?;
        let mut next = HashMap::new();
        for m in &batch {
            session
                .send(&out, m.key().unwrap_or_default(), m.payload(), None)
                .await?;
            next.insert(m.partition(), m.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets.add_partition_offset(raw_topic, partition, Offset::Offset(offset))?;
        }
        let group = consumer.group_metadata().ok_or("no group metadata")?;
        session
            .send_offsets(offsets, std::sync::Arc::new(group))
            .await?;
        session.commit().await?;
    }
}

fn config_toml(c: &Config) -> String {
    format!(
        "[kafka]\nbootstrap_servers = \"{}\"\nraw_topic = \"{}\"\noutput_prefix = \"{}\"\ngroup_id = \"{}\"\ntransactional_id = \"{}\"\n[schema_registry]\nurl = \"{}\"\n",
        c.kafka.client.bootstrap_servers,
        c.kafka.raw_topic,
        c.kafka.output_prefix,
        c.kafka.group_id,
        c.kafka.transactional_id,
        c.registry.url,
    )
}

/// Runs a child until its group committed the whole raw topic; returns its progress, peak RSS
/// in KiB and CPU seconds.
fn timed_child(
    cmd: Command,
    bootstrap: &str,
    config: &Config,
    end: &HashMap<i32, i64>,
) -> Res<(Progress, u64, f64)> {
    timed_children(cmd, None, bootstrap, config, end)
}

/// As [`timed_child`]; `second`, if given, is started once the first has committed something
/// (a second instance joining its group). Peak RSS and CPU are the sums over the children.
fn timed_children(
    mut first: Command,
    second: Option<Command>,
    bootstrap: &str,
    config: &Config,
    end: &HashMap<i32, i64>,
) -> Res<(Progress, u64, f64)> {
    let started = Instant::now();
    let mut children = vec![
        first
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    ];
    let mut second = second;
    let waited = wait_committed(
        bootstrap,
        &config.kafka.group_id,
        &config.kafka.raw_topic,
        end,
        started,
        Duration::from_secs(1_800),
        || {
            if let Some(mut cmd) = second.take() {
                children.push(cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn()?);
            }
            Ok(())
        },
    );
    let rss = children.iter().map(|c| peak_rss_kib(c.id())).sum();
    let cpu = children.iter().map(|c| cpu_s(c.id())).sum();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok((waited?, rss, cpu))
}

/// `throughput <binary> scale <syncs>`: two tenants on a two-partition raw topic, normalized by
/// one transformer instance, then by two in one group (the second joining once the first has
/// committed). Prints CSV: per run seconds, events/s, CPU µs per event, summed peak RSS, and the
/// longest stall of the group's committed offsets after the first commit (with two instances:
/// the rebalance pause as the second joins).
async fn scale(binary: &str, bootstrap: &str, registry: &Registry, syncs: usize) -> Res<()> {
    let registry_url = env("SCHEMA_REGISTRY_URL")?;
    let dir = std::env::temp_dir().join(unique("transformer-scale"));
    std::fs::create_dir_all(&dir)?;
    let raw_topic = unique("bench-scale-raw");
    let schema_id = registry
        .register(&format!("{raw_topic}-value"), RAW_EVENT_SCHEMA)
        .await?;
    let events = write_input(bootstrap, &raw_topic, schema_id, syncs, 2).await?;
    let end = end_offsets(bootstrap, &raw_topic, 2)?;
    println!("instances,events,seconds,ev_per_s,cpu_us_per_ev,peak_rss_kib_sum,max_stall_s");
    let mut prefixes = Vec::new();
    for instances in [1, 2] {
        let mut config = Config::for_addresses(bootstrap.to_owned(), registry_url.clone())?
            .with_output_prefix(&format!("{}.", unique("bench-scale")));
        prefixes.push(config.kafka.output_prefix.clone());
        config.kafka.raw_topic.clone_from(&raw_topic);
        config.kafka.group_id = unique("bench-scale");
        config.kafka.transactional_id = unique("bench-scale");
        let path = dir.join(format!("scale-{instances}.toml"));
        std::fs::write(&path, config_toml(&config))?;
        let command = |id: &str| {
            let mut cmd = Command::new(binary);
            cmd.arg("--config")
                .arg(&path)
                .arg("run")
                .env("RUST_LOG", "warn")
                .env("TRANSFORMER__KAFKA__INSTANCE_ID", id);
            cmd
        };
        let second = (instances == 2).then(|| command("b"));
        let (p, rss, cpu) = timed_children(command("a"), second, bootstrap, &config, &end)?;
        #[allow(clippy::cast_precision_loss)]
        let ev = events as f64;
        println!(
            "{instances},{events},{:.2},{:.0},{:.2},{rss},{:.2}",
            p.done_s,
            ev / p.done_s,
            cpu * 1e6 / ev,
            p.max_stall_s
        );
    }
    drop_topics(bootstrap, &raw_topic, &prefixes).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The transformer's resident memory at rest: started on an empty raw topic, RSS after
/// `settle`, in KiB.
fn idle_rss(binary: &str, config_path: &std::path::Path, settle: Duration) -> Res<u64> {
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(config_path)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    std::thread::sleep(settle);
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Ok(rss)
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("passthrough") {
        let path = std::path::PathBuf::from(args.get(2).ok_or("config path")?);
        let config = transformer::config::load(Some(&path), &Default::default())?;
        return passthrough(config).await;
    }
    let binary = args
        .get(1)
        .ok_or("usage: throughput <transformer binary> <syncs>...")?
        .clone();
    let bootstrap = env("KAFKA_BOOTSTRAP_SERVERS")?;
    let registry_url = env("SCHEMA_REGISTRY_URL")?;
    let registry = Registry::new(&registry_url, None, Duration::from_secs(10))?;
    let dir = std::env::temp_dir().join(unique("transformer-throughput"));
    std::fs::create_dir_all(&dir)?;
    if args.get(2).map(String::as_str) == Some("scale") {
        let syncs: usize = args.get(3).map_or(Ok(8), |s| s.parse())?;
        let _ = std::fs::remove_dir_all(&dir);
        return scale(&binary, &bootstrap, &registry, syncs).await;
    }
    if args.get(2).map(String::as_str) == Some("idle") {
        // Base memory: an empty raw topic, the transformer left 15 s to start and settle.
        let raw_topic = unique("bench-idle-raw");
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        admin
            .create_topics(
                &[NewTopic::new(&raw_topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await?;
        let mut config = Config::for_addresses(bootstrap.clone(), registry_url.clone())?
            .with_output_prefix(&format!("{}.", unique("bench-idle")));
        config.kafka.raw_topic = raw_topic;
        config.kafka.group_id = unique("bench-idle");
        config.kafka.transactional_id = unique("bench-idle");
        let path = dir.join("idle.toml");
        std::fs::write(&path, config_toml(&config))?;
        println!("idle_rss_kib");
        println!("{}", idle_rss(&binary, &path, Duration::from_secs(15))?);
        drop_topics(
            &bootstrap,
            &config.kafka.raw_topic,
            &[config.kafka.output_prefix],
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    println!(
        "syncs,events,passthrough_s,passthrough_ev_per_s,passthrough_peak_rss_kib,passthrough_cpu_us_per_ev,transformer_s,transformer_ev_per_s,transformer_peak_rss_kib,transformer_cpu_us_per_ev,ratio,passthrough_first_commit_s,transformer_first_commit_s,passthrough_steady_ev_per_s,transformer_steady_ev_per_s,steady_ratio"
    );
    for size in &args[2..] {
        let syncs: usize = size.parse()?;
        let raw_topic = unique("bench-raw");
        let schema_id = registry
            .register(&format!("{raw_topic}-value"), RAW_EVENT_SCHEMA)
            .await?;
        let events = write_input(&bootstrap, &raw_topic, schema_id, syncs, 1).await?;
        let end = end_offsets(&bootstrap, &raw_topic, 1)?;
        let mut runs = Vec::new();
        let mut prefixes = Vec::new();
        for which in ["passthrough", "transformer"] {
            let mut config = Config::for_addresses(bootstrap.clone(), registry_url.clone())?
                .with_output_prefix(&format!("{}.", unique(&format!("bench-{which}"))));
            prefixes.push(config.kafka.output_prefix.clone());
            config.kafka.raw_topic = raw_topic.clone();
            config.kafka.group_id = unique(&format!("bench-{which}"));
            config.kafka.transactional_id = unique(&format!("bench-{which}"));
            let path = dir.join(format!("{which}.toml"));
            std::fs::write(&path, config_toml(&config))?;
            let mut cmd;
            if which == "passthrough" {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .create()?;
                let out = format!("{}passthrough.v1", config.kafka.output_prefix);
                admin
                    .create_topics(
                        &[NewTopic::new(&out, 1, TopicReplication::Fixed(1))],
                        &AdminOptions::new(),
                    )
                    .await?;
                cmd = Command::new(std::env::current_exe()?);
                cmd.arg("passthrough").arg(&path);
            } else {
                cmd = Command::new(&binary);
                cmd.arg("--config")
                    .arg(&path)
                    .arg("run")
                    // THROUGHPUT_RUST_LOG (e.g. `transformer=debug`) shows the start-up's steps.
                    .env(
                        "RUST_LOG",
                        std::env::var("THROUGHPUT_RUST_LOG").unwrap_or_else(|_| "warn".into()),
                    );
            }
            runs.push(timed_child(cmd, &bootstrap, &config, &end)?);
        }
        let (p, pr, pc) = &runs[0];
        let (t, tr, tc) = &runs[1];
        #[allow(clippy::cast_precision_loss)]
        let ev = events as f64;
        // Steady state: from each process's first commit to its last, so that start-up (the
        // transformer creates topics, registers schemas and restores state) is left out.
        #[allow(clippy::cast_precision_loss)]
        let steady = |x: &Progress| (ev - x.first_records as f64) / (x.done_s - x.first_s);
        println!(
            "{syncs},{events},{:.2},{:.0},{pr},{:.2},{:.2},{:.0},{tr},{:.2},{:.2},{:.2},{:.2},{:.0},{:.0},{:.2}",
            p.done_s,
            ev / p.done_s,
            pc * 1e6 / ev,
            t.done_s,
            ev / t.done_s,
            tc * 1e6 / ev,
            p.done_s / t.done_s,
            p.first_s,
            t.first_s,
            steady(p),
            steady(t),
            steady(t) / steady(p)
        );
        drop_topics(&bootstrap, &raw_topic, &prefixes).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
