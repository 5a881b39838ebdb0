//! The transactional writer and the checkpoint reader against the real broker: committed
//! checkpoints are read back (the latest per key), aborted ones never are, and a new writer with
//! the same transactional id fences the old one; another stream's open transaction never makes
//! the reader return an older checkpoint; the watermarks the readers start from are answered
//! for partitions created a moment before.

mod common;

use std::time::Duration;

use producer::config::KafkaConfig;
use producer::kafka::{TxnWriter, ensure_topics, read_checkpoint};

fn kafka_config(prefix: &str) -> KafkaConfig {
    KafkaConfig {
        client: pipeline_io::kafka::ClientSettings::new(common::kafka_bootstrap(), "producer-test"),
        raw_topic: common::unique("raw"),
        checkpoint_topic: common::unique("ckpt"),
        transactional_id_prefix: prefix.into(),
        transaction_timeout: Duration::from_secs(30),
        message_timeout: Duration::from_secs(20),
        compression_type: "lz4".into(),
        create_topics: true,
        topic_partitions: 2,
        topic_replication_factor: 1,
        tenant_source: producer::config::TenantSource::File,
        tenants_topic: common::unique("tenants"),
        tenant_partitions: 6,
        group_id: prefix.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_committed_checkpoint_wins_and_aborted_ones_are_invisible() {
    let kafka = kafka_config(&common::unique("txn"));
    ensure_topics(&kafka).await.unwrap();
    let mut w = TxnWriter::new(&kafka, common::unique("t")).await.unwrap();
    for i in 0..3 {
        w.begin().await.unwrap();
        w.send_checkpoint("a/snapshot", format!("{{\"n\":{i}}}").as_bytes())
            .await
            .unwrap();
        w.commit().await.unwrap();
    }
    w.begin().await.unwrap();
    w.send_checkpoint("a/snapshot", b"{\"n\":99}")
        .await
        .unwrap();
    w.send_checkpoint("b/snapshot", b"{\"n\":99}")
        .await
        .unwrap();
    w.abort().await;

    assert_eq!(
        read_checkpoint(&kafka, "a/snapshot")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"{\"n\":2}"[..])
    );
    assert_eq!(read_checkpoint(&kafka, "b/snapshot").await.unwrap(), None);
}

/// Every stream writes its checkpoints to one topic. Under `read_committed`, a transaction of
/// another stream left open on the partition hides everything committed there after it began:
/// a reader that stopped there would return this stream's older checkpoint, and the stream would
/// write its pages again. `read_checkpoint` waits until that transaction ends (here, committed
/// 2 s later) and returns the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_streams_open_transaction_never_yields_an_older_checkpoint() {
    let mut kafka = kafka_config(&common::unique("txn"));
    kafka.topic_partitions = 1;
    ensure_topics(&kafka).await.unwrap();
    let mut mine = TxnWriter::new(&kafka, common::unique("mine"))
        .await
        .unwrap();
    mine.begin().await.unwrap();
    mine.send_checkpoint("a/snapshot", b"old").await.unwrap();
    mine.commit().await.unwrap();
    let mut other = TxnWriter::new(&kafka, common::unique("other"))
        .await
        .unwrap();
    other.begin().await.unwrap();
    other.send_checkpoint("b/activity", b"open").await.unwrap();
    mine.begin().await.unwrap();
    mine.send_checkpoint("a/snapshot", b"new").await.unwrap();
    mine.commit().await.unwrap();
    let settle = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        other.commit().await.unwrap();
    });
    assert_eq!(
        read_checkpoint(&kafka, "a/snapshot")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"new"[..]),
        "the checkpoint committed after the other stream's transaction began"
    );
    settle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_fences_the_old_one_and_its_open_transaction_is_discarded() {
    let kafka = kafka_config(&common::unique("txn"));
    ensure_topics(&kafka).await.unwrap();
    let id = common::unique("t");
    let mut old = TxnWriter::new(&kafka, id.clone()).await.unwrap();
    old.begin().await.unwrap();
    old.send_checkpoint("a/activity", b"old-open")
        .await
        .unwrap();
    // The old instance "dies" with its transaction open; a new one starts.
    let mut new = TxnWriter::new(&kafka, id).await.unwrap();
    assert!(
        old.commit().await.is_err(),
        "a fenced writer must not commit"
    );
    new.begin().await.unwrap();
    new.send_checkpoint("a/activity", b"new").await.unwrap();
    new.commit().await.unwrap();
    assert_eq!(
        read_checkpoint(&kafka, "a/activity")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"new"[..])
    );
}

/// Right after a topic is created, the broker can name a leader in its metadata before the
/// leader serves the partition: a raw `ListOffsets` then fails with `NotLeaderForPartition`
/// (2 of 120 fresh partitions here; a CI run's `tenants add` failed so). The watermarks every
/// binary asks for are answered anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_of_fresh_topics_are_answered() {
    use pipeline_io::kafka::{ClientSettings, TopicSpec};
    use rdkafka::consumer::BaseConsumer;

    let settings = ClientSettings::new(common::kafka_bootstrap(), "producer-test")
        .with_timeout(Duration::from_secs(10));
    let consumer: BaseConsumer = settings.client_config().create().unwrap();
    let mut failed = Vec::new();
    for _ in 0..30 {
        let name = common::unique("fresh");
        pipeline_io::kafka::ensure_topics(&settings, &[TopicSpec::new(&name, 6, 1)])
            .await
            .unwrap();
        for p in 0..6 {
            match pipeline_io::kafka::fetch_watermarks(&consumer, &name, p, settings.timeout) {
                Ok(marks) => assert_eq!(marks, (0, 0), "{name}/{p}"),
                Err(e) => failed.push(format!("{name}/{p}: {e}")),
            }
        }
    }
    assert!(failed.is_empty(), "watermarks not answered: {failed:#?}");
}
