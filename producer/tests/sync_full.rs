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

    let records = common::read_raw(&names.raw_topic);
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
    let records = common::read_raw(&names.raw_topic);
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
