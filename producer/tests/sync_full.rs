//! Full snapshot syncs against the simulator, the real broker and the registry: the raw topic
//! holds exactly the simulator's truth between one `sync_started` and one `sync_completed`,
//! also when 429s, 5xx, token expiry and connection resets are injected.

mod common;

use pingone_sim::{FaultKind, FaultProfile, SimConfig, TenantSpec};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_equals_the_simulator_truth() {
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![TenantSpec::generated(
        "full", 1200, 11,
    )]))
    .await
    .expect("simulator");
    let t = sim.tenants()[0].clone();
    let names = common::Names::new("full");
    let text = format!(
        "{}{}",
        common::global_toml(&names, ""),
        common::tenant_toml(
            "acme",
            &t,
            "ACME_SECRET",
            "snapshot_pages_per_transaction = 3"
        )
    );
    let config = common::config_from(&text, &[("ACME_SECRET", t.client_secret.expose())]);
    let done = producer::sync_once(config, "acme", CancellationToken::new())
        .await
        .expect("sync completes");

    let records = common::read_raw(&names.raw_topic).await;
    assert_eq!(
        common::completed_sync_ids(&records, "acme"),
        vec![done.sync_id.clone()]
    );
    let contents = common::completed_sync_contents(&records, "acme", &done.sync_id);
    let truth = common::truth(&sim, &t.environment_id).await;
    common::assert_matches_truth(&contents, &truth);
    let r = &records[1];
    assert_eq!(r.event.environment_id, t.environment_id);
    assert_eq!(r.event.region, t.region);
    assert_eq!(r.event.producer_version, env!("CARGO_PKG_VERSION"));
    assert!(r.schema_id > 0 || records.iter().all(|x| x.schema_id == r.schema_id));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_do_not_change_the_content() {
    let mut spec = TenantSpec::generated("faulty", 800, 12);
    spec.token_ttl_secs = 3;
    spec.faults = FaultProfile {
        seed: 5,
        api_probability: 0.25,
        token_outage_probability: 0.2,
        kinds: vec![
            FaultKind::RateLimitSeconds {
                retry_after_secs: 1,
            },
            FaultKind::RateLimitHttpDate {
                retry_after_secs: 1,
            },
            FaultKind::ServerError { status: 500 },
            FaultKind::ServerError { status: 503 },
            FaultKind::ResetMidBody,
            FaultKind::ExpireToken,
        ],
    };
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![spec]))
        .await
        .expect("simulator");
    let t = sim.tenants()[0].clone();
    let names = common::Names::new("faults");
    let text = format!(
        "{}{}",
        common::global_toml(&names, ""),
        common::tenant_toml(
            "flaky",
            &t,
            "FLAKY_SECRET",
            "max_retries = 20\ndirectory_page_size = 100"
        )
    );
    let config = common::config_from(&text, &[("FLAKY_SECRET", t.client_secret.expose())]);
    let done = producer::sync_once(config, "flaky", CancellationToken::new())
        .await
        .expect("sync completes despite faults");
    let records = common::read_raw(&names.raw_topic).await;
    let contents = common::completed_sync_contents(&records, "flaky", &done.sync_id);
    // Faults are off for the truth dump.
    let fired = sim
        .admin(&t.environment_id)
        .clear_faults()
        .await
        .expect("clear faults");
    assert!(
        fired >= 5,
        "only {fired} faults fired: the test would prove nothing"
    );
    let truth = common::truth(&sim, &t.environment_id).await;
    common::assert_matches_truth(&contents, &truth);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_stored_cursor_abandons_the_sync_and_starts_a_new_one() {
    use producer::checkpoint::{
        CHECKPOINT_VERSION, Counts, InProgress, Phase, ScanPosition, SnapshotCheckpoint,
        snapshot_key,
    };
    let sim = pingone_sim::spawn(SimConfig::with_tenants(vec![TenantSpec::generated(
        "cursor", 300, 13,
    )]))
    .await
    .expect("simulator");
    let t = sim.tenants()[0].clone();
    let names = common::Names::new("cursor");
    let text = format!(
        "{}{}",
        common::global_toml(&names, ""),
        common::tenant_toml("curs", &t, "CURS_SECRET", "")
    );
    let config = common::config_from(&text, &[("CURS_SECRET", t.client_secret.expose())]);

    // A previous run left a sync in the users phase with a cursor PingOne no longer accepts.
    producer::kafka::ensure_topics(&config.kafka)
        .await
        .expect("topics");
    let schema_id = producer::kafka::register_raw_schema(&config.registry, &config.kafka.raw_topic)
        .await
        .expect("schema");
    let old_sync = "11111111-2222-4333-8444-555555555555";
    let started_at_ms = schemas::time::now_ms() - 1000;
    let mut position = ScanPosition::start().advance(None).advance(None);
    assert_eq!(position.phase, Phase::Users);
    position.cursor = Some(format!(
        "{}/environments/{}/users?limit=200&cursor=expired-cursor",
        t.api_base_url, t.environment_id
    ));
    let checkpoint = SnapshotCheckpoint {
        version: CHECKPOINT_VERSION,
        environment_id: t.environment_id.clone(),
        last_completed: None,
        in_progress: Some(InProgress {
            sync_id: old_sync.into(),
            started_at_ms,
            position,
            counts: Counts::default(),
        }),
    };
    let txn_id = format!("{}.curs.snapshot", names.txn_prefix);
    let mut writer = producer::kafka::TxnWriter::new(&config.kafka, txn_id)
        .await
        .expect("writer");
    writer.begin().await.expect("begin");
    let marker = schemas::raw::RawEvent {
        tenant_id: "curs".into(),
        environment_id: t.environment_id.clone(),
        region: t.region.clone(),
        kind: "sync_started".into(),
        entity_id: None,
        sync_id: Some(old_sync.into()),
        observed_at_ms: started_at_ms,
        payload: format!(r#"{{"sync_id":"{old_sync}"}}"#),
        producer_version: "test".into(),
    };
    let (marker, _) = producer::kafka::encode_event(schema_id, &marker).expect("encode");
    writer.send_encoded(&marker).await.expect("marker");
    writer
        .send_checkpoint(
            &snapshot_key("curs"),
            &serde_json::to_vec(&checkpoint).unwrap(),
        )
        .await
        .expect("checkpoint");
    writer.commit().await.expect("commit");
    drop(writer);

    let done = producer::sync_once(config, "curs", CancellationToken::new())
        .await
        .expect("a new sync completes");
    assert_ne!(done.sync_id, old_sync);
    let records = common::read_raw(&names.raw_topic).await;
    assert_eq!(
        common::completed_sync_ids(&records, "curs"),
        vec![done.sync_id.clone()]
    );
    assert!(
        records.iter().all(|r| r.event.sync_id.as_deref() != Some(old_sync) || r.event.kind == "sync_started"),
        "the abandoned sync gets nothing more, least of all a sync_completed"
    );
    let contents = common::completed_sync_contents(&records, "curs", &done.sync_id);
    common::assert_matches_truth(&contents, &common::truth(&sim, &t.environment_id).await);
    sim.shutdown().await;
}
