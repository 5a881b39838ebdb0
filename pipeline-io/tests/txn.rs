//! `TxnSession` against the local broker: the records of committed transactions are visible
//! once each; a record the broker refuses fails its commit with the delivery's error and leaves
//! nothing of its transaction visible, and the session goes on with the next transaction.

use std::time::Duration;

use pipeline_io::kafka::{ClientSettings, TxnSession, TxnSettings};
use test_harness::kafka::{TopicOptions, committed_keys, consume_all, create_topic};
use test_harness::{kafka_bootstrap, unique_name};

async fn session() -> TxnSession {
    let mut client = ClientSettings::new(kafka_bootstrap(), "txn-test");
    client.timeout = Duration::from_secs(30);
    TxnSession::open(&client, &TxnSettings::new(unique_name("txn-test")))
        .await
        .expect("transactional producer")
}

/// Bytes that lz4 cannot shrink (xorshift).
fn incompressible(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
async fn committed_transactions_are_each_visible_once() {
    let topic = unique_name("txn-all");
    create_topic(&topic, &TopicOptions::new(3)).await.unwrap();
    let mut s = session().await;
    for t in 0..2 {
        s.begin().await.unwrap();
        for i in 0..5_000 {
            let key = format!("k{t}-{i}");
            s.send(&topic, key.as_bytes(), Some(b"v"), None)
                .await
                .unwrap();
        }
        s.commit().await.unwrap();
    }
    let records = consume_all(&topic).await.unwrap();
    assert_eq!(records.len(), 10_000);
    let mut keys: Vec<_> = records.iter().filter_map(|r| r.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 10_000, "every record once");
}

#[tokio::test]
async fn a_record_the_broker_refuses_fails_its_commit_and_the_next_transaction_commits() {
    let topic = unique_name("txn-refused");
    // The broker refuses batches over 4 KB; the client would send up to 1 MB.
    create_topic(
        &topic,
        &TopicOptions::new(1).with_config("max.message.bytes", "4096"),
    )
    .await
    .unwrap();
    let mut s = session().await;
    s.begin().await.unwrap();
    s.send(&topic, b"small-1", Some(b"v"), None).await.unwrap();
    s.send(&topic, b"large", Some(&incompressible(20_000)), None)
        .await
        .unwrap();
    s.send(&topic, b"small-2", Some(b"v"), None).await.unwrap();
    let error = s
        .commit()
        .await
        .expect_err("a refused record fails the commit");
    let text = pipeline_io::error_text(&error);
    assert!(text.contains("delivering a record"), "{text}");
    assert!(!s.is_open(), "the failed transaction is aborted");

    // The session goes on, as the pipeline's writers do: they write the transaction again.
    // librdkafka fails the first one after a refused record too ("skipped sequence numbers",
    // which needs the producer epoch bumped by that abort); a failure of an aborted
    // transaction is never taken for a later one's.
    let mut attempts = 0;
    loop {
        attempts += 1;
        s.begin().await.unwrap();
        for key in [&b"after-1"[..], b"after-2"] {
            s.send(&topic, key, Some(b"v"), None).await.unwrap();
        }
        match s.commit().await {
            Ok(()) => break,
            Err(e) if attempts < 3 => eprintln!("attempt {attempts}: {e}"),
            Err(e) => panic!("no commit after a refused record: {e}"),
        }
    }
    let keys = committed_keys(&topic).await.unwrap();
    assert_eq!(keys, vec![b"after-1".to_vec(), b"after-2".to_vec()]);
}
