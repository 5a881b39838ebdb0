//! One tenant partition run by this process: its writer ([`crate::writer`]) and the snapshot and
//! activity streams of each of its tenants ([`crate::tenant`]).
//!
//! The partition's tenants arrive as [`TenantChange`]s: all at once from the configuration
//! file, or one record at a time from the tenants topic, including while running. An added
//! tenant starts at once; a changed one is stopped (its commit in flight, if any, finishes
//! first) and started again with its new settings; a removed one stops. Each resumes from the
//! checkpoints its partition's writer holds.
//!
//! When the writer ends (fenced, or its producer failed), every tenant of the partition stops and
//! the writer is opened again after a backoff; opening it fences whoever wrote meanwhile and
//! reads the checkpoints back, so each tenant resumes from what was committed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaConfig, TenantConfig};
use crate::kafka::SinkError;
use crate::metrics::Metrics;
use crate::pingone::Client;
use crate::stream::StreamContext;
use crate::tenant::{StreamKind, supervise};
use crate::writer::{self, Budget, SlotHandle};

/// First wait before reopening a partition's writer; doubles up to [`MAX_REOPEN_BACKOFF`].
const FIRST_REOPEN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait before reopening a partition's writer.
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(30);

/// Least wait before reopening a fenced writer: longer than a session timeout (10 s), so that an
/// instance that lost its partition hears of it from the group first.
const FENCED_BACKOFF: Duration = Duration::from_secs(15);

/// How long a writer must have run for its failure to count as a new one.
const STEADY: Duration = Duration::from_secs(60);

/// A change to the tenants of a partition.
#[derive(Debug)]
pub enum TenantChange {
    /// Run this tenant (again, if it runs): added or changed.
    Upsert(Box<TenantConfig>),
    /// Stop this tenant.
    Remove(String),
}

/// What every partition of a process shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Kafka settings.
    pub kafka: Arc<KafkaConfig>,
    /// How many partitions (slots) tenant ids hash into.
    pub slots: i32,
    /// Registered id of the raw event schema.
    pub schema_id: u32,
    /// Metrics.
    pub metrics: Metrics,
    /// Memory bound on pages read and not yet committed.
    pub budget: Budget,
}

/// A tenant whose streams run.
#[derive(Debug)]
struct RunningTenant {
    id: String,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl RunningTenant {
    /// Stops the streams and waits for them: a commit in flight ends first.
    async fn stop(mut self, metrics: &Metrics) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        metrics.running_tenants(-1);
        tracing::info!(tenant = %self.id, "tenant stopped");
    }
}

fn start(
    shared: &Shared,
    handle: &SlotHandle,
    tenant: &Arc<TenantConfig>,
    parent: &CancellationToken,
) -> Option<RunningTenant> {
    let cancel = parent.child_token();
    let id = tenant.tenant_id.clone();
    let client = match Client::new(tenant, shared.metrics.clone(), cancel.clone()) {
        Ok(c) => c,
        Err(e) => {
            shared.metrics.error(&id, "client");
            tracing::error!(tenant = %id, error = %e, "tenant's PingOne client cannot be built; tenant not started");
            return None;
        }
    };
    let ctx = StreamContext {
        tenant: Arc::clone(tenant),
        writer: handle.clone(),
        budget: shared.budget.clone(),
        schema_id: shared.schema_id,
        client,
        metrics: shared.metrics.clone(),
        cancel: cancel.clone(),
    };
    shared.metrics.add_tenant(&id);
    shared.metrics.running_tenants(1);
    let mut tasks = JoinSet::new();
    tasks.spawn(supervise(ctx.clone(), StreamKind::Snapshot));
    tasks.spawn(supervise(ctx, StreamKind::Activity));
    tracing::info!(tenant = %id, slot = handle.slot(), "tenant started");
    Some(RunningTenant { id, cancel, tasks })
}

fn want(
    wanted: &mut BTreeMap<String, Arc<TenantConfig>>,
    change: TenantChange,
    metrics: &Metrics,
) -> String {
    match change {
        TenantChange::Upsert(t) => {
            let id = t.tenant_id.clone();
            wanted.insert(id.clone(), Arc::from(t));
            id
        }
        TenantChange::Remove(id) => {
            wanted.remove(&id);
            metrics.remove_tenant(&id);
            id
        }
    }
}

/// Every tenant of a partition whose writer cannot run is unhealthy until it runs again.
fn waiting(wanted: &BTreeMap<String, Arc<TenantConfig>>, metrics: &Metrics) {
    for id in wanted.keys() {
        metrics.tenant_waiting(id);
    }
}

async fn stop_all(running: &mut BTreeMap<String, RunningTenant>, metrics: &Metrics) {
    for t in running.values() {
        t.cancel.cancel();
    }
    for (_, t) in std::mem::take(running) {
        t.stop(metrics).await;
    }
}

/// Runs partition `slot` until `cancel` (shutdown, or the partition was given up) or until
/// `changes` closes.
pub async fn run(
    shared: Shared,
    slot: i32,
    mut changes: mpsc::Receiver<TenantChange>,
    cancel: CancellationToken,
) {
    let mut wanted: BTreeMap<String, Arc<TenantConfig>> = BTreeMap::new();
    let mut backoff = FIRST_REOPEN_BACKOFF;
    shared.metrics.owned_partitions(1);
    loop {
        // Open the writer (fencing the previous owner), following the changes meanwhile.
        let opened = {
            let open = writer::open(&shared.kafka, slot, shared.slots, shared.metrics.clone());
            tokio::pin!(open);
            loop {
                tokio::select! {
                    r = &mut open => break Some(r),
                    c = changes.recv() => match c {
                        Some(c) => { want(&mut wanted, c, &shared.metrics); }
                        None => break None,
                    },
                    () = cancel.cancelled() => break None,
                }
            }
        };
        let (handle, writer) = match opened {
            None => break,
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                shared.metrics.set_kafka_reachable(false);
                waiting(&wanted, &shared.metrics);
                tracing::warn!(slot, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "opening the partition's writer failed; its tenants wait");
                if !pause(backoff, &mut changes, &mut wanted, &shared.metrics, &cancel).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_REOPEN_BACKOFF);
                continue;
            }
        };
        shared.metrics.set_kafka_reachable(true);
        let opened_at = std::time::Instant::now();
        let mut writer_task = tokio::spawn(writer.run());
        let mut running = BTreeMap::new();
        for t in wanted.values() {
            if let Some(r) = start(&shared, &handle, t, &cancel) {
                running.insert(t.tenant_id.clone(), r);
            }
        }
        let writer_ended = loop {
            tokio::select! {
                c = changes.recv() => {
                    let Some(c) = c else { break None };
                    let id = want(&mut wanted, c, &shared.metrics);
                    if let Some(old) = running.remove(&id) {
                        old.stop(&shared.metrics).await;
                    }
                    if let Some(r) = wanted.get(&id).and_then(|t| start(&shared, &handle, t, &cancel)) {
                        running.insert(id, r);
                    }
                }
                ended = &mut writer_task => break Some(ended),
                () = cancel.cancelled() => break None,
            }
        };
        stop_all(&mut running, &shared.metrics).await;
        drop(handle);
        let Some(ended) = writer_ended else {
            // Every handle is gone: the writer ends once its queue is empty.
            if let Ok(Err(e)) = writer_task.await {
                tracing::warn!(slot, error = %e, "partition writer failed while stopping");
            }
            break;
        };
        // A writer that ran a while had recovered: start the backoff over. One that fails again
        // at once backs off further.
        if opened_at.elapsed() >= STEADY {
            backoff = FIRST_REOPEN_BACKOFF;
        }
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if is_fenced(&e) {
                    // Another instance took the partition: wait for the group to tell this one
                    // before claiming it back, instead of fencing the new owner in turn.
                    backoff = backoff.max(FENCED_BACKOFF);
                } else {
                    shared.metrics.set_kafka_reachable(false);
                }
                waiting(&wanted, &shared.metrics);
                tracing::error!(slot, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "partition writer stopped (fenced by another instance, or failed); its tenants stopped and resume from their checkpoints when it reopens");
            }
            Err(e) => tracing::error!(slot, error = %e, "partition writer task failed"),
        }
        if !pause(backoff, &mut changes, &mut wanted, &shared.metrics, &cancel).await {
            break;
        }
        backoff = (backoff * 2).min(MAX_REOPEN_BACKOFF);
    }
    for id in wanted.keys() {
        shared.metrics.remove_tenant(id);
    }
    shared.metrics.owned_partitions(-1);
}

fn is_fenced(e: &SinkError) -> bool {
    matches!(e, SinkError::Kafka(k) if k.is_fenced())
}

/// Waits `d`, following the changes; `false` on shutdown.
async fn pause(
    d: Duration,
    changes: &mut mpsc::Receiver<TenantChange>,
    wanted: &mut BTreeMap<String, Arc<TenantConfig>>,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> bool {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            c = changes.recv() => match c {
                Some(c) => {
                    want(wanted, c, metrics);
                    waiting(wanted, metrics);
                }
                None => return false,
            },
            () = cancel.cancelled() => return false,
        }
    }
}
