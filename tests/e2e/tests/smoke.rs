//! Smoke tests that prove the infrastructure is real: Kafka transactions as `read_committed`
//! consumers see them, Avro through the schema registry's wire format, and the registry's
//! compatibility checks. They need `eval "$(deploy/local/up)"` (or deploy/local/test) and fail
//! with that hint when the broker and registry are absent.

use std::time::Duration;

use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use schema_registry_converter::async_impl::easy_avro::{EasyAvroDecoder, EasyAvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::Serialize;
use test_harness::kafka::{REQUEST_TIMEOUT, client_config, transactional_producer_config};
use test_harness::registry::{Registration, RegistryClient};
use test_harness::{TopicOptions, consume_all, create_topic, unique_name};

type TxProducer = ThreadedProducer<DefaultProducerContext>;

const TX_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `(key, value)` pairs inside one transaction and commits or aborts it.
fn run_transaction(
    producer: &TxProducer,
    topic: &str,
    records: &[(&str, &str)],
    commit: bool,
) -> Result<(), String> {
    producer
        .begin_transaction()
        .map_err(|error| format!("begin: {error}"))?;
    for (key, value) in records {
        let headers = OwnedHeaders::new().insert(Header {
            key: "smoke-outcome",
            value: Some(if commit { "commit" } else { "abort" }),
        });
        producer
            .send(
                BaseRecord::to(topic)
                    .key(*key)
                    .payload(*value)
                    .headers(headers),
            )
            .map_err(|(error, _)| format!("send {key}: {error}"))?;
    }
    // Make sure the records to abort reached the log: the abort must hide written records.
    producer
        .flush(TX_TIMEOUT)
        .map_err(|error| format!("flush: {error}"))?;
    if commit {
        producer
            .commit_transaction(TX_TIMEOUT)
            .map_err(|error| format!("commit: {error}"))
    } else {
        producer
            .abort_transaction(TX_TIMEOUT)
            .map_err(|error| format!("abort: {error}"))
    }
}

/// Sum of the high watermarks of `topic` (records plus transaction markers ever written).
fn total_high_watermark(topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = client_config()
        .create()
        .expect("a metadata client can be created");
    (0..partitions)
        .map(|partition| {
            consumer
                .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                .map(|(_, high)| high)
                .expect("watermarks are readable")
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_exactly_the_committed_transactions() {
    test_harness::init_tracing();
    let topic = unique_name("smoke-tx");
    let partitions = 3;
    create_topic(&topic, &TopicOptions::new(partitions))
        .await
        .expect("topic is created");

    let producer_topic = topic.clone();
    tokio::task::spawn_blocking(move || {
        let producer: TxProducer = transactional_producer_config(&unique_name("smoke-tx-id"))
            .create()
            .expect("transactional producer is created");
        producer
            .init_transactions(TX_TIMEOUT)
            .expect("transactions are initialised (transaction state log usable)");
        run_transaction(
            &producer,
            &producer_topic,
            &[
                ("a", "committed-1"),
                ("b", "committed-2"),
                ("c", "committed-3"),
            ],
            true,
        )
        .expect("first transaction commits");
        run_transaction(
            &producer,
            &producer_topic,
            &[("a", "aborted-1"), ("d", "aborted-2")],
            false,
        )
        .expect("second transaction aborts");
        run_transaction(&producer, &producer_topic, &[("e", "committed-4")], true)
            .expect("third transaction commits");
    })
    .await
    .expect("producer task finishes");

    let records = consume_all(&topic).await.expect("topic is read to its end");
    let mut values: Vec<String> = records
        .iter()
        .map(|record| {
            String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned()
        })
        .collect();
    values.sort();
    assert_eq!(
        values,
        vec!["committed-1", "committed-2", "committed-3", "committed-4"],
        "read_committed must see the committed records once each and none of the aborted ones"
    );
    for record in &records {
        assert_eq!(
            record.header("smoke-outcome"),
            Some(&b"commit"[..]),
            "{record:?}"
        );
        assert!(record.key.is_some(), "{record:?}");
    }

    // The aborted records were really written: the logs hold 6 records plus one marker per
    // transaction and partition touched, so the offsets go past what read_committed returned.
    let written = total_high_watermark(&topic, partitions);
    assert!(
        written >= 6 + 3,
        "expected at least 6 records and 3 transaction markers in {topic}, high watermarks sum to {written}"
    );
}

/// The Avro record of the registry round trip.
#[derive(Debug, Serialize)]
struct SmokeUser {
    id: String,
    display_name: Option<String>,
    logins: i64,
    active: bool,
}

const SMOKE_USER_SCHEMA: &str = r#"{
  "type": "record",
  "name": "SmokeUser",
  "namespace": "io.github.idpusage.smoke",
  "fields": [
    {"name": "id", "type": "string"},
    {"name": "display_name", "type": ["null", "string"], "default": null},
    {"name": "logins", "type": "long"},
    {"name": "active", "type": "boolean"}
  ]
}"#;

/// `test_harness::kafka::wait_for_no_open_transaction` (what the fault soak waits on before its
/// checks) times out while a transaction is open on the topic, naming the partition, and returns
/// once it is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_no_open_transaction_sees_one_open() {
    test_harness::init_tracing();
    let topic = unique_name("smoke-open-tx");
    create_topic(&topic, &TopicOptions::new(1))
        .await
        .expect("topic is created");
    let open_topic = topic.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let producer: TxProducer = transactional_producer_config(&unique_name("smoke-open-tx-id"))
            .create()
            .expect("transactional producer is created");
        producer.init_transactions(TX_TIMEOUT).expect("init");
        producer.begin_transaction().expect("begin");
        producer
            .send(BaseRecord::to(&open_topic).key("k").payload("open"))
            .map_err(|(e, _)| e)
            .expect("send");
        producer.flush(TX_TIMEOUT).expect("flush");
        producer
    })
    .await
    .unwrap();

    let waited = test_harness::kafka::wait_for_no_open_transaction(&topic, Duration::from_secs(3))
        .await
        .expect_err("a transaction is open");
    assert!(
        waited
            .to_string()
            .contains("partitions [0] still have a transaction open"),
        "{waited}"
    );

    tokio::task::spawn_blocking(move || producer.commit_transaction(TX_TIMEOUT))
        .await
        .unwrap()
        .expect("commit");
    test_harness::kafka::wait_for_no_open_transaction(&topic, Duration::from_secs(30))
        .await
        .expect("no transaction open after the commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_value_round_trips_through_the_registry() {
    test_harness::init_tracing();
    let registry_url = test_harness::schema_registry_url();
    let topic = unique_name("smoke-avro");
    create_topic(&topic, &TopicOptions::new(1))
        .await
        .expect("topic is created");

    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.clone(),
        false,
        SuppliedSchema::new(
            Some("io.github.idpusage.smoke.SmokeUser".to_owned()),
            SchemaType::Avro,
            SMOKE_USER_SCHEMA.to_owned(),
        ),
    );
    let encoder = EasyAvroEncoder::new(SrSettings::new(registry_url.clone()));
    let user = SmokeUser {
        id: "user-42".to_owned(),
        display_name: Some("Ada Lovelace".to_owned()),
        logins: 1_234_567_890_123,
        active: true,
    };
    let payload = encoder
        .encode_struct(&user, &strategy)
        .await
        .expect("value is encoded and its schema registered");

    // Confluent wire format: magic byte 0, then the big-endian schema id the registry gave.
    let latest = RegistryClient::from_env()
        .expect("registry client")
        .latest(&format!("{topic}-value"))
        .await
        .expect("the subject exists after encoding");
    assert_eq!(payload.first(), Some(&0_u8), "magic byte");
    assert_eq!(
        payload.get(1..5),
        Some(&latest.id.to_be_bytes()[..]),
        "schema id in the wire format is the registered one"
    );

    let producer_topic = topic.clone();
    let produced = payload.clone();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> =
            test_harness::kafka::producer_config()
                .create()
                .expect("producer is created");
        producer
            .send(
                BaseRecord::to(&producer_topic)
                    .key("user-42")
                    .payload(&produced),
            )
            .map_err(|(error, _)| error)
            .expect("record is queued");
        producer.flush(TX_TIMEOUT).expect("record is delivered");
    })
    .await
    .expect("producer task finishes");

    let records = consume_all(&topic).await.expect("topic is read to its end");
    assert_eq!(records.len(), 1, "{records:?}");
    let read = records[0].value.as_deref();
    assert_eq!(read, Some(payload.as_slice()), "bytes survive the broker");

    // A fresh decoder (empty cache) must fetch the schema by id from the registry.
    let decoder = EasyAvroDecoder::new(SrSettings::new(registry_url));
    let decoded = decoder
        .decode(read)
        .await
        .expect("value decodes via the registry");
    let Value::Record(fields) = decoded.value else {
        panic!("expected an Avro record, got {:?}", decoded.value);
    };
    assert_eq!(
        fields,
        vec![
            ("id".to_owned(), Value::String("user-42".to_owned())),
            (
                "display_name".to_owned(),
                Value::Union(1, Box::new(Value::String("Ada Lovelace".to_owned())))
            ),
            ("logins".to_owned(), Value::Long(1_234_567_890_123)),
            ("active".to_owned(), Value::Boolean(true)),
        ]
    );
}

fn user_schema(extra_fields: &str) -> String {
    format!(
        r#"{{"type":"record","name":"CompatUser","namespace":"io.github.idpusage.smoke","fields":[{{"name":"id","type":"string"}}{extra_fields}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backward_transitive_rejects_incompatible_and_accepts_compatible_schemas() {
    test_harness::init_tracing();
    let registry = RegistryClient::from_env().expect("registry client");
    let subject = format!("{}-value", unique_name("smoke-compat"));

    // v1: id only. The level is set on the subject before any schema, as the project does.
    registry
        .set_subject_compatibility(&subject, "BACKWARD_TRANSITIVE")
        .await
        .expect("compatibility is set");
    assert_eq!(
        registry
            .subject_compatibility(&subject)
            .await
            .expect("level is readable"),
        "BACKWARD_TRANSITIVE"
    );
    let v1 = registry
        .register_avro(&subject, &user_schema(""))
        .await
        .expect("registry answers");
    assert!(matches!(v1, Registration::Registered { .. }), "v1: {v1:?}");

    // v2 adds an optional field with a default: readers of v2 can read v1 data.
    let v2 = registry
        .register_avro(
            &subject,
            &user_schema(r#",{"name":"email","type":["null","string"],"default":null}"#),
        )
        .await
        .expect("registry answers");
    assert!(matches!(v2, Registration::Registered { .. }), "v2: {v2:?}");

    // A required field without a default cannot read older data: rejected.
    let required = registry
        .register_avro(
            &subject,
            &user_schema(
                r#",{"name":"email","type":["null","string"],"default":null},{"name":"age","type":"int"}"#,
            ),
        )
        .await
        .expect("registry answers");
    assert!(
        matches!(required, Registration::Rejected { status: 409, .. }),
        "a new required field must be rejected: {required:?}"
    );

    // `email` without a default plus a new optional `phone` reads v2 data (which has `email`)
    // but not v1 data: only the transitive check against every earlier version catches it.
    // (Changing only a default is no new schema for Apicurio with canonical hashing: the Avro
    // canonical form drops defaults, so the registry answers with the existing id instead.)
    let transitive_only_schema = user_schema(
        r#",{"name":"email","type":["null","string"]},{"name":"phone","type":["null","string"],"default":null}"#,
    );
    let transitive_only = registry
        .register_avro(&subject, &transitive_only_schema)
        .await
        .expect("registry answers");
    assert!(
        matches!(transitive_only, Registration::Rejected { status: 409, .. }),
        "a schema that cannot read v1 data must be rejected under BACKWARD_TRANSITIVE: {transitive_only:?}"
    );

    // Another compatible change is still accepted after the rejections.
    let v3 = registry
        .register_avro(
            &subject,
            &user_schema(
                r#",{"name":"email","type":["null","string"],"default":null},{"name":"team","type":"string","default":"none"}"#,
            ),
        )
        .await
        .expect("registry answers");
    assert!(matches!(v3, Registration::Registered { .. }), "v3: {v3:?}");

    assert_eq!(
        registry
            .versions(&subject)
            .await
            .expect("versions are listed"),
        vec![1, 2, 3],
        "rejected schemas must not become versions"
    );
}
