//! Operations: the sink's Prometheus metrics and what its `/readyz` says (served by
//! `pipeline_io::ops`). Labels are table names only.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every metric of the sink.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Rows committed, by table.
    pub rows: Family<Labels, Counter>,
    /// Rows whose value could not be decoded (written with `decode_error`), by table.
    pub undecodable: Family<Labels, Counter>,
    /// Data files committed, by table.
    pub files: Family<Labels, Counter>,
    /// Bytes of the data files committed, by table.
    pub bytes: Family<Labels, Counter>,
    /// Delta commits, by table.
    pub commits: Family<Labels, Counter>,
    /// Commits refused because another instance wrote the partition meanwhile, by table.
    pub stale_commits: Family<Labels, Counter>,
    /// Records in the topic not yet committed to the table, by table (assigned partitions).
    pub lag: Family<Labels, Gauge>,
    /// Partitions assigned to this instance.
    pub assigned_partitions: Gauge,
    /// Failures that stopped the work for a while (storage, registry, Kafka), by kind.
    pub failures: Family<Labels, Counter>,
    ready: AtomicBool,
    problem: Mutex<Option<String>>,
}

/// The label set of one table.
pub fn table(name: &str) -> Labels {
    vec![("table".to_owned(), name.to_owned())]
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lake_sink");
        let (rows, undecodable, files, bytes, commits, stale_commits) = Default::default();
        let (lag, assigned_partitions, failures) = Default::default();
        registry.register("rows", "Rows committed to the table", Family::clone(&rows));
        registry.register(
            "undecodable_rows",
            "Rows committed with a decode_error instead of field values",
            Family::clone(&undecodable),
        );
        registry.register("files", "Data files committed", Family::clone(&files));
        registry.register(
            "bytes",
            "Bytes of the data files committed",
            Family::clone(&bytes),
        );
        registry.register("commits", "Delta commits", Family::clone(&commits));
        registry.register(
            "stale_commits",
            "Commits refused because another instance had written the partition",
            Family::clone(&stale_commits),
        );
        registry.register(
            "lag_records",
            "Records of the assigned partitions not yet committed to the table",
            Family::clone(&lag),
        );
        registry.register(
            "assigned_partitions",
            "Topic partitions assigned to this instance",
            Gauge::clone(&assigned_partitions),
        );
        registry.register(
            "failures",
            "Failures that held the work up (storage, registry, kafka)",
            Family::clone(&failures),
        );
        Self {
            registry,
            rows,
            undecodable,
            files,
            bytes,
            commits,
            stale_commits,
            lag,
            assigned_partitions,
            failures,
            ready: AtomicBool::new(false),
            problem: Mutex::new(None),
        }
    }

    /// Work goes on: ready.
    pub fn working(&self) {
        self.ready.store(true, Ordering::Relaxed);
        if let Ok(mut p) = self.problem.lock() {
            *p = None;
        }
    }

    /// Work is held up by `problem` (counted under `kind`): not ready until it goes on.
    pub fn failing(&self, kind: &str, problem: String) {
        self.failures
            .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
            .inc();
        self.ready.store(false, Ordering::Relaxed);
        if let Ok(mut p) = self.problem.lock() {
            *p = Some(problem);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl pipeline_io::ops::Observable for Metrics {
    fn metrics(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn readiness(&self) -> Result<String, String> {
        if self.ready.load(Ordering::Relaxed) {
            return Ok("ready\n".into());
        }
        let problem = self.problem.lock().ok().and_then(|p| p.clone());
        Err(problem.map_or_else(
            || "starting: tables not open or no partition assigned yet\n".to_owned(),
            |p| format!("not ready: {p}\n"),
        ))
    }
}
