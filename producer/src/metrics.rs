//! Prometheus metrics of the producer: one [`Metrics`] shared by every tenant task.
//!
//! Labels stay bounded: the tenant id and small fixed vocabularies (entity kind, error kind,
//! retry reason). Never a URL, an error text or a secret.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the producer exports, cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    pages: Family<Labels, Counter>,
    entities: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    token_renewals: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    transactions: Family<Labels, Counter>,
    sync_duration: Family<Labels, Histogram>,
    last_sync: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    last_success: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    healthy: Family<Labels, Gauge>,
    oversized: Family<Labels, Counter>,
    kafka_reachable: Gauge,
    owned_partitions: Gauge,
    running_tenants: Gauge,
    /// Whether each (tenant, stream)'s last outcome was a success; a tenant is healthy when
    /// none of its streams last failed.
    streams: Mutex<BTreeMap<(String, &'static str), bool>>,
    kafka_ok: AtomicBool,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("producer");
        let pages = Family::<Labels, Counter>::default();
        let entities = Family::<Labels, Counter>::default();
        let retries = Family::<Labels, Counter>::default();
        let rate_limited = Family::<Labels, Counter>::default();
        let token_renewals = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let transactions = Family::<Labels, Counter>::default();
        let sync_duration =
            Family::<Labels, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        let last_sync = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let healthy = Family::<Labels, Gauge>::default();
        let last_success = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let oversized = Family::<Labels, Counter>::default();
        let kafka_reachable = Gauge::default();
        kafka_reachable.set(1);
        let owned_partitions = Gauge::default();
        let running_tenants = Gauge::default();
        registry.register(
            "owned_partitions",
            "Tenant partitions (or file slots) this instance writes, one transactional producer each",
            owned_partitions.clone(),
        );
        registry.register(
            "running_tenants",
            "Tenants whose streams run in this instance",
            running_tenants.clone(),
        );
        registry.register("pages", "PingOne pages read", pages.clone());
        registry.register("entities", "Raw events written, by kind", entities.clone());
        registry.register(
            "http_retries",
            "PingOne requests retried, by reason",
            retries.clone(),
        );
        registry.register("http_429", "PingOne 429 responses", rate_limited.clone());
        registry.register(
            "token_renewals",
            "Access tokens obtained",
            token_renewals.clone(),
        );
        registry.register("errors", "Errors, by kind", errors.clone());
        registry.register(
            "transactions",
            "Kafka transactions, by outcome",
            transactions.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "Duration of completed snapshot syncs",
            sync_duration.clone(),
        );
        registry.register(
            "last_successful_sync_timestamp_seconds",
            "Unix time of the last completed snapshot sync",
            last_sync.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of each tenant stream's last success: a completed snapshot sync, a committed activity poll",
            last_success.clone(),
        );
        registry.register(
            "tenant_healthy",
            "1 until one of the tenant's streams fails (sync, poll, invalid_client), 0 from then until it succeeds again",
            healthy.clone(),
        );
        registry.register(
            "oversized_entities",
            "Entities and activities over the record limit, written as oversized markers",
            oversized.clone(),
        );
        registry.register(
            "kafka_reachable",
            "Whether Kafka was reachable at the last contact: set to 0 when a stream fails on it, to 1 when a stream reaches it",
            kafka_reachable.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                pages,
                entities,
                retries,
                rate_limited,
                token_renewals,
                errors,
                transactions,
                sync_duration,
                last_sync,
                last_success,
                healthy,
                oversized,
                kafka_reachable,
                owned_partitions,
                running_tenants,
                streams: Mutex::new(BTreeMap::new()),
                kafka_ok: AtomicBool::new(true),
            }),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }

    /// A page of `collection` was read.
    pub fn page(&self, tenant: &str, collection: &str) {
        self.inner
            .pages
            .get_or_create(&vec![
                ("tenant", tenant.into()),
                ("collection", collection.into()),
            ])
            .inc();
    }

    /// `n` raw events of `kind` were committed.
    pub fn entities(&self, tenant: &str, kind: &str, n: u64) {
        self.inner
            .entities
            .get_or_create(&vec![("tenant", tenant.into()), ("kind", kind.into())])
            .inc_by(n);
    }

    /// A request is retried for `reason` (`429`, `5xx`, `408`, `transport`, `body`, `token`).
    pub fn retry(&self, tenant: &str, reason: &'static str) {
        self.inner
            .retries
            .get_or_create(&vec![("tenant", tenant.into()), ("reason", reason.into())])
            .inc();
        if reason == "429" {
            self.inner
                .rate_limited
                .get_or_create(&vec![("tenant", tenant.into())])
                .inc();
        }
    }

    /// A token was obtained.
    pub fn token_renewal(&self, tenant: &str) {
        self.inner
            .token_renewals
            .get_or_create(&vec![("tenant", tenant.into())])
            .inc();
    }

    /// An error of `kind` happened.
    pub fn error(&self, tenant: &str, kind: &'static str) {
        self.inner
            .errors
            .get_or_create(&vec![("tenant", tenant.into()), ("kind", kind.into())])
            .inc();
    }

    /// A transaction of `stream` ended with `outcome` (`committed`, `aborted`).
    pub fn transaction(&self, tenant: &str, stream: &'static str, outcome: &'static str) {
        self.inner
            .transactions
            .get_or_create(&vec![
                ("tenant", tenant.into()),
                ("stream", stream.into()),
                ("outcome", outcome.into()),
            ])
            .inc();
    }

    /// A sync completed after `seconds`, at Unix time `at_s`.
    pub fn sync_completed(&self, tenant: &str, seconds: f64, at_s: f64) {
        let labels = vec![("tenant", tenant.into())];
        self.inner
            .sync_duration
            .get_or_create(&labels)
            .observe(seconds);
        self.inner.last_sync.get_or_create(&labels).set(at_s);
    }

    /// Registers a tenant as healthy before its streams have run.
    pub fn add_tenant(&self, tenant: &str) {
        for stream in ["snapshot", "activity"] {
            self.set_stream(tenant, stream, true);
        }
    }

    /// A tenant that should run cannot (its partition's writer cannot open): unhealthy.
    pub fn tenant_waiting(&self, tenant: &str) {
        for stream in ["snapshot", "activity"] {
            self.set_stream(tenant, stream, false);
        }
    }

    /// This instance started (`+1`) or stopped (`-1`) running a tenant.
    pub fn running_tenants(&self, delta: i64) {
        self.inner.running_tenants.inc_by(delta);
    }

    /// A tenant is no longer this instance's (removed, or its partition moved to another
    /// instance): it no longer counts for `/readyz`, and its health gauge is dropped.
    pub fn remove_tenant(&self, tenant: &str) {
        let mut streams = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.retain(|(t, _), _| t != tenant);
        self.inner
            .healthy
            .remove(&vec![("tenant", tenant.to_owned())]);
    }

    /// This instance took (`+1`) or gave up (`-1`) a tenant partition.
    pub fn owned_partitions(&self, delta: i64) {
        self.inner.owned_partitions.inc_by(delta);
    }

    fn set_stream(&self, tenant: &str, stream: &'static str, ok: bool) {
        let mut streams = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.insert((tenant.to_owned(), stream), ok);
        let healthy = streams
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .all(|(_, ok)| *ok);
        self.inner
            .healthy
            .get_or_create(&vec![("tenant", tenant.into())])
            .set(i64::from(healthy));
    }

    /// A stream of the tenant succeeded (a sync completed, a poll committed) at Unix time `at_s`.
    pub fn stream_succeeded(&self, tenant: &str, stream: &'static str, at_s: f64) {
        self.set_stream(tenant, stream, true);
        self.inner
            .last_success
            .get_or_create(&vec![("tenant", tenant.into()), ("stream", stream.into())])
            .set(at_s);
        self.set_kafka_reachable(true);
    }

    /// A stream of the tenant failed: the tenant is unhealthy until that stream succeeds again.
    pub fn stream_failed(&self, tenant: &str, stream: &'static str) {
        self.set_stream(tenant, stream, false);
    }

    /// Whether any tenant is healthy, or none runs here (`/readyz`: an instance of a group that
    /// owns no tenant is a ready standby).
    pub fn any_tenant_healthy(&self) -> bool {
        let streams = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if streams.is_empty() {
            return true;
        }
        let mut tenants: BTreeMap<&str, bool> = BTreeMap::new();
        for ((tenant, _), ok) in streams.iter() {
            *tenants.entry(tenant.as_str()).or_insert(true) &= *ok;
        }
        tenants.values().any(|ok| *ok)
    }

    /// Kafka was reached (`true`), or a stream failed on it (`false`).
    pub fn set_kafka_reachable(&self, ok: bool) {
        self.inner.kafka_ok.store(ok, Ordering::Relaxed);
        self.inner.kafka_reachable.set(i64::from(ok));
    }

    /// Whether Kafka was reachable at the last contact (`/readyz`).
    pub fn kafka_reachable(&self) -> bool {
        self.inner.kafka_ok.load(Ordering::Relaxed)
    }

    /// An entity of `kind` was over the record limit and written as an `oversized` marker.
    pub fn oversized(&self, tenant: &str, kind: &str) {
        self.inner
            .oversized
            .get_or_create(&vec![("tenant", tenant.into()), ("kind", kind.into())])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_tenant_labels() {
        let m = Metrics::new();
        m.page("acme", "users");
        m.entities("acme", "user", 200);
        m.retry("acme", "429");
        m.sync_completed("acme", 3.0, 1_795_000_000.0);
        let text = m.render();
        assert!(
            text.contains(r#"producer_pages_total{tenant="acme",collection="users"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"producer_entities_total{tenant="acme",kind="user"} 200"#),
            "{text}"
        );
        assert!(
            text.contains(r#"producer_http_429_total{tenant="acme"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                "producer_last_successful_sync_timestamp_seconds{tenant=\"acme\"} 1795000000"
            ),
            "{text}"
        );
    }
}
