//! What the producer tells its operations endpoints (`pipeline_io::ops`): `/metrics` renders
//! [`Metrics`], `/readyz` is 200 once topics exist and the raw schema is registered.

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
        if self.ready.load(Ordering::Relaxed) {
            Ok("ready\n".into())
        } else {
            Err("starting\n".into())
        }
    }
}
