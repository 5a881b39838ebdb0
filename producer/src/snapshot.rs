//! Snapshot sync of one tenant: applications, groups, the members of every group that decides
//! application access, then users, between a `sync_started` and a `sync_completed` marker.
//!
//! A fetcher task follows `next` links and hands pages over a bounded channel (so the next page
//! is read while the previous one is written), each page holding its share of the process's
//! memory budget; one or more pages' raw events and the scan position after them become one unit
//! of the partition's writer, committed in one Kafka transaction. A restart resumes from the last
//! committed position; if PingOne rejects the stored cursor, or the unfinished sync is older than
//! `snapshot_resume_max_age_s`, it is abandoned (never completed) and a new sync id starts.

use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use uuid::Uuid;

use crate::checkpoint::{
    self, CHECKPOINT_VERSION, Completed, Counts, InProgress, Phase, ScanPosition,
    SnapshotCheckpoint, snapshot_key,
};
use crate::kafka::Sent;
use crate::pingone::page::{application_access_groups, item_id};
use crate::pingone::{Page, PingOneError};
use crate::stream::{StreamContext, StreamError};
use schemas::raw::kind;
use schemas::time::{format_ms, now_ms};

/// Longest wait for more pages before the open transaction is committed.
const BATCH_LINGER: Duration = Duration::from_millis(200);

/// Pages buffered between fetcher and writer: enough to keep fetching while a transaction
/// commits, few enough to keep memory flat with hundreds of tenants (a users page is ~200 KB;
/// the process-wide budget bounds them all).
const PAGE_BUFFER: usize = 4;

/// One fetched page and the scan position after it.
#[derive(Debug)]
struct Fetched {
    phase: Phase,
    group: Option<String>,
    page: Page,
    observed_at_ms: i64,
    after: ScanPosition,
    budget: Option<OwnedSemaphorePermit>,
}

/// A fetch failure; `rejected_cursor` when the very first request of a resumed scan failed with
/// a 4xx (the stored cursor is no longer valid).
#[derive(Debug)]
struct FetchFailure {
    error: PingOneError,
    rejected_cursor: bool,
}

/// The snapshot stream of a tenant, with its last committed checkpoint.
#[derive(Debug)]
pub struct SnapshotStream {
    ctx: StreamContext,
    checkpoint: SnapshotCheckpoint,
    key: String,
}

impl SnapshotStream {
    /// Takes the committed checkpoint from the partition's writer.
    pub fn open(ctx: StreamContext) -> Self {
        let key = snapshot_key(&ctx.tenant.tenant_id);
        let stored = ctx.stored_checkpoint(&key);
        let env = ctx.tenant.environment_id.to_string();
        let fresh = SnapshotCheckpoint {
            version: CHECKPOINT_VERSION,
            environment_id: env.clone(),
            last_completed: None,
            in_progress: None,
        };
        let checkpoint = match stored.map(|b| checkpoint::decode::<SnapshotCheckpoint>(&b)) {
            None => fresh,
            Some(Ok(c)) if c.environment_id == env => c,
            Some(Ok(_)) => {
                tracing::warn!(tenant = %ctx.tenant.tenant_id, "snapshot checkpoint belongs to another environment, starting afresh");
                fresh
            }
            Some(Err(reason)) => {
                ctx.metrics.error(&ctx.tenant.tenant_id, "checkpoint");
                tracing::error!(tenant = %ctx.tenant.tenant_id, %reason, "unreadable snapshot checkpoint, starting afresh");
                fresh
            }
        };
        Self {
            ctx,
            checkpoint,
            key,
        }
    }

    /// When the next sync is due (ms since the epoch): now if one is unfinished or none ran.
    pub fn next_due_ms(&self) -> i64 {
        if self.checkpoint.in_progress.is_some() {
            return 0;
        }
        let interval =
            i64::try_from(self.ctx.tenant.snapshot_interval.as_millis()).unwrap_or(i64::MAX);
        self.checkpoint
            .last_completed
            .as_ref()
            .map_or(0, |c| c.started_at_ms.saturating_add(interval))
    }

    /// Runs syncs on the tenant's schedule until shutdown.
    ///
    /// # Errors
    /// The first failure; the caller reopens the stream after a backoff.
    pub async fn run_scheduled(&mut self) -> Result<(), StreamError> {
        loop {
            let wait_ms = self.next_due_ms().saturating_sub(now_ms());
            if wait_ms > 0 {
                tracing::debug!(tenant = %self.ctx.tenant.tenant_id, wait_ms, "next snapshot sync scheduled");
                self.ctx
                    .sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)))
                    .await?;
            }
            self.sync_once().await?;
        }
    }

    async fn commit_checkpoint_with(
        &mut self,
        checkpoint: SnapshotCheckpoint,
        events: Vec<schemas::raw::RawEvent>,
    ) -> Result<(), StreamError> {
        let encoded = events
            .iter()
            .map(|e| self.ctx.encode(e).map(|(record, _)| record))
            .collect::<Result<Vec<_>, _>>()?;
        let value =
            serde_json::to_vec(&checkpoint).map_err(|e| StreamError::Task(e.to_string()))?;
        self.ctx
            .commit("snapshot", encoded, &self.key, value, None)
            .await?;
        self.checkpoint = checkpoint;
        Ok(())
    }

    async fn start_sync(&mut self) -> Result<InProgress, StreamError> {
        let sync_id = Uuid::new_v4().to_string();
        let started_at_ms = now_ms();
        let payload = serde_json::json!({
            "sync_id": sync_id,
            "started_at": format_ms(started_at_ms),
            "kinds": [kind::APPLICATION, kind::GROUP, kind::GROUP_MEMBERSHIP, kind::USER],
        });
        let marker = self.ctx.event(
            kind::SYNC_STARTED,
            None,
            Some(&sync_id),
            started_at_ms,
            payload.to_string(),
        );
        let in_progress = InProgress {
            sync_id: sync_id.clone(),
            started_at_ms,
            position: ScanPosition::start(),
            counts: Counts::default(),
        };
        let mut next = self.checkpoint.clone();
        next.in_progress = Some(in_progress.clone());
        self.commit_checkpoint_with(next, vec![marker]).await?;
        tracing::info!(tenant = %self.ctx.tenant.tenant_id, %sync_id, "snapshot sync started");
        Ok(in_progress)
    }

    /// Completes the unfinished sync, or runs a new one.
    ///
    /// # Errors
    /// [`StreamError`] when PingOne or Kafka fail; the committed position stays for a resume.
    pub async fn sync_once(&mut self) -> Result<Completed, StreamError> {
        let budget = self.ctx.budget.clone();
        let _turn = tokio::select! {
            turn = budget.sync_turn() => turn,
            () = self.ctx.cancel.cancelled() => return Err(StreamError::Cancelled),
        };
        // Check the credentials before writing a `sync_started` that could not go anywhere.
        self.ctx.client.token().await?;
        let stale_after =
            i64::try_from(self.ctx.tenant.snapshot_resume_max_age.as_millis()).unwrap_or(i64::MAX);
        let (mut current, mut resumed) = match self.checkpoint.in_progress.clone() {
            Some(ip) if now_ms().saturating_sub(ip.started_at_ms) <= stale_after => {
                tracing::info!(tenant = %self.ctx.tenant.tenant_id, sync_id = %ip.sync_id, phase = ?ip.position.phase, "resuming snapshot sync");
                (ip, true)
            }
            Some(ip) => {
                tracing::warn!(tenant = %self.ctx.tenant.tenant_id, sync_id = %ip.sync_id, "abandoning a stale unfinished sync");
                (self.start_sync().await?, false)
            }
            None => (self.start_sync().await?, false),
        };
        loop {
            match self.scan(current.clone(), resumed).await {
                Ok(done) => return Ok(done),
                Err(ScanError::RejectedCursor(e)) => {
                    self.ctx
                        .metrics
                        .error(&self.ctx.tenant.tenant_id, "cursor_rejected");
                    tracing::warn!(tenant = %self.ctx.tenant.tenant_id, sync_id = %current.sync_id, error = %e, "stored cursor rejected, abandoning the sync and starting a new one");
                    current = self.start_sync().await?;
                    resumed = false;
                }
                Err(ScanError::Stream(e)) => return Err(e),
            }
        }
    }

    async fn scan(&mut self, start: InProgress, resumed: bool) -> Result<Completed, ScanError> {
        let (tx, mut rx) = mpsc::channel(PAGE_BUFFER);
        let fetch_ctx = self.ctx.clone();
        let position = start.position.clone();
        let fetcher =
            tokio::spawn(async move { fetch_pages(fetch_ctx, position, resumed, tx).await });
        let result = self.write_pages(start, &mut rx).await;
        drop(rx);
        fetcher.abort();
        result
    }

    async fn write_pages(
        &mut self,
        mut state: InProgress,
        rx: &mut mpsc::Receiver<Result<Fetched, FetchFailure>>,
    ) -> Result<Completed, ScanError> {
        let tenant = self.ctx.tenant.tenant_id.clone();
        let max_pages = self.ctx.tenant.snapshot_pages_per_transaction as usize;
        loop {
            // Wait for the first page of a batch without holding a transaction open.
            let first = tokio::select! {
                () = self.ctx.cancel.cancelled() => return Err(StreamError::Cancelled.into()),
                msg = rx.recv() => msg,
            };
            let first = match first {
                Some(Ok(f)) => f,
                Some(Err(f)) => return Err(fetch_failure(f)),
                None if self.ctx.cancel.is_cancelled() => return Err(StreamError::Cancelled.into()),
                None => return Err(StreamError::Task("page fetcher stopped".into()).into()),
            };
            let mut events = Vec::new();
            let mut budget: Option<OwnedSemaphorePermit> = None;
            let mut batch_counts = Counts::default();
            let mut batch_oversized: Vec<&'static str> = Vec::new();
            let mut pending_failure = None;
            let mut next = Some(first);
            let mut pages = 0;
            let mut done = false;
            while let Some(mut fetched) = next.take() {
                pages += 1;
                match (&mut budget, fetched.budget.take()) {
                    (Some(held), Some(more)) => held.merge(more),
                    (held @ None, more) => *held = more,
                    (Some(_), None) => {}
                }
                let sync_id = state.sync_id.clone();
                for item in &fetched.page.items {
                    let id = item_id(item);
                    if id.is_none() {
                        self.ctx.metrics.error(&tenant, "missing_id");
                        tracing::warn!(tenant = %tenant, phase = ?fetched.phase, "entity without id, written with a null entity_id");
                    }
                    let (kind, entity_id) = match fetched.phase {
                        Phase::Applications => (kind::APPLICATION, id),
                        Phase::Groups => (kind::GROUP, id),
                        Phase::Users => (kind::USER, id),
                        Phase::Memberships => (
                            kind::GROUP_MEMBERSHIP,
                            match (&fetched.group, id) {
                                (Some(g), Some(u)) => Some(format!("{g}/{u}")),
                                _ => None,
                            },
                        ),
                        Phase::Done => continue,
                    };
                    let event = self.ctx.event(
                        kind,
                        entity_id,
                        Some(&sync_id),
                        fetched.observed_at_ms,
                        item.get().to_owned(),
                    );
                    let (record, sent) = self.ctx.encode(&event).map_err(StreamError::from)?;
                    events.push(record);
                    if let Sent::Oversized(info) = sent {
                        tracing::warn!(
                            tenant = %tenant, kind, entity_id = %info.entity_id, size = info.size,
                            limit = info.limit, "entity over the record limit, written as an oversized marker"
                        );
                        batch_oversized.push(kind);
                    }
                    match fetched.phase {
                        Phase::Applications => batch_counts.application += 1,
                        Phase::Groups => batch_counts.group += 1,
                        Phase::Users => batch_counts.user += 1,
                        Phase::Memberships => batch_counts.group_membership += 1,
                        Phase::Done => {}
                    }
                }
                state.position = fetched.after;
                if state.position.phase == Phase::Done {
                    done = true;
                    break;
                }
                if pages >= max_pages {
                    break;
                }
                let more = tokio::select! {
                    () = self.ctx.cancel.cancelled() => None,
                    () = tokio::time::sleep(BATCH_LINGER) => None,
                    msg = rx.recv() => msg,
                };
                match more {
                    Some(Ok(f)) => next = Some(f),
                    Some(Err(f)) => pending_failure = Some(f),
                    None => {}
                }
            }
            state.counts.application += batch_counts.application;
            state.counts.group += batch_counts.group;
            state.counts.user += batch_counts.user;
            state.counts.group_membership += batch_counts.group_membership;

            let mut checkpoint = self.checkpoint.clone();
            let completed = if done {
                let completed_at_ms = now_ms();
                let payload = serde_json::json!({
                    "sync_id": state.sync_id,
                    "started_at": format_ms(state.started_at_ms),
                    "completed_at": format_ms(completed_at_ms),
                    "counts": {
                        "user": state.counts.user,
                        "group": state.counts.group,
                        "group_membership": state.counts.group_membership,
                        "application": state.counts.application,
                    },
                });
                let marker = self.ctx.event(
                    kind::SYNC_COMPLETED,
                    None,
                    Some(&state.sync_id),
                    completed_at_ms,
                    payload.to_string(),
                );
                events.push(self.ctx.encode(&marker).map_err(StreamError::from)?.0);
                let completed = Completed {
                    sync_id: state.sync_id.clone(),
                    started_at_ms: state.started_at_ms,
                    completed_at_ms,
                };
                checkpoint.in_progress = None;
                checkpoint.last_completed = Some(completed.clone());
                Some(completed)
            } else {
                checkpoint.in_progress = Some(state.clone());
                None
            };
            let value =
                serde_json::to_vec(&checkpoint).map_err(|e| StreamError::Task(e.to_string()))?;
            self.ctx
                .commit("snapshot", events, &self.key, value, budget)
                .await?;
            self.checkpoint = checkpoint;
            for (k, n) in [
                (kind::APPLICATION, batch_counts.application),
                (kind::GROUP, batch_counts.group),
                (kind::USER, batch_counts.user),
                (kind::GROUP_MEMBERSHIP, batch_counts.group_membership),
            ] {
                if n > 0 {
                    self.ctx.metrics.entities(&tenant, k, n);
                }
            }
            for k in batch_oversized {
                self.ctx.metrics.oversized(&tenant, k);
            }
            if let Some(completed) = completed {
                self.ctx.metrics.stream_succeeded(
                    &tenant,
                    "snapshot",
                    completed.completed_at_ms as f64 / 1000.0,
                );
                let seconds = (completed.completed_at_ms - completed.started_at_ms) as f64 / 1000.0;
                self.ctx.metrics.sync_completed(
                    &tenant,
                    seconds,
                    completed.completed_at_ms as f64 / 1000.0,
                );
                tracing::info!(
                    tenant = %tenant, sync_id = %completed.sync_id, seconds,
                    users = state.counts.user, groups = state.counts.group,
                    applications = state.counts.application,
                    memberships = state.counts.group_membership,
                    "snapshot sync completed"
                );
                return Ok(completed);
            }
            if let Some(f) = pending_failure {
                return Err(fetch_failure(f));
            }
            if self.ctx.cancel.is_cancelled() {
                return Err(StreamError::Cancelled.into());
            }
        }
    }
}

#[derive(Debug)]
enum ScanError {
    RejectedCursor(PingOneError),
    Stream(StreamError),
}

impl From<StreamError> for ScanError {
    fn from(e: StreamError) -> Self {
        Self::Stream(e)
    }
}

fn fetch_failure(f: FetchFailure) -> ScanError {
    if f.rejected_cursor {
        ScanError::RejectedCursor(f.error)
    } else {
        ScanError::Stream(f.error.into())
    }
}

/// The first URL of `position`'s phase.
fn phase_url(ctx: &StreamContext, position: &ScanPosition) -> Option<(String, &'static str)> {
    let t = &ctx.tenant;
    let limit = t.directory_page_size;
    match position.phase {
        Phase::Applications => Some((t.collection_url("applications"), "applications")),
        Phase::Groups => Some((
            format!("{}?limit={limit}", t.collection_url("groups")),
            "groups",
        )),
        Phase::Users => Some((
            format!("{}?limit={limit}", t.collection_url("users")),
            "users",
        )),
        Phase::Memberships => {
            let group = position.membership_group()?;
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("limit", &limit.to_string())
                .append_pair("filter", &format!("memberOfGroups[id eq \"{group}\"]"))
                .finish();
            Some((format!("{}?{query}", t.collection_url("users")), "users"))
        }
        Phase::Done => None,
    }
}

async fn fetch_pages(
    ctx: StreamContext,
    mut position: ScanPosition,
    resumed: bool,
    tx: mpsc::Sender<Result<Fetched, FetchFailure>>,
) {
    let mut first = true;
    loop {
        let Some((first_url, collection)) = phase_url(&ctx, &position) else {
            return;
        };
        let from_stored_cursor = first && resumed && position.cursor.is_some();
        let url = position.cursor.clone().unwrap_or(first_url);
        first = false;
        let page = match ctx.client.get_page(&url, collection).await {
            Ok(p) => p,
            Err(error) => {
                let rejected_cursor = from_stored_cursor
                    && matches!(&error, PingOneError::Api { status, .. } if (400..500).contains(status) && *status != 401 && *status != 403);
                let _ = tx
                    .send(Err(FetchFailure {
                        error,
                        rejected_cursor,
                    }))
                    .await;
                return;
            }
        };
        let observed_at_ms = now_ms();
        let bytes = page.items.iter().map(|i| i.get().len()).sum::<usize>();
        let budget = tokio::select! {
            permit = ctx.budget.take(bytes) => permit,
            () = ctx.cancel.cancelled() => return,
        };
        if position.phase == Phase::Applications {
            for item in &page.items {
                position
                    .membership_groups
                    .extend(application_access_groups(item));
            }
        }
        let phase = position.phase;
        let group = position.membership_group().cloned();
        let after = position.advance(page.next.clone());
        let done = after.phase == Phase::Done;
        let fetched = Fetched {
            phase,
            group: if phase == Phase::Memberships {
                group
            } else {
                None
            },
            page,
            observed_at_ms,
            after: after.clone(),
            budget,
        };
        if tx.send(Ok(fetched)).await.is_err() || done {
            return;
        }
        position = after;
    }
}
