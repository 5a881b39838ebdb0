//! Whether the brokers answer, asked on a client of its own: a metadata request for one topic
//! every period, whatever the pipeline's own clients are doing.
//!
//! Why not the pipeline's clients: a consumer's statistics and error events arrive only while it
//! is polled, and a loop waiting on deliveries or a commit polls nothing. Judged from those, a
//! transformer could answer `/readyz` 200 for the whole of a broker outage.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, Producer};
use tokio_util::sync::CancellationToken;

use super::{ClientSettings, KafkaCallError, OffRuntimeDrop, ctx, off_runtime};

/// How often the brokers are asked (and the bound on one answer, at most the client timeout).
pub const PROBE_PERIOD: Duration = Duration::from_secs(5);

/// Asks the brokers for the metadata of `topic` every `period` until `shutdown`, and passes each
/// outcome to `report`: `Ok` when a broker answered within `period` (or the client timeout, if
/// shorter). A topic that does not exist still gets an answer.
///
/// # Errors
/// Only when the probe's client cannot be created (invalid client options).
pub async fn watch_brokers(
    settings: &ClientSettings,
    topic: &str,
    period: Duration,
    shutdown: &CancellationToken,
    mut report: impl FnMut(Result<(), KafkaCallError>),
) -> Result<(), KafkaCallError> {
    // A producer that never produces: its polling thread serves the client's events.
    let client: OffRuntimeDrop<FutureProducer> = OffRuntimeDrop::new(
        settings
            .client_config()
            .create()
            .map_err(ctx("creating the broker probe"))?,
    );
    let timeout = period.min(settings.timeout);
    loop {
        let (c, t) = ((*client).clone(), topic.to_owned());
        let answer = off_runtime(
            format!("asking {} for metadata", settings.bootstrap_servers),
            move || c.client().fetch_metadata(Some(&t), timeout).map(|_| ()),
        );
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            outcome = answer => report(outcome),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_with_no_broker_is_reported_unreachable() {
        // Nothing listens on a port just bound and released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = ClientSettings::new(format!("127.0.0.1:{port}"), "probe-test")
            .with_timeout(Duration::from_secs(1));
        let shutdown = CancellationToken::new();
        let mut outcomes = Vec::new();
        let stop = shutdown.clone();
        watch_brokers(
            &settings,
            "any",
            Duration::from_millis(200),
            &shutdown,
            |o| {
                outcomes.push(o.map_err(|e| e.to_string()));
                if outcomes.len() == 2 {
                    stop.cancel();
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(outcomes.len(), 2);
        for o in &outcomes {
            let e = o.as_ref().unwrap_err();
            assert!(
                e.contains(&format!("asking 127.0.0.1:{port} for metadata")),
                "{e}"
            );
        }
    }
}
