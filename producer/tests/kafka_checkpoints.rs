//! The transactional writer and the checkpoint reader against the real broker: committed
//! checkpoints are read back (the latest per key), aborted ones never are, and a new writer with
//! the same transactional id fences the old one.

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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_committed_checkpoint_wins_and_aborted_ones_are_invisible() {
    let kafka = kafka_config(&common::unique("txn"));
    ensure_topics(&kafka).await.unwrap();
    let mut w = TxnWriter::new(&kafka, common::unique("t"), 1)
        .await
        .unwrap();
    for i in 0..3 {
        w.begin().unwrap();
        w.send_checkpoint("a/snapshot", format!("{{\"n\":{i}}}").as_bytes())
            .await
            .unwrap();
        w.commit().await.unwrap();
    }
    w.begin().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_fences_the_old_one_and_its_open_transaction_is_discarded() {
    let kafka = kafka_config(&common::unique("txn"));
    ensure_topics(&kafka).await.unwrap();
    let id = common::unique("t");
    let mut old = TxnWriter::new(&kafka, id.clone(), 1).await.unwrap();
    old.begin().unwrap();
    old.send_checkpoint("a/activity", b"old-open")
        .await
        .unwrap();
    // The old instance "dies" with its transaction open; a new one starts.
    let mut new = TxnWriter::new(&kafka, id, 1).await.unwrap();
    assert!(
        old.commit().await.is_err(),
        "a fenced writer must not commit"
    );
    new.begin().unwrap();
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
