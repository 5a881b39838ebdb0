//! Operations: the transformer's Prometheus metrics and what its `/metrics` and `/readyz`
//! endpoints say (served by `pipeline_io::ops`).
//!
//! Labels stay bounded: topic names, partition numbers and [`crate::processor::Note`] labels,
//! never tenant ids or error text.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every metric of the transformer.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Raw events read (and committed) from the raw topic.
    pub consumed: Counter,
    /// Records written, by topic.
    pub produced: Family<Labels, Counter>,
    /// Raw events sent to the dead-letter topic, by reason kind (`oversized` counts the
    /// producer's markers for entities over the record limit).
    pub dead_lettered: Family<Labels, Counter>,
    /// Dead letters cut to the record limit, by reason kind.
    pub dead_letters_truncated: Family<Labels, Counter>,
    /// Outcomes of processed events that wrote nothing special (see `Note`).
    pub notes: Family<Labels, Counter>,
    /// Consumer lag of the raw topic, by partition (from librdkafka statistics).
    pub consumer_lag: Family<Labels, Gauge>,
    /// Committed transactions.
    pub transactions_committed: Counter,
    /// Aborted transactions.
    pub transactions_aborted: Counter,
    /// Restarts after transient failures.
    pub restarts: Counter,
    /// Raw partitions this instance owns in the consumer group.
    pub assigned_partitions: Gauge,
    /// Partitions assigned to or taken from this instance, by `change` (`assigned`, `revoked`,
    /// `lost`: revoked without a clean hand-over, such as after a session timeout).
    pub rebalanced_partitions: Family<Labels, Counter>,
    /// 1 while the brokers answer the probe ([`pipeline_io::kafka::probe`], every 5 s), 0 when
    /// they did not at the last probe.
    kafka_reachable: Gauge,
    ready: AtomicBool,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("transformer");
        let consumed = Counter::default();
        let produced = Family::<Labels, Counter>::default();
        let dead_lettered = Family::<Labels, Counter>::default();
        let dead_letters_truncated = Family::<Labels, Counter>::default();
        let notes = Family::<Labels, Counter>::default();
        let consumer_lag = Family::<Labels, Gauge>::default();
        let transactions_committed = Counter::default();
        let transactions_aborted = Counter::default();
        let restarts = Counter::default();
        let assigned_partitions = Gauge::default();
        let rebalanced_partitions = Family::<Labels, Counter>::default();
        let kafka_reachable = Gauge::default();
        kafka_reachable.set(1);
        registry.register(
            "consumed_records",
            "Raw events consumed and committed",
            consumed.clone(),
        );
        registry.register(
            "produced_records",
            "Records written per output topic",
            produced.clone(),
        );
        registry.register(
            "dead_lettered_records",
            "Raw events sent to the dead-letter topic",
            dead_lettered.clone(),
        );
        registry.register(
            "dead_letters_truncated",
            "Dead letters cut to the record limit (headers give the original size and SHA-256)",
            dead_letters_truncated.clone(),
        );
        registry.register(
            "event_outcomes",
            "Processed raw events by outcome",
            notes.clone(),
        );
        registry.register(
            "consumer_lag_records",
            "Raw topic consumer lag per partition",
            consumer_lag.clone(),
        );
        registry.register(
            "transactions_committed",
            "Kafka transactions committed",
            transactions_committed.clone(),
        );
        registry.register(
            "transactions_aborted",
            "Kafka transactions aborted",
            transactions_aborted.clone(),
        );
        registry.register(
            "restarts",
            "Restarts after transient failures",
            restarts.clone(),
        );
        registry.register(
            "assigned_partitions",
            "Raw topic partitions this instance owns in the consumer group",
            assigned_partitions.clone(),
        );
        registry.register(
            "rebalanced_partitions",
            "Raw topic partitions assigned, revoked or lost in rebalances",
            rebalanced_partitions.clone(),
        );
        registry.register(
            "kafka_reachable",
            "1 while the brokers answer a metadata request (every 5 s), 0 when they did not",
            kafka_reachable.clone(),
        );
        Self {
            registry,
            consumed,
            produced,
            dead_lettered,
            dead_letters_truncated,
            notes,
            consumer_lag,
            transactions_committed,
            transactions_aborted,
            restarts,
            assigned_partitions,
            rebalanced_partitions,
            kafka_reachable,
            ready: AtomicBool::new(false),
        }
    }

    /// One label pair.
    pub fn label(key: &str, value: &str) -> Labels {
        vec![(key.to_owned(), value.to_owned())]
    }

    /// Marks the transformer ready (state restored, loop running) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200: the loop is running and a broker is reachable.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.kafka_reachable()
    }

    /// Records whether the brokers answered the last probe.
    pub fn set_kafka_reachable(&self, ok: bool) {
        self.kafka_reachable.set(i64::from(ok));
    }

    /// Whether the brokers answered the last probe.
    pub fn kafka_reachable(&self) -> bool {
        self.kafka_reachable.get() == 1
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl pipeline_io::ops::Observable for Metrics {
    fn metrics(&self) -> String {
        self.render()
    }

    fn readiness(&self) -> Result<String, String> {
        if !self.kafka_reachable() {
            Err("kafka unreachable: no broker answered the last metadata request\n".into())
        } else if self.ready.load(Ordering::Relaxed) {
            Ok("ready\n".into())
        } else {
            Err("starting: state restore, or a restart after a failure\n".into())
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use pipeline_io::ops::Observable;

    use super::Metrics;

    #[test]
    fn readyz_needs_the_loop_running_and_a_broker_reachable() {
        let m = Metrics::new();
        assert!(m.readiness().is_err(), "not ready before the loop runs");
        m.set_ready(true);
        assert_eq!(m.readiness(), Ok("ready\n".to_owned()));
        m.set_kafka_reachable(false);
        let body = m.readiness().unwrap_err();
        assert!(body.starts_with("kafka unreachable"), "{body}");
        assert!(m.render().contains("transformer_kafka_reachable 0"));
        m.set_kafka_reachable(true);
        assert!(m.readiness().is_ok());
        assert!(m.render().contains("transformer_kafka_reachable 1"));
    }
}
