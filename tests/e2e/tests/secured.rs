//! The pipeline over SASL_SSL against the secured local broker (`deploy/local/up --secured`):
//! TLS with the CA made there, SCRAM-SHA-512 users, `StandardAuthorizer` with exactly the ACLs
//! of the chart's Strimzi KafkaUser resources, and topics made beforehand from its KafkaTopic
//! resources (the users may not create topics).
//!
//! 1. `pipeline_runs_over_sasl_ssl_with_each_binary_s_own_user`: the release-shaped binaries,
//!    each with its own user and nothing but the config a cluster would give it: the PingOne
//!    simulator -> `producer sync --once` -> `transformer run --until-caught-up` -> `lake-sink
//!    run --until-caught-up`. Every simulated user and application is on the normalized topics
//!    (read back as admin) and in the lake's tables, for a tenant id new to this run.
//! 2. `acls_refuse_what_a_user_may_not_do`: a binary run with another binary's credentials
//!    fails naming the authorization error, and direct clients show each refusal the ACLs
//!    promise (write, read, transactional id, group), plus a wrong password.
//!
//! Needs `eval "$(deploy/local/up --secured)"` (fails naming it otherwise), the binaries
//! (`cargo build -p producer -p transformer -p lake-sink`), and Python `deltalake` (installed
//! by deploy/local/test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pingone_sim::{RunningSim, SimConfig, TenantSpec};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    DefaultProducerContext, FutureProducer, FutureRecord, Producer, ThreadedProducer,
};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Simulated users of the tenant.
const USERS: usize = 60;
/// Bound on each binary's run.
const STEP_LIMIT: Duration = Duration::from_secs(180);
/// The three Kafka users of `kafka-users.yaml`.
const PRODUCER_USER: &str = "pingone-producer";
const TRANSFORMER_USER: &str = "pingone-transformer";
const LAKE_SINK_USER: &str = "pingone-lake-sink";

/// What `deploy/local/up --secured` exports.
struct Secured {
    bootstrap: String,
    ca: String,
    secrets: PathBuf,
    registry: String,
}

impl Secured {
    fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| {
                    panic!(
                        "{name} is not set: start the secured broker with \
                     `eval \"$(deploy/local/up --secured)\"`, or run deploy/local/test"
                    )
                })
        };
        Self {
            bootstrap: var("SECURED_KAFKA_BOOTSTRAP_SERVERS"),
            ca: var("SECURED_KAFKA_CA_LOCATION"),
            secrets: PathBuf::from(var("SECURED_KAFKA_SECRETS_DIR")),
            registry: var("SCHEMA_REGISTRY_URL"),
        }
    }

    fn password(&self, user: &str) -> String {
        let path = self.secrets.join(user);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// A client of `user` with `password`.
    fn client_with(&self, user: &str, password: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanisms", "SCRAM-SHA-512")
            .set("sasl.username", user)
            .set("sasl.password", password)
            .set("ssl.ca.location", &self.ca)
            .set("socket.timeout.ms", "10000")
            .set("message.timeout.ms", "15000");
        c
    }

    fn client(&self, user: &str) -> ClientConfig {
        self.client_with(user, &self.password(user))
    }

    /// The `[kafka]` security part of a binary's config for `user` (the password comes from
    /// the environment, as a cluster's Secret would give it).
    fn kafka_toml(&self, user: &str, extra: &str) -> String {
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\n{extra}\n[kafka.librdkafka_options]\n\
             \"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"{user}\"\n\"ssl.ca.location\" = \"{}\"\n\n\
             [schema_registry]\nurl = \"{}\"\n\n[operations]\nlisten_addr = \"\"\n",
            self.bootstrap, self.ca, self.registry
        )
    }
}

/// A fresh directory for one test's files.
fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(test_harness::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One run of a binary: its exit status and its stderr.
struct Run {
    success: bool,
    stderr: String,
}

/// Runs `bin` with `args`, the password of `user` in `password_var`, and `envs`; bounded by
/// [`STEP_LIMIT`].
async fn run(
    bin: &str,
    args: &[&str],
    password_var: &str,
    password: &str,
    envs: &[(&str, &str)],
) -> Run {
    let mut c = tokio::process::Command::new(e2e::binary(bin));
    c.args(args)
        .env(password_var, password)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(STEP_LIMIT, c.output())
        .await
        .unwrap_or_else(|_| panic!("{bin} {args:?} did not end within {STEP_LIMIT:?}"))
        .unwrap();
    Run {
        success: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The producer's config for the simulated tenant `tenant`.
fn producer_toml(s: &Secured, sim: &RunningSim, tenant: &str) -> String {
    let t = &sim.tenants()[0];
    format!(
        "{}\n[[tenants]]\ntenant_id = \"{tenant}\"\nenvironment_id = \"{}\"\nregion = \"{}\"\n\
         client_id = \"{}\"\nclient_secret_env = \"SECURED_TEST_PINGONE_SECRET\"\n\
         auth_base_url = \"{}\"\napi_base_url = \"{}\"\nrequests_per_second = 1000\n",
        s.kafka_toml(PRODUCER_USER, ""),
        t.environment_id,
        t.region,
        t.client_id,
        t.auth_base_url,
        t.api_base_url,
    )
}

/// The keys of `topic` that start with `<tenant>/`, read as admin with `read_committed` from
/// the beginning to the end of every partition.
fn tenant_keys(s: &Secured, topic: &str, tenant: &str) -> Vec<String> {
    let mut config = s.client("admin");
    config
        .set("group.id", test_harness::unique_name("secured-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(20))
        .unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    assert!(!partitions.is_empty(), "{topic} has no partitions");
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        list.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let prefix = format!("{tenant}/");
    let mut keys = Vec::new();
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions.len() {
        assert!(Instant::now() < deadline, "reading {topic} took over 60 s");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                if key.starts_with(&prefix) && m.payload().is_some() {
                    keys.push(key);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    keys
}

/// Rows of `table` under `lake` for `tenant`, read by Python `deltalake` (an independent
/// reader).
fn lake_rows(lake: &Path, table: &str, tenant: &str) -> usize {
    // os._exit after the flush: once in a CI run, the interpreter's teardown aborted
    // ("terminate called without an active exception") while Arrow's scan threads were ending.
    let script = "import os, sys, deltalake\n\
        t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(filters=[('tenant', '=', sys.argv[2])])\n\
        print(t.num_rows, flush=True)\n\
        os._exit(0)";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(lake.join(table))
        .arg(tenant)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "reading the {table} table with Python deltalake (pip install deltalake, or run \
         deploy/local/test): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_runs_over_sasl_ssl_with_each_binary_s_own_user() {
    let s = Secured::from_env();
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![TenantSpec::generated(
        "secured",
        USERS as u64,
        5,
    )]))
    .await
    .expect("simulator starts");
    let t = sim.tenants()[0].clone();
    let admin = sim.admin(&t.environment_id);
    let truth_users: BTreeSet<String> = admin
        .truth_users()
        .await
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    let truth_apps = admin.truth_applications().await.unwrap().len();
    assert_eq!(truth_users.len(), USERS);

    // A tenant id of its own: the secured broker's topics keep earlier runs' records.
    let tenant = test_harness::unique_name("sec");
    let dir = work_dir("secured-pipeline");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let producer = write("producer.toml", producer_toml(&s, &sim, &tenant));
    let transformer = write("transformer.toml", s.kafka_toml(TRANSFORMER_USER, ""));
    let lake = dir.join("lake");
    let lake_sink = write(
        "lake-sink.toml",
        format!(
            "{}\n[lake]\nlocation = \"{}\"\n",
            s.kafka_toml(LAKE_SINK_USER, ""),
            lake.display()
        ),
    );
    let secret = t.client_secret.expose().to_owned();

    // The producer creates nothing (no Create ACL): its topics exist, and it says so only at
    // debug level.
    let p = run(
        "producer",
        &["sync", "--config", &producer, "--tenant", &tenant, "--once"],
        "PRODUCER__KAFKA__LIBRDKAFKA_OPTIONS__sasl.password",
        &s.password(PRODUCER_USER),
        &[("SECURED_TEST_PINGONE_SECRET", &secret)],
    )
    .await;
    assert!(p.success, "producer sync --once failed:\n{}", p.stderr);
    let tr = run(
        "transformer",
        &["--config", &transformer, "run", "--until-caught-up"],
        "TRANSFORMER__KAFKA__LIBRDKAFKA_OPTIONS__sasl.password",
        &s.password(TRANSFORMER_USER),
        &[],
    )
    .await;
    assert!(tr.success, "transformer run failed:\n{}", tr.stderr);
    let l = run(
        "lake-sink",
        &["--config", &lake_sink, "run", "--until-caught-up"],
        "LAKE_SINK__KAFKA__LIBRDKAFKA_OPTIONS__sasl.password",
        &s.password(LAKE_SINK_USER),
        &[],
    )
    .await;
    assert!(l.success, "lake-sink run failed:\n{}", l.stderr);
    for (name, r) in [("producer", &p), ("transformer", &tr), ("lake-sink", &l)] {
        for secret in [PRODUCER_USER, TRANSFORMER_USER, LAKE_SINK_USER].map(|u| s.password(u)) {
            assert!(!r.stderr.contains(&secret), "{name} logged a password");
        }
    }

    let users = tenant_keys(&s, "usage.users.v1", &tenant);
    let ids: BTreeSet<String> = users
        .iter()
        .map(|k| k[tenant.len() + 1..].to_owned())
        .collect();
    assert_eq!(users.len(), USERS, "one users record per simulated user");
    assert_eq!(
        ids, truth_users,
        "the users topic's keys are the simulator's users"
    );
    let apps = tenant_keys(&s, "usage.applications.v1", &tenant);
    assert_eq!(
        apps.len(),
        truth_apps,
        "one applications record per application"
    );

    assert_eq!(
        lake_rows(&lake, "users", &tenant),
        USERS,
        "users table rows"
    );
    assert_eq!(
        lake_rows(&lake, "applications", &tenant),
        truth_apps,
        "applications table rows"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `text` names an authorization refusal as librdkafka and Kafka spell it.
fn names_authorization(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("authorization failed")
        || t.contains("authorizationfailed")
        || t.contains("not authorized")
}

#[tokio::test(flavor = "multi_thread")]
async fn acls_refuse_what_a_user_may_not_do() {
    let s = Secured::from_env();
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![TenantSpec::generated(
        "secured-refused",
        5,
        6,
    )]))
    .await
    .expect("simulator starts");
    let tenant = test_harness::unique_name("refused");
    let dir = work_dir("secured-refused");
    let producer = dir.join("producer.toml");
    // The producer's config, but the lake sink's user: it may neither describe nor write the
    // raw topic, nor use the producer's transactional ids.
    std::fs::write(
        &producer,
        producer_toml(&s, &sim, &tenant).replace(
            &format!("\"sasl.username\" = \"{PRODUCER_USER}\""),
            &format!("\"sasl.username\" = \"{LAKE_SINK_USER}\""),
        ),
    )
    .unwrap();
    let secret = sim.tenants()[0].client_secret.expose().to_owned();
    let r = run(
        "producer",
        &[
            "sync",
            "--config",
            producer.to_str().unwrap(),
            "--tenant",
            &tenant,
            "--once",
        ],
        "PRODUCER__KAFKA__LIBRDKAFKA_OPTIONS__sasl.password",
        &s.password(LAKE_SINK_USER),
        &[("SECURED_TEST_PINGONE_SECRET", &secret)],
    )
    .await;
    assert!(
        !r.success,
        "the producer ran with the lake sink's user:\n{}",
        r.stderr
    );
    assert!(
        names_authorization(&r.stderr) && r.stderr.contains("pingone.raw.v1"),
        "the producer's error names the refusal and the topic:\n{}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);

    // The lake sink's user may not write the topics it reads.
    let p: FutureProducer = s.client(LAKE_SINK_USER).create().unwrap();
    let sent = p
        .send(
            FutureRecord::to("usage.users.v1").key("x").payload("y"),
            Duration::from_secs(20),
        )
        .await;
    assert!(
        matches!(
            &sent,
            Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
                _
            ))
        ),
        "writing usage.users.v1 as the lake sink: {:?}",
        sent.map_err(|(e, _)| e)
    );

    // The producer's user may not read (nor see) the normalized topics…
    let err = topic_error(&s, PRODUCER_USER, "usage.users.v1");
    assert_eq!(
        err,
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "reading usage.users.v1 as the producer"
    );
    // …which the lake sink's user may see.
    assert_eq!(topic_error(&s, LAKE_SINK_USER, "usage.users.v1"), None);
    // The lake sink's user may not read the raw topic.
    let err = topic_error(&s, LAKE_SINK_USER, "pingone.raw.v1");
    assert_eq!(
        err,
        Some(RDKafkaErrorCode::TopicAuthorizationFailed),
        "reading pingone.raw.v1 as the lake sink"
    );

    // The transformer's user may not take the producer's transactional ids.
    let mut config = s.client(TRANSFORMER_USER);
    config.set("transactional.id", "pingone-producer.0");
    let tp: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    let err = tp.init_transactions(Duration::from_secs(30)).unwrap_err();
    assert_eq!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed),
        "init_transactions as pingone-producer.0 with the transformer's user: {err}"
    );

    // The lake sink's user may not join the transformer's group.
    let mut config = s.client(LAKE_SINK_USER);
    config
        .set("group.id", "pingone-transformer")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().unwrap();
    consumer.subscribe(&["usage.users.v1"]).unwrap();
    let err = first_error(&consumer);
    assert_eq!(
        err,
        Some(RDKafkaErrorCode::GroupAuthorizationFailed),
        "joining group pingone-transformer as the lake sink"
    );

    // A wrong password is refused at authentication, and librdkafka says so.
    let consumer: BaseConsumer<ErrorLog> = s
        .client_with(LAKE_SINK_USER, "not-the-password")
        .create_with_context(ErrorLog::default())
        .unwrap();
    assert!(
        consumer
            .fetch_metadata(Some("usage.users.v1"), Duration::from_secs(15))
            .is_err(),
        "metadata with a wrong password"
    );
    // Errors reach the context when the client is polled.
    let deadline = Instant::now() + Duration::from_secs(15);
    while consumer.context().0.lock().unwrap().is_empty() && Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(200));
    }
    let errors = consumer.context().0.lock().unwrap().join("\n");
    assert!(
        errors.contains("Authentication failed"),
        "a wrong password's errors: {errors}"
    );
}

/// A client context that keeps the errors librdkafka reports.
#[derive(Default)]
struct ErrorLog(std::sync::Mutex<Vec<String>>);

impl ClientContext for ErrorLog {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for ErrorLog {}

/// The error the broker gives `user` for `topic` when asked for its metadata, as a reader is
/// before it fetches: a user without Describe on the topic cannot even see it.
fn topic_error(s: &Secured, user: &str, topic: &str) -> Option<RDKafkaErrorCode> {
    let consumer: BaseConsumer = s.client(user).create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(20))
        .unwrap();
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    t.error().map(RDKafkaErrorCode::from)
}

/// The first error `consumer` reports within 30 s.
fn first_error(consumer: &BaseConsumer) -> Option<RDKafkaErrorCode> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Err(e)) => return e.rdkafka_error_code(),
            Some(Ok(m)) => panic!("a record was read: {:?}", m.key()),
            None => {}
        }
    }
    None
}

/// `deploy/examples/kafka-*.toml`, the documented security settings, are taken by every binary's
/// `validate-config` (which asks librdkafka about each option), and a misspelt key is not.
#[test]
fn security_config_examples_validate_with_every_binary() {
    let dir = work_dir("security-examples");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    let tenant = "\n[[tenants]]\ntenant_id = \"acme\"\n\
        environment_id = \"6a0f2b9c-1d3e-4f5a-8b7c-9d0e1f2a3b4c\"\nregion = \"eu\"\n\
        client_id = \"c\"\nclient_secret_env = \"EXAMPLE_PINGONE_SECRET\"\n";
    let mut checked = 0;
    for name in ["kafka-sasl-scram.toml", "kafka-oauthbearer.toml"] {
        let text = std::fs::read_to_string(examples.join(name)).unwrap();
        for (text, valid) in [
            (text.clone(), true),
            (
                text.replacen("\"sasl.mechanisms\"", "\"sasl.mechanismz\"", 1),
                false,
            ),
        ] {
            for bin in ["producer", "transformer", "lake-sink"] {
                let path = dir.join(format!("{bin}-{valid}-{name}"));
                let body = if bin == "producer" {
                    format!("{text}{tenant}")
                } else {
                    text.clone()
                };
                std::fs::write(&path, body).unwrap();
                let prefix = bin.to_uppercase().replace('-', "_");
                let out = std::process::Command::new(e2e::binary(bin))
                    .args(["validate-config", "--config"])
                    .arg(&path)
                    .env("SCHEMA_REGISTRY_PASSWORD", "registry-password")
                    .env("EXAMPLE_PINGONE_SECRET", "pingone-secret")
                    .env(
                        format!("{prefix}__KAFKA__LIBRDKAFKA_OPTIONS__sasl.password"),
                        "kafka-password",
                    )
                    .env(
                        format!(
                            "{prefix}__KAFKA__LIBRDKAFKA_OPTIONS__sasl.oauthbearer.client.secret"
                        ),
                        "oidc-secret",
                    )
                    .output()
                    .unwrap();
                let all = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    out.status.success(),
                    valid,
                    "{bin} validate-config {name}:\n{all}"
                );
                if !valid {
                    assert!(all.contains("sasl.mechanismz"), "{bin} {name}: {all}");
                }
                for secret in [
                    "registry-password",
                    "pingone-secret",
                    "kafka-password",
                    "oidc-secret",
                ] {
                    assert!(!all.contains(secret), "{bin} printed a secret: {all}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12);
    let _ = std::fs::remove_dir_all(&dir);
}
