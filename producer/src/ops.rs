//! What the producer tells its operations endpoints (`pipeline_io::ops`): `/metrics` renders
//! [`Metrics`]; `/readyz` is 200 once topics exist and the raw schema is registered, while Kafka
//! was reachable at the last contact and at least one tenant is healthy, 503 otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pipeline_io::ops::Observable;

use crate::metrics::Metrics;

/// State shared with the operations endpoints.
#[derive(Debug, Clone)]
pub struct OpsState {
    /// Metrics to render.
    pub metrics: Metrics,
    /// Set once the producer can write.
    pub ready: Arc<AtomicBool>,
}

impl Observable for OpsState {
    fn metrics(&self) -> String {
        self.metrics.render()
    }

    fn readiness(&self) -> Result<String, String> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("starting: topics and the raw schema are not set up yet\n".into());
        }
        if !self.metrics.kafka_reachable() {
            return Err("kafka unreachable: a stream failed on the broker\n".into());
        }
        if !self.metrics.any_tenant_healthy() {
            return Err("no tenant healthy: every tenant's last sync or poll failed\n".into());
        }
        Ok("ready\n".into())
    }
}
